import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import optimize, stats
from scipy.spatial.distance import jensenshannon
from torch import distributions as D

from course_lib import info

FAIR = torch.tensor([0.5, 0.5], dtype=torch.float64)
BIASED = torch.tensor([0.2, 0.8], dtype=torch.float64)  # p(heads) = 0.2
CLOSER = torch.tensor([0.4, 0.6], dtype=torch.float64)
# The bimodal target of the forward-vs-reverse figure: weights, means, standard deviations.
MIX = ([0.3, 0.7], [-3.0, 2.0], [0.6, 0.9])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_distributions(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """n distributions over k outcomes, uniform on the simplex: normalised Exponential(1) draws."""
    e = -torch.log(torch.rand(n, k, dtype=torch.float64, generator=gen(seed)))
    return e / e.sum(-1, keepdim=True)


# --- the worked examples, in bits, against hand-derived closed forms ----------------------------

def test_fair_coin_has_one_bit():
    assert info.entropy(FAIR, base=2).item() == pytest.approx(1.0, abs=1e-15)


def test_biased_coin_entropy():
    h = info.entropy(BIASED, base=2).item()
    assert h == pytest.approx(-(0.2 * math.log2(0.2) + 0.8 * math.log2(0.8)), abs=1e-14)
    assert round(h, 4) == 0.7219


@pytest.mark.parametrize("q, rounded", [((0.2, 0.8), 1.3219), ((0.4, 0.6), 1.0294)])
def test_cross_entropy_of_the_fair_coin(q, rounded):
    ce = info.cross_entropy(FAIR, torch.tensor(q, dtype=torch.float64), base=2).item()
    assert ce == pytest.approx(-0.5 * (math.log2(q[0]) + math.log2(q[1])), abs=1e-14)
    assert round(ce, 4) == rounded


@pytest.mark.parametrize("q, rounded", [((0.2, 0.8), 0.3219), ((0.4, 0.6), 0.0294)])
def test_kl_of_the_fair_coin(q, rounded):
    q = torch.tensor(q, dtype=torch.float64)
    kl = info.kl_divergence(FAIR, q, base=2).item()
    # KL = H(p, q) - H(p), and H(fair) = 1 bit
    assert kl == pytest.approx(info.cross_entropy(FAIR, q, base=2).item() - 1.0, abs=1e-14)
    assert kl == pytest.approx(0.5 * math.log2(0.5 / q[0]) + 0.5 * math.log2(0.5 / q[1]), abs=1e-14)
    assert round(kl, 4) == rounded


def test_kl_is_asymmetric_on_the_coins():
    forward = info.kl_divergence(FAIR, BIASED, base=2).item()
    reverse = info.kl_divergence(BIASED, FAIR, base=2).item()
    assert reverse == pytest.approx(1 - info.entropy(BIASED, base=2).item(), abs=1e-14)
    assert forward == pytest.approx(math.log2(5) - 2, abs=1e-14)  # 0.5 log2(2.5) + 0.5 log2(0.625)
    assert forward - reverse > 0.04


# --- definitions and references -----------------------------------------------------------------

def test_kl_is_cross_entropy_minus_entropy():
    p, q = random_distributions(100, 6, seed=1), random_distributions(100, 6, seed=2)
    assert torch.allclose(info.kl_divergence(p, q), info.cross_entropy(p, q) - info.entropy(p),
                          atol=1e-12)


def test_against_scipy():
    p, q = random_distributions(20, 5, seed=3), random_distributions(20, 5, seed=4)
    for base in [None, 2]:
        h = stats.entropy(p.numpy(), base=base, axis=-1)
        kl = stats.entropy(p.numpy(), q.numpy(), base=base, axis=-1)
        assert torch.allclose(info.entropy(p, base), torch.from_numpy(h), atol=1e-12)
        assert torch.allclose(info.kl_divergence(p, q, base), torch.from_numpy(kl), atol=1e-12)
    js = jensenshannon(p.numpy(), q.numpy(), axis=-1) ** 2  # scipy returns sqrt(JS), in nats
    assert torch.allclose(info.js_divergence(p, q), torch.from_numpy(js), atol=1e-10)


def test_against_torch_distributions():
    p, q = random_distributions(50, 4, seed=5), random_distributions(50, 4, seed=6)
    P, Q = D.Categorical(probs=p), D.Categorical(probs=q)
    assert torch.allclose(info.entropy(p), P.entropy(), atol=1e-12)
    assert torch.allclose(info.kl_divergence(p, q), D.kl_divergence(P, Q), atol=1e-12)
    assert torch.allclose(info.cross_entropy(p, q), -(p * Q.logits).sum(-1), atol=1e-12)


def test_zero_log_zero_and_infinite_kl():
    certain = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert info.entropy(certain).item() == 0.0
    assert info.kl_divergence(certain, FAIR, base=2).item() == pytest.approx(1.0)
    assert info.kl_divergence(FAIR, certain).item() == math.inf  # q = 0 < p
    assert info.cross_entropy(FAIR, certain).item() == math.inf
    assert info.kl_divergence(certain, certain).item() == 0.0


def test_bases():
    p = random_distributions(1, 7, seed=7)[0]
    nats = info.entropy(p)
    assert torch.allclose(info.entropy(p, base=2), nats / math.log(2))
    assert torch.allclose(info.entropy(p, base=math.e), nats)
    assert torch.allclose(info.kl_divergence(p, FAIR.new_full((7,), 1 / 7), base=10),
                          (math.log(7) - nats) / math.log(10))


def test_entropy_is_at_most_log_k_and_uniform_attains_it():
    p = random_distributions(1000, 8, seed=8)
    assert (info.entropy(p) <= math.log(8)).all()
    assert info.entropy(torch.full((8,), 1 / 8)).item() == pytest.approx(math.log(8), abs=1e-6)


def test_huffman_code_is_optimal_and_within_one_bit_of_the_entropy():
    assert info.huffman_code_lengths(torch.tensor([0.5, 0.25, 0.125, 0.125])).tolist() == [1, 2, 3, 3]
    assert info.huffman_code_lengths(torch.tensor([1.0])).tolist() == [0]
    # brute force: every length vector (1..5 bits for 5 symbols) that satisfies Kraft's inequality
    kraft = torch.tensor([ls for ls in itertools.product(range(1, 6), repeat=5)
                          if sum(2.0**-li for li in ls) <= 1], dtype=torch.float64)  # (M, 5)
    for p in random_distributions(200, 5, seed=20):
        lengths = info.huffman_code_lengths(p)
        avg, h = (p * lengths).sum().item(), info.entropy(p, base=2).item()
        assert torch.exp2(-lengths).sum().item() <= 1 + 1e-12  # Kraft: a prefix code exists
        assert h <= avg + 1e-12 and avg < h + 1  # H <= L < H + 1
        assert avg == pytest.approx((kraft @ p).min().item(), abs=1e-12)  # no prefix code is shorter


def test_block_coding_approaches_the_entropy_of_the_biased_coin():
    h = info.entropy(BIASED, base=2).item()
    assert torch.allclose(info.block_distribution(BIASED, 2),
                          torch.tensor([0.04, 0.16, 0.16, 0.64], dtype=torch.float64))
    for n in [1, 2, 4, 8, 12]:
        block = info.block_distribution(BIASED, n)
        assert block.shape == (2**n,) and block.sum().item() == pytest.approx(1.0)
        assert info.entropy(block, base=2).item() == pytest.approx(n * h)  # entropy adds up
        per_symbol = (block * info.huffman_code_lengths(block)).sum().item() / n
        assert h <= per_symbol < h + 1 / n  # per symbol: H <= L_n / n < H + 1/n
        if n == 1:
            assert per_symbol == 1.0  # one toss at a time, a binary code needs a whole bit


def test_batches_broadcast():
    p = random_distributions(3, 4, seed=9)
    q = random_distributions(1, 4, seed=10)[0]
    assert info.kl_divergence(p, q).shape == (3,)
    assert torch.allclose(info.kl_divergence(p, q), torch.stack([info.kl_divergence(r, q) for r in p]))


def test_float32_input_keeps_its_dtype():
    assert info.entropy(torch.softmax(torch.randn(10, generator=gen()), 0)).dtype == torch.float32


# --- information content ------------------------------------------------------------------------

def test_information_content_values_and_additivity():
    assert info.information_content(0.5, base=2).item() == 1.0
    assert info.information_content(1 / 1024, base=2).item() == pytest.approx(10.0)
    assert info.information_content(0.0).item() == math.inf
    a, b = torch.rand(100, generator=gen(1)), torch.rand(100, generator=gen(2))
    # independent events: p(x, y) = p(x) p(y)  =>  I(x, y) = I(x) + I(y)
    assert torch.allclose(info.information_content(a * b),
                          info.information_content(a) + info.information_content(b), atol=1e-5)


def test_entropy_is_the_expected_information_content_monte_carlo():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    x = torch.multinomial(p, 100_000, replacement=True, generator=gen(3))
    surprisal = info.information_content(p[x], base=2)
    se = surprisal.std().item() / math.sqrt(len(x))
    assert info.entropy(p, base=2).item() == 1.75
    assert abs(surprisal.mean().item() - 1.75) < 4 * se


# --- Gibbs' inequality, gradients, maximum likelihood -------------------------------------------

def test_gibbs_inequality():
    p, q = random_distributions(2000, 5, seed=11), random_distributions(2000, 5, seed=12)
    assert (info.kl_divergence(p, q) > 0).all()
    assert (info.kl_divergence(p, p) == 0).all()


def test_gradient_of_kl_equals_gradient_of_cross_entropy():
    p = random_distributions(1, 6, seed=13)[0]
    theta = torch.randn(6, dtype=torch.float64, generator=gen(4), requires_grad=True)
    (grad_kl,) = torch.autograd.grad(info.kl_divergence(p, torch.softmax(theta, 0)), theta)
    (grad_ce,) = torch.autograd.grad(info.cross_entropy(p, torch.softmax(theta, 0)), theta)
    assert torch.allclose(grad_kl, grad_ce, atol=1e-14)
    assert torch.allclose(grad_ce, torch.softmax(theta, 0) - p, atol=1e-12)  # softmax: q - p


def test_cross_entropy_loss_is_the_average_negative_log_likelihood():
    logits = torch.randn(64, 10, dtype=torch.float64, generator=gen(5))
    y = torch.randint(10, (64,), generator=gen(6))
    ours = info.cross_entropy(F.one_hot(y, 10).double(), torch.softmax(logits, -1)).mean()
    assert torch.allclose(ours, F.cross_entropy(logits, y), atol=1e-12)


def test_minimising_cross_entropy_gives_the_empirical_frequencies():
    x = torch.multinomial(torch.tensor([0.1, 0.3, 0.6]), 500, replacement=True, generator=gen(7))
    p_hat = torch.bincount(x, minlength=3).double() / len(x)
    q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    nll = -torch.log(q[x]).mean()
    assert torch.allclose(nll, info.cross_entropy(p_hat, q), atol=1e-12)
    res = optimize.minimize(lambda t: info.cross_entropy(p_hat, torch.softmax(
        torch.as_tensor(t), 0)).item(), x0=[0.0, 0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    assert torch.allclose(torch.softmax(torch.as_tensor(res.x), 0), p_hat, atol=1e-5)


def test_mutual_information_identity():
    # I(X; Y) = KL(p(x, y) || p(x) p(y)) = H(X) + H(Y) - H(X, Y): the lab's exercise
    joint = random_distributions(1, 12, seed=16).reshape(3, 4)
    px, py = joint.sum(1), joint.sum(0)
    mi = info.kl_divergence(joint.reshape(-1), torch.outer(px, py).reshape(-1))
    assert torch.allclose(mi, info.entropy(px) + info.entropy(py) - info.entropy(joint.reshape(-1)))
    independent = torch.outer(px, py).reshape(-1)
    assert info.kl_divergence(independent, independent).item() == 0.0


# --- Gaussians ----------------------------------------------------------------------------------

def test_gaussian_kl_against_torch_distributions():
    g = gen(8)
    mu_q, mu_p = torch.randn(100, generator=g), torch.randn(100, generator=g)
    lv_q, lv_p = torch.randn(100, generator=g), torch.randn(100, generator=g)
    ref = D.kl_divergence(D.Normal(mu_q, (0.5 * lv_q).exp()), D.Normal(mu_p, (0.5 * lv_p).exp()))
    assert torch.allclose(info.gaussian_kl(mu_q, lv_q, mu_p, lv_p), ref, atol=1e-5)


def test_gaussian_kl_to_standard_normal_and_diagonal():
    g = gen(9)
    mu, logvar = torch.randn(32, 5, generator=g), torch.randn(32, 5, generator=g)
    sigma2 = logvar.exp()
    closed = 0.5 * (mu**2 + sigma2 - torch.log(sigma2) - 1)
    assert torch.allclose(info.gaussian_kl(mu, logvar), closed, atol=1e-6)
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    prior = D.Independent(D.Normal(torch.zeros(5), torch.ones(5)), 1)
    assert torch.allclose(info.gaussian_kl(mu, logvar).sum(-1), D.kl_divergence(q, prior), atol=1e-5)


def test_exercise_diagonal_gaussian_terms():
    mu = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.5, 0.5 * math.exp(-1), 0.5 * (math.e - 1)], dtype=torch.float64)
    assert torch.allclose(info.gaussian_kl(mu, logvar), expected, atol=1e-14)
    assert info.gaussian_kl(mu, logvar).sum().item() == pytest.approx(1.543, abs=5e-4)


def test_gaussian_kl_monte_carlo():
    mu_q, lv_q, mu_p, lv_p = 0.7, math.log(0.5), -0.3, math.log(2.0)
    x = mu_q + math.exp(0.5 * lv_q) * torch.randn(100_000, dtype=torch.float64, generator=gen(10))
    est, se = info.monte_carlo_kl(lambda z: info.gaussian_log_prob(z, mu_q, lv_q),
                                  lambda z: info.gaussian_log_prob(z, mu_p, lv_p), x)
    exact = info.gaussian_kl(torch.tensor(mu_q), torch.tensor(lv_q), mu_p, lv_p).item()
    assert abs(est.item() - exact) < 4 * se.item()


def test_gaussian_log_prob_against_torch():
    x = torch.randn(50, dtype=torch.float64, generator=gen(11))
    ref = D.Normal(torch.tensor(0.4, dtype=torch.float64), 1.5).log_prob(x)
    assert torch.allclose(info.gaussian_log_prob(x, 0.4, 2 * math.log(1.5)), ref, atol=1e-12)


def test_gaussian_entropy_against_torch_and_monte_carlo():
    logvar = torch.linspace(-3, 3, 7, dtype=torch.float64)
    ref = D.Normal(torch.zeros(7, dtype=torch.float64), (0.5 * logvar).exp()).entropy()
    assert torch.allclose(info.gaussian_entropy(logvar), ref, atol=1e-12)
    x = 1.7 * torch.randn(100_000, dtype=torch.float64, generator=gen(15))
    surprisal = -info.gaussian_log_prob(x, 0.0, 2 * math.log(1.7))  # H = E[-log q(x)]
    se = surprisal.std().item() / math.sqrt(len(x))
    assert abs(surprisal.mean().item() - info.gaussian_entropy(2 * math.log(1.7)).item()) < 4 * se


# --- Jensen-Shannon -----------------------------------------------------------------------------

def test_js_is_symmetric_and_bounded_by_log_2():
    p, q = random_distributions(500, 6, seed=14), random_distributions(500, 6, seed=15)
    js = info.js_divergence(p, q)
    assert torch.allclose(js, info.js_divergence(q, p), atol=1e-14)
    assert (js >= 0).all() and (js <= math.log(2)).all()
    assert torch.allclose(js, info.entropy((p + q) / 2) - (info.entropy(p) + info.entropy(q)) / 2)


def test_js_of_disjoint_supports_is_log_2():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.0, 0.0, 0.1, 0.9], dtype=torch.float64)
    assert info.js_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-15)
    assert info.js_divergence(p, q, base=2).item() == pytest.approx(1.0, abs=1e-15)
    assert info.kl_divergence(p, q).item() == math.inf
    assert info.js_divergence(p, p).item() == 0.0


