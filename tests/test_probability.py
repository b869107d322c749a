import itertools
import math

import pytest
import torch
from scipy import optimize, stats
from torch import distributions as D

from course_lib import info
from course_lib import probability as P

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- maximum likelihood: the bag of red and blue balls (30 red in 100 draws) -------------------

def test_bag_mle_is_the_observed_fraction():
    assert P.bernoulli_mle(30, 100) == 0.3
    theta = torch.linspace(0.001, 0.999, 9_981, dtype=F64)
    log_l = P.bernoulli_log_likelihood(theta, 30, 100)
    assert theta[log_l.argmax()].item() == pytest.approx(0.3, abs=1e-4)
    # d/dtheta [k log theta + (n - k) log(1 - theta)] = k / theta - (n - k) / (1 - theta) = 0 at k / n
    t = torch.tensor(0.3, dtype=F64, requires_grad=True)
    grad, = torch.autograd.grad(P.bernoulli_log_likelihood(t, 30, 100), t)
    assert abs(grad.item()) < 1e-10


def test_bernoulli_log_likelihood_matches_scipy():
    theta = torch.tensor([0.1, 0.3, 0.8], dtype=F64)
    ours = P.bernoulli_log_likelihood(theta, 30, 100)
    # log of the probability of one particular sequence with 30 ones = binomial pmf / (n choose k)
    ref = stats.binom.logpmf(30, 100, theta.numpy()) - math.log(math.comb(100, 30))
    assert torch.allclose(ours, torch.as_tensor(ref), atol=1e-10)


def test_mle_minimises_kl_from_the_empirical_distribution():
    p_hat = torch.tensor([0.3, 0.7], dtype=F64)  # (red, blue) frequencies of the bag

    def kl(theta: float) -> float:
        return info.kl_divergence(p_hat, torch.tensor([theta, 1 - theta], dtype=F64)).item()

    best = optimize.minimize_scalar(kl, bounds=(1e-6, 1 - 1e-6), method="bounded",
                                    options={"xatol": 1e-10})
    assert best.x == pytest.approx(P.bernoulli_mle(30, 100), abs=1e-6)
    # -(1/N) log L(theta) = H(p_hat) + KL(p_hat || p_theta) for every theta
    for theta in [0.1, 0.3, 0.55, 0.9]:
        nll = -P.bernoulli_log_likelihood(theta, 30, 100).item() / 100
        assert nll == pytest.approx(info.entropy(p_hat).item() + kl(theta), abs=1e-12)


def test_categorical_mle_beats_every_other_distribution():
    counts = torch.tensor([5, 0, 12, 3])
    p_hat = P.categorical_mle(counts)
    assert torch.allclose(p_hat, counts.double() / 20)
    log_lik = lambda q: torch.xlogy(counts.double(), q).sum()  # noqa: E731
    e = -torch.log(torch.rand(1_000, 4, dtype=F64, generator=gen()))
    others = e / e.sum(-1, keepdim=True)
    assert all(log_lik(q) <= log_lik(p_hat) + 1e-12 for q in others)


# --- Bayesian networks -----------------------------------------------------------------------

def test_parameter_counts_nine_and_fifteen():
    net = P.sprinkler_network()
    assert P.count_parameters(net.cards, net.parents) == 1 + 2 + 2 + 4 == 9 == net.num_parameters()
    chain = [(), (0,), (0, 1), (0, 1, 2)]  # the chain rule with no independence assumed
    assert P.count_parameters([2, 2, 2, 2], chain) == 15 == 2**4 - 1


@pytest.mark.parametrize("cards", [[2, 3], [3, 2, 4], [2, 2, 3, 2, 2]])
def test_chain_rule_count_equals_full_joint_table(cards):
    chain = [tuple(range(i)) for i in range(len(cards))]
    assert P.count_parameters(cards, chain) == math.prod(cards) - 1


def test_naive_bayes_and_hmm_counts():
    d = 10  # naive Bayes: a binary class and d binary features, each with the class as parent
    assert P.count_parameters([2] * (d + 1), [()] + [(0,)] * d) == 1 + 2 * d
    S, M, T = 3, 4, 5  # HMM: (S - 1) + (S - 1) S for pi and A, S (M - 1) for B (shared over time)
    net = P.hmm_network(torch.full((S,), 1 / S), torch.full((S, S), 1 / S), torch.full((S, M), 1 / M), T)
    per_step = (S - 1) + S * (M - 1) + (T - 1) * ((S - 1) * S + S * (M - 1))
    assert net.num_parameters() == per_step  # every time step with its own tables
    shared = P.count_parameters([S, S, M], [(), (0,), (0,)])  # pi, A and B counted once each
    assert shared == (S - 1) + S * (S - 1) + S * (M - 1)


