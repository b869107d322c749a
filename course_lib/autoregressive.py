"""Autoregressive models (chapter 10): masked convolutions and a gated PixelCNN for binary images.

The chain rule in raster order, p(x) = prod_i p(x_i | x_<i), with pixel i = (row r, column c)
coming after every pixel of the rows above and every pixel to its left. The network returns one
Bernoulli *logit* per pixel, a_i, with p(x_i = 1 | x_<i) = sigmoid(a_i); it sees the whole image
at once, and the masks make a_i a function of x_<i only, so one pass gives every conditional
(teacher forcing), while sampling needs D = H * W sequential steps, one pixel each.

    model = PixelCNN(PixelCNNConfig())          # 1x28x28 binary digits
    nats = -log_prob(model, x).mean()           # exact negative log-likelihood, nats per image
    x = sample(model, 16, generator=g)          # D sequential steps
    x = complete(model, x_half, rows_kept=14, generator=g)

Conventions: images (B, 1, H, W) with pixels in {0, 1}; natural logs (nats) unless a function
says bits; labels y in {0, ..., num_classes - 1} for a class-conditional model.
References: van den Oord, Kalchbrenner & Kavukcuoglu 2016 (PixelRNN: masks A and B) and van den
Oord et al. 2016 (Conditional image generation with PixelCNN decoders: the gated stacks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .vae import binarize

Tensor = torch.Tensor
__all__ = ["MaskedConv2d", "PixelCNNConfig", "PixelCNN", "log_prob", "bits_per_dim", "sample", "complete",
           "make_pixelcnn_step", "receptive_field"]


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel taps after the centre (in raster order) are zeroed, the centre too
    for mask type A.

    Tap (dr, dc) is the offset from the centre. ``shape="full"`` keeps dr < 0, or dr = 0 and dc < 0,
    plus the centre itself for mask type "B" (type "A" excludes it: the first layer, which must
    not see the pixel it predicts). ``"vertical"`` keeps whole rows: dr < 0 (type A) or dr <= 0
    (type B, safe only on an input that already depends on rows above alone). ``"horizontal"``
    (a 1 x k kernel) keeps dc < 0 (A) or dc <= 0 (B). Input and output: (B, C, H, W), same H, W.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 mask_type: str = "B", shape: str = "full", dilation: int = 1):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' (centre excluded) or 'B' (included), got {mask_type!r}.")
        if shape not in ("full", "vertical", "horizontal"):
            raise ValueError(f"shape must be 'full', 'vertical' or 'horizontal', got {shape!r}.")
        if not isinstance(kernel_size, int) or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer, got {kernel_size!r}.")
        kh, kw = (1, kernel_size) if shape == "horizontal" else (kernel_size, kernel_size)
        super().__init__(in_channels, out_channels, (kh, kw), dilation=dilation,
                         padding=(dilation * (kh // 2), dilation * (kw // 2)))
        dr = torch.arange(kh).view(-1, 1) - kh // 2  # row offset of each tap, (kh, 1)
        dc = torch.arange(kw).view(1, -1) - kw // 2  # column offset, (1, kw)
        centre = (dr == 0) & (dc == 0) & (mask_type == "B")
        if shape == "vertical":
            keep = (dr < 0) | ((dr == 0) & (mask_type == "B"))
        else:  # full or horizontal (where dr is always 0)
            keep = (dr < 0) | ((dr == 0) & (dc < 0)) | centre
        self.mask_type, self.shape = mask_type, shape
        self.register_buffer("mask", keep.expand(kh, kw).to(self.weight.dtype).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding, self.dilation)


@dataclass(frozen=True)
class PixelCNNConfig:
    """A PixelCNN for (1, H, W) binary images; the defaults target binarised MNIST digits."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); C = 1: one Bernoulli pixel per position
    channels: int = 64  # feature maps of each stack
    kernel_size: int = 3  # odd; each layer looks kernel_size // 2 * dilation rows up
    dilations: tuple[int, ...] = (1, 2, 1, 2, 1, 2)  # one entry per layer after the first (type A) one
    gated: bool = True  # True: vertical + horizontal gated stacks; False: plain masked convs (blind spot)
    num_classes: int | None = None  # C for a class-conditional model p(x | y), y in {0, ..., C-1}

    def __post_init__(self):
        shape = tuple(self.image_shape)
        if len(shape) != 3 or shape[0] != 1 or min(shape) < 1:
            raise ValueError(f"image_shape must be (1, H, W) (one binary channel), got {self.image_shape!r}.")
        for name in ("channels", "kernel_size"):
            _checks.count(getattr(self, name), name)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centre tap), got {self.kernel_size}.")
        if self.gated and not self.dilations:
            raise ValueError("a gated PixelCNN needs at least one layer after the first: give dilations "
                             "one entry per layer, e.g. (1,); without one the vertical stack never reaches "
                             "the output.")
        for d in self.dilations:
            _checks.count(d, "each dilation")
        if self.num_classes is not None:
            _checks.count(self.num_classes, "num_classes")


