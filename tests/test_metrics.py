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


# --- FID_inf: the 1/N fit and its standard error --------------------------------------------------

NS = (250, 500, 1000, 2000, 5000)


def test_one_over_n_fit_finds_the_intercept_that_the_largest_n_misses():
    a, k = 2.0, 400.0  # the value at N = 5,000 is k / N = 0.08 above the intercept
    fit = metrics.one_over_n_fit(NS, [a + k / n for n in NS])
    assert fit.intercept == pytest.approx(a, abs=1e-9) and fit.slope == pytest.approx(k, rel=1e-9)
    assert fit.se == pytest.approx(0, abs=1e-9) and fit.dof == len(NS) - 2


def test_one_over_n_fit_standard_error_covers_the_truth_95_percent_of_the_time():
    """values = a + k / N + e, e ~ N(0, sigma^2) independent: a +- t_{0.975, m - 2} se is a 95 % interval."""
    rng = np.random.default_rng(0)
    a, k, sigma, trials = 2.0, 400.0, 0.05, 1000
    quantile = scipy.stats.t.ppf(0.975, len(NS) - 2)
    fits = [metrics.one_over_n_fit(NS, a + k / np.asarray(NS) + sigma * rng.standard_normal(len(NS)))
            for _ in range(trials)]
    estimates = np.array([f.intercept for f in fits])
    covered = np.mean([abs(f.intercept - a) <= quantile * f.se for f in fits])
    assert covered == pytest.approx(0.95, abs=3 * (0.95 * 0.05 / trials) ** 0.5)
    assert estimates.mean() == pytest.approx(a, abs=4 * estimates.std() / trials**0.5)  # unbiased
    assert abs(estimates.mean() - a) < 0.25 * k / NS[-1]  # the largest-N value is no estimate of a


def test_fid_infinity_needs_three_sizes_and_returns_its_fit():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2000, 8, generator=g, dtype=torch.float64)
    truth = metrics.FeatureStats(np.zeros(8), np.eye(8), 10**9)
    for ns in ((500, 2000), (500, 500, 2000)):
        with pytest.raises(ValueError, match="at least three different sizes"):
            metrics.fid_infinity(feats, truth, ns=ns)
    result = metrics.fid_infinity(feats, truth, ns=(250, 500, 1000, 2000), generator=g)
    fid_inf, ns, values = result  # unpacks as before
    fit = metrics.one_over_n_fit(ns, values)
    assert fid_inf == result.fid_inf == fit.intercept and result.slope == fit.slope
    assert result.se == fit.se > 0
    assert abs(fid_inf) < scipy.stats.t.ppf(0.995, 2) * result.se  # the truth is 0


# --- the Inception Score against N: one-hot predictions have a closed form ------------------------

def _one_hot_labels(q, n: int, g: torch.Generator) -> torch.Tensor:
    y = torch.multinomial(torch.as_tensor(q, dtype=torch.float64), n, replacement=True, generator=g)
    return nn.functional.one_hot(y, len(q)).double()


def _entropy(shares: np.ndarray) -> float:
    s = shares[shares > 0]
    return float(-(s * np.log(s)).sum())


def test_inception_score_of_one_hot_predictions_is_exp_of_the_label_entropy():
    """p(y | x) = e_y: a split's p(y) is its label shares q_hat and KL(e_y || q_hat) = -log q_hat_y,
    so a split scores exp(H(q_hat)) exactly, and exp(H(q)) as the split grows."""
    q, g = np.array([0.5, 0.3, 0.2]), torch.Generator().manual_seed(0)
    probs = _one_hot_labels(q, 1000, g)
    assert metrics.inception_score_from_probs(probs, splits=1)[0] == pytest.approx(
        math.exp(_entropy(probs.mean(0).numpy())), rel=1e-12)
    large = metrics.inception_score_from_probs(_one_hot_labels(q, 200_000, g), splits=1)[0]
    assert large == pytest.approx(math.exp(_entropy(q)), rel=5e-3)


def test_inception_score_with_small_splits_is_biased_low_as_the_closed_form_says():
    """E IS(N, splits) = E exp(H(q_hat_n)) with n = N / splits labels per split: an exact sum over the
    multinomial counts of one split (K = 3 classes), below exp(H(q)) by about (K - 1) / (2 n) in the log."""
    q, n, splits, trials = np.array([0.5, 0.3, 0.2]), 30, 10, 400
    counts = [np.array([a, b, n - a - b]) for a in range(n + 1) for b in range(n + 1 - a)]
    exact = sum(scipy.stats.multinomial.pmf(c, n, q) * math.exp(_entropy(c / n)) for c in counts)
    g = torch.Generator().manual_seed(1)
    scores = np.array([metrics.inception_score_from_probs(_one_hot_labels(q, n * splits, g), splits)[0]
                       for _ in range(trials)])
    tolerance = 4 * scores.std() / trials**0.5
    assert scores.mean() == pytest.approx(exact, abs=tolerance)
    assert exact < math.exp(_entropy(q)) - 5 * tolerance  # the bias is resolved by this test