def test_exercise_counts():
    assert P.count_parameters([2] * 4, [(), (0,), (1,), (2,)]) == 7  # the chain x1 -> x2 -> x3 -> x4
    assert P.count_parameters([2, 2, 2, 5], [(), (), (), (0, 1, 2)]) == 3 + 4 * 2**3


def test_joint_table_is_the_product_of_the_local_tables():
    net = P.sprinkler_network()
    joint = P.joint_table(net)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-12)
    c, s, r, w = net.cpts
    for x1, x2, x3, x4 in itertools.product(range(2), repeat=4):
        by_hand = c[x1] * s[x1, x2] * r[x1, x3] * w[x2, x3, x4]
        assert joint[x1, x2, x3, x4].item() == pytest.approx(by_hand.item(), abs=1e-15)


def test_local_markov_property_holds():
    # x4 is independent of its non-descendant x1 given its parents (x2, x3)
    joint = P.joint_table(P.sprinkler_network())
    p_123 = joint.sum(3, keepdim=True)
    p_4_given_123 = joint / p_123
    p_4_given_23 = joint.sum(0) / joint.sum((0, 3))[..., None]
    assert torch.allclose(p_4_given_123, p_4_given_23.expand_as(joint), atol=1e-12)
    # ... while x2 and x3 are dependent (through x1): p(x2, x3) != p(x2) p(x3)
    p23 = joint.sum((0, 3))
    assert not torch.allclose(p23, torch.outer(p23.sum(1), p23.sum(0)), atol=1e-3)


def test_ancestral_sampling_matches_exact_marginals():
    net, n = P.sprinkler_network(), 200_000
    x = P.ancestral_sample(net, n, generator=gen(1))
    for i in range(4):
        exact = P.marginal_by_enumeration(net, [i])[1].item()
        se = math.sqrt(exact * (1 - exact) / n)
        assert abs(x[:, i].double().mean().item() - exact) < 4 * se
    pair = P.marginal_by_enumeration(net, [3, 2])  # p(x4, x3): note the order of `keep`
    freq = torch.zeros(2, 2, dtype=F64).index_put_((x[:, 3], x[:, 2]), torch.ones(n, dtype=F64),
                                                   accumulate=True) / n
    assert ((freq - pair).abs() < 4 * (pair * (1 - pair) / n).sqrt()).all()


def test_same_seed_same_samples():
    net = P.sprinkler_network()
    assert torch.equal(P.ancestral_sample(net, 100, gen(3)), P.ancestral_sample(net, 100, gen(3)))


@pytest.mark.parametrize("query", range(4))
def test_variable_elimination_equals_enumeration(query):
    net = P.sprinkler_network()
    joint = P.joint_table(net)
    others = [i for i in range(4) if i != query]
    for k in range(len(others) + 1):
        for observed in itertools.combinations(others, k):
            for values in itertools.product(range(2), repeat=k):
                evidence = dict(zip(observed, values, strict=True))
                index = tuple(evidence.get(i, slice(None)) for i in range(4))
                sliced = joint[index]  # dims: the unobserved variables in index order
                kept = [i for i in range(4) if i not in evidence]
                drop = [d for d, i in enumerate(kept) if i != query]
                brute = sliced.sum(drop) if drop else sliced
                brute = brute / brute.sum()
                assert torch.allclose(P.variable_elimination(net, query, evidence), brute, atol=1e-12)


def test_hmm_marginal_is_pi_times_powers_of_A_times_B():
    pi = torch.tensor([0.6, 0.4], dtype=F64)
    A = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=F64)
    B = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.3, 0.6]], dtype=F64)
    net = P.hmm_network(pi, A, B, T=4)
    for t in range(4):  # p(x_{t+1}) = pi A^t B
        closed = pi @ torch.linalg.matrix_power(A, t) @ B
        assert torch.allclose(P.variable_elimination(net, 2 * t + 1), closed, atol=1e-12)
        assert torch.allclose(P.marginal_by_enumeration(net, [2 * t + 1]), closed, atol=1e-12)


