"""Run profile, per-lab budgets, device selection and seeding.

One switch chooses the profile: the environment variable ``COURSE_FAST``.
``COURSE_FAST=1`` gives tiny budgets (every lab in at most 60 s on two CPU cores, as in CI);
unset or ``0`` gives the full profile (good results in about ten minutes on a Colab T4 GPU).
The code paths are the same in both; only sizes, steps and sample counts change.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# Every lab's budget, in one place: {lab: {"fast": {...}, "full": {...}}}.
# Keys are the lab's notebook name without ".ipynb". Both profiles must have the same keys.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "00_getting_started": {
        # n_train: training digits used (at most what is available); steps: Adam steps of the
        # pixel model; batch_size: digits per step; lr: Adam's learning rate
        "fast": {"n_train": 1024, "steps": 60, "batch_size": 64, "lr": 0.05},
        "full": {"n_train": 60_000, "steps": 1500, "batch_size": 128, "lr": 0.05},
    },
}


def is_fast() -> bool:
    """Return True when ``COURSE_FAST`` asks for the fast profile (``1``, ``true``, ``yes``, ``on``)."""
    value = os.environ.get("COURSE_FAST", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"COURSE_FAST={value!r} is not understood: set COURSE_FAST=1 for the fast profile, "
        "or unset it (or set it to 0) for the full profile."
    )


def profile() -> str:
    """The active run profile: ``"fast"`` or ``"full"``."""
    return "fast" if is_fast() else "full"


def budget(lab: str, profile_name: str | None = None) -> MappingProxyType:
    """The read-only budget of ``lab`` for the active profile (or ``profile_name``).

    >>> budget("00_getting_started")["steps"]  # doctest: +SKIP
    600
    """
    if lab not in BUDGETS:
        known = ", ".join(sorted(BUDGETS))
        raise KeyError(f"No budget for lab {lab!r}. Known labs: {known}. Add one to config.BUDGETS.")
    name = profile() if profile_name is None else profile_name
    if name not in ("fast", "full"):
        raise ValueError(f"profile_name must be 'fast' or 'full', got {name!r}.")
    return MappingProxyType(dict(BUDGETS[lab][name]))


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the best available device: ``cuda``, else ``mps``, else ``cpu``.

    ``prefer`` (or the environment variable ``COURSE_DEVICE``) forces one of ``"cuda"``,
    ``"mps"`` or ``"cpu"``; asking for a device that is not available raises ``RuntimeError``.
    """
    choice = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if choice is None:
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if choice not in available:
        raise ValueError(f"Unknown device {choice!r}: choose 'cuda', 'mps' or 'cpu'.")
    if not available[choice]:
        raise RuntimeError(
            f"Device {choice!r} was requested but is not available on this machine. "
            "On Colab choose Runtime > Change runtime type > GPU, or ask for 'cpu'."
        )
    return torch.device(choice)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and CUDA); return a seeded CPU generator.

    Same seed, same numbers on the CPU. GPU kernels may still differ in the last bits.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def data_dir() -> Path:
    """Where datasets are stored: ``$COURSE_DATA_DIR``, else ``~/.cache/course_lib/data``."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_lib" / "data"


def describe(lab: str | None = None) -> str:
    """One line saying which profile and device this run uses (and the lab's budget)."""
    text = f"profile: {profile()} (COURSE_FAST={os.environ.get('COURSE_FAST', 'unset')}), "
    text += f"device: {get_device()}, torch {torch.__version__}"
    if lab is not None:
        text += f"\nbudget for {lab}: {dict(budget(lab))}"
    return text
