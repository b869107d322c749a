"""What a lab's Colab setup cell downloads, measured against a local clone served over file://.

The cell installs course_lib from a shallow, blob-filtered, sparse clone: it must fetch only the
library (well under the 30 MB budget; no weights, no training states, no notebooks) and the
package must build from it. The badge is an image inlined in the notebook (no network needed).
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sync_labs  # noqa: E402

LAB = ROOT / "notebooks" / "06_gan.ipynb"
BUDGET = 30_000_000  # bytes a Colab install may download
FETCHED = 2_000_000  # what the sparse clone fetches today is ~0.2 MB; fail well before the budget


def _git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A bare copy of this repository's HEAD that allows partial clones, as a file:// URL."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if (ROOT / ".git").exists() is False:
        pytest.skip("not a git checkout")
    bare = tmp_path_factory.mktemp("served") / "repo.git"
    _git("clone", "-q", "--bare", "--single-branch", str(ROOT), str(bare))
    _git("-C", str(bare), "config", "uploadpack.allowFilter", "true")
    _git("-C", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true")
    branch = sync_labs.repository()[1]
    head = _git("-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD").strip()
    if head != branch:  # a checkout on another branch (CI on a detached HEAD): serve it as `branch`
        _git("-C", str(bare), "branch", "-f", branch, _git("-C", str(ROOT), "rev-parse", "HEAD").strip())
    return bare.as_uri()


def test_the_setup_cell_fetches_only_the_library_and_it_builds(served, tmp_path):
    url, branch = sync_labs.repository()
    _, setup = sync_labs.expected_cells(LAB)
    wheels = tmp_path / "wheels"
    # run the cell as Colab would, but against the local copy, and build a wheel instead of installing
    code = (setup.replace('importlib.util.find_spec("course_lib") is None', "True")
            .replace(f'"{url}.git"', repr(served))
            .replace('"pip", "install", "-q", src', f'"pip", "wheel", "-q", "--no-deps", '
                                                    f'"--no-build-isolation", "-w", {str(wheels)!r}, src'))
    assert code.count(served) == 1 and "wheel" in code, "the setup cell's shape changed: update this test"
    namespace: dict = {}
    exec(compile(code, "colab-setup", "exec"), namespace)
    src = Path(namespace["src"])
    assert src.is_dir(), "the sparse clone failed and the cell fell back to pip install git+URL"
    fetched = sum(f.stat().st_size for f in (src / ".git" / "objects").rglob("*") if f.is_file())
    print(f"the setup cell's clone fetched {fetched:,} bytes")
    assert fetched < FETCHED < BUDGET
    tree = {p.name for p in src.iterdir()} - {".git", "build", "course_lib.egg-info"}  # minus build output
    assert tree == {"pyproject.toml", "README.md", "LICENSE", "course_lib"}, tree
    wheel = next(wheels.glob("course_lib-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"course_lib/{p.name}" for p in (ROOT / "course_lib").glob("*.py")} <= names
    assert "course_lib/checkpoints.json" in names


def test_every_lab_inlines_the_shipped_badge():
    image = sync_labs.badge_image()
    assert image.startswith("data:image/png;base64,")
    assert len(image) < 4000  # a small image, inlined in every lab's first cell
    for lab in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = "".join(sync_labs.nbformat.read(lab, as_version=4).cells[0].source)
        assert f"[![Open In Colab]({image})](" in first, f"{lab.name}: run make sync"
        assert "colab-badge.svg" not in first  # the online image would be a broken image offline
