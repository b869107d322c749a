"""Tests of course_lib.unet: shapes, time and label conditioning, overfitting, EMA, bad inputs."""

import math

import pytest
import torch

from course_lib import diffusion as D
from course_lib import pretrained
from course_lib.unet import (
    MLPDenoiser,
    MLPDenoiserConfig,
    UNet,
    UNetConfig,
    count_parameters,
    ema,
    timestep_embedding,
)

TINY = UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,),
                  num_groups=4)


def test_default_unet_size_and_shapes_for_odd_batches():
    model = UNet()
    assert 0.7e6 <= count_parameters(model) <= 4e6  # the size range for 28x28 digits
    with torch.no_grad():
        for b in (1, 3):
            x = torch.randn(b, 1, 28, 28)
            assert model(x, torch.randint(1000, (b,))).shape == x.shape


def test_unet_is_sensitive_to_t_and_to_the_label():
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2),
                            attention_resolutions=(4,), num_groups=4, num_classes=3)).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        a, b = model(x, torch.tensor([5, 5, 5])), model(x, torch.tensor([900, 900, 900]))
        assert (a - b).abs().mean() > 1e-3
        c = model(x, torch.tensor([5, 5, 5]), torch.tensor([0, 1, 2]))
        d = model(x, torch.tensor([5, 5, 5]), torch.tensor([1, 2, 0]))
        assert (c - d).abs().mean() > 1e-4
        # y=None means the null label for the whole batch
        null = model(x, torch.tensor([5, 5, 5]), torch.full((3,), model.null_label))
        assert torch.equal(a, null)
        # a scalar t is the same time for every example
        assert torch.allclose(model(x, torch.tensor(5)), a)


def test_timestep_embedding_formula():
    t = torch.tensor([0, 3, 250])
    e = timestep_embedding(t, 8)
    freqs = [10_000 ** (-k / 4) for k in range(4)]
    expected = [[math.cos(s * f) for f in freqs] + [math.sin(s * f) for f in freqs] for s in (0, 3, 250)]
    assert torch.allclose(e, torch.tensor(expected), atol=1e-5)


def test_overfit_one_batch_tiny_unet():
    torch.manual_seed(0)
    model = UNet(TINY)
    sched = D.linear_schedule(100, 1e-3, 0.2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    t = torch.randint(sched.T, (8,), generator=g)
    eps = torch.randn(8, 1, 8, 8, generator=g)
    xt = D.q_sample(sched, x0, t, eps)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = torch.mean((model(xt, t) - eps) ** 2)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


def test_training_step_lowers_the_simple_loss_and_ema_tracks():
    torch.manual_seed(1)
    model = UNet(TINY)
    averaged = ema(model, 0.9)
    sched = D.linear_schedule(100, 1e-3, 0.2)
    x0 = (torch.rand(16, 1, 8, 8) > 0.5).float() * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    step = D.make_diffusion_step(model, opt, sched, lambda i: x0, ema=averaged,
                                 generator=torch.Generator().manual_seed(2))
    losses = [step(i)["loss"] for i in range(100)]
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    # EMA: theta_ema differs from theta but is close to it (a moving average of recent weights)
    p, q = next(model.parameters()), next(averaged.module.parameters())
    assert not torch.equal(p, q) and (p - q).abs().max() < 0.2


def test_ema_is_an_exponential_moving_average():
    lin = torch.nn.Linear(1, 1, bias=False)
    avg = ema(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(2.0)
        avg.update_parameters(lin)  # first update copies
        lin.weight.fill_(4.0)
        avg.update_parameters(lin)  # 0.5 * 2 + 0.5 * 4
    assert avg.module.weight.item() == pytest.approx(3.0)


def test_unet_in_samplers_same_seed_same_samples():
    torch.manual_seed(0)
    model = UNet(TINY).eval()
    sched = D.linear_schedule(20, 1e-3, 0.3)
    a = D.ddim_sample(model, sched, (3, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(4))
    b = D.ddim_sample(model, sched, (3, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(4))
    c = D.ddpm_sample(model, sched, (3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    d = D.ddpm_sample(model, sched, (3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(c, d) and a.shape == (3, 1, 8, 8)


def test_mlp_denoiser_shapes_and_t():
    model = MLPDenoiser(MLPDenoiserConfig(dim=2, hidden=32, depth=2))
    x = torch.randn(5, 2)
    with torch.no_grad():
        assert model(x, torch.zeros(5, dtype=torch.long)).shape == (5, 2)
        assert not torch.allclose(model(x, torch.zeros(5, dtype=torch.long)), model(x, torch.full((5,), 50)))


def test_unet_rebuilds_from_its_config_through_pretrained(tmp_path):
    model = UNet(TINY)
    manifest = tmp_path / "m.json"
    manifest.write_text('{"repository": "https://github.com/x/y", "branch": "main", "checkpoints": {}}')
    pretrained.save("tiny_unet", model, {"steps": 0}, half=True, path=manifest, local_dir=tmp_path)
    loaded = pretrained.load("tiny_unet", path=manifest, local_dir=tmp_path, download=False)
    assert loaded.config == TINY
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    with torch.no_grad():
        assert torch.allclose(loaded(x, t), model(x, t), atol=2e-2)


def test_bad_inputs_raise_clear_errors():
    model = UNet(TINY)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 9, 9), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        model(torch.zeros(1, 8, 8), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="t must"):
        model(torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    cond = UNet(UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1, 2), num_groups=4,
                           num_classes=3))
    with pytest.raises(ValueError, match="labels"):
        cond(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(in_shape=(1, 28, 28), channel_mults=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        UNetConfig(base_channels=12, num_groups=8)
    with pytest.raises(ValueError, match="decay"):
        ema(model, 1.0)
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.zeros(2), 7)
