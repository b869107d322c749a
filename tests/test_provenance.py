import pytest

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
    import torch

    ds = data.ImageData(torch.zeros(4, 1, 28, 28), torch.zeros(4), "mnist", "test", "somewhere")
    assert run.used(ds) is ds
    assert run.data == ["mnist/test: 4 images (somewhere)"]


def test_unknown_lab_fails_early():
    with pytest.raises(KeyError, match="Known labs"):
        provenance.start("no_such_lab")
