"""Tests of course_lib.guidance: classifier-free guidance with fake closed-form models, label dropout,
the conditional training step, and classifier guidance against the exact Bayes classifier of
per-class Gaussian data (where guided eps must equal the exact conditional eps)."""

import copy
import math

import pytest
import torch

from course_lib import data, train
from course_lib import diffusion as D
from course_lib import guidance as G
from course_lib.unet import UNet, UNetConfig, count_parameters

# two classes of 2-D Gaussian data: x_0 | y=k ~ N(MEANS[k], STDS[k]^2 I), p(y=k) = WEIGHTS[k]
MEANS = torch.tensor([[-1.0, 0.5], [1.5, -0.5]], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.6], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


@pytest.fixture(scope="module")
def sched():
    return D.linear_schedule(1000)


class FakeConditional:
    """A closed-form "network" eps(x, t, y) = (y + 1) x + t / 1000, with null label K = 3."""

    null_label = 3

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        y = torch.full((x.shape[0],), self.null_label) if y is None else y
        shape = (-1, *([1] * (x.ndim - 1)))
        return (y + 1).to(x.dtype).reshape(shape) * x + t.to(x.dtype).reshape(shape) / 1000


class ExactConditional:
    """The exact eps of the per-class Gaussians: class y -> gaussian_data_eps, null -> the mixture's."""

    null_label = 2

    def __init__(self, sched):
        self.per_class = [D.gaussian_data_eps(sched, MEANS[k], STDS[k]) for k in range(2)]
        self.mixture = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS)

    def __call__(self, x, t, y):
        out = self.mixture(x, t)
        for k in range(2):
            out = torch.where((y == k)[:, None], self.per_class[k](x, t), out)
        return out


class BayesClassifier:
    """Exact p(y | x_t) of the per-class Gaussians as logits: log w_k + log N(x_t; sqrt(a) mu_k, v_k I)."""

    num_classes = 2

    def __init__(self, sched):
        self.sched = sched

    def __call__(self, x, t):
        a = self.sched.alphas_bar[t].to(x.dtype)[:, None]  # (B, 1)
        v = a * STDS**2 + 1 - a  # (B, K)
        sq = (x[:, None, :] - a.sqrt()[:, :, None] * MEANS).pow(2).sum(-1)  # (B, K)
        return WEIGHTS.log() - 0.5 * (2 * torch.log(2 * math.pi * v) + sq / v)


# --- classifier-free guidance ------------------------------------------------------------------

def test_cfg_eps_is_null_at_0_conditional_at_1_and_linear_in_gamma():
    model = FakeConditional()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 1, 4, 4, generator=g), torch.tensor([0, 10, 200, 500, 999])
    y = torch.tensor([0, 1, 2, 0, 1])
    e_null, e_y = model(x, t, torch.full((5,), 3)), model(x, t, y)
    assert torch.allclose(G.cfg_eps(model, x, t, y, 0.0, 3), e_null)
    assert torch.allclose(G.cfg_eps(model, x, t, y, 1.0, 3), e_y)
    for gamma in (0.5, 2.0, 3, 7.5):
        assert torch.allclose(G.cfg_eps(model, x, t, y, gamma, 3), e_null + gamma * (e_y - e_null), atol=1e-6)
    # one batched call of 2B per evaluation; a scalar t is the same time for all
    model.calls = 0
    G.cfg_eps(model, x, 7, y, 3.0, 3)
    assert model.calls == 1
    scalar_t, batch_t = G.cfg_eps(model, x, 7, y, 3.0, 3), G.cfg_eps(model, x, torch.full((5,), 7), y, 3.0, 3)
    assert torch.allclose(scalar_t, batch_t)


