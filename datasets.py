"""Data: load a data set once as uint8 images, then serve normalised batches from memory.

MNIST and CIFAR-10 are small (47 MB and 150 MB as uint8), so the whole training set is kept
as one tensor on the training device and batches are sliced from a seeded permutation: no
per-sample transforms and no worker processes in the training loop (`InMemoryLoader`).

An image folder too large to hold decoded (see `in_memory_budget`) is read through a torch
DataLoader instead, decoding each batch on the fly (`DatasetLoader`). Both loaders draw the
same seeded order and turn the same uint8 pixels into floats the same way, so a seed gives
the same batches whichever one runs; the dataset key `in_memory` can force either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import struct
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils import UserError, require

# The built-in data sets: torchvision's classes (imported when one is used: torchvision is slow to import).
BUILTIN = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
# MNIST's and Fashion-MNIST's files, read here without torchvision where they are there, and their class names.
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_CLASSES = {
    "mnist": [f"{i} - {w}" for i, w in enumerate("zero one two three four five six seven eight nine".split())],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ],
}  # fmt: skip
DATASET_TYPES = (*BUILTIN, "image_folder")
IN_MEMORY_LIMIT = 2 * 2**30  # bytes of decoded uint8 images that in_memory="auto" holds at most


def load_images(
    dataset_type: str,
    root: str,
    train: bool = True,
    image_shape: tuple[int, int, int] | None = None,
    max_samples: int | None = None,
    classes: list | None = None,
    num_workers: int = 0,
    on_bad_image: str = "skip",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images as uint8 (N, C, H, W), int64 labels), converted to `image_shape` if given.

    `classes` keeps only those labels (indices, or folder names for image_folder);
    `max_samples` keeps the first N images (for image_folder, N spread evenly over the folder, less
    the files that do not decode: see `decode_checked` for `on_bad_image`).
    """
    require(
        dataset_type in DATASET_TYPES, f"unknown dataset_type '{dataset_type}': use one of {', '.join(DATASET_TYPES)}"
    )
    if dataset_type == "image_folder":
        root = root if train else str(held_out_folder(root) or root)
        return _load_image_folder(root, image_shape, max_samples, classes, num_workers, on_bad_image)
    dataset = _open_builtin(dataset_type, root, train)
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # -> N, C, H, W
    labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(_class_indices(classes, dataset.classes)))
        images, labels = images[keep], labels[keep]
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:max_samples]
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        print(f"note: converting {dataset_type} images {tuple(images.shape[1:])} to the model's {tuple(image_shape)}")
        images = fit_to_shape(images, image_shape)
    return images.contiguous(), labels


