"""Oracle tests of course_lib.diffusion: closed forms vs Monte Carlo, brute-force Gaussian
conditioning, exact predictors, and DDIM vs DDPM step by step."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from course_lib import diffusion as D


@pytest.fixture(scope="module")
def sched():
    return D.linear_schedule(1000)


@pytest.mark.parametrize("make", [D.linear_schedule, D.cosine_schedule])
def test_schedules_float64_and_alpha_bar_strictly_decreasing_in_unit_interval(make):
    s = make(1000)
    assert s.T == 1000
    for name in ("betas", "alphas", "alphas_bar", "alphas_bar_prev", "posterior_variance"):
        assert getattr(s, name).dtype == torch.float64
    assert torch.all((s.alphas_bar > 0) & (s.alphas_bar < 1))
    assert torch.all(s.alphas_bar[1:] < s.alphas_bar[:-1])
    # alpha-bar_t is the running product of alpha_s, and alpha-bar_{t-1} is it shifted by one
    products = torch.tensor([math.prod(s.alphas[: t + 1].tolist()) for t in range(1000)], dtype=torch.float64)
    assert torch.allclose(s.alphas_bar, products, rtol=1e-10)
    assert s.alphas_bar_prev[0] == 1 and torch.equal(s.alphas_bar_prev[1:], s.alphas_bar[:-1])
    assert s.alphas_bar[-1] < 1e-4  # x_{T-1} is (almost) pure noise for both schedules
    assert torch.all(s.snr()[1:] < s.snr()[:-1])


def test_linear_schedule_endpoints_and_cosine_formula():
    s = D.linear_schedule(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    c = D.cosine_schedule(1000, s=0.008)
    u = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = lambda u: torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    target = f(u) / f(torch.zeros(1, dtype=torch.float64))
    # unclipped steps reproduce alpha-bar(u) = f(u)/f(0) exactly; only the very last beta is clipped
    assert torch.allclose(c.alphas_bar[:-1], target[:-1], rtol=1e-9)
    assert c.betas.max().item() <= 0.999


def test_q_sample_moments_match_closed_form(sched):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    for t in (0, 10, 300, 999):
        xt = D.q_sample(sched, x0, torch.full((n,), t), generator=g)
        a = sched.alphas_bar[t].item()
        mean, var = math.sqrt(a) * 0.7, 1 - a
        assert abs(xt.mean().item() - mean) < 4 * math.sqrt(var / n)
        assert abs(xt.var().item() - var) < 4 * var * math.sqrt(2 / n)


def test_q_sample_is_the_chain_of_single_steps():
    """q(x_t | x_0) in closed form equals T small steps x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z."""
    s = D.linear_schedule(50, 1e-3, 0.2)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x = torch.full((n,), -1.3, dtype=torch.float64)
    for t in range(s.T):
        x = (1 - s.betas[t]).sqrt() * x + s.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    a = s.alphas_bar[-1].item()
    assert abs(x.mean().item() - math.sqrt(a) * -1.3) < 4 * math.sqrt((1 - a) / n)
    assert abs(x.var().item() - (1 - a)) < 4 * (1 - a) * math.sqrt(2 / n)


def test_q_posterior_equals_brute_force_gaussian_conditioning(sched):
    """Condition the joint Gaussian of (x_{t-1}, x_t) | x_0 on x_t, with the generic formula."""
    x0 = torch.tensor([[0.3], [-1.1], [2.0]], dtype=torch.float64)
    xt = torch.tensor([[0.5], [0.1], [-0.4]], dtype=torch.float64)
    for t in (1, 5, 500, 999):
        ab_prev, beta = sched.alphas_bar[t - 1].item(), sched.betas[t].item()
        # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) e1;  x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) e2
        m1, v1 = math.sqrt(ab_prev) * x0, 1 - ab_prev
        m2, v2, c12 = math.sqrt(1 - beta) * m1, (1 - beta) * v1 + beta, math.sqrt(1 - beta) * v1
        mean_bf = m1 + c12 / v2 * (xt - m2)
        var_bf = v1 - c12**2 / v2
        mean, var = D.q_posterior(sched, x0, xt, torch.full((3,), t))
        assert torch.allclose(mean, mean_bf, rtol=1e-10, atol=1e-12)
        assert torch.allclose(var, torch.full_like(var, var_bf), rtol=1e-10)
        # and the eps form of the mean: (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)
        eps = D.eps_from_x0(sched, xt, torch.full((3,), t), x0)
        assert torch.allclose(D.p_mean(sched, xt, torch.full((3,), t), eps), mean, rtol=1e-9, atol=1e-12)
    # at t = 0 (the paper's t = 1) the posterior is the point x_0
    mean, var = D.q_posterior(sched, x0, xt, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(mean, x0) and torch.all(var == 0)


def test_q_posterior_matches_multivariate_normal_conditioning_by_sampling():
    """Monte Carlo: draw (x_{t-1}, x_t) jointly, keep x_t near a value, compare the conditional moments."""
    s = D.linear_schedule(10, 0.05, 0.3)
    t, x0v, xtv = 6, 0.8, 0.2
    ab_prev, beta = s.alphas_bar[t - 1].item(), s.betas[t].item()
    cov = torch.tensor([[1 - ab_prev, math.sqrt(1 - beta) * (1 - ab_prev)],
                        [math.sqrt(1 - beta) * (1 - ab_prev), (1 - beta) * (1 - ab_prev) + beta]],
                       dtype=torch.float64)
    loc = torch.tensor([math.sqrt(ab_prev), math.sqrt(ab_prev * (1 - beta))], dtype=torch.float64) * x0v
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3_000_000, 2, generator=g, dtype=torch.float64)
    pairs = loc + z @ torch.linalg.cholesky(cov).T
    near = pairs[(pairs[:, 1] - xtv).abs() < 0.01, 0]
    mean, var = D.q_posterior(s, torch.tensor([[x0v]], dtype=torch.float64),
                              torch.tensor([[xtv]], dtype=torch.float64), torch.tensor([t]))
    assert abs(near.mean().item() - mean.item()) < 4 * math.sqrt(var.item() / near.numel()) + 2e-3
    assert abs(near.var().item() - var.item()) < 0.05 * var.item()


def test_predict_x0_inverts_q_sample(sched):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(5, 3, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 1, 100, 700, 999])
    xt = D.q_sample(sched, x0, t, eps)
    assert torch.allclose(D.predict_x0(sched, xt, t, eps), x0, atol=1e-9)
    assert torch.allclose(D.eps_from_x0(sched, xt, t, x0), eps, atol=1e-9)


def test_L_t_minus_1_kl_equals_weighted_eps_error(sched):
    """KL(q(x_{t-1}|x_t,x_0) || N(mu_theta, sigma_t^2)) = const(t) + w_t ||eps - eps_theta||^2."""
    g = torch.Generator().manual_seed(4)
    d = 6
    x0 = torch.randn(1, d, dtype=torch.float64, generator=g)
    eps = torch.randn(1, d, dtype=torch.float64, generator=g)
    for variance in ("beta_tilde", "beta"):
        for t in (1, 30, 600, 999):
            tt = torch.tensor([t])
            xt = D.q_sample(sched, x0, tt, eps)
            mu_q, var_q = D.q_posterior(sched, x0, xt, tt)
            sigma2 = D.reverse_variance(sched, variance)[t].item()
            const = kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_q, math.sqrt(sigma2))).sum()
            for _ in range(3):
                eps_theta = eps + 0.3 * torch.randn(1, d, dtype=torch.float64, generator=g)
                kl = kl_divergence(Normal(mu_q, var_q.sqrt()),
                                   Normal(D.p_mean(sched, xt, tt, eps_theta), math.sqrt(sigma2))).sum()
                weighted = D.loss_weight(sched, tt, variance) * ((eps - eps_theta) ** 2).sum()
                assert torch.allclose(kl - const, weighted, rtol=1e-7)
    with pytest.raises(ValueError, match="L_0"):
        D.loss_weight(sched, 0)


def test_oracle_eps_one_point_data_ddpm_and_ddim_recover_it(sched):
    g = torch.Generator().manual_seed(5)
    point = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    oracle = D.gaussian_data_eps(sched, point[0], 0.0)
    x = D.ddpm_sample(oracle, sched, (3, 1, 4, 4), generator=g, dtype=torch.float64)
    assert torch.allclose(x, point.expand(3, -1, -1, -1), atol=1e-8)
    x = D.ddpm_sample(oracle, sched, (3, 1, 4, 4), generator=g, dtype=torch.float64, variance="beta")
    assert torch.allclose(x, point.expand(3, -1, -1, -1), atol=1e-8)
    for steps in (1000, 50, 10, 1):
        x = D.ddim_sample(oracle, sched, (3, 1, 4, 4), steps=steps, generator=g, dtype=torch.float64)
        assert torch.allclose(x, point.expand(3, -1, -1, -1), atol=1e-8)
    x = D.ddim_sample(oracle, sched, (3, 1, 4, 4), steps=20, eta=1.0, generator=g, dtype=torch.float64)
    assert torch.allclose(x, point.expand(3, -1, -1, -1), atol=1e-8)


def test_ddim_eta_one_on_all_steps_is_the_ddpm_step(sched):
    g = torch.Generator().manual_seed(6)
    eps_model = D.gaussian_data_eps(sched, 0.5, 0.8)
    for t in (999, 500, 37, 1, 0):
        xt = torch.randn(4, 3, generator=g, dtype=torch.float64)
        z = torch.randn(4, 3, generator=g, dtype=torch.float64)
        eps = eps_model(xt, torch.full((4,), t))
        a = D.ddpm_step(sched, eps, xt, t, z)
        b = D.ddim_step(sched, eps, xt, t, t - 1, eta=1.0, noise=z)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    # whole runs from the same x_T and the same generator state: the same samples
    x_T = torch.randn(8, 2, generator=g, dtype=torch.float64)
    a = D.ddpm_sample(eps_model, sched, (8, 2), x_T=x_T, generator=torch.Generator().manual_seed(9),
                      dtype=torch.float64)
    b = D.ddim_sample(eps_model, sched, (8, 2), steps=1000, eta=1.0, x_T=x_T,
                      generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_ddim_timesteps_spacing():
    assert D.ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert D.ddim_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    for steps in (1, 2, 7, 50, 333):
        ts = D.ddim_timesteps(1000, steps)
        assert len(ts) == len(set(ts)) == steps and ts[0] == 999
        assert all(b < a for a, b in zip(ts, ts[1:], strict=False))


def test_gaussian_data_sampler_output_moments():
    """For x_0 ~ N(m, s^2) the exact eps-predictor makes both samplers return (nearly) N(m, s^2)."""
    sched = D.linear_schedule(1000)
    m, s = 1.5, 0.4
    eps_model = D.gaussian_data_eps(sched, m, s)
    n = 10_000
    f64 = {"dtype": torch.float64}
    for x in (D.ddpm_sample(eps_model, sched, (n, 1), generator=torch.Generator().manual_seed(7), **f64),
              D.ddim_sample(eps_model, sched, (n, 1), steps=100, generator=torch.Generator().manual_seed(8),
                            **f64)):
        assert abs(x.mean().item() - m) < 4 * s / math.sqrt(n) + 0.01
        assert abs(x.std().item() - s) < 0.02 * s + 4 * s / math.sqrt(2 * n)


def test_diffusion_loss_with_oracle_is_zero_and_seeded(sched):
    point = torch.tensor([[0.2, -0.5]], dtype=torch.float64)
    oracle = D.gaussian_data_eps(sched, point[0], 0.0)
    x0 = point.expand(16, 2)
    assert D.diffusion_loss(oracle, sched, x0, generator=torch.Generator().manual_seed(0)).item() < 1e-16
    def zero(x, t):  # predicting 0 has the loss E||eps||^2 / d = 1
        return torch.zeros_like(x)

    losses = [D.diffusion_loss(zero, sched, torch.zeros(4096, 4), generator=torch.Generator().manual_seed(k))
              for k in (1, 1)]
    assert losses[0].item() == losses[1].item()
    assert abs(losses[0].item() - 1) < 4 * math.sqrt(2 / (4096 * 4))


def test_same_seed_same_samples(sched):
    eps_model = D.gaussian_data_eps(sched, 0.0, 1.0)
    short = D.linear_schedule(100, 1e-3, 0.2)
    a = D.ddpm_sample(eps_model, short, (5, 3), generator=torch.Generator().manual_seed(3))
    b = D.ddpm_sample(eps_model, short, (5, 3), generator=torch.Generator().manual_seed(3))
    c = D.ddim_sample(eps_model, sched, (5, 3), steps=10, eta=0.5, generator=torch.Generator().manual_seed(3))
    d = D.ddim_sample(eps_model, sched, (5, 3), steps=10, eta=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(c, d)
    x, traj = D.ddim_sample(eps_model, sched, (5, 3), steps=10, generator=torch.Generator().manual_seed(3),
                            return_trajectory=True)
    assert traj.shape == (11, 5, 3) and torch.equal(traj[-1], x)


def test_bad_inputs_raise_clear_errors(sched):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[0, T-1\]"):
        D.q_sample(sched, x, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match=r"\[0, T-1\]"):
        D.q_sample(sched, x, torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer"):
        D.q_sample(sched, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        D.q_sample(sched, x, torch.tensor([0, 1, 2]))
    for T in (0, -3, 2.5):
        with pytest.raises(ValueError, match="T"):
            D.linear_schedule(T)
        with pytest.raises(ValueError, match="T"):
            D.cosine_schedule(T)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        D.Schedule.from_betas([0.1, 1.0])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        D.linear_schedule(10, 0.0, 0.1)
    with pytest.raises(ValueError, match="steps"):
        D.ddim_sample(lambda x, t: x, sched, (2, 3), steps=1001)
    with pytest.raises(ValueError, match="steps"):
        D.ddim_sample(lambda x, t: x, sched, (2, 3), steps=0)
    with pytest.raises(ValueError, match="steps"):
        D.ddim_sample(lambda x, t: x, sched, (2, 3), steps=[10, 20])
    with pytest.raises(ValueError, match="eta"):
        D.ddim_sample(lambda x, t: x, sched, (2, 3), steps=10, eta=-0.1)
    with pytest.raises(ValueError, match="shape"):
        D.ddpm_sample(lambda x, t: x, sched, (2, 0))
    with pytest.raises(ValueError, match="x_T"):
        D.ddim_sample(lambda x, t: x, sched, (2, 3), x_T=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape"):
        D.q_posterior(sched, torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="variance"):
        D.reverse_variance(sched, "sigma")


def test_gaussian_mixture_eps_is_minus_sqrt_one_minus_abar_times_the_autograd_score(sched):
    """eps* = -sqrt(1 - a) grad log q(x_t), q(x_t) = sum_k w_k N(sqrt(a) mu_k, (a s_k^2 + 1 - a) I), the
    log-density built with probability.log_mixture and differentiated by autograd."""
    from course_lib.probability import log_mixture

    means = torch.tensor([[-2.0, 0.0, 1.0], [1.0, 1.0, -1.0], [0.5, -1.5, 0.0]], dtype=torch.float64)
    stds = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    eps_model = D.gaussian_mixture_eps(sched, means, stds, weights)
    g = torch.Generator().manual_seed(0)
    for t_val in (0, 20, 250, 600, 999):
        x = 2 * torch.randn(50, 3, generator=g, dtype=torch.float64)
        a = sched.alphas_bar[t_val]
        xg = x.clone().requires_grad_(True)
        comps = torch.distributions.Normal(a.sqrt() * means, (a * stds[:, None] ** 2 + 1 - a).sqrt())
        log_q = log_mixture(weights, comps.log_prob(xg[:, None, :]).sum(-1))  # (N,)
        score = torch.autograd.grad(log_q.sum(), xg)[0]
        assert torch.allclose(eps_model(x, torch.full((50,), t_val)), -(1 - a).sqrt() * score, atol=1e-10)
    # image-shaped examples and float32 in, float32 out
    img_means = torch.randn(2, 1, 4, 4, generator=g)
    img = D.gaussian_mixture_eps(sched, img_means, [0.5, 0.5], [0.5, 0.5])
    out = img(torch.randn(3, 1, 4, 4), torch.tensor([1, 2, 3]))
    assert out.shape == (3, 1, 4, 4) and out.dtype == torch.float32


def test_gaussian_mixture_eps_with_one_component_is_gaussian_data_eps(sched):
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([0.7, -0.3], dtype=torch.float64)
    one = D.gaussian_mixture_eps(sched, mean[None], [0.4], [1.0])
    ref = D.gaussian_data_eps(sched, mean, 0.4)
    x, t = torch.randn(20, 2, generator=g, dtype=torch.float64), torch.randint(1000, (20,), generator=g)
    assert torch.allclose(one(x, t), ref(x, t), atol=1e-12)
    # two identical components are one component; far from every mean nothing underflows
    two = D.gaussian_mixture_eps(sched, torch.stack([mean, mean]), [0.4, 0.4], [0.3, 0.7])
    assert torch.allclose(two(x, t), ref(x, t), atol=1e-12)
    far = torch.full((2, 2), 1e3, dtype=torch.float64)
    assert torch.isfinite(D.gaussian_mixture_eps(sched, torch.stack([mean, -mean]), [0.1, 0.1], [0.5, 0.5])(
        far, torch.tensor([0, 0]))).all()


def test_gaussian_mixture_eps_bad_inputs_raise(sched):
    means = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="one row per component"):
        D.gaussian_mixture_eps(sched, means, [1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="stds"):
        D.gaussian_mixture_eps(sched, means, [1.0, -1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        D.gaussian_mixture_eps(sched, means, [1.0, 1.0], [0.5, 0.6])
    # float32 weights that sum to one up to float32 rounding are accepted (and renormalised)
    six = D.gaussian_mixture_eps(sched, torch.zeros(6, 2), [1.0] * 6, torch.full((6,), 1 / 6))
    x, t = torch.ones(2, 2), torch.tensor([3, 3])
    assert torch.allclose(six(x, t), D.gaussian_data_eps(sched, 0.0, 1.0)(x, t), atol=1e-6)
    with pytest.raises(ValueError, match="like the component means"):
        D.gaussian_mixture_eps(sched, means, [1.0, 1.0], [0.5, 0.5])(torch.zeros(3, 3),
                                                                     torch.tensor([0, 1, 1]))


# --- tests that a wrong sigma_t, DDIM coefficient or clipping fails -----------------------------

def test_strided_ddim_step_sigma_is_the_posterior_std_of_the_jump(sched):
    """For a jump t -> t' < t - 1, sigma(eta = 1)^2 is Var(x_{t'} | x_t, x_0) of the forward process
    x_t = sqrt(a_t / a_t') x_t' + sqrt(1 - a_t / a_t') e (brute-force Gaussian conditioning), not
    beta_t: the two agree only for t' = t - 1."""
    g = torch.Generator().manual_seed(11)
    xt = torch.randn(3, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 5, generator=g, dtype=torch.float64)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    for t, t_prev in ((999, 979), (500, 300), (60, 0), (20, -1)):
        a = sched.alphas_bar[t].item()
        a_prev = sched.alphas_bar[t_prev].item() if t_prev >= 0 else 1.0
        # (x_t', x_t) given x_0: variances 1 - a_prev and 1 - a, covariance sqrt(a / a_prev) (1 - a_prev)
        v1, v2, c12 = 1 - a_prev, 1 - a, math.sqrt(a / a_prev) * (1 - a_prev)
        posterior_var = v1 - c12**2 / v2
        x0_hat = (xt - math.sqrt(1 - a) * eps) / math.sqrt(a)
        for eta in (0.0, 0.3, 1.0):
            sigma = eta * math.sqrt(max(posterior_var, 0.0))
            expected = (math.sqrt(a_prev) * x0_hat + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
                        + sigma * z)
            out = D.ddim_step(sched, eps, xt, t, t_prev, eta=eta, noise=z)
            assert torch.allclose(out, expected, rtol=1e-9, atol=1e-12), (t, t_prev, eta)
    # the step draws its own noise with the same sigma: Var(x_t' | x_t) = sigma^2 by Monte Carlo
    n, t, t_prev = 200_000, 999, 979
    a, a_prev = sched.alphas_bar[t].item(), sched.alphas_bar[t_prev].item()
    sigma2 = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
    x = torch.full((n, 1), 0.4, dtype=torch.float64)
    out = D.ddim_step(sched, torch.full_like(x, -0.2), x, t, t_prev, eta=1.0, generator=g)
    assert abs(out.var().item() - sigma2) < 4 * sigma2 * math.sqrt(2 / n)


def _gaussian_sampler_moments(sched, m, s, mean, var, *, ddpm=None, times=None, eta=0.0):
    """Mean and variance of a sampler's x_0 for data N(m, s^2) and the exact eps, by recursion (float64).

    With eps*(x, t) = c_t (x - sqrt(a_t) m), c_t = sqrt(1 - a_t) / (a_t s^2 + 1 - a_t), every step is
    x' = A x + B + sigma z, so mean' = A mean + B and var' = A^2 var + sigma^2. ``ddpm``: "beta_tilde"
    or "beta" (Ho et al.'s mean (x - beta_t / sqrt(1 - a_t) eps) / sqrt(alpha_t), no noise at t = 0);
    otherwise DDIM on ``times`` (Song et al. eq. 12 with eq. 16's sigma times eta).
    """
    ab, betas = sched.alphas_bar.tolist(), sched.betas.tolist()
    steps = list(range(sched.T - 1, -1, -1)) if ddpm else times
    for t, t_prev in zip(steps, steps[1:] + [-1], strict=True):
        a, a_prev = ab[t], (ab[t_prev] if t_prev >= 0 else 1.0)
        c = math.sqrt(1 - a) / (a * s**2 + 1 - a)  # eps = c x + e
        e = -c * math.sqrt(a) * m
        if ddpm:
            beta = betas[t]
            A = (1 - beta / math.sqrt(1 - a) * c) / math.sqrt(1 - beta)
            B = -beta / math.sqrt(1 - a) * e / math.sqrt(1 - beta)
            sigma2 = 0.0 if t == 0 else beta * ((1 - a_prev) / (1 - a) if ddpm == "beta_tilde" else 1.0)
        else:
            sigma2 = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
            d = math.sqrt(1 - a_prev - sigma2)  # x0_hat = (x - sqrt(1 - a) eps) / sqrt(a)
            A = math.sqrt(a_prev) * (1 - math.sqrt(1 - a) * c) / math.sqrt(a) + d * c
            B = -math.sqrt(a_prev) * math.sqrt(1 - a) * e / math.sqrt(a) + d * e
        mean, var = A * mean + B, A * A * var + sigma2
    return mean, var


@pytest.mark.parametrize("ddpm, steps, eta", [("beta_tilde", None, 0.0), ("beta", None, 0.0), (None, 50, 0.0),
                                             (None, 50, 1.0), (None, 10, 0.5)])
def test_gaussian_data_sampler_moments_match_the_exact_recursion(ddpm, steps, eta):
    """Data N(m, s^2) per coordinate and the exact eps: each sampler is linear in x_T and its noise, so
    the mean and variance of its x_0 follow exactly from a recursion; unlike the one-point oracle
    (x0-hat exact at every step) they depend on sigma_t and on every DDIM coefficient. Four
    coordinates: narrow data (s = 0.02, where the last steps' noise dominates) and wide data, each
    from x_T ~ N(0, 1) and from the fixed x_T = 1.5 (where Var(x_0 | x_T) is the injected noise).
    T = 250 with 4 times Ho et al.'s betas (alpha-bar_{T-1} = 4e-5, as for T = 1000) keeps it fast."""
    sched = D.linear_schedule(250, 4e-4, 0.08)
    m = torch.tensor([1.0, 0.5, 1.0, 0.5], dtype=torch.float64)
    s = torch.tensor([0.02, 0.5, 0.02, 0.5], dtype=torch.float64)
    starts = [(0.0, 1.0), (0.0, 1.0), (1.5, 0.0), (1.5, 0.0)]  # mean and variance of x_T
    n = 10_000
    x_T = torch.randn(n, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    x_T[:, 2:] = 1.5
    eps_model = D.gaussian_data_eps(sched, m, s)
    f64 = {"x_T": x_T, "generator": torch.Generator().manual_seed(13), "dtype": torch.float64}
    if ddpm:
        x = D.ddpm_sample(eps_model, sched, (n, 4), variance=ddpm, **f64)
        times = None
    else:
        x = D.ddim_sample(eps_model, sched, (n, 4), steps=steps, eta=eta, **f64)
        times = D.ddim_timesteps(sched.T, steps)
    for j in range(4):
        mean, var = _gaussian_sampler_moments(sched, m[j].item(), s[j].item(), *starts[j], ddpm=ddpm,
                                              times=times, eta=eta)
        got_mean, got_var = x[:, j].mean().item(), x[:, j].var().item()
        assert abs(got_mean - mean) < 4 * math.sqrt(var / n) + 1e-9, (j, got_mean, mean)
        assert abs(got_var - var) < 4 * var * math.sqrt(2 / (n - 1)) + 1e-12, (j, got_var, var)


def test_clip_x0_clamps_x0_hat_in_both_steps(sched):
    """clip_x0 = c replaces x0-hat by clamp(x0-hat, -c, c); DDPM forms mu-tilde(x0-hat, x_t) from it,
    DDIM also re-derives eps from the clipped x0-hat, eps = (x_t - sqrt(a_t) x0-hat) / sqrt(1 - a_t)."""
    g = torch.Generator().manual_seed(14)
    x0_hat = 1.5 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    assert (x0_hat.abs() > 1).any() and (x0_hat.abs() < 1).any()  # some entries are clipped, some not
    x0c = x0_hat.clamp(-1, 1)
    eps = torch.randn(4, 6, generator=g, dtype=torch.float64)
    z = torch.randn(4, 6, generator=g, dtype=torch.float64)
    for t in (999, 400, 30):
        a, a_prev, beta = (sched.alphas_bar[t].item(), sched.alphas_bar[t - 1].item(), sched.betas[t].item())
        xt = math.sqrt(a) * x0_hat + math.sqrt(1 - a) * eps  # x0-hat = (x_t - sqrt(1 - a) eps) / sqrt(a)
        # DDPM: mu-tilde = sqrt(a_prev) beta / (1 - a) x0 + sqrt(1 - beta) (1 - a_prev) / (1 - a) x_t
        mu = math.sqrt(a_prev) * beta / (1 - a) * x0c + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * xt
        sigma = math.sqrt((1 - a_prev) / (1 - a) * beta)
        out = D.ddpm_step(sched, eps, xt, t, z, clip_x0=1.0)
        assert torch.allclose(out, mu + sigma * z, rtol=1e-9, atol=1e-12)
        # DDIM with a stride and eta = 0.5
        t_prev = t - 20
        a_prev = sched.alphas_bar[t_prev].item()
        sigma = 0.5 * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        eps_c = (xt - math.sqrt(a) * x0c) / math.sqrt(1 - a)
        expected = math.sqrt(a_prev) * x0c + math.sqrt(1 - a_prev - sigma**2) * eps_c + sigma * z
        out = D.ddim_step(sched, eps, xt, t, t_prev, eta=0.5, noise=z, clip_x0=1.0)
        assert torch.allclose(out, expected, rtol=1e-9, atol=1e-12)
    # a bound above every |x0-hat| changes nothing
    assert torch.allclose(D.ddpm_step(sched, eps, xt, 30, z), D.ddpm_step(sched, eps, xt, 30, z, clip_x0=1e9))
    assert torch.allclose(D.ddim_step(sched, eps, xt, 30, 10, 0.5, z),
                          D.ddim_step(sched, eps, xt, 30, 10, 0.5, z, clip_x0=1e9))


def test_clip_x0_reaches_the_samplers():
    """With the one-point oracle every x0-hat is the point, so a clipped sampler must end exactly at the
    point clamped to [-c, c] (and an unclipped one at the point itself)."""
    sched = D.linear_schedule(100, 1e-3, 0.2)
    point = torch.tensor([[2.5, -3.0, 0.4, -0.7]], dtype=torch.float64)
    oracle = D.gaussian_data_eps(sched, point[0], 0.0)
    clamped = point.clamp(-1, 1).expand(3, -1)
    g = torch.Generator().manual_seed(15)
    f64 = {"generator": g, "dtype": torch.float64}
    for variance in ("beta_tilde", "beta"):
        x = D.ddpm_sample(oracle, sched, (3, 4), variance=variance, clip_x0=1.0, **f64)
        assert torch.allclose(x, clamped, atol=1e-8)
    for steps, eta in ((50, 0.0), (50, 1.0), (1, 0.0)):
        x = D.ddim_sample(oracle, sched, (3, 4), steps=steps, eta=eta, clip_x0=1.0, **f64)
        assert torch.allclose(x, clamped, atol=1e-8)
    unclipped = D.ddim_sample(oracle, sched, (3, 4), steps=50, **f64)
    assert torch.allclose(unclipped, point.expand(3, -1), atol=1e-8)


# --- the ELBO as a bound on the likelihood of 8-bit data ----------------------------------------

def test_discretised_gaussian_gives_a_distribution_over_the_256_levels():
    x0 = 2 * torch.arange(256, dtype=torch.float64) / 255 - 1
    for mean, std in ((0.0, 0.3), (0.93, 0.01), (-1.4, 0.004), (0.5, 5.0)):
        logp = D.discretised_gaussian_log_prob(x0, torch.full_like(x0, mean), std)
        assert abs(logp.exp().sum().item() - 1) < 1e-9
    normal = torch.distributions.Normal(0.1, 0.2)
    k = torch.tensor([40.0, 128.0, 200.0], dtype=torch.float64)
    x = 2 * k / 255 - 1
    direct = (normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255)).log()
    got = D.discretised_gaussian_log_prob(x, torch.full_like(x, 0.1), 0.2)
    assert torch.allclose(got, direct, atol=1e-10)
    far = D.discretised_gaussian_log_prob(torch.tensor([0.9]), torch.tensor([-0.9]), 0.01)
    assert torch.isfinite(far) and far.item() < -1e3  # a bin 180 standard deviations away, in log space


def _tiny_chain():
    sched = D.Schedule.from_betas([0.05, 0.2, 0.4, 0.6])
    return sched, D.gaussian_data_eps(sched, 0.2, 0.5)


def _affine(f):
    """(a, b) of an affine map f(x) = a x + b of a float64 scalar batch."""
    b = f(torch.zeros(1, 1, dtype=torch.float64))
    return (f(torch.ones(1, 1, dtype=torch.float64)) - b).item(), b.item()


def test_elbo_equals_its_definition_and_bounds_the_exact_likelihood():
    # A 4-step chain in one dimension with a linear eps-model (the exact predictor of N(0.2, 0.5^2)
    # data): the ELBO by the library's KL decomposition, against (a) E_q[log p(x_{0:T}) - log q(x_{1:T}
    # | x_0)] sampled along the forward chain, and (b) the exact -log P(k) of the linear-Gaussian model.
    sched, eps = _tiny_chain()
    T, level = sched.T, 150
    images = torch.full((100_000, 1), level, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    bits = D.elbo_bits_per_dim(eps, sched, images, generator=g)
    nats = bits.double() * math.log(2)
    x0 = torch.full((len(images), 1), 2 * level / 255 - 1, dtype=torch.float64)
    normal = torch.distributions.Normal
    mu = lambda x, t: D.p_mean(sched, x, t, eps(x, torch.full((len(x),), t)))  # noqa: E731
    # (a) the definition, along one forward chain per example
    x = x0 * sched.alphas[0].sqrt() + sched.betas[0].sqrt() * torch.randn(x0.shape, dtype=torch.float64,
                                                                             generator=g)
    chain, log_q = [x], normal(x0 * sched.alphas[0].sqrt(), sched.betas[0].sqrt()).log_prob(x)
    for t in range(1, T):
        noise = torch.randn(x0.shape, dtype=torch.float64, generator=g)
        x = chain[-1] * sched.alphas[t].sqrt() + sched.betas[t].sqrt() * noise
        log_q = log_q + normal(chain[-1] * sched.alphas[t].sqrt(), sched.betas[t].sqrt()).log_prob(x)
        chain.append(x)
    sigma = D.reverse_variance(sched).sqrt()
    log_p = normal(0.0, 1.0).log_prob(chain[-1])
    for t in range(1, T):
        log_p = log_p + normal(mu(chain[t], t), sigma[t]).log_prob(chain[t - 1])
    log_p = log_p + D.discretised_gaussian_log_prob(x0, mu(chain[0], 0), sched.betas[0].sqrt().item())
    by_definition = (log_q - log_p).squeeze(1)
    se = math.hypot(nats.std().item(), by_definition.std().item()) / math.sqrt(len(images))
    assert abs(nats.mean().item() - by_definition.mean().item()) < 4 * se
    # (b) the model's exact marginal: x_{T-1} ~ N(0, 1), each step affine plus Gaussian noise
    m, v = 0.0, 1.0
    for t in range(T - 1, 0, -1):
        a, b = _affine(lambda z, t=t: mu(z, t))
        m, v = a * m + b, a * a * v + sigma[t].item() ** 2
    a, b = _affine(lambda z: mu(z, 0))
    exact = -D.discretised_gaussian_log_prob(torch.tensor([x0[0, 0].item()]), torch.tensor([a * m + b]),
                                                     math.sqrt(sched.betas[0].item() + a * a * v)).item()
    assert nats.mean().item() > exact + 4 * nats.std().item() / math.sqrt(len(images))  # a strict bound here


def test_stratified_elbo_is_unbiased_and_its_terms_add_up():
    sched = D.linear_schedule(100)
    eps = D.gaussian_data_eps(sched, 0.0, 0.6)
    one = torch.randint(0, 256, (1, 1, 2, 2), generator=torch.Generator().manual_seed(3))
    images = one.repeat(20_000, 1, 1, 1)
    full = D.elbo_bits_per_dim(eps, sched, images, generator=torch.Generator().manual_seed(1))
    some, terms = D.elbo_bits_per_dim(eps, sched, images, strata=5, return_terms=True,
                                      generator=torch.Generator().manual_seed(2))
    se = math.hypot(full.std().item(), some.std().item()) / math.sqrt(len(images))
    assert abs(full.mean().item() - some.mean().item()) < 4 * se
    assert some.std() > full.std()  # fewer terms, more noise
    assert torch.allclose(terms["prior"] + terms["diffusion"] + terms["decoder"], some)
    assert torch.equal(terms["prior"], terms["prior"][:1].expand_as(terms["prior"]))  # closed form
    floats = D.elbo_bits_per_dim(eps, sched, images[:5].float() / 255, strata=5,
                                         generator=torch.Generator().manual_seed(2))
    ints = D.elbo_bits_per_dim(eps, sched, images[:5], strata=5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(floats, ints)  # k / 255 floats and integer levels are the same data


def test_elbo_refuses_data_that_are_not_8_bit():
    sched, eps = _tiny_chain()
    with pytest.raises(ValueError, match="8-bit grid"):
        D.elbo_bits_per_dim(eps, sched, torch.full((2, 1), 0.5001))
    with pytest.raises(ValueError, match="0, 255"):
        D.elbo_bits_per_dim(eps, sched, torch.full((2, 1), 256))
    with pytest.raises(ValueError, match="at most T - 1"):
        D.elbo_bits_per_dim(eps, sched, torch.zeros(2, 1), strata=4)
