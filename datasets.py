"""Data: load a data set once as uint8 images, then serve normalised batches from memory.

MNIST and CIFAR-10 are small (47 MB and 150 MB as uint8), so the whole training set is kept
as one tensor on the training device and batches are sliced from a seeded permutation: no
per-sample transforms and no worker processes in the training loop.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
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
    in its weights file; `root` (if given) says where the data are now. An image_folder has no
    test split: its images are used."""
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


def fit_to_shape(images: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) images to (C', H', W'): grey <-> RGB, then an anti-aliased resize."""
    channels, height, width = image_shape
    x = images.float()
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def _load_image_folder(
    root: str, image_shape: tuple[int, int, int] | None, max_samples: int | None, classes: list | None, num_workers: int
) -> tuple[torch.Tensor, torch.Tensor]:
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
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=256, num_workers=num_workers
    )
    images, labels = zip(*loader, strict=False)
    return torch.cat(images), torch.cat(labels)


class InMemoryLoader:
    """Serves float batches from uint8 images kept on the training device.

    The order of epoch e is a permutation drawn from (seed, e) alone, so it is the same
    whether training runs straight through or resumes from a checkpoint.
    """

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
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.normalize = normalize

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.images))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.images), generator=generator)

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        return to_float(images, self.normalize)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The batches of one epoch as float (B, C, H, W), skipping the first `start`."""
        order = self.order(epoch).to(self.images.device)
        for i in range(start, len(self)):
            yield self.to_float(self.images[order[i * self.batch_size : (i + 1) * self.batch_size]])


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
) -> InMemoryLoader:
    """Build the loader a main script's `dataset_kwargs` describe (keyword names = its keys).

    For the test split (`train=False`) `max_samples` does not apply and the order is fixed.
    """
    require(batch_size > 0, f"batch_size must be positive, got {batch_size}")
    require(max_samples is None or max_samples > 0, f"max_samples must be positive or None, got {max_samples}")
    require(num_workers >= 0, f"num_workers must be 0 or more, got {num_workers}")
    classes = as_class_list(classes)
    images, labels = load_images(
        dataset_type,
        root,
        train=train,
        image_shape=image_shape,
        max_samples=max_samples if train or dataset_type == "image_folder" else None,
        classes=classes,
        num_workers=num_workers,
    )
    return InMemoryLoader(images, labels, batch_size, shuffle and train, normalize, seed, device)
