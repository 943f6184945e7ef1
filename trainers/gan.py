"""Adversarial training for any generator/discriminator pair (the FC GAN and the DCGAN): the engine.

What a step computes is in trainers/gan_step.py; this file runs it fast and safely: optimizers and
backward passes, the weight average, CUDA graphs, DistributedDataParallel, samples and metrics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from datasets import Loader, make_loader
from trainers import distributed
from trainers.base import EngineSettings, Trainer
from trainers.gan_step import GANStep, GANStepSettings, total
from trainers.keys import POSITIVE, default, fraction, key
from trainers.needs import Needs
from trainers.setup import prepare_run
from trainers.speed import Speed, SpeedSettings, graphs_allowed, python_state
from utils import pick_device


@dataclass
class GANSettings(GANStepSettings, SpeedSettings, EngineSettings):
    """The GAN trainer's keys: the engine's, the speed keys, the step's (trainers/gan_step.py) and these."""

    output_dir: str = default("mnist_GAN")
    generator_lr: float = key(0.0002, "the generator's Adam learning rate", POSITIVE)
    discriminator_lr: float = key(0.0002, "the discriminator's Adam learning rate", POSITIVE)
    beta1: float = key(0.5, "Adam's beta1 for both networks (DCGAN paper: 0.5)", fraction())
    beta2: float = key(0.999, "Adam's beta2 for both networks", fraction())
    d_steps: int = key(1, "discriminator steps per generator step (wgan_gp: usually 5)", POSITIVE)
    ema_decay: float = key(0.999, "grids and generator.pt use a moving average of the weights; 0: off", fraction())
    sync_batchnorm: bool = key(
        False, "under torchrun on CUDA: BatchNorm statistics over all processes' batches", resumable=True
    )


