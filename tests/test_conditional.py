"""Class-conditional models (num_classes): the label reaches every network, the grids put one class
per row, the metrics check the class drawn, checkpoints rebuild, runs resume, and bad setups are one line."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detect_vae_anamolies import run_detection
from generate import run_generate
from helpers import FOLDER_CLASSES, Tiny, state_dicts_equal, weights
from latent_space_interpolation import path_labels, run_interpolation
from latent_space_vae import run_latent_map
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from trainers import train_gan, train_vae
from trainers.metrics import make_generator_evaluator
from trainers.objectives import vae_importance_weighted_nll
from utils import UserError, generated_images, load_model

LABELS = torch.tensor([0, 1, 2, 1])


def _models(conditioning: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "fc_generator": FCGenerator(8, 16, num_classes=3),
        "fc_discriminator": FCDiscriminator(784, 16, num_classes=3, class_conditioning=conditioning),
        "dcgan_generator": DCGANGenerator(8, 4, 3, 16, num_classes=3),
        "dcgan_discriminator": DCGANDiscriminator(4, 3, 16, num_classes=3, class_conditioning=conditioning),
        "vae_decoder": VAE(16, 4, num_classes=3),
    }


def _outputs(name: str, model: torch.nn.Module, labels: torch.Tensor | None) -> torch.Tensor:
    """The model's output for fixed random inputs (4 of them) and `labels`."""
    torch.manual_seed(1)
    if name.endswith("generator"):
        return model.eval()(torch.randn(4, 8), labels)
    if name == "fc_discriminator":
        return model.eval()(torch.rand(4, 784), labels)
    if name == "dcgan_discriminator":
        return model.eval()(torch.rand(4, 3, 16, 16), labels)
    return model.decode(torch.randn(4, 4), labels)


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_the_label_changes_what_every_conditional_network_computes(conditioning: str) -> None:
    for name, model in _models(conditioning).items():
        same = _outputs(name, model, LABELS)
        assert torch.equal(same, _outputs(name, model, LABELS)), name
        other = _outputs(name, model, (LABELS + 1) % 3)
        assert not torch.allclose(same, other), name
        with pytest.raises(ValueError, match="conditional .*pass the labels"):
            _outputs(name, model, None)


def test_the_projection_term_is_the_labels_embedding_times_the_features() -> None:
    d = FCDiscriminator(784, 16, num_classes=3).eval()
    x = torch.rand(2, 784)
    features = d.net[:-1](x)
    expected = d.net[-1](features).squeeze(1) + (d.projection.embed.weight[[0, 2]] * features).sum(1)
    torch.testing.assert_close(d(x, torch.tensor([0, 2])), expected)


