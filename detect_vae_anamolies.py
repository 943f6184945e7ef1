"""Anomaly detection with a trained VAE: images the model finds unlikely are flagged as anomalies.

The score of an image (higher = more anomalous) is, by `score` (None: typicality for anomaly classes,
else reconstruction, the SPEC's; the choices are measured in docs/results.md, One-class):
    reconstruction   -log p(x|z) at the mean latent, in nats: for a Bernoulli VAE the binary cross-entropy
                     summed over the image's pixels (the SPEC's reconstruction error)
    elbo             its negative ELBO: one z ~ q(z|x), as in training (reconstruction + KL)
    nll              its -log p(x), importance-weighted with iw_samples samples (Burda et al., 2016)
    typicality       how unlike the model's training images it is: the squared Mahalanobis distance of
                     its statistics (reconstruction score, KL of q(z|x) from the prior, and its bits as
                     a lossless PNG, its input complexity: Serra et al., 2020) from theirs, under a
                     Gaussian fit to the first typicality_images of them (DoSE: Morningstar et al.,
                     2021). Two-sided: an image simpler than the normal ones is odd too (unitless)
With subtract_pixel_entropy, each score less sum_i H(x_i), the binary entropy of the image's own
grey levels: the floor of its BCE, which grows with the soft edges of its strokes. The
reconstruction score then becomes the KL divergence of Bernoulli(x) from Bernoulli(reconstruction),
and a simple image (a "1") no longer looks normal to a model of another digit just for being simple.
Normal images are clean test images; the anomalies are, by `anomaly`:
    gaussian_noise   the same images plus N(0, noise_std^2) noise          (the default)
    salt_pepper      the same images with a fraction salt_pepper_amount of pixels set to 0 or 1
    patch            the same images with a patch_size x patch_size square set to patch_value
    classes          test images of the labels the VAE was not trained on (train one on some
                     digits only first: python main_vae.py --classes 1,7)
Corrupted images are clipped to [0, 1]. An image is flagged when its score is above the
`threshold_percentile` percentile of the normal images' scores. The entropy applies to the Bernoulli
likelihood only; a VAE with another likelihood is scored by its own -log p. Writes, into output_dir:
    reconstruction_error_distribution.png   histograms of the scores, normal vs anomalous
    roc_curve.png                           ROC curve of the score, with its AUROC
    anomaly_examples.png                    rows: normal, its reconstruction, anomalous, its reconstruction
    anomaly_scores.csv                      a row per scored image (its score in column 'error')
    anomaly_summary.json                    AUROC, threshold, precision, recall and F1

With `images` set, the files of that folder are scored instead ("which of these are odd, and where"):
the threshold is the percentile of `normal_images` (known-good pictures; None: the model's test split).
Writes folder_scores.csv (file, score, flagged; most anomalous first), folder_most_anomalous.png (the
most anomalous images over their reconstructions), anomaly_maps.png (for the top num_maps: the image,
its reconstruction, and the score's per-pixel term overlaid where it is high) and folder_summary.json.

Set weights_path and output_dir below, or override them and any key of anomaly_kwargs from the
command line with dashes for underscores:
    python detect_vae_anamolies.py --weights-path runs/vae17/vae.pt --anomaly classes
    python detect_vae_anamolies.py --weights-path runs/parts/vae.pt --images photos/new
An empty weights_path reads mnist_VAE/vae.pt (what main_vae.py writes); an empty output_dir
writes beside the weights file.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets import as_class_list, load_folder, load_test_images, load_training_images, to_float
from models import names_of_kind
from trainers.objectives import (
    pixel_entropy,
    reconstruction_log_prob,
    vae_importance_weighted_nll,
    vae_negative_elbo,
)
from trainers.setup import make_output_dir
from utils import (
    analysis_main,
    figure,
    load_trained,
    pick_device,
    require,
    resolve_weights,
    run_cli,
    seed_everything,
)

weights_path = ""  # point to the respective directory and .pt file (vae.pt)
output_dir = ""  # point to the output directory where the result is stored (empty: beside the weights)

anomaly_kwargs = {
    "images": None,  # a folder of images to score (which are anomalous, and where); None: the anomaly test below
    "normal_images": None,  # with images: known-good images that set the threshold; None: the model's test split
    "num_maps": 8,  # with images: anomaly maps of this many of the most anomalous
    "anomaly": "gaussian_noise",  # gaussian_noise, salt_pepper, patch or classes
    "score": None,  # reconstruction, elbo, nll or typicality (above); None: typicality for anomaly classes,
    # else reconstruction (the SPEC's): the better of the two in each benchmark (docs/results.md, One-class)
    "iw_samples": 100,  # score nll: importance samples per image
    "typicality_images": 10000,  # score typicality: how many of the model's training images define typical
    "subtract_pixel_entropy": True,  # less each image's own pixel entropy (above); SPEC's BCE error: False
    "noise_std": 0.2,  # gaussian_noise: standard deviation, pixels being in [0, 1]
    "salt_pepper_amount": 0.1,  # salt_pepper: fraction of pixels set to 0 or 1
    "patch_size": 10,  # patch: side of the square, in pixels
    "patch_value": 0.0,  # patch: what the square is filled with (0 erases, 1 paints white)
    "threshold_percentile": 95.0,  # flag images above this percentile of the normal images' scores
    "num_images": None,  # score only the first N test images (None: all of them)
    "root": None,  # where the test images are; None = the root the VAE was trained with
    "seed": 0,  # draws the corruptions
    "device": "auto",  # cuda, then mps, then cpu
}

DEFAULT_WEIGHTS = "mnist_VAE/vae.pt"  # main_vae.py's output_dir
CORRUPTIONS = ("gaussian_noise", "salt_pepper", "patch")
ANOMALIES = (*CORRUPTIONS, "classes")
SCORES = {
    "reconstruction": "reconstruction error (-log p(x|z) at the mean latent: the BCE for a Bernoulli VAE)",
    "elbo": "negative ELBO (one z ~ q(z|x))",
    "nll": "-log p(x), importance-weighted",
    "typicality": "atypicality (squared Mahalanobis distance of reconstruction, KL and PNG bits from training's)",
}
BATCH_SIZE = 1000
# Which strength keys belong to which corruption (reported in the summary).
_STRENGTH_PREFIX = {"gaussian_noise": "noise_", "salt_pepper": "salt_pepper_", "patch": "patch_"}


def load_vae(path: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """The VAE in `path` and the dataset kwargs it was trained with (checkpoint meta)."""
    vae, dataset = load_trained(
        path, device, names_of_kind("vae"), "anomaly detection", "use vae.pt from main_vae.py's output_dir"
    )
    require(
        getattr(vae, "num_classes", None) is None,
        f"'{path}' holds a class-conditional VAE: its scores would need each image's class, which an anomaly "
        "detector is not told; train one with num_classes None",
    )
    require(
        not dataset.get("normalize", False),
        f"'{path}' was trained on pixels in [-1, 1] (normalize=True): the BCE error needs a VAE trained on [0, 1]",
    )
    return vae, dataset


def corrupt(images: torch.Tensor, anomaly: str, generator: torch.Generator, **strength: float) -> torch.Tensor:
    """Corrupted copies of float images (N, C, H, W) in [0, 1], clipped back to [0, 1].

    `strength` holds noise_std, salt_pepper_amount, patch_size and patch_value (only the one
    for `anomaly` is used).
    """
    n, _, height, width = images.shape
    out = images.clone()
    if anomaly == "gaussian_noise":
        out += strength["noise_std"] * torch.randn(images.shape, generator=generator)
    elif anomaly == "salt_pepper":
        # One draw per pixel position, shared by the channels: a pixel turns black or white.
        u = torch.rand((n, 1, height, width), generator=generator)
        amount = strength["salt_pepper_amount"]
        out = torch.where(u < amount / 2, 0.0, torch.where(u < amount, 1.0, out))
    elif anomaly == "patch":
        size = int(strength["patch_size"])
        tops = torch.randint(0, height - size + 1, (n,), generator=generator)
        lefts = torch.randint(0, width - size + 1, (n,), generator=generator)
        for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
            out[i, :, top : top + size, left : left + size] = strength["patch_value"]
    else:
        raise ValueError(f"unknown corruption {anomaly!r}")
    return out.clamp(0, 1)


def compressed_bits(images: torch.Tensor) -> np.ndarray:
    """Bits of each image (N, C, H, W) in [0, 1] as a lossless PNG at its highest compression: the image's
    input complexity (Serra et al., 2020), low for plain images, high for busy ones."""
    from PIL import Image

    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    bits = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG", compress_level=9)
        bits.append(8.0 * buffer.tell())
    return np.asarray(bits)


@torch.no_grad()
def image_statistics(
    vae: nn.Module, images: torch.Tensor, device: torch.device, subtract_pixel_entropy: bool = False
) -> np.ndarray:
    """(N, 3) per image in [0, 1]: its reconstruction score and the KL divergence of q(z|x) from the prior
    (nats), and its compressed_bits."""
    subtract = subtract_pixel_entropy and vae.likelihood == "bernoulli"
    rows = []
    for batch in images.split(BATCH_SIZE):
        x = batch.to(device)
        mu, logvar = vae.encode(x)
        terms = vae_negative_elbo(x, vae.decode_logits(mu), mu, logvar, likelihood=vae.likelihood)
        reconstruction = terms["reconstruction"] - pixel_entropy(x) if subtract else terms["reconstruction"]
        rows.append(torch.stack([reconstruction, terms["kl"]], 1).double().cpu())
    return np.column_stack([torch.cat(rows).numpy(), compressed_bits(images)])


class Typicality:
    """How unlike normal images an image is: the squared Mahalanobis distance of its image_statistics from
    theirs, under a Gaussian fit to them (DoSE, Morningstar et al., 2021). Each statistic is scaled by its
    spread over the normal images first; a constant one drops out."""

    def __init__(self, normal_statistics: np.ndarray) -> None:
        require(len(normal_statistics) >= 2, "typicality needs 2 or more training images: raise typicality_images")
        self.count = len(normal_statistics)
        self.mean = normal_statistics.mean(0)
        spread = normal_statistics.std(0)
        self.scale = np.where(spread > 0, spread, 1.0)
        self.precision = np.linalg.pinv(np.atleast_2d(np.cov(self.standardize(normal_statistics), rowvar=False)))

    def standardize(self, statistics: np.ndarray) -> np.ndarray:
        return (statistics - self.mean) / self.scale

    def __call__(self, statistics: np.ndarray) -> np.ndarray:
        offset = self.standardize(statistics)
        return np.einsum("ni,ij,nj->n", offset, self.precision, offset)


@torch.no_grad()
def anomaly_scores(
    vae: nn.Module,
    images: torch.Tensor,
    score: str,
    device: torch.device,
    seed: int = 0,
    iw_samples: int = 100,
    subtract_pixel_entropy: bool = False,
    typical: Typicality | None = None,
) -> np.ndarray:
    """Per-image `score` (see the module's docstring) of images in [0, 1], in nats, from the VAE's own
    objective code (trainers/objectives.py); z is drawn from a generator seeded with `seed`. Score
    typicality measures against `typical`, fit to normal images' image_statistics."""
    if score == "typicality":
        require(typical is not None, "score typicality needs the normal images' statistics (Typicality)")
        return typical(image_statistics(vae, images, device, subtract_pixel_entropy))
    generator = torch.Generator(device).manual_seed(seed)
    subtract = subtract_pixel_entropy and vae.likelihood == "bernoulli"
    scores = []
    for batch in images.split(BATCH_SIZE):
        x = batch.to(device)
        if score == "nll":
            value = vae_importance_weighted_nll(vae, x, iw_samples, generator)
        else:
            mu, logvar = vae.encode(x)
            if score == "reconstruction":
                z = mu
            else:
                z = mu + torch.randn(mu.shape, generator=generator, device=device) * torch.exp(0.5 * logvar)
            terms = vae_negative_elbo(x, vae.decode_logits(z), mu, logvar, likelihood=vae.likelihood)
            value = terms["reconstruction" if score == "reconstruction" else "loss"]
        scores.append((value - pixel_entropy(x) if subtract else value).cpu())
    return torch.cat(scores).numpy().astype(np.float64)


@torch.no_grad()
def anomaly_maps(
    vae: nn.Module, images: torch.Tensor, device: torch.device, subtract_pixel_entropy: bool
) -> torch.Tensor:
    """The per-pixel term of the reconstruction score, (N, H, W) in nats: -log p(x_i|z = mu) summed over the
    channels (less the pixel's binary entropy where the score subtracts it). Its sum is the image's score."""
    maps = []
    for batch in images.split(BATCH_SIZE):
        x = batch.to(device)
        terms = -reconstruction_log_prob(x, vae.decode_logits(vae.encode(x)[0]), vae.likelihood)
        if subtract_pixel_entropy and vae.likelihood == "bernoulli":
            terms -= F.binary_cross_entropy(x, x, reduction="none")
        maps.append(terms.sum(1).cpu())
    return torch.cat(maps)


def trained_labels(dataset: dict, root: str | None, image_shape: tuple[int, int, int], path: Path) -> set[int]:
    """The label indices the VAE was trained on, from the `classes` of its dataset kwargs."""
    classes = dataset.get("classes")
    require(
        classes is not None,
        f"'{path}' was trained on all classes (classes=None), so no class is held out: anomaly 'classes' needs a "
        "VAE trained on some of them, e.g. python main_vae.py --classes 1,7",
    )
    classes = as_class_list(classes)
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return set(classes)
    # Class names: let the data set map them to label indices, as training did.
    _, labels = load_test_images(dataset, image_shape, root, classes=classes)
    return set(labels.unique().tolist())


def score_threshold(errors: np.ndarray, is_anomaly: np.ndarray, threshold_percentile: float) -> dict[str, float]:
    """AUROC of the error as an anomaly score; precision, recall and F1 of flagging errors above the
    `threshold_percentile` percentile of the normal images' errors."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    threshold = float(np.percentile(errors[~is_anomaly], threshold_percentile))
    flagged = errors > threshold
    return {
        "auroc": float(roc_auc_score(is_anomaly, errors)),
        "threshold": threshold,
        "precision": float(precision_score(is_anomaly, flagged, zero_division=0)),
        "recall": float(recall_score(is_anomaly, flagged, zero_division=0)),
        "f1": float(f1_score(is_anomaly, flagged, zero_division=0)),
    }


def plot_histograms(
    errors: np.ndarray, is_anomaly: np.ndarray, names: tuple[str, str], summary: dict, path: Path
) -> None:
    bins = np.histogram_bin_edges(errors, bins=60)
    fig = figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for flag, name, color in ((False, names[0], "tab:blue"), (True, names[1], "tab:red")):
        # density: the two groups may differ in size (anomaly 'classes')
        ax.hist(errors[is_anomaly == flag], bins=bins, alpha=0.55, density=True, color=color, label=name)
    ax.axvline(summary["threshold"], color="black", ls="--", lw=1, label=f"threshold ({summary['threshold']:.1f})")
    subtracted = summary["subtract_pixel_entropy"] and summary["likelihood"] == "bernoulli"
    less = " less the pixel entropy" if subtracted else ""
    unit = "" if summary["score"] == "typicality" else ", nats"
    ax.set_xlabel(textwrap.fill(f"{SCORES[summary['score']]}{less}{unit}", 80))
    ax.set_ylabel("density")
    ax.set_title(f"VAE anomaly score per image (AUROC {summary['auroc']:.3f})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_roc(errors: np.ndarray, is_anomaly: np.ndarray, summary: dict, path: Path) -> None:
    from sklearn.metrics import roc_curve  # imported when first used

    fpr, tpr, _ = roc_curve(is_anomaly, errors)
    flagged = errors > summary["threshold"]
    point = (flagged[~is_anomaly].mean(), flagged[is_anomaly].mean())  # (FPR, TPR) at the threshold
    fig = figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot(fpr, tpr, color="tab:red", label=f"VAE {summary['score']} score (AUROC {summary['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="chance")
    ax.plot(*point, "ko", label=f"threshold: precision {summary['precision']:.2f}, recall {summary['recall']:.2f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@torch.no_grad()
def save_examples(
    vae: nn.Module, normal: torch.Tensor, anomalous: torch.Tensor, path: Path, device: torch.device
) -> None:
    """Rows of up to 8: normal images, their reconstructions, anomalous images, their reconstructions."""
    from torchvision.utils import save_image

    n = min(8, len(normal), len(anomalous))
    shape = (-1, *vae.image_shape)
    rows = []
    for images in (normal[:n], anomalous[:n]):
        rows += [images, vae.reconstruct(images.to(device)).view(shape).cpu()]
    save_image(torch.cat(rows), path, nrow=n, padding=2, pad_value=0.5)


def run_detection(
    weights_path: str,
    output_dir: str,
    *,
    images: str | None = None,
    normal_images: str | None = None,
    num_maps: int = 8,
    anomaly: str = "gaussian_noise",
    score: str | None = None,
    iw_samples: int = 100,
    typicality_images: int = 10000,
    subtract_pixel_entropy: bool = True,
    noise_std: float = 0.2,
    salt_pepper_amount: float = 0.1,
    patch_size: int = 10,
    patch_value: float = 0.0,
    threshold_percentile: float = 95.0,
    num_images: int | None = None,
    root: str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Score normal and anomalous test images with the VAE in `weights_path`, write the plots,
    scores and summary into output_dir; returns the summary."""
    require(anomaly in ANOMALIES, f"unknown anomaly '{anomaly}': use one of {', '.join(ANOMALIES)}")
    if score is None:
        score = "typicality" if anomaly == "classes" and images is None else "reconstruction"
    require(score in SCORES, f"unknown score '{score}': use one of {', '.join(SCORES)}")
    require(iw_samples >= 1, f"iw_samples must be 1 or more, got {iw_samples}")
    require(typicality_images >= 2, f"typicality_images must be 2 or more, got {typicality_images}")
    require(noise_std >= 0, f"noise_std must be 0 or more, got {noise_std}")
    require(0 <= salt_pepper_amount <= 1, f"salt_pepper_amount must be in [0, 1], got {salt_pepper_amount}")
    require(0 <= patch_value <= 1, f"patch_value must be in [0, 1], got {patch_value}")
    require(0 < threshold_percentile < 100, f"threshold_percentile must be in (0, 100), got {threshold_percentile}")
    require(num_images is None or num_images > 0, f"num_images must be positive or None, got {num_images}")
    require(num_maps >= 0, f"num_maps must be 0 or more, got {num_maps}")
    for name, folder_path in (("images", images), ("normal_images", normal_images)):
        require(
            folder_path is None or Path(folder_path).is_dir(),
            f"{name} '{folder_path}' is not a folder: name a folder of image files",
        )
    require(normal_images is None or images is not None, "normal_images sets the threshold for images: set images too")
    path, folder = resolve_weights(weights_path, output_dir, DEFAULT_WEIGHTS, "a vae.pt")
    torch_device = pick_device(device)
    seed_everything(seed)
    vae, dataset = load_vae(path, torch_device)
    side = min(vae.image_shape[1:])
    require(1 <= patch_size <= side, f"patch_size must be between 1 and the image side {side}, got {patch_size}")
    make_output_dir(folder)
    scoring = dict(
        score=score,
        device=torch_device,
        seed=seed,
        iw_samples=iw_samples,
        subtract_pixel_entropy=subtract_pixel_entropy,
    )
    if score == "typicality":
        training, _ = load_training_images(dataset, vae.image_shape, root, max_samples=typicality_images)
        normal = to_float(training, normalize=False)
        scoring["typical"] = Typicality(image_statistics(vae, normal, torch_device, subtract_pixel_entropy))
    if images is not None:
        return score_folder(
            vae, dataset, path, folder, images, normal_images, root, threshold_percentile, num_maps, scoring
        )

    test_images, labels = load_test_images(dataset, vae.image_shape, root, max_samples=num_images)
    clean = to_float(test_images, normalize=False)  # the VAE's [0, 1] range

    if anomaly == "classes":
        trained = trained_labels(dataset, root, vae.image_shape, path)
        is_anomaly = ~np.isin(labels.numpy(), sorted(trained))
        require(
            is_anomaly.any(),
            f"'{path}' was trained on every class in the test images ({sorted(trained)}): no class is held out; "
            "train a VAE on some classes only, e.g. python main_vae.py --classes 1,7",
        )
        require(
            (~is_anomaly).any(),
            f"none of the {len(labels)} test images scored has a trained class {sorted(trained)}: raise num_images",
        )
        scored, scored_labels, corrupted = clean, labels.numpy(), np.zeros(len(clean), dtype=bool)
        indices = np.arange(len(clean))
        names = (f"trained classes {sorted(trained)}", "held-out classes")
        details = {"classes_trained": sorted(trained)}
    else:
        # Every image twice: clean (normal) and corrupted (anomalous), a balanced test.
        generator = torch.Generator().manual_seed(seed)
        strength = dict(
            noise_std=noise_std, salt_pepper_amount=salt_pepper_amount, patch_size=patch_size, patch_value=patch_value
        )
        scored = torch.cat([clean, corrupt(clean, anomaly, generator, **strength)])
        scored_labels = np.tile(labels.numpy(), 2)
        corrupted = np.repeat([False, True], len(clean))
        is_anomaly = corrupted
        indices = np.tile(np.arange(len(clean)), 2)
        names = ("clean", anomaly.replace("_", " "))
        details = {k: v for k, v in strength.items() if k.startswith(_STRENGTH_PREFIX[anomaly])}

    errors = anomaly_scores(vae, scored, **scoring)
    summary = {
        "weights_path": str(path),
        "anomaly": anomaly,
        "score": score,
        **({"iw_samples": iw_samples} if score == "nll" else {}),
        **({"typicality_images": scoring["typical"].count} if score == "typicality" else {}),
        "likelihood": vae.likelihood,
        "subtract_pixel_entropy": subtract_pixel_entropy,
        **details,
        "num_normal": int((~is_anomaly).sum()),
        "num_anomalous": int(is_anomaly.sum()),
        "mean_error_normal": float(errors[~is_anomaly].mean()),
        "mean_error_anomalous": float(errors[is_anomaly].mean()),
        "threshold_percentile": threshold_percentile,
        **score_threshold(errors, is_anomaly, threshold_percentile),
    }

    plot_histograms(errors, is_anomaly, names, summary, folder / "reconstruction_error_distribution.png")
    plot_roc(errors, is_anomaly, summary, folder / "roc_curve.png")
    save_examples(vae, scored[~is_anomaly], scored[is_anomaly], folder / "anomaly_examples.png", torch_device)
    with open(folder / "anomaly_scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "corrupted", "anomaly", "error", "flagged"])
        for row in zip(
            indices, scored_labels, corrupted, is_anomaly, errors, errors > summary["threshold"], strict=True
        ):
            i, label, was_corrupted, truth, error, flagged = row
            writer.writerow([int(i), int(label), int(was_corrupted), int(truth), f"{error:.4f}", int(flagged)])
    with open(folder / "anomaly_summary.json", "w") as f:
        json.dump(summary, f, indent=2)

    print(f"VAE anomaly detection ({names[0]} vs {names[1]}), score: {SCORES[score]}, {path}:")
    print(f"  images: {summary['num_normal']} normal, {summary['num_anomalous']} anomalous")
    print(f"  mean error: {summary['mean_error_normal']:.2f} normal, {summary['mean_error_anomalous']:.2f} anomalous")
    print(f"  AUROC {summary['auroc']:.4f}, threshold {summary['threshold']:.2f}")
    print(
        f"  at the {threshold_percentile:g}th percentile of normal errors: precision {summary['precision']:.3f}, "
        f"recall {summary['recall']:.3f}, F1 {summary['f1']:.3f}"
    )
    print(
        f"  written to {folder}: reconstruction_error_distribution.png, roc_curve.png, anomaly_examples.png, "
        "anomaly_scores.csv, anomaly_summary.json"
    )
    return summary


def score_folder(
    vae: nn.Module,
    dataset: dict,
    path: Path,
    out: Path,
    images: str,
    normal_images: str | None,
    root: str | None,
    threshold_percentile: float,
    num_maps: int,
    scoring: dict,
) -> dict:
    """Score every image in the folder `images`, flag those above the threshold the normal images set,
    and write the scores, the most anomalous images and their anomaly maps into `out`."""
    from torchvision.utils import save_image

    pictures, files = load_folder(images, vae.image_shape)
    if normal_images is not None:
        normal, _ = load_folder(normal_images, vae.image_shape)
        normal_source = normal_images
    else:
        normal, _ = load_test_images(dataset, vae.image_shape, root, classes=dataset.get("classes"))
        normal_source = "the test split of the model's data"
    x = to_float(pictures, normalize=False)
    scores = anomaly_scores(vae, x, **scoring)
    threshold = float(
        np.percentile(anomaly_scores(vae, to_float(normal, normalize=False), **scoring), threshold_percentile)
    )
    order = np.argsort(-scores, kind="stable")
    flagged = scores > threshold
    with open(out / "folder_scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "score", "flagged"])
        for i in order:
            writer.writerow([files[i].relative_to(images), f"{scores[i]:.4f}", int(flagged[i])])

    top = torch.as_tensor(order[: min(8, len(order))].copy())
    shape = (-1, *vae.image_shape)
    with torch.no_grad():
        reconstructions = vae.reconstruct(x[top].to(scoring["device"])).view(shape).cpu()
    save_image(torch.cat([x[top], reconstructions]), out / "folder_most_anomalous.png", nrow=len(top), pad_value=0.5)
    mapped = torch.as_tensor(order[: min(num_maps, len(order))].copy())
    if len(mapped):
        plot_anomaly_maps(vae, x[mapped], [files[i] for i in mapped.tolist()], scores[mapped.numpy()], scoring, out)

    subtracted = scoring["subtract_pixel_entropy"] and vae.likelihood == "bernoulli"
    summary = {
        "weights_path": str(path),
        "images": str(images),
        "normal_images": normal_source,
        "score": scoring["score"],
        **({"typicality_images": scoring["typical"].count} if "typical" in scoring else {}),
        "likelihood": vae.likelihood,
        "subtract_pixel_entropy": subtracted,
        "num_images": len(files),
        "num_normal": len(normal),
        "threshold_percentile": threshold_percentile,
        "threshold": threshold,
        "num_flagged": int(flagged.sum()),
        "most_anomalous": [str(files[i].relative_to(images)) for i in order[:10]],
    }
    with open(out / "folder_summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(f"VAE anomaly scores of {len(files)} images in {images} ({SCORES[scoring['score']]}, {path}):")
    print(
        f"  threshold {threshold:.2f}: the {threshold_percentile:g}th percentile of {len(normal)} normal images "
        f"({normal_source}); {summary['num_flagged']} of {len(files)} flagged"
    )
    for i in order[:5]:
        print(f"  {scores[i]:10.2f}  {'flagged' if flagged[i] else '       '}  {files[i].relative_to(images)}")
    maps = ", anomaly_maps.png" if len(mapped) else ""
    print(f"  written to {out}: folder_scores.csv, folder_most_anomalous.png{maps}, folder_summary.json")
    return summary


def plot_anomaly_maps(
    vae: nn.Module, x: torch.Tensor, files: list[Path], scores: np.ndarray, scoring: dict, out: Path
) -> None:
    """A row per image: the image, its reconstruction, and the reconstruction score's per-pixel term over the
    image (one colour scale for all rows, so the maps compare)."""
    device = scoring["device"]
    maps = anomaly_maps(vae, x, device, scoring["subtract_pixel_entropy"]).clamp(min=0)
    with torch.no_grad():
        reconstructions = vae.reconstruct(x.to(device)).view(-1, *vae.image_shape).cpu()
    grey = vae.image_shape[0] == 1

    def shown(image: torch.Tensor) -> np.ndarray:
        return image[0].numpy() if grey else image.permute(1, 2, 0).numpy()

    fig = figure(figsize=(7.5, 2.5 * len(x)))
    axes = fig.subplots(len(x), 3, squeeze=False)
    top = float(maps.max()) or 1.0
    for row, (image, reconstruction, pixel_map, file, score) in enumerate(
        zip(x, reconstructions, maps, files, scores, strict=True)
    ):
        left, middle, right = axes[row]
        left.imshow(shown(image), cmap="gray" if grey else None, vmin=0, vmax=1)
        left.set_title(f"{file.name[:28]}\nscore {score:.1f}", fontsize=8)
        middle.imshow(shown(reconstruction), cmap="gray" if grey else None, vmin=0, vmax=1)
        middle.set_title("reconstruction", fontsize=8)
        right.imshow(shown(image), cmap="gray" if grey else None, vmin=0, vmax=1)
        heat = right.imshow(pixel_map.numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=top)
        right.set_title("per-pixel reconstruction term", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.colorbar(heat, ax=axes[:, 2].tolist(), shrink=0.6, label="nats per pixel")
    fig.savefig(out / "anomaly_maps.png", dpi=100)


def main(argv: list[str] | None = None) -> dict:
    paths = {"weights_path": weights_path, "output_dir": output_dir}
    return analysis_main(__doc__, paths, "anomaly_kwargs", anomaly_kwargs, run_detection, argv)


if __name__ == "__main__":
    run_cli(main)
