"""generate.py: N samples of every model kind, as PNG files or one .npz, in the model's pixel range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import generate
from helpers import Tiny
from utils import UserError, load_model

KINDS = {"gan": "generator.pt", "dcgan": "generator.pt", "vae": "vae.pt"}


@pytest.fixture(scope="module")
def trained(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {kind: tiny.train(kind, tmp_path_factory.mktemp(kind), num_epochs=1).output_dir for kind in KINDS}


@pytest.mark.parametrize("kind", list(KINDS))
def test_png_folder_and_npz_hold_the_same_samples(trained: dict[str, Path], tmp_path: Path, kind: str) -> None:
    weights = trained[kind] / KINDS[kind]
    model = load_model(weights)
    channels, height, width = model.image_shape
    common = ["--weights-path", str(weights), "--num-samples", "7", "--batch-size", "3", "--device", "cpu"]
    folder = generate.main([*common, "--output-dir", str(tmp_path / "png")])
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(7)]
    pngs = np.stack([np.array(Image.open(f)) for f in files])
    assert pngs.shape == ((7, height, width, 3) if channels == 3 else (7, height, width)) and pngs.dtype == np.uint8

    npz = generate.main([*common, "--output-dir", str(tmp_path / "npz"), "--format", "npz"])
    images = np.load(npz)["images"]
    assert images.shape == (7, height, width, channels) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(pngs.shape), pngs)  # same seed, same samples

    # The pixels are the model's output for the seeded latents, mapped from its range to [0, 255].
    z = torch.randn(7, model.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.decode(z) if kind == "vae" else (model(z) + 1) / 2
    expected = out.clamp(0, 1).reshape(7, channels, height, width).permute(0, 2, 3, 1).mul(255).round()
    assert np.abs(images.astype(float) - expected.numpy()).max() <= 1


def test_other_seed_other_samples_and_errors(trained: dict[str, Path], tmp_path: Path) -> None:
    weights = str(trained["gan"] / "generator.pt")
    common = ["--weights-path", weights, "--num-samples", "4", "--format", "npz"]
    first = np.load(generate.main([*common, "--output-dir", str(tmp_path / "a")]))["images"]
    second = np.load(generate.main([*common, "--output-dir", str(tmp_path / "b"), "--seed", "1"]))["images"]
    assert not np.array_equal(first, second)
    with pytest.raises(UserError, match="unknown format 'jpg': use png or npz"):
        generate.main([*common, "--output-dir", str(tmp_path), "--format", "jpg"])
    with pytest.raises(UserError, match="num_samples must be positive"):
        generate.main(["--weights-path", weights, "--output-dir", str(tmp_path), "--num-samples", "0"])
    with pytest.raises(UserError, match="holds a FCDiscriminator"):
        generate.main(["--weights-path", str(trained["gan"] / "discriminator.pt"), "--output-dir", str(tmp_path)])
