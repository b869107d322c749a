"""Tests of course_lib.sde against closed forms: Gaussian and mixture data have exact noised scores,
so samplers, the probability-flow ODE and its likelihood can be checked without a trained network."""

import math

import pytest
import torch
from torch import distributions as dist

from course_lib import diffusion as D
from course_lib import flows, pretrained
from course_lib import sde as S

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
STD = 0.6  # data N(MU, STD^2 I)
MEANS = torch.tensor([[1.5, 0.0], [-1.0, 1.0]], dtype=torch.float64)
STDS, WEIGHTS = torch.tensor([0.3, 0.5], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)


def gaussian_score(sde):
    return S.mixture_score(sde, MU[None], [STD], [1.0])


def noised_gaussian(sde, t):
    """The marginal of N(MU, STD^2 I) at time t: N(m MU, (m^2 STD^2 + s^2) I)."""
    m, s = sde.marginal(t)
    return dist.Independent(dist.Normal(m * MU, math.sqrt(m**2 * STD**2 + s**2)), 1)


def noised_mixture(m, s):
    comp = dist.Independent(dist.Normal(m * MEANS, (m**2 * STDS**2 + s**2).sqrt()[:, None].expand(2, 2)), 1)
    return dist.MixtureSameFamily(dist.Categorical(WEIGHTS), comp)


def exact_map(sde, x_T):
    """The probability-flow ODE of Gaussian data from t = 1 to 0: y - MU scales by sqrt(s^2 + sigma^2)."""
    m1, sigma1 = sde.marginal(1.0)[0], sde.sigma(1.0)
    return MU + (x_T / m1 - MU) * STD / math.sqrt(STD**2 + sigma1**2)


def moments_ok(x, mean, var, bias=0.0):
    """Mean and variance per coordinate within 4 Monte Carlo standard errors (+ a stated bias)."""
    n = x.shape[0]
    assert ((x.mean(0) - mean).abs() < 4 * math.sqrt(var / n) + bias).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() < 4 * var * math.sqrt(2 / n) + bias).all(), (x.var(0), var)


# --- SDEs --------------------------------------------------------------------------------------

def test_vp_sde_is_the_limit_of_chapter_8s_chain():
    sched = D.linear_schedule(1000)
    vp = S.VPSDE.from_schedule(sched)
    assert (vp.beta_min, vp.beta_max) == pytest.approx((0.1, 20.0))
    m, _ = vp.marginal(torch.arange(1, 1001, dtype=torch.float64) / 1000)  # t = (n + 1) / T
    assert (m**2 - sched.alphas_bar).abs().max() < 1e-3
    with pytest.raises(ValueError, match="linear schedule"):
        S.VPSDE.from_schedule(D.cosine_schedule(100))


@pytest.mark.parametrize("sde", [S.VESDE(0.01, 20.0), S.VPSDE(0.1, 20.0)], ids=["VE", "VP"])
def test_marginals_solve_the_moment_equations_of_the_sde(sde):
    """dm/dt = f m and d(s^2)/dt = 2 f s^2 + g^2 (the SDE's mean and variance), by finite differences;
    sigma(0) = 0 (t = 0 is the data) and t_of_sigma inverts sigma."""
    t, h = torch.linspace(0.05, 0.95, 7, dtype=torch.float64), 1e-6
    (m1, s1), (m0, s0), (m, s) = sde.marginal(t + h), sde.marginal(t - h), sde.marginal(t)
    f = sde.drift(torch.ones(7, 1, dtype=torch.float64), t)[:, 0]
    assert torch.allclose((m1 - m0) / (2 * h), f * m, rtol=1e-5)
    assert torch.allclose((s1**2 - s0**2) / (2 * h), 2 * f * s**2 + sde.diffusion(t) ** 2, rtol=1e-5)
    assert sde.marginal(0.0) == (1.0, 0.0)
    for tt in (1e-4, 0.3, 1.0):
        assert sde.t_of_sigma(sde.sigma(tt)) == pytest.approx(tt, rel=1e-9)


