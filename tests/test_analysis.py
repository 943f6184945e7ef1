"""The three analysis scripts on tiny models trained here, on tiny data written here.

Nothing is read from outside the temp folders: MNIST is a few hundred synthetic images in
the IDX format torchvision reads, and the DCGAN's data a folder of random JPEGs.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the scripts live at the repository root
    sys.path.insert(0, str(ROOT))

import detect_vae_anamolies as anomalies  # noqa: E402
import latent_space_interpolation as interpolation  # noqa: E402
import latent_space_vae as latent_map  # noqa: E402
from helpers import DEVICE  # noqa: E402
from models import VAE, VAE_ARCHITECTURES, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator  # noqa: E402
from trainers import train_gan, train_vae  # noqa: E402
from utils import UserError, load_model  # noqa: E402

# ---------------------------------------------------------------------------- tiny data and models


@pytest.fixture(scope="module")
def mnist_root(mnist) -> Path:
    """The suite's tiny MNIST (conftest.py): digit-like strokes whose place gives the label."""
    return mnist.root


def tiny_trainer(output_dir: Path) -> dict:
    return {"num_epochs": 1, "output_dir": str(output_dir), "device": DEVICE, "seed": 0, "resume": False}


@pytest.fixture(scope="module")
def vae_path(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vae")
    dataset = {
        "dataset_type": "mnist",
        "root": str(mnist_root),
        "max_samples": 256,
        "batch_size": 32,
        "normalize": False,
    }
    train_vae(VAE, {"hidden_size": 64, "latent_dim": 8}, dataset, tiny_trainer(out))
    return out / "vae.pt"


@pytest.fixture(scope="module")
def vae17_path(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VAE trained on the digits 1 and 7 only: the others are held out."""
    out = tmp_path_factory.mktemp("vae17")
    dataset = {
        "dataset_type": "mnist",
        "root": str(mnist_root),
        "batch_size": 16,
        "normalize": False,
        "classes": [1, 7],
    }
    train_vae(VAE, {"hidden_size": 64, "latent_dim": 8}, dataset, tiny_trainer(out))
    return out / "vae.pt"


@pytest.fixture(scope="module")
def gan_dir(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gan")
    model = {"latent_variable_size": 8, "generator_hidden_size": 32, "discriminator_hidden_size": 32}
    dataset = {"dataset_type": "mnist", "root": str(mnist_root), "max_samples": 256, "batch_size": 64}
    train_gan(FCGenerator, FCDiscriminator, model, dataset, tiny_trainer(out))
    return out


@pytest.fixture(scope="module")
def dcgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for name in ("cats", "dogs"):
        (folder / name).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name / f"{i}.jpg")
    out = tmp_path_factory.mktemp("dcgan")
    model = {"latent_dim": 8, "feature_maps": 8, "image_channels": 3, "image_size": 32}
    dataset = {"dataset_type": "image_folder", "root": str(folder), "batch_size": 8}
    train_gan(DCGANGenerator, DCGANDiscriminator, model, dataset, tiny_trainer(out))
    return out


@pytest.fixture
def corrupt_file(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"not a checkpoint at all" * 10)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- interpolation


def test_slerp_ends_at_the_two_latents_and_keeps_the_norm() -> None:
    z0, z1 = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))
    path = interpolation.interpolate(z0, z1, 7, "slerp")
    assert path.shape == (4, 7, 16)
    torch.testing.assert_close(path[:, 0], z0)
    torch.testing.assert_close(path[:, -1], z1)
    # Between two latents of the same norm, slerp stays on their sphere (lerp cuts inside it).
    unit0, unit1 = z0 / z0.norm(dim=1, keepdim=True), z1 / z1.norm(dim=1, keepdim=True)
    norms = interpolation.interpolate(unit0, unit1, 7, "slerp").norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert (interpolation.interpolate(unit0, unit1, 7, "lerp").norm(dim=2)[:, 3] < 0.99).all()


def test_lerp_midpoint_and_slerp_parallel_fallback() -> None:
    z0, z1 = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    path = interpolation.interpolate(z0, z1, 3, "lerp")
    torch.testing.assert_close(path[:, 0], z0)
    torch.testing.assert_close(path[:, 1], (z0 + z1) / 2)
    torch.testing.assert_close(path[:, 2], z1)
    # Parallel latents: the angle is 0 and slerp's formula would divide by zero; it falls back to lerp.
    parallel = interpolation.interpolate(z0, 2 * z0, 5, "slerp")
    assert torch.isfinite(parallel).all()
    torch.testing.assert_close(parallel, interpolation.interpolate(z0, 2 * z0, 5, "lerp"))


def check_outputs(folder: Path, rows: int, steps: int, side: int, mode: str) -> np.ndarray:
    with Image.open(folder / "latent_space_interpolation.png") as grid:
        grid.load()
        # save_image's grid: 2-pixel padding around every image
        assert grid.size == (steps * (side + 2) + 2, rows * (side + 2) + 2)
        assert grid.mode == mode
        pixels = np.asarray(grid)
    with Image.open(folder / "latent_space_interpolation.gif") as gif:
        assert gif.n_frames > 1
    return pixels


def test_interpolation_fc_gan(gan_dir: Path, tmp_path: Path) -> None:
    args = ["--weights-path", str(gan_dir / "generator.pt"), "--num-rows", "3", "--num-steps", "5", "--device", DEVICE]
    first = check_outputs(
        Path(interpolation.main([*args, "--output-dir", str(tmp_path / "a")])["grid"]).parent, 3, 5, 28, "RGB"
    )
    second = check_outputs(
        Path(interpolation.main([*args, "--output-dir", str(tmp_path / "b")])["grid"]).parent, 3, 5, 28, "RGB"
    )
    np.testing.assert_array_equal(first, second)  # the seed decides everything
    interpolation.main([*args, "--output-dir", str(tmp_path / "c"), "--seed", "1"])
    third = check_outputs(tmp_path / "c", 3, 5, 28, "RGB")
    assert not np.array_equal(first, third)


def test_interpolation_dcgan(dcgan_dir: Path, tmp_path: Path) -> None:
    args = ["--weights-path", str(dcgan_dir / "generator.pt"), "--output-dir", str(tmp_path), "--device", DEVICE]
    interpolation.main([*args, "--num-rows", "2", "--num-steps", "4", "--method", "lerp"])
    pixels = check_outputs(tmp_path, 2, 4, 32, "RGB")
    assert pixels.std() > 0


def test_interpolation_vae(vae_path: Path, tmp_path: Path) -> None:
    args = ["--weights-path", str(vae_path), "--output-dir", str(tmp_path), "--num-rows", "4", "--num-steps", "6"]
    interpolation.main([*args, "--device", DEVICE])
    check_outputs(tmp_path, 4, 6, 28, "RGB")


def test_interpolation_empty_weights_path_reads_main_gan_output(
    gan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="weights_path is empty.*mnist_GAN/generator.pt"):
        interpolation.main(["--device", DEVICE])
    (tmp_path / "mnist_GAN").mkdir()
    shutil.copy(gan_dir / "generator.pt", tmp_path / "mnist_GAN" / "generator.pt")
    interpolation.main(["--device", DEVICE, "--num-rows", "2", "--num-steps", "3"])
    check_outputs(tmp_path / "mnist_GAN", 2, 3, 28, "RGB")  # empty output_dir: beside the weights


def test_interpolation_wrong_inputs(gan_dir: Path, corrupt_file: Path, tmp_path: Path) -> None:
    out = ["--output-dir", str(tmp_path), "--device", DEVICE]
    cases = [
        (tmp_path / "missing.pt", "not found"),
        (corrupt_file, "cannot read"),
        (gan_dir / "discriminator.pt", "interpolation needs a FCGenerator.*use the generator"),
        (gan_dir, "is a folder"),
        (gan_dir / "checkpoint.pt", "no known 'kind'"),  # the training checkpoint, not model weights
    ]
    for weights, message in cases:
        with pytest.raises(UserError, match=message):
            interpolation.main(["--weights-path", str(weights), *out])
    with pytest.raises(UserError, match="unknown method 'cubic'"):
        interpolation.main(["--weights-path", str(gan_dir / "generator.pt"), "--method", "cubic", *out])
    with pytest.raises(UserError, match="num_steps must be at least 2"):
        interpolation.main(["--weights-path", str(gan_dir / "generator.pt"), "--num-steps", "1", *out])


# ---------------------------------------------------------------------------- anomaly detection

SUMMARY_KEYS = {
    "auroc",
    "threshold",
    "threshold_percentile",
    "precision",
    "recall",
    "f1",
    "num_normal",
    "num_anomalous",
}


def check_anomaly_outputs(folder: Path, rows: int) -> tuple[dict, list[dict]]:
    for name in ("reconstruction_error_distribution.png", "roc_curve.png", "anomaly_examples.png"):
        with Image.open(folder / name) as image:
            image.verify()
    summary = json.loads((folder / "anomaly_summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    for key in ("auroc", "precision", "recall", "f1"):
        assert 0.0 <= summary[key] <= 1.0
    scores = read_csv(folder / "anomaly_scores.csv")
    assert len(scores) == rows
    assert {"index", "label", "corrupted", "error"} <= set(scores[0])
    assert all(float(row["error"]) >= 0 for row in scores)
    return summary, scores


@pytest.mark.parametrize("anomaly", ["gaussian_noise", "salt_pepper", "patch"])
def test_anomalies_of_corrupted_images(vae_path: Path, tmp_path: Path, anomaly: str) -> None:
    argv = ["--weights-path", str(vae_path), "--output-dir", str(tmp_path), "--num-images", "40", "--device", DEVICE]
    summary = anomalies.main([*argv, "--anomaly", anomaly])
    written, scores = check_anomaly_outputs(tmp_path, 80)  # every image clean and corrupted
    assert written["auroc"] == pytest.approx(summary["auroc"])
    assert sum(int(row["corrupted"]) for row in scores) == 40
    assert summary["num_normal"] == summary["num_anomalous"] == 40
    assert summary["score"] == "reconstruction"  # the SPEC's, by default for a corruption


def test_corruptions_stay_in_range() -> None:
    clean = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    strength = {"noise_std": 0.5, "salt_pepper_amount": 0.2, "patch_size": 6, "patch_value": 1.0}
    for anomaly in ("gaussian_noise", "salt_pepper", "patch"):
        out = anomalies.corrupt(clean, anomaly, torch.Generator().manual_seed(0), **strength)
        assert out.shape == clean.shape and 0 <= out.min() and out.max() <= 1
        assert not torch.equal(out, clean)
    patched = anomalies.corrupt(clean, "patch", torch.Generator().manual_seed(0), **strength)
    assert ((patched == 1.0).flatten(1).sum(1) >= 36).all()  # a full 6x6 square in every image


def test_anomalies_of_held_out_classes(vae17_path: Path, tmp_path: Path) -> None:
    argv = ["--weights-path", str(vae17_path), "--output-dir", str(tmp_path), "--anomaly", "classes"]
    argv += ["--device", DEVICE]
    summary = anomalies.main([*argv, "--num-images", "100"])
    _, scores = check_anomaly_outputs(tmp_path, 100)
    assert summary["classes_trained"] == [1, 7]
    assert summary["score"] == "typicality" and summary["typicality_images"] >= 2  # the default for classes
    for row in scores:
        assert int(row["anomaly"]) == (int(row["label"]) not in (1, 7))
    assert summary["num_normal"] == 20 and summary["num_anomalous"] == 80


def test_each_score_is_the_models_own_objective(vae17_path: Path, tmp_path: Path) -> None:
    """reconstruction: BCE of the mean latent's decoding; elbo: a sampled -ELBO; nll: importance-weighted and
    below the -ELBO on average; the entropy correction subtracts exactly each image's pixel entropy."""
    vae = load_model(vae17_path)
    images = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0)) ** 3  # grey, mostly dark
    x = images.flatten(1)

    def scores(score: str, subtract: bool = False) -> np.ndarray:
        return anomalies.anomaly_scores(vae, images, score, torch.device("cpu"), 0, 200, subtract)

    with torch.no_grad():
        expected = F.binary_cross_entropy(vae.reconstruct(x).flatten(1), x, reduction="none").sum(1).double().numpy()
    assert np.allclose(scores("reconstruction"), expected, rtol=1e-4)
    entropy = (-(x * x.clamp_min(1e-12).log() + (1 - x) * (1 - x).clamp_min(1e-12).log())).sum(1).double().numpy()
    corrected = scores("reconstruction", True)
    assert np.allclose(corrected, expected - entropy, rtol=1e-4, atol=1e-3)
    assert (corrected > -1e-3).all()  # a KL divergence: the BCE never goes below the image's own entropy
    elbo, nll = scores("elbo"), scores("nll")
    assert np.array_equal(elbo, scores("elbo")) and np.array_equal(nll, scores("nll"))  # seeded
    assert nll.mean() < elbo.mean()
    assert not np.allclose(elbo, expected)  # sampled z, not the mean latent


