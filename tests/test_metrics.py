"""metrics: Frechet distance vs closed forms, FID/IS/precision-recall behaviour, clear errors."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from course_lib import data, metrics


def _random_cov(d: int, rank: int | None = None, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def _trace_sqrt_by_eig(c1: np.ndarray, c2: np.ndarray) -> float:
    """Independent route: eigenvalues of the (non-symmetric) product S1 S2 by torch.linalg.eigvals."""
    lam = torch.linalg.eigvals(torch.from_numpy(c1 @ c2))
    return float(lam.real.clamp_min(0).sqrt().sum())


# --- frechet_distance -----------------------------------------------------------------------------

def test_one_dimensional_closed_form():
    # d^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2
    d = metrics.frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]])
    assert d == pytest.approx(1.5**2 + (2 - 0.5) ** 2, rel=1e-12)


def test_commuting_diagonal_covariances():
    a, b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.1, 0.5])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_2x2_closed_form():
    # For a 2x2 matrix M with non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([0.3, -1.0]), np.array([0.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_high_dimension_against_eigvals():
    c1, c2 = _random_cov(12, seed=1), _random_cov(12, seed=2)
    mu1, mu2 = np.zeros(12), np.full(12, 0.1)
    expected = 0.12 + np.trace(c1) + np.trace(c2) - 2 * _trace_sqrt_by_eig(c1, c2)
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)


def test_zero_for_identical_and_symmetric():
    c1, c2 = _random_cov(8, seed=3), _random_cov(8, seed=4)
    mu1, mu2 = np.arange(8.0), np.ones(8)
    assert abs(metrics.frechet_distance(mu1, c1, mu1, c1)) < 1e-9
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(
        metrics.frechet_distance(mu2, c2, mu1, c1), rel=1e-9)
    # torch tensors are accepted and give the same number
    as_torch = [torch.tensor(a) for a in (mu1, c1, mu2, c2)]
    assert metrics.frechet_distance(*as_torch) == pytest.approx(metrics.frechet_distance(mu1, c1, mu2, c2),
                                                                 rel=1e-12)


def test_rank_deficient_covariances_are_stable():
    c1, c2 = _random_cov(10, rank=3, seed=5), _random_cov(10, rank=4, seed=6)
    mu = np.zeros(10)
    d = metrics.frechet_distance(mu, c1, mu, c2)
    expected = np.trace(c1) + np.trace(c2) - 2 * _trace_sqrt_by_eig(c1, c2)
    assert np.isfinite(d) and d == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert abs(metrics.frechet_distance(mu, c1, mu, c1)) < 1e-6 * np.trace(c1)


def test_fallback_when_sqrtm_returns_a_complex_root(monkeypatch):
    c1, c2 = _random_cov(6, seed=7), _random_cov(6, seed=8)
    exact = metrics.frechet_distance(np.zeros(6), c1, np.zeros(6), c2)
    real_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 0.5j)  # a large imaginary part
    assert metrics.frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(exact, rel=1e-8)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: np.full_like(m, np.nan))
    assert metrics.frechet_distance(np.zeros(6), c1, np.zeros(6), c2) == pytest.approx(exact, rel=1e-8)


def test_frechet_distance_bad_inputs():
    with pytest.raises(ValueError, match="means"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        metrics.frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


def test_statistics_needs_more_samples_than_dimensions():
    with pytest.raises(ValueError, match="more samples than dimensions"):
        metrics.statistics(torch.randn(50, 64))
    s = metrics.statistics(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)))
    assert s.mu.shape == (3,) and s.cov.shape == (3, 3) and s.n == 200 and s.cov.dtype == np.float64


def test_fid_of_gaussian_samples_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    y = torch.randn(200_000, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 0.5]) + 1.0
    expected = 2.0 + (2 - 1) ** 2 + (0.5 - 1) ** 2  # ||mu||^2 + sum (sqrt a - sqrt b)^2
    assert metrics.fid(x, y) == pytest.approx(expected, abs=0.02)


def test_mean_term_bias_is_twice_the_trace_over_n():
    """FID between two samples of size N from one distribution, with the true covariance in both
    FeatureStats: the trace terms cancel and FID = ||mu1_hat - mu2_hat||^2, whose mean is 2 tr(Sigma) / N."""
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)  # tr(Sigma) = 1 + 4 + 0.25 + 9
    cov = np.diag(scale.numpy() ** 2)
    n, reps = 50, 1_000
    values = []
    for _ in range(reps):
        a, b = (metrics.statistics(torch.randn(n, 4, generator=g, dtype=torch.float64) * scale + 1.0)
                for _ in range(2))
        d = metrics.fid(dataclasses.replace(a, cov=cov), dataclasses.replace(b, cov=cov))
        assert d == pytest.approx(float(((a.mu - b.mu) ** 2).sum()), rel=1e-9, abs=1e-12)
        values.append(d)
    values = np.array(values)
    assert values.mean() == pytest.approx(2 * 14.25 / n, abs=4 * values.std() / reps**0.5)


def test_fid_infinity_removes_the_small_sample_bias():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4000, 16, generator=g, dtype=torch.float64)
    truth = metrics.FeatureStats(np.zeros(16), np.eye(16), 10**9)  # exact: the true FID is 0
    fid_inf, ns, values = metrics.fid_infinity(feats, truth, ns=(500, 1000, 2000, 4000), generator=g)
    assert values[0] > values[-1] > 0  # biased upwards, less so with more samples
    assert abs(fid_inf) < 0.15 * values[0]


def test_fid_infinity_extrapolates_the_one_over_n_bias_away():
    """Features N(0, I_d) against the exact N(0, I_d): E FID_N = d / N (mean term) + d (d + 1) / (4 (N - 1))
    (tr S + d - 2 tr S^(1/2) to second order in S - I, E ||S - I||_F^2 = d (d + 1) / (N - 1)), and FID_inf
    = 0. With d = 64 the bias at the largest N (0.28) is far above the noise of the fitted intercept,
    so the FID at the largest N is no substitute for the extrapolation."""
    d, ns = 64, (1000, 2000, 4000)
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(4000, d, generator=g, dtype=torch.float64)
    truth = metrics.FeatureStats(np.zeros(d), np.eye(d), 10**9)
    fid_inf, got_ns, values = metrics.fid_infinity(feats, truth, ns=ns, generator=g)
    bias = np.array([d / n + d * (d + 1) / (4 * (n - 1)) for n in ns])
    assert list(got_ns) == list(ns)
    assert np.all(np.abs(values - bias) < 0.15 * bias)  # the FID_N themselves (about 3 % noise)
    # the returned FID_inf is the least-squares intercept of FID_N against 1/N (closed form)
    x = 1 / np.asarray(ns, float)
    slope = ((x - x.mean()) * (values - values.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert fid_inf == pytest.approx(values.mean() - slope * x.mean(), rel=1e-9, abs=1e-12)
    assert abs(fid_inf) < 0.25 * bias[-1]  # the truth is 0; FID at N = 4000 is about 0.28


# --- with the shipped classifier ------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return data.load_mnist("train", device="cpu", limit=1000, verbose=False, download=False).images


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    x = nn.functional.conv2d(x, k.view(1, 1, 1, 7), padding=(0, 3))
    return nn.functional.conv2d(x, k.view(1, 1, 7, 1), padding=(3, 0))


def test_fid_with_itself_is_zero_and_grows_with_blur_and_noise(digits):
    ref = metrics.statistics(metrics.features(digits))
    assert abs(metrics.fid(digits, ref)) < 1e-6
    blurred = [metrics.fid(_blur(digits, s), ref) for s in (0.5, 1.0, 2.0)]
    assert 0 < blurred[0] < blurred[1] < blurred[2]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(digits.shape, generator=g)
    noised = [metrics.fid((digits + s * noise).clamp(0, 1), ref) for s in (0.1, 0.3, 0.6)]
    assert 0 < noised[0] < noised[1] < noised[2]
    half = metrics.fid(digits[:500], digits[500:])  # two halves of real data: close
    assert half < blurred[2] and half < noised[2]


def test_class_coverage_and_inception_score_on_real_digits(digits):
    cov = metrics.class_coverage(digits)
    assert cov.counts.sum() == len(digits) and cov.min_share > 0.05
    is_mean, is_std = metrics.inception_score(digits, splits=5)
    assert 7 < is_mean <= 10 and is_std >= 0


def test_memorising_model_is_caught(digits):
    train, held_out = digits[:500], digits[500:]
    assert metrics.memorisation_ratio(train[:200], train, held_out) < 0.05
    assert 0.5 < metrics.memorisation_ratio(held_out[:200], train, held_out[200:]) < 2


def test_reference_features_are_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    metrics._REFERENCES.clear()
    feats, source = metrics.reference_features("mnist", "test", limit=300, download=False)
    files = list((tmp_path / "metrics").glob("*.pt"))
    assert len(files) == 1 and feats.shape == (300, 64) and "mnist test" in source
    metrics._REFERENCES.clear()
    again, _ = metrics.reference_features("mnist", "test", limit=300, download=False)  # from the file
    assert torch.equal(feats, again)
    stats = metrics.reference_statistics("mnist", "test", limit=300, download=False)
    assert stats.n == 300 and stats.source == source


# --- Inception Score with a fake classifier --------------------------------------------------------

class _OneHot(nn.Module):
    """A fake classifier: image pixel (0, 0, c) = 1 means class c; confident logits 50 * onehot."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def features(self, x):
        return x[:, 0, 0, :10] + 0 * self.dummy

    def forward(self, x):
        return 50 * self.features(x)


