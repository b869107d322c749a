import pytest
import torch

from course_lib import train
from course_lib.baselines import PixelBernoulli, pixel_bernoulli_mle


def test_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    model = PixelBernoulli(n_pixels=12, n_classes=3)
    with torch.no_grad():
        model.logits.normal_(generator=g)
    x = torch.bernoulli(torch.full((5, 12), 0.4), generator=g)
    y = torch.tensor([0, 2, 1, 1, 0])
    ref = torch.distributions.Bernoulli(logits=model.logits[y]).log_prob(x).sum(1)
    assert torch.allclose(model.log_prob(x, y), ref, atol=1e-5)


def test_gradient_descent_reaches_the_closed_form_mle():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 1, 2, 3, generator=g)  # grey levels: soft targets
    y = torch.arange(200) % 2
    model = PixelBernoulli(n_pixels=6, n_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)

    def step(i):
        loss = -model.log_prob(x, y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"nll": loss.item()}

    train.fit(step, 400, progress=False)
    mle = pixel_bernoulli_mle(x, y, n_classes=2)
    assert torch.allclose(torch.sigmoid(model.logits), mle, atol=1e-3)


def test_samples_have_the_model_frequencies():
    model = PixelBernoulli(n_pixels=4, n_classes=1)
    with torch.no_grad():
        model.logits.copy_(torch.tensor([[-2.0, 0.0, 1.0, 3.0]]))
    n = 100_000
    xs = model.sample(torch.zeros(n, dtype=torch.long), generator=torch.Generator().manual_seed(2))
    p = torch.sigmoid(model.logits[0])
    assert torch.all((xs.mean(0) - p).abs() < 4 * (p * (1 - p) / n).sqrt())
    assert model.log_prob(xs[:3]).shape == (3,)  # unconditional: y may be omitted


def test_bad_inputs():
    with pytest.raises(ValueError, match="must be positive"):
        PixelBernoulli(n_pixels=0)
    model = PixelBernoulli(n_pixels=4, n_classes=2)
    with pytest.raises(ValueError, match="pass the labels"):
        model.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="labels in"):
        model.log_prob(torch.zeros(2, 4), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="pixels per image"):
        model.log_prob(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least one example"):
        pixel_bernoulli_mle(torch.zeros(2, 4), torch.tensor([0, 0]), n_classes=2)
