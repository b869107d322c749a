"""Conditional diffusion (chapter 9): classifier-free guidance (label dropout, the guided predictor)
and classifier guidance (a noise-conditional classifier, its gradient, the guided samplers).

One convention, everywhere in the course (Ho & Salimans 2022 write the same thing with w = gamma - 1)::

    eps_guided = eps(x_t, null) + gamma * (eps(x_t, y) - eps(x_t, null))

gamma = 0 is the unconditional model, gamma = 1 the plain conditional model, gamma > 1 pushes the
samples towards what the label explains best. A class-conditional network takes ``model(x_t, t, y)``
with labels ``y`` in {0, ..., K-1} and the reserved null label K (see ``unet.UNet``); chapter 8's
samplers take any ``eps_model(x_t, t)``, so ``guided_eps(model, y, gamma)`` plugs into them unchanged.

Classifier guidance (Dhariwal & Nichol 2021) needs no conditional denoiser: a classifier
p_phi(y | x_t) trained on noisy images (``NoisyClassifier``, ``make_classifier_step``) adds its
gradient to the score, grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t), either in the
eps-form ``classifier_guided_eps`` (any sampler) or as the mean shift of ``classifier_guided_sample``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .diffusion import (
    EpsModel,
    Schedule,
    _check_sampler_args,
    _check_t,
    _gather,
    _start,
    _trained_schedule,
    check_schedule,
    ddpm_step,
    label_dropout,
    q_sample,
    reverse_variance,
)
from .unet import timestep_embedding

Tensor = torch.Tensor
Classifier = Callable[[Tensor, Tensor], Tensor]  # classifier(x_t, t) -> logits (B, K)
__all__ = ["label_dropout", "cfg_eps", "guided_eps", "NoisyClassifierConfig", "NoisyClassifier",
           "make_classifier_step", "classifier_grad", "classifier_guided_eps", "classifier_guided_sample"]


_check_labels = _checks.labels  # (y, num_classes, batch=None, null=True) -> (B,) long, checked


def _check_scale(value: float, name: str) -> float:
    what = " (0: unconditional, 1: conditional)" if name == "gamma" else " (0: no guidance)"
    try:
        return _checks.number(value, name, low=0.0, what=what)
    except TypeError as err:
        raise ValueError(str(err)) from None


def cfg_eps(eps_model: Callable[..., Tensor], xt: Tensor, t: Tensor, y: Tensor, gamma: float,
            null_label: int) -> Tensor:
    """eps(x_t, null) + gamma (eps(x_t, y) - eps(x_t, null)): classifier-free guidance, one batched call.

    ``eps_model(x, t, y)`` is a class-conditional predictor; xt: (B, ...), t: (B,) or a scalar, y: (B,).
    gamma >= 0 (gamma = 0: unconditional, 1: conditional; the paper's w is gamma - 1). The two
    predictions come from one forward pass on a batch of 2B (same cost per image, fewer calls).
    """
    gamma = _check_scale(gamma, "gamma")
    y = _check_labels(y, null_label, xt.shape[0]).to(xt.device)
    t = torch.as_tensor(t, device=xt.device)
    t = t.expand(xt.shape[0]) if t.ndim == 0 else t
    if t.shape != (xt.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({xt.shape[0]},), got {tuple(t.shape)}.")
    null = torch.full_like(y, null_label)
    both = eps_model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([y, null]))
    eps_y, eps_null = both.chunk(2)
    return eps_null + gamma * (eps_y - eps_null)


def guided_eps(model: torch.nn.Module, y: Tensor, gamma: float) -> Callable[[Tensor, Tensor], Tensor]:
    """An ``eps_model(x_t, t)`` for chapter 8's samplers: ``cfg_eps`` with fixed labels y and scale gamma.

    ``model`` is a class-conditional ``UNet`` (its ``null_label`` is the reserved label); y: (B,) for a
    batch of B samples. gamma = 1 and gamma = 0 need one pass, eps(x_t, y) or eps(x_t, null), not two.
    """
    null_label = getattr(model, "null_label", None)
    if null_label is None:
        raise ValueError("guided_eps needs a class-conditional model (a UNet with num_classes set).")
    gamma = _check_scale(gamma, "gamma")
    y = _check_labels(y, null_label)
    if y.numel() == 0:
        raise ValueError("guided_eps needs at least one label (one per sample to draw).")

    def eps(xt: Tensor, t: Tensor) -> Tensor:
        if xt.shape[0] != y.shape[0]:
            raise ValueError(f"guided_eps was built for {y.shape[0]} labels, got a batch of {xt.shape[0]}.")
        if gamma == 1:
            return model(xt, t, y.to(xt.device))
        if gamma == 0:
            return model(xt, t, torch.full_like(y, null_label).to(xt.device))
        return cfg_eps(model, xt, t, y, gamma, null_label)

    eps.trained_schedule = _trained_schedule(model)  # so that the samplers can check the schedule
    return eps


# --- classifier guidance (Dhariwal & Nichol 2021) ----------------------------------------------

@dataclass(frozen=True)
class NoisyClassifierConfig:
    """A small noise-conditional CNN p_phi(y | x_t, t); the defaults (112k parameters) suit digits."""

    in_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of one image
    channels: tuple[int, ...] = (32, 64, 64, 64)  # widths of the 3x3 convolutions, in order
    strides: tuple[int, ...] = (1, 2, 2, 1)  # one per conv: 28 -> 28 -> 14 -> 7 -> 7 for digits
    time_dim: int = 64  # sinusoidal embedding of t, then a linear layer + SiLU to time_dim features
    num_groups: int = 8  # GroupNorm groups (per example: the gradients of different images stay apart)
    num_classes: int = 10  # K logits

    def __post_init__(self):
        if len(self.in_shape) != 3 or min(self.in_shape) <= 0:
            raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {self.in_shape}.")
        if not self.channels or len(self.channels) != len(self.strides) or min(self.strides) < 1:
            raise ValueError(f"need one stride >= 1 per conv layer, got channels {self.channels} and "
                             f"strides {self.strides}.")
        if any(c <= 0 or c % self.num_groups for c in self.channels):
            raise ValueError(f"every channel count must be positive and divisible by num_groups="
                             f"{self.num_groups}, got {self.channels}.")
        if self.time_dim < 2 or self.time_dim % 2 or self.num_classes < 2:
            raise ValueError("time_dim must be an even integer >= 2 and num_classes >= 2.")


class NoisyClassifier(nn.Module):
    """logits = f_phi(x_t, t): [conv -> GroupNorm -> + time embedding -> SiLU] x L, mean-pool, linear.

    Called as ``classifier(x_t, t)`` with x_t: (B, C, H, W) and t: (B,) 0-based times; returns (B, K).
    """

    def __init__(self, config: NoisyClassifierConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else NoisyClassifierConfig()
        self.time = nn.Sequential(nn.Linear(cfg.time_dim, cfg.time_dim), nn.SiLU())
        widths = (cfg.in_shape[0], *cfg.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=s, padding=1)
                                   for a, b, s in zip(widths[:-1], widths[1:], cfg.strides, strict=True))
        self.norms = nn.ModuleList(nn.GroupNorm(cfg.num_groups, c) for c in cfg.channels)
        self.temb = nn.ModuleList(nn.Linear(cfg.time_dim, c) for c in cfg.channels)
        self.head = nn.Linear(cfg.channels[-1], cfg.num_classes)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, C, H, W) noisy images; t: (B,) or scalar 0-based times. Returns logits (B, K)."""
        x = _checks.network_input(x, self, "x")
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.config.in_shape):
            raise ValueError(f"NoisyClassifier expects images of shape (B, "
                             f"{', '.join(map(str, self.config.in_shape))}), got {tuple(x.shape)}.")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}.")
        emb = self.time(timestep_embedding(t, self.config.time_dim).to(x.dtype))  # (B, time_dim)
        h = x
        for conv, norm, proj in zip(self.convs, self.norms, self.temb, strict=True):
            h = F.silu(norm(conv(h)) + proj(emb)[:, :, None, None])  # (B, C_l, H_l, W_l)
        return self.head(h.mean(dim=(2, 3)))  # global average pool -> (B, K)


