"""Small helpers shared by the scripts, trainers and analysis tools."""

from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import difflib
import gc
import inspect
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from models import MODELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class UserError(Exception):
    """A problem with the user's input or files: shown as one line, without a traceback."""


def run_cli(main: Callable[..., Any], *args: Any) -> None:
    """Run a script's main; turn a UserError into one line on stderr and exit status 2."""
    if getattr(main, "__module__", None) == "__main__":  # the script is the process: what exists now lives to exit
        # Torch's import makes many objects that every full garbage collection would walk again (later imports
        # trigger some, and the interpreter's last one at exit): frozen, the collections skip them.
        gc.freeze()
        atexit.register(gc.freeze)
    try:
        main(*args)
    except UserError as error:
        rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
        where = f"(rank {rank}) " if rank else ""  # under torchrun every process reports its error
        print(f"error: {where}{error}", file=sys.stderr)
        sys.exit(2)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


# ---------------------------------------------------------------------------- kwargs and CLI


def keyword_defaults(consumer: Callable) -> dict[str, Any]:
    """The keyword arguments (with defaults) of a function or class: the keys a kwargs dict may hold."""
    target = consumer.__init__ if inspect.isclass(consumer) else consumer
    params = inspect.signature(target).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def unknown_key(key: str, known: list[str], dict_name: str) -> UserError:
    close = difflib.get_close_matches(key, known, n=1)
    shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all; --help lists them)" if len(known) > 12 else "")
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {shown}"
    return UserError(f"unknown key '{key}' in {dict_name}: {hint}")


def check_kwargs(kwargs: dict, consumer: Callable, dict_name: str) -> dict:
    """Reject keys that `consumer` (a function or class) does not take, with a 'did you mean',
    and values that do not match its type hints. Returns the kwargs completed with its defaults."""
    defaults = keyword_defaults(consumer)
    hints = typing.get_type_hints(consumer.__init__ if inspect.isclass(consumer) else consumer)
    for key, value in kwargs.items():
        if key not in defaults:
            raise unknown_key(key, list(defaults), dict_name)
        check_type(value, hints.get(key), f"{dict_name}['{key}']")
    return {**defaults, **kwargs}


def check_type(value: Any, annotation: Any, name: str) -> None:
    """A one-line error where `value` is not of the type `annotation` (None: anything goes)."""
    if annotation is not None and not _matches(value, annotation):
        shown = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        raise UserError(f"{name} must be {shown}, got {value!r}")


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if typing.get_origin(annotation) is not None:  # list[int] -> list
        annotation = typing.get_origin(annotation)
    if annotation is type(None):
        return value is None
    if isinstance(value, bool) and annotation is not bool:
        return False
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(value, annotation)


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if text.lower() in ("true", "false"):  # resume: "auto", a path, or false
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string: a path, a name
    if isinstance(value, tuple):  # "1,7" -> [1, 7]
        value = list(value)
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    if isinstance(default, str) and not isinstance(value, (str, bool)):
        return text  # keeps "--output-dir 1" a string; bools pass for keys like resume ("auto" or False)
    return value


def key_comments(script: str) -> dict[str, str]:
    """The comment after each `"key": value,` line (and `name = value` line) of a script: what its keys mean."""
    pattern = re.compile(r"""^\s*(?:"(\w+)":|(\w+) =)[^#]*#\s*(.+)$""")
    with open(script, encoding="utf-8") as f:
        return {match[1] or match[2]: match[3].strip() for line in f if (match := pattern.match(line))}


