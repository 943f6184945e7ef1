"""Quality metrics of generated images, measured with a small classifier trained on the real data.

The formulas are torch-fidelity's (the library behind torchmetrics' FID), applied to the features below.

Every feature metric compares the classifier's penultimate-layer features of generated images
with those of the real test images (FID and KID do the same with Inception features, which are
neither available offline nor meaningful for 28x28 digits):

- frechet_distance: Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017);
- kid: kernel distance, unbiased squared MMD with a cubic polynomial kernel (Bińkowski et al. 2018),
  averaged over random subsets; unlike the Fréchet distance it has no bias for small samples;
- classifier_score: exp(E[KL(p(y|x) || p(y))]), the Inception score's analogue: 1 to 10, higher is better;
- class_entropy_bits: entropy of the histogram of predicted classes; log2(10) = 3.32 when every class
  is as frequent as any other, low when the generator collapses onto a few modes;
- precision, recall: the share of generated images inside the real images' k-NN balls, and of real
  images inside the generated ones' (Kynkäänniemi et al. 2019): fidelity and coverage, in [0, 1];
- class_accuracy (class-conditional models): the share of samples the in-domain classifier puts in
  the class they were drawn for, the mean over classes, and class_accuracy_<c> for each class c.

torch-fidelity is imported when a metric is first computed (it imports torchvision, which is slow to import).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets import convert, files_fingerprint, held_out_folder, load_images, source_files, to_float
from models import SmallCNN
from trainers.classifier import DataSource, Unsupported, data_source, default_cache_dir, get_classifier
from utils import UserError, atomic_file, require

GENERATOR_METRICS = ("frechet_distance", "kid", "classifier_score", "class_entropy_bits", "precision", "recall")
INCEPTION_METRICS = ("fid", "kid", "inception_score", "precision", "recall")  # the same, in Inception features
FEATURES = ("auto", "inception", "classifier")
# The FID Inception-v3 weights (TF's 2015-12-05 graph): torch-fidelity's / torchmetrics' file, pytorch-fid's file.
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
MAX_IMAGES = 10_000  # real test images (and as many generated ones) per evaluation: all of MNIST's test split
CPU_FEATURE_CHUNK = 100  # images a forward pass of the feature network on a CPU (see embed)
# Rows of a block of k-NN distances: 500 x 10,000 floats is memory the allocator keeps and reuses, where
# larger blocks are fresh pages from the OS every time.
DISTANCE_ROWS = 500

# ---------------------------------------------------------------------------- the metrics themselves


# KID's subsets: half torch-fidelity's default of 100, at half its cost (metrics.json's protocol says so).
KID_SUBSETS = 50
KID_SUBSET_SIZE = 1000


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """|mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2) between Gaussians fitted to two (N, D) feature sets."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(x).double()) for x in (real, fake)]
    return float(max(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID], 0.0))


