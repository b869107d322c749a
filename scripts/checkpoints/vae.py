"""Recipe for chapter 5's shipped VAEs, ranked in chapter 14's comparison table.

    COURSE_DATA_DIR=../shared/data python scripts/train_checkpoint.py vae_mlp --threads 1
    COURSE_DATA_DIR=../shared/data python scripts/train_checkpoint.py vae_conv --threads 1

Trained exactly as ``notebooks/05_vae.ipynb`` trains them, with the full profile's budget
(``config.BUDGETS["05_vae"]["full"]``): Adam(lr) on minibatches of ``batch_size`` dynamically
binarised digits, ``vae_epochs`` / ``conv_epochs`` passes over the training split capped at
``max_steps`` steps, seeds 0 (weights, minibatches) and 1 (binarisation and reparameterisation).
``vae_mlp`` is the lab's best MLP VAE (K = 20; K = 100 is no better), ``vae_conv`` its
convolutional VAE (K = 16). Their scores are the course metrics (``course_lib.metrics``, shipped
digit classifier) of 10,000 samples (mean images sigmoid(logits) of z ~ N(0, I)) against the test
split (the real 10,000 MNIST test digits when ``<COURSE_DATA_DIR>/mnist-test`` holds them).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from course_lib import config, data, metrics, vae
from course_lib import train as training

NAMES = ["vae_mlp", "vae_conv"]
N_EVAL = 10_000  # samples for FID, IS, precision/recall and class coverage


EPOCHS = {"vae_mlp": "vae_epochs", "vae_conv": "conv_epochs"}  # the budget key of each model's epochs


def _model(name: str) -> torch.nn.Module:
    if name == "vae_mlp":
        return vae.VAE(vae.VAEConfig(latent_dim=20))
    return vae.ConvVAE(vae.ConvVAEConfig(latent_dim=16))


def evaluate(model: torch.nn.Module, n: int = N_EVAL, seed: int = 0) -> dict:
    """The course metrics of n samples of ``model`` against the test split."""
    device = next(model.parameters()).device
    samples = model.sample(n, torch.Generator(device=device).manual_seed(seed))
    ref_feats, source = metrics.reference_features("mnist", "test", device=device)
    ref = metrics.statistics(ref_feats, source)
    feats = metrics.features(samples)
    precision, recall = metrics.precision_recall(feats, ref_feats[:n], k=3)
    is_mean, is_std = metrics.inception_score(samples, splits=10)
    return {"fid": round(metrics.fid(feats, ref), 3), "inception_score": round(is_mean, 3),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "min_class_share": round(metrics.class_coverage(samples).min_share, 4),
            "n_samples": n, "reference": source, "metric": "course_lib.metrics, digit_classifier features"}


def train(name: str, workdir: Path):
    budget = config.budget("05_vae", "full")
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    steps = min(budget["max_steps"], math.ceil(budget[EPOCHS[name]] * len(train_set) / budget["batch_size"]))
    config.seed_everything(0)
    model = _model(name).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=budget["lr"])
    gen = torch.Generator(device=device).manual_seed(1)  # binarisation and reparameterisation noise
    batch = data.Minibatches(train_set.images, batch_size=budget["batch_size"], seed=0)
    inner = vae.make_vae_step(model, opt, batch, generator=gen)

    def step(i: int) -> dict[str, float]:
        start = time.perf_counter()
        return {**inner(i), "seconds": time.perf_counter() - start}

    history = training.fit(step, steps, state={"model": model, "opt": opt, "gen": gen},
                           checkpoint=workdir / f"{name}.run.pt", checkpoint_every=budget["checkpoint_every"],
                           desc=name)
    model.eval()
    scores = evaluate(model)
    print(scores)
    details = {
        "data": f"train: {train_set.source}",
        "steps": steps,
        "batch_size": budget["batch_size"],
        "epochs": round(steps * budget["batch_size"] / len(train_set), 1),
        "budget": "config.BUDGETS['05_vae']['full'] (as notebooks/05_vae.ipynb)",
        "train_wall_time_s": round(sum(history["seconds"]), 1),
        "final_loss": round(sum(history["loss"][-100:]) / len(history["loss"][-100:]), 2),
        "scores": scores,
    }
    return model.cpu(), details
