"""The classifier behind the quality metrics: which one a data set gets, training it once, and its cache.

A classifier is trained on the real training split the first time a run needs it and cached as
`<name>_classifier.pt`, with a .json of its test accuracy beside it, in the first of:
- `$CLASSIFIER_CACHE_DIR/<the data folder's path, as one name>` if that environment variable is set;
- `<root>/classifiers` (for an image folder `<root>/../classifiers`: a subfolder would become a class)
  where that may be written; a data folder whose permission bits deny writing (a shared read-only
  copy) is left alone, even by root;
- else `~/.cache/gan-quality-classifiers/<the data folder's path, as one name>` ($XDG_CACHE_HOME if set).
A classifier already in `<root>/classifiers` is read from there even where that folder is read-only.
A cached file is reused only if it was trained on the same kind of data with the same budget.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from datasets import held_out_folder, load_images, to_float
from models import SmallCNN
from utils import UserError, load_model, require, save_model, write_json

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Recipe:
    """Network and training budget of one data set's classifier (tuned for a CPU core or two)."""

    image_shape: tuple[int, int, int]
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 2
    augment: bool = False  # random crops and flips: CIFAR-10's small net overfits without them


RECIPES = {
    # 99.1% test accuracy after 2 epochs.
    "mnist": Recipe((1, 28, 28), {"widths": [16, 32], "feature_dim": 128}, epochs=2),
    "fashion_mnist": Recipe((1, 28, 28), {"widths": [16, 32], "feature_dim": 128}, epochs=4),
    # ~77% after 10 epochs.
    "cifar10": Recipe((3, 32, 32), {"widths": [16, 32, 64], "feature_dim": 256}, epochs=10, augment=True),
}


class Unsupported(Exception):
    """No classifier for this data: the generator metrics are skipped (with a note), the run goes on."""


@dataclass(frozen=True)
class DataSource:
    """Where one data set's classifier gets its data and where it is cached."""

    name: str  # a key of RECIPES
    dataset_type: str
    train_root: str
    test_root: str  # differs from train_root only for an image folder (its sibling test/ folder)
    cache_dir: Path
    shared_dir: Path | None = None  # the data's own classifiers/ folder where it is not cache_dir (read-only)

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.name]

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / f"{self.name}_classifier.pt"


def data_source(dataset: dict, cache_dir: str | Path | None = None) -> DataSource:
    """The classifier data of a run's dataset kwargs; raises Unsupported for data it has no classifier for.

    MNIST, Fashion-MNIST and CIFAR-10 are supported, the latter also as an image folder whose class
    folders are CIFAR-10's ten (e.g. cifar10/train, with its test split in cifar10/test).
    """
    dataset_type = dataset.get("dataset_type", "mnist")
    root = Path(dataset.get("root", "data"))
    if dataset_type in RECIPES:
        cache = Path(cache_dir or default_cache_dir(root))
        return DataSource(dataset_type, dataset_type, str(root), str(root), cache, _shared(root, cache))
    if dataset_type != "image_folder":
        raise Unsupported(f"no classifier for dataset_type '{dataset_type}'")
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if tuple(names) != CIFAR10_CLASSES:
        raise Unsupported(f"the image folder '{root}' does not hold CIFAR-10's ten classes")
    test_root = held_out_folder(root)
    if test_root is None:
        raise Unsupported(f"the image folder '{root}' has no test split beside it (a train/ and a test/ folder)")
    cache = Path(cache_dir or default_cache_dir(root.parent))
    return DataSource("cifar10", "image_folder", str(root), str(test_root), cache, _shared(root.parent, cache))


def _shared(data_folder: Path, cache: Path) -> Path | None:
    beside = data_folder / "classifiers"
    return beside if beside.is_dir() and beside != cache else None


def default_cache_dir(data_folder: Path) -> Path:
    """Where the classifier of the data in `data_folder` is cached (see the module's docstring)."""
    chosen = os.environ.get("CLASSIFIER_CACHE_DIR")
    beside = data_folder / "classifiers"
    if not chosen and (_may_write(beside) or (not beside.exists() and _may_write(data_folder))):
        return beside
    base = Path(chosen) if chosen else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    # One subfolder per data folder: classifiers of different data never share a file.
    slug = re.sub(r"[^A-Za-z0-9]+", "_", str(data_folder.resolve())).strip("_")
    return base / ("" if chosen else "gan-quality-classifiers") / slug


def _may_write(folder: Path) -> bool:
    # os.access says yes to root everywhere: the permission bits tell what the folder's owner intends.
    write_bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    return folder.is_dir() and bool(folder.stat().st_mode & write_bits) and os.access(folder, os.W_OK)


