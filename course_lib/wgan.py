"""Wasserstein GANs (chapter 7): transport distances, the critic's losses, three ways to keep the
critic Lipschitz, and the training step.

    w = wasserstein_1d(x, y)                      # W1 of two 1-D samples: area between the CDFs
    cost, plan = earth_movers_distance(a, b, C)   # a small transport problem, as a linear program
    step = make_wgan_step(G, critic, opt_g, opt_c, batch, WGANConfig(lipschitz="gp"))  # for train.fit
    history = train.fit(step, n_steps, state={...})

Conventions: a *critic* f maps a batch ``(B, ...)`` to one real score per sample, ``(B,)`` or
``(B, 1)``, with no sigmoid; the Kantorovich-Rubinstein dual estimate of W1 is
E[f(real)] - E[f(fake)]. The networks themselves are chapter 6's (``course_lib.gan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import quad
from scipy.optimize import linear_sum_assignment, linprog
from torch import nn

from . import _checks, gan

Tensor = torch.Tensor
LIPSCHITZ = ("clip", "gp", "spectral")  # the three ways of keeping the critic Lipschitz
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)  # the layers whose weights spectral norm rescales


# --- optimal transport -------------------------------------------------------------------------

def _as_1d(x, name: str) -> Tensor:
    x = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sample (shape (n,)), got shape {tuple(x.shape)}.")
    return _checks.finite(x if x.is_floating_point() else x.double(), name)


def wasserstein_1d(x, y) -> Tensor:
    """W1 between the empirical distributions of two 1-D samples ``x`` ``(n,)`` and ``y`` ``(m,)``.

    W1 = integral |F_x(t) - F_y(t)| dt, the area between the two empirical CDFs; for n = m it is
    (1/n) sum_i |x_(i) - y_(i)| over the sorted samples (match the i-th smallest with the i-th
    smallest). Differentiable in ``x`` and ``y``; returns a 0-dim tensor.
    """
    x, y = _as_1d(x, "x"), _as_1d(y, "y")
    dtype = torch.promote_types(x.dtype, y.dtype)
    xs, ys = torch.sort(x.to(dtype)).values, torch.sort(y.to(dtype)).values
    if xs.numel() == ys.numel():
        # (1/n) sum_i |x_(i) - y_(i)|
        return (xs - ys).abs().mean()
    t = torch.sort(torch.cat([xs, ys])).values  # breakpoints of both CDFs
    widths = t[1:] - t[:-1]
    # F(t_k) = #{samples <= t_k} / n on each interval [t_k, t_{k+1})
    fx = torch.searchsorted(xs.detach(), t[:-1].detach(), right=True).to(dtype) / xs.numel()
    fy = torch.searchsorted(ys.detach(), t[:-1].detach(), right=True).to(dtype) / ys.numel()
    return ((fx - fy).abs() * widths).sum()


def optimal_critic_1d(x, y, t) -> Tensor:
    """An optimal 1-Lipschitz critic for two 1-D samples, evaluated at the points ``t``.

    E_x[f] - E_y[f] = integral f'(s) (F_y(s) - F_x(s)) ds (integrate by parts), which f' =
    sign(F_y - F_x) maximises, reaching W1 = integral |F_x - F_y| ds. Returns f*(t) =
    integral_{min}^{t} sign(F_y - F_x) ds for the samples ``x`` ``(n,)``, ``y`` ``(m,)`` and any ``t``
    (float64, shape of ``t``); f* is constant outside the samples' range.
    """
    xs, ys = (np.sort(_as_1d(v, n).detach().cpu().double().numpy()) for v, n in ((x, "x"), (y, "y")))
    knots = np.unique(np.concatenate([xs, ys]))
    # F_x, F_y on each interval [knot_k, knot_{k+1})
    fx = np.searchsorted(xs, knots[:-1], side="right") / xs.size
    fy = np.searchsorted(ys, knots[:-1], side="right") / ys.size
    values = np.concatenate([[0.0], np.cumsum(np.sign(fy - fx) * np.diff(knots))])  # f* at the knots
    t = np.asarray(t.detach().cpu() if isinstance(t, Tensor) else t, dtype=np.float64)
    return torch.from_numpy(np.interp(t, knots, values))


def earth_movers_distance(a, b, cost) -> tuple[float, np.ndarray]:
    """Solve the transport problem between masses ``a`` ``(m,)`` and ``b`` ``(n,)`` exactly.

    min_P sum_ij C_ij P_ij  subject to  sum_j P_ij = a_i,  sum_i P_ij = b_j,  P_ij >= 0,
    a linear program (``scipy.optimize.linprog``, HiGHS). ``cost`` ``(m, n)`` is the cost of moving
    one unit of mass from pile i to hole j (a distance for W1). Returns the minimal cost and the
    optimal plan P ``(m, n)``.
    """
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, cost))
    if a.ndim != 1 or b.ndim != 1 or c.shape != (a.size, b.size):
        raise ValueError(f"a (m,), b (n,) and cost (m, n) must fit together; got shapes {a.shape}, "
                         f"{b.shape} and {c.shape}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(c).all()):
        raise ValueError("a, b and cost must be finite.")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("The masses a and b must be non-negative.")
    if not math.isclose(a.sum(), b.sum(), rel_tol=1e-9, abs_tol=1e-12) or a.sum() <= 0:
        raise ValueError(f"a and b must carry the same positive total mass (earth moved = holes filled); "
                         f"got {a.sum():.6g} and {b.sum():.6g}.")
    m, n = c.shape
    rows = np.kron(np.eye(m), np.ones((1, n)))  # sum_j P_ij = a_i
    cols = np.kron(np.ones((1, m)), np.eye(n))  # sum_i P_ij = b_j
    result = linprog(c.reshape(-1), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]),
                     bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"linprog did not solve the transport problem: {result.message}")
    return float(result.fun), result.x.reshape(m, n)


def empirical_wasserstein(x: Tensor, y: Tensor) -> float:
    """Exact W1 between two equal-size point clouds ``x``, ``y`` ``(n, d)`` (uniform weights 1/n).

    With equal weights an optimal plan is a matching (Birkhoff), so
    W1 = min over permutations s of (1/n) sum_i ||x_i - y_s(i)||, solved by
    ``scipy.optimize.linear_sum_assignment``. Costs O(n^3): use a few thousand points at most.
    """
    x = torch.as_tensor(x).detach().double().cpu()
    y = torch.as_tensor(y).detach().double().cpu()
    if x.dim() != 2 or x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(f"x and y must both have shape (n, d) with the same n and d; got {tuple(x.shape)} "
                         f"and {tuple(y.shape)} (for unequal masses use earth_movers_distance).")
    _checks.finite(x, "x"), _checks.finite(y, "y")
    cost = torch.cdist(x, y).numpy()  # (n, n) Euclidean distances
    i, j = linear_sum_assignment(cost)
    return float(cost[i, j].mean())


def parallel_lines(theta) -> dict[str, np.ndarray]:
    """KL, JS and W1 between P_0 = (0, Z) and P_theta = (theta, Z), Z ~ U[0, 1] (Arjovsky et al.).

    KL(P_0 || P_theta) = +inf and JS = log 2 for theta != 0 (disjoint supports), both 0 at theta = 0;
    W1 = |theta|. ``theta``: a number or an array; returns arrays of its shape (nats).
    """
    theta = np.asarray(theta, dtype=np.float64)
    if not np.isfinite(theta).all():
        raise ValueError(f"theta must be finite, got {theta}.")
    same = theta == 0
    return {"kl": np.where(same, 0.0, np.inf), "js": np.where(same, 0.0, math.log(2.0)),
            "w1": np.abs(theta)}


def blurred_parallel_lines(theta: float, sigma: float) -> dict[str, float]:
    """KL, JS and W1 between the parallel lines blurred horizontally by N(0, sigma^2).

    The blurred P_theta has density N(x; theta, sigma^2) 1[0 <= y <= 1]; the y factor is common, so
    KL = theta^2 / (2 sigma^2), JS = JS(N(0, sigma^2) || N(theta, sigma^2)) by quadrature (-> log 2 as
    sigma -> 0 for theta != 0) and W1 = |theta| (a shift) for every sigma > 0.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive (sigma = 0 is parallel_lines), got {sigma!r}.")
    theta = _checks.number(theta, "theta")

    def log_n(x, mu):  # log N(x; mu, sigma^2)
        return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))

    def integrand(x):  # 1/2 p log(p / m) + 1/2 q log(q / m), m = (p + q) / 2
        lp, lq = log_n(x, 0.0), log_n(x, theta)
        lm = np.logaddexp(lp, lq) - math.log(2.0)
        return 0.5 * math.exp(lp) * (lp - lm) + 0.5 * math.exp(lq) * (lq - lm)

    lo, hi = min(0.0, theta) - 12 * sigma, max(0.0, theta) + 12 * sigma
    points = [0.0, theta] if theta != 0 else None
    js = quad(integrand, lo, hi, points=points, limit=200, epsabs=1e-13)[0]
    return {"kl": theta**2 / (2 * sigma**2), "js": js, "w1": abs(theta)}


