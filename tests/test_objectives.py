"""The objectives and likelihood estimators of trainers/objectives.py, each checked against its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import VAE, ConvVAE
from trainers.objectives import (
    GAN_LOSSES,
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    reconstruction_log_prob,
    vae_importance_weighted_nll,
    vae_negative_elbo,
)


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
    expected = F.binary_cross_entropy(torch.sigmoid(out["logits"]), x, reduction="none").flatten(1).sum(1)
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
        logits = vae.decode_logits(z.float()).double().flatten(1)
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


@pytest.mark.parametrize("likelihood", ["continuous_bernoulli", "logistic"])
def test_importance_weighted_nll_of_a_conv_vae_converges_under_each_likelihood(likelihood: str) -> None:
    """The same estimator for a convolutional VAE and the other likelihoods: the grid's exact -log p(x)
    (of 8-bit images for the discretized logistic) is approached as K grows."""
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=2, image_channels=1, image_side=8, base_channels=2, likelihood=likelihood).eval()
    x = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    axis = torch.linspace(-6, 6, 201, dtype=torch.float64)
    z = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        logits = vae.decode_logits(z.float()).double()
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    cell = math.log((axis[1] - axis[0]).item() ** 2)
    exact = torch.stack(
        [
            -(
                torch.logsumexp(
                    reconstruction_log_prob(image.double(), logits, likelihood).flatten(1).sum(1) + log_pz, 0
                )
                + cell
            )
            for image in x
        ]
    )
    errors = []
    for k in (1, 30, 1000):
        estimate = vae_importance_weighted_nll(vae, x.repeat(16, 1, 1, 1), k, torch.Generator().manual_seed(1))
        errors.append((estimate.double().view(16, -1) - exact).abs().mean().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05 * errors[0] + 0.02


def test_importance_weighted_nll_is_seeded_and_below_the_elbo_on_average() -> None:
    vae = VAE(hidden_size=32, latent_dim=6).eval()
    x = torch.rand(50, 784)
    first, second = (vae_importance_weighted_nll(vae, x, 64, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first, second) and first.shape == (50,)
    with torch.no_grad():
        elbo = vae_negative_elbo(x, **vae(x))["loss"]
    assert first.mean() < elbo.mean()


# ---------------------------------------------------------------------------- GANs


def test_gan_losses_at_known_discriminator_outputs() -> None:
    d_real, d_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sigmoid = torch.sigmoid

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    log_d_real = [math.log(sigmoid(v).item()) for v in d_real]
    log_1_minus_d_real = [math.log(1 - sigmoid(v).item()) for v in d_real]
    bce_fake = -mean([math.log(1 - sigmoid(v).item()) for v in d_fake])
    bce_d = -mean(log_d_real) + bce_fake
    expected_d = {
        "bce": bce_d,
        "hinge": mean([max(0, 1 - 2.0), max(0, 1 + 1.0)]) + mean([max(0, 1 + 0.5), max(0, 1 - 3.0)]),
        "least_squares": 0.5 * mean([(2.0 - 1) ** 2, (-1.0 - 1) ** 2]) + 0.5 * mean([0.25, 9.0]),
        "wgan_gp": mean([0.5, -3.0]) - mean([2.0, -1.0]),
    }
    expected_g = {
        "bce": -mean([math.log(sigmoid(v).item()) for v in d_fake]),
        "hinge": -mean([0.5, -3.0]),
        "least_squares": 0.5 * mean([(0.5 - 1) ** 2, (-3.0 - 1) ** 2]),
        "wgan_gp": -mean([0.5, -3.0]),
    }
    for loss in GAN_LOSSES:
        assert gan_discriminator_loss(loss, d_real, d_fake).item() == pytest.approx(expected_d[loss], rel=1e-5)
        assert gan_generator_loss(loss, d_fake).item() == pytest.approx(expected_g[loss], rel=1e-5)
    # Label smoothing: the real target 0.9 mixes the two log terms of the real images.
    smoothed = -mean([0.9 * a + 0.1 * b for a, b in zip(log_d_real, log_1_minus_d_real, strict=True)]) + bce_fake
    assert gan_discriminator_loss("bce", d_real, d_fake, real_target=0.9).item() == pytest.approx(smoothed, rel=1e-5)
    with pytest.raises(ValueError, match="unknown GAN loss 'wasserstein'"):
        gan_generator_loss("wasserstein", d_fake)


def test_gradient_penalty_of_a_linear_critic() -> None:
    """D(x) = w.x has gradient w everywhere: the penalty is (|w| - 1)^2 wherever x_hat falls."""
    critic = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # |w| = 5
    penalty = gradient_penalty(critic, torch.randn(6, 4), torch.randn(6, 4))
    assert penalty.item() == pytest.approx(16.0, rel=1e-5)
    penalty.backward()  # differentiable in the critic's weights, as the critic's loss needs
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def _ring(n: int, generator: torch.Generator) -> torch.Tensor:
    """A ring of 8 Gaussians of radius 2 (std 0.05), the usual 2-D test of a GAN objective."""
    angles = torch.randint(0, 8, (n,), generator=generator) * (2 * math.pi / 8)
    centres = 2 * torch.stack([angles.cos(), angles.sin()], 1)
    return centres + 0.05 * torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize(("loss", "d_steps"), [("bce", 1), ("hinge", 1), ("least_squares", 1), ("wgan_gp", 5)])
def test_each_gan_objective_moves_samples_toward_a_ring(loss: str, d_steps: int) -> None:
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    generator = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    critic = torch.nn.Sequential(
        torch.nn.Linear(2, 64),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Linear(64, 64),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Linear(64, 1),
    )
    betas = (0.5, 0.9) if loss == "wgan_gp" else (0.5, 0.999)
    g_opt = torch.optim.Adam(generator.parameters(), 1e-3, betas=betas)
    d_opt = torch.optim.Adam(critic.parameters(), 1e-3, betas=betas)

    def distance_to_ring() -> float:
        with torch.no_grad():
            samples = generator(torch.randn(2000, 2, generator=torch.Generator().manual_seed(2)))
        return (samples.norm(dim=1) - 2).abs().mean().item()

    before = distance_to_ring()
    for step in range(1, 301 * d_steps):
        real, fake = _ring(128, data), generator(torch.randn(128, 2))
        d_loss = gan_discriminator_loss(loss, critic(real), critic(fake.detach()))
        if loss == "wgan_gp":
            d_loss = d_loss + 10 * gradient_penalty(critic, real, fake.detach())
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        if step % d_steps == 0:
            g_loss = gan_generator_loss(loss, critic(fake))
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
    after = distance_to_ring()
    assert after < 0.5 * before, (before, after)
