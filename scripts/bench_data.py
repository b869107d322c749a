"""Benchmark: one epoch of batching from an in-memory tensor vs a torchvision DataLoader.

    python scripts/bench_data.py [--batch-size 128] [--device cpu]

Both sides batch the same digits on the same device. The DataLoader side is the usual recipe:
a torchvision dataset whose __getitem__ turns each uint8 image into a PIL image and then into a
tensor with ToTensor, collated by a DataLoader (num_workers=0, as in a notebook). The tensor side
is course_lib.data.batches over images already converted and on the device.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from course_lib import config, data


class PilDigits(Dataset):
    """What torchvision's MNIST does per item: uint8 array -> PIL image -> ToTensor."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images_uint8.numpy(), labels
        self.to_tensor = transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.to_tensor(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def epoch_seconds(make_iter, device: torch.device, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in make_iter():
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    args = parser.parse_args()
    device = config.get_device(args.device)
    ds = data.load_mnist("train", device=device)
    images_uint8 = (ds.images * 255).round().to(torch.uint8).squeeze(1).cpu()
    loader = DataLoader(PilDigits(images_uint8, ds.labels.cpu()), batch_size=args.batch_size,
                        shuffle=True)
    t_loader = epoch_seconds(lambda: iter(loader), device)
    t_tensor = epoch_seconds(lambda: data.batches(ds.images, ds.labels, batch_size=args.batch_size),
                             device)
    print(f"{len(ds):,} digits, batch size {args.batch_size}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"DataLoader + PIL + ToTensor: {t_loader * 1000:8.1f} ms per epoch")
    print(f"in-memory tensor batches:    {t_tensor * 1000:8.1f} ms per epoch")
    print(f"speed-up: {t_loader / t_tensor:.0f}x")


if __name__ == "__main__":
    main()
