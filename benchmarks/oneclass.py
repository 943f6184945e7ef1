"""One-class anomaly detection benchmark: train the VAE on one class, flag the test set's other classes.

    python benchmarks/oneclass.py --root ../shared/data
    python benchmarks/oneclass.py --root ../shared/data --datasets mnist --classes 2,8 --epochs 5  # a quick look
    python benchmarks/oneclass.py --datasets cifar10 --variants conv:bernoulli,conv:logistic  # likelihoods compared

The standard protocol of Deep SVDD (Ruff et al., 2018) and OCGAN (Perera et al., 2019): for each
class, train on that class's training images only, score every test image, and report the AUROC
of "not that class". Each run is the user's flow at the scripts' defaults: main_vae.py's kwargs
dicts with `classes` set to the one class, then detect_vae_anamolies.py with `anomaly` "classes",
once per `score` (reconstruction, elbo, nll, typicality, each less the pixel entropy as the script
does by default) and once with the SPEC's plain reconstruction BCE (`subtract_pixel_entropy` False).
MNIST is read from <root>/MNIST; CIFAR-10 from the image folder <root>/cifar10/train (its test
split: cifar10/test): the fully-connected VAE (`fc`) sees 32x32 grey images, the convolutional one
(`conv`) the colour images. A variant is an architecture, optionally with a likelihood
(`conv:logistic`); without one, main_vae.py's.

Writes each class's run to <output-dir>/<dataset>/<variant>/<class>/ (a finished run is reused: delete
the folder to retrain) and the tables to <output-dir>/oneclass.md and oneclass.json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
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
from models import VAE_ARCHITECTURES  # noqa: E402
from models.likelihoods import LIKELIHOODS  # noqa: E402
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
    "typicality": ("typicality", True),
    "spec": ("reconstruction", False),
}


def run_configs(dataset_name: str, variant: str, label: str, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """main_vae.py's dicts as they are, for one class of one data set and one variant."""
    model = copy.deepcopy(main_vae.mnist_model_kwargs)
    architecture, _, likelihood = variant.partition(":")
    model["architecture"] = architecture
    if likelihood:
        model["likelihood"] = likelihood
    dataset = copy.deepcopy(main_vae.dataset_kwargs)
    trainer = copy.deepcopy(main_vae.trainer_kwargs)
    if dataset_name == "mnist":
        dataset.update(dataset_type="mnist", root=str(args.root), classes=[int(label)])
    else:
        dataset.update(dataset_type="image_folder", root=str(args.root / "cifar10" / "train"), classes=[label])
        model["image_size"] = 32 * 32
    dataset["max_samples"] = args.max_samples
    out = args.output_dir / dataset_name / variant.replace(":", "_") / label
    trainer.update(output_dir=str(out), seed=args.seed, device=args.device)
    trainer["eval_every"] = None
    if args.epochs is not None:
        trainer["num_epochs"] = args.epochs
    return model, dataset, trainer