# --- forward vs reverse KL on a bimodal mixture --------------------------------------------------

def test_mixture_density_against_scipy_and_normalised():
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    log_p = info.mixture_log_prob(x, *MIX)
    ref = 0.3 * stats.norm.pdf(x.numpy(), -3, 0.6) + 0.7 * stats.norm.pdf(x.numpy(), 2, 0.9)
    assert torch.allclose(log_p.exp(), torch.from_numpy(ref), atol=1e-12)
    assert torch.trapezoid(log_p.exp(), x).item() == pytest.approx(1.0, abs=1e-8)


def test_mixture_sample_moments_and_seed():
    x = info.mixture_sample(100_000, *MIX, generator=gen(12))
    fit = info.fit_forward_kl(*MIX)
    assert abs(x.mean().item() - fit.mu) < 4 * fit.sigma / math.sqrt(len(x))
    assert x.std().item() == pytest.approx(fit.sigma, rel=0.01)
    assert torch.equal(info.mixture_sample(10, *MIX, generator=gen(1)),
                       info.mixture_sample(10, *MIX, generator=gen(1)))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_mixture_kl_quadrature_against_monte_carlo(direction):
    mu, logvar = 0.5, 2 * math.log(1.5)

    def log_q(z):
        return info.gaussian_log_prob(z, mu, logvar)

    def log_p(z):
        return info.mixture_log_prob(z, *MIX)

    if direction == "reverse":
        x = mu + math.exp(0.5 * logvar) * torch.randn(100_000, dtype=torch.float64, generator=gen(13))
        est, se = info.monte_carlo_kl(log_q, log_p, x)
    else:
        est, se = info.monte_carlo_kl(log_p, log_q, info.mixture_sample(100_000, *MIX, generator=gen(14)))
    quad = info.mixture_kl(torch.tensor(mu), torch.tensor(logvar), *MIX, direction=direction)
    assert abs(est.item() - quad.item()) < 4 * se.item()


