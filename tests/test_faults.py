"""Faults a new user hits: never lose a finished epoch, never mix two runs' files, and a line where a
traceback would be. The fault-injection test kills a run at every point of its epochs and their ends
and checks that a rerun ends where an uninterrupted run does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import generate
import utils
from helpers import N_TRAIN, REPO, Tiny, digit_like_images, read_csv, script_env, state_dicts_equal, weights, write_idx
from models import FCDiscriminator, FCGenerator
from trainers import GANTrainer, train_gan
from trainers.run_files import LOCK_NAME
from utils import UserError


def _untimed_rows(folder: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(folder / "losses.csv")[1]]


def _same_run(a: Path, b: Path) -> bool:
    same_weights = all(state_dicts_equal(weights(a / n), weights(b / n)) for n in ("generator.pt", "discriminator.pt"))
    metrics = [utils.json.loads((f / "metrics.json").read_text())["metrics"] for f in (a, b)]
    return same_weights and _untimed_rows(a) == _untimed_rows(b) and metrics[0] == metrics[1]


# ---------------------------------------------------------------------------- fault injection


class Killed(BaseException):
    """SIGKILL, in process: the run stops where it is (what it wrote stays as it is)."""


class FaultPoints:
    """Counts the moments of a run at which it can be stopped (each training step, each file's write and
    its rename, the metrics) and does `fault` at the `at`-th: raise Killed, or send itself signals."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int = 0, fault: str = "kill") -> None:
        self.count, self.at, self.fault, self.names = 0, at, fault, []
        step, metrics = GANTrainer.train_step, GANTrainer.compute_metrics
        monkeypatch.setattr(GANTrainer, "_plot_curve", _quick_curve)  # a file written as the plot is, not drawn
        replace, save = os.replace, torch.save
        monkeypatch.setattr(GANTrainer, "train_step", lambda t, *b: (self.point("step"), step(t, *b))[1])
        monkeypatch.setattr(GANTrainer, "compute_metrics", lambda t: (self.point("metrics"), metrics(t))[1])
        monkeypatch.setattr(utils.torch, "save", lambda *a, **k: (self.point("write"), save(*a, **k))[1])
        monkeypatch.setattr(utils.os, "replace", lambda *a: (self.point("rename"), replace(*a))[1])

    def point(self, name: str) -> None:
        self.count += 1
        self.names.append(name)
        if self.count != self.at:
            return
        if self.fault == "kill":
            raise Killed(name)
        for signum in (signal.SIGTERM,) if self.fault == "sigterm" else (signal.SIGINT, signal.SIGINT):
            signal.raise_signal(signum)


def _quick_curve(trainer: GANTrainer) -> None:
    with utils.atomic_file(trainer.output_dir / f"train_loss_curve_{trainer.num_epochs}.png", "wb") as f:
        f.write(repr(trainer.curve).encode())


def _tiny_run(tiny: Tiny, out: Path):
    return train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=2, sample_every=1))