# --- the critic's losses and the Lipschitz constraint ------------------------------------------

def _scores(s: Tensor, name: str) -> Tensor:
    if not isinstance(s, Tensor) or s.dim() == 0 or s.numel() != s.shape[0]:
        raise ValueError(f"{name} must hold one score per sample, shape (B,) or (B, 1); got "
                         f"{tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__}.")
    return s.reshape(-1)


def critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The critic's loss, minus the dual estimate of W1 (Arjovsky et al., 2017, Algorithm 1).

    J_critic = -(E[f(x)] - E[f(G(z))]) = mean(fake_scores) - mean(real_scores); scores ``(B,)`` or
    ``(B, 1)``, raw critic outputs (no sigmoid, no log). Minimising it maximises the estimate.
    """
    real, fake = _scores(real_scores, "real_scores"), _scores(fake_scores, "fake_scores")
    if real_scores.shape[1:] != fake_scores.shape[1:]:
        raise ValueError(f"real_scores {tuple(real_scores.shape)} and fake_scores "
                         f"{tuple(fake_scores.shape)} must have the same shape per sample.")
    # -(E[f(x)] - E[f(G(z))])
    return fake.mean() - real.mean()


def generator_loss(fake_scores: Tensor) -> Tensor:
    """The generator's loss J_G = -E[f(G(z))] on fake scores ``(B,)`` or ``(B, 1)``: no log term.

    Only the fake term of the W1 estimate depends on the generator, so minimising -E[f(G(z))]
    minimises the estimate E[f(x)] - E[f(G(z))].
    """
    # -E[f(G(z))]
    return -_scores(fake_scores, "fake_scores").mean()


def interpolates(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random points on the segments between paired samples: x_hat = eps x + (1 - eps) x_fake.

    One eps ~ U[0, 1] per sample (Gulrajani et al., 2017, Algorithm 1), broadcast over all the
    other dimensions of ``real`` and ``fake`` ``(B, ...)``; returns ``(B, ...)``.
    """
    if not isinstance(real, Tensor) or not isinstance(fake, Tensor) or real.shape != fake.shape:
        raise ValueError(f"real and fake must be tensors of the same shape (B, ...); got "
                         f"{tuple(getattr(real, 'shape', ()))} and {tuple(getattr(fake, 'shape', ()))}.")
    if real.dim() < 2:
        raise ValueError(f"real and fake need a batch dimension and at least one more, (B, ...); got "
                         f"shape {tuple(real.shape)}.")
    _checks.floating(real, "real"), _checks.floating(fake, "fake")
    device = real.device if generator is None else generator.device
    eps = torch.rand(real.shape[0], generator=generator, device=device).to(real.device, real.dtype)
    eps = eps.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, ..., 1): one weight per sample
    # x_hat = eps x + (1 - eps) x_fake
    return eps * real + (1 - eps) * fake