def test_forward_kl_fit_is_moment_matching():
    fit = info.fit_forward_kl(*MIX)
    assert fit.mu == pytest.approx(0.3 * -3 + 0.7 * 2)
    assert fit.sigma**2 == pytest.approx(0.3 * (0.36 + 9) + 0.7 * (0.81 + 4) - 0.5**2)
    # minimise the forward KL numerically (quadrature, autograd gradients): same Gaussian

    def forward_kl(v):
        v = torch.tensor(v, requires_grad=True)
        kl = info.mixture_kl(v[0], v[1], *MIX, direction="forward")
        kl.backward()
        return kl.item(), v.grad.numpy()

    res = optimize.minimize(forward_kl, x0=[-1.0, 0.0], jac=True, method="BFGS",
                            options={"gtol": 1e-10})
    assert res.x[0] == pytest.approx(fit.mu, abs=1e-6)
    assert math.exp(0.5 * res.x[1]) == pytest.approx(fit.sigma, abs=1e-6)


@pytest.mark.parametrize("mu0, mode", [(-4.0, 0), (0.0, 1), (3.0, 1)])
def test_reverse_kl_fit_sits_on_one_mode(mu0, mode):
    w, m, s = MIX
    fit = info.fit_reverse_kl(*MIX, mu0=mu0, sigma0=1.0, steps=300)
    assert fit.mu == pytest.approx(m[mode], abs=0.02)
    assert fit.sigma == pytest.approx(s[mode], abs=0.02)
    # q is (almost) component k, so log q - log p ~ -log w_k
    assert fit.history["kl"][-1] == pytest.approx(-math.log(w[mode]), abs=0.01)
    assert fit.history["kl"][-1] <= fit.history["kl"][0]


