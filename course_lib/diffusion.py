"""Diffusion models (chapter 8): noise schedules, the forward process, its posterior, the loss,
and the DDPM and DDIM samplers.

The diffusion code never owns the network: every function that needs one takes an
``eps_model(x_t, t) -> eps_hat``, any callable with that signature (a ``UNet``, a closed-form
oracle, or chapter 9's guided prediction), so a new predictor plugs in without a new sampler::

    sched = linear_schedule(T=1000)
    loss = diffusion_loss(model, sched, x0)                # Ho et al.'s simple loss
    x = ddim_sample(model, sched, (16, 1, 28, 28), steps=50)

Conventions (stated once): the time index ``t`` is **0-based**, ``t = 0, ..., T-1``; the code's
``t`` is the paper's ``t + 1``. So ``sched.betas[t]`` is Ho et al.'s beta_{t+1},
``sched.alphas_bar[t]`` = prod_{s <= t} (1 - betas[s]) is the paper's alpha-bar_{t+1}, and
``sched.alphas_bar_prev[0] = 1`` stands for the paper's alpha-bar_0 = 1 (no noise: x_0 itself).
States keep the paper's names: x_0 is the clean data, and sampling starts from x_T ~ N(0, I) (the
argument ``x_T``), which the network sees with the code's t = T-1, and returns x_0. In a formula for
one step, x_t is that step's input and alpha-bar_t means ``alphas_bar[t]``.
The schedule's tensors are float64 on the CPU; they are gathered and cast to the images' dtype and
device per call. DDIM's paper writes alpha_t for what is alpha-bar_t here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import _checks
from .probability import log_mixture

Tensor = torch.Tensor
EpsModel = Callable[[Tensor, Tensor], Tensor]
__all__ = ["Schedule", "linear_schedule", "cosine_schedule", "q_sample", "q_posterior", "predict_x0",
           "eps_from_x0", "p_mean", "reverse_variance", "loss_weight", "diffusion_loss",
           "ddpm_step", "ddim_step", "ddim_timesteps", "ddpm_sample", "ddim_sample",
           "gaussian_data_eps", "gaussian_mixture_eps", "label_dropout", "make_diffusion_step",
           "schedule_from_spec", "check_schedule", "discretised_gaussian_log_prob", "elbo_bits_per_dim"]


# --- schedules ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Schedule:
    """A variance schedule beta_0, ..., beta_{T-1} (0-based) and the terms derived from it (float64).

    Build one with ``linear_schedule`` or ``cosine_schedule``, or ``Schedule.from_betas(betas)``.
    ``spec`` records how it was built (``{"kind": "linear", "T": 1000, ...}``; None for custom betas),
    so that a trained model can say which schedule it needs (``check_schedule``).
    """

    betas: Tensor  # (T,) beta_t = Var of the noise added at step t, in (0, 1)
    alphas: Tensor  # (T,) alpha_t = 1 - beta_t
    alphas_bar: Tensor  # (T,) alpha-bar_t = prod_{s <= t} alpha_s: q(x_t | x_0) keeps sqrt of it of x_0
    alphas_bar_prev: Tensor  # (T,) alpha-bar_{t-1}, with alpha-bar_{-1} = 1 (the clean data)
    posterior_variance: Tensor  # (T,) beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t
    spec: dict | None = None  # how it was built, e.g. {"kind": "linear", "T": 1000, "beta_start": ...}

    @classmethod
    def from_betas(cls, betas: Tensor | Sequence[float], spec: dict | None = None) -> Schedule:
        """The schedule of the given betas (any 1-D sequence of T >= 1 numbers in (0, 1))."""
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError("betas must be a 1-D sequence of T >= 1 numbers, got shape "
                             f"{tuple(betas.shape)}.")
        if not torch.all((betas > 0) & (betas < 1)):
            bad = betas[~((betas > 0) & (betas < 1))][:3].tolist()
            raise ValueError(f"Every beta_t must lie strictly in (0, 1) (it is the variance of the noise "
                             f"added at step t, and 1 - beta_t is kept), got values such as {bad}.")
        # alpha_t = 1 - beta_t
        alphas = 1.0 - betas
        # \bar\alpha_t = \prod_{s \le t} \alpha_s
        alphas_bar = torch.cumprod(alphas, dim=0)
        # \bar\alpha_{t-1}, with \bar\alpha_{-1} = 1
        alphas_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_bar[:-1]])
        # \tilde\beta_t = (1 - \bar\alpha_{t-1}) / (1 - \bar\alpha_t) \beta_t
        posterior_variance = (1.0 - alphas_bar_prev) / (1.0 - alphas_bar) * betas
        return cls(betas, alphas, alphas_bar, alphas_bar_prev, posterior_variance, spec)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.betas.numel()

    def snr(self) -> Tensor:
        """Signal-to-noise ratio of q(x_t | x_0): alpha-bar_t / (1 - alpha-bar_t), shape (T,)."""
        return self.alphas_bar / (1.0 - self.alphas_bar)

    def __repr__(self) -> str:
        lo, hi = self.betas.min().item(), self.betas.max().item()
        last = self.alphas_bar[-1].item()
        return f"Schedule(T={self.T}, beta in [{lo:.3g}, {hi:.3g}], alpha-bar_(T-1)={last:.3g})"


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Ho et al.'s linear schedule: beta_t evenly spaced from ``beta_start`` to ``beta_end`` (T = 1000).

    For much smaller T, pass larger betas (e.g. T = 100, beta_end = 0.2), or ``alphas_bar[T-1]`` (the
    paper's alpha-bar_T) stays far from 0 and x_T, where sampling starts, is not yet noise.
    """
    T = _check_T(T)
    beta_start, beta_end = _checks.number(beta_start, "beta_start"), _checks.number(beta_end, "beta_end")
    return Schedule.from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64),
                               {"kind": "linear", "T": T, "beta_start": beta_start, "beta_end": beta_end})


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine schedule: alpha-bar(u) = f(u) / f(0), f(u) = cos^2(pi/2 (u + s)/(1 + s)).

    With the grid u_k = k / T, k = 0, ..., T, the 0-based step t has
    beta_t = 1 - alpha-bar(u_{t+1}) / alpha-bar(u_t), clipped at ``max_beta`` (the last steps would
    otherwise have beta = 1).
    """
    T = _check_T(T)
    s, max_beta = _checks.number(s, "s"), _checks.number(max_beta, "max_beta")
    if not 0 < max_beta < 1 or s < 0:
        raise ValueError(f"cosine_schedule needs s >= 0 and max_beta in (0, 1), got s={s}, "
                         f"max_beta={max_beta}.")
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    # \beta_t = 1 - \bar\alpha(u_{t+1}) / \bar\alpha(u_t)  (f(0) cancels)
    betas = (1.0 - f[1:] / f[:-1]).clamp(min=1e-8, max=max_beta)
    return Schedule.from_betas(betas, {"kind": "cosine", "T": T, "s": s, "max_beta": max_beta})


def _check_T(T: int) -> int:
    try:
        return _checks.count(T, "T (the number of diffusion steps)")
    except TypeError as err:
        raise ValueError(str(err)) from None


_MAKERS = {"linear": ("linear_schedule", ("T", "beta_start", "beta_end")),
           "cosine": ("cosine_schedule", ("T", "s", "max_beta"))}


def schedule_from_spec(spec: dict) -> Schedule:
    """The schedule a ``Schedule.spec`` describes, e.g. ``{"kind": "linear", "T": 1000}`` (a checkpoint's)."""
    if not isinstance(spec, dict) or spec.get("kind") not in _MAKERS:
        raise ValueError(f"a schedule spec is a dict with kind 'linear' or 'cosine', got {spec!r}.")
    name, keys = _MAKERS[spec["kind"]]
    unknown = set(spec) - {"kind", *keys}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in the {spec['kind']} schedule spec {spec!r}.")
    return globals()[name](**{k: v for k, v in spec.items() if k != "kind"})


def _describe(sched: Schedule) -> str:
    """How to build ``sched`` again, as code: 'linear_schedule(T=1000)' (defaults left out)."""
    if sched.spec is None or sched.spec.get("kind") not in _MAKERS:
        return f"Schedule.from_betas(...) with T = {sched.T}"
    name, keys = _MAKERS[sched.spec["kind"]]
    defaults = {"beta_start": 1e-4, "beta_end": 0.02, "s": 0.008, "max_beta": 0.999}
    args = [f"{k}={sched.spec[k]!r}" for k in keys if k in sched.spec and sched.spec[k] != defaults.get(k)]
    return f"{name}({', '.join(args)})"


def _check_sched(sched) -> Schedule:
    if not isinstance(sched, Schedule):
        raise TypeError(f"sched must be a diffusion.Schedule (e.g. sched = linear_schedule(1000)), got "
                        f"{type(sched).__name__} {sched!r}.")
    return sched


def _trained_schedule(model) -> Schedule | None:
    """The schedule a model records it was trained with (``model.trained_schedule``), or None.

    ``pretrained.load`` and ``make_diffusion_step`` set it; an ``AveragedModel`` (EMA) is looked into."""
    for obj in (model, getattr(model, "module", None)):
        found = getattr(obj, "trained_schedule", None)
        if isinstance(found, Schedule):
            return found
    return None


def check_schedule(model, sched: Schedule) -> Schedule:
    """Refuse to run ``model`` with a schedule other than the one it was trained with.

    A network trained on one schedule predicts the noise of that schedule's noise levels; fed the
    times of another (T = 100 instead of 1000, or cosine for linear) it returns confident nonsense
    and the samples are noise, silently. Models that record no schedule pass unchecked. Returns sched.
    """
    _check_sched(sched)
    trained = _trained_schedule(model)
    if trained is None or trained is sched:
        return sched
    if trained.T != sched.T or not torch.allclose(trained.betas, sched.betas, rtol=1e-6, atol=1e-12):
        raise ValueError(
            f"this model was trained with {trained!r}, built by {_describe(trained)}, but is run with "
            f"{sched!r}. A network trained on one schedule predicts the noise of its noise levels only, "
            f"so the samples would be noise. Use sched = {_describe(trained)}; for fewer sampling steps "
            "keep that schedule and pass ddim_sample(..., steps=k).")
    return sched


def _gather(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] as (B, 1, ..., 1) in ``like``'s dtype and device, to broadcast over one example."""
    return values.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _randn(shape: Sequence[int], like_device, dtype: torch.dtype,
           generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise drawn on the generator's device (CPU by default), moved to ``like_device``."""
    where = generator.device if generator is not None else "cpu"
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=where).to(like_device)


def _check_t(sched: Schedule, t: Tensor | int, x: Tensor) -> Tensor:
    """Validate a batch of 0-based times against the schedule and the batch; return (B,) long."""
    _check_sched(sched)
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError("Expected a batch tensor of shape (B, ...).")
    t = torch.as_tensor(t, device=x.device)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integer time indices (0-based), not {t.dtype}: e.g. "
                        "torch.randint(sched.T, (B,)) or torch.full((B,), t).")
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}.")
    if t.numel() and (t.min() < 0 or t.max() >= sched.T):
        raise ValueError(f"t must lie in [0, T-1] = [0, {sched.T - 1}] (0-based; the paper's t = 1..T is "
                         f"t + 1 here), got values in [{t.min().item()}, {t.max().item()}].")
    return t.long()