def _coded(labels: torch.Tensor) -> torch.Tensor:
    x = torch.zeros(len(labels), 1, 28, 28)
    x[torch.arange(len(labels)), 0, 0, labels] = 1.0
    return x


def test_inception_score_constant_and_uniform_predictions():
    fake = _OneHot()
    constant = _coded(torch.full((1000,), 3))
    assert metrics.inception_score(constant, splits=10, classifier=fake)[0] == pytest.approx(1.0, abs=1e-9)
    uniform = _coded(torch.arange(1000) % 10)
    mean, std = metrics.inception_score(uniform, splits=10, classifier=fake)
    assert mean == pytest.approx(10.0, rel=1e-9) and std < 1e-9
    cov = metrics.class_coverage(_coded(torch.tensor([0, 0, 1, 2])), classifier=fake)
    assert cov.counts.tolist() == [2, 1, 1] + [0] * 7 and cov.min_share == 0


def test_inception_score_against_scipy_entropy():
    from scipy.stats import entropy

    probs = torch.softmax(torch.randn(300, 10, generator=torch.Generator().manual_seed(0)).double() * 2, 1)
    expected = [math.exp(np.mean([entropy(p, part.mean(0)) for p in part]))
                for part in np.array_split(probs.numpy(), 3)]
    mean, std = metrics.inception_score_from_probs(probs, splits=3)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)
    with pytest.raises(ValueError, match="probability vectors"):
        metrics.inception_score_from_probs(probs * 2)


