"""One GAN training step, top to bottom: what the discriminator sees, its loss and regularisers, and
the generator's loss (the part of a GAN a researcher edits; stylegan2-ada-pytorch's training/loss.py).

The engine (trainers/gan.py) calls `discriminator_loss` and `generator_loss` and owns the rest: the
backward passes and optimizers, the weight average, CUDA graphs, DistributedDataParallel, the logs.
Every image on its way to the discriminator, real or generated, for a loss or a penalty, passes
`run_D`, so an augmentation applies to all of them. Each piece says what it asks of the engine in
`needs` (trainers/needs.py); the engine decides CUDA graphs and torchrun from that alone.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
from torch import nn

from trainers import distributed
from trainers.augment import AUGMENTS, Augment, parse_policy
from trainers.keys import POSITIVE, Rule, Settings, at_least, fraction, key, one_of
from trainers.needs import Needs
from trainers.objectives import (
    GAN_OBJECTIVES,
    consistency_penalty,
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    lecam_penalty,
    r1_penalty,
)
from utils import require


def _is_policy(text: str) -> bool:
    try:
        return bool(parse_policy(text))
    except ValueError:
        return False


@dataclass
class GANStepSettings(Settings):
    """The keys of the step (the GAN trainer's other keys are in trainers/gan.py)."""

    loss: str = key("bce", "the objective: bce (the SPEC's), hinge, least_squares or wgan_gp", one_of(*GAN_OBJECTIVES))
    label_smoothing: float = key(0.1, "loss bce: the discriminator's target for real images is 1 - this", fraction())
    gp_weight: float = key(10.0, "loss wgan_gp: the weight of its gradient penalty", at_least(0))
    r1_gamma: float = key(
        0.0, "R1 penalty gamma/2 |grad D(x)|^2 on real images (Mescheder et al. 2018); 0: off", at_least(0)
    )
    r1_every: int = key(16, "r1_gamma: the penalty on every N-th step only, N times as strong (lazy R1)", POSITIVE)
    lecam_weight: float = key(
        0.0,
        "LeCam regulariser weight (Tseng et al. 2021): D's outputs kept near the other kind's average; 0: off",
        at_least(0),
    )
    bcr_weight: float = key(
        0.0,
        "balanced consistency regularisation (Zhao et al. 2021): D's outputs under two draws of augment alike; 0: off",
        at_least(0),
    )
    zcr_weight: float = key(
        0.0,
        "latent consistency (zCR, Zhao et al. 2021): D's outputs on G(z) and G(z + noise) alike; 0: off",
        at_least(0),
    )
    zcr_generator_weight: float = key(
        0.0, "zCR: the generator is rewarded for G(z) and G(z + noise) differing (diversity); 0: off", at_least(0)
    )
    zcr_sigma: float = key(0.03, "zCR: the standard deviation of the noise added to z", POSITIVE)
    augment: str = key(
        "none",
        "augment what D sees: none, diffaugment (Zhao et al. 2020) or ada (Karras et al. 2020)",
        one_of(*AUGMENTS),
    )
    augment_policy: str = key(
        "color,translation,cutout",
        "the operations of augment, comma-separated: color, translation, cutout, flip",
        Rule(_is_policy, "a comma-separated list of color, translation, cutout, flip"),
    )
    ada_target: float = key(
        0.6, "augment ada: the target of r_t = E[sign(D(x_real))], how much D may overfit", fraction()
    )
    ada_kimg: float = key(
        100.0, "augment ada: thousands of real images for p to go from 0 to 1 at the fastest", POSITIVE
    )


class OutputAverages(nn.Module):
    """Moving averages of the discriminator's mean raw output on real and on generated images (LeCam's
    anchors), from every rank's batch; tensors updated by tensor operations (a CUDA graph replays them)."""

    def __init__(self, decay: float = 0.99) -> None:  # the paper's decay
        super().__init__()
        self.decay = decay
        self.register_buffer("real_fake", torch.zeros(2))

    @torch.no_grad()
    def update(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        means = torch.stack([d_real.detach().mean(), d_fake.detach().mean()])
        self.real_fake.lerp_(distributed.sum_over_ranks(means) / distributed.world_size(), 1 - self.decay)


def total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of a loss's terms, what its optimizer minimises."""
    return functools.reduce(operator.add, terms.values())


class GANStep:
    """The objective `settings.loss`, the regularisers and the augmentation, for one generator and discriminator.

    The engine passes the modules a step calls (under torchrun DDP-wrapped; `discriminator_for_generator`
    is D without DDP, for the generator's loss, which trains G only), sets `global_step` before each
    step, and says whether one discriminator pass over real and generated images together computes
    the same as two (`joint_pass`: its discriminator has no BatchNorm; then nothing D sees may draw
    random numbers either).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        settings: GANStepSettings,
        image_shape: tuple[int, int, int],
        discriminator_for_generator: nn.Module | None = None,
        joint_pass: bool = False,
    ) -> None:
        self.G, self.D = generator, discriminator
        self.D_for_G = discriminator_for_generator or discriminator
        self.loss, self.objective = settings.loss, GAN_OBJECTIVES[settings.loss]
        self.real_target = 1.0 - settings.label_smoothing if settings.loss == "bce" else 1.0
        self.gp_weight = settings.gp_weight
        self.r1_gamma, self.r1_every = settings.r1_gamma, settings.r1_every
        self.augment = Augment(
            settings.augment, settings.augment_policy, image_shape, settings.ada_target, settings.ada_kimg
        )
        self.lecam_weight, self.output_averages = settings.lecam_weight, OutputAverages()
        self.bcr_weight = settings.bcr_weight
        self.zcr_weight, self.zcr_generator_weight = settings.zcr_weight, settings.zcr_generator_weight
        self.zcr_sigma = settings.zcr_sigma
        require(
            not self.bcr_weight or settings.augment != "none",
            "bcr_weight compares two draws of the augmentation: set augment to diffaugment or ada, or bcr_weight to 0",
        )
        # The pieces that keep state between steps, by name: the engine moves them to the device and saves them.
        self.state = {"augment": self.augment, "output_averages": self.output_averages}
        self.global_step = 0  # steps finished before this one, in the whole run
        # What each piece asks of the engine, by the name a note or an error gives it.
        self.needs = {
            f"loss '{settings.loss}'": self.objective.needs,
            f"augment '{settings.augment}'": self.augment.needs,
        }
        if self.r1_gamma:  # a gradient of a gradient, and (lazy) a Python-side step count
            self.needs["r1_gamma"] = Needs(double_backward=True, reads_state=self.r1_every > 1)
        self.joint_pass = joint_pass and not any(needs.draws_random for needs in self.needs.values())

    def run_G(self, z: torch.Tensor, labels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.G(z, *labels)

    def run_D(
        self, images: torch.Tensor, labels: tuple[torch.Tensor, ...], for_generator: bool = False
    ) -> torch.Tensor:
        """The discriminator's raw outputs (float32) for a batch of real or generated images."""
        discriminator = self.D_for_G if for_generator else self.D
        return discriminator(self.augment(images), *labels).float()

    def run_D_on_both(
        self, real: torch.Tensor, fake: torch.Tensor, labels: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """run_D on the real and on the generated batch: in one pass over both where that is the same."""
        if not self.joint_pass:
            return self.run_D(real, labels), self.run_D(fake, labels)
        both = self.run_D(torch.cat([real, fake.reshape(real.shape)]), tuple(torch.cat([y, y]) for y in labels))
        return both[: len(real)], both[len(real) :]

    def run_G_near(self, z: torch.Tensor | None, labels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The generator's images for latents a little away from z (zCR's perturbation)."""
        require(z is not None, "zCR needs the batch's latents: pass z to discriminator_loss and generator_loss")
        return self.run_G(z + self.zcr_sigma * torch.randn_like(z), labels)

    def discriminator_loss(
        self, real: torch.Tensor, fake: torch.Tensor, labels: tuple[torch.Tensor, ...], z: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The terms the discriminator minimises the sum of, and its raw outputs on the real and generated
        images. `fake` is detached: this step leaves G alone; `z` are the latents it was generated from."""
        d_real, d_fake = self.run_D_on_both(real, fake, labels)
        self.augment.adapt(d_real)  # ada: p follows how much D overfits
        terms = {"adversarial": gan_discriminator_loss(self.loss, d_real, d_fake, self.real_target)}
        if self.bcr_weight:  # the same images again, under another draw of the augmentation
            again_real, again_fake = self.run_D_on_both(real, fake, labels)
            consistency = consistency_penalty(d_real, again_real) + consistency_penalty(d_fake, again_fake)
            terms["bcr"] = self.bcr_weight * consistency
        if self.zcr_weight:  # D may not tell G(z) from G(z + noise) apart
            with torch.no_grad():
                near = self.run_G_near(z, labels)
            terms["zcr"] = self.zcr_weight * consistency_penalty(d_fake, self.run_D(near, labels))
        if self.lecam_weight:  # against the averages before this step's outputs join them
            average_real, average_fake = self.output_averages.real_fake
            terms["lecam"] = self.lecam_weight * lecam_penalty(d_real, d_fake, average_real, average_fake)
            self.output_averages.update(d_real, d_fake)
        if self.objective.gradient_penalty:
            terms["gradient_penalty"] = self.gp_weight * gradient_penalty(lambda x: self.run_D(x, labels), real, fake)
        if self.r1_gamma and self.global_step % self.r1_every == 0:
            terms["r1"] = self.r1_gamma / 2 * self.r1_every * r1_penalty(lambda x: self.run_D(x, labels), real)
        return terms, d_real, d_fake

    def generator_loss(
        self, fake: torch.Tensor, labels: tuple[torch.Tensor, ...], z: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The terms the generator minimises the sum of: fool the discriminator as it is now."""
        terms = {"g_loss": gan_generator_loss(self.loss, self.run_D(fake, labels, for_generator=True))}
        if self.zcr_generator_weight:  # images of nearby latents should differ (against mode collapse)
            distance = (fake - self.run_G_near(z, labels)).flatten(1).pow(2).sum(1).mean()
            terms["zcr_diversity"] = -self.zcr_generator_weight * distance
        return terms
