"""Tests of course_lib.latent: shapes round-trip, the latent scale, the training step, latent sampling
with closed-form predictors, and bad inputs."""

import math

import pytest
import torch

from course_lib import data, pretrained, train
from course_lib import diffusion as D
from course_lib.latent import (
    LatentAutoencoder,
    LatentAutoencoderConfig,
    latent_sample,
    latent_unet_config,
    make_latent_ae_step,
)
from course_lib.unet import UNet, count_parameters

TINY = LatentAutoencoderConfig(in_shape=(1, 8, 8), channels=(8, 16), latent_channels=2)


def _blobs(n, generator, size=8):
    """Grey-level images in [0, 1]: a bright square at a random place. (n, 1, size, size)."""
    x = torch.zeros(n, 1, size, size)
    corner = torch.randint(0, size - 3, (n, 2), generator=generator)
    for i, (r, c) in enumerate(corner.tolist()):
        x[i, 0, r:r + 3, c:c + 3] = 1.0
    return x


def test_shapes_round_trip_for_digits_and_odd_batches():
    model = LatentAutoencoder()
    assert model.latent_shape == (4, 7, 7) and count_parameters(model) < 300_000
    with torch.no_grad():
        for b in (1, 3):
            x = torch.rand(b, 1, 28, 28)
            z = model.encode(x)
            assert z.shape == (b, 4, 7, 7)
            assert model.decode(z).shape == x.shape and model(x).shape == x.shape


def test_latent_scale_gives_unit_std_and_leaves_reconstructions_unchanged(tmp_path):
    torch.manual_seed(0)
    model = LatentAutoencoder(TINY)
    x = _blobs(300, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
        raw_std = model.encode(x).std().item()
    scale = model.fit_latent_scale(x, batch_size=128)
    assert scale == pytest.approx(1 / raw_std, rel=1e-5) and model.latent_scale.item() == pytest.approx(scale)
    with torch.no_grad():
        assert model.encode(x).std().item() == pytest.approx(1.0, rel=1e-5)
        assert torch.allclose(model(x), before, atol=1e-5)  # g(f(x)): the scale cancels
    # the scale is a buffer: it travels with the weights through pretrained.save / load
    manifest = tmp_path / "m.json"
    manifest.write_text('{"repository": "https://github.com/x/y", "branch": "main", "checkpoints": {}}')
    pretrained.save("tiny_ae", model, {"steps": 0}, path=manifest, local_dir=tmp_path)
    loaded = pretrained.load("tiny_ae", path=manifest, local_dir=tmp_path, download=False)
    assert loaded.config == TINY and loaded.latent_scale.item() == pytest.approx(scale)


def test_training_step_lowers_the_reconstruction_loss():
    torch.manual_seed(0)
    model = LatentAutoencoder(TINY)
    x = _blobs(256, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = train.fit(make_latent_ae_step(model, opt, data.Minibatches(x, batch_size=64), penalty=1e-3),
                        120, progress=False)
    first, last = sum(history["recon"][:5]) / 5, sum(history["recon"][-5:]) / 5
    assert last < 0.6 * first
    assert all(math.isfinite(v) for v in history["penalty"])
    # the loss is recon + penalty * ||f(x)||^2 per image
    expected = history["recon"][-1] + 1e-3 * history["penalty"][-1]
    assert history["loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_latent_sample_with_closed_form_predictors(tmp_path):
    sched = D.linear_schedule(1000)
    model = LatentAutoencoder()
    # exact eps of N(0, I) latents: the samples are N(0, I) latents, decoded into images in [0, 1]
    # (200 DDIM steps: on Gaussian data each deterministic step shrinks the spread slightly, 20 give 0.91)
    images, z = latent_sample(D.gaussian_data_eps(sched, 0.0, 1.0), model, sched, 400, steps=200,
                              generator=torch.Generator().manual_seed(0), return_latents=True)
    assert images.shape == (400, 1, 28, 28) and z.shape == (400, 4, 7, 7)
    assert images.min() >= 0 and images.max() <= 1
    assert abs(z.mean().item()) < 0.02 and z.std().item() == pytest.approx(1.0, abs=0.03)
    # a one-point latent data set m: every sample decodes to decode(m), DDIM and DDPM alike
    m = torch.randn(4, 7, 7, generator=torch.Generator().manual_seed(1))
    small = D.linear_schedule(50, 1e-3, 0.3)
    with torch.no_grad():
        target = torch.sigmoid(model.decode(m[None]))
    for sampler in ("ddim", "ddpm"):
        out = latent_sample(D.gaussian_data_eps(small, m, 0.0), model, small, 3, sampler=sampler,
                            generator=torch.Generator().manual_seed(2))
        assert torch.allclose(out, target.expand(3, -1, -1, -1), atol=1e-4)


def test_latent_sample_with_a_conditional_latent_unet_and_labels():
    sched = D.linear_schedule(1000)
    ae = LatentAutoencoder()
    denoiser = UNet(latent_unet_config(ae.latent_shape, num_classes=10, base_channels=16,
                                       num_res_blocks=1)).eval()
    assert denoiser.config.channel_mults == (1,) and denoiser.config.attention_resolutions == (7,)
    y = torch.tensor([0, 3, 9])

    def run(**kw):
        g = torch.Generator().manual_seed(0)
        return latent_sample(denoiser, ae, sched, 3, steps=4, generator=g, **kw)

    a, b, c, u = run(y=y, gamma=3.0), run(y=y, gamma=3.0), run(y=y, gamma=0.0), run()
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(c, u, atol=1e-6)  # gamma = 0 is the unconditional (null-label) model


def test_bad_inputs_raise_clear_errors():
    sched = D.linear_schedule(100, 1e-3, 0.2)
    ae = LatentAutoencoder()
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        ae.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 4, 7, 7\)"):
        ae.decode(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        LatentAutoencoderConfig(in_shape=(1, 30, 30))
    wrong = UNet(latent_unet_config((4, 8, 8), base_channels=16, num_res_blocks=1))
    with pytest.raises(ValueError, match="latent_unet_config"):
        latent_sample(wrong, ae, sched, 2)
    eps = D.gaussian_data_eps(sched, 0.0, 1.0)
    with pytest.raises(ValueError, match="n must"):
        latent_sample(eps, ae, sched, 0)
    with pytest.raises(ValueError, match="needs labels"):
        latent_sample(eps, ae, sched, 2, gamma=2.0)
    cond = UNet(latent_unet_config(num_classes=10, base_channels=16, num_res_blocks=1))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        latent_sample(cond, ae, sched, 2, y=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="gamma"):
        latent_sample(cond, ae, sched, 2, y=torch.tensor([1, 2]), gamma=-1.0)
    with pytest.raises(ValueError, match="sampler"):
        latent_sample(eps, ae, sched, 2, sampler="euler")
    with pytest.raises(ValueError, match="all T"):
        latent_sample(eps, ae, sched, 2, steps=10, sampler="ddpm")
    with pytest.raises(ValueError, match="penalty"):
        make_latent_ae_step(ae, torch.optim.Adam(ae.parameters()), lambda i: (torch.zeros(1, 1, 28, 28),),
                            penalty=-1.0)
