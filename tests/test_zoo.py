"""zoo: the registry of sample functions behind chapter 14's table."""

import pytest
import torch

from course_lib import autoregressive, data, flows, gan, unet, vae, zoo


def test_available_and_missing_follow_the_shipped_checkpoints():
    assert set(zoo.available(shipped=[])) == set()
    rows = zoo.available(shipped=["vae_conv", "ddpm_mnist"])
    assert set(rows) == {"vae_conv", "ddpm", "ddim50", "ddim10", "heun"}
    gone = zoo.missing(shipped=["vae_conv"])
    assert "vae_conv" not in gone and "not shipped" in gone["dcgan"] and "cddpm_mnist" in gone["cfg"]
    assert set(gone) | set(zoo.available(shipped=["vae_conv"])) == set(zoo.SAMPLERS)


def test_latent_diffusion_needs_its_autoencoder_too():
    assert "latent_diffusion" not in zoo.available(shipped=["ldm_mnist"])
    why = zoo.missing(shipped=["ldm_mnist"])["latent_diffusion"]
    assert "latent_ae_mnist" in why and "ldm_mnist" not in why
    assert "latent_diffusion" in zoo.available(shipped=["ldm_mnist", "latent_ae_mnist"])


def test_guided_rows_count_two_predictions_per_step():
    assert zoo.SAMPLERS["cfg"].evaluations == (100 if zoo.GUIDANCE_SCALE not in (0, 1) else 50)
    assert f"{zoo.GUIDANCE_SCALE:g}" in zoo.SAMPLERS["cfg"].label


def test_the_heun_row_counts_its_evaluations():
    assert zoo.SAMPLERS["heun"].evaluations == 2 * zoo.HEUN_STEPS - 1  # the last step is Euler


def test_every_written_sampler_names_its_cost():
    for s in zoo.SAMPLERS.values():
        assert s.evaluations >= 1 and s.label and s.checkpoint
        assert s.sample is not None or s.note


def test_the_flow_matching_rows_count_their_evaluations():
    assert zoo.SAMPLERS["fm_euler10"].evaluations == zoo.FM_STEPS
    assert zoo.SAMPLERS["fm_heun"].evaluations == 2 * zoo.FM_STEPS - 1
    assert zoo.SAMPLERS["fm_student"].evaluations == 1
    assert zoo.SAMPLERS["fm_student2"].evaluations == 2


@pytest.mark.parametrize("name", ["vae_mlp", "gan", "cdcgan", "cfg", "heun", "fm_heun", "fm_student",
                                  "fm_student2", "pixelcnn", "realnvp"])
def test_samplers_return_images_in_the_unit_interval(name):
    torch.manual_seed(0)
    image = {"out_shape": (1, 28, 28), "hidden_dims": (8,), "out_activation": "tanh"}
    model = {"vae_mlp": lambda: vae.VAE(vae.VAEConfig(latent_dim=3, hidden_dims=(8,))),
             "gan": lambda: gan.MLPGenerator(gan.MLPGeneratorConfig(**image)),
             "cdcgan": lambda: gan.MLPGenerator(gan.MLPGeneratorConfig(**image, n_classes=10)),
             "cfg": lambda: unet.UNet(unet.UNetConfig(base_channels=8, channel_mults=(1, 2),
                                                      attention_resolutions=(), num_groups=4,
                                                      num_classes=10)),
             "heun": lambda: unet.UNet(unet.UNetConfig(base_channels=8, channel_mults=(1, 2),
                                                       attention_resolutions=(), num_groups=4)),
             "fm_heun": lambda: unet.UNet(unet.UNetConfig(base_channels=8, channel_mults=(1, 2),
                                                          attention_resolutions=(), num_groups=4)),
             "fm_student": lambda: unet.UNet(unet.UNetConfig(base_channels=8, channel_mults=(1, 2),
                                                             attention_resolutions=(), num_groups=4)),
             "fm_student2": lambda: unet.UNet(unet.UNetConfig(base_channels=8, channel_mults=(1, 2),
                                                              attention_resolutions=(), num_groups=4)),
             "pixelcnn": lambda: autoregressive.PixelCNN(
                 autoregressive.PixelCNNConfig(channels=8, dilations=(1,))),
             "realnvp": lambda: flows.RealNVPImage(
                 flows.RealNVPConfig(hidden=(4, 4), couplings=(1, 1)))}[name]().eval()
    g = torch.Generator().manual_seed(1)
    x = zoo.sample_in_batches(zoo.SAMPLERS[name].sample, model, 7, g, batch_size=3)
    assert x.shape == (7, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    again = zoo.sample_in_batches(zoo.SAMPLERS[name].sample, model, 7, torch.Generator().manual_seed(1), 3)
    assert torch.equal(x, again)


def test_scores_of_real_and_copied_digits():
    digits = data.load_mnist("train", device="cpu", limit=1000, verbose=False, download=False).images
    train, held_out = digits[:600], digits[600:]
    from course_lib import metrics

    ref = metrics.features(held_out)
    real = zoo.scores(held_out[:200], ref[200:], train, held_out[200:])
    copies = zoo.scores(train[:200], ref[200:], train, held_out[200:])
    assert copies["nn_ratio"] < 0.05 < 0.5 < real["nn_ratio"]
    for row in (real, copies):
        assert 0 < row["fid"] and 1 <= row["inception_score"] <= 10 and 0 <= row["precision"] <= 1


def test_score_seeds_gives_one_independent_reproducible_row_per_seed():
    from course_lib import metrics

    digits = data.load_mnist("train", device="cpu", limit=1300, verbose=False, download=False).images
    train, held_out, pool = digits[:600], digits[600:900], digits[900:]
    ref = metrics.features(held_out)

    def draw(model, n, g):  # a "model" that returns real digits of the pool
        return pool[torch.randint(len(pool), (n,), generator=g)]

    rows = zoo.score_seeds(draw, None, 200, [0, 1, 2], ref, train, held_out, fid_inf_ns=(100, 150, 200),
                           device="cpu")
    assert [r["seed"] for r in rows] == [0, 1, 2] and len({r["fid"] for r in rows}) == 3
    again = zoo.scores(zoo.sample_in_batches(draw, None, 200, torch.Generator().manual_seed(1)), ref, train,
                       held_out)
    assert again == {k: v for k, v in rows[1].items() if k in again}  # a row is redrawn alone
    summary = zoo.summarise_seeds(rows)
    assert set(summary) == set(rows[0]) - {"seed"} and {"fid_inf", "fid_inf_se"} <= set(summary)
    assert all(r["fid_inf_se"] > 0 for r in rows)  # the standard error of each set's 1/N fit
    assert summary["fid"].n == 3 and summary["fid"].sd > 0 and summary["speed"].mean > 0
    with pytest.raises(ValueError, match="distinct"):
        zoo.score_seeds(draw, None, 200, [0, 0, 1], ref, train, held_out, device="cpu")
    with pytest.raises(ValueError, match="device="):
        zoo.score_seeds(draw, None, 200, [0, 1], ref, train, held_out)
