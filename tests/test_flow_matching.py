"""Tests of course_lib.flow_matching against closed forms: Gaussian and mixture data have an exact marginal
velocity, so the loss, the samplers, the conversions and reflow can be checked without a trained network."""

import math

import pytest
import torch

from course_lib import diffusion as D
from course_lib import flow_matching as F
from course_lib import sde as S
from course_lib import unet

MEANS = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [-1.0, -1.5]], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.4, 0.25], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MU, STD = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5  # Gaussian data N(MU, STD^2 I)


def mixture_draw(n, g):
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return MEANS[k] + STDS[k, None] * torch.randn(n, 2, generator=g, dtype=torch.float64), k


def gaussian_flow(x1, t):
    """The exact ODE trajectory of Gaussian data on the linear path: x_t = (1 - t) MU + sqrt(v_t) x_1,
    v_t = (1 - t)^2 STD^2 + t^2 (it stays on the marginal and solves dx/dt = oracle(x, t))."""
    return (1 - t) * MU + math.sqrt((1 - t) ** 2 * STD**2 + t**2) * x1


# --- the oracle ------------------------------------------------------------------------------------

def test_oracle_is_the_conditional_mean_of_the_conditional_velocity():
    """E[eps - x_0 | x_t] by importance sampling: x_0 ~ data, weights N(x_t; (1-t) x_0, t^2)."""
    g = torch.Generator().manual_seed(0)
    x0, _ = mixture_draw(400_000, g)
    oracle = F.mixture_velocity(MEANS, STDS, WEIGHTS)
    for t, x in ((0.3, [0.8, 0.4]), (0.7, [-0.5, -0.2]), (0.95, [0.1, 1.0])):
        x = torch.tensor(x, dtype=torch.float64)
        logw = -((x - (1 - t) * x0) ** 2).sum(1) / (2 * t**2)
        w = torch.softmax(logw, 0)
        eps = (x - (1 - t) * x0) / t  # the noise that puts x_0 at x
        mc = (w[:, None] * (eps - x0)).sum(0)
        assert torch.allclose(oracle(x[None], t)[0], mc, atol=0.02), (t, mc)


def test_oracle_endpoints():
    oracle = F.mixture_velocity(MEANS, STDS, WEIGHTS)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    assert torch.allclose(oracle(x, 1.0), x - mean)  # t = 1: x_1 is the noise, E[x_0] = the data mean
    assert torch.allclose(oracle(x, 0.0), -x)  # t = 0: x_0 = x and E[eps] = 0


def test_oracle_transports_noise_to_the_mixture():
    g = torch.Generator().manual_seed(2)
    n = 20_000
    x, nfe = F.sample(F.mixture_velocity(MEANS, STDS, WEIGHTS), (n, 2), steps=100, method="heun",
                      generator=g, dtype=torch.float64)
    assert nfe == 199
    ref, _ = mixture_draw(400_000, g)
    mean, cov = ref.mean(0), torch.cov(ref.T)
    assert ((x.mean(0) - mean).abs() < 4 * (cov.diagonal() / n).sqrt() + 0.01).all()
    assert ((torch.cov(x.T) - cov).abs() < 0.05).all()
    k = ((x[:, None, :] - MEANS) ** 2).sum(-1).argmin(1)  # the nearest mean (the components are far apart)
    freq = torch.bincount(k, minlength=3).double() / n
    assert ((freq - WEIGHTS).abs() < 4 * (WEIGHTS * (1 - WEIGHTS) / n).sqrt() + 0.005).all(), freq


def test_oracle_on_the_vp_path_gives_chapter_12s_score():
    path = F.VPPath()
    oracle = F.mixture_velocity(MEANS, STDS, WEIGHTS, path)
    score = S.mixture_score(path.sde, MEANS, STDS, WEIGHTS)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64)
    assert torch.allclose(F.convert(path, x, t, oracle(x, t), "velocity", "score"), score(x, t), atol=1e-9)


# --- the loss ----------------------------------------------------------------------------------------

