"""The only module that draws: image grids, learning curves, 2-D scatter and density plots, and
labels for the points of a scatter plot.

Each plotting function takes an optional matplotlib ``ax`` and returns the ``Axes`` it drew on, so
that labs can compose figures; axes are always labelled. ``label_points`` writes on a given ``ax``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from matplotlib.axes import Axes


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` or ``(N, H, W)`` into one ``(rows*H', nrow*W', C)`` array for imshow.

    ``nrow`` images per row (default: about sqrt(N)), rows = ceil(N / nrow), H' = H + ``padding``,
    W' = W + ``padding`` (plus one more ``padding`` at the bottom and the right edge); values are clipped
    to [0, 1]. The tiling is ``torchvision.utils.make_grid``'s; this wrapper checks the shapes and
    returns channels last, keeping one channel for grey images (torchvision repeats it three times).
    """
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W) with C in (1, 3) "
                         f"and N > 0; got {tuple(images.shape)}.")
    n, c = images.shape[:2]
    nrow = nrow or math.ceil(math.sqrt(n))
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}.")
    grid = torchvision.utils.make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow,
                                       padding=padding, pad_value=pad_value)  # (3, H, W)
    return grid[:c].permute(1, 2, 0).numpy()  # (H, W, C)


def image_grid(images: torch.Tensor, nrow: int | None = None, title: str | None = None,
               ax: Axes | None = None, figsize: float | None = None) -> Axes:
    """Show images ``(N, C, H, W)`` with values in [0, 1] as one grid (``nrow`` per row)."""
    grid = make_grid(images, nrow)
    size = figsize or min(10.0, 1.2 + grid.shape[1] / 45)
    ax = _axes(ax, (size, size * grid.shape[0] / grid.shape[1]))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray",
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def learning_curves(history: Mapping[str, Sequence[float]], keys: Sequence[str] | None = None,
                    smooth: int = 1, ax: Axes | None = None, logy: bool = False,
                    xlabel: str = "step", ylabel: str = "value") -> Axes:
    """Plot ``history[key]`` against ``history["step"]`` (or the index) for each key.

    ``smooth`` > 1 overlays a moving average of that window over the raw (faint) curve.
    """
    keys = list(keys) if keys is not None else [k for k in history if k != "step"]
    missing = [k for k in keys if k not in history]
    if missing:
        raise KeyError(f"history has no {missing}; it has {sorted(history)}.")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}.")
    ax = _axes(ax, (6, 3.5))
    for key in keys:
        y = np.asarray(history[key], dtype=float)
        x = np.asarray(history.get("step", range(len(y))), dtype=float)[: len(y)]
        if smooth > 1 and len(y) >= smooth:
            line, = ax.plot(x, y, alpha=0.25)
            kernel = np.ones(smooth) / smooth
            ax.plot(x[smooth - 1:], np.convolve(y, kernel, mode="valid"), color=line.get_color(),
                    label=key)
        else:
            ax.plot(x, y, label=key)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def scatter_2d(points: torch.Tensor, labels: torch.Tensor | None = None, ax: Axes | None = None,
               title: str | None = None, s: float = 4, alpha: float = 0.6, **kwargs) -> Axes:
    """Scatter ``(N, 2)`` points, coloured by integer ``labels`` ``(N,)`` when given."""
    pts = np.asarray(torch.as_tensor(points).detach().cpu())
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}.")
    ax = _axes(ax, (4.5, 4.5))
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, **kwargs)
    else:
        lab = np.asarray(torch.as_tensor(labels).detach().cpu())
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=lab, cmap="tab10", s=s, alpha=alpha, **kwargs)
        ax.legend(*sc.legend_elements(), loc="best", fontsize="small", markerscale=0.8)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return ax


def density_2d(log_density: Callable[[torch.Tensor], torch.Tensor], xlim: tuple[float, float],
               ylim: tuple[float, float], n: int = 200, ax: Axes | None = None,
               title: str | None = None, filled: bool = True, colorbar: bool = True) -> Axes:
    """Contour plot of ``exp(log_density(xy))`` on a grid; ``log_density`` maps (M, 2) -> (M,).

    With ``colorbar`` (the default) a colour bar beside the axes says which density each colour is.
    """
    if xlim[0] >= xlim[1] or ylim[0] >= ylim[1]:
        raise ValueError(f"xlim and ylim must be increasing pairs, got {xlim}, {ylim}.")
    xs = torch.linspace(*xlim, n, dtype=torch.float64)
    ys = torch.linspace(*ylim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # (n, n) each
    with torch.no_grad():
        logp = log_density(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
    z = torch.as_tensor(logp).detach().cpu().double().reshape(n, n).exp().numpy()
    ax = _axes(ax, (5.2, 4.5) if colorbar else (4.5, 4.5))
    contours = (ax.contourf if filled else ax.contour)(gx.numpy(), gy.numpy(), z, levels=20, cmap="viridis")
    if colorbar:
        ax.figure.colorbar(contours, ax=ax, label="density", shrink=0.85)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def histogram_2d(points: torch.Tensor, bins: int = 100, ax: Axes | None = None,
                 title: str | None = None, range_: tuple | None = None) -> Axes:
    """A 2-D histogram of ``(N, 2)`` samples: an empirical density picture."""
    pts = np.asarray(torch.as_tensor(points).detach().cpu())
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}.")
    ax = _axes(ax, (4.5, 4.5))
    ax.hist2d(pts[:, 0], pts[:, 1], bins=bins, range=range_, cmap="viridis")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


_LABEL_OFFSETS = ((6, 4), (6, -12), (-6, 4), (-6, -12), (0, 12), (0, -20), (6, 20), (6, -28))


def label_points(ax: Axes, x: Sequence[float], y: Sequence[float], labels: Sequence[str],
                 fontsize: float = 8) -> list:
    """Write each label beside its point without covering the labels written before it.

    For each point in turn the first of eight offsets (in points: right above, right below, left
    above, ...) whose text box stays inside the figure and overlaps no earlier label is kept; if
    none is free, the first is used. Call it after the axes' scales and limits are set, since boxes
    are measured on screen. Returns the text artists.
    """
    if not len(x) == len(y) == len(labels):
        raise ValueError(f"x, y and labels must have the same length, got {len(x)}, {len(y)}, {len(labels)}.")
    fig = ax.figure
    fig.canvas.draw()  # settle the layout, so that the boxes are measured where they will be drawn
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    boxes, texts = [], []
    for xi, yi, label in zip(x, y, labels, strict=True):
        tries = []
        for dx, dy in _LABEL_OFFSETS:
            text = ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(dx, dy),
                               fontsize=fontsize, ha="left" if dx > 0 else "right" if dx < 0 else "center")
            box = text.get_window_extent(renderer)
            tries.append((text, box))
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in boxes):
                break
        else:  # no free offset: the first one
            text, box = tries[0]
        for other, _ in tries:
            if other is not text:
                other.remove()
        boxes.append(box)
        texts.append(text)
    return texts
