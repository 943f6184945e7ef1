"""End to end through trainers.train_gan / train_vae on tiny data: files, logs, weights, learning."""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import trainers.base
from datasets import load_images
from helpers import (
    FOLDER_CLASSES,
    GAN_COLUMNS,
    VAE_COLUMNS,
    Tiny,
    read_csv,
    state_dicts_equal,
    weights,
    write_image_folder,
)
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from trainers import train_gan, train_vae
from utils import UserError, load_model

GRID_SIDE = {28: 8 * 30 + 2, 32: 8 * 34 + 2}  # save_image: 8x8 tiles with 2-pixel padding


@pytest.fixture(scope="module")
def gan_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("gan")
    return out, train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=2))


@pytest.fixture(scope="module")
def dcgan_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("dcgan")
    return out, train_gan(DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(out, num_epochs=2))


@pytest.fixture(scope="module")
def vae_run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("vae")
    return out, train_vae(VAE, *tiny.vae(out, num_epochs=2))


def _check_grid(path: Path, image_side: int) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == (GRID_SIDE[image_side], GRID_SIDE[image_side])
        extrema = image.convert("L").getextrema()
        assert extrema[0] < extrema[1]  # not a blank picture


def _check_log(out: Path, history: list[dict], columns: list[str]) -> None:
    names, rows = read_csv(out / "losses.csv")
    assert set(columns) <= set(names) and names[0] == "epoch"  # a new loss term adds a column
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, logged in zip(rows, history, strict=True):
        for name in columns:
            assert math.isfinite(float(row[name]))
            assert float(row[name]) == pytest.approx(logged[name], rel=1e-6, abs=0.01)


def test_fc_gan_writes_everything(gan_run) -> None:
    out, run = gan_run
    expected = {
        "generated_image_epoch_1.png",
        "generated_image_epoch_2.png",
        "train_loss_curve_2.png",
        "losses.csv",
        "generator.pt",
        "discriminator.pt",
        "checkpoint.pt",
        "generator_best.pt",  # the evaluation with the lowest FD: here the only one, after the last epoch
        "metrics.csv",  # quality metrics after the last epoch (trainers.metrics)
        "metrics.json",
        "config.json",
    }
    assert {p.name for p in out.iterdir()} == expected  # and no stray temp files
    config = json.loads((out / "config.json").read_text())
    assert set(config) == {"generator", "discriminator", "dataset", "trainer"}
    assert config["generator"] == run.generator.config and config["trainer"]["num_epochs"] == 2
    assert config == json.loads(json.dumps(torch.load(out / "checkpoint.pt", weights_only=True)["config"]))
    for name in ("generated_image_epoch_1.png", "generated_image_epoch_2.png"):
        _check_grid(out / name, 28)
    with Image.open(out / "train_loss_curve_2.png") as curve:
        assert curve.size[0] > 300
    assert len(run.history) == 2
    _check_log(out, run.history, GAN_COLUMNS)
    for row in run.history:
        assert 0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1
        assert row["d_loss"] > 0 and row["g_loss"] > 0


def test_fc_gan_discriminator_learns_to_tell_real_from_fake(tiny: Tiny, tmp_path: Path) -> None:
    run = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, {"max_samples": 256}, num_epochs=2))
    last = run.history[-1]
    assert last["d_real"] > last["d_fake"] + 0.1
    assert last["d_loss"] < 2 * math.log(2)  # better than a coin toss on both halves