def test_unconditional_models_are_todays_and_take_no_labels() -> None:
    for model in (FCGenerator(), FCDiscriminator(), DCGANGenerator(), DCGANDiscriminator(), VAE()):
        assert model.config["num_classes"] is None
        assert not any("projection" in k or "embed" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="unconditional .*takes no labels"):
        FCGenerator(8, 16)(torch.randn(2, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes must be None .* >= 2"):
        FCGenerator(num_classes=1)
    with pytest.raises(ValueError, match="class_conditioning must be one of projection, concat"):
        FCDiscriminator(num_classes=3, class_conditioning="film")


def test_conditional_likelihood_estimate_uses_the_labels() -> None:
    torch.manual_seed(0)
    vae, x = VAE(16, 4, num_classes=3).eval(), torch.rand(4, 784).round()
    one = vae_importance_weighted_nll(vae, x, 20, torch.Generator().manual_seed(0), LABELS)
    other = vae_importance_weighted_nll(vae, x, 20, torch.Generator().manual_seed(0), (LABELS + 1) % 3)
    assert one.shape == (4,) and torch.isfinite(one).all() and not torch.allclose(one, other)


def _grid_rows(path: Path, side: int) -> int:
    return (Image.open(path).size[1] - 2) // (side + 2)  # make_grid's 2-pixel padding


def test_a_conditional_gan_draws_the_digit_asked_for(tiny: Tiny, tmp_path: Path) -> None:
    """The issue's check in small: one digit per grid row, per-class accuracy in metrics.json, and
    utils.load_model rebuilds the generator, which draws a requested digit."""
    model, dataset, trainer = tiny.gan(tmp_path, {"max_samples": 256}, {"num_classes": 10}, num_epochs=2)
    run = train_gan(FCGenerator, FCDiscriminator, model, dataset, {**trainer, "eval_every": 1})
    assert _grid_rows(tmp_path / "generated_image_epoch_2.png", 28) == 10
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert {f"class_accuracy_{c}" for c in range(10)} <= set(summary["metrics"])
    per_class = [summary["metrics"][f"class_accuracy_{c}"] for c in range(10)]
    assert summary["metrics"]["class_accuracy"] == pytest.approx(sum(per_class) / 10)
    assert all(0 <= a <= 1 for a in per_class) and "class_accuracy" in summary["protocol"]["generator_metrics"]
    generator = load_model(tmp_path / "generator.pt")
    assert generator.num_classes == 10
    z, sevens = torch.randn(5, generator.latent_dim), torch.full((5,), 7)
    drawn = generator(z, sevens)
    assert drawn.shape == (5, 784) and drawn.abs().max() <= 1
    torch.testing.assert_close(drawn, run.sampler.cpu().eval()(z, sevens))  # the EMA weights the run sampled with


def test_class_accuracy_is_high_for_the_right_labels_and_low_for_wrong_ones(mnist: types.SimpleNamespace) -> None:
    evaluator = make_generator_evaluator({"dataset_type": "mnist", "root": str(mnist.root)}, (1, 28, 28))
    images = torch.as_tensor(mnist.test_images).float().div(255).unsqueeze(1)
    labels = torch.as_tensor(mnist.test_labels).long()
    assert evaluator.class_accuracy(images, labels)["class_accuracy"] > 0.9
    assert evaluator.class_accuracy(images, (labels + 1) % 10)["class_accuracy"] < 0.1


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_a_conditional_dcgan_trains_on_class_folders(tiny: Tiny, tmp_path: Path, conditioning: str) -> None:
    model = {"num_classes": len(FOLDER_CLASSES), "class_conditioning": conditioning}
    run = train_gan(DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(tmp_path, model=model, num_epochs=1))
    assert _grid_rows(tmp_path / "generated_image_epoch_1.png", 32) == len(FOLDER_CLASSES)
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in run.history)
    assert load_model(tmp_path / "discriminator.pt").config["class_conditioning"] == conditioning


def test_a_conditional_vae_trains_tests_and_draws_each_digit(tiny: Tiny, tmp_path: Path) -> None:
    run = train_vae(VAE, *tiny.vae(tmp_path, model={"num_classes": 10}, num_epochs=2, iw_samples=20))
    metrics = run.metrics[-1]
    assert metrics["test_nll_iw"] < metrics["neg_elbo"] and "class_accuracy" in metrics
    assert _grid_rows(tmp_path / "generated_image_epoch_2.png", 28) == 10
    vae = load_model(tmp_path / "vae.pt")
    assert vae.sample(3, labels=torch.tensor([4, 4, 4])).shape == (3, 1, 28, 28)


def test_a_conditional_run_resumes_exactly(tiny: Tiny, tmp_path: Path) -> None:
    kwargs = {"model": {"num_classes": 10}}
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "straight", **kwargs, num_epochs=2))
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "resumed", **kwargs, num_epochs=1))
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "resumed", **kwargs, num_epochs=2))
    for name in ("generator.pt", "discriminator.pt"):
        assert state_dicts_equal(weights(tmp_path / "straight" / name), weights(tmp_path / "resumed" / name))


