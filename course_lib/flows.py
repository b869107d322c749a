"""Normalizing flows (chapter 11): affine coupling layers, squeeze, RealNVP for 2-D points and digits.

A flow is an invertible map z = f(x) with a cheap log-determinant; with a standard normal base,
log p(x) = log N(f(x); 0, I) + log |det df/dx|, and the log-dets of composed layers add. Each
layer's ``forward`` returns (z, logdet) with logdet of shape (B,), and ``inverse`` undoes it exactly.

    flow = RealNVP2D()                                  # 2-D points
    nats = -log_prob(flow, x).mean()                    # exact NLL, nats per point
    flow = RealNVPImage(RealNVPConfig())                # 1x28x28 8-bit digits
    bound = image_log_prob_bound(flow, x, generator=g)  # lower bound on log P(k), nats per image
    bpd = bits_per_dim(-bound.mean(), 784)              # bits/dim of the discrete images
    x = sample(flow, 16, temperature=0.7, generator=g)  # images in [0, 1]

Dequantisation bookkeeping for 8-bit images (every term, in nats). Pixel levels k in {0, ..., 255}^D
(images are given as floats x = k / 255, the ``data`` module's convention, or as integer tensors k).
1. y = (k + u) / 256, u ~ U[0, 1)^D: y lies in the bin B_k, a cube of volume 256^-D in [0, 1]^D.
   For any density p_Y on [0, 1]^D, P(k) := int_{B_k} p_Y(y) dy = 256^-D E_u[p_Y(y)] sums to
   int_{[0,1]^D} p_Y <= 1 over the 256^D images, and by Jensen log P(k) >= E_u[log p_Y(y)] - D log 256.
2. Logit: p = alpha + (1 - 2 alpha) y, s = log p - log(1 - p) (keeps s finite at y = 0 or 1).
   ds_i/dy_i = (1 - 2 alpha) / (p_i (1 - p_i)), so log p_Y(y) = log p_S(s) + sum_i [log(1 - 2 alpha)
   - log p_i - log(1 - p_i)], with -log p_i = softplus(-s_i) and -log(1 - p_i) = softplus(s_i).
   The logit maps [0, 1] onto [logit alpha, logit(1 - alpha)] only, so the mass p_S puts outside that
   box is lost: sum_k P(k) < 1 slightly, which can only make the reported bits/dim larger.
3. The flow: log p_S(s) = log N(f(s); 0, I) + logdet_f(s).
``image_log_prob_bound`` sums 1-3; bits/dim = -bound / (D ln 2) (``bits_per_dim(-bound, D)``).

Continuous flows (the bridge to chapters 12 and 13): for dx/dt = v(x, t) the log-density along a
path obeys d log p_t(x_t)/dt = -div v(x_t, t). ``divergence`` computes div v exactly (D backward
passes) or by Hutchinson's estimator eps^T (dv/dx) eps with Rademacher eps (one pass per probe,
unbiased, variance sum_{i != j} (A_ij^2 + A_ij A_ji) per probe for the Jacobian A);
``continuous_flow`` integrates x and log p together with Heun's method.

Conventions: natural logs (nats) unless a function says bits; points (B, D); images (B, C, H, W).
References: Dinh, Krueger & Bengio 2015 (NICE: additive coupling); Dinh, Sohl-Dickstein & Bengio
2017 (RealNVP: affine coupling, masks, squeeze, multi-scale, the logit with alpha = 0.05);
Theis, van den Oord & Bethge 2016 (dequantisation and the bound); Kingma & Dhariwal 2018 (Glow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .autoregressive import bits_per_dim

Tensor = torch.Tensor
__all__ = ["AffineCoupling", "Squeeze", "squeeze", "unsqueeze", "checkerboard_mask", "channel_mask",
           "RealNVP2D", "RealNVPConfig", "RealNVPImage", "log_prob", "dequantize", "logit_transform",
           "logit_inverse", "image_log_prob_bound", "image_bits_per_dim", "bits_per_dim", "sample",
           "make_flow_step", "divergence", "continuous_flow"]


# --- masks, squeeze and the coupling layer ------------------------------------------------------

def checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> Tensor:
    """(C, H, W) mask, 1 where (row + column + parity) is even: the pixels a coupling keeps."""
    rows, cols = torch.arange(height).view(-1, 1), torch.arange(width).view(1, -1)
    return ((rows + cols + parity) % 2 == 0).float().expand(channels, height, width).clone()


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """(C, 1, 1) mask keeping the first half of the channels (parity 0) or the second (parity 1)."""
    if channels % 2:
        raise ValueError(f"a channel mask needs an even number of channels, got {channels}.")
    keep = torch.arange(channels) < channels // 2
    return (keep if parity == 0 else ~keep).float().view(channels, 1, 1)


def squeeze(x: Tensor) -> Tensor:
    """Space to depth: (B, C, H, W) -> (B, 4C, H/2, W/2); channel 4c + 2 di + dj holds pixel
    (2i + di, 2j + dj) of channel c. A permutation: log-det 0, ``unsqueeze`` is its exact inverse."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs an even height and width, got {h}x{w}.")
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(z: Tensor) -> Tensor:
    """Depth to space, the inverse of ``squeeze``: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    b, c4, h, w = z.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze needs a multiple of 4 channels, got {c4}.")
    return z.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


class Squeeze(nn.Module):
    """``squeeze`` as a flow layer: forward returns (z, 0), inverse is ``unsqueeze``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return unsqueeze(z)