# --- forward process and its posterior ---------------------------------------------------------

def q_sample(sched: Schedule, x0: Tensor, t: Tensor | int, eps: Tensor | None = None, *,
             generator: torch.Generator | None = None) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0, (1 - alpha-bar_t) I).

    x0: (B, ...); t: (B,) 0-based integer times (or one int); eps: noise like x0 (drawn if None).
    Returns x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps, shape (B, ...).
    """
    _checks.floating(_checks.tensor(x0, "x0", nonempty=False), "x0",
                     " (scale integer images first, e.g. x0 = 2 * images / 255 - 1)")
    t = _check_t(sched, t, x0)
    if eps is None:
        eps = _randn(x0.shape, x0.device, x0.dtype, generator)
    elif eps.shape != x0.shape:
        raise ValueError(f"eps must have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}.")
    a_bar = _gather(sched.alphas_bar, t, x0)
    # x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t} \epsilon
    return a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps


def q_posterior(sched: Schedule, x0: Tensor, xt: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) = N(mu-tilde_t, beta-tilde_t I).

    mu-tilde_t = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t) x_0
               + sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) x_t.
    x0, xt: (B, ...); t: (B,). Returns mean (B, ...) and variance (B, 1, ..., 1). At t = 0 the
    variance is 0 and the mean is x_0 (the paper's step from x_1 to x_0).
    """
    if x0.shape != xt.shape:
        raise ValueError(f"x0 and xt must have the same shape, got {tuple(x0.shape)} and {tuple(xt.shape)}.")
    t = _check_t(sched, t, xt)
    beta, alpha = _gather(sched.betas, t, xt), _gather(sched.alphas, t, xt)
    a_bar, a_bar_prev = _gather(sched.alphas_bar, t, xt), _gather(sched.alphas_bar_prev, t, xt)
    # \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0
    #             + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t
    mean = a_bar_prev.sqrt() * beta / (1 - a_bar) * x0 + alpha.sqrt() * (1 - a_bar_prev) / (1 - a_bar) * xt
    # \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t
    return mean, _gather(sched.posterior_variance, t, xt)


