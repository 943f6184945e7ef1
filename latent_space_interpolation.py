"""Walk the latent space of a trained generator (FC GAN or DCGAN) or VAE between pairs of points.

Each row of the grid is a path between two latents in `num_steps` steps: for a GAN two random
latents, for a VAE the encodings (mu) of two real test images of different labels. Spherical
interpolation (slerp) is the default: Gaussian latents concentrate near a sphere, and a straight
line between two of them cuts through its low-density inside.

A class-conditional model (num_classes) holds a class along each path: `label`, or with label
None row i's class i mod num_classes (a VAE: the two images' own classes, mixed along the path).
With `label_to` too, each row holds its latent and walks the class from `label` to `label_to`.
Writes, into output_dir:
    latent_space_interpolation.png   the grid, one path per row
    latent_space_interpolation.gif   the same paths as an animation, one step per frame

Set weights_path and output_dir below, or override them and any key of interpolation_kwargs
from the command line with dashes for underscores:
    python latent_space_interpolation.py --weights-path cifar10_GAN/generator.pt --method lerp
An empty weights_path reads mnist_GAN/generator.pt (what main_gan.py writes); an empty
output_dir writes beside the weights file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from datasets import load_test_images, to_float
from models import names_of_kind
from trainers.setup import make_output_dir
from utils import (
    analysis_main,
    available_memory,
    check_label,
    generated_images,
    load_trained,
    pick_device,
    require,
    resolve_weights,
    run_cli,
    seed_everything,
)

weights_path = ""  # point to the respective directory and .pt file (generator.pt or vae.pt)
output_dir = ""  # point to the output directory where the result is stored (empty: beside the weights)

interpolation_kwargs = {
    "num_rows": 8,  # paths, one per row of the grid
    "num_steps": 10,  # images per path, both ends included
    "method": "slerp",  # slerp (spherical, for Gaussian latents) or lerp (straight line)
    "seed": 0,  # picks the latents (GAN) or the test images (VAE)
    "device": "auto",  # cuda, then mps, then cpu
    "root": None,  # VAE only: where the test images are; None = the root the VAE was trained with
    "label": None,  # a conditional model: the class every path holds (None: one class per row)
    "label_to": None,  # with label: hold the latent and walk the class from label to label_to
    "gif_frame_ms": 120,  # time each frame of the GIF is shown
    "gif_scale": 3,  # the GIF's images are enlarged this many times (nearest neighbour) to be watchable
}

DEFAULT_WEIGHTS = "mnist_GAN/generator.pt"  # main_gan.py's output_dir
GENERATORS = names_of_kind("generator", "vae")
METHODS = ("slerp", "lerp")


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight-line paths: z0, z1 (R, D) and fractions t (S,) -> (R, S, D)."""
    t = t.view(1, -1, 1)
    return (1 - t) * z0.unsqueeze(1) + t * z1.unsqueeze(1)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical paths (Shoemake, 1985; White, 2016): z0, z1 (R, D), fractions t (S,) -> (R, S, D).

    The angle comes from the directions; the endpoints are exactly z0 and z1. Where the two
    latents are (nearly) parallel or opposite, sin(angle) ~ 0 makes the formula unstable, and
    those rows fall back to lerp.
    """
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=1).clamp(-1.0, 1.0)
    omega = torch.arccos(cos).view(-1, 1, 1)  # (R, 1, 1)
    sin = torch.sin(omega)
    degenerate = sin.abs() < eps
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    tt = t.view(1, -1, 1)
    spherical = (torch.sin((1 - tt) * omega) * z0.unsqueeze(1) + torch.sin(tt * omega) * z1.unsqueeze(1)) / safe_sin
    return torch.where(degenerate, lerp(z0, z1, t), spherical)


def interpolate(z0: torch.Tensor, z1: torch.Tensor, num_steps: int, method: str = "slerp") -> torch.Tensor:
    """`num_steps` points from z0 to z1 (both included) for each row: (R, D) x 2 -> (R, num_steps, D)."""
    require(method in METHODS, f"unknown method '{method}': use {' or '.join(METHODS)}")
    t = torch.linspace(0, 1, num_steps, dtype=z0.dtype, device=z0.device)
    return (slerp if method == "slerp" else lerp)(z0, z1, t)


def vae_endpoints(
    vae: nn.Module, dataset: dict, root: str | None, num_rows: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encodings (mu) of `num_rows` pairs of test images, the two of a pair of different labels
    where the data allow it (a path from a 3 to a 3 shows little), and the two images' labels (a
    conditional VAE encodes each image with its own)."""
    images, labels = load_test_images(
        dataset,
        vae.image_shape,
        root,
        max_samples=1000,
        classes=dataset.get("classes"),  # the classes it knows
    )
    require(len(images) >= 2, f"the VAE's test set has {len(images)} image(s): need at least two to interpolate")
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    first = rng.choice(len(images), size=num_rows, replace=len(images) < num_rows)
    second = []
    for i in first:
        others = np.flatnonzero(labels_np != labels_np[i])
        if len(others) == 0:  # one class only: any other image
            others = np.delete(np.arange(len(images)), i)
        second.append(rng.choice(others))
    chosen = torch.as_tensor(np.concatenate([first, np.array(second)]))
    x = to_float(images[chosen], dataset.get("normalize", False))
    y = labels[chosen].to(device)
    with torch.no_grad():
        mu, _ = vae.encode(x.to(device), *(() if getattr(vae, "num_classes", None) is None else (y,)))
    return mu[:num_rows], mu[num_rows:], y[:num_rows], y[num_rows:]