class AffineCoupling(nn.Module):
    """RealNVP coupling: z = m * x + (1 - m) * (x * exp(s) + t), with (s, t) = net(m * x).

    ``mask`` m (1 = kept, passed through) is a buffer: shape (D,) for points, (C, H, W) or (C, 1, 1)
    for images. The net sees only the kept part, so dz/dx is triangular (after a permutation) with
    diagonal exp(s) on the transformed entries: log |det| = sum of s over them. The scale is bounded,
    s = exp(log_scale) * tanh(raw), for stability; ``additive=True`` fixes s = 0 (NICE, log-det 0).
    The net's last layer starts at zero, so a new coupling is the identity. Points use an MLP
    (``hidden`` units, 2 hidden layers); images a 3-layer conv net (3x3, 3x3, 3x3; ``hidden`` maps)
    whose input is (m * x, m) so that it knows which pixels are kept.
    """

    def __init__(self, mask: Tensor, hidden: int = 64, additive: bool = False):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.ndim not in (1, 3) or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must hold 0s and 1s, shape (D,) for points or (C, H, W) / (C, 1, 1) for "
                             f"images, got shape {tuple(mask.shape)}.")
        hidden = _checks.count(hidden, "hidden")
        self.register_buffer("mask", mask)
        self.additive = bool(additive)
        if mask.ndim == 1:
            d = mask.shape[0]
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                     nn.Linear(hidden, 2 * d))
            self.log_scale = nn.Parameter(torch.zeros(d))
        else:
            c = mask.shape[0]
            self.net = nn.Sequential(nn.Conv2d(2 * c, hidden, 3, padding=1), nn.ELU(),
                                     nn.Conv2d(hidden, hidden, 3, padding=1), nn.ELU(),
                                     nn.Conv2d(hidden, 2 * c, 3, padding=1))
            self.log_scale = nn.Parameter(torch.zeros(c, 1, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t) for the transformed entries, zero on the kept ones."""
        m = self.mask
        inp = kept if m.ndim == 1 else torch.cat([kept, m.expand_as(kept)], dim=1)
        raw, t = self.net(inp).chunk(2, dim=1)
        s = torch.zeros_like(raw) if self.additive else self.log_scale.exp() * torch.tanh(raw)
        return s * (1 - m), t * (1 - m)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(x * self.mask)
        z = x * self.mask + (1 - self.mask) * (x * s.exp() + t)
        return z, s.flatten(1).sum(1)

    def inverse(self, z: Tensor) -> Tensor:
        s, t = self._scale_shift(z * self.mask)  # the kept part is unchanged: the same (s, t)
        return z * self.mask + (1 - self.mask) * ((z - t) * (-s).exp())


class _Flow(nn.Module):
    """A chain of layers with forward (x -> (z, logdet)) and inverse, and a standard normal base."""

    event_shape: tuple[int, ...]
    layers: nn.ModuleList

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class RealNVP2D(_Flow):
    """RealNVP for 2-D points: ``n_couplings`` affine couplings with masks [1, 0], [0, 1], ...

    x (B, 2) -> (z (B, 2), logdet (B,)); ``dim`` other than 2 works too (masks alternate halves).
    ``config`` holds the keyword arguments (what ``pretrained.save`` records).
    """

    def __init__(self, n_couplings: int = 8, hidden: int = 64, additive: bool = False, dim: int = 2):
        super().__init__()
        n_couplings, dim = _checks.count(n_couplings, "n_couplings"), _checks.count(dim, "dim", minimum=2)
        first = (torch.arange(dim) < (dim + 1) // 2).float()
        self.config = {"n_couplings": n_couplings, "hidden": hidden, "additive": additive, "dim": dim}
        self.event_shape = (dim,)
        self.layers = nn.ModuleList(AffineCoupling(first if i % 2 == 0 else 1 - first, hidden, additive)
                                    for i in range(n_couplings))


@dataclass(frozen=True)
class RealNVPConfig:
    """A multi-scale RealNVP for (C, H, W) images in logit space; the defaults target 1x28x28 digits.

    Stage 0: checkerboard couplings at C x H x W; stage 1: squeeze, channel couplings at 4C x H/2 x W/2;
    stage 2: squeeze, checkerboard couplings at 16C x H/4 x W/4. ``hidden`` has one entry per stage
    used (1 to 3), ``couplings`` the couplings of each stage (masks alternate). Unlike RealNVP we do not
    factor out half the dimensions after each stage: every dimension goes through every stage, and
    the base is a standard normal over all D of them. Defaults: 780,540 parameters; one Adam step at
    batch 64 takes about 0.9 s on one CPU thread (measured: 60 steps on the offline digits in 52 s,
    the training bound going from 10.9 to 3.3 bits/dim).
    """

    image_shape: tuple[int, int, int] = (1, 28, 28)
    hidden: tuple[int, ...] = (32, 64, 96)
    couplings: tuple[int, ...] = (4, 4, 4)
    additive: bool = False  # True: NICE-style additive couplings (log-det 0 everywhere)
    alpha: float = 0.05  # logit pre-processing: s = logit(alpha + (1 - 2 alpha) y)

    def __post_init__(self):
        shape = tuple(self.image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {self.image_shape!r}.")
        for h in self.hidden:
            _checks.count(h, "each hidden width")
        for n in self.couplings:
            _checks.count(n, "each couplings count")
        if not 1 <= len(self.hidden) <= 3 or len(self.hidden) != len(self.couplings):
            raise ValueError("hidden and couplings need one entry per stage (1 to 3 stages), got "
                             f"{len(self.hidden)} and {len(self.couplings)} entries.")
        step = 2 ** (len(self.hidden) - 1)
        if shape[1] % step or shape[2] % step:
            raise ValueError(f"{len(self.hidden)} stages squeeze {len(self.hidden) - 1} time(s): height and "
                             f"width must be multiples of {step}, got {shape[1]}x{shape[2]}.")
        _checks.number(self.alpha, "alpha", low=0, high=0.499, low_open=True)


class RealNVPImage(_Flow):
    """Multi-scale RealNVP (see ``RealNVPConfig``): s (B, C, H, W) in logit space -> (z, logdet).

    z has the same shape as s (squeezes are undone at the end, a permutation with log-det 0).
    ``config`` is the ``RealNVPConfig`` (what ``pretrained.save`` records).
    """

    def __init__(self, cfg: RealNVPConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or RealNVPConfig()
        c, h, w = cfg.image_shape
        layers: list[nn.Module] = []
        for stage, (hidden, n) in enumerate(zip(cfg.hidden, cfg.couplings, strict=True)):
            if stage:
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
            for i in range(n):
                mask = channel_mask(c, i % 2) if stage == 1 else checkerboard_mask(c, h, w, i % 2)
                layers.append(AffineCoupling(mask, hidden, cfg.additive))
        self.event_shape = tuple(cfg.image_shape)
        self._n_unsqueeze = len(cfg.hidden) - 1  # z is unsqueezed back to the image's shape
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, logdet = super().forward(x)
        for _ in range(self._n_unsqueeze):
            z = unsqueeze(z)
        return z, logdet

    def inverse(self, z: Tensor) -> Tensor:
        for _ in range(self._n_unsqueeze):
            z = squeeze(z)
        return super().inverse(z)


# --- checks shared by the public functions ------------------------------------------------------

def _flow(flow) -> _Flow:
    if not isinstance(flow, _Flow):
        raise TypeError(f"flow must be a RealNVP2D or RealNVPImage, got {type(flow).__name__}.")
    return flow


def _inputs(flow: _Flow, x, name: str = "x") -> Tensor:
    """x as (B, *event_shape) finite floats in the flow's dtype and device."""
    _checks.tensor(x, name, ndim=1 + len(flow.event_shape))
    if tuple(x.shape[1:]) != flow.event_shape:
        want = ", ".join(map(str, flow.event_shape))
        raise ValueError(f"{name} must have shape (B, {want}) for this flow, got {tuple(x.shape)}.")
    _checks.finite(_checks.floating(x, name), name)
    weight = next(flow.parameters())
    return x.to(weight.device, weight.dtype)


def _levels(flow: RealNVPImage, x, name: str = "x") -> Tensor:
    """8-bit images -> levels k in {0, ..., 255} as floats of the flow's dtype, shape checked.

    Accepted: floats on the grid k / 255 in [0, 1] (as ``data.load_dataset`` returns them), or
    integer tensors (e.g. uint8) holding k. Anything else is refused with a hint.
    """
    if not isinstance(flow, RealNVPImage):
        raise TypeError(f"this needs a RealNVPImage (8-bit images), got {type(flow).__name__}; "
                        "for points use log_prob.")
    _checks.tensor(x, name)
    if x.ndim != 4 or tuple(x.shape[1:]) != flow.event_shape:
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, flow.event_shape))}) like the "
                         f"flow's image_shape, got {tuple(x.shape)} (add a channel axis with x[:, None]?).")
    weight = next(flow.parameters())
    if x.dtype == torch.bool:
        raise TypeError(f"{name} is boolean: pass 8-bit grey levels (floats k / 255 or integers k).")
    if not x.is_floating_point():
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
            raise ValueError(f"{name} holds integers outside [0, 255]: 8-bit levels are expected.")
        return x.to(weight.device, weight.dtype)
    _checks.unit_range(_checks.finite(x, name), name, tol=0.0)
    k = x.double() * 255
    if x.numel() and (k - k.round()).abs().max().item() > 1e-3:
        raise ValueError(f"{name} is not on the 8-bit grid k / 255 (k = 0, ..., 255): these flows model "
                         "discrete 8-bit images. Pass the data as loaded, or quantise with "
                         "torch.round(x * 255) / 255 (already dequantised or resized images are not 8-bit).")
    return k.round().to(weight.device, weight.dtype)


