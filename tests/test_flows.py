"""Tests of course_lib.flows: exact inverses, log-dets against autograd Jacobians, a 2-D density that
integrates to 1, the dequantisation bound against a closed-form discrete likelihood, sampling, errors."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from course_lib import flows, pretrained, train


def perturb(module, std=0.1, seed=0):
    """Small random weights everywhere (new couplings start as the identity: too easy to test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def jac_logdet(f, x):
    """log |det df/dx| for one example x (1, ...), by autograd."""
    d = x[0].numel()
    jac = torch.autograd.functional.jacobian(lambda v: f(v.view_as(x)).flatten(), x.flatten())
    return torch.linalg.slogdet(jac.reshape(d, d))[1]


def tiny_image_flow(shape=(1, 4, 4), stages=3, additive=False):
    cfg = flows.RealNVPConfig(image_shape=shape, hidden=(4,) * stages, couplings=(2,) * stages,
                              additive=additive)
    return flows.RealNVPImage(cfg)


COUPLINGS = {
    "points": lambda: flows.AffineCoupling(torch.tensor([1.0, 0.0, 1.0]), hidden=8),
    "points-additive": lambda: flows.AffineCoupling(torch.tensor([0.0, 1.0]), hidden=8, additive=True),
    "checkerboard": lambda: flows.AffineCoupling(flows.checkerboard_mask(1, 4, 4, 1), hidden=4),
    "channel": lambda: flows.AffineCoupling(flows.channel_mask(4, 0), hidden=4),
}
SHAPES = {"points": (3,), "points-additive": (2,), "checkerboard": (1, 4, 4), "channel": (4, 2, 2)}


@pytest.mark.parametrize("kind", list(COUPLINGS))
def test_coupling_inverse_and_logdet(kind):
    torch.manual_seed(0)
    layer = perturb(COUPLINGS[kind](), std=0.3)
    x = torch.randn(5, *SHAPES[kind])
    z, logdet = layer(x)
    assert (layer.inverse(z) - x).abs().max() < 1e-5  # float32
    assert not torch.allclose(z, x)  # the layer does something
    mask = layer.mask.expand_as(x[0])
    assert torch.equal(z[:, mask == 1], x[:, mask == 1])  # the kept part passes through
    layer = layer.double()
    x1 = x[:1].double()
    assert torch.allclose(layer(x1)[1][0], jac_logdet(lambda v: layer(v)[0], x1), atol=1e-10)
    if "additive" in kind:
        assert torch.equal(logdet, torch.zeros(5))


def test_squeeze_is_an_exact_permutation():
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float64).view(2, 2, 4, 6)
    y = flows.squeeze(x)
    assert y.shape == (2, 8, 2, 3)
    assert torch.equal(flows.unsqueeze(y), x)
    assert y[0, 4 * 1 + 2 * 1 + 0, 1, 2] == x[0, 1, 3, 4]  # channel 4c + 2di + dj holds (2i+di, 2j+dj)
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    z, logdet = flows.Squeeze()(x)
    assert torch.equal(z, y) and torch.equal(logdet, torch.zeros(2))
    with pytest.raises(ValueError, match="even height"):
        flows.squeeze(torch.zeros(1, 1, 3, 4))


@pytest.mark.parametrize("which", ["2d", "image", "image-additive"])
def test_whole_flow_inverse_and_logdet(which):
    torch.manual_seed(1)
    if which == "2d":
        flow, x = flows.RealNVP2D(n_couplings=6, hidden=8), torch.randn(7, 2)
    else:
        flow, x = tiny_image_flow(additive=which.endswith("additive")), torch.randn(3, 1, 4, 4)
    perturb(flow, std=0.2)
    z, _ = flow(x)
    assert z.shape == x.shape
    assert (flow.inverse(z) - x).abs().max() < 1e-5
    flow = flow.double()
    x1 = x[:1].double()
    expected = jac_logdet(lambda v: flow(v)[0], x1)
    assert torch.allclose(flow(x1)[1][0], expected, atol=1e-9)
    if which == "image-additive":
        assert abs(expected.item()) < 1e-9


