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
import io
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms

from utils import UserError, require

BUILTIN = {
    "mnist": torchvision.datasets.MNIST,
    "fashion_mnist": torchvision.datasets.FashionMNIST,
    "cifar10": torchvision.datasets.CIFAR10,
}
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images as uint8 (N, C, H, W), int64 labels), converted to `image_shape` if given.

    `classes` keeps only those labels (indices, or folder names for image_folder);
    `max_samples` keeps the first N images (for image_folder, N spread evenly over the folder).
    """
    require(
        dataset_type in DATASET_TYPES, f"unknown dataset_type '{dataset_type}': use one of {', '.join(DATASET_TYPES)}"
    )
    if dataset_type == "image_folder":
        root = root if train else str(held_out_folder(root) or root)
        return _load_image_folder(root, image_shape, max_samples, classes, num_workers)
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
    return load_images(
        dataset.get("dataset_type", "mnist"),
        root if root is not None else dataset.get("root", "data"),
        train=False,
        image_shape=image_shape,
        max_samples=max_samples,
        classes=classes,
    )


def to_float(images: torch.Tensor, normalize: bool) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1] if normalize (GANs, tanh output), else [0, 1] (VAE, BCE targets)."""
    scale, shift = (2 / 255, -1.0) if normalize else (1 / 255, 0.0)
    return images.float().mul_(scale).add_(shift)


def _open_builtin(dataset_type: str, root: str, train: bool) -> torchvision.datasets.VisionDataset:
    dataset_class = BUILTIN[dataset_type]
    try:
        return dataset_class(root, train=train, download=False)
    except RuntimeError:
        pass  # not there yet: download it
    print(f"downloading {dataset_type} into '{root}' ...")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror it tries
            return dataset_class(root, train=train, download=True)
    except Exception as error:  # URLError, RuntimeError, OSError, ... all mean "not available"
        reason = str(error).strip().splitlines()[-1][:120] if str(error).strip() else type(error).__name__
        folder = Path(root) / ("cifar-10-batches-py" if dataset_type == "cifar10" else f"{dataset_class.__name__}/raw")
        raise UserError(
            f"{dataset_type} not found in '{folder}' and the download failed ({reason}); "
            f"download it with internet access, or set root (--root) to a folder that holds it"
            + (
                ", or use dataset_type image_folder with root at a folder of class subfolders"
                if dataset_type == "cifar10"
                else ""
            )
        ) from None


def as_class_list(classes: list | int | str | None) -> list | None:
    """7, "cat" or "cat,dog" (as typed on the command line) -> [7], ["cat"], ["cat", "dog"]."""
    if isinstance(classes, (int, str)):
        return [int(c) if c.strip().isdigit() else c.strip() for c in str(classes).split(",")]
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
    root: str, image_shape: tuple[int, int, int] | None, max_samples: int | None, classes: list | None, num_workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    dataset, labels = image_folder_dataset(root, image_shape, max_samples, classes)
    return decode_all(dataset, num_workers), labels


def decode_all(dataset: torch.utils.data.Dataset, num_workers: int = 0) -> torch.Tensor:
    """Every image of a Dataset of (uint8 image, label), as one uint8 tensor."""
    # Its own generator: reading data leaves the global RNG (weights, noise) as it was.
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=num_workers, generator=generator)
    return torch.cat([batch for batch, _ in loader])


def image_folder_dataset(
    root: str, image_shape: tuple[int, int, int] | None, max_samples: int | None = None, classes: list | None = None
) -> tuple[torch.utils.data.Dataset, torch.Tensor]:
    """The images of a folder of class subfolders that `load_images` would return, as a Dataset of
    (uint8 (C, H, W), label) that decodes on access, and their labels."""
    require(image_shape is not None, "image_folder needs the model's image shape")
    channels, height, width = image_shape
    require(
        Path(root).is_dir(),
        f"image folder '{root}' not found: set root (--root) to a folder with one subfolder of images per class",
    )
    steps = [transforms.Resize(min(height, width)), transforms.CenterCrop((height, width))]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.PILToTensor())
    try:
        dataset = torchvision.datasets.ImageFolder(root, transform=transforms.Compose(steps))
    except (FileNotFoundError, RuntimeError) as error:
        raise UserError(f"no images in '{root}' ({error}): it needs one subfolder of images per class") from None
    indices = list(range(len(dataset)))
    if classes is not None:
        keep = set(_class_indices(classes, dataset.classes))
        indices = [i for i in indices if dataset.targets[i] in keep]
    if max_samples is not None and max_samples < len(indices):
        # The folder list is sorted by class: spread the subset so that every class is in it.
        indices = [indices[i * len(indices) // max_samples] for i in range(max_samples)]
    require(len(indices) > 0, f"no images left in '{root}' after filtering by classes={classes}")
    labels = torch.tensor([dataset.targets[i] for i in indices], dtype=torch.long)
    return torch.utils.data.Subset(dataset, indices), labels


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

    def shard(self, rank: int, world_size: int) -> None:
        """Serve only this process's share of each epoch in a distributed run (see `order`)."""
        require(
            len(self.labels) >= world_size,
            f"{len(self.labels)} training images cannot be shared by {world_size} processes: "
            "use more images (max_samples) or fewer processes",
        )
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        # Every rank takes this many steps (DDP needs equal counts): its smallest share, in batches.
        return -(-(len(self.labels) // self.world_size) // self.batch_size)

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

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The batches of one epoch as float (B, C, H, W) on the training device, skipping the first `start`."""
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
            yield self.to_float(self.images.index_select(0, indices))

    def in_file_order(self, batch_size: int) -> InMemoryLoader:
        return InMemoryLoader(
            self.images, self.labels, batch_size, False, self.normalize, self.seed, self.images.device
        )


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
        index_batches = [indices.tolist() for indices in self.index_batches(epoch, start)]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=index_batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # its own: the global RNG stays training's
        )
        for images, _ in loader:
            yield self.to_float(images.to(self.device, non_blocking=True))

    def in_file_order(self, batch_size: int) -> DatasetLoader:
        return DatasetLoader(
            self.dataset, self.labels, batch_size, False, self.normalize, self.seed, self.device, self.num_workers
        )


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
        if not in_memory:
            return DatasetLoader(dataset, labels, batch_size, shuffle, normalize, seed, device, num_workers)
        return InMemoryLoader(decode_all(dataset, num_workers), labels, batch_size, shuffle, normalize, seed, device)
    images, labels = load_images(
        dataset_type, root, train=train, image_shape=image_shape, max_samples=max_samples, classes=classes
    )
    if in_memory is False:  # torchvision holds these decoded in host memory anyway: batches are copied from there
        dataset = torch.utils.data.TensorDataset(images, labels)
        return DatasetLoader(dataset, labels, batch_size, shuffle, normalize, seed, device, num_workers)
    return InMemoryLoader(images, labels, batch_size, shuffle, normalize, seed, device)