@pytest.mark.parametrize("sde", [S.VESDE(0.01, 20.0), S.VPSDE()], ids=["VE", "VP"])
def test_forward_euler_maruyama_reaches_the_marginal(sde):
    x0 = torch.full((20_000, 2), 1.5, dtype=torch.float64)
    path = S.forward_sde(sde, x0, steps=200, generator=torch.Generator().manual_seed(20))
    assert path.shape == (201, 20_000, 2) and torch.equal(path[0], x0)
    for i in (40, 200):
        m, s = sde.marginal(i / 200)
        moments_ok(path[i], 1.5 * m, s**2, bias=0.02 * s**2)  # Euler-Maruyama: O(1/K) bias


def test_mixture_score_is_the_gradient_of_the_noised_density():
    vp = S.VPSDE()
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    t = torch.tensor([0.0, 0.01, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    m, s = vp.marginal(t)
    logp = torch.stack([noised_mixture(m[i], s[i]).log_prob(x[i]) for i in range(6)])
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(S.mixture_score(vp, MEANS, STDS, WEIGHTS)(x.detach(), t), grad, atol=1e-10)


@pytest.mark.parametrize("sde", [S.VESDE(0.01, 20.0), S.VPSDE()], ids=["VE", "VP"])
def test_conditional_score_rescales_a_noise_conditional_net(sde):
    """A net that is exact for y = x_0 + sigma z gives the exact score of x_t = m y."""
    def net(y, sigma):
        return -(y - MU) / (STD**2 + sigma[:, None] ** 2)
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.8, 1.0], dtype=torch.float64)
    assert torch.allclose(S.conditional_score(net, sde)(x, t), gaussian_score(sde)(x, t), atol=1e-12)


# --- score matching ----------------------------------------------------------------------------

def newton_minimiser(loss_of_theta, n_params):
    """The minimiser of a quadratic loss of theta, by one Newton step from 0 (autograd Hessian)."""
    theta = torch.zeros(n_params, dtype=torch.float64)
    grad = torch.autograd.functional.jacobian(loss_of_theta, theta)
    hess = torch.autograd.functional.hessian(loss_of_theta, theta)
    return -torch.linalg.solve(hess, grad)


def affine(theta):
    return lambda x, *_: x @ theta[:4].reshape(2, 2).T + theta[4:]


def test_dsm_minimiser_is_the_score_of_the_noised_data():
    """For an affine model, DSM is quadratic; its minimiser is -(x - mu) / (s^2 + sigma^2)."""
    n, sigma = 100_000, 0.5
    x0 = MU + STD * torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = newton_minimiser(
        lambda th: S.dsm_loss(affine(th), x0, [sigma], generator=torch.Generator().manual_seed(2)), 6)
    v = STD**2 + sigma**2
    # regression coefficient standard error about sqrt(1 / (sigma^2 n v)) = 0.005; tolerance 6 of them
    assert torch.allclose(theta[:4].reshape(2, 2), -torch.eye(2, dtype=torch.float64) / v, atol=0.03)
    assert torch.allclose(theta[4:], MU / v, atol=0.03)


def test_sliced_score_matching_minimiser_is_the_data_score():
    n = 50_000
    x = MU + STD * torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    theta = newton_minimiser(
        lambda th: S.sliced_score_loss(affine(th), x, generator=torch.Generator().manual_seed(4)), 6)
    assert torch.allclose(theta[:4].reshape(2, 2), -torch.eye(2, dtype=torch.float64) / STD**2, atol=0.1)
    assert torch.allclose(theta[4:], MU / STD**2, atol=0.1)


def test_score_mlp_learns_by_dsm():
    torch.manual_seed(0)
    net = S.ScoreMLP(hidden=32, depth=2)
    sigmas = S.geometric_sigmas(2.0, 0.1, 5)
    x0 = MEANS[torch.randint(2, (512,))].float() + 0.1 * torch.randn(512, 2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        loss = S.dsm_loss(net, x0, sigmas, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the loss's floor is E||sigma grad log p_sigma + z||^2 / 2 > 0; it must fall well below the start
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:5]) / 5
    assert net(x0[:3], torch.tensor(0.5)).shape == (3, 2)


# --- samplers ----------------------------------------------------------------------------------