@pytest.mark.parametrize("run_name", ["gan_run", "dcgan_run"])
def test_gan_weights_reload_to_identical_outputs(run_name: str, request: pytest.FixtureRequest) -> None:
    out, run = request.getfixturevalue(run_name)
    generator = load_model(out / "generator.pt", run.device, kinds=(type(run.generator).__name__,))
    discriminator = load_model(out / "discriminator.pt", run.device)
    assert not generator.training and not discriminator.training
    assert generator.config == run.generator.config
    exported = run.exported_models()["generator"]  # the weight average (EMA) the grids show
    assert exported is run.ema and not state_dicts_equal(exported.state_dict(), run.generator.state_dict())
    exported.eval()
    run.discriminator.eval()
    z = torch.randn(6, generator.latent_dim, generator=torch.Generator().manual_seed(7)).to(run.device)
    with torch.no_grad():
        images = exported(z)
        assert torch.equal(generator(z), images)
        assert torch.equal(discriminator(images), run.discriminator(images))
    assert state_dicts_equal(generator.state_dict(), exported.state_dict())


def test_dcgan_on_an_image_folder(dcgan_run) -> None:
    out, run = dcgan_run
    for name in ("generated_image_epoch_1.png", "generated_image_epoch_2.png"):
        _check_grid(out / name, 32)
    for name in ("train_loss_curve_2.png", "generator.pt", "discriminator.pt", "checkpoint.pt"):
        assert (out / name).is_file()
    _check_log(out, run.history, GAN_COLUMNS)
    generator = load_model(out / "generator.pt")
    assert isinstance(generator, DCGANGenerator)
    assert generator(torch.randn(2, 8)).shape == (2, 3, 32, 32)
    # The weights file also says what it was trained on.
    meta = torch.load(out / "generator.pt", weights_only=True)["meta"]
    assert meta["epoch"] == 2 and meta["dataset"]["dataset_type"] == "image_folder"


@pytest.mark.parametrize(("every", "drawn"), [(0.0, [1, 2, 3]), (1e9, [1, 3])])
def test_loss_curve_is_drawn_first_last_and_at_most_every_plot_interval(
    every: float, drawn: list[int], tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs, draw = [], trainers.base.Trainer._plot_curve
    monkeypatch.setattr(trainers.base, "PLOT_EVERY_SECONDS", every)
    monkeypatch.setattr(trainers.base.Trainer, "_plot_curve", lambda self: epochs.append(self.epoch) or draw(self))
    tiny.train("vae", tmp_path, {"max_samples": 32}, num_epochs=3)
    assert epochs == drawn
    assert (tmp_path / "train_loss_curve_3.png").is_file()
    assert len(read_csv(tmp_path / "losses.csv")[1]) == 3  # the table is written every epoch


def test_vae_writes_everything(vae_run) -> None:
    out, run = vae_run
    for epoch in (1, 2):
        _check_grid(out / f"generated_image_epoch_{epoch}.png", 28)
        with Image.open(out / f"reconstruction_epoch_{epoch}.png") as pairs:
            assert pairs.size == (GRID_SIDE[28], GRID_SIDE[28])  # 4 rows of originals + 4 of reconstructions
    for name in ("train_loss_curve_2.png", "vae.pt", "checkpoint.pt", "vae_best.pt"):
        assert (out / name).is_file()
    _check_log(out, run.history, VAE_COLUMNS)
    for row in run.history:
        assert row["loss"] == pytest.approx(row["reconstruction"] + row["kl"], rel=1e-5)
        assert row["test_loss"] == pytest.approx(row["test_reconstruction"] + row["test_kl"], rel=1e-5)
        assert row["kl"] >= 0 and row["test_kl"] >= 0


def test_vae_weights_reload_to_identical_outputs(vae_run) -> None:
    out, run = vae_run
    vae = load_model(out / "vae.pt", run.device, kinds=("VAE",))
    run.vae.eval()
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(3)).to(run.device)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(4)).to(run.device)
    with torch.no_grad():
        assert torch.equal(vae.reconstruct(x), run.vae.reconstruct(x))
        assert torch.equal(vae.decode(z), run.vae.decode(z))


def test_vae_loss_falls(tiny: Tiny, tmp_path: Path) -> None:
    run = train_vae(VAE, *tiny.vae(tmp_path, {"max_samples": 256}, num_epochs=4))
    losses = [row["loss"] for row in run.history]
    test_losses = [row["test_loss"] for row in run.history]
    assert losses[-1] < 0.8 * losses[0]
    assert test_losses[-1] < 0.8 * test_losses[0]