def test_typicality_is_the_mahalanobis_distance_from_the_normal_statistics() -> None:
    """Against a correlated Gaussian cloud: the squared Mahalanobis distance of its sample estimates; a step
    across the correlation is odder than the same step along it; a constant statistic drops out."""
    rng = np.random.default_rng(0)
    cloud = rng.multivariate_normal([10.0, -5.0], [[4.0, 3.0], [3.0, 4.0]], size=5000)
    normal = np.column_stack([cloud, np.full(len(cloud), 7.0)])
    typical = anomalies.Typicality(normal)
    points = np.array([[10.0, -5.0, 7.0], [12.0, -3.0, 7.0], [12.0, -7.0, 7.0], [12.0, -3.0, 9.0]])
    mean, cov = cloud.mean(0), np.cov(cloud, rowvar=False)
    expected = np.einsum("ni,ij,nj->n", points[:, :2] - mean, np.linalg.inv(cov), points[:, :2] - mean)
    assert np.allclose(typical(points), expected, rtol=1e-6, atol=1e-9)
    assert typical(points)[2] > 5 * typical(points)[1]  # across the correlation
    assert typical(points)[3] == pytest.approx(typical(points)[1])  # the constant column counts for nothing
    with pytest.raises(UserError, match="2 or more"):
        anomalies.Typicality(normal[:1])


