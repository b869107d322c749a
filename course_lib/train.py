"""A small, model-agnostic training loop.

The loop knows no maths. You give it a *step function* that performs one optimisation step and
returns its metrics as floats (``{"loss": 0.31}``); the loop calls it ``n_steps`` times, shows a
progress bar, records a history, stops with a clear message when a metric becomes NaN or
infinite, writes checkpoints atomically, and resumes from them::

    def step(i):
        x, = next(stream)
        loss = objective(model, x)
        opt.zero_grad(); loss.backward(); opt.step()
        return {"loss": loss.item()}

    history = fit(step, n_steps=2000, state={"model": model, "opt": opt},
                  checkpoint="runs/vae.pt", checkpoint_every=500)

Resuming restores every object in ``state`` (modules, optimisers, schedulers, generators), the
history and the global random-number generators, so an interrupted run that resumes ends with
the same parameters as one that never stopped (on the CPU, same seed).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

History = dict[str, list[float]]


class NonFiniteLossError(FloatingPointError):
    """Raised when a step returns a NaN or infinite metric."""


def fit(step: Callable[[int], Mapping[str, float]], n_steps: int, *,
        state: Mapping[str, Any] | None = None, checkpoint: str | Path | None = None,
        checkpoint_every: int = 0, resume: bool = True, progress: bool | None = None,
        desc: str = "training") -> History:
    """Call ``step(i)`` for ``i`` in ``[start, n_steps)`` and return the history of its metrics.

    Args:
        step: performs one training step ``i`` (0-based) and returns ``{name: float}``.
        n_steps: total number of steps of the run (a resumed run continues up to it).
        state: objects saved in checkpoints: anything with ``state_dict``/``load_state_dict``
            (modules, optimisers, schedulers, GradScaler) or a ``torch.Generator``.
        checkpoint: file for checkpoints; ``None`` disables them.
        checkpoint_every: save every this many steps (0: only at the end).
        resume: when ``checkpoint`` exists, load it and continue from its step.
        progress: ``False`` prints nothing; ``True`` shows a progress bar and a summary line;
            ``None`` (default) shows the bar only where it renders well (a terminal, or a
            notebook with ipywidgets, as on Colab; never when ``TQDM_DISABLE`` is set), and the
            summary line in any case.
    Returns:
        ``{"step": [...], name: [...]}``: one entry per step, including resumed ones.
    """
    if not callable(step):
        raise TypeError("step must be a function step(i) -> {'loss': float, ...}.")
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}.")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be a non-negative integer, got {checkpoint_every!r}.")
    state = dict(state or {})
    for name, obj in state.items():
        if not (isinstance(obj, torch.Generator) or hasattr(obj, "state_dict")):
            raise TypeError(f"state[{name!r}] has no state_dict(); pass modules, optimisers, "
                            "schedulers or torch.Generator objects.")
    path = Path(checkpoint) if checkpoint is not None else None

    history: History = {"step": []}
    start = 0
    if path is not None and resume and path.exists():
        history, start = load_checkpoint(path, state)
        print(f"Resumed from {path} at step {start}.")
    started = time.perf_counter()
    bar_class = _bar_class(progress)
    bar = bar_class(range(start, n_steps), initial=start, total=n_steps, desc=desc,
                    mininterval=1.0, **({"disable": True} if start >= n_steps else {}))
    for i in bar:
        metrics = step(i)
        bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
        if bad:
            where = f" The last good checkpoint, {path}, is kept." if path and path.exists() else ""
            raise NonFiniteLossError(
                f"Step {i} returned a non-finite value: {bad}. Training stopped.{where} "
                "Try a smaller learning rate, gradient clipping, or check the loss for log(0).")
        history["step"].append(i)
        for k, v in metrics.items():
            history.setdefault(k, []).append(float(v))
        if i % 10 == 0 or i == n_steps - 1:
            bar.set_postfix({k: f"{float(v):.4g}" for k, v in metrics.items()}, refresh=False)
        done = i + 1
        if path is not None and (done == n_steps or (checkpoint_every and done % checkpoint_every == 0)):
            save_checkpoint(path, state, history, done)
    bar.close()
    ran = n_steps - start
    if progress is not False and ran > 0:
        seconds = time.perf_counter() - started
        last = {k: f"{v[-1]:.4g}" for k, v in history.items() if k != "step" and v}
        print(f"{desc}: {ran} steps in {seconds:.1f} s ({ran / max(seconds, 1e-9):.1f} steps/s); "
              f"last {last}")
    return history


def _bar_class(progress: bool | None):
    """The tqdm class that renders well here, or a disabled one (see ``fit``'s ``progress``)."""
    from tqdm import std

    def disabled(*args, **kwargs):
        return std.tqdm(*args, **{**kwargs, "disable": True})

    try:
        from IPython import get_ipython

        notebook = hasattr(get_ipython(), "kernel")
    except ImportError:
        notebook = False
    try:
        import ipywidgets  # noqa: F401  (a notebook bar needs it; Colab has it)

        widgets = notebook
    except ImportError:
        widgets = False
    if progress is False:
        return disabled
    if progress is None:
        env_off = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
        terminal = sys.stderr is not None and sys.stderr.isatty()
        if env_off or (notebook and not widgets) or (not notebook and not terminal):
            return disabled  # the summary line is printed anyway
    if widgets:
        from tqdm import notebook as tqdm_notebook

        return tqdm_notebook.tqdm
    return std.tqdm


def timed(step: Callable[[int], Mapping[str, float]],
          key: str = "time_s") -> Callable[[int], dict[str, float]]:
    """``step`` with the wall time since the previous call added to its metrics as ``key``.

    The first call counts from the moment ``timed`` is called. Summed over a history, the times give
    the run's wall time, resumes included (each resume restarts the clock; the pause is not counted).
    """
    last = [time.perf_counter()]

    def wrapped(i: int) -> dict[str, float]:
        metrics = dict(step(i))
        now = time.perf_counter()
        metrics[key] = now - last[0]
        last[0] = now
        return metrics

    return wrapped


def warmup_constant_cosine(warmup: int, decay_from: int, total: int) -> Callable[[int], float]:
    """A learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR``: step i -> factor in [0, 1].

    Linear warm-up over ``warmup`` steps, then 1 (constant) up to step ``decay_from``, then half a
    cosine down to 0 at step ``total``. Any step is a usable model; the decay settles the noise of
    the last stretch.
    """
    if not 0 <= warmup <= decay_from < total:
        raise ValueError(f"need 0 <= warmup <= decay_from < total, got {warmup}, {decay_from}, {total}.")

    def factor(i: int) -> float:
        if i >= decay_from:
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (i - decay_from) / (total - decay_from))))
        return min(1.0, (i + 1) / warmup) if warmup else 1.0

    return factor


def save_checkpoint(path: str | Path, state: Mapping[str, Any], history: History, step: int) -> None:
    """Write ``state``, ``history``, ``step`` and the RNG states to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "step": step,
        "history": history,
        "state": {k: (v.get_state() if isinstance(v, torch.Generator) else v.state_dict())
                  for k, v in state.items()},
        "rng": _rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic on POSIX and Windows: a crash never leaves half a checkpoint


def load_checkpoint(path: str | Path, state: Mapping[str, Any]) -> tuple[History, int]:
    """Load a checkpoint written by ``save_checkpoint`` into ``state``; return (history, step)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    missing = set(state) - set(payload["state"])
    if missing:
        raise KeyError(f"Checkpoint {path} has no entry for {sorted(missing)}; "
                       f"it holds {sorted(payload['state'])}. Delete it to start afresh.")
    for k, obj in state.items():
        if isinstance(obj, torch.Generator):
            obj.set_state(payload["state"][k])
        else:
            obj.load_state_dict(payload["state"][k])
    _set_rng_state(payload["rng"])
    return payload["history"], int(payload["step"])


def _rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: Mapping[str, Any]) -> None:
    version, mt, gauss = rng["python"]
    random.setstate((version, tuple(mt), gauss))
    keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