# --- Bayes' rule -------------------------------------------------------------------------------

def test_bayes_rule_on_a_diagnostic_test():
    prior = torch.tensor([0.99, 0.01], dtype=F64)  # (healthy, ill)
    positive = torch.tensor([0.05, 0.95], dtype=F64)  # p(positive | h)
    post = P.bayes_rule(prior, positive)
    assert post[1].item() == pytest.approx(0.01 * 0.95 / (0.01 * 0.95 + 0.99 * 0.05), abs=1e-15)
    both = P.bayes_rule(prior, torch.stack([positive, 1 - positive]))  # batch: positive, negative
    assert torch.allclose(both[0], post) and both.shape == (2, 2)


def test_two_tests_in_sequence_equal_one_update_with_the_product_likelihood():
    prior = torch.tensor([0.99, 0.01], dtype=F64)
    positive = torch.tensor([0.05, 0.95], dtype=F64)
    twice = P.bayes_rule(P.bayes_rule(prior, positive), positive)
    assert torch.allclose(twice, P.bayes_rule(prior, positive**2), atol=1e-15)
    assert twice[1].item() == pytest.approx(0.01 * 0.95**2 / (0.01 * 0.95**2 + 0.99 * 0.05**2))


def test_bayes_rule_equals_brute_force_enumeration():
    net = P.sprinkler_network()
    joint = P.joint_table(net)  # dims (x1, x2, x3, x4)
    p_rain = joint.sum((0, 1, 3))
    p_wet_given_rain = joint.sum((0, 1))[:, 1] / p_rain  # p(x4 = 1 | x3)
    brute = joint[..., 1].sum((0, 1))
    assert torch.allclose(P.bayes_rule(p_rain, p_wet_given_rain), brute / brute.sum(), atol=1e-12)
    assert torch.allclose(P.variable_elimination(net, 2, {3: 1}), brute / brute.sum(), atol=1e-12)


# --- the primer: expectations, Gaussians, Monte Carlo, Jensen ------------------------------------

SHOOTER_MEAN = torch.tensor([0.5, -0.3], dtype=F64)
SHOOTER_COV = torch.tensor([[1.44, 0.576], [0.576, 0.64]], dtype=F64)  # s_x = 1.2, s_y = 0.8, rho = 0.6


def _random_cov(d: int, seed: int) -> torch.Tensor:
    m = torch.randn(d, d, dtype=F64, generator=gen(seed))
    return m @ m.T + 0.5 * torch.eye(d, dtype=F64)


def test_mvn_sample_moments_and_variance_of_a_sum():
    x = P.mvn_sample(400_000, SHOOTER_MEAN, SHOOTER_COV, generator=gen())
    assert torch.allclose(x.mean(0), SHOOTER_MEAN, atol=4 * 1.2 / 400_000**0.5)
    assert torch.allclose(torch.cov(x.T), SHOOTER_COV, atol=0.01)
    # E[xy] = Cov(x, y) + E[x] E[y] = 0.576 - 0.15 and Var(x + y) = 1.44 + 0.64 + 2 * 0.576
    est, se = P.monte_carlo_mean(lambda s: s[:, 0] * s[:, 1], lambda n, g: x, 400_000)
    assert abs(est.item() - 0.426) < 4 * se.item()
    assert (x.sum(1).var().item()) == pytest.approx(3.232, rel=0.01)


@pytest.mark.parametrize("d, idx", [(2, [0]), (3, [2]), (4, [0, 3]), (5, [1, 2, 4])])
def test_gaussian_conditional_is_joint_over_marginal(d, idx):
    # log p(x_a | x_b) = log N(x; mu, Sigma) - log N(x_b; mu_b, Sigma_bb) at random points
    mean, cov = torch.randn(d, dtype=F64, generator=gen(d)), _random_cov(d, d)
    rest = [i for i in range(d) if i not in idx]
    for x in torch.randn(5, d, dtype=F64, generator=gen(10 + d)):
        m, c = P.gaussian_conditional(mean, cov, idx, x[idx])
        joint = D.MultivariateNormal(mean, cov).log_prob(x)
        marginal = D.MultivariateNormal(mean[idx], cov[idx][:, idx]).log_prob(x[idx])
        cond = D.MultivariateNormal(m, c).log_prob(x[rest])
        assert cond.item() == pytest.approx((joint - marginal).item(), abs=1e-10)


