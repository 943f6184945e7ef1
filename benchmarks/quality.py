"""Quality benchmark: train each model for a budget on the real data, then tabulate its quality metrics.

    OMP_NUM_THREADS=2 python -m benchmarks.quality --root ../shared/data --epochs 20
    python -m benchmarks.quality --root ../shared/data --minutes 30 --models gan,gan_plain
    python -m benchmarks.quality --root ../shared/data --epochs 1 --max-samples 2000   # a smoke run

Runs (each starts from its main script's kwargs dicts, so it measures the defaults as they are):
    gan        main_gan.py: FC GAN with the generator's BatchNorm, EMA weights and label smoothing
    gan_hinge, gan_least_squares, gan_wgan_gp (d_steps 5): the same with another `loss`
    dcgan_hinge, dcgan_least_squares, dcgan_wgan_gp: likewise for the DCGAN
    gan_conditional, gan_conditional_concat, dcgan_conditional, vae_conditional: num_classes 10
               (class_accuracy: does a sample show the class asked for); the GANs' discriminators
               see the label by projection, or by concatenation (_concat)
    gan_plain  the same FC networks trained like a plain tutorial loop: generator_batchnorm=False,
               ema_decay=0, label_smoothing=0, with the SPEC's batch 16 and learning rates 2e-4
    dcgan      main_dcgan.py on the image folder <root>/cifar10/train (its test split: cifar10/test)
    vae        main_vae.py

The "real data" rows score real test images against as many real training images: the best value
each metric can reach with this classifier and sample size (Fréchet distance and KID are not 0).
The metrics and the classifier are those of trainers/metrics.py and trainers/classifier.py; the
classifiers are trained the first time (MNIST ~1 min, CIFAR-10 ~8 min on one core) and cached.

Writes each run's usual outputs (with metrics.csv and metrics.json) to <output-dir>/<run>/, and the
table to <output-dir>/quality.md and quality.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/quality.py` as well as `python -m benchmarks.quality`
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import main_dcgan  # noqa: E402
import main_gan  # noqa: E402
import main_vae  # noqa: E402
from models import VAE_ARCHITECTURES, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator  # noqa: E402
from trainers import Trainer, train_gan, train_vae  # noqa: E402
from trainers.classifier import data_source, load_split  # noqa: E402
from trainers.metrics import make_generator_evaluator  # noqa: E402
from utils import require, run_cli  # noqa: E402

# The other GAN objectives (trainers/objectives.py), each at the script's other defaults.
OBJECTIVES = {
    "hinge": {"loss": "hinge"},
    "least_squares": {"loss": "least_squares"},
    "wgan_gp": {"loss": "wgan_gp", "d_steps": 5},
}
CONDITIONAL = {"num_classes": 10}
RUNS = (
    "gan",
    "gan_plain",
    *(f"gan_{loss}" for loss in OBJECTIVES),
    "gan_conditional",
    "gan_conditional_concat",
    "dcgan",
    *(f"dcgan_{loss}" for loss in OBJECTIVES),
    "dcgan_conditional",
    "vae",
    "vae_conditional",
)
COLUMNS = {  # metric key -> table heading (arrows: which way is better)
    "fid": "Inception FID ↓",
    "frechet_distance": "FD ↓",
    "kid": "KID ↓",
    "inception_score": "Inception score ↑",
    "classifier_score": "score ↑",
    "class_entropy_bits": "class entropy (bits)",
    "precision": "precision ↑",
    "recall": "recall ↑",
    "class_accuracy": "class accuracy ↑",
    "neg_elbo": "−ELBO, 1 sample (nats) ↓",
    "test_nll_iw": "−log p(x), IW (nats) ↓",
    "reconstruction_bce": "BCE (nats)",
    "kl": "KL (nats)",
}


def run_configs(args: argparse.Namespace) -> dict[str, tuple[Callable[..., Trainer], dict, dict, dict]]:
    """For each run: (function that trains it from kwargs dicts, model, dataset and trainer kwargs)."""
    mnist = {"root": args.root, "max_samples": args.max_samples}
    cifar = {"dataset_type": "image_folder", "root": args.cifar_root, "max_samples": args.max_samples}
    common = {"device": args.device, "seed": args.seed, "resume": False, "eval_every": args.eval_every}

    def gan(name: str, dataset: dict, trainer: dict, model: dict | None = None) -> tuple:
        return (
            lambda m, d, t: train_gan(FCGenerator, FCDiscriminator, m, d, t),
            {**copy.deepcopy(main_gan.mnist_model_kwargs), **(model or {})},
            {**copy.deepcopy(main_gan.dataset_kwargs), **dataset},
            {**copy.deepcopy(main_gan.trainer_kwargs), **trainer, "output_dir": str(args.output_dir / name)},
        )

    def dcgan(name: str, trainer: dict, model: dict | None = None) -> tuple:
        trainer = {**copy.deepcopy(main_dcgan.trainer_kwargs), **common, **trainer}
        return (
            lambda m, d, t: train_gan(DCGANGenerator, DCGANDiscriminator, m, d, t),
            {**copy.deepcopy(main_dcgan.model_kwargs), **(model or {})},
            {**copy.deepcopy(main_dcgan.dataset_kwargs), **cifar},
            {**trainer, "output_dir": str(args.output_dir / name)},
        )

    def vae(name: str, model: dict) -> tuple:
        return (
            lambda m, d, t: train_vae(VAE_ARCHITECTURES, m, d, t),
            {**copy.deepcopy(main_vae.mnist_model_kwargs), **model},
            {**copy.deepcopy(main_vae.dataset_kwargs), **mnist},
            {**copy.deepcopy(main_vae.trainer_kwargs), **common, "output_dir": str(args.output_dir / name)},
        )

    # The plain loop: the same networks without our extras, at the SPEC's batch size and learning rates.
    plain_trainer = {"ema_decay": 0.0, "label_smoothing": 0.0, "generator_lr": 2e-4, "discriminator_lr": 2e-4}
    return {
        "gan": gan("gan", mnist, common),
        "gan_plain": gan(
            "gan_plain", {**mnist, "batch_size": 16}, {**common, **plain_trainer}, {"generator_batchnorm": False}
        ),
        **{f"gan_{loss}": gan(f"gan_{loss}", mnist, {**common, **OBJECTIVES[loss]}) for loss in OBJECTIVES},
        "gan_conditional": gan("gan_conditional", mnist, common, CONDITIONAL),
        "gan_conditional_concat": gan(
            "gan_conditional_concat", mnist, common, {**CONDITIONAL, "class_conditioning": "concat"}
        ),
        "dcgan": dcgan("dcgan", {}),
        **{f"dcgan_{loss}": dcgan(f"dcgan_{loss}", OBJECTIVES[loss]) for loss in OBJECTIVES},
        "dcgan_conditional": dcgan("dcgan_conditional", {}, CONDITIONAL),
        "vae": vae("vae", {}),
        "vae_conditional": vae("vae_conditional", CONDITIONAL),
    }


def train_for_budget(train: Callable[..., Trainer], model: dict, dataset: dict, trainer: dict, args) -> Trainer:
    """`--epochs N`, or `--minutes M`: one epoch, then as many more as its time says fit in M minutes."""
    if args.minutes is None:
        return train(model, dataset, {**trainer, "num_epochs": args.epochs})
    run = train(model, dataset, {**trainer, "num_epochs": 1})
    per_epoch = max(run.history[0]["seconds"], 1e-3)
    total = max(1, int(args.minutes * 60 // per_epoch))
    if total > 1:
        print(f"{per_epoch:.0f} s an epoch: training on to {total} epochs to fill {args.minutes} minutes")
        run.num_epochs = total  # the same trainer carries on in memory (resume=False: nothing is reloaded)
        run.fit()
    return run


def real_reference(dataset: dict) -> dict | None:
    """Real test images against as many real training images (evenly spread over the split)."""
    source = data_source(dataset)
    shape = source.recipe.image_shape
    evaluator = make_generator_evaluator(dataset, shape)
    if evaluator is None:
        return None
    train_images, _ = load_split(source, True)
    keep = torch.linspace(0, len(train_images) - 1, evaluator.num_images).long()
    metrics = evaluator.real_reference(train_images[keep])
    return {"metrics": metrics, "classifier": evaluator.record}


def markdown_table(rows: list[dict]) -> str:
    keys = [k for k in COLUMNS if any(k in row["metrics"] for row in rows)]
    lines = [
        "| run | data | epochs | train min | " + " | ".join(COLUMNS[k] for k in keys) + " |",
        "|" + "---|" * (4 + len(keys)),
    ]
    for row in rows:
        values = [_format(row["metrics"].get(k)) for k in keys]
        lines.append(
            f"| {row['run']} | {row['data']} | {row['epochs']} | {row['minutes']} | " + " | ".join(values) + " |"
        )
    return "\n".join(lines)


def protocol_lines(rows: list[dict]) -> list[str]:
    """How the table's numbers were measured (from each run's metrics_protocol): no number without it."""
    lines = []
    for row in rows:
        protocol = row.get("protocol") or {}
        generator = protocol.get("generator_metrics")
        if generator:
            counts = f"{generator['generated_images']} generated against {generator['real_images']} real images"
            lines.append(
                f"- {row['run']}: {generator['features']}; {counts} ({generator['real_split']} split); "
                f"resize: {generator['resize']}"
            )
        for key in ("neg_elbo", "test_nll_iw"):
            if key in protocol:
                lines.append(f"- {row['run']}, {key}: {protocol[key]}")
    return lines


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if 0 < abs(value) < 0.01 else f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", default=str(REPO.parent / "shared" / "data"), help="folder holding MNIST/raw and cifar10/{train,test}"
    )
    parser.add_argument("--cifar-root", default=None, help="CIFAR-10 image folder (default: <root>/cifar10/train)")
    parser.add_argument(
        "--models", default="gan,gan_plain,dcgan,vae", help=f"comma-separated runs out of {', '.join(RUNS)}"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=5, help="epochs per run")
    budget.add_argument("--minutes", type=float, default=None, help="training minutes per run (instead of epochs)")
    parser.add_argument("--max-samples", type=int, default=None, help="train on the first N images only (smoke runs)")
    parser.add_argument("--eval-every", type=int, default=None, help="epochs between metrics (default: at the end)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/quality"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-reference", action="store_true", help="skip the real-data reference rows")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    require(not unknown, f"unknown run(s) {', '.join(unknown)} in --models: use {', '.join(RUNS)}")
    require(args.epochs > 0 and (args.minutes is None or args.minutes > 0), "--epochs and --minutes must be positive")
    args.cifar_root = args.cifar_root or str(Path(args.root) / "cifar10" / "train")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    configs = run_configs(args)
    for name in names:
        train, model, dataset, trainer = configs[name]
        print(f"\n=== {name} ===")
        began = time.perf_counter()
        run = train_for_budget(train, model, dataset, trainer, args)
        data = "cifar10" if name.startswith("dcgan") else "mnist"
        rows.append(
            {
                "run": name,
                "data": data,
                "epochs": run.epoch,
                "minutes": round(sum(row["seconds"] for row in run.history) / 60, 1),
                "wall_minutes": round((time.perf_counter() - began) / 60, 1),
                "metrics": run.metrics[-1] if run.metrics else {},
                "protocol": run.metrics_protocol(),
                "kwargs": {"model": model, "dataset": dataset, "trainer": trainer},
            }
        )
    references = {}
    if not args.no_reference:
        needed = {"cifar10" if n.startswith("dcgan") else "mnist" for n in names}
        datasets = {"mnist": {"dataset_type": "mnist", "root": args.root}, "cifar10": configs["dcgan"][2]}
        for data in sorted(needed):
            print(f"\n=== real {data} (reference) ===")
            references[data] = real_reference({**datasets[data], "max_samples": None, "classes": None})
            if references[data]:
                rows.append({"run": "real data", "data": data, "epochs": "–", "minutes": "–", **references[data]})

    for row in rows:  # "seconds" (time the metrics took) is no quality number
        row["metrics"] = {k: v for k, v in row["metrics"].items() if k not in ("epoch", "seconds")}
    table = markdown_table(rows)
    accuracies = [
        f"- {data} classifier: test accuracy {ref['classifier']['test_accuracy']:.2%} "
        f"(trained in {ref['classifier']['seconds']:.0f} s)"
        for data, ref in references.items()
        if ref
    ]
    text = "\n".join([table, "", *protocol_lines(rows), *accuracies])
    print("\n" + text)
    (args.output_dir / "quality.md").write_text(text + "\n")
    (args.output_dir / "quality.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(f"\nwritten: {args.output_dir / 'quality.md'}, {args.output_dir / 'quality.json'}")


if __name__ == "__main__":
    run_cli(main)
