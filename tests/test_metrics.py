"""Quality metrics: their values on known feature sets, the classifier and its cache, and trainers writing
metrics.csv / metrics.json without disturbing training."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.linalg
import torch

from benchmarks import quality
from datasets import to_float
from helpers import (
    FOLDER_CLASSES,
    Tiny,
    digit_like_images,
    folder_image,
    read_csv,
    state_dicts_equal,
    weights,
    write_idx,
)
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator, SmallCNN
from trainers import train_gan, train_vae
from trainers.base import Trainer
from trainers.classifier import CIFAR10_CLASSES, Unsupported, data_source, default_cache_dir, get_classifier
from trainers.metrics import (
    GENERATOR_METRICS,
    class_entropy_bits,
    classifier_score,
    fit_to_classifier,
    frechet_distance,
    kernel_distance,
    kid_real_terms,
    knn_radii,
    make_generator_evaluator,
    precision_recall,
)
from utils import UserError, load_model


def _features(n: int = 400, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim))


def _one_hot(labels: list[int], num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes)[labels]


# ---------------------------------------------------------------------------- the metrics on known sets


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    a = _features()
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    # Same covariance: only the squared shift of the mean remains, 8 dims x 0.5^2.
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)
    assert frechet_distance(a, a + 1.0) > frechet_distance(a, a + 0.5) > frechet_distance(a, _features(seed=1))
    # Scaling by 2: |mu|^2 + Tr(S + 4S - 2 * 2S) = |mu|^2 + Tr(S), which checks the matrix square root.
    expected = (a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_survives_singular_covariances() -> None:
    a = np.repeat(_features(n=5), 20, axis=0)  # 5 distinct points in 8 dimensions: rank-deficient
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert math.isfinite(frechet_distance(a, a + 1))


def test_kernel_distance_is_about_zero_for_identical_sets_and_large_for_shifted_ones() -> None:
    a = _features()
    same = kernel_distance(a, a, subsets=20, subset_size=200)
    shifted = kernel_distance(a, a + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.02 * shifted
    assert kernel_distance(a, a + 0.5, subsets=20, subset_size=200) < shifted
    assert kernel_distance(a, a + 1.0, subsets=20, subset_size=200) == shifted  # seeded subsets: repeatable


def test_classifier_score_and_class_entropy() -> None:
    balanced = 50 * _one_hot(list(range(10)) * 5)  # logits: certain of one class per image
    collapsed = 50 * _one_hot([3] * 50)
    assert classifier_score(balanced) == pytest.approx(10, rel=1e-6)
    assert classifier_score(collapsed) == pytest.approx(1, rel=1e-6)
    assert classifier_score(np.zeros((50, 10))) == pytest.approx(1, rel=1e-6)  # unsure of every image
    assert class_entropy_bits(balanced) == pytest.approx(math.log2(10))
    assert class_entropy_bits(collapsed) == 0
    assert class_entropy_bits(_one_hot([0, 1] * 25)) == pytest.approx(1)


def test_precision_and_recall() -> None:
    real = _features()
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)
    partial = precision_recall(real, _features(seed=1) + 0.5)
    assert all(0 <= value <= 1 for value in partial) and 0 < partial[0] < 1
    # Mode collapse: every fake sits on one real point: all plausible (precision 1), little covered (recall low).
    collapsed = np.repeat(real[:1], len(real), axis=0)
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.05


def test_precision_and_recall_are_torch_fidelitys_numbers_with_the_real_radii_cached() -> None:
    """The blockwise computation (real radii computed once) gives torch-fidelity's metric_prc exactly."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(3)
    for n, shift in ((2500, 0.2), (700, 0.0)):  # 2500: more than one block of rows
        real, fake = rng.normal(size=(n, 32)), 1.1 * rng.normal(size=(n, 32)) + shift
        library = prc_features_to_metric(torch.from_numpy(fake).float(), torch.from_numpy(real).float(), verbose=False)
        expected = (library["precision"], library["recall"])
        assert precision_recall(real, fake) == expected
        assert precision_recall(real, fake, real_radii=knn_radii(real)) == expected