def test_gaussian_conditional_of_the_shooter_by_quadrature_and_formula():
    ys = torch.linspace(-9.0, 9.0, 8_001, dtype=F64)
    for x0 in [-1.0, 2.0]:
        m, c = P.gaussian_conditional(SHOOTER_MEAN, SHOOTER_COV, [0], [x0])
        pts = torch.stack([torch.full_like(ys, x0), ys], 1)
        slice_ = P.mvn_log_prob(pts, SHOOTER_MEAN, SHOOTER_COV).exp()
        cond = slice_ / torch.trapezoid(slice_, ys)  # brute force: p(x0, y) / p(x0)
        mean_num = torch.trapezoid(ys * cond, ys)
        var_num = torch.trapezoid((ys - mean_num) ** 2 * cond, ys)
        assert m.item() == pytest.approx(mean_num.item(), abs=1e-9)
        assert c.item() == pytest.approx(var_num.item(), abs=1e-9)
        # the page's formula: m_y + rho s_y / s_x (x0 - m_x), s_y^2 (1 - rho^2)
        assert m.item() == pytest.approx(-0.3 + 0.6 * 0.8 / 1.2 * (x0 - 0.5), abs=1e-12)
        assert c.item() == pytest.approx(0.64 * (1 - 0.36), abs=1e-12)


def test_gaussian_conditional_by_monte_carlo():
    # Keep the draws whose x_2 falls in a thin window around the observed value.
    mean, cov = torch.tensor([1.0, -1.0, 0.5], dtype=F64), _random_cov(3, 7)
    x = P.mvn_sample(2_000_000, mean, cov, generator=gen(1))
    value = mean[2] + 0.5 * cov[2, 2].sqrt()
    kept = x[(x[:, 2] - value).abs() < 0.01 * cov[2, 2].sqrt()][:, :2]
    m, c = P.gaussian_conditional(mean, cov, [2], [value])
    se = (c.diagonal() / len(kept)).sqrt()
    assert len(kept) > 10_000
    assert ((kept.mean(0) - m).abs() < 4 * se + 2e-3).all()
    assert torch.allclose(torch.cov(kept.T), c, atol=0.05 * c.abs().max().item())


def test_monte_carlo_mean_is_unbiased_with_the_stated_standard_error_and_coverage():
    def exponential(n, g):
        return -torch.log(torch.rand(n, dtype=F64, generator=g))  # Exponential(1): mean 1, variance 1

    g = gen(3)
    runs = [P.monte_carlo_mean(lambda v: v, exponential, 400, g) for _ in range(2_000)]
    est = torch.stack([r[0] for r in runs])
    se = torch.stack([r[1] for r in runs])
    assert abs(est.mean().item() - 1.0) < 4 * est.std().item() / 2_000**0.5  # unbiased
    assert se.mean().item() == pytest.approx(1 / 400**0.5, rel=0.02)  # se estimates sigma / sqrt(n)
    assert est.std().item() == pytest.approx(1 / 400**0.5, rel=0.05)  # ... the real spread of the estimate
    covered = ((est - 1.0).abs() <= 1.96 * se).double().mean().item()
    assert abs(covered - 0.95) < 3 * (0.95 * 0.05 / 2_000) ** 0.5 + 0.01  # skewness costs a little coverage
    # vector-valued f: one estimate and one standard error per component
    est2, se2 = P.monte_carlo_mean(lambda v: torch.stack([v, v**2], 1), exponential, 100_000, gen(4))
    assert est2.shape == se2.shape == (2,)
    assert abs(est2[1].item() - 2.0) < 4 * se2[1].item()  # E[X^2] = Var + mean^2 = 2


def test_central_limit_theorem_for_exponential_means():
    # standardised means of n = 50 Exponential(1) draws are close to N(0, 1) (KS distance small)
    means = -torch.log(torch.rand(20_000, 50, dtype=F64, generator=gen(5))).mean(1)
    z = (means - 1.0) * 50**0.5
    assert stats.kstest(z.numpy(), "norm").statistic < 0.04
    z1 = -torch.log(torch.rand(20_000, dtype=F64, generator=gen(6))) - 1.0  # n = 1: far from Gaussian
    assert stats.kstest(z1.numpy(), "norm").statistic > 0.1


