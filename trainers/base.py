"""The epoch loop shared by every trainer: progress, logging, sample grids, checkpoints, resume."""

from __future__ import annotations

import csv
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from datasets import RESUMABLE_DATASET_KEYS, Loader, make_loader
from trainers import distributed
from trainers.keys import POSITIVE, Rule, Settings, at_least, fraction, key, one_of
from trainers.metrics import FEATURES, GeneratorEvaluator, check_metrics_features, make_generator_evaluator
from trainers.needs import Needs
from trainers.run_files import RUN_FILES, FolderLock, clear_run_files, remove_stale_temps
from trainers.speed import Speed
from utils import (
    SEED_RANGE,
    UserError,
    all_or_nothing,
    atomic_file,
    atomic_save,
    figure,
    keyword_defaults,
    load_state,
    read_checkpoint,
    require,
    save_model,
    seed_everything,
    write_json,
)

LR_SCHEDULES = ("none", "linear", "cosine")


@dataclass
class EngineSettings(Settings):
    """The keys of the epoch loop, shared by every trainer."""

    num_epochs: int = key(200, "epochs to train; a finished run continues to a larger value", POSITIVE, resumable=True)
    output_dir: str = key("runs", "the folder every file of the run goes to", resumable=True)
    seed: int = key(
        0, "seeds the weights, the data order and the noise", Rule(lambda v: 0 <= v < SEED_RANGE, "from 0 to 2**32 - 1")
    )
    device: str = key("auto", "cuda, then mps, then cpu; or a torch device name", resumable=True)
    sample_every: int = key(
        10, "epochs between sample grids (the first and last are always drawn)", POSITIVE, resumable=True
    )
    resume: bool | str = key(
        "auto",
        "continue from output_dir/checkpoint.pt if there is one (or from this file); False starts over",
        resumable=True,
    )
    eval_every: int | None = key(
        None,
        "epochs between quality metrics (metrics.csv, metrics.json); None or 0: after the last only",
        at_least(0),
        resumable=True,
    )
    metrics_features: str = key(
        "auto",
        "auto (Inception if its FID weights are in torch hub's cache), inception or classifier",
        one_of(*FEATURES),
        resumable=True,
    )
    inception_weights: str = key(
        "", "the FID Inception weights file (empty: look in torch hub's cache); never downloaded", resumable=True
    )
    tensorboard: bool = key(
        False, "also log losses, metrics and grids to output_dir/tensorboard (pip install tensorboard)", resumable=True
    )
    resume_with_new_data: bool = key(
        False, "resume on a data set other than the checkpoint's (to fine-tune); else that is refused", resumable=True
    )
    lr_schedule: str = key(
        "none", "the learning rates over the run: none, or linear or cosine decay", one_of(*LR_SCHEDULES)
    )
    warmup_steps: int = key(0, "steps over which the learning rates rise linearly from 0 at the start", at_least(0))
    min_lr_ratio: float = key(
        0.0, "lr_schedule: the last step's learning rate, as a fraction of each lr", fraction(True)
    )


if TYPE_CHECKING:
    from matplotlib.axes import Axes

# In a distributed run the ranks agree whether to stop after a signal at least this often (in steps).
STOP_CHECK_EVERY = 20
# The loss curve is redrawn after the first and the last epoch, and in between at most this often (in
# seconds): drawing it costs as much as many GPU training steps.
PLOT_EVERY_SECONDS = 30.0


class NonFiniteLoss(Exception):
    pass


