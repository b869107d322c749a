"""Keep every lab's Colab badge and setup cell, and the checkpoint manifest's download location,
in sync with the repository URL in _config.yml.

    python scripts/sync_labs.py           # rewrite the labs that drifted
    python scripts/sync_labs.py --check   # exit 1 (listing them) if any lab drifted

A lab's first cell is Markdown with its title and the badge; the first code cell, tagged
``colab-setup``, installs course_lib from the repository when it is not importable (Colab).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
SETUP_TAG = "colab-setup"
SETUP = '''\
# Setup: on Colab (or wherever course_lib is not installed) install it from the course repository.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course_lib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{pip_url}"], check=True)'''


def repository() -> tuple[str, str]:
    """(url, branch) from _config.yml, e.g. ('https://github.com/owner/repo', 'main')."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    url = cfg["url"].rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"_config.yml repository.url must be https://github.com/OWNER/REPO, got {url}")
    return url, cfg.get("branch", "main")


def colab_url(lab: Path) -> str:
    url, branch = repository()
    owner_repo = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/notebooks/{lab.name}"


def expected_cells(lab: Path) -> tuple[str, str]:
    """The badge line and the setup cell source that ``lab`` must have."""
    url, branch = repository()
    return BADGE.format(url=colab_url(lab)), SETUP.format(pip_url=f"git+{url}@{branch}")


def sync(lab: Path, check: bool) -> bool:
    """Bring ``lab`` in line; return True when it had drifted."""
    nb = nbformat.read(lab, as_version=4)
    badge, setup = expected_cells(lab)
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        raise SystemExit(f"{lab}: the first cell must be Markdown starting with '# <title>'.")
    lines = first.source.split("\n")
    badge_lines = [i for i, line in enumerate(lines) if "colab-badge.svg" in line]
    if badge_lines:
        lines[badge_lines[0]] = badge
    else:
        lines[1:1] = ["", badge]
    new_first = "\n".join(lines)
    setup_cells = [c for c in nb.cells if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    drift = new_first != first.source or not setup_cells or setup_cells[0].source != setup
    if drift and not check:
        first.source = new_first
        if setup_cells:
            setup_cells[0].source = setup
        else:
            cell = nbformat.v4.new_code_cell(setup, metadata={"tags": [SETUP_TAG]})
            nb.cells.insert(1, cell)
        nbformat.write(nb, lab)
    return drift


def sync_manifest(check: bool) -> bool:
    """Bring the checkpoint manifest's repository and branch (used for downloads) in line."""
    import json

    path = ROOT / "course_lib" / "checkpoints.json"
    data = json.loads(path.read_text())
    url, branch = repository()
    drift = (data.get("repository"), data.get("branch")) != (url, branch)
    if drift and not check:
        data["repository"], data["branch"] = url, branch
        path.write_text(json.dumps(data, indent=2) + "\n")
    return drift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report drift")
    parser.add_argument("labs", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args()
    labs = args.labs or sorted((ROOT / "notebooks").glob("*.ipynb"))
    drifted = [lab for lab in labs if sync(lab, args.check)]
    if not args.labs and sync_manifest(args.check):
        drifted.append(ROOT / "course_lib" / "checkpoints.json")
    for lab in drifted:
        print(f"{'drifted' if args.check else 'updated'}: {lab}")
    return 1 if drifted and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
