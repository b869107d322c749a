"""Run labs in place, top to bottom, and record their provenance (``make execute``).

    python scripts/execute_labs.py                      # every lab, full profile
    python scripts/execute_labs.py notebooks/05_vae.ipynb
    COURSE_FAST=1 python scripts/execute_labs.py ...    # quick check (never commit its outputs)

The lab's last cell calls ``run.finish()``, which emits its provenance as JSON; this script
stores it, with the wall time of the whole notebook, in ``metadata["course"]["provenance"]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_labs import ROOT, sync  # noqa: E402

KEY = "course_provenance"


def find_provenance(nb) -> dict | None:
    for cell in reversed(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("application/json")
            if isinstance(data, dict) and KEY in data:
                return dict(data[KEY])
    return None


def execute(lab: Path, timeout: int) -> dict:
    sync(lab, check=False)
    nb = nbformat.read(lab, as_version=4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(lab.parent)}}).execute()
    record = find_provenance(nb)
    if record is None:
        raise SystemExit(f"{lab}: no provenance output; its last cell must call run.finish().")
    record["notebook_wall_time_s"] = round(time.perf_counter() - started, 1)
    nb.metadata.setdefault("course", {})["provenance"] = record
    nbformat.write(nb, lab)
    return record


def main() -> int:
    # The kernel inherits this environment: figures need the inline backend (not Agg), and the
    # stored outputs get the library's one-line training summaries instead of progress bars.
    os.environ.pop("MPLBACKEND", None)
    os.environ["TQDM_DISABLE"] = "1"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("labs", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()
    for lab in args.labs or sorted((ROOT / "notebooks").glob("*.ipynb")):
        record = execute(lab, args.timeout)
        print(f"{lab.name}: {record['profile']} profile on {record['device_name']}, "
              f"{record['notebook_wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
