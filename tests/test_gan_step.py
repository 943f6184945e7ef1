"""The GAN step's research surface: augmentations, ADA, spectral norm, R1, the learning-rate schedule,
each against its definition and through the trainer, and the engine's reading of declared needs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

import trainers.augment as augment
import trainers.speed as speed
from datasets import InMemoryLoader
from helpers import Tiny, fake_cuda_graphs, read_csv, state_dicts_equal, weights
from models import DCGANDiscriminator, FCDiscriminator, FCGenerator
from trainers import GANTrainer, distributed
from trainers.gan_step import GANStep, GANStepSettings
from trainers.needs import Needs
from trainers.objectives import lecam_penalty, r1_penalty
from utils import UserError

# ---------------------------------------------------------------------------- augmentations


@pytest.mark.parametrize(
    "operation", [op for ops in augment.OPERATIONS.values() for op in ops], ids=lambda op: op.__name__
)
def test_each_augmentation_is_differentiable(operation) -> None:
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def seeded(images: torch.Tensor) -> torch.Tensor:  # the same draws at every call gradcheck makes
        torch.manual_seed(0)
        return operation(images)

    assert seeded(x).shape == x.shape
    assert torch.autograd.gradcheck(seeded, (x,))


def test_the_augmentations_do_what_they_say() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    shift = augment.brightness(x) - x  # one constant per image, in [-0.5, 0.5)
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift)) and shift.abs().max() <= 0.5
    dot = torch.zeros(64, 1, 16, 16)
    dot[:, :, 8, 8] = 1
    moved = augment.translation(dot)  # up to 1/8 of the side (2 pixels) each way, filling with 0
    where = moved.flatten(1).argmax(1)
    assert torch.all(moved.flatten(1).sum(1) == 1)
    assert torch.all(((where // 16) - 8).abs() <= 2) and torch.all(((where % 16) - 8).abs() <= 2)
    assert len(set(where.tolist())) > 10  # a different shift for different images
    cut = augment.cutout(torch.ones(64, 3, 16, 16))  # a square of half the side, cut off at the edges
    zeros = (cut[:, 0] == 0).flatten(1).sum(1)
    assert torch.all(zeros > 0) and torch.all(zeros <= 64) and torch.all(cut[:, 0] == cut[:, 2])
    flipped = augment.flip(x)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert torch.all(mirrored | (flipped == x).flatten(1).all(1)) and 10 < mirrored.sum() < 54


def test_augment_keeps_a_flat_batch_flat_and_channels_last_as_it_was() -> None:
    pipeline = augment.Augment("diffaugment", "color,translation,cutout", (1, 28, 28))
    assert pipeline(torch.rand(4, 784)).shape == (4, 784)  # the FC GAN's generated images are flat
    pipeline = augment.Augment("diffaugment", "color,translation,cutout,flip", (3, 8, 8))
    x = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert pipeline(x).is_contiguous(memory_format=torch.channels_last)
    assert augment.Augment("none", "color", (3, 8, 8))(x) is x


def test_run_d_is_the_one_way_into_the_discriminator() -> None:
    """Every image the discriminator sees (real, generated, the gradient penalty's and R1's) passes the
    same augmentation, in the discriminator's and in the generator's loss."""
    settings = GANStepSettings(loss="wgan_gp", r1_gamma=1.0, r1_every=1, augment="diffaugment")
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
    step = GANStep(g, d, settings, d.image_shape)
    seen = []
    original = step.augment.forward
    step.augment.forward = lambda x: (seen.append(len(x)), original(x))[1]
    real, fake = torch.rand(5, 1, 28, 28) * 2 - 1, g(torch.randn(5, 8)).detach()
    terms, d_real, d_fake = step.discriminator_loss(real, fake, ())
    assert set(terms) == {"adversarial", "gradient_penalty", "r1"} and len(d_real) == len(d_fake) == 5
    step.generator_loss(fake, ())
    assert seen == [5, 5, 5, 5, 5]  # real, fake, the penalty's mixes, R1's reals, the generator's fakes
    assert not step.joint_pass  # augmentations draw per image: separate passes, as written


# ---------------------------------------------------------------------------- ADA


def test_ada_steps_its_probability_by_the_papers_rule() -> None:
    ada = augment.Augment("ada", "color", (3, 8, 8), target=0.6, kimg=1.0)
    confident = torch.ones(16)  # sign(D(x_real)) = 1: r_t = 1 > 0.6
    for calls in range(1, 4):
        ada.adapt(confident)
        assert ada.p.item() == 0.0, calls  # adjusted every 4 discriminator steps only
    ada.adapt(confident)
    assert ada.p.item() == pytest.approx(64 / 1000) and ada.r_t.item() == 1.0
    for _ in range(8):  # r_t = 0.5 < 0.6: down by 64 images each time, and never below 0
        ada.adapt(torch.tensor([1.0, -1.0] * 8))
    assert ada.p.item() == 0.0 and ada.r_t.item() == 0.0
    x = torch.rand(32, 3, 8, 8)
    assert torch.equal(ada(x), x)  # p = 0: nothing changes
    ada.p.fill_(1.0)
    assert not torch.equal(ada(x), x)


class _DataDistribution(torch.nn.Module):
    """A generator whose images are drawn exactly as the test's data are (uniform grey levels): no
    discriminator can tell them from real ones, unless it memorises the real ones."""

    latent_dim, image_shape, num_classes = 4, (1, 28, 28), None

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))  # Adam needs a parameter

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.randint(0, 256, (len(z), 784)) / 127.5 - 1 + 0 * self.unused


@pytest.mark.parametrize(("images", "memorised"), [(8, True), (4096, False)])
def test_ada_probability_rises_where_the_discriminator_memorises(images: int, memorised: bool, tmp_path: Path) -> None:
    """300 steps against a generator of the data's own distribution: on 8 real images the discriminator
    learns them by heart (r_t above the target) and p rises; on 4,096 it cannot, and p stays at 0."""
    torch.manual_seed(0)
    data = torch.randint(0, 256, (images, 1, 28, 28), dtype=torch.uint8)
    loader = InMemoryLoader(data, torch.zeros(images), 8, True, True, seed=0)
    trainer = GANTrainer(
        _DataDistribution(), FCDiscriminator(784, 64), loader, {}, output_dir=str(tmp_path), device="cpu",
        augment="ada", ada_kimg=0.5, ema_decay=0,
    )  # fmt: skip
    steps = 0
    for epoch in range(300):
        for real in loader.batches(epoch):
            trainer.before_step()
            logs = trainer.run_step(real)
            steps += 1
        if steps >= 300:
            break
    r_t, p = logs["r_t"].item(), logs["augment_p"].item()
    assert (r_t > 0.6 and p > 0.1) if memorised else (r_t < 0.6 and p == 0.0), (r_t, p)


# ---------------------------------------------------------------------------- spectral norm, R1


@pytest.mark.parametrize(
    "make",
    [lambda: FCDiscriminator(784, 32, spectral_norm=True), lambda: DCGANDiscriminator(8, 3, 16, spectral_norm=True)],
)
def test_spectral_norm_keeps_every_layer_near_a_unit_singular_value(make) -> None:
    torch.manual_seed(0)
    d = make()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())  # SN-GAN's discriminator has none
    x = torch.randn(8, *d.image_shape)
    for _ in range(30):  # one power iteration per training forward pass
        d(x)
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_r1_is_its_formula_on_a_linear_critic() -> None:
    """D(x) = <w, x> + b: grad D = w everywhere, so E|grad D(x)|^2 = |w|^2 and the term is gamma/2 |w|^2."""
    w = torch.randn(12, requires_grad=True)
    real = torch.randn(6, 12)
    penalty = r1_penalty(lambda x: x @ w + 0.3, real)
    assert penalty.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(penalty, w)  # differentiable: it trains the critic
    torch.testing.assert_close(grad, 2 * w.detach())


def test_lazy_r1_runs_every_nth_step_and_n_times_as_strong() -> None:
    settings = GANStepSettings(r1_gamma=2.0, r1_every=4)
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16, discriminator_dropout=0.0)
    step = GANStep(g, d, settings, d.image_shape)
    real, fake = torch.rand(4, 1, 28, 28), torch.rand(4, 784)
    found = {}
    for step.global_step in range(8):
        found[step.global_step] = step.discriminator_loss(real, fake, ())[0].get("r1")
    assert [s for s, r1 in found.items() if r1 is not None] == [0, 4]
    expected = 2.0 / 2 * 4 * r1_penalty(lambda x: d(x), real)
    torch.testing.assert_close(found[4], expected)
    assert step.needs["r1_gamma"] == Needs(reads_state=True, double_backward=True)


def test_lecam_is_its_formula_and_its_anchors_follow_the_discriminator() -> None:
    """R_LC = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], against averages of D's past outputs."""
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    penalty = lecam_penalty(d_real, d_fake, torch.tensor(0.5), torch.tensor(-0.5))
    assert penalty.item() == pytest.approx((2.5**2 + 0) / 2 + (0.5**2 + 0) / 2)
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16, discriminator_dropout=0.0)
    step = GANStep(g, d, GANStepSettings(lecam_weight=0.3), d.image_shape)
    real, fake = torch.rand(4, 1, 28, 28), torch.rand(4, 784)
    terms, d_real, d_fake = step.discriminator_loss(real, fake, ())
    zero = torch.tensor(0.0)  # the averages before the first step
    torch.testing.assert_close(terms["lecam"], 0.3 * lecam_penalty(d_real, d_fake, zero, zero))
    expected = 0.01 * torch.stack([d_real.mean(), d_fake.mean()]).detach()  # one step of decay 0.99 from 0
    torch.testing.assert_close(step.output_averages.real_fake, expected)
    assert "lecam" not in GANStep(g, d, GANStepSettings(), d.image_shape).discriminator_loss(real, fake, ())[0]


