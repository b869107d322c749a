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
3. a download (Colab, ``pip install``), checked against the SHA-256 before it is kept. Each entry
   pins the commit (``revision``) in which its weight file was committed, and the download reads
   the file at that commit: a library installed today still fetches its own weights after a
   checkpoint is retrained on the branch. ``$COURSE_CHECKPOINT_URL`` replaces the source with a
   mirror (a URL or a local folder holding ``NAME.pt`` files); ``$COURSE_CHECKPOINT_TIMEOUT``
   sets the seconds without data before a download gives up (default 60).
The file is always read with ``torch.load(..., weights_only=True)``.

    classifier = pretrained.load("digit_classifier")
    pretrained.info("digit_classifier")["provenance"]["scores"]

``scripts/train_checkpoint.py NAME`` (in a clone of the repository) trains a shipped model from
the library's own code and writes it with ``save``; once the weights are committed,
``scripts/train_checkpoint.py --pin`` records that commit as the entry's ``revision``.
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

from . import download as _download
from .config import data_dir

MANIFEST = Path(__file__).with_name("checkpoints.json")
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"  # in a checkout: the repo's folder
# beside the weights in a checkout: {"NAME.pt": entry} for every checkpoints/NAME.pt, written from MANIFEST
CHECKOUT_MANIFEST = CHECKPOINTS / "MANIFEST.json"
MIRROR_ENV = "COURSE_CHECKPOINT_URL"  # a mirror: URL or folder that holds NAME.pt files
TIMEOUT_ENV = "COURSE_CHECKPOINT_TIMEOUT"  # seconds without data before a download gives up
DEFAULT_TIMEOUT = 60.0


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
                              f"{', '.join(sorted(entries)) or 'none'}.")
    return entries[name]


def in_checkout() -> bool:
    """True when this library runs from a clone of the course repository (``pip install -e .``).

    Then ``checkpoints/`` and ``scripts/`` sit beside ``course_lib/``; after a ``pip install`` they
    do not exist (and ``site-packages`` is no place to write weights).
    """
    root = CHECKPOINTS.parent
    return (root / "pyproject.toml").is_file() and (root / "scripts" / "train_checkpoint.py").is_file()


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_url(name: str, path: str | Path = MANIFEST, *, revision: str | None = None) -> str:
    """The raw file ``checkpoints/NAME.pt`` on GitHub, at ``revision`` (a commit or a branch).

    Default: the entry's pinned ``revision`` (the commit holding exactly these weights), else the
    manifest's branch (an entry not pinned yet).
    """
    m = manifest(path)
    entry = info(name, path)
    owner_repo = m["repository"].rstrip("/").removeprefix("https://github.com/")
    ref = revision or entry.get("revision") or m["branch"]
    return f"https://raw.githubusercontent.com/{owner_repo}/{ref}/checkpoints/{name}.pt"