class Interrupted(BaseException):
    """SIGINT or SIGTERM where the run stops at once (a second signal, or one during the end of an epoch)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interruption(error: BaseException) -> Interrupted | None:
    """The Interrupted behind an exception: a library may wrap one raised inside it (matplotlib's import
    turns it into a RuntimeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Interrupted):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def check_tensorboard() -> None:
    """A one-line error where torch.utils.tensorboard cannot work (its package is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimizer state, keeping this run's implementation flags (fused, foreach,
    capturable): the saved ones belong to the device and speed settings the checkpoint was made with
    (a CUDA graph's capturable Adam keeps its step counts on the GPU), and the step counts move to
    where this run's flags want them."""
    flags = ("fused", "foreach", "capturable")
    mine = [{k: group[k] for k in flags if k in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, mine, strict=True):
        group.update(own)
        for param in group["params"]:
            param_state = optimizer.state.get(param, {})
            if torch.is_tensor(param_state.get("step")):
                on_device = group.get("fused") or group.get("capturable")
                param_state["step"] = param_state["step"].to(param.device if on_device else "cpu", torch.float32)


class Trainer:
    """Subclasses set `models`, `optimizers` and `curve_panels`, and define `train_step` and `save_samples`.

    Per run, `output_dir` gets: losses.csv (a row per epoch), train_loss_curve_{num_epochs}.png
    (after the first and the last epoch, and at most every PLOT_EVERY_SECONDS in between), the
    sample grids, one .pt of weights per model, checkpoint.pt (everything needed to resume) and
    config.json (the settings in checkpoint.pt, readable without torch); every `eval_every` epochs
    and after the last, the quality metrics of `compute_metrics` go to metrics.csv (a row per
    evaluation) and metrics.json (the latest).

    Under torchrun (trainers/distributed.py) each rank trains on its share of every epoch; the
    losses of losses.csv and the curve are means over the ranks, and rank 0 alone evaluates,
    writes the files and prints while the others wait for it.
    """

    curve_panels: tuple[tuple[str, ...], ...] = ()
    # (metrics, model): the evaluation with the lowest of these metrics (the first one measured) so far
    # writes that model to {model}_best.pt.
    best_by: tuple[tuple[str, ...], str] | None = None
    # The metrics panel of the loss curve: the first of these on the left axis, the [0, 1] ones on the right.
    metric_panel: tuple[tuple[str, ...], tuple[str, ...]] = (
        ("fid", "frechet_distance", "neg_elbo"),
        ("precision", "recall"),
    )
    samples_per_grid = 64
    num_classes: int | None = None  # a class-conditional model's classes (its batches are (images, labels))
    Settings: type[EngineSettings] = EngineSettings  # the trainer's keys; a subclass adds its own
    # What a subclass's own train_step asks of the engine (trainers/needs.py): Needs(reads_state=True) where
    # it reads Python-side state that changes from step to step (a loss-weight schedule, self.step).
    needs = Needs()
    speed: Speed | None = None  # the trainer's speed settings (trainers/speed.py), built by a subclass

    def __init__(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        loader: Loader,
        config: dict,
        settings: EngineSettings,
        device: torch.device,
    ) -> None:
        self.settings = s = settings
        self.models, self.optimizers, self.loader, self.config = models, optimizers, loader, config
        self.num_epochs, self.seed, self.device = s.num_epochs, s.seed, device
        self.sample_every, self.resume, self.eval_every = s.sample_every, s.resume, s.eval_every
        self.metrics_features, self.inception_weights = s.metrics_features, s.inception_weights
        check_metrics_features(s.metrics_features, s.inception_weights)  # now, not after the first epoch
        self.tensorboard = s.tensorboard and distributed.is_main()  # events in output_dir/tensorboard
        if self.tensorboard:
            check_tensorboard()
        self._writer = None  # opened at the first epoch this process finishes
        self.output_dir = Path(s.output_dir)
        self.checkpoint_path = self.output_dir / "checkpoint.pt"
        self.epoch = 0  # epochs finished
        self.step = 0  # steps finished in epoch self.epoch + 1 (non-zero only after an interrupt)
        self.partial_sums: dict[str, float] = {}  # loss sums of those steps
        self.history: list[dict] = []  # one row per finished epoch, as in losses.csv
        self.curve: list[dict] = []  # running means about 20 times per epoch, for the loss curve
        self.metrics: list[dict] = []  # one row per evaluation, as in metrics.csv
        self.best: dict | None = None  # the evaluation of {model}_best.pt: epoch, metric, value
        self.evaluator: GeneratorEvaluator | None | bool = None  # built at the first evaluation; False: none
        self.seconds = 0.0  # training time of the current epoch
        self.last_plot = -math.inf  # time.monotonic() of the last loss-curve drawing
        self.stop_signal: int | None = None
        self.writing_outputs = False  # the end-of-epoch outputs are being written: a signal stops at once
        self.outputs_pending = False  # the last saved epoch's outputs are not all written yet
        self.saved_epoch = 0  # the epoch checkpoint.pt holds
        self.replaces_earlier_run = False  # resume=False: clear the folder's earlier run at the first save
        self.data_fingerprint = loader.fingerprint()  # resume compares it with the checkpoint's
        self.stopping = False  # in a distributed run: every rank agreed to stop after a signal
        self.world_size = distributed.world_size()
        if self.world_size > 1:
            loader.shard(distributed.rank(), self.world_size)
        batchnorm = [n for n, m in models.items() if any(isinstance(x, nn.BatchNorm1d) for x in m.modules())]
        require(
            loader.batch_size > 1 or not batchnorm,
            f"batch_size 1 cannot train the {batchnorm[0] if batchnorm else ''}'s BatchNorm, which needs two or more "
            "images a batch: use batch_size 2 or more (or a model without BatchNorm, e.g. generator_batchnorm False)",
        )
        self.fixed_noise: torch.Tensor | None = None  # latents of the sample grids, set by subclasses
        self.run_step: Callable[[torch.Tensor], dict] = self.train_step  # or its CUDA graph (trainers/speed.py)
        self.base_lrs = [[group["lr"] for group in opt.param_groups] for opt in optimizers.values()]

    @property
    def global_step(self) -> int:
        """Training steps finished in the whole run (the next step's index), resumed with the checkpoint."""
        return self.epoch * len(self.loader) + self.step

    def engine_needs(self, settings: EngineSettings) -> dict[str, Needs]:
        """What the trainer's own step and the learning-rate schedule ask of the engine, by name."""
        changing_lr = settings.lr_schedule != "none" or settings.warmup_steps > 0  # set on the host every step
        return {f"{type(self).__name__}.needs": self.needs, "lr_schedule": Needs(reads_state=changing_lr)}

    def lr_factor(self, step: int) -> float:
        """Each optimizer's learning rate at global step `step`, as a fraction of its `lr` key: a linear
        warm-up over `warmup_steps`, then `lr_schedule` from 1 down to `min_lr_ratio` at the last step."""
        s = self.settings
        if step < s.warmup_steps:
            return (step + 1) / (s.warmup_steps + 1)
        if s.lr_schedule == "none":
            return 1.0
        progress = min(1.0, (step - s.warmup_steps) / max(1, s.num_epochs * len(self.loader) - s.warmup_steps))
        decay = 1 - progress if s.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * decay

    def before_step(self) -> None:
        """Runs before every training step, outside any CUDA graph: sets the scheduled learning rates."""
        if self.settings.lr_schedule != "none" or self.settings.warmup_steps > 0:
            factor = self.lr_factor(self.global_step)
            for optimizer, base in zip(self.optimizers.values(), self.base_lrs, strict=True):
                for group, lr in zip(optimizer.param_groups, base, strict=True):
                    group["lr"] = lr * factor

    def on_epoch_end(self, epoch: int) -> None:
        """Runs after every finished epoch, on every process of a torchrun run at the same point (so it may
        use collectives), before the epoch's files are written; what it changes must follow from `epoch`
        and `global_step`, or be in `extra_state`, for a resumed run to equal an uninterrupted one."""

    # ------------------------------------------------------------------ to define in subclasses

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached scalar tensors to average over the epoch."""
        raise NotImplementedError

    def save_samples(self, epoch: int) -> None:
        raise NotImplementedError

    def exported_models(self) -> dict[str, nn.Module]:
        """The models written as {name}.pt each epoch (checkpoint.pt holds all of `models`)."""
        return self.models

    def evaluate(self) -> dict[str, float]:
        """Extra numbers for the epoch's row (e.g. a test loss); none by default."""
        return {}

    def compute_metrics(self) -> dict[str, float]:
        """Quality metrics for metrics.csv, every `eval_every` epochs; none by default."""
        return {}

    def extra_state(self) -> dict:
        """A subclass's own training state (tensors, numbers) for checkpoint.pt; none by default."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore `extra_state` from a checkpoint (an empty dict for a checkpoint written without it)."""

    def metrics_protocol(self) -> dict:
        """How each metric was estimated (features, estimator, sample and image counts), for metrics.json."""
        return {"generator_metrics": self.evaluator.protocol()} if self.evaluator else {}

    def generator_metrics(
        self,
        sample: Callable[..., torch.Tensor],
        latent_dim: int,
        image_shape: tuple[int, int, int],
        num_classes: int | None = None,
    ) -> dict[str, float]:
        """The classifier-based metrics (trainers.metrics) of `sample(z)` -> images in [0, 1], or of
        `sample(z, labels)` for a conditional model; {} where the data set has no classifier (the note
        saying so is printed once)."""
        if self.evaluator is None:
            dataset = self.config.get("dataset", {})
            self.evaluator = (
                make_generator_evaluator(
                    dataset,
                    image_shape,
                    self.device,
                    self.seed,
                    features=self.metrics_features,
                    inception_weights=self.inception_weights,
                    conditional=num_classes is not None,
                )
                or False
            )
        return self.evaluator.evaluate_generator(sample, latent_dim, num_classes) if self.evaluator else {}

    def make_fixed_noise(self, latent_dim: int) -> torch.Tensor:
        """The same latents every epoch, from their own RNG: the grids show progress, not luck."""
        rng = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.samples_per_grid, latent_dim, generator=rng).to(self.device)

    def grid_inputs(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], int]:
        """(latents, labels, images per row) of the sample grid: the fixed noise, 8 a row; for a conditional
        model one class a row (up to 16) with the same 8 latents in every row, so a column is one style."""
        if self.num_classes is None:
            return self.fixed_noise, (), 8
        rows = min(self.num_classes, 16)
        labels = torch.arange(rows, device=self.device).repeat_interleave(8)
        return self.fixed_noise[:8].repeat(rows, 1), (labels,), 8

    # ------------------------------------------------------------------ the loop

    def fit(self) -> list[dict]:
        """Train to num_epochs, resuming where a checkpoint left off. The process owns output_dir meanwhile
        (a second run there stops with one line), and SIGINT or SIGTERM at any moment stops it with one line,
        the last finished epoch (or the interrupted one's steps) saved."""
        lock = FolderLock(self.output_dir) if distributed.is_main() else None
        if lock is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            remove_stale_temps(self.output_dir)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._resume()
            if self.outputs_pending and distributed.is_main():  # a saved epoch whose outputs were cut short
                self._export_models(self.epoch)
                self._write_outputs(self.epoch)
            if self.epoch >= self.num_epochs:
                print(f"{self.output_dir}: already trained {self.epoch} of num_epochs={self.num_epochs}; nothing to do")
                return self.history
            for epoch in range(self.epoch + 1, self.num_epochs + 1):
                self._train_epoch(epoch)
                if self.stopping or (self.world_size == 1 and self.stop_signal is not None):
                    signum = self.stop_signal or signal.SIGTERM  # a rank can stop for another's signal
                    if distributed.is_main():
                        self._save_checkpoint()
                        print(
                            f"\n{signal.Signals(signum).name}: stopped in epoch {epoch} after step {self.step}; "
                            f"checkpoint saved to {self.checkpoint_path}. Run the same command again to resume.",
                            file=sys.stderr,
                        )
                    distributed.barrier()  # no rank exits (and so makes torchrun end the others) before the save
                    sys.exit(128 + signum)
                self.on_epoch_end(epoch)
                self._end_epoch(epoch)
                if self.world_size == 1 and self.stop_signal is not None:  # came during the end of the epoch
                    raise Interrupted(self.stop_signal)
            if self.best is not None and distributed.is_main():
                best = self.best
                print(
                    f"best {best['metric']} {best['value']:.4g} at epoch {best['epoch']} of {self.num_epochs}: "
                    f"{self.output_dir / best['file']}"
                )
        except NonFiniteLoss as error:
            kept = (
                f"the checkpoint of epoch {self.epoch} is kept"
                if self.epoch > 0
                else "nothing was saved (no epoch finished)"
            )
            raise UserError(
                f"{error}; {kept} in {self.output_dir}: lower the learning rate or check the data"
            ) from None
        except (Interrupted, Exception) as error:
            stop = _interruption(error)
            if stop is None:
                raise
            kept = (
                f"the checkpoint of epoch {self.saved_epoch} is kept" if self.saved_epoch else "no epoch had finished"
            )
            later = " (a rerun first finishes that epoch's metrics, grids and logs)" if self.outputs_pending else ""
            print(
                f"\n{signal.Signals(stop.signum).name}: stopped; {kept} in {self.checkpoint_path}{later}. "
                "Run the same command again to resume.",
                file=sys.stderr,
            )
            sys.exit(128 + stop.signum)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if lock is not None:
                lock.release()
        return self.history

    def _on_signal(self, signum: int, frame: object) -> None:
        # The first signal stops after the current step, which is then saved. A second one, or one while
        # the epoch's optional outputs are written (its checkpoint is already saved), stops at once. Not
        # under torchrun, which passes on the Ctrl-C its processes got from the terminal already (and
        # kills them itself 30 s after its own signal).
        if self.world_size == 1 and (self.stop_signal is not None or self.writing_outputs):
            raise Interrupted(signum)
        self.stop_signal = signum

    def _train_epoch(self, epoch: int) -> None:
        for model in self.models.values():
            model.train()
        steps = len(self.loader)
        # Kept on the device (no host sync per step); a resumed epoch goes on from its saved float32 sums, so its
        # means are the ones an uninterrupted epoch gets.
        sums = {name: torch.tensor(value, device=self.device) for name, value in self.partial_sums.items()}
        point_sums: dict[str, torch.Tensor] = {}
        point_steps, point_every = 0, max(1, steps // 20)
        began = time.perf_counter()
        bar = tqdm(
            total=steps,
            initial=self.step,
            desc=f"epoch {epoch}/{self.num_epochs}",
            leave=False,
            mininterval=0.5,
            disable=None if distributed.is_main() else True,  # None: no bar where stderr is not a terminal (a log)
        )
        for batch in self.loader.batches(epoch, start=self.step):
            self.before_step()
            terms = self.run_step(*batch) if isinstance(batch, tuple) else self.run_step(batch)  # (images, labels)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0) + value
                point_sums[name] = point_sums.get(name, 0) + value
            self.step += 1
            point_steps += 1
            point = self.step % point_every == 0 or self.step == steps
            if self.world_size > 1:  # the ranks stop at the same step, or DDP waits forever for the first to stop
                signalled = self.stop_signal is not None
                if point:  # one collective: the curve's means over the ranks, and whether any rank got a signal
                    point_sums = distributed.mean_over_ranks({**point_sums, "stop": float(signalled)})
                    self.stopping = bool(point_sums.pop("stop") > 0)
                elif self.step % STOP_CHECK_EVERY == 0:
                    self.stopping = distributed.any_rank(signalled)
            if point:
                means = {k: v.item() / point_steps for k, v in point_sums.items()}
                self._check_finite(means, epoch)
                self.curve.append({"epoch": epoch - 1 + self.step / steps, **means})
                point_sums, point_steps = {}, 0
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()})
            bar.update(1)
            if self.stopping or (self.world_size == 1 and self.stop_signal is not None):
                break
        bar.close()
        if self.world_size > 1:  # mean over the ranks: losses.csv and checkpoints hold all the data's losses
            sums = distributed.mean_over_ranks(sums)
        self.partial_sums = {name: float(value) for name, value in sums.items()}
        self._check_finite(self.partial_sums, epoch)
        self.seconds += time.perf_counter() - began

    def _check_finite(self, values: dict[str, float], epoch: int) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLoss(f"{', '.join(bad)} became {values[bad[0]]} in epoch {epoch} (step {self.step})")

    def _end_epoch(self, epoch: int) -> None:
        means = {k: v / self.step for k, v in self.partial_sums.items()}
        self._check_finite(means, epoch)
        main = distributed.is_main()  # evaluation and files are rank 0's; the other ranks wait at the barrier
        if main:
            row = {"epoch": epoch, **means, **self.evaluate(), "seconds": round(self.seconds, 2)}
            self._check_finite(row, epoch)
            self.history.append(row)
        self.epoch, self.step, self.partial_sums, self.seconds = epoch, 0, {}, 0.0
        if main:
            # The finished epoch first (weights and checkpoint, all or none), then what may be cut short.
            self.outputs_pending = True
            with all_or_nothing() as staged:
                self._save_checkpoint(staged)
                self._export_models(epoch, staged)
            summary = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            print(f"epoch {epoch}/{self.num_epochs}: {summary}")
            self._write_outputs(epoch)
        distributed.barrier()

    def _export_models(self, epoch: int, staged: list | None = None) -> None:
        for name, model in self.exported_models().items():
            dataset = self.config.get("dataset", {})
            save_model(model, self.output_dir / f"{name}.pt", staged, epoch=epoch, dataset=dataset)

    def _write_outputs(self, epoch: int) -> None:
        """What follows from a saved epoch: the metrics when due, the sample grids, losses.csv, the loss
        curve and TensorBoard. A signal here stops at once; a resumed run writes them first."""
        if self.world_size == 1 and self.stop_signal is not None:  # came while the epoch was being saved
            raise Interrupted(self.stop_signal)
        self.writing_outputs = True
        try:
            due = epoch == self.num_epochs or (self.eval_every and epoch % self.eval_every == 0)
            measured = due and not any(row["epoch"] == epoch for row in self.metrics) and self._record_metrics(epoch)
            grids = epoch == 1 or epoch % self.sample_every == 0 or epoch == self.num_epochs
            if grids:
                self.save_samples(epoch)
            self._write_logs(final=epoch == self.num_epochs)
            if self.tensorboard:
                self._write_tensorboard(epoch, self.history[-1], grids)
            self.outputs_pending = False
            if measured:  # the checkpoint keeps the metrics and the best epoch too
                self._save_checkpoint()
        finally:
            self.writing_outputs = False

    def _record_metrics(self, epoch: int) -> bool:
        began = time.perf_counter()
        # Forked RNG: building the classifier and sampling must not shift training's random stream,
        # or a resumed run would no longer equal an uninterrupted one.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            metrics = self.compute_metrics()
        if not metrics:
            return False
        self.metrics.append({"epoch": epoch, **metrics, "seconds": round(time.perf_counter() - began, 2)})
        names = list(dict.fromkeys(k for row in self.metrics for k in row))
        with atomic_file(self.output_dir / "metrics.csv") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.metrics)
        self._keep_best(epoch, metrics)
        classifier = self.evaluator.record if self.evaluator else None
        summary = {
            "epoch": epoch,
            "num_epochs": self.num_epochs,
            "metrics": metrics,
            "protocol": self.metrics_protocol(),
            "best": self.best,
            "classifier": classifier,
        }
        write_json(summary, self.output_dir / "metrics.json")
        shown = {k: v for k, v in metrics.items() if not k.startswith("class_accuracy_")}  # per class: in the files
        print(f"metrics after epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        return True

    def _keep_best(self, epoch: int, metrics: dict[str, float]) -> None:
        """Write {model}_best.pt when this evaluation's `best_by` metric is the lowest so far (a long GAN run
        can end far from its best epoch)."""
        candidates, name = self.best_by or ((), "")
        metric = next((m for m in candidates if m in metrics), None)
        if metric is None or (self.best is not None and metrics[metric] >= self.best["value"]):
            return
        model = self.exported_models()[name]
        path = self.output_dir / f"{name}_best.pt"
        save_model(model, path, epoch=epoch, dataset=self.config.get("dataset", {}), best={metric: metrics[metric]})
        self.best = {"epoch": epoch, "metric": metric, "value": metrics[metric], "file": path.name, "metrics": metrics}

    # ------------------------------------------------------------------ logs

    def _write_tensorboard(self, epoch: int, row: dict, grids: bool) -> None:
        """This epoch's row of losses.csv, its metrics and its sample grids, at step `epoch`."""
        if self._writer is None:  # purge_step: a resumed run drops the events logged after its checkpoint
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=epoch)
        writer = self._writer
        for name, value in row.items():
            if name != "epoch":
                writer.add_scalar(f"losses/{name}", value, epoch)
        if self.metrics and self.metrics[-1]["epoch"] == epoch:
            for name, value in self.metrics[-1].items():
                if name != "epoch":
                    writer.add_scalar(f"metrics/{name}", value, epoch)
        if grids:
            for path in sorted(self.output_dir.glob(f"*_epoch_{epoch}.png")):  # the grids save_samples wrote
                with Image.open(path) as image:
                    pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
                writer.add_image(path.stem.removesuffix(f"_epoch_{epoch}"), pixels, epoch)
        writer.flush()

    def _write_logs(self, final: bool) -> None:
        names = list(dict.fromkeys(k for row in self.history for k in row))
        with atomic_file(self.output_dir / "losses.csv") as f:
            writer = csv.DictWriter(f, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.history)
        if final or time.monotonic() - self.last_plot >= PLOT_EVERY_SECONDS:
            self._plot_curve()
            self.last_plot = time.monotonic()

    def _plot_curve(self) -> None:
        panels = [p for p in self.curve_panels if any(k in row for row in self.history for k in p)]
        count = len(panels) + bool(self.metrics)
        fig = figure(figsize=(5.5 * count, 4))
        axes = fig.subplots(1, count, squeeze=False)
        for ax, names in zip(axes[0], panels, strict=False):
            for name in names:
                if self.curve and name in self.curve[0]:
                    marker = "o" if len(self.curve) == 1 else None  # a single step is a point, not an invisible line
                    ax.plot(
                        [p["epoch"] for p in self.curve],
                        [p[name] for p in self.curve],
                        marker=marker,
                        label=name,
                        alpha=0.8,
                    )
                elif any(name in row for row in self.history):  # per-epoch numbers, e.g. a test loss
                    rows = [row for row in self.history if name in row]
                    ax.plot([r["epoch"] for r in rows], [r[name] for r in rows], "o-", label=name)
            ax.set_xlabel("epoch")
            ax.legend()
            ax.grid(alpha=0.3)
        if self.metrics:
            self._plot_metrics(axes[0][-1])
        fig.suptitle(f"{self.output_dir.name}: {self.epoch} of {self.num_epochs} epochs")
        fig.tight_layout()
        with atomic_file(self.output_dir / f"train_loss_curve_{self.num_epochs}.png", "wb") as f:
            fig.savefig(f, format="png", dpi=100)

    def _plot_metrics(self, ax: Axes) -> None:
        epochs = [row["epoch"] for row in self.metrics]
        left = next((k for k in self.metric_panel[0] if k in self.metrics[-1]), None)
        right = [k for k in self.metric_panel[1] if k in self.metrics[-1]]
        latest = self.metrics[-1]  # its values go in the legend: the panel's one point after a default run
        if left:
            values = [row.get(left, math.nan) for row in self.metrics]
            ax.plot(epochs, values, "o-", color="black", label=f"{left} {latest[left]:.4g}")
            ax.set_ylabel(left)
        twin = ax.twinx() if left and right else ax
        for name in right:
            values = [row.get(name, math.nan) for row in self.metrics]
            twin.plot(epochs, values, "s--", label=f"{name} {latest[name]:.3g}")
        if right:
            twin.set_ylim(0, 1.05)
        lines = ax.get_lines() + (twin.get_lines() if twin is not ax else [])
        if lines:  # one legend for both axes
            twin.legend(lines, [line.get_label() for line in lines], loc="center right", framealpha=0.8)
        ax.set_xlabel("epoch")
        ax.set_title("quality metrics (metrics.csv)")
        ax.grid(alpha=0.3)

    # ------------------------------------------------------------------ checkpoints

    def _rng_state(self) -> dict:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "pos": np_state[2],
                "has_gauss": np_state[3],
                "cached_gaussian": np_state[4],
            },
            "python": random.getstate(),
        }

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        random.setstate(state["python"])

    def _save_checkpoint(self, staged: list | None = None) -> None:
        """checkpoint.pt and config.json; `staged`: as part of a set of files written together."""
        if self.replaces_earlier_run:
            self.replaces_earlier_run = False
            removed = clear_run_files(self.output_dir)
            if removed:
                print(f"resume=False: removed {removed} files of the earlier run in {self.output_dir}")
        atomic_save(
            {
                "config": self.config,
                "epoch": self.epoch,
                "step": self.step,
                "outputs_pending": self.outputs_pending,
                "world_size": self.world_size,
                "num_threads": torch.get_num_threads(),
                "data": self.data_fingerprint,
                "partial_sums": self.partial_sums,
                "seconds": self.seconds,
                "models": {name: m.state_dict() for name, m in self.models.items()},
                "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
                "history": self.history,
                "curve": self.curve,
                "metrics": self.metrics,
                "best": self.best,
                "rng": self._rng_state(),
                "fixed_noise": self.fixed_noise,
                "extra": self.extra_state(),
            },
            self.checkpoint_path,
            staged,
        )
        write_json(self.config, self.output_dir / "config.json", staged)
        if self.step == 0:
            self.saved_epoch = self.epoch

    def _resume(self) -> None:
        """Continue from the checkpoint, or start in a folder that holds no other run's files."""
        main = distributed.is_main()
        if self.resume is False:  # an earlier run's files go when this run saves its first checkpoint
            self.replaces_earlier_run = main
            return
        path = self.checkpoint_path if self.resume in (True, "auto") else Path(self.resume)
        if not path.exists():
            require(
                self.resume in (True, "auto"),
                f"resume checkpoint '{path}' not found: fix the path or set resume to 'auto' or False",
            )
            others = sorted({p.name for pattern in RUN_FILES for p in self.output_dir.glob(pattern)}) if main else []
            require(
                not others,
                f"output_dir '{self.output_dir}' holds another run's files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) but no checkpoint.pt to resume from: choose another "
                "output_dir, or set resume False to replace them",
            )
            return
        checkpoint = read_checkpoint(path, "checkpoint")
        require(
            "models" in checkpoint and "config" in checkpoint,
            f"'{path}' is not a training checkpoint of this repository",
        )
        self._check_same_run(checkpoint["config"], path)
        self._check_same_data(checkpoint.get("data"), path)
        saved_world = checkpoint.get("world_size", 1)
        if saved_world != self.world_size:
            print(
                f"note: {path} was trained by {saved_world} process(es), this run has {self.world_size}: the effective "
                f"batch is now {self.world_size} x batch_size, and an epoch {len(self.loader)} steps"
            )
        if self.speed is not None and "num_threads" in checkpoint:
            self.speed.resume_threads(checkpoint["num_threads"])
        for name, model in self.models.items():
            load_state(model, checkpoint["models"][name], path)
        for name, optimizer in self.optimizers.items():
            load_optimizer(optimizer, checkpoint["optimizers"][name])
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.partial_sums, self.seconds = checkpoint["partial_sums"], checkpoint["seconds"]
        self.history, self.curve = checkpoint["history"], checkpoint["curve"]
        self.metrics = checkpoint.get("metrics", [])  # checkpoints older than the metrics have none
        self.best = checkpoint.get("best")
        self._set_rng_state(checkpoint["rng"])  # rank 0's, in a distributed run
        if distributed.rank() > 0:  # a stream of its own, drawn from where the run stopped
            seed_everything(hash((self.seed, distributed.rank(), self.epoch, self.step)) % SEED_RANGE)
        if checkpoint.get("fixed_noise") is not None:
            self.fixed_noise = checkpoint["fixed_noise"].to(self.device)
        self.load_extra_state(checkpoint.get("extra", {}))
        self.outputs_pending = checkpoint.get("outputs_pending", False) and self.step == 0
        self.saved_epoch = self.epoch
        where = f"epoch {self.epoch}" + (f", step {self.step}" if self.step else "")
        print(f"resuming from {path} ({where}); resume=False starts over")

    def _check_same_data(self, saved: dict | None, path: Path) -> None:
        """The checkpoint's data set is this run's (its size, labels and a sample of its images), unless
        resume_with_new_data asks to continue on other data (to fine-tune on new pictures)."""
        if saved is None or saved == self.data_fingerprint:  # (older checkpoints have no fingerprint)
            return
        new = self.data_fingerprint
        change = f"{saved['images']} images (fingerprint {saved['hash']}), now {new['images']} ({new['hash']})"
        require(
            self.settings.resume_with_new_data,
            f"'{path}' was trained on other data: {change}; set resume_with_new_data True to continue on these "
            "(e.g. to fine-tune), or use another output_dir",
        )
        print(f"note: resuming on other data ({change}), as resume_with_new_data asks")

    def _key_defaults(self, section: str) -> dict:
        """The keyword defaults behind one section of the config (trainer, dataset or a model's kwargs)."""
        if section == "trainer":
            return self.Settings.defaults()
        if section == "dataset":
            return keyword_defaults(make_loader)
        model = self.models.get(section)
        return keyword_defaults(type(model)) if model is not None else {}

    def _check_same_run(self, saved: dict, path: Path) -> None:
        resumable = {"trainer": self.Settings.resumable(), "dataset": RESUMABLE_DATASET_KEYS}
        for section, values in self.config.items():
            old = saved.get(section, {})
            # A key newer than the checkpoint, at its default, is what the older code did.
            defaults = self._key_defaults(section)
            for name in sorted(set(values) | set(old)):
                if name in resumable.get(section, ()) or values.get(name) == old.get(name):
                    continue
                if name not in old and name in defaults and values[name] == defaults[name]:
                    continue
                raise UserError(
                    f"'{path}' was trained with {name}={old.get(name)!r}, now {name}={values.get(name)!r}: "
                    "use another output_dir, set resume=False to start over, or restore the value"
                )