def critic_gradient_norms(critic: Callable[[Tensor], Tensor], x: Tensor,
                          create_graph: bool = False) -> Tensor:
    """||grad_x f(x)||_2 for every sample of ``x`` ``(B, ...)``, the norm over all non-batch dims; ``(B,)``.

    ``create_graph=True`` keeps the graph so that a penalty on the norms can be differentiated
    with respect to the critic's parameters (a double backward).
    """
    x = _checks.floating(_checks.tensor(x, "x", min_ndim=2), "x").detach().requires_grad_(True)
    scores = _scores(critic(x), "critic(x)")
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=create_graph)
    # ||grad f(x_hat)||_2 over every dimension but the batch one
    return grad.flatten(1).norm(2, dim=1)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None, *, weight: float = 10.0,
                     return_norms: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The WGAN-GP penalty lambda E[(||grad f(x_hat)||_2 - 1)^2] (Gulrajani et al., 2017, eq. 3).

    x_hat = eps x + (1 - eps) x_fake with one eps ~ U[0, 1] per sample (``interpolates``); the norm
    is over all non-batch dimensions; ``weight`` is lambda (10 in the paper). ``real``, ``fake``
    ``(B, ...)``; ``fake`` is detached (the penalty trains the critic only). Returns the penalty
    (a 0-dim tensor, differentiable in the critic's parameters) and, with ``return_norms``, the
    norms ``(B,)``.
    """
    weight = _checks.number(weight, "The penalty weight lambda", low=0.0, what=" (10 in the paper)")
    x_hat = interpolates(real.detach(), fake.detach(), generator)
    norms = critic_gradient_norms(critic, x_hat, create_graph=True)
    # lambda E[(||grad f(x_hat)|| - 1)^2]
    penalty = weight * ((norms - 1) ** 2).mean()
    return (penalty, norms) if return_norms else penalty


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> nn.Module:
    """Clamp every parameter of ``module`` into [-c, c] in place (WGAN; c = 0.01 in the paper)."""
    c = _checks.number(c, "The clipping bound c", low=0.0, low_open=True, what=" (the paper uses 0.01)")
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


def has_spectral_norm(module: nn.Module) -> bool:
    """True when every Linear and Conv layer of ``module`` has a spectral-norm parametrisation."""
    from torch.nn.utils import parametrize

    layers = [m for m in module.modules() if isinstance(m, _LAYERS)]
    return bool(layers) and all(parametrize.is_parametrized(m, "weight") for m in layers)


def spectral_normalize_(module: nn.Module) -> nn.Module:
    """Give every Linear and Conv layer of ``module`` spectral normalisation, W / sigma_max(W).

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per forward pass,
    Miyato et al., 2018). Call it before creating the optimiser. Layers that already have it are
    left alone.
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(module.modules()):
        if isinstance(m, _LAYERS) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m)
    return module


