"""Noise-prediction networks for diffusion (chapters 8 and 9): a U-Net for images, an MLP for 2-D.

Both are called as ``model(x_t, t)`` (``t``: (B,) 0-based integer times) and return eps-hat with
x_t's shape, so they plug into every sampler of ``diffusion.py``. A class-conditional U-Net
(``num_classes=K``) is called as ``model(x_t, t, y)`` with ``y`` in {0, ..., K-1}, or ``y = K``
(``model.null_label``), the reserved "no label" of classifier-free guidance; ``y=None`` means
"no label" for the whole batch.

The U-Net, level by level (for 28x28: 28 -> 14 -> 7 and back):
- a sinusoidal embedding of t (as in a Transformer's positions), then a small MLP;
- residual blocks: GroupNorm -> SiLU -> conv, plus the time embedding added per channel, then
  GroupNorm -> SiLU -> dropout -> conv, and a skip connection around both;
- self-attention over the pixels at low resolution only (7x7: 49 tokens), where it is cheap;
- the encoder's feature maps concatenated into the decoder at the same resolution (skips).

``ema(model)`` gives the exponential moving average of the weights with PyTorch's own
``torch.optim.swa_utils.AveragedModel``; sample with ``ema(...).module``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import _checks

Tensor = torch.Tensor
__all__ = ["UNetConfig", "UNet", "MLPDenoiserConfig", "MLPDenoiser", "timestep_embedding", "ema",
           "count_parameters"]


@dataclass(frozen=True)
class UNetConfig:
    """A small DDPM-style U-Net. The defaults (about 1 M parameters) suit 28x28 digits."""

    in_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of one image; H, W divisible by 2^(levels-1)
    base_channels: int = 32  # feature maps at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # channels per level = base * mult; each level halves H, W
    num_res_blocks: int = 1  # residual blocks per level in the encoder (the decoder has one more)
    attention_resolutions: tuple[int, ...] = (7,)  # spatial sizes (H) at which self-attention is used
    num_heads: int = 1  # attention heads (the channels must be divisible by it)
    dropout: float = 0.0  # dropout inside the residual blocks
    num_groups: int = 8  # GroupNorm groups (every level's channels must be divisible by it)
    num_classes: int | None = None  # K for a class-conditional model (label K is the null label)

    def __post_init__(self):
        if len(self.in_shape) != 3 or min(self.in_shape) <= 0:
            raise ValueError(f"in_shape must be (C, H, W) with positive sizes, got {self.in_shape}.")
        if self.base_channels <= 0 or not self.channel_mults or min(self.channel_mults) <= 0:
            raise ValueError("base_channels and every channel multiplier must be positive, got "
                             f"{self.base_channels} and {self.channel_mults}.")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.in_shape[1] % factor or self.in_shape[2] % factor:
            raise ValueError(f"H and W ({self.in_shape[1:]}) must be divisible by 2^(levels-1) = {factor} "
                             f"for {len(self.channel_mults)} levels.")
        for c in (self.base_channels * m for m in self.channel_mults):
            if c % self.num_groups or c % self.num_heads:
                raise ValueError(f"Channel count {c} must be divisible by num_groups={self.num_groups} "
                                 f"and num_heads={self.num_heads}.")
        if self.num_res_blocks < 1 or not 0 <= self.dropout < 1:
            raise ValueError("num_res_blocks must be >= 1 and dropout in [0, 1).")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer or None, got {self.num_classes!r}.")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of times t: [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim/2)).

    t: (B,) integers or floats; returns (B, dim) float32. Nearby times get nearby embeddings,
    and the network sees t at every frequency from 1 down to 1/max_period.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even integer >= 2, got {dim!r}.")
    t = torch.as_tensor(t)
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor of times (B,), got shape {tuple(t.shape)}.")
    half = dim // 2
    # w_k = max_period^{-k/half}, k = 0..half-1
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResBlock(nn.Module):
    """x -> x + f(x, emb): two 3x3 convolutions with GroupNorm/SiLU and the embedding added between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]  # (B, C, 1, 1): the time (and label) per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the H*W pixels (tokens of C channels), with a residual connection."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # softmax(Q K^T / sqrt(d)) V over the h*w tokens; (B, heads, HW, d)
        y = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]): a U-Net with time (and optional class) conditioning. See the module doc."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else UNetConfig()
        c_img, size = cfg.in_shape[0], cfg.in_shape[1]
        base, g = cfg.base_channels, cfg.num_groups
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # labels 0..K-1 and the null label K (classifier-free guidance's "unconditional")
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(c_img, base, 3, padding=1)

        self.down = nn.ModuleList()
        skips, ch = [base], base
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._block(ch, base * mult, emb_dim, size, cfg))
                ch = base * mult
                skips.append(ch)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # H -> H/2
                skips.append(ch)
                size //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, g, cfg.dropout), Attention(ch, g, cfg.num_heads),
                                  ResBlock(ch, ch, emb_dim, g, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._block(ch + skips.pop(), base * mult, emb_dim, size, cfg))
                ch = base * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))  # H -> 2H
                size *= 2
        self.out = nn.Sequential(nn.GroupNorm(g, ch), nn.SiLU(), nn.Conv2d(ch, c_img, 3, padding=1))

    @staticmethod
    def _block(c_in: int, c_out: int, emb_dim: int, size: int, cfg: UNetConfig) -> nn.Module:
        res = ResBlock(c_in, c_out, emb_dim, cfg.num_groups, cfg.dropout)
        if size in cfg.attention_resolutions:
            return nn.ModuleList([res, Attention(c_out, cfg.num_groups, cfg.num_heads)])
        return nn.ModuleList([res])

    @property
    def null_label(self) -> int:
        """The reserved label meaning "no class" (classifier-free guidance); None if unconditional."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) noisy images; t: (B,) or scalar 0-based times; y: (B,) labels or None."""
        cfg = self.config
        dtype = x.dtype if isinstance(x, Tensor) else None
        x = _checks.network_input(x, self, "x")  # float64 -> the weights' dtype; the output comes back in it
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(cfg.in_shape):
            raise ValueError(f"UNet expects images of shape (B, {', '.join(map(str, cfg.in_shape))}), "
                             f"got {tuple(x.shape)}.")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}.")
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels).to(x.dtype))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), cfg.num_classes, dtype=torch.long, device=x.device)
            y = _checks.labels(y, cfg.num_classes, x.shape[0]).to(x.device)
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("This UNet is unconditional (num_classes=None) but labels y were given.")

        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = self._run(layer, torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h).to(dtype)

    @staticmethod
    def _run(layer: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        if not isinstance(layer, nn.ModuleList):
            return layer(h)  # a downsampling convolution
        h = layer[0](h, emb)
        return layer[1](h) if len(layer) > 1 else h


@dataclass(frozen=True)
class MLPDenoiserConfig:
    """An MLP eps_theta(x_t, t) for low-dimensional data (the 2-D toy diffusions)."""

    dim: int = 2  # data dimension
    hidden: int = 128  # width of every hidden layer
    depth: int = 3  # hidden layers
    time_dim: int = 32  # size of the sinusoidal time embedding

    def __post_init__(self):
        if min(self.dim, self.hidden, self.depth) <= 0 or self.time_dim < 2 or self.time_dim % 2:
            raise ValueError("dim, hidden and depth must be positive and time_dim an even integer >= 2.")


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t) = MLP([x_t, emb(t)]) with the time embedding also added to every hidden layer."""

    def __init__(self, config: MLPDenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else MLPDenoiserConfig()
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.time = nn.Sequential(nn.Linear(cfg.time_dim, cfg.hidden), nn.SiLU(),
                                  nn.Linear(cfg.hidden, cfg.hidden))
        self.hidden = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, dim); t: (B,) or scalar 0-based times. Returns eps-hat (B, dim)."""
        dtype = x.dtype if isinstance(x, Tensor) else None
        x = _checks.network_input(x, self, "x")
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise ValueError(f"MLPDenoiser expects points of shape (B, {self.config.dim}), "
                             f"got {tuple(x.shape)}.")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}.")
        emb = self.time(timestep_embedding(t, self.config.time_dim).to(x.dtype))
        h = self.inp(x)
        for layer in self.hidden:
            h = layer(F.silu(h + emb))
        return self.out(F.silu(h)).to(dtype)


def ema(model: nn.Module, decay: float = 0.999) -> AveragedModel:
    """Exponential moving average of ``model``'s weights: theta_ema <- decay theta_ema + (1 - decay) theta.

    Call ``.update_parameters(model)`` after each optimiser step; the averaged network is ``.module``.
    """
    decay = _checks.number(decay, "decay")
    if not 0 < decay < 1:
        raise ValueError(f"decay must lie in (0, 1), e.g. 0.999, got {decay}.")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
