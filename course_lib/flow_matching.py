"""Flow matching and rectified flow (chapter 13): probability paths, the conditional flow-matching loss,
conversions between parameterisations, ODE samplers that count NFE, guidance, reflow and distillation.

    path = LinearPath()                                        # x_t = (1 - t) x_0 + t eps
    v = VelocityNet(unet.UNet(cfg))                            # chapter 8's U-Net, time t in [0, 1]
    loss = cfm_loss(v, x0)                                     # E ||v(x_t, t) - (eps - x_0)||^2
    x, nfe = sample(v, (16, 1, 28, 28), steps=10, method="heun")       # nfe = 19
    x1, x0, nfe = reflow_pairs(v, (1000, 1, 28, 28), steps=50)          # pairs for rectified flow
    oracle = mixture_velocity(means, stds, weights)            # the exact marginal velocity, 2-D
    bpd = ode_bits_per_dim(v, test_digits, steps=100)          # likelihood of 8-bit digits (an upper bound)

Conventions (DESIGN 13). Time t in [0, 1]: t = 0 is the data, t = 1 the noise. A Gaussian path is
x_t = a(t) x_0 + b(t) eps with eps ~ N(0, I), a(0) = 1, b(0) = 0; its conditional velocity, the
time derivative along one pair (x_0, eps), is u_t = a'(t) x_0 + b'(t) eps. The linear path has a = 1 - t,
b = t, so u_t = eps - x_0. A velocity model v(x, t[, y]) takes t as a (B,) float tensor in [0, 1]
and learns the marginal velocity E[u_t | x_t]; sampling solves dx/dt = v(x, t) from t = 1 (noise)
down to t = 0 (data), so every step has h = t_{i+1} - t_i < 0. Lipman et al. (2023) and Liu et al.
(2023) run time the other way (their t is our 1 - t and their velocity is minus ours).
NFE (network evaluations per image) is counted by the samplers: Euler K, midpoint 2K, Heun 2K - 1
(its last step, which lands on t = 0, is Euler, as in chapter 12); a guided call counts 2.
References: Lipman et al. 2023 (flow matching); Liu et al. 2023 (rectified flow, reflow,
distillation); Albergo & Vanden-Eijnden 2023 (stochastic interpolants); Ho & Salimans 2022 (guidance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import _checks
from .diffusion import Schedule, _check_result, _randn, _start, label_dropout
from .guidance import cfg_eps
from .probability import log_mixture
from .sde import VPSDE, _time

Tensor = torch.Tensor
Velocity = Callable[..., Tensor]  # v(x, t) or v(x, t, y), t: (B,) floats in [0, 1]
KINDS = ("eps", "x0", "score", "velocity")
__all__ = ["GaussianPath", "LinearPath", "VPPath", "VelocityNet", "conditional_velocity", "cfm_loss",
           "convert", "to_linear", "ddpm_velocity", "ddpm_times", "mixture_velocity", "time_grid", "sample",
           "guided_velocity", "ode_log_likelihood", "ode_bits_per_dim", "reflow_pairs", "straightness",
           "make_flow_matching_step", "KINDS"]


# --- paths -------------------------------------------------------------------------------------

class GaussianPath:
    """x_t = a(t) x_0 + b(t) eps; subclasses give ``_coefs(t) -> (a, b, a', b')`` on float64 tensors."""

    def coefs(self, t, like: Tensor | None = None):
        """(a, b, a', b') at t (checked in [0, 1]): floats for a number, else tensors shaped to broadcast
        against ``like`` (B, ...) in its dtype, or (B,) float64 without ``like``."""
        tt, scalar = _time(t)
        out = self._coefs(tt)
        if scalar:
            return tuple(c.item() for c in out)
        if like is None:
            return out
        return tuple(c.to(like.device, like.dtype).reshape(-1, *[1] * (like.ndim - 1)) for c in out)

    def sample(self, x0: Tensor, t, eps: Tensor) -> Tensor:
        """x_t = a(t) x_0 + b(t) eps, shape of x0 (B, ...); t a number or (B,)."""
        a, b, _, _ = self.coefs(t, x0)
        return a * x0 + b * eps


class LinearPath(GaussianPath):
    """The linear ("rectified", "optimal-transport") path: a = 1 - t, b = t; u_t = eps - x_0."""

    def _coefs(self, t):
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)

    def __repr__(self) -> str:
        return "LinearPath()"


class VPPath(GaussianPath):
    """The variance-preserving path of chapter 12's VP SDE: a = m(t), b = s(t) = sqrt(1 - m^2).

    m = exp(-B(t) / 2), B(t) = int_0^t beta, so a' = -beta m / 2 and b' = beta m^2 / (2 s). b' blows up
    as t -> 0 (like 1/sqrt(t)), and a(1) = exp(-B(1)/2) is small but not 0 (0.0066 for 0.1..20): the
    VP path ends near, not at, pure noise. Train it on t in [t_min, 1] (``make_flow_matching_step``).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.sde = VPSDE(beta_min, beta_max)

    def _coefs(self, t):
        m, s = self.sde.marginal(t)
        beta = self.sde._g2(t)
        # a' = -\beta m / 2,  b' = \beta m^2 / (2 s)
        return m, s, -0.5 * beta * m, 0.5 * beta * m**2 / s

    def __repr__(self) -> str:
        return f"VPPath(beta_min={self.sde.beta_min:g}, beta_max={self.sde.beta_max:g})"