def test_same_seed_same_weights_other_seed_other_weights(tiny: Tiny, tmp_path: Path) -> None:
    runs = [
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / name, num_epochs=1, seed=seed))
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    a, b, c = (weights(tmp_path / name / "generator.pt") for name in "abc")
    assert state_dicts_equal(a, b)
    assert not state_dicts_equal(a, c)
    assert runs[0].history[0]["d_loss"] == runs[1].history[0]["d_loss"]


def test_sample_grids_follow_sample_every(tiny: Tiny, tmp_path: Path) -> None:
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, {"max_samples": 16}, num_epochs=5, sample_every=3))
    grids = sorted(p.name for p in tmp_path.glob("generated_image_epoch_*.png"))
    assert grids == ["generated_image_epoch_1.png", "generated_image_epoch_3.png", "generated_image_epoch_5.png"]
    assert (tmp_path / "train_loss_curve_5.png").is_file()


def test_caller_dicts_are_not_changed(tiny: Tiny, tmp_path: Path) -> None:
    model, dataset, trainer = tiny.vae(tmp_path, num_epochs=1)
    copies = [dict(model), dict(dataset), dict(trainer)]
    train_vae(VAE, model, dataset, trainer)
    assert [model, dataset, trainer] == copies


def test_signal_handlers_are_restored(tiny: Tiny, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, {"max_samples": 16}, num_epochs=1))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_fixed_noise_gives_the_same_grid_latents_every_run(gan_run, tiny: Tiny, tmp_path: Path) -> None:
    _, run = gan_run
    other = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, {"max_samples": 16}, num_epochs=1))
    assert run.fixed_noise.shape == (64, 8)
    assert torch.equal(run.fixed_noise, other.fixed_noise)  # drawn from the seed alone, not the training RNG


def test_generator_weight_average(tiny: Tiny, tmp_path: Path) -> None:
    """ema_decay=0 exports the trained generator itself; any other value trains the same run (the
    average never feeds back into training), and its ramp-up makes a short run's average follow
    the generator instead of staying near the initial weights."""
    runs = {}
    for decay in (0.0, 0.5, 0.9999):
        out = tmp_path / str(decay)
        runs[decay] = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=1, ema_decay=decay))
    torch.manual_seed(0)  # the trainer's seed: the same initial weights as every run above
    initial = FCGenerator(**runs[0.0].generator.config).state_dict()
    trained = {k: v.cpu() for k, v in runs[0.0].generator.state_dict().items()}
    assert runs[0.0].ema is None
    assert state_dicts_equal(weights(tmp_path / "0.0" / "generator.pt"), trained)
    for decay in (0.5, 0.9999):
        assert state_dicts_equal(runs[decay].generator.state_dict(), trained)
        exported = weights(tmp_path / str(decay) / "generator.pt")
        assert not state_dicts_equal(exported, trained)
        for key in (k for k in trained if k.endswith("weight")):  # 4 steps: nearer the trained weights
            assert (exported[key] - trained[key]).norm() < 0.5 * (initial[key] - trained[key]).norm()


def test_vae_grids_with_fewer_than_32_images(tiny: Tiny, tmp_path: Path) -> None:
    """An image folder of 5 pictures still gets its reconstruction grid (rows of 5, one pair)."""
    dataset = {"dataset_type": "image_folder", "root": str(tiny.folder_root), "max_samples": 5, "batch_size": 4}
    train_vae(VAE, *tiny.vae(tmp_path, dataset, {"image_size": 64}, num_epochs=1))
    with Image.open(tmp_path / "reconstruction_epoch_1.png") as image:
        assert image.size == (5 * 10 + 2, 2 * 10 + 2)  # 8x8 tiles with 2-pixel padding


