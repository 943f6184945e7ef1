"""The training objectives and likelihood estimators, as plain functions of the models' outputs.

Everything here is per image and in nats; the trainers average over the batch. Speed and
distributed code never appear here: edit an objective in this file and the engine runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.likelihoods import LIKELIHOODS
from trainers.needs import Needs

LOG_2PI = math.log(2 * math.pi)


def vae_negative_elbo(
    x: torch.Tensor,
    logits: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
) -> dict[str, torch.Tensor]:
    """-ELBO(x) = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)) per image (Kingma & Welling, 2014).

    `logits` are p(x|z)'s parameters at one z ~ q(z|x), so `reconstruction` is a one-sample estimate of the
    expected negative log-likelihood under `likelihood` (models/likelihoods.py; the Bernoulli's is the BCE
    summed over pixels); the KL of two Gaussians is exact. beta = 1 is the ELBO; beta != 1 trains a beta-VAE
    (Higgins et al., 2017), and `loss` is then the training objective, not a bound.
    """
    reconstruction = -reconstruction_log_prob(x, logits, likelihood).flatten(1).sum(1)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), 1)
    return {"loss": reconstruction + beta * kl, "reconstruction": reconstruction, "kl": kl}


def reconstruction_log_prob(x: torch.Tensor, logits: torch.Tensor, likelihood: str = "bernoulli") -> torch.Tensor:
    """log p(x_i|z) per value, (..., C, H, W): the terms whose sum is the image's log-likelihood given z (their
    map shows where an image is unlikely). x: images (N, C, H, W) or flat (N, C*H*W); logits: p(x|z)'s
    parameters (..., P*C, H, W) for those N images (leading dimensions broadcast, e.g. K samples of z)."""
    pixel_likelihood = LIKELIHOODS[likelihood]
    channels = logits.shape[-3] // pixel_likelihood.num_params
    return pixel_likelihood.log_prob(x.reshape(-1, channels, *logits.shape[-2:]), logits)


def pixel_entropy(x: torch.Tensor) -> torch.Tensor:
    """sum_i H(x_i) per image: the binary entropy of each pixel's grey level, in nats.

    The floor of the Bernoulli reconstruction BCE on grey pixels (BCE(x, p) - H(x) is the KL divergence
    of Bernoulli(x) from Bernoulli(p), 0 only at p = x); it grows with the length of the strokes' soft
    edges, so subtracting it keeps a simple image (a "1") from looking likely for being simple.
    """
    x = x.flatten(1)
    return F.binary_cross_entropy(x, x, reduction="none").sum(1)  # 0 log 0 = 0: torch clamps the log


@torch.no_grad()
def vae_importance_weighted_nll(
    vae: nn.Module,
    x: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x) per image, estimated with `num_samples` importance samples z_k ~ q(z|x) (Burda et al., 2016):

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K

    An upper bound on the true -log p(x) that tightens as K grows; K = 1 is the one-sample -ELBO.
    The samples are decoded a chunk at a time, about 4k rows (a 128-image batch: 32 samples): a chunk's
    temporaries then stay in memory the allocator keeps, where 16k rows' are fresh pages at every operation
    (the noise is the same stream, drawn in pieces).
    A conditional VAE given `labels` estimates -log p(x|y) the same way.
    """
    y = () if labels is None else (labels,)
    chunk = max(1, 2**12 // len(x))
    mu, logvar = vae.encode(x, *y)
    std = torch.exp(0.5 * logvar)
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * std
        log_px_z = reconstruction_log_prob(x, vae.decode_logits(z, *y), vae.likelihood).flatten(2).sum(2)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(2)
        log_qz_x = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(2)
        log_weights.append(log_px_z + log_pz - log_qz_x)
    return -(torch.logsumexp(torch.cat(log_weights), 0) - math.log(num_samples))


# ---------------------------------------------------------------------------- GANs


def gan_discriminator_loss(
    loss: str, d_real: torch.Tensor, d_fake: torch.Tensor, real_target: float = 1.0
) -> torch.Tensor:
    """The discriminator's (critic's) loss from its raw outputs on real and generated images.

    bce            -log D(x) - log(1 - D(G(z))), D = sigmoid (Goodfellow et al., 2014); the real target
                   1 - label smoothing where real_target < 1 (Salimans et al., 2016)
    hinge          max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye, 2017; Miyato et al., 2018)
    least_squares  (D(x) - 1)^2 / 2 + D(G(z))^2 / 2 (Mao et al., 2017)
    wgan_gp        D(G(z)) - D(x), plus `gradient_penalty` (Gulrajani et al., 2017)
    """
    if loss == "bce":
        real = F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, real_target))
        return real + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    if loss == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if loss == "least_squares":
        return 0.5 * (d_real - 1).pow(2).mean() + 0.5 * d_fake.pow(2).mean()
    if loss == "wgan_gp":
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"unknown GAN loss {loss!r}: use one of {', '.join(GAN_LOSSES)}")