def kid_draws(
    num_real: int, num_fake: int, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """KID's (real, generated) index subsets: torch-fidelity's seeded numpy draws, in its order."""
    size = min(subset_size, num_real, num_fake)
    if size < 2:
        raise ValueError("the kernel distance needs at least 2 samples of each set")
    rng = np.random.RandomState(seed)
    draws = []
    for _ in range(subsets):
        real = rng.choice(num_real, size, replace=False)
        draws.append((real, rng.choice(num_fake, size, replace=False)))
    return draws


def _kernel_sums(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum of k(x_i, y_j) = (x_i.y_j / D + 1)^3 over all pairs, and over the diagonal."""
    k = (x @ y.T).mul_(1.0 / x.shape[1]).add_(1).pow_(3)
    return k.sum(), k.diagonal().sum()


def kid_real_terms(real: np.ndarray, num_fake: int, **draws: int) -> torch.Tensor:
    """Each KID subset's real-real kernel sum off the diagonal: it depends on the real set and the draws only
    (`kid_draws`' keywords), so the evaluator computes it once with the real features."""
    real_t = torch.from_numpy(real).double()
    sums = [_kernel_sums(real_t[r], real_t[r]) for r, _ in kid_draws(len(real), num_fake, **draws)]
    return torch.stack([total - diagonal for total, diagonal in sums])


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
    real_terms: torch.Tensor | None = None,
) -> float:
    """KID: unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, the mean over random subsets.

    torch-fidelity's kid_features_to_metric (its seeded numpy draws of the subsets, its float64 sums),
    with the kernel computed in torch: numpy's float64 power is most of the library's time. `real_terms`:
    kid_real_terms of the same real set, draws and generated count, where they are known."""
    draws = {"subsets": subsets, "subset_size": subset_size, "seed": seed}
    real_terms = kid_real_terms(real, len(fake), **draws) if real_terms is None else real_terms
    real_t, fake_t = torch.from_numpy(real).double(), torch.from_numpy(fake).double()
    mmds = []
    for (r, f), real_term in zip(kid_draws(len(real), len(fake), **draws), real_terms, strict=True):
        x, y = real_t[r], fake_t[f]
        (yy, yy_diagonal), (xy, _) = _kernel_sums(y, y), _kernel_sums(x, y)
        size = len(r)
        mmds.append((real_term + yy - yy_diagonal) / (size * (size - 1)) - 2 * xy / (size * size))
    return float(torch.stack(mmds).mean())


def classifier_score(logits: np.ndarray) -> float:
    """exp(mean KL(p(y|x) || p(y))) over the whole set (the Inception score without splits)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

    score = isc_features_to_metric(torch.from_numpy(logits).double(), splits=1, shuffle=False)
    return score[KEY_METRIC_ISC_MEAN]


def class_entropy_bits(logits: np.ndarray) -> float:
    """Entropy (bits) of how often each class is the predicted one."""
    counts = np.bincount(logits.argmax(1), minlength=logits.shape[1])
    share = counts[counts > 0] / counts.sum()
    return float(-(share * np.log2(share)).sum() + 0.0)  # + 0.0: no "-0.0" for a single class


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = DISTANCE_ROWS) -> np.ndarray:
    """Each point's distance to its k-th nearest neighbour in the set (the point itself excluded): the radius
    of its ball in improved precision and recall. Depends on one set only, so the real images' are cached."""
    points = torch.from_numpy(features).float()
    radii = [torch.cdist(part, points).topk(k + 1, largest=False).values[:, -1] for part in points.split(chunk)]
    return torch.cat(radii).numpy()


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, real_radii: np.ndarray | None = None, chunk: int = DISTANCE_ROWS
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour balls: the share of
    generated points inside the real points' balls, and of real points inside the generated ones'. The
    computation of torch-fidelity's metric_prc, a block of rows at a time (no 10k x 10k matrix is kept), one
    block of generated-to-real distances serving both shares, and with the real balls' radii given where
    they are known."""
    real_radii = knn_radii(real, k) if real_radii is None else real_radii
    real_t, fake_t = torch.from_numpy(real).float(), torch.from_numpy(fake).float()
    real_r, fake_r = torch.from_numpy(real_radii).float(), torch.from_numpy(knn_radii(fake, k)).float()
    fake_inside, real_covered = [], torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(fake), chunk):
        distances = torch.cdist(fake_t[start : start + chunk], real_t)
        fake_inside.append((distances <= real_r).any(1))
        real_covered |= (distances <= fake_r[start : start + chunk, None]).any(0)
    return torch.cat(fake_inside).float().mean().item(), real_covered.float().mean().item()


def feature_metrics(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    fake_logits: np.ndarray,
    seed: int = 0,
    real_radii: np.ndarray | None = None,
    real_kid_terms: torch.Tensor | None = None,
) -> dict[str, float]:
    """All generator metrics of one generated set against the real one (`real_radii`: knn_radii of the real
    features, `real_kid_terms`: their kid_real_terms, where they are known)."""
    precision, recall = precision_recall(real_features, fake_features, real_radii=real_radii)
    return {
        "frechet_distance": frechet_distance(real_features, fake_features),
        "kid": kernel_distance(real_features, fake_features, seed=seed, real_terms=real_kid_terms),
        "classifier_score": classifier_score(fake_logits),
        "class_entropy_bits": class_entropy_bits(fake_logits),
        "precision": precision,
        "recall": recall,
    }


# ---------------------------------------------------------------------------- applying them to a generator


def fit_to_classifier(images: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Float images in [0, 1] at any shape -> the classifier's (datasets.convert). Real and generated images
    both pass through it, so a conversion changes both alike."""
    return convert(images, image_shape).clamp(0, 1)


def find_inception_weights(path: str = "") -> Path | None:
    """The FID Inception weights: `path` if given, else either standard file in torch hub's cache; None if absent.
    Never downloads."""
    if path:
        require(Path(path).is_file(), f"inception_weights '{path}' not found: fix the path, or leave it empty")
        return Path(path)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return next((cache / name for name in INCEPTION_FILES if (cache / name).is_file()), None)


def check_metrics_features(features: str, inception_weights: str = "") -> Path | None:
    """The Inception weights file that `features` will use (None: the classifier's features); a one-line
    error for an unknown value, a missing file, or "inception" without the weights."""
    require(features in FEATURES, f"metrics_features must be one of {', '.join(FEATURES)}, got {features!r}")
    weights = find_inception_weights(inception_weights) if features != "classifier" else None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    require(
        weights is not None or features != "inception",
        f"metrics_features='inception' needs the FID Inception weights: put {INCEPTION_FILES[0]} (torch-fidelity's "
        f"release, the file torchmetrics uses) in {cache}/ or set inception_weights to its path; or use "
        "metrics_features='classifier'",
    )
    return weights


class InceptionFeatures(nn.Module):
    """The FID Inception-v3 of torch-fidelity (2048 pool features; 1008 logits for the Inception score) behind
    the classifier's interface. Takes float RGB in [0, 1] at the generator's size; torch-fidelity quantises to
    uint8 and resizes to 299x299 as TensorFlow 1 did, so the numbers match the papers' FID code."""

    def __init__(self, weights: Path, image_size: tuple[int, int]) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:  # a plain tensor file (weights_only); torch-fidelity then reads the same file itself
            torch.load(weights, map_location="cpu", weights_only=True)
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(weights)
            )
        except Exception as error:  # a torn file, pickled code, or weights of another network
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise UserError(f"'{weights}' is not the FID Inception-v3 weights: {reason}") from None
        self.image_shape = (3, *image_size)
        self.weights = weights

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x.mul(255).round().clamp(0, 255).to(torch.uint8))