def test_bcr_is_its_formula_over_two_draws_of_the_augmentation() -> None:
    """bCR = w (E[(D(T x) - D(T' x))^2] + the same on generated images), T and T' two draws of the policy;
    the adversarial loss uses the first draw. Without an augmentation it is refused before training."""
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16, discriminator_dropout=0.0)
    settings = GANStepSettings(augment="diffaugment", augment_policy="translation", bcr_weight=2.0)
    step = GANStep(g, d, settings, d.image_shape)
    real, fake = torch.rand(4, 1, 28, 28), torch.rand(4, 784)
    torch.manual_seed(0)
    terms, d_real, d_fake = step.discriminator_loss(real, fake, ())
    torch.manual_seed(0)
    first, again = step.run_D_on_both(real, fake, ()), step.run_D_on_both(real, fake, ())
    torch.testing.assert_close((d_real, d_fake), first)
    expected = 2.0 * ((first[0] - again[0]).pow(2).mean() + (first[1] - again[1]).pow(2).mean())
    torch.testing.assert_close(terms["bcr"], expected)
    assert terms["bcr"] > 0  # the two draws differ
    with pytest.raises(UserError, match="bcr_weight"):
        GANStep(g, d, GANStepSettings(bcr_weight=1.0), d.image_shape)


def test_zcr_is_its_formula_at_latents_a_little_away() -> None:
    """zCR (Zhao et al. 2021): D pays w_d E[(D(G(z)) - D(G(z + e)))^2], G gains w_g E[|G(z) - G(z + e)|^2],
    e ~ N(0, sigma^2), each with its own draw of e."""
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16, discriminator_dropout=0.0)
    settings = GANStepSettings(zcr_weight=2.0, zcr_generator_weight=0.5, zcr_sigma=0.1)
    step = GANStep(g, d, settings, d.image_shape)
    real, z = torch.rand(4, 1, 28, 28), torch.randn(4, 8)
    fake = g(z)
    torch.manual_seed(0)
    terms, _, d_fake = step.discriminator_loss(real, fake.detach(), (), z)
    g_terms = step.generator_loss(fake, (), z)
    torch.manual_seed(0)
    near_for_d, near_for_g = g(z + 0.1 * torch.randn_like(z)), g(z + 0.1 * torch.randn_like(z))
    torch.testing.assert_close(terms["zcr"], 2.0 * (d_fake - d(near_for_d)).pow(2).mean())
    torch.testing.assert_close(g_terms["zcr_diversity"], -0.5 * (fake - near_for_g).flatten(1).pow(2).sum(1).mean())
    assert terms["zcr"] > 0 and g_terms["zcr_diversity"] < 0
    (gradient,) = torch.autograd.grad(g_terms["zcr_diversity"], next(g.parameters()))
    assert gradient.abs().sum() > 0  # it trains G
    assert "zcr" not in GANStep(g, d, GANStepSettings(), d.image_shape).discriminator_loss(real, fake, ())[0]


