"""Speed settings: with them off, the fast steps compute exactly what a plain step computes; the
two data paths train identically; the options run on CPU; num_threads is chosen as documented."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import trainers.speed as speed
from datasets import InMemoryLoader
from helpers import FakeGraph, Tiny, fake_cuda_graphs, losses, model_files, state_dicts_equal, weights
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from trainers import GANTrainer, VAETrainer
from trainers.base import load_optimizer
from trainers.needs import Needs
from trainers.objectives import vae_negative_elbo
from utils import UserError

STEPS = 5


def _loader(shape: tuple[int, int, int], normalize: bool) -> InMemoryLoader:
    images = torch.randint(0, 256, (4 * 8, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return InMemoryLoader(images, torch.zeros(len(images)), 8, True, normalize, seed=0)


def _plain_gan_step(g, d, ema, opt_g, opt_d, real, real_target=0.9, decay=0.999) -> list[torch.Tensor]:
    """A textbook GAN step: full backward passes, EMA over a fresh state_dict."""
    z = torch.randn(len(real), g.latent_dim)
    fake = g(z)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()):
        d_real, d_fake = d(real), d(fake.detach())
    else:  # no BatchNorm: one pass over both halves computes the same losses
        logits = d(torch.cat([real, fake.detach().reshape(real.shape)]))
        d_real, d_fake = logits[: len(real)], logits[len(real) :]
    d_loss = F.binary_cross_entropy_with_logits(
        d_real, torch.full_like(d_real, real_target)
    ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    d_gen = d(fake)
    g_loss = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():  # the average ramps up: min(decay, (1 + t) / (10 + t)) after update t
        t = opt_g.state[next(g.parameters())]["step"]
        ema_state = ema.state_dict()
        for key, value in g.state_dict().items():
            if value.is_floating_point():
                ema_state[key].lerp_(value, 1 - torch.clamp((1 + t) / (10 + t), max=decay))
    return [d_loss, g_loss, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()]


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: (FCGenerator(8, 32), FCDiscriminator(784, 32)), (1, 28, 28)),
        (lambda: (DCGANGenerator(8, 4, 3, 16), DCGANDiscriminator(4, 3, 16)), (3, 16, 16)),
    ],
    ids=["fc", "dcgan"],
)
def test_gan_step_computes_what_a_plain_step_computes(make, shape: tuple[int, int, int], tmp_path: Path) -> None:
    torch.manual_seed(0)
    g, d = make()
    plain = [copy.deepcopy(m) for m in (g, d, g)]
    loader = _loader(shape, normalize=True)
    trainer = GANTrainer(g, d, loader, {}, output_dir=str(tmp_path), device="cpu", label_smoothing=0.1, num_threads=1)
    opts = [torch.optim.Adam(m.parameters(), 0.0002, betas=(0.5, 0.999), fused=True) for m in plain[:2]]
    batches = list(loader.batches(1))
    torch.manual_seed(1)
    fast_terms = [trainer.train_step(batch) for batch in batches]
    torch.manual_seed(1)
    plain_terms = [_plain_gan_step(*plain, *opts, batch) for batch in batches]
    for fast, slow in zip(fast_terms, plain_terms, strict=True):
        assert all(torch.equal(a, b.detach()) for a, b in zip(fast.values(), slow, strict=True))
    for model, reference in zip((g, d, trainer.ema), plain, strict=True):
        assert state_dicts_equal(model.state_dict(), reference.state_dict())


def test_vae_step_computes_what_a_plain_step_computes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = VAE(hidden_size=32, latent_dim=4)
    plain = copy.deepcopy(vae)
    loader = _loader((1, 28, 28), normalize=False)
    trainer = VAETrainer(vae, loader, loader, {}, output_dir=str(tmp_path), device="cpu", num_threads=1)
    optimizer = torch.optim.Adam(plain.parameters(), 1e-3, fused=True)
    torch.manual_seed(1)
    fast = [trainer.train_step(batch)["loss"] for batch in loader.batches(1)]
    torch.manual_seed(1)
    slow = []
    for batch in loader.batches(1):
        loss = vae_negative_elbo(batch, **plain(batch))["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        slow.append(loss.detach())
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))
    assert state_dicts_equal(vae.state_dict(), plain.state_dict())


# ---------------------------------------------------------------------------- whole runs


@pytest.mark.parametrize("kind", ["gan", "dcgan", "vae"])
def test_both_data_paths_train_identically(kind: str, tiny: Tiny, tmp_path: Path) -> None:
    memory = tiny.train(kind, tmp_path / "memory", {"in_memory": True}, num_epochs=1)
    streamed = tiny.train(kind, tmp_path / "streamed", {"in_memory": False}, num_epochs=1)
    assert losses(memory.history) == losses(streamed.history)
    for name in model_files(kind):
        assert state_dicts_equal(weights(tmp_path / "memory" / name), weights(tmp_path / "streamed" / name))


@pytest.mark.parametrize(("kind", "options"), [("gan", {"amp": True}), ("dcgan", {"amp": True, "channels_last": True})])
def test_speed_options_run_on_cpu(kind: str, options: dict, tiny: Tiny, tmp_path: Path, capsys) -> None:
    run = tiny.train(kind, tmp_path, num_epochs=1, **options)
    assert len(run.history) == 1 and all(math.isfinite(v) for v in run.history[0].values())
    native_bf16 = speed.amp_dtype(torch.device("cpu")) is not None
    assert ("note: amp ignored" in capsys.readouterr().out) != native_bf16
    if native_bf16:
        assert run.speed.dtype == torch.bfloat16
    if options.get("channels_last"):
        assert run.generator.net[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_vae_amp_trains_close_to_float32(tiny: Tiny, tmp_path: Path, monkeypatch) -> None:
    """bf16 autocast, forced on (CPUs without native bf16 emulate it), trains close to float32, not equal."""
    monkeypatch.setattr(speed, "amp_dtype", lambda device: torch.bfloat16)
    run = tiny.train("vae", tmp_path, num_epochs=1, amp=True)
    assert run.speed.dtype == torch.bfloat16
    reference = tiny.train("vae", tmp_path / "fp32", num_epochs=1)
    assert run.history[0]["loss"] != reference.history[0]["loss"]  # the bf16 path really ran
    assert run.history[0]["test_loss"] == pytest.approx(reference.history[0]["test_loss"], rel=0.05)


def test_channels_last_is_ignored_for_fully_connected_models(tiny: Tiny, tmp_path: Path, capsys) -> None:
    run = tiny.train("gan", tmp_path, num_epochs=1, channels_last=True)
    assert "note: channels_last ignored: the models have no convolutions" in capsys.readouterr().out
    assert not run.speed.channels_last


def test_compile_wraps_the_modules_and_checkpoints_keep_their_names(tmp_path: Path) -> None:
    """Compiling happens at the first call (tens of seconds on CPU), so this checks the wiring only."""
    torch.manual_seed(0)
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
    trainer = GANTrainer(g, d, _loader((1, 28, 28), True), {}, output_dir=str(tmp_path), device="cpu", compile=True)
    step = trainer.gan_step
    assert step.G is not g and step.G._orig_mod is g and step.D._orig_mod is d
    assert set(trainer.models["generator"].state_dict()) == set(FCGenerator(8, 16).state_dict())


def test_cuda_graphs_change_nothing_off_cuda(tiny: Tiny, tmp_path: Path) -> None:
    run = tiny.train("vae", tmp_path, {"max_samples": 32}, num_epochs=1, cuda_graphs=True, device="cpu")
    assert run.run_step == run.train_step and not run.speed.cuda_graphs
    assert not run.optimizers["vae"].defaults["capturable"]


def test_a_checkpoint_loads_into_an_optimizer_of_other_flags() -> None:
    """A CUDA graph's Adam is capturable (its step count lives on the GPU): resuming elsewhere keeps
    the new optimizer's own flags, with the saved moments and step counts."""
    param = torch.nn.Parameter(torch.randn(5))
    saved = torch.optim.Adam([param], 0.1, fused=True, capturable=True)
    for _ in range(3):
        param.grad = torch.randn(5)
        saved.step()
    for flags in ({}, {"fused": True}, {"foreach": True}):
        optimizer = torch.optim.Adam([param], 0.1, **flags)
        load_optimizer(optimizer, copy.deepcopy(saved.state_dict()))  # as read from a file
        group, state = optimizer.param_groups[0], optimizer.state[param]
        assert not group["capturable"] and group["fused"] == flags.get("fused", None)
        assert state["step"].item() == 3 and state["step"].device.type == "cpu"
        assert torch.equal(state["exp_avg"], saved.state[param]["exp_avg"])
        param.grad = torch.randn(5)
        optimizer.step()  # a capturable flag left behind would refuse to step here (on some devices)
        assert state["step"].item() == 4


