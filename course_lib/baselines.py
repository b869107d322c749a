"""The simplest generative model of images: independent pixels (used in Lab 00).

p(x | y) = prod_i Bernoulli(x_i; sigmoid(theta_{y,i})): given the class y, each pixel is an
independent coin. It has an exact likelihood and trivial sampling, and its maximum-likelihood
estimate is the per-class mean image, but it ignores every dependency between pixels: its samples
show why the rest of the course needs latent variables, adversaries and diffusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks


class PixelBernoulli(nn.Module):
    """Independent Bernoulli pixels, one logit per (class, pixel); ``n_classes=1`` is unconditional."""

    def __init__(self, n_pixels: int = 784, n_classes: int = 10):
        super().__init__()
        if not all(hasattr(v, "__index__") for v in (n_pixels, n_classes)) or n_pixels <= 0 or n_classes <= 0:
            raise ValueError(f"n_pixels and n_classes must be positive integers, got {n_pixels!r}, "
                             f"{n_classes!r}.")
        n_pixels, n_classes = int(n_pixels), int(n_classes)
        self.n_pixels, self.n_classes = n_pixels, n_classes
        self.logits = nn.Parameter(torch.zeros(n_classes, n_pixels))  # theta, (K, D)

    def _logits_for(self, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        if y is None:
            if self.n_classes != 1:
                raise ValueError("This model is class-conditional: pass the labels y.")
            return self.logits.expand(batch, -1)
        y = torch.as_tensor(y, device=self.logits.device)
        if y.shape != (batch,) or y.is_floating_point() or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"y must hold {batch} integer labels in [0, {self.n_classes}), "
                             f"got {y.dtype} of shape {tuple(y.shape)}.")
        # one_hot(y) @ theta selects the rows theta_y, like self.logits[y], but its backward pass
        # is a matrix product, which sums in a fixed order (indexing's backward does not on CPU).
        return F.one_hot(y, self.n_classes).to(self.logits.dtype) @ self.logits  # (B, D)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | y) = sum_i [x_i log s_i + (1 - x_i) log(1 - s_i)], s = sigmoid(theta_y); (B,).

        ``x`` is (B, D) or (B, 1, H, W) with values in [0, 1] (grey levels act as soft targets:
        the result is then minus the cross-entropy).
        """
        flat = _checks.tensor(x, "x", min_ndim=2).flatten(1)  # (B, D)
        _checks.unit_range(_checks.floating(flat, "x", " (divide uint8 grey levels by 255)"), "x")
        if flat.shape[1] != self.n_pixels:
            raise ValueError(f"x has {flat.shape[1]} pixels per image, the model {self.n_pixels}.")
        logits = self._logits_for(y, flat.shape[0])
        return -F.binary_cross_entropy_with_logits(logits, flat, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x ~ p(x | y) for each label in ``y`` (B,); returns (B, D) of zeros and ones."""
        y = torch.as_tensor(y)
        probs = torch.sigmoid(self._logits_for(y, y.shape[0]))
        return torch.bernoulli(probs, generator=generator)


def pixel_bernoulli_mle(x: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> torch.Tensor:
    """Closed-form MLE of ``PixelBernoulli``: the mean image of each class, (K, D).

    Setting d/d theta of sum_n log p(x_n | y_n) to zero gives sigmoid(theta_{k,i}) = mean of x_{n,i}
    over the examples of class k.
    """
    flat = _checks.tensor(x, "x", min_ndim=2).flatten(1)
    _checks.unit_range(_checks.floating(flat, "x", " (divide uint8 grey levels by 255)"), "x")
    y = torch.as_tensor(y, device=flat.device)
    if y.shape != (flat.shape[0],) or y.is_floating_point() or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y must hold {flat.shape[0]} integer labels in [0, {n_classes}), got {y.dtype} of "
                         f"shape {tuple(y.shape)}.")
    counts = torch.bincount(y, minlength=n_classes).to(flat.dtype)  # (K,)
    if (counts == 0).any():
        raise ValueError("Every class needs at least one example for its MLE.")
    sums = torch.zeros(n_classes, flat.shape[1], dtype=flat.dtype, device=flat.device)
    return sums.index_add_(0, y, flat) / counts[:, None]