def test_jensen_for_the_log_of_an_exponential():
    # E[log X] = -Euler's gamma for X ~ Exponential(1), below log E[X] = 0
    est, se = P.monte_carlo_mean(torch.log, lambda n, g: -torch.log(torch.rand(n, dtype=F64, generator=g)),
                                 1_000_000, gen(7))
    assert abs(est.item() + 0.5772156649) < 4 * se.item()
    assert est.item() < 0.0


def test_sticky_chain_has_the_stated_transitions_and_correlations():
    x = P.sticky_bernoulli(2_000, 500, 0.3, 0.9, generator=gen(8))
    assert abs(x.mean().item() - 0.3) < 0.01
    prev, nxt = x[:, :-1].flatten(), x[:, 1:].flatten()
    # the lab's chain: leaves blue (0) w.p. (1 - lambda) theta = 0.03, red (1) w.p. 0.07
    assert nxt[prev == 0].mean().item() == pytest.approx(0.03, abs=0.002)
    assert 1 - nxt[prev == 1].mean().item() == pytest.approx(0.07, abs=0.003)
    for k in [1, 5, 20]:
        cov = ((x[:, :-k] - 0.3) * (x[:, k:] - 0.3)).mean().item()
        assert cov == pytest.approx(0.9**k * 0.21, abs=0.006)


def test_variance_inflation_formula_brute_force_and_simulation():
    lam, n = 0.9, 200
    lags = torch.arange(n, dtype=F64)
    corr = lam ** (lags[:, None] - lags[None, :]).abs()  # Corr(x_i, x_j) = lambda^|i - j|
    assert P.variance_inflation(lam, n) == pytest.approx(corr.sum().item() / n, rel=1e-12)
    assert P.variance_inflation(lam) == pytest.approx(19.0)  # (1 + 0.9) / (1 - 0.9)
    assert P.variance_inflation(lam, 10**6) == pytest.approx(19.0, rel=1e-4)
    assert P.variance_inflation(0.0, 50) == 1.0
    means = P.sticky_bernoulli(4_000, 2_000, 0.3, lam, generator=gen(9)).mean(1)
    ratio = means.var().item() / (0.21 / 2_000)
    assert ratio == pytest.approx(P.variance_inflation(lam, 2_000), rel=0.1)  # about 19 times i.i.d.


def test_primer_bad_inputs_raise():
    with pytest.raises(ValueError, match="positive definite"):
        P.mvn_sample(3, [0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        P.gaussian_conditional([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0], [1.0])
    with pytest.raises(ValueError, match="not all"):
        P.gaussian_conditional([0.0, 0.0], torch.eye(2), [0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="one number per observed"):
        P.gaussian_conditional([0.0, 0.0], torch.eye(2), [0], [1.0, 2.0])
    with pytest.raises(ValueError, match=">= 2"):
        P.monte_carlo_mean(torch.log, lambda n, g: torch.ones(n), 1)
    with pytest.raises(ValueError, match="one value per draw"):
        P.monte_carlo_mean(lambda v: v.sum(), lambda n, g: torch.ones(n), 10)
    with pytest.raises(ValueError, match=r"\(-1, 1\)"):
        P.variance_inflation(1.0)
    with pytest.raises(ValueError, match="0 < theta < 1"):
        P.sticky_bernoulli(2, 10, 1.5, 0.5)


# --- the shooting target: a correlated 2-D Gaussian ---------------------------------------------

def test_gaussian_marginal_and_conditional_by_quadrature():
    mx, my, sx, sy, rho = 0.5, -0.3, 1.2, 0.8, 0.6
    mean = torch.tensor([mx, my], dtype=F64)
    cov = torch.tensor([[sx**2, rho * sx * sy], [rho * sx * sy, sy**2]], dtype=F64)
    ys = torch.linspace(my - 10 * sy, my + 10 * sy, 4_001, dtype=F64)
    for x0 in [-1.0, 0.5, 2.0]:
        pts = torch.stack([torch.full_like(ys, x0), ys], 1)
        joint = P.mvn_log_prob(pts, mean, cov).exp()  # p(x0, y) on the grid
        marginal = torch.trapezoid(joint, ys)  # p(x0) = integral of p(x0, y) dy
        assert marginal.item() == pytest.approx(stats.norm.pdf(x0, mx, sx), rel=1e-9)
        cond = joint / marginal  # p(y | x0) = p(x0, y) / p(x0)
        ref = stats.norm.pdf(ys.numpy(), my + rho * sy / sx * (x0 - mx), sy * math.sqrt(1 - rho**2))
        assert torch.allclose(cond, torch.as_tensor(ref), atol=1e-9)


# --- Gaussian mixtures -------------------------------------------------------------------------

TRUE_W = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
TRUE_MU = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=F64)
TRUE_COV = torch.tensor([[[0.6, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.5]],
                         [[0.4, 0.0], [0.0, 0.2]]], dtype=F64)


def test_mvn_and_gmm_log_prob_match_torch_distributions():
    x = torch.randn(50, 2, dtype=F64, generator=gen())
    mvn = D.MultivariateNormal(TRUE_MU, TRUE_COV)
    assert torch.allclose(P.mvn_log_prob(x, TRUE_MU, TRUE_COV), mvn.log_prob(x[:, None, :]), atol=1e-12)
    mix = D.MixtureSameFamily(D.Categorical(TRUE_W), mvn)
    assert torch.allclose(P.gmm_log_prob(x, TRUE_W, TRUE_MU, TRUE_COV), mix.log_prob(x), atol=1e-12)


def test_gmm_density_integrates_to_one():
    g1, g2 = torch.linspace(-8, 8, 801, dtype=F64), torch.linspace(-6, 9, 751, dtype=F64)
    grid = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), -1).reshape(-1, 2)
    density = P.gmm_log_prob(grid, TRUE_W, TRUE_MU, TRUE_COV).exp().reshape(801, 751)
    total = torch.trapezoid(torch.trapezoid(density, g2, dim=1), g1)
    assert total.item() == pytest.approx(1.0, abs=1e-6)


