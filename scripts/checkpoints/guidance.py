"""Recipes for chapter 9's shipped models: ``cddpm_mnist``, a class-conditional DDPM for guidance;
``noisy_classifier_mnist`` (classifier guidance); ``latent_ae_mnist`` and ``ldm_mnist`` (latent diffusion).

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_checkpoint.py cddpm_mnist --threads 1 \\
        > /tmp/cddpm_mnist.log 2>&1 &

The three others train the same way (``ldm_mnist`` needs the shipped ``latent_ae_mnist`` first);
with ``COURSE_DATA_DIR=../shared/data`` (a folder holding ``mnist-test/``) they train on all
5,000 offline digits and score on the real test split. Totals: ``NOISY_CLASSIFIER_STEPS``,
``LATENT_AE_STEPS``, ``LDM_STEPS``; see the sections at the end of this file.

``cddpm_mnist`` is a smaller U-Net than chapter 8's (``CONDITIONAL`` below) with a label embedding
added to its time embedding, trained from scratch on the labelled digits with label dropout
(``p_uncond``), so that the same network gives eps(x_t, y) and eps(x_t, null) for classifier-free
guidance. It trains with ``train.fit`` checkpoints in ``checkpoints/runs/cddpm_mnist.run.pt``
every 200 steps (the same command resumes), constant learning rate after a warm-up, so any
stopping point is usable; ``CDDPM_EXPORT_NOW=1`` exports the latest state of a run without
disturbing it (as ``DDPM_EXPORT_NOW`` does for chapter 8). ``CDDPM_STEPS`` sets the run's total.
Data: as chapter 8 (``training_digits`` of its recipe), with the labels.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from course_lib import diffusion, guidance, latent, unet
from course_lib.config import get_device
from course_lib.train import fit, timed

NAMES = ["cddpm_mnist", "noisy_classifier_mnist", "latent_ae_mnist", "ldm_mnist"]

CONDITIONAL = unet.UNetConfig(in_shape=(1, 28, 28), base_channels=24, channel_mults=(1, 2, 2),
                              num_res_blocks=1, attention_resolutions=(7,), dropout=0.0, num_classes=10)
T = 1000  # linear schedule, as chapter 8
BATCH = 64
LR, WARMUP = 5e-4, 500
EMA_DECAY = 0.999
P_UNCOND = 0.2  # Ho & Salimans (2022) found 0.1 and 0.2 about equally good
CHECKPOINT_EVERY = 200
SEED = 0


def _chapter8_recipe():
    file = Path(__file__).with_name("diffusion.py")
    spec = importlib.util.spec_from_file_location("recipe_diffusion", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(name: str, workdir: Path):
    if name not in NAMES:
        raise ValueError(f"This recipe trains {NAMES}, not {name!r}.")
    if name in _OTHERS:
        return _OTHERS[name](name, workdir)
    ch8 = _chapter8_recipe()
    device = get_device()
    torch.manual_seed(SEED)
    images, labels, source = ch8.training_digits(device)
    model = unet.UNet(CONDITIONAL).to(device)
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / WARMUP))
    gen = torch.Generator().manual_seed(SEED + 1)
    sched = diffusion.linear_schedule(T)
    from course_lib import data

    batches = data.Minibatches(images, labels, batch_size=BATCH, seed=SEED)
    amp = ch8.autocast_dtype(device)
    step = timed(diffusion.make_diffusion_step(model, opt, sched, batches, ema=averaged, lr_scheduler=warmup,
                                                grad_clip=1.0, amp=amp, generator=gen, p_uncond=P_UNCOND))

    path = workdir / f"{name}.run.pt"
    planned = int(os.environ.get("CDDPM_STEPS", "30000"))
    if os.environ.get("CDDPM_EXPORT_NOW", "") not in ("", "0"):
        if not path.exists():
            raise SystemExit(f"CDDPM_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    else:
        n_steps = planned
    history = fit(step, n_steps, state={"model": model, "ema": averaged, "opt": opt, "warmup": warmup,
                                        "gen": gen},
                  checkpoint=path, checkpoint_every=CHECKPOINT_EVERY, desc=name)
    done = len(history["step"])
    tail = history.get("loss", [])[-500:]
    details = {
        "data": source + ", with labels",
        "steps": done,
        "planned_steps": planned,
        "batch_size": BATCH,
        "p_uncond": P_UNCOND,
        "optimizer": f"Adam(lr={LR}), linear warm-up over {WARMUP} steps, then constant; grad-norm clip 1",
        "ema_decay": EMA_DECAY,
        "schedule": f"linear, T={T}, beta 1e-4..0.02",
        "autocast": str(amp).replace("torch.", "") if amp else "none",
        "train_wall_time_s": round(sum(history.get("time_s", [])), 1),
        "final_loss_mean_last_500": round(sum(tail) / len(tail), 5) if tail else None,
        "snapshot": (f"exported at step {done} of {planned}" if done < planned else "end of the planned run"),
        "half": True,
    }
    return averaged.module.eval(), details


# --- the other chapter-9 models (cddpm_mnist's code above is untouched by them) ---------------

# noisy_classifier_mnist: p_phi(y | x_t, t) on chapter 8's images in [-1, 1] and its schedule, for
# classifier guidance of ddpm_mnist (Dhariwal & Nichol 2021)
CLASSIFIER = guidance.NoisyClassifierConfig()  # 4 convs (32, 64, 64, 64), 28 -> 14 -> 7: about 112k
CLASSIFIER_BATCH, CLASSIFIER_LR = 128, 1e-3  # Adam, constant rate
# latent_ae_mnist: the autoencoder of the latent diffusion, on grey levels in [0, 1]
LATENT_AE = latent.LatentAutoencoderConfig()  # latent 4x7x7, about 145k parameters
AE_BATCH, AE_LR, AE_PENALTY = 128, 1e-3, 1e-3  # Adam; weight of the L2 penalty on the code
# ldm_mnist: chapter 8's U-Net on the 4x7x7 latents, one level, class-conditional with label dropout
LATENT_UNET = latent.latent_unet_config((4, 7, 7), num_classes=10, base_channels=64, num_res_blocks=2)


def _held_out(device: torch.device):
    from course_lib import data

    test = data.load_mnist("test", device=device)
    return test.images[:2000], test.labels[:2000], test.source


def _common_details(history, planned: int, batch: int, key: str) -> dict:
    tail = history.get(key, [])[-500:]
    done = len(history["step"])
    return {"steps": done, "planned_steps": planned, "batch_size": batch,
            "train_wall_time_s": round(sum(history.get("time_s", [])), 1),
            f"final_{key}_mean_last_500": round(sum(tail) / len(tail), 5) if tail else None,
            "snapshot": f"step {done} of {planned}" if done < planned else "end of the planned run"}


def _train_noisy_classifier(name: str, workdir: Path):
    from course_lib import data

    ch8, device = _chapter8_recipe(), get_device()
    torch.manual_seed(SEED)
    images, labels, source = ch8.training_digits(device)
    model = guidance.NoisyClassifier(CLASSIFIER).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=CLASSIFIER_LR)
    gen = torch.Generator().manual_seed(SEED + 2)
    sched = diffusion.linear_schedule(T)
    batches = data.Minibatches(images, labels, batch_size=CLASSIFIER_BATCH, seed=SEED)
    step = timed(guidance.make_classifier_step(model, opt, sched, batches, generator=gen))
    planned = int(os.environ.get("NOISY_CLASSIFIER_STEPS", "4000"))
    history = fit(step, planned, state={"model": model, "opt": opt, "gen": gen},
                  checkpoint=workdir / f"{name}.run.pt", checkpoint_every=CHECKPOINT_EVERY, desc=name)
    # accuracy on held-out digits noised to a few times t (chance: 0.1)
    x, y, held_out = _held_out(device)
    g, scores = torch.Generator().manual_seed(SEED + 3), {"held_out": held_out}
    model.eval()
    with torch.no_grad():
        for t in (0, 100, 250, 500, 750, 999):
            xt = diffusion.q_sample(sched, x * 2 - 1, t, generator=g)
            scores[f"accuracy_t{t}"] = round((model(xt, t).argmax(1) == y).float().mean().item(), 4)
    details = {"data": source + ", with labels", "schedule": f"linear, T={T}, beta 1e-4..0.02",
               "optimizer": f"Adam(lr={CLASSIFIER_LR})", "scores": scores,
               **_common_details(history, planned, CLASSIFIER_BATCH, "loss")}
    return model.eval(), details


def _train_latent_ae(name: str, workdir: Path):
    from course_lib import data

    ch8, device = _chapter8_recipe(), get_device()
    torch.manual_seed(SEED)
    images, _, source = ch8.training_digits(device)
    images = (images + 1) / 2  # grey levels in [0, 1], the targets of the Bernoulli cross-entropy
    model = latent.LatentAutoencoder(LATENT_AE).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=AE_LR)
    batches = data.Minibatches(images, batch_size=AE_BATCH, seed=SEED)
    step = timed(latent.make_latent_ae_step(model, opt, batches, penalty=AE_PENALTY))
    planned = int(os.environ.get("LATENT_AE_STEPS", "3000"))
    history = fit(step, planned, state={"model": model, "opt": opt}, checkpoint=workdir / f"{name}.run.pt",
                  checkpoint_every=CHECKPOINT_EVERY, desc=name)
    scale = model.fit_latent_scale(images)  # Rombach et al.'s 1/std, stored in the model's buffer
    x, _, held_out = _held_out(device)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        scores = {"held_out": held_out, "recon_bce_nats_per_image": round(bce.item(), 2),
                  "recon_mse_per_pixel": round((torch.sigmoid(logits) - x).pow(2).mean().item(), 5),
                  "held_out_latent_std": round(model.encode(x).std().item(), 4)}
    details = {"data": source + ", grey levels in [0, 1]", "latent_scale": round(scale, 5),
               "optimizer": f"Adam(lr={AE_LR}), L2 penalty {AE_PENALTY} on the code", "scores": scores,
               **_common_details(history, planned, AE_BATCH, "recon")}
    return model.eval(), details


def _train_ldm(name: str, workdir: Path, autoencoder: torch.nn.Module | None = None):
    from course_lib import data, pretrained, vae

    ch8, device = _chapter8_recipe(), get_device()
    torch.manual_seed(SEED)
    if autoencoder is None:
        if "latent_ae_mnist" not in pretrained.available():
            raise SystemExit("ldm_mnist diffuses the latents of the shipped latent_ae_mnist: train it first.")
        autoencoder = pretrained.load("latent_ae_mnist", device)
    images, labels, source = ch8.training_digits(device)
    latents = vae.latent_codes(autoencoder, (images + 1) / 2, batch_size=500)  # (N, 4, 7, 7), std ~ 1
    model = unet.UNet(LATENT_UNET).to(device)
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / WARMUP))
    gen = torch.Generator().manual_seed(SEED + 4)
    sched = diffusion.linear_schedule(T)
    batches = data.Minibatches(latents, labels, batch_size=BATCH, seed=SEED)
    amp = ch8.autocast_dtype(device)
    step = timed(diffusion.make_diffusion_step(model, opt, sched, batches, ema=averaged, lr_scheduler=warmup,
                                                grad_clip=1.0, amp=amp, generator=gen, p_uncond=P_UNCOND))
    planned = int(os.environ.get("LDM_STEPS", "20000"))
    history = fit(step, planned, state={"model": model, "ema": averaged, "opt": opt, "warmup": warmup,
                                        "gen": gen},
                  checkpoint=workdir / f"{name}.run.pt", checkpoint_every=CHECKPOINT_EVERY, desc=name)
    details = {"data": f"latents of latent_ae_mnist (scale {autoencoder.latent_scale.item():.4g}) of "
                       f"{source}, with labels",
               "p_uncond": P_UNCOND, "ema_decay": EMA_DECAY, "schedule": f"linear, T={T}, beta 1e-4..0.02",
               "optimizer": f"Adam(lr={LR}), linear warm-up over {WARMUP} steps, then constant; "
                            "grad-norm clip 1",
               "autocast": str(amp).replace("torch.", "") if amp else "none",
               "scores": _ldm_scores(averaged.module, autoencoder, sched, device), "half": True,
               **_common_details(history, planned, BATCH, "loss")}
    return averaged.module.eval(), details


def _ldm_scores(model, autoencoder, sched, device) -> dict:
    """Digit-classifier accuracy of 200 DDIM-50 samples (20 per class) at gamma = 1 and 3, if shipped."""
    from course_lib import pretrained

    if "digit_classifier" not in pretrained.available():
        return {}
    from course_lib import metrics

    model.eval()
    y = torch.arange(10).repeat(20)
    scores = {}
    for gamma in (1.0, 3.0):
        x = latent.latent_sample(model, autoencoder, sched, 200, steps=50, y=y.to(device), gamma=gamma,
                                 generator=torch.Generator().manual_seed(SEED + 5), device=device)
        pred = metrics.class_probabilities(x.cpu()).argmax(1)
        scores[f"classifier_accuracy_ddim50_gamma{gamma:g}"] = round((pred == y).float().mean().item(), 3)
    return scores


_OTHERS = {"noisy_classifier_mnist": _train_noisy_classifier, "latent_ae_mnist": _train_latent_ae,
           "ldm_mnist": _train_ldm}