def test_logit_transform_inverse_and_logdet():
    y = torch.rand(4, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y[0, 0, 0, 0], y[0, 0, 0, 1] = 0.0, 1.0  # the ends stay finite thanks to alpha
    s, logdet = flows.logit_transform(y, alpha=0.05)
    assert torch.isfinite(s).all()
    assert torch.allclose(flows.logit_inverse(s, 0.05), y, atol=1e-12)
    assert (flows.logit_inverse(flows.logit_transform(y.float())[0]) - y.float()).abs().max() < 1e-5
    for i in range(2):
        auto = jac_logdet(lambda v: flows.logit_transform(v, 0.05)[0], y[i: i + 1])
        assert torch.allclose(logdet[i], auto, atol=1e-10)
    p = 0.05 + 0.9 * y  # the closed form of the docstring
    direct = (math.log(0.9) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    assert torch.allclose(logdet, direct, atol=1e-10)


def test_2d_density_integrates_to_one():
    flow = perturb(flows.RealNVP2D(n_couplings=4, hidden=16), std=0.2, seed=3).double()
    lim, n = 12.0, 481  # midpoint-like sum over a box that holds all but ~1e-6 of the mass
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        p = flows.log_prob(flow, torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    mass = p.sum().item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1) < 0.01, mass
    z, _ = flow(torch.stack([xx.flatten(), yy.flatten()], 1))
    assert z.abs().max() > 5  # the box reaches into the base's tails: the test is not vacuous


def test_dequantisation_bound_against_closed_form():
    """An identity flow (new couplings) makes the pixels independent with s_i ~ N(0, 1), so the
    discrete likelihood is exact: P(k_i) = Phi(s((k_i + 1) / 256)) - Phi(s(k_i / 256))."""
    flow = tiny_image_flow(shape=(1, 2, 2), stages=2).double()
    alpha = flow.config.alpha
    k = torch.tensor([[0, 37, 128, 255]], dtype=torch.float64)
    x = (k / 255).view(1, 1, 2, 2)

    def s_of(y):
        return special.logit(alpha + (1 - 2 * alpha) * y)

    kn = k.numpy()[0]
    exact = np.log(stats.norm.cdf(s_of((kn + 1) / 256)) - stats.norm.cdf(s_of(kn / 256)))
    # E_u[log p_Y(y)] per pixel by Gauss-Legendre quadrature over u in [0, 1]
    nodes, weights = np.polynomial.legendre.leggauss(40)
    u = torch.tensor((nodes + 1) / 2)
    y = (k[0, :, None] + u[None, :]) / 256  # (4 pixels, 40 nodes)
    s, _ = flows.logit_transform(y.reshape(-1, 1), alpha)
    logdet = (math.log(1 - 2 * alpha) + torch.nn.functional.softplus(s) + torch.nn.functional.softplus(-s))
    log_py = (torch.distributions.Normal(0.0, 1.0).log_prob(s) + logdet).view(4, 40).numpy()
    bound = (log_py * weights / 2).sum(1) - math.log(256)
    assert (bound <= exact).all()  # Jensen, pixel by pixel
    assert (exact - bound < 1e-3).all()  # and tight for a smooth density on bins this narrow
    g = torch.Generator().manual_seed(0)
    mc = flows.image_log_prob_bound(flow, x, generator=g, n_samples=400)
    assert abs(mc.item() - bound.sum()) < 0.02
    # integers k give the same numbers as floats k / 255 with the same seed
    levels = k.view(1, 1, 2, 2).to(torch.uint8)
    again = flows.image_log_prob_bound(flow, levels, torch.Generator().manual_seed(0), n_samples=400)
    assert torch.allclose(mc, again)
    bpd = flows.bits_per_dim(-mc, 4)
    assert torch.allclose(bpd, -mc / (4 * math.log(2)))


def test_dequantize_stays_in_the_bin():
    k = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    y = flows.dequantize(k, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.min() >= 0 and y.max() < 1
    assert torch.equal(torch.floor(y.double() * 256), k.double())
    y2 = flows.dequantize(k.float() / 255, torch.Generator().manual_seed(0))
    assert torch.allclose(y, y2)


def test_bits_per_dim_numbers():
    assert flows.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert flows.bits_per_dim(1000.0, 784) == pytest.approx(1000 / (784 * math.log(2)))
    # a uniform model over 8-bit levels costs exactly 8 bits per dimension
    assert flows.bits_per_dim(784 * math.log(256), 784) == pytest.approx(8.0)


def test_same_seed_same_samples_and_temperature():
    flow = perturb(flows.RealNVP2D(n_couplings=4, hidden=8), std=0.3)
    a = flows.sample(flow, 50, generator=torch.Generator().manual_seed(5))
    b = flows.sample(flow, 50, generator=torch.Generator().manual_seed(5))
    c = flows.sample(flow, 50, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    half = flows.sample(flow, 50, temperature=0.5, generator=torch.Generator().manual_seed(5))
    z, _ = flow(half)  # back in the base: exactly 0.5 times the standard normal draw
    base = torch.randn(50, 2, generator=torch.Generator().manual_seed(5))
    assert (z - 0.5 * base).abs().max() < 1e-5
    image = perturb(tiny_image_flow(), std=0.2)
    imgs = flows.sample(image, 3, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (3, 1, 4, 4) and imgs.min() >= 0 and imgs.max() <= 1
    assert torch.equal(imgs, flows.sample(image, 3, 0.7, torch.Generator().manual_seed(0)))


def test_bad_inputs():
    flow2d, image = flows.RealNVP2D(n_couplings=2, hidden=4), tiny_image_flow()
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        flows.log_prob(flow2d, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        flows.log_prob(flow2d, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match="floating"):
        flows.log_prob(flow2d, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="RealNVP2D or RealNVPImage"):
        flows.log_prob(torch.nn.Linear(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="image_shape"):
        flows.image_log_prob_bound(image, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="8-bit grid"):
        flows.image_log_prob_bound(image, torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="divide by 255"):
        flows.image_log_prob_bound(image, torch.full((1, 1, 4, 4), 200.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flows.image_log_prob_bound(image, torch.full((1, 1, 4, 4), -1.0 / 255))
    with pytest.raises(ValueError, match="NaN"):
        flows.image_log_prob_bound(image, torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"outside \[0, 255\]"):
        flows.image_log_prob_bound(image, torch.full((1, 1, 4, 4), 256))
    with pytest.raises(TypeError, match="RealNVPImage"):
        flows.image_log_prob_bound(flow2d, torch.zeros(1, 2))
    for t in (0, -1.0):
        with pytest.raises(ValueError, match="temperature must be positive"):
            flows.sample(flow2d, 4, temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        flows.sample(flow2d, 4, temperature=float("nan"))
    with pytest.raises(ValueError, match="8-bit grid"):
        flows.dequantize(torch.full((1, 3), 0.3))
    with pytest.raises(ValueError, match="multiples of 4"):
        flows.RealNVPConfig(image_shape=(1, 6, 6))
    with pytest.raises(ValueError, match="mask"):
        flows.AffineCoupling(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="alpha"):
        flows.logit_transform(torch.rand(2, 3), alpha=0.5)


def test_training_lowers_the_nll():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    data = centres[torch.randint(0, 3, (96,), generator=g)] + 0.2 * torch.randn(96, 2, generator=g)
    flow = flows.RealNVP2D(n_couplings=6, hidden=32)
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    step = flows.make_flow_step(flow, opt, lambda i: (data,), grad_clip=10.0)
    history = train.fit(step, 200, progress=False)
    assert set(history) == {"step", "loss"}
    first, last = np.mean(history["loss"][:5]), np.mean(history["loss"][-5:])
    assert last < first - 1.0, (first, last)  # nats per point; N(0, I) starts near 5.4


def test_image_step_reports_bits_per_dim():
    flow = tiny_image_flow()
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (8, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 255
    step = flows.make_flow_step(flow, opt, lambda i: (x, torch.zeros(8)), generator=torch.Generator())
    out = step(0)
    assert set(out) == {"loss", "bits_per_dim"}
    assert out["bits_per_dim"] == pytest.approx(out["loss"] / (16 * math.log(2)))
    assert 5 < out["bits_per_dim"] < 12  # noise-like data: about 8 bits per dimension


def test_models_rebuild_from_their_recorded_config():
    """What a shipped checkpoint's manifest entry records is enough to rebuild the same flow."""
    image = tiny_image_flow()
    entry = {"class": "course_lib.flows.RealNVPImage", "config_class": "course_lib.flows.RealNVPConfig",
             "config": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in dataclasses.asdict(image.config).items()}}  # as JSON stores it
    rebuilt = pretrained.build(entry)
    rebuilt.load_state_dict(image.state_dict())
    assert rebuilt.config == image.config
    flow2d = flows.RealNVP2D(n_couplings=3, hidden=5)
    again = pretrained.build({"class": "course_lib.flows.RealNVP2D", "config": flow2d.config})
    again.load_state_dict(flow2d.state_dict())


# --- continuous flows -------------------------------------------------------------------------------

def linear_field(seed=0, d=3):
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a, (lambda x: x @ a.T)


def test_divergence_exact_equals_jacobian_trace():
    net = perturb(torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)), 0.5)
    x = torch.randn(5, 4)
    div = flows.divergence(net, x)
    for b in range(5):
        jac = torch.autograd.functional.jacobian(net, x[b])
        assert div[b].item() == pytest.approx(torch.trace(jac).item(), abs=1e-5)
    a, v = linear_field()
    assert torch.allclose(flows.divergence(v, torch.randn(7, 3, dtype=torch.float64)),
                          torch.trace(a).expand(7), atol=1e-12)


def test_hutchinson_is_unbiased_with_the_rademacher_variance():
    """One probe per example on 40,000 copies: mean tr A, variance sum_{i != j} (A_ij^2 + A_ij A_ji)."""
    a, v = linear_field(seed=1, d=4)
    est = flows.divergence(v, torch.zeros(40_000, 4, dtype=torch.float64), n_probes=1,
                           generator=torch.Generator().manual_seed(0))
    off = ~torch.eye(4, dtype=torch.bool)
    var = (a[off] ** 2 + (a * a.T)[off]).sum().item()
    assert est.var().item() == pytest.approx(var, rel=0.05)
    assert abs(est.mean().item() - torch.trace(a).item()) < 4 * math.sqrt(var / 40_000)
    # K probes divide the variance by K; a diagonal field has zero variance
    est8 = flows.divergence(v, torch.zeros(20_000, 4, dtype=torch.float64), n_probes=8,
                            generator=torch.Generator().manual_seed(1))
    assert est8.var().item() == pytest.approx(var / 8, rel=0.07)
    diag = flows.divergence(lambda x: x * torch.tensor([1.0, -2.0, 3.0]), torch.randn(10, 3), n_probes=1)
    assert torch.allclose(diag, torch.full((10,), 2.0))


def test_continuous_flow_matches_the_closed_form_of_a_linear_field():
    """x_1 = expm(A) x_0, log p_1(x_1) = log p_0(x_0) - tr A: checked against the Gaussian it maps to."""
    a, v = linear_field(seed=2)
    x0 = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x1, delta = flows.continuous_flow(lambda x, t: v(x), x0, 0.0, 1.0, n_steps=200)
    m = torch.linalg.matrix_exp(a)
    assert torch.allclose(x1, x0 @ m.T, atol=1e-4)
    assert torch.allclose(delta, -torch.trace(a).expand(200), atol=1e-10)
    zero = torch.zeros(3, dtype=torch.float64)
    base = torch.distributions.MultivariateNormal(zero, torch.eye(3, dtype=torch.float64))
    pushed = torch.distributions.MultivariateNormal(zero, m @ m.T)
    assert torch.allclose(base.log_prob(x0) + delta, pushed.log_prob(x1), atol=1e-3)
    # a time-dependent field t A: delta = -tr A (t1^2 - t0^2) / 2; backwards in time undoes the map
    x_half, d_half = flows.continuous_flow(lambda x, t: t * v(x), x0, 0.0, 1.0, n_steps=200)
    assert torch.allclose(d_half, -0.5 * torch.trace(a).expand(200), atol=1e-6)
    back, d_back = flows.continuous_flow(lambda x, t: t * v(x), x_half, 1.0, 0.0, n_steps=200)
    assert torch.allclose(back, x0, atol=1e-4) and torch.allclose(d_back, -d_half, atol=1e-6)
    # Hutchinson inside the solver: unbiased around the exact change
    _, d_hutch = flows.continuous_flow(lambda x, t: v(x), x0, n_steps=10, n_probes=1,
                                       generator=torch.Generator().manual_seed(4))
    assert abs(d_hutch.mean().item() + torch.trace(a).item()) < 4 * d_hutch.std().item() / math.sqrt(200)


def test_continuous_flow_errors():
    a, v = linear_field()
    with pytest.raises(ValueError, match="shaped like x"):
        flows.divergence(lambda x: x.sum(1), torch.randn(4, 3))
    with pytest.raises(ValueError, match="n_probes"):
        flows.divergence(v, torch.randn(4, 3, dtype=torch.float64), n_probes=0)
    with pytest.raises(ValueError, match="finite"):
        flows.continuous_flow(lambda x, t: x, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="n_steps"):
        flows.continuous_flow(lambda x, t: x, torch.randn(2, 2), n_steps=0)


def test_the_bound_is_the_sum_of_its_terms_seed_for_seed():
    """dequantize -> logit -> flow, term by term, equals image_log_prob_bound and image_bits_per_dim."""
    flow = perturb(tiny_image_flow(shape=(1, 4, 4)), 0.05)
    x = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / 255.0
    y = flows.dequantize(x, torch.Generator().manual_seed(5))
    s, logdet_logit = flows.logit_transform(y, flow.config.alpha)
    with torch.no_grad():
        terms = flows.log_prob(flow, s) + logdet_logit - 16 * math.log(256)
        bound = flows.image_log_prob_bound(flow, x, torch.Generator().manual_seed(5))
    assert torch.allclose(terms, bound, atol=1e-5)
    bpd = flows.image_bits_per_dim(flow, x, torch.Generator().manual_seed(5), batch_size=2)
    assert torch.allclose(bpd, -bound / (16 * math.log(2)), atol=1e-6)
