"""Toy 2-D distributions: small enough to train on in seconds, rich enough to show mode
collapse, Wasserstein distances and diffusion at a glance. Each returns a float tensor (n, 2)."""

from __future__ import annotations

import math

import torch

from . import _checks

TOY_DATASETS = ("ring", "grid", "moons", "swiss_roll")


def ring_mixture(n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.02,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Mixture of ``n_modes`` equal Gaussians N(mu_k, std^2 I), mu_k = radius (cos, sin)(2 pi k / K).

    The defaults are the ring of Metz et al. (2017) that chapters 6 and 7 train on: 8 modes on a
    circle of radius 2, standard deviation 0.02.
    """
    n = _check(n, std)
    n_modes = _checks.count(n_modes, "n_modes")
    k = torch.randint(n_modes, (n,), generator=generator)
    angle = 2 * math.pi * k / n_modes
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + std * torch.randn(n, 2, generator=generator)


def grid_mixture(n: int, side: int = 5, spacing: float = 1.0, std: float = 0.05,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Mixture of ``side**2`` Gaussians N(mu_k, std^2 I) on a square grid centred at the origin.

    The defaults are the 5 x 5 grid of chapters 6 and 7: spacing 1, standard deviation 0.05.
    """
    n = _check(n, std)
    side = _checks.count(side, "side")
    k = torch.randint(side * side, (n,), generator=generator)
    offset = (side - 1) / 2
    centres = spacing * torch.stack([k // side - offset, k % side - offset], dim=1).float()
    return centres + std * torch.randn(n, 2, generator=generator)


def ring_centers(n_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The means mu_k = radius (cos, sin)(2 pi k / K) of ``ring_mixture``'s components, (K, 2)."""
    angle = 2 * math.pi * torch.arange(n_modes) / n_modes
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def grid_centers(side: int = 5, spacing: float = 1.0) -> torch.Tensor:
    """The means of ``grid_mixture``'s ``side**2`` components, (side**2, 2), in its order of k."""
    k, offset = torch.arange(side * side), (side - 1) / 2
    return spacing * torch.stack([k // side - offset, k % side - offset], dim=1).float()


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved half circles (upper one centred at 0, lower at (1, 0.5)), plus noise."""
    n = _check(n, noise)
    upper = torch.rand(n, generator=generator) < 0.5
    t = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=generator)


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """A 2-D spiral r(t) = t (cos t, sin t) for t in [1.5 pi, 4.5 pi], scaled into about [-1, 1]^2."""
    n = _check(n, noise)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 15.0
    return points + noise * torch.randn(n, 2, generator=generator)


def toy_data(name: str, n: int, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
    """Sample ``n`` points from the toy distribution ``name`` (see ``TOY_DATASETS``)."""
    makers = {"ring": ring_mixture, "grid": grid_mixture, "moons": two_moons, "swiss_roll": swiss_roll}
    if not isinstance(name, str) or name not in makers:
        raise ValueError(f"Unknown toy dataset {name!r}. Available: {', '.join(TOY_DATASETS)}.")
    return makers[name](n, generator=generator, **kwargs)


def _check(n: int, scale: float) -> int:
    try:
        n = _checks.count(n, "n")
    except (TypeError, ValueError):
        raise ValueError(f"n must be a positive integer (the number of points), got {n!r}.") from None
    if _checks.number(scale, "The noise scale") < 0:
        raise ValueError(f"The noise scale must be non-negative, got {scale!r}.")
    return n