class GeneratorEvaluator:
    """Holds the feature network (the in-domain classifier or Inception) and the real test images' features;
    scores generated images against them."""

    def __init__(
        self,
        classifier: SmallCNN | InceptionFeatures,
        real_images: torch.Tensor | Callable[[], tuple[torch.Tensor, torch.Tensor]],
        record: dict | None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        batch_size: int = 500,
        real_split: str = "test",
        real_labels: torch.Tensor | None = None,
        label_classifier: SmallCNN | None = None,
        cache: Path | None = None,
    ) -> None:
        """`real_images`: uint8 (N, C, H, W) at the generator's image shape, or a function that loads them and
        their labels; `record`: the classifier's. A conditional generator draws for `real_labels`;
        `label_classifier` (the in-domain classifier, also when the features are Inception's) says which class
        each sample shows. `cache`: a file for the real images' features (`real_feature_cache`), read where it
        is there (the images are then not even loaded) and written where it is not."""
        self.inception = isinstance(classifier, InceptionFeatures)
        # The in-domain CNN runs channels_last: its max-pool is several times faster in that layout on a
        # CPU (the features change in the 7th digit). torch-fidelity's Inception keeps its own layout.
        self.layout = torch.contiguous_format if self.inception else torch.channels_last
        self.classifier = classifier.to(device, memory_format=self.layout).eval()
        self.record, self.real_split = record, real_split
        self.label_classifier = (
            None if label_classifier is None else label_classifier.to(device, memory_format=torch.channels_last).eval()
        )
        self.scored_classes = False  # class_accuracy measured (a conditional generator)
        self.device, self.seed, self.batch_size = torch.device(device), seed, batch_size
        self.kid_draws = {"subsets": KID_SUBSETS, "subset_size": KID_SUBSET_SIZE, "seed": seed}
        cached = _read_real_features(cache)
        if cached is None:
            if callable(real_images):
                real_images, real_labels = real_images()
            batches = (to_float(real_images[i : i + batch_size], False) for i in range(0, len(real_images), batch_size))
            features, logits = self.embed(batches)
            labels = np.zeros(0, np.int64) if real_labels is None else real_labels.cpu().numpy()
            cached = {"features": features, "logits": logits, "labels": labels, "shape": real_images.shape[1:]}
            cached["radii"] = knn_radii(features)
        if "kid_real" not in cached:  # new, or a file written before KID's sums were kept: they are added
            cached["kid_draws"] = np.array(list(self.kid_draws.values()))
            cached["kid_real"] = kid_real_terms(cached["features"], len(cached["features"]), **self.kid_draws).numpy()
            _write_real_features(cache, cached)
        self.real_features, self.real_logits, self.real_radii = cached["features"], cached["logits"], cached["radii"]
        same_draws = list(cached["kid_draws"]) == list(self.kid_draws.values())  # else another seed's sums
        self.kid_real = torch.from_numpy(cached["kid_real"]) if same_draws else None  # then computed when first used
        labels = np.asarray(cached["labels"], dtype=np.int64)
        self.real_labels = torch.from_numpy(labels) if len(labels) else None
        self.num_images, self.image_shape = len(self.real_features), tuple(int(n) for n in cached["shape"])

    @torch.no_grad()
    def embed(self, batches: Iterable[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Float [0, 1] image batches -> (features, class logits) as float64 arrays."""
        features, logits_list = [], []
        for batch in batches:
            # On a CPU, in chunks whose activations the allocator keeps (a 500-image batch's are fresh pages
            # from the OS at every layer); each image's features are the same either way.
            for images in batch.split(CPU_FEATURE_CHUNK) if self.device.type == "cpu" else (batch,):
                x = fit_to_classifier(images.to(self.device).float(), self.classifier.image_shape)
                f, logits = self.classifier.features_and_logits(x.contiguous(memory_format=self.layout))
                features.append(f.double().cpu())
                logits_list.append(logits.double().cpu())
        return torch.cat(features).numpy(), torch.cat(logits_list).numpy()

    def evaluate_images(self, batches: Iterable[torch.Tensor]) -> dict[str, float]:
        """Metrics of a set of float [0, 1] images (given in batches) against the real test images."""
        features, logits = self.embed(batches)
        kid_terms = self._kid_real_terms(len(features))
        metrics = feature_metrics(self.real_features, features, logits, self.seed, self.real_radii, kid_terms)
        if self.inception:  # FID and the Inception score by their names; ImageNet's classes say nothing here
            renamed = {"frechet_distance": "fid", "classifier_score": "inception_score"}
            return {renamed.get(k, k): v for k, v in metrics.items() if k != "class_entropy_bits"}
        return metrics

    def _kid_real_terms(self, num_fake: int) -> torch.Tensor | None:
        """KID's real-real sums for `num_fake` generated images, kept for as many as there are real ones."""
        if num_fake != self.num_images:
            return None
        if self.kid_real is None:
            self.kid_real = kid_real_terms(self.real_features, num_fake, **self.kid_draws)
        return self.kid_real

    @torch.no_grad()
    def evaluate_generator(
        self, sample: Callable[..., torch.Tensor], latent_dim: int, num_classes: int | None = None
    ) -> dict[str, float]:
        """Metrics of as many generated images as there are real ones. `sample(z)` -> float [0, 1] (N, C, H, W);
        for a conditional generator (`num_classes`) `sample(z, labels)`, drawn for the real images' labels
        (so both sets have the same classes) and scored on showing them. The caller puts the model in eval
        mode. The latents are the same at every evaluation (own seeded generator) and the global RNG is
        left as it was, so training's random stream is untouched."""
        require(
            num_classes is None or self.real_labels is not None,
            "a conditional model's metrics need the real images' labels",
        )
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            rng = torch.Generator().manual_seed(self.seed)
            z = torch.randn(self.num_images, latent_dim, generator=rng)
            labels = None if num_classes is None else self.real_labels
            if labels is None or self.label_classifier is None:
                return self.evaluate_images(self._samples(sample, z, labels))
            images = torch.cat(list(self._samples(sample, z, labels)))
            self.scored_classes = True
            return {**self.evaluate_images(images.split(self.batch_size)), **self.class_accuracy(images, labels)}

    def _samples(
        self, sample: Callable[..., torch.Tensor], z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        for i in range(0, len(z), self.batch_size):
            y = () if labels is None else (labels[i : i + self.batch_size].to(self.device),)
            yield sample(z[i : i + self.batch_size].to(self.device), *y)

    @torch.no_grad()
    def class_accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """How often the in-domain classifier sees the class each image was drawn for: the mean over classes
        (class_accuracy) and per class (class_accuracy_<c>)."""
        predicted = torch.cat(
            [
                self.label_classifier(
                    fit_to_classifier(batch.to(self.device).float(), self.label_classifier.image_shape).contiguous(
                        memory_format=torch.channels_last
                    )
                )
                .argmax(1)
                .cpu()
                for batch in images.split(self.batch_size)
            ]
        )
        per_class = {
            f"class_accuracy_{c}": (predicted[labels == c] == c).float().mean().item() for c in labels.unique().tolist()
        }
        return {"class_accuracy": float(np.mean(list(per_class.values()))), **per_class}

    def protocol(self) -> dict:
        """How the metrics were measured: two numbers compare only where their protocols are the same."""
        shape = tuple(self.classifier.image_shape)
        if self.inception:
            features = f"Inception-v3 pool3, 2048 features (torch-fidelity, {self.classifier.weights.name})"
            resize = f"{self.image_shape} -> (3, 299, 299): uint8, then TF1-style bilinear (torch-fidelity)"
        else:
            features = (
                f"in-domain classifier '{self.record.get('data')}' (trainers/classifier.py), penultimate "
                f"layer, {self.real_features.shape[1]} features, test accuracy {self.record.get('test_accuracy')}"
            )
            resize = (
                "none"
                if self.image_shape == shape
                else f"{self.image_shape} -> {shape}, bilinear with antialias, real and generated alike"
            )
        return {
            "features": features,
            "generated_images": self.num_images,
            "real_images": self.num_images,
            "real_split": self.real_split,
            "resize": resize,
            "kid": f"unbiased MMD^2, cubic polynomial kernel, mean of {KID_SUBSETS} subsets of "
            f"{min(KID_SUBSET_SIZE, self.num_images)}",
            "precision_recall": "k-NN, k = 3 (Kynkaanniemi et al. 2019)",
            **(
                {
                    "class_accuracy": f"the in-domain classifier's argmax on {self.num_images} samples drawn for the "
                    f"real {self.real_split} images' labels, mean over classes"
                }
                if self.scored_classes
                else {}
            ),
        }

    def real_reference(self, images: torch.Tensor) -> dict[str, float]:
        """Metrics of other real images (uint8, e.g. from the training split): the best a generator can do."""
        batches = (to_float(images[i : i + self.batch_size], False) for i in range(0, len(images), self.batch_size))
        return self.evaluate_images(batches)


def real_feature_cache(
    folder: Path, network: nn.Module, files: list[Path], image_shape: tuple[int, int, int], **protocol: object
) -> Path | None:
    """The file in `folder` for the real images' features: named by a hash of everything they depend on (the
    network's weights, the data files' paths, sizes and times, the images' shape and what `protocol` says:
    classes, image count), so other data, another split, classifier or count never reuses them. None where
    the data files are not known."""
    if not files:
        return None
    digest = hashlib.blake2b(digest_size=12)
    for tensor in network.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    described = {"files": files_fingerprint(files), "shape": list(image_shape), **protocol}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return folder / "real_features" / f"{digest.hexdigest()}.npz"


def _read_real_features(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as cached:
            features = cached["features"].astype(np.float64)  # stored as the network computed them: float32
            found = {k: cached[k] for k in ("labels", "shape", "radii")}  # a KeyError: an older file, made again
            found.update({k: cached[k] for k in ("kid_draws", "kid_real") if k in cached.files})  # else made when used
            return {"features": features, "logits": cached["logits"].astype(np.float64), **found}
    except (OSError, KeyError, ValueError):  # torn or foreign: computed again
        return None


def _write_real_features(path: Path | None, values: dict) -> None:
    if path is None:
        return
    arrays = {
        **values,
        "features": values["features"].astype(np.float32),
        "logits": values["logits"].astype(np.float32),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    except (OSError, UserError):
        pass  # a read-only cache: computed again next time


def make_generator_evaluator(
    dataset: dict,
    image_shape: tuple[int, int, int],
    device: torch.device | str = "cpu",
    seed: int = 0,
    max_images: int = MAX_IMAGES,
    cache_dir: str | None = None,
    classifier_epochs: int | None = None,
    classifier_max_samples: int | None = None,
    features: str = "classifier",
    inception_weights: str = "",
    conditional: bool = False,
) -> GeneratorEvaluator | None:
    """The evaluator for a run's dataset kwargs (its `classes` too), in the features `features` asks for:
    "inception" (the FID Inception weights must be on disk), "classifier" (the in-domain classifier), or
    "auto" (Inception where its weights are on disk, else the classifier; it says which, once).
    None with a one-line note where the data has no classifier or it cannot be trained: the run goes on
    without these metrics. `conditional`: also the in-domain classifier for class_accuracy, where there is one."""
    weights = check_metrics_features(features, inception_weights)
    if weights is not None:
        if features == "auto":
            print(f"metrics in Inception features ({weights}); metrics_features='classifier' for the in-domain one")
        label_classifier = None
        if conditional:
            try:
                label_classifier, _ = get_classifier(data_source(dataset, cache_dir), device, classifier_epochs)
            except (Unsupported, UserError, OSError) as error:
                print(f"note: class_accuracy skipped: {error}")
        return _inception_evaluator(dataset, image_shape, weights, device, seed, max_images, label_classifier)
    if features == "auto":
        print("metrics in the in-domain classifier's features (no FID Inception weights in torch hub's cache)")
    try:
        source = data_source(dataset, cache_dir)
        classifier, record = get_classifier(source, device, classifier_epochs, classifier_max_samples)
        files = source_files(source.dataset_type, source.test_root, train=False)
    except (Unsupported, UserError, OSError) as error:
        hint = ""
        if dataset.get("dataset_type") == "image_folder":  # Inception's features need no labels
            hint = f"; for metrics without labels put {INCEPTION_FILES[0]} in {torch.hub.get_dir()}/checkpoints"
        print(f"note: generator metrics skipped: {error}{hint}")
        return None
    cache = real_feature_cache(
        source.cache_dir, classifier, files, image_shape, classes=dataset.get("classes"), images=max_images
    )
    return GeneratorEvaluator(
        classifier,
        lambda: load_real_test(source, dataset, image_shape, max_images),
        record,
        device,
        seed,
        label_classifier=classifier,
        cache=cache,
    )


def _inception_evaluator(
    dataset: dict,
    image_shape: tuple[int, int, int],
    weights: Path,
    device: torch.device | str,
    seed: int,
    n: int,
    label_classifier: SmallCNN | None = None,
) -> GeneratorEvaluator:
    """Inception features need no labels: the real images are the test split, or the training images where
    an image folder has none."""
    dataset_type, root = dataset.get("dataset_type", "mnist"), dataset.get("root", "data")
    split = "test" if dataset_type != "image_folder" or held_out_folder(root) else "train (no test split)"

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        real, labels = load_images(
            dataset_type, root, train=False, image_shape=image_shape, classes=dataset.get("classes")
        )
        if len(real) > n:
            keep = torch.linspace(0, len(real) - 1, n).long()
            real, labels = real[keep], labels[keep]
        return real, labels

    network = InceptionFeatures(weights, image_shape[1:])
    files = source_files(dataset_type, root, train=False)
    folder = default_cache_dir(Path(root).parent if dataset_type == "image_folder" else Path(root))
    cache = real_feature_cache(folder, network, files, image_shape, classes=dataset.get("classes"), images=n)
    return GeneratorEvaluator(
        network, load, None, device, seed, 100, split, label_classifier=label_classifier, cache=cache
    )


def load_real_test(
    source: DataSource, dataset: dict, image_shape: tuple[int, int, int], max_images: int = MAX_IMAGES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real test images of the classes a run trains on, at its generator's image shape (uint8)."""
    images, labels = load_images(
        source.dataset_type, source.test_root, train=False, image_shape=image_shape, classes=dataset.get("classes")
    )
    if len(images) > max_images:  # an evenly spread subset, so that every class stays in it
        keep = torch.linspace(0, len(images) - 1, max_images).long()
        images, labels = images[keep], labels[keep]
    return images, labels
