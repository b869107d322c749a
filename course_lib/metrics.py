"""Measuring generative models (chapter 14): FID, Inception Score, precision/recall, memorisation, speed.

All feature-based metrics use the penultimate layer of one fixed network, the shipped domain
classifier ``pretrained.load("digit_classifier")`` (``classifier.DigitClassifier``), so that every
number in the course is comparable with every other, and none is comparable with papers that use
Inception-v3 features. Images are ``(N, 1, 28, 28)`` tensors with values in ``[0, 1]``.

    ref = reference_statistics("mnist", "test")      # cached on disk, keyed by network and data
    fid(samples, ref)                                # Frechet distance of Gaussians fitted to features
    inception_score(samples)                         # (mean, std) over splits
    precision_recall(samples, reference_features("mnist", "test"), k=3)
    images_per_s = sampling_speed(lambda n: model.sample(n), n=1000, device=device)
    fit = fid_infinity(feats, ref, ns=(1000, 2000, 5000))  # fit.fid_inf, fit.se: FID_N = FID_inf + k / N
    s = summarise([25.1, 24.0, 26.2])                # over seeds: f"{s:.1f}" -> "25.1 ± 1.1"
    rank_with_ties({"A": s, "B": t}, higher_is_better=False)  # [["A", "B"]]: the gap is inside the noise
    compare_rankings(first_run, second_run).reversed  # stated orders that a rerun turned round
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.stats
import torch
from torch import nn

from . import _checks, pretrained
from .config import data_dir
from .data import load_dataset

Tensor = torch.Tensor
CLASSIFIER = "digit_classifier"
_CLASSIFIERS: dict[str, nn.Module] = {}  # the shipped classifier, loaded once per device
_REFERENCES: dict[str, tuple[Tensor, str]] = {}  # reference features in memory, by cache key


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``mu`` (D,) and covariance ``cov`` (D, D), float64, of ``n`` feature vectors; their origin."""

    mu: np.ndarray
    cov: np.ndarray
    n: int
    source: str = ""


@dataclass(frozen=True)
class Coverage:
    """Predicted-class histogram: ``counts`` (C,), ``shares`` (C,) summing to 1, smallest share."""

    counts: np.ndarray
    shares: np.ndarray
    min_share: float


def default_classifier(device: torch.device | str = "cpu") -> nn.Module:
    """The shipped ``digit_classifier`` on ``device`` (loaded once per device, eval mode)."""
    key = str(torch.device(device))
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = pretrained.load(CLASSIFIER, device)
    return _CLASSIFIERS[key]