def score_class(weights: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """AUROC (%) of each column's score for the held-out classes, by detect_vae_anamolies.py at its defaults."""
    aurocs = {}
    for column in args.columns.split(","):
        score, subtract = COLUMNS[column]
        kwargs = {**detect_vae_anamolies.anomaly_kwargs, "anomaly": "classes", "score": score, "device": args.device}
        kwargs["subtract_pixel_entropy"] = subtract
        with contextlib.redirect_stdout(io.StringIO()):
            summary = detect_vae_anamolies.run_detection(str(weights), str(out / column), **kwargs)
        aurocs[column] = 100 * summary["auroc"]
    return aurocs


def markdown(dataset_name: str, variant: str, rows: dict[str, dict[str, float]]) -> str:
    scores = [column for column in COLUMNS if all(column in row for row in rows.values())]
    names = {"spec": "`reconstruction`, no entropy correction (Bernoulli: the SPEC's BCE)"}
    headings = [names.get(column, f"`{column}`") for column in scores]
    bpd = all("test_nll_iw_bpd" in row for row in rows.values())  # a discrete likelihood: -log p(x) in bits/dim
    lines = [
        f"| {dataset_name} class, `{variant}` | "
        + " | ".join(headings)
        + (" | test bits/dim" if bpd else "")
        + " | train s |",
        "|---" * (len(scores) + 2 + bpd) + "|",
    ]
    for label, row in rows.items():
        extra = f" | {row['test_nll_iw_bpd']:.3f}" if bpd else ""
        lines.append(
            f"| {label} | " + " | ".join(f"{row[s]:.1f}" for s in scores) + f"{extra} | {row['seconds']:.0f} |"
        )
    means = {s: float(np.mean([row[s] for row in rows.values()])) for s in scores}
    extra = f" | **{np.mean([row['test_nll_iw_bpd'] for row in rows.values()]):.3f}**" if bpd else ""
    lines.append("| **mean** | " + " | ".join(f"**{means[s]:.1f}**" for s in scores) + extra + " | |")
    if len(rows) == len(CLASSES[dataset_name]):  # the baselines are means over every class
        for name, value in BASELINES[dataset_name].items():
            lines.append(f"| {name} | " + " | ".join(f"{value:.1f}" for _ in scores) + (" |" if bpd else "") + " | |")
    return "\n".join(lines)


def folder_check(variant: str, args: argparse.Namespace) -> dict:
    """The user's question on a folder: 100 MNIST test 7s with 5 test 3s and 5 noise images mixed in, scored
    by a VAE trained on 7s for 5 epochs; precision at 10 of detect_vae_anamolies.py's folder_scores.csv."""
    from PIL import Image

    from datasets import load_images

    folder = args.output_dir / "folder_check" / "images"
    if not folder.is_dir():
        images, labels = load_images("mnist", str(args.root), train=False)
        folder.mkdir(parents=True)
        picks = [(i, "normal") for i in (labels == 7).nonzero().flatten()[:100].tolist()]
        picks += [(i, "odd") for i in (labels == 3).nonzero().flatten()[:5].tolist()]
        for i, kind in picks:
            Image.fromarray(images[i, 0].numpy()).save(folder / f"test_{i:05d}_{kind}.png")
        noise = np.random.default_rng(args.seed).integers(0, 256, (5, 28, 28), dtype=np.uint8)
        for k, image in enumerate(noise):
            Image.fromarray(image).save(folder / f"noise_{k}_odd.png")
    model, dataset, trainer = run_configs("mnist", variant, "7", args)
    trainer.update(output_dir=str(args.output_dir / "folder_check" / variant.replace(":", "_")), num_epochs=5)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run = train_vae(VAE_ARCHITECTURES, model, dataset, trainer)
    kwargs = {**detect_vae_anamolies.anomaly_kwargs, "images": str(folder), "device": args.device}
    with contextlib.redirect_stdout(io.StringIO()):
        summary = detect_vae_anamolies.run_detection(
            str(run.output_dir / "vae.pt"), str(run.output_dir / "check"), **kwargs
        )
    top = summary["most_anomalous"][:10]
    result = {"precision_at_10": sum(name.endswith("_odd.png") for name in top) / 10, "top_10": top}
    print(f"folder check, {variant}: precision at 10 {result['precision_at_10']:.1f} ({', '.join(top)})", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root", type=Path, default=REPO.parent / "shared" / "data", help="holds MNIST/ and cifar10/{train,test}/"
    )
    parser.add_argument("--datasets", default="mnist,cifar10", help="comma-separated: mnist, cifar10")
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all ten)")
    parser.add_argument("--variants", default="fc,conv", help="comma-separated architectures[:likelihood]")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per class (default: main_vae.py's)")
    parser.add_argument("--max-samples", type=int, default=None, help="train on the first N images (smoke runs)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/oneclass"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", default=",".join(COLUMNS), help=f"scores to tabulate, of {', '.join(COLUMNS)}")
    parser.add_argument("--folder-check", action="store_true", help="only the folder of 7s with 3s and noise")
    args = parser.parse_args(argv)
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    for name in datasets:
        require(name in CLASSES, f"unknown data set '{name}': use mnist or cifar10")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for column in args.columns.split(","):
        require(column in COLUMNS, f"unknown column '{column}': use {', '.join(COLUMNS)}")
    for variant in variants:
        architecture, _, likelihood = variant.partition(":")
        require(
            architecture in VAE_ARCHITECTURES,
            f"unknown architecture in '{variant}': use {', '.join(VAE_ARCHITECTURES)}",
        )
        require(
            not likelihood or likelihood in LIKELIHOODS,
            f"unknown likelihood in '{variant}': use {', '.join(LIKELIHOODS)}",
        )

    if args.folder_check:
        return {variant: folder_check(variant, args) for variant in variants}
    results: dict[str, dict] = {}
    tables = []
    for name, variant in itertools.product(datasets, variants):
        labels = CLASSES[name] if args.classes is None else tuple(c.strip() for c in args.classes.split(","))
        rows = {}
        for label in labels:
            model, dataset, trainer = run_configs(name, variant, label, args)
            began = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                run = train_vae(VAE_ARCHITECTURES, model, dataset, trainer)  # quiet: progress bars, epoch lines
            seconds = sum(row["seconds"] for row in run.history)
            rows[label] = {**score_class(Path(trainer["output_dir"]) / "vae.pt", run.output_dir, args)}
            rows[label]["seconds"] = seconds
            bpd = {k: v for k, v in run.metrics[-1].items() if k.endswith("_bpd")} if run.metrics else {}
            rows[label].update(bpd)
            took = time.perf_counter() - began
            print(
                f"{name} {variant} {label}: "
                + ", ".join(
                    f"{s} {v:.2f}" if s.endswith("_bpd") else f"{s} {v:.1f}"
                    for s, v in rows[label].items()
                    if s != "seconds"
                )
                + f" (trained {seconds:.0f} s, {took:.0f} s in all)",
                flush=True,
            )
        results[f"{name} {variant}"] = rows
        tables.append(markdown(name, variant, rows))
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