def test_log_inception_score_of_ten_balanced_classes_against_the_binomial_sum():
    """Ten equally likely classes (the digits): E log IS = E H(q_hat_n) = sum_y sum_c Binom(c; n, q_y)
    (-(c / n) log(c / n)). At n = 30 a split scores about exp(2.137) = 8.5, not 10."""
    q, n, trials = np.full(10, 0.1), 30, 1000
    c = np.arange(n + 1)
    term = np.where(c > 0, -(c / n) * np.log(np.maximum(c, 1) / n), 0.0)
    exact = sum((scipy.stats.binom.pmf(c, n, p) * term).sum() for p in q)
    g = torch.Generator().manual_seed(2)
    logs = np.log([metrics.inception_score_from_probs(_one_hot_labels(q, n, g), splits=1)[0]
                   for _ in range(trials)])
    assert logs.mean() == pytest.approx(exact, abs=4 * logs.std() / trials**0.5)
    assert math.exp(exact) < 9 < 10  # the bias of the split size, with a perfect classifier


# --- a statistic over independent sample sets, and the ordering rule -------------------------------

Summary = metrics.Summary


def test_summarise_mean_sd_and_standard_error():
    import statistics

    values = [25.1, 24.0, 26.2]
    s = metrics.summarise(values)
    assert s.mean == pytest.approx(statistics.mean(values)) and s.n == 3
    assert s.sd == pytest.approx(statistics.stdev(values)) and s.se == pytest.approx(s.sd / 3**0.5)
    assert f"{s:.1f}" == "25.1 ± 1.1"
    for bad in ([1.0], [1.0, math.nan]):
        with pytest.raises(ValueError, match="at least two finite"):
            metrics.summarise(bad)


def test_rows_inside_each_others_spread_are_tied_in_both_directions():
    rows = {"a": Summary(10.0, 1.0, 3), "b": Summary(10.5, 1.0, 3)}
    assert metrics.compare(rows["a"], rows["b"]) == metrics.compare(rows["b"], rows["a"]) == "tied"
    assert metrics.rank_with_ties(rows, higher_is_better=False) == [["a", "b"]]
    assert metrics.rank_with_ties(rows, higher_is_better=True) == [["b", "a"]]
    assert metrics.format_ranking([["a", "b"]], higher_is_better=False) == "a ≈ b"


def test_clearly_separated_rows_are_ordered_in_both_directions():
    rows = {"a": Summary(10.0, 0.5, 3), "b": Summary(20.0, 0.5, 3)}
    assert metrics.compare(rows["a"], rows["b"]) == "<" and metrics.compare(rows["b"], rows["a"]) == ">"
    lower = metrics.rank_with_ties(rows, higher_is_better=False)  # FID
    higher = metrics.rank_with_ties(rows, higher_is_better=True)  # IS, recall
    assert lower == [["a"], ["b"]] and higher == [["b"], ["a"]]
    assert metrics.format_ranking(lower, higher_is_better=False) == "a < b"
    assert metrics.format_ranking(higher, higher_is_better=True) == "b > a"


def test_the_ordering_threshold_is_welchs():
    # three seeds a side, equal sd: ordered iff the gap exceeds t_{0.975, 4} sqrt(2 / 3) sd (2.27 sd)
    threshold = scipy.stats.t.ppf(0.975, 4) * math.sqrt(2 / 3)
    a = Summary(0.0, 1.0, 3)
    assert metrics.compare(a, Summary(0.99 * threshold, 1.0, 3)) == "tied"
    assert metrics.compare(a, Summary(1.01 * threshold, 1.0, 3)) == "<"
    # unequal spreads and counts: the Welch-Satterthwaite degrees of freedom, written out
    b_sd, b_n = 3.0, 5
    se2 = 1 / 3 + b_sd**2 / b_n
    nu = se2**2 / ((1 / 3) ** 2 / 2 + (b_sd**2 / b_n) ** 2 / (b_n - 1))
    threshold = scipy.stats.t.ppf(0.975, nu) * se2**0.5
    assert metrics.compare(a, Summary(-0.99 * threshold, b_sd, b_n)) == "tied"
    assert metrics.compare(a, Summary(-1.01 * threshold, b_sd, b_n)) == ">"
    # without any spread (a deterministic statistic) the means decide
    assert metrics.compare(Summary(1.0, 0.0, 3), Summary(1.0, 0.0, 3)) == "tied"
    assert metrics.compare(Summary(1.0, 0.0, 3), Summary(2.0, 0.0, 3)) == "<"


