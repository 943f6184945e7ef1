"""The decoder's likelihoods p(x|z): how a VAE's decoder output scores an image with values in [0, 1].

Each is a small class with one job: `log_prob(x, params)` is log p(x_i|z) per value (the shape of x,
so its sum is the image's log-likelihood and the terms themselves are an anomaly map), and
`mean(params)` is the image the decoder expects. A decoder outputs `num_params` maps per image
channel. A new likelihood is one class and one line in LIKELIHOODS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Bernoulli:
    """p(x_i) = p_i^x_i (1 - p_i)^(1 - x_i), p_i = sigmoid(logit_i): the binary cross-entropy of the SPEC's VAE.
    For grey levels in [0, 1] it is not a normalised density (its -log p is a loss, not a code length)."""

    num_params = 1
    discrete = False  # no probability of 8-bit values, so no bits per dimension

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none")

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class ContinuousBernoulli:
    """The Bernoulli made a density on [0, 1] by its normalising constant (Loaiza-Ganem & Cunningham, 2019),
    torch.distributions.ContinuousBernoulli."""

    num_params = 1
    discrete = False

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return torch.distributions.ContinuousBernoulli(logits=params, validate_args=False).log_prob(x.expand_as(params))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.distributions.ContinuousBernoulli(logits=params, validate_args=False).mean


class DiscretizedLogistic:
    """A logistic of location mu_i (sigmoid of the first map) and log-scale s_i (the second) integrated over
    each of the 256 bins of an 8-bit value, the end bins taking the tails (Salimans et al., 2017, PixelCNN++).
    A probability of the 8-bit image, so -log p / (D ln 2) is bits per dimension, as colour images are reported."""

    num_params = 2
    discrete = True
    half_bin = 0.5 / 255
    min_log_scale = -9.0  # a bin is 1/255 wide: narrower scales add nothing but overflow
    log_scale_offset = -2.0  # an untrained decoder's scale of about 0.14: already better than 8 bits per value

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = params.unflatten(-3, (2, -1)).unbind(-4)
        return torch.sigmoid(loc), (log_scale + self.log_scale_offset).clamp(min=self.min_log_scale)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        loc, log_scale = self.split(params)
        inv_scale = torch.exp(-log_scale)
        upper = inv_scale * (x - loc + self.half_bin)
        lower = inv_scale * (x - loc - self.half_bin)
        log_cdf_upper = F.logsigmoid(upper)  # the bin of 0 takes everything below
        log_survival_lower = -F.softplus(lower)  # the bin of 255 takes everything above
        # log(sigmoid(u) - sigmoid(l)), stable: sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u))
        log_mass = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper).clamp(max=-1e-12))
        return torch.where(
            x < self.half_bin, log_cdf_upper, torch.where(x > 1 - self.half_bin, log_survival_lower, log_mass)
        )

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.split(params)[0]


LIKELIHOODS = {
    "bernoulli": Bernoulli(),
    "continuous_bernoulli": ContinuousBernoulli(),
    "logistic": DiscretizedLogistic(),
}


def check_likelihood(name: str) -> None:
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {name!r}")


def bits_per_dim(nats_per_image: float, image_shape: tuple[int, ...]) -> float:
    """-log p(x) in nats per image -> bits per dimension (per 8-bit value)."""
    return nats_per_image / (math.prod(image_shape) * math.log(2))
