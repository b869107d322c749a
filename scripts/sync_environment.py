"""Write environment.yml (conda) from pyproject.toml, so the two lists can never drift.

    python scripts/sync_environment.py           # rewrite environment.yml
    python scripts/sync_environment.py --check   # exit 1 if environment.yml is out of date

The conda environment holds the run-time dependencies and the book and test extras (the same
ones `make setup` installs), then installs course_lib itself with pip in editable mode.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("offline", "book", "test")  # what `make setup` installs ('.[book,test]', test -> offline)
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ
PIP_ONLY = {"django-static-mathjax"}  # not on conda-forge: installed by pip inside the environment


def requirements() -> list[str]:
    """Run-time requirements plus the EXTRAS, without references to course_lib itself."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += [r for r in project["optional-dependencies"][extra] if not r.startswith("course_lib")]
    seen, unique = set(), []
    for req in reqs:
        name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()
        if name not in seen:
            seen.add(name)
            unique.append(req)
    return unique


def to_conda(req: str) -> str:
    req = req.split(";")[0]  # conda has no environment markers: keep the requirement itself
    name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", req).groups()
    return CONDA_NAMES.get(name.lower(), name.lower()) + spec.replace(" ", "")


def render() -> str:
    lines = [
        "# Generated from pyproject.toml by scripts/sync_environment.py: do not edit by hand.",
        "# conda env create -f environment.yml && conda activate genmodels-course",
        "name: genmodels-course",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python>=3.10",
        "  - pip",
    ]
    reqs = requirements()
    pip_only = [r for r in reqs if re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower() in PIP_ONLY]
    lines += [f'  - "{to_conda(r)}"' for r in reqs if r not in pip_only]
    lines += ["  - pip:", *[f'      - "{r}"' for r in pip_only], "      - -e ."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    path = ROOT / "environment.yml"
    if args.check:
        if not path.exists() or path.read_text() != render():
            print("environment.yml is out of date: run python scripts/sync_environment.py")
            return 1
        return 0
    path.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
