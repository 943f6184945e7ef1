"""The files of a run: one run owns its output_dir, and a run started over clears the files of the one
before (an epoch's files are written all or none: utils.all_or_nothing)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from utils import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from each other
    fcntl = None

LOCK_NAME = ".run.lock"
# What a run writes into output_dir (resume=False removes these from an earlier run, and nothing else).
RUN_FILES = (
    "generated_image_epoch_*.png",
    "reconstruction_epoch_*.png",
    "train_loss_curve_*.png",
    "losses.csv",
    "metrics.csv",
    "metrics.json",
    "config.json",
    "checkpoint.pt",
    "*_best.pt",
    "generator.pt",
    "discriminator.pt",
    "vae.pt",
    "tensorboard",
)


class FolderLock:
    """An exclusive lock on output_dir (flock on output_dir/.run.lock, which names its holder), held for a
    whole run and removed at its end. The operating system releases it when the process ends in any way,
    SIGKILL included, so a lock file left by a crash is taken over (with a note); a second run while the
    first is alive stops with one line naming it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.file = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            file = open(self.path, "a+")  # noqa: SIM115 (held open for the run)
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                file.close()
                raise UserError(
                    f"output_dir '{self.path.parent}' is in use by another run ({holder}): wait for it to end, "
                    "or choose another output_dir"
                ) from None
            try:  # the file may have been removed by the run that held it, between our open and flock
                if os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            file.close()
        file.seek(0)
        previous = file.read().strip()
        if previous:  # a holder that ended without removing it: it crashed or was killed
            print(f"note: taking over the lock of {previous}, which is no longer running")
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        file.flush()
        self.file = file

    def release(self) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)  # while still locked: no other run holds this file
            self.file.close()
            self.file = None


def clear_run_files(folder: Path) -> int:
    """Remove what an earlier run wrote into `folder` (RUN_FILES); returns how many entries went."""
    removed = 0
    for pattern in RUN_FILES:
        for path in folder.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed += 1
    return removed


def remove_stale_temps(folder: Path) -> None:
    """The temp files (utils.atomic_file's ".name.XXXX.tmp") a killed run left half-written or unrenamed."""
    for path in folder.glob(".*.tmp"):
        path.unlink(missing_ok=True)
