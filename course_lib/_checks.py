"""Input checks shared by the public functions of chapters 6-10 (private: no maths here).

Each check accepts the harmless variants of a value (a numpy integer where a count is expected, a
float64 tensor where a float32 network runs) and refuses the rest with a message that says what
was wrong and what to do. Checks run once per public call, never inside a sampler's loop.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

Tensor = torch.Tensor


def count(value, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int >= ``minimum``; numpy and 0-dim torch integers are accepted."""
    want = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {want}, got the boolean {value!r}.")
    try:
        n = operator.index(value)
    except TypeError:
        whole = isinstance(value, float) and value.is_integer()
        hint = f" (use int({value!r}) if you meant it)" if whole else ""
        raise TypeError(f"{name} must be {want}, got {type(value).__name__} {value!r}{hint}.") from None
    if n < minimum:
        raise ValueError(f"{name} must be {want}, got {n}.")
    return n


def number(value, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, what: str = "") -> float:
    """``value`` as a finite Python float, optionally in [low, high] (``low_open``: (low, high])."""
    try:
        if isinstance(value, (bool, str, bytes)) or value is None:
            raise TypeError
        v = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number{what}, got {type(value).__name__} {value!r}.") from None
    bad = not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or \
        (high is not None and v > high)
    if bad:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        rng = " and ".join(s for s in (lo, hi) if s)
        if low == 0 and low_open and high is None:
            raise ValueError(f"{name} must be positive (and finite){what}, got {value!r}.")
        raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}{what}, got {value!r}.")
    return v


def tensor(x, name: str, *, ndim: int | None = None, min_ndim: int = 1, nonempty: bool = True) -> Tensor:
    """``x`` must be a torch.Tensor with a batch dimension (B >= 1 unless ``nonempty=False``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__} (use torch.as_tensor).")
    if (ndim is not None and x.ndim != ndim) or x.ndim < min_ndim:
        want = f"{ndim} dimensions" if ndim is not None else f"at least {min_ndim} dimension(s)"
        raise ValueError(f"{name} must have {want} (a batch first), got shape {tuple(x.shape)}.")
    if nonempty and x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}): pass at least one item.")
    return x


def finite(x: Tensor, name: str) -> Tensor:
    """Refuse NaN or infinite entries (one reduction: call once per public call)."""
    if x.is_floating_point() and x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; check the data or the model "
                         "(a diverged training gives NaN weights).")
    return x


def floating(x: Tensor, name: str, hint: str = "") -> Tensor:
    """Refuse integer or boolean tensors where real values are expected."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}{hint}.")
    return x


def network_input(x: Tensor, module: nn.Module, name: str = "x") -> Tensor:
    """A floating input in the dtype of ``module``'s weights (float64 -> float32 is harmless; under
    autocast the input is left alone). Integer inputs are refused."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    floating(x, name, " (images are float: divide uint8 grey levels by 255)")
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled():
        x = x.to(weight.dtype)
    return x


def labels(y, num_classes: int | None, batch: int | None = None, null: bool = True) -> Tensor:
    """y as (B,) long, checked: labels in [0, num_classes], the last being the null label (``null``),
    or in [0, num_classes - 1] for a classifier (``null=False``); num_classes None: no range check."""
    if y is None:
        raise ValueError("labels y are required here: pass an integer tensor of class indices, shape (B,).")
    y = torch.as_tensor(y)
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or \
            (batch is not None and y.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(f"labels must be an integer tensor of shape {want}, got {y.dtype} {tuple(y.shape)}.")
    if num_classes is None:
        return y.long()
    top = num_classes if null else num_classes - 1
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > top):
        what = f"{num_classes} is the null label" if null else f"the classifier has {num_classes} classes"
        raise ValueError(f"labels must lie in [0, {top}] ({what}), got values in "
                         f"[{int(y.min())}, {int(y.max())}].")
    return y.long()


def unit_range(x: Tensor, name: str, low: float = 0.0, high: float = 1.0, tol: float = 1e-4) -> Tensor:
    """Refuse values outside [low, high] (the common slips: [0, 255] or [-1, 1] for [0, 1])."""
    if not x.numel():
        return x
    lo, hi = x.min().item(), x.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if lo < low - tol or hi > high + tol:
        hint = ""
        if hi > 1.5 and high <= 1:
            hint = " They look like grey levels in [0, 255]: divide by 255."
        elif lo < -0.1 and low == 0:
            hint = " They look like [-1, 1] (tanh range): use (x + 1) / 2."
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], found values in "
                         f"[{lo:.3g}, {hi:.3g}].{hint}")
    return x
