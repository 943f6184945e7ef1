"""Map a trained VAE's latent space in 2D and measure how well it separates the classes.

Encodes the test images, keeps the mean vectors (mu), reduces them to 2D with PCA (or t-SNE
with method "tsne") and plots them coloured by label. How well the classes separate is
measured by the k-NN accuracy (cross-validated) in the 2D map and in the full latent space, the
silhouette score of the labels in both, and, for PCA, the variance the two components explain.
Writes, into output_dir:
    latents_space_2d.png   the scatter plot, with a legend of the labels
    latent_summary.json    the numbers above (also printed)

Set weights_path and output_dir below, or override them and any key of latent_kwargs from the
command line with dashes for underscores:
    python latent_space_vae.py --weights-path runs/vae/vae.pt --method tsne --num-images 3000
An empty weights_path reads mnist_VAE/vae.pt (what main_vae.py writes); an empty output_dir
writes beside the weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets import load_test_images, to_float
from models import names_of_kind
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

latent_kwargs = {
    "method": "pca",  # pca or tsne (much slower than pca on many images)
    "num_images": None,  # encode only the first N test images (None: all of them)
    "knn_neighbors": 5,  # k of the k-NN classifier
    "knn_folds": 5,  # cross-validation folds of the k-NN accuracy
    "silhouette_samples": 2000,  # images the silhouette score is computed on (it is quadratic in their number)
    "tsne_perplexity": 30.0,
    "root": None,  # where the test images are; None = the root the VAE was trained with
    "seed": 0,  # t-SNE, the folds and the silhouette sample
    "device": "auto",  # cuda, then mps, then cpu
}

DEFAULT_WEIGHTS = "mnist_VAE/vae.pt"  # main_vae.py's output_dir
METHODS = ("pca", "tsne")
BATCH_SIZE = 1000


@torch.no_grad()
def encode_means(
    vae: nn.Module, images: torch.Tensor, normalize: bool, device: torch.device, labels: torch.Tensor | None = None
) -> np.ndarray:
    """uint8 images (N, C, H, W) -> their mean latent vectors mu, (N, latent_dim). A conditional VAE
    encodes each image with its label (its latent then holds what the label does not say: the style)."""
    means = []
    for i, batch in enumerate(images.split(BATCH_SIZE)):
        x = to_float(batch.to(device), normalize)  # the range the VAE was trained on
        y = () if labels is None else (labels[i * BATCH_SIZE : (i + 1) * BATCH_SIZE].to(device),)
        means.append(vae.encode(x, *y)[0].cpu())
    return torch.cat(means).numpy().astype(np.float64)


def embed_2d(
    latents: np.ndarray, method: str = "pca", seed: int = 0, perplexity: float = 30.0
) -> tuple[np.ndarray, list[float] | None]:
    """Latents (N, D) -> 2D points (N, 2), and for PCA the variance ratio each component explains."""
    from sklearn.decomposition import PCA  # scikit-learn: imported when first used
    from sklearn.manifold import TSNE

    require(method in METHODS, f"unknown method '{method}': use {' or '.join(METHODS)}")
    require(len(latents) >= 3, f"need at least 3 images for a 2D map, got {len(latents)}")
    if method == "pca":
        pca = PCA(n_components=2, random_state=seed)
        return pca.fit_transform(latents), [float(r) for r in pca.explained_variance_ratio_]
    # t-SNE needs perplexity < number of points; PCA init gives a map that is stable across seeds.
    tsne = TSNE(2, perplexity=min(perplexity, len(latents) - 1.0), init="pca", random_state=seed)
    return tsne.fit_transform(latents), None


def separation(
    points: np.ndarray, labels: np.ndarray, neighbors: int, folds: int, silhouette_samples: int, seed: int
) -> dict[str, float | None]:
    """Cross-validated k-NN accuracy and silhouette score of the labels in these coordinates
    (None where there are too few images or classes for them), with the k and folds they used: the
    folds at most the rarest class's count, k at most a fold's training images."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    counts = np.bincount(labels)
    counts = counts[counts > 0]
    result: dict[str, float | None] = {"knn_accuracy": None, "silhouette": None, "neighbors": None, "folds": None}
    if len(counts) < 2:
        return result
    # Every fold needs each class in its training part: cap the folds by the rarest class.
    k_folds = min(folds, int(counts.min()))
    if k_folds >= 2:
        smallest_train = len(labels) - -(-len(labels) // k_folds)  # k-NN cannot ask for more neighbours
        k = max(1, min(neighbors, smallest_train))
        cv = StratifiedKFold(k_folds, shuffle=True, random_state=seed)
        scores = cross_val_score(KNeighborsClassifier(k), points, labels, cv=cv)
        result.update(knn_accuracy=float(scores.mean()), neighbors=k, folds=k_folds)
    sample = min(silhouette_samples, len(labels))
    if sample > len(counts):
        result["silhouette"] = float(silhouette_score(points, labels, sample_size=sample, random_state=seed))
    return result


def plot_map(points: np.ndarray, labels: np.ndarray, title: str, path: Path) -> None:
    from matplotlib import colormaps  # imported when first used

    classes = np.unique(labels)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig = figure(figsize=(7.5, 6.5))
    ax = fig.subplots()
    for i, label in enumerate(classes):
        mine = labels == label
        ax.scatter(*points[mine].T, s=4, alpha=0.6, color=cmap(i % cmap.N), label=str(label), rasterized=True)
    ax.legend(title="label", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_latent_map(
    weights_path: str,
    output_dir: str,
    *,
    method: str = "pca",
    num_images: int | None = None,
    knn_neighbors: int = 5,
    knn_folds: int = 5,
    silhouette_samples: int = 2000,
    tsne_perplexity: float = 30.0,
    root: str | None = None,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Encode the test images with the VAE in `weights_path`, write the 2D map and the summary
    into output_dir; returns the summary, with the map's points under 'points' (not written)."""
    require(method in METHODS, f"unknown method '{method}': use {' or '.join(METHODS)}")
    require(num_images is None or num_images > 0, f"num_images must be positive or None, got {num_images}")
    for key, value in (("knn_neighbors", knn_neighbors), ("silhouette_samples", silhouette_samples)):
        require(value > 0, f"{key} must be positive, got {value}")
    require(knn_folds >= 2, f"knn_folds must be at least 2, got {knn_folds}")
    require(tsne_perplexity > 0, f"tsne_perplexity must be positive, got {tsne_perplexity}")
    path, folder = resolve_weights(weights_path, output_dir, DEFAULT_WEIGHTS, "a vae.pt")
    torch_device = pick_device(device)
    seed_everything(seed)
    vae, dataset = load_trained(
        path, torch_device, names_of_kind("vae"), "the latent map", "use vae.pt from main_vae.py's output_dir"
    )
    make_output_dir(folder)

    images, labels = load_test_images(dataset, vae.image_shape, root, max_samples=num_images)
    conditional = getattr(vae, "num_classes", None) is not None
    latents = encode_means(vae, images, dataset.get("normalize", False), torch_device, labels if conditional else None)
    labels_np = labels.numpy()
    points, variance = embed_2d(latents, method, seed, tsne_perplexity)
    in_2d = separation(points, labels_np, knn_neighbors, knn_folds, silhouette_samples, seed)
    in_latent = separation(latents, labels_np, knn_neighbors, knn_folds, silhouette_samples, seed)
    summary = {
        "weights_path": str(path),
        "method": method,
        "num_images": len(latents),
        "latent_dim": int(latents.shape[1]),
        "explained_variance_ratio": variance,
        "explained_variance_total": sum(variance) if variance else None,
        "knn_neighbors": in_2d["neighbors"],  # what the accuracies used (at most the knn_neighbors asked for)
        "knn_folds": in_2d["folds"],
        "knn_accuracy_2d": in_2d["knn_accuracy"],
        "knn_accuracy_latent": in_latent["knn_accuracy"],
        "silhouette_2d": in_2d["silhouette"],
        "silhouette_latent": in_latent["silhouette"],
    }

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    title = f"VAE latent means ({latents.shape[1]}-D) of {len(latents)} test images, {method.upper()}: "
    k, folds = in_2d["neighbors"] or knn_neighbors, in_2d["folds"] or knn_folds
    title += f"{k}-NN accuracy {shown(in_2d['knn_accuracy'])} in 2D"
    if variance:
        title += f"\nexplained variance {variance[0]:.3f} + {variance[1]:.3f} = {sum(variance):.3f}"
    plot_map(points, labels_np, title, folder / "latents_space_2d.png")
    with open(folder / "latent_summary.json", "w") as f:
        json.dump(summary, f, indent=2)

    if (k, folds) != (knn_neighbors, knn_folds) and in_2d["neighbors"] is not None:
        print(
            f"note: {len(latents)} images allow {k} neighbours in {folds} folds, not the {knn_neighbors} in "
            f"{knn_folds} asked for: the accuracies below use {k} and {folds}"
        )
    print(f"VAE latent space ({path}), {len(latents)} test images, {method}:")
    if variance:
        print(f"  explained variance ratio   {variance[0]:.3f} + {variance[1]:.3f} = {sum(variance):.3f}")
    print(
        f"  {k}-NN accuracy ({folds}-fold) 2D {shown(in_2d['knn_accuracy'])}, latent {shown(in_latent['knn_accuracy'])}"
    )
    print(f"  silhouette score           2D {shown(in_2d['silhouette'])}, latent {shown(in_latent['silhouette'])}")
    print(f"  written to {folder}: latents_space_2d.png, latent_summary.json")
    return {**summary, "points": points, "labels": labels_np}


def main(argv: list[str] | None = None) -> dict:
    paths = {"weights_path": weights_path, "output_dir": output_dir}
    return analysis_main(__doc__, paths, "latent_kwargs", latent_kwargs, run_latent_map, argv)


if __name__ == "__main__":
    run_cli(main)
