"""On a CUDA GPU: a step replayed as a CUDA graph trains exactly as the step run kernel by kernel
and resumes exactly; the speed options run; a GPU run's checkpoint resumes on the CPU.

These need a GPU that torch can use, and are skipped without one (CI has none). On a GPU
machine, `TEST_DEVICE=cuda pytest` also runs the rest of the suite's training runs there.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from datasets import InMemoryLoader
from helpers import Tiny, losses, model_files, state_dicts_equal, weights
from models import FCDiscriminator, FCGenerator
from trainers import GANTrainer
from trainers.speed import CapturedStep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Data sizes whose last batch is smaller: it runs outside the graph. 3 epochs: warm-up, capture, replays.
SMALL_LAST_BATCH = {"gan": {"max_samples": 120}, "dcgan": {"batch_size": 5}, "vae": {"max_samples": 120}}


@pytest.mark.parametrize("kind", ["gan", "dcgan", "vae"])
def test_cuda_graphs_train_exactly_as_the_plain_step(kind: str, tiny: Tiny, tmp_path: Path) -> None:
    dataset = SMALL_LAST_BATCH[kind]
    graphed = tiny.train(kind, tmp_path / "graphs", dataset, num_epochs=3, device="cuda", cuda_graphs=True)
    assert isinstance(graphed.run_step, CapturedStep) and graphed.run_step.graph is not None
    plain = tiny.train(kind, tmp_path / "plain", dataset, num_epochs=3, device="cuda", cuda_graphs=False)
    assert plain.run_step == plain.train_step
    assert losses(graphed.history) == losses(plain.history)
    for name in model_files(kind):
        assert state_dicts_equal(weights(tmp_path / "graphs" / name), weights(tmp_path / "plain" / name))


def test_a_run_with_cuda_graphs_resumes_exactly(tiny: Tiny, tmp_path: Path) -> None:
    """The resumed run warms up and records its graph again, and draws from the saved CUDA RNG state."""
    dataset = SMALL_LAST_BATCH["gan"]
    straight = tiny.train("gan", tmp_path / "straight", dataset, num_epochs=3, device="cuda")
    tiny.train("gan", tmp_path / "resumed", dataset, num_epochs=1, device="cuda")
    resumed = tiny.train("gan", tmp_path / "resumed", dataset, num_epochs=3, device="cuda")
    assert losses(resumed.history) == losses(straight.history)
    for name in model_files("gan"):
        assert state_dicts_equal(weights(tmp_path / "resumed" / name), weights(tmp_path / "straight" / name))


def test_speed_options_together_on_cuda(tiny: Tiny, tmp_path: Path) -> None:
    run = tiny.train("dcgan", tmp_path, {"batch_size": 5}, num_epochs=3, device="cuda", amp=True, channels_last=True)
    assert run.speed.dtype == torch.bfloat16 and run.run_step.graph is not None
    assert run.generator.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(math.isfinite(v) for row in run.history for v in row.values())


def test_a_gpu_checkpoint_resumes_on_the_cpu(tiny: Tiny, tmp_path: Path) -> None:
    tiny.train("gan", tmp_path, num_epochs=1, device="cuda")
    resumed = tiny.train("gan", tmp_path, num_epochs=2, device="cpu")
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for optimizer in resumed.optimizers.values():
        assert not optimizer.param_groups[0]["capturable"]
        assert all(state["step"].device.type == "cpu" for state in optimizer.state.values())


def test_compile_takes_over_from_cuda_graphs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
    images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
    loader = InMemoryLoader(images, torch.zeros(32), 8, True, True, seed=0, device="cuda")
    trainer = GANTrainer(g, d, loader, {}, output_dir=str(tmp_path), device="cuda", compile=True)
    assert "note: cuda_graphs ignored with compile" in capsys.readouterr().out
    assert trainer.run_step == trainer.train_step
