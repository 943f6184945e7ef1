"""The training objectives and likelihood estimators, as plain functions of the models' outputs.

Everything here is per image and in nats; the trainers average over the batch. Speed and
distributed code never appear here: edit an objective in this file and the engine runs it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def vae_negative_elbo(
    x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> dict[str, torch.Tensor]:
    """-ELBO(x) = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)) per image (Kingma & Welling, 2014).

    `logits` decode one z ~ q(z|x), so `reconstruction` is a one-sample estimate of the expected
    Bernoulli negative log-likelihood (BCE summed over pixels); the KL of two Gaussians is exact.
    beta = 1 is the ELBO; beta != 1 trains a beta-VAE (Higgins et al., 2017), and `loss` is then
    the training objective, not a bound: `neg_elbo` is always the beta = 1 sum.
    """
    x = x.flatten(1)
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), 1)
    return {"loss": reconstruction + beta * kl, "reconstruction": reconstruction, "kl": kl}


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
    vae: nn.Module, x: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """-log p(x) per image, estimated with `num_samples` importance samples z_k ~ q(z|x) (Burda et al., 2016):

        log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K

    An upper bound on the true -log p(x) that tightens as K grows; K = 1 is the one-sample -ELBO.
    The samples are decoded a chunk at a time, about 16k rows (a 1000-image batch: 16 samples).
    """
    x = x.flatten(1)
    chunk = max(1, 2**14 // len(x))
    mu, logvar = vae.encode(x)
    std = torch.exp(0.5 * logvar)
    log_weights = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * std
        log_px_z = -F.binary_cross_entropy_with_logits(
            vae.decode_logits(z), x.expand(k, -1, -1), reduction="none"
        ).sum(2)
        log_pz = -0.5 * (z.pow(2) + LOG_2PI).sum(2)
        log_qz_x = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(2)
        log_weights.append(log_px_z + log_pz - log_qz_x)
    return -(torch.logsumexp(torch.cat(log_weights), 0) - math.log(num_samples))
