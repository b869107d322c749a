import math

import pytest
import torch
from scipy import stats

from course_lib import markov

# The restaurant of chapter 4: states (burger, pizza, hot dog), rows = today, columns = tomorrow.
A = torch.tensor([[0.2, 0.6, 0.2], [0.3, 0.0, 0.7], [0.5, 0.0, 0.5]], dtype=torch.float64)
# Derived by hand: pi_P = 0.6 pi_B, pi_H = 0.2 pi_B + 0.7 pi_P + 0.5 pi_H = 1.24 pi_B, sum = 1.
PI_EXACT = torch.tensor([25.0, 15.0, 31.0], dtype=torch.float64) / 71
# A reducible chain: {0, 1} and {2} are closed classes, state 3 is transient.
REDUCIBLE = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                          [0.2, 0.0, 0.3, 0.5]], dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def asymptotic_sd(P: torch.Tensor, pi: torch.Tensor, j: int, n_lags: int = 200) -> float:
    """sqrt of Var(f) + 2 sum_k Cov(f(X_0), f(X_k)) for f = 1[X = j] under the stationary chain."""
    f = (torch.arange(len(pi)) == j).double() - pi[j]
    var, Pk_f = (pi * f * f).sum(), f.clone()
    for _ in range(n_lags):
        Pk_f = P @ Pk_f
        var = var + 2 * (pi * f * Pk_f).sum()
    return math.sqrt(var)


# --- the restaurant ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["eigenvector", "linear_system"])
def test_restaurant_stationary_exact(method):
    pi = markov.stationary_distribution(A, method=method)
    assert torch.allclose(pi, PI_EXACT, atol=1e-12)
    assert torch.allclose(pi @ A, pi, atol=1e-12)


def test_restaurant_stationary_by_simulation():
    n = 100_000
    freq = markov.stationary_by_simulation(A, n, x0=1, burn_in=100, generator=gen(1))
    for j in range(3):
        assert abs(freq[j] - PI_EXACT[j]) < 4 * asymptotic_sd(A, PI_EXACT, j) / math.sqrt(n)


