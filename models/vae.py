"""Fully-connected variational autoencoder for flattened images in [0, 1]."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.base import ConfiguredModule
from models.conditioning import check_num_classes, with_labels


class VAE(ConfiguredModule):
    """Encoder -> (mu, log-variance) -> reparameterised z -> decoder -> pixel probabilities.

    One interface for every use: `encode`, `decode`, `sample`, `reconstruct`, and `forward`, the
    ELBO's stochastic pass (one z ~ q(z|x) per image, in training and evaluation alike). The
    objective and the likelihood estimates are in trainers/objectives.py.

    With `num_classes` it is a conditional VAE (Sohn et al., 2015): the one-hot label joins the
    encoder's pixels and the decoder's latent, and every method takes `labels`.
    """

    def __init__(
        self,
        hidden_size: int = 1024,
        latent_dim: int = 512,
        image_size: int = 784,
        num_hidden_layers: int = 1,
        num_classes: int | None = None,
    ):
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        if num_hidden_layers < 1:
            raise ValueError(
                f"num_hidden_layers must be 1 or more (encoder and decoder each need one), got {num_hidden_layers}"
            )
        side = math.isqrt(image_size)
        if side * side != image_size:
            raise ValueError(f"image_size must be a square number of pixels (784 = 28x28), got {image_size}")
        self.latent_dim = latent_dim
        self.image_shape = (1, side, side)

        def stack(n_in: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(num_hidden_layers):
                layers += [nn.Linear(n_in if i == 0 else hidden_size, hidden_size), nn.ReLU()]
            return nn.Sequential(*layers)

        labels = num_classes or 0
        self.encoder = stack(image_size + labels)
        self.to_mu = nn.Linear(hidden_size, latent_dim)
        self.to_logvar = nn.Linear(hidden_size, latent_dim)
        self.decoder = stack(latent_dim + labels)
        self.to_logits = nn.Linear(hidden_size, image_size)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(with_labels(x.flatten(1), labels, self.num_classes))
        return self.to_mu(h), self.to_logvar(h)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (..., latent_dim) -> pixel logits (..., image_size); labels (...) for a conditional VAE."""
        if labels is not None:  # importance sampling decodes (K, N, latent) at once: one label per image
            # labels: class indices (N,) or class weights (N, classes)
            labels = labels.expand(*z.shape[:-1], *labels.shape[1:]).reshape(-1, *labels.shape[1:])
        h = with_labels(z.reshape(-1, z.shape[-1]), labels, self.num_classes)
        return self.to_logits(self.decoder(h)).view(*z.shape[:-1], -1)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latent -> flat image with pixels in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, labels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """x -> q(z|x)'s mean and log-variance, and the logits of p(x|z) at one sampled z."""
        mu, logvar = self.encode(x, labels)
        return {"logits": self.decode_logits(self.reparameterize(mu, logvar), labels), "mu": mu, "logvar": logvar}

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> reconstructions from the mean latent, pixels in [0, 1], flat."""
        return self.decode(self.encode(x, labels)[0], labels)

    def sample(
        self, num_samples: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        device = self.to_mu.weight.device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.decode(z, labels)
