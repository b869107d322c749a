"""Tests of course_lib.autoregressive: causality exactly by autograd, normalisation on 3x3 images by
enumeration, samples against the exact probabilities (chi-square), completion, training."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from course_lib import autoregressive as ar
from course_lib import data, train


def tiny(shape=(1, 5, 5), gated=True, num_classes=None, channels=6, dilations=(1, 2), seed=0, double=True):
    torch.manual_seed(seed)
    model = ar.PixelCNN(ar.PixelCNNConfig(image_shape=shape, channels=channels, dilations=dilations,
                                          gated=gated, num_classes=num_classes))
    return model.double() if double else model


def jacobian(f, x):
    """(D, D) matrix J[i, j] = d f(x)_i / d x_j for one image x (1, 1, H, W)."""
    return torch.autograd.functional.jacobian(lambda z: f(z).flatten(), x).reshape(x[0].numel(), -1)


def all_binary_images(h, w):
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=h * w)), dtype=torch.float64)
    return bits.view(-1, 1, h, w)  # row-major: the last pixel varies fastest


def sharpen(model, factor=4.0):
    """Spread the logits of a fresh model so that its distribution is far from uniform."""
    with torch.no_grad():
        model.head[-1].weight.mul_(factor)
        model.head[-1].bias.fill_(0.7)
    return model


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("shape", ["full", "horizontal"])
def test_masked_conv_output_i_depends_on_inputs_before_i(mask_type, shape):
    torch.manual_seed(0)
    conv = ar.MaskedConv2d(1, 1, 5, mask_type, shape).double()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    J = jacobian(conv, x)
    diag_included = mask_type == "B"
    future = torch.triu(torch.ones_like(J), diagonal=0 if not diag_included else 1).bool()
    assert (J[future] == 0).all()  # exactly zero, not small
    assert (J.diagonal() != 0).all() == diag_included
    assert (J[~future & ~torch.eye(36, dtype=torch.bool)] != 0).any()


def test_vertical_masks_keep_whole_rows():
    a = ar.MaskedConv2d(1, 1, 3, "A", "vertical").mask
    b = ar.MaskedConv2d(1, 1, 3, "B", "vertical").mask
    assert a.tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("num_classes", [None, 3])
def test_network_is_causal_exactly(gated, num_classes):
    model = tiny(gated=gated, num_classes=num_classes)
    y = None if num_classes is None else torch.tensor([2])
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    J = jacobian(lambda z: model(z, y), x)
    assert (torch.triu(J) == 0).all()  # output i ignores every input j >= i
    assert (torch.tril(J, diagonal=-1) != 0).sum() > 0.5 * 25 * 24 / 2


def test_blind_spot_of_the_plain_stack_and_not_of_the_gated_one():
    pixel = (3, 3)
    i = pixel[0] * 7 + pixel[1]
    before = torch.arange(49).view(7, 7) < i
    g = torch.Generator().manual_seed(0)
    fields = {gated: ar.receptive_field(tiny((1, 7, 7), gated, dilations=(1, 1, 1)), pixel, generator=g)
              for gated in (True, False)}
    for field in fields.values():
        assert (field[~before] == 0).all()
    assert (fields[True][before] > 0).all()  # the gated stacks see every earlier pixel here
    missed = before & (fields[False] == 0)
    assert missed.any() and missed[:pixel[0], pixel[1] + 1:].any()  # the plain stack misses some, up right


@pytest.mark.parametrize("num_classes", [None, 2])
def test_probabilities_of_all_512_images_sum_to_one(num_classes):
    model = sharpen(tiny((1, 3, 3), num_classes=num_classes, dilations=(1,)))
    x = all_binary_images(3, 3)
    for label in ([None] if num_classes is None else range(num_classes)):
        y = None if label is None else torch.full((512,), label)
        p = ar.log_prob(model, x, y).exp()
        assert abs(p.sum().item() - 1) < 1e-10
        assert p.max() / p.min() > 50  # far from uniform: the test has teeth


def pooled_chisquare(counts, expected, min_expected=5.0):
    small = expected < min_expected
    obs, exp = counts[~small], expected[~small]
    if small.any():  # the cells with small expected counts, pooled into one
        obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    return stats.chisquare(obs, exp).pvalue


def test_ancestral_samples_match_the_exact_probabilities():
    model = sharpen(tiny((1, 3, 3), dilations=(1,)))
    with torch.no_grad():
        p = ar.log_prob(model, all_binary_images(3, 3)).exp().numpy()
    n = 20_000
    s = ar.sample(model, n, generator=torch.Generator().manual_seed(1))
    index = (s.flatten(1) * 2 ** torch.arange(8, -1, -1, dtype=s.dtype)).sum(1).long()
    counts = np.bincount(index.numpy(), minlength=512)
    assert pooled_chisquare(counts, n * p) > 1e-3


def test_completions_match_the_exact_conditional():
    model = sharpen(tiny((1, 3, 3), dilations=(1,)))
    x = all_binary_images(3, 3)
    with torch.no_grad():
        p = ar.log_prob(model, x).exp()
    top = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    keep = (x[:, 0, 0] == top).all(1)  # the 64 images with this first row
    cond = (p[keep] / p[keep].sum()).numpy()
    n = 10_000
    given = top.view(1, 1, 1, 3).expand(n, 1, 3, 3).clone()
    given[:, :, 1:] = 1.0  # arbitrary values in the rows to be sampled: ignored
    s = ar.complete(model, given, rows_kept=1, generator=torch.Generator().manual_seed(2))
    assert (s[:, 0, 0] == top).all()
    index = (s[:, 0, 1:].flatten(1) * 2 ** torch.arange(5, -1, -1, dtype=s.dtype)).sum(1).long()
    assert pooled_chisquare(np.bincount(index.numpy(), minlength=64), n * cond) > 1e-3


@pytest.mark.parametrize("gated, num_classes", [(True, None), (True, 3), (False, None)])
def test_fast_sampler_gives_the_naive_samples(gated, num_classes):
    model = tiny((1, 8, 6), gated, num_classes, dilations=(1,))  # receptive_rows 2 < 8: the crop is used
    y = None if num_classes is None else torch.tensor([0, 1, 2, 1])
    fast = ar.sample(model, 4, y, generator=torch.Generator().manual_seed(5))
    naive = ar.sample(model, 4, y, generator=torch.Generator().manual_seed(5), naive=True)
    assert torch.equal(fast, naive)


def test_same_seed_same_samples_and_binary_values():
    model = tiny((1, 6, 6), num_classes=10, double=False)
    a = ar.sample(model, 3, 7, generator=torch.Generator().manual_seed(0))
    b = ar.sample(model, 3, np.int64(7), generator=torch.Generator().manual_seed(0))
    c = ar.sample(model, 3, 7, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 6, 6) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_complete_never_changes_the_given_rows():
    model = tiny((1, 6, 6), double=False)
    x = torch.bernoulli(torch.full((5, 1, 6, 6), 0.5), generator=torch.Generator().manual_seed(0))
    original = x.clone()
    for rows in (0, 1, 3, np.int64(5), 6):
        out = ar.complete(model, x, rows, generator=torch.Generator().manual_seed(3))
        assert torch.equal(out[:, :, :rows], x[:, :, :rows])
        assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(x, original)  # the input is not modified
    assert torch.equal(ar.complete(model, x, 6), x)
    same = ar.complete(model, x, 0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same, ar.sample(model, 5, generator=torch.Generator().manual_seed(4)))


def test_log_prob_against_torch_bernoulli_and_bits_per_dim():
    model = tiny((1, 5, 4), num_classes=3)
    x = torch.bernoulli(torch.full((7, 1, 5, 4), 0.3, dtype=torch.float64))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    ref = torch.distributions.Bernoulli(logits=model(x, y)).log_prob(x).flatten(1).sum(1)
    lp = ar.log_prob(model, x, y)
    assert lp.shape == (7,) and torch.allclose(lp, ref)
    assert torch.allclose(ar.log_prob(model, x, y, batch_size=3), lp)
    assert ar.log_prob(model, x.bool(), y).dtype == torch.float64  # bool and integer images are accepted
    assert math.isclose(ar.bits_per_dim(20 * math.log(2), 20), 1.0)
    assert torch.allclose(ar.bits_per_dim(-lp, 20), -lp / (20 * math.log(2)))


def test_receptive_rows_bounds_the_receptive_field():
    model = tiny((1, 12, 5), dilations=(1, 2))
    assert model.receptive_rows == 4
    field = ar.receptive_field(model, (10, 2))
    rows = field.sum(1).nonzero().flatten()
    assert rows.min().item() == 10 - 4


def test_overfit_one_batch():
    torch.manual_seed(0)
    model = ar.PixelCNN(ar.PixelCNNConfig(image_shape=(1, 8, 8), channels=16, dilations=(1, 2)))
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = ar.make_pixelcnn_step(model, opt, lambda i: (x,))
    losses = [step(i)["loss"] for i in range(40)]
    assert losses[0] > 0.8 * 64 * math.log(2)  # about log 2 per pixel at the start
    assert losses[-1] < 0.5 * losses[0]  # memorising 4 images: the floor is log 4 nats


def test_training_step_with_fit_dry_run():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(32, 1, 6, 6, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    model = tiny((1, 6, 6), num_classes=3, double=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = data.Minibatches(images, labels, batch_size=8, seed=0)
    held = (images[:4].round(), labels[:4])
    step = ar.make_pixelcnn_step(model, opt, batch, generator=g, grad_clip=1.0, monitor={"held_out": held},
                                 monitor_every=2)
    history = train.fit(step, 4, state={"model": model, "opt": opt, "gen": g}, progress=False)
    assert len(history["loss"]) == 4 and history["monitor_step"] == [2.0, 4.0]
    assert all(math.isfinite(v) for v in history["held_out"])
    assert math.isclose(history["bits_per_dim"][0], history["loss"][0] / (36 * math.log(2)))


def test_bad_inputs_raise_clear_errors():
    model = tiny((1, 4, 4), double=False)
    cond = tiny((1, 4, 4), num_classes=3, double=False)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="binary"):
        ar.log_prob(model, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        ar.log_prob(model, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        ar.log_prob(model, torch.zeros(2, 1, 5, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ar.log_prob(model, np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="unconditional"):
        ar.sample(model, 2, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-conditional"):
        ar.sample(cond, 2)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        ar.log_prob(cond, x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        ar.log_prob(cond, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="positive"):
        ar.sample(model, 0)
    with pytest.raises(TypeError, match="integer"):
        ar.sample(model, 2.5)
    with pytest.raises(ValueError, match="rows_kept"):
        ar.complete(model, x, 5)
    with pytest.raises(ValueError, match="rows_kept"):
        ar.complete(model, x, -1)
    with pytest.raises(ValueError, match="inside"):
        ar.receptive_field(model, (4, 0))
    with pytest.raises(TypeError, match="PixelCNN"):
        ar.sample(torch.nn.Conv2d(1, 1, 1), 2)
    with pytest.raises(ValueError, match="image_shape"):
        ar.PixelCNNConfig(image_shape=(3, 28, 28))
    with pytest.raises(ValueError, match="odd"):
        ar.PixelCNNConfig(kernel_size=4)
    with pytest.raises(ValueError, match="at least one layer"):
        ar.PixelCNNConfig(dilations=())
    with pytest.raises(ValueError, match="mask_type"):
        ar.MaskedConv2d(1, 1, 3, "C")
    step = ar.make_pixelcnn_step(cond, torch.optim.SGD(cond.parameters(), lr=0.1), lambda i: (x,))
    with pytest.raises(ValueError, match="labels"):
        step(0)
    step = ar.make_pixelcnn_step(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda i: (x + 200.0,))
    with pytest.raises(ValueError, match="255"):
        step(0)
