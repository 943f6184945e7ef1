"""Small-data benchmark: the GANs on a few thousand images, with augment none, diffaugment and ada.

    python benchmarks/small_data.py --root ../shared/data                        # every row
    python benchmarks/small_data.py --root ../shared/data --runs dcgan_1000      # one data set
    python benchmarks/small_data.py --root ../shared/data --epochs 2 --runs gan_1000   # a smoke run
    python benchmarks/small_data.py --root ../shared/data --runs dcgan_1000 --seeds 0,1,2   # the noise too

Data sets (each with every value of `augment`, at the same number of images shown):
    dcgan_1000  main_dcgan.py on the first 100 images of each CIFAR-10 class (1,000; class folders),
                100 epochs
    dcgan_5000  the first 500 of each class (5,000), 20 epochs (the same 100,000 images shown)
    gan_1000    main_gan.py on the first 1,000 MNIST training digits, 100 epochs

Every run starts from its main script's kwargs dicts (the SPEC's models, batch 16, lr 2e-4) and
differs from the others in `augment` only. Quality is the Fréchet distance in the in-domain
classifier's features (trainers/metrics.py): 10,000 generated images against the whole test split
(10,000 images, every class), at every `eval_every`-th epoch. The table gives the best and the final
FD, the final FD as a ratio of augment none's at the same seed, the last r_t and probability, and the
minutes. With several `--seeds`, a second table gives each row's mean and standard deviation over them.

Writes <output-dir>/<data set>_<augment>_seed<seed>/ (each run's usual files), <output-dir>/small_data.md
and .json (the tables and the FD curves) and <output-dir>/<data set>_fd.png (the curves: the mean over the
seeds, and their range). A run that is already there resumes or, finished, is read as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/small_data.py` as well as `python -m benchmarks.small_data`
    sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import main_dcgan  # noqa: E402
import main_gan  # noqa: E402
from models import DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator  # noqa: E402
from trainers import train_gan  # noqa: E402
from trainers.augment import AUGMENTS  # noqa: E402
from utils import require, run_cli  # noqa: E402

# The two best settings over seven seeds on dcgan_1000 (docs/results.md), beside the default policy.
BEST = ("diffaugment:translation", "diffaugment:translation@bcr_weight=0.1")
# data set -> (script, images per class or in all, epochs, epochs between evaluations)
DATA_SETS = {
    "dcgan_1000": ("dcgan", 100, 100, 10),
    "dcgan_5000": ("dcgan", 500, 20, 2),
    "gan_1000": ("gan", 1000, 100, 10),
}


def cifar_subset(root: Path, per_class: int, folder: Path) -> Path:
    """<folder>/train holding links to the first `per_class` images (by file name) of each CIFAR-10 class,
    beside a link to the whole test split and to the data's classifiers; returns the train folder."""
    source = root / "cifar10"
    require((source / "train").is_dir(), f"no CIFAR-10 images in '{source}/train': set --root to ../shared/data")
    train = folder / "train"
    for class_dir in sorted(p for p in (source / "train").iterdir() if p.is_dir()):
        target = train / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            link = target / image.name
            if not link.exists():
                with contextlib.suppress(FileExistsError):  # another run building the same folder at once
                    link.symlink_to(image.resolve())
    for name in ("test", "classifiers"):  # the whole test split; the classifier trained on all 50,000
        if (source / name).exists() and not (folder / name).exists():
            with contextlib.suppress(FileExistsError):
                (folder / name).symlink_to((source / name).resolve())
    return train


def row_keys(augment: str) -> dict:
    """The trainer keys a row names: kind[:op+op][@key=value...], e.g. diffaugment:translation@lecam_weight=0.1."""
    spec, *extras = augment.split("@")
    kind, _, policy = spec.partition(":")
    keys = {"augment": kind, **({"augment_policy": policy.replace("+", ",")} if policy else {})}
    for extra in extras:
        key, _, value = extra.partition("=")
        require(bool(key and value), f"'{extra}' in '{augment}' is not key=value")
        try:
            keys[key] = json.loads(value)  # numbers and true/false
        except ValueError:
            keys[key] = value  # a word: cosine
    return keys


def configure(name: str, augment: str, seed: int, args: argparse.Namespace) -> tuple:
    """(generator class, discriminator class, model, dataset and trainer kwargs) of one run. `augment` is a
    value of the key, or kind:policy with + between the operations (diffaugment:translation+flip), and any
    other trainer keys after @ (row_keys)."""
    script, count, epochs, eval_every = DATA_SETS[name]
    folder = augment
    for mark in ":+@=":
        folder = folder.replace(mark, "_")
    trainer = {
        "num_epochs": args.epochs or epochs,
        "eval_every": args.eval_every or eval_every,
        **row_keys(augment),
        "output_dir": str(args.output_dir / f"{name}_{folder}_seed{seed}"),
        "seed": seed,
        "device": args.device,
        "num_threads": args.threads,
        **args.trainer,
    }
    if script == "gan":
        dataset = {**copy.deepcopy(main_gan.dataset_kwargs), "root": str(args.root), "max_samples": count}
        trainer = {**copy.deepcopy(main_gan.trainer_kwargs), **trainer}
        return FCGenerator, FCDiscriminator, copy.deepcopy(main_gan.mnist_model_kwargs), dataset, trainer
    folder = cifar_subset(args.root, count, args.output_dir / "data" / f"cifar10_{count}_per_class")
    dataset = {**copy.deepcopy(main_dcgan.dataset_kwargs), "dataset_type": "image_folder", "root": str(folder)}
    trainer = {**copy.deepcopy(main_dcgan.trainer_kwargs), **trainer}
    return DCGANGenerator, DCGANDiscriminator, copy.deepcopy(main_dcgan.model_kwargs), dataset, trainer