# ---------------------------------------------------------------------------- through the trainer


@pytest.mark.parametrize(
    "options",
    [
        {"trainer": {"augment": "ada", "ada_kimg": 0.5}},
        {"trainer": {"augment": "diffaugment"}},
        {"model": {"spectral_norm": True}},
        {"trainer": {"r1_gamma": 1.0, "r1_every": 2}},
        {"trainer": {"augment": "diffaugment", "augment_policy": "translation", "lecam_weight": 0.1}},
        {"trainer": {"lr_schedule": "cosine", "warmup_steps": 3, "min_lr_ratio": 0.0}},
        {"trainer": {"augment": "diffaugment", "augment_policy": "translation", "bcr_weight": 1.0}},
        {"trainer": {"zcr_weight": 1.0, "zcr_generator_weight": 0.5}},
    ],
    ids=["ada", "diffaugment", "spectral_norm", "r1", "lecam", "cosine", "bcr", "zcr"],
)
def test_each_piece_trains_and_resumes_bit_for_bit(options: dict, tiny: Tiny, tmp_path: Path) -> None:
    """A checkpoint after epoch 1 (what a SIGKILL leaves) resumed to epoch 3 ends where a straight run does."""
    from models import DCGANDiscriminator as D
    from models import DCGANGenerator as G
    from trainers import train_gan

    def run(out: Path, epochs: int):
        model, dataset, trainer = tiny.dcgan(
            out, model=options.get("model"), num_epochs=epochs, **options.get("trainer", {})
        )
        return train_gan(G, D, model, dataset, trainer)

    straight = run(tmp_path / "straight", 3)
    run(tmp_path / "resumed", 1)
    resumed = run(tmp_path / "resumed", 3)
    for name in ("generator.pt", "discriminator.pt"):
        assert state_dicts_equal(weights(tmp_path / "straight" / name), weights(tmp_path / "resumed" / name))
    assert [row["d_loss"] for row in straight.history] == [row["d_loss"] for row in resumed.history]
    assert all(math.isfinite(v) for row in straight.history for v in row.values())
    for name, piece in straight.gan_step.state.items():  # ada's probability, LeCam's averages, ...
        resumed_state = resumed.gan_step.state[name].state_dict()
        assert all(torch.equal(v, resumed_state[k]) for k, v in piece.state_dict().items()), name
    if "lecam_weight" in options.get("trainer", {}):
        assert "lecam" in straight.history[0] and straight.gan_step.output_averages.real_fake.abs().sum() > 0
    if "bcr_weight" in options.get("trainer", {}):
        assert straight.history[0]["bcr"] > 0
    if "zcr_weight" in options.get("trainer", {}):
        assert straight.history[0]["zcr"] > 0 and straight.history[0]["zcr_diversity"] < 0  # both logged


