"""DCGAN (Radford et al., 2016) for square images whose side is a power of two (32 for CIFAR-10)."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.base import ConfiguredModule, apply_spectral_norm
from models.conditioning import Projection, check_class_conditioning, check_num_classes, with_labels


def _num_stages(image_size: int) -> int:
    """Stride-2 stages between a 4x4 feature map and the image."""
    stages = int(math.log2(image_size)) - 2
    if image_size < 8 or 4 * 2**stages != image_size:
        raise ValueError(f"image_size must be a power of two >= 8 (32 for CIFAR-10), got {image_size}")
    return stages


def _check_channels(image_channels: int) -> None:
    if image_channels not in (1, 3):
        raise ValueError(f"image_channels must be 1 (grey) or 3 (colour), got {image_channels}")


def init_dcgan_weights(module: nn.Module) -> None:
    """The DCGAN paper's init: conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(ConfiguredModule):
    """latent (N, latent_dim) -> 4x4 -> ... -> image (N, C, S, S) in [-1, 1] via transposed convs.
    With `num_classes` the one-hot label joins the latent: forward(z, labels)."""

    kind = "generator"

    def __init__(
        self,
        latent_dim: int = 100,
        feature_maps: int = 64,
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int | None = None,
    ):
        super().__init__()
        check_num_classes(num_classes)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.image_shape = (image_channels, image_size, image_size)
        _check_channels(image_channels)
        stages = _num_stages(image_size)
        channels = feature_maps * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim + (num_classes or 0), channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, image_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = with_labels(z.view(z.shape[0], -1), labels, self.num_classes)
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(ConfiguredModule):
    """image -> 4x4 stride-2 convs down to 4x4 -> one logit; `probability` gives P(real).

    With `num_classes`, forward(x, labels) judges the pair, by `class_conditioning` "projection"
    (the label's embedding times the final 4x4 feature map joins the logit) or "concat" (one-hot
    label maps join the image's channels). `spectral_norm` normalises every convolution's weight by its
    largest singular value (Miyato et al., 2018) in place of BatchNorm, as SN-GAN's discriminator does.
    """

    kind = "discriminator"

    def __init__(
        self,
        feature_maps: int = 64,
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int | None = None,
        class_conditioning: str = "projection",
        spectral_norm: bool = False,
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_class_conditioning(class_conditioning)
        self.image_shape = (image_channels, image_size, image_size)
        _check_channels(image_channels)
        stages = _num_stages(image_size)
        self.num_classes = num_classes
        self.concat = num_classes is not None and class_conditioning == "concat"
        # No BatchNorm on the first layer, as in the paper.
        layers: list[nn.Module] = [
            nn.Conv2d(image_channels + (num_classes if self.concat else 0), feature_maps, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        channels = feature_maps
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.Identity() if spectral_norm else nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2, True),
            ]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)
        self.projection = Projection(num_classes, channels * 16) if num_classes and not self.concat else None
        if spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.projection is not None:
            features = self.net[:-1](x)  # (N, C, 4, 4)
            return self.net[-1](features).flatten() + self.projection(features, labels)
        if self.concat:  # the one-hot label as constant extra channels
            one_hot = with_labels(x.new_zeros(len(x), 0), labels, self.num_classes)
            x = torch.cat([x, one_hot[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        else:
            with_labels(x, labels, None)  # an unconditional discriminator refuses labels
        return self.net(x).flatten()

    def probability(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self(x, labels))