def draws(n, seed):
    g = torch.Generator().manual_seed(seed)
    x0, _ = mixture_draw(n, g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return x0, eps, t, F.LinearPath().sample(x0, t, eps)


def test_the_cfm_minimiser_over_a_family_is_the_oracle():
    """Least squares of eps - x_0 on the features (oracle, x_t, t x_t, 1): coefficients (1, 0, 0, 0)."""
    n = 100_000
    x0, eps, t, xt = draws(n, 4)
    u = F.mixture_velocity(MEANS, STDS, WEIGHTS)(xt, t)
    feats = torch.stack([u, xt, t[:, None] * xt, torch.ones_like(xt)], -1)  # (n, 2, 4)
    target = eps - x0
    a = torch.einsum("ndp,ndq->pq", feats, feats)
    coef = torch.linalg.solve(a, torch.einsum("ndp,nd->p", feats, target))
    resid = target - feats @ coef
    score = torch.einsum("ndp,nd->np", feats, resid)  # per-example terms of the normal equations
    cov = torch.linalg.inv(a) @ (score.T @ score) @ torch.linalg.inv(a)  # sandwich covariance
    se = cov.diagonal().sqrt()
    assert ((coef - torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)).abs() < 4 * se).all(), (coef, se)
    # and the CFM loss is lowest at the oracle among perturbations of it
    loss = lambda field: ((field - target) ** 2).mean()  # noqa: E731
    assert loss(u) < min(loss(u + 0.1), loss(1.1 * u), loss(u + 0.1 * xt))


def test_cfm_and_marginal_fm_have_the_same_gradient():
    """v_W = W phi(x_t, t): grad E||v - (eps - x_0)||^2 = grad E||v - u(x_t, t)||^2 (Lipman et al. 2023)."""
    n = 100_000
    x0, eps, t, xt = draws(n, 5)
    u = F.mixture_velocity(MEANS, STDS, WEIGHTS)(xt, t)
    phi = torch.cat([xt, t[:, None] * xt, torch.ones(n, 1, dtype=torch.float64)], 1)  # (n, 5)
    w = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 0.3
    v = phi @ w.T
    per_cfm = 2 * (v - (eps - x0))[:, :, None] * phi[:, None, :]  # per-example gradients, (n, 2, 5)
    per_mfm = 2 * (v - u)[:, :, None] * phi[:, None, :]
    diff = (per_cfm - per_mfm).flatten(1)
    se = diff.std(0) / math.sqrt(n)
    assert (diff.mean(0).abs() < 4 * se).all()
    assert per_mfm.mean(0).abs().max() > 50 * se.max()  # the gradient itself is far from 0
    # the two losses differ by a constant, E||eps - x_0 - u||^2, which has no gradient
    assert ((v - (eps - x0)) ** 2).sum(1).mean() > ((v - u) ** 2).sum(1).mean()


def test_cfm_loss_with_autograd_matches_the_formula():
    x0, eps, t, xt = draws(64, 7)
    oracle = F.mixture_velocity(MEANS, STDS, WEIGHTS)
    got = F.cfm_loss(oracle, x0, eps=eps, t=t)
    assert torch.allclose(got, ((oracle(xt, t) - (eps - x0)) ** 2).mean())


# --- conversions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [F.LinearPath(), F.VPPath()], ids=["linear", "VP"])
def test_conversions_round_trip(path):
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(2, 7, 3, dtype=torch.float64, generator=g)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    xt = path.sample(x0, t, eps)
    a, b, _, _ = path.coefs(t, x0)
    truth = {"x0": x0, "eps": eps, "score": -eps / b, "velocity": F.conditional_velocity(path, x0, eps, t)}
    for src in F.KINDS:
        for dst in F.KINDS:
            got = F.convert(path, xt, t, truth[src], src, dst)
            assert torch.allclose(got, truth[dst], atol=1e-12), (src, dst)