# --- precision / recall and nearest neighbours ---------------------------------------------------

def _mixture(n: int, modes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    which = torch.randint(len(modes), (n,), generator=g)
    return modes[which] + 0.1 * torch.randn(n, modes.shape[1], generator=g)


def test_precision_recall_identical_sets_and_dropped_modes():
    g = torch.Generator().manual_seed(0)
    modes = 3 * torch.randn(10, 8, generator=g)
    ref = _mixture(2000, modes, g)
    assert metrics.precision_recall(ref, ref, k=3) == (1.0, 1.0)
    fresh = _mixture(2000, modes, g)
    p_fresh, r_fresh = metrics.precision_recall(fresh, ref, k=3)
    assert p_fresh > 0.8 and r_fresh > 0.8  # a fresh draw of the same mixture (k-NN balls miss a few)
    half = _mixture(2000, modes[:5], g)
    p, r = metrics.precision_recall(half, ref, k=3)
    assert p > 0.8 and 0.35 * r_fresh < r < 0.65 * r_fresh  # quality kept, half of the diversity lost


def test_precision_recall_against_brute_force():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(40, 3, generator=g), torch.randn(50, 3, generator=g) + 0.5
    k = 2

    def manifold_share(points, centres):
        radii = [sorted(float((c - o).norm()) for o in centres)[k] for c in centres]  # [0] is itself
        return np.mean([any(float((p - c).norm()) <= r for c, r in zip(centres, radii, strict=True))
                        for p in points])

    p, r = metrics.precision_recall(a, b, k=k)
    assert p == pytest.approx(manifold_share(a, b)) and r == pytest.approx(manifold_share(b, a))


def test_nearest_neighbour_distances_against_brute_force():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(7, 1, 28, 28, generator=g), torch.rand(9, 1, 28, 28, generator=g)
    expected = torch.tensor([min(float((x - y).norm()) for y in b) for x in a])
    assert torch.allclose(metrics.nearest_neighbour_distances(a, b), expected, atol=1e-3)


# --- speed and errors ----------------------------------------------------------------------------

def test_sampling_speed_excludes_warm_up():
    import time

    calls = []

    def sample(n):
        time.sleep(0.5 if not calls else 0.01 * n / 10)  # a slow first call, then 10 images per 0.01 s
        calls.append(n)
        return torch.zeros(n, 1, 28, 28)

    speed, out = metrics.sampling_speed(sample, 20, "cpu", return_samples=True)
    assert calls == [16, 20] and out.shape[0] == 20
    assert 300 < speed < 1000  # about 1,000 images/s without the warm-up, far below with it
    with pytest.raises(ValueError, match="returned 1 items"):
        metrics.sampling_speed(lambda n: torch.zeros(1, 1, 28, 28), 5, "cpu")


def test_bad_images_raise_clear_errors():
    fake = _OneHot()
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        metrics.features(torch.rand(4, 28, 28), fake)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        metrics.features(torch.rand(4, 1, 28, 28) * 2 - 1, fake)
    with pytest.raises(TypeError, match="floating point"):
        metrics.features(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), fake)
    with pytest.raises(ValueError, match="NaN"):
        metrics.features(torch.full((4, 1, 28, 28), float("nan")), fake)


def test_mismatched_devices_raise_clear_errors():
    fake = _OneHot().to("meta")
    with pytest.raises(ValueError, match="classifier is on meta"):
        metrics.features(torch.rand(4, 1, 28, 28), fake)
    with pytest.raises(ValueError, match="different devices"):
        metrics.precision_recall(torch.randn(10, 3), torch.randn(10, 3, device="meta"))
    with pytest.raises(ValueError, match="different devices"):
        metrics.nearest_neighbour_distances(torch.randn(10, 3), torch.randn(10, 3, device="meta"))
    with pytest.raises(ValueError, match="on one device"):
        metrics.fid(torch.randn(10, 3), torch.randn(10, 3, device="meta"))