def gan_generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's raw outputs on its images.

    bce            -log D(G(z)), the non-saturating loss (Goodfellow et al., 2014)
    hinge, wgan_gp -D(G(z))
    least_squares  (D(G(z)) - 1)^2 / 2
    """
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    if loss in ("hinge", "wgan_gp"):
        return -d_fake.mean()
    if loss == "least_squares":
        return 0.5 * (d_fake - 1).pow(2).mean()
    raise ValueError(f"unknown GAN loss {loss!r}: use one of {', '.join(GAN_LOSSES)}")


@dataclass(frozen=True)
class GANObjective:
    """What trainers/gan_step.py needs to know of a loss besides its two formulas above: whether its
    critic's outputs are logits of a probability (losses.csv's d_real, d_fake are then probabilities),
    whether it adds `gradient_penalty`, and what it asks of the engine (trainers/needs.py)."""

    probability: bool = False
    gradient_penalty: bool = False
    needs: Needs = Needs()


# A new objective: a branch in each function above and a line here.
GAN_OBJECTIVES = {
    "bce": GANObjective(probability=True),
    "hinge": GANObjective(),
    "least_squares": GANObjective(),
    "wgan_gp": GANObjective(gradient_penalty=True, needs=Needs(double_backward=True)),
}
GAN_LOSSES = tuple(GAN_OBJECTIVES)


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """E[(|grad D(x_hat)|_2 - 1)^2] at x_hat uniformly between real and generated images (Gulrajani et al.,
    2017): a soft 1-Lipschitz constraint on the critic. Differentiable: it joins the critic's loss."""
    alpha = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake.reshape(real.shape)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def lecam_penalty(
    d_real: torch.Tensor, d_fake: torch.Tensor, average_real: torch.Tensor, average_fake: torch.Tensor
) -> torch.Tensor:
    """E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], a_real and a_fake moving averages of D's raw
    outputs on real and generated images (Tseng et al., 2021, the LeCam regulariser): D's outputs may not
    run far past the other kind's usual ones, the paper's remedy for a D that memorises few images."""
    return F.relu(d_real - average_fake).pow(2).mean() + F.relu(average_real - d_fake).pow(2).mean()


def consistency_penalty(outputs: torch.Tensor, outputs_again: torch.Tensor) -> torch.Tensor:
    """E[(D(T(x)) - D(T'(x)))^2] for two draws T, T' of the augmentation of the same images: the discriminator
    may not tell the augmentations apart (consistency regularisation, Zhang et al. 2020; balanced, on real and
    generated images alike, Zhao et al. 2021)."""
    return (outputs - outputs_again).pow(2).mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E[|grad D(x)|_2^2] on real images (Mescheder et al., 2018): the discriminator is pushed to be flat
    around the data, which keeps it from overfitting; the R1 term is gamma / 2 times this."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
