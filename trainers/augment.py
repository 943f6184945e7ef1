"""Differentiable augmentations of every image the discriminator sees, real and generated alike.

Training a GAN on a few thousand images, the discriminator memorises them and its feedback to the
generator stops being useful. Augmenting both real and generated images on their way into the
discriminator, with operations the generator's gradient passes through, keeps it from memorising
while the generator still learns the un-augmented images:

- `diffaugment` (Zhao et al., 2020): every operation of the policy on every image.
- `ada` (Karras et al., 2020): each operation on each image with probability p, which follows how
  much the discriminator overfits, r_t = E[sign(D(x_real))]: p rises while r_t is above `target`
  and falls while it is below, by at most 1 per `kimg` thousand real images.

The operations take images (N, C, H, W) in [-1, 1] and draw their random numbers with torch on the
images' device, one draw per image; p and ADA's statistics are tensors updated by tensor operations,
so a CUDA graph replays them as they are, and they are saved in the checkpoint (`state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainers import distributed
from trainers.needs import Needs

AUGMENTS = ("none", "diffaugment", "ada")


def _uniform(x: torch.Tensor) -> torch.Tensor:
    """One number in [0, 1) per image, shaped to broadcast over it."""
    return torch.rand(len(x), *[1] * (x.dim() - 1), device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_uniform(x) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    return (x - mean) * (2 * _uniform(x)) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size in each direction (whole pixels), filling with 0."""
    n, _, h, w = x.shape
    shift = [int(size * ratio + 0.5) for size in (h, w)]
    dy = torch.randint(-shift[0], shift[0] + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-shift[1], shift[1] + 1, (n, 1, 1), device=x.device)
    # Index a copy padded by one zero pixel; every source pixel outside the image reads the padding.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of `ratio` of the image's size centred anywhere in each image (cut off at the edges)."""
    n, _, h, w = x.shape
    half_h, half_w = h * ratio / 2, w * ratio / 2
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - cy).abs() < half_h) & ((cols - cx).abs() < half_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror half of the images left to right."""
    return torch.where(_uniform(x) < 0.5, x.flip(3), x)


# The operations a policy names; "color" is three of them, each with its own draw.
OPERATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
    "flip": (flip,),
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation,cutout' -> its names; a ValueError naming an unknown one."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown or not names:
        raise ValueError(f"unknown augmentation {unknown[0]!r}" if unknown else "no augmentation named")
    return names


class Augment(nn.Module):
    """What `run_D` does to each batch before the discriminator: `kind` none (nothing), diffaugment or ada,
    with the operations `policy` names, on images of `image_shape` (a flat batch is shaped to it and back).

    ada: `adapt(d_real)` after every discriminator pass on real images; every `interval` calls p moves
    by sign(r_t - target) * (images seen) / (kimg * 1000), clipped to [0, 1] (the paper's rule, with
    its interval of 4). Under torchrun r_t counts the images of every process, so p is the same on all.
    """

    def __init__(
        self,
        kind: str,
        policy: str,
        image_shape: tuple[int, int, int],
        target: float = 0.6,
        kimg: float = 100.0,
        interval: int = 4,
    ) -> None:
        super().__init__()
        if kind not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got {kind!r}")
        self.kind, self.image_shape = kind, tuple(image_shape)
        self.operations = [op for name in parse_policy(policy) for op in OPERATIONS[name]] if kind != "none" else []
        self.target, self.kimg, self.interval = target, kimg, interval
        self.needs = Needs(draws_random=bool(self.operations))
        self.register_buffer("p", torch.tensor(1.0 if kind == "diffaugment" else 0.0))
        self.register_buffer("r_t", torch.tensor(0.0))  # the latest estimate
        self.register_buffer("signs", torch.zeros(2))  # sum of sign(D(x_real)) and images, since the last update
        self.register_buffer("calls", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.operations:
            return x
        shape = x.shape
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        x = x.reshape(len(x), *self.image_shape)
        for operation in self.operations:
            if self.kind == "ada":  # each image takes each operation with probability p
                x = torch.where(_uniform(x) < self.p, operation(x), x)
            else:
                x = operation(x)
        x = x.reshape(shape)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    @torch.no_grad()
    def adapt(self, d_real: torch.Tensor) -> None:
        """r_t from the discriminator's raw outputs on a real batch, and for ada the probability's step."""
        if not self.operations:
            return
        seen = torch.stack([d_real.detach().float().sign().sum(), torch.full_like(self.calls, len(d_real))])
        self.signs += distributed.sum_over_ranks(seen)
        self.calls += 1
        due = self.calls >= self.interval
        r_t = self.signs[0] / self.signs[1]
        step = torch.sign(r_t - self.target) * self.signs[1] / (self.kimg * 1000)
        if self.kind == "ada":
            self.p.copy_(torch.where(due, (self.p + step).clamp(0, 1), self.p))
        self.r_t.copy_(torch.where(due, r_t, self.r_t))
        self.signs.mul_(~due)
        self.calls.mul_(~due)

    def logs(self) -> dict[str, torch.Tensor]:
        """For losses.csv: the probability and r_t, how much D overfits (nothing without augmentation)."""
        if not self.operations:
            return {}
        return {"augment_p": self.p.clone(), "r_t": self.r_t.clone()}
