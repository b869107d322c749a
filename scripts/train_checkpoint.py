"""Train a shipped checkpoint from the library's own code and record it in the manifest.

    python scripts/train_checkpoint.py --list
    python scripts/train_checkpoint.py digit_classifier          # resumes if interrupted
    python scripts/train_checkpoint.py ddpm_mnist --threads 2
    python scripts/train_checkpoint.py --pin                     # after committing the weights

Each recipe is a module ``scripts/checkpoints/<module>.py`` that defines ``NAMES`` (the
checkpoints it trains) and ``train(name, workdir) -> (model, details)``. ``train`` must use
``course_lib.train.fit`` with ``checkpoint=workdir / f"{name}.run.pt"`` so that a long CPU run
stops and resumes (run the same command again); ``details`` is a dict for the provenance (data,
steps, batch size, the training's total wall time across resumes, scores, ...; ``"half": True``
stores fp16 weights). This script adds the command, device,
date and versions, then writes ``checkpoints/NAME.pt`` and its manifest entry
(``course_lib/checkpoints.json``) with ``course_lib.pretrained.save``.

Releasing a checkpoint takes two commits: (1) commit ``checkpoints/NAME.pt`` with its entry;
(2) run ``--pin``, which finds in ``git log`` the commit holding exactly the file the entry
hashes and records it as the entry's ``revision``, and commit the manifests. An installed
course_lib downloads the weights from that commit, so retraining a checkpoint later never breaks
an older install. Resumable training states stay in ``checkpoints/runs/`` (see CONTRIBUTING.md).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "scripts" / "checkpoints"


def recipes() -> dict[str, Path]:
    """{checkpoint name: recipe module file}."""
    found: dict[str, Path] = {}
    for file in sorted(RECIPES.glob("*.py")):
        for name in _module(file).NAMES:
            if name in found:
                raise SystemExit(f"Checkpoint {name!r} is defined twice: {found[name]} and {file}.")
            found[name] = file
    return found


def _module(file: Path):
    spec = importlib.util.spec_from_file_location(f"recipe_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("name", nargs="?", help="checkpoint to train (see --list)")
    parser.add_argument("--list", action="store_true", help="list the checkpoints that can be trained")
    parser.add_argument("--workdir", type=Path, default=ROOT / "checkpoints" / "runs",
                        help="where resumable training state is kept (default: checkpoints/runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--pin", action="store_true",
                        help="record, for every entry, the commit that holds its weight file (revision)")
    args = parser.parse_args()
    if args.pin:
        return pin()
    known = recipes()
    if args.list or not args.name:
        print("\n".join(f"{n}  ({f.relative_to(ROOT)})" for n, f in known.items()))
        return 0
    if args.name not in known:
        raise SystemExit(f"Unknown checkpoint {args.name!r}. Known: {', '.join(known)}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    from course_lib import __version__, config, pretrained

    device = config.get_device()
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, details = _module(known[args.name]).train(args.name, args.workdir)
    provenance = {
        "command": f"python scripts/train_checkpoint.py {args.name}",
        "recipe": str(known[args.name].relative_to(ROOT)),
        "device": device_name,
        "last_session_wall_time_s": round(time.perf_counter() - started, 1),
        "course_lib": __version__,
        "torch": torch.__version__,
        **details,
    }
    half = bool(provenance.pop("half", False))  # a recipe may ask for fp16 weights
    entry = pretrained.save(args.name, model, provenance, half=half)
    print(f"saved checkpoints/{args.name}.pt ({entry['bytes'] / 1e6:.2f} MB, sha256 "
          f"{entry['sha256'][:12]}...) and its manifest entry.")
    return 0


def _git(*args: str, text: bool = True):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True, text=text).stdout


def committed_revision(name: str, digest: str) -> str | None:
    """The newest commit whose ``checkpoints/NAME.pt`` has SHA-256 ``digest`` (None: not committed)."""
    path = f"checkpoints/{name}.pt"
    for rev in _git("log", "--format=%H", "--", path).split():
        try:
            blob = _git("show", f"{rev}:{path}", text=False)
        except subprocess.CalledProcessError:  # the commit deleted the file
            continue
        if hashlib.sha256(blob).hexdigest() == digest:
            return rev
    return None


def pin() -> int:
    """Fill every manifest entry's ``revision`` from git history; 1 if some weights are not committed."""
    from course_lib import pretrained

    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        raise SystemExit("This clone is shallow: run `git fetch --unshallow` first.")
    data = json.loads(pretrained.MANIFEST.read_text())
    missing = []
    for name, entry in data["checkpoints"].items():
        rev = committed_revision(name, entry["sha256"])
        if rev is None:
            missing.append(name)
            entry.pop("revision", None)
        elif entry.get("revision") != rev:
            print(f"{name}: revision {rev[:12]}")
            entry["revision"] = rev
    pretrained.MANIFEST.write_text(json.dumps(data, indent=2) + "\n")
    pretrained.write_checkout_manifest()
    if missing:
        print(f"not committed yet (commit checkpoints/NAME.pt, then run --pin again): {', '.join(missing)}")
        return 1
    print("every entry is pinned; commit course_lib/checkpoints.json and checkpoints/MANIFEST.json.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
