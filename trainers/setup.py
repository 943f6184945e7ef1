"""Checks and builds everything a run needs, before any work: the one place kwargs dicts are read."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from datasets import as_class_list, count_classes, make_loader
from trainers import distributed
from utils import (
    SEED_RANGE,
    UserError,
    available_memory,
    check_kwargs,
    keyword_defaults,
    pick_device,
    require,
    seed_everything,
    unknown_key,
)


def check_output_dir(path: str) -> None:
    """output_dir can be made and written, checked without making it: a run refused later leaves nothing."""
    folder = Path(path)
    require(str(path) != "", "output_dir is empty: name a folder for the results")
    for part in folder.parts:  # a name the file system would refuse
        require(len(part.encode()) <= 255, f"output_dir has a name of {len(part.encode())} bytes: use at most 255")
    try:
        require(not folder.exists() or folder.is_dir(), f"output_dir '{folder}' is a file: choose a folder")
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        require(existing.is_dir(), f"cannot write to output_dir '{folder}': '{existing}' is a file; choose a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"cannot write to output_dir '{folder}' ({error.strerror}): choose a writable folder") from None


def make_output_dir(path: str | Path) -> Path:
    """check_output_dir, then the folder made: for the analysis scripts, which write at once."""
    check_output_dir(str(path))
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def check_positive(kwargs: dict, keys: list[str], dict_name: str) -> None:
    for key in keys:
        value = kwargs.get(key)
        require(value is None or value > 0, f"{dict_name}['{key}'] must be positive, got {value!r}")


def build_models(
    classes: dict[str, Callable[..., nn.Module]], model_kwargs: dict, dict_name: str
) -> dict[str, nn.Module]:
    """Give each model class the keys of `model_kwargs` its constructor takes; every key must fit one."""
    accepted = {name: keyword_defaults(cls) for name, cls in classes.items()}
    known = list(dict.fromkeys(key for keys in accepted.values() for key in keys))
    for key in model_kwargs:
        if key not in known:
            raise unknown_key(key, known, dict_name)
    models = {}
    for name, cls in classes.items():
        kwargs = {k: v for k, v in model_kwargs.items() if k in accepted[name]}
        check_kwargs(kwargs, cls, dict_name)
        # Sizes must be positive; layer counts are the models' to check (a generator may have none).
        sizes = [k for k, v in kwargs.items() if type(v) is int and not k.endswith("_layers")]
        check_positive(kwargs, sizes, dict_name)
        try:
            with torch.device("meta"):  # sizes only, no memory: a network that cannot fit is refused first
                probe = cls(**kwargs)
        except ValueError as error:
            raise UserError(f"{dict_name}: {error}") from None
        training_bytes = 16 * sum(p.numel() for p in probe.parameters())  # weights, gradients, Adam's two moments
        free = available_memory()
        require(
            training_bytes < free,
            f"{dict_name} ask for a {cls.__name__} that needs about {training_bytes / 2**30:.1f} GiB to train, more "
            f"than the {free / 2**30:.1f} GiB free here: use smaller sizes",
        )
        models[name] = cls(**kwargs)
    return models


def prepare_run(
    model_classes: dict[str, Callable[..., nn.Module]],
    model_kwargs: dict,
    dataset_kwargs: dict,
    trainer_class: type,
    trainer_kwargs: dict,
    model_dict_name: str = "model_kwargs",
) -> tuple[dict[str, nn.Module], dict, dict, torch.device]:
    """Validate the three kwargs dicts, seed, build the models; return (models, dataset, trainer kwargs, device).

    Under torchrun the process then joins the process group (trainers/distributed.py): every rank
    builds the same models from the seed, and draws its own noise after that."""
    dataset = check_kwargs(dataset_kwargs, make_loader, "dataset_kwargs")
    dataset["classes"] = as_class_list(dataset["classes"])  # saved with the weights in this form
    trainer = trainer_class.Settings.build(trainer_kwargs, "trainer_kwargs").as_config()
    require(
        dataset["in_memory"] in (True, False, "auto"),
        f"dataset_kwargs['in_memory'] must be True, False or 'auto', got {dataset['in_memory']!r}",
    )
    device = pick_device(trainer["device"])
    check_output_dir(trainer["output_dir"])
    seed_everything(trainer["seed"])
    models = build_models(model_classes, model_kwargs, model_dict_name)
    check_labels(model_kwargs.get("num_classes"), dataset, model_dict_name)
    device = distributed.start(device)
    if distributed.rank() > 0:  # rank 0 keeps the stream of a one-process run
        seed_everything((trainer["seed"] + 1_000_003 * distributed.rank()) % SEED_RANGE)
    return models, dataset, trainer, device


def check_labels(num_classes: int | None, dataset: dict, dict_name: str) -> None:
    """A class-conditional model (num_classes set) needs a data set with as many classes."""
    if num_classes is None:
        return
    count = count_classes(dataset["dataset_type"], dataset["root"])
    require(
        count > 0,
        f"{dict_name}['num_classes'] is {num_classes}, but '{dataset['root']}' holds its images without class "
        "subfolders: there are no labels to condition on; put each class in its own subfolder, or set num_classes None",
    )
    require(
        count == num_classes,
        f"{dict_name}['num_classes'] is {num_classes}, the data set has {count} classes: set num_classes to {count}",
    )


__all__ = ["prepare_run", "make_loader"]
