"""The objectives and likelihood estimators of trainers/objectives.py, each checked against its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import VAE
from trainers.objectives import vae_importance_weighted_nll, vae_negative_elbo


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_vae_negative_elbo_terms_per_image() -> None:
    vae = VAE(hidden_size=32, latent_dim=6)
    x = torch.rand(5, 1, 28, 28)
    out = vae(x)
    terms = vae_negative_elbo(x, **out)
    assert set(terms) == {"loss", "reconstruction", "kl"}
    assert all(value.shape == (5,) for value in terms.values())
    assert torch.allclose(terms["loss"], terms["reconstruction"] + terms["kl"])
    assert (terms["kl"] >= 0).all()
    # Reconstruction: BCE summed over each image's pixels.
    expected = F.binary_cross_entropy(torch.sigmoid(out["logits"]), x.flatten(1), reduction="none").sum(1)
    assert torch.allclose(terms["reconstruction"], expected, rtol=1e-4)
    # KL of the standard normal to itself is 0; a mean shifted by 2 in 6 dimensions costs 0.5 * 4 * 6.
    zeros = torch.zeros(5, 6)
    assert vae_negative_elbo(x, out["logits"], zeros, zeros)["kl"].abs().max() < 1e-6
    assert torch.allclose(vae_negative_elbo(x, out["logits"], zeros + 2, zeros)["kl"], torch.full((5,), 12.0))
    # beta weighs the KL in the loss only.
    weighted = vae_negative_elbo(x, **out, beta=0.5)
    assert torch.allclose(weighted["loss"], terms["reconstruction"] + 0.5 * terms["kl"])


def _exact_nll(vae: VAE, x: torch.Tensor, half_width: float = 7.0, points: int = 701) -> torch.Tensor:
    """-log p(x) of a VAE with a 2-D latent, integrating p(x|z) p(z) over a dense grid."""
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)
    cell = math.log((axis[1] - axis[0]).item() ** 2)
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    with torch.no_grad():
        logits = vae.decode_logits(z.float()).double()
    nll = []
    for image in x.flatten(1).double():
        log_px_z = -F.binary_cross_entropy_with_logits(logits, image.expand_as(logits), reduction="none").sum(1)
        nll.append(-(torch.logsumexp(log_px_z + log_pz, 0) + cell))
    return torch.stack(nll)


def test_importance_weighted_nll_converges_to_the_exact_likelihood() -> None:
    """With a 2-D latent the true -log p(x) is an integral a grid computes; the estimate is an upper bound
    that tightens toward it as K grows, and K = 1 is the one-sample -ELBO."""
    vae = VAE(hidden_size=16, latent_dim=2, image_size=64).eval()
    x = (torch.rand(16, 64) < 0.3).float()
    exact = _exact_nll(vae, x)
    repeats = 64  # each image 64 times: the mean estimate at each K, up to its noise
    means, errors = [], []
    for k in (1, 10, 100, 5000):  # 5000: more than one chunk of samples
        estimate = vae_importance_weighted_nll(vae, x.repeat(repeats, 1), k, torch.Generator().manual_seed(1))
        estimate = estimate.double().view(repeats, -1)
        means.append((estimate.mean(0) - exact).mean().item())
        errors.append((estimate - exact).abs().mean().item())
    assert means[0] > means[1] > means[2] > 0  # an upper bound in expectation, tightening with K
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.02 and errors[3] < 0.05 * errors[0]

    # K = 1 is a one-sample -ELBO (with a sampled KL): the same mean as vae_negative_elbo's over many z.
    many = x[:2].repeat(4000, 1)
    one = vae_importance_weighted_nll(vae, many, 1, torch.Generator().manual_seed(2)).view(4000, 2).mean(0)
    with torch.no_grad():
        elbo = vae_negative_elbo(many, **vae(many))["loss"].view(4000, 2).mean(0)
    assert torch.allclose(one, elbo, atol=0.05)


def test_importance_weighted_nll_is_seeded_and_below_the_elbo_on_average() -> None:
    vae = VAE(hidden_size=32, latent_dim=6).eval()
    x = torch.rand(50, 784)
    first, second = (vae_importance_weighted_nll(vae, x, 64, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first, second) and first.shape == (50,)
    with torch.no_grad():
        elbo = vae_negative_elbo(x, **vae(x))["loss"]
    assert first.mean() < elbo.mean()
