"""Shipped checkpoints: every file matches its hash, loads, and is pinned to the commit that holds it;
save/load round trip; clear errors."""

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib import pretrained
from course_lib.vae import VAE, VAEConfig

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = pretrained.available()


def _tiny(width: int = 3) -> nn.Module:
    """A small course_lib model (only course_lib classes may be built from a manifest)."""
    return VAE(VAEConfig(hidden_dims=(width,), latent_dim=2))


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"repository": "https://github.com/o/r", "branch": "main",
                                "checkpoints": {}}))
    return path, tmp_path / "ckpt", tmp_path / "cache"


def test_manifest_shape():
    m = pretrained.manifest()
    assert m["repository"].startswith("https://github.com/") and m["branch"]
    for name, entry in m["checkpoints"].items():
        assert {"class", "config", "sha256", "bytes", "provenance"} <= set(entry), name
        prov = entry["provenance"]
        for key in ("command", "device", "course_lib", "data"):
            assert key in prov, f"{name}: provenance lacks {key!r}"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_checkpoint_matches_its_hash_and_loads(name):
    entry = pretrained.info(name)
    file = ROOT / "checkpoints" / f"{name}.pt"
    assert file.exists(), f"checkpoints/{name}.pt is missing: commit it with its manifest entry"
    assert pretrained.sha256(file) == entry["sha256"]
    model = pretrained.load(name, download=False)
    assert sum(p.numel() for p in model.parameters()) == entry["parameters"]
    assert not model.training
    # The entry records the architecture itself, so a later change of a config default cannot
    # rebuild a different network around the stored weights.
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        assert entry["config_class"] == f"{type(config).__module__}.{type(config).__qualname__}"
        assert pretrained._tuples(entry["config"]) == pretrained._tuples(dataclasses.asdict(config))


def test_every_checkpoint_file_has_an_entry():
    files = {p.stem for p in (ROOT / "checkpoints").glob("*.pt")}
    assert files <= set(SHIPPED), f"checkpoints without a manifest entry: {sorted(files - set(SHIPPED))}"


def test_the_folder_manifest_lists_the_same_entries():
    folder = ROOT / "checkpoints" / "MANIFEST.json"
    assert not folder.is_symlink() and folder.read_text() == pretrained.checkout_manifest_text(), \
        "checkpoints/MANIFEST.json is stale: run python -c 'from course_lib import pretrained; " \
        "pretrained.write_checkout_manifest()'"


def test_save_load_round_trip(store):
    path, local, cache = store
    model = _tiny(width=4)
    entry = pretrained.save("tiny", model, {"command": "test"}, path=path, local_dir=local)
    assert entry["parameters"] == sum(p.numel() for p in model.parameters())
    assert list(entry["config"]["hidden_dims"]) == [4] and entry["config_class"] == "course_lib.vae.VAEConfig"
    loaded = pretrained.load("tiny", path=path, local_dir=local, cache_dir=cache, download=False)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_half_precision_is_loaded_as_float32(store):
    path, local, cache = store
    model = _tiny()
    pretrained.save("tiny", model, {}, half=True, path=path, local_dir=local)
    loaded = pretrained.load("tiny", path=path, local_dir=local, cache_dir=cache, download=False)
    for a, b in zip(model.parameters(), loaded.parameters(), strict=True):
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=1e-3)


def test_unknown_name_lists_the_available_ones(store):
    path, _, _ = store
    with pytest.raises(pretrained.CheckpointError, match="No shipped checkpoint named 'nope'"):
        pretrained.load("nope", path=path)


def test_wrong_hash_is_a_clear_error(store):
    path, local, cache = store
    pretrained.save("tiny", _tiny(), {}, path=path, local_dir=local)
    torch.save(_tiny().state_dict(), local / "tiny.pt")  # other weights, same name
    with pytest.raises(pretrained.CheckpointError, match="does not match the manifest"):
        pretrained.load("tiny", path=path, local_dir=local, cache_dir=cache)


def test_download_false_says_where_it_looked(store):
    path, local, cache = store
    pretrained.save("tiny", _tiny(), {}, path=path, local_dir=local)
    (local / "tiny.pt").unlink()
    with pytest.raises(pretrained.CheckpointError, match="download=False"):
        pretrained.load("tiny", path=path, local_dir=local, cache_dir=cache, download=False)
    # the download path itself is tested against a local HTTP server in test_download.py


def _git(*args, text=True):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True, text=text).stdout


def _history_available() -> str | None:
    """None when the full git history is here; else why the revision test cannot run."""
    if shutil.which("git") is None:
        return "git is not installed"
    try:
        if _git("rev-parse", "--is-shallow-repository").strip() == "true":
            return "shallow clone: the pinned revisions are not in it (git fetch --unshallow)"
    except subprocess.CalledProcessError:
        return "not a git checkout (e.g. an unpacked archive)"
    return None


@pytest.mark.parametrize("name", SHIPPED)
def test_every_entry_is_pinned_to_a_commit_that_holds_its_weights(name):
    """The download reads checkpoints/NAME.pt at the entry's revision: that blob must have its hash."""
    entry = pretrained.info(name)
    rev = entry.get("revision", "")
    assert re.fullmatch(r"[0-9a-f]{40}", rev), (
        f"{name} has no pinned revision: commit checkpoints/{name}.pt, then run "
        "python scripts/train_checkpoint.py --pin and commit the manifests")
    assert pretrained.raw_url(name).endswith(f"/{rev}/checkpoints/{name}.pt")
    why = _history_available()
    if why:
        pytest.skip(why)
    blob = _git("show", f"{rev}:checkpoints/{name}.pt", text=False)
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"], (
        f"{name}: the file at {rev[:12]} is not the manifest's; run python scripts/train_checkpoint.py --pin")
    ancestor = subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", rev, "HEAD"])
    assert ancestor.returncode == 0, f"{rev[:12]} is not in this branch's history"


def test_only_course_lib_classes_are_built():
    with pytest.raises(pretrained.CheckpointError, match="course_lib only"):
        pretrained.build({"class": "os.system", "config": {}})


def test_manifest_repository_matches_config():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import sync_labs

    assert not sync_labs.sync_manifest(check=True), "run make sync"
