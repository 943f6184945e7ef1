"""Draw samples from a trained generator (FC GAN or DCGAN) or VAE, for any tool to read.

Latents z ~ N(0, I) from a generator seeded with `seed` (the same seed gives the same images on
any device), decoded in batches of `batch_size`. A class-conditional model (num_classes) draws
class `label`, or with label None every class in turn (sample i shows class i mod num_classes).
Writes, into output_dir, by `format`:
    png   000000.png, 000001.png, ...: one 8-bit image file per sample (the folder layout that
          pytorch-fid, clean-fid and torch-fidelity read)
    npz   samples.npz: `images`, uint8 (N, H, W, C) as those tools and the TF FID code expect
Pixels are mapped to [0, 255] from the range the model was trained on (a GAN's tanh [-1, 1] on
normalised data, a VAE's [0, 1]).

Set weights_path and output_dir below, or override them and any key of generate_kwargs from
the command line with dashes for underscores:
    python generate.py --weights-path cifar10_GAN/generator.pt --num-samples 50000 --output-dir samples
An empty weights_path reads mnist_GAN/generator.pt (what main_gan.py writes); an empty
output_dir writes to a folder `samples` beside the weights file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from models import names_of_kind
from trainers.setup import make_output_dir
from utils import (
    analysis_main,
    check_label,
    generated_images,
    load_trained,
    pick_device,
    require,
    resolve_weights,
    run_cli,
)

weights_path = ""  # point to the respective directory and .pt file (generator.pt or vae.pt)
output_dir = ""  # where the samples are written (empty: a folder 'samples' beside the weights)

generate_kwargs = {
    "num_samples": 10000,  # images to draw (FID protocols: 10,000 or 50,000)
    "batch_size": 500,  # latents decoded at once
    "format": "png",  # png (one file per image) or npz (one samples.npz)
    "seed": 0,  # draws the latents
    "device": "auto",  # cuda, then mps, then cpu
    "label": None,  # a conditional model: the class to draw (None: every class in turn)
    "overwrite": False,  # True: replace the images an earlier run left in output_dir (else that is refused)
}

DEFAULT_WEIGHTS = "mnist_GAN/generator.pt"  # main_gan.py's output_dir
GENERATORS = names_of_kind("generator", "vae")
FORMATS = ("png", "npz")
IMAGE_FILES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".npz", ".npy"}  # what FID tools read from a folder


def sample_uint8(model: nn.Module, z: torch.Tensor, normalize: bool, labels: torch.Tensor | None = None) -> np.ndarray:
    """Latents (N, D) -> uint8 images (N, H, W, C), the model's trained range mapped to [0, 255]."""
    images = generated_images(model, z, normalize, labels)
    return images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def run_generate(
    weights_path: str,
    output_dir: str,
    *,
    num_samples: int = 10000,
    batch_size: int = 500,
    format: str = "png",
    seed: int = 0,
    device: str = "auto",
    label: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `num_samples` samples of the model in `weights_path`; returns the folder or the .npz file."""
    require(format in FORMATS, f"unknown format '{format}': use {' or '.join(FORMATS)}")
    require(num_samples > 0, f"num_samples must be positive, got {num_samples}")
    require(batch_size > 0, f"batch_size must be positive, got {batch_size}")
    path, _ = resolve_weights(weights_path, output_dir, DEFAULT_WEIGHTS, "a generator.pt or vae.pt")
    folder = Path(output_dir) if output_dir else path.parent / "samples"
    torch_device = pick_device(device)
    model, dataset = load_trained(
        path, torch_device, GENERATORS, "sampling", f"use the generator, {path.parent / 'generator.pt'}"
    )
    check_label(model, label)
    make_output_dir(folder)
    earlier = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_FILES)
    first = earlier[0].name if earlier else ""
    require(
        overwrite or not earlier,
        f"output_dir '{folder}' already holds {len(earlier)} image or sample files ({first}, ...), which any tool "
        "would read with these: choose an empty folder, or set overwrite True to replace them",
    )
    for earlier_file in earlier:
        earlier_file.unlink()
    normalize = dataset.get("normalize", True)
    rng = torch.Generator().manual_seed(seed)  # on the CPU: the same latents on every device
    z = torch.randn(num_samples, model.latent_dim, generator=rng).to(torch_device)
    labels = sample_labels(model, num_samples, label, torch_device)
    batches = [
        sample_uint8(model, z[i : i + batch_size], normalize, None if labels is None else labels[i : i + batch_size])
        for i in range(0, num_samples, batch_size)
    ]
    if format == "npz":
        out = folder / "samples.npz"
        np.savez_compressed(out, images=np.concatenate(batches))
    else:
        out, index = folder, 0
        for batch in batches:
            for image in batch:
                Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(folder / f"{index:06d}.png")
                index += 1
    drawn = "" if labels is None else f", class {label}" if label is not None else ", every class in turn"
    print(f"{type(model).__name__} from {path}: {num_samples} samples (seed {seed}{drawn}) written to {out}")
    return out


def sample_labels(model: nn.Module, count: int, label: int | None, device: torch.device) -> torch.Tensor | None:
    """The classes to draw: None for an unconditional model, else `label` or 0, 1, ..., K-1, 0, 1, ..."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        return None
    labels = torch.full((count,), label) if label is not None else torch.arange(count) % num_classes
    return labels.to(device)


def main(argv: list[str] | None = None) -> Path:
    paths = {"weights_path": weights_path, "output_dir": output_dir}
    return analysis_main(__doc__, paths, "generate_kwargs", generate_kwargs, run_generate, argv)


if __name__ == "__main__":
    run_cli(main)
