"""The one rule every saved network follows: its `config` is its constructor's arguments."""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from models.likelihoods import LIKELIHOODS


class ConfiguredModule(nn.Module):
    """An nn.Module whose `config` is the arguments its constructor was called with, defaults filled in.

    Recorded when __init__ returns (by __init_subclass__, for every subclass), so a new model or a
    new constructor argument needs no hand-written copy: `utils.save_model` writes `config` and
    `utils.load_model` rebuilds the same network from it. A subclass's own __init__ records last, so
    `config` holds the arguments of the class that was built.
    """

    config: dict
    kind: str = "model"  # what a model is for (generator, discriminator, vae, classifier): the scripts ask by kind

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs) -> None:
            init(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])  # without self
            for name, parameter in signature.parameters.items():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments |= arguments.pop(name)
            self.config = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()}

        cls.__init__ = recording_init


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation of every convolution and linear layer in `module`, in place (Miyato et al., 2018):
    each weight is divided by its largest singular value, estimated by one power iteration per training
    forward pass (its vectors are buffers, so they are in the checkpoint), which keeps the network about
    1-Lipschitz."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)


class VAEBase(ConfiguredModule):
    """The interface every VAE follows, so the trainer, the objectives, the analysis scripts and generate.py
    work with any of them (a new VAE is one file: `encode` and `decode_logits`, and one line in models/__init__.py).

    A subclass sets `latent_dim`, `image_shape` (C, H, W), `num_classes` (None: unconditional) and
    `likelihood` (a name in models/likelihoods.py) and defines
        encode(x, labels)        images (N, C, H, W) or flat (N, C*H*W) -> q(z|x)'s mean and log-variance,
                                 each (N, latent_dim)
        decode_logits(z, labels) latents (..., latent_dim) -> the likelihood's parameters (..., P*C, H, W),
                                 P = its num_params (logits for the Bernoulli)
    With `num_classes`, labels are class indices (N,) or class weights (N, classes), one per image.
    """

    kind = "vae"
    latent_dim: int
    image_shape: tuple[int, int, int]
    num_classes: int | None
    likelihood: str

    @property
    def pixel_likelihood(self):
        return LIKELIHOODS[self.likelihood]

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (..., latent_dim) -> the images p(x|z) expects (..., C, H, W), pixels in [0, 1]."""
        return self.pixel_likelihood.mean(self.decode_logits(z, labels))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The ELBO's stochastic pass: q(z|x)'s mean and log-variance, and p(x|z)'s parameters at one z ~ q(z|x)."""
        mu, logvar = self.encode(x, labels)
        return {"logits": self.decode_logits(self.reparameterize(mu, logvar), labels), "mu": mu, "logvar": logvar}

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> their reconstructions from the mean latent, (N, C, H, W) in [0, 1]."""
        return self.decode(self.encode(x, labels)[0], labels)

    def sample(
        self, num_samples: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.decode(z, labels)