def test_gmm_sample_moments():
    n = 200_000
    x, z = P.gmm_sample(n, TRUE_W, TRUE_MU, TRUE_COV, generator=gen(2))
    freq = torch.bincount(z, minlength=3).double() / n
    assert ((freq - TRUE_W).abs() < 4 * (TRUE_W * (1 - TRUE_W) / n).sqrt()).all()
    mean = TRUE_W @ TRUE_MU  # E[x] = sum_k pi_k mu_k
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() < 4 * se).all()


def test_em_is_monotone_and_recovers_the_mixture():
    x, _ = P.gmm_sample(3_000, TRUE_W, TRUE_MU, TRUE_COV, generator=gen(4))
    fit = P.gmm_em(x, 3, n_iter=300, generator=gen(5))
    ll = torch.tensor(fit.log_likelihood)
    assert (ll.diff() >= -1e-10).all(), "EM decreased the log-likelihood"
    order = fit.means[:, 0].argsort()  # components are found in any order: sort by mean x-coordinate
    true_order = TRUE_MU[:, 0].argsort()
    assert torch.allclose(fit.weights[order], TRUE_W[true_order], atol=0.03)
    assert torch.allclose(fit.means[order], TRUE_MU[true_order], atol=0.08)
    assert torch.allclose(fit.covs[order], TRUE_COV[true_order], atol=0.08)
    assert torch.allclose(fit.resp.sum(1), torch.ones(3_000, dtype=F64))
    # the fitted likelihood is at least that of the true parameters (EM finds a maximum)
    assert ll[-1] >= P.gmm_log_prob(x, TRUE_W, TRUE_MU, TRUE_COV).mean() - 1e-9
    assert ll[-1].item() == pytest.approx(P.gmm_log_prob(x, fit.weights, fit.means, fit.covs).mean().item())


def test_em_with_one_component_is_the_closed_form_mle():
    x = torch.randn(400, 2, dtype=F64, generator=gen(8)) @ torch.tensor([[1.0, 0.5], [0.0, 0.7]], dtype=F64)
    fit = P.gmm_em(x, 1, n_iter=5, reg=0.0)
    assert torch.allclose(fit.means[0], x.mean(0), atol=1e-12)
    assert torch.allclose(fit.covs[0], torch.cov(x.T, correction=0), atol=1e-12)  # biased: divide by N
    assert len(fit.log_likelihood) == 3  # one M-step reaches the maximum; the next changes nothing


# --- the autoregressive model ------------------------------------------------------------------

def _ar_params(d: int = 4):
    g = gen(6)
    return torch.randn(d, d, dtype=F64, generator=g), torch.randn(d, dtype=F64, generator=g)


