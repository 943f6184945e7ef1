"""Fully-connected GAN for flattened images (MNIST: 28x28 -> 784)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _image_shape(image_size: int) -> tuple[int, int, int]:
    side = math.isqrt(image_size)
    if side * side != image_size:
        raise ValueError(f"image_size must be a square number of pixels (784 = 28x28), got {image_size}")
    return (1, side, side)


def _check_layers(name: str, count: int) -> None:
    if count < 0:
        raise ValueError(f"{name} must be 0 or more, got {count}")


class Dropout(nn.Dropout):
    """nn.Dropout that draws its CPU mask as uniform numbers >= p: the same distribution, about twice
    as fast, because torch's CPU bernoulli_ is slow (it was 9% of an FC GAN step at batch 16).
    Elsewhere (CUDA's dropout is one fused kernel) and in eval mode it is nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand_like(x).ge_(self.p)  # 1.0 with probability 1 - p, else 0.0
        return x * keep.mul_(1 / (1 - self.p))


def _mlp(sizes: list[int], dropout: float = 0.0, batchnorm: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False):
        layers.append(nn.Linear(n_in, n_out, bias=not batchnorm))  # BatchNorm's shift is the bias
        if batchnorm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(nn.LeakyReLU(0.2))
        if dropout:
            layers.append(Dropout(dropout))
    return layers


class FCGenerator(nn.Module):
    """latent -> hidden layers -> image_size pixels in [-1, 1] (tanh), as a flat vector."""

    def __init__(
        self,
        latent_variable_size: int = 64,
        generator_hidden_size: int = 256,
        image_size: int = 784,
        generator_hidden_layers: int = 2,
        generator_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.config = dict(
            latent_variable_size=latent_variable_size,
            generator_hidden_size=generator_hidden_size,
            image_size=image_size,
            generator_hidden_layers=generator_hidden_layers,
            generator_batchnorm=generator_batchnorm,
        )
        self.latent_dim = latent_variable_size
        self.image_shape = _image_shape(image_size)
        _check_layers("generator_hidden_layers", generator_hidden_layers)
        hidden = [generator_hidden_size] * generator_hidden_layers
        self.net = nn.Sequential(
            *_mlp([latent_variable_size, *hidden], batchnorm=generator_batchnorm),
            nn.Linear(hidden[-1] if hidden else latent_variable_size, image_size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FCDiscriminator(nn.Module):
    """image -> hidden layers -> one logit; `probability` gives sigmoid(logit) = P(real).

    The logit is what the loss uses: BCE-with-logits is stable where BCE on a probability
    saturates.
    """

    def __init__(
        self,
        image_size: int = 784,
        discriminator_hidden_size: int = 256,
        discriminator_hidden_layers: int = 2,
        discriminator_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.config = dict(
            image_size=image_size,
            discriminator_hidden_size=discriminator_hidden_size,
            discriminator_hidden_layers=discriminator_hidden_layers,
            discriminator_dropout=discriminator_dropout,
        )
        self.image_shape = _image_shape(image_size)
        _check_layers("discriminator_hidden_layers", discriminator_hidden_layers)
        if not 0 <= discriminator_dropout < 1:
            raise ValueError(f"discriminator_dropout must be in [0, 1), got {discriminator_dropout}")
        hidden = [discriminator_hidden_size] * discriminator_hidden_layers
        self.net = nn.Sequential(
            *_mlp([image_size, *hidden], discriminator_dropout),
            nn.Linear(hidden[-1] if hidden else image_size, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))
