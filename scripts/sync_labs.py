"""Keep every lab's Colab badge and setup cell, and the checkpoint manifest's download location,
in sync with the repository URL in _config.yml.

    python scripts/sync_labs.py           # rewrite the labs that drifted
    python scripts/sync_labs.py --check   # exit 1 (listing them) if any lab drifted

A lab's first cell is Markdown with its title and the badge; the first code cell, tagged
``colab-setup``, installs course_lib from the repository when it is not importable (Colab).

The badge image is inlined as a ``data:`` URI of ``_static/colab-badge.png`` (drawn for the
course from ``_static/colab-badge.svg``), so it shows in the built book offline, in Jupyter, on
GitHub and on Colab alike. (An SVG ``data:`` URI would be simpler, but Markdown parsers, MyST's
among them, refuse SVG data links.)

The setup cell installs from a shallow, blob-filtered, sparse clone that fetches only what the
package build needs (``SPARSE``): well under 1 MB, where ``pip install git+URL`` checks out the
whole tree (the labs with their outputs, every checkpoint and the resumable training states,
about 123 MB). The weights come later, one file at a time, when ``pretrained.load`` needs them.
Where git cannot do that (no git, or one older than 2.27), it falls back to ``pip install git+URL``.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = ROOT / "_static" / "colab-badge.png"
BADGE = "[![Open In Colab]({image})]({url})"
SETUP_TAG = "colab-setup"
# what the package build reads (pyproject.toml names README.md as the long description)
SPARSE = ("/pyproject.toml", "/README.md", "/LICENSE", "/course_lib/")
SETUP = '''\
# Setup: on Colab (or wherever course_lib is not installed) install it from the course repository.
# The clone fetches only the library (under 1 MB); pretrained weights download later, when needed.
import importlib.util
import subprocess
import sys
import tempfile

if importlib.util.find_spec("course_lib") is None:
    src = tempfile.mkdtemp(prefix="course_lib-")
    try:
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--filter=blob:none", "--sparse",
                        "--branch", "{branch}", "{url}", src], check=True)
        subprocess.run(["git", "-C", src, "sparse-checkout", "set", "--no-cone", {sparse}], check=True)
    except (OSError, subprocess.CalledProcessError):  # no git, or too old for a sparse clone
        src = "{pip_url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", src], check=True)'''


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


def badge_image() -> str:
    """The badge as a ``data:`` URI (works offline and needs no file beside the notebook)."""
    return "data:image/png;base64," + base64.b64encode(BADGE_IMAGE.read_bytes()).decode("ascii")


def expected_cells(lab: Path) -> tuple[str, str]:
    """The badge line and the setup cell source that ``lab`` must have."""
    url, branch = repository()
    setup = SETUP.format(url=f"{url}.git", branch=branch, pip_url=f"git+{url}@{branch}",
                         sparse=", ".join(f'"{p}"' for p in SPARSE))
    return BADGE.format(image=badge_image(), url=colab_url(lab)), setup


def is_badge(line: str) -> bool:
    """A line holding the Colab badge (today's inline image, or the former link to colab-badge.svg)."""
    return line.startswith("[![Open In Colab]") or "colab-badge.svg" in line


def sync(lab: Path, check: bool) -> bool:
    """Bring ``lab`` in line; return True when it had drifted."""
    nb = nbformat.read(lab, as_version=4)
    badge, setup = expected_cells(lab)
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        raise SystemExit(f"{lab}: the first cell must be Markdown starting with '# <title>'.")
    lines = first.source.split("\n")
    badge_lines = [i for i, line in enumerate(lines) if is_badge(line)]
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