def test_each_fit_wins_on_its_own_objective():
    forward = info.fit_forward_kl(*MIX)
    reverse = info.fit_reverse_kl(*MIX, mu0=0.0)  # the heavier mode, the global minimum

    def kl(f: info.GaussianFit, direction: str) -> float:
        return info.mixture_kl(torch.tensor(f.mu), torch.tensor(2 * math.log(f.sigma)), *MIX,
                               direction=direction).item()

    assert kl(reverse, "reverse") < kl(forward, "reverse")
    assert kl(forward, "forward") < kl(reverse, "forward")


# --- bad inputs ---------------------------------------------------------------------------------

def test_negative_entries_raise():
    with pytest.raises(ValueError, match="negative entries"):
        info.entropy([1.2, -0.2])


def test_not_summing_to_one_raises():
    with pytest.raises(ValueError, match="does not sum to one"):
        info.kl_divergence([0.5, 0.6], [0.5, 0.5])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        info.cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5])


def test_non_finite_raises():
    with pytest.raises(ValueError, match="NaN or infinite"):
        info.js_divergence([float("nan"), 1.0], [0.5, 0.5])


def test_empty_raises():
    with pytest.raises(ValueError, match="K >= 1 outcomes"):
        info.entropy(torch.zeros(3, 0))


def test_bad_base_raises():
    with pytest.raises(ValueError, match="base must be positive and not 1"):
        info.entropy(FAIR, base=1)


def test_information_content_outside_unit_interval_raises():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        info.information_content(torch.tensor([0.5, 1.5]))


def test_mixture_with_zero_std_raises():
    with pytest.raises(ValueError, match="stds must be positive"):
        info.fit_forward_kl([0.5, 0.5], [0.0, 1.0], [1.0, 0.0])


def test_mixture_with_mismatched_lengths_raises():
    with pytest.raises(ValueError, match="same length"):
        info.mixture_log_prob(torch.zeros(3), [0.5, 0.5], [0.0], [1.0, 1.0])


def test_bad_direction_raises():
    with pytest.raises(ValueError, match="direction must be"):
        info.mixture_kl(torch.tensor(0.0), torch.tensor(0.0), *MIX, direction="both")


def test_monte_carlo_kl_needs_a_vector_of_log_ratios():
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        info.monte_carlo_kl(lambda z: z, lambda z: z, torch.zeros(5, 2))