def load_test_images(
    dataset: dict,
    image_shape: tuple[int, int, int],
    root: str | None = None,
    max_samples: int | None = None,
    classes: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of the data a model was trained on. `dataset` is the dataset kwargs saved
    in its weights file; `root` (if given) says where the data are now. For an image_folder they are
    those of its `held_out_folder`, or its own images where it has none."""
    return _load_split(dataset, False, image_shape, root, max_samples, classes)


def load_training_images(
    dataset: dict, image_shape: tuple[int, int, int], root: str | None = None, max_samples: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images a model was trained on (its dataset kwargs' `classes`, the first of its `max_samples`),
    at most max_samples of them; `dataset` and `root` as for load_test_images."""
    limits = [n for n in (max_samples, dataset.get("max_samples")) if n is not None]
    return _load_split(dataset, True, image_shape, root, min(limits, default=None), dataset.get("classes"))


def _load_split(
    dataset: dict,
    train: bool,
    image_shape: tuple[int, int, int],
    root: str | None,
    max_samples: int | None,
    classes: list | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return load_images(
        dataset.get("dataset_type", "mnist"),
        root if root is not None else dataset.get("root", "data"),
        train=train,
        image_shape=image_shape,
        max_samples=max_samples,
        classes=classes,
        on_bad_image=dataset.get("on_bad_image", "skip"),
    )


# A folder's images are read at their own size up to this side; larger photos are scaled down to it.
NATIVE_SIDE_LIMIT = 64


def native_shape(dataset_type: str, root: str) -> tuple[int, int]:
    """(channels, side) of a data set's own images, for a model whose image shape is left None: MNIST's
    1 x 28, CIFAR-10's 3 x 32; a folder's first image: 1 channel if grey, else 3, its shorter side (at most
    NATIVE_SIDE_LIMIT, rounded down to a multiple of 4, with a note where it is scaled)."""
    if dataset_type == "cifar10":
        return 3, 32
    if dataset_type != "image_folder":
        return 1, 28
    files = find_images(root)[0]
    with Image.open(files[0]) as image:
        channels = 1 if image.mode in ("1", "L", "I;16", "I") else 3
        shorter = min(image.size)
    side = min(shorter, NATIVE_SIDE_LIMIT) // 4 * 4
    if side != shorter:
        print(
            f"note: the images are read at {side}x{side} (the first is {image.size[0]}x{image.size[1]}): "
            "set image_side for another size"
        )
    return channels, max(side, 4)


def source_files(dataset_type: str, root: str, train: bool = True) -> list[Path]:
    """The files a split is read from (empty where they are not on disk yet): to tell, without decoding
    anything, whether two reads see the same data."""
    if dataset_type == "image_folder":
        folder = Path(root) if train else held_out_folder(root) or Path(root)
        return find_images(folder)[0] if folder.is_dir() else []
    if dataset_type == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        return sorted(folder.glob("data_batch_*" if train else "test_batch"))
    files = [Path(root) / BUILTIN[dataset_type] / "raw" / name for name in IDX_FILES[train]]
    return files if all(path.is_file() for path in files) else []


def files_fingerprint(files: list[Path]) -> str:
    """A hash of the files' paths, sizes and modification times."""
    digest = hashlib.blake2b(digest_size=12)
    for path in files:
        status = path.stat()
        digest.update(f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def to_float(images: torch.Tensor, normalize: bool) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1] if normalize (GANs, tanh output), else [0, 1] (VAE, BCE targets)."""
    scale, shift = (2 / 255, -1.0) if normalize else (1 / 255, 0.0)
    return images.float().mul_(scale).add_(shift)


def check_idx_file(path: Path) -> None:
    """One line for an MNIST-style IDX file shorter or longer than its header says (a torn download)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4)
        dims = f.read(4 * header[3]) if len(header) == 4 else b""
    ok = len(header) == 4 and header[:2] == b"\0\0" and len(dims) == 4 * header[3]
    expected = 4 + len(dims) + math.prod(struct.unpack(f">{header[3]}I", dims)) if ok else None
    require(
        ok and size == expected,
        f"'{path}' is truncated or corrupt ({size} bytes"
        + (f", its header says {expected})" if ok else ", no IDX header)")
        + ": delete it to download it again, or replace it with a whole copy",
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format) as a writable uint8 array of the shape its header gives."""
    check_idx_file(path)
    with open(path, "rb") as f:
        header = f.read(4)
        dims = struct.unpack(f">{header[3]}I", f.read(4 * header[3]))
        return np.fromfile(f, np.uint8).reshape(dims)  # read straight into the array: no copy


def _open_builtin(dataset_type: str, root: str, train: bool) -> types.SimpleNamespace:
    """The split's images (`data`), labels (`targets`) and class names (`classes`), as torchvision's data sets
    give them: read from MNIST's files where they are there, else by torchvision, which downloads them."""
    raw = Path(root) / BUILTIN[dataset_type] / "raw"
    if dataset_type != "cifar10" and raw.is_dir():
        for path in sorted(raw.glob("*-ubyte")):
            check_idx_file(path)
        files = [raw / name for name in IDX_FILES[train]]
        if all(path.is_file() for path in files):
            images, labels = (read_idx(path) for path in files)
            return types.SimpleNamespace(
                data=torch.from_numpy(images), targets=labels.astype(np.int64), classes=IDX_CLASSES[dataset_type]
            )
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, BUILTIN[dataset_type])
    try:
        return dataset_class(root, train=train, download=False)
    except RuntimeError:
        pass  # not there yet: download it
    print(f"downloading {dataset_type} into '{root}' ...")
    made = [p for p in (Path(root), *Path(root).parents, raw, raw.parent) if not p.exists()]  # removed on failure
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror it tries
            return dataset_class(root, train=train, download=True)
    except Exception as error:  # URLError, RuntimeError, OSError, ... all mean "not available"
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a failed download leaves no folders behind
        reason = str(error).strip().splitlines()[-1][:120] if str(error).strip() else type(error).__name__
        folder = Path(root) / ("cifar-10-batches-py" if dataset_type == "cifar10" else f"{BUILTIN[dataset_type]}/raw")
        raise UserError(
            f"{dataset_type} not found in '{folder}' and the download failed ({reason}); "
            f"download it with internet access, or set root (--root) to a folder that holds it"
            + (
                ", or use dataset_type image_folder with root at a folder of class subfolders"
                if dataset_type == "cifar10"
                else ""
            )
        ) from None