@pytest.fixture(scope="module")
def uninterrupted(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    _tiny_run(tiny, tmp_path_factory.mktemp("warm_up"))  # the metrics' classifier trained and cached first
    out = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        points = FaultPoints(monkeypatch)
        _tiny_run(tiny, out)
    return out, points.names


def test_a_run_stopped_at_any_point_reruns_to_the_same_end(
    tiny: Tiny, tmp_path: Path, uninterrupted: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL at every point of two epochs (steps, each write and rename of every file, the metrics),
    and SIGTERM or SIGINT twice at every fifth: the rerun ends bit for bit where the straight run did."""
    reference, names = uninterrupted
    assert len(names) >= 20 and {"step", "write", "rename", "metrics"} <= set(names)
    print(f"{len(names)} points: {' '.join(names)}")
    cases = [(at, "kill") for at in range(1, len(names) + 1)]
    cases += [(at, fault) for at in range(2, len(names) + 1, 5) for fault in ("sigterm", "sigint_twice")]
    for at, fault in cases:
        out = tmp_path / f"{fault}_{at}"
        with monkeypatch.context() as patch:
            FaultPoints(patch, at, fault)
            with pytest.raises((Killed, SystemExit)):
                _tiny_run(tiny, out)
        _tiny_run(tiny, out)
        assert _same_run(out, reference), f"{fault} at point {at} ({names[at - 1]})"
        assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()


def test_sigint_twice_during_the_metrics_keeps_the_epoch(
    tiny: Tiny, tmp_path: Path, uninterrupted: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    reference, names = uninterrupted
    with monkeypatch.context() as patch:
        FaultPoints(patch, names.index("metrics") + 1, "sigint_twice")
        with pytest.raises(SystemExit) as info:
            _tiny_run(tiny, tmp_path)
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopped; the checkpoint of epoch 2 is kept" in err and "Traceback" not in err
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    _tiny_run(tiny, tmp_path)
    assert _same_run(tmp_path, reference)


def test_a_signal_that_a_library_wraps_still_stops_with_one_line(
    tiny: Tiny, tmp_path: Path, uninterrupted: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A signal while the curve is drawn lands inside matplotlib, whose import can re-raise it as a
    RuntimeError: still the one-line stop, and the rerun ends where the straight run did."""
    reference, _ = uninterrupted

    def drawn_in_a_library(trainer: GANTrainer) -> None:
        try:
            signal.raise_signal(signal.SIGINT)
        except BaseException as error:
            raise RuntimeError("Error calling __set_name__") from error

    with monkeypatch.context() as patch:
        FaultPoints(patch)
        patch.setattr(GANTrainer, "_plot_curve", drawn_in_a_library)
        with pytest.raises(SystemExit) as info:
            _tiny_run(tiny, tmp_path)
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopped; the checkpoint of epoch 1 is kept" in err and "Traceback" not in err
    _tiny_run(tiny, tmp_path)
    assert _same_run(tmp_path, reference)


# ---------------------------------------------------------------------------- one run, one folder


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding output_dir's lock, as a running training run does."""
    code = (
        "import sys, time; from pathlib import Path; from trainers.run_files import FolderLock; "
        "lock = FolderLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)"
    )
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=REPO, env=script_env(), stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_in_a_folder_in_use_stops_with_one_line(tiny: Tiny, tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"is in use by another run \(process {holder.pid} on .*\): wait for it"):
            _tiny_run(tiny, tmp_path)
        assert not (tmp_path / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    run = _tiny_run(tiny, tmp_path)  # the lock went with its process (as after a SIGKILL): taken over
    assert run.epoch == 2 and not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_crash_is_taken_over_with_a_note(tiny: Tiny, tmp_path: Path, capsys) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LOCK_NAME).write_text("process 4242 on somewhere, started 2026-01-01 00:00:00")
    _tiny_run(tiny, tmp_path)
    assert "note: taking over the lock of process 4242" in capsys.readouterr().out


def test_resume_false_replaces_the_earlier_runs_files(tiny: Tiny, tmp_path: Path, capsys) -> None:
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=3, sample_every=1))
    assert (tmp_path / "generated_image_epoch_3.png").exists()
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=1, resume=False, seed=1))
    assert "removed" in capsys.readouterr().out
    assert (
        not (tmp_path / "generated_image_epoch_3.png").exists() and not (tmp_path / "train_loss_curve_3.png").exists()
    )
    assert weights(tmp_path / "generator.pt") is not None and len(read_csv(tmp_path / "losses.csv")[1]) == 1


def test_a_folder_with_another_runs_files_and_no_checkpoint_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    _tiny_run(tiny, tmp_path)
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(UserError, match=r"holds another run's files \(.*\) but no checkpoint.pt"):
        _tiny_run(tiny, tmp_path)