def test_annealed_langevin_reproduces_gaussian_moments():
    sigmas = S.geometric_sigmas(5.0, 0.05, 10)

    def net(x, sigma):
        return -(x - MU) / (STD**2 + sigma[:, None] ** 2)
    g = torch.Generator().manual_seed(5)
    x, nfe = S.annealed_langevin(net, sigmas, (20_000, 2), n_steps=100, step_lr=3e-3, generator=g,
                                 dtype=torch.float64)
    assert nfe == 1000
    # Langevin's step biases the variance by a factor 1 / (1 - alpha / (4 v)), about 0.2% here
    moments_ok(x, MU, STD**2 + 0.05**2, bias=0.01)


def test_reverse_sde_and_pc_reproduce_gaussian_moments():
    vp, n = S.VPSDE(), 20_000
    x, nfe = S.sde_sample(gaussian_score(vp), vp, (n, 2), steps=500, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(6))
    assert nfe == 500
    moments_ok(x, MU, STD**2, bias=0.02)  # Euler-Maruyama's O(step) bias: about 1% of the variance here
    x, nfe = S.sde_sample(gaussian_score(vp), vp, (n, 2), steps=200, corrector_steps=1, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(7))
    assert nfe == 400
    moments_ok(x, MU, STD**2, bias=0.03)
    # chapter 8's eps-model on its schedule, every index once
    sched = D.linear_schedule(1000)
    x, nfe = S.sde_sample(D.gaussian_data_eps(sched, MU, STD), sched, (n, 2), steps=1000, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(8))
    assert nfe == 1000
    moments_ok(x, MU, STD**2, bias=0.02)


@pytest.mark.parametrize("sde", [S.VESDE(0.01, 20.0), S.VPSDE()], ids=["VE", "VP"])
def test_probability_flow_ode_transports_the_noised_data_to_the_data(sde):
    torch.manual_seed(0)
    """From the noised data's marginal at t = 1 the ODE ends at the data's (moments), and from any x_T
    at the closed-form map; from the prior instead, the mean is off by MU STD / sigma(1) (prior mismatch)."""
    n = 20_000
    x_T = noised_gaussian(sde, 1.0).sample((n,))
    x, nfe = S.ode_sample(gaussian_score(sde), sde, (n, 2), steps=100, x_T=x_T, dtype=torch.float64)
    assert nfe == 199
    assert (x - exact_map(sde, x_T)).abs().max() < 5e-3  # the closed-form map, point by point
    moments_ok(x, MU, STD**2, bias=2e-3)
    x = S.ode_sample(gaussian_score(sde), sde, (n, 2), steps=30, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(9))[0]
    moments_ok(x, MU * (1 - STD / math.sqrt(STD**2 + sde.sigma(1.0) ** 2)), STD**2, bias=0.02)


def test_heun_is_second_order_and_euler_first():
    """On Gaussian data the ODE is linear in y; its error falls 4x (Heun) or 2x (Euler) per halved step."""
    ve = S.VESDE(0.01, 5.0)
    x_T = 5.0 * torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    exact = exact_map(ve, x_T)
    for method, ratio in (("heun", 4), ("euler", 2)):
        errors = [(S.ode_sample(gaussian_score(ve), ve, (50, 2), steps=k, method=method, rho=1.0, x_T=x_T,
                                dtype=torch.float64)[0] - exact).abs().max().item() for k in (16, 32, 64)]
        for coarse, fine in zip(errors, errors[1:], strict=False):
            assert ratio * 0.8 < coarse / fine < ratio * 1.25, (method, errors)