def parse_overrides(
    description: str,
    dicts: dict[str, dict],
    argv: list[str] | None = None,
    script: str | None = None,
    declared: dict[str, Any] | None = None,
) -> None:
    """Let every key of the given kwargs dicts be overridden as --key-name VALUE (updates them in place).
    `script`: the file that defines the dicts; --help then shows the comment beside each key.
    `declared`: for a dict name, the settings class (trainers/keys.py) of its consumer: every key it
    declares is an option too, with its declared help and default where the dict leaves it out."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    comments = key_comments(script) if script else {}
    owner: dict[str, str] = {}
    for dict_name, kwargs in dicts.items():
        group = parser.add_argument_group(dict_name)
        keys = (declared or {}).get(dict_name)
        helps = {name: d.help for name, d in keys.declared().items()} if keys else {}
        options = (
            {**kwargs, **{name: d.default for name, d in keys.declared().items() if name not in kwargs}}
            if keys
            else kwargs
        )
        for key, default in options.items():
            owner[key] = dict_name
            group.add_argument(
                "--" + key.replace("_", "-"),
                dest=key,
                default=argparse.SUPPRESS,
                metavar=type(default).__name__.upper() if default is not None else "VALUE",
                type=lambda text, d=default: _parse_value(text, d),
                help=f"{helps.get(key) or comments.get(key, '')} (default: {default!r})".lstrip(),
            )
    parsed, unknown = parser.parse_known_args(argv)
    for word in unknown:  # --batch_size, --batch, --bach-size: one line, with the option meant
        if word.startswith("-"):
            options = ["--" + key.replace("_", "-") for key in owner]
            name = "--" + word.lstrip("-").split("=")[0].replace("_", "-")
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            prefixed = [option for option in options if option.startswith(name)]
            hint = close[0] if close else (prefixed[0] if len(prefixed) == 1 else None)
            raise UserError(f"unknown option {word}" + (f": did you mean {hint}?" if hint else ": --help lists them"))
    if unknown:
        raise UserError(f"unexpected argument {unknown[0]!r}: options take the form --key-name VALUE")
    for key, value in vars(parsed).items():
        dicts[owner[key]][key] = value


def analysis_main(
    description: str,
    paths: dict[str, str],
    kwargs_name: str,
    kwargs: dict,
    run: Callable[..., Any],
    argv: list[str] | None = None,
) -> Any:
    """The main of an analysis script: `paths` (weights_path, output_dir) and every key of its
    kwargs dict can be overridden from the command line; then `run(weights_path, output_dir, **kwargs)`."""
    paths, kwargs = dict(paths), dict(kwargs)  # the module's own dicts stay as written
    parse_overrides(description, {"paths": paths, kwargs_name: kwargs}, argv, inspect.getsourcefile(run))
    return run(paths["weights_path"], paths["output_dir"], **check_kwargs(kwargs, run, kwargs_name))


# ---------------------------------------------------------------------------- runtime


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is taken as a torch device name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    hint = "use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': {hint}") from None
    if device.type == "cuda":
        require(
            torch.cuda.is_available(), f"device '{name}' asked for, but CUDA is not available here: use 'auto' or 'cpu'"
        )
    if device.type == "mps":
        require(
            torch.backends.mps.is_available(),
            f"device '{name}' asked for, but MPS is not available here: use 'auto' or 'cpu'",
        )
    try:  # a device torch knows by name but cannot run on here (xpu, meta, ...)
        torch.ones(1, device=device).add_(1).cpu()
    except (RuntimeError, AssertionError, NotImplementedError):
        raise UserError(f"device '{name}' cannot run computations here: {hint}") from None
    return device


def figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure that draws to files only: no pyplot (no display, no global list of figures to
    close), and matplotlib is imported when a plot is first drawn."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def available_memory() -> float:
    """Bytes of memory free for new work (Linux's MemAvailable; elsewhere free pages, else unknown: inf)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return float("inf")


SEED_RANGE = 2**32  # NumPy's: seeds are checked against it where they are read, before any work


def seed_everything(seed: int) -> None:
    require(
        type(seed) is int and 0 <= seed < SEED_RANGE,
        f"seed must be a whole number from 0 to 2**32 - 1 (NumPy's range), got {seed!r}",
    )
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", staged: list | None = None) -> Iterator[IO]:
    """Open a file to write `path` with: a temp file beside it, fsynced and renamed over `path` when
    the block ends without error. A crash never leaves a torn file: `path` is the old one or the new.
    `staged`: append (temp, path) to it instead of renaming (`all_or_nothing` renames a set together).
    A failed write (a full disk, a quota) is one line naming the file and the free space."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode, newline=None if "b" in mode else "") as f:  # "": csv writes its own line ends
            os.chmod(tmp, 0o666 & ~_umask())  # as open() would make it: mkstemp's 0600 hides it from colleagues
            yield f
            f.flush()
            os.fsync(f.fileno())
        if staged is None:
            os.replace(tmp, path)
        else:
            staged.append((tmp, path))
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError from its zip writer
        if isinstance(error, OSError) or (isinstance(error, RuntimeError) and "PytorchStreamWriter" in str(error)):
            raise UserError(write_failure(path, error)) from None
        raise


def write_failure(path: Path, error: BaseException) -> str:
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[-1][:120]
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    return f"cannot write '{path}' ({reason}; {free}): free some space or choose another output_dir"


@contextlib.contextmanager
def all_or_nothing() -> Iterator[list]:
    """Write several files as one: pass the list this yields as `staged` to atomic_file, atomic_save or
    save_model; when the block ends without error every file replaces its target (SIGINT and SIGTERM wait
    for the renames), else none does and the earlier files stay as they were."""
    staged: list[tuple[str, Path]] = []
    try:
        yield staged
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    blocked = {signal.SIGINT, signal.SIGTERM}
    mask = getattr(signal, "pthread_sigmask", None)  # not on Windows
    if mask is not None:
        mask(signal.SIG_BLOCK, blocked)
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)  # left only where a rename failed
        if mask is not None:
            mask(signal.SIG_UNBLOCK, blocked)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path, staged: list | None = None) -> None:
    """torch.save that never leaves a torn file (`atomic_file`)."""
    with atomic_file(path, "wb", staged) as f:
        torch.save(obj, f)


def write_json(data: Any, path: str | Path, staged: list | None = None) -> None:
    with atomic_file(path, "w", staged) as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------- self-describing weights


def save_model(model: nn.Module, path: str | Path, staged: list | None = None, **meta: Any) -> None:
    """Save weights with what rebuilds them: the model's class name and constructor kwargs."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    record = {"kind": type(model).__name__, "kwargs": model.config, "state_dict": state, "meta": meta}
    atomic_save(record, path, staged)


def read_checkpoint(path: str | Path, what: str = "weights file") -> dict:
    """torch.load(weights_only=True) with one-line errors for a missing, unreadable or foreign file."""
    path = Path(path)
    require(str(path) not in ("", "."), f"no {what} given: set weights_path to a .pt file written by a main script")
    require(path.exists(), f"{what} '{path}' not found: train first (e.g. python main_gan.py) or fix the path")
    require(path.is_file(), f"{what} '{path}' is a folder: point at a .pt file inside it")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a torn or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cannot read {what} '{path}' (truncated, corrupt or not a PyTorch file): {reason[:200]}"
        ) from None
    require(isinstance(checkpoint, dict), f"{what} '{path}' is not a checkpoint written by this repository")
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu", kinds: tuple[str, ...] | None = None) -> nn.Module:
    """Rebuild a model saved by `save_model` and return it in eval mode.

    `kinds` restricts which model classes are acceptable (e.g. generators only).
    """
    return _build_model(read_checkpoint(path), path, device, kinds)


