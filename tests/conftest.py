import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_profile_env(monkeypatch):
    """Tests see the fast profile unless they set COURSE_FAST themselves, and never download."""
    monkeypatch.setenv("COURSE_FAST", os.environ.get("COURSE_FAST", "1") or "1")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    yield
    plt.close("all")