def _temperature(t) -> float:
    return _checks.number(t, "temperature", low=0, low_open=True,
                          what=" (the base's standard deviation: 1.0 is the model, 0.7 is a common choice)")


# --- likelihood, pre-processing, sampling -------------------------------------------------------

def log_prob(flow: _Flow, x: Tensor) -> Tensor:
    """log p(x) = log N(f(x); 0, I) + log |det df/dx| in nats, (B,), for continuous inputs.

    x (B, *event_shape): points for ``RealNVP2D``, logit-space images s for ``RealNVPImage``
    (for 8-bit images use ``image_log_prob_bound``). Differentiable.
    """
    flow = _flow(flow)
    x = _inputs(flow, x)
    z, logdet = flow(x)
    d = z[0].numel()
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi) + logdet


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation: y = (k + u) / 256 with u ~ U[0, 1)^D, so y in [0, 1) lies in k's bin.

    x: floats on the grid k / 255 in [0, 1], or an integer tensor of levels k in {0, ..., 255};
    any shape with a batch axis first. Returns float32 (or x's float dtype), a fresh u each call.
    """
    _checks.tensor(x, "x")
    if x.is_floating_point():
        _checks.unit_range(_checks.finite(x, "x"), "x", tol=0.0)
        k = x.double() * 255
        if (k - k.round()).abs().max().item() > 1e-3:
            raise ValueError("x is not on the 8-bit grid k / 255: quantise with torch.round(x * 255) / 255.")
        k = k.round().to(x.dtype)
    else:
        if x.dtype == torch.bool or int(x.min()) < 0 or int(x.max()) > 255:
            raise ValueError("integer x must hold 8-bit levels in [0, 255].")
        k = x.float()
    return _dequantize_levels(k, generator)  # the same draws as image_log_prob_bound's, seed for seed


def _dequantize_levels(k: Tensor, generator: torch.Generator | None) -> Tensor:
    """(k + u) / 256 for checked levels k, in k's dtype; u drawn on the generator's device."""
    dev = generator.device if generator is not None else k.device
    u = torch.rand(k.shape, generator=generator, device=dev, dtype=k.dtype).to(k.device)
    return (k + u) / 256


def logit_transform(y: Tensor, alpha: float = 0.05) -> tuple[Tensor, Tensor]:
    """s = logit(p), p = alpha + (1 - 2 alpha) y, for y in [0, 1]; returns (s, log |det ds/dy|) (B,).

    ds_i/dy_i = (1 - 2 alpha) / (p_i (1 - p_i)); log p_i = -softplus(-s_i), log(1 - p_i) = -softplus(s_i),
    so the log-det is sum_i [log(1 - 2 alpha) + softplus(-s_i) + softplus(s_i)] (stable for any s).
    """
    alpha = _checks.number(alpha, "alpha", low=0, high=0.499, low_open=True)
    p = alpha + (1 - 2 * alpha) * y
    s = torch.log(p) - torch.log1p(-p)
    logdet = (math.log(1 - 2 * alpha) + F.softplus(-s) + F.softplus(s)).flatten(1).sum(1)
    return s, logdet


def logit_inverse(s: Tensor, alpha: float = 0.05) -> Tensor:
    """y = (sigmoid(s) - alpha) / (1 - 2 alpha), the inverse of ``logit_transform`` (no clamping)."""
    alpha = _checks.number(alpha, "alpha", low=0, high=0.499, low_open=True)
    return (torch.sigmoid(s) - alpha) / (1 - 2 * alpha)


def image_log_prob_bound(flow: RealNVPImage, x: Tensor, generator: torch.Generator | None = None,
                         n_samples: int = 1) -> Tensor:
    """A lower bound on log P(k) in nats per image, (B,), for 8-bit images (see the module docstring).

    bound = E_u[log p_S(s) + logdet_logit(y)] - D log 256, with y = (k + u) / 256 and s the logit of y,
    estimated with ``n_samples`` draws of u per image (averaging: more samples lower the variance of
    the estimate, not the gap of the bound). x: floats on the grid k / 255 in [0, 1], or integers k.
    Differentiable; bits/dim = ``bits_per_dim(-bound, D)``.
    """
    k = _levels(_flow(flow), x)
    n_samples = _checks.count(n_samples, "n_samples")
    d = k[0].numel()
    total = 0.0
    for _ in range(n_samples):
        y = _dequantize_levels(k, generator)
        s, logdet_logit = logit_transform(y, flow.config.alpha)
        z, logdet_flow = flow(s)
        total = total - 0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi) \
            + logdet_flow + logdet_logit
    return total / n_samples - d * math.log(256)


@torch.no_grad()
def image_bits_per_dim(flow: RealNVPImage, x: Tensor, generator: torch.Generator | None = None,
                       n_samples: int = 1, batch_size: int = 250) -> Tensor:
    """Per-image bits/dim, (B,), from ``image_log_prob_bound`` (an upper bound on the true bits/dim).

    Evaluation helper: no gradients, the flow in eval mode, x scored in batches of ``batch_size``.
    A generator seeded the same way gives the same dequantisation draws, so the same numbers.
    """
    batch_size = _checks.count(batch_size, "batch_size")
    _checks.tensor(x, "x")
    _flow(flow).eval()
    nats = torch.cat([image_log_prob_bound(flow, xs, generator, n_samples) for xs in x.split(batch_size)])
    return bits_per_dim(-nats, math.prod(flow.event_shape))


@torch.no_grad()
def sample(flow: _Flow, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """x = f^{-1}(z), z ~ N(0, temperature^2 I): (n, *event_shape).

    Points for ``RealNVP2D``; for ``RealNVPImage`` continuous images y in [0, 1] (the logit inverted,
    then clamped; min(floor(256 y), 255) / 255 gives the 8-bit image whose bin holds y).
    ``temperature`` < 1 trades diversity for typicality. The noise is drawn on the generator's
    device: same seed, same samples.
    """
    flow = _flow(flow)
    n = _checks.count(n, "n")
    t = _temperature(temperature)
    weight = next(flow.parameters())
    dev = generator.device if generator is not None else weight.device
    z = torch.randn((n, *flow.event_shape), generator=generator, device=dev)
    z = t * z.to(weight.device, weight.dtype)
    x = flow.inverse(z)
    if isinstance(flow, RealNVPImage):
        x = logit_inverse(x, flow.config.alpha).clamp(0, 1)
    return x


def make_flow_step(flow: _Flow, opt: torch.optim.Optimizer, batch: Callable[[int], tuple], *,
                   generator: torch.Generator | None = None,
                   grad_clip: float | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step minimising the negative log-likelihood.

    ``batch(i)`` returns x or (x, ...). Points (``RealNVP2D``): loss = -mean log p(x) in nats,
    returns ``{"loss"}``. 8-bit images (``RealNVPImage``, floats k / 255 or integers k): each batch
    is dequantised afresh (``generator``), loss = -mean ``image_log_prob_bound`` in nats per image,
    returns ``{"loss", "bits_per_dim"}`` (the training bound, so an upper bound on the true bits/dim).
    """
    flow = _flow(flow)
    if grad_clip is not None:
        grad_clip = _checks.number(grad_clip, "grad_clip", low=0, low_open=True)
    image = isinstance(flow, RealNVPImage)
    dims = math.prod(flow.event_shape)

    def step(i: int) -> dict[str, float]:
        data = batch(i)
        x = data[0] if isinstance(data, (tuple, list)) else data
        flow.train()
        lp = image_log_prob_bound(flow, x, generator) if image else log_prob(flow, x)
        loss = -lp.mean()
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(flow.parameters(), grad_clip)
        opt.step()
        out = {"loss": loss.item()}
        if image:
            out["bits_per_dim"] = bits_per_dim(loss.item(), dims)
        return out
    return step


# --- continuous flows: the instantaneous change of variables -------------------------------------

def divergence(v: Callable[[Tensor], Tensor], x: Tensor, n_probes: int | None = None,
               generator: torch.Generator | None = None, create_graph: bool = False) -> Tensor:
    """div v(x) = sum_i dv_i/dx_i for each example, (B,).

    ``v`` maps x (B, ...) to a tensor of the same shape and must treat the examples independently
    (no batch statistics). ``n_probes=None``: exact, one vector-Jacobian product per coordinate
    (D backward passes). ``n_probes=K``: Hutchinson's estimate, the mean of eps^T (dv/dx) eps over
    K Rademacher probes eps (E[eps eps^T] = I, so it is unbiased; K backward passes). Probes are drawn
    on the generator's device. ``create_graph=True`` keeps the graph (to train through it).
    """
    _checks.tensor(x, "x", min_ndim=2)
    _checks.finite(_checks.floating(x, "x"), "x")
    return _value_and_divergence(v, x, n_probes, generator, create_graph)[1]


def _value_and_divergence(v, x: Tensor, n_probes, generator, create_graph=False) -> tuple[Tensor, Tensor]:
    """(v(x), div v(x)) for a checked x: see ``divergence``."""
    if n_probes is not None:
        n_probes = _checks.count(n_probes, "n_probes")
    with torch.enable_grad():
        x = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
        out = v(x)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ValueError(f"v(x) must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}.")
        d = x[0].numel()
        div = x.new_zeros(x.shape[0])
        if n_probes is None:
            for i in range(d):
                e = torch.zeros_like(out).flatten(1)
                e[:, i] = 1
                (g,) = torch.autograd.grad(out, x, e.view_as(out), retain_graph=True,
                                           create_graph=create_graph)
                div = div + g.flatten(1)[:, i]
            return out, div
        dev = generator.device if generator is not None else x.device
        for _ in range(n_probes):
            eps = torch.randint(0, 2, x.shape, generator=generator, device=dev).to(x.device, x.dtype) * 2 - 1
            (g,) = torch.autograd.grad(out, x, eps, retain_graph=True, create_graph=create_graph)
            div = div + (g * eps).flatten(1).sum(1)
        return out, div / n_probes


def continuous_flow(v: Callable[[Tensor, float], Tensor], x: Tensor, t0: float = 0.0, t1: float = 1.0,
                    n_steps: int = 100, n_probes: int | None = None,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Integrate dx/dt = v(x, t) from t0 to t1 (either direction) with Heun's method, and the log-density.

    Returns (x_t1, delta) with log p_t1(x_t1) = log p_t0(x_t0) + delta, delta = -int div v dt (B,),
    the instantaneous change of variables. ``v(x, t)`` gets a batch and a float time. Each of the
    ``n_steps`` steps evaluates v and div v at both ends (the divergence exactly, or by Hutchinson
    with ``n_probes`` probes, see ``divergence``). No gradients are kept.
    """
    n_steps = _checks.count(n_steps, "n_steps")
    t0 = _checks.number(t0, "t0")
    t1 = _checks.number(t1, "t1")
    h = (t1 - t0) / n_steps

    def rates(y: Tensor, t: float) -> tuple[Tensor, Tensor]:
        vel, div = _value_and_divergence(lambda z: v(z, t), y, n_probes, generator)
        return vel.detach(), div.detach()

    x = _checks.finite(_checks.floating(_checks.tensor(x, "x", min_ndim=2), "x"), "x").detach()
    delta = x.new_zeros(x.shape[0])
    for i in range(n_steps):
        t = t0 + i * h
        v0, d0 = rates(x, t)
        x_euler = x + h * v0
        v1, d1 = rates(x_euler, t + h)
        x = x + 0.5 * h * (v0 + v1)
        delta = delta - 0.5 * h * (d0 + d1)
    return x, delta
