"""Tests of course_lib.gan: losses on logits, the optimal discriminator and the value of the game,
the networks, the training step and mode coverage."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats

from course_lib import gan, info, toy, train
from course_lib.data import Minibatches

LOG4 = math.log(4.0)


# --- losses ------------------------------------------------------------------------------------

def test_losses_by_hand():
    zero = torch.zeros(3)
    # D = 1/2 everywhere: -log(1/2) - log(1/2) = 2 log 2
    assert gan.discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    a = torch.tensor([math.log(3.0)])  # D = sigmoid(log 3) = 3/4
    assert gan.discriminator_loss(a, a).item() == pytest.approx(-math.log(0.75) - math.log(0.25))
    assert gan.generator_loss(a, "non_saturating").item() == pytest.approx(-math.log(0.75))
    assert gan.generator_loss(a, "minimax").item() == pytest.approx(math.log(0.25))
    assert gan.generator_loss(a).item() == gan.generator_loss(a, "non_saturating").item()  # the default


def test_losses_match_bce_on_probabilities():
    g = torch.Generator().manual_seed(0)
    real, fake = 3 * torch.randn(50, generator=g, dtype=torch.float64), 3 * torch.randn(70, generator=g,
                                                                                         dtype=torch.float64)
    pr, pf = torch.sigmoid(real), torch.sigmoid(fake)
    bce = F.binary_cross_entropy
    expected_d = bce(pr, torch.ones_like(pr)) + bce(pf, torch.zeros_like(pf))
    torch.testing.assert_close(gan.discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(gan.generator_loss(fake, "non_saturating"), bce(pf, torch.ones_like(pf)))
    torch.testing.assert_close(gan.generator_loss(fake, "minimax"), -bce(pf, torch.zeros_like(pf)))


def test_losses_are_stable_for_large_logits():
    a = torch.tensor([-200.0, 200.0])  # sigmoid underflows to 0 / rounds to 1 in float32
    assert torch.isfinite(gan.discriminator_loss(a, a))
    # -log sigmoid(-200) = 200 (+ e^-200), -log sigmoid(200) = e^-200: mean 100
    assert gan.generator_loss(a, "non_saturating").item() == pytest.approx(100.0)
    assert gan.generator_loss(a, "minimax").item() == pytest.approx(-100.0)


@pytest.mark.parametrize("a0", [-8.0, -4.0, 0.0, 3.0])
def test_generator_gradients_wrt_the_logit(a0):
    # The page: d/da log(1 - sigmoid(a)) = -sigmoid(a) (saturating); d/da -log sigmoid(a) = -(1 - sigmoid(a)).
    for kind, expected in (("minimax", -torch.sigmoid(torch.tensor(a0))),
                           ("non_saturating", -(1 - torch.sigmoid(torch.tensor(a0))))):
        a = torch.tensor([a0], requires_grad=True)
        gan.generator_loss(a, kind).backward()
        assert a.grad.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-12)


def test_saturation_when_d_rejects_the_fakes():
    # D(G(z)) = sigmoid(-8) = 3.4e-4: the saturating gradient is that small, the other one about 1.
    a = torch.full((16,), -8.0, requires_grad=True)
    gan.generator_loss(a, "minimax").backward()
    sat = a.grad.abs().sum().item()  # gradient of the batch mean, summed over samples = per-sample size
    a.grad = None
    gan.generator_loss(a, "non_saturating").backward()
    nonsat = a.grad.abs().sum().item()
    assert sat == pytest.approx(1 / (1 + math.exp(8)), rel=1e-4)
    assert nonsat == pytest.approx(1 - 1 / (1 + math.exp(8)), rel=1e-4)
    assert nonsat / sat > 2900  # = e^8


def test_loss_errors():
    with pytest.raises(ValueError, match="Unknown generator loss"):
        gan.generator_loss(torch.zeros(2), "wasserstein")
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        gan.discriminator_loss(torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match="non-empty"):
        gan.generator_loss(torch.zeros(0))


# --- the optimal discriminator and V(D*, G) ------------------------------------------------------

def _two_gaussians(mu: float):
    return (lambda x: torch.as_tensor(stats.norm.pdf(x))), (lambda x: torch.as_tensor(stats.norm.pdf(x, mu)))


def test_optimal_discriminator_two_gaussians():
    # p_data = N(0, 1), p_g = N(mu, 1): p_g / p_data = exp(mu x - mu^2 / 2), so D* = sigmoid(mu^2/2 - mu x).
    mu = 1.5
    x = torch.linspace(-4, 5, 201, dtype=torch.float64)
    expected = torch.sigmoid(mu**2 / 2 - mu * x)
    p_data, p_g = _two_gaussians(mu)
    torch.testing.assert_close(gan.optimal_discriminator(p_data, p_g, x), expected)
    torch.testing.assert_close(gan.optimal_discriminator(p_data(x), p_g(x)), expected)  # arrays
    # where neither density has mass D* is undetermined: 1/2 by convention
    assert gan.optimal_discriminator([0.0, 1.0], [0.0, 0.0]).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="pass the points x"):
        gan.optimal_discriminator(p_data, p_g)
    with pytest.raises(ValueError, match="same shape"):
        gan.optimal_discriminator([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        gan.optimal_discriminator([-0.1], [1.0])


def test_trained_discriminator_approaches_d_star():
    # A small MLP discriminator trained on samples of N(0, 1) (real) and N(2, 1) (fake) approaches
    # D*(x) = sigmoid(2 - 2x): within 0.05 on [-1.5, 3.5], where both densities have mass (the
    # error left is mostly sampling noise of the 4,000 + 4,000 points: 0.021 with this seed).
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4000, 1, generator=g), 2 + torch.randn(4000, 1, generator=g)
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(in_shape=(1,), hidden_dims=(32, 32)))
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    for _ in range(400):
        loss = gan.discriminator_loss(D(real), D(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-1.5, 3.5, 101)
    with torch.no_grad():
        learned = torch.sigmoid(D(x[:, None]))
    assert (learned - torch.sigmoid(2 - 2 * x)).abs().max().item() < 0.05


def test_gan_value_discrete_is_minus_log4_plus_2js():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        p = torch.rand(7, generator=g, dtype=torch.float64)
        q = torch.rand(7, generator=g, dtype=torch.float64)
        q[torch.randint(7, (2,), generator=g)] = 0.0  # zeros in one distribution
        p, q = p / p.sum(), q / q.sum()
        torch.testing.assert_close(gan.gan_value(p, q), -LOG4 + 2 * info.js_divergence(p, q))
    p = torch.tensor([0.3, 0.7, 0.0], dtype=torch.float64)
    assert gan.gan_value(p, p).item() == pytest.approx(-LOG4)  # the optimum p_g = p_data
    assert gan.gan_value(p, torch.tensor([0.0, 0.0, 1.0])).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mu", [0.0, 0.5, 2.0, 12.0])
def test_gan_value_continuous_against_quadrature_and_monte_carlo(mu):
    p_data, p_g = _two_gaussians(mu)
    x = torch.linspace(-10, mu + 10, 40_001, dtype=torch.float64)
    value = gan.gan_value(p_data, p_g, x).item()
    # JS by scipy's adaptive quadrature, independently of gan_value
    pd, pg = stats.norm(0, 1).pdf, stats.norm(mu, 1).pdf

    def js_integrand(t):
        m = (pd(t) + pg(t)) / 2
        return 0.5 * (pd(t) * math.log(pd(t) / m) + pg(t) * math.log(pg(t) / m))

    js = sum(integrate.quad(js_integrand, a, b)[0] for a, b in ((-10, mu / 2), (mu / 2, mu + 10)))
    assert value == pytest.approx(-LOG4 + 2 * js, abs=1e-7)
    # Monte Carlo: E_data[log D*(x)] + E_g[log(1 - D*(x))] with D* = sigmoid(mu^2/2 - mu x)
    g = torch.Generator().manual_seed(2)
    n = 200_000
    xr, xf = torch.randn(n, generator=g, dtype=torch.float64), mu + torch.randn(n, generator=g,
                                                                                dtype=torch.float64)
    terms_r = F.logsigmoid(mu**2 / 2 - mu * xr)
    terms_f = F.logsigmoid(-(mu**2 / 2 - mu * xf))
    mc = terms_r.mean() + terms_f.mean()
    sigma = math.sqrt((terms_r.var() + terms_f.var()).item() / n)
    assert abs(mc.item() - value) < 4 * sigma + 1e-7  # 1e-7: at mu = 12 the overlap is a rare event
    assert -LOG4 - 1e-9 <= value <= 1e-9


def test_gan_value_grid_errors():
    with pytest.raises(ValueError, match="increasing"):
        gan.gan_value([0.1, 0.2], [0.2, 0.1], torch.tensor([1.0, 0.0]))


# --- networks ------------------------------------------------------------------------------------

def _pairs():
    return {
        "mlp_2d": (gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(16, 16))),
                   gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(16, 16)))),
        "mlp_image": (gan.MLPGenerator(gan.MLPGeneratorConfig(latent_dim=8, hidden_dims=(32,),
                                                              out_shape=(1, 28, 28), out_activation="tanh",
                                                              norm="batch")),
                      gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(in_shape=(1, 28, 28), hidden_dims=(32,),
                                                                      norm="layer"))),
        "dcgan": (gan.DCGANGenerator(gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8))),
                  gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(channels=(8, 16)))),
        "dcgan_spectral": (gan.DCGANGenerator(gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8))),
                           gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(channels=(8, 16),
                                                                               norm="spectral"))),
        "cdcgan": (gan.DCGANGenerator(gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8), n_classes=10)),
                   gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(channels=(8, 16), n_classes=10))),
        "cmlp": (gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(16,), n_classes=3)),
                 gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(16,), n_classes=3,
                                                                 norm="spectral"))),
    }


@pytest.mark.parametrize("name", list(_pairs()))
def test_shapes_and_ranges(name):
    G, D = _pairs()[name]
    n = 5
    y = torch.arange(n) % G.config.n_classes if G.config.n_classes else None
    x = G.sample(n, y=y, generator=torch.Generator().manual_seed(0))
    shape = G.config.out_shape
    assert x.shape == (n, *shape)
    if getattr(G.config, "out_activation", "tanh") == "tanh":
        assert x.abs().max() <= 1
    assert D(x, y).shape == (n,)


def test_dcgan_follows_the_guidelines():
    G = gan.DCGANGenerator()
    D = gan.DCGANDiscriminator()
    g_layers, d_layers = list(G.net), list(D.net)
    for layers in (g_layers, d_layers):  # strided convolutions, no pooling, no hidden dense layer
        banned = (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.Linear)
        assert not any(isinstance(m, banned) for m in layers)
    convs = [m for m in g_layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == 3 and [c.stride for c in convs[1:]] == [(2, 2), (2, 2)]
    # BatchNorm after every transposed convolution of G except the output, then ReLU; tanh output
    assert [type(m).__name__ for m in g_layers] == ["ConvTranspose2d", "BatchNorm2d", "ReLU",
                                                    "ConvTranspose2d", "BatchNorm2d", "ReLU",
                                                    "ConvTranspose2d", "Tanh"]
    # D: no normalisation on the input layer, BatchNorm on the next, LeakyReLU(0.2), no sigmoid
    assert isinstance(d_layers[1], torch.nn.LeakyReLU) and d_layers[1].negative_slope == 0.2
    assert isinstance(d_layers[3], torch.nn.BatchNorm2d)
    assert isinstance(d_layers[-1], torch.nn.Conv2d)
    spectral = gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(norm="spectral"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in spectral.modules())
    convs = [m for m in spectral.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    plain = gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(norm="none"))
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in plain.modules())


def test_spectral_norm_bounds_the_layers():
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(64, 64), norm="spectral"))
    for _ in range(20):  # a few power iterations (they run in train mode)
        D(torch.randn(8, 2))
    for m in D.modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.linalg.matrix_norm(m.weight, ord=2).item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", ["gan_mlp_mnist", "dcgan_mnist", "cdcgan_mnist"])
def test_configs_rebuild_models(name):
    # pretrained.build makes Class(Config(**asdict(config))): the same architecture and state_dict keys.
    G, D = gan.mnist_models(name)
    for model in (G, D):
        rebuilt = type(model)(type(model.config)(**dataclasses.asdict(model.config)))
        rebuilt.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="Unknown MNIST GAN"):
        gan.mnist_models("vae")


def test_same_seed_same_samples():
    cfg = gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8))
    torch.manual_seed(0)
    a = gan.DCGANGenerator(cfg).eval()
    torch.manual_seed(0)
    b = gan.DCGANGenerator(cfg).eval()
    xa = a.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xa, b.sample(4, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(xa, b.sample(4, generator=torch.Generator().manual_seed(4)))


def test_network_errors():
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        gan.MLPGeneratorConfig(latent_dim=0)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        gan.DCGANGeneratorConfig(latent_dim=-3)
    with pytest.raises(ValueError, match="norm must be one of"):
        gan.DCGANDiscriminatorConfig(norm="instance")
    with pytest.raises(ValueError, match="divisible by 4"):
        gan.DCGANGeneratorConfig(out_shape=(1, 30, 30))
    G = gan.DCGANGenerator(gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8)))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 8\)"):
        G(torch.zeros(2, 9))
    D = gan.DCGANDiscriminator(gan.DCGANDiscriminatorConfig(channels=(8, 16)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        D(torch.zeros(2, 784))
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    C = gan.DCGANGenerator(gan.DCGANGeneratorConfig(latent_dim=8, channels=(16, 8), n_classes=10))
    with pytest.raises(ValueError, match="conditional"):
        C(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"in \[0, 9\]"):
        C(torch.zeros(2, 8), torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        G.sample(0)


# --- the training step -------------------------------------------------------------------------

def _toy_setup(k=1, loss="non_saturating", conditional=False, seed=0):
    torch.manual_seed(seed)
    n_classes = 3 if conditional else 0
    G = gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(16, 16), n_classes=n_classes))
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(16, 16), n_classes=n_classes))
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999)) for m in (G, D))
    x = toy.ring_mixture(512, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(512) % 3
    batch = Minibatches(x, y, batch_size=64, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    step = gan.make_gan_step(G, D, opt_g, opt_d, batch, k=k, loss=loss, generator=gen)
    return step, {"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, "gen": gen}


@pytest.mark.parametrize("name", list(_pairs()))
def test_gan_step_dry_run(name):
    G, D = _pairs()[name]
    shape = D.config.in_shape
    x, y = torch.rand(64, *shape) * 2 - 1, torch.arange(64) % max(G.config.n_classes, 1)
    batch = Minibatches(x, y, batch_size=16, seed=0)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (G, D))
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    step = gan.make_gan_step(G, D, opt_g, opt_d, batch, generator=torch.Generator().manual_seed(0))
    metrics = step(0)
    assert set(metrics) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 < metrics["d_real"] < 1 and 0 < metrics["d_fake"] < 1
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters(), strict=True))  # both networks moved
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters(), strict=True))


def test_k_discriminator_steps_use_k_batches():
    calls = []
    G = gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(8,)))
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,)))
    opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D))
    d_steps = []
    opt_d.step = lambda *a, **kw: d_steps.append(1)  # count the discriminator updates

    def batch(i):
        calls.append(i)
        return (torch.randn(8, 2),)

    step = gan.make_gan_step(G, D, opt_g, opt_d, batch, k=3)
    step(0)
    step(1)
    assert calls == [0, 1, 2, 3, 4, 5] and len(d_steps) == 6


def test_gan_step_errors():
    G = gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(8,)))
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,)))
    opts = [torch.optim.Adam(m.parameters()) for m in (G, D)]
    with pytest.raises(ValueError, match="k .* must be an integer >= 1"):
        gan.make_gan_step(G, D, *opts, lambda i: (torch.zeros(4, 2),), k=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        gan.make_gan_step(G, D, *opts, lambda i: (torch.zeros(4, 2),), loss="hinge")
    C = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,), n_classes=2))
    with pytest.raises(ValueError, match="agree on n_classes"):
        gan.make_gan_step(G, C, *opts, lambda i: (torch.zeros(4, 2),))


def test_training_is_reproducible_and_resumes(tmp_path):
    step, state = _toy_setup(k=2, conditional=True)
    straight = train.fit(step, 6, state=state, progress=False)
    params = [p.detach().clone() for p in state["G"].parameters()]
    step, state = _toy_setup(k=2, conditional=True)  # same seeds: identical run
    assert train.fit(step, 6, state=state, progress=False) == straight
    step, state = _toy_setup(k=2, conditional=True)
    ckpt = tmp_path / "gan.pt"
    train.fit(step, 3, state=state, checkpoint=ckpt, progress=False)
    step, state = _toy_setup(k=2, conditional=True, seed=0)
    for p in state["G"].parameters():  # scramble: the checkpoint must restore everything
        p.data.normal_()
    resumed = train.fit(step, 6, state=state, checkpoint=ckpt, progress=False)
    assert resumed == straight
    for a, b in zip(params, state["G"].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gan_learns_a_gaussian():
    # A few hundred steps move G's samples from near the origin to a Gaussian at (3, -2).
    torch.manual_seed(0)
    G = gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(32, 32)))
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(32, 32)))
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999)) for m in (G, D))
    x = torch.tensor([3.0, -2.0]) + 0.3 * torch.randn(2048, 2, generator=torch.Generator().manual_seed(0))
    step = gan.make_gan_step(G, D, opt_g, opt_d, Minibatches(x, batch_size=128, seed=0),
                             generator=torch.Generator().manual_seed(1))
    start = G.sample(2000, generator=torch.Generator().manual_seed(2)).mean(0)
    train.fit(step, 400, progress=False)
    mean = G.sample(2000, generator=torch.Generator().manual_seed(2)).mean(0)
    target = torch.tensor([3.0, -2.0])
    assert (start - target).norm() > 3 and (mean - target).norm() < 0.6  # it oscillates around the target


# --- mode coverage -----------------------------------------------------------------------------

def test_toy_centers_match_the_samplers():
    ring = toy.ring_mixture(4000, std=0.0, generator=torch.Generator().manual_seed(0))
    grid = toy.grid_mixture(4000, std=0.0, generator=torch.Generator().manual_seed(0))
    for points, centers in ((ring, toy.ring_centers()), (grid, toy.grid_centers())):
        assert torch.cdist(points, centers).min(1).values.max() < 1e-5
        assert torch.cdist(points, centers).min(0).values.max() < 1e-5  # every mode drawn


def test_mode_coverage_exact_and_single_mode():
    centers = toy.ring_centers()
    on_modes = centers.repeat(10, 1)
    out = gan.mode_coverage(on_modes, centers, std=0.02)
    assert out["modes"] == 8 and out["high_quality"] == 1.0 and out["counts"].tolist() == [10] * 8
    one = centers[3] + 0.02 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    out = gan.mode_coverage(one, centers, std=0.02)
    assert out["modes"] == 1 and out["counts"][3] == out["counts"].sum()
    far = torch.zeros(50, 2)  # the ring's centre: far from every mode
    out = gan.mode_coverage(far, centers, std=0.02)
    assert out["modes"] == 0 and out["high_quality"] == 0.0


def test_mode_coverage_of_true_samples():
    # For data from N(mu_k, std^2 I) in 2-D, P(||x - mu_k|| <= 3 std) = 1 - e^{-9/2} = 0.98889.
    n, std = 100_000, 0.05
    x = toy.grid_mixture(n, std=std, generator=torch.Generator().manual_seed(0))
    out = gan.mode_coverage(x, toy.grid_centers(), std)
    p = 1 - math.exp(-4.5)
    assert out["modes"] == 25
    assert abs(out["high_quality"] - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_mode_coverage_errors():
    with pytest.raises(ValueError, match="same d"):
        gan.mode_coverage(torch.zeros(5, 3), toy.ring_centers(), 0.1)
    with pytest.raises(ValueError, match="std must be positive"):
        gan.mode_coverage(torch.zeros(5, 2), toy.ring_centers(), 0.0)


def _rejecting_pair(seed=0):
    """A toy G and a D whose last bias is -10, so that D(G(z)) = sigmoid(a) is about e^-10."""
    torch.manual_seed(seed)
    G = gan.MLPGenerator(gan.MLPGeneratorConfig(hidden_dims=(16, 16)))
    D = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(16, 16)))
    with torch.no_grad():
        D.net[-1].bias.fill_(-10.0)
    return G, D


def test_minimax_step_trains_g_on_log_one_minus_d_and_saturates():
    """make_gan_step(loss="minimax") minimises log(1 - D(G(z))) = -softplus(a): its per-sample gradient
    -sigmoid(a) vanishes when D rejects the fakes (a = -10), so G barely moves, while the non-saturating
    loss -log D(G(z)) (gradient -(1 - sigmoid(a))) moves it about e^10 times more, from the same z."""
    x = torch.randn(64, 2) + 3
    moves, losses = {}, {}
    for loss in gan.LOSS_KINDS:
        G, D = _rejecting_pair()
        before = [p.detach().clone() for p in G.parameters()]
        opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=1.0), torch.optim.SGD(D.parameters(), lr=0.0)
        step = gan.make_gan_step(G, D, opt_g, opt_d, lambda i: (x,), loss=loss,
                                 generator=torch.Generator().manual_seed(1))
        out = step(0)
        losses[loss] = out["loss_g"]
        moves[loss] = math.sqrt(sum((p.detach() - b).pow(2).sum().item()
                                    for p, b in zip(G.parameters(), before, strict=True)))
        assert out["d_fake"] < 1e-3  # D rejects the fakes: a is about -10
    # L_G = log(1 - D) = -softplus(a) is slightly below 0; -log D = softplus(-a) is about 10
    assert -1e-3 < losses["minimax"] < 0 and 9 < losses["non_saturating"] < 11
    assert moves["non_saturating"] > 0 and moves["minimax"] < 1e-3 * moves["non_saturating"]


def test_minimax_loss_reaches_the_generator_update(monkeypatch):
    """The generator step calls generator_loss with the requested kind, on D's logits of G(z)."""
    calls = []
    real = gan.generator_loss

    def spy(logits, kind="non_saturating"):
        calls.append((kind, logits.detach().clone()))
        return real(logits, kind)

    monkeypatch.setattr(gan, "generator_loss", spy)
    for loss in gan.LOSS_KINDS:
        calls.clear()
        step, _ = _toy_setup(loss=loss)
        out = step(0)
        assert [kind for kind, _ in calls] == [loss]
        logits = calls[0][1]
        expected = -F.softplus(logits).mean() if loss == "minimax" else F.softplus(-logits).mean()
        assert out["loss_g"] == pytest.approx(expected.item(), rel=1e-6)


def test_reference_optimiser_settings_of_the_dcgans():
    """Chapter 6 trains every MNIST GAN with Adam(2e-4, betas (0.5, 0.999)) on batches of 64 (Radford et
    al.; pytorch/examples' dcgan): the lab's budget in both profiles, and what the shipped generators
    record they were trained with."""
    from course_lib import config, pretrained

    for profile in ("fast", "full"):
        budget = config.budget("06_gan", profile)
        assert budget["lr"] == 2e-4 and budget["batch_size"] == 64
    for name in gan.MNIST_MODELS:
        record = pretrained.info(name)["provenance"]
        assert record["optimizer"] == "Adam(lr=0.0002, betas=(0.5, 0.999)) for G and D"
        assert record["k"] == 1 and record["loss"] == "non_saturating" and record["batch_size"] == 64