def test_restaurant_first_steps_from_pizza():
    pis = markov.propagate([0.0, 1.0, 0.0], A, 2)
    assert torch.allclose(pis[1], torch.tensor([0.3, 0.0, 0.7], dtype=torch.float64))
    assert torch.allclose(pis[2], torch.tensor([0.41, 0.18, 0.41], dtype=torch.float64))
    assert torch.allclose(pis[2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
                          @ torch.linalg.matrix_power(A, 2))


def test_propagate_converges_to_stationary():
    pis = markov.propagate([0.0, 1.0, 0.0], A, 60)
    assert pis.shape == (61, 3)
    assert torch.allclose(pis.sum(1), torch.ones(61, dtype=torch.float64))
    # the distance shrinks like |lambda_2|^n, |lambda_2| = sqrt(det A) = sqrt(0.12)
    tv = 0.5 * (pis - PI_EXACT).abs().sum(1)
    assert tv[-1] < 1e-12 and tv[30] < 10 * math.sqrt(0.12) ** 30


def test_restaurant_second_eigenvalue_by_hand():
    # page: det A = 0.12, trace 0.7, the other two eigenvalues a complex pair of modulus sqrt(0.12)
    assert torch.linalg.det(A).item() == pytest.approx(0.12, abs=1e-12)
    ev = torch.linalg.eigvals(A)
    assert ev.real.sum().item() == pytest.approx(0.7, abs=1e-12)
    others = ev[(ev - 1).abs() > 1e-8]
    assert len(others) == 2 and (others.imag.abs() > 0.1).all()
    assert torch.allclose(others.abs(), torch.full((2,), math.sqrt(0.12), dtype=torch.float64))


def test_spectral_expansion_of_pi_n_and_the_lambda_2_rate():
    # pi_0 A^n = pi + sum_{k >= 2} lambda_k^n (pi_0 r_k) l_k, with l_k r_j = [k = j]
    eigvals, right = torch.linalg.eig(A)  # columns of `right`: A r_k = lambda_k r_k
    left = torch.linalg.inv(right)  # rows: l_k A = lambda_k l_k, and left @ right = I
    order = eigvals.abs().argsort(descending=True)
    eigvals, right, left = eigvals[order], right[:, order], left[order]
    pi = markov.stationary_distribution(A)
    assert torch.allclose((right[:, 0:1] @ left[0:1]).real, torch.ones(3, 1, dtype=A.dtype) @ pi[None])
    pi0 = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    pis = markov.propagate(pi0, A, 30)
    coef = pi0.to(right.dtype) @ right  # pi_0 r_k
    lam2 = eigvals[1].abs().item()
    for n in range(31):
        expansion = pi.to(right.dtype) + sum(eigvals[k] ** n * coef[k] * left[k] for k in (1, 2))
        assert torch.allclose(expansion.real, pis[n], atol=1e-12) and expansion.imag.abs().max() < 1e-12
        if 1 <= n <= 20:  # |pi_n - pi| / |lambda_2|^n stays between fixed bounds
            ratio = (pis[n] - pi).abs().sum().item() / lam2**n
            assert 0.5 < ratio < 2.5


def test_a_self_loop_does_not_make_a_reducible_chain_aperiodic():
    P = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    pis = markov.propagate([0.0, 1.0, 0.0], P, 6)
    assert torch.equal(pis[1::2, 2], torch.ones(3, dtype=torch.float64))  # state 3 at odd steps only
    assert torch.equal(pis[2::2, 1], torch.ones(3, dtype=torch.float64))  # state 2 at even steps only
    assert markov.closed_classes(P) == [[0], [1, 2]]


def test_power_iteration_matches_stationary():
    # the page's exercise: repeating pi <- pi A from the uniform start converges to pi
    pi = torch.full((3,), 1 / 3, dtype=torch.float64)
    for _ in range(100):
        pi = pi @ A
    assert torch.allclose(pi, PI_EXACT, atol=1e-12)


def test_weather_chain_exercise():
    W = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    assert torch.allclose(markov.stationary_distribution(W),
                          torch.tensor([5 / 6, 1 / 6], dtype=torch.float64), atol=1e-12)


def test_periodic_chain_unique_but_no_limit():
    flip = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert markov.eigenvalue_one_multiplicity(flip) == 1  # the eigenvalue -1 does not count
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    for method in ("eigenvector", "linear_system"):
        assert torch.allclose(markov.stationary_distribution(flip, method=method), half)
    pis = markov.propagate([1.0, 0.0], flip, 5)
    assert torch.equal(pis[::2], torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64))
    assert torch.equal(pis[1::2], torch.tensor([[0.0, 1.0]] * 3, dtype=torch.float64))


# --- bad inputs ---------------------------------------------------------------------------------

def test_not_square_raises():
    with pytest.raises(ValueError, match="must be square"):
        markov.stationary_distribution(torch.ones(2, 3) / 3)


def test_rows_not_summing_to_one_raise():
    with pytest.raises(ValueError, match="row 1 sums to 0.9"):
        markov.stationary_distribution([[0.5, 0.5], [0.4, 0.5]])


def test_negative_entries_raise():
    with pytest.raises(ValueError, match="non-negative"):
        markov.propagate([1.0, 0.0], [[1.2, -0.2], [0.5, 0.5]], 3)


def test_bad_initial_distribution_raises():
    with pytest.raises(ValueError, match="pi0 must be a probability vector"):
        markov.propagate([0.5, 0.6, 0.0], A, 3)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="Unknown method"):
        markov.stationary_distribution(A, method="power")


def test_bad_start_state_raises():
    with pytest.raises(ValueError, match="x0 must be a state"):
        markov.simulate_chain(A, 3, 10)


def test_bad_random_walk_probability_raises():
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        markov.random_walk(10, 1.5)


def test_bad_step_size_raises():
    with pytest.raises(ValueError, match="step_size > 0"):
        markov.metropolis_hastings(lambda x: -x.pow(2).sum(-1), torch.zeros(1), 10, 0.0)
    with pytest.raises(ValueError, match="step_size > 0"):
        markov.langevin_sample(lambda x: -x, torch.zeros(1), 10, -0.1)


