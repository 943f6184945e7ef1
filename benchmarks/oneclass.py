"""One-class anomaly detection benchmark: train the VAE on one class, flag the test set's other classes.

    python benchmarks/oneclass.py --root ../shared/data
    python benchmarks/oneclass.py --root ../shared/data --datasets mnist --classes 2,8 --epochs 5  # a quick look

The standard protocol of Deep SVDD (Ruff et al., 2018) and OCGAN (Perera et al., 2019): for each
class, train on that class's training images only, score every test image, and report the AUROC
of "not that class". Each run is the user's flow at the scripts' defaults: main_vae.py's kwargs
dicts with `classes` set to the one class, then detect_vae_anamolies.py with `anomaly` "classes",
once per `score` (reconstruction, elbo, nll, each less the pixel entropy as the script does by
default) and once with the SPEC's plain reconstruction BCE (`subtract_pixel_entropy` False).
MNIST is read from <root>/MNIST; CIFAR-10 from the image folder <root>/cifar10/train (its test
split: cifar10/test), as 32x32 grey images, the only kind this fully-connected VAE takes.

Writes each class's run to <output-dir>/<dataset>/<class>/ (a finished run is reused: delete the
folder to retrain) and the tables to <output-dir>/oneclass.md and oneclass.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/oneclass.py` as well as `python -m benchmarks.oneclass`
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import detect_vae_anamolies  # noqa: E402
import main_vae  # noqa: E402
from models import VAE  # noqa: E402
from trainers import train_vae  # noqa: E402
from utils import require, run_cli  # noqa: E402

# Published mean AUROC (%) of the same protocol, to set the table beside.
BASELINES = {
    "mnist": {"Deep SVDD (Ruff et al., 2018)": 94.8, "OCGAN (Perera et al., 2019)": 97.5},
    "cifar10": {"Deep SVDD (Ruff et al., 2018)": 64.8, "OCGAN (Perera et al., 2019)": 65.6},
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLASSES = {"mnist": tuple(str(d) for d in range(10)), "cifar10": CIFAR10_CLASSES}
# Table columns: name -> detect_vae_anamolies.py's (score, subtract_pixel_entropy). "spec" is the SPEC's
# reconstruction error, the plain BCE; the others are the script's scores at its default correction.
COLUMNS = {
    "reconstruction": ("reconstruction", True),
    "elbo": ("elbo", True),
    "nll": ("nll", True),
    "spec": ("reconstruction", False),
}


def run_configs(dataset_name: str, label: str, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """main_vae.py's dicts as they are, for one class of one data set."""
    model = copy.deepcopy(main_vae.mnist_model_kwargs)
    dataset = copy.deepcopy(main_vae.dataset_kwargs)
    trainer = copy.deepcopy(main_vae.trainer_kwargs)
    if dataset_name == "mnist":
        dataset.update(dataset_type="mnist", root=str(args.root), classes=[int(label)])
    else:
        dataset.update(dataset_type="image_folder", root=str(args.root / "cifar10" / "train"), classes=[label])
        model["image_size"] = 32 * 32
    dataset["max_samples"] = args.max_samples
    trainer.update(output_dir=str(args.output_dir / dataset_name / label), seed=args.seed, device=args.device)
    trainer["eval_every"] = None
    if args.epochs is not None:
        trainer["num_epochs"] = args.epochs
    return model, dataset, trainer


def score_class(weights: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """AUROC (%) of each column's score for the held-out classes, by detect_vae_anamolies.py at its defaults."""
    aurocs = {}
    for column, (score, subtract) in COLUMNS.items():
        kwargs = {**detect_vae_anamolies.anomaly_kwargs, "anomaly": "classes", "score": score, "device": args.device}
        kwargs["subtract_pixel_entropy"] = subtract
        with contextlib.redirect_stdout(io.StringIO()):
            summary = detect_vae_anamolies.run_detection(str(weights), str(out / column), **kwargs)
        aurocs[column] = 100 * summary["auroc"]
    return aurocs


def markdown(dataset_name: str, rows: dict[str, dict[str, float]]) -> str:
    scores = list(COLUMNS)
    headings = [f"`{s}`" for s in detect_vae_anamolies.SCORES] + ["SPEC's BCE (`reconstruction`, no correction)"]
    lines = [
        f"| {dataset_name} class | " + " | ".join(headings) + " | train s |",
        "|---" * (len(scores) + 2) + "|",
    ]
    for label, row in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[s]:.1f}" for s in scores) + f" | {row['seconds']:.0f} |")
    means = {s: float(np.mean([row[s] for row in rows.values()])) for s in scores}
    lines.append("| **mean** | " + " | ".join(f"**{means[s]:.1f}**" for s in scores) + " | |")
    if len(rows) == len(CLASSES[dataset_name]):  # the baselines are means over every class
        for name, value in BASELINES[dataset_name].items():
            lines.append(f"| {name} | " + " | ".join(f"{value:.1f}" for _ in scores) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, default=REPO.parent / "shared" / "data", help="holds MNIST/ and cifar10/{train,test}/"
    )
    parser.add_argument("--datasets", default="mnist,cifar10", help="comma-separated: mnist, cifar10")
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all ten)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per class (default: main_vae.py's)")
    parser.add_argument("--max-samples", type=int, default=None, help="train on the first N images (smoke runs)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/oneclass"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    for name in datasets:
        require(name in CLASSES, f"unknown data set '{name}': use mnist or cifar10")

    results: dict[str, dict] = {}
    tables = []
    for name in datasets:
        labels = CLASSES[name] if args.classes is None else tuple(c.strip() for c in args.classes.split(","))
        rows = {}
        for label in labels:
            model, dataset, trainer = run_configs(name, label, args)
            began = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run = train_vae(VAE, model, dataset, trainer)  # quiet: its progress bars and epoch lines
            seconds = sum(row["seconds"] for row in run.history)
            rows[label] = {**score_class(Path(trainer["output_dir"]) / "vae.pt", run.output_dir, args)}
            rows[label]["seconds"] = seconds
            took = time.perf_counter() - began
            print(
                f"{name} {label}: "
                + ", ".join(f"{s} {v:.1f}" for s, v in rows[label].items() if s != "seconds")
                + f" (trained {seconds:.0f} s, {took:.0f} s in all)",
                flush=True,
            )
        results[name] = rows
        tables.append(markdown(name, rows))
    epochs = args.epochs if args.epochs is not None else main_vae.trainer_kwargs["num_epochs"]
    header = (
        f"One-class AUROC (%) by score, main_vae.py's defaults ({epochs} epochs per class), "
        f"detect_vae_anamolies.py --anomaly classes; torch {torch.__version__}"
    )
    text = header + "\n\n" + "\n\n".join(tables) + "\n"
    print("\n" + text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "oneclass.md").write_text(text)
    (args.output_dir / "oneclass.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    run_cli(main)
