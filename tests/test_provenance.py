import json
import re
from pathlib import Path

import pytest
import torch

from course_lib import data, provenance


def test_record_has_every_field(capsys):
    run = provenance.start("00_getting_started")
    assert "profile: fast" in capsys.readouterr().out
    run.used("toy ring mixture, 1,000 points")
    run.used("toy ring mixture, 1,000 points")
    record = run.finish()
    assert set(provenance.REQUIRED) <= set(record)
    assert record["data"] == ["toy ring mixture, 1,000 points"]
    assert record["profile"] == "fast" and record["lab"] == "00_getting_started"
    assert "Provenance of this run" in capsys.readouterr().out


def test_used_describes_image_data():
    run = provenance.start("00_getting_started")
    ds = data.ImageData(torch.zeros(4, 1, 28, 28), torch.zeros(4), "mnist", "test", "somewhere")
    assert run.used(ds) is ds
    assert run.data == ["mnist/test: 4 images (somewhere)"]


def test_unknown_lab_fails_early():
    with pytest.raises(KeyError, match="Known labs"):
        provenance.start("no_such_lab")


def test_paths_are_recorded_without_the_machine_path(tmp_path, monkeypatch, capsys):
    # DESIGN.md section 12: provenance and printed outputs never show a path of the machine.
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "data" / "mnist-test"
    assert provenance.portable_path(folder) == "COURSE_DATA_DIR/mnist-test"
    assert provenance.portable_path(tmp_path / "data") == "COURSE_DATA_DIR"
    assert provenance.portable_path(provenance._REPO / "checkpoints" / "x.pt") == "checkpoints/x.pt"
    assert provenance.portable_path("relative/dir") == "relative/dir"
    elsewhere = provenance.portable_path("/some/machine/only/folder")
    assert elsewhere == ".../only/folder"

    run = provenance.start("00_getting_started")
    run.used(f"FID reference: mnist test split, 10 images from {folder}")
    ds = data.ImageData(torch.zeros(2, 1, 28, 28), torch.zeros(2), "mnist", "test",
                        f"mnist test split, 2 images from {folder}")
    run.used(ds)
    record = run.finish()
    where = "COURSE_DATA_DIR/mnist-test"
    assert record["data"] == [f"FID reference: mnist test split, 10 images from {where}",
                              f"mnist/test: 2 images (mnist test split, 2 images from {where})"]
    assert str(tmp_path) not in capsys.readouterr().out


def test_data_from_files_on_disk_names_no_machine_path(tmp_path, monkeypatch, capsys):
    # The source that load_dataset reports for IDX files found on disk is what labs record.
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    folder = tmp_path / "mnist-test"
    folder.mkdir()
    n = 3
    images = bytes([0, 0, 8, 3]) + b"".join(k.to_bytes(4, "big") for k in (n, 28, 28)) + bytes(n * 784)
    labels = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(range(n))
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    ds = data.load_dataset("mnist", "test", device="cpu", download=False)
    assert ds.source == f"mnist test split, {n} images from COURSE_DATA_DIR/mnist-test"
    assert str(tmp_path) not in capsys.readouterr().out


_MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt|content|private|var)/")


@pytest.mark.parametrize("lab", sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb")),
                         ids=lambda p: p.stem)
def test_stored_outputs_and_provenance_name_no_machine_path(lab):
    nb = json.loads(lab.read_text())
    texts = [json.dumps(nb["metadata"].get("course", {}))]
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts += ["".join(v) if isinstance(v, list) else str(v) for k, v in out.get("data", {}).items()
                      if k.startswith("text/") or k == provenance.MIME]
    hits = sorted({m.group(0) for t in texts for m in _MACHINE_PATH.finditer(t)})
    assert not hits, (f"{lab.name} stores an absolute path of the machine that ran it ({hits}): "
                      "print COURSE_DATA_DIR/... or a repository-relative path (provenance.portable_path)")