def test_linear_path_conversion_table():
    xt, v = torch.randn(2, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    t, p = 0.3, F.LinearPath()
    assert torch.allclose(F.convert(p, xt, t, v, "velocity", "x0"), xt - t * v)
    assert torch.allclose(F.convert(p, xt, t, v, "velocity", "eps"), xt + (1 - t) * v)
    score = F.convert(p, xt, t, v, "velocity", "score")
    assert torch.allclose(F.convert(p, xt, t, score, "score", "velocity"), -(xt + t * score) / (1 - t))
    with pytest.raises(ValueError, match="divides by b"):
        F.convert(p, xt, 0.0, v, "x0", "eps")


def test_any_gaussian_path_is_the_linear_path_rescaled():
    path = F.VPPath()
    x0, eps = torch.randn(2, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    for t in (0.1, 0.5, 0.9):
        t_lin, c = F.to_linear(path, t)
        assert torch.allclose(path.sample(x0, t, eps) / c, F.LinearPath().sample(x0, t_lin, eps))


def test_euler_on_the_linear_path_with_a_ddpm_is_ddim():
    sched = D.linear_schedule(100, beta_end=0.2)
    eps_model = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS)
    x_T = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    ddim = D.ddim_sample(eps_model, sched, (50, 2), steps=10, x_T=x_T, dtype=torch.float64)
    times = F.ddpm_times(sched, 10)
    ab = sched.alphas_bar[-1].item()
    x1 = x_T / (math.sqrt(ab) + math.sqrt(1 - ab))  # the linear path's x at t_lin(T - 1)
    x, nfe = F.sample(F.ddpm_velocity(eps_model, sched), (50, 2), times, "euler", x1=x1, dtype=torch.float64)
    assert nfe == 10
    assert torch.allclose(x, ddim, atol=1e-10)


# --- samplers, straightness and reflow ------------------------------------------------------------

def gaussian_oracle():
    return F.mixture_velocity(MU[None], [STD], [1.0])


def test_the_closed_form_trajectory_solves_the_oracle_ode():
    x1 = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    for t in (0.2, 0.6):
        h = 1e-6
        dx = (gaussian_flow(x1, t + h) - gaussian_flow(x1, t - h)) / (2 * h)
        assert torch.allclose(dx, gaussian_oracle()(gaussian_flow(x1, t), t), atol=1e-6)


@pytest.mark.parametrize("method,ratio", [("euler", 2), ("midpoint", 8), ("heun", 4)])
def test_order_of_the_samplers(method, ratio):
    """Halving the step divides the error at t = 0 by 2 (Euler) or 4 (Heun, second order although its last
    step is Euler). The midpoint rule is second order too, but on this ODE its leading error term vanishes
    at t = 0 and the ratio is 8 (on the mixture it tends to 4)."""
    x1 = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    exact = gaussian_flow(x1, 0.0)  # MU + STD x_1
    errs = [(F.sample(gaussian_oracle(), x1.shape, k, method, x1=x1, dtype=torch.float64)[0] - exact)
            .abs().max() for k in (16, 32, 64)]
    ratios = [(errs[0] / errs[1]).item(), (errs[1] / errs[2]).item()]
    assert all(abs(r - ratio) < 0.15 * ratio for r in ratios), ratios


def test_one_euler_step_is_exact_only_on_straight_paths():
    """Gaussian data: x_t = (1-t) MU + sqrt((1-t)^2 s^2 + t^2) x_1 is affine in t only for s = 0, so one Euler
    step from x_1 lands on MU (exact for a point mass, a collapse for s > 0). After reflow the coupling is
    x_0 = MU + s x_1, whose interpolations are straight: then one Euler step is exact."""
    x1 = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    point = F.mixture_velocity(MU[None], [1e-12], [1.0])
    assert torch.allclose(F.sample(point, x1.shape, 1, x1=x1, dtype=torch.float64)[0], MU.expand(500, 2))
    curved = F.sample(gaussian_oracle(), x1.shape, 1, x1=x1, dtype=torch.float64)[0]
    assert torch.allclose(curved, MU.expand(500, 2))  # every sample at the mean: one step is not enough
    noise, data, _ = F.reflow_pairs(gaussian_oracle(), (500, 2), steps=200, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(14))
    assert torch.allclose(data, MU + STD * noise, atol=1e-3)  # the ODE's coupling is the monotone map
    # the marginal velocity of the coupling x_0 = MU + s x_1 on the linear path: (1 - s) x_1 - MU
    rectified = lambda x, t: ((1 - STD) * (x - (1 - t[:, None]) * MU) / ((1 - t[:, None]) * STD + t[:, None])  # noqa: E731
                              - MU)
    one, nfe = F.sample(rectified, x1.shape, 1, x1=x1, dtype=torch.float64)
    assert nfe == 1 and torch.allclose(one, MU + STD * x1)
    _, _, traj = F.sample(gaussian_oracle(), x1.shape, 20, x1=x1, dtype=torch.float64, return_trajectory=True)
    _, _, straight = F.sample(rectified, x1.shape, 20, x1=x1, dtype=torch.float64, return_trajectory=True)
    times = F.time_grid(20)
    assert F.straightness(straight, times).max() < 1e-20
    assert F.straightness(traj, times).mean() > 0.01


def test_nfe_counts_and_guidance():
    v = lambda x, t: -x  # noqa: E731
    assert F.sample(v, (3, 2), 7, "euler")[1] == 7
    assert F.sample(v, (3, 2), 7, "midpoint")[1] == 14
    assert F.sample(v, (3, 2), 7, "heun")[1] == 13
    net = F.VelocityNet(unet.MLPDenoiser(unet.MLPDenoiserConfig(dim=2, hidden=16, depth=1)))
    calls = []

    def conditional(x, t, y):
        calls.append(x.shape[0])
        return net(x, t) + y[:, None].to(x.dtype)

    y = torch.tensor([0, 1, 2])
    guided = F.guided_velocity(conditional, y, 3.0, null_label=3)
    _, nfe = F.sample(guided, (3, 2), 5, "euler")
    assert nfe == 10 and calls == [6] * 5  # one batched call on 2B images per step, 2 NFE per image
    x, t = torch.zeros(3, 2), torch.full((3,), 0.5)
    expected = 3 + 3.0 * (y[:, None] - 3)  # v_null + gamma (v_y - v_null)
    assert torch.allclose(guided(x, t) - net(x, t), expected.float().expand(3, 2), atol=1e-5)
    assert F.guided_velocity(conditional, y, 1.0, null_label=3).nfe_per_call == 1


def test_same_seed_same_samples():
    v = F.mixture_velocity(MEANS, STDS, WEIGHTS)
    a = F.sample(v, (10, 2), 5, "heun", generator=torch.Generator().manual_seed(15))[0]
    b = F.sample(v, (10, 2), 5, "heun", generator=torch.Generator().manual_seed(15))[0]
    assert torch.equal(a, b)


# --- training ----------------------------------------------------------------------------------------

def test_training_steps_reduce_the_loss():
    torch.manual_seed(16)
    model = F.VelocityNet(unet.MLPDenoiser(unet.MLPDenoiserConfig(dim=2, hidden=32, depth=2)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(17)
    data = mixture_draw(256, g)[0].float()
    step = F.make_flow_matching_step(model, opt, lambda i: data, generator=g)
    losses = [step(i)["loss"] for i in range(150)]
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    noise, pairs, _ = F.reflow_pairs(model, (64, 2), steps=4, generator=g)
    distil = F.make_flow_matching_step(model, opt, lambda i: (pairs, noise), coupled=True, times=[1.0],
                                       generator=g)
    with torch.no_grad():  # the one-step student's error x_1 - v(x_1, 1) - x_0, before the first update
        expected = ((noise - model(noise, torch.ones(64)) - pairs) ** 2).mean().item()
    first = distil(0)["loss"]
    assert first == pytest.approx(expected, rel=1e-5)
    for i in range(1, 40):
        last = distil(i)["loss"]
    assert last < first


def test_velocity_net_feeds_the_unet_scaled_time():
    net = unet.UNet(unet.UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2),
                                    attention_resolutions=()))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.25, 1.0])
    assert torch.equal(F.VelocityNet(net)(x, t), net(x, 1000 * t))


