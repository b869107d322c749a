"""Autoencoders and variational autoencoders (chapter 5): models, sampling and training steps.

The objective and the likelihood bounds live in ``elbo.py``; this module holds the networks, each
configured by a small dataclass, and the glue that the lab uses:

    model = VAE(VAEConfig(latent_dim=2))
    step = make_vae_step(model, opt, batch, generator=g)
    history = train.fit(step, n_steps, state={"model": model, "opt": opt, "gen": g}, checkpoint=...)
    images = decode_grid(model, n=20)

Every decoder returns *logits* of Bernoulli pixels; ``torch.sigmoid`` of them is the mean image.
The encoders' last layer is linear (no ReLU): mu and log sigma^2 must be free to take any sign.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from scipy.stats import norm
from torch import nn

from .elbo import elbo, reparameterize, vae_loss

Tensor = torch.Tensor
__all__ = ["AEConfig", "VAEConfig", "ConvVAEConfig", "Autoencoder", "VAE", "ConvVAE", "reparameterize",
           "binarize", "latent_codes", "latent_grid", "decode_grid", "interpolate", "make_ae_step",
           "make_vae_step"]


# --- configurations ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VAEConfig:
    """An MLP VAE: 784 -> hidden_dims -> (mu, logvar) in R^latent_dim, and back (mirrored)."""

    in_shape: tuple[int, ...] = (1, 28, 28)  # shape of one image (C, H, W): 784 pixels for MNIST
    hidden_dims: tuple[int, ...] = (512, 256)  # encoder's hidden widths; the decoder uses them reversed
    latent_dim: int = 2  # size of z: 2 to draw the latent space, 20 to 50 for the best likelihood

    def __post_init__(self):
        _check_config(self)


@dataclass(frozen=True)
class AEConfig(VAEConfig):
    """A deterministic MLP autoencoder: same sizes as the VAE, but the encoder outputs z itself."""


@dataclass(frozen=True)
class ConvVAEConfig:
    """A convolutional VAE: two stride-2 convolutions down (28 -> 14 -> 7), two transposed up."""

    in_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W); H and W must be divisible by 4
    channels: tuple[int, int] = (32, 64)  # feature maps after the first and second convolution
    hidden_dim: int = 256  # width of the dense layer between the feature maps and (mu, logvar)
    latent_dim: int = 16  # size of z

    def __post_init__(self):
        _check_config(self)
        if len(self.in_shape) != 3 or self.in_shape[1] % 4 or self.in_shape[2] % 4:
            raise ValueError(f"ConvVAEConfig.in_shape must be (C, H, W) with H and W divisible by 4, "
                             f"got {self.in_shape}.")
        if len(self.channels) != 2 or min(self.channels) <= 0 or self.hidden_dim <= 0:
            raise ValueError(f"channels must be two positive integers and hidden_dim positive, got "
                             f"{self.channels} and {self.hidden_dim}.")


def _check_config(cfg) -> None:
    if not isinstance(cfg.latent_dim, int) or cfg.latent_dim <= 0:
        raise ValueError(f"latent_dim must be a positive integer, got {cfg.latent_dim!r}: the latent "
                         "code z needs at least one dimension.")
    if not cfg.in_shape or min(cfg.in_shape) <= 0:
        raise ValueError(f"in_shape must be a non-empty tuple of positive sizes, got {cfg.in_shape}.")
    if min(getattr(cfg, "hidden_dims", (1,)) or (1,)) <= 0:
        raise ValueError(f"hidden_dims must be positive, got {cfg.hidden_dims}.")


# --- networks ----------------------------------------------------------------------------------

def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them and no activation after the last one."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _ImageModel(nn.Module):
    """Shape checks shared by the models: images (B, *in_shape) or flat (B, D) in, logits out."""

    config: VAEConfig | ConvVAEConfig

    def _images(self, x: Tensor) -> Tensor:
        shape, d = tuple(self.config.in_shape), math.prod(self.config.in_shape)
        if x.dim() == 2 and x.shape[1] == d and len(shape) > 1:
            return x.view(x.shape[0], *shape)
        if tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, shape))}) or (B, {d}) with "
                             f"B >= 1, got {tuple(x.shape)}.")
        return x

    def _latents(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"z must have shape (B, {self.config.latent_dim}) (latent_dim), got "
                             f"{tuple(z.shape)}.")
        return z


class Autoencoder(_ImageModel):
    """x -> z = f(x) -> logits g(z): a deterministic code, trained by reconstruction alone."""

    def __init__(self, config: AEConfig = AEConfig()):
        super().__init__()
        self.config = config
        sizes = [math.prod(config.in_shape), *config.hidden_dims, config.latent_dim]
        self.encoder = _mlp(sizes)  # last layer linear: the code may take any value
        self.decoder = _mlp(sizes[::-1])

    def encode(self, x: Tensor) -> Tensor:
        """z = f(x): images (B, *in_shape) -> codes (B, latent_dim)."""
        return self.encoder(self._images(x).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """Logits of g(z): codes (B, latent_dim) -> (B, *in_shape)."""
        return self.decoder(self._latents(z)).view(z.shape[0], *self.config.in_shape)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction logits g(f(x)), (B, *in_shape)."""
        return self.decode(self.encode(x))


