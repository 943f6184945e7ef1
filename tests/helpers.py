"""Helpers shared by the tests: tiny data writers, tiny kwargs, and running the main scripts.

Nothing here touches the network or files outside the folders the tests pass in.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import trainers.speed as speed
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from trainers import train_gan, train_vae

REPO = Path(__file__).resolve().parents[1]
# Where the tests' training runs and analysis scripts compute: the CPU, or e.g. TEST_DEVICE=cuda on a GPU machine.
DEVICE = os.environ.get("TEST_DEVICE", "cpu")

N_TRAIN, N_TEST = 1024, 128
FOLDER_CLASSES = ("blue_disc", "green_bar", "red_square")  # ImageFolder sorts them: labels 0, 1, 2
FOLDER_PER_CLASS = 4
FOLDER_SIZE = (40, 36)  # width, height: not square, so resizing and cropping both happen

# The columns losses.csv always has (a new loss term or regulariser adds its own).
GAN_COLUMNS = ["epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds"]
VAE_COLUMNS = ["epoch", "loss", "reconstruction", "kl", "test_loss", "test_reconstruction", "test_kl"]
VAE_COLUMNS += ["test_reconstruction_at_mu", "seconds"]


# ---------------------------------------------------------------------------- data


def digit_like_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images with one stroke pattern per class (label = index % 10), jittered a pixel."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels.tolist()):
        dx, dy = (int(v) for v in rng.integers(-1, 2, size=2))
        col = 4 + 2 * k + dx
        images[i, 4 + dy : 24 + dy, col : col + 3] = 255  # a vertical stroke whose place gives the class
        if k % 2:
            row = 6 + 2 * k + dy
            images[i, row : row + 2, 5 + dx : 23 + dx] = 200  # odd classes get a crossbar
    return images, labels


def write_idx(raw: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write MNIST's big-endian IDX files (magic 2051 for images, 2049 for labels)."""
    raw.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, rows, cols) + images.tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())


def folder_image(cls: str, rng: np.random.Generator) -> Image.Image:
    """A dark noisy RGB picture with one bright shape whose colour and form give the class."""
    width, height = FOLDER_SIZE
    pixels = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    cy, cx = height // 2 + int(rng.integers(-3, 4)), width // 2 + int(rng.integers(-3, 4))
    yy, xx = np.mgrid[:height, :width]
    if cls == "blue_disc":
        pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = (20, 40, 230)
    elif cls == "green_bar":
        pixels[:, cx - 4 : cx + 4] = (30, 220, 40)
    else:
        pixels[cy - 9 : cy + 9, cx - 9 : cx + 9] = (230, 30, 30)
    return Image.fromarray(pixels, "RGB")