def load_trained(
    path: str | Path, device: str | torch.device, kinds: tuple[str, ...], purpose: str, suggestion: str
) -> tuple[nn.Module, dict]:
    """For the analysis scripts: the model in `path` (one of `kinds`) and the dataset kwargs it was
    trained with, so that the script finds the same data without being told."""
    checkpoint = read_checkpoint(path)
    kind = checkpoint.get("kind")
    require(
        kind not in MODELS or kind in kinds,
        f"'{path}' holds a {kind}, but {purpose} needs a {' or '.join(kinds)}: {suggestion}",
    )
    model = _build_model(checkpoint, path, device, kinds)
    return model, dict((checkpoint.get("meta") or {}).get("dataset") or {})


def resolve_weights(weights_path: str, output_dir: str, default: str, expected: str) -> tuple[Path, Path]:
    """An analysis script's weights file and output folder. An empty weights_path means `default`,
    what a main script writes; an empty output_dir means the folder of the weights."""
    if not weights_path:
        script = "main_" + default.split("_")[1].split("/")[0].lower() + ".py"  # mnist_GAN/... -> main_gan.py
        require(
            Path(default).is_file(),
            f"weights_path is empty and the default '{default}' (written by {script}) is not there: "
            f"train first with python {script}, or set --weights-path to {expected}",
        )
        weights_path = default
    path = Path(weights_path)
    return path, Path(output_dir) if output_dir else path.parent


def _build_model(checkpoint: dict, path: str | Path, device: str | torch.device, kinds: tuple[str, ...] | None):
    kind = checkpoint.get("kind")
    require(
        kind in MODELS and isinstance(checkpoint.get("state_dict"), dict),
        f"'{path}' is not model weights written by this repository (no known 'kind'): "
        "use generator.pt, discriminator.pt or vae.pt from a main script's output_dir",
    )
    if kinds is not None:
        require(kind in kinds, f"'{path}' holds a {kind}, but this needs a {' or '.join(kinds)}")
    try:
        model = MODELS[kind](**checkpoint["kwargs"])
    except (TypeError, ValueError) as error:
        raise UserError(f"'{path}' has constructor kwargs that {kind} does not accept: {error}") from None
    load_state(model, checkpoint["state_dict"], path)
    return model.to(device).eval()


@torch.no_grad()
def generated_images(
    model: nn.Module, z: torch.Tensor, normalize: bool, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Latents (N, D) of a generator or VAE (and a conditional one's labels) -> images (N, C, H, W) in [0, 1]:
    a VAE decodes to [0, 1]; a GAN's tanh output is in the range of the data it was trained on ([-1, 1]
    when `normalize`)."""
    y = () if labels is None else (labels,)
    if model.kind == "vae":
        images = model.decode(z, *y)
    else:
        images = model(z, *y)
        images = (images + 1) / 2 if normalize else images
    return images.clamp(0, 1).reshape(len(z), *model.image_shape)


def check_label(model: nn.Module, label: int | None, key: str = "label") -> None:
    """A requested class: only for a conditional model, and one of its classes."""
    num_classes = getattr(model, "num_classes", None)
    if label is None:
        return
    require(
        num_classes is not None,
        f"{key} is {label!r} but this {type(model).__name__} is unconditional: {key} needs a model trained "
        "with num_classes; leave it None",
    )
    require(
        type(label) is int and 0 <= label < num_classes,
        f"{key} must be a class index from 0 to {num_classes - 1}, got {label!r}",
    )


def load_state(model: nn.Module, state_dict: dict, source: str | Path) -> None:
    """load_state_dict that reports a mismatch in one line: which keys are missing or unexpected."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}")
    if wrong_shape:
        problems.append(f"keys of another shape {wrong_shape[:5]}")
    require(not problems, f"'{source}' does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state_dict)
