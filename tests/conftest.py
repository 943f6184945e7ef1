"""Fixtures: tiny hand-made data sets (real MNIST IDX files, a small image folder) and tiny configs.

Nothing here touches the network or files outside pytest's temporary folders.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from helpers import N_TEST, N_TRAIN, REPO, Tiny, digit_like_images, write_idx, write_image_folder

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads that
# spin-wait on each other make every step ~100x slower. Subprocesses get the same setting
# (helpers.script_env), which also makes their arithmetic bit-identical to in-process runs.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and num_threads="auto" keeps that
# On a GPU (TEST_DEVICE=cuda), cuDNN's default convolution backward adds in a varying order: the
# DCGAN tests that compare runs bit for bit need its deterministic algorithms. No effect on the CPU.
torch.backends.cudnn.deterministic = True


@pytest.fixture(scope="session")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> types.SimpleNamespace:
    """A tiny MNIST at root/MNIST/raw that torchvision.datasets.MNIST(root, download=False) reads."""
    root = tmp_path_factory.mktemp("mnist_root")
    train_images, train_labels = digit_like_images(N_TRAIN, seed=0)
    test_images, test_labels = digit_like_images(N_TEST, seed=1)
    write_idx(root / "MNIST" / "raw", "train", train_images, train_labels)
    write_idx(root / "MNIST" / "raw", "t10k", test_images, test_labels)
    return types.SimpleNamespace(
        root=root,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/<class>/*.jpg: 3 classes x 4 RGB JPEGs of 40x36 pixels with a coloured shape each."""
    root = tmp_path_factory.mktemp("imgs")
    write_image_folder(root)
    return root


@pytest.fixture(scope="session")
def tiny(mnist: types.SimpleNamespace, image_folder: Path) -> Tiny:
    return Tiny(mnist.root, image_folder)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hermetic: a data set that is not on disk is never fetched, whatever the network; and torch hub's
    cache is an empty folder, so metrics_features="auto" means the classifier whatever this machine holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))

    def refuse(self: object) -> None:
        raise URLError("downloads are disabled in the test suite")

    for cls in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST, torchvision.datasets.CIFAR10):
        monkeypatch.setattr(cls, "download", refuse)