def test_the_schedule_warms_up_then_decays_to_its_floor(tiny: Tiny, tmp_path: Path) -> None:
    run = tiny.train("gan", tmp_path, num_epochs=2, lr_schedule="linear", warmup_steps=2, min_lr_ratio=0.0)
    total = 2 * len(run.loader)
    factors = [run.lr_factor(step) for step in range(total)]
    assert factors[:2] == [1 / 3, 2 / 3] and factors[2] == 1.0
    assert all(a >= b for a, b in zip(factors[2:], factors[3:], strict=False)) and factors[-1] == pytest.approx(
        0, abs=0.2
    )
    last_lr = run.optimizers["generator"].param_groups[0]["lr"]  # set before the last step
    assert last_lr == pytest.approx(0.0002 * factors[-1])
    cosine = tiny.train("gan", tmp_path / "cos", num_epochs=2, lr_schedule="cosine", min_lr_ratio=0.5)
    assert cosine.lr_factor(0) == 1.0 and cosine.lr_factor(total) == pytest.approx(0.5)
    assert cosine.lr_factor(total // 2) == pytest.approx(0.75, abs=0.05)


def test_augment_adds_its_columns_and_the_curve_plots_them(tiny: Tiny, tmp_path: Path) -> None:
    tiny.train("gan", tmp_path, num_epochs=2, augment="ada", ada_kimg=0.5)
    names, rows = read_csv(tmp_path / "losses.csv")
    assert {"augment_p", "r_t"} <= set(names) and all(0 <= float(r["augment_p"]) <= 1 for r in rows)
    assert any("augment_p" in panel for panel in GANTrainer.curve_panels)
    assert (tmp_path / "train_loss_curve_2.png").is_file()
    tiny.train("gan", tmp_path / "plain", num_epochs=1)
    assert "augment_p" not in read_csv(tmp_path / "plain" / "losses.csv")[0]  # the SPEC's runs log what they did


def test_on_epoch_end_runs_after_every_epoch_also_when_resumed(tiny: Tiny, tmp_path: Path, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(GANTrainer, "on_epoch_end", lambda self, epoch: seen.append((epoch, self.global_step)))
    run = tiny.train("gan", tmp_path, num_epochs=1)
    tiny.train("gan", tmp_path, num_epochs=3)
    steps = len(run.loader)
    assert seen == [(1, steps), (2, 2 * steps), (3, 3 * steps)]


# ---------------------------------------------------------------------------- declared needs


def test_declared_needs_decide_graphs_and_torchrun(monkeypatch, capsys) -> None:
    needs = {"loss 'bce'": Needs(), "augment 'ada'": Needs(draws_random=True)}
    cuda = torch.device("cuda")
    assert speed.graphs_allowed(needs, True, cuda) and capsys.readouterr().out == ""  # random draws replay fine
    needs["r1_gamma"] = Needs(double_backward=True, reads_state=True)
    assert not speed.graphs_allowed(needs, True, cuda)
    assert "note: cuda_graphs off" in capsys.readouterr().out
    distributed.check_needs(needs)  # one process: fine
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(UserError, match="r1_gamma does not run under torchrun"):
        distributed.check_needs(needs)


class _AnnealedSmoothing(GANTrainer):
    """An edit that reads Python-side state every step and does not declare it."""

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        self.gan_step.real_target = 1.0 - 0.3 * max(0.0, 1 - self.step / 12)
        return super().train_step(real)


class _CountedPenalty(GANTrainer):
    """An edit whose step keeps its own Python counter (a lazy penalty), undeclared."""

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls = getattr(self, "calls", 0) + 1
        self.gan_step.real_target = 0.9 if self.calls % 3 else 0.7
        return super().train_step(real)


class _HostRandom(GANTrainer):
    """An edit that draws Python's random numbers in the step, undeclared."""

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        self.gan_step.real_target = 1.0 - 0.2 * random.random()
        return super().train_step(real)


@pytest.mark.parametrize("edit", [_AnnealedSmoothing, _CountedPenalty, _HostRandom], ids=lambda c: c.__name__)
def test_an_undeclared_edit_is_caught_not_frozen(edit, monkeypatch, capsys, tmp_path: Path) -> None:
    """With a (faked) CUDA graph, a replay runs none of the step's Python: the captured step notices what
    it would freeze, says so in one line, and trains as written, so the weights equal a plain run's."""
    fake_cuda_graphs(monkeypatch, trainers_take_them=True)
    images = torch.randint(0, 256, (6 * 8, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    finals = []
    for graphs in (True, False):
        torch.manual_seed(0)
        random.seed(0)
        g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
        loader = InMemoryLoader(images, torch.zeros(len(images)), 8, True, True, seed=0)
        trainer = edit(g, d, loader, {}, output_dir=str(tmp_path / str(graphs)), device="cpu", cuda_graphs=graphs)
        for trainer.step, real in enumerate(loader.batches(0)):
            trainer.before_step()
            trainer.run_step(real)
        finals.append([p.detach().clone() for p in [*g.parameters(), *d.parameters()]])
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))
    assert capsys.readouterr().out.count("note: cuda_graphs off from here") == 1


def test_a_graph_replays_an_edit_that_reads_nothing_changing(monkeypatch, capsys, tmp_path: Path) -> None:
    """The watch has no false alarms: the plain step, and ada's tensors, replay as a graph."""
    fake_cuda_graphs(monkeypatch, trainers_take_them=True)
    images = torch.randint(0, 256, (6 * 8, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    loader = InMemoryLoader(images, torch.zeros(len(images)), 8, True, True, seed=0)
    g, d = FCGenerator(8, 16), FCDiscriminator(784, 16)
    trainer = GANTrainer(g, d, loader, {}, output_dir=str(tmp_path), device="cpu", augment="ada")
    for trainer.step, real in enumerate(loader.batches(0)):
        trainer.before_step()
        trainer.run_step(real)
    assert "cuda_graphs off" not in capsys.readouterr().out
    assert trainer.run_step.graph is not None and speed.CapturedStep is type(trainer.run_step)


def test_keys_are_declared_once_and_reach_the_command_line(tmp_path: Path) -> None:
    """A declared key needs no line in a script: it is an option, checked by its rule, and in config.json."""
    import main_dcgan
    from utils import parse_overrides

    dicts = {"trainer_kwargs": dict(main_dcgan.trainer_kwargs)}
    assert "r1_gamma" not in dicts["trainer_kwargs"]
    parse_overrides(
        "t", dicts, ["--r1-gamma", "0.5", "--min-lr-ratio", "0"], declared={"trainer_kwargs": GANTrainer.Settings}
    )
    assert dicts["trainer_kwargs"]["r1_gamma"] == 0.5 and dicts["trainer_kwargs"]["min_lr_ratio"] == 0.0
    settings = GANTrainer.Settings.build(dicts["trainer_kwargs"])
    assert settings.as_config()["r1_gamma"] == 0.5 and "r1_gamma" not in GANTrainer.Settings.resumable()
    with pytest.raises(UserError, match=r"trainer_kwargs\['ada_target'\] must be in \[0, 1\), got 1.5"):
        GANTrainer.Settings.build({"ada_target": 1.5})
    with pytest.raises(UserError, match=r"augment_policy'\] must be a comma-separated list"):
        GANTrainer.Settings.build({"augment_policy": "color,rotate"})
    with pytest.raises(UserError, match="did you mean 'r1_gamma'"):
        GANTrainer.Settings.build({"r1_gama": 1.0})
