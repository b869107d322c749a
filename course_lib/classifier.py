"""The evaluation chapter's domain classifier: a small LeNet-style network for 28x28 digits.

Its penultimate layer is the feature space of every FID, precision and recall in the course
(``metrics.py``), and its softmax the ``p(y | x)`` of the Inception Score. The course ships one
trained copy (``pretrained.load("digit_classifier")``, trained by
``scripts/checkpoints/digit_classifier.py``), so all chapters measure with the same fixed network.

    model = DigitClassifier(ClassifierConfig())
    step = make_classifier_step(model, opt, batch, generator=g)   # for train.fit
    accuracy(model, test.images, test.labels)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks

Tensor = torch.Tensor
__all__ = ["ClassifierConfig", "DigitClassifier", "random_affine", "make_classifier_step", "accuracy"]


@dataclass(frozen=True)
class ClassifierConfig:
    """LeNet-style: two (conv 5x5, ReLU, max-pool 2) stages, then a dense feature layer and logits."""

    channels: tuple[int, int] = (16, 32)  # feature maps of the two convolutions (28 -> 14 -> 7)
    feature_dim: int = 64  # width of the penultimate layer: the features of FID and precision/recall
    n_classes: int = 10  # digits 0..9
    dropout: float = 0.3  # dropout on the features during training (none at evaluation)

    def __post_init__(self):
        if len(self.channels) != 2 or min(self.channels) <= 0:
            raise ValueError(f"channels must be two positive integers, got {self.channels}.")
        if self.feature_dim <= 0 or self.n_classes < 2:
            raise ValueError(f"need feature_dim >= 1 and n_classes >= 2, got {self.feature_dim} and "
                             f"{self.n_classes}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")


class DigitClassifier(nn.Module):
    """Images (B, 1, 28, 28) in [0, 1] -> logits (B, n_classes); ``features`` gives (B, feature_dim)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 5, padding=2), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),  # (B, c2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, config.feature_dim), nn.ReLU(),  # (B, feature_dim)
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.n_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer activations phi(x), (B, feature_dim); inputs centred as in training."""
        x = _checks.network_input(x, self, "images")
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"DigitClassifier expects images (B, 1, 28, 28), got {tuple(x.shape)}.")
        return self.body(x - 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of p(y | x), (B, n_classes)."""
        return self.head(self.features(x))


def random_affine(x: Tensor, *, degrees: float = 10.0, shift: float = 2.0,
                  scale: tuple[float, float] = (0.9, 1.1),
                  generator: torch.Generator | None = None) -> Tensor:
    """Data augmentation on a batch (B, C, H, W): one random rotation, scaling and shift per image.

    Rotation angle ~ U[-degrees, degrees], scale ~ U[scale], shift ~ U[-shift, shift] pixels in each
    direction; bilinear resampling of the whole batch at once (``affine_grid`` + ``grid_sample``),
    with zeros (the black background) outside the image.
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"random_affine expects a float batch of images (B, C, H, W), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}.")
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=generator, device=generator.device if generator else None).to(x.device)
    angle = (2 * u[:, 0] - 1) * math.radians(degrees)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    tx, ty = (2 * u[:, 2] - 1) * shift * 2 / w, (2 * u[:, 3] - 1) * shift * 2 / h  # in [-1, 1] units
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # the grid maps output to input: inverse scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def make_classifier_step(model: DigitClassifier, opt: torch.optim.Optimizer, batch: Callable[[int], tuple],
                         *, scheduler=None, augment: bool = True, generator: torch.Generator | None = None
                         ) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: cross-entropy -sum_i log p(y_i | x_i) / B on an augmented batch.

    ``batch(i)`` returns ``(images, labels)``; returns ``{"loss", "acc"}`` (training batch accuracy).
    """
    def step(i: int) -> dict[str, float]:
        got = batch(i)
        if not isinstance(got, (tuple, list)) or len(got) < 2:
            raise ValueError("make_classifier_step needs batch(i) to return (images, labels).")
        x, y = got[:2]
        y = _checks.labels(y, model.config.n_classes, x.shape[0], null=False).to(x.device)
        if augment:
            x = random_affine(x, generator=generator)
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}
    return step


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of images whose arg-max prediction equals the label (model in eval mode).

    images: (N, 1, 28, 28) grey levels in [0, 1] (as the classifier was trained); labels: (N,) integers.
    """
    _checks.tensor(images, "images", ndim=4)
    _checks.unit_range(_checks.floating(images, "images", " (divide uint8 grey levels by 255)"), "images")
    k = getattr(getattr(model, "config", None), "n_classes", None)
    labels = _checks.labels(labels, k, images.shape[0], null=False).to(images.device)
    batch_size = _checks.count(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i: i + batch_size]).argmax(1) == labels[i: i + batch_size]).sum())
                  for i in range(0, images.shape[0], batch_size))
    model.train(was_training)
    return correct / images.shape[0]