def test_kernel_distance_is_torch_fidelitys_number() -> None:
    """The same seeded subsets and sums as torch-fidelity's kid_features_to_metric, the kernel in torch."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(1500, 24)), 1.2 * rng.normal(size=(1300, 24)) + 0.1
    for subsets, size, seed in ((7, 400, 0), (3, 1300, 5)):
        library = kid_features_to_metric(
            torch.from_numpy(real),
            torch.from_numpy(fake),
            kid_subsets=subsets,
            kid_subset_size=size,
            rng_seed=seed,
            verbose=False,
        )[KEY_METRIC_KID_MEAN]
        assert kernel_distance(real, fake, subsets=subsets, subset_size=size, seed=seed) == pytest.approx(
            library, rel=1e-9
        )


def test_kernel_distance_with_the_real_sums_given_is_the_same_number() -> None:
    """The real-real kernel sums depend on the real set and the draws only: given (as the evaluator caches
    them), the KID is the one computed from scratch, bit for bit."""
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(300, 16)), 1.1 * rng.normal(size=(250, 16))
    draws = {"subsets": 6, "subset_size": 120, "seed": 3}
    terms = kid_real_terms(real, len(fake), **draws)
    assert kernel_distance(real, fake, **draws, real_terms=terms) == kernel_distance(real, fake, **draws)
    assert kernel_distance(real, fake, **draws, real_terms=terms + 1.0) != kernel_distance(real, fake, **draws)


def test_library_metrics_equal_the_formulas_they_replaced() -> None:
    """The metrics are torch-fidelity's; on the same features they equal the formulas this repository
    computed itself before (written out here in numpy/scipy) to 1e-3 relative."""
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(600, 16)), 1.2 * rng.normal(size=(600, 16)) + 0.3
    mean_r, mean_f, cov_r, cov_f = real.mean(0), fake.mean(0), np.cov(real.T), np.cov(fake.T)
    fd = ((mean_r - mean_f) ** 2).sum() + np.trace(cov_r + cov_f - 2 * scipy.linalg.sqrtm(cov_r @ cov_f).real)
    assert frechet_distance(real, fake) == pytest.approx(fd, rel=1e-3)

    # KID over the whole sets (one subset of every sample): unbiased MMD^2 with (x.y / D + 1)^3.
    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / a.shape[1] + 1) ** 3

    n = len(real)
    k_rr, k_ff = kernel(real, real), kernel(fake, fake)
    mmd = (k_rr.sum() - np.trace(k_rr) + k_ff.sum() - np.trace(k_ff)) / (n * (n - 1)) - 2 * kernel(real, fake).mean()
    assert kernel_distance(real, fake, subsets=1, subset_size=n) == pytest.approx(mmd, rel=1e-3)

    # Precision and recall: inside the k = 3 nearest-neighbour ball of any point of the other set.
    def inside(points: np.ndarray, balls: np.ndarray) -> float:
        within = ((balls[:, None] - balls[None]) ** 2).sum(-1)
        radii = np.sort(within, 1)[:, 3]  # the 3rd neighbour, the point itself being the 0th
        return float((((points[:, None] - balls[None]) ** 2).sum(-1) <= radii).any(1).mean())

    assert precision_recall(real, fake) == pytest.approx((inside(fake, real), inside(real, fake)), rel=1e-3)

    logits = 3 * rng.normal(size=(600, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    score = np.exp((probs * (np.log(probs) - np.log(probs.mean(0)))).sum(1).mean())
    assert classifier_score(logits) == pytest.approx(score, rel=1e-3)


def test_fit_to_classifier_converts_shape_and_colour() -> None:
    grey = torch.rand(2, 1, 32, 32)
    assert fit_to_classifier(grey, (1, 28, 28)).shape == (2, 1, 28, 28)
    colour = fit_to_classifier(grey, (3, 32, 32))
    assert colour.shape == (2, 3, 32, 32) and torch.equal(colour[:, 0], colour[:, 2])
    back = fit_to_classifier(torch.rand(2, 3, 28, 28), (1, 28, 28))
    assert back.shape == (2, 1, 28, 28) and 0 <= back.min() and back.max() <= 1


# ---------------------------------------------------------------------------- which classifier, and its cache


def _cifar_like(root: Path, with_test: bool = True) -> Path:
    for split in ("train", "test") if with_test else ("train",):
        for name in CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
    return root / "train"


def test_data_source_picks_a_classifier_or_refuses(tmp_path: Path, image_folder: Path) -> None:
    assert data_source({"dataset_type": "mnist", "root": str(tmp_path)}).name == "mnist"
    assert data_source({"dataset_type": "fashion_mnist", "root": str(tmp_path)}).name == "fashion_mnist"
    source = data_source({"dataset_type": "image_folder", "root": str(_cifar_like(tmp_path / "c"))})
    assert (source.name, Path(source.test_root)) == ("cifar10", tmp_path / "c" / "test")
    assert source.cache_dir == tmp_path / "c" / "classifiers"  # beside the folder: inside, it would be a class
    with pytest.raises(Unsupported, match="CIFAR-10's ten classes"):
        data_source({"dataset_type": "image_folder", "root": str(image_folder)})
    with pytest.raises(Unsupported, match="no test split"):
        data_source({"dataset_type": "image_folder", "root": str(_cifar_like(tmp_path / "d", with_test=False))})


def test_cache_folder_respects_read_only_data_and_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CLASSIFIER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    assert default_cache_dir(data) == data / "classifiers"
    data.chmod(0o555)  # read-only by intent, even for root
    try:
        chosen = default_cache_dir(data)
    finally:
        data.chmod(0o755)
    assert chosen.parent == tmp_path / "cache" / "gan-quality-classifiers"
    monkeypatch.setenv("CLASSIFIER_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir(data).parent == tmp_path / "mine"


@pytest.fixture()
def small_mnist(tmp_path: Path) -> Path:
    root = tmp_path / "small"
    write_idx(root / "MNIST" / "raw", "train", *digit_like_images(300, seed=2))
    write_idx(root / "MNIST" / "raw", "t10k", *digit_like_images(60, seed=3))
    return root


def test_a_classifier_in_a_read_only_data_folder_is_used(
    small_mnist: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("CLASSIFIER_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataset = {"dataset_type": "mnist", "root": str(small_mnist)}
    _, record = get_classifier(data_source(dataset), epochs=1, max_samples=256)  # cached in small/classifiers
    folders = (small_mnist / "classifiers", small_mnist)
    for folder in folders:
        folder.chmod(0o555)  # now read-only, like a shared copy of the data
    try:
        source = data_source(dataset)
        capsys.readouterr()
        _, again = get_classifier(source, epochs=1, max_samples=256)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert source.cache_dir.parent == tmp_path / "cache" / "gan-quality-classifiers"  # new files would go here
    assert again == record and "training" not in capsys.readouterr().out  # but the shipped one is read


def test_classifier_cache_round_trip(small_mnist: Path, capsys) -> None:
    source = data_source({"dataset_type": "mnist", "root": str(small_mnist)})
    model, record = get_classifier(source, epochs=1, max_samples=256)
    assert "training the mnist classifier" in capsys.readouterr().out
    assert source.cache_path.is_file() and source.cache_path.stat().st_size < 1 << 20
    saved = json.loads(source.cache_path.with_suffix(".json").read_text())
    assert saved == record and 0 <= saved["test_accuracy"] <= 1
    assert (saved["num_train"], saved["num_test"], saved["epochs"]) == (256, 60, 1)

    again, record_again = get_classifier(source, epochs=1, max_samples=256)
    assert "training" not in capsys.readouterr().out  # from the cache
    assert record_again == record and state_dicts_equal(again.state_dict(), model.state_dict())
    assert isinstance(load_model(source.cache_path), SmallCNN)  # a self-describing weights file

    get_classifier(source, epochs=2, max_samples=256)
    assert "another budget" in capsys.readouterr().out  # a cache of another budget is not reused


def test_a_torn_cache_is_retrained(small_mnist: Path, capsys) -> None:
    source = data_source({"dataset_type": "mnist", "root": str(small_mnist)})
    source.cache_dir.mkdir()
    source.cache_path.write_bytes(b"not a checkpoint")
    get_classifier(source, epochs=1, max_samples=64)
    assert "cannot use" in capsys.readouterr().out
    assert isinstance(load_model(source.cache_path), SmallCNN)


@pytest.fixture(scope="module")
def evaluator(mnist: types.SimpleNamespace):
    """The evaluator the trainers build for the tiny MNIST (its classifier at the default budget)."""
    return make_generator_evaluator({"dataset_type": "mnist", "root": str(mnist.root)}, (1, 28, 28))


def test_real_features_are_computed_once_per_data_classifier_and_protocol(small_mnist: Path, monkeypatch) -> None:
    """The second evaluator reads the real images' features from the cache without loading an image, and
    scores a generator exactly as the first did; other classes, another image count or changed data files
    are other cache entries."""
    dataset = {"dataset_type": "mnist", "root": str(small_mnist)}
    first = make_generator_evaluator(dataset, (1, 28, 28), classifier_max_samples=256)
    cached = list((data_source(dataset).cache_dir / "real_features").glob("*.npz"))
    assert len(cached) == 1

    def no_loading(*args, **kwargs):
        raise AssertionError("the real images were loaded again")

    with monkeypatch.context() as patch:
        patch.setattr("trainers.metrics.load_real_test", no_loading)
        second = make_generator_evaluator(dataset, (1, 28, 28), classifier_max_samples=256)
    torch.manual_seed(0)
    generator = FCGenerator(8, 16).eval()
    sample = lambda z: (generator(z).view(-1, 1, 28, 28) + 1) / 2  # noqa: E731
    assert first.evaluate_generator(sample, 8) == second.evaluate_generator(sample, 8)
    assert np.array_equal(first.real_features, second.real_features) and first.protocol() == second.protocol()
    make_generator_evaluator({**dataset, "classes": [1, 7]}, (1, 28, 28), classifier_max_samples=256)
    make_generator_evaluator(dataset, (1, 28, 28), max_images=32, classifier_max_samples=256)
    labels = small_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes())  # the same bytes, written again: the files may have changed
    make_generator_evaluator(dataset, (1, 28, 28), classifier_max_samples=256)
    assert len(list((data_source(dataset).cache_dir / "real_features").glob("*.npz"))) == 4


def test_kid_sums_cached_for_one_seed_serve_no_other(small_mnist: Path) -> None:
    """The real features' cache holds KID's real-real sums for the seed that wrote it; an evaluator of another
    seed reading that file scores exactly as one that wrote its own."""
    dataset = {"dataset_type": "mnist", "root": str(small_mnist)}
    torch.manual_seed(0)
    generator = FCGenerator(8, 16).eval()
    sample = lambda z: (generator(z).view(-1, 1, 28, 28) + 1) / 2  # noqa: E731
    scores = {}
    for seed in (0, 1):  # each first writes the cache, then reads the other seed's
        for written in (data_source(dataset).cache_dir / "real_features").glob("*.npz"):
            written.unlink()
        scores[seed, "own"] = make_generator_evaluator(dataset, (1, 28, 28), seed=seed, classifier_max_samples=256)
        scores[1 - seed, "other"] = make_generator_evaluator(
            dataset, (1, 28, 28), seed=1 - seed, classifier_max_samples=256
        )
    for seed in (0, 1):
        assert scores[seed, "own"].evaluate_generator(sample, 8) == scores[seed, "other"].evaluate_generator(sample, 8)


def test_a_features_cache_written_before_kids_sums_were_kept_gets_them(small_mnist: Path, monkeypatch) -> None:
    dataset = {"dataset_type": "mnist", "root": str(small_mnist)}
    first = make_generator_evaluator(dataset, (1, 28, 28), classifier_max_samples=256)
    (path,) = (data_source(dataset).cache_dir / "real_features").glob("*.npz")
    with np.load(path) as cached:
        older = {k: cached[k] for k in cached.files if not k.startswith("kid_")}
    np.savez(path, **older)
    monkeypatch.setattr("trainers.metrics.load_real_test", lambda *args, **kwargs: pytest.fail("images loaded again"))
    second = make_generator_evaluator(dataset, (1, 28, 28), classifier_max_samples=256)
    with np.load(path) as cached:
        assert {"kid_real", "kid_draws"} <= set(cached.files)
    torch.manual_seed(0)
    generator = FCGenerator(8, 16).eval()
    sample = lambda z: (generator(z).view(-1, 1, 28, 28) + 1) / 2  # noqa: E731
    assert first.evaluate_generator(sample, 8) == second.evaluate_generator(sample, 8)


def test_classifier_learns_the_tiny_digits(evaluator) -> None:
    assert evaluator.record["test_accuracy"] >= 0.9


def test_real_images_score_best_and_a_one_class_generator_collapses(evaluator, mnist) -> None:
    real = to_float(torch.as_tensor(mnist.test_images).unsqueeze(1), normalize=False)
    same = evaluator.evaluate_images([real])
    assert same["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert same["precision"] == same["recall"] == 1.0
    assert same["class_entropy_bits"] == pytest.approx(math.log2(10), abs=0.05)

    threes = real[torch.as_tensor(mnist.test_labels) == 3]
    collapsed = evaluator.evaluate_images([threes.repeat(10, 1, 1, 1)])
    assert collapsed["class_entropy_bits"] < 0.5
    assert collapsed["recall"] < 0.3 and collapsed["classifier_score"] < 2
    assert collapsed["frechet_distance"] > 10 * same["frechet_distance"] + 1
    assert collapsed["kid"] > same["kid"]


# ---------------------------------------------------------------------------- trainers


def test_gan_writes_metrics_every_eval_every_epochs(tiny: Tiny, tmp_path: Path, capsys) -> None:
    run = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, num_epochs=3, eval_every=2))
    names, rows = read_csv(tmp_path / "metrics.csv")
    assert names == ["epoch", *GENERATOR_METRICS, "seconds"]
    assert [int(r["epoch"]) for r in rows] == [2, 3]  # every 2 epochs and after the last
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["epoch"] == 3 and summary["classifier"]["data"] == "mnist"
    assert summary["metrics"] == pytest.approx({k: float(rows[-1][k]) for k in GENERATOR_METRICS}, rel=1e-6)
    protocol = summary["protocol"]["generator_metrics"]  # what makes two numbers comparable
    assert "in-domain classifier 'mnist'" in protocol["features"] and protocol["real_split"] == "test"
    assert protocol["generated_images"] == protocol["real_images"] == len(run.evaluator.real_features)
    assert protocol["resize"] == "none"  # 28x28 digits for a 28x28 classifier
    metrics = run.metrics[-1]
    assert all(math.isfinite(metrics[k]) for k in GENERATOR_METRICS)
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert 0 <= metrics["class_entropy_bits"] <= math.log2(10) + 1e-9 and 1 <= metrics["classifier_score"] <= 10
    assert "metrics after epoch 3: frechet_distance" in capsys.readouterr().out
    assert (tmp_path / "train_loss_curve_3.png").is_file()


def test_metrics_leave_training_alone_and_resume_without_duplicates(tiny: Tiny, tmp_path: Path) -> None:
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "plain", num_epochs=3, eval_every=100))
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "eval", num_epochs=1, eval_every=1))
    resumed = train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path / "eval", num_epochs=3, eval_every=1))
    for name in ("generator.pt", "discriminator.pt"):
        assert state_dicts_equal(weights(tmp_path / "plain" / name), weights(tmp_path / "eval" / name))
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "eval" / "metrics.csv")[1]] == [1, 2, 3]
    assert [row["epoch"] for row in resumed.metrics] == [1, 2, 3]
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "plain" / "metrics.csv")[1]] == [3]


def test_vae_metrics_are_its_test_elbo_likelihood_and_sample_metrics(tiny: Tiny, tmp_path: Path) -> None:
    run = train_vae(VAE, *tiny.vae(tmp_path, num_epochs=2, iw_samples=50))
    names, rows = read_csv(tmp_path / "metrics.csv")
    assert names == ["epoch", "neg_elbo", "reconstruction_bce", "kl", "test_nll_iw", *GENERATOR_METRICS, "seconds"]
    last = run.history[-1]
    assert float(rows[-1]["neg_elbo"]) == pytest.approx(last["test_loss"], rel=1e-6)
    assert float(rows[-1]["neg_elbo"]) == pytest.approx(
        float(rows[-1]["reconstruction_bce"]) + float(rows[-1]["kl"]), rel=1e-5
    )
    assert float(rows[-1]["test_nll_iw"]) < float(rows[-1]["neg_elbo"])  # a tighter bound
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["protocol"]["iw_samples"] == 50 and "50 samples" in summary["protocol"]["test_nll_iw"]
    # The test -ELBO samples z like training: the same model scored with the mean latent instead is another number.
    assert last["test_reconstruction_at_mu"] != pytest.approx(last["test_reconstruction"], rel=1e-3)


def _write_folder(root: Path, classes: tuple[str, ...], per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            folder_image(name, rng).save(root / name / f"{i}.jpg", quality=95)
    return root


def test_data_without_a_classifier_skips_generator_metrics_with_a_note(tiny: Tiny, tmp_path: Path, capsys) -> None:
    train_gan(DCGANGenerator, DCGANDiscriminator, *tiny.dcgan(tmp_path / "gan", num_epochs=2, eval_every=1))
    out = capsys.readouterr().out
    assert out.count("note: generator metrics skipped") == 1 and "CIFAR-10's ten classes" in out
    assert not (tmp_path / "gan" / "metrics.csv").exists()  # a GAN has no other metrics
    folder = _write_folder(tmp_path / "shapes", FOLDER_CLASSES, 12)  # the VAE's grids need 32 images
    model = {"hidden_size": 32, "latent_dim": 4, "image_size": 1024}
    dataset = {"dataset_type": "image_folder", "root": str(folder), "batch_size": 8, "normalize": False}
    train_vae(VAE, model, dataset, {"num_epochs": 1, "output_dir": str(tmp_path / "vae"), "device": "cpu"})
    names, _ = read_csv(tmp_path / "vae" / "metrics.csv")
    assert names == ["epoch", "neg_elbo", "reconstruction_bce", "kl", "test_nll_iw", "seconds"]  # always there


def test_a_classifier_that_cannot_be_trained_skips_generator_metrics(tiny: Tiny, tmp_path: Path, capsys) -> None:
    """CIFAR-10's classes, but a test split without images: the run finishes, without generator metrics."""
    train = _write_folder(tmp_path / "cifar" / "train", CIFAR10_CLASSES, 1)
    for name in CIFAR10_CLASSES:
        (tmp_path / "cifar" / "test" / name).mkdir(parents=True)
    kwargs = tiny.dcgan(tmp_path / "out", {"root": str(train)}, num_epochs=1)
    train_gan(DCGANGenerator, DCGANDiscriminator, *kwargs)
    assert "note: generator metrics skipped: no images in" in capsys.readouterr().out
    assert (tmp_path / "out" / "generator.pt").is_file() and not (tmp_path / "out" / "metrics.csv").exists()
    assert not (tmp_path / "cifar" / "classifiers").exists()


