"""Distributed training (torchrun, DDP): per-rank data shards, and 2-process CPU runs on gloo of each main script
(on the CPU whatever TEST_DEVICE says: two ranks need two GPUs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import main_dcgan
from datasets import DatasetLoader, InMemoryLoader
from helpers import GAN_COLUMNS, REPO, VAE_COLUMNS, Tiny, cli_args, read_csv, run_main_in_process, script_env, weights
from utils import UserError, load_model

SCRIPTS = {"gan": "main_gan.py", "dcgan": "main_dcgan.py", "vae": "main_vae.py"}


def _loader(count: int, batch_size: int, shuffle: bool = True) -> InMemoryLoader:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1)
    return InMemoryLoader(images, torch.arange(count), batch_size, shuffle, False, seed=3)


def _shards(count: int, batch_size: int, world_size: int, epoch: int) -> list[list[list[int]]]:
    """Each rank's batches of one epoch, as lists of image indices."""
    shards = []
    for rank in range(world_size):
        loader = _loader(count, batch_size)
        loader.shard(rank, world_size)
        shards.append([indices.tolist() for indices in loader.index_batches(epoch)])
    return shards


@pytest.mark.parametrize(
    ("count", "batch_size", "world_size"), [(64, 16, 2), (65, 16, 2), (9, 4, 2), (10, 4, 3), (5, 8, 4), (4, 1, 4)]
)
def test_shards_cover_the_data_exactly_once_per_epoch_in_equal_steps(
    count: int, batch_size: int, world_size: int
) -> None:
    orders = []
    for epoch in (1, 2):
        shards = _shards(count, batch_size, world_size, epoch)
        assert len({len(batches) for batches in shards}) == 1  # DDP hangs if one rank takes more steps
        assert all(len(batch) <= batch_size + 1 for batches in shards for batch in batches)
        taken = [i for batches in shards for batch in batches for i in batch]
        assert sorted(taken) == list(range(count))
        orders.append(shards)
    assert orders[0] != orders[1]  # a new seeded order every epoch


def test_one_process_keeps_the_unsharded_batches() -> None:
    loader = _loader(70, 16)
    reference = torch.randperm(70, generator=torch.Generator().manual_seed(3 * 100_003 + 5))
    assert torch.equal(torch.cat(loader.index_batches(5)), reference)
    assert torch.equal(torch.cat([b.flatten() for b in loader.batches(5)]).mul(255).round().long(), reference)
    assert [len(b) for b in loader.index_batches(5)] == [16, 16, 16, 16, 6]
    loader.shard(0, 1)
    assert len(loader) == 5


def test_more_processes_than_images_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot be shared by 4 processes"):
        _loader(3, 2).shard(0, 4)


def test_sharded_dataset_loader_serves_the_in_memory_batches() -> None:
    images = torch.randint(0, 255, (23, 1, 2, 2), dtype=torch.uint8)
    labels = torch.arange(23)
    for rank in range(3):
        memory = InMemoryLoader(images, labels, 4, True, True, seed=1)
        dataset = DatasetLoader(torch.utils.data.TensorDataset(images, labels), labels, 4, True, True, seed=1)
        for loader in (memory, dataset):
            loader.shard(rank, 3)
        assert len(memory) == len(dataset) == 2
        pairs = list(zip(memory.batches(2, start=0), dataset.batches(2, start=0), strict=True))
        assert all(torch.equal(a, b) for a, b in pairs)


# ---------------------------------------------------------------------------- 2-process runs (torchrun, gloo)