def path_labels(
    num_classes: int | None,
    rows: int,
    t: torch.Tensor,
    label: int | None,
    label_to: int | None,
    own: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """The class of every step of every path, as one-hot weights (R, S, classes) mixed along the path;
    None for an unconditional model. `own`: the two endpoints' labels (a VAE's test images)."""
    if num_classes is None:
        return None

    def one_hot(classes: torch.Tensor | int) -> torch.Tensor:
        return F.one_hot(torch.as_tensor(classes).cpu(), num_classes).float().expand(rows, -1)

    if label_to is not None:
        start, end = one_hot(label), one_hot(label_to)
    elif label is not None:
        start = end = one_hot(label)
    elif own is not None:
        start, end = one_hot(own[0]), one_hot(own[1])
    else:
        start = end = one_hot(torch.arange(rows) % num_classes)
    return lerp(start, end, t.cpu())


def render_paths(
    model: nn.Module, paths: torch.Tensor, normalize: bool, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Latent paths (R, S, D), and a conditional model's class weights (R, S, K), -> images (R, S, C, H, W)
    in [0, 1]."""
    rows, steps, dim = paths.shape
    z = paths.reshape(rows * steps, dim)
    y = None if labels is None else labels.reshape(rows * steps, -1).to(paths.device)
    chunks = [  # a thousand at a time: the network's activations stay small
        generated_images(model, z[i : i + 1000], normalize, None if y is None else y[i : i + 1000]).cpu()
        for i in range(0, len(z), 1000)
    ]
    return torch.cat(chunks).reshape(rows, steps, *model.image_shape)


def to_pil(grid: torch.Tensor, scale: int = 1) -> Image.Image:
    """A (C, H, W) float image in [0, 1] -> PIL image, enlarged `scale` times without blurring."""
    array = (grid.mul(255).round().clamp(0, 255).to(torch.uint8)).permute(1, 2, 0).numpy()
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def save_gif(images: torch.Tensor, path: Path, frame_ms: int, scale: int) -> int:
    """Frame s shows step s of every path side by side; plays forth and back so the loop has no jump.
    Returns the number of frames."""
    from torchvision.utils import make_grid  # imported when first drawn

    rows, steps = images.shape[:2]
    frames = [to_pil(make_grid(images[:, s], nrow=rows, padding=2), scale) for s in range(steps)]
    frames += frames[-2:0:-1]  # back again, without repeating the two ends
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return len(frames)


GIF_MAX_SIDE = 65535  # GIF stores a frame's width and height in 16 bits


def check_sizes(num_rows: int, num_steps: int, image_shape: tuple[int, int, int], gif_scale: int) -> None:
    """One line, before any work, where the grid or the GIF cannot be made: a GIF frame wider than GIF
    allows, or images that need more than half this machine's free memory."""
    channels, height, width = image_shape
    frame_width = (num_rows * (width + 2) + 2) * gif_scale  # a frame shows every path side by side
    most_rows = (GIF_MAX_SIDE // gif_scale - 2) // (width + 2)
    require(
        frame_width <= GIF_MAX_SIDE,
        f"num_rows {num_rows} makes GIF frames {frame_width} pixels wide, more than GIF's {GIF_MAX_SIDE}: "
        f"use num_rows {most_rows} or fewer, or a smaller gif_scale",
    )
    # float images, the grid and the GIF frames (at gif_scale**2 the pixels), about twice each while made
    needed = 2 * num_rows * num_steps * channels * height * width * (4 + 4 + gif_scale**2)
    free = available_memory()
    require(
        needed < free / 2,
        f"num_rows x num_steps = {num_rows * num_steps} images need about {needed / 2**30:.1f} GiB, more than half "
        f"the {free / 2**30:.1f} GiB free here: use fewer rows or steps",
    )


def run_interpolation(
    weights_path: str,
    output_dir: str,
    *,
    num_rows: int = 8,
    num_steps: int = 10,
    method: str = "slerp",
    seed: int = 0,
    device: str = "auto",
    root: str | None = None,
    label: int | None = None,
    label_to: int | None = None,
    gif_frame_ms: int = 120,
    gif_scale: int = 3,
) -> dict[str, Path]:
    """Write the interpolation grid and GIF for the model in `weights_path`; returns their paths."""
    require(method in METHODS, f"unknown method '{method}': use {' or '.join(METHODS)}")
    require(num_rows > 0, f"num_rows must be positive, got {num_rows}")
    require(num_steps >= 2, f"num_steps must be at least 2 (the two ends), got {num_steps}")
    require(gif_frame_ms > 0 and gif_scale > 0, "gif_frame_ms and gif_scale must be positive")
    path, folder = resolve_weights(weights_path, output_dir, DEFAULT_WEIGHTS, "a generator.pt or vae.pt")
    torch_device = pick_device(device)
    seed_everything(seed)
    model, dataset = load_trained(
        path, torch_device, GENERATORS, "interpolation", f"use the generator, {path.parent / 'generator.pt'}"
    )
    check_sizes(num_rows, num_steps, model.image_shape, gif_scale)
    check_label(model, label)
    check_label(model, label_to, "label_to")
    require(label_to is None or label is not None, "label_to walks the class from label: set label too")
    make_output_dir(folder)
    is_vae = model.kind == "vae"
    own = None
    if is_vae:
        z0, z1, *own = vae_endpoints(model, dataset, root, num_rows, seed, torch_device)
        normalize = False  # the decoder's sigmoid gives [0, 1]
    else:
        # Latents from their own seeded generator: the same seed gives the same rows on any device.
        rng = torch.Generator().manual_seed(seed)
        z0, z1 = torch.randn(2, num_rows, model.latent_dim, generator=rng).to(torch_device)
        normalize = dataset.get("normalize", True)
    if label_to is not None:
        z1 = z0  # the latent holds; the class walks
    t = torch.linspace(0, 1, num_steps)
    labels = path_labels(getattr(model, "num_classes", None), num_rows, t, label, label_to, own)
    images = render_paths(model, interpolate(z0, z1, num_steps, method), normalize, labels)

    outputs = {"grid": folder / "latent_space_interpolation.png", "gif": folder / "latent_space_interpolation.gif"}
    from torchvision.utils import save_image

    save_image(images.flatten(0, 1), outputs["grid"], nrow=num_steps, padding=2)
    frames = save_gif(images, outputs["gif"], gif_frame_ms, gif_scale)
    source = "encodings of test-image pairs" if is_vae else "random latents"
    if label_to is not None:
        source = f"class {label} and class {label_to} (latents held)"
    print(
        f"{type(model).__name__} from {path}: {num_rows} {method} paths of {num_steps} steps between {source}\n"
        f"  {outputs['grid']}\n  {outputs['gif']} ({frames} frames)"
    )
    return outputs


def main(argv: list[str] | None = None) -> dict[str, Path]:
    paths = {"weights_path": weights_path, "output_dir": output_dir}
    return analysis_main(__doc__, paths, "interpolation_kwargs", interpolation_kwargs, run_interpolation, argv)


if __name__ == "__main__":
    run_cli(main)
