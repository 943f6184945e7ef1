"""Image folders as users have them: broken files, flat folders, mixed modes and sizes, 64x64, streamed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DatasetLoader, InMemoryLoader, find_images, load_images, make_loader, read_image
from helpers import FOLDER_CLASSES, Tiny, cli_args, folder_image, run_script, write_image_folder
from models import DCGANDiscriminator, DCGANGenerator
from trainers import train_gan
from utils import UserError

SHAPE = (3, 16, 16)


def _break(folder: Path) -> dict[str, Path]:
    """Three files that do not decode, among good ones: a truncated JPEG, an empty file, text named .jpg;
    and a file that is no image by its name (ignored)."""
    good = next(iter(sorted(folder.rglob("*.jpg"))))
    truncated = good.with_name("truncated.jpg")
    truncated.write_bytes(good.read_bytes()[:300])
    empty = good.with_name("empty.jpg")
    empty.write_bytes(b"")
    text = good.with_name("notes.jpg")
    text.write_text("not a picture\n")
    good.with_name("readme.txt").write_text("ignored: not an image name\n")
    return {"truncated": truncated, "empty": empty, "text": text}


@pytest.fixture
def broken_folder(image_folder: Path, tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "broken"
    shutil.copytree(image_folder, root)
    return root, _break(root)


@pytest.mark.parametrize("in_memory", [True, False])
def test_files_that_do_not_decode_are_named_and_skipped(
    broken_folder: tuple[Path, dict[str, Path]], in_memory: bool, capsys: pytest.CaptureFixture
) -> None:
    root, bad = broken_folder
    files, _, _ = find_images(root)
    loader = make_loader(SHAPE, "cpu", 0, True, dataset_type="image_folder", root=str(root), in_memory=in_memory)
    assert isinstance(loader, InMemoryLoader if in_memory else DatasetLoader)
    assert len(loader.labels) == len(files) - 3 == len(FOLDER_CLASSES) * 4
    assert sum(len(batch) for batch in loader.batches(0)) == len(files) - 3
    out = capsys.readouterr().out
    for path in bad.values():
        assert out.count(str(path)) == 1, out
    assert "readme.txt" not in out and "Traceback" not in out
    assert f"skipped 3 of {len(files)} image files" in out


@pytest.mark.parametrize("in_memory", [True, False])
def test_on_bad_image_error_stops_with_one_line_naming_the_first(
    broken_folder: tuple[Path, dict[str, Path]], in_memory: bool
) -> None:
    root, bad = broken_folder
    first = min(bad.values())  # files are read in sorted order
    with pytest.raises(UserError) as info:
        make_loader(
            SHAPE,
            "cpu",
            0,
            True,
            dataset_type="image_folder",
            root=str(root),
            in_memory=in_memory,
            on_bad_image="error",
        )
    message = str(info.value)
    assert str(first) in message and "\n" not in message and "on_bad_image='skip'" in message
    with pytest.raises(UserError, match="on_bad_image must be one of skip, error"):
        make_loader(SHAPE, "cpu", 0, True, dataset_type="image_folder", root=str(root), on_bad_image="ignore")


def test_streamed_batches_equal_the_in_memory_ones_with_bad_files(
    broken_folder: tuple[Path, dict[str, Path]],
) -> None:
    root, _ = broken_folder
    kwargs = {"dataset_type": "image_folder", "root": str(root), "batch_size": 5}
    held = make_loader(SHAPE, "cpu", 3, True, **kwargs, in_memory=True)
    streamed = make_loader(SHAPE, "cpu", 3, True, **kwargs, in_memory=False, num_workers=2)
    assert torch.equal(held.labels, streamed.labels)
    for epoch in (0, 1):
        for a, b in zip(held.batches(epoch), streamed.batches(epoch), strict=True):
            assert torch.equal(a, b)


def test_a_file_that_fails_after_the_check_stops_with_one_line(image_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    shutil.copytree(image_folder, root)
    loader = make_loader(SHAPE, "cpu", 0, True, dataset_type="image_folder", root=str(root), in_memory=False)
    victim = sorted(root.rglob("*.jpg"))[0]
    victim.write_bytes(b"")  # broken between the check and the epoch
    with pytest.raises(UserError) as info:
        list(loader.batches(0))
    assert str(victim) in str(info.value) and "\n" not in str(info.value)


def test_a_flat_folder_is_one_unlabelled_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        folder_image(FOLDER_CLASSES[i % 3], rng).save(tmp_path / f"{i}.png")
    files, labels, classes = find_images(tmp_path)
    assert len(files) == 6 and set(labels) == {0} and classes == []
    images, labels = load_images("image_folder", str(tmp_path), image_shape=SHAPE)
    assert images.shape == (6, *SHAPE) and (labels == 0).all()
    with pytest.raises(UserError, match="without class subfolders: it has no classes"):
        load_images("image_folder", str(tmp_path), image_shape=SHAPE, classes=[0])


def test_a_root_with_class_folders_and_loose_images_says_what_it_did(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "mixed"
    shutil.copytree(image_folder, root)
    folder_image("red_square", np.random.default_rng(0)).save(root / "loose.jpg")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "._0.jpg").write_bytes(b"\0\5\26\7")  # macOS metadata beside a copied file: hidden, left out
    files, labels, classes = find_images(root)
    assert classes == list(FOLDER_CLASSES) and root / "loose.jpg" not in files
    assert "1 images beside them" in capsys.readouterr().out


def _odd_images(folder: Path) -> dict[str, Image.Image]:
    """One image per mode a folder may hold, each of another size."""
    rgb = Image.new("RGB", (30, 20), (200, 40, 10))
    transparent = Image.new("RGBA", (20, 30), (255, 0, 0, 0))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    deep = Image.fromarray(np.full((24, 24), 65535, dtype=np.uint16))  # 16-bit white
    images = {
        "grey.png": rgb.convert("L"),
        "bilevel.png": rgb.convert("1"),
        "transparent.png": transparent,
        "grey_alpha.png": rgb.convert("LA"),
        "palette.gif": palette,
        "cmyk.jpg": Image.new("CMYK", (17, 40), (0, 0, 0, 0)),  # no ink: white
        "deep.png": deep,
        "large.jpg": rgb.resize((300, 200)),
    }
    for name, image in images.items():
        image.save(folder / name)
    return images


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 12)])
def test_every_mode_and_size_becomes_the_models_channels_and_size(tmp_path: Path, shape: tuple) -> None:
    images = _odd_images(tmp_path)
    loaded, _ = load_images("image_folder", str(tmp_path), image_shape=shape)
    assert loaded.shape == (len(images), *shape) and loaded.dtype == torch.uint8
    by_name = dict(zip([p.name for p in find_images(tmp_path)[0]], loaded, strict=True))
    assert (by_name["deep.png"] == 255).all()  # 16 bits scaled to 8, not clipped
    assert (by_name["transparent.png"] == 255).all()  # transparent pixels over white
    assert (by_name["cmyk.jpg"] >= 250).all()


def test_sixteen_bit_grey_keeps_its_levels(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = read_image(tmp_path / "ramp.png", (1, 16, 16))
    expected = torch.from_numpy(np.round(ramp / 65535 * 255).astype(np.uint8))
    assert (image[0].int() - expected.int()).abs().max() <= 1


def test_a_dcgan_trains_at_64x64_on_a_flat_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(12):
        folder_image(FOLDER_CLASSES[i % 3], rng).resize((80, 72)).save(folder / f"{i:03d}.jpg")
    model = {"latent_dim": 8, "feature_maps": 4, "image_channels": 3, "image_size": 64}
    dataset = {"dataset_type": "image_folder", "root": str(folder), "batch_size": 4}
    trainer = {"num_epochs": 1, "output_dir": str(tmp_path / "out"), "device": "cpu", "metrics_features": "classifier"}
    run = train_gan(DCGANGenerator, DCGANDiscriminator, model, dataset, trainer)
    assert run.generator(torch.randn(2, 8)).shape == (2, 3, 64, 64)
    assert (tmp_path / "out" / "generated_image_epoch_1.png").is_file()
    assert Image.open(tmp_path / "out" / "generated_image_epoch_1.png").size[0] > 64 * 8
    out = capsys.readouterr().out
    assert "note: generator metrics skipped" in out  # no labels here for a classifier, and no Inception weights


def test_main_dcgan_on_a_flat_folder_with_a_truncated_jpeg(tiny: Tiny, tmp_path: Path) -> None:
    """The issue's check: the run trains and names the bad file; with --on-bad-image error it stops in one line."""
    folder = tmp_path / "flat"
    write_image_folder(tmp_path / "classes", per_class=4)
    folder.mkdir()
    for i, path in enumerate(sorted((tmp_path / "classes").rglob("*.jpg"))):
        shutil.copy(path, folder / f"{i:04d}.jpg")
    truncated = folder / "0005.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    model, dataset, trainer = tiny.dcgan(tmp_path / "out", {"root": str(folder)}, num_epochs=1)
    args = cli_args(model, dataset, trainer)
    result = run_script("main_dcgan.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(truncated) in result.stdout and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "generator.pt").is_file()
    result = run_script("main_dcgan.py", *args, "--on-bad-image", "error", "--output-dir", tmp_path / "out2")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and str(truncated) in result.stderr
