import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import distributions as D

from course_lib import train, vi

XS = [-2.0, 0.5, 3.0, 6.0]  # observations of the worked example (0.5 and 3 are the chapter's)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one thread is faster, and far faster when other jobs load the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quad(f, a=0.0, b=math.inf) -> float:
    """Adaptive quadrature of a scalar function of a float (scipy.integrate.quad).

    Integrands with a sign change (log-ratios) can make QUADPACK warn that roundoff limits the
    requested 1e-10 accuracy; the tests' own tolerances (1e-6 or looser) are what must hold.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(f, a, b, limit=200, epsabs=1e-10, epsrel=1e-9)[0]


def q_density(q: vi.PositiveNormal):
    return lambda z: math.exp(q.log_prob(torch.tensor(z)).item())


def random_qs(n: int, seed: int = 0):
    g = gen(seed)
    for i in range(n):
        mu = (2 * torch.rand((), generator=g, dtype=torch.float64) - 1).item() * 1.5
        logvar = (2 * torch.rand((), generator=g, dtype=torch.float64) - 1).item()
        yield vi.PositiveNormal(mu, logvar, vi.LINKS[i % 2])


# --- the model, the evidence and the posterior --------------------------------------------------

@pytest.mark.parametrize("x", XS)
def test_log_evidence_matches_quadrature(x):
    numeric = quad(lambda z: math.exp(vi.log_joint(x, torch.tensor(z)).item()))
    assert vi.log_evidence(x).item() == pytest.approx(math.log(numeric), abs=1e-7)


def test_log_evidence_is_the_exponentially_modified_gaussian():
    # x = z + noise with z ~ Exp(1), noise ~ N(0, 1): scipy's exponnorm with K = 1
    x = torch.linspace(-4, 10, 57, dtype=torch.float64)
    np.testing.assert_allclose(vi.log_evidence(x).numpy(), stats.exponnorm(1.0).logpdf(x.numpy()),
                               atol=1e-10)


def test_completing_the_square():
    # log p(x, z) = log N(z; x - 1, 1) + 1/2 - x for z >= 0: the posterior is centred at x - 1
    z = torch.linspace(0, 8, 81, dtype=torch.float64)
    for x in XS:
        gauss = -0.5 * math.log(2 * math.pi) - 0.5 * (z - (x - 1)) ** 2
        assert torch.allclose(vi.log_joint(x, z), gauss + 0.5 - x, atol=1e-12)


@pytest.mark.parametrize("x", XS)
def test_posterior_integrates_to_one_and_is_truncnorm(x):
    assert quad(lambda z: math.exp(vi.posterior_log_prob(torch.tensor(z), x).item())) == \
        pytest.approx(1.0, abs=1e-7)
    z = torch.linspace(0.0, 9.0, 91, dtype=torch.float64)
    ref = stats.truncnorm(a=1 - x, b=math.inf, loc=x - 1, scale=1).logpdf(z.numpy())
    np.testing.assert_allclose(vi.posterior_log_prob(z, x).numpy(), ref, atol=1e-10)
    assert vi.posterior_log_prob(torch.tensor(-0.1), x).item() == -math.inf


@pytest.mark.parametrize("c", [-3.0, -0.5, 0.0, 2.0, 5.0])
def test_truncated_normal_moments_and_density(c):
    mean, var = vi.truncated_normal_moments(c)
    ref = stats.truncnorm(a=-c, b=math.inf, loc=c, scale=1)
    z = torch.linspace(0.0, 9.0, 37, dtype=torch.float64)
    np.testing.assert_allclose(vi.truncated_normal_log_prob(z, c).numpy(), ref.logpdf(z.numpy()),
                               atol=1e-10)
    assert vi.truncated_normal_log_prob(torch.tensor(-1.0), c).item() == -math.inf
    assert mean.item() == pytest.approx(ref.mean(), abs=1e-9)
    assert var.item() == pytest.approx(ref.var(), abs=1e-9)


def test_sample_model_marginals():
    z, x = vi.sample_model(100_000, gen(1))
    assert stats.kstest(z.numpy(), stats.expon.cdf).pvalue > 1e-3
    assert stats.kstest(x.numpy(), stats.exponnorm(1.0).cdf).pvalue > 1e-3


# --- the variational family ---------------------------------------------------------------------

@pytest.mark.parametrize("link", vi.LINKS)
@pytest.mark.parametrize("mu, logvar", [(-1.0, 0.5), (0.3, -1.0), (2.0, 0.0)])
def test_family_density_integrates_to_one(link, mu, logvar):
    q = vi.PositiveNormal(mu, logvar, link)
    assert quad(q_density(q)) == pytest.approx(1.0, abs=1e-7)
    assert q.log_prob(torch.tensor([0.0, -1.0])).tolist() == [-math.inf, -math.inf]


def test_lognormal_matches_torch_distributions():
    q = vi.PositiveNormal(0.4, math.log(0.49), "exp")
    z = torch.linspace(0.01, 10, 200, dtype=torch.float64)
    ref = D.LogNormal(torch.tensor(0.4, dtype=torch.float64), 0.7).log_prob(z)
    assert torch.allclose(q.log_prob(z), ref, atol=1e-12)


@pytest.mark.parametrize("link", vi.LINKS)
def test_reparameterised_samples_have_the_right_distribution(link):
    mu, logvar = 0.5, math.log(0.64)
    q = vi.PositiveNormal(mu, logvar, link)
    z = q.rsample(100_000, gen(2)).numpy()

    # P(z <= t) = Phi((g^{-1}(t) - mu) / sigma)
    def cdf(t):
        t = np.maximum(t, 1e-300)
        u = np.log(np.expm1(t)) if link == "softplus" else np.log(t)
        return stats.norm.cdf((u - mu) / 0.8)

    assert stats.kstest(z, cdf).pvalue > 1e-3
    mean = quad(lambda t: t * math.exp(q.log_prob(torch.tensor(t)).item()))
    assert abs(z.mean() - mean) < 4 * z.std() / math.sqrt(len(z))


def test_rsample_is_differentiable_and_shaped():
    mu = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    logvar = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    z = vi.PositiveNormal(mu, logvar).rsample(5, gen())
    assert z.shape == (5, 3) and (z > 0).all()
    z.sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0


def test_quadrature_expectation_matches_references():
    q = vi.PositiveNormal(-0.3, 0.2, "softplus")
    assert q.expectation(lambda z: z**2).item() == pytest.approx(
        quad(lambda t: t * t * q_density(q)(t)), rel=1e-8)
    # log-normal moments: E[z^k] = exp(k mu + k^2 sigma^2 / 2)
    q = vi.PositiveNormal(-0.3, 0.2, "exp")
    for k in (1, 2, 3):
        assert q.expectation(lambda z, k=k: z**k).item() == pytest.approx(
            math.exp(-0.3 * k + k * k * math.exp(0.2) / 2), rel=1e-10)


# --- the ELBO -------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [0.5, 3.0])
def test_elbo_is_below_log_evidence(x):
    log_px = vi.log_evidence(x).item()
    for i, q in enumerate(random_qs(10, seed=3)):
        w = vi.log_weights(q, x, 20_000, gen(i))
        se = w.std().item() / math.sqrt(w.numel())
        assert w.mean().item() <= log_px + 4 * se
        assert vi.elbo_quadrature(q, x).item() <= log_px


@pytest.mark.parametrize("x", [0.5, 3.0])
def test_elbo_plus_kl_to_posterior_is_log_evidence(x):
    for q in random_qs(6, seed=4):
        # KL(q || p(z|x)) = int q log(q / p(z|x)) dz, by adaptive quadrature in z
        def integrand(z, q=q):
            lq = q.log_prob(torch.tensor(z)).item()
            return math.exp(lq) * (lq - vi.posterior_log_prob(torch.tensor(z), x).item())

        kl = quad(integrand)
        assert kl > 0
        assert vi.elbo_quadrature(q, x).item() + kl == pytest.approx(vi.log_evidence(x).item(),
                                                                     abs=1e-6)


def test_elbo_is_expected_log_likelihood_minus_kl_to_prior():
    x = 3.0
    for q in random_qs(4, seed=5):
        dens = q_density(q)
        ell = quad(lambda z, dens=dens: dens(z) * vi.log_likelihood(x, torch.tensor(z)).item())
        # KL(q || p(z)) = E_q[log q(z) - log p(z)], log p(z) = -z
        kl_prior = quad(lambda z, q=q, dens=dens: dens(z) * (q.log_prob(torch.tensor(z)).item() + z))
        assert vi.elbo_quadrature(q, x).item() == pytest.approx(ell - kl_prior, abs=1e-6)


def test_monte_carlo_elbo_matches_quadrature():
    x, n = 0.5, 100_000
    for i, q in enumerate(random_qs(4, seed=6)):
        w = vi.log_weights(q, x, n, gen(i))
        assert vi.elbo(q, x, n, gen(i)).item() == pytest.approx(w.mean().item(), abs=1e-12)
        assert abs(w.mean().item() - vi.elbo_quadrature(q, x).item()) < 4 * w.std().item() / math.sqrt(n)


def test_reparameterised_gradient_is_unbiased():
    x, n = 3.0, 200_000
    params = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    exact, = torch.autograd.grad(vi.elbo_quadrature(vi.PositiveNormal(params[0], params[1]), x), params)
    # one copy of (mu, logvar) per sample, so that .grad holds each sample's gradient
    mu = torch.full((n,), 1.0, dtype=torch.float64, requires_grad=True)
    logvar = torch.full((n,), -0.5, dtype=torch.float64, requires_grad=True)
    vi.log_weights(vi.PositiveNormal(mu, logvar), x, 1, gen(7)).sum().backward()
    grads = torch.stack([mu.grad, logvar.grad], dim=1)  # (n, 2)
    se = grads.std(0) / math.sqrt(n)
    assert ((grads.mean(0) - exact).abs() < 4 * se).all()


# --- fitting --------------------------------------------------------------------------------------

def best_in_family(x: float, link: str) -> tuple[float, float]:
    """(gap, mean) of the best q in the family (vi.optimal_q: L-BFGS on the quadrature ELBO)."""
    q = vi.optimal_q(x, link)
    return (vi.log_evidence(x) - vi.elbo_quadrature(q, x)).item(), q.expectation(lambda z: z).item()


@pytest.mark.parametrize("link", vi.LINKS)
def test_optimal_q_is_a_stationary_point_and_beats_random_qs(link):
    xs = torch.tensor([-2.0, 0.5, 3.0, 6.0], dtype=torch.float64)
    q = vi.optimal_q(xs, link)
    mu, logvar = q.mu.clone().requires_grad_(), q.logvar.clone().requires_grad_()
    vi.elbo_quadrature(vi.PositiveNormal(mu, logvar, link), xs).sum().backward()
    assert mu.grad.abs().max() < 1e-6 and logvar.grad.abs().max() < 1e-6
    gaps = vi.log_evidence(xs) - vi.elbo_quadrature(q, xs)
    assert (gaps > 0).all()
    for i, x in enumerate(xs.tolist()):
        one = vi.optimal_q(x, link)  # fitting one x alone gives the same q as fitting all at once
        assert one.mu.item() == pytest.approx(q.mu[i].item(), abs=1e-5)
        for other in random_qs(6, seed=12):
            other = vi.PositiveNormal(other.mu, other.logvar, link)
            assert vi.elbo_quadrature(other, x).item() <= vi.elbo_quadrature(one, x).item() + 1e-12


@pytest.mark.parametrize("x", [0.5, 3.0])
def test_fit_reaches_the_best_q_and_is_close_to_the_posterior(x):
    fit = vi.fit_variational(x, steps=800, lr=0.05, n_samples=16, generator=gen(8))
    gap = (vi.log_evidence(x) - vi.elbo_quadrature(fit.q, x)).item()
    best_gap, _ = best_in_family(x, "softplus")
    assert 0 <= best_gap <= gap <= best_gap + 2e-3
    assert gap < 0.05  # nats: softplus-normal q is close to the truncated Gaussian posterior
    post_mean, post_var = vi.truncated_normal_moments(x - 1)
    q_mean = fit.q.expectation(lambda z: z).item()
    q_sd = fit.q.expectation(lambda z: (z - q_mean) ** 2).sqrt().item()
    assert q_mean == pytest.approx(post_mean.item(), abs=0.05)
    assert q_sd == pytest.approx(post_var.sqrt().item(), rel=0.1)
    h = fit.history
    assert len(h["elbo"]) == 800 and np.mean(h["elbo_quad"][-50:]) > np.mean(h["elbo_quad"][:50])


def test_lognormal_family_has_a_larger_gap_than_softplus():
    for x in [0.5, 3.0]:
        assert best_in_family(x, "exp")[0] > best_in_family(x, "softplus")[0] + 0.05


def test_fit_many_observations_at_once_and_a_custom_family():
    xs = torch.tensor([0.5, 3.0], dtype=torch.float64)
    fit = vi.fit_variational(xs, steps=400, generator=gen(9))
    assert fit.q.mu.shape == (2,)
    gaps = vi.log_evidence(xs) - vi.elbo_quadrature(fit.q, xs)
    assert (gaps > 0).all() and (gaps < 0.06).all()

    class LogNormal:  # any object with rsample / log_prob is a variational family
        def __init__(self, mu, logvar):
            self.d = D.LogNormal(mu, (0.5 * logvar).exp())

        def rsample(self, n, generator=None):
            eps = torch.randn(n, *self.d.loc.shape, generator=generator, dtype=torch.float64)
            return torch.exp(self.d.loc + self.d.scale * eps)

        def log_prob(self, z):
            return self.d.log_prob(z)

    custom = vi.fit_variational(3.0, steps=400, family=LogNormal, generator=gen(9))
    assert "elbo_quad" not in custom.history
    assert isinstance(custom.q, LogNormal) and math.isfinite(custom.history["elbo"][-1])


def test_same_seed_same_numbers():
    a = vi.fit_variational(3.0, steps=50, generator=gen(10))
    b = vi.fit_variational(3.0, steps=50, generator=gen(10))
    assert a.history == b.history and a.q.mu.item() == b.q.mu.item()
    q = vi.PositiveNormal(0.1, 0.2)
    assert torch.equal(q.rsample(10, gen(3)), q.rsample(10, gen(3)))
    assert torch.equal(vi.sample_model(10, gen(3))[1], vi.sample_model(10, gen(3))[1])


def test_amortised_encoder_learns_and_generalises():
    torch.manual_seed(0)
    encoder = vi.Encoder(hidden=32)
    history = vi.fit_amortised(encoder, steps=600, batch_size=128, lr=5e-3, generator=gen(11))
    assert np.mean(history["gap"][-50:]) < np.mean(history["gap"][:50])
    xs = torch.tensor([0.5, 3.0], dtype=torch.float64)
    with torch.no_grad():
        mu, logvar = encoder(xs)
        gap = vi.log_evidence(xs) - vi.elbo_quadrature(vi.PositiveNormal(mu, logvar), xs)
    assert mu.shape == (2,) and (gap > 0).all() and (gap < 0.1).all()
    # the amortisation gap is never negative: no q in the family beats the optimal one
    best = vi.log_evidence(xs) - vi.elbo_quadrature(vi.optimal_q(xs), xs)
    assert (gap >= best - 1e-10).all()


def test_fit_uses_the_training_loop_nan_guard():
    bad = lambda mu, logvar: vi.PositiveNormal(mu * float("nan"), logvar)  # noqa: E731
    with pytest.raises(train.NonFiniteLossError):
        vi.fit_variational(1.0, steps=5, family=bad, generator=gen())


# --- mean field: two causes --------------------------------------------------------------------------

@pytest.mark.parametrize("x", [-1.0, 0.5, 3.0])
def test_two_cause_evidence_matches_double_quadrature(x):
    numeric = integrate.dblquad(lambda a, b: math.exp(vi.two_cause_log_joint(
        x, torch.tensor([a, b], dtype=torch.float64)).item()), 0, 40, 0, 40, epsabs=1.5e-8, epsrel=1.5e-8)[0]
    assert vi.two_cause_log_evidence(x).item() == pytest.approx(math.log(numeric), abs=1e-6)


@pytest.mark.parametrize("x", [0.5, 3.0])
def test_cavi_increases_the_elbo_to_a_symmetric_fixed_point(x):
    trace = vi.cavi(x, 30, c1=x - 1, c2=-2.0)
    assert np.all(np.diff(trace["elbo"]) >= -1e-12)
    c1, c2 = trace["c1"][-1], trace["c2"][-1]
    assert c1 == pytest.approx(c2, abs=1e-8)
    assert c1 == pytest.approx(x - 1 - vi.truncated_normal_moments(c1)[0].item(), abs=1e-8)
    assert trace["elbo"][-1] < vi.two_cause_log_evidence(x).item()


def test_mean_field_elbo_matches_monte_carlo():
    x, c1, c2, n = 3.0, 0.8, 0.3, 200_000
    q1, q2 = (stats.truncnorm(a=-c, b=math.inf, loc=c, scale=1) for c in (c1, c2))
    z = np.stack([q1.rvs(n, random_state=1), q2.rvs(n, random_state=2)], axis=-1)
    w = vi.two_cause_log_joint(x, torch.from_numpy(z)).numpy() - q1.logpdf(z[:, 0]) - q2.logpdf(z[:, 1])
    assert abs(w.mean() - vi.mean_field_elbo(x, c1, c2).item()) < 4 * w.std() / math.sqrt(n)


# --- bad inputs --------------------------------------------------------------------------------------

def test_bad_n_samples_raises():
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        vi.elbo(vi.PositiveNormal(0.0, 0.0), 1.0, n_samples=0)


def test_arguments_in_the_old_order_raise():
    # (q, x) like elbo.elbo(model, x): passing the observation first is a clear error, not a wrong number
    q = vi.PositiveNormal(0.0, 0.0)
    for call in (lambda: vi.elbo(1.0, q), lambda: vi.log_weights(1.0, q, 4),
                 lambda: vi.elbo_quadrature(1.0, q)):
        with pytest.raises(TypeError, match="q first"):
            call()


def test_bad_link_raises():
    with pytest.raises(ValueError, match="link must be 'softplus' or 'exp'"):
        vi.PositiveNormal(0.0, 0.0, link="relu")


def test_mismatched_parameters_raise():
    with pytest.raises(ValueError, match="mu and logvar must have the same shape"):
        vi.PositiveNormal(torch.zeros(3), torch.zeros(2))


def test_non_finite_observation_raises():
    with pytest.raises(ValueError, match="must be finite"):
        vi.log_evidence(float("nan"))


def test_bad_steps_raise():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        vi.fit_variational(1.0, steps=0)


def test_bad_learning_rate_raises():
    with pytest.raises(ValueError, match="lr must be positive"):
        vi.fit_variational(1.0, steps=10, lr=0.0)


def test_bad_n_nodes_raises():
    with pytest.raises(ValueError, match="n_nodes must be an integer >= 3"):
        vi.elbo_quadrature(vi.PositiveNormal(0.0, 0.0), 1.0, n_nodes=2)


def test_bad_sample_size_raises():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        vi.sample_model(-5)


def test_bad_batch_size_raises():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        vi.fit_amortised(vi.Encoder(), steps=10, batch_size=0)


def test_bad_max_iter_raises():
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        vi.optimal_q(1.0, max_iter=0)


def test_bad_sweeps_raise():
    with pytest.raises(ValueError, match="n_sweeps must be a positive integer"):
        vi.cavi(1.0, 0)