def test_labels_that_do_not_fit_are_one_line(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="num_classes'\\] is 5, the data set has 10 classes: set num_classes to 10"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, model={"num_classes": 5}))
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(Path(tiny.folder_root).rglob("*.jpg")):
        (flat / f"{path.parent.name}_{path.name}").write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="without class subfolders: there are no labels") as info:
        train_gan(
            DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(tmp_path / "o", {"root": str(flat)}, {"num_classes": 3})
        )
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- the analysis scripts


@pytest.fixture(scope="module")
def conditional_runs(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("conditional")
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(root / "gan", model={"num_classes": 10}, num_epochs=1))
    train_vae(VAE, *tiny.vae(root / "vae", model={"num_classes": 10}, num_epochs=1, iw_samples=5))
    return types.SimpleNamespace(gan=root / "gan" / "generator.pt", vae=root / "vae" / "vae.pt")


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_generate_draws_the_label_asked_for_or_every_class_in_turn(
    conditional_runs: types.SimpleNamespace, tmp_path: Path, kind: str
) -> None:
    weights_path = getattr(conditional_runs, kind)
    model = load_model(weights_path)
    out = run_generate(str(weights_path), str(tmp_path / "sevens"), num_samples=6, format="npz", label=7)
    images = np.load(out)["images"]
    z = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(0))
    normalize = kind == "gan"
    expected = generated_images(model, z, normalize, torch.full((6,), 7)).mul(255).round().to(torch.uint8)
    assert np.array_equal(images, expected.permute(0, 2, 3, 1).numpy())
    every = np.load(run_generate(str(weights_path), str(tmp_path / "all"), num_samples=6, format="npz"))["images"]
    expected = generated_images(model, z, normalize, torch.arange(6) % 10).mul(255).round().to(torch.uint8)
    assert np.array_equal(every, expected.permute(0, 2, 3, 1).numpy())
    with pytest.raises(UserError, match="label must be a class index from 0 to 9, got 10"):
        run_generate(str(weights_path), str(tmp_path / "x"), num_samples=2, label=10)


def test_an_unconditional_model_refuses_a_label(tiny: Tiny, tmp_path: Path) -> None:
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=1))
    with pytest.raises(UserError, match="label is 3 but this FCGenerator is unconditional"):
        run_generate(str(tmp_path / "generator.pt"), str(tmp_path / "s"), num_samples=2, label=3)


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_interpolation_holds_the_label_or_walks_between_two(
    conditional_runs: types.SimpleNamespace, tmp_path: Path, kind: str
) -> None:
    weights_path = str(getattr(conditional_runs, kind))
    held = run_interpolation(weights_path, str(tmp_path / "held"), num_rows=3, num_steps=4, label=2)
    walk = run_interpolation(weights_path, str(tmp_path / "walk"), num_rows=3, num_steps=4, label=2, label_to=5)
    for outputs in (held, walk):
        assert Image.open(outputs["grid"]).size == (4 * 30 + 2, 3 * 30 + 2)
    model = load_model(weights_path)
    t = torch.linspace(0, 1, 4)
    weights = path_labels(10, 3, t, 2, 5)
    assert torch.equal(weights[:, 0].argmax(1), torch.full((3,), 2)) and torch.equal(
        weights[:, -1].argmax(1), torch.full((3,), 5)
    )
    assert torch.allclose(weights.sum(2), torch.ones(3, 4))
    assert model.num_classes == 10
    with pytest.raises(UserError, match="label_to walks the class from label: set label too"):
        run_interpolation(weights_path, str(tmp_path / "x"), num_rows=2, num_steps=3, label_to=5)


def test_the_latent_map_of_a_conditional_vae_encodes_with_the_labels(
    conditional_runs: types.SimpleNamespace, tmp_path: Path
) -> None:
    summary = run_latent_map(str(conditional_runs.vae), str(tmp_path), num_images=60, method="pca")
    assert (tmp_path / "latents_space_2d.png").is_file() and len(summary["points"]) == 60


def test_anomaly_detection_refuses_a_conditional_vae(conditional_runs: types.SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="class-conditional VAE") as info:
        run_detection(str(conditional_runs.vae), str(tmp_path))
    assert "\n" not in str(info.value)