def test_ddim_is_exactly_euler_in_y_and_sigma():
    """ode_sample(method='euler') on DDIM's times equals ddim_sample (eta = 0), to rounding."""
    sched = D.linear_schedule(1000)
    eps = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS)
    x_T = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    for k in (1, 7, 50):
        times = [(n + 1) / 1000 for n in D.ddim_timesteps(1000, k)]
        x, nfe = S.ode_sample(eps, sched, (200, 2), times, method="euler", x_T=x_T, dtype=torch.float64)
        assert nfe == k
        assert torch.allclose(x, D.ddim_sample(eps, sched, (200, 2), steps=k, x_T=x_T, dtype=torch.float64),
                              atol=1e-10)
    x, _ = S.ode_sample(eps, sched, (200, 2), 7, method="euler", rho=None, x_T=x_T, dtype=torch.float64)
    assert torch.allclose(x, D.ddim_sample(eps, sched, (200, 2), steps=7, x_T=x_T, dtype=torch.float64),
                          atol=1e-10)  # uniform times on a schedule are DDIM's
    # with x0-hat clamped (the means lie outside [-1, 1], so the clamp acts)
    x, _ = S.ode_sample(eps, sched, (200, 2), 7, method="euler", rho=None, x_T=x_T, dtype=torch.float64,
                        clip_x0=1.0)
    ddim = D.ddim_sample(eps, sched, (200, 2), steps=7, x_T=x_T, dtype=torch.float64, clip_x0=1.0)
    assert torch.allclose(x, ddim, atol=1e-10) and x.abs().max() <= 1 + 1e-12


def test_ddim_and_the_euler_step_in_x_and_t_agree_to_first_order():
    """One step from t to t - h: DDIM (in x) minus Euler on dx/dt = f x - g^2 score / 2 is O(h^2)."""
    vp = S.VPSDE()
    score = gaussian_score(vp)
    x = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    t = 0.5
    m, s = vp.marginal(t)
    eps = -s * score(x, torch.tensor(t))
    gaps = []
    for h in (0.04, 0.02, 0.01):
        m1, s1 = vp.marginal(t - h)
        ddim = m1 * (x - s * eps) / m + s1 * eps
        euler = x - h * (vp.drift(x, t) - 0.5 * vp.diffusion(t) ** 2 * score(x, torch.tensor(t)))
        gaps.append((ddim - euler).abs().max().item())
    assert 3.2 < gaps[0] / gaps[1] < 5 and 3.2 < gaps[1] / gaps[2] < 5, gaps


def test_nfe_counts_and_the_schedule_grid():
    sched = D.linear_schedule(100, 1e-3, 0.2)
    calls = []

    def eps(x, n):
        calls.append(n[0].item())
        return 0.1 * x
    assert S.ode_sample(eps, sched, (2, 3), steps=8)[1] == 15 == len(calls)
    assert calls[0] == 99 and calls[-1] == 0 and all(isinstance(c, int) for c in calls)
    calls.clear()
    assert S.ode_sample(eps, sched, (2, 3), steps=8, method="euler")[1] == 8 == len(calls)
    calls.clear()
    assert S.sde_sample(eps, sched, (2, 3), steps=10, corrector_steps=2)[1] == 30 == len(calls)
    assert S.ode_sample(eps, sched, (2, 3), steps=1)[1] == 1
    x = torch.randn(2, 3)
    assert S.ode_log_likelihood(eps, sched, x, steps=6, return_nfe=True)[1] == 2 * (len(
        S._Model(eps, sched).times(6, 0.0, 7.0)) - 1)
    assert S.annealed_langevin(lambda x, s: -x, [2.0, 1.0], (4, 2), n_steps=3, denoise=True)[1] == 7


def test_sigma_schedule_and_the_snapped_grid_of_the_ddpm():
    sig = S.sigma_schedule(0.002, 80.0, 18)
    assert sig[0] == pytest.approx(80.0) and sig[-1] == pytest.approx(0.002) and (sig.diff() < 0).all()
    uniform = torch.linspace(3.0, 1.0, 5, dtype=torch.float64)
    assert torch.allclose(S.sigma_schedule(1.0, 3.0, 5, rho=1.0), uniform)
    # on chapter 8's schedule (T = 1000) the rho = 7 times are distinct indices for these step counts
    sched = D.linear_schedule(1000)
    for k in (5, 10, 18, 50):
        times = S._Model(D.gaussian_data_eps(sched, 0.0, 1.0), sched).times(k, 0.0, 7.0)
        idx = [t * 1000 - 1 for t in times]
        assert len(times) == k and idx[0] == 999 and idx[-1] == pytest.approx(0, abs=1e-9)
        assert all(abs(i - round(i)) < 1e-9 for i in idx)


