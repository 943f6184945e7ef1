"""Loading data (real IDX files and an image folder) and serving batches from memory."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import datasets
from datasets import DatasetLoader, InMemoryLoader, fit_to_shape, held_out_folder, load_images, make_loader
from helpers import FOLDER_CLASSES, FOLDER_PER_CLASS, N_TEST, N_TRAIN, write_image_folder
from utils import UserError

# ---------------------------------------------------------------------------- MNIST from IDX files


def test_mnist_train_split_is_read_exactly(mnist: types.SimpleNamespace) -> None:
    images, labels = load_images("mnist", str(mnist.root), train=True)
    assert images.shape == (N_TRAIN, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (N_TRAIN,) and labels.dtype == torch.int64
    assert torch.equal(images[:, 0], torch.from_numpy(mnist.train_images))
    assert torch.equal(labels, torch.from_numpy(mnist.train_labels).long())


def test_mnist_test_split_is_the_t10k_files(mnist: types.SimpleNamespace) -> None:
    images, labels = load_images("mnist", str(mnist.root), train=False)
    assert images.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(images[:, 0], torch.from_numpy(mnist.test_images))
    assert torch.equal(labels, torch.from_numpy(mnist.test_labels).long())


def test_mnist_max_samples_keeps_the_first(mnist: types.SimpleNamespace) -> None:
    images, labels = load_images("mnist", str(mnist.root), max_samples=37)
    assert images.shape == (37, 1, 28, 28)
    assert torch.equal(images[:, 0], torch.from_numpy(mnist.train_images[:37]))
    assert labels.tolist() == mnist.train_labels[:37].tolist()


def test_mnist_classes_filter_by_index_and_name(mnist: types.SimpleNamespace) -> None:
    images, labels = load_images("mnist", str(mnist.root), classes=[1, 7])
    expected = [i for i, label in enumerate(mnist.train_labels.tolist()) if label in (1, 7)]
    assert set(labels.tolist()) == {1, 7} and len(labels) == len(expected)
    assert torch.equal(images[:, 0], torch.from_numpy(mnist.train_images[expected]))
    by_name, name_labels = load_images("mnist", str(mnist.root), classes=["1 - one", "7 - seven"])
    assert torch.equal(by_name, images) and torch.equal(name_labels, labels)
    # classes first, then max_samples: the first 5 images *of those classes*
    few, few_labels = load_images("mnist", str(mnist.root), classes=[3], max_samples=5)
    assert few.shape[0] == 5 and set(few_labels.tolist()) == {3}


def test_mnist_unknown_class_is_a_user_error(mnist: types.SimpleNamespace) -> None:
    with pytest.raises(UserError, match="unknown class 42"):
        load_images("mnist", str(mnist.root), classes=[42])


def test_mnist_converted_to_a_model_shape(mnist: types.SimpleNamespace) -> None:
    images, _ = load_images("mnist", str(mnist.root), image_shape=(3, 32, 32), max_samples=8)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])  # grey -> RGB
    assert images.max() > 200 and images.min() == 0  # still strokes on black


def test_make_loader_test_split_ignores_max_samples_and_is_not_shuffled(mnist: types.SimpleNamespace) -> None:
    loader = make_loader((1, 28, 28), "cpu", 0, False, root=str(mnist.root), max_samples=10, batch_size=50)
    assert len(loader.images) == N_TEST and len(loader) == 3
    first = next(loader.batches(5))
    expected = torch.from_numpy(mnist.test_images[:50]).float().unsqueeze(1) * (2 / 255) - 1
    assert torch.allclose(first, expected)


# ---------------------------------------------------------------------------- image folders


def test_image_folder_rgb_resized_and_cropped(image_folder: Path) -> None:
    images, labels = load_images("image_folder", str(image_folder), image_shape=(3, 32, 32))
    n = len(FOLDER_CLASSES) * FOLDER_PER_CLASS
    assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert labels.tolist() == [c for c in range(len(FOLDER_CLASSES)) for _ in range(FOLDER_PER_CLASS)]
    # Channel order survives: blue discs are mostly blue, green bars green, red squares red.
    means = images.float().mean(dim=(2, 3))  # (N, 3) mean R, G, B
    for c, dominant in enumerate([2, 1, 0]):
        per_class = means[labels == c].mean(0)
        assert per_class.argmax().item() == dominant, (FOLDER_CLASSES[c], per_class)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64), (1, 16, 16)])
def test_image_folder_any_model_shape(image_folder: Path, shape: tuple[int, int, int]) -> None:
    images, _ = load_images("image_folder", str(image_folder), image_shape=shape)
    assert images.shape == (len(FOLDER_CLASSES) * FOLDER_PER_CLASS, *shape)
    assert images.max() > 100  # the bright shapes are still there


def test_image_folder_max_samples_spreads_over_classes(image_folder: Path) -> None:
    images, labels = load_images("image_folder", str(image_folder), image_shape=(3, 8, 8), max_samples=6)
    assert images.shape[0] == 6
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_image_folder_classes_by_name_and_index(image_folder: Path) -> None:
    _, labels = load_images("image_folder", str(image_folder), image_shape=(3, 8, 8), classes=["red_square"])
    assert labels.tolist() == [2] * FOLDER_PER_CLASS
    _, labels = load_images("image_folder", str(image_folder), image_shape=(3, 8, 8), classes=[0, 1])
    assert sorted(set(labels.tolist())) == [0, 1] and len(labels) == 2 * FOLDER_PER_CLASS


def test_image_folder_errors(image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="image shape"):
        load_images("image_folder", str(image_folder))
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="image folder .*nowhere.* not found"):
        load_images("image_folder", str(missing), image_shape=(3, 8, 8))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images in"):
        load_images("image_folder", str(tmp_path / "empty"), image_shape=(3, 8, 8))
    with pytest.raises(UserError, match="unknown class 'cat'"):
        load_images("image_folder", str(image_folder), image_shape=(3, 8, 8), classes=["cat"])


def test_image_folder_test_split_is_the_test_folder_beside_train(tmp_path: Path) -> None:
    train, test = tmp_path / "data" / "train", tmp_path / "data" / "test"
    write_image_folder(train, per_class=4, seed=0)
    write_image_folder(test, per_class=2, seed=1)
    assert held_out_folder(train) == test and held_out_folder(str(train)) == test
    test_images, test_labels = load_images("image_folder", str(test), image_shape=(3, 8, 8))
    images, labels = load_images("image_folder", str(train), train=False, image_shape=(3, 8, 8))
    assert torch.equal(images, test_images) and torch.equal(labels, test_labels)
    # The test split is the whole test folder, in file order, whatever max_samples says of the training set.
    loader = make_loader((3, 8, 8), "cpu", 0, False, dataset_type="image_folder", root=str(train), max_samples=3)
    assert torch.equal(loader.images, test_images) and len(loader.order(0)) == len(test_images)
    assert loader.order(0).tolist() == list(range(len(test_images)))


def test_image_folder_without_a_test_folder_tests_on_its_own_images(image_folder: Path, tmp_path: Path) -> None:
    assert held_out_folder(image_folder) is None  # not named train
    write_image_folder(tmp_path / "train")
    (tmp_path / "test" / FOLDER_CLASSES[0]).mkdir(parents=True)  # other classes than train's: not its test split
    assert held_out_folder(tmp_path / "train") is None
    images, _ = load_images("image_folder", str(tmp_path / "train"), train=True, image_shape=(3, 8, 8))
    test_images, _ = load_images("image_folder", str(tmp_path / "train"), train=False, image_shape=(3, 8, 8))
    assert torch.equal(images, test_images)


def test_unknown_dataset_type() -> None:
    with pytest.raises(UserError, match="unknown dataset_type 'imagenet'.*image_folder"):
        load_images("imagenet", "data")


# ---------------------------------------------------------------------------- missing data, offline


@pytest.mark.parametrize(
    ("dataset_type", "folder", "extra"),
    [
        ("mnist", "MNIST/raw", ""),
        ("fashion_mnist", "FashionMNIST/raw", ""),
        ("cifar10", "cifar-10-batches-py", "image_folder"),
    ],
)
def test_missing_data_offline_names_the_folder(tmp_path: Path, dataset_type: str, folder: str, extra: str) -> None:
    root = tmp_path / "empty_root"
    root.mkdir()
    with pytest.raises(UserError) as info:
        load_images(dataset_type, str(root))
    message = str(info.value)
    assert str(root / folder) in message
    assert "download failed" in message and "downloads are disabled" in message
    assert "\n" not in message
    assert extra in message


def test_fit_to_shape_rgb_to_grey_and_resize() -> None:
    red = torch.zeros(2, 3, 10, 10, dtype=torch.uint8)
    red[:, 0] = 255
    grey = fit_to_shape(red, (1, 10, 10))
    assert grey.shape == (2, 1, 10, 10) and grey.dtype == torch.uint8
    assert (grey == round(0.299 * 255)).all()  # ITU-R 601 luma
    bigger = fit_to_shape(red, (3, 20, 20))
    assert bigger.shape == (2, 3, 20, 20) and (bigger[:, 0] == 255).all() and (bigger[:, 1:] == 0).all()


# ---------------------------------------------------------------------------- InMemoryLoader


def _loader(n: int = 50, batch_size: int = 16, seed: int = 0, shuffle: bool = True, normalize: bool = True):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    images[0] = 0
    images[-1] = 255  # both ends of the pixel range are present
    return InMemoryLoader(images, torch.arange(n), batch_size, shuffle, normalize, seed)


def _ids(batch: torch.Tensor, normalize: bool = False) -> list[int]:
    pixels = (batch[:, 0, 0, 0] + 1) / (2 / 255) if normalize else batch[:, 0, 0, 0] * 255
    return pixels.round().long().tolist()


@pytest.mark.parametrize(("normalize", "low", "high"), [(True, -1.0, 1.0), (False, 0.0, 1.0)])
def test_loader_value_range(normalize: bool, low: float, high: float) -> None:
    batches = list(_loader(normalize=normalize).batches(1))
    everything = torch.cat(batches)
    assert everything.dtype == torch.float32
    assert everything.min().item() == pytest.approx(low) and everything.max().item() == pytest.approx(high)


def test_loader_batch_count_and_every_image_once_per_epoch() -> None:
    loader = _loader(n=50, batch_size=16)
    assert len(loader) == 4
    batches = list(loader.batches(3))
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert all(b.shape[1:] == (1, 2, 2) for b in batches)
    ids = [i for b in batches for i in _ids(b, normalize=True)]
    assert ids != sorted(ids)  # shuffled
    assert sorted(ids) == [0, *range(1, 49), 255]  # but each image exactly once


def test_loader_order_depends_only_on_seed_and_epoch() -> None:
    a, b = _loader(seed=3), _loader(seed=3)
    torch.manual_seed(123)  # the global RNG must play no part
    order_a = [_ids(x, True) for x in a.batches(2)]
    torch.manual_seed(456)
    order_b = [_ids(x, True) for x in b.batches(2)]
    assert order_a == order_b
    assert [_ids(x, True) for x in a.batches(3)] != order_a
    assert [_ids(x, True) for x in _loader(seed=4).batches(2)] != order_a
    assert torch.equal(a.order(2), b.order(2))


def test_loader_start_skips_batches() -> None:
    loader = _loader(n=50, batch_size=8)
    full = list(loader.batches(5))
    tail = list(loader.batches(5, start=3))
    assert len(tail) == len(full) - 3
    assert all(torch.equal(x, y) for x, y in zip(tail, full[3:], strict=True))
    assert list(loader.batches(5, start=len(loader))) == []


def test_loader_without_shuffle_keeps_file_order() -> None:
    loader = _loader(n=20, batch_size=8, shuffle=False, normalize=False)
    ids = [i for b in loader.batches(7) for i in _ids(b)]
    assert ids == [0, *range(1, 19), 255]


def test_make_loader_from_dataset_kwargs(mnist: types.SimpleNamespace) -> None:
    loader = make_loader(
        (1, 28, 28), "cpu", 0, True, root=str(mnist.root), batch_size=32, max_samples=100, normalize=False, classes=4
    )
    assert len(loader.images) == 100 and len(loader) == 4
    assert set(loader.labels.tolist()) == {4}
    batch = next(loader.batches(1))
    assert batch.shape == (32, 1, 28, 28) and 0 <= batch.min() and batch.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"max_samples": 0}, "max_samples must be positive"),
        ({"num_workers": -1}, "num_workers must be 0 or more"),
    ],
)
def test_make_loader_rejects_bad_numbers(mnist: types.SimpleNamespace, kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        make_loader((1, 28, 28), "cpu", 0, True, root=str(mnist.root), **kwargs)


# ---------------------------------------------------------------------------- the two data paths


def _both_paths(**kwargs) -> tuple[InMemoryLoader, DatasetLoader]:
    memory = make_loader(in_memory=True, **kwargs)
    streamed = make_loader(in_memory=False, **kwargs)
    assert type(memory) is InMemoryLoader and type(streamed) is DatasetLoader
    return memory, streamed


def _same_epochs(a, b, epochs=(1, 2, 7), start: int = 0) -> None:
    for epoch in epochs:
        left, right = list(a.batches(epoch, start)), list(b.batches(epoch, start))
        assert len(left) == len(right) == len(a) - start == len(b) - start
        assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(left, right, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_image_folder_both_paths_give_the_same_batches(image_folder: Path, num_workers: int) -> None:
    kwargs = dict(dataset_type="image_folder", root=str(image_folder), batch_size=5, num_workers=num_workers)
    memory, streamed = _both_paths(image_shape=(3, 16, 16), device="cpu", seed=3, train=True, **kwargs)
    assert len(memory) == len(streamed) == 3  # 12 images: 5 + 5 + 2
    _same_epochs(memory, streamed)
    _same_epochs(memory, streamed, start=1)  # resuming mid-epoch
    assert list(streamed.batches(1, start=len(streamed))) == []
    assert torch.equal(memory.labels, streamed.labels)
    assert len(streamed.images) == len(memory.images) and torch.equal(streamed.images[:7], memory.images[:7])
    assert torch.equal(streamed.images[4], memory.images[4])
    # The unshuffled view (what the VAE evaluates an image folder on) matches too.
    _same_epochs(memory.in_file_order(4), streamed.in_file_order(4), epochs=(0,))


@pytest.mark.parametrize("normalize", [True, False])
def test_mnist_both_paths_give_the_same_batches(mnist: types.SimpleNamespace, normalize: bool) -> None:
    kwargs = dict(dataset_type="mnist", root=str(mnist.root), batch_size=48, max_samples=200, normalize=normalize)
    memory, streamed = _both_paths(image_shape=(1, 28, 28), device="cpu", seed=1, train=True, **kwargs)
    _same_epochs(memory, streamed, epochs=(1, 2))
    _same_epochs(memory, streamed, epochs=(2,), start=3)
    test_memory, test_streamed = _both_paths(image_shape=(1, 28, 28), device="cpu", seed=1, train=False, **kwargs)
    assert len(test_streamed.images) == N_TEST
    _same_epochs(test_memory, test_streamed, epochs=(5,))


def test_in_memory_auto_follows_the_size_budget(image_folder: Path, monkeypatch, capsys) -> None:
    kwargs = dict(image_shape=(3, 8, 8), device="cpu", seed=0, train=True, dataset_type="image_folder")
    assert type(make_loader(root=str(image_folder), **kwargs)) is InMemoryLoader
    assert "in-memory budget" not in capsys.readouterr().out
    monkeypatch.setattr(datasets, "in_memory_budget", lambda: 12 * 3 * 8 * 8 - 1)  # one byte short
    assert type(make_loader(root=str(image_folder), **kwargs)) is DatasetLoader
    assert "more than the in-memory budget" in capsys.readouterr().out
    assert type(make_loader(root=str(image_folder), in_memory=True, **kwargs)) is InMemoryLoader
    assert 0 < datasets.in_memory_budget() <= datasets.IN_MEMORY_LIMIT


def test_in_memory_must_be_true_false_or_auto(mnist: types.SimpleNamespace) -> None:
    with pytest.raises(UserError, match="in_memory must be True, False or 'auto', got 'yes'"):
        make_loader((1, 28, 28), "cpu", 0, True, root=str(mnist.root), in_memory="yes")
