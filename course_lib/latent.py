"""Latent diffusion (chapter 9, after Rombach et al. 2022): diffuse in an autoencoder's latent space.

A deterministic autoencoder with a *spatial* latent (4x7x7 for a 28x28 digit: 196 numbers instead
of 784) is trained first, by reconstruction alone; then chapter 8's U-Net is trained on the
latents z = encode(x) exactly as on images, and sampling draws z with chapter 8's samplers and
returns decode(z)::

    ae = LatentAutoencoder(LatentAutoencoderConfig())
    history = train.fit(make_latent_ae_step(ae, opt, batch), n_steps, ...)
    ae.fit_latent_scale(images)                      # latents of about unit variance
    denoiser = unet.UNet(latent_unet_config(ae.latent_shape, num_classes=10))
    # ... diffusion.make_diffusion_step on (ae.encode(images), labels) ...
    x = latent_sample(denoiser, ae, sched, n=16, steps=50, y=labels, gamma=3.0)

Latent scale. The diffusion's prior N(0, I) and its schedule assume data of about unit variance,
but nothing fixes the scale of an autoencoder's code. As Rombach et al. do (their scale factor,
1/std of the latents), we keep the code unregularised apart from a tiny L2 penalty (which only
stops its size from drifting) and multiply it by ``latent_scale`` = 1/std of the training
latents, stored in the model as a buffer so that a shipped autoencoder carries it. The denoiser is
chapter 8's ``unet.UNet`` with one level (``latent_unet_config``): 7x7 cannot be halved twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _checks
from .diffusion import EpsModel, Schedule, ddim_sample, ddpm_sample
from .guidance import guided_eps
from .unet import UNetConfig

Tensor = torch.Tensor
__all__ = ["LatentAutoencoderConfig", "LatentAutoencoder", "make_latent_ae_step", "latent_unet_config",
           "latent_sample"]


@dataclass(frozen=True)
class LatentAutoencoderConfig:
    """Conv autoencoder x (C, H, W) -> z (latent_channels, H/4, W/4) -> logits (C, H, W)."""

    in_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); H and W divisible by 4
    channels: tuple[int, int] = (32, 64)  # feature maps after each 4x4 stride-2 conv (as ConvVAEConfig)
    latent_channels: int = 4  # channels of the spatial latent: 4x7x7 = 196 numbers for digits

    def __post_init__(self):
        if len(self.in_shape) != 3 or min(self.in_shape) <= 0 or self.in_shape[1] % 4 or self.in_shape[2] % 4:
            raise ValueError(f"in_shape must be (C, H, W) with H and W divisible by 4, got {self.in_shape}.")
        if len(self.channels) != 2 or min(self.channels) <= 0 or self.latent_channels <= 0:
            raise ValueError(f"channels must be two positive integers and latent_channels positive, got "
                             f"{self.channels} and {self.latent_channels}.")


class LatentAutoencoder(nn.Module):
    """Encoder: chapter 5's two 4x4 stride-2 convolutions (28 -> 14 -> 7), then 3x3 convs to the latent;
    decoder: the mirror image with transposed convolutions, ending in Bernoulli logits (as ``vae.py``).

    There is no dense layer: the latent keeps the image's layout, so a U-Net can denoise it.
    ``latent_scale`` (a buffer, 1 until ``fit_latent_scale``) multiplies the code in ``encode`` and
    divides it in ``decode``, so reconstructions do not depend on it.
    """

    def __init__(self, config: LatentAutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else LatentAutoencoderConfig()
        c, (c1, c2), k = cfg.in_shape[0], cfg.channels, cfg.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),   # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, H/4, W/4)
            nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c2, k, 3, padding=1),  # (B, k, H/4, W/4), linear: the code takes any sign
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(k, c2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),  # (B, C, H, W) logits
        )
        self.register_buffer("latent_scale", torch.tensor(1.0))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, H/4, W/4): the shape of one latent, e.g. (4, 7, 7)."""
        _, h, w = self.config.in_shape
        return (self.config.latent_channels, h // 4, w // 4)

    def _check(self, x: Tensor, shape: Sequence[int], what: str) -> Tensor:
        x = _checks.network_input(x, self, what)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] == 0:
            raise ValueError(f"{what} must have shape (B, {', '.join(map(str, shape))}) with B >= 1, got "
                             f"{tuple(x.shape)}.")
        return x

    def code(self, x: Tensor) -> Tensor:
        """The unscaled code f(x): images (B, C, H, W) in [0, 1] -> (B, *latent_shape)."""
        return self.encoder(self._check(x, self.config.in_shape, "images"))

    def encode(self, x: Tensor) -> Tensor:
        """The latent the diffusion sees, z = latent_scale * f(x): (B, C, H, W) -> (B, *latent_shape)."""
        return self.latent_scale * self.code(x)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits g(z / latent_scale): latents (B, *latent_shape) -> (B, C, H, W).

        ``torch.sigmoid`` of them is the mean image, in [0, 1].
        """
        return self.decoder(self._check(z, self.latent_shape, "latents") / self.latent_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction logits g(f(x)), (B, C, H, W)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def fit_latent_scale(self, x: Tensor, batch_size: int = 500) -> float:
        """Set ``latent_scale`` = 1 / std of the codes f(x) over all images and entries; return it.

        x: (N, C, H, W) training images in [0, 1]. Afterwards ``encode(x)`` has standard deviation 1.
        """
        batch_size = _checks.count(batch_size, "batch_size")
        _checks.unit_range(self._check(_checks.tensor(x, "images"), self.config.in_shape, "images"), "images")
        codes = torch.cat([self.code(x[i: i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        std = codes.double().std().item()
        if not np.isfinite(std):
            raise ValueError("the codes of these images are NaN or infinite: check the images and the "
                             "autoencoder's weights (a diverged training gives NaN).")
        if not std > 0:
            raise ValueError("the codes of these images have zero spread; train the autoencoder first.")
        self.latent_scale.fill_(1.0 / std)
        return 1.0 / std


def make_latent_ae_step(model: LatentAutoencoder, opt: torch.optim.Optimizer,
                        batch: Callable[[int], Sequence[Tensor]], *,
                        penalty: float = 1e-3) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: loss = sum_i BCE(g(f(x))_i, x_i) + penalty * ||f(x)||^2, mean over the batch.

    ``batch(i)``'s first tensor holds grey-level images in [0, 1] (targets of the Bernoulli
    cross-entropy, not binarised: the decoder should give sharp mean images). The small L2
    penalty on the unscaled code only keeps its size from drifting. Returns {"loss", "recon", "penalty"}
    in nats per image.
    """
    if _checks.number(penalty, "penalty") < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}.")

    def step(i: int) -> dict[str, float]:
        got = batch(i)
        x = got if isinstance(got, Tensor) else got[0]
        x = _checks.unit_range(model._check(x, model.config.in_shape, "images"), "images")  # BCE targets
        model.train()
        code = model.code(x)
        logits = model.decoder(code)  # g(f(x)): the scale cancels, so use the unscaled code
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        reg = code.pow(2).sum() / x.shape[0]
        loss = recon + penalty * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "recon": recon.item(), "penalty": reg.item()}

    return step