def test_guided_eps_in_the_samplers_gives_the_class_or_the_mixture(sched):
    """With exact eps(x, y) and eps(x, null), DDIM through guided_eps samples p(x | y) (gamma = 1)
    and the mixture p(x) (gamma = 0): the samplers of chapter 8, unchanged."""
    model = ExactConditional(sched)
    n = 4000
    y = torch.tensor([0, 1]).repeat(n // 2)
    for gamma in (0.0, 1.0):
        x = D.ddim_sample(G.guided_eps(model, y, gamma), sched, (n, 2), steps=250, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
        if gamma == 1.0:
            for k in range(2):  # DDIM-250's own discretisation error shrinks the spread by 2-4 %
                xk = x[y == k]
                assert torch.allclose(xk.mean(0), MEANS[k], atol=0.05)
                assert torch.allclose(xk.std(0), STDS[k].expand(2), rtol=0.08)
        else:
            assert torch.allclose(x.mean(0), WEIGHTS @ MEANS, atol=0.06)
    # DDPM as well, and the same seed gives the same samples
    s = D.linear_schedule(100, 1e-4, 0.2)
    eps = G.guided_eps(ExactConditional(s), y[:8], 3.0)
    a = D.ddpm_sample(eps, s, (8, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    b = D.ddpm_sample(eps, s, (8, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_guided_eps_at_gamma_1_and_0_needs_one_pass():
    model = FakeConditional()
    y, x, t = torch.tensor([0, 2]), torch.randn(2, 3), torch.tensor([4, 4])
    for gamma, labels in ((1.0, y), (0.0, torch.full_like(y, model.null_label))):
        eps = G.guided_eps(model, y, gamma)
        assert torch.equal(eps(x, t), model(x, t, labels))
        model.calls = 0
        eps(x, t)
        assert model.calls == 1
    assert torch.allclose(G.guided_eps(model, y, 2.5)(x, t), G.cfg_eps(model, x, t, y, 2.5, 3))


def test_label_dropout_rate_and_kept_labels():
    n, p, k = 100_000, 0.2, 10
    y = torch.randint(k, (n,), generator=torch.Generator().manual_seed(0))
    before = y.clone()
    out = G.label_dropout(y, p, k, generator=torch.Generator().manual_seed(1))
    dropped = (out == k).double().mean().item()
    assert abs(dropped - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial standard error
    assert torch.equal(out[out != k], y[out != k])  # kept labels untouched
    assert torch.equal(y, before)  # a new tensor
    assert torch.equal(out, G.label_dropout(y, p, k, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(G.label_dropout(y, 0.0, k), y)
    assert (G.label_dropout(y, 1.0, k) == k).all()


TINY_COND = UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,),
                       num_groups=4, num_classes=3)


def test_conditional_training_step_drops_labels_and_trains(sched):
    torch.manual_seed(0)
    model = UNet(TINY_COND)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(256, 1, 8, 8, generator=g), torch.randint(3, (256,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = D.make_diffusion_step(model, opt, sched, data.Minibatches(images, labels, batch_size=64),
                                 generator=torch.Generator().manual_seed(1), p_uncond=0.5)
    history = train.fit(step, 6, progress=False)
    assert all(math.isfinite(v) for v in history["loss"])
    seen = torch.cat(seen)
    assert seen.numel() == 6 * 64 and seen.min() >= 0 and seen.max() <= 3
    assert abs((seen == 3).double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / seen.numel())


def test_conditional_training_step_rejects_unconditional_models_and_unlabelled_batches(sched):
    unconditional = UNet(UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2),
                                    attention_resolutions=(4,), num_groups=4))
    opt = torch.optim.Adam(unconditional.parameters())
    with pytest.raises(ValueError, match="class-conditional"):
        D.make_diffusion_step(unconditional, opt, sched, lambda i: (torch.zeros(2, 1, 8, 8),), p_uncond=0.1)
    model = UNet(TINY_COND)
    step = D.make_diffusion_step(model, torch.optim.Adam(model.parameters()), sched,
                                 lambda i: (torch.zeros(2, 1, 8, 8),), p_uncond=0.1)
    with pytest.raises(ValueError, match="labels"):
        step(0)


def test_cfg_bad_inputs_raise_clear_errors():
    model, x, t = FakeConditional(), torch.randn(3, 2), torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        G.cfg_eps(model, x, t, torch.tensor([0, 1, 4]), 1.0, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        G.cfg_eps(model, x, t, torch.tensor([-1, 1, 2]), 1.0, 3)
    for gamma in (-0.5, float("nan"), "3"):
        with pytest.raises(ValueError, match="gamma"):
            G.cfg_eps(model, x, t, torch.tensor([0, 1, 2]), gamma, 3)
        with pytest.raises(ValueError, match="gamma"):
            G.guided_eps(model, torch.tensor([0, 1, 2]), gamma)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        G.cfg_eps(model, x, t, torch.tensor([0, 1]), 1.0, 3)
    with pytest.raises(ValueError, match=r"t must"):
        G.cfg_eps(model, x, torch.tensor([1, 2]), torch.tensor([0, 1, 2]), 1.0, 3)
    with pytest.raises(ValueError, match="integer"):
        G.cfg_eps(model, x, t, torch.tensor([0.0, 1.0, 2.0]), 1.0, 3)
    with pytest.raises(ValueError, match="batch of 2"):
        G.guided_eps(model, torch.tensor([0, 1, 2]), 2.0)(x[:2], t[:2])
    with pytest.raises(ValueError, match="class-conditional"):
        G.guided_eps(UNet(UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2),
                                     attention_resolutions=(4,), num_groups=4)), torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="p_uncond"):
        G.label_dropout(torch.tensor([0, 1]), 1.5, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        G.label_dropout(torch.tensor([0, 7]), 0.1, 3)


# --- classifier guidance -----------------------------------------------------------------------

def test_classifier_guided_eps_with_the_bayes_classifier_is_the_exact_conditional_eps(sched):
    """eps(x_t) - sqrt(1 - a) grad log p(y | x_t) = -sqrt(1 - a) grad log p(x_t | y) (Bayes for scores)."""
    uncond, bayes = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS), BayesClassifier(sched)
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    y = torch.randint(2, (64,), generator=g)
    cond = ExactConditional(sched)
    for t_val in (0, 50, 300, 700, 999):
        t = torch.full((64,), t_val)
        guided = G.classifier_guided_eps(uncond, bayes, sched, y, 1.0)(x, t)
        assert torch.allclose(guided, cond(x, t, y), atol=1e-10)
        # at any scale s it is eps(null) + s (eps(y) - eps(null)): with exact models, classifier
        # guidance at scale s and classifier-free guidance at gamma = s are the same predictor
        for s in (0.0, 0.5, 3.0):
            guided = G.classifier_guided_eps(uncond, bayes, sched, y, s)(x, t)
            assert torch.allclose(guided, G.cfg_eps(cond, x, t, y, s, cond.null_label), atol=1e-10)


def test_classifier_guided_sample_applies_the_mean_shift_formula():
    """Algorithm 1 written out: x_{t-1} = mu(x_t) + s Sigma_t g + sigma_t z, with the sampler's noise."""
    s = D.linear_schedule(5, 1e-2, 0.3)
    eps_model, bayes = D.gaussian_mixture_eps(s, MEANS, STDS, WEIGHTS), BayesClassifier(s)
    y, scale = torch.tensor([0, 1, 1, 0]), 2.0
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = G.classifier_guided_sample(eps_model, bayes, s, (4, 2), y, scale, x_T=x_T, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the sampler's noise, in the order it draws it (t = 4, ..., 1)
    x = x_T
    for t in range(4, -1, -1):
        tt = torch.full((4,), t)
        mu = D.p_mean(s, x, tt, eps_model(x, tt))
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            grad = torch.autograd.grad(torch.log_softmax(bayes(xg, tt), 1)[torch.arange(4), y].sum(), xg)[0]
        var = s.posterior_variance[t].item()
        z = torch.randn(4, 2, generator=g, dtype=torch.float64) if t > 0 else 0.0
        x = mu + scale * var * grad + math.sqrt(var) * z
    assert torch.allclose(out, x, atol=1e-10)
    # scale 0 is plain ancestral sampling
    plain = D.ddpm_sample(eps_model, s, (4, 2), x_T=x_T, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(4))
    zero = G.classifier_guided_sample(eps_model, bayes, s, (4, 2), y, 0.0, x_T=x_T, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(4))
    assert torch.equal(zero, plain)


def test_classifier_guided_sample_at_scale_1_follows_exact_conditional_ddpm():
    """With the same noise, Algorithm 1 (unconditional eps + mean shift) stays sample by sample next to
    ancestral sampling with the exact conditional eps, and lands on the class's Gaussian."""
    s = D.linear_schedule(1000)
    eps_model, bayes = D.gaussian_mixture_eps(s, MEANS, STDS, WEIGHTS), BayesClassifier(s)
    cond = ExactConditional(s)
    n = 500
    y = torch.tensor([0, 1]).repeat(n // 2)
    x = G.classifier_guided_sample(eps_model, bayes, s, (n, 2), y, 1.0, dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(5))
    exact = D.ddpm_sample(lambda z, t: cond(z, t, y), s, (n, 2), dtype=torch.float64,
                          generator=torch.Generator().manual_seed(5))
    assert (x - exact).pow(2).mean().sqrt() < 0.01  # the class spreads are 0.3 and 0.6
    for k in range(2):
        assert torch.allclose(x[y == k].mean(0), MEANS[k], atol=4 * STDS[k].item() / math.sqrt(n / 2))


def _toy_images(n, generator):
    """Class 0: top half +1, bottom -1; class 1: the reverse; plus N(0, 0.3^2) noise. (n, 1, 8, 8)."""
    y = torch.randint(2, (n,), generator=generator)
    pattern = torch.ones(1, 8, 8)
    pattern[:, 4:] = -1
    x = torch.where((y == 0)[:, None, None, None], pattern, -pattern)
    return x + 0.3 * torch.randn(n, 1, 8, 8, generator=generator), y


SMALL = G.NoisyClassifierConfig(in_shape=(1, 8, 8), channels=(8, 16), strides=(1, 2), time_dim=16,
                                num_groups=4, num_classes=2)


def test_noisy_classifier_learns_a_toy_and_its_gradients_are_per_example(sched):
    torch.manual_seed(0)
    clf = G.NoisyClassifier(SMALL)
    assert count_parameters(G.NoisyClassifier()) < 150_000  # the digits default stays small
    g = torch.Generator().manual_seed(0)
    images, labels = _toy_images(2048, g)
    opt = torch.optim.Adam(clf.parameters(), lr=3e-3)
    step = G.make_classifier_step(clf, opt, sched, data.Minibatches(images, labels, batch_size=64),
                                  generator=torch.Generator().manual_seed(1))
    history = train.fit(step, 150, progress=False)
    assert all(math.isfinite(v) for v in history["loss"])
    test_x, test_y = _toy_images(1000, torch.Generator().manual_seed(2))
    clf.eval()
    with torch.no_grad():
        small_t = torch.randint(0, 100, (1000,), generator=g)
        accuracy = (clf(D.q_sample(sched, test_x, small_t, generator=g), small_t).argmax(1) == test_y)
    assert accuracy.double().mean() > 0.9  # chance is 0.5
    # the gradient of example i does not depend on the rest of the batch (GroupNorm is per example)
    xt, t = test_x[:5], torch.tensor([3, 50, 400, 800, 999])
    grads = G.classifier_grad(clf, xt, t, test_y[:5])
    alone = torch.cat([G.classifier_grad(clf, xt[i:i + 1], t[i:i + 1], test_y[i:i + 1]) for i in range(5)])
    assert grads.shape == xt.shape and torch.allclose(grads, alone, atol=1e-6)
    # it is the gradient: central differences of log p(y | x_t) along it give ||grad||^2 (float64)
    clf64, x64 = copy.deepcopy(clf).double(), xt.double()
    g64 = G.classifier_grad(clf64, x64, t, test_y[:5])
    with torch.no_grad():
        lp = lambda z: torch.log_softmax(clf64(z, t), 1)[torch.arange(5), test_y[:5]]  # noqa: E731
        h = 1e-4 / g64.flatten(1).norm(dim=1)[:, None, None, None]
        slope = (lp(x64 + h * g64) - lp(x64 - h * g64)) / (2 * h.flatten())
        assert torch.allclose(slope, g64.flatten(1).pow(2).sum(1), rtol=1e-5)
    # classifier guidance plugs into DDIM with a network denoiser
    denoiser = UNet(UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2),
                               attention_resolutions=(4,), num_groups=4)).eval()
    eps = G.classifier_guided_eps(denoiser, clf, sched, torch.tensor([0, 1]), 2.0)
    x = D.ddim_sample(eps, sched, (2, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(3))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_classifier_guidance_bad_inputs_raise_clear_errors(sched):
    uncond, bayes = D.gaussian_mixture_eps(sched, MEANS, STDS, WEIGHTS), BayesClassifier(sched)
    x, t = torch.randn(3, 2, dtype=torch.float64), torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.classifier_guided_eps(uncond, bayes, sched, torch.tensor([0, 2, 1]), 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.classifier_grad(lambda x, t: torch.zeros(3, 2), x, t, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="scale"):
        G.classifier_guided_eps(uncond, bayes, sched, torch.tensor([0, 1, 1]), -1.0)
    with pytest.raises(ValueError, match="scale"):
        G.classifier_guided_sample(uncond, bayes, sched, (3, 2), torch.tensor([0, 1, 1]), -2.0)
    with pytest.raises(ValueError, match="batch of 2"):
        G.classifier_guided_eps(uncond, bayes, sched, torch.tensor([0, 1, 1]), 1.0)(x[:2], t[:2])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        G.classifier_guided_sample(uncond, bayes, sched, (4, 2), torch.tensor([0, 1, 1]), 1.0)
    with pytest.raises(ValueError, match="logits"):
        G.classifier_grad(lambda x, t: torch.zeros(2, 2), x, t, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="NoisyClassifier expects"):
        G.NoisyClassifier(SMALL)(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="stride"):
        G.NoisyClassifierConfig(channels=(8, 16), strides=(1,))


def test_noisy_classifier_rebuilds_from_its_config_through_pretrained(tmp_path):
    from course_lib import pretrained

    clf = G.NoisyClassifier(SMALL).eval()
    manifest = tmp_path / "m.json"
    manifest.write_text('{"repository": "https://github.com/x/y", "branch": "main", "checkpoints": {}}')
    pretrained.save("tiny_clf", clf, {"steps": 0}, path=manifest, local_dir=tmp_path)
    loaded = pretrained.load("tiny_clf", path=manifest, local_dir=tmp_path, download=False)
    assert loaded.config == SMALL
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.allclose(loaded(x, t), clf(x, t))


def test_classifier_guided_sample_passes_clip_x0_to_every_step():
    """With the one-point oracle every x0-hat is the point: at scale 0 a clipped run ends exactly at the
    point clamped to [-1, 1], and it equals diffusion.ddpm_sample with the same clip_x0 and noise."""
    s = D.linear_schedule(50, 1e-3, 0.3)
    point = torch.tensor([1.8, -0.4], dtype=torch.float64)
    oracle, bayes = D.gaussian_data_eps(s, point, 0.0), BayesClassifier(s)
    y = torch.tensor([0, 1, 1])
    out = G.classifier_guided_sample(oracle, bayes, s, (3, 2), y, 0.0, clip_x0=1.0, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(6))
    assert torch.allclose(out, point.clamp(-1, 1).expand(3, -1), atol=1e-8)
    plain = D.ddpm_sample(oracle, s, (3, 2), clip_x0=1.0, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(6))
    assert torch.equal(out, plain)
