import random

import numpy as np
import pytest
import torch

from course_lib import config


@pytest.mark.parametrize("value, fast", [("1", True), ("true", True), ("YES", True), ("0", False),
                                         ("", False), ("off", False)])
def test_profile_from_environment(monkeypatch, value, fast):
    monkeypatch.setenv("COURSE_FAST", value)
    assert config.is_fast() is fast
    assert config.profile() == ("fast" if fast else "full")


def test_unset_means_full(monkeypatch):
    monkeypatch.delenv("COURSE_FAST")
    assert config.profile() == "full"


def test_bad_profile_value_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "maybe")
    with pytest.raises(ValueError, match="COURSE_FAST=1"):
        config.is_fast()


def test_every_budget_has_both_profiles_with_the_same_keys():
    for lab in config.BUDGETS:
        fast, full = config.budget(lab, "fast"), config.budget(lab, "full")
        cpu = config.budget(lab, "full", device="cpu")
        assert set(fast) == set(full) == set(cpu), lab
        for key, size in config.BUDGETS[lab].items():
            assert isinstance(size, config.Size), (lab, key)
            # the same kind of value in every profile (a tuple stays a tuple, a count stays a count)
            for value in (full[key], cpu[key]):
                assert type(value) is type(fast[key]), (lab, key, fast[key], value)


def test_cpu_values_apply_to_the_full_profile_without_a_gpu_only():
    full, cuda = config.budget("09_guidance", "full"), config.budget("09_guidance", "full", device="cuda")
    cpu, mps = config.budget("09_guidance", "full", device="cpu"), config.budget("09_guidance", "full", "mps")
    assert dict(full) == dict(cuda) and dict(cpu) == dict(mps)
    assert cpu["n_eval"] < full["n_eval"] and cpu["ddim_steps"] == full["ddim_steps"]
    fast = config.budget("09_guidance", "fast")
    assert dict(config.budget("09_guidance", "fast", device="cpu")) == dict(fast)
    # a row without a cpu value is the same on every device
    assert config.budget("00_getting_started", "full", "cpu") == config.budget("00_getting_started", "full")


def test_cpu_values_never_grow_a_budget():
    for lab, sizes in config.BUDGETS.items():
        for key, size in sizes.items():
            if size.cpu is not None and isinstance(size.full, int | float):
                assert size.cpu < size.full, (lab, key)


def test_budget_follows_profile_and_is_read_only(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    fast = config.budget("00_getting_started")
    monkeypatch.setenv("COURSE_FAST", "0")
    full = config.budget("00_getting_started")
    assert fast["steps"] < full["steps"]
    with pytest.raises(TypeError):
        fast["steps"] = 1


def test_unknown_lab_lists_known_labs():
    with pytest.raises(KeyError, match="00_getting_started"):
        config.budget("99_nope")


def test_bad_profile_name():
    with pytest.raises(ValueError, match="'fast' or 'full'"):
        config.budget("00_getting_started", profile_name="medium")


def test_device_selection(monkeypatch):
    assert config.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert config.get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda', 'mps' or 'cpu'"):
        config.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            config.get_device("cuda")


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    g1 = config.seed_everything(123)
    a, ga = draw(), torch.rand(2, generator=g1)
    g2 = config.seed_everything(123)
    b, gb = draw(), torch.rand(2, generator=g2)
    assert a == b and torch.equal(ga, gb)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", True])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        config.seed_everything(seed)


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert config.data_dir() == tmp_path
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert config.data_dir().name == "data"
