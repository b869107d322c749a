import numpy as np
import pytest
import torch
import torchvision

from course_lib import plotting


def test_make_grid_layout():
    images = torch.zeros(5, 1, 4, 4)
    images[3] = 1.0
    grid = plotting.make_grid(images, nrow=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1)
    assert grid[6:10, 1:5, 0].min() == 1.0  # image 3 sits at row 1, column 0
    assert grid[1:5, 1:5, 0].max() == 0.0


def test_make_grid_is_torchvisions_channels_last():
    rgb = torch.rand(7, 3, 5, 6, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2  # some < 0, > 1
    ref = torchvision.utils.make_grid(rgb.clamp(0, 1), nrow=4, padding=2, pad_value=1.0)  # (3, H, W)
    assert np.array_equal(plotting.make_grid(rgb, nrow=4), ref.permute(1, 2, 0).numpy())
    grey = plotting.make_grid(rgb[:, :1], nrow=4)  # one channel kept, not three
    ref_grey = torchvision.utils.make_grid(rgb[:, :1].clamp(0, 1), nrow=4, pad_value=1.0)[0]
    assert grey.shape == (*ref.shape[1:], 1) and np.array_equal(grey[..., 0], ref_grey.numpy())
    assert plotting.make_grid(torch.zeros(9, 28, 28)).shape == (3 * 30 + 2, 3 * 30 + 2, 1)  # nrow = 3


@pytest.mark.parametrize("images", [torch.zeros(0, 1, 4, 4), torch.zeros(2, 2, 4, 4), torch.zeros(4)])
def test_make_grid_rejects_bad_shapes(images):
    with pytest.raises(ValueError, match="images must have shape"):
        plotting.make_grid(images)


def test_image_grid_draws():
    ax = plotting.image_grid(torch.rand(8, 1, 28, 28), nrow=4, title="digits")
    assert ax.get_title() == "digits" and len(ax.images) == 1


def test_learning_curves():
    history = {"step": list(range(50)), "loss": list(np.linspace(3, 1, 50)), "kl": [1.0] * 50}
    ax = plotting.learning_curves(history, smooth=5, logy=True)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"loss", "kl"}
    assert ax.get_xlabel() == "step"
    with pytest.raises(KeyError, match="history has no"):
        plotting.learning_curves(history, keys=["acc"])
    with pytest.raises(ValueError, match="smooth"):
        plotting.learning_curves(history, smooth=0)


def test_scatter_and_density():
    pts = torch.randn(100, 2)
    ax = plotting.scatter_2d(pts, labels=torch.arange(100) % 3, title="pts")
    assert ax.get_xlabel() == "$x_1$"
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.scatter_2d(torch.randn(10, 3))
    ax = plotting.density_2d(lambda xy: -0.5 * (xy ** 2).sum(1), (-3, 3), (-3, 3), n=30)
    assert ax.get_ylabel() == "$x_2$"
    bar = ax.figure.axes[-1]  # the colour bar's axes, beside the plot
    assert len(ax.figure.axes) == 2 and bar.get_ylabel() == "density"
    assert bar.get_ylim()[1] == pytest.approx(1.0, abs=0.1)  # the top level: the peak, exp(0) = 1
    ax = plotting.density_2d(lambda xy: -0.5 * (xy ** 2).sum(1), (-3, 3), (-3, 3), n=30, colorbar=False)
    assert len(ax.figure.axes) == 1
    with pytest.raises(ValueError, match="increasing"):
        plotting.density_2d(lambda xy: xy[:, 0], (1, 0), (0, 1))
    plotting.histogram_2d(pts, bins=10)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.histogram_2d(torch.randn(10))


def test_label_points_keeps_labels_apart():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
    x, y = [1.0, 1.2, 1.1, 5.0], [2.0, 2.05, 1.95, 8.0]  # three crowded points and one alone
    ax.scatter(x, y)
    ax.set(xlim=(0, 10), ylim=(0, 10))
    texts = plotting.label_points(ax, x, y, ["a long label", "another long label", "a third one", "alone"])
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in texts]
    assert [t.get_text() for t in texts] == ["a long label", "another long label", "a third one", "alone"]
    assert not any(boxes[i].overlaps(boxes[j]) for i in range(4) for j in range(i))
    assert len(ax.texts) == 4  # the rejected tries are removed
    with pytest.raises(ValueError, match="same length"):
        plotting.label_points(ax, x, y, ["a"])
    plt.close(fig)