def test_same_seed_same_samples():
    vp = S.VPSDE()
    score = gaussian_score(vp)
    for sampler in (lambda g: S.sde_sample(score, vp, (5, 2), 20, corrector_steps=1, generator=g),
                    lambda g: S.ode_sample(gaussian_score(vp), vp, (5, 2), 5, generator=g),
                    lambda g: S.annealed_langevin(lambda x, s: -x, [2.0, 1.0], (5, 2), 5, generator=g)):
        a, b = sampler(torch.Generator().manual_seed(0))[0], sampler(torch.Generator().manual_seed(0))[0]
        assert torch.equal(a, b) and not torch.equal(a, sampler(torch.Generator().manual_seed(1))[0])


# --- likelihood --------------------------------------------------------------------------------

@pytest.mark.parametrize("sde", [S.VESDE(0.01, 20.0), S.VPSDE()], ids=["VE", "VP"])
def test_ode_likelihood_equals_the_closed_form_on_gaussian_data(sde):
    x = MU + 1.5 * torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    t_min = 1e-5
    want = noised_gaussian(sde, t_min).log_prob(x)
    exact_prior = noised_gaussian(sde, 1.0).log_prob
    heun = S.ode_log_likelihood(gaussian_score(sde), sde, x, steps=240, t_min=t_min,
                                prior_log_prob=exact_prior)
    rk45 = S.ode_log_likelihood(gaussian_score(sde), sde, x, method="rk45", rtol=1e-7, atol=1e-7, t_min=t_min,
                                prior_log_prob=exact_prior)
    assert (heun - want).abs().max() < 0.02  # second order: 0.19 nats at 60 steps, 0.012 at 240 (VP)
    assert (rk45 - want).abs().max() < 1e-4


def test_ode_likelihood_on_a_2d_mixture_exact_and_hutchinson():
    vp, t_min = S.VPSDE(), 1e-5
    score = S.mixture_score(vp, MEANS, STDS, WEIGHTS)
    exact_prior = noised_mixture(*vp.marginal(1.0)).log_prob
    x = torch.tensor([[1.5, 0.1], [-1.0, 0.8], [0.2, 0.5], [3.0, -2.0]], dtype=torch.float64)
    want = noised_mixture(*vp.marginal(t_min)).log_prob(x)
    exact = S.ode_log_likelihood(score, vp, x, method="rk45", rtol=1e-7, atol=1e-7, t_min=t_min,
                                 prior_log_prob=exact_prior)
    assert (exact - want).abs().max() < 1e-3
    # Hutchinson, one probe per evaluation: unbiased, so the mean over 300 copies of a point is within
    # 4 standard errors of the exact value
    xs = x[2:3].expand(300, 2)
    hutch = S.ode_log_likelihood(score, vp, xs, steps=40, t_min=t_min, n_probes=1, prior_log_prob=exact_prior,
                                 generator=torch.Generator().manual_seed(14))
    assert hutch.std() > 0 and abs(hutch.mean() - want[2]) < 4 * hutch.std() / math.sqrt(300) + 2e-3
    fixed = S.ode_log_likelihood(score, vp, xs[:50], method="rk45", t_min=t_min, n_probes=1,
                                 prior_log_prob=exact_prior, generator=torch.Generator().manual_seed(15))
    assert abs(fixed.mean() - want[2]) < 4 * fixed.std() / math.sqrt(50) + 2e-3


def test_ode_likelihood_of_chapter_8s_eps_model_on_its_schedule():
    sched = D.linear_schedule(1000)
    eps = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS)
    ab = sched.alphas_bar
    x = torch.tensor([[1.5, 0.1], [-1.0, 0.8], [0.2, 0.5]], dtype=torch.float64)
    want = noised_mixture(ab[0].sqrt(), (1 - ab[0]).sqrt()).log_prob(x)  # at t_min = 1 / T
    got = S.ode_log_likelihood(eps, sched, x, steps=240,
                               prior_log_prob=noised_mixture(ab[-1].sqrt(), (1 - ab[-1]).sqrt()).log_prob)
    assert (got - want).abs().max() < 5e-3  # 0.0015 measured; 0.025 at 60 steps