# --- bad inputs ----------------------------------------------------------------------------------------

def test_bad_inputs():
    v = F.mixture_velocity(MEANS, STDS, WEIGHTS)
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        F.cfm_loss(v, x0, t=torch.full((4,), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        F.cfm_loss(v, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="eps must have"):
        F.cfm_loss(v, x0, eps=torch.randn(4, 3))
    with pytest.raises(ValueError, match="positive integer"):
        F.sample(v, (4, 2), 0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        F.sample(v, (4, 2), [0.5, 0.8])
    with pytest.raises(ValueError, match="method"):
        F.sample(v, (4, 2), 3, "rk4")
    with pytest.raises(ValueError, match="x_T must have shape"):
        F.sample(v, (4, 2), 3, x1=torch.randn(5, 2))
    with pytest.raises(ValueError, match="src must be"):
        F.convert(F.LinearPath(), x0, 0.5, x0, "noise", "x0")
    with pytest.raises(ValueError, match="stds must be positive"):
        F.mixture_velocity(MEANS, [0.1, 0.0, 0.2], WEIGHTS)
    with pytest.raises(ValueError, match="class-conditional"):
        F.guided_velocity(v, torch.tensor([0]), 2.0)
    with pytest.raises(ValueError, match="one time per"):
        F.straightness(torch.zeros(3, 4, 2), [1.0, 0.0])


def test_ode_log_likelihood_of_gaussian_data_matches_the_closed_form():
    # the exact velocity of N(MU, STD^2 I) data carries it to N(0, I): log p_0 is the Gaussian's log density
    v = F.mixture_velocity(MU[None], [STD], [1.0])
    x = MU + STD * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = torch.distributions.Normal(MU, STD).log_prob(x).sum(1)
    ll = F.ode_log_likelihood(v, x, steps=200)
    assert ll.dtype == torch.float64 and torch.allclose(ll, exact, atol=2e-3)
    assert torch.allclose(F.ode_log_likelihood(v, x, steps=200, rho=1.0), exact, atol=2e-3)  # uniform steps
    # Hutchinson's divergence is unbiased: the mean over probe draws approaches the exact value
    g = torch.Generator().manual_seed(1)
    hutch = torch.stack([F.ode_log_likelihood(v, x[:8], steps=50, n_probes=1, generator=g)
                         for _ in range(200)])
    assert torch.allclose(hutch.mean(0), F.ode_log_likelihood(v, x[:8], steps=50), atol=0.1)


def test_ode_bits_per_dim_follows_the_dequantisation_protocol():
    flat = F.mixture_velocity(torch.zeros(1, 4, dtype=torch.float64), [0.5], [1.0])

    def v(x, t):  # the mixture's field on 2 x 2 "images"
        return flat(x.flatten(1), t).view_as(x)

    images = torch.randint(0, 256, (3, 1, 2, 2)).double() / 255
    bpd = F.ode_bits_per_dim(v, images, steps=20, n_probes=None, generator=torch.Generator().manual_seed(3))
    from course_lib import flows

    y = flows.dequantize(images, torch.Generator().manual_seed(3))
    ll = F.ode_log_likelihood(v, 2 * y - 1, steps=20)
    assert torch.allclose(bpd, -(ll + 4 * math.log(2) - 4 * math.log(256)) / (4 * math.log(2)))
    with pytest.raises(TypeError, match="callable"):
        F.ode_log_likelihood("v", images.flatten(1))
    with pytest.raises(ValueError, match="steps"):
        F.ode_log_likelihood(v, images.flatten(1), steps=0)
    with pytest.raises(ValueError, match="rho"):
        F.ode_log_likelihood(v, images.flatten(1), rho=0.0)