def check_images(images: Tensor, name: str = "images") -> Tensor:
    """Raise a clear error unless ``images`` is a finite float tensor (N >= 1, 1, 28, 28) in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 1, 28, 28), got "
                        f"{type(images).__name__}.")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) with N >= 1, got {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got {images.dtype} (divide uint8 by 255).")
    lo, hi = images.min().item(), images.max().item()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contain NaN or infinite values.")
    if lo < -1e-4 or hi > 1 + 1e-4:
        hint = " They look like [-1, 1] (tanh): use (x + 1) / 2." if lo < -0.1 else ""
        raise ValueError(f"{name} must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}].{hint}")
    return images


def _model_for(images: Tensor, classifier: nn.Module | None) -> nn.Module:
    if classifier is None:
        return default_classifier(images.device)
    device = next(classifier.parameters()).device
    if device != images.device:
        raise ValueError(f"images are on {images.device} but the classifier is on {device}: move one "
                         "of them (images.to(device) or classifier.to(device)).")
    return classifier


@torch.no_grad()
def features(images: Tensor, classifier: nn.Module | None = None, batch_size: int = 500) -> Tensor:
    """Penultimate-layer features phi(x) of the classifier, (N, D), float32, on the images' device."""
    batch_size = _checks.count(batch_size, "batch_size")
    model = _model_for(check_images(images), classifier)
    model.eval()
    return torch.cat([model.features(images[i: i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def class_probabilities(images: Tensor, classifier: nn.Module | None = None, batch_size: int = 500) -> Tensor:
    """p(y | x) = softmax of the classifier's logits, (N, C), float64."""
    batch_size = _checks.count(batch_size, "batch_size")
    model = _model_for(check_images(images), classifier)
    model.eval()
    logits = torch.cat([model(images[i: i + batch_size]) for i in range(0, len(images), batch_size)])
    return torch.softmax(logits.double(), dim=1)


def statistics(feats: Tensor | np.ndarray, source: str = "") -> FeatureStats:
    """Mean and (unbiased) covariance of feature vectors ``feats`` (N, D), in float64; needs N > D."""
    x = _numpy(feats)
    if x.ndim != 2:
        raise ValueError(f"features must be a matrix (N, D), got shape {x.shape}.")
    n, d = x.shape
    if n <= d:
        raise ValueError(f"{n} samples for {d}-dimensional features: the covariance needs more samples "
                         f"than dimensions (N > {d}); use more samples.")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values: check the images (or the model that "
                         "made them).")
    return FeatureStats(x.mean(0), np.cov(x, rowvar=False), n, source)


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=float)


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr (S1 S2)^{1/2}: ``scipy.linalg.sqrtm``, or the symmetric eigenvalue form when that fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular input; we check its result instead
        root = scipy.linalg.sqrtm(cov1 @ cov2)
    scale = max(np.trace(cov1), np.trace(cov2), 1e-300)
    if np.all(np.isfinite(root)) and np.abs(np.imag(root)).max(initial=0.0) <= 1e-6 * scale:
        return float(np.trace(np.real(root)))
    # Fallback: S1 S2 is similar to the PSD matrix A = S1^{1/2} S2 S1^{1/2}, so the square roots share
    # their eigenvalues: tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i(A)), with only symmetric eigenproblems.
    w, v = np.linalg.eigh(cov1)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^{1/2}
    lam = np.linalg.eigvalsh(half @ cov2 @ half)
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2), in float64.

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr (S1 S2)^{1/2}.   mu: (D,), S: (D, D).
    """
    mu1, cov1, mu2, cov2 = (_numpy(a) for a in (mu1, cov1, mu2, cov2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"need means (D,) and covariances (D, D) of one D, got {mu1.shape}, {cov1.shape}, "
                         f"{mu2.shape}, {cov2.shape}.")
    for name, a in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if not np.allclose(c, c.T, atol=1e-8 * max(1.0, np.abs(c).max())):
            raise ValueError(f"{name} is not symmetric: pass a covariance matrix.")
        lowest = np.linalg.eigvalsh((c + c.T) / 2).min()
        if lowest < -1e-8 * max(1e-300, np.abs(c).max()) * d:
            raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {lowest:.3g}): "
                             "a covariance matrix has no negative variance along any direction. Pass the "
                             "covariance of the features (statistics(feats).cov), not another matrix.")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * _trace_sqrt_product(cov1, cov2))


def _as_stats(x, classifier: nn.Module | None) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        return statistics(x)
    return statistics(features(x, classifier))


def fid(samples, reference, classifier: nn.Module | None = None) -> float:
    """FID = ``frechet_distance`` of the Gaussians fitted to the features of samples and reference.

    Each argument: images (N, 1, 28, 28), features (N, D), or ``FeatureStats``.
    """
    if isinstance(samples, Tensor) and isinstance(reference, Tensor) and samples.device != reference.device:
        raise ValueError(f"samples are on {samples.device} and reference on {reference.device}: put them "
                         "on one device.")
    s, r = _as_stats(samples, classifier), _as_stats(reference, classifier)
    return frechet_distance(s.mu, s.cov, r.mu, r.cov)


class LineFit(NamedTuple):
    """Least-squares line y = intercept + slope x; the intercept's standard error, degrees of freedom."""

    intercept: float
    slope: float
    se: float  # s * sqrt([(X^T X)^{-1}]_00), s^2 = residual sum of squares / dof
    dof: int  # points - 2


def one_over_n_fit(ns, values) -> LineFit:
    """Fit values_i = a + k / N_i by least squares (``scipy.stats.linregress`` on x = 1 / N); a at N -> inf.

    ``ns`` (m,) sample sizes, ``values`` (m,) the statistic at each; needs m >= 3 different sizes, so
    that the residuals leave m - 2 >= 1 degrees of freedom for the standard error of a. With
    independent Gaussian errors of one variance, a +- t_{0.975, m-2} se covers the true a 95 % of the time.
    """
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    if ns.ndim != 1 or ns.shape != values.shape:
        raise ValueError(f"need one value per sample size, got ns of shape {ns.shape} and values of shape "
                         f"{values.shape}.")
    if len(set(ns.tolist())) < 3 or not (np.isfinite(values).all() and (ns > 0).all()):
        raise ValueError(f"the 1/N fit needs at least three different positive sizes N and finite values "
                         f"(two different sizes fit a line exactly and leave nothing to estimate its error), "
                         f"got ns = {tuple(ns.tolist())}, values = {tuple(values.tolist())}.")
    fit = scipy.stats.linregress(1.0 / ns, values)
    return LineFit(float(fit.intercept), float(fit.slope), float(fit.intercept_stderr), len(ns) - 2)


class FIDInfinity(NamedTuple):
    """``fid_infinity``'s result: unpacks as (fid_inf, ns, values); ``se`` and ``slope`` of the same fit."""

    fid_inf: float
    ns: np.ndarray
    values: np.ndarray

    @property
    def se(self) -> float:
        """Standard error of FID_inf from the fit's residuals (the pool's own noise is not in it)."""
        return one_over_n_fit(self.ns, self.values).se

    @property
    def slope(self) -> float:
        """k of FID_N = FID_inf + k / N."""
        return one_over_n_fit(self.ns, self.values).slope


def fid_infinity(sample_feats: Tensor, reference, ns: tuple[int, ...], *, repeats: int = 1,
                 generator: torch.Generator | None = None) -> FIDInfinity:
    """FID at N -> infinity (Chong & Forsyth 2020): fit FID_N = FID_inf + k / N by least squares.

    ``sample_feats`` (M, D) with M >= max(ns); each FID_N uses N rows drawn without replacement
    (``repeats`` times, averaged). ``ns`` needs at least three different sizes: two fix the line and
    leave no residual to measure its error. Returns ``FIDInfinity(fid_inf, ns, values)`` (FID_N for
    each N), which also carries ``se``, the intercept's standard error from the residuals
    (``one_over_n_fit``). All subsets come from one pool of M samples, so ``se`` says how well the
    points follow the line, not how FID_inf would move with a new pool: for that, fit each of several
    independent sample sets (``zoo.score_seeds``) and ``summarise`` the FID_inf values.
    """
    _checks.tensor(sample_feats, "sample_feats", ndim=2)
    repeats = _checks.count(repeats, "repeats")
    try:
        ns = tuple(_checks.count(n, "every N in ns", 2) for n in ns)
    except TypeError as err:
        raise ValueError(f"ns must be a tuple of sample sizes, e.g. (1000, 2000, 5000): {err}") from None
    if len(set(ns)) < 3:
        raise ValueError(f"fid_infinity fits FID_N = FID_inf + k / N, which needs at least three different "
                         f"sizes N (two different sizes fit the line exactly and leave no residual to "
                         f"estimate its error), got ns = {ns}.")
    ref = _as_stats(reference, None)
    if max(ns) > len(sample_feats):
        raise ValueError(f"largest N = {max(ns)} exceeds the {len(sample_feats)} samples given.")
    values = []
    for n in ns:
        runs = [fid(sample_feats[torch.randperm(len(sample_feats), generator=generator)[:n].to(
            sample_feats.device)], ref) for _ in range(repeats)]
        values.append(float(np.mean(runs)))
    return FIDInfinity(one_over_n_fit(ns, values).intercept, np.asarray(ns), np.asarray(values))


def inception_score_from_probs(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp( E_x KL(p(y|x) || p(y)) ), p(y) the mean of p(y|x) in each split; (mean, std) over splits."""
    p = probs.detach().double().cpu()
    if p.dim() != 2 or (p < 0).any() or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-6):
        raise ValueError("probs must be a matrix (N, C) of probability vectors (rows sum to 1).")
    if isinstance(splits, bool) or not hasattr(splits, "__index__") or not 1 <= splits <= len(p):
        raise ValueError(f"splits must be an integer in [1, N = {len(p)}], got {splits!r}.")
    scores = []
    for part in torch.tensor_split(p, int(splits)):
        marginal = part.mean(0, keepdim=True)  # p(y) over this split
        log_ratio = part.clamp_min(1e-300).log() - marginal.clamp_min(1e-300).log()
        kl = torch.where(part > 0, part * log_ratio, 0.0)  # 0 log 0 = 0
        scores.append(kl.sum(1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(samples: Tensor, splits: int = 10,
                    classifier: nn.Module | None = None) -> tuple[float, float]:
    """Inception Score of images with the domain classifier's p(y | x): (mean, std) over ``splits``."""
    return inception_score_from_probs(class_probabilities(samples, classifier), splits)


def _flat(x: Tensor, classifier: nn.Module | None) -> Tensor:
    if x.dim() == 4:
        return features(x, classifier)
    if x.dim() != 2:
        raise ValueError(f"expected images (N, 1, 28, 28) or features (N, D), got shape {tuple(x.shape)}.")
    return _checks.finite(x, "features")


def _pairwise_min_k(a: Tensor, b: Tensor, k: int, chunk: int = 1000) -> Tensor:
    """Distance from each row of a to its k-th nearest row of b (k = 1: nearest), (len(a),)."""
    out = [torch.cdist(a[i: i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist")
           .topk(k, dim=1, largest=False).values[:, -1] for i in range(0, len(a), chunk)]
    return torch.cat(out)


def _check_pair(a: Tensor, b: Tensor) -> None:
    _checks.tensor(a, "the first set", min_ndim=2), _checks.tensor(b, "the second set", min_ndim=2)
    if a.device != b.device:
        raise ValueError(f"the two sets are on different devices ({a.device} and {b.device}): move one.")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"the two sets have different shapes per item: {tuple(a.shape[1:])} and "
                         f"{tuple(b.shape[1:])}.")


@torch.no_grad()
def precision_recall(samples: Tensor, reference: Tensor, k: int = 3,
                     classifier: nn.Module | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) on classifier features.

    Each set's manifold is the union of balls around its points, of radius the distance to the
    point's k-th nearest neighbour in the same set. Precision = share of samples inside the
    reference manifold; recall = share of reference points inside the sample manifold.
    Inputs: images (N, 1, 28, 28) or features (N, D).
    """
    _check_pair(samples, reference)
    if isinstance(k, bool) or not hasattr(k, "__index__") or k < 1 or k >= min(len(samples), len(reference)):
        raise ValueError(f"k must be an integer in [1, smaller set size - 1], got {k!r}.")
    k = int(k)
    fs, fr = _flat(samples, classifier).float(), _flat(reference, classifier).float()
    radius_r = _pairwise_min_k(fr, fr, k + 1)  # k + 1: each point is its own nearest neighbour
    radius_s = _pairwise_min_k(fs, fs, k + 1)

    def inside(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1000) -> float:
        hits = [(torch.cdist(points[i: i + chunk], centres, compute_mode="donot_use_mm_for_euclid_dist")
                 <= radii[None]).any(1) for i in range(0, len(points), chunk)]
        return torch.cat(hits).float().mean().item()

    return inside(fs, fr, radius_r), inside(fr, fs, radius_s)


@torch.no_grad()
def nearest_neighbour_distances(samples: Tensor, train: Tensor, chunk: int = 500) -> Tensor:
    """Euclidean distance of each sample to its nearest training item (pixels or features), (N,).

    Computed as |a|^2 + |b|^2 - 2 a.b in float32 in chunks (exact copies give about 1e-2, not 0).
    """
    _check_pair(samples, train)
    _checks.finite(samples, "samples"), _checks.finite(train, "train")
    a, b = samples.flatten(1).float(), train.flatten(1).float()
    bb = (b * b).sum(1)
    out = [((a[i: i + chunk] ** 2).sum(1, keepdim=True) + bb[None] - 2 * a[i: i + chunk] @ b.T)
           .min(1).values.clamp_min(0).sqrt() for i in range(0, len(a), chunk)]
    return torch.cat(out)


def memorisation_ratio(samples: Tensor, train: Tensor, held_out: Tensor) -> float:
    """median NN distance of samples to train / the same for held-out real images (1: fine, 0: copies).

    ``held_out`` must be real images that are *not* in ``train`` (their distance is the yardstick).
    """
    distances = nearest_neighbour_distances(samples, train)
    yardstick = nearest_neighbour_distances(held_out, train).median().item()
    scale = train.flatten(1).float().norm(dim=1).median().item()  # float32 copies give ~1e-3 of it, not 0
    if not yardstick > 1e-2 * scale:
        raise ValueError(f"the held-out images lie at median distance {yardstick:.3g} from the training "
                         "set: they are copies of training images, so the ratio would be NaN or infinite. "
                         "Pass real images that are not in train (e.g. the test split).")
    return float(distances.median().item() / yardstick)


def wasserstein_assignment(x: Tensor, y: Tensor) -> float:
    """Exact W1 between two empirical distributions of n points each: the least mean distance of a pairing.

    With equal weights 1/n, an optimal transport plan is a permutation (Birkhoff), found by the Hungarian
    algorithm (``scipy.optimize.linear_sum_assignment``) on the n x n Euclidean cost matrix: O(n^3) time,
    for low-dimensional points (chapter 13's 2-D flows) and n up to a few thousand. x, y: (n, D).
    """
    _check_pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of points (one pairing), got {x.shape[0]} and "
                         f"{y.shape[0]}.")
    a, b = (_checks.finite(t, name).flatten(1).double().cpu() for t, name in ((x, "x"), (y, "y")))
    cost = torch.cdist(a, b).numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def class_coverage(samples: Tensor, classifier: nn.Module | None = None) -> Coverage:
    """Histogram of the classifier's predicted classes; a mode-collapsed model has a small min_share."""
    probs = class_probabilities(samples, classifier)
    counts = np.bincount(probs.argmax(1).numpy(), minlength=probs.shape[1])
    shares = counts / counts.sum()
    return Coverage(counts, shares, float(shares.min()))


def sampling_speed(sample_fn: Callable[[int], Tensor], n: int, device: torch.device | str, *,
                   warmup: int | None = None, return_samples: bool = False):
    """Images per second of ``sample_fn(n)`` on ``device``: n / wall time, warm-up call excluded.

    ``sample_fn(m)`` must return m images. A first call with ``warmup`` images (default min(n, 16))
    is not timed; CUDA is synchronised before and after the timed call. With ``return_samples``,
    returns (images per second, samples).
    """
    try:
        n = _checks.count(n, "n")
        warmup = None if warmup is None else _checks.count(warmup, "warmup", 0)
    except TypeError as err:
        raise ValueError(str(err)) from None
    if not callable(sample_fn):
        raise TypeError(f"sample_fn must be a function m -> m images, got {type(sample_fn).__name__}.")
    device = torch.device(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if warmup != 0:
        sample_fn(warmup if warmup is not None else min(n, 16))
    sync()
    start = time.perf_counter()
    out = sample_fn(n)
    sync()
    seconds = time.perf_counter() - start
    if len(out) != n:
        raise ValueError(f"sample_fn({n}) returned {len(out)} items, expected {n}.")
    speed = n / seconds
    return (speed, out) if return_samples else speed


def _sha(t: Tensor, full: bool = False) -> str:
    digest = hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return digest if full else digest[:16]


def _read_cached(file) -> Tensor | None:
    """The features stored in a cache file if their SHA-256 checks out; None (and a warning) if not."""
    try:
        stored = torch.load(file, weights_only=True)
        ok = isinstance(stored, dict) and isinstance(stored.get("features"), Tensor) and \
            _sha(stored["features"], full=True) == stored.get("sha256")
    except Exception:  # truncated or garbled file: unpickling fails in many ways
        stored, ok = None, False
    if isinstance(stored, Tensor):  # a cache file from before the hash was stored: recompute quietly
        return None
    if not ok:
        warnings.warn(f"the cached reference features {file.name} failed their SHA-256 check (a corrupt or "
                      "old cache file); recomputing them.", stacklevel=3)
        return None
    return stored["features"]


def reference_features(name: str = "mnist", split: str = "test", *, classifier: nn.Module | None = None,
                       root=None, limit: int | None = None, device: torch.device | str = "cpu",
                       download: bool = True) -> tuple[Tensor, str]:
    """Classifier features (N, D) of a real data split and a description of it, computed once.

    Cached in memory and on disk (``<COURSE_DATA_DIR>/metrics/``), keyed by a SHA-256 of the
    classifier's weights and of the images, so a new network or new data never reuses stale numbers.
    The file stores the features with their own SHA-256; a file that fails the check (a flipped
    byte would shift every FID) is recomputed and rewritten, with a warning.
    """
    data = load_dataset(name, split, device=device, root=root, limit=limit, download=download, verbose=False)
    model = _model_for(data.images, classifier)
    weights = torch.cat([p.flatten().cpu() for p in model.state_dict().values() if p.is_floating_point()])
    key = f"{name}-{split}-{_sha(weights)}-{_sha((data.images * 255).round().to(torch.uint8))}"
    if key not in _REFERENCES:
        file = data_dir() / "metrics" / f"{key}.pt"
        feats = _read_cached(file) if file.exists() else None
        if feats is None:
            feats = features(data.images, model).cpu()
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_name(file.name + ".tmp")
                torch.save({"features": feats, "sha256": _sha(feats, full=True)}, tmp)
                tmp.replace(file)
            except OSError:  # a read-only data folder: keep the features in memory only
                pass
        _REFERENCES[key] = (feats, data.source)
    feats, source = _REFERENCES[key]
    return feats.to(device), f"{name} {split}: {source}"


def reference_statistics(name: str = "mnist", split: str = "test", **kwargs) -> FeatureStats:
    """``statistics`` of ``reference_features(name, split, **kwargs)``, with its source."""
    feats, source = reference_features(name, split, **kwargs)
    return statistics(feats, source)


# --- a statistic over independent sample sets -----------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """One statistic over ``n`` independent sample sets (seeds): mean and standard deviation (ddof = 1).

    ``f"{s:.2f}"`` prints "mean ± sd"; ``s.se`` = sd / sqrt(n) is the standard error of the mean.
    """

    mean: float
    sd: float
    n: int

    @property
    def se(self) -> float:
        return self.sd / self.n**0.5

    def __format__(self, spec: str) -> str:
        return f"{self.mean:{spec}} ± {self.sd:{spec}}"


def summarise(values) -> Summary:
    """Mean, sd = sqrt( sum (v_i - mean)^2 / (n - 1) ) and n of ``values`` (n >= 2 finite numbers)."""
    v = np.asarray([float(x) for x in values])
    if len(v) < 2 or not np.isfinite(v).all():
        raise ValueError(f"summarise needs at least two finite values (one per independent sample set), got "
                         f"{v.tolist()}: draw more seeds, or leave out the runs that failed.")
    return Summary(float(v.mean()), float(v.std(ddof=1)), len(v))


def compare(a: Summary, b: Summary, level: float = 0.05) -> str:
    """"<" or ">" when the mean of ``a`` is below or above that of ``b`` beyond their noise, else "tied".

    The rule is Welch's two-sided t-test at ``level``: the rows are ordered only if
        |mean_a - mean_b| > t_{1 - level/2, nu} sqrt(se_a^2 + se_b^2),
    nu = (se_a^2 + se_b^2)^2 / (se_a^4 / (n_a - 1) + se_b^4 / (n_b - 1)) (Welch-Satterthwaite).
    It is the page's "no ordering of rows whose gap lies inside their spread" made precise: with
    three seeds a side and equal sd the threshold is 2.78 sqrt(2/3) sd = 2.27 sd, close to the gap of
    2 sd at which the intervals mean +- sd stop overlapping; and two rows of equal true mean are
    ordered (in either direction) in at most about ``level`` of the runs. Two rows without any spread
    (sd = 0, e.g. a deterministic statistic) are ordered whenever their means differ.
    """
    if a.se == 0 and b.se == 0:
        return "<" if a.mean < b.mean else ">" if a.mean > b.mean else "tied"
    test = scipy.stats.ttest_ind_from_stats(a.mean, a.sd, a.n, b.mean, b.sd, b.n, equal_var=False)
    if not test.pvalue < level:
        return "tied"
    return "<" if a.mean < b.mean else ">"


def rank_with_ties(rows: dict[str, Summary], *, higher_is_better: bool,
                   level: float = 0.05) -> list[list[str]]:
    """Groups of row names, best group first, such that every row of a group beats every later row.

    Rows are sorted by mean (best first); a cut goes between two neighbours in this order only when
    every row before it is better than every row after it by ``compare`` (Welch at ``level``). Inside a
    group no order is claimed (in a long chain of ties the two ends may differ: the printed ordering
    then says less than it could, never more). FID: ``higher_is_better=False``; IS, recall: True.
    """
    better = ">" if higher_is_better else "<"
    names = sorted(rows, key=lambda r: -rows[r].mean if higher_is_better else rows[r].mean)
    groups: list[list[str]] = [names[:1]] if names else []
    for i in range(1, len(names)):
        if all(compare(rows[a], rows[b], level) == better for a in names[:i] for b in names[i:]):
            groups.append([])
        groups[-1].append(names[i])
    return groups


def format_ranking(groups: list[list[str]], *, higher_is_better: bool) -> str:
    """``rank_with_ties``'s groups as text, e.g. "A < B ≈ C < D" for FID or "D > B ≈ C > A" for the IS."""
    return (" > " if higher_is_better else " < ").join(" ≈ ".join(g) for g in groups)


class OrderingChanges(NamedTuple):
    """Pairs (better, worse) of two rankings, on the rows that both rank: see ``compare_rankings``."""

    kept: list[tuple[str, str]]  # ordered the same way in both
    reversed: list[tuple[str, str]]  # ordered (a, b) in the first, (b, a) in the second
    lost: list[tuple[str, str]]  # ordered in the first, tied in the second
    new: list[tuple[str, str]]  # tied in the first, ordered in the second


def _stated_pairs(groups: list[list[str]], names: set[str]) -> set[tuple[str, str]]:
    return {(a, b) for i, g in enumerate(groups) for a in g for later in groups[i + 1:] for b in later
            if a in names and b in names}


def compare_rankings(first: list[list[str]], second: list[list[str]]) -> OrderingChanges:
    """What a second ranking (``rank_with_ties``'s groups, best first) does to the orderings of a first.

    A ranking states "a before b" for every a in an earlier group than b; rows in one group are tied.
    Only rows that appear in both rankings are compared. A rerun with other seeds should keep or lose
    a stated order (a tie says less, not the opposite) but never reverse one: ``reversed`` is the
    list to check. Works for any two rankings, e.g. a published table (one group per row) against ours.
    """
    for name, groups in (("first", first), ("second", second)):
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in groups):
            raise TypeError(f"{name} must be a list of groups (lists of row names), as rank_with_ties "
                            "returns.")
        flat = [r for g in groups for r in g]
        if len(flat) != len(set(flat)):
            raise ValueError(f"{name} names a row twice: {flat}.")
    common = {r for g in first for r in g} & {r for g in second for r in g}
    one, two = _stated_pairs(first, common), _stated_pairs(second, common)
    return OrderingChanges(kept=sorted(one & two), reversed=sorted(p for p in one if p[::-1] in two),
                           lost=sorted(p for p in one if p not in two and p[::-1] not in two),
                           new=sorted(p for p in two if p not in one and p[::-1] not in one))


def seeds_needed(a: Summary, b: Summary, level: float = 0.05, most: int = 1000) -> int | None:
    """The fewest sample sets per row at which ``compare`` would order rows with these means and sds.

    Assumes the spreads measured now (``a.sd``, ``b.sd``) stay as they are when more seeds are drawn:
    the gap |mean_a - mean_b| must exceed t_{1 - level/2, nu} sqrt((sd_a^2 + sd_b^2) / n). Returns None
    when even ``most`` seeds a side would not separate them (e.g. equal means).
    """
    most = _checks.count(most, "most", 2)
    for n in range(2, most + 1):
        if compare(Summary(a.mean, a.sd, n), Summary(b.mean, b.sd, n), level) != "tied":
            return n
    return None