def test_resume_compares_the_data_too(tiny: Tiny, tmp_path: Path, capsys) -> None:
    """The same settings, other pictures in the same folder (as a mistyped or reused root gives): refused,
    unless resume_with_new_data asks to go on with them."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    for split, seed in (("train", 0), ("t10k", 1)):
        write_idx(raw, split, *digit_like_images(N_TRAIN, seed))
    data = {"root": str(tmp_path / "data")}
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "run", data, num_epochs=1))
    write_idx(raw, "train", *digit_like_images(N_TRAIN, seed=7))
    with pytest.raises(UserError, match=r"was trained on other data: 64 images .* now 64 .*resume_with_new_data"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "run", data, num_epochs=2))
    run = train_gan(
        FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "run", data, num_epochs=2, resume_with_new_data=True)
    )
    assert run.epoch == 2 and "note: resuming on other data" in capsys.readouterr().out


def test_the_data_fingerprint_is_the_same_on_both_data_paths(tiny: Tiny, tmp_path: Path) -> None:
    memory = tiny.train("dcgan", tmp_path / "a", {"in_memory": True}, num_epochs=1)
    streamed = tiny.train("dcgan", tmp_path / "b", {"in_memory": False}, num_epochs=1)
    assert memory.data_fingerprint == streamed.data_fingerprint


def test_generate_refuses_a_folder_that_holds_other_samples(
    tmp_path: Path, tiny: Tiny, capsys: pytest.CaptureFixture
) -> None:
    _tiny_run(tiny, tmp_path / "run")
    weights_path, samples = str(tmp_path / "run" / "generator.pt"), tmp_path / "samples"
    generate.run_generate(weights_path, str(samples), num_samples=5)
    with pytest.raises(UserError, match=r"already holds 5 image or sample files .*overwrite True"):
        generate.run_generate(weights_path, str(samples), num_samples=3)
    capsys.readouterr()
    generate.run_generate(weights_path, str(samples), num_samples=3, overwrite=True)
    assert f"from {weights_path}:" in capsys.readouterr().out  # the weights, not a replaced sample
    assert sorted(p.name for p in samples.iterdir()) == ["000000.png", "000001.png", "000002.png"]


# ---------------------------------------------------------------------------- a line, not a traceback


def _truncated_idx(size: int):
    def prepare(tiny: Tiny, tmp: Path) -> dict:
        raw = tmp / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for source in (tiny.mnist_root / "MNIST" / "raw").iterdir():
            data = source.read_bytes()
            (raw / source.name).write_bytes(data[:size] if source.name.startswith("train-images") else data)
        return {"root": str(tmp / "data")}

    return prepare


@pytest.mark.parametrize(
    ("prepare", "trainer", "pattern"),
    [
        (None, {"seed": -1}, r"seed'\] must be from 0 to 2\*\*32 - 1, got -1"),
        (None, {"seed": 2**32}, r"seed'\] must be from 0 to 2\*\*32 - 1"),
        (None, {"seed": 1e23}, r"seed'\] must be int"),
        (lambda tiny, tmp: {"classes": []}, {}, r"classes'\] is empty: name at least one class"),
        (_truncated_idx(0), {}, r"train-images-idx3-ubyte' is truncated or corrupt \(0 bytes, no IDX header\)"),
        (_truncated_idx(10), {}, r"is truncated or corrupt \(10 bytes, no IDX header\)"),
        (_truncated_idx(5000), {}, r"is truncated or corrupt \(5000 bytes, its header says 802832\)"),
        (None, {"output_dir": "x" * 300}, r"output_dir has a name of 300 bytes: use at most 255"),
        (lambda tiny, tmp: {"batch_size": 1}, {}, r"batch_size 1 cannot train the generator's BatchNorm"),
    ],
    ids=["seed_negative", "seed_too_large", "seed_float", "classes_empty", "idx_0", "idx_10", "idx_5000",
         "long_name", "batch_of_one"],
)  # fmt: skip
def test_bad_values_are_one_line_before_training(
    prepare, trainer: dict, pattern: str, tiny: Tiny, tmp_path: Path
) -> None:
    dataset = prepare(tiny, tmp_path) if prepare else {}
    out = tmp_path / trainer.pop("output_dir", "out")
    with pytest.raises(UserError, match=pattern) as info:
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, dataset, num_epochs=1, **trainer))
    assert "\n" not in str(info.value)
    assert out.name not in os.listdir(tmp_path)  # a refused run leaves no folder behind


def test_a_last_batch_of_one_joins_the_one_before(tiny: Tiny, tmp_path: Path) -> None:
    run = tiny.train("gan", tmp_path, {"max_samples": 17, "batch_size": 16}, num_epochs=1)
    assert len(run.loader) == 1 and run.history[0]["epoch"] == 1
    sizes = [len(b) for b in run.loader.batches(0)]
    assert sizes == [17]


def test_a_root_holding_train_and_test_is_refused(tmp_path: Path, image_folder: Path, tiny: Tiny) -> None:
    for split in ("train", "test"):
        (tmp_path / "data" / split).symlink_to(image_folder, target_is_directory=True) if (tmp_path / "data").mkdir(
            exist_ok=True
        ) is None else None
    with pytest.raises(UserError, match=r"holds a train/ and a test/ folder, a split, not classes: set root to"):
        tiny.train("dcgan", tmp_path / "out", {"root": str(tmp_path / "data")}, num_epochs=1)


def test_a_failed_download_leaves_no_folders(tiny: Tiny, tmp_path: Path) -> None:
    root = tmp_path / "nowhere" / "data"
    with pytest.raises(UserError, match="download failed"):
        tiny.train("gan", tmp_path / "out", {"root": str(root)}, num_epochs=1)
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_keeps_the_last_epoch(tiny: Tiny, tmp_path: Path, monkeypatch) -> None:
    _tiny_run(tiny, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    save = torch.save

    def full(obj, f, *args, **kwargs):
        if "epoch" in obj and obj.get("epoch") == 3:  # the checkpoint of the epoch that does not fit
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(utils.torch, "save", full)
    with pytest.raises(UserError, match=r"cannot write '.*checkpoint.pt' \(.*; [\d.]+ MiB free there\)"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=3, sample_every=1, eval_every=1))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # epoch 2's files, all of them


def test_cli_mistakes_get_the_option_meant(monkeypatch) -> None:
    import main_gan

    for argv, meant in ((["--batch_size", "16"], "--batch-size"), (["--batch", "8"], "--batch-size")):
        with pytest.raises(UserError, match=f"unknown option {argv[0]}: did you mean {meant}"):
            utils.parse_overrides("t", {"d": dict(main_gan.dataset_kwargs)}, argv)


def test_torchrun_resuming_a_one_process_run_says_the_batch_changed(tiny: Tiny, tmp_path: Path, capsys) -> None:
    tiny.train("gan", tmp_path, num_epochs=1)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    checkpoint["world_size"] = 2
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    tiny.train("gan", tmp_path, num_epochs=2)
    assert (
        "trained by 2 process(es), this run has 1: the effective batch is now 1 x batch_size" in capsys.readouterr().out
    )


def test_a_network_too_large_for_memory_is_one_line(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"ask for a FCGenerator that needs about [\d.]+ GiB to train, more than the [\d.]+ GiB free"
    ):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "out", model={"generator_hidden_size": 10**8}))
    assert not (tmp_path / "out").exists()


def test_more_threads_than_cores_get_a_note(tiny: Tiny, tmp_path: Path, capsys, monkeypatch) -> None:
    import trainers.speed as speed

    monkeypatch.setattr(speed, "usable_cores", lambda: {0})  # a one-core machine
    try:
        tiny.train("gan", tmp_path, num_epochs=1, num_threads=2)
    finally:
        torch.set_num_threads(1)  # the suite's
    assert "note: num_threads 2 is more than the 1 cores this process may use" in capsys.readouterr().out