def _gate(a: Tensor) -> Tensor:
    """tanh(a_1) * sigmoid(a_2), the halves taken along the channels: (B, 2C, H, W) -> (B, C, H, W)."""
    a1, a2 = a.chunk(2, dim=1)
    return torch.tanh(a1) * torch.sigmoid(a2)


class _GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016, Figure 2; our variant).

    v' = gate(V * v + e_v(y)) depends on rows above only; h' = h + W gate(H * h + L (V * v) + e_h(y))
    adds the vertical context at the same position (no shift: v already excludes the current row).
    """

    def __init__(self, c: int, k: int, dilation: int, num_classes: int | None):
        super().__init__()
        self.v_conv = MaskedConv2d(c, 2 * c, k, "B", "vertical", dilation)
        self.h_conv = MaskedConv2d(c, 2 * c, k, "B", "horizontal", dilation)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_out = nn.Conv2d(c, c, 1)
        self.embed = nn.Embedding(num_classes, 4 * c) if num_classes else None

    def vertical(self, v: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """(v', context for the horizontal stack L (V * v) + e_h(y)); both see rows above only."""
        v_pre = self.v_conv(v)  # (B, 2C, H, W)
        ctx = self.v_to_h(v_pre)
        if self.embed is not None:
            e_v, e_h = self.embed(y)[:, :, None, None].chunk(2, dim=1)  # (B, 2C, 1, 1) each
            v_pre, ctx = v_pre + e_v, ctx + e_h
        return _gate(v_pre), ctx

    def horizontal(self, h: Tensor, ctx: Tensor) -> Tensor:
        """h' = h + W gate(H * h + ctx): only 1 x k convolutions, so any rows and a left crop work."""
        return h + self.h_out(_gate(self.h_conv(h) + ctx))


class _PlainLayer(nn.Module):
    """h' = h + W_B * elu(h) + e(y): a residual masked convolution of type B (has the blind spot)."""

    def __init__(self, c: int, k: int, dilation: int, num_classes: int | None):
        super().__init__()
        self.conv = MaskedConv2d(c, c, k, "B", "full", dilation)
        self.embed = nn.Embedding(num_classes, c) if num_classes else None

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        out = self.conv(F.elu(h))
        return h + out if self.embed is None else h + out + self.embed(y)[:, :, None, None]


class PixelCNN(nn.Module):
    """x (B, 1, H, W) in {0, 1} [, y (B,)] -> logits a (B, 1, H, W); a_i depends on x_<i only.

    Fully convolutional: any H, W works (the config's image_shape is what ``sample`` draws).
    """

    def __init__(self, cfg: PixelCNNConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or PixelCNNConfig()
        c, k = cfg.channels, cfg.kernel_size
        if cfg.gated:
            self.v_in = MaskedConv2d(1, c, k, "A", "vertical")
            self.h_in = MaskedConv2d(1, c, k, "A", "horizontal")
            self.layers = nn.ModuleList(_GatedLayer(c, k, d, cfg.num_classes) for d in cfg.dilations)
        else:
            self.h_in = MaskedConv2d(1, c, k, "A", "full")
            self.layers = nn.ModuleList(_PlainLayer(c, k, d, cfg.num_classes) for d in cfg.dilations)
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(c, c, 1), nn.ELU(), nn.Conv2d(c, 1, 1))

    @property
    def receptive_rows(self) -> int:
        """How many rows above its own an output can see: kernel_size // 2 * (1 + sum of dilations)."""
        return self.config.kernel_size // 2 * (1 + sum(self.config.dilations))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.config.num_classes is None):
            raise ValueError("a class-conditional PixelCNN needs labels y, an unconditional one takes none.")
        if self.config.gated:
            return self.horizontal(x, self.vertical(x, y))
        h = self.h_in(x)
        for layer in self.layers:
            h = layer(h, y)
        return self.head(h)

    def vertical(self, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
        """Gated stack only: the vertical stack's context for each layer, (B, 2C, H, W) each.
        Row r of every context depends on rows 0, ..., r - 1 of x alone."""
        v, ctx = self.v_in(x), []
        for layer in self.layers:
            v, c = layer.vertical(v, y)
            ctx.append(c)
        return ctx

    def horizontal(self, x: Tensor, ctx: list[Tensor]) -> Tensor:
        """Gated stack only: logits (B, 1, h, w) from rows of x and the matching rows of ``ctx``."""
        h = self.h_in(x)
        for layer, c in zip(self.layers, ctx, strict=True):
            h = layer.horizontal(h, c)
        return self.head(h)


# --- checks shared by the public functions ------------------------------------------------------

def _model(model) -> PixelCNN:
    if not isinstance(model, PixelCNN):
        raise TypeError(f"model must be a PixelCNN, got {type(model).__name__}.")
    return model


def _images(model: PixelCNN, x, name: str = "x") -> Tensor:
    """x as (B, 1, H, W) floats in {0, 1} on the model's device and dtype."""
    _checks.tensor(x, name, ndim=4)
    if tuple(x.shape[1:]) != tuple(model.config.image_shape):
        shape = ", ".join(map(str, model.config.image_shape))
        raise ValueError(f"{name} must have shape (B, {shape}) like the model's image_shape, got "
                         f"{tuple(x.shape)} (add a channel axis with x[:, None]?).")
    if x.is_floating_point():
        _checks.finite(x, name)
    weight = model.h_in.weight
    x = x.to(weight.device, weight.dtype)
    if x.numel() and not ((x == 0) | (x == 1)).all():
        lo, hi = x.min().item(), x.max().item()
        raise ValueError(f"{name} must be binary (every pixel 0 or 1), found values in [{lo:.3g}, "
                         f"{hi:.3g}]. Binarise grey levels first: vae.binarize(x) draws each "
                         "pixel as Bernoulli(grey level), (x > 0.5).float() thresholds.")
    return x


def _labels(model: PixelCNN, y, batch: int) -> Tensor | None:
    k = model.config.num_classes
    if k is None:
        if y is not None:
            raise ValueError("this PixelCNN is unconditional (num_classes=None): call it without y, or build "
                             "a class-conditional one with PixelCNNConfig(num_classes=10).")
        return None
    if y is None:
        raise ValueError(f"this PixelCNN is class-conditional ({k} classes): pass labels y, shape "
                         f"({batch},), or one int for the whole batch.")
    if (y.ndim == 0) if torch.is_tensor(y) else not hasattr(y, "__len__"):  # one label for the batch
        y = torch.full((batch,), _checks.count(y, "y", minimum=0), dtype=torch.long)
    return _checks.labels(y, k, batch=batch, null=False).to(model.h_in.weight.device)


# --- likelihood, sampling, completion -----------------------------------------------------------

def log_prob(model: PixelCNN, x: Tensor, y: Tensor | None = None, batch_size: int | None = None) -> Tensor:
    """log p(x) = sum_i [x_i log sigmoid(a_i) + (1 - x_i) log(1 - sigmoid(a_i))], nats per image.

    Exact, in one pass (teacher forcing): x (B, 1, H, W) binary [, y (B,)] -> (B,). Differentiable
    (the training loss is its negative mean); ``batch_size`` splits a large set into chunks.
    """
    model = _model(model)
    x = _images(model, x)
    y = _labels(model, y, x.shape[0])
    size = x.shape[0] if batch_size is None else _checks.count(batch_size, "batch_size")
    out = []
    for s in range(0, x.shape[0], size):
        xs, ys = x[s: s + size], None if y is None else y[s: s + size]
        logits = model(xs, ys)
        # -BCE(a, x) = x log sigmoid(a) + (1 - x) log sigmoid(-a), computed stably from the logit
        out.append(-F.binary_cross_entropy_with_logits(logits, xs, reduction="none").flatten(1).sum(1))
    return torch.cat(out)


def bits_per_dim(nats: Tensor | float, num_dims: int = 784) -> Tensor | float:
    """bits/dim = nats / (D ln 2): a log-likelihood per image in nats, as bits per pixel."""
    return nats / (_checks.count(num_dims, "num_dims") * math.log(2))


def _bernoulli(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """x ~ Bernoulli(p), drawn on the generator's device (same seed, same draws on any device)."""
    u = torch.rand(p.shape, generator=generator, device=generator.device if generator else p.device)
    return (u.to(p.device) < p).to(p.dtype)


@torch.no_grad()
def _fill(model: PixelCNN, x: Tensor, start: int, y: Tensor | None, generator, naive: bool = False) -> Tensor:
    """Sample pixels start, ..., D - 1 of x (B, 1, H, W) in raster order, one network step each.

    ``naive``: each step is a pass over the whole image. Otherwise two savings that change no
    logit: a step sees only the rows its output can see (``receptive_rows``; nothing below), and in
    the gated model the vertical stack, which depends on the rows above alone, runs once per row
    (H times) while the horizontal stack runs once per pixel on one row, cut after the pixel.
    """
    _, _, height, width = x.shape
    gated = model.config.gated and not naive
    for r in range(start // width, height):
        top = 0 if naive else max(0, r - model.receptive_rows)
        if gated:
            ctx = [t[:, :, -1:] for t in model.vertical(x[:, :, top: r + 1], y)]  # row r: (B, 2C, 1, W)
        for c in range(start % width if r == start // width else 0, width):
            if gated:
                row = [t[..., : c + 1] for t in ctx]  # columns 0..c: the horizontal stack never looks right
                logits = model.horizontal(x[:, :, r: r + 1, : c + 1], row)[:, 0, 0, -1]
            else:
                logits = model(x[:, :, top: r + 1], y)[:, 0, -1, c]  # (B,): logit of pixel (r, c)
            x[:, 0, r, c] = _bernoulli(torch.sigmoid(logits), generator)
    return x


def sample(model: PixelCNN, n: int, y: Tensor | int | None = None,
           generator: torch.Generator | None = None, naive: bool = False) -> Tensor:
    """Ancestral sampling x_i ~ p(x_i | x_<i) in raster order: (n, 1, H, W) in {0, 1}.

    D = H * W sequential network steps per image, whatever n (784 for digits): see ``_fill``;
    ``naive=True`` makes each step a pass of the whole network (the same samples, slower).
    ``y``: labels (n,) or one int for all, for a class-conditional model.
    """
    model = _model(model)
    n = _checks.count(n, "n")
    y = _labels(model, y, n)
    weight = model.h_in.weight
    x = torch.zeros(n, *model.config.image_shape, device=weight.device, dtype=weight.dtype)
    return _fill(model, x, 0, y, generator, naive)


def complete(model: PixelCNN, x: Tensor, rows_kept: int, y: Tensor | int | None = None,
             generator: torch.Generator | None = None, naive: bool = False) -> Tensor:
    """Keep rows 0, ..., rows_kept - 1 of x (B, 1, H, W) and sample the rest from p(x_rest | x_kept).

    Returns a new tensor; the kept rows are copied unchanged (rows_kept = 0: plain sampling).
    """
    model = _model(model)
    x = _images(model, x)
    height, width = model.config.image_shape[1:]
    rows_kept = _checks.count(rows_kept, "rows_kept", minimum=0)
    if rows_kept > height:
        raise ValueError(f"rows_kept must be in [0, {height}] (the image has {height} rows), "
                         f"got {rows_kept}.")
    y = _labels(model, y, x.shape[0])
    out = x.clone()
    out[:, :, rows_kept:] = 0  # unknown pixels: never read before they are drawn
    return _fill(model, out, rows_kept * width, y, generator, naive)


# --- training and the receptive-field figure ----------------------------------------------------

def make_pixelcnn_step(model: PixelCNN, opt: torch.optim.Optimizer, batch: Callable[[int], tuple], *,
                       generator: torch.Generator | None = None, grad_clip: float | None = None,
                       monitor: Mapping[str, Tensor | tuple[Tensor, Tensor]] | None = None,
                       monitor_every: int = 0) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step minimising -mean log p(x) (nats per image) on a binarised batch.

    ``batch(i)`` returns (x,) or (x, y) with grey levels in [0, 1]; each pixel is drawn as
    Bernoulli(grey level) (``vae.binarize``; binary data pass unchanged). A class-conditional model
    takes y from the batch. Returns ``{"loss", "bits_per_dim"}``; with ``monitor`` (name -> binary
    images, or (images, labels)) every ``monitor_every`` steps also the mean NLL on each set and
    ``"monitor_step"``.
    """
    model = _model(model)
    conditional = model.config.num_classes is not None
    if grad_clip is not None:
        grad_clip = _checks.number(grad_clip, "grad_clip", low=0, low_open=True)
    if monitor and (not isinstance(monitor_every, int) or monitor_every <= 0):
        raise ValueError("monitor needs a positive integer monitor_every.")
    dims = math.prod(model.config.image_shape)

    def step(i: int) -> dict[str, float]:
        data = batch(i)
        data = data if isinstance(data, (tuple, list)) else (data,)
        if conditional and len(data) < 2:
            raise ValueError("a class-conditional PixelCNN needs batch(i) to return (x, labels).")
        _checks.unit_range(_checks.tensor(data[0], "batch(i)[0]"), "batch(i)[0]")
        x = binarize(data[0].to(model.h_in.weight.device, model.h_in.weight.dtype), generator)
        model.train()
        loss = -log_prob(model, x, data[1] if conditional else None).mean()
        opt.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        metrics = {"loss": loss.item(), "bits_per_dim": bits_per_dim(loss.item(), dims)}
        if monitor and (i + 1) % monitor_every == 0:
            model.eval()
            with torch.no_grad():
                for name, held in monitor.items():
                    xs, ys = held if isinstance(held, (tuple, list)) else (held, None)
                    metrics[name] = -log_prob(model, xs, ys, batch_size=500).mean().item()
            metrics["monitor_step"] = float(i + 1)
        return metrics
    return step


def receptive_field(model: PixelCNN, pixel: tuple[int, int], y: Tensor | int | None = None, *,
                    batch: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """|d a_pixel / d x| summed over ``batch`` random inputs: (H, W), non-zero where output
    ``pixel`` = (r, c) depends on the input. Exact zeros outside the receptive field (autograd)."""
    model = _model(model)
    height, width = model.config.image_shape[1:]
    r, c = (_checks.count(v, "pixel", minimum=0) for v in pixel)
    if r >= height or c >= width:
        raise ValueError(f"pixel must be (row, column) inside the {height}x{width} image, "
                         f"got {tuple(pixel)}.")
    y = _labels(model, y, _checks.count(batch, "batch"))
    weight = model.h_in.weight
    x = torch.rand(batch, 1, height, width, generator=generator,
                   device=generator.device if generator else weight.device).to(weight.device, weight.dtype)
    x.requires_grad_(True)
    out = model(x, y)[:, 0, r, c].sum()  # the images are independent: one gradient gives each its own
    (grad,) = torch.autograd.grad(out, x)  # leaves the parameters' .grad alone
    return grad.abs().sum(0)[0]