def write_image_folder(root: Path, per_class: int = FOLDER_PER_CLASS, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for cls in FOLDER_CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            folder_image(cls, rng).save(root / cls / f"{i}.jpg", quality=95)


# ---------------------------------------------------------------------------- tiny configurations


class Tiny:
    """Small kwargs dicts (model, dataset, trainer) for each main script; every call returns fresh dicts.

    Extra keyword arguments go to the trainer dict; `dataset` and `model` update those dicts.
    """

    def __init__(self, mnist_root: Path, folder_root: Path) -> None:
        self.mnist_root, self.folder_root = mnist_root, folder_root

    @staticmethod
    def _trainer(out: Path, trainer: dict) -> dict:
        return {"num_epochs": 2, "output_dir": str(out), "device": DEVICE, "seed": 0, **trainer}

    def gan(self, out: Path, dataset: dict | None = None, model: dict | None = None, **trainer) -> tuple:
        m = {"latent_variable_size": 8, "generator_hidden_size": 32, "discriminator_hidden_size": 32}
        d = {"dataset_type": "mnist", "root": str(self.mnist_root), "batch_size": 16, "max_samples": 64}
        return {**m, **(model or {})}, {**d, **(dataset or {})}, self._trainer(out, trainer)

    def dcgan(self, out: Path, dataset: dict | None = None, model: dict | None = None, **trainer) -> tuple:
        m = {"latent_dim": 8, "feature_maps": 8, "image_channels": 3, "image_size": 32}
        d = {"dataset_type": "image_folder", "root": str(self.folder_root), "batch_size": 4}
        return {**m, **(model or {})}, {**d, **(dataset or {})}, self._trainer(out, trainer)

    def train(self, kind: str, out: Path, dataset: dict | None = None, **trainer):
        """Train a tiny "gan", "dcgan" or "vae" into `out`; returns its trainer."""
        if kind == "gan":
            return train_gan(FCGenerator, FCDiscriminator, *self.gan(out, dataset, **trainer))
        if kind == "dcgan":
            return train_gan(DCGANGenerator, DCGANDiscriminator, *self.dcgan(out, dataset, **trainer))
        return train_vae(VAE, *self.vae(out, dataset, **trainer))

    def vae(self, out: Path, dataset: dict | None = None, model: dict | None = None, **trainer) -> tuple:
        m = {"hidden_size": 64, "latent_dim": 8}
        d = {"dataset_type": "mnist", "root": str(self.mnist_root), "batch_size": 16, "max_samples": 128}
        d["normalize"] = False
        return {**m, **(model or {})}, {**d, **(dataset or {})}, self._trainer(out, trainer)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def model_files(kind: str) -> list[str]:
    """The weights files a "gan", "dcgan" or "vae" run writes."""
    return ["vae.pt"] if kind == "vae" else ["generator.pt", "discriminator.pt"]


def losses(history: list[dict]) -> list[dict]:
    """A run's per-epoch rows without their timings: what two equal runs share."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def state_dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def weights(path: Path) -> dict:
    """The state_dict inside a generator.pt / discriminator.pt / vae.pt."""
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ---------------------------------------------------------------------------- running the scripts


def script_env() -> dict[str, str]:
    """The environment of a script subprocess: one thread, and no way to reach the network."""
    dead_proxy = "http://127.0.0.1:9"  # the discard port: any download attempt fails at once
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        http_proxy=dead_proxy,
        https_proxy=dead_proxy,
        HTTP_PROXY=dead_proxy,
        HTTPS_PROXY=dead_proxy,
        no_proxy="",
        NO_PROXY="",
    )
    return env


def script_command(script: str, *args: object) -> list[str]:
    return [sys.executable, str(REPO / script), *(str(a) for a in args)]


def run_script(script: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        script_command(script, *args), cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=timeout
    )


def run_main_in_process(module: types.ModuleType, argv: list[str], monkeypatch) -> None:
    """Call a main script's main(argv) on private copies of its module-level kwargs dicts
    (parse_overrides updates those dicts in place)."""
    for name, value in list(vars(module).items()):
        if name.endswith("_kwargs") and isinstance(value, dict):
            monkeypatch.setattr(module, name, copy.deepcopy(value))
    module.main(argv)


def cli_args(*dicts: dict) -> list[str]:
    """kwargs dicts -> ['--key-name', 'value', ...] as a user would type them."""
    args: list[str] = []
    for kwargs in dicts:
        for key, value in kwargs.items():
            args += ["--" + key.replace("_", "-"), str(value)]
    return args


# ---------------------------------------------------------------------------- CUDA graphs on a CPU


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on a CPU: capture runs the step's Python once, a replay
    runs none of it (as on a GPU) and is counted."""

    replays = 0

    def replay(self) -> None:
        FakeGraph.replays += 1


def fake_cuda_graphs(monkeypatch, trainers_take_them: bool = False) -> None:
    """Fake CUDA graphs (FakeGraph); `trainers_take_them`: trainers then replay steps as graphs on a CPU
    where their settings and declarations allow it, so that a graph, if taken, would freeze what it must not."""

    class Stream:
        def __init__(self, *args) -> None: ...

        def wait_stream(self, other) -> None: ...

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    FakeGraph.replays = 0
    if trainers_take_them:
        init = speed.Speed.__init__

        def graphs_as_asked(self, *args, cuda_graphs: bool = True, **kwargs) -> None:
            init(self, *args, cuda_graphs=cuda_graphs, **kwargs)
            self.cuda_graphs = cuda_graphs

        monkeypatch.setattr(speed.Speed, "__init__", graphs_as_asked)
