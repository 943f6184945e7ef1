"""Checkpoints and resumption: exact continuation, interrupts (SIGINT, SIGTERM, SIGKILL), torn
checkpoints, non-finite losses and extending a finished run."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import main_gan
import trainers.speed as speed
from helpers import (
    REPO,
    Tiny,
    cli_args,
    losses,
    model_files,
    read_csv,
    run_main_in_process,
    run_script,
    script_command,
    script_env,
    state_dicts_equal,
    weights,
)
from models import VAE, DCGANDiscriminator, DCGANGenerator
from trainers import GANTrainer, VAETrainer, train_gan, train_vae
from utils import UserError, atomic_file, write_json

LOSS_COLUMNS = {"gan": ["d_loss", "g_loss", "d_real", "d_fake"], "vae": ["loss", "test_loss", "kl"]}


def _same_weights(kind: str, a: Path, b: Path) -> bool:
    return all(state_dicts_equal(weights(a / name), weights(b / name)) for name in model_files(kind))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def straight(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Uninterrupted 3-epoch runs of each model, to compare every resumed run against."""
    runs = {}
    for kind in ("gan", "dcgan", "vae"):
        out = tmp_path_factory.mktemp(f"straight_{kind}")
        runs[kind] = (out, tiny.train(kind, out, num_epochs=3))
    return runs


# ---------------------------------------------------------------------------- exact continuation


@pytest.mark.parametrize("kind", ["gan", "dcgan", "vae"])
def test_resume_after_an_epoch_is_bitwise_exact(kind: str, tiny: Tiny, tmp_path: Path, straight: dict) -> None:
    reference_dir, reference = straight[kind]
    tiny.train(kind, tmp_path, num_epochs=1)
    resumed = tiny.train(kind, tmp_path, num_epochs=3)
    assert _same_weights(kind, tmp_path, reference_dir)
    assert losses(resumed.history) == losses(reference.history)
    rows = read_csv(tmp_path / "losses.csv")[1]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_a_checkpoint_without_the_weight_average_count_resumes_exactly(
    tiny: Tiny, tmp_path: Path, straight: dict
) -> None:
    """Checkpoints written before the EMA kept its own count of generator updates: the count is then the
    generator's Adam step count, which it equals, and the run continues bit for bit."""
    run = tiny.train("gan", tmp_path, num_epochs=1)
    assert run.ema_updates.item() == len(run.loader)  # one update per generator step
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del checkpoint["extra"]
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    tiny.train("gan", tmp_path, num_epochs=3)
    assert _same_weights("gan", tmp_path, straight["gan"][0])


