"""Training for the VAE: negative ELBO per batch, the test set's every epoch, its likelihood at evaluations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from datasets import Loader, held_out_folder, make_loader, native_shape
from models.likelihoods import bits_per_dim
from trainers import distributed
from trainers.base import EngineSettings, Trainer
from trainers.keys import POSITIVE, at_least, default, key
from trainers.objectives import vae_importance_weighted_nll, vae_negative_elbo
from trainers.setup import prepare_run
from trainers.speed import Speed, SpeedSettings, graphs_allowed, python_state
from utils import keyword_defaults, pick_device, require


@dataclass
class VAESettings(SpeedSettings, EngineSettings):
    """The VAE trainer's keys: the engine's, the speed keys and these."""

    num_epochs: int = default(50)
    output_dir: str = default("mnist_VAE")
    lr: float = key(0.001, "Adam's learning rate", POSITIVE)
    beta: float = key(
        1.0, "weight of the KL term in training (1: the ELBO); test_loss is always the true -ELBO", at_least(0)
    )
    iw_samples: int = key(
        200, "importance samples per test image for test_nll_iw (-log p(x)) at evaluations", POSITIVE, resumable=True
    )


class VAETrainer(Trainer):
    """Minimises the negative ELBO, reconstruction BCE + KL (Kingma & Welling, 2014), with Adam; `beta` weighs
    the KL term in training (a beta-VAE), while the test numbers stay the true ELBO's (beta = 1).

    Every epoch it also measures the same loss on the test split (`test_loss`, nats per image),
    sampling z ~ q(z|x) as training does (its own seeded RNG, so the number repeats), and the
    reconstruction BCE of the mean latent (`test_reconstruction_at_mu`, what the anomaly script
    scores by default). At evaluations (`eval_every`, and after the last epoch) it estimates
    -log p(x) with `iw_samples` importance samples per test image (`test_nll_iw`).
    `num_threads`, `cuda_graphs`, `amp`, `channels_last` and `compile` are speed settings
    (trainers/speed.py); the test numbers are always computed in float32.
    """

    Settings = VAESettings
    best_by = (("neg_elbo",), "vae")  # vae_best.pt: the evaluation with the lowest test -ELBO
    curve_panels = (
        ("loss", "test_loss"),
        ("reconstruction", "test_reconstruction", "test_reconstruction_at_mu"),
        ("kl", "test_kl"),
    )

    def __init__(self, vae: nn.Module, loader: Loader, test_loader: Loader, config: dict, **settings) -> None:
        s = self.Settings.build(settings)
        device = pick_device(s.device)
        vae.to(device)
        graphs = graphs_allowed(self.engine_needs(s), s.cuda_graphs, device)
        self.speed = Speed([vae], device, **{**s.pick(SpeedSettings), "cuda_graphs": graphs})
        optimizers = {"vae": torch.optim.Adam(vae.parameters(), s.lr, **self.speed.adam_options())}
        super().__init__({"vae": vae}, optimizers, loader, config, s, device)
        self.vae, self.test_loader, self.iw_samples, self.beta = vae, test_loader, s.iw_samples, s.beta
        self.fixed_noise = self.make_fixed_noise(vae.latent_dim)
        self.call_vae = self.speed.compiled(distributed.wrap(vae))  # under torchrun: DDP averages the gradients
        self.run_step = self.speed.step(self.train_step, self.optimizers.values(), python_state(self, [vae]))
        self.num_classes = getattr(vae, "num_classes", None)  # a conditional VAE: batches come with labels
        loader.labelled = test_loader.labelled = self.num_classes is not None

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.speed.batch(x)
        with self.speed.autocast():
            out = self.call_vae(x, *(() if labels is None else (labels,)))
        out = {name: value.float() for name, value in out.items()}
        per_image = vae_negative_elbo(x, **out, beta=self.beta, likelihood=self.vae.likelihood)
        terms = {name: value.mean() for name, value in per_image.items()}
        self.optimizers["vae"].zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizers["vae"].step()
        return {name: value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test-set -ELBO and its terms per image, with one z ~ q(z|x) per image as in training, and the
        reconstruction BCE of the mean latent. Its own seeded RNG: the numbers repeat, and training's
        random stream is left as it was."""
        self.vae.eval()
        totals: dict[str, float] = {}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for x, *y in map(self._with_labels, self.test_loader.batches(0)):
                out = self.vae(x, *y)
                terms = vae_negative_elbo(x, **out, likelihood=self.vae.likelihood)
                terms["reconstruction_at_mu"] = vae_negative_elbo(
                    x, self.vae.decode_logits(out["mu"], *y), out["mu"], out["logvar"], likelihood=self.vae.likelihood
                )["reconstruction"]
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + value.sum().item()
        self.vae.train()
        count = len(self.test_loader.images)
        return {f"test_{name}": total / count for name, total in totals.items()}

    @torch.no_grad()
    def test_nll_iw(self) -> float:
        """-log p(x) per test image, importance-weighted with `iw_samples` samples (seeded)."""
        generator = torch.Generator(self.device).manual_seed(self.seed)
        total = sum(
            vae_importance_weighted_nll(self.vae, x, self.iw_samples, generator, *y).sum().item()
            for x, *y in map(self._with_labels, self.test_loader.batches(0))
        )
        return total / len(self.test_loader.images)

    @staticmethod
    def _with_labels(batch: torch.Tensor | tuple) -> tuple:
        """A test batch as (images,) or, for a conditional VAE, (images, labels)."""
        return batch if isinstance(batch, tuple) else (batch,)

    def compute_metrics(self) -> dict[str, float]:
        """Test-set negative ELBO and its two terms (nats per image, from this epoch's `evaluate`), the
        importance-weighted -log p(x), then the classifier-based metrics of the VAE's samples where the data
        set has a classifier."""
        row = self.history[-1]
        reconstruction = "reconstruction_bce" if self.vae.likelihood == "bernoulli" else "reconstruction_nll"
        metrics = {"neg_elbo": row["test_loss"], reconstruction: row["test_reconstruction"], "kl": row["test_kl"]}
        self.vae.eval()
        try:
            metrics["test_nll_iw"] = self.test_nll_iw()
            sample = self.generator_metrics(
                lambda z, *y: self.vae.decode(z, *y).view(-1, *self.vae.image_shape),
                self.vae.latent_dim,
                self.vae.image_shape,
                self.num_classes,
            )
        finally:
            self.vae.train()
        if self.vae.pixel_likelihood.discrete:  # a probability of the 8-bit image: also in bits per dimension
            for name in ("neg_elbo", "test_nll_iw"):
                metrics[f"{name}_bpd"] = bits_per_dim(metrics[name], self.vae.image_shape)
        return {**metrics, **sample}

    def metrics_protocol(self) -> dict:
        images = len(self.test_loader.images)
        return {
            **super().metrics_protocol(),
            "neg_elbo": f"one z ~ q(z|x) per test image (seed {self.seed}), {images} test images",
            "test_nll_iw": f"importance-weighted -log p(x) (Burda et al., 2016), {self.iw_samples} samples "
            f"from q(z|x) per test image (seed {self.seed}), {images} test images",
            "iw_samples": self.iw_samples,
            "likelihood": self.vae.likelihood,
            **(
                {
                    "bits_per_dim": f"-log p(x) / (D ln 2), D = {math.prod(self.vae.image_shape)} 8-bit values, "
                    f"under the {self.vae.likelihood} likelihood's probability of each 8-bit value"
                }
                if self.vae.pixel_likelihood.discrete
                else {}
            ),
        }

    @torch.no_grad()
    def save_samples(self, epoch: int) -> None:
        from torchvision.utils import save_image  # imported when a grid is first drawn

        self.vae.eval()
        shape = (-1, *self.vae.image_shape)
        z, y, per_row = self.grid_inputs()
        save_image(
            self.vae.decode(z, *y).view(shape), self.output_dir / f"generated_image_epoch_{epoch}.png", nrow=per_row
        )
        # Rows of (up to) 8 test images, each followed by a row of their reconstructions; up to 4 pairs of rows.
        available = len(self.test_loader.images)
        per_row = min(8, available)
        rows = min(4, available // per_row)
        originals = self.test_loader.to_float(self.test_loader.images[: rows * per_row])
        y = () if self.num_classes is None else (self.test_loader.labels[: rows * per_row],)
        reconstructions = self.vae.reconstruct(originals, *y).view(shape)
        grid_shape = (rows, per_row, *originals.shape[1:])
        pairs = torch.stack([originals.view(grid_shape), reconstructions.view(grid_shape)], 1)
        save_image(pairs.flatten(0, 2), self.output_dir / f"reconstruction_epoch_{epoch}.png", nrow=per_row)
        self.vae.train()


def train_vae(
    vae_class: Callable[..., nn.Module] | dict[str, Callable[..., nn.Module]],
    model_kwargs: dict,
    dataset_kwargs: dict,
    trainer_kwargs: dict,
    model_dict_name: str = "mnist_model_kwargs",
) -> VAETrainer:
    """Check the kwargs dicts of a main script, build the model and data, and train. `vae_class` is a VAE class,
    or architectures by name (models.VAE_ARCHITECTURES), of which model_kwargs['architecture'] picks one."""
    run = None
    try:
        run = _train_vae(vae_class, model_kwargs, dataset_kwargs, trainer_kwargs, model_dict_name)
        return run
    finally:
        distributed.stop(run)  # under torchrun: leave the process group, also after an error


def pick_architecture(
    architectures: dict[str, Callable[..., nn.Module]], model_kwargs: dict, dataset_kwargs: dict, dict_name: str
) -> tuple[Callable[..., nn.Module], dict]:
    """The class model_kwargs['architecture'] names and the keys it takes (the other architectures' keys are
    set aside; a key none takes is left for build_models to name), an image shape left None the data's own,
    another key left None the architecture's default."""
    name = model_kwargs.get("architecture")
    require(
        name in architectures,
        f"{dict_name}['architecture'] must be one of {', '.join(architectures)}, got {name!r}",
    )
    vae_class = architectures[name]
    accepted = keyword_defaults(vae_class)
    others = {key for cls in architectures.values() for key in keyword_defaults(cls)}
    kwargs = {key: value for key, value in model_kwargs.items() if key in accepted or key not in others}
    kwargs.pop("architecture")
    if {"image_channels", "image_side"} <= accepted.keys() and None in (
        kwargs.get("image_channels"),
        kwargs.get("image_side"),
    ):
        channels, side = native_shape(dataset_kwargs.get("dataset_type"), dataset_kwargs.get("root"))
        kwargs["image_channels"] = kwargs.get("image_channels") or channels
        kwargs["image_side"] = kwargs.get("image_side") or side
    # Any other key left None where the architecture has a default of its own takes that default.
    kwargs |= {key: accepted[key] for key, value in kwargs.items() if value is None and accepted.get(key) is not None}
    return vae_class, kwargs


def _train_vae(
    vae_class: Callable[..., nn.Module] | dict[str, Callable[..., nn.Module]],
    model_kwargs: dict,
    dataset_kwargs: dict,
    trainer_kwargs: dict,
    model_dict_name: str,
) -> VAETrainer:
    if isinstance(vae_class, dict):
        vae_class, model_kwargs = pick_architecture(vae_class, model_kwargs, dataset_kwargs, model_dict_name)
    models, dataset, trainer, device = prepare_run(
        {"vae": vae_class}, model_kwargs, dataset_kwargs, VAETrainer, trainer_kwargs, model_dict_name
    )
    require(
        not dataset["normalize"],
        "dataset_kwargs['normalize'] must be False for the VAE: its likelihood needs pixels in [0, 1]",
    )
    vae = models["vae"]
    loader = make_loader(vae.image_shape, device, trainer["seed"], True, **dataset)
    if dataset["dataset_type"] == "image_folder" and held_out_folder(dataset["root"]) is None:
        print(
            f"note: test_loss is measured on the training images: '{dataset['root']}' has no test split (a folder "
            "named train with a test folder of the same classes beside it)"
        )
        test_loader = loader.in_file_order(1000)  # the images already decoded
    else:
        test_loader = make_loader(vae.image_shape, device, trainer["seed"], False, **{**dataset, "batch_size": 1000})
    config = {"vae": vae.config, "dataset": dataset, "trainer": trainer}
    run = VAETrainer(vae, loader, test_loader, config, **{**trainer, "device": str(device)})
    run.fit()
    return run