# --- training ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WGANConfig:
    """How a WGAN trains its critic; the defaults are WGAN-GP's (Gulrajani et al., 2017)."""

    lipschitz: str = "gp"  # "clip" (Arjovsky et al.), "gp" (Gulrajani et al.) or "spectral" (Miyato et al.)
    n_critic: int = 5  # critic steps per generator step (5 for Arjovsky et al. and Gulrajani et al.)
    clip_value: float = 0.01  # c: "clip" clamps every critic parameter into [-c, c]
    gp_weight: float = 10.0  # lambda of the gradient penalty ("gp" only)

    def __post_init__(self):
        if self.lipschitz not in LIPSCHITZ:
            raise ValueError(f"Unknown Lipschitz method {self.lipschitz!r}: choose one of "
                             f"{', '.join(LIPSCHITZ)} (weight clipping, gradient penalty, spectral norm).")
        if not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ValueError(f"n_critic must be an integer >= 1, got {self.n_critic!r}.")
        if not self.clip_value > 0:
            raise ValueError(f"clip_value must be positive, got {self.clip_value!r}.")
        if self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight!r}.")


def reference_optimizers(cfg: WGANConfig, generator_net: nn.Module, critic: nn.Module,
                         lr: float | None = None) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The papers' optimisers for (generator, critic).

    "clip": RMSProp, lr 5e-5 (Arjovsky et al., 2017: momentum-based optimisers were unstable with
    clipping). "gp" and "spectral": Adam, lr 1e-4, betas (0.5, 0.9): the released code of Gulrajani et
    al., 2017 (igul222/improved_wgan_training; their Algorithm 1 lists betas (0, 0.9)), and setting A
    of Miyato et al., 2018. ``lr`` overrides the learning rate of both.
    """
    if cfg.lipschitz == "clip":
        make = lambda params: torch.optim.RMSprop(params, lr=lr or 5e-5)  # noqa: E731
    else:
        make = lambda params: torch.optim.Adam(params, lr=lr or 1e-4, betas=(0.5, 0.9))  # noqa: E731
    return make(generator_net.parameters()), make(critic.parameters())


def critic_step(critic: nn.Module, opt_c: torch.optim.Optimizer, real: Tensor, fake: Tensor,
                cfg: WGANConfig = WGANConfig(), generator: torch.Generator | None = None,
                diagnose: bool = True) -> dict[str, float]:
    """One critic update on a real and a fake batch ``(B, ...)``; returns its metrics.

    Minimises ``critic_loss`` (+ ``gradient_penalty`` for "gp"), then clamps the weights for "clip".
    Returns {"critic_loss": the loss minimised, "w1": the estimate E[f(x)] - E[f(x_fake)] before the
    update} (+ "gp", the penalty) and "grad_norm", the mean ||grad f|| at interpolates (for "clip"
    and "spectral" an extra backward pass after the update, skipped with ``diagnose=False``).
    """
    critic.requires_grad_(True)
    loss = critic_loss(critic(real), critic(fake.detach()))
    total = loss
    if cfg.lipschitz == "gp":
        penalty, norms = gradient_penalty(critic, real, fake, generator, weight=cfg.gp_weight,
                                          return_norms=True)
        total = loss + penalty
    opt_c.zero_grad(set_to_none=True)
    total.backward()
    opt_c.step()
    if cfg.lipschitz == "clip":
        clip_weights_(critic, cfg.clip_value)
    metrics = {"critic_loss": total.item(), "w1": -loss.item()}
    if cfg.lipschitz == "gp":
        metrics["gp"] = penalty.item()
        metrics["grad_norm"] = norms.mean().item()
    elif diagnose:  # the same diagnostic for every method: how steep is the critic between the samples?
        metrics["grad_norm"] = critic_gradient_norms(critic, interpolates(real, fake.detach(), generator)
                                                     ).mean().item()
    return metrics


def make_wgan_step(generator_net: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                   opt_c: torch.optim.Optimizer, batch: Callable[[int], tuple],
                   cfg: WGANConfig = WGANConfig(), *, latent_dim: int | None = None,
                   generator: torch.Generator | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: ``cfg.n_critic`` critic updates, then one generator update.

    Step i uses the real batches ``batch(i * n_critic + k)[0]``, k < n_critic (resumable with
    ``data.Minibatches``) and z ~ N(0, I) of size ``latent_dim`` (default: the generator's
    ``config.latent_dim``) drawn with ``generator``. The critic minimises ``critic_loss`` (+
    ``gradient_penalty`` for "gp"; followed by ``clip_weights_`` for "clip"; "spectral" needs a
    critic prepared with ``spectral_normalize_``); the generator minimises ``generator_loss``.
    Returns ``{"critic_loss", "w1", "grad_norm", "gen_loss"}`` (+ ``"gp"``): the last critic
    update's loss, its W1 estimate E[f(x)] - E[f(G(z))], and the mean ||grad f|| at interpolates.
    """
    if cfg.lipschitz == "spectral" and not has_spectral_norm(critic):
        raise ValueError("lipschitz='spectral' needs a critic whose layers are spectrally normalised: "
                         "call wgan.spectral_normalize_(critic) (or build it with norm='spectral') "
                         "before creating its optimiser.")
    batch_norms = [m for m in critic.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if cfg.lipschitz == "gp" and batch_norms:
        raise ValueError("The gradient penalty is a per-sample constraint, and BatchNorm makes each score "
                         "depend on the whole batch: build the critic without BatchNorm (norm='none'), "
                         "as Gulrajani et al. do.")
    if latent_dim is None:
        latent_dim = getattr(getattr(generator_net, "config", None), "latent_dim", None)
        if latent_dim is None:
            raise ValueError("Pass latent_dim: the generator has no config.latent_dim.")
    device = next(generator_net.parameters()).device

    def noise(n: int) -> Tensor:
        return torch.randn(n, latent_dim, generator=generator,
                           device=device if generator is None else generator.device).to(device)

    def step(i: int) -> dict[str, float]:
        for k in range(cfg.n_critic):
            real = _first(batch(i * cfg.n_critic + k))
            with torch.no_grad():
                fake = generator_net(noise(real.shape[0]))
            metrics = critic_step(critic, opt_c, real, fake, cfg, generator, diagnose=k == cfg.n_critic - 1)

        critic.requires_grad_(False)  # the generator's step needs no gradients for the critic
        g_loss = generator_loss(critic(generator_net(noise(real.shape[0]))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        critic.requires_grad_(True)
        return {**metrics, "gen_loss": g_loss.item()}
    return step


def _first(got) -> Tensor:
    """The real samples x of what ``batch(i)`` returned: a tensor x or a tuple (x, ...)."""
    x = got if isinstance(got, Tensor) else got[0] if isinstance(got, (tuple, list)) and got else None
    if not isinstance(x, Tensor):
        raise ValueError(f"batch(i) must return a tensor x or a tuple (x, ...), got {type(got).__name__}.")
    return x


# The MNIST models of the lab and of the shipped checkpoints (scripts/checkpoints/wgan.py): chapter
# 6's DCGAN generator and discriminator (same sizes as "dcgan_mnist"), the critic without BatchNorm.
MNIST_MODELS = {
    "wgan_gp_mnist": (gan.DCGANGeneratorConfig(), gan.DCGANDiscriminatorConfig(norm="none"),
                      WGANConfig(lipschitz="gp")),
    "sngan_mnist": (gan.DCGANGeneratorConfig(), gan.DCGANDiscriminatorConfig(norm="spectral"),
                    WGANConfig(lipschitz="spectral")),
}


def mnist_models(name: str) -> tuple[gan.DCGANGenerator, gan.DCGANDiscriminator, WGANConfig]:
    """Fresh (generator, critic, config) of one of the ``MNIST_MODELS``."""
    if name not in MNIST_MODELS:
        raise ValueError(f"Unknown MNIST WGAN {name!r}: choose one of {', '.join(MNIST_MODELS)}.")
    g_cfg, c_cfg, cfg = MNIST_MODELS[name]
    return gan.DCGANGenerator(g_cfg), gan.DCGANDiscriminator(c_cfg), cfg