def test_resume_from_a_checkpoint_elsewhere(tiny: Tiny, tmp_path: Path, straight: dict) -> None:
    tiny.train("gan", tmp_path / "first", num_epochs=1)
    run = tiny.train("gan", tmp_path / "second", num_epochs=3, resume=str(tmp_path / "first" / "checkpoint.pt"))
    assert len(run.history) == 3
    assert _same_weights("gan", tmp_path / "second", straight["gan"][0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_signal_mid_epoch_saves_and_resumes_exactly(
    kind: str, signum: int, tiny: Tiny, tmp_path: Path, straight: dict, monkeypatch, capsys
) -> None:
    trainer_class = VAETrainer if kind == "vae" else GANTrainer
    real_step = trainer_class.train_step
    calls = {"n": 0}
    steps_per_epoch = 4 if kind == "gan" else 8

    def step_then_signal(self, batch):
        terms = real_step(self, batch)
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:  # the 3rd step of epoch 2
            handler = signal.getsignal(signum)
            assert getattr(handler, "__self__", None) is self, "the trainer does not handle the signal"
            signal.raise_signal(signum)
        return terms

    monkeypatch.setattr(trainer_class, "train_step", step_then_signal)
    with pytest.raises(SystemExit) as info:  # cuda_graphs off: a replayed step would not run the patch's Python
        tiny.train(kind, tmp_path, num_epochs=3, cuda_graphs=False)
    assert info.value.code == 128 + signum
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    expected = f"{name}: stopped in epoch 2 after step 3; checkpoint saved to {tmp_path / 'checkpoint.pt'}"
    assert expected in err and "Run the same command again to resume" in err
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3)

    monkeypatch.setattr(trainer_class, "train_step", real_step)
    resumed = tiny.train(kind, tmp_path, num_epochs=3)
    assert "resuming from" in capsys.readouterr().out
    assert _same_weights(kind, tmp_path, straight[kind][0])
    reference = losses(straight[kind][1].history)
    for row, expected_row in zip(losses(resumed.history), reference, strict=True):
        assert row == pytest.approx(expected_row, rel=1e-5)


def test_dataset_path_stops_mid_epoch_and_resumes_like_the_memory_path(
    tiny: Tiny, tmp_path: Path, straight: dict, monkeypatch
) -> None:
    """in_memory=False (batches decoded through a DataLoader): SIGINT in epoch 2, then resume, gives
    the weights of the uninterrupted in-memory run."""
    real_step = GANTrainer.train_step
    calls = {"n": 0}

    def step_then_signal(self, batch):
        terms = real_step(self, batch)
        calls["n"] += 1
        if calls["n"] == 3 + 2:  # 12 images in batches of 4: the 2nd step of epoch 2
            signal.raise_signal(signal.SIGINT)
        return terms

    monkeypatch.setattr(GANTrainer, "train_step", step_then_signal)
    streamed = {"in_memory": False}
    with pytest.raises(SystemExit):
        train_gan(DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(tmp_path, streamed, num_epochs=3, cuda_graphs=False))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 2)
    monkeypatch.setattr(GANTrainer, "train_step", real_step)
    resumed = train_gan(DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(tmp_path, streamed, num_epochs=3))
    assert _same_weights("dcgan", tmp_path, straight["dcgan"][0])
    for row, expected in zip(losses(resumed.history), losses(straight["dcgan"][1].history), strict=True):
        assert row == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- torn checkpoints


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: data[:100] + bytes(range(256)) * 4 + data[1124:],
    ],
    ids=["truncated", "empty", "garbled"],
)
def test_damaged_checkpoint_is_a_clear_error_and_is_kept(damage, tiny: Tiny, tmp_path: Path) -> None:
    tiny.train("gan", tmp_path, num_epochs=1)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    before = _snapshot(tmp_path)
    with pytest.raises(UserError) as info:
        tiny.train("gan", tmp_path, num_epochs=2)
    message = str(info.value)
    assert f"checkpoint '{path}'" in message and "\n" not in message
    assert re.search(r"cannot read|not a training checkpoint", message)
    assert _snapshot(tmp_path) == before  # nothing replaced, nothing added


def test_a_crash_while_writing_a_file_leaves_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json({"epoch": 1}, path)
    with pytest.raises(KeyboardInterrupt), atomic_file(path) as f:
        f.write('{"epoch": 2, "metr')
        raise KeyboardInterrupt  # Ctrl-C, or any error, half-way through
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind
    mask = os.umask(0o022)
    try:
        write_json({"epoch": 2}, path)
    finally:
        os.umask(mask)
    assert json.loads(path.read_text()) == {"epoch": 2} and path.stat().st_mode & 0o777 == 0o644


def test_a_crash_while_logging_keeps_the_last_complete_logs(tiny: Tiny, tmp_path: Path, monkeypatch) -> None:
    tiny.train("gan", tmp_path, num_epochs=1)
    good = _snapshot(tmp_path)

    def crash(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(csv.DictWriter, "writerows", crash)
    with pytest.raises(UserError, match=r"cannot write '.*\.csv' \(disk full; [\d.]+ MiB free there\)"):
        tiny.train("gan", tmp_path, num_epochs=2)
    assert _snapshot(tmp_path)["losses.csv"] == good["losses.csv"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2  # saved before the logs
    monkeypatch.undo()  # space again: the rerun writes the logs the epoch lacks
    tiny.train("gan", tmp_path, num_epochs=2)
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "losses.csv")[1]] == [1, 2]


# ---------------------------------------------------------------------------- non-finite losses


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_epoch(
    bad: float, tiny: Tiny, tmp_path: Path, straight: dict, monkeypatch
) -> None:
    tiny.train("gan", tmp_path, num_epochs=1)
    good = _snapshot(tmp_path)
    real_step = GANTrainer.train_step
    calls = {"n": 0}

    def poisoned(self, batch):
        terms = real_step(self, batch)
        calls["n"] += 1
        return {**terms, "g_loss": torch.tensor(bad)} if calls["n"] == 2 else terms

    monkeypatch.setattr(GANTrainer, "train_step", poisoned)
    with pytest.raises(UserError) as info:
        tiny.train("gan", tmp_path, num_epochs=3)
    message = str(info.value)
    assert re.search(rf"g_loss became {bad} in epoch 2", message)
    assert "the checkpoint of epoch 1 is kept" in message and "\n" not in message
    assert _snapshot(tmp_path) == good  # checkpoint, weights and logs of epoch 1 untouched

    monkeypatch.setattr(GANTrainer, "train_step", real_step)
    tiny.train("gan", tmp_path, num_epochs=3)  # and the run can simply be continued
    assert _same_weights("gan", tmp_path, straight["gan"][0])