def test_autoregressive_probabilities_sum_to_one_and_follow_the_chain_rule():
    W, b = _ar_params()
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=F64)  # all 16 images
    log_p = P.autoregressive_log_prob(xs, W, b)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    for x, lp in zip(xs, log_p, strict=True):  # chain rule, one conditional at a time
        by_hand = sum(D.Bernoulli(logits=b[i] + W[i, :i] @ x[:i]).log_prob(x[i]) for i in range(4))
        assert lp.item() == pytest.approx(by_hand.item(), abs=1e-12)


def test_autoregressive_samples_follow_the_model():
    W, b = _ar_params()
    n = 100_000
    x = P.autoregressive_sample(W, b, n, generator=gen(7))
    codes = (x.long() * torch.tensor([8, 4, 2, 1])).sum(1)  # image -> index 0..15
    freq = torch.bincount(codes, minlength=16).double() / n
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=F64)
    p = P.autoregressive_log_prob(xs, W, b).exp()
    assert ((freq - p).abs() < 4 * (p * (1 - p) / n).sqrt() + 1e-4).all()


# --- bad inputs raise errors that say what to do -------------------------------------------------

def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        P.bernoulli_mle(31, 30)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        P.bernoulli_mle(3, 0)
    with pytest.raises(ValueError, match="non-negative"):
        P.categorical_mle([3, -1])
    with pytest.raises(ValueError, match="topological order"):
        P.count_parameters([2, 2], [(1,), ()])
    with pytest.raises(ValueError, match=">= 2 values"):
        P.count_parameters([2, 1], [(), (0,)])
    with pytest.raises(ValueError, match="must have shape"):
        P.BayesNet([2, 2], [(), (0,)], [torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])])
    with pytest.raises(ValueError, match="sum to one"):
        P.BayesNet([2], [()], [torch.tensor([0.5, 0.6])])
    with pytest.raises(ValueError, match="probability zero"):
        P.bayes_rule([0.5, 0.5], [0.0, 0.0])
    with pytest.raises(ValueError, match="sum to one"):
        P.bayes_rule([0.5, 0.6], [0.1, 0.2])
    with pytest.raises(ValueError, match="not observed"):
        P.variable_elimination(P.sprinkler_network(), 3, {3: 1})
    with pytest.raises(ValueError, match="positive integer"):
        P.ancestral_sample(P.sprinkler_network(), 0)
    with pytest.raises(ValueError, match="distinct variable indices"):
        P.marginal_by_enumeration(P.sprinkler_network(), [1, 1])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        P.gmm_em(torch.zeros(5, 2), 6)


# --- the one mixture helper behind every mixture density of the course -------------------------

def test_log_mixture_is_the_three_mixture_densities_and_survives_underflow():
    from course_lib import markov

    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    m = torch.tensor([-2.0, 0.5, 3.0], dtype=F64)
    s = torch.tensor([0.5, 1.0, 0.7], dtype=F64)
    x = torch.linspace(-6, 7, 101, dtype=F64)
    ref = D.MixtureSameFamily(D.Categorical(w), D.Normal(m, s)).log_prob(x)
    assert torch.allclose(P.log_mixture(w, D.Normal(m, s).log_prob(x[:, None])), ref, atol=1e-12)
    # the 1-D (info), isotropic (markov) and full-covariance (probability) mixtures agree with it
    assert torch.allclose(info.mixture_log_prob(x, w, m, s), ref, atol=1e-12)
    assert torch.allclose(markov.gaussian_mixture_log_prob(x[:, None], m[:, None], s, w), ref, atol=1e-12)
    assert torch.allclose(P.gmm_log_prob(x[:, None], w, m[:, None], (s**2)[:, None, None]), ref, atol=1e-12)
    # far from every component the naive log(sum_k w_k exp(log p_k)) underflows to -inf; logsumexp does not
    far = D.Normal(m, s).log_prob(torch.tensor([[60.0]], dtype=F64))  # (1, K), around -1e4 nats
    assert torch.log((w * far.exp()).sum()) == -math.inf
    exact = D.MixtureSameFamily(D.Categorical(w), D.Normal(m, s)).log_prob(torch.tensor([60.0], dtype=F64))
    assert torch.isfinite(exact).all() and torch.allclose(P.log_mixture(w, far), exact, rtol=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        P.log_mixture(torch.tensor([0.5, 0.6], dtype=F64), torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"\(\.\.\., K\)"):
        P.log_mixture(w, torch.zeros(4, 2, dtype=F64))
