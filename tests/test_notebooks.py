"""Checks of the committed labs themselves (their execution is nbmake's job, see `make labs`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))
import sync_labs  # noqa: E402

from course_lib import config, provenance  # noqa: E402


def load(lab: Path) -> dict:
    return json.loads(lab.read_text())


def code_cells(lab: Path) -> list[dict]:
    return [c for c in load(lab)["cells"] if c["cell_type"] == "code"]


def test_there_are_labs():
    assert (ROOT / "notebooks" / "00_getting_started.ipynb") in LABS


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_lab_has_outputs_and_no_errors(lab):
    cells = code_cells(lab)
    assert any(c["outputs"] for c in cells), f"{lab.name} has no outputs: run make execute"
    errors = [o for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{lab.name} stores an error output: {errors[0].get('ename')}"


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_no_stored_stderr(lab):
    # The book drops stderr with a warning (stderr_output: remove-warn), which -W turns into an error.
    streams = [i for i, c in enumerate(code_cells(lab)) for o in c["outputs"]
               if o["output_type"] == "stream" and o.get("name") == "stderr"]
    assert not streams, (f"{lab.name}: code cells {streams} store stderr (a warning?); "
                         "silence it at its source")


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_execution_counts_in_order(lab):
    counts = [c["execution_count"] for c in code_cells(lab)]
    assert None not in counts, f"{lab.name} has unexecuted code cells"
    assert counts == list(range(1, len(counts) + 1)), f"{lab.name}: run it top to bottom once"


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_provenance_from_a_full_run(lab):
    record = load(lab)["metadata"].get("course", {}).get("provenance")
    assert record is not None, f"{lab.name} has no provenance: run make execute"
    assert set(provenance.REQUIRED) <= set(record)
    assert record["lab"] == lab.stem and record["profile"] == "full"
    assert record["notebook_wall_time_s"] > 0 and record["data"]
    visible = [o for c in code_cells(lab) for o in c["outputs"]
               if "Provenance of this run" in "".join(o.get("text", ""))]
    assert visible, f"{lab.name} does not show its provenance summary"


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_lab_has_a_budget_and_uses_it(lab):
    assert lab.stem in config.BUDGETS, f"add {lab.stem} to course_lib.config.BUDGETS"
    source = "".join("".join(c["source"]) for c in code_cells(lab))
    assert f'provenance.start("{lab.stem}")' in source
    assert "run.finish()" in "".join(code_cells(lab)[-1]["source"])


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.stem)
def test_colab_badge_and_setup_cell_match_config(lab):
    assert not sync_labs.sync(lab, check=True), f"{lab.name} drifted: run make sync"
    badge, setup = sync_labs.expected_cells(lab)
    nb = load(lab)
    assert badge in "".join(nb["cells"][0]["source"])
    assert "".join(nb["cells"][1]["source"]) == setup


def test_colab_url_shape():
    url = sync_labs.colab_url(ROOT / "notebooks" / "00_getting_started.ipynb")
    repo, branch = sync_labs.repository()
    owner_repo = repo.removeprefix("https://github.com/")
    assert url == (f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/"
                   "notebooks/00_getting_started.ipynb")


def test_sync_check_detects_drift(tmp_path):
    lab = tmp_path / "00_getting_started.ipynb"
    nb = load(ROOT / "notebooks" / "00_getting_started.ipynb")
    nb["cells"][1]["source"] = "print('edited by hand')"
    lab.write_text(json.dumps(nb))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_labs.py"), "--check",
                             str(lab)], capture_output=True, text=True)
    assert result.returncode == 1 and "drifted" in result.stdout
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_labs.py"), str(lab)], check=True)
    assert not sync_labs.sync(lab, check=True)


def test_toc_lists_only_existing_pages_and_every_lab():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc["parts"]:
        walk(part["chapters"])
    for f in files:
        assert any((ROOT / (f + ext)).exists() for ext in (".md", ".ipynb")), f"{f} is missing"
    for lab in LABS:
        assert f"notebooks/{lab.stem}" in files, f"{lab.name} is not in _toc.yml"
