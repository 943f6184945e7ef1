"""Fully-connected variational autoencoder for flattened grey images in [0, 1] (the SPEC's)."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.base import VAEBase
from models.conditioning import check_num_classes, with_labels
from models.likelihoods import check_likelihood


class VAE(VAEBase):
    """Encoder -> (mu, log-variance) -> reparameterised z -> decoder -> p(x|z)'s parameters, on flat pixels.

    The interface (encode, decode, sample, reconstruct, forward: the ELBO's stochastic pass) is VAEBase's,
    in models/base.py; the objective and the likelihood estimates are in trainers/objectives.py.
    `image_size` is the number of pixels of a square grey image (784 = 28x28, the SPEC's).

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
        likelihood: str = "bernoulli",
    ):
        super().__init__()
        check_num_classes(num_classes)
        check_likelihood(likelihood)
        self.num_classes, self.likelihood = num_classes, likelihood
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
        self.to_logits = nn.Linear(hidden_size, image_size * self.pixel_likelihood.num_params)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(with_labels(x.flatten(1), labels, self.num_classes))
        return self.to_mu(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:  # importance sampling decodes (K, N, latent) at once: one label per image
            # labels: class indices (N,) or class weights (N, classes)
            labels = labels.expand(*z.shape[:-1], *labels.shape[1:]).reshape(-1, *labels.shape[1:])
        h = with_labels(z.reshape(-1, z.shape[-1]), labels, self.num_classes)
        _, height, width = self.image_shape
        return self.to_logits(self.decoder(h)).view(*z.shape[:-1], -1, height, width)
