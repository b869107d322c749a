"""Recipe for chapter 10's shipped PixelCNN: ``pixelcnn_mnist``, a gated PixelCNN on binarised digits.

    COURSE_DATA_DIR=../shared/data OMP_NUM_THREADS=2 nohup .venv/bin/python \
        scripts/train_checkpoint.py pixelcnn_mnist --threads 2 > /tmp/pixelcnn.log 2>&1 &

Trained as ``notebooks/10_autoregressive.ipynb`` trains it in the full profile
(``config.BUDGETS["10_autoregressive"]["full"]``): the default ``PixelCNNConfig`` (720,513
parameters), Adam(lr) with a constant rate on minibatches of ``batch_size`` dynamically binarised
digits, gradient norm clipped at 1, seeds 0 (weights, minibatches) and 1 (binarisation).
``train.fit`` checkpoints ``checkpoints/runs/pixelcnn_mnist.run.pt`` every ``checkpoint_every``
steps, so the same command resumes. Because the rate is constant, any step is a usable model;
while a run is going (or after it stopped), another process publishes its latest state:

    PIXELCNN_EXPORT_NOW=1 COURSE_DATA_DIR=../shared/data .venv/bin/python \
        scripts/train_checkpoint.py pixelcnn_mnist --threads 1

Environment: ``PIXELCNN_STEPS`` (the run's total, default the full profile's ``steps``),
``PIXELCNN_SCORE_N`` (samples for the course FID at export, default 1,000; 0 skips it: sampling is
784 sequential network steps per batch). The held-out NLL is exact and uses the whole test split,
binarised once with seed 123 (the protocol of Labs 05 and 10).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from course_lib import autoregressive as ar
from course_lib import config, data, vae
from course_lib.train import fit, timed

NAMES = ["pixelcnn_mnist"]
LAB = "10_autoregressive"


def held_out(device: torch.device) -> tuple[torch.Tensor, str]:
    """The test split binarised once with seed 123, as Labs 05 and 10 binarise it."""
    test = data.load_mnist("test", device=device)
    return vae.binarize(test.images, torch.Generator(device=device).manual_seed(123)), test.source


def train(name: str, workdir: Path):
    if name not in NAMES:
        raise ValueError(f"This recipe trains {NAMES}, not {name!r}.")
    budget = config.budget(LAB, "full")
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    x_test, test_source = held_out(device)
    config.seed_everything(0)
    model = ar.PixelCNN(ar.PixelCNNConfig()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=budget["lr"])
    gen = torch.Generator(device=device).manual_seed(1)
    batches = data.Minibatches(train_set.images, batch_size=budget["batch_size"], seed=0)
    inner = ar.make_pixelcnn_step(model, opt, batches, generator=gen, grad_clip=1.0,
                                  monitor={"test_nll": x_test[: budget["n_monitor"]]},
                                  monitor_every=budget["monitor_every"])
    def monitored(i: int) -> dict[str, float]:
        metrics = inner(i)
        if "test_nll" in metrics:
            print(f"step {i + 1}: train {metrics['loss']:.2f}, held-out {metrics['test_nll']:.2f} nats",
                  flush=True)
        return metrics

    step = timed(monitored)  # adds each step's wall time, "time_s" (summed: the run's time across resumes)

    path = workdir / f"{name}.run.pt"
    planned = int(os.environ.get("PIXELCNN_STEPS", budget["steps"]))
    if os.environ.get("PIXELCNN_EXPORT_NOW", "") not in ("", "0"):
        if not path.exists():
            raise SystemExit(f"PIXELCNN_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
        print(f"PIXELCNN_EXPORT_NOW: exporting {path} at step {n_steps}.")
    else:
        n_steps = planned
    history = fit(step, n_steps, state={"model": model, "opt": opt, "gen": gen}, checkpoint=path,
                  checkpoint_every=budget["checkpoint_every"], desc=name)
    done = len(history["step"])
    model.eval()
    with torch.no_grad():
        nll = -ar.log_prob(model, x_test, batch_size=500).mean().item()
    tail = history["loss"][-250:]
    details = {
        "data": f"train: {train_set.source}",
        "steps": done,
        "planned_steps": planned,
        "batch_size": budget["batch_size"],
        "epochs": round(done * budget["batch_size"] / len(train_set), 1),
        "optimizer": f"Adam(lr={budget['lr']}), constant; grad-norm clip 1",
        "budget": f"config.BUDGETS['{LAB}']['full'] (as notebooks/{LAB}.ipynb)",
        "snapshot": (f"exported at step {done} of {planned} (PIXELCNN_EXPORT_NOW)" if done < planned
                     else "end of the planned run"),
        "train_wall_time_s": round(sum(history["time_s"]), 1),
        "final_loss_mean_last_250": round(sum(tail) / len(tail), 2),
        "held_out_nll_nats": round(nll, 2),
        "held_out_bits_per_dim": round(ar.bits_per_dim(nll), 4),
        "held_out": f"{len(x_test):,} digits of {test_source}, binarised once with seed 123",
        # the learning curve: held-out NLL of the first n_monitor digits, mean training loss of the
        # monitor_every steps before each point (nats per image)
        "curve": {"step": [int(s) for s in history.get("monitor_step", [])],
                  "held_out_nll": [round(v, 2) for v in history.get("test_nll", [])],
                  "train_loss": [round(sum(history["loss"][int(s) - budget["monitor_every"]: int(s)])
                                       / budget["monitor_every"], 2)
                                 for s in history.get("monitor_step", [])]},
        "scores": _scores(model, device),
    }
    return model.cpu(), details


def _scores(model: ar.PixelCNN, device: torch.device) -> dict:
    """The course metrics of ``PIXELCNN_SCORE_N`` samples against the test split ({} for 0)."""
    n = int(os.environ.get("PIXELCNN_SCORE_N", "1000"))
    if n <= 0:
        return {}
    from course_lib import metrics

    g = torch.Generator(device=device).manual_seed(123)
    start = time.perf_counter()
    samples = torch.cat([ar.sample(model, min(500, n - k), generator=g) for k in range(0, n, 500)])
    seconds = time.perf_counter() - start
    ref_feats, source = metrics.reference_features("mnist", "test", device=device)
    feats = metrics.features(samples)
    precision, recall = metrics.precision_recall(feats, ref_feats[:n], k=3)
    reference = metrics.statistics(ref_feats, source)
    # The samples are binary and the reference digits grey: the FID of n binarised *real* test
    # digits (the last n, binarised with seed 7) is what a perfect model of binarised digits would get.
    test = data.load_mnist("test", device=device).images[-n:]
    floor = metrics.fid(vae.binarize(test, torch.Generator(device=device).manual_seed(7)), reference)
    return {"fid": round(metrics.fid(feats, reference), 3), "fid_binarised_real_digits": round(floor, 3),
            "inception_score": round(metrics.inception_score(samples, splits=10)[0], 3),
            "precision": round(precision, 4), "recall": round(recall, 4),
            "min_class_share": round(metrics.class_coverage(samples).min_share, 4),
            "n_samples": n, "sampling_s": round(seconds, 1), "reference": source,
            "metric": "course_lib.metrics, digit_classifier features"}