def conditional_velocity(path: GaussianPath, x0: Tensor, eps: Tensor, t) -> Tensor:
    """u_t(x_t | x_0, eps) = a'(t) x_0 + b'(t) eps, shape of x0; on the linear path eps - x_0."""
    _, _, da, db = path.coefs(t, x0)
    return da * x0 + db * eps


def to_linear(path: GaussianPath, t):
    """(t_lin, c): x_t / c on ``path`` is the linear path's x at t_lin = b / (a + b), with c = a + b.

    x_t / (a + b) = a / (a + b) x_0 + b / (a + b) eps, and the weights sum to 1. So a model of any Gaussian
    path (chapter 8's DDPM included) is a model of the linear path after rescaling space and time.
    """
    a, b, _, _ = path.coefs(t)
    return b / (a + b), a + b


# --- the network: chapter 8's U-Net (or 2-D MLP), fed t in [0, 1] ------------------------------------

class VelocityNet(nn.Module):
    """v(x, t[, y]) = net(x, time_scale * t[, y]): a velocity model from a network that embeds a DDPM step.

    Chapter 8's ``UNet`` and ``MLPDenoiser`` embed their time sinusoidally, with frequencies from 1 down
    to 1/10,000 radians per unit. Fed t in [0, 1] directly, every angle t w_k is below one radian, so the
    embedding barely changes with t; fed 1000 t, the network sees the same range of times (0 to 1000) it
    resolves for the DDPM, and the class is reused unchanged. The wrapped ``net`` is what a checkpoint
    stores (``VelocityNet(pretrained.load("fm_mnist"))``).
    """

    def __init__(self, net: nn.Module, time_scale: float = 1000.0):
        super().__init__()
        self.net = net
        self.time_scale = _checks.number(time_scale, "time_scale", low=0.0, low_open=True)

    @property
    def null_label(self) -> int | None:
        return getattr(self.net, "null_label", None)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, ...); t: (B,) or a scalar, times in [0, 1]; y: (B,) labels for a conditional net."""
        t = self.time_scale * torch.as_tensor(t, dtype=torch.float32, device=x.device)
        return self.net(x, t) if y is None else self.net(x, t, y)


# --- the loss ----------------------------------------------------------------------------------

def cfm_loss(v: Velocity, x0: Tensor, path: GaussianPath | None = None, *, eps: Tensor | None = None,
             t: Tensor | None = None, y: Tensor | None = None, t_min: float = 0.0,
             generator: torch.Generator | None = None) -> Tensor:
    """The conditional flow-matching loss E_{t, x_0, eps} ||v(x_t, t) - u_t(x_t | x_0, eps)||^2 (a mean).

    x_t = a x_0 + b eps with one t ~ U[t_min, 1] and one eps ~ N(0, I) per example, unless given (a
    reflow batch passes its coupled noise ``eps``; distillation passes ``t``). Its gradient equals that
    of the marginal loss E ||v(x_t, t) - E[u_t | x_t]||^2 (Lipman et al. 2023, Thm 2), so its minimiser
    is the marginal velocity. x0: (B, ...); y: (B,) labels for v(x, t, y). Returns a scalar tensor.
    """
    path = path if path is not None else LinearPath()
    _checks.finite(_checks.floating(_checks.tensor(x0, "x0", min_ndim=2), "x0"), "x0")
    if eps is None:
        eps = _randn(x0.shape, x0.device, x0.dtype, generator)
    elif eps.shape != x0.shape:
        raise ValueError(f"eps must have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}.")
    if t is None:
        t_min = _checks.number(t_min, "t_min", low=0.0, high=1.0)
        where = generator.device if generator is not None else "cpu"
        t = t_min + (1 - t_min) * torch.rand(x0.shape[0], generator=generator, device=where,
                                             dtype=torch.float64)
    t = _time(torch.as_tensor(t).cpu().reshape(-1).expand(x0.shape[0]))[0]  # float64 on the CPU
    xt = path.sample(x0, t, eps)
    target = conditional_velocity(path, x0, eps, t)
    tt = t.to(x0.device, x0.dtype)
    out = v(xt, tt) if y is None else v(xt, tt, y)
    # \| v_\theta(x_t, t) - (a' x_0 + b' \epsilon) \|^2, averaged over examples and coordinates
    return torch.mean((out - target) ** 2)


# --- conversions between parameterisations ------------------------------------------------------

def convert(path: GaussianPath, xt: Tensor, t, pred: Tensor, src: str, dst: str) -> Tensor:
    """Turn one prediction at (x_t, t) into another: ``src``, ``dst`` in ("eps", "x0", "score", "velocity").

    Each fixes the pair (x0-hat, eps-hat) through x_t = a x0-hat + b eps-hat: eps = -b score, and
    v = a' x0-hat + b' eps-hat; solving the 2x2 system [[a, b], [a', b']] (determinant a b' - b a')
    gives x0-hat = (b' x_t - b v) / det, eps-hat = (a v - a' x_t) / det. On the linear path det = 1:
    x0-hat = x_t - t v, eps-hat = x_t + (1 - t) v, score = -eps-hat / t, v = -(x_t + t score) / (1 - t).
    Exact (up to rounding) where the divisions are defined: b > 0 to reach eps from x0, a > 0 for
    the reverse (the linear path: t < 1 and t > 0). Shapes of xt (B, ...); t a number or (B,).
    """
    for kind, name in ((src, "src"), (dst, "dst")):
        if kind not in KINDS:
            raise ValueError(f"{name} must be one of {KINDS}, got {kind!r}.")
    if pred.shape != xt.shape:
        raise ValueError(f"pred must have x_t's shape {tuple(xt.shape)}, got {tuple(pred.shape)}.")
    a, b, da, db = path.coefs(t, xt)
    checks = ((b, "b(t)", src == "x0" or dst == "score"), (a, "a(t)", src in ("eps", "score")))
    for coef, name, needed in checks:
        if needed and bool(torch.any(torch.as_tensor(coef) == 0)):
            raise ValueError(f"converting {src} -> {dst} divides by {name} = 0 here: at t = 0 the noise, and "
                             "at the linear path's t = 1 the data, cannot be recovered from x_t.")
    if src == "velocity":
        det = a * db - b * da  # 1 on the linear path
        # \hat x_0 = (b' x_t - b v) / det,  \hat\epsilon = (a v - a' x_t) / det
        x0, eps = (db * xt - b * pred) / det, (a * pred - da * xt) / det
    elif src == "x0":
        x0, eps = pred, (xt - a * pred) / b
    else:
        eps = pred if src == "eps" else -b * pred  # \epsilon = -b \nabla \log p_t
        x0 = (xt - b * eps) / a
    if dst == "x0":
        return x0
    if dst == "eps":
        return eps
    if dst == "score":
        return -eps / b
    return da * x0 + db * eps  # v = a' \hat x_0 + b' \hat\epsilon


def ddpm_times(sched: Schedule, steps: int) -> list[float]:
    """The linear-path times of DDIM's ``steps`` indices n (``diffusion.ddim_timesteps``), then 0.

    Step n of chapter 8's chain has a = sqrt(alpha-bar_n), b = sqrt(1 - alpha-bar_n), so t_lin = b / (a + b).
    """
    from .diffusion import ddim_timesteps

    ab = sched.alphas_bar[ddim_timesteps(sched.T, steps)]
    return ((1 - ab).sqrt() / (ab.sqrt() + (1 - ab).sqrt())).tolist() + [0.0]


def ddpm_velocity(eps_model: Callable[[Tensor, Tensor], Tensor], sched: Schedule) -> Velocity:
    """The linear-path velocity of chapter 8's eps_model(x, n): at (x, t), the step n whose t_lin is nearest.

    There x_vp = (a + b) x (``to_linear``), eps-hat = eps_model(x_vp, n), and on the linear path
    v = (eps-hat - x) / (1 - t). Euler with this v on ``ddpm_times`` is DDIM (eta = 0) exactly (tested).
    """
    ab = sched.alphas_bar
    t_grid = (1 - ab).sqrt() / (ab.sqrt() + (1 - ab).sqrt())  # increasing in n, (T,)

    def v(x: Tensor, t: Tensor) -> Tensor:
        n = (t_grid.to(x.device)[None, :] - t.double()[:, None]).abs().argmin(1)  # (B,)
        a, b = ab.to(x.device)[n].sqrt(), (1 - ab.to(x.device)[n]).sqrt()
        c = (a + b).to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        eps = eps_model(c * x, n)
        return (eps - x) / (1 - t.to(x.dtype)).reshape(-1, *[1] * (x.ndim - 1))

    return v


# --- the oracle: the marginal velocity of a Gaussian mixture -----------------------------------------

def mixture_velocity(means: Tensor, stds, weights, path: GaussianPath | None = None) -> Velocity:
    """E[u_t | x_t] for data sum_k w_k N(mu_k, s_k^2 I) on ``path``, in closed form (float64 inside).

    Given component k, (x_0, x_t) is jointly Gaussian: x_t ~ N(a mu_k, v_k I), v_k = a^2 s_k^2 + b^2,
    E[x_0 | x_t, k] = mu_k + a s_k^2 (x_t - a mu_k) / v_k and E[eps | x_t, k] = b (x_t - a mu_k) / v_k.
    With the responsibilities r_k = w_k N(x_t; a mu_k, v_k I) / p_t(x_t) (``probability.log_mixture``):
    v(x_t, t) = sum_k r_k [a' E[x_0 | x_t, k] + b' E[eps | x_t, k]]. On the linear path this is
    sum_k r_k [-mu_k + (t - (1 - t) s_k^2) (x_t - (1 - t) mu_k) / v_k]. means (K, D), stds (K,) > 0,
    weights (K,) summing to 1; the field takes x (B, D) and t (B,) or a number, returns x's dtype.
    """
    path = path if path is not None else LinearPath()
    means = torch.as_tensor(means, dtype=torch.float64)
    stds, weights = (torch.as_tensor(w, dtype=torch.float64).reshape(-1) for w in (stds, weights))
    if means.ndim != 2 or not means.shape[0] == stds.numel() == weights.numel():
        raise ValueError(f"need means (K, D), stds (K,) and weights (K,), got {tuple(means.shape)}, "
                         f"{tuple(stds.shape)}, {tuple(weights.shape)}.")
    if (stds <= 0).any():
        raise ValueError(f"stds must be positive, got {stds.tolist()}.")
    if (weights >= 0).all() and abs(weights.sum().item() - 1) < 1e-6:
        weights = weights / weights.sum()
    log_mixture(weights, torch.zeros(1, weights.numel(), dtype=torch.float64))  # checks the weights

    def v(x: Tensor, t) -> Tensor:
        if x.ndim != 2 or x.shape[1] != means.shape[1]:
            raise ValueError(f"x must have shape (B, {means.shape[1]}), got {tuple(x.shape)}.")
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0]).cpu()
        a, b, da, db = (c[:, None] for c in path.coefs(tt))  # (B, 1)
        var = a**2 * stds**2 + b**2  # v_k, (B, K)
        diff = x.double().cpu()[:, None, :] - a[:, :, None] * means  # x_t - a mu_k, (B, K, D)
        log_comp = -0.5 * (diff.pow(2).sum(-1) / var + means.shape[1] * torch.log(2 * math.pi * var))
        resp = torch.exp(weights.log() + log_comp - log_mixture(weights, log_comp)[:, None])  # r_k
        e_x0 = means + (a * stds**2 / var)[:, :, None] * diff  # E[x_0 | x_t, k]
        e_eps = (b / var)[:, :, None] * diff  # E[eps | x_t, k]
        vel = da[:, :, None] * e_x0 + db[:, :, None] * e_eps  # (B, K, D)
        return (resp[:, :, None] * vel).sum(1).to(x.device, x.dtype)

    return v


# --- samplers ----------------------------------------------------------------------------------

def time_grid(steps: int | Sequence[float]) -> list[float]:
    """Sampling times from 1 down to 0: ``steps`` K even steps [1, 1 - 1/K, ..., 0], or a given
    strictly decreasing list in [0, 1] (0 is appended if it does not end there)."""
    if not hasattr(steps, "__iter__") or getattr(steps, "ndim", 1) == 0:
        k = _checks.count(steps, "steps")
        return [1 - i / k for i in range(k)] + [0.0]
    times = [float(s) for s in steps]
    _time(times)
    if len(times) < 1 or any(b >= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError(f"steps must be a count or a strictly decreasing list of times in [0, 1], "
                         f"got {times}.")
    return times if times[-1] == 0 else times + [0.0]


@torch.no_grad()
def sample(v: Velocity, shape: Sequence[int], steps: int | Sequence[float] = 10, method: str = "euler", *,
           generator: torch.Generator | None = None, x1: Tensor | None = None, device=None,
           dtype: torch.dtype = torch.float32,
           return_trajectory: bool = False) -> tuple[Tensor, int] | tuple[Tensor, int, Tensor]:
    """Solve dx/dt = v(x, t) from x_1 ~ N(0, I) (or ``x1``) at t = 1 down to t = 0, on ``time_grid(steps)``.

    With h = t_{i+1} - t_i < 0 and d = v(x_i, t_i):
    euler     x_{i+1} = x_i + h d                                          (1 NFE per step)
    midpoint  x_{i+1} = x_i + h v(x_i + h d / 2, t_i + h / 2)              (2)
    heun      x_{i+1} = x_i + h (d + v(x_i + h d, t_{i+1})) / 2, but Euler on the last step to t = 0
              (2, and 1 on the last: 2K - 1 in all; as chapter 12 and EDM, which keeps v away from t = 0,
              where a VP-path velocity is singular; the global error stays O(h^2)).
    Returns (x_0, nfe) with nfe per image (a guided v counts 2 per call, ``guided_velocity``) and, with
    ``return_trajectory``, a CPU tensor (K + 1, *shape) of x at each time.
    """
    if method not in ("euler", "midpoint", "heun"):
        raise ValueError(f"method must be 'euler', 'midpoint' or 'heun', got {method!r}.")
    if not callable(v):
        raise TypeError(f"v must be callable as v(x, t), got {type(v).__name__}.")
    times = time_grid(steps)
    if device is None and x1 is None and isinstance(v, nn.Module):
        device = next((p.device for p in v.parameters()), None)
    x = _start(shape, x1, device, dtype, generator)
    per_call, nfe = getattr(v, "nfe_per_call", 1), 0

    def field(z: Tensor, t: float) -> Tensor:
        nonlocal nfe
        nfe += per_call
        return v(z, torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device))

    trajectory = [x.cpu()] if return_trajectory else None
    for t, t_next in zip(times, times[1:], strict=False):
        h = t_next - t
        d = field(x, t)
        if method == "midpoint":
            x = x + h * field(x + 0.5 * h * d, t + 0.5 * h)
        elif method == "heun" and t_next > 0:
            x = x + 0.5 * h * (d + field(x + h * d, t_next))
        else:
            x = x + h * d
        if trajectory is not None:
            trajectory.append(x.cpu())
    x = _check_result(x)
    return (x, nfe, torch.stack(trajectory)) if trajectory is not None else (x, nfe)


def guided_velocity(model: Velocity, y: Tensor, gamma: float, null_label: int | None = None) -> Velocity:
    """v_null + gamma (v_y - v_null), chapter 9's classifier-free guidance for a velocity model.

    gamma = 0: unconditional, 1: conditional, > 1: guided (Ho & Salimans' w = gamma - 1). Since
    v = a' x0-hat + b' eps-hat is affine in eps-hat at fixed (x_t, t), guiding v is guiding eps.
    ``model(x, t, y)`` is class-conditional with the null label ``null_label`` (default:
    ``model.null_label``). The two predictions are one batched call on 2B images (``guidance.cfg_eps``),
    which the samplers count as 2 NFE per image (``nfe_per_call``); gamma 0 or 1 costs one.
    """
    null_label = null_label if null_label is not None else getattr(model, "null_label", None)
    if null_label is None:
        raise ValueError("guided_velocity needs a class-conditional model (a UNet with num_classes set).")
    gamma = _checks.number(gamma, "gamma", low=0.0, what=" (0: unconditional, 1: conditional)")
    y = _checks.labels(y, null_label)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"guided_velocity was built for {y.shape[0]} labels, got a batch of "
                             f"{x.shape[0]}.")
        if gamma in (0.0, 1.0):
            return model(x, t, (y if gamma == 1 else torch.full_like(y, null_label)).to(x.device))
        return cfg_eps(model, x, t, y, gamma, null_label)

    guided.nfe_per_call = 1 if gamma in (0.0, 1.0) else 2
    return guided


# --- likelihood: the instantaneous change of variables ---------------------------------------------

def ode_log_likelihood(v: Velocity, x: Tensor, steps: int = 100, *, rho: float = 3.0,
                       n_probes: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """log p_0(x) in nats per example, (B,) float64, of the flow dx/dt = v(x, t) with x_1 ~ N(0, I).

    Carries x from t = 0 (data) to t = 1 (noise) by Heun's method (``flows.continuous_flow``, one step
    per interval) on the times t_i = (i / K)^rho, i = 0..K = ``steps`` (2 K forward passes, each with the
    divergence's backward passes), and log p_0(x_0) = log N(x_1; 0, I) + int_0^1 div v(x_t, t) dt
    (chapter 11's continuous change of variables). Near the data the field bends fastest (its divergence
    grows like D / t on a thin data set), so the grid crowds the steps there: on fm_mnist's digits
    uniform steps (rho = 1) are still 0.7 bits/dim low at K = 100, rho = 3 is within 0.02 of K = 400.
    div is exact (``n_probes`` None: D backward passes, small D) or Hutchinson's estimate with
    ``n_probes`` Rademacher probes (unbiased for the integral, so for log p as well).
    """
    from .flows import continuous_flow

    if not callable(v):
        raise TypeError(f"v must be callable as v(x, t), got {type(v).__name__}.")
    steps = _checks.count(steps, "steps")
    rho = _checks.number(rho, "rho", low=0.0, low_open=True)
    times = [(i / steps) ** rho for i in range(steps + 1)]

    def field(z: Tensor, t: float) -> Tensor:
        return v(z, torch.full((z.shape[0],), t, dtype=z.dtype, device=z.device))

    x1, delta = x, 0.0
    for t, t_next in zip(times, times[1:], strict=False):
        x1, d = continuous_flow(field, x1, t, t_next, n_steps=1, n_probes=n_probes, generator=generator)
        delta = delta + d.double()  # -int div v dt over [t, t_next]
    d = x1[0].numel()
    # log p_0(x_0) = log p_1(x_1) - delta, delta = -int_0^1 div v dt
    log_p1 = -0.5 * (x1.flatten(1).double().pow(2).sum(1) + d * math.log(2 * math.pi))
    return log_p1 - delta


def ode_bits_per_dim(v: Velocity, images: Tensor, steps: int = 100, *, rho: float = 3.0,
                     n_probes: int | None = 1, generator: torch.Generator | None = None) -> Tensor:
    """Bits/dim of 8-bit images under the flow of data in [-1, 1], (B,): an upper bound in expectation.

    The protocol of ``sde.ode_bits_per_dim`` (chapter 12): y = (k + u) / 256 with u ~ U[0, 1)^D
    (``flows.dequantize``, one draw per image), x = 2 y - 1, log P(k) >= log p_X(x) + D log 2 - D log 256,
    bits/dim = -that / (D ln 2). ``steps``, ``rho``, ``n_probes``: ``ode_log_likelihood``'s.
    """
    from .flows import bits_per_dim, dequantize

    x = 2 * dequantize(images, generator) - 1
    d = x[0].numel()
    log_p = ode_log_likelihood(v, x, steps, rho=rho, n_probes=n_probes, generator=generator)
    bound = log_p + d * math.log(2) - d * math.log(256)
    return bits_per_dim(-bound, d)


# --- rectified flow: reflow pairs, straightness, distillation ------------------------------------

@torch.no_grad()
def reflow_pairs(v: Velocity, shape: Sequence[int], steps: int | Sequence[float] = 50,
                 method: str = "heun", *, batch_size: int = 500, generator: torch.Generator | None = None,
                 device=None, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, int]:
    """Couple noise with the samples it flows to: (x_1, x_0 = ODE solution from x_1, nfe per image).

    Training a new velocity on the linear interpolations of these pairs (``cfm_loss(v, x0, eps=x1)``) is
    Liu et al.'s reflow: the new flow has the same marginals and straighter paths. shape (N, ...); the
    ODE runs ``batch_size`` images at a time; both tensors come back on the CPU.
    """
    shape = tuple(shape)
    n, size = _checks.count(shape[0], "shape[0]"), _checks.count(batch_size, "batch_size")
    noise, data, nfe = [], [], 0
    for k in range(0, n, size):
        x1 = _start((min(size, n - k), *shape[1:]), None, device, dtype, generator)
        x0, nfe = sample(v, x1.shape, steps, method, x1=x1, dtype=dtype)
        noise.append(x1.cpu())
        data.append(x0.cpu())
    return torch.cat(noise), torch.cat(data), nfe


def straightness(trajectory: Tensor, times: Sequence[float]) -> Tensor:
    """S = 1/|t_K - t_0| sum_i |dt_i| ||dx_i / dt_i - (x_K - x_0) / (t_K - t_0)||^2 per path, (B,) float64.

    The discrete form of Liu et al.'s E int ||v(x_t, t) - (x_1 - x_0)||^2 dt: 0 exactly when every path is a
    straight line run at constant speed (then one Euler step is exact). trajectory (K + 1, B, ...) from
    ``sample(..., return_trajectory=True)`` and its K + 1 times (``time_grid(steps)``).
    """
    _checks.tensor(trajectory, "trajectory", min_ndim=2)
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.ndim != 1 or times.numel() != trajectory.shape[0] or times.numel() < 2:
        raise ValueError(f"need one time per trajectory point ({trajectory.shape[0]}), got {times.numel()}.")
    x = trajectory.double().flatten(2)  # (K + 1, B, D)
    dt = times.diff()[:, None, None]  # (K, 1, 1)
    total = (x[-1] - x[0]) / (times[-1] - times[0])  # (B, D)
    dev = ((x.diff(dim=0) / dt - total) ** 2).sum(-1)  # (K, B)
    return (dt.abs()[:, :, 0] * dev).sum(0) / (times[-1] - times[0]).abs()


def make_flow_matching_step(model: nn.Module, opt: torch.optim.Optimizer,
                            batch: Callable[[int], Tensor | tuple[Tensor, ...]],
                            path: GaussianPath | None = None, *, coupled: bool = False,
                            times: Sequence[float] | None = None, t_min: float = 0.0,
                            ema: nn.Module | None = None, lr_scheduler=None, grad_clip: float | None = 1.0,
                            amp: torch.dtype | None = None, generator: torch.Generator | None = None,
                            p_uncond: float | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: ``cfm_loss`` of the velocity ``model(x, t[, y])`` on ``batch(i)``, Adam, EMA.

    Flow matching: ``batch(i)`` gives x_0 (or (x_0, y)), eps is fresh noise. Reflow (``coupled``): it gives
    (x_0, x_1[, y]) from ``reflow_pairs``, and x_1 is the noise. Distillation: ``times`` restricts t to a
    grid, e.g. [1.0] trains the one-step student x_0 = x_1 - v(x_1, 1) on the pairs (Liu et al.'s
    k-step distillation with [1.0, 0.5] for two steps). ``p_uncond`` drops labels to the null label
    (chapter 9's ``label_dropout``); ``amp``, ``grad_clip``, ``ema`` as in ``diffusion.make_diffusion_step``.
    """
    path = path if path is not None else LinearPath()
    null = getattr(model, "null_label", None)
    if p_uncond is not None and null is None:
        raise ValueError("p_uncond needs a class-conditional model (a UNet with num_classes set).")
    grid = None
    if times is not None:
        grid = _time([float(s) for s in times])[0].reshape(-1)
        if not grid.numel():
            raise ValueError("times must list at least one time in [0, 1], e.g. [1.0] (a one-step student).")

    def step(i: int) -> dict[str, float]:
        got = batch(i)
        parts = list(got) if isinstance(got, (tuple, list)) else [got]
        x0 = parts[0]
        eps = parts[1] if coupled else None
        if coupled and (len(parts) < 2 or eps.shape != x0.shape):
            raise ValueError("with coupled=True, batch(i) must return (x_0, x_1[, y]) of equal shapes.")
        y = parts[2 if coupled else 1] if len(parts) > (2 if coupled else 1) and null is not None else None
        if y is not None and p_uncond is not None:
            y = label_dropout(y, p_uncond, null, generator).to(x0.device)
        t = None
        if grid is not None:
            where = generator.device if generator is not None else "cpu"
            t = grid[torch.randint(grid.numel(), (x0.shape[0],), generator=generator, device=where).cpu()]
        model.train()
        with torch.autocast(device_type=x0.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = cfm_loss(model, x0, path, eps=eps, t=t, y=y, t_min=t_min, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        return {"loss": loss.item()}

    return step