class GANTrainer(Trainer):
    """A discriminator step on every batch and a generator step on every `d_steps`-th (Goodfellow et al., 2014),
    each the loss of `GANStep` (trainers/gan_step.py), minimised by Adam.

    losses.csv's `d_loss` is the sum of the discriminator's terms (its regularisers also get a column each),
    `d_real` and `d_fake` are the mean D(x) and D(G(z)): probabilities for bce, the raw critic outputs
    otherwise; with an augmentation, `augment_p` and `r_t` (trainers/augment.py). The speed keys are in
    trainers/speed.py. Under torchrun both models train in DistributedDataParallel; `sync_batchnorm`
    then computes BatchNorm statistics over the batches of all processes (CUDA only) instead of each
    process's own (trainers/distributed.py).
    """

    Settings = GANSettings
    best_by = (("fid", "frechet_distance"), "generator")  # generator_best.pt: the evaluation with the lowest FD
    curve_panels = (("d_loss", "g_loss"), ("d_real", "d_fake", "augment_p", "r_t"))

    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, loader: Loader, config: dict, **settings
    ) -> None:
        s = self.Settings.build(settings)
        if s.label_smoothing and s.loss != "bce":
            print(f"note: label_smoothing applies to loss 'bce' only; loss '{s.loss}' ignores it")
        device = pick_device(s.device)
        generator.to(device)
        discriminator.to(device)
        if s.sync_batchnorm:
            distributed.use_sync_batchnorm([generator, discriminator], device)
        has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
        # The step as the user wrote it (trainers/gan_step.py); the modules it calls are set below.
        self.gan_step = GANStep(generator, discriminator, s, discriminator.image_shape, joint_pass=not has_batchnorm)
        for piece in self.gan_step.state.values():
            piece.to(device)
        # A generator step on every d_steps-th batch is a Python-side choice a CUDA graph would freeze.
        needs = {**self.engine_needs(s), "d_steps": Needs(reads_state=s.d_steps > 1), **self.gan_step.needs}
        distributed.check_needs(needs)
        graphs = graphs_allowed(needs, s.cuda_graphs, device)
        self.speed = Speed([generator, discriminator], device, **{**s.pick(SpeedSettings), "cuda_graphs": graphs})
        opts = self.speed.adam_options()
        betas = (s.beta1, s.beta2)
        optimizers = {
            "generator": torch.optim.Adam(generator.parameters(), s.generator_lr, betas=betas, **opts),
            "discriminator": torch.optim.Adam(discriminator.parameters(), s.discriminator_lr, betas=betas, **opts),
        }
        models = {"generator": generator, "discriminator": discriminator}
        self.ema_decay = s.ema_decay
        if s.ema_decay > 0:
            models["generator_ema"] = copy.deepcopy(generator).requires_grad_(False)
        super().__init__(models, optimizers, loader, config, s, device)
        self.generator, self.discriminator = generator, discriminator
        self.ema = models.get("generator_ema")
        # The weight average's own count of generator updates: on the device, so a CUDA graph's replays advance it.
        self.ema_updates = torch.zeros((), device=device)
        self.sampler = self.ema if self.ema is not None else generator  # draws the grids, metrics and generator.pt
        self.d_steps = s.d_steps
        self.fixed_noise = self.make_fixed_noise(generator.latent_dim)
        self.num_classes = getattr(generator, "num_classes", None)  # class-conditional: batches come with labels
        loader.labelled = self.num_classes is not None
        # What the step calls: under torchrun G and D in DDP, which averages their gradients. The generator's
        # loss calls the plain discriminator: it computes no gradients for D, and D's DDP would wait for them.
        # D's running statistics stay each rank's own: they serve discriminator.pt (rank 0's) only.
        wrapped = distributed.wrap(discriminator, broadcast_buffers=False)
        self.gan_step.G = self.speed.compiled(distributed.wrap(generator))
        self.gan_step.D = self.speed.compiled(wrapped)
        self.gan_step.D_for_G = self.gan_step.D if wrapped is discriminator else self.speed.compiled(discriminator)
        self.generator_parameters = list(generator.parameters())
        if self.ema is not None:
            ema_state, state = self.ema.state_dict(), generator.state_dict()
            floats = [k for k, v in state.items() if v.is_floating_point()]  # BatchNorm's step count is not averaged
            self.ema_tensors = [ema_state[k] for k in floats]
            self.source_tensors = [state[k] for k in floats]
        watch = python_state(self, [generator, discriminator, *models.values()])
        self.run_step = self.speed.step(self.train_step, self.optimizers.values(), watch)

    def before_step(self) -> None:
        super().before_step()
        self.gan_step.global_step = self.global_step

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One discriminator step and (every d_steps-th batch) one generator step, each minimising the sum of
        its terms from `gan_step`. A conditional GAN draws its fakes for the real batch's labels."""
        step = self.gan_step
        real = self.speed.batch(real)
        y = () if labels is None else (labels,)  # what G and D take besides z or the images
        z = torch.randn(len(real), self.generator.latent_dim, device=real.device)
        with self.speed.autocast():
            fake = step.run_G(z, y)
            d_terms, d_real, d_fake = step.discriminator_loss(real, fake.detach(), y, z)
        d_loss = total(d_terms)
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["discriminator"].step()

        # Gradients for G only: D's would be thrown away by its next zero_grad, so they are not computed.
        generator_step = self.d_steps == 1 or (step.global_step + 1) % self.d_steps == 0
        with self.speed.autocast(), torch.set_grad_enabled(generator_step):
            g_terms = step.generator_loss(fake, y, z)
            g_loss = total(g_terms)  # logged on the other batches too
        if generator_step:
            self.optimizers["generator"].zero_grad(set_to_none=True)
            g_loss.backward(inputs=self.generator_parameters)
            self.optimizers["generator"].step()
            if self.ema is not None:
                self._update_ema()

        probability = torch.sigmoid if step.objective.probability else (lambda x: x)
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": probability(d_real.detach()).mean(),  # mean D(x)
            "d_fake": probability(d_fake.detach()).mean(),  # mean D(G(z))
            **{name: term.detach() for name, term in d_terms.items() if name != "adversarial"},
            **{name: term.detach() for name, term in g_terms.items() if name != "g_loss"},
            **step.augment.logs(),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema = d * ema + (1 - d) * generator, and the same for BatchNorm's running stats, where
        d = min(ema_decay, (1 + t) / (10 + t)) after the generator's t-th update: the average starts
        out short and lengthens until d reaches ema_decay (at step 8991 for 0.999), so that the grids
        of a short run (a few hundred steps) show what the generator has learnt, not its initial
        weights (TensorFlow's ExponentialMovingAverage with num_updates). t is the average's own count,
        saved in the checkpoint."""
        self.ema_updates += 1
        t = self.ema_updates
        weight = 1 - ((1 + t) / (10 + t)).clamp(max=self.ema_decay)
        torch._foreach_lerp_(self.ema_tensors, self.source_tensors, [weight] * len(self.ema_tensors))

    def extra_state(self) -> dict:
        return {"ema_updates": self.ema_updates, **{k: v.state_dict() for k, v in self.gan_step.state.items()}}

    def load_extra_state(self, state: dict) -> None:
        for name, piece in self.gan_step.state.items():  # e.g. ada's probability and statistics
            if name in state:
                piece.load_state_dict(state[name])
        if "ema_updates" in state:
            self.ema_updates.copy_(state["ema_updates"])
        elif self.ema is not None:  # a checkpoint from before the count: the generator's Adam steps are it
            step = self.optimizers["generator"].state.get(self.generator_parameters[0], {}).get("step", 0)
            self.ema_updates.fill_(float(step))

    def exported_models(self) -> dict[str, nn.Module]:
        """generator.pt holds the averaged weights (what the grids show); the raw ones stay in checkpoint.pt."""
        return {"generator": self.sampler, "discriminator": self.discriminator}

    def compute_metrics(self) -> dict[str, float]:
        """The classifier-based metrics (trainers.metrics) of the exported generator: the EMA when there is one.
        A conditional generator draws for the real test images' labels, and is scored on drawing them too."""
        # A copy in channels_last: transposed convolutions draw the 10,000 samples faster in that layout on a CPU
        # (the same images to 1e-7); training keeps its layout.
        generator = copy.deepcopy(self.sampler).eval().to(memory_format=torch.channels_last)
        return self.generator_metrics(
            lambda z, *y: (generator(z, *y).view(-1, *generator.image_shape) + 1) / 2,  # [-1, 1] -> [0, 1]
            generator.latent_dim,
            generator.image_shape,
            self.num_classes,
        )

    @torch.no_grad()
    def save_samples(self, epoch: int) -> None:
        generator = self.sampler
        generator.eval()
        z, y, per_row = self.grid_inputs()
        images = generator(z, *y).view(-1, *generator.image_shape)
        generator.train()
        from torchvision.utils import save_image  # imported when a grid is first drawn

        save_image(
            images,
            self.output_dir / f"generated_image_epoch_{epoch}.png",
            nrow=per_row,
            normalize=True,
            value_range=(-1, 1),
        )


def train_gan(
    generator_class: Callable[..., nn.Module],
    discriminator_class: Callable[..., nn.Module],
    model_kwargs: dict,
    dataset_kwargs: dict,
    trainer_kwargs: dict,
    model_dict_name: str = "model_kwargs",
) -> GANTrainer:
    """Check the kwargs dicts of a main script, build models and data, and train."""
    run = None
    try:
        run = _train_gan(
            generator_class, discriminator_class, model_kwargs, dataset_kwargs, trainer_kwargs, model_dict_name
        )
        return run
    finally:
        distributed.stop(run)  # under torchrun: leave the process group, also after an error


def _train_gan(
    generator_class: Callable[..., nn.Module],
    discriminator_class: Callable[..., nn.Module],
    model_kwargs: dict,
    dataset_kwargs: dict,
    trainer_kwargs: dict,
    model_dict_name: str,
) -> GANTrainer:
    models, dataset, trainer, device = prepare_run(
        {"generator": generator_class, "discriminator": discriminator_class},
        model_kwargs,
        dataset_kwargs,
        GANTrainer,
        trainer_kwargs,
        model_dict_name,
    )
    generator, discriminator = models["generator"], models["discriminator"]
    loader = make_loader(generator.image_shape, device, trainer["seed"], True, **dataset)
    config = {
        "generator": generator.config,
        "discriminator": discriminator.config,
        "dataset": dataset,
        "trainer": trainer,
    }
    gan = GANTrainer(generator, discriminator, loader, config, **{**trainer, "device": str(device)})
    gan.fit()
    return gan