def test_diverging_run_says_nothing_was_saved(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"became (nan|inf).*in epoch 1.*nothing was saved.*lower the learning rate"):
        tiny.train("vae", tmp_path, num_epochs=2, lr=1e30)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "vae.pt").exists()


def test_diverging_fresh_start_does_not_misreport_an_old_checkpoint(tiny: Tiny, tmp_path: Path) -> None:
    """resume=False over an older run, diverging in epoch 1: the old checkpoint is not this run's 'epoch 0'."""
    tiny.train("vae", tmp_path, num_epochs=1)
    old = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError) as info:
        tiny.train("vae", tmp_path, num_epochs=2, lr=1e30, resume=False)
    assert "epoch 0" not in str(info.value)
    assert (tmp_path / "checkpoint.pt").read_bytes() == old


# ---------------------------------------------------------------------------- changing num_epochs


def test_more_epochs_continue_without_duplicate_rows(tiny: Tiny, tmp_path: Path, straight: dict) -> None:
    first = tiny.train("gan", tmp_path, num_epochs=2)
    first_rows = [dict(row) for row in first.history]
    run = tiny.train("gan", tmp_path, num_epochs=3)
    _, rows = read_csv(tmp_path / "losses.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert run.history[:2] == first_rows
    for name in ("train_loss_curve_3.png", "generated_image_epoch_3.png"):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / "config.json").read_text())["trainer"]["num_epochs"] == 3  # the settings now
    assert _same_weights("gan", tmp_path, straight["gan"][0])


@pytest.mark.parametrize("num_epochs", [2, 1])
def test_finished_run_is_not_trained_again(num_epochs: int, tiny: Tiny, tmp_path: Path, capsys) -> None:
    tiny.train("vae", tmp_path, num_epochs=2)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    run = tiny.train("vae", tmp_path, num_epochs=num_epochs)
    assert f"already trained 2 of num_epochs={num_epochs}; nothing to do" in capsys.readouterr().out
    assert len(run.history) == 2
    assert _snapshot(tmp_path) == before


def test_resume_false_starts_over(tiny: Tiny, tmp_path: Path) -> None:
    tiny.train("gan", tmp_path / "a", num_epochs=2)
    run = tiny.train("gan", tmp_path / "a", num_epochs=1, resume=False, seed=5)
    tiny.train("gan", tmp_path / "b", num_epochs=1, seed=5)
    assert len(run.history) == 1
    assert len(read_csv(tmp_path / "a" / "losses.csv")[1]) == 1
    assert _same_weights("gan", tmp_path / "a", tmp_path / "b")