def test_compressed_bits_are_the_png_size_and_rise_with_detail(tmp_path: Path) -> None:
    flat = torch.full((1, 3, 16, 16), 0.5)
    busy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    bits = anomalies.compressed_bits(torch.cat([flat, busy]))
    assert bits[0] < bits[1] / 4
    pixels = (busy[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(tmp_path / "busy.png", compress_level=9)
    assert bits[1] == 8 * (tmp_path / "busy.png").stat().st_size


@pytest.mark.parametrize("score", ["reconstruction", "elbo", "nll", "typicality"])
def test_held_out_classes_by_each_score(vae17_path: Path, tmp_path: Path, score: str) -> None:
    argv = ["--weights-path", str(vae17_path), "--output-dir", str(tmp_path), "--anomaly", "classes"]
    summary = anomalies.main([*argv, "--score", score, "--iw-samples", "20", "--device", DEVICE])
    assert summary["score"] == score and summary["subtract_pixel_entropy"] is True
    assert ("iw_samples" in summary) == (score == "nll")
    assert ("typicality_images" in summary) == (score == "typicality")
    assert summary["auroc"] > 0.75  # after one epoch, a 1-and-7 model already finds the other fake digits unlikely


def test_unknown_score_is_a_one_line_error(vae17_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown score 'mse': use one of reconstruction, elbo, nll"):
        anomalies.main(["--weights-path", str(vae17_path), "--output-dir", str(tmp_path), "--score", "mse"])


def test_trained_labels_from_indices_and_names(mnist_root: Path) -> None:
    def labels(classes: object) -> set[int]:
        dataset = {"dataset_type": "mnist", "classes": classes}
        return anomalies.trained_labels(dataset, str(mnist_root), (1, 28, 28), Path("vae.pt"))

    assert labels([1, 7]) == {1, 7}
    assert labels(3) == {3}  # a single class from the command line (--classes 3) is kept as an int
    assert labels(["1 - one", 7]) == {1, 7}  # torchvision's MNIST class names
    with pytest.raises(UserError, match="trained on all classes"):
        labels(None)


def test_anomaly_wrong_inputs(vae_path: Path, gan_dir: Path, corrupt_file: Path, tmp_path: Path) -> None:
    out = ["--output-dir", str(tmp_path), "--device", DEVICE, "--num-images", "20"]
    cases = [
        (["--weights-path", str(tmp_path / "missing.pt")], "not found"),
        (["--weights-path", str(corrupt_file)], "cannot read"),
        (["--weights-path", str(gan_dir / "generator.pt")], "holds a FCGenerator, but anomaly detection needs a VAE"),
        (["--weights-path", str(gan_dir / "discriminator.pt")], "needs a VAE"),
        (["--weights-path", str(vae_path), "--anomaly", "classes"], "trained on all classes"),
        (["--weights-path", str(vae_path), "--anomaly", "blur"], "unknown anomaly 'blur'"),
        (["--weights-path", str(vae_path), "--patch-size", "40", "--anomaly", "patch"], "patch_size must be between"),
        (["--weights-path", str(vae_path), "--threshold-percentile", "100"], "threshold_percentile must be in"),
        (["--weights-path", str(vae_path), "--noise-std", "big"], r"anomaly_kwargs\['noise_std'\] must be float"),
    ]
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            anomalies.main([*argv, *out])


def test_anomaly_empty_weights_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="weights_path is empty.*mnist_VAE/vae.pt"):
        anomalies.main([])


def test_script_error_is_one_line_with_exit_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "detect_vae_anamolies.py"), "--weights-path", str(tmp_path / "nope.pt")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "not found" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- latent map


def test_embed_2d_gives_one_point_per_image() -> None:
    latents = np.random.default_rng(0).normal(size=(50, 8))
    points, variance = latent_map.embed_2d(latents, "pca")
    assert points.shape == (50, 2)
    assert len(variance) == 2 and 0 < variance[1] <= variance[0] <= 1
    points, variance = latent_map.embed_2d(latents, "tsne", perplexity=10)
    assert points.shape == (50, 2) and variance is None


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_latent_map(vae_path: Path, tmp_path: Path, method: str) -> None:
    argv = ["--weights-path", str(vae_path), "--output-dir", str(tmp_path), "--device", DEVICE, "--method", method]
    result = latent_map.main([*argv, "--num-images", "120"])
    assert result["points"].shape == (120, 2) and len(result["labels"]) == 120
    with Image.open(tmp_path / "latents_space_2d.png") as image:
        image.verify()
    summary = json.loads((tmp_path / "latent_summary.json").read_text())
    for key in ("knn_accuracy_2d", "knn_accuracy_latent"):
        assert 0.0 <= summary[key] <= 1.0
    for key in ("silhouette_2d", "silhouette_latent"):
        assert -1.0 <= summary[key] <= 1.0
    assert summary["num_images"] == 120 and summary["latent_dim"] == 8
    if method == "pca":
        assert 0 < summary["explained_variance_total"] <= 1
    else:
        assert summary["explained_variance_ratio"] is None


def test_latent_map_wrong_inputs(gan_dir: Path, vae_path: Path, corrupt_file: Path, tmp_path: Path) -> None:
    out = ["--output-dir", str(tmp_path), "--device", DEVICE]
    cases = [
        (["--weights-path", str(tmp_path / "missing.pt")], "not found"),
        (["--weights-path", str(corrupt_file)], "cannot read"),
        (["--weights-path", str(gan_dir / "generator.pt")], "the latent map needs a VAE"),
        (["--weights-path", str(vae_path), "--method", "umap"], "unknown method 'umap'"),
    ]
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            latent_map.main([*argv, *out])


def test_analysis_sizes_that_cannot_fit_are_one_line_before_any_work(gan_dir: Path, tmp_path: Path) -> None:
    weights = ["--weights-path", str(gan_dir / "generator.pt"), "--output-dir", str(tmp_path / "out")]
    with pytest.raises(UserError, match=r"num_rows 100000 makes GIF frames \d+ pixels wide, more than GIF's 65535"):
        interpolation.main([*weights, "--num-rows", "100000"])
    with pytest.raises(UserError, match=r"num_rows x num_steps = \d+ images need about [\d.]+ GiB, more than half"):
        interpolation.main([*weights, "--num-rows", "700", "--num-steps", "10000000"])
    assert not (tmp_path / "out").exists()


def test_the_latent_map_reports_the_neighbours_and_folds_it_used(vae_path: Path, tmp_path: Path, capsys) -> None:
    argv = ["--weights-path", str(vae_path), "--output-dir", str(tmp_path), "--device", DEVICE, "--num-images", "40"]
    latent_map.main([*argv, "--knn-neighbors", "1000", "--knn-folds", "10000"])
    summary = json.loads((tmp_path / "latent_summary.json").read_text())
    assert summary["knn_neighbors"] < 1000 and 2 <= summary["knn_folds"] <= 4  # 40 images, 10 digits: 4 of each
    out = capsys.readouterr().out
    assert f"allow {summary['knn_neighbors']} neighbours in {summary['knn_folds']} folds, not the 1000" in out
    assert f"{summary['knn_neighbors']}-NN accuracy" in out and "1000-NN" not in out


# ---------------------------------------------------------------------------- a folder of the user's images


def _write_pngs(folder: Path, images: torch.Tensor, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        name = f"{prefix}_{i}.png"
        Image.fromarray(image.squeeze(0).numpy()).save(folder / name)
        names.append(name)
    return names


@pytest.fixture(scope="module")
def vae17_trained(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vae17's model trained until it reconstructs its digits (a one-epoch model still draws grey mist)."""
    out = tmp_path_factory.mktemp("vae17_trained")
    dataset = {"dataset_type": "mnist", "root": str(mnist_root), "batch_size": 16, "normalize": False}
    trainer = {**tiny_trainer(out), "num_epochs": 10, "lr": 3e-3, "iw_samples": 2}
    train_vae(VAE, {"hidden_size": 64, "latent_dim": 8}, {**dataset, "classes": [1, 7]}, trainer)
    return out / "vae.pt"


def test_a_folder_is_scored_with_the_odd_images_first_and_mapped(vae17_trained: Path, mnist, tmp_path: Path) -> None:
    """A folder of the model's own digits with noise images among them: the noise is at the top of
    folder_scores.csv, flagged above the threshold the test split sets, and mapped where it is odd."""
    vae17_path = vae17_trained
    digits = mnist.test_images[np.isin(mnist.test_labels, [1, 7])][:12]
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8))
    folder = tmp_path / "to_check"
    _write_pngs(folder / "new", torch.as_tensor(digits).unsqueeze(1), "digit")
    odd = _write_pngs(folder / "new", noise, "noise")
    out = tmp_path / "out"
    summary = anomalies.main(["--weights-path", str(vae17_path), "--output-dir", str(out), "--images", str(folder)])
    rows = read_csv(out / "folder_scores.csv")
    assert list(rows[0]) == ["file", "score", "flagged"] and len(rows) == 15
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {Path(r["file"]).name for r in rows[:3]} == set(odd) and rows[0]["file"].startswith("new")
    assert all((float(r["score"]) > summary["threshold"]) == (r["flagged"] == "1") for r in rows)
    assert all(r["flagged"] == "1" for r in rows[:3]) and summary["num_flagged"] >= 3
    assert summary["num_normal"] > 0 and "test split" in summary["normal_images"]
    maps = np.asarray(Image.open(out / "anomaly_maps.png"))
    assert maps.shape[0] > 8 * 100  # a row per mapped image (num_maps 8)
    assert (out / "folder_most_anomalous.png").exists() and json.loads((out / "folder_summary.json").read_text())

    # Known-good images set the threshold instead: their scores' percentile.
    good = tmp_path / "good"
    _write_pngs(good, torch.as_tensor(digits).unsqueeze(1), "good")
    again = anomalies.main(
        ["--weights-path", str(vae17_path), "--output-dir", str(tmp_path / "out2"), "--images", str(folder)]
        + ["--normal-images", str(good), "--threshold-percentile", "50"]
    )
    vae = load_model(vae17_path)
    own = anomalies.anomaly_scores(
        vae, torch.as_tensor(digits).unsqueeze(1).float() / 255, "reconstruction", torch.device("cpu"), 0, 100, True
    )
    assert abs(again["threshold"] - np.percentile(own, 50)) < 1e-3 * max(1.0, abs(again["threshold"]))


def test_the_per_pixel_map_sums_to_the_score(vae17_path: Path) -> None:
    vae = load_model(vae17_path)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for subtract in (False, True):
        maps = anomalies.anomaly_maps(vae, x, torch.device("cpu"), subtract)
        scores = anomalies.anomaly_scores(vae, x, "reconstruction", torch.device("cpu"), 0, 1, subtract)
        assert maps.shape == (4, 28, 28)
        assert np.allclose(maps.sum((1, 2)).double().numpy(), scores, rtol=1e-4)


def test_folder_scoring_mistakes_are_one_line(vae17_path: Path, tmp_path: Path) -> None:
    argv = ["--weights-path", str(vae17_path), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(UserError, match="images '.*missing' is not a folder"):
        anomalies.main([*argv, "--images", str(tmp_path / "missing")])
    with pytest.raises(UserError, match="set images too"):
        anomalies.main([*argv, "--normal-images", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        anomalies.main([*argv, "--images", str(tmp_path / "empty")])


@pytest.mark.parametrize("likelihood", ["logistic", "continuous_bernoulli"])
def test_a_conv_vae_on_colour_pictures_trains_resumes_and_scores_a_folder(
    image_folder: Path, tmp_path: Path, likelihood: str
) -> None:
    """main_vae.py's architecture conv on a folder of colour JPEGs: the data's own shape, bits per dimension
    for the discrete likelihood, a resumed run equal to a straight one, and a folder scored in colour."""
    model = {"architecture": "conv", "latent_dim": 4, "base_channels": 4, "likelihood": likelihood}
    model |= {"image_channels": None, "image_side": None, "hidden_size": 64}  # an fc key is set aside
    dataset = {"dataset_type": "image_folder", "root": str(image_folder), "batch_size": 4, "normalize": False}
    trainer = {**tiny_trainer(tmp_path / "straight"), "num_epochs": 2, "iw_samples": 3}
    straight = train_vae(VAE_ARCHITECTURES, dict(model), dict(dataset), trainer)
    assert straight.vae.image_shape == (3, 36, 36)  # the first image's shorter side
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert ("test_nll_iw_bpd" in metrics["metrics"]) == (likelihood == "logistic")
    if likelihood == "logistic":
        bpd = metrics["metrics"]["test_nll_iw_bpd"]
        assert bpd > 0 and np.isclose(bpd * 3 * 36 * 36 * np.log(2), metrics["metrics"]["test_nll_iw"], rtol=1e-6)
    resumed_dir = tmp_path / "resumed"
    train_vae(
        VAE_ARCHITECTURES, dict(model), dict(dataset), {**trainer, "output_dir": str(resumed_dir), "num_epochs": 1}
    )
    resumed = train_vae(VAE_ARCHITECTURES, dict(model), dict(dataset), {**trainer, "output_dir": str(resumed_dir)})
    for name, value in straight.vae.state_dict().items():
        assert torch.equal(value, resumed.vae.state_dict()[name]), name
    summary = anomalies.main(
        ["--weights-path", str(resumed_dir / "vae.pt"), "--output-dir", str(tmp_path / "scored"), "--images"]
        + [str(image_folder), "--num-maps", "2"]
    )
    assert summary["num_images"] == len(read_csv(tmp_path / "scored" / "folder_scores.csv"))
    assert summary["likelihood"] == likelihood and not summary["subtract_pixel_entropy"]
    assert (tmp_path / "scored" / "anomaly_maps.png").exists()
