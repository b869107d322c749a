"""scripts/sample_cache.py: cached sample sets of chapter 14's table equal live draws, resume, and refuse
stale checkpoints."""

import json
import sys
from pathlib import Path

import pytest
import torch

from course_lib import autoregressive, vae, zoo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import sample_cache  # noqa: E402


def tiny(key):
    torch.manual_seed(0)
    return {"vae_mlp": lambda: vae.VAE(vae.VAEConfig(latent_dim=3, hidden_dims=(8,))),
            "pixelcnn": lambda: autoregressive.PixelCNN(
                autoregressive.PixelCNNConfig(channels=8, dilations=(1,)))}[key]().eval()


def live(key, model, n, seed, batch_size):
    """What zoo.score_seeds draws for seed ``seed`` of a row whose sample function is quantised."""
    g = torch.Generator().manual_seed(seed)
    return zoo.sample_in_batches(zoo.quantised(zoo.SAMPLERS[key].sample), model, n, g, batch_size)


@pytest.mark.parametrize("key", ["vae_mlp", "pixelcnn"])
def test_a_cached_set_is_the_live_draw_and_reads_back(tmp_path, key):
    model = tiny(key)
    file = sample_cache.cache_row(key, 5, 7, 3, tmp_path, torch.device("cpu"), command="test", model=model)
    stored = torch.load(file, weights_only=True)
    assert stored.dtype == torch.uint8 and stored.shape == (7, 1, 28, 28)
    images, entry = zoo.read_cache(key, 5, 7, 3, tmp_path)
    assert torch.equal(images, live(key, model, 7, 5, 3))  # bit for bit
    assert entry["seed"] == 5 and entry["n"] == 7 and entry["nfe"] == zoo.SAMPLERS[key].evaluations
    assert entry["checkpoint_sha256"] == entry["definition"]["checkpoints"][zoo.SAMPLERS[key].checkpoint]
    assert {"device", "date", "wall_time_s", "command", "course_lib", "sha256"} <= set(entry)
    if key == "pixelcnn":  # binary samples are stored exactly
        assert set(stored.unique().tolist()) <= {0, 255}
    # a prefix of whole batches is the live draw of fewer images; another prefix is refused
    assert torch.equal(zoo.read_cache(key, 5, 6, 3, tmp_path)[0], live(key, model, 6, 5, 3))
    with pytest.raises(FileNotFoundError, match="sample_cache.py"):
        zoo.read_cache(key, 5, 5, 3, tmp_path)
    with pytest.raises(FileNotFoundError, match="no cached set"):
        zoo.read_cache(key, 6, 7, 3, tmp_path)


def test_an_interrupted_draw_resumes_to_the_same_bytes(tmp_path):
    model, cpu = tiny("pixelcnn"), torch.device("cpu")
    whole = sample_cache.cache_row("pixelcnn", 3, 8, 3, tmp_path / "a", cpu, command="test", model=model)
    assert sample_cache.cache_row("pixelcnn", 3, 8, 3, tmp_path / "b", cpu, command="test", model=model,
                                  stop_after=1) is None  # interrupted after one batch of three
    partial = tmp_path / "b" / "pixelcnn-s3-n8.partial.pt"
    assert len(torch.load(partial, weights_only=True)["images"]) == 3
    assert sample_cache.cache_row("pixelcnn", 3, 8, 3, tmp_path / "b", cpu, command="test", model=model,
                                  stop_after=1) is None  # a second interruption, after the second batch
    resumed = sample_cache.cache_row("pixelcnn", 3, 8, 3, tmp_path / "b", cpu, command="test", model=model)
    assert not partial.exists()
    assert torch.equal(torch.load(whole, weights_only=True), torch.load(resumed, weights_only=True))
    # a partial file of another draw is never continued
    sample_cache.cache_row("pixelcnn", 3, 8, 3, tmp_path / "c", cpu, command="test", model=model,
                           stop_after=1)
    with pytest.raises(SystemExit, match="another draw"):
        sample_cache.cache_row("pixelcnn", 3, 8, 4, tmp_path / "c", cpu, command="test", model=model)


def test_a_set_from_another_checkpoint_is_refused(tmp_path):
    model = tiny("vae_mlp")
    file = sample_cache.cache_row("vae_mlp", 1, 4, 4, tmp_path, torch.device("cpu"), command="RERUN",
                                  model=model)
    meta = file.with_suffix(".json")
    entry = json.loads(meta.read_text())
    entry["definition"]["checkpoints"]["vae_mlp"] = "0" * 64  # drawn from weights that are not shipped now
    meta.write_text(json.dumps(entry))
    stale = r"checkpoint vae_mlp has SHA-256 [0-9a-f]{12}\.\.\. now, the set was drawn from 0{12}.*RERUN"
    with pytest.raises(zoo.StaleCache, match=stale):
        zoo.read_cache("vae_mlp", 1, 4, 4, tmp_path)
    with pytest.raises(zoo.StaleCache, match="batch_size"):  # drawn in other batches: other numbers
        zoo.read_cache("vae_mlp", 1, 4, 2, tmp_path)
    entry["definition"]["checkpoints"]["vae_mlp"] = zoo.row_definition("vae_mlp", 4)["checkpoints"]["vae_mlp"]
    meta.write_text(json.dumps(entry))
    zoo.read_cache("vae_mlp", 1, 4, 4, tmp_path)  # matches again
    stored = torch.load(file, weights_only=True)
    stored[0, 0, 0, 0] ^= 1  # one flipped bit
    torch.save(stored, file)
    with pytest.raises(ValueError, match="SHA-256"):
        zoo.read_cache("vae_mlp", 1, 4, 4, tmp_path)


def test_score_set_is_a_row_of_score_seeds():
    from course_lib import data, metrics

    digits = data.load_mnist("train", device="cpu", limit=1300, verbose=False, download=False).images
    train, held_out, pool = digits[:600], digits[600:900], digits[900:]
    ref = metrics.features(held_out)

    def draw(model, n, g):
        return pool[torch.randint(len(pool), (n,), generator=g)]

    row = zoo.score_seeds(draw, None, 200, [4], ref, train, held_out, fid_inf_ns=(100, 150, 200),
                          device="cpu")[0]
    images = zoo.sample_in_batches(draw, None, 200, torch.Generator().manual_seed(4))
    again = zoo.score_set(images, 4, ref, train, held_out, fid_inf_ns=(100, 150, 200))
    assert {k: v for k, v in row.items() if k != "speed"} == {k: v for k, v in again.items() if k != "speed"}