def sources(name: str, path: str | Path = MANIFEST) -> list[str]:
    """The URLs a download of ``name`` tries, in order.

    ``$COURSE_CHECKPOINT_URL`` set: only ``<that URL or folder>/NAME.pt``. Otherwise the file at the
    pinned commit, then on the branch (for a history rewritten since the pin; the SHA-256 check
    still rejects any other weights).
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return [_download.as_url(mirror).rstrip("/") + f"/{name}.pt"]
    branch = manifest(path)["branch"]
    urls = [raw_url(name, path), raw_url(name, path, revision=branch)]
    return list(dict.fromkeys(urls))


def locate(name: str, *, path: str | Path = MANIFEST, local_dir: str | Path | None = None,
           cache_dir: str | Path | None = None, download: bool = True,
           timeout: float | None = None) -> Path:
    """The verified file of checkpoint ``name`` (see the module docstring for the search order).

    ``local_dir``: the checkout's ``checkpoints/`` folder (default: this checkout's, if the library
    runs from one). ``cache_dir``: where downloads are kept (default ``COURSE_DATA_DIR/checkpoints``).
    ``timeout``: seconds without data before a download gives up (default ``$COURSE_CHECKPOINT_TIMEOUT``
    or 60).
    """
    entry = info(name, path)
    local = Path(local_dir) if local_dir is not None else (CHECKPOINTS if in_checkout() else None)
    cache = Path(cache_dir) if cache_dir is not None else data_dir() / "checkpoints"
    if local is not None and (local / f"{name}.pt").exists():
        candidate = local / f"{name}.pt"
        found = sha256(candidate)
        if found != entry["sha256"]:
            raise CheckpointError(
                f"{candidate} does not match the manifest (SHA-256 {found[:12]}... instead of "
                f"{entry['sha256'][:12]}...): it was retrained without its manifest entry, or it is "
                f"corrupt. `git checkout -- checkpoints/{name}.pt` restores the committed file; "
                f"`python scripts/train_checkpoint.py {name}` retrains it together with its entry.")
        return candidate
    target = cache / f"{name}.pt"
    stale = target.exists()
    if stale and sha256(target) == entry["sha256"]:
        return target
    if not download:
        where = f"in {local} nor in {cache}" if local is not None else f"in {cache}"
        raise CheckpointError(f"Checkpoint {name!r} is neither {where}, and download=False."
                              + _by_hand(name, entry, cache))
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    failures: list[_download.DownloadFailed] = []
    for url in sources(name, path):
        try:
            # streams into a temporary file beside the target, renamed onto it only once verified
            return _download.fetch(url, target, sha256=entry["sha256"], size=entry.get("bytes"),
                                   timeout=timeout)
        except _download.DownloadFailed as err:
            failures.append(err)
            if err.kind not in ("not_found", "hash_mismatch"):
                break  # the same host would fail the same way: say so now
    raise CheckpointError(_failure_message(name, entry, failures, cache, stale, timeout)) from failures[-1]


_ADVICE = {
    "unreachable": "This machine could not reach the server: connect to the internet (on Colab: "
                   "is the runtime connected?). Where the host is blocked, point "
                   f"{MIRROR_ENV} to a mirror (a URL or a local folder that holds NAME.pt).",
    "timeout": "The server sent nothing for {timeout:g} s: run the cell again, allow more time with "
               f"{TIMEOUT_ENV}=300, or use a mirror ({MIRROR_ENV}).",
    "interrupted": "The connection broke before the whole file arrived (nothing partial was kept): "
                   "run the cell again.",
    "not_found": "There is no such file at that address: a fork that lacks the course's history, a "
                 "mirror without this file, or a manifest entry whose revision was never pushed. "
                 f"Point {MIRROR_ENV} to a URL or folder that holds NAME.pt.",
    "hash_mismatch": "The server has other weights under this name (retrained after this course_lib "
                     "was released, or a stale mirror); nothing was kept. Reinstall course_lib from "
                     "the same repository, or point {mirror} to a copy of the file with this hash.",
    "http": "The server refused the download: try again later, or use a mirror ({mirror}).",
}


def _failure_message(name: str, entry: dict[str, Any], failures: list, cache: Path, stale: bool,
                     timeout: float) -> str:
    tried = "\n".join(f"  - {f.url}: {f.detail}" for f in failures)
    advice = _ADVICE[failures[-1].kind].format(timeout=timeout, mirror=MIRROR_ENV).replace("NAME", name)
    text = (f"Checkpoint {name!r} is not on this machine and could not be downloaded:\n{tried}\n"
            f"{advice}")
    if stale:
        text += f"\n({cache / f'{name}.pt'} holds other weights, from another course_lib version.)"
    return text + _by_hand(name, entry, cache)


def _by_hand(name: str, entry: dict[str, Any], cache: Path) -> str:
    """What a reader can do without the download: copy the file in, or train it (in a clone)."""
    text = (f"\nYou can also copy {name}.pt (SHA-256 {entry['sha256'][:12]}...) into {cache} "
            f"(set COURSE_DATA_DIR to choose that folder)")
    if in_checkout():
        return text + f", or train it: `python scripts/train_checkpoint.py {name}`."
    return text + (", or train it: clone the course repository and run "
                   f"`python scripts/train_checkpoint.py {name}` there.")


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