def test_bad_betas_raise():
    with pytest.raises(ValueError, match="betas must be"):
        markov.forward_noising_chain(torch.zeros(2), torch.tensor([0.1, 1.0]))


# --- several stationary distributions -----------------------------------------------------------

def test_reducible_chain_multiplicity_and_classes():
    assert markov.eigenvalue_one_multiplicity(REDUCIBLE) == 2
    assert markov.eigenvalue_one_multiplicity(A) == 1
    assert markov.closed_classes(REDUCIBLE) == [[0, 1], [2]]
    assert markov.closed_classes(A) == [[0, 1, 2]]


def test_reducible_chain_refuses_a_unique_answer():
    with pytest.raises(ValueError, match="not unique.*multiplicity 2"):
        markov.stationary_distribution(REDUCIBLE)
    with pytest.raises(ValueError, match="not unique"):
        markov.stationary_distribution(REDUCIBLE, method="linear_system")


def test_reducible_chain_basis():
    basis = markov.stationary_distributions(REDUCIBLE)
    expected = torch.tensor([[5 / 6, 1 / 6, 0, 0], [0, 0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(basis, expected, atol=1e-12)
    mixture = 0.3 * basis[0] + 0.7 * basis[1]  # any mixture is stationary too
    assert torch.allclose(mixture @ REDUCIBLE, mixture, atol=1e-12)


def test_reducible_chain_limit_depends_on_start():
    basis = markov.stationary_distributions(REDUCIBLE)
    # from the transient state 3 the chain leaves to {0, 1} w.p. 0.2 and to {2} w.p. 0.3 per
    # day, so it ends in {0, 1} with probability 0.2 / (0.2 + 0.3) = 0.4
    limit = markov.propagate([0.0, 0.0, 0.0, 1.0], REDUCIBLE, 200)[-1]
    assert torch.allclose(limit, 0.4 * basis[0] + 0.6 * basis[1], atol=1e-10)
    from_0 = markov.propagate([1.0, 0.0, 0.0, 0.0], REDUCIBLE, 200)[-1]
    assert torch.allclose(from_0, basis[0], atol=1e-10)


# --- random walk and Brownian motion ------------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 0.7])
def test_random_walk_moments(p):
    n, walkers = 50, 100_000
    x = markov.random_walk(n, p, generator=gen(2), n_walkers=walkers)
    assert x.shape == (walkers, n + 1) and (x[:, 0] == 0).all()
    assert ((x[:, 1:] - x[:, :-1]).abs() == 1).all()
    final = x[:, -1].double()
    mean, var = n * (2 * p - 1), 4 * n * p * (1 - p)
    assert abs(final.mean() - mean) < 4 * math.sqrt(var / walkers)
    assert abs(final.var() - var) < 4 * var * math.sqrt(2 / walkers)  # near-Gaussian var error


def test_brownian_increments():
    dt, n = 0.01, 20
    paths = markov.brownian_motion_2d(n, dt, generator=gen(3), n_paths=5_000)
    assert paths.shape == (5_000, n + 1, 2) and (paths[:, 0] == 0).all()
    inc = (paths[:, 1:] - paths[:, :-1]).reshape(-1, 2).double()  # 100,000 increments
    m = len(inc)
    assert inc.mean(0).abs().max() < 4 * math.sqrt(dt / m)
    assert (inc.var(0) - dt).abs().max() < 4 * dt * math.sqrt(2 / m)
    assert abs((inc[:, 0] * inc[:, 1]).mean()) < 4 * dt / math.sqrt(m)  # coordinates uncorrelated
    assert stats.kstest(inc[:, 0].numpy() / math.sqrt(dt), "norm").pvalue > 1e-3


# --- Metropolis-Hastings ------------------------------------------------------------------------

def test_metropolis_hastings_gaussian():
    mu, sigma = 2.0, 1.5
    x0 = torch.zeros(1000, 1, dtype=torch.float64)  # 1000 chains of a 1-D target
    samples, rate = markov.metropolis_hastings(
        lambda x: -0.5 * ((x[..., 0] - mu) / sigma) ** 2, x0, 2000, 2.4 * sigma, gen(4))
    assert samples.shape == (2001, 1000, 1) and 0.2 < rate < 0.6
    kept = samples[500:, :, 0]  # (1501, 1000) after burn-in
    # 1000 independent chains: the spread of the per-chain averages gives an honest standard
    # error (it includes the autocorrelation within each chain)
    chain_means = kept.mean(0)
    assert abs(chain_means.mean() - mu) < 4 * chain_means.std() / math.sqrt(1000)
    # E[(x - mu)^2] = sigma^2, averaged per chain around the known mean (no small-sample bias)
    chain_sq = ((kept - mu) ** 2).mean(0)
    assert abs(chain_sq.mean() - sigma**2) < 4 * chain_sq.std() / math.sqrt(1000)


def test_metropolis_hastings_mixture_mode_weights():
    means = torch.tensor([[-1.5, 0.0], [1.5, 0.0]], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    std = 0.7
    samples, _ = markov.metropolis_hastings(
        lambda x: markov.gaussian_mixture_log_prob(x, means, std, weights),
        torch.zeros(400, 2, dtype=torch.float64), 3000, 1.0, gen(5))
    right = (samples[500:, :, 0] > 0).double().mean(0)  # per chain: fraction of time with x_1 > 0
    # exact mass of x_1 > 0 under the mixture
    z = 1.5 / std
    exact = 0.7 * stats.norm.cdf(z) + 0.3 * stats.norm.sf(z)
    # 400 independent chains: standard error from the spread of the per-chain fractions
    assert abs(right.mean() - exact) < 4 * right.std() / math.sqrt(400)
    mean_1 = samples[500:, :, 0].mean(0)
    assert abs(mean_1.mean() - (0.3 * -1.5 + 0.7 * 1.5)) < 4 * mean_1.std() / math.sqrt(400)


def test_metropolis_hastings_rejects_everything_outside_support():
    # a uniform target on [0, 1]: the chain must never leave it
    log_target = lambda x: torch.where((x >= 0).all(-1) & (x <= 1).all(-1), 0.0, -math.inf)  # noqa: E731
    samples, rate = markov.metropolis_hastings(log_target, torch.full((200, 1), 0.5), 300, 0.5,
                                               gen(6))
    assert samples.min() >= 0 and samples.max() <= 1 and 0 < rate < 1


# --- Langevin ----------------------------------------------------------------------------------

def test_gaussian_mixture_score_matches_autograd():
    means = torch.tensor([[-2.0, 0.0], [1.0, 1.5], [0.5, -1.0]], dtype=torch.float64)
    stds = torch.tensor([0.5, 0.8, 1.2], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    x = torch.randn(50, 2, generator=gen(7), dtype=torch.float64).requires_grad_()
    logp = markov.gaussian_mixture_log_prob(x, means, stds, weights)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(markov.gaussian_mixture_score(x, means, stds, weights), grad)
    # against torch.distributions
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(weights),
        torch.distributions.Independent(torch.distributions.Normal(
            means, stds[:, None].expand(3, 2)), 1))
    assert torch.allclose(logp, mix.log_prob(x))


@pytest.mark.parametrize("tau", [0.1, 0.4])
def test_langevin_gaussian_moments_with_discretisation_bias(tau):
    m, s = 1.0, 1.0
    chains = 100_000
    x = markov.langevin_sample(lambda x: -(x - m) / s**2, torch.zeros(chains, 1, dtype=torch.float64),
                               200, tau, gen(8))
    final = x[-1, :, 0]  # independent draws from the chain's stationary law
    v_tau = s**2 / (1 - tau / (2 * s**2))  # stationary variance of the discretised chain
    assert abs(final.mean() - m) < 4 * math.sqrt(v_tau / chains)
    assert abs(final.var() - v_tau) < 4 * v_tau * math.sqrt(2 / chains)
    # the bias is real: the variance differs from the target's s^2
    assert final.var() - s**2 > 4 * v_tau * math.sqrt(2 / chains)


def test_langevin_mixture_moments():
    # 1-D mixture 0.3 N(-1, s^2) + 0.7 N(1, s^2): E[x] = 0.4, E[x^2] = s^2 + 1
    means = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    s, tau, chains = 0.8, 0.03, 5_000
    x = markov.langevin_sample(lambda x: markov.gaussian_mixture_score(x, means, s, weights),
                               torch.zeros(chains, 1, dtype=torch.float64), 600, tau, gen(15))
    final = x[-1, :, 0]  # independent chains: independent draws
    assert abs(final.mean() - 0.4) < 4 * final.std() / math.sqrt(chains)
    # the discretisation inflates each component's variance by about tau / 2 (see above)
    sq = final**2
    assert abs(sq.mean() - (s**2 + 1)) < 4 * sq.std() / math.sqrt(chains) + tau
    exact_right = 0.7 * stats.norm.cdf(1 / s) + 0.3 * stats.norm.sf(1 / s)
    right = (final > 0).double().mean()
    assert abs(right - exact_right) < 4 * math.sqrt(exact_right * (1 - exact_right) / chains)


def test_langevin_small_step_recovers_target():
    s, tau, chains = 0.5, 0.005, 20_000  # tau / (2 s^2) = 1%: the bias is within the noise
    x = markov.langevin_sample(lambda x: -x / s**2, torch.zeros(chains, 1, dtype=torch.float64),
                               400, tau, gen(9))
    assert abs(x[-1].var() / s**2 - 1) < 4 * math.sqrt(2 / chains) + tau / (2 * s**2)


# --- the forward noising chain of diffusion -----------------------------------------------------

def test_noising_chain_marginal_matches_closed_form():
    x0 = torch.tensor([1.5, -0.5, 3.0], dtype=torch.float64)
    betas = torch.linspace(1e-3, 0.1, 40, dtype=torch.float64)
    n = 100_000
    path = markov.forward_noising_chain(x0.expand(n, 3), betas, gen(10))
    assert path.shape == (41, n, 3)
    mean, var = markov.noising_marginal(x0, betas)
    assert torch.equal(path[0], x0.expand(n, 3)) and var[0] == 0
    for t in (5, 20, 40):
        assert (path[t].mean(0) - mean[t]).abs().max() < 4 * math.sqrt(var[t] / n)
        assert (path[t].var(0) - var[t]).abs().max() < 4 * var[t] * math.sqrt(2 / n)
    alphas_bar = torch.cumprod(1 - betas, 0)
    assert torch.allclose(mean[1:], alphas_bar.sqrt()[:, None] * x0)


def test_noising_steps_until_signal_below_one_percent():
    # page exercise: (1 - beta)^(t / 2) < 0.01 iff t > 2 ln 100 / -ln(1 - beta)
    beta = 0.02
    signal, _ = markov.noising_marginal(torch.ones(1), torch.full((1_000,), beta))
    t_first = int((signal[:, 0] < 0.01).nonzero()[0])
    bound = 2 * math.log(100) / -math.log(1 - beta)
    assert t_first == math.floor(bound) + 1 == 456


def test_noising_chain_keeps_standard_normal():
    x = torch.randn(100_000, generator=gen(11), dtype=torch.float64)
    path = markov.forward_noising_chain(x, torch.full((10,), 0.3), gen(12))
    assert stats.kstest(path[-1].numpy(), "norm").pvalue > 1e-3


# --- reproducibility ----------------------------------------------------------------------------

def test_same_seed_same_samples():
    def draw(seed):
        g = gen(seed)
        return [markov.simulate_chain(A, 0, 50, g), markov.random_walk(20, 0.3, g, n_walkers=3),
                markov.brownian_motion_2d(10, 0.1, g),
                markov.metropolis_hastings(lambda x: -x.pow(2).sum(-1), torch.zeros(2), 30, 1.0, g)[0],
                markov.langevin_sample(lambda x: -x, torch.zeros(2), 30, 0.1, g),
                markov.forward_noising_chain(torch.ones(3), torch.full((5,), 0.1), g)]
    first, again, other = draw(13), draw(13), draw(14)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
