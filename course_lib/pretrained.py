"""Shipped pretrained checkpoints: ``load(name)`` gives a ready model, on any machine.

Some models of the course cost far more than a CPU reader can wait for (the diffusion U-Nets,
the evaluation chapter's classifier). Their weights are committed as ``checkpoints/NAME.pt``
(a ``state_dict``, fp32 or fp16) and described in the manifest ``course_lib/checkpoints.json``:
the model's class and config, the file's SHA-256, and its provenance (the command that trained
it, data, steps, wall time, device, date, scores). The manifest ships *inside* the library, so a
``pip install`` of course_lib knows the hashes of exactly the weights it was released with.

Where ``load`` finds the weights, in order:
1. ``checkpoints/NAME.pt`` of the checkout this library runs from (``pip install -e .``);
2. ``<COURSE_DATA_DIR>/checkpoints/NAME.pt`` (a previous download);
3. a download from the repository's raw-file URL (Colab), checked against the SHA-256.
The file is always read with ``torch.load(..., weights_only=True)``.

    classifier = pretrained.load("digit_classifier")
    pretrained.info("digit_classifier")["provenance"]["scores"]

``scripts/train_checkpoint.py NAME`` trains a shipped model from the library's own code and
writes it with ``save``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import data_dir

MANIFEST = Path(__file__).with_name("checkpoints.json")
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"  # in a checkout: the repo's folder
# beside the weights in a checkout: {"NAME.pt": entry} for every checkpoints/NAME.pt, written from MANIFEST
CHECKOUT_MANIFEST = CHECKPOINTS / "MANIFEST.json"


class CheckpointError(RuntimeError):
    """A checkpoint is unknown, missing, corrupt or cannot be downloaded."""


def manifest(path: str | Path = MANIFEST) -> dict[str, Any]:
    """The manifest: ``{"repository": url, "branch": name, "checkpoints": {name: entry}}``."""
    return json.loads(Path(path).read_text())


def available(path: str | Path = MANIFEST) -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(manifest(path)["checkpoints"])


def info(name: str, path: str | Path = MANIFEST) -> dict[str, Any]:
    """The manifest entry of ``name``: class, config, sha256, bytes, provenance."""
    entries = manifest(path)["checkpoints"]
    if name not in entries:
        raise CheckpointError(f"No shipped checkpoint named {name!r}. Available: "
                              f"{', '.join(sorted(entries)) or 'none'}. Train one with "
                              f"`python scripts/train_checkpoint.py {name}`.")
    return entries[name]


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_url(name: str, path: str | Path = MANIFEST) -> str:
    """Where a checkpoint is downloaded from: the raw file on the course repository's branch."""
    m = manifest(path)
    owner_repo = m["repository"].rstrip("/").removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_repo}/{m['branch']}/checkpoints/{name}.pt"


def locate(name: str, *, path: str | Path = MANIFEST, local_dir: str | Path | None = None,
           cache_dir: str | Path | None = None, download: bool = True) -> Path:
    """The verified file of checkpoint ``name`` (see the module docstring for the search order)."""
    entry = info(name, path)
    local = Path(local_dir) if local_dir is not None else CHECKPOINTS
    cache = Path(cache_dir) if cache_dir is not None else data_dir() / "checkpoints"
    for candidate in (local / f"{name}.pt", cache / f"{name}.pt"):
        if candidate.exists():
            found = sha256(candidate)
            if found != entry["sha256"]:
                raise CheckpointError(
                    f"{candidate} does not match the manifest (SHA-256 {found[:12]}... instead of "
                    f"{entry['sha256'][:12]}...): it is stale or corrupt. Delete it (it will be "
                    f"downloaded again), or retrain it with `python scripts/train_checkpoint.py {name}`.")
            return candidate
    if not download:
        raise CheckpointError(f"Checkpoint {name!r} is neither in {local} nor in {cache}, and "
                              "download=False.")
    url = raw_url(name, path)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}.pt"
    try:
        # Checks the SHA-256 prefix and removes the partial file on a mismatch.
        torch.hub.download_url_to_file(url, str(target), hash_prefix=entry["sha256"], progress=False)
    except Exception as err:  # no network, blocked host, wrong hash, ...
        raise CheckpointError(
            f"Checkpoint {name!r} is not on this machine and could not be downloaded from {url} "
            f"({type(err).__name__}: {err}). Connect to the internet, or copy {name}.pt into {cache} "
            f"or {local}, or train it with `python scripts/train_checkpoint.py {name}`.") from err
    return target