# ---------------------------------------------------------------------------- threads


def test_num_threads_explicit_and_invalid(tiny: Tiny, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        tiny.train("gan", tmp_path, {"max_samples": 16}, num_epochs=1, num_threads=2)
        assert torch.get_num_threads() == 2
        tiny.train("gan", tmp_path / "b", {"max_samples": 16}, num_epochs=1, num_threads="1")  # as --num-threads 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, "many", 1.5):
        with pytest.raises(UserError, match=r"num_threads"):
            tiny.train("gan", tmp_path / "c", num_threads=bad)


def test_num_threads_auto(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(speed, "usable_cores", lambda: set(range(8)))
    monkeypatch.setattr(speed, "DEFAULT_THREADS", 8)
    monkeypatch.setattr(speed, "busy_cores", lambda cores, since=None: 2.6)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert speed.choose_num_threads("auto", cpu) == torch.get_num_threads()  # the environment decides
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert speed.choose_num_threads("auto", cpu) == 5  # 8 cores, 3 busy
    assert speed.choose_num_threads(7, cpu) == 7
    monkeypatch.setattr(speed, "DEFAULT_THREADS", 4)  # 8 logical cores, 4 physical: no more than torch's default
    assert speed.choose_num_threads("auto", cpu) == 4
    monkeypatch.setattr(speed, "busy_cores", lambda cores, since=None: 30.0)
    assert speed.choose_num_threads("auto", cpu) == 1


def test_busy_cores_counts_the_cpu_time_of_the_usable_cores(monkeypatch, tmp_path: Path) -> None:
    stat = tmp_path / "stat"

    def write_stat(jiffies: dict[int, tuple[int, int]]) -> None:  # cpu -> (busy, idle)
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]  # the machine's sum: not read
        lines += [f"cpu{n} {busy} 0 0 {idle} 0 0 0 0 0 0" for n, (busy, idle) in jiffies.items()]
        stat.write_text("\n".join([*lines, "intr 1 2 3"]) + "\n")

    write_stat({0: (100, 100), 1: (100, 100), 2: (100, 100)})
    before = speed._cpu_times({0, 1}, str(stat))
    write_stat({0: (150, 100), 1: (100, 150), 2: (999, 100)})  # cpu0 busy, cpu1 idle; cpu2 is not ours
    assert speed._cpu_times({0, 1}, str(stat)) == (before[0] + 100, before[1] + 50)

    readings = iter([(1000, 600), (1100, 650)])  # 100 jiffies, half of them idle: 2 of 4 cores busy
    monkeypatch.setattr(speed, "_cpu_times", lambda cores: next(readings))
    assert speed.busy_cores({0, 1, 2, 3}, seconds=0) == pytest.approx(2.0, abs=0.01)

    # A window that began a second ago (a process's import) needs no wait; this process's own CPU time
    # (50 of the 100 busy jiffies) is not other work.
    readings = iter([(1200, 700)])
    monkeypatch.setattr(speed, "_cpu_times", lambda cores: next(readings))
    monkeypatch.setattr(speed.time, "process_time", lambda: 5.0 + 50 / speed.CLOCK_TICKS)
    began = time.monotonic()
    assert speed.busy_cores({0, 1, 2, 3}, since=(1000, 600, 5.0, began - 1)) == pytest.approx(1.0)
    assert time.monotonic() - began < 0.1

    def unreadable(cores: set[int]) -> tuple[int, int]:
        raise OSError("no /proc/stat here")

    monkeypatch.setattr(speed, "_cpu_times", unreadable)
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert speed.busy_cores({0, 1}, seconds=0) == 1.5  # the load average instead


def test_in_memory_is_checked_before_any_work(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dataset_kwargs\['in_memory'\] must be True, False or 'auto', got 'yes'"):
        tiny.train("gan", tmp_path, {"in_memory": "yes"})


def test_a_learning_rate_changed_after_capture_ends_the_graph(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A schedule that sets lr through param_groups (nanoGPT's way) would be frozen by a replay:
    the captured step notices, says so once, and runs the plain step from then on."""
    fake_cuda_graphs(monkeypatch)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    steps_run = []

    def train_step(batch: torch.Tensor) -> dict:
        steps_run.append(optimizer.param_groups[0]["lr"])
        return {"loss": batch.sum()}

    step = speed.CapturedStep(train_step, [optimizer], warmup=2)
    batch = torch.ones(4)
    for _ in range(5):  # 2 warm-up calls, the capture (which replays once), 2 replays
        step(batch)
    assert steps_run == [1.0, 1.0, 1.0] and FakeGraph.replays == 3
    for lr in (0.5, 0.25, 0.25):
        optimizer.param_groups[0]["lr"] = lr
        step(batch)
    assert steps_run[3:] == [0.5, 0.25, 0.25] and FakeGraph.replays == 3
    assert capsys.readouterr().out.count("note: cuda_graphs off from here") == 1


class _ScheduledGAN(GANTrainer):
    """A user's edit: label smoothing annealed from 0.3 to 0 over the first 12 steps, read from
    Python-side state every step, so the step declares it."""

    needs = Needs(reads_state=True)

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        self.gan_step.real_target = 1.0 - 0.3 * max(0.0, 1 - self.step / 12)
        return super().train_step(real)


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def test_a_scheduled_objective_trains_identically_with_and_without_the_speed_paths(
    device: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if device == "cpu":  # no CUDA graphs here: fake them, so that a graph, if taken, would freeze the schedule
        fake_cuda_graphs(monkeypatch, trainers_take_them=True)
    images = torch.randint(0, 256, (6 * 8, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    finals, steps = [], []
    for fast in (True, False):
        torch.manual_seed(0)
        g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
        loader = InMemoryLoader(images, torch.zeros(len(images)), 8, True, True, seed=0, device=device)
        trainer = _ScheduledGAN(
            g, d, loader, {}, output_dir=str(tmp_path / str(fast)), device=device, cuda_graphs=fast, ema_decay=0
        )
        for trainer.step, real in enumerate(loader.batches(0)):
            trainer.run_step(real)
        steps.append(trainer.run_step == trainer.train_step)
        finals.append([p.detach().cpu().clone() for p in [*g.parameters(), *d.parameters()]])
    assert all(torch.equal(fast, plain) for fast, plain in zip(*finals, strict=True))
    assert steps == [True, True]  # never a graph