def test_negative_eval_every_is_one_clear_line(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"eval_every'\] must be 0 or more, got -1") as info:
        train_gan(FCGenerator, FCDiscriminator, *tiny.gan(tmp_path, eval_every=-1))
    assert "\n" not in str(info.value)


def test_quality_benchmark_tabulates_runs_and_the_real_reference(mnist, tmp_path: Path, capsys) -> None:
    argv = ["--root", str(mnist.root), "--models", "gan,vae", "--epochs", "1", "--max-samples", "64"]
    quality.main([*argv, "--output-dir", str(tmp_path), "--device", "cpu"])
    table = (tmp_path / "quality.md").read_text()
    assert table in capsys.readouterr().out
    for fragment in ("| gan | mnist | 1 |", "| vae | mnist | 1 |", "| real data | mnist |", "FD ↓", "−ELBO"):
        assert fragment in table
    # No number without its protocol: the features, image counts and split, and the VAE's estimators.
    assert "- gan: in-domain classifier 'mnist'" in table and "generated against" in table
    assert "- vae, test_nll_iw: importance-weighted -log p(x)" in table
    rows = json.loads((tmp_path / "quality.json").read_text())
    assert [row["run"] for row in rows] == ["gan", "vae", "real data"]
    assert rows[-1]["metrics"]["frechet_distance"] < rows[0]["metrics"]["frechet_distance"]
    assert (tmp_path / "gan" / "metrics.json").is_file()


