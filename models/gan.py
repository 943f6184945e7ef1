"""Fully-connected GAN for flattened images (MNIST: 28x28 -> 784)."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.base import ConfiguredModule, apply_spectral_norm
from models.conditioning import Projection, check_class_conditioning, check_num_classes, with_labels


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


class FCGenerator(ConfiguredModule):
    """latent -> hidden layers -> image_size pixels in [-1, 1] (tanh), as a flat vector. With
    `num_classes` the label, one-hot, joins the latent (Mirza & Osindero, 2014): forward(z, labels)."""

    kind = "generator"

    def __init__(
        self,
        latent_variable_size: int = 64,
        generator_hidden_size: int = 256,
        image_size: int = 784,
        generator_hidden_layers: int = 2,
        generator_batchnorm: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.latent_dim, self.num_classes = latent_variable_size, num_classes
        self.image_shape = _image_shape(image_size)
        _check_layers("generator_hidden_layers", generator_hidden_layers)
        hidden = [generator_hidden_size] * generator_hidden_layers
        inputs = latent_variable_size + (num_classes or 0)
        self.net = nn.Sequential(
            *_mlp([inputs, *hidden], batchnorm=generator_batchnorm),
            nn.Linear(hidden[-1] if hidden else inputs, image_size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(with_labels(z, labels, self.num_classes))


class FCDiscriminator(ConfiguredModule):
    """image -> hidden layers -> one logit; `probability` gives sigmoid(logit) = P(real).

    The logit is what the loss uses: BCE-with-logits is stable where BCE on a probability
    saturates. With `num_classes`, forward(x, labels) judges the pair: by `class_conditioning`
    "projection" (the label's embedding times the last hidden layer joins the logit) or "concat"
    (the one-hot label joins the pixels). `spectral_norm` normalises every layer's weight by its largest
    singular value (Miyato et al., 2018).
    """

    kind = "discriminator"

    def __init__(
        self,
        image_size: int = 784,
        discriminator_hidden_size: int = 256,
        discriminator_hidden_layers: int = 2,
        discriminator_dropout: float = 0.3,
        num_classes: int | None = None,
        class_conditioning: str = "projection",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_class_conditioning(class_conditioning)
        self.image_shape = _image_shape(image_size)
        _check_layers("discriminator_hidden_layers", discriminator_hidden_layers)
        if not 0 <= discriminator_dropout < 1:
            raise ValueError(f"discriminator_dropout must be in [0, 1), got {discriminator_dropout}")
        self.num_classes = num_classes
        self.concat = num_classes is not None and class_conditioning == "concat"
        inputs = image_size + (num_classes if self.concat else 0)
        hidden = [discriminator_hidden_size] * discriminator_hidden_layers
        features = hidden[-1] if hidden else inputs
        self.net = nn.Sequential(*_mlp([inputs, *hidden], discriminator_dropout), nn.Linear(features, 1))
        self.projection = Projection(num_classes, features) if num_classes and not self.concat else None
        if spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        if self.projection is None:
            return self.net(with_labels(x, labels, self.num_classes if self.concat else None)).squeeze(1)
        features = self.net[:-1](x)
        return self.net[-1](features).squeeze(1) + self.projection(features, labels)

    def probability(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self(x, labels))