def _torchrun_command(script: str, args: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [*launcher, str(REPO / script), *args]


def _torchrun(script: str, args: list[str]) -> subprocess.CompletedProcess:
    command = _torchrun_command(script, args)
    result = subprocess.run(command, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _kwargs(kind: str, tiny: Tiny, out: Path, **trainer) -> tuple[dict, dict, dict]:
    return getattr(tiny, "gan" if kind == "gan" else kind)(out, device="cpu", **trainer)


def _check_outputs(kind: str, out: Path, result: subprocess.CompletedProcess, epochs: int) -> None:
    """One set of outputs, printed once, whose weights load in this (single) process without DDP's prefixes."""
    columns, rows = read_csv(out / "losses.csv")
    assert set(VAE_COLUMNS if kind == "vae" else GAN_COLUMNS) <= set(columns)
    assert [int(row["epoch"]) for row in rows] == list(range(1, epochs + 1))
    assert result.stdout.count(f"epoch {epochs}/{epochs}:") == 1  # rank 1 prints nothing
    assert (out / f"generated_image_epoch_{epochs}.png").is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    names = ["vae"] if kind == "vae" else ["generator", "discriminator"]
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == epochs
    for name in names:
        model = load_model(out / f"{name}.pt")
        assert not any(key.startswith("module.") for key in weights(out / f"{name}.pt"))
        assert checkpoint["models"][name].keys() == model.state_dict().keys()


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_two_process_run_writes_one_set_of_outputs(kind: str, tiny: Tiny, tmp_path: Path) -> None:
    result = _torchrun(SCRIPTS[kind], cli_args(*_kwargs(kind, tiny, tmp_path, num_epochs=1)))
    _check_outputs(kind, tmp_path, result, epochs=1)


def test_a_conditional_gan_trains_under_torchrun(tiny: Tiny, tmp_path: Path) -> None:
    model, dataset, trainer = tiny.gan(tmp_path, model={"num_classes": 10}, device="cpu", num_epochs=1)
    result = _torchrun(SCRIPTS["gan"], cli_args(model, dataset, trainer))
    _check_outputs("gan", tmp_path, result, epochs=1)
    assert load_model(tmp_path / "discriminator.pt").projection is not None


def test_a_conv_vae_trains_under_torchrun(tiny: Tiny, tmp_path: Path) -> None:
    model = {"architecture": "conv", "base_channels": 8}
    result = _torchrun(SCRIPTS["vae"], cli_args(*tiny.vae(tmp_path, model=model, device="cpu", num_epochs=1)))
    _check_outputs("vae", tmp_path, result, epochs=1)
    assert type(load_model(tmp_path / "vae.pt")).__name__ == "ConvVAE"


def test_checkpoints_move_between_one_process_and_two(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-process DCGAN run is resumed by a 2-process torchrun, which a one-process run resumes again."""
    run_main_in_process(main_dcgan, cli_args(*tiny.dcgan(tmp_path, device="cpu", num_epochs=1)), monkeypatch)
    result = _torchrun(SCRIPTS["dcgan"], cli_args(*tiny.dcgan(tmp_path, device="cpu", num_epochs=2)))
    assert result.stdout.count("resuming from") == 1
    _check_outputs("dcgan", tmp_path, result, epochs=2)
    run_main_in_process(main_dcgan, cli_args(*tiny.dcgan(tmp_path, device="cpu", num_epochs=3)), monkeypatch)
    assert [row["epoch"] for row in read_csv(tmp_path / "losses.csv")[1]] == ["1", "2", "3"]


def test_ctrl_c_stops_every_rank_at_one_step_and_the_run_resumes(tiny: Tiny, tmp_path: Path) -> None:
    """Ctrl-C reaches torchrun and both workers (which torchrun signals again): the ranks agree on a step,
    rank 0 saves a checkpoint, nobody hangs; the same command resumes from it."""
    args = cli_args(*tiny.gan(tmp_path, device="cpu", num_epochs=1000, sample_every=1000))
    launcher = subprocess.Popen(
        _torchrun_command(SCRIPTS["gan"], args),
        cwd=REPO,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the terminal's Ctrl-C goes to the whole group
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "losses.csv").exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(launcher.pid, signal.SIGINT)
        _, stderr = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0
    assert stderr.count("SIGINT: stopped in epoch") == 1, stderr[-3000:]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    epochs = checkpoint["epoch"] + 1  # finish the interrupted epoch
    assert 1 <= epochs < 1000
    result = _torchrun(
        SCRIPTS["gan"], cli_args(*tiny.gan(tmp_path, device="cpu", num_epochs=epochs, sample_every=1000))
    )
    assert len(re.findall(r"resuming from .*checkpoint.pt \(epoch", result.stdout)) == 1
    _check_outputs("gan", tmp_path, result, epochs=epochs)


def test_sync_batchnorm_is_a_note_in_one_process_and_an_error_on_cpu(capsys: pytest.CaptureFixture) -> None:
    import torch.distributed as dist

    from models import DCGANGenerator, FCGenerator
    from trainers import distributed

    generator = DCGANGenerator(latent_dim=4, feature_maps=4, image_channels=1, image_size=8)
    distributed.use_sync_batchnorm([FCGenerator(4, 8, generator_batchnorm=False)], torch.device("cpu"))
    distributed.use_sync_batchnorm([generator], torch.device("cpu"))
    notes = capsys.readouterr().out
    assert "sync_batchnorm ignored: the models have no BatchNorm" in notes
    assert "sync_batchnorm ignored: not a distributed run" in notes
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(UserError, match="sync_batchnorm needs CUDA"):
            distributed.use_sync_batchnorm([generator], torch.device("cpu"))
    finally:
        distributed.stop()
    assert not distributed.active()