@pytest.mark.parametrize("rows", [1, 3])
def test_metrics_panel_labels_carry_the_latest_values(rows: int) -> None:
    """After a default run (eval_every None) the panel has one point: its legend still gives the numbers."""
    metrics = [
        {"epoch": 10 * (i + 1), "frechet_distance": 90.0 - i, "precision": 0.5, "recall": 0.25} for i in range(rows)
    ]
    fake = types.SimpleNamespace(metrics=metrics, metric_panel=Trainer.metric_panel)
    fig, ax = plt.subplots()
    try:
        Trainer._plot_metrics(fake, ax)
        legend = [text.get_text() for axis in fig.axes if axis.get_legend() for text in axis.get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert legend == [f"frechet_distance {91 - rows:g}", "precision 0.5", "recall 0.25"]


def test_best_checkpoint_is_the_lowest_metric_so_far_and_survives_resume(
    tiny: Tiny, tmp_path: Path, monkeypatch, capsys
) -> None:
    """generator_best.pt holds the generator of the evaluation with the lowest FD; a resumed run keeps
    comparing against it; metrics.json names it and the end of the run says which epoch it was."""
    distances = iter([5.0, 3.0, 4.0, 3.5, 2.0])
    monkeypatch.setattr("trainers.gan.GANTrainer.compute_metrics", lambda self: {"frechet_distance": next(distances)})
    out = tmp_path / "gan"
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=3, eval_every=1))
    checkpoint = torch.load(out / "generator_best.pt", weights_only=True)
    assert checkpoint["meta"]["epoch"] == 2 and checkpoint["meta"]["best"] == {"frechet_distance": 3.0}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["best"]["epoch"] == 2 and summary["best"]["value"] == 3.0
    assert "best frechet_distance 3 at epoch 2 of 3" in capsys.readouterr().out
    generator_at_2 = torch.load(out / "generator_best.pt", weights_only=True)["state_dict"]

    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=4, eval_every=1))  # resumes: 3.5 > 3
    best = torch.load(out / "generator_best.pt", weights_only=True)
    assert best["meta"]["epoch"] == 2 and state_dicts_equal(best["state_dict"], generator_at_2)
    train_gan(FCGenerator, FCDiscriminator, *tiny.gan(out, num_epochs=5, eval_every=1))  # 2.0: a new best
    best = torch.load(out / "generator_best.pt", weights_only=True)
    final = torch.load(out / "generator.pt", weights_only=True)
    assert best["meta"]["epoch"] == 5 and state_dicts_equal(final["state_dict"], best["state_dict"])
    assert json.loads((out / "metrics.json").read_text())["best"]["epoch"] == 5
