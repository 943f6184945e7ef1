"""A small CNN classifier whose penultimate layer is the feature space of the quality metrics."""

from __future__ import annotations

import torch
from torch import nn

from models.base import ConfiguredModule


class SmallCNN(ConfiguredModule):
    """Image (N, C, S, S) with pixels in [0, 1] -> class logits; `features` gives the penultimate layer.

    Stages of conv3x3-BatchNorm-ReLU (`convs_per_stage` of them) followed by a 2x2 max-pool, then a
    hidden fully-connected layer of `feature_dim` units: the features that the Fréchet distance, KID
    and precision/recall compare (the role Inception's pool layer plays in FID).
    """

    kind = "classifier"

    def __init__(
        self,
        image_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        widths: list[int] | None = None,
        convs_per_stage: int = 1,
        feature_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        widths = list(widths) if widths is not None else [32, 64]
        self.image_shape = (image_channels, image_size, image_size)
        self.num_classes = num_classes
        if image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 (grey) or 3 (colour), got {image_channels}")
        if not widths or image_size // 2 ** len(widths) < 1:
            raise ValueError(f"{len(widths)} pooling stages do not fit images of side {image_size}")
        if convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be 1 or more, got {convs_per_stage}")
        layers: list[nn.Module] = []
        channels = image_channels
        for width in widths:
            for _ in range(convs_per_stage):
                # No bias: BatchNorm's shift is the bias.
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        side = image_size // 2 ** len(widths)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(channels * side * side, feature_dim), nn.ReLU(True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (N, feature_dim)."""
        return self.hidden(self.body(x * 2 - 1))  # centre [0, 1] pixels around 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return features, self.head(features)
