"""Adversarial training for any generator/discriminator pair (the FC GAN and the DCGAN)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torchvision.utils import save_image

from datasets import Loader, make_loader
from trainers import distributed
from trainers.base import ENGINE_KEYS, Trainer, pick
from trainers.objectives import EAGER_LOSSES, GAN_LOSSES, gan_discriminator_loss, gan_generator_loss, gradient_penalty
from trainers.setup import prepare_run
from trainers.speed import SPEED_KEYS, Speed
from utils import pick_device, require


class GANTrainer(Trainer):
    """A discriminator step on every batch and a generator step on every `d_steps`-th (Goodfellow et al., 2014).

    The objective is `loss` (trainers/objectives.py): "bce", the non-saturating loss -log D(G(z)),
    where `label_smoothing` makes the discriminator's target for real images 1 - label_smoothing
    (Salimans et al., 2016); "hinge"; "least_squares"; or "wgan_gp" (with `gp_weight`, usually with
    d_steps 5). losses.csv's `d_real` and `d_fake` are the mean D(x) and D(G(z)): probabilities for
    bce, the raw critic outputs otherwise. `num_threads`, `cuda_graphs`, `amp`,
    `channels_last` and `compile` are speed settings (trainers/speed.py). Under torchrun both
    models train in DistributedDataParallel; `sync_batchnorm` then computes BatchNorm statistics
    over the batches of all processes (CUDA only) instead of each process's own
    (trainers/distributed.py).
    """

    best_by = (("fid", "frechet_distance"), "generator")  # generator_best.pt: the evaluation with the lowest FD
    curve_panels = (("d_loss", "g_loss"), ("d_real", "d_fake"))

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loader: Loader,
        config: dict,
        *,
        num_epochs: int = 200,
        generator_lr: float = 0.0002,
        discriminator_lr: float = 0.0002,
        beta1: float = 0.5,
        beta2: float = 0.999,
        loss: str = "bce",
        d_steps: int = 1,
        gp_weight: float = 10.0,
        label_smoothing: float = 0.1,
        ema_decay: float = 0.999,
        output_dir: str = "mnist_GAN",
        seed: int = 0,
        device: str = "auto",
        sample_every: int = 10,
        resume: bool | str = "auto",
        eval_every: int | None = None,
        metrics_features: str = "auto",
        inception_weights: str = "",
        tensorboard: bool = False,
        num_threads: int | str = "auto",
        amp: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graphs: bool = True,
        sync_batchnorm: bool = False,
    ) -> None:
        require(loss in GAN_LOSSES, f"trainer_kwargs['loss'] must be one of {', '.join(GAN_LOSSES)}, got {loss!r}")
        require(d_steps >= 1, f"trainer_kwargs['d_steps'] must be 1 or more, got {d_steps}")
        require(
            loss != "wgan_gp" or distributed.world_size() == 1,
            "loss 'wgan_gp' does not run under torchrun (DDP cannot differentiate its gradient penalty): "
            "use one process, or another loss",
        )
        if label_smoothing and loss != "bce":
            print(f"note: label_smoothing applies to loss 'bce' only; loss '{loss}' ignores it")
        # A CUDA graph replays the same kernels every step: a generator step on every d_steps-th batch
        # is a Python-side choice it would freeze, so it runs eagerly, as do the EAGER_LOSSES.
        eager = self.eager_step or loss in EAGER_LOSSES or d_steps > 1
        device = pick_device(device)
        if eager and cuda_graphs and device.type == "cuda":
            reason = "eager_step" if self.eager_step else f"loss '{loss}' with d_steps {d_steps}"
            print(f"note: cuda_graphs off: {reason} runs eagerly")
        generator.to(device)
        discriminator.to(device)
        if sync_batchnorm:
            distributed.use_sync_batchnorm([generator, discriminator], device)
        speed = {**pick(locals(), SPEED_KEYS), "cuda_graphs": cuda_graphs and not eager}
        self.speed = Speed([generator, discriminator], device, **speed)
        opts = self.speed.adam_options()
        optimizers = {
            "generator": torch.optim.Adam(generator.parameters(), generator_lr, betas=(beta1, beta2), **opts),
            "discriminator": torch.optim.Adam(
                discriminator.parameters(), discriminator_lr, betas=(beta1, beta2), **opts
            ),
        }
        models = {"generator": generator, "discriminator": discriminator}
        self.ema_decay = ema_decay
        if ema_decay > 0:
            models["generator_ema"] = copy.deepcopy(generator).requires_grad_(False)
        super().__init__(models, optimizers, loader, config, device=device, **pick(locals(), ENGINE_KEYS))
        self.generator, self.discriminator = generator, discriminator
        self.ema = models.get("generator_ema")
        # The weight average's own count of generator updates: on the device, so a CUDA graph's replays advance it.
        self.ema_updates = torch.zeros((), device=device)
        self.sampler = self.ema if self.ema is not None else generator  # draws the grids, metrics and generator.pt
        self.loss, self.d_steps, self.gp_weight = loss, d_steps, gp_weight
        self.real_target = 1.0 - label_smoothing if loss == "bce" else 1.0
        self.fixed_noise = self.make_fixed_noise(generator.latent_dim)
        self.num_classes = getattr(generator, "num_classes", None)  # class-conditional: batches come with labels
        loader.labelled = self.num_classes is not None
        # What a step calls, and the tensors it updates: looked up once, not every step. Under torchrun
        # g and d are in DDP; the generator step calls the plain discriminator (`d_plain`): it computes no
        # gradients for D, and D's DDP would wait for them. G's DDP averages G's gradients.
        self.g = self.speed.compiled(distributed.wrap(generator))
        # D's running statistics stay each rank's own: they serve discriminator.pt (rank 0's) only.
        wrapped = distributed.wrap(discriminator, broadcast_buffers=False)
        self.d = self.speed.compiled(wrapped)
        self.d_plain = self.d if wrapped is discriminator else self.speed.compiled(discriminator)
        self.generator_parameters = list(generator.parameters())
        # One discriminator pass over real and fake images together, where that computes the same
        # losses (no BatchNorm, whose batch statistics would mix the two): fewer, larger matmuls,
        # about 8% faster for the FC GAN at batch 16.
        self.joint_d_pass = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
        if self.ema is not None:
            ema_state, state = self.ema.state_dict(), generator.state_dict()
            floats = [k for k, v in state.items() if v.is_floating_point()]  # BatchNorm's step count is not averaged
            self.ema_tensors = [ema_state[k] for k in floats]
            self.source_tensors = [state[k] for k in floats]
        self.run_step = self.speed.step(self.train_step, self.optimizers.values())

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One discriminator step and (every d_steps-th batch) one generator step. A conditional GAN
        draws its fakes for the real batch's labels, and D judges each image with its label."""
        real = self.speed.batch(real)
        y = () if labels is None else (labels,)  # what G and D take besides z or the images
        z = torch.randn(len(real), self.generator.latent_dim, device=real.device)
        with self.speed.autocast():
            fake = self.g(z, *y)
            # Discriminator: real against fake. detach(): this step leaves G alone.
            if self.joint_d_pass:
                both_y = () if labels is None else (torch.cat([labels, labels]),)
                logits = self.d(torch.cat([real, fake.detach().reshape(real.shape)]), *both_y).float()
                d_real, d_fake = logits[: len(real)], logits[len(real) :]
            else:
                d_real = self.d(real, *y).float()
                d_fake = self.d(fake.detach(), *y).float()
        d_loss = gan_discriminator_loss(self.loss, d_real, d_fake, self.real_target)
        if self.loss == "wgan_gp":
            d_loss = d_loss + self.gp_weight * gradient_penalty(lambda x: self.d(x, *y), real, fake.detach())
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["discriminator"].step()

        # Generator: fool the updated discriminator, on every d_steps-th batch. Gradients for G only:
        # D's would be thrown away by its next zero_grad, so they are not computed.
        batch_number = self.epoch * len(self.loader) + self.step + 1  # from the checkpoint's counters on resume
        generator_step = batch_number % self.d_steps == 0
        with self.speed.autocast(), torch.set_grad_enabled(generator_step):
            d_gen = self.d_plain(fake, *y).float()
        g_loss = gan_generator_loss(self.loss, d_gen)  # logged on the other batches too
        if generator_step:
            self.optimizers["generator"].zero_grad(set_to_none=True)
            g_loss.backward(inputs=self.generator_parameters)
            self.optimizers["generator"].step()
            if self.ema is not None:
                self._update_ema()

        probability = torch.sigmoid if self.loss == "bce" else (lambda x: x)
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": probability(d_real.detach()).mean(),  # mean D(x)
            "d_fake": probability(d_fake.detach()).mean(),  # mean D(G(z))
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
        return {"ema_updates": self.ema_updates}

    def load_extra_state(self, state: dict) -> None:
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
        generator = self.sampler
        generator.eval()
        try:
            return self.generator_metrics(
                lambda z, *y: (generator(z, *y).view(-1, *generator.image_shape) + 1) / 2,  # [-1, 1] -> [0, 1]
                generator.latent_dim,
                generator.image_shape,
                self.num_classes,
            )
        finally:
            generator.train()

    @torch.no_grad()
    def save_samples(self, epoch: int) -> None:
        generator = self.sampler
        generator.eval()
        z, y, per_row = self.grid_inputs()
        images = generator(z, *y).view(-1, *generator.image_shape)
        generator.train()
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