def test_vae_on_an_image_folder_tests_on_its_test_folder(tiny: Tiny, tmp_path: Path, capsys) -> None:
    """train/ with a test/ beside it: test_loss is the test images' loss; without: the training images', with a note."""
    write_image_folder(tmp_path / "data" / "train", per_class=4, seed=0)
    write_image_folder(tmp_path / "data" / "test", per_class=2, seed=1)
    dataset = {"dataset_type": "image_folder", "root": str(tmp_path / "data" / "train"), "batch_size": 4}
    run = train_vae(VAE, *tiny.vae(tmp_path / "split", dataset, {"image_size": 64}, num_epochs=1))
    assert len(run.test_loader.images) == 2 * len(FOLDER_CLASSES) and "note: test_loss" not in capsys.readouterr().out
    # The same images as the test folder, read on their own:
    test_images, _ = load_images("image_folder", str(tmp_path / "data" / "test"), image_shape=(1, 8, 8))
    assert torch.equal(run.test_loader.images.cpu(), test_images)

    dataset["root"] = str(tiny.folder_root)
    run = train_vae(VAE, *tiny.vae(tmp_path / "no_split", dataset, {"image_size": 64}, num_epochs=1))
    assert len(run.test_loader.images) == len(run.loader.labels)
    assert "note: test_loss is measured on the training images" in capsys.readouterr().out


def test_tensorboard_logs_losses_metrics_and_grids(tiny: Tiny, tmp_path: Path) -> None:
    """tensorboard=True: the event file holds losses.csv's columns, the metrics and the sample grids per epoch;
    a resumed run continues the same curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "gan"
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=2, eval_every=1, tensorboard=True))
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=3, eval_every=1, tensorboard=True))
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert [e.step for e in events.Scalars(f"losses/{name}")] == [1, 2, 3]
    _, rows = read_csv(out / "losses.csv")
    assert [e.value for e in events.Scalars("losses/d_real")] == pytest.approx([float(r["d_real"]) for r in rows])
    assert "metrics/frechet_distance" in tags["scalars"]
    assert [e.step for e in events.Images("generated_image")] == [1, 2, 3]


def test_tensorboard_without_its_package_is_a_one_line_error(tiny: Tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(UserError, match="tensorboard=True needs the tensorboard package: pip install tensorboard"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, tensorboard=True))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_vae_beta_weighs_the_kl_in_training_only(tiny: Tiny, tmp_path: Path) -> None:
    run = train_vae(VAE, *tiny.vae(tmp_path, num_epochs=1, beta=0.25, iw_samples=2))
    row = run.history[0]
    assert row["loss"] == pytest.approx(row["reconstruction"] + 0.25 * row["kl"], rel=1e-5)
    assert row["test_loss"] == pytest.approx(row["test_reconstruction"] + row["test_kl"], rel=1e-5)  # the true ELBO


@pytest.mark.parametrize(("loss", "d_steps"), [("hinge", 1), ("least_squares", 1), ("wgan_gp", 5)])
def test_gan_trains_with_each_objective(tiny: Tiny, tmp_path: Path, loss: str, d_steps: int, capsys) -> None:
    """One key switches the objective; with d_steps the generator steps on every d_steps-th batch only."""
    run = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=2, loss=loss, d_steps=d_steps))
    assert all(math.isfinite(v) for row in run.history for v in row.values())
    assert (tmp_path / "generator.pt").is_file() and (tmp_path / "generated_image_epoch_2.png").is_file()
    batches = 2 * len(run.loader)
    steps = {name: next(iter(opt.state.values()))["step"].item() for name, opt in run.optimizers.items()}
    assert steps == {"discriminator": batches, "generator": batches // d_steps}
    assert "label_smoothing applies to loss 'bce' only" in capsys.readouterr().out  # tiny.gan keeps 0.1


def test_unknown_gan_loss_is_a_one_line_error(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="trainer_kwargs\\['loss'\\] must be one of bce, hinge, least_squares, wgan_gp"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, loss="wasserstein"))
    with pytest.raises(UserError, match="d_steps'\\] must be positive"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, d_steps=0))
