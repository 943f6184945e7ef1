"""Convolutional variational autoencoder for images of any channel count and size (28 to 128 px and more)."""

from __future__ import annotations

import torch
from torch import nn

from models.base import VAEBase
from models.conditioning import check_num_classes, with_labels
from models.likelihoods import check_likelihood


class ConvVAE(VAEBase):
    """Stride-2 convolutions halve the image until its side is 4 to 7 (32 -> 16 -> 8 -> 4, 28 -> 14 -> 7),
    the channels doubling from `base_channels` (at most 8x); linear layers give q(z|x)'s mean and
    log-variance. The decoder mirrors it with transposed convolutions up to p(x|z)'s parameters per pixel.
    No batch norm: an image's encoding never depends on the others in its batch.

    With `num_classes` it is a conditional VAE: the one-hot label joins the encoder's features and the latent.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        image_channels: int = 1,
        image_side: int = 28,
        base_channels: int = 32,
        num_classes: int | None = None,
        likelihood: str = "logistic",  # chosen by benchmarks/oneclass.py on CIFAR-10 (docs/results.md)
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_likelihood(likelihood)
        if image_side < 4:
            raise ValueError(f"image_side must be 4 or more, got {image_side}")
        self.latent_dim, self.num_classes, self.likelihood = latent_dim, num_classes, likelihood
        self.image_shape = (image_channels, image_side, image_side)
        sides = [image_side]
        while sides[-1] % 2 == 0 and sides[-1] > 7:
            sides.append(sides[-1] // 2)
        widths = [min(base_channels * 2**i, base_channels * 8) for i in range(len(sides) - 1)]
        act = nn.LeakyReLU(0.2)
        encoder: list[nn.Module] = []
        for n_in, n_out in zip([image_channels, *widths], widths, strict=False):
            encoder += [nn.Conv2d(n_in, n_out, 4, 2, 1), act]
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.top_shape = (widths[-1] if widths else image_channels, sides[-1], sides[-1])
        features = self.top_shape[0] * sides[-1] ** 2
        labels = num_classes or 0
        self.to_mu = nn.Linear(features + labels, latent_dim)
        self.to_logvar = nn.Linear(features + labels, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + labels, features), act)
        outputs = image_channels * self.pixel_likelihood.num_params
        decoder: list[nn.Module] = []
        ups = list(reversed(widths))
        for i, n_in in enumerate(ups):
            last = i == len(ups) - 1
            decoder += [nn.ConvTranspose2d(n_in, outputs if last else ups[i + 1], 4, 2, 1)]
            decoder += [] if last else [act]
        self.decoder = nn.Sequential(*decoder) if decoder else nn.Conv2d(image_channels, outputs, 1)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = with_labels(self.encoder(x.reshape(-1, *self.image_shape)), labels, self.num_classes)
        return self.to_mu(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:  # importance sampling decodes (K, N, latent) at once: one label per image
            labels = labels.expand(*z.shape[:-1], *labels.shape[1:]).reshape(-1, *labels.shape[1:])
        h = self.from_latent(with_labels(z.reshape(-1, z.shape[-1]), labels, self.num_classes))
        out = self.decoder(h.view(-1, *self.top_shape))
        return out.view(*z.shape[:-1], *out.shape[1:])