def test_auto_threads_resume_with_the_count_the_run_was_trained_with(
    tiny: Tiny, tmp_path: Path, monkeypatch, capsys
) -> None:
    """num_threads 'auto' counts the free cores, and another thread count sums in another order: a run
    resumed while a core is busy keeps its two threads and still equals an uninterrupted one; an explicit
    other count goes on with a note."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(speed, "usable_cores", lambda: {0, 1})
    monkeypatch.setattr(speed, "DEFAULT_THREADS", 2)
    monkeypatch.setattr(speed, "busy_cores", lambda cores, since=None: 0.0)
    try:
        tiny.train("gan", tmp_path / "straight", num_epochs=2, device="cpu")
        tiny.train("gan", tmp_path / "resumed", num_epochs=1, device="cpu")
        tiny.train("gan", tmp_path / "explicit", num_epochs=1, device="cpu")
        monkeypatch.setattr(speed, "busy_cores", lambda cores, since=None: 1.0)  # 'auto' alone would pick 1
        assert tiny.train("gan", tmp_path / "resumed", num_epochs=2, device="cpu").speed.num_threads == 2
        assert _same_weights("gan", tmp_path / "straight", tmp_path / "resumed")
        capsys.readouterr()
        assert (
            tiny.train("gan", tmp_path / "explicit", num_epochs=2, device="cpu", num_threads=1).speed.num_threads == 1
        )
        assert "2 CPU threads" in capsys.readouterr().out
        assert not _same_weights("gan", tmp_path / "straight", tmp_path / "explicit")  # what the note warns of
    finally:
        torch.set_num_threads(1)  # the suite's


# ---------------------------------------------------------------------------- real processes


def _straight_run(tiny: Tiny, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """CLI arguments of a run long enough to interrupt, run straight through into `out` (in this process:
    the subprocesses use the same single thread, so their arithmetic is identical)."""
    model, dataset, trainer = tiny.gan(out, {"max_samples": 512}, num_epochs=6)
    del trainer["output_dir"]
    args = [*cli_args(model, dataset, trainer), *extra]
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_main_in_process(main_gan, [*args, "--output-dir", str(out)], monkeypatch)
    return args


@pytest.fixture(scope="module")
def long_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    out = tmp_path_factory.mktemp("long_straight")
    return _straight_run(tiny, out), out


def _start_and_wait_for_checkpoint(args: list[str], out: Path, file: str = "checkpoint.pt") -> subprocess.Popen:
    """Start main_gan.py and wait until `file` is in its output_dir."""
    process = subprocess.Popen(
        script_command("main_gan.py", *args, "--output-dir", out),
        cwd=REPO,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / file).exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"no checkpoint appeared (exit {process.returncode}):\n{stderr[-2000:]}")
        time.sleep(0.02)
    return process


def _kill_and_rerun(args: list[str], reference: Path, out: Path) -> None:
    process = _start_and_wait_for_checkpoint(args, out)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < 6  # really stopped part-way

    result = run_script("main_gan.py", *args, "--output-dir", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout
    assert _same_weights("gan", out, reference)
    assert [int(r["epoch"]) for r in read_csv(out / "losses.csv")[1]] == [1, 2, 3, 4, 5, 6]
    untimed = [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(out / "losses.csv")[1]]
    assert untimed == [
        {k: v for k, v in row.items() if k != "seconds"} for row in read_csv(reference / "losses.csv")[1]
    ]


def test_sigkill_then_rerun_equals_an_uninterrupted_run(long_run, tmp_path: Path) -> None:
    args, reference = long_run
    _kill_and_rerun(args, reference, tmp_path / "killed")


def test_sigkill_with_ada_and_its_regularisers_reruns_bit_for_bit(tiny: Tiny, tmp_path: Path) -> None:
    """ADA's probability and statistics, spectral norm's vectors, lazy R1, LeCam's averages and the schedule
    all resume."""
    extra = ("--augment", "ada", "--ada-kimg", "0.5", "--spectral-norm", "true", "--r1-gamma", "0.1")
    extra += ("--r1-every", "4", "--lecam-weight", "0.1", "--lr-schedule", "cosine", "--warmup-steps", "20")
    args = _straight_run(tiny, tmp_path / "straight", extra)
    _kill_and_rerun(args, tmp_path / "straight", tmp_path / "killed")
    assert float(read_csv(tmp_path / "killed" / "losses.csv")[1][-1]["augment_p"]) > 0


def test_sigint_then_rerun_equals_an_uninterrupted_run(long_run, tmp_path: Path) -> None:
    args, reference = long_run
    out = tmp_path / "interrupted"
    process = _start_and_wait_for_checkpoint(args, out, "losses.csv")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "Run the same command again to resume" in stderr
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    # Mid-epoch, the steps so far are saved; at an epoch's end (its outputs), the epoch is.
    match = re.search(r"SIGINT: stopped in epoch (\d+) after step (\d+); checkpoint saved to (\S+)\.", stderr)
    if match:
        assert Path(match[3]) == out / "checkpoint.pt"
        assert checkpoint["epoch"] == int(match[1]) - 1 and checkpoint["step"] == int(match[2]) >= 1
    else:
        match = re.search(r"SIGINT: stopped; the checkpoint of epoch (\d+) is kept in (\S+checkpoint\.pt)", stderr)
        assert match and checkpoint["epoch"] == int(match[1]) and checkpoint["step"] == 0, stderr[-2000:]

    result = run_script("main_gan.py", *args, "--output-dir", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"epoch {checkpoint['epoch']}" in result.stdout  # "resuming from ... (epoch E[, step S])"
    assert _same_weights("gan", out, reference)
    assert [int(r["epoch"]) for r in read_csv(out / "losses.csv")[1]] == [1, 2, 3, 4, 5, 6]


def test_a_checkpoint_older_than_a_key_resumes_at_that_keys_default(tiny: Tiny, tmp_path: Path) -> None:
    """A key added after the checkpoint was written (here the VAE's beta) is what the older code did when it
    is at its default; any other value is another run."""
    train_vae(VAE, *tiny.vae(tmp_path, num_epochs=1, iw_samples=2))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]["trainer"]["beta"]
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match=r"trained with beta=None, now beta=0.5"):
        train_vae(VAE, *tiny.vae(tmp_path, num_epochs=2, iw_samples=2, beta=0.5))
    run = train_vae(VAE, *tiny.vae(tmp_path, num_epochs=2, iw_samples=2))
    assert [row["epoch"] for row in run.history] == [1, 2]
