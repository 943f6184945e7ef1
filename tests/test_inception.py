"""Inception features for FID: the same numbers as torch-fidelity on the same images and weights, offline.

The real FID weights are a download, so these tests build a file of the same Inception-v3 architecture
with other (seeded random) weights and give it to both sides, with sockets blocked.
"""

from __future__ import annotations

import socket
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch_fidelity
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

from trainers import metrics
from trainers.metrics import INCEPTION_METRICS, GeneratorEvaluator, InceptionFeatures, make_generator_evaluator
from utils import UserError


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    with (
        mock.patch.object(fidelity_inception, "load_state_dict_from_url", return_value=None),
        mock.patch.object(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict"),
    ):
        net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # He initialisation keeps the activations of 90-odd layers at a useful scale
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / metrics.INCEPTION_FILES[0]
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internet sockets refuse to connect (local ones, which data-loader workers use, still work)."""
    connect = socket.socket.connect

    def refuse(self: socket.socket, *args: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError("the network is blocked in this test")
        return connect(self, *args)

    monkeypatch.setattr(socket.socket, "connect", refuse)


class Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) images, as torch-fidelity reads a data set."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _images(n: int, seed: int, brightness: float) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, brightness, 32)[None, None, :, None]
    pixels = ramp * 255 + rng.normal(0, 40, size=(n, 32, 32, 3))
    return torch.from_numpy(pixels.clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # torch-fidelity's 4 workers on 2 cores
def test_inception_fid_equals_torch_fidelity_offline(inception_file: Path, offline: None) -> None:
    generated, real = _images(12, 0, 0.8), _images(12, 1, 0.3)
    evaluator = GeneratorEvaluator(InceptionFeatures(inception_file, (32, 32)), real, None, batch_size=5)
    ours = evaluator.evaluate_images([generated.float() / 255])
    assert set(ours) == set(metrics.INCEPTION_METRICS)
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(generated),
        input2=Images(real),
        fid=True,
        feature_extractor_weights_path=str(inception_file),
        cuda=False,
        cache=False,
        verbose=False,
        batch_size=6,
    )["frechet_inception_distance"]
    print(f"FID: ours {ours['fid']:.6g}, torch-fidelity {theirs:.6g}")
    assert theirs > 1 and ours["fid"] == pytest.approx(theirs, rel=1e-3)
    protocol = evaluator.protocol()
    assert "Inception-v3 pool3" in protocol["features"] and "299" in protocol["resize"]


def test_auto_uses_inception_from_the_hub_cache_and_the_classifier_without(
    inception_file: Path, mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, offline: None
) -> None:
    dataset = {"dataset_type": "mnist", "root": str(mnist.root)}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / inception_file.name).symlink_to(inception_file)
    evaluator = make_generator_evaluator(dataset, (1, 28, 28), max_images=8, features="auto")
    assert evaluator.inception and "metrics in Inception features" in capsys.readouterr().out
    assert evaluator.protocol()["real_images"] == 8 and evaluator.real_features.shape == (8, 2048)
    (checkpoints / inception_file.name).unlink()
    evaluator = make_generator_evaluator(dataset, (1, 28, 28), max_images=8, features="auto")
    assert not evaluator.inception and "in-domain classifier's features" in capsys.readouterr().out


def test_inception_without_weights_is_a_one_line_error_before_training(tiny, tmp_path: Path) -> None:
    from models import FCDiscriminator, FCGenerator
    from trainers import train_gan

    with pytest.raises(UserError, match=r"needs the FID Inception weights: put weights-inception-2015-12-05"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, metrics_features="inception"))
    assert not (tmp_path / "checkpoint.pt").exists()  # refused before the first epoch
    with pytest.raises(UserError, match="inception_weights 'nowhere.pth' not found"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, inception_weights="nowhere.pth"))
    with pytest.raises(UserError, match=r"metrics_features'\]? must be one of auto, inception, classifier"):
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, metrics_features="clip"))


def test_a_file_of_another_network_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="is not the FID Inception-v3 weights"):
        InceptionFeatures(path, (28, 28))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_a_flat_folder_without_labels_gets_inception_metrics(
    inception_file: Path, tmp_path: Path, offline: None
) -> None:
    """A flat folder has no labels for an in-domain classifier; with the Inception weights its runs are scored
    against its own images, and the protocol says so."""
    from PIL import Image

    folder = tmp_path / "flat"
    folder.mkdir()
    for i, image in enumerate(_images(6, 0, 0.5)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    dataset = {"dataset_type": "image_folder", "root": str(folder)}
    evaluator = make_generator_evaluator(
        dataset, (3, 32, 32), features="inception", inception_weights=str(inception_file)
    )
    assert evaluator.inception and evaluator.num_images == 6
    assert evaluator.protocol()["real_split"] == "train (no test split)"
    scores = evaluator.evaluate_generator(lambda z: torch.rand(len(z), 3, 32, 32), 4)
    assert set(scores) == set(INCEPTION_METRICS) and scores["fid"] > 0