def test_a_chain_of_ties_is_one_group():
    rows = {"A": Summary(0.0, 1.0, 3), "B": Summary(1.5, 1.0, 3), "C": Summary(3.0, 1.0, 3)}
    assert metrics.compare(rows["A"], rows["C"]) == "<"  # 3 sd apart, but B is tied with both
    assert metrics.compare(rows["A"], rows["B"]) == metrics.compare(rows["B"], rows["C"]) == "tied"
    assert metrics.rank_with_ties(rows, higher_is_better=False) == [["A", "B", "C"]]


def test_every_stated_order_holds_for_every_pair_across_groups():
    rng, sizes = np.random.default_rng(3), []
    for _ in range(20):
        rows = {f"r{i}": Summary(rng.uniform(0, 10), rng.uniform(0.05, 0.5), 3) for i in range(8)}
        for higher in (False, True):
            groups = metrics.rank_with_ties(rows, higher_is_better=higher)
            sizes += [len(grp) for grp in groups]
            flat = [r for grp in groups for r in grp]
            assert sorted(flat) == sorted(rows)
            means = [rows[r].mean for r in flat]
            assert means == sorted(means, reverse=higher)
            for i, grp in enumerate(groups):
                for later in groups[i + 1:]:
                    assert all(metrics.compare(rows[a], rows[b]) == (">" if higher else "<")
                               for a in grp for b in later)
    assert max(sizes) > 1 and sizes.count(1) > len(sizes) / 2  # both ties and orders were tested


def test_reruns_order_equal_rows_rarely_and_never_reverse_separated_ones():
    """Three seeds a side, per-seed noise N(0, 1): rows of equal mean are ordered in about 5 % of runs
    (Welch at level 0.05, a little less), rows 5 sd apart in almost all and never the wrong way round."""
    rng, runs = np.random.default_rng(4), 2000
    for gap, low, high in ((0.0, 0.0, 0.05 + 3 * (0.05 * 0.95 / runs) ** 0.5), (5.0, 0.9, 1.0)):
        verdicts = [metrics.compare(*(metrics.summarise(rng.normal(mean, 1, 3)) for mean in (0, gap)))
                    for _ in range(runs)]
        ordered = np.mean([v != "tied" for v in verdicts])
        assert low <= ordered <= high
        if gap > 0:
            assert ">" not in verdicts


def test_wasserstein_assignment_is_exact_on_cases_with_a_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    # a translation moves every point by |c|, and no pairing can do better than the means' distance
    shift = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert metrics.wasserstein_assignment(x, x + shift) == pytest.approx(5.0, abs=1e-9)
    shuffled = x[torch.randperm(300, generator=g)]
    assert metrics.wasserstein_assignment(x, shuffled) == pytest.approx(0.0, abs=1e-7)
    # in 1-D the optimal pairing is by rank: the mean gap between sorted samples
    a, b = torch.rand(200, 1, generator=g), torch.rand(200, 1, generator=g) * 2
    by_rank = (a.flatten().sort().values - b.flatten().sort().values).abs().mean().item()
    assert metrics.wasserstein_assignment(a, b) == pytest.approx(by_rank, rel=1e-6)


def test_wasserstein_assignment_refuses_bad_input():
    with pytest.raises(ValueError, match="same number of points"):
        metrics.wasserstein_assignment(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        metrics.wasserstein_assignment(torch.full((3, 2), float("nan")), torch.zeros(3, 2))


def test_compare_rankings_finds_kept_reversed_lost_and_new_orders():
    first = [["a"], ["b", "c"], ["d"]]  # a < b ≈ c < d
    second = [["b"], ["a"], ["c", "d"], ["e"]]  # b < a < c ≈ d < e; e is not in the first
    changes = metrics.compare_rankings(first, second)
    assert changes.reversed == [("a", "b")]
    assert changes.kept == [("a", "c"), ("a", "d"), ("b", "d")]
    assert changes.lost == [("c", "d")]
    assert changes.new == [("b", "c")]
    same = metrics.compare_rankings(first, first)
    assert same.reversed == same.lost == same.new == [] and len(same.kept) == 5
    with pytest.raises(ValueError, match="twice"):
        metrics.compare_rankings([["a"], ["a"]], first)
    with pytest.raises(TypeError, match="groups"):
        metrics.compare_rankings(["a", "b"], first)


def test_seeds_needed_is_the_first_count_that_compare_orders():
    a, b = Summary(10.0, 1.0, 3), Summary(12.0, 1.0, 3)
    n = metrics.seeds_needed(a, b)
    assert metrics.compare(Summary(10.0, 1.0, n), Summary(12.0, 1.0, n)) == "<"
    assert metrics.compare(Summary(10.0, 1.0, n - 1), Summary(12.0, 1.0, n - 1)) == "tied"
    assert metrics.seeds_needed(a, Summary(10.0, 1.0, 3), most=50) is None  # equal means: never
    assert metrics.seeds_needed(a, Summary(30.0, 1.0, 3)) == 2