def summarise(name: str, augment: str, seed: int, run) -> dict:
    fds = [(row["epoch"], row["frechet_distance"]) for row in run.metrics if "frechet_distance" in row]
    require(bool(fds), f"{name}_{augment}: no Fréchet distance was measured (no classifier for its data?)")
    best = min(fds, key=lambda item: item[1])
    last = run.history[-1]
    return {
        "data": name,
        "augment": augment,
        "seed": seed,
        "images": len(run.loader.labels),
        "epochs": run.epoch,
        "images_shown": run.epoch * len(run.loader.labels),
        "fd_curve": fds,
        "fd_best": best[1],
        "best_epoch": best[0],
        "fd_final": fds[-1][1],
        "recall_final": run.metrics[-1].get("recall"),
        "r_t": last.get("r_t"),
        "augment_p": last.get("augment_p"),
        "minutes": sum(row["seconds"] for row in run.history) / 60,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| data | augment | seed | images shown | FD best (epoch) | FD final | final / none | recall | r_t | p | min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row.get("ratio") is not None else ""
        optional = [f"{row[k]:.3g}" if row[k] is not None else "" for k in ("recall_final", "r_t", "augment_p")]
        lines.append(
            f"| {row['data']} ({row['images']}) | {row['augment']} | {row['seed']} | {row['images_shown']:,} | "
            f"{row['fd_best']:.1f} ({row['best_epoch']}) | {row['fd_final']:.1f} | {ratio} | "
            f"{' | '.join(optional)} | {row['minutes']:.1f} |"
        )
    return "\n".join(lines)


def add_ratios(rows: list[dict]) -> None:
    """Each row's final FD as a ratio of augment none's on the same data at the same seed, where it ran."""
    none = {(row["data"], row["seed"]): row["fd_final"] for row in rows if row["augment"] == "none"}
    for row in rows:
        reference = none.get((row["data"], row["seed"]))
        row["ratio"] = row["fd_final"] / reference if reference else None


def _mean_sd(values: list[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def seed_table(rows: list[dict]) -> str:
    """Mean ± standard deviation over the seeds of each data set and augment."""
    lines = [
        "| data | augment | seeds | FD best | FD final | final / none |",
        "|---|---|---|---|---|---|",
    ]
    for data, augment in dict.fromkeys((row["data"], row["augment"]) for row in rows):
        group = [row for row in rows if (row["data"], row["augment"]) == (data, augment)]
        ratios = [row["ratio"] for row in group if row["ratio"] is not None]
        lines.append(
            f"| {data} | {augment} | {','.join(str(row['seed']) for row in group)} | "
            f"{_mean_sd([row['fd_best'] for row in group])} | {_mean_sd([row['fd_final'] for row in group])} | "
            f"{_mean_sd(ratios, 2) if ratios else ''} |"
        )
    return "\n".join(lines)


def plot_curves(rows: list[dict], output_dir: Path) -> None:
    """Per data set, each augment's FD curve: the mean over its seeds, their range shaded."""
    for name in dict.fromkeys(row["data"] for row in rows):
        fig, ax = plt.subplots(figsize=(6, 4))
        for augment in dict.fromkeys(row["augment"] for row in rows if row["data"] == name):
            group = [row for row in rows if (row["data"], row["augment"]) == (name, augment)]
            epochs = [epoch for epoch, _ in group[0]["fd_curve"]]
            curves = np.array([[fd for _, fd in row["fd_curve"]] for row in group])  # the same epochs in each
            finals = [row["fd_final"] for row in group]
            label = f"{augment} (final {np.mean(finals):.1f}{f', {len(group)} seeds' if len(group) > 1 else ''})"
            (line,) = ax.plot(epochs, curves.mean(0), "o-", label=label)
            if len(curves) > 1:
                ax.fill_between(epochs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        ax.set(
            xlabel="epoch", ylabel="Fréchet distance (classifier features)", title=f"{name}: FD against the test set"
        )
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(output_dir / f"{name}_fd.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", default=",".join(DATA_SETS), help="data sets, comma-separated")
    parser.add_argument(
        "--augments",
        default=",".join([*AUGMENTS, *BEST]),
        help="values of augment, comma-separated; kind:op+op gives a policy too",
    )
    parser.add_argument("--epochs", type=int, default=None, help="instead of each data set's own")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "small_data")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated: each run at each of them")
    parser.add_argument("--threads", default="auto")
    parser.add_argument(
        "--trainer", type=json.loads, default={}, help="more trainer keys, as JSON: '{\"ada_kimg\": 20}'"
    )
    args = parser.parse_args(argv)
    args.threads = int(args.threads) if args.threads.isdigit() else args.threads
    names, augments = args.runs.split(","), args.augments.split(",")
    for name in names:
        require(name in DATA_SETS, f"unknown run '{name}': use some of {', '.join(DATA_SETS)}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows = []
    for name in names:
        for seed in seeds:
            for augment in augments:
                run = train_gan(*configure(name, augment, seed, args))
                rows.append(summarise(name, augment, seed, run))
                add_ratios(rows)
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    if len(seeds) > 1:
        text += "\n\nMean ± standard deviation over the seeds:\n\n" + seed_table(rows)
    print("\n" + text)
    print("\nFD: 10,000 generated images against the 10,000 test images, in the in-domain classifier's features.")
    (args.output_dir / "small_data.md").write_text(text + "\n")
    (args.output_dir / "small_data.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot_curves(rows, args.output_dir)


if __name__ == "__main__":
    run_cli(main)
