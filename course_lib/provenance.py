"""What a lab records about its run: device, profile, data used, wall time, date, versions.

A lab calls ``run = provenance.start("05_vae")`` at the top, ``run.used(data)`` for each
dataset it trains or evaluates on, and ``run.finish()`` in its last cell. ``finish`` prints a
readable summary and emits the same record as JSON, which ``scripts/execute_labs.py`` copies
into the notebook's metadata (``metadata["course"]["provenance"]``); the book's run-time table
is built from there.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__, config

MIME = "application/json"
KEY = "course_provenance"
REQUIRED = ("lab", "profile", "device", "device_name", "data", "wall_time_s", "date",
            "course_lib", "torch", "python")
_REPO = Path(__file__).resolve().parent.parent


def _bases() -> list[tuple[Path, str]]:
    """The folders a path is shown relative to, most specific first, with their portable names."""
    bases = []
    if os.environ.get("COURSE_DATA_DIR"):
        bases.append((config.data_dir(), "COURSE_DATA_DIR"))
    bases += [(_REPO, "."), (Path.home(), "~")]
    return bases


def portable_path(path: str | Path) -> str:
    """``path`` as it may be printed or stored: never an absolute path of this machine.

    A path under ``$COURSE_DATA_DIR`` is shown as ``COURSE_DATA_DIR/...``, one inside the
    repository relative to it (``checkpoints/ddpm_mnist.pt``), one under the home folder as
    ``~/...``, and any other absolute path by its last two parts (``.../data/mnist-test``).
    A relative path is returned unchanged.
    """
    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(path)
    for base, name in _bases():
        try:
            rest = p.relative_to(base)
        except ValueError:
            continue
        if name == ".":
            return str(rest)
        return name if rest == Path() else f"{name}/{rest.as_posix()}"
    return ".../" + "/".join(p.parts[-2:])


def portable_text(text: str) -> str:
    """``text`` with every occurrence of a machine-specific folder replaced as ``portable_path`` does."""
    for base, name in _bases():
        prefix = str(base)
        if len(prefix) > 1:
            text = text.replace(prefix + os.sep, f"{name}/" if name != "." else "").replace(prefix, name)
    return text


@dataclass
class RunRecord:
    """The provenance of one lab run; create it with ``start``."""

    lab: str
    profile: str
    device: str
    device_name: str
    started: float = field(default_factory=time.perf_counter, repr=False)
    data: list[str] = field(default_factory=list)

    def used(self, data: Any) -> Any:
        """Record a dataset (an ``ImageData``, or a string describing it); return it unchanged.

        The description never keeps an absolute path of this machine (``portable_text``).
        """
        text = f"{data.name}/{data.split}: {len(data):,} images ({data.source})" if hasattr(
            data, "source") else str(data)
        text = portable_text(text)
        if text not in self.data:
            self.data.append(text)
        return data

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values, wall time measured up to now."""
        return {
            "lab": self.lab,
            "profile": self.profile,
            "device": self.device,
            "device_name": self.device_name,
            "data": list(self.data) or ["none (no dataset)"],
            "wall_time_s": round(time.perf_counter() - self.started, 1),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "course_lib": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }

    def finish(self) -> dict[str, Any]:
        """Print the summary, emit the JSON record for ``execute_labs.py``, and return it."""
        record = self.as_dict()
        lines = [f"Provenance of this run of lab {self.lab}:"]
        lines += [f"  {k:<12} {', '.join(v) if isinstance(v, list) else v}" for k, v in record.items()
                  if k != "lab"]
        print("\n".join(lines))
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return record
        if get_ipython() is not None:
            display({MIME: {KEY: record}}, raw=True)
        return record


def start(lab: str) -> RunRecord:
    """Start recording a run of ``lab``; print the profile, device and the lab's budget."""
    config.budget(lab)  # fail early, with the list of known labs, on a typo
    device = config.get_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    run = RunRecord(lab=lab, profile=config.profile(), device=device.type, device_name=name)
    print(config.describe(lab))
    if run.profile == "full" and device.type == "cpu":
        print("Note: the full profile on a CPU is slow; set COURSE_FAST=1 for a quick run, or use "
              "a GPU (on Colab: Runtime > Change runtime type > GPU).")
    return run