class _VAEBase(_ImageModel):
    """q(z|x) = N(mu(x), diag(e^{logvar(x)})), p(z) = N(0, I), p(x|z) = Bernoulli(sigmoid(logits(z)))."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z|x), each (B, latent_dim): the encoder's last layer, split in two."""
        h = self.encoder(self._images(x))  # (B, 2 * latent_dim), no activation
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of p(x|z): (B, latent_dim) -> (B, *in_shape)."""
        return self.decoder(self._latents(z)).view(z.shape[0], *self.config.in_shape)

    def forward(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """One pass: (logits of p(x|z), mu, logvar) with z = mu + sigma * eps drawn from q(z|x)."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, generator)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Mean images sigmoid(logits(z)) of n draws z ~ N(0, I) from the prior: (n, *in_shape)."""
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n!r}.")
        p = next(self.parameters())
        device = generator.device if generator is not None else p.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device).to(p.device)
        return torch.sigmoid(self.decode(z))


class VAE(_VAEBase):
    """The MLP VAE: 784 -> 512 -> 256 -> 2K (mu, logvar); z in R^K -> 256 -> 512 -> 784 logits."""

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        sizes = [math.prod(config.in_shape), *config.hidden_dims]
        self.encoder = nn.Sequential(nn.Flatten(), _mlp([*sizes, 2 * config.latent_dim]))
        self.decoder = _mlp([config.latent_dim, *sizes[::-1]])