def test_bits_per_dim_protocol():
    """bits/dim = -log p_X(2 y - 1) / (D ln 2) + 7 with y the dequantised image, seed for seed."""
    vp = S.VPSDE()
    images = torch.randint(0, 256, (3, 1, 2, 2), generator=torch.Generator().manual_seed(16))

    def score(x, t):
        return -x  # N(0, I) data: a valid density for the protocol's arithmetic
    bpd = S.ode_bits_per_dim(score, vp, images, steps=5, generator=torch.Generator().manual_seed(17))
    x = 2 * flows.dequantize(images, torch.Generator().manual_seed(17)) - 1
    nats = S.ode_log_likelihood(score, vp, x, steps=5, generator=torch.Generator().manual_seed(17))
    assert torch.allclose(bpd, -nats / (4 * math.log(2)) + 7, atol=1e-6)


# --- the shipped network and bad inputs ----------------------------------------------------------

def test_the_shipped_ddpm_architecture_runs_unchanged_and_refuses_another_schedule():
    net = pretrained.build(pretrained.info("ddpm_mnist"))  # random weights: a smoke test of the shapes
    sched = D.linear_schedule(1000)
    x, nfe = S.ode_sample(net, sched, (1, 1, 28, 28), steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 28, 28) and nfe == 3 and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="trained with"):
        S.sde_sample(net, D.linear_schedule(100), (1, 1, 28, 28), steps=2)


def test_bad_inputs_raise_with_a_hint():
    vp, score = S.VPSDE(), gaussian_score(S.VPSDE())
    with pytest.raises(ValueError, match=r"\[0, 1\].*\(n \+ 1\) / T"):
        vp.marginal(1.5)
    with pytest.raises(ValueError, match="t must lie"):
        vp.drift(torch.zeros(2, 2), torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.annealed_langevin(score, [0.1, 1.0], (4, 2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.dsm_loss(score, torch.zeros(4, 2), [1.0, 1.0])
    with pytest.raises(ValueError, match="above sigma_min|> sigma_min"):
        S.geometric_sigmas(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="NaN"):
        S.ode_log_likelihood(score, vp, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        S.ode_sample(score, vp, (4, 2), x_T=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="at least 2 dimension"):
        S.ode_log_likelihood(score, vp, torch.zeros(4))
    with pytest.raises(ValueError, match="strictly decreasing list of times"):
        S.ode_sample(score, vp, (4, 2), [0.5, 0.7])
    with pytest.raises(ValueError, match=r"\(n \+ 1\) / T"):
        S.ode_sample(D.gaussian_data_eps(D.linear_schedule(10, 0.01, 0.3), 0.0, 1.0),
                     D.linear_schedule(10, 0.01, 0.3), (4, 2), [0.95, 0.5])
    with pytest.raises(ValueError, match="'euler' or 'heun'"):
        S.ode_sample(score, vp, (4, 2), method="rk4")
    with pytest.raises(TypeError, match="process must be an SDE"):
        S.ode_sample(score, "vp", (4, 2))
    with pytest.raises(ValueError, match="t_min"):
        S.sde_sample(score, vp, (4, 2), t_min=0.0)


def test_mixture_score_accepts_float32_weights():
    """Weights given as float32 (sum 1 only to float32 precision) are renormalised, not refused."""
    ve = S.VESDE()
    score = S.mixture_score(ve, torch.tensor([[0.0], [3.0]]), torch.tensor([0.5, 0.5]),
                            torch.tensor([0.2, 0.8], dtype=torch.float32))
    assert torch.isfinite(score(torch.zeros(3, 1), torch.full((3,), 0.5))).all()


def test_trajectories_start_at_the_noise_and_end_at_the_samples():
    vp = S.VPSDE()
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(4))
    for sampler in (lambda: S.sde_sample(gaussian_score(vp), vp, (6, 2), 12, x_T=x_T, return_trajectory=True),
                    lambda: S.ode_sample(gaussian_score(vp), vp, (6, 2), 6, x_T=x_T, return_trajectory=True)):
        x, nfe, path = sampler()
        assert path.shape[1:] == (6, 2) and torch.equal(path[0], x_T) and torch.equal(path[-1], x)
    assert S.sde_sample(gaussian_score(vp), vp, (6, 2), 12, return_trajectory=True)[2].shape == (13, 6, 2)