def make_classifier_step(classifier: nn.Module, opt: torch.optim.Optimizer, sched: Schedule,
                         batch: Callable[[int], Sequence[Tensor]], *,
                         generator: torch.Generator | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: cross-entropy of ``classifier(x_t, t)`` against y, x_t = q_sample(x_0, t).

    ``batch(i)`` returns (x_0, y) with x_0: (B, ...) and y: (B,) in {0, ..., K-1}; one
    t ~ Uniform{0, ..., T-1} and one eps per example (``generator``). Returns {"loss", "accuracy"}.
    """
    check_schedule(classifier, sched)
    classifier.trained_schedule = sched  # classifier guidance then refuses another schedule

    def step(i: int) -> dict[str, float]:
        got = batch(i)
        if not isinstance(got, (tuple, list)) or len(got) < 2:
            raise ValueError("make_classifier_step needs batch(i) to return (x_0, labels).")
        x0, y = got[:2]
        y = _check_labels(y, classifier.num_classes, x0.shape[0], null=False).to(x0.device)
        where = generator.device if generator is not None else "cpu"
        t = torch.randint(sched.T, (x0.shape[0],), generator=generator, device=where).to(x0.device)
        xt = q_sample(sched, x0, t, generator=generator)
        classifier.train()
        logits = classifier(xt, t)
        loss = F.cross_entropy(logits, y)  # -1/B sum_i log p_phi(y_i | x_t,i, t_i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}

    return step


def classifier_grad(classifier: Classifier, xt: Tensor, t: Tensor, y: Tensor) -> Tensor:
    """grad_{x_t} log p_phi(y | x_t), one gradient per example, shape of x_t (B, ...).

    ``classifier(x_t, t)`` returns logits (B, K); y: (B,) in {0, ..., K-1}. The gradient of
    sum_i log softmax(logits_i)[y_i] with respect to the batch is the per-example gradient, as
    long as the classifier treats examples independently (GroupNorm yes, BatchNorm in train mode
    no: call ``.eval()``). Works under ``torch.no_grad()`` (the samplers' context).
    """
    with torch.enable_grad():
        x = xt.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, t), dim=-1)  # (B, K)
        if log_p.ndim != 2 or log_p.shape[0] != xt.shape[0]:
            raise ValueError(f"classifier(x_t, t) must return logits of shape ({xt.shape[0]}, K), got "
                             f"{tuple(log_p.shape)}.")
        y = _check_labels(y, log_p.shape[1], xt.shape[0], null=False).to(xt.device)
        selected = log_p.gather(1, y[:, None]).sum()  # sum_i log p_phi(y_i | x_t,i)
        (grad,) = torch.autograd.grad(selected, x)
    return grad


def _classifier_labels(classifier: Classifier, y: Tensor) -> Tensor:
    return _check_labels(y, getattr(classifier, "num_classes", None), null=False)


def classifier_guided_eps(eps_model: EpsModel, classifier: Classifier, sched: Schedule, y: Tensor,
                          scale: float) -> EpsModel:
    """eps_guided(x_t, t) = eps(x_t, t) - s sqrt(1 - alpha-bar_t) grad_{x_t} log p_phi(y | x_t): an EpsModel.

    This is Dhariwal & Nichol's eps-form of classifier guidance (their Algorithm 2, for DDIM):
    since eps = -sqrt(1 - alpha-bar_t) score, it replaces the score by grad log p(x_t) +
    s grad log p(y | x_t), the score of p(x_t | y) when s = 1. Use it with ``diffusion.ddim_sample``
    or ``ddpm_sample``. y: (B,) fixed labels for a batch of B samples; s = ``scale`` >= 0.
    """
    scale = _check_scale(scale, "scale")
    y = _classifier_labels(classifier, y)
    check_schedule(eps_model, sched)
    check_schedule(classifier, sched)

    def eps(xt: Tensor, t: Tensor) -> Tensor:
        if xt.shape[0] != y.shape[0]:
            raise ValueError(f"classifier_guided_eps was built for {y.shape[0]} labels, got a batch of "
                             f"{xt.shape[0]}.")
        tt = _check_t(sched, t, xt)
        out = eps_model(xt, tt)
        if scale == 0:
            return out
        a_bar = _gather(sched.alphas_bar, tt, xt)
        # \hat\epsilon - s \sqrt{1-\bar\alpha_t} \nabla_{x_t} \log p_\phi(y | x_t)
        return out - scale * (1 - a_bar).sqrt() * classifier_grad(classifier, xt, tt, y.to(xt.device))

    eps.trained_schedule = sched
    return eps


@torch.no_grad()
def classifier_guided_sample(eps_model: EpsModel, classifier: Classifier, sched: Schedule,
                             shape: Sequence[int], y: Tensor, scale: float, *,
                             generator: torch.Generator | None = None, variance: str = "beta_tilde",
                             clip_x0: float | None = None, x_T: Tensor | None = None,
                             device: torch.device | str | None = None,
                             dtype: torch.dtype = torch.float32) -> Tensor:
    """Classifier-guided ancestral sampling (Dhariwal & Nichol 2021, Algorithm 1).

    x_{T-1} ~ N(0, I); for t = T-1, ..., 0: x_{t-1} ~ N(mu + s Sigma_t g, Sigma_t) with
    (mu, Sigma_t) the DDPM step of ``diffusion.ddpm_step`` (Sigma_t = sigma_t^2 I of ``variance``)
    and g = grad_{x_t} log p_phi(y | x_t) (``classifier_grad``). y: (B,) labels, B = shape[0];
    s = ``scale`` >= 0 (s = 0 is ``ddpm_sample`` with the same generator). Returns x_0 of ``shape``.
    """
    scale = _check_scale(scale, "scale")
    y = _classifier_labels(classifier, y)
    device = _check_sampler_args(eps_model, sched, variance, device, x_T)
    check_schedule(classifier, sched)
    x = _start(shape, x_T, device, dtype, generator)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must hold one label per sample, shape ({x.shape[0]},), got {tuple(y.shape)}.")
    y = y.to(x.device)
    sigma2 = reverse_variance(sched, variance)
    for t in range(sched.T - 1, -1, -1):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        s_sigma2 = scale * sigma2[t].item()  # s \Sigma_t (0 at the last step with beta-tilde)
        shift = s_sigma2 * classifier_grad(classifier, x, tt, y) if s_sigma2 > 0 else 0.0
        # x_{t-1} = \mu_\theta(x_t) + \sigma_t z, then + s \Sigma_t \nabla \log p_\phi(y | x_t)
        x = ddpm_step(sched, eps_model(x, tt), x, t, variance=variance, clip_x0=clip_x0,
                      generator=generator) + shift
    return x
