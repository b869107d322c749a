"""The package installs as Colab installs it, and environment.yml agrees with pyproject.toml."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import course_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sync_environment  # noqa: E402


def test_environment_yml_is_generated_from_pyproject():
    assert (ROOT / "environment.yml").read_text() == sync_environment.render(), (
        "environment.yml is out of date: run python scripts/sync_environment.py")


def test_environment_has_every_runtime_dependency_unpinned():
    text = (ROOT / "environment.yml").read_text()
    for name in ("pytorch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm", "jupyter-book"):
        assert f'"{name}' in text
    assert not re.search(r'"(pytorch|numpy)\s*==', text)


def test_runtime_dependencies_have_lower_bounds_only():
    deps = sync_environment.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=]", d)[0] for d in deps}
    assert names == {"torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm"}
    assert all("==" not in d and "<" not in d for d in deps)


def test_wheel_builds_with_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("course_lib-*.whl"))
    assert course_lib.__version__ in wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"course_lib/{p.name}" for p in (ROOT / "course_lib").glob("*.py")}
    assert modules <= names
    assert "course_lib/checkpoints.json" in names  # pretrained.load needs the manifest after pip install


def test_import_has_no_side_effects():
    out = subprocess.run([sys.executable, "-c", "import course_lib, course_lib.config, "
                          "course_lib.data, course_lib.train, course_lib.plotting, "
                          "course_lib.provenance, course_lib.toy"],
                         capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""