class ConvVAE(_VAEBase):
    """Conv(4x4, stride 2) x 2 -> dense -> (mu, logvar); dense -> ConvTranspose(4x4, stride 2) x 2."""

    def __init__(self, config: ConvVAEConfig = ConvVAEConfig()):
        super().__init__()
        self.config = config
        (c, h, w), (c1, c2) = config.in_shape, config.channels
        flat = c2 * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),   # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, H/4, W/4)
            nn.Flatten(), nn.Linear(flat, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, 2 * config.latent_dim),  # no ReLU: mu, logvar in R
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, flat), nn.ReLU(),
            nn.Unflatten(1, (c2, h // 4, w // 4)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),  # (B, C, H, W) logits
        )


# --- data, latent grids and interpolation ------------------------------------------------------

def binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dynamic binarisation: pixel i becomes 1 with probability x_i (its grey level), else 0.

    A fresh draw each time it is called: a Bernoulli likelihood then models real binary data, and
    each epoch sees new binary versions of the digits (a mild regulariser).
    """
    if generator is not None and generator.device != x.device:
        return torch.bernoulli(x.to(generator.device), generator=generator).to(x.device)
    return torch.bernoulli(x, generator=generator)


@torch.no_grad()
def latent_codes(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Codes of the images ``x``: z = f(x) for an ``Autoencoder``, mu(x) for a VAE; (N, latent_dim)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        code = model.encode(x[start: start + batch_size])
        out.append(code[0] if isinstance(code, tuple) else code)
    return torch.cat(out)


def latent_grid(n: int = 20, lo: float = 0.05, hi: float = 0.95) -> Tensor:
    """An n x n grid of 2-D latents at Gaussian quantiles, (n*n, 2), in image-grid order.

    Coordinates are norm.ppf(linspace(lo, hi, n)): equally likely slices of the prior N(0, 1).
    Row r of the grid (top to bottom) has z_2 = ppf value n-1-r; column c has z_1 = ppf value c.
    """
    if not isinstance(n, int) or n < 2 or not 0 < lo < hi < 1:
        raise ValueError(f"need an integer n >= 2 and 0 < lo < hi < 1, got n={n!r}, lo={lo}, hi={hi}.")
    q = torch.as_tensor(norm.ppf(torch.linspace(lo, hi, n, dtype=torch.float64).numpy()),
                        dtype=torch.float32)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # (n, n): rows top-down, columns left-right
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def decode_grid(model: nn.Module, n: int = 20, lo: float = 0.05, hi: float = 0.95) -> Tensor:
    """Mean images of a 2-D-latent model on ``latent_grid(n, lo, hi)``: (n*n, *in_shape)."""
    if model.config.latent_dim != 2:
        raise ValueError(f"decode_grid needs latent_dim = 2, this model has {model.config.latent_dim}.")
    z = latent_grid(n, lo, hi).to(next(model.parameters()).device)
    return torch.sigmoid(model.decode(z))


def interpolate(z0: Tensor, z1: Tensor, steps: int = 10) -> Tensor:
    """Points on the segment from z0 to z1: (1 - t) z0 + t z1 for t = linspace(0, 1, steps); (steps, d)."""
    if z0.shape != z1.shape or z0.dim() != 1:
        raise ValueError(f"z0 and z1 must be two latent vectors (d,) of the same size, got "
                         f"{tuple(z0.shape)} and {tuple(z1.shape)}.")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}.")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]  # (steps, 1)
    return (1 - t) * z0 + t * z1


# --- training steps for train.fit --------------------------------------------------------------

def make_ae_step(model: Autoencoder, opt: torch.optim.Optimizer, batch: Callable[[int], tuple],
                 generator: torch.Generator | None = None) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step for the autoencoder: loss = sum_i BCE(g(f(x))_i, x_i), mean over the batch.

    ``batch(i)`` returns a tuple whose first entry is the grey-level images; they are binarised
    afresh with ``generator``.
    """
    def step(i: int) -> dict[str, float]:
        x = binarize(batch(i)[0], generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), x, reduction="sum") / x.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"recon": loss.item()}
    return step


def make_vae_step(model: _VAEBase, opt: torch.optim.Optimizer, batch: Callable[[int], tuple], *,
                  beta: float = 1.0, generator: torch.Generator | None = None,
                  monitor: Mapping[str, Tensor] | None = None, monitor_every: int = 0
                  ) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step minimising recon + beta * KL (``elbo.vae_loss``) on a binarised batch.

    Returns ``{"loss", "recon", "kl"}`` (nats per image). With ``monitor`` (name -> binarised
    images) every ``monitor_every`` steps it also returns the mean negative ELBO on each set and
    ``"monitor_step"``, so ``history[name]`` is a learning curve against ``history["monitor_step"]``.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}.")
    if monitor and (not isinstance(monitor_every, int) or monitor_every <= 0):
        raise ValueError("monitor needs a positive integer monitor_every.")

    def step(i: int) -> dict[str, float]:
        x = binarize(batch(i)[0], generator)
        logits, mu, logvar = model(x, generator=generator)
        recon, kl = vae_loss(logits, x, mu, logvar)
        loss = recon + beta * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        metrics = {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}
        if monitor and (i + 1) % monitor_every == 0:
            with torch.no_grad():
                for name, xs in monitor.items():
                    metrics[name] = -elbo(model, xs, generator=generator).mean().item()
            metrics["monitor_step"] = float(i + 1)
        return metrics
    return step