def count_classes(dataset_type: str, root: str) -> int:
    """The number of classes of a data set: 10 for the built-in ones, an image folder's class subfolders
    (0 for a flat folder: no labels)."""
    if dataset_type == "image_folder":
        return len(find_images(root)[2])
    return 10  # MNIST, Fashion-MNIST and CIFAR-10


def as_class_list(classes: list | int | str | None) -> list | None:
    """7, "cat" or "cat,dog" (as typed on the command line) -> [7], ["cat"], ["cat", "dog"]."""
    if isinstance(classes, (int, str)):
        classes = [int(c) if c.strip().isdigit() else c.strip() for c in str(classes).split(",") if c.strip()]
    require(
        classes is None or len(classes) > 0,
        "dataset_kwargs['classes'] is empty: name at least one class (e.g. [3] or 'cat,dog'), or None for all",
    )
    return classes


def _class_indices(classes: list, names: list[str]) -> list[int]:
    indices = []
    for c in classes:
        if isinstance(c, str) and c in names:
            indices.append(names.index(c))
        else:
            require(
                isinstance(c, int) and 0 <= c < len(names),
                f"unknown class {c!r}: use indices 0-{len(names) - 1} or names {names}",
            )
            indices.append(c)
    return indices


def convert(images: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Float (N, C, H, W) images -> (N, C', H', W'): grey <-> RGB (ITU-R 601 luma), then an anti-aliased resize."""
    channels, height, width = image_shape
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and channels == 1:
        images = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(images.shape[2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return images


def fit_to_shape(images: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) images to (C', H', W') (see `convert`), still uint8."""
    return convert(images.float(), image_shape).round().clamp(0, 255).to(torch.uint8)


def held_out_folder(root: str | Path) -> Path | None:
    """The held-out images of an image folder: a folder `test` beside a root named `train` with the
    same class subfolders (CIFAR-10's layout here: cifar10/train and cifar10/test), else None."""
    root = Path(root)
    test = root.parent / "test"
    if root.name != "train" or not test.is_dir() or not root.is_dir():
        return None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return test if sorted(p.name for p in test.iterdir() if p.is_dir()) == classes else None


def _load_image_folder(
    root: str,
    image_shape: tuple[int, int, int] | None,
    max_samples: int | None,
    classes: list | None,
    num_workers: int,
    on_bad_image: str = "skip",
) -> tuple[torch.Tensor, torch.Tensor]:
    dataset, labels = image_folder_dataset(root, image_shape, max_samples, classes)
    images, good = decode_checked(dataset, num_workers, on_bad_image, root)
    return images, labels[good]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BAD_IMAGE_CHOICES = ("skip", "error")
_reported: set[str] = set()  # bad files already named in this process (the test split may read them again)


def find_images(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """The image files of a folder, their labels and the class names.

    Each subfolder holding images (searched to any depth) is a class, in sorted order, as in
    torchvision's ImageFolder; a root that holds images and no such subfolder is one unlabelled
    class (`classes` is empty, every label 0). Files are images by their extension (IMAGE_EXTENSIONS);
    hidden files and folders (".DS_Store", macOS's "._*") are left out.
    """
    root = Path(root)
    require(root.is_dir(), f"image folder '{root}' not found: set root (--root) to a folder of images")
    with os.scandir(root) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    loose = [Path(e.path) for e in entries if _is_image_name(e.name) and e.is_file()]
    per_class = {e.name: _images_below(Path(e.path)) for e in entries if e.is_dir()}
    per_class = {name: files for name, files in per_class.items() if files}
    splits = {"train", "test"} & set(per_class)
    require(
        splits != {"train", "test"},
        f"'{root}' holds a train/ and a test/ folder, a split, not classes: set root to '{root / 'train'}' "
        "(the test/ beside it is then the test split)",
    )
    if not per_class:
        extensions = ", ".join(IMAGE_EXTENSIONS)
        require(loose, f"no images in '{root}': put image files ({extensions}) in it or in class subfolders")
        return loose, [0] * len(loose), []
    if loose and f"mixed:{root}" not in _reported:  # said once per process
        _reported.add(f"mixed:{root}")
        print(
            f"note: '{root}' holds {len(per_class)} class subfolders and {len(loose)} images beside them: "
            "training on the subfolders' images; the loose ones are left out (move them into a subfolder to use them)"
        )
    classes = list(per_class)
    files = [f for name in classes for f in per_class[name]]
    labels = [label for label, name in enumerate(classes) for _ in per_class[name]]
    return files, labels, classes


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def _images_below(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):  # names: the files (no stat per file)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(parent)  # joined once: a child of it is parsed from its name alone
        found += [base / n for n in sorted(names) if _is_image_name(n)]
    return found


def read_image(path: str | Path, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """One image file as uint8 (C, H, W) at `image_shape`, whatever its mode and size.

    Grey, palette, CMYK and 16-bit images become RGB or grey (ITU-R 601 luma), 16-bit values scaled
    to 8 bits; transparent pixels are shown over white. The shorter side is scaled to the size
    (bilinear, anti-aliased) and the centre cropped to it.
    """
    channels, height, width = image_shape
    with Image.open(path) as image:
        image = _to_8bit(image)
        if "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        image = image.convert("RGB" if channels == 3 else "L")
    from torchvision.transforms import functional  # imported when an image folder is read

    image = functional.resize(image, min(height, width), antialias=True)
    return functional.pil_to_tensor(functional.center_crop(image, [height, width]))


def _to_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey (PNG, TIFF) scaled to 8 bits; PIL's convert would clip them at 255."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(values / peak * 255 + 0.5, 0, 255).astype(np.uint8))
    return image


def check_image(path: str | Path) -> None:
    """Raise if the file does not decode. A JPEG is decoded at 1/8 scale (libjpeg reads all of its data,
    so truncation shows, at a fraction of the cost): the check the streamed path makes once."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (1, 1))
        image.load()


class ImageFiles(torch.utils.data.Dataset):
    """(uint8 (C, H, W) image, label) per file, read by `read_image` when indexed."""

    def __init__(self, files: list[Path], labels: list[int], image_shape: tuple[int, int, int]) -> None:
        self.files, self.labels, self.image_shape = files, labels, image_shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            return read_image(self.files[index], self.image_shape), self.labels[index]
        except Exception as error:  # a file that passed the check and still fails: name it
            raise UserError(f"cannot read image '{self.files[index]}' ({_reason(error, self.files[index])})") from None


def _reason(error: BaseException, path: Path) -> str:
    """The decoder's complaint in one short line, without the path (the caller names the file)."""
    text = str(error).strip().replace(f" '{path}'", "").replace(str(path), "the file").splitlines()
    return f"{type(error).__name__}: {text[0][:150]}" if text else type(error).__name__


class _Verdicts(torch.utils.data.Dataset):
    """(image or None, reason or None) per item of an ImageFiles subset: decoded (`decode`) or checked only."""

    def __init__(self, dataset: torch.utils.data.Subset, decode: bool) -> None:
        self.dataset, self.decode = dataset, decode

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, str | None]:
        files: ImageFiles = self.dataset.dataset
        path = files.files[self.dataset.indices[i]]
        try:
            if self.decode:
                return read_image(path, files.image_shape), None
            check_image(path)
            return None, None
        except Exception as error:  # anything a file makes the decoder raise means it is not a usable image
            return None, _reason(error, path)


def _collate_verdicts(items: list[tuple[torch.Tensor | None, str | None]]) -> tuple[torch.Tensor | None, list]:
    """A batch of verdicts as (the readable images stacked, every item's reason): one tensor crosses from
    a worker process, not one per image (about 6x faster)."""
    images = [image for image, _ in items if image is not None]
    return (torch.stack(images) if images else None), [reason for _, reason in items]


def decode_checked(
    dataset: torch.utils.data.Subset, num_workers: int = 0, on_bad_image: str = "skip", root: str = "", decode=True
) -> tuple[torch.Tensor | None, list[int]]:
    """Read every image of an ImageFiles subset once: (uint8 images, or None when only checked, and
    the positions of the readable ones). A file that does not decode is named in one line and
    skipped, or with on_bad_image="error" stops the run with one line naming it."""
    require(
        on_bad_image in BAD_IMAGE_CHOICES,
        f"on_bad_image must be one of {', '.join(BAD_IMAGE_CHOICES)}, got {on_bad_image!r}",
    )
    loader = torch.utils.data.DataLoader(
        _Verdicts(dataset, decode), batch_size=256, num_workers=num_workers, collate_fn=_collate_verdicts
    )
    images = torch.empty(len(dataset), *dataset.dataset.image_shape, dtype=torch.uint8) if decode else None
    good, bad = [], 0
    for batch_start, (decoded, reasons) in zip(range(0, len(dataset), 256), loader, strict=True):
        readable = [position for position, reason in enumerate(reasons, batch_start) if reason is None]
        if decode and readable:
            images[readable] = decoded
        good += readable
        for position, reason in enumerate(reasons, batch_start):
            if reason is None:
                continue
            path = str(dataset.dataset.files[dataset.indices[position]])
            require(
                on_bad_image == "skip",
                f"cannot read image '{path}' ({reason}): remove or replace it, "
                "or set on_bad_image='skip' to train without the files that do not decode",
            )
            bad += 1
            if path not in _reported:
                _reported.add(path)
                print(f"skipping '{path}': {reason}")
    if bad:
        print(f"note: skipped {bad} of {len(dataset)} image files in '{root}' that do not decode")
    require(good, f"none of the {len(dataset)} image files in '{root}' decodes")
    if decode and bad:
        images = images[good]
    return images, good


def load_folder(folder: str | Path, image_shape: tuple[int, int, int]) -> tuple[torch.Tensor, list[Path]]:
    """Every image of a folder (loose, or in subfolders to any depth) as uint8 (N, C, H, W) at `image_shape`,
    and their files; a file that does not decode is named and left out."""
    dataset, _ = image_folder_dataset(str(folder), image_shape)
    images, good = decode_checked(dataset, root=str(folder))
    return images, [dataset.dataset.files[dataset.indices[i]] for i in good]


def image_folder_dataset(
    root: str, image_shape: tuple[int, int, int] | None, max_samples: int | None = None, classes: list | None = None
) -> tuple[torch.utils.data.Subset, torch.Tensor]:
    """The images of a folder that `load_images` would return (before bad files are dropped), as a
    Subset of ImageFiles, which decodes on access, and their labels."""
    require(image_shape is not None, "image_folder needs the model's image shape")
    files, targets, names = find_images(root)
    indices = list(range(len(files)))
    if classes is not None:
        require(names, f"'{root}' holds its images directly, without class subfolders: it has no classes to keep")
        keep = set(_class_indices(classes, names))
        indices = [i for i in indices if targets[i] in keep]
    if max_samples is not None and max_samples < len(indices):
        # The file list is sorted by class: spread the subset so that every class is in it.
        indices = [indices[i * len(indices) // max_samples] for i in range(max_samples)]
    require(len(indices) > 0, f"no images left in '{root}' after filtering by classes={classes}")
    labels = torch.tensor([targets[i] for i in indices], dtype=torch.long)
    dataset = torch.utils.data.Subset(ImageFiles(files, targets, image_shape), indices)
    return dataset, labels


def in_memory_budget() -> int:
    """Bytes of decoded images that in_memory="auto" keeps in memory: 2 GiB, or a quarter of the RAM if less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return IN_MEMORY_LIMIT
    return min(IN_MEMORY_LIMIT, ram // 4)


def epoch_order(count: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The order of the images in epoch `epoch`: drawn from (seed, epoch) alone, never from the global RNG."""
    if not shuffle:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(count, generator=generator)


class Loader:
    """What the trainers use: `len(loader)` batches per epoch, `batches(epoch, start)`, and the
    images (`images`, uint8 (N, C, H, W), indexable) with their `labels`.

    The order of epoch e is a permutation drawn from (seed, e) alone, so it is the same
    whether training runs straight through or resumes from a checkpoint.
    """

    images: torch.Tensor | Sequence
    labels: torch.Tensor

    def __init__(self, batch_size: int, shuffle: bool, normalize: bool, seed: int) -> None:
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.normalize = normalize
        self.rank, self.world_size = 0, 1  # see `shard`
        self.labelled = False  # True: batches are (images, labels), for a class-conditional model

    def shard(self, rank: int, world_size: int) -> None:
        """Serve only this process's share of each epoch in a distributed run (see `order`)."""
        require(
            len(self.labels) >= world_size,
            f"{len(self.labels)} training images cannot be shared by {world_size} processes: "
            "use more images (max_samples) or fewer processes",
        )
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        # Every rank takes this many steps (DDP needs equal counts): its smallest share, in batches. A last
        # batch of one image joins the one before (BatchNorm cannot train on a single image).
        share = len(self.labels) // self.world_size
        steps = -(-share // self.batch_size)
        return steps - 1 if share % self.batch_size == 1 and steps > 1 else steps

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's images of epoch `epoch`: every rank draws the same permutation and takes every
        world_size-th image of it from position `rank`, so the shares cover the data exactly once."""
        return epoch_order(len(self.labels), self.shuffle, self.seed, epoch)[self.rank :: self.world_size]

    def index_batches(self, epoch: int, start: int = 0, device: torch.device | None = None) -> list[torch.Tensor]:
        """The image indices (on `device`) of each batch of epoch `epoch` from batch `start` on. A share one
        image larger than the smallest puts that image in its last batch: all ranks take `len(self)` steps."""
        order, size, steps = self.order(epoch).to(device), self.batch_size, len(self)
        return [order[i * size : (i + 1) * size if i < steps - 1 else None] for i in range(start, steps)]

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        return to_float(images, self.normalize)

    def fingerprint(self) -> dict:
        """What the data set is, for a resumed run to compare: its size, and a hash of its labels and of 64
        images spread evenly over it (the same on the in-memory and the streamed path)."""
        count = len(self.labels)
        digest = hashlib.blake2b(self.labels.cpu().numpy().astype(np.int64).tobytes(), digest_size=8)
        for index in torch.linspace(0, count - 1, min(count, 64)).long().tolist():
            digest.update(self.images[index].cpu().numpy().tobytes())
        return {"images": count, "hash": digest.hexdigest()}

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch as float (B, C, H, W) on the training device, skipping the first `start`;
        with `labelled`, (images, int64 labels) pairs."""
        raise NotImplementedError

    def in_file_order(self, batch_size: int) -> Loader:
        """The same images, unshuffled, in batches of `batch_size` (e.g. to evaluate on them)."""
        raise NotImplementedError


class InMemoryLoader(Loader):
    """Serves float batches from uint8 images kept on the training device."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        normalize: bool,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(batch_size, shuffle, normalize, seed)
        self.images = images.to(device)
        self.labels = labels.to(device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        for indices in self.index_batches(epoch, start, self.images.device):
            # index_select copies whole rows: several times faster than images[indices]
            images = self.to_float(self.images.index_select(0, indices))
            yield (images, self.labels.index_select(0, indices)) if self.labelled else images

    def in_file_order(self, batch_size: int) -> InMemoryLoader:
        loader = InMemoryLoader(
            self.images, self.labels, batch_size, False, self.normalize, self.seed, self.images.device
        )
        loader.labelled = self.labelled
        return loader


class DatasetLoader(Loader):
    """Serves the batches InMemoryLoader would, from a Dataset of (uint8 image, label) read per batch.

    For data too large to hold decoded: a torch DataLoader with `num_workers` processes decodes
    each batch (in pinned memory when the device is CUDA) and the batch is normalised on the device.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        normalize: bool,
        seed: int,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, shuffle, normalize, seed)
        self.device = torch.device(device)
        self.dataset, self.labels = dataset, labels.to(self.device)
        self.num_workers = num_workers
        self.images = DatasetImages(dataset, self.device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        index_batches = self.index_batches(epoch, start)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[indices.tolist() for indices in index_batches],
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # its own: the global RNG stays training's
        )
        try:
            for indices, (images, _) in zip(index_batches, loader, strict=True):
                images = self.to_float(images.to(self.device, non_blocking=True))
                yield (images, self.labels[indices.to(self.device)]) if self.labelled else images
        except UserError as error:  # from a worker: its message carries the worker's traceback
            raise UserError(str(error).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None

    def in_file_order(self, batch_size: int) -> DatasetLoader:
        loader = DatasetLoader(
            self.dataset, self.labels, batch_size, False, self.normalize, self.seed, self.device, self.num_workers
        )
        loader.labelled = self.labelled
        return loader


class DatasetImages(Sequence):
    """The images of a Dataset of (image, label), decoded when indexed and put on `device`:
    `images[:32]` is a uint8 batch, as it is from InMemoryLoader.images."""

    def __init__(self, dataset: torch.utils.data.Dataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | slice) -> torch.Tensor:
        if isinstance(key, slice):
            return torch.stack([self.dataset[i][0] for i in range(*key.indices(len(self)))]).to(self.device)
        return self.dataset[key][0].to(self.device)


# Dataset keys a resumed run may change: where the files are and how they are read, not what they are.
RESUMABLE_DATASET_KEYS = {"root", "num_workers", "in_memory"}


def make_loader(
    image_shape: tuple[int, int, int],
    device: torch.device | str,
    seed: int,
    train: bool,
    *,
    dataset_type: str = "mnist",
    batch_size: int = 16,
    shuffle: bool = True,
    normalize: bool = True,
    root: str = "data",
    max_samples: int | None = None,
    num_workers: int = 0,
    classes: list | int | str | None = None,
    in_memory: bool | str = "auto",
    on_bad_image: str = "skip",
) -> Loader:
    """Build the loader a main script's `dataset_kwargs` describe (keyword names = its keys).

    For the test split (`train=False`) `max_samples` does not apply and the order is fixed; an
    image_folder's test split is its `held_out_folder`, or, where it has none, its own images (with
    `max_samples`).
    `in_memory`: True keeps the decoded images on the training device (InMemoryLoader); False reads
    batches through a DataLoader (DatasetLoader: for an image_folder it decodes the files per batch,
    for a built-in data set it copies batches from host memory); "auto" holds them in memory when
    they fit `in_memory_budget()`. The batches are the same either way.
    """
    require(batch_size > 0, f"batch_size must be positive, got {batch_size}")
    require(max_samples is None or max_samples > 0, f"max_samples must be positive or None, got {max_samples}")
    require(num_workers >= 0, f"num_workers must be 0 or more, got {num_workers}")
    require(in_memory in (True, False, "auto"), f"in_memory must be True, False or 'auto', got {in_memory!r}")
    classes = as_class_list(classes)
    held_out = held_out_folder(root) if not train and dataset_type == "image_folder" else None
    if not train and (dataset_type != "image_folder" or held_out):  # a real test split: all of it
        root, max_samples = str(held_out or root), None
    shuffle = shuffle and train
    if dataset_type == "image_folder":
        dataset, labels = image_folder_dataset(root, image_shape, max_samples, classes)
        size = len(labels) * math.prod(image_shape)
        if in_memory == "auto":
            in_memory = size <= in_memory_budget()
            if not in_memory:
                print(
                    f"note: {len(labels)} images of {root} take {size / 2**30:.1f} GiB decoded, more than the "
                    f"in-memory budget of {in_memory_budget() / 2**30:.1f} GiB: decoding them batch by batch "
                    "(in_memory=True holds them anyway)"
                )
        if not in_memory:  # each file is checked once now, so that every epoch's batches are known
            _, good = decode_checked(dataset, num_workers, on_bad_image, root, decode=False)
            files = torch.utils.data.Subset(dataset.dataset, [dataset.indices[i] for i in good])
            return DatasetLoader(files, labels[good], batch_size, shuffle, normalize, seed, device, num_workers)
        images, good = decode_checked(dataset, num_workers, on_bad_image, root)
        return InMemoryLoader(images, labels[good], batch_size, shuffle, normalize, seed, device)
    images, labels = load_images(
        dataset_type, root, train=train, image_shape=image_shape, max_samples=max_samples, classes=classes
    )
    if in_memory is False:  # torchvision holds these decoded in host memory anyway: batches are copied from there
        dataset = torch.utils.data.TensorDataset(images, labels)
        return DatasetLoader(dataset, labels, batch_size, shuffle, normalize, seed, device, num_workers)
    return InMemoryLoader(images, labels, batch_size, shuffle, normalize, seed, device)