def build(entry: dict[str, Any]) -> nn.Module:
    """Instantiate the (untrained) model an entry describes: ``Class(ConfigClass(**config))``.

    A diffusion model's entry also names the noise schedule it was trained with (``"schedule"``,
    e.g. ``{"kind": "linear", "T": 1000, ...}``); the model records it as ``trained_schedule``, and
    the samplers refuse to run it with another one (``diffusion.check_schedule``).
    """
    cls = _import(entry["class"])
    config = _tuples(entry.get("config") or {})
    model = cls(_import(entry["config_class"])(**config)) if entry.get("config_class") else cls(**config)
    if entry.get("schedule"):
        from .diffusion import schedule_from_spec

        model.trained_schedule = schedule_from_spec(entry["schedule"])
    return model


def load(name: str, device: torch.device | str | None = None, *, path: str | Path = MANIFEST,
         local_dir: str | Path | None = None, cache_dir: str | Path | None = None,
         download: bool = True) -> nn.Module:
    """The shipped model ``name`` with its trained weights, in float32 and eval mode, on ``device``."""
    entry = info(name, path)
    file = locate(name, path=path, local_dir=local_dir, cache_dir=cache_dir, download=download)
    state = torch.load(file, map_location="cpu", weights_only=True)
    model = build(entry)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.to(device if device is not None else "cpu").eval()


def save(name: str, model: nn.Module, provenance: dict[str, Any], *, config: Any = None,
         half: bool = False, path: str | Path = MANIFEST, local_dir: str | Path | None = None) -> dict:
    """Write ``checkpoints/NAME.pt`` (atomically) and its manifest entry; return the entry.

    ``config`` is the model's config dataclass (or a dict of keyword arguments; default: the
    model's ``config`` attribute). ``half=True`` stores floating tensors in fp16 (half the size).
    """
    config = getattr(model, "config", None) if config is None else config
    local = Path(local_dir) if local_dir is not None else CHECKPOINTS
    local.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    target = local / f"{name}.pt"
    tmp = target.with_name(target.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)
    cls = type(model)
    entry = {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config_class": (f"{type(config).__module__}.{type(config).__qualname__}"
                         if dataclasses.is_dataclass(config) else None),
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {}),
        **({"schedule": schedule.spec} if getattr(schedule := getattr(model, "trained_schedule", None),
                                                  "spec", None) else {}),
        "sha256": sha256(target),
        "bytes": target.stat().st_size,
        "dtype": "float16" if half else "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "saved": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "provenance": provenance,
    }
    m = manifest(path)
    m["checkpoints"][name] = entry
    m["checkpoints"] = dict(sorted(m["checkpoints"].items()))
    Path(path).write_text(json.dumps(m, indent=2) + "\n")
    if local == CHECKPOINTS and Path(path) == MANIFEST:
        write_checkout_manifest()
    return entry


def checkout_manifest_text(path: str | Path = MANIFEST) -> str:
    """``checkpoints/MANIFEST.json`` as it should read: the packaged manifest's entries keyed by file.

    ``{"NAME.pt": {"file": "checkpoints/NAME.pt", "hash": "sha256:...", "config": ..., "provenance":
    ..., ...}}``, so that a reader (or a tool) finds each weight file's entry by its file name.
    """
    entries = {f"{name}.pt": {"name": name, "file": f"checkpoints/{name}.pt",
                              "hash": f"sha256:{e['sha256']}", **e}
               for name, e in manifest(path)["checkpoints"].items()}
    return json.dumps(entries, indent=2) + "\n"


def write_checkout_manifest(target: str | Path = CHECKOUT_MANIFEST, path: str | Path = MANIFEST) -> None:
    """Write the folder's own manifest beside the weights (a test checks that it matches ``MANIFEST``).

    The packaged manifest is what ``load`` reads (it travels with ``pip install``); this copy lists,
    next to each ``checkpoints/NAME.pt``, its hash, config and provenance for readers of the folder.
    """
    Path(target).write_text(checkout_manifest_text(path))


def _import(dotted: str):
    module, _, attr = dotted.rpartition(".")
    if not module.startswith("course_lib"):
        raise CheckpointError(f"Refusing to build {dotted!r}: shipped models come from course_lib only.")
    return getattr(importlib.import_module(module), attr)


def _tuples(value):
    """JSON turns tuples into lists; dataclass configs expect tuples back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