def latent_unet_config(latent_shape: Sequence[int] = (4, 7, 7), num_classes: int | None = None,
                       base_channels: int = 64, num_res_blocks: int = 2) -> UNetConfig:
    """Chapter 8's U-Net for a latent: one level (7x7 cannot be halved twice), attention at 7x7.

    With ``channel_mults=(1,)`` there is no downsampling: residual blocks and self-attention over
    the 49 latent "pixels", with the encoder-decoder skips of the U-Net kept.
    """
    if len(tuple(latent_shape)) != 3:
        raise ValueError(f"latent_shape must be (C, H, W), e.g. autoencoder.latent_shape, got "
                         f"{latent_shape!r}.")
    c, h, w = (_checks.count(s, "every size in latent_shape") for s in latent_shape)
    return UNetConfig(in_shape=(c, h, w), base_channels=base_channels, channel_mults=(1,),
                      num_res_blocks=num_res_blocks, attention_resolutions=(h,), num_classes=num_classes)


@torch.no_grad()
def latent_sample(eps_model: EpsModel, autoencoder: LatentAutoencoder, sched: Schedule, n: int,
                  steps: int | None = None, sampler: str = "ddim", *, y: Tensor | None = None,
                  gamma: float | None = None, eta: float = 0.0, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None,
                  return_latents: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Draw n latents z_0 with chapter 8's sampler on ``eps_model`` and decode them: sigmoid(g(z_0)).

    ``sampler="ddim"`` runs ``diffusion.ddim_sample`` with ``steps`` (default 50) and ``eta``;
    ``"ddpm"`` runs ``diffusion.ddpm_sample`` over all T steps (``steps`` must then be None or T).
    With labels y: (n,) the class-conditional ``eps_model`` is guided by
    ``guidance.guided_eps(eps_model, y, gamma)`` (gamma defaults to 1, the conditional model).
    Returns images (n, C, H, W) in [0, 1], and with ``return_latents`` also z_0 (n, *latent_shape).
    """
    try:
        n = _checks.count(n, "n")
    except TypeError as err:
        raise ValueError(str(err)) from None
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}.")
    shape = (n, *autoencoder.latent_shape)
    wanted = getattr(getattr(eps_model, "config", None), "in_shape", None)
    if wanted is not None and tuple(wanted) != tuple(shape[1:]):
        raise ValueError(f"the denoiser works on {tuple(wanted)} but the autoencoder's latents are "
                         f"{tuple(shape[1:])}: use latent_unet_config(autoencoder.latent_shape).")
    if y is not None:
        y = torch.as_tensor(y)
        if y.shape != (n,):
            raise ValueError(f"y must hold one label per sample, shape ({n},), got {tuple(y.shape)}.")
        eps_model = guided_eps(eps_model, y, 1.0 if gamma is None else gamma)
    elif gamma is not None:
        raise ValueError("gamma (classifier-free guidance) needs labels y.")
    if device is None:
        device = next(autoencoder.parameters()).device
    if sampler == "ddim":
        z = ddim_sample(eps_model, sched, shape, 50 if steps is None else steps, eta, generator=generator,
                        device=device)
    elif sampler == "ddpm":
        if steps not in (None, sched.T):
            raise ValueError(f"the 'ddpm' sampler takes all T = {sched.T} steps; got steps={steps}.")
        z = ddpm_sample(eps_model, sched, shape, generator=generator, device=device)
    else:
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}.")
    images = torch.sigmoid(autoencoder.decode(z.to(next(autoencoder.parameters()).device)))
    return (images, z) if return_latents else images