def predict_x0(sched: Schedule, xt: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
    """x0-hat = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t): q_sample solved for x_0; (B, ...)."""
    t = _check_t(sched, t, xt)
    a_bar = _gather(sched.alphas_bar, t, xt)
    return (xt - (1 - a_bar).sqrt() * eps) / a_bar.sqrt()


def eps_from_x0(sched: Schedule, xt: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t): q_sample solved for eps."""
    t = _check_t(sched, t, xt)
    a_bar = _gather(sched.alphas_bar, t, xt)
    return (xt - a_bar.sqrt() * x0) / (1 - a_bar).sqrt()


def p_mean(sched: Schedule, xt: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
    """The reverse model's mean mu_theta = (x_t - beta_t / sqrt(1 - alpha-bar_t) eps) / sqrt(alpha_t).

    It is mu-tilde_t with x_0 replaced by predict_x0(x_t, eps). Shapes (B, ...).
    """
    t = _check_t(sched, t, xt)
    beta, alpha = _gather(sched.betas, t, xt), _gather(sched.alphas, t, xt)
    a_bar = _gather(sched.alphas_bar, t, xt)
    # \mu_\theta = \frac{1}{\sqrt{\alpha_t}} (x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}} \epsilon_\theta)
    return (xt - beta / (1 - a_bar).sqrt() * eps) / alpha.sqrt()


def reverse_variance(sched: Schedule, kind: str = "beta_tilde") -> Tensor:
    """sigma_t^2 of p_theta(x_{t-1} | x_t), shape (T,): ``"beta_tilde"`` (the posterior's) or ``"beta"``."""
    if kind == "beta_tilde":
        return sched.posterior_variance
    if kind == "beta":
        return sched.betas
    raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {kind!r}.")


def loss_weight(sched: Schedule, t: Tensor | int, variance: str = "beta_tilde") -> Tensor:
    """The weight of L_{t-1} in eps: beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t)), float64, shape (B,).

    For t >= 1: KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) = const + weight * ||eps - eps_theta||^2.
    """
    _check_sched(sched)
    t = torch.as_tensor(t)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"t must hold integer time indices (0-based), not {t.dtype}.")
    t = t.long().reshape(-1)
    if t.numel() and (t.min() < 1 or t.max() >= sched.T):
        raise ValueError(f"L_(t-1) is a KL between Gaussians for t in [1, T-1] = [1, {sched.T - 1}] "
                         "(at t = 0 the posterior is a point and the term is L_0); got "
                         f"[{t.min().item()}, {t.max().item()}].")
    sigma2 = reverse_variance(sched, variance)[t]
    beta, alpha, a_bar = sched.betas[t], sched.alphas[t], sched.alphas_bar[t]
    return beta**2 / (2 * sigma2 * alpha * (1 - a_bar))


def diffusion_loss(eps_model: EpsModel, sched: Schedule, x0: Tensor, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """Ho et al.'s simple loss, E_{t, eps} ||eps - eps_theta(x_t, t)||^2 with x_t from ``q_sample``.

    One t ~ Uniform{0, ..., T-1} and one eps ~ N(0, I) per example; the mean over the batch and
    all coordinates (MSE). x0: (B, ...). Returns a scalar tensor.
    """
    if not isinstance(x0, Tensor) or x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError("x0 must be a batch tensor of shape (B, ...) with B >= 1.")
    _checks.floating(x0, "x0", " (scale integer images first, e.g. x0 = 2 * images / 255 - 1)")
    _check_sched(sched)
    where = generator.device if generator is not None else "cpu"
    t = torch.randint(sched.T, (x0.shape[0],), generator=generator, device=where).to(x0.device)
    eps = _randn(x0.shape, x0.device, x0.dtype, generator)
    xt = q_sample(sched, x0, t, eps)
    return torch.mean((eps - eps_model(xt, t)) ** 2)


# --- samplers ----------------------------------------------------------------------------------

def ddpm_step(sched: Schedule, eps: Tensor, xt: Tensor, t: int, noise: Tensor | None = None, *,
              variance: str = "beta_tilde", clip_x0: float | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """One ancestral step x_t -> x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) (Ho et al. 2020).

    eps: the model's eps_theta(x_t, t), shape of xt; t: one 0-based int; noise: z ~ N(0, I) (drawn
    if None; unused at t = 0). ``clip_x0`` clamps x0-hat to [-c, c] before forming the mean.
    """
    if eps.shape != xt.shape:
        raise ValueError(f"eps must have xt's shape {tuple(xt.shape)}, got {tuple(eps.shape)}.")
    t = _check_step(t, "t")
    clip_x0 = _check_clip(clip_x0)
    tt = _check_t(sched, t, xt)
    # (1) \hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta) / \sqrt{\bar\alpha_t}
    x0_hat = predict_x0(sched, xt, tt, eps)
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
    # (2) \mu_\theta = \tilde\mu_t(\hat x_0, x_t)
    #               = (x_t - \beta_t / \sqrt{1-\bar\alpha_t}\,\epsilon_\theta) / \sqrt{\alpha_t}  (unclipped)
    mean, _ = q_posterior(sched, x0_hat, xt, tt)
    if int(t) == 0:
        return mean  # (3) the last step adds no noise: x_0 = \mu_\theta(x_1)
    sigma = _gather(reverse_variance(sched, variance).sqrt(), tt, xt)
    if noise is None:
        noise = _randn(xt.shape, xt.device, xt.dtype, generator)
    # (3) x_{t-1} = \mu_\theta + \sigma_t z,  z \sim N(0, I)
    return mean + sigma * noise


def ddim_step(sched: Schedule, eps: Tensor, xt: Tensor, t: int, t_prev: int, eta: float = 0.0,
              noise: Tensor | None = None, *, clip_x0: float | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """One DDIM step x_t -> x_{t'} with t' = ``t_prev`` < t (t' = -1: to the clean data), Song et al. eq. 12.

    x_{t'} = sqrt(alpha-bar_{t'}) x0-hat + sqrt(1 - alpha-bar_{t'} - sigma^2) eps + sigma z, with
    sigma = eta sqrt((1 - alpha-bar_{t'}) / (1 - alpha-bar_t)) sqrt(1 - alpha-bar_t / alpha-bar_{t'}).
    eta = 0: deterministic; eta = 1 with t' = t - 1: DDPM's step with sigma_t^2 = beta-tilde_t.
    """
    if eps.shape != xt.shape:
        raise ValueError(f"eps must have xt's shape {tuple(xt.shape)}, got {tuple(eps.shape)}.")
    eta = _check_eta(eta)
    t, t_prev = _check_step(t, "t"), _check_step(t_prev, "t_prev", -1)
    clip_x0 = _check_clip(clip_x0)
    tt = _check_t(sched, t, xt)
    if not -1 <= int(t_prev) < int(t):
        raise ValueError(f"t_prev must satisfy -1 <= t_prev < t = {int(t)}, got {t_prev}.")
    a_bar = sched.alphas_bar[int(t)].item()
    a_bar_prev = sched.alphas_bar[int(t_prev)].item() if t_prev >= 0 else 1.0
    # (1) \hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta) / \sqrt{\bar\alpha_t}
    x0_hat = predict_x0(sched, xt, tt, eps)
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
        # keep eps consistent with the clipped x0-hat:
        # \epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0) / \sqrt{1-\bar\alpha_t}
        eps = eps_from_x0(sched, xt, tt, x0_hat)
    # (2) \sigma = \eta \sqrt{(1-\bar\alpha_{t'})/(1-\bar\alpha_t)} \sqrt{1-\bar\alpha_t/\bar\alpha_{t'}}
    sigma = eta * math.sqrt((1 - a_bar_prev) / (1 - a_bar)) * math.sqrt(max(1 - a_bar / a_bar_prev, 0.0))
    # (3) the direction pointing to x_t: \sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\epsilon_\theta
    direction = math.sqrt(max(1 - a_bar_prev - sigma**2, 0.0)) * eps
    # (4) x_{t'} = \sqrt{\bar\alpha_{t'}}\hat x_0 + direction + \sigma z
    x = math.sqrt(a_bar_prev) * x0_hat + direction
    if sigma > 0:
        if noise is None:
            noise = _randn(xt.shape, xt.device, xt.dtype, generator)
        x = x + sigma * noise
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` 0-based times from T-1 down to 0, evenly spaced (rounded): the DDIM subsequence.

    It always starts at T-1 (the noisiest step, whose marginal the prior N(0, I) matches) and ends
    at 0; with steps = T it is every step T-1, ..., 0.
    """
    T, given = _check_T(T), steps
    try:
        steps = _checks.count(steps, "steps")
    except (TypeError, ValueError):
        steps = 0
    if not 1 <= steps <= T:
        raise ValueError(f"steps (the number of DDIM steps) must be an integer in [1, T] = [1, {T}], "
                         f"got {given!r}.")
    if steps == 1:
        return [T - 1]
    return [round((T - 1) * (1 - k / (steps - 1))) for k in range(steps)]


def _check_step(t, name: str, minimum: int = 0) -> int:
    """One time index as a Python int (numpy and 0-dim tensor integers accepted)."""
    try:
        return _checks.count(t, name, minimum)
    except ValueError:
        raise ValueError(f"{name} must be a 0-based time index >= {minimum}, got {t!r}.") from None


def _check_eta(eta: float) -> float:
    return _checks.number(eta, "eta", low=0.0, what=" (0: deterministic DDIM, 1: DDPM's noise)")


def _check_clip(clip_x0: float | None) -> float | None:
    if clip_x0 is None:
        return None
    return _checks.number(clip_x0, "clip_x0", low=0.0, low_open=True,
                          what=" (x0-hat is clamped to [-clip_x0, clip_x0]; 1.0 for images in [-1, 1])")


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float32, got {dtype!r}.")
    return dtype


def _start(shape: Sequence[int], x_T: Tensor | None, device, dtype, generator) -> Tensor:
    """The starting noise x_T ~ N(0, I) of ``shape`` (numpy integers accepted), or the given x_T checked."""
    _check_dtype(dtype)
    try:
        shape = tuple(shape)
        if not shape or any(isinstance(s, bool) for s in shape):
            raise TypeError
        shape = tuple(_checks.count(s, "size") for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a tuple of positive integers (B, ...), e.g. (16, 1, 28, 28), "
                         f"got {shape!r}.") from None
    if x_T is not None:
        _checks.tensor(x_T, "x_T")
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}.")
        _checks.finite(_checks.floating(x_T, "x_T"), "x_T")
        return x_T.to(device=device or x_T.device, dtype=dtype)
    return _randn(shape, device or "cpu", dtype, generator)


def _check_sampler_args(eps_model, sched: Schedule, variance: str | None = None, device=None, x_T=None):
    """Once per sampling call: a callable model, a schedule it was trained with, a known variance.

    Returns the device to sample on: ``device``, else x_T's, else the network's (a module's
    parameters), else the CPU.
    """
    if not callable(eps_model):
        raise TypeError(f"eps_model must be callable as eps_model(x_t, t), got {type(eps_model).__name__}.")
    check_schedule(eps_model, sched)
    if variance is not None:
        reverse_variance(sched, variance)
    if device is None and x_T is None and isinstance(eps_model, torch.nn.Module):
        device = next((p.device for p in eps_model.parameters()), None)
    return device


def _check_result(x: Tensor) -> Tensor:
    if not torch.isfinite(x).all():
        raise ValueError("the sampler produced NaN or infinite values: the model's predictions are not "
                         "finite (diverged weights?). Check the model on one batch, eps_model(x_t, t).")
    return x


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, sched: Schedule, shape: Sequence[int], *,
                generator: torch.Generator | None = None, variance: str = "beta_tilde",
                clip_x0: float | None = None, x_T: Tensor | None = None,
                device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                return_trajectory: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Ancestral sampling (Ho et al., Alg. 2): x_T ~ N(0, I), then T steps of ``ddpm_step`` to x_0.

    Returns x_0 of ``shape``; with ``return_trajectory`` also a CPU tensor (T + 1, *shape) of
    x_T (the start), x_{T-1}, ..., x_0, the image after each step.
    """
    device = _check_sampler_args(eps_model, sched, variance, device, x_T)
    clip_x0 = _check_clip(clip_x0)
    x = _start(shape, x_T, device, dtype, generator)
    trajectory = [x.cpu()] if return_trajectory else None
    for t in range(sched.T - 1, -1, -1):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_model(x, tt)
        x = ddpm_step(sched, eps, x, t, variance=variance, clip_x0=clip_x0, generator=generator)
        if trajectory is not None:
            trajectory.append(x.cpu())
    _check_result(x)
    return (x, torch.stack(trajectory)) if trajectory is not None else x


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, sched: Schedule, shape: Sequence[int], steps: int | Sequence[int] = 50,
                eta: float = 0.0, *, generator: torch.Generator | None = None,
                clip_x0: float | None = None, x_T: Tensor | None = None,
                device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                return_trajectory: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """DDIM sampling (Song et al. 2021) on a subsequence of ``steps`` times (see ``ddim_timesteps``).

    ``steps`` is a count or an explicit strictly decreasing list of 0-based times. Each step is
    ``ddim_step`` from the current time to the next one, the last to t' = -1 (x0-hat itself).
    Returns x_0 (and, with ``return_trajectory``, a CPU tensor (len(steps) + 1, *shape)).
    """
    eta = _check_eta(eta)
    device = _check_sampler_args(eps_model, sched, None, device, x_T)
    clip_x0 = _check_clip(clip_x0)
    times = _ddim_times(sched, steps)
    if not times or any(b >= a for a, b in zip(times, times[1:], strict=False)) or times[0] >= sched.T \
            or times[-1] < 0:
        raise ValueError(f"steps must be a strictly decreasing list of times in [0, {sched.T - 1}], "
                         f"got {times}.")
    x = _start(shape, x_T, device, dtype, generator)
    trajectory = [x.cpu()] if return_trajectory else None
    for t, t_prev in zip(times, times[1:] + [-1], strict=True):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_model(x, tt)
        x = ddim_step(sched, eps, x, t, t_prev, eta, clip_x0=clip_x0, generator=generator)
        if trajectory is not None:
            trajectory.append(x.cpu())
    _check_result(x)
    return (x, torch.stack(trajectory)) if trajectory is not None else x


def _ddim_times(sched: Schedule, steps) -> list[int]:
    """A step count (int or numpy integer) or an explicit decreasing list of times, as a list."""
    if getattr(steps, "ndim", 1) == 0 or not hasattr(steps, "__iter__") or isinstance(steps, (str, bytes)):
        return ddim_timesteps(sched.T, steps)
    try:
        return [_checks.count(s, "each time in steps", 0) for s in steps]
    except (TypeError, ValueError):
        raise ValueError(f"steps must be a count or a strictly decreasing list of integer times in "
                         f"[0, {sched.T - 1}], got {steps!r}.") from None


# --- the ELBO as a likelihood bound ------------------------------------------------------------

def discretised_gaussian_log_prob(x0: Tensor, mean: Tensor, std: float, levels: int = 256) -> Tensor:
    """log P(k) of 8-bit data under N(mean, std^2), per coordinate, (B, ...) float64 (Ho et al.'s decoder).

    x0 = 2 k / (levels - 1) - 1 lies on the grid of [-1, 1]; level k owns the bin x0 +- 1 / (levels - 1),
    the two end bins extended to -inf and +inf, so the probabilities of the levels sum to one.
    """
    x, mu = x0.double(), mean.double()
    half = 1.0 / (levels - 1)
    upper = torch.where(x > 1 - half, torch.full_like(x, math.inf), (x + half - mu) / std)
    lower = torch.where(x < -1 + half, torch.full_like(x, -math.inf), (x - half - mu) / std)
    # log(Phi(upper) - Phi(lower)), on the side of the bin away from the mean (no cancellation)
    flip = lower > 0
    hi, lo = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp(max=0.0)).clamp(max=1 - 1e-300))


def _eight_bit_levels(images: Tensor) -> Tensor:
    """8-bit images (floats k / 255 in [0, 1] or integer levels k) -> x0 = 2 k / 255 - 1, float32."""
    _checks.tensor(images, "images", min_ndim=2)
    if images.dtype == torch.bool:
        raise TypeError("images are boolean: pass 8-bit grey levels (floats k / 255 or integers k).")
    if images.is_floating_point():
        _checks.unit_range(_checks.finite(images, "images"), "images", tol=0.0)
        k = images.double() * 255
        if images.numel() and (k - k.round()).abs().max().item() > 1e-3:
            raise ValueError("images are not on the 8-bit grid k / 255: the bound is on discrete 8-bit data; "
                             "quantise with torch.round(x * 255) / 255.")
        k = k.round()
    else:
        if images.numel() and (int(images.min()) < 0 or int(images.max()) > 255):
            raise ValueError("integer images must hold 8-bit levels in [0, 255].")
        k = images.double()
    return (2 * k / 255 - 1).float()


@torch.no_grad()
def elbo_bits_per_dim(eps_model: EpsModel, sched: Schedule, images: Tensor, *, strata: int | None = None,
                      variance: str = "beta_tilde", generator: torch.Generator | None = None,
                      return_terms: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Chapter 8's negative ELBO of 8-bit images in bits/dim, (B,): an upper bound on -log2 P(k) / D.

    -log P(k) <= L_prior + sum_{t=1}^{T-1} L_{t-1} + L_0 (0-based times; the theorem of chapter 8):
    L_prior = KL(q(x_{T-1} | x_0) || N(0, I)) in closed form; L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ||
    N(mu_theta(x_t, t), sigma_t^2 I)) at one draw x_t ~ q(x_t | x_0) per image and time; L_0 = -log P(k |
    x at time 0) under ``discretised_gaussian_log_prob`` with mean mu_theta(x, 0) (= x0-hat) and variance
    beta_0 (Ho et al.'s decoder; the posterior's beta-tilde_0 = 0 would make it a point). The images
    are the data x_0 = 2 k / 255 - 1 themselves, not dequantised: this bounds the discrete likelihood.
    ``strata`` None sums all T - 1 KL terms (T network calls per image); ``strata`` S splits t = 1..T-1
    into S contiguous blocks and draws one t per block and image, weighted by the block's size: an
    unbiased estimate with S + 1 calls per image. ``variance``: sigma_t^2 as in ``ddpm_sample``.
    With ``return_terms``, also {"prior", "diffusion", "decoder"} in bits/dim, summing to the total.
    """
    device = _check_sampler_args(eps_model, sched, variance, None, None)
    x0 = _eight_bit_levels(images)
    if device is not None:
        x0 = x0.to(device)
    b, d, T = x0.shape[0], x0[0].numel(), sched.T
    gen_dev = generator.device if generator is not None else x0.device

    def noised(t: Tensor) -> Tensor:
        eps = _randn(x0.shape, x0.device, x0.dtype, generator)
        return q_sample(sched, x0, t, eps)

    a_last = sched.alphas_bar[-1].item()
    flat = x0.double().flatten(1)
    # KL(N(sqrt(ab) x0, (1 - ab) I) || N(0, I)) = 1/2 sum(ab x0^2 + (1 - ab) - 1 - log(1 - ab))
    prior = 0.5 * (a_last * flat.pow(2) - a_last - math.log(1 - a_last)).sum(1)
    sigma2 = reverse_variance(sched, variance)
    if strata is None:
        blocks = [(t, t + 1) for t in range(1, T)]
    else:
        k = _checks.count(strata, "strata")
        if k > T - 1:
            raise ValueError(f"strata must be at most T - 1 = {T - 1} (one time per block), got {k}.")
        edges = torch.linspace(1, T, k + 1).round().long().tolist()
        blocks = list(zip(edges, edges[1:], strict=False))
    diffusion = torch.zeros(b, dtype=torch.float64, device=x0.device)
    for lo, hi in blocks:
        u = torch.rand(b, generator=generator, device=gen_dev)
        t = (lo + (u * (hi - lo)).long().clamp(max=hi - lo - 1)).to(x0.device)
        xt = noised(t)
        mu_q, var_q = q_posterior(sched, x0, xt, t)
        mu_p = p_mean(sched, xt, t, eps_model(xt, t))
        s2 = sigma2.to(x0.device)[t].double()
        vq = var_q.double().flatten(1)[:, 0]
        # KL(N(mu_q, vq I) || N(mu_p, s2 I)) = |mu_q - mu_p|^2 / (2 s2) + D/2 (vq / s2 - 1 - log(vq / s2))
        kl = (mu_q - mu_p).double().flatten(1).pow(2).sum(1) / (2 * s2) \
            + 0.5 * d * (vq / s2 - 1 - torch.log(vq / s2))
        diffusion = diffusion + (hi - lo) * kl
    t0 = torch.zeros(b, dtype=torch.long, device=x0.device)
    x_first = noised(t0)
    decoder_mean = p_mean(sched, x_first, t0, eps_model(x_first, t0))
    decoder_std = math.sqrt(sched.betas[0].item())
    decoder = -discretised_gaussian_log_prob(x0, decoder_mean, decoder_std).flatten(1).sum(1)
    scale = 1 / (d * math.log(2))
    total = (prior + diffusion + decoder) * scale
    if return_terms:
        return total, {"prior": prior * scale, "diffusion": diffusion * scale, "decoder": decoder * scale}
    return total


# --- a closed-form predictor and a training step -----------------------------------------------

def gaussian_data_eps(sched: Schedule, mean: Tensor | float, std: Tensor | float) -> EpsModel:
    """The exact eps-predictor E[eps | x_t] for data x_0 ~ N(m, s^2) (independent coordinates).

    q(x_t) = N(sqrt(alpha-bar_t) m, alpha-bar_t s^2 + 1 - alpha-bar_t), so with the score
    grad log q(x_t) = -(x_t - sqrt(alpha-bar_t) m) / (alpha-bar_t s^2 + 1 - alpha-bar_t),
    eps*(x_t, t) = -sqrt(1 - alpha-bar_t) grad log q(x_t). With s = 0 (a one-point data set m) it is
    the oracle (x_t - sqrt(alpha-bar_t) m) / sqrt(1 - alpha-bar_t). ``mean``/``std`` broadcast
    against one example.
    """
    def eps_model(xt: Tensor, t: Tensor) -> Tensor:
        t = _check_t(sched, t, xt)
        a_bar = _gather(sched.alphas_bar, t, xt)
        m = torch.as_tensor(mean, dtype=xt.dtype, device=xt.device)
        s2 = torch.as_tensor(std, dtype=xt.dtype, device=xt.device) ** 2
        # \epsilon^*(x_t, t) = \sqrt{1-\bar\alpha_t} (x_t - \sqrt{\bar\alpha_t} m)
        #                      / (\bar\alpha_t s^2 + 1 - \bar\alpha_t)
        return (1 - a_bar).sqrt() * (xt - a_bar.sqrt() * m) / (a_bar * s2 + 1 - a_bar)

    return eps_model


def gaussian_mixture_eps(sched: Schedule, means: Tensor, stds: Tensor | Sequence[float],
                         weights: Tensor | Sequence[float]) -> EpsModel:
    """The exact eps-predictor for data from a mixture of isotropic Gaussians sum_k w_k N(mu_k, s_k^2 I).

    Each component is diffused like ``gaussian_data_eps``, so with v_k = alpha-bar_t s_k^2 + 1 - alpha-bar_t
    q(x_t) = sum_k w_k N(sqrt(alpha-bar_t) mu_k, v_k I) and, with the responsibilities
    r_k(x_t) = w_k N_k(x_t) / q(x_t) (``probability.log_mixture`` in log space),
    grad log q(x_t) = -sum_k r_k (x_t - sqrt(alpha-bar_t) mu_k) / v_k, eps* = -sqrt(1 - alpha-bar_t) grad.
    means: (K, ...) one mean per component, shaped like one example; stds: (K,) >= 0; weights: (K,)
    summing to one. The predictor takes x_t: (B, ...) and t: (B,); it computes in float64 and
    returns x_t's dtype. With K = 1 it is ``gaussian_data_eps``.
    """
    means = torch.as_tensor(means, dtype=torch.float64)
    stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)
    given = torch.as_tensor(weights)
    weights = given.to(torch.float64).reshape(-1)
    tol = 1e-9 if given.dtype == torch.float64 else 1e-5  # float32 weights sum to one only to ~1e-7
    if weights.numel() and abs(weights.sum().item() - 1) <= tol:
        weights = weights / weights.sum()  # exact in float64, for log_mixture's strict check
    if means.ndim < 2 or not means.shape[0] == stds.numel() == weights.numel():
        raise ValueError(f"need means (K, ...) with one row per component and stds, weights of shape (K,); "
                         f"got {tuple(means.shape)}, {tuple(stds.shape)}, {tuple(weights.shape)}.")
    if (stds < 0).any():
        raise ValueError(f"stds must be >= 0, got {stds.tolist()}.")
    log_mixture(weights, torch.zeros(1, weights.numel(), dtype=torch.float64))  # checks the weights

    def eps_model(xt: Tensor, t: Tensor) -> Tensor:
        if tuple(xt.shape[1:]) != tuple(means.shape[1:]):
            raise ValueError(f"x_t must have shape (B, {', '.join(map(str, means.shape[1:]))}) like the "
                             f"component means, got {tuple(xt.shape)}.")
        t = _check_t(sched, t, xt)
        x = xt.to(torch.float64).flatten(1)  # (B, D)
        a_bar = sched.alphas_bar.to(xt.device)[t][:, None]  # (B, 1)
        m, s2 = means.to(xt.device).flatten(1), stds.to(xt.device) ** 2  # (K, D), (K,)
        # v_k = \bar\alpha_t s_k^2 + 1 - \bar\alpha_t, (B, K)
        v = a_bar * s2 + 1 - a_bar
        diff = x[:, None, :] - a_bar.sqrt()[:, :, None] * m  # x_t - \sqrt{\bar\alpha_t} \mu_k, (B, K, D)
        # \log N_k(x_t) = -\frac12 [D \log(2\pi v_k) + \|x_t - \sqrt{\bar\alpha_t}\mu_k\|^2 / v_k]
        log_comp = -0.5 * (x.shape[1] * torch.log(2 * math.pi * v) + diff.pow(2).sum(-1) / v)
        # r_k = w_k N_k / \sum_j w_j N_j
        resp = torch.exp(weights.to(xt.device).log() + log_comp - log_mixture(weights, log_comp)[:, None])
        # \epsilon^* = \sqrt{1-\bar\alpha_t} \sum_k r_k (x_t - \sqrt{\bar\alpha_t}\mu_k) / v_k
        eps = (1 - a_bar).sqrt() * (resp[:, :, None] * diff / v[:, :, None]).sum(1)
        return eps.reshape(xt.shape).to(xt.dtype)

    return eps_model


def label_dropout(y: Tensor, p_uncond: float, num_classes: int,
                  generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by the null label ``num_classes`` with probability ``p_uncond``, independently.

    Trained on such batches, one network learns both eps(x_t, y) and eps(x_t, null) (Ho & Salimans
    2022 use p_uncond = 0.1 or 0.2). y: (B,) integer labels in {0, ..., K-1}; returns a new tensor.
    """
    p_uncond = _checks.number(p_uncond, "p_uncond", low=0.0, high=1.0, what=" (a probability)")
    y = _checks.labels(y, num_classes)
    where = generator.device if generator is not None else "cpu"
    drop = (torch.rand(y.shape, generator=generator, device=where) < p_uncond).to(y.device)
    return torch.where(drop, torch.full_like(y, num_classes), y)


def make_diffusion_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Schedule,
                        batch: Callable[[int], Tensor | tuple[Tensor, ...]], *,
                        ema: torch.nn.Module | None = None, lr_scheduler=None,
                        grad_clip: float | None = 1.0, amp: torch.dtype | None = None,
                        generator: torch.Generator | None = None,
                        p_uncond: float | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: the simple loss on ``batch(i)`` (its first tensor is x_0), Adam, EMA update.

    ``model(x_t, t)`` predicts eps; ``ema`` is an ``AveragedModel`` of it (see ``unet.ema``).
    ``amp=torch.bfloat16`` runs the network under autocast (on CPUs with bf16 units it halves the
    time of a step; the weights, the optimiser and the loss stay float32).
    ``p_uncond`` (chapter 9) trains a class-conditional ``model(x_t, t, y)``: ``batch(i)`` gives
    ``(x_0, y)`` and each label is replaced by the null label with that probability
    (``label_dropout``), so that one network learns eps(x_t, y) and eps(x_t, null). A
    class-conditional model needs an explicit choice (``p_uncond=0.0`` keeps every label): with
    None its labels would be ignored and guidance would do nothing.
    The model (and ``ema.module``) records ``sched`` as ``trained_schedule``; the samplers then
    refuse another schedule (``check_schedule``).
    """
    conditional = getattr(model, "null_label", None) is not None
    if p_uncond is not None and not conditional:
        raise ValueError("p_uncond needs a class-conditional model (a UNet with num_classes set).")
    if conditional and p_uncond is None:
        raise ValueError(f"this model is class-conditional (num_classes = {model.null_label}) but p_uncond "
                         "is None, so its labels would never be used and guidance would do nothing. Pass "
                         "p_uncond=0.1 (label dropout, for classifier-free guidance), or p_uncond=0.0 to "
                         "always condition; batch(i) must then return (x_0, labels).")
    if p_uncond is not None:
        p_uncond = _checks.number(p_uncond, "p_uncond", low=0.0, high=1.0, what=" (a probability)")
    check_schedule(model, sched)
    for net in (model, getattr(ema, "module", None)):
        if isinstance(net, torch.nn.Module):
            net.trained_schedule = sched  # a plain attribute: the samplers check it, state_dict ignores it

    def step(i: int) -> dict[str, float]:
        x0 = batch(i)
        eps_model = model
        if p_uncond is not None:
            if not isinstance(x0, (tuple, list)) or len(x0) < 2:
                raise ValueError("With p_uncond, batch(i) must return (x_0, labels).")
            y = label_dropout(x0[1], p_uncond, model.null_label, generator).to(x0[0].device)
            eps_model = lambda x, t: model(x, t, y)  # noqa: E731
        x0 = x0[0] if isinstance(x0, (tuple, list)) else x0
        model.train()
        with torch.autocast(device_type=x0.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = diffusion_loss(eps_model, sched, x0, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        return {"loss": loss.item()}

    return step