def load_split(source: DataSource, train: bool, max_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images at the classifier's shape and their labels."""
    root = source.train_root if train else source.test_root
    return load_images(
        source.dataset_type, root, train=train, image_shape=source.recipe.image_shape, max_samples=max_samples
    )


# ---------------------------------------------------------------------------- cache

_IN_MEMORY: dict[tuple, tuple[SmallCNN, dict]] = {}  # classifiers whose cache folder could not be written


def get_classifier(
    source: DataSource,
    device: torch.device | str = "cpu",
    epochs: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[SmallCNN, dict]:
    """The cached classifier (in eval mode) and its record (test accuracy, budget); trained first if need be.

    `epochs` (default: the recipe's) and `max_samples` set the training budget: tests use tiny ones.
    """
    epochs = epochs or source.recipe.epochs
    budget = {"dataset_type": source.dataset_type, "epochs": epochs, "max_samples": max_samples, "seed": seed}
    key = (str(source.cache_path.resolve()), tuple(budget.values()))
    if key in _IN_MEMORY:
        model, record = _IN_MEMORY[key]
        return model.to(device).eval(), record
    cached = _read_cache(source.cache_path, budget)
    if cached is None and source.shared_dir is not None:  # e.g. a read-only copy shipped with the data
        cached = _read_cache(source.shared_dir / source.cache_path.name, budget)
    if cached is not None:
        return cached[0].to(device).eval(), cached[1]
    model, record = train_classifier(source, device, epochs, max_samples, seed)
    if _write_cache(model, record, source.cache_path):
        print(f"classifier cached in {source.cache_path}")
    else:
        _IN_MEMORY[key] = (model, record)
        print(f"note: cannot write '{source.cache_dir}': the classifier is kept in memory for this process only")
    return model.eval(), record


def _read_cache(path: Path, budget: dict) -> tuple[SmallCNN, dict] | None:
    if not path.is_file():
        return None
    try:
        model = load_model(path, kinds=("SmallCNN",))
        record = dict(torch.load(path, map_location="cpu", weights_only=True)["meta"])
    except (UserError, KeyError, TypeError) as error:
        print(f"note: retraining the classifier: cannot use '{path}' ({str(error)[:120]})")
        return None
    if {k: record.get(k) for k in budget} != budget:
        print(f"note: retraining the classifier: '{path}' was trained on other data or with another budget")
        return None
    return model, record


def _write_cache(model: SmallCNN, record: dict, path: Path) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError:
        return False
    save_model(model, path, **record)
    write_json(record, path.with_suffix(".json"))
    return True


# ---------------------------------------------------------------------------- training


def train_classifier(
    source: DataSource,
    device: torch.device | str = "cpu",
    epochs: int | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 128,
) -> tuple[SmallCNN, dict]:
    """Train the data set's classifier on its training split; returns it and its record (test accuracy etc.).

    Runs on its own RNG state, so that a training run that needs it mid-way keeps its random stream.
    """
    recipe = source.recipe
    epochs = epochs or recipe.epochs
    device = torch.device(device)
    train_images, train_labels = load_split(source, True, max_samples)
    test_images, test_labels = load_split(source, False)
    require(len(train_images) > 0 and len(test_images) > 0, f"no images to train the {source.name} classifier on")
    print(
        f"training the {source.name} classifier for the quality metrics, once: {epochs} epochs, "
        f"{len(train_images)} images (about 1 min for MNIST, 10 min for CIFAR-10 on 2 CPU cores); "
        "later runs reuse it"
    )
    began = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = SmallCNN(*recipe.image_shape[:2], **recipe.model_kwargs).to(device)
        rng = torch.Generator().manual_seed(seed)
        steps_per_epoch = -(-len(train_images) // batch_size)
        optimizer = torch.optim.Adam(model.parameters(), 2e-3)
        # One-cycle schedule: the short budget reaches a good accuracy without tuning.
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * steps_per_epoch)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(train_images), generator=rng)
            for i in range(steps_per_epoch):
                index = order[i * batch_size : (i + 1) * batch_size]
                x = to_float(train_images[index], normalize=False)
                if recipe.augment:
                    x = augment(x, rng)
                loss = F.cross_entropy(model(x.to(device)), train_labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    accuracy = compute_accuracy(model, test_images, test_labels)
    seconds = time.perf_counter() - began
    print(f"{source.name} classifier: test accuracy {accuracy:.2%} after {seconds:.0f} s")
    record = {
        "data": source.name,
        "dataset_type": source.dataset_type,
        "train_root": str(Path(source.train_root).resolve()),
        "test_accuracy": round(accuracy, 5),
        "seconds": round(seconds, 1),
        "num_train": len(train_images),
        "num_test": len(test_images),
        "epochs": epochs,
        "max_samples": max_samples,
        "seed": seed,
    }
    return model, record


def augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random 32x32 crops of the image padded by 4 (reflected), per image."""
    n, c, h, w = x.shape
    flip = torch.rand(n, generator=rng) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    pad = 4
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = torch.randint(0, 2 * pad + 1, (n, 1), generator=rng) + torch.arange(h)
    cols = torch.randint(0, 2 * pad + 1, (n, 1), generator=rng) + torch.arange(w)
    return padded[
        torch.arange(n).view(n, 1, 1, 1),
        torch.arange(c).view(1, c, 1, 1),
        rows.view(n, 1, h, 1),
        cols.view(n, 1, 1, w),
    ]


@torch.no_grad()
def compute_accuracy(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        x = to_float(images[i : i + batch_size], normalize=False).to(device)
        correct += (model(x).argmax(1).cpu() == labels[i : i + batch_size]).sum().item()
    return correct / len(images)
