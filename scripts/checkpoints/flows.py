"""Recipe for chapter 11's shipped RealNVP: ``realnvp_mnist``, a multi-scale coupling flow on 8-bit digits.

    COURSE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 nohup .venv/bin/python \
        scripts/train_checkpoint.py realnvp_mnist --threads 1 > /tmp/realnvp.log 2>&1 &

Trained as ``notebooks/11_flows.ipynb`` trains it in the full profile
(``config.BUDGETS["11_flows"]["full"]``): the default ``flows.RealNVPConfig`` (780,540 parameters),
Adam(lr) after a linear warm-up, constant to step ``decay_from``, then a half-cosine decay to 0 at
``steps`` (any step is a usable model; the decay settles the last stretch), gradient norm clipped,
minibatches of 8-bit digits dequantised afresh at every step, seeds 0 (weights, minibatches) and 1
(dequantisation noise). ``train.fit`` checkpoints ``checkpoints/runs/realnvp_mnist.run.pt`` every
``checkpoint_every`` steps; the same command resumes. Every ``monitor_every`` steps the bits/dim
bound of the first ``n_monitor`` test digits (one fixed dequantisation, seed 123) is printed and
kept for the learning curve.
While a run is going, another process publishes its latest state:

    REALNVP_EXPORT_NOW=1 COURSE_DATA_DIR=../shared/data .venv/bin/python \
        scripts/train_checkpoint.py realnvp_mnist --threads 1

Environment: ``REALNVP_STEPS`` (the run's total, default the full profile's ``steps``). The export
scores the whole test split: the dequantised bound in bits/dim, averaged over ``N_DEQUANT``
dequantisations.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from course_lib import config, data, flows
from course_lib.train import fit, timed, warmup_constant_cosine

NAMES = ["realnvp_mnist"]
LAB = "11_flows"
N_DEQUANT = 4


def bound_bits(flow: flows.RealNVPImage, x: torch.Tensor, n_samples: int = 1) -> float:
    """Mean bits/dim bound of the 8-bit images x, dequantised with the fixed seed 123."""
    g = torch.Generator(device=x.device).manual_seed(123)
    return flows.image_bits_per_dim(flow, x, g, n_samples=n_samples).mean().item()


def train(name: str, workdir: Path):
    if name not in NAMES:
        raise ValueError(f"This recipe trains {NAMES}, not {name!r}.")
    budget = config.budget(LAB, "full")
    batch, lr, warm, clip = budget["batch_size"], budget["lr"], budget["warmup"], budget["grad_clip"]
    monitor_every = budget["monitor_every"]
    device = config.get_device()
    train_set = data.load_mnist("train", device=device)
    test_set = data.load_mnist("test", device=device)
    config.seed_everything(0)
    flow = flows.RealNVPImage(flows.RealNVPConfig()).to(device)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    planned = int(os.environ.get("REALNVP_STEPS", budget["steps"]))
    schedule = warmup_constant_cosine(warm, min(budget["decay_from"], planned - 1), planned)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator(device=device).manual_seed(1)
    batches = data.Minibatches(train_set.images, batch_size=batch, seed=0)
    inner = flows.make_flow_step(flow, opt, batches, generator=gen, grad_clip=clip)
    held = test_set.images[: budget["n_monitor"]]
    def monitored(i: int) -> dict[str, float]:
        metrics = inner(i)
        warmup.step()
        if (i + 1) % monitor_every == 0:
            metrics["held_out_bits_per_dim"] = bound_bits(flow, held)
            metrics["monitor_step"] = float(i + 1)
            print(f"step {i + 1}: train {metrics['bits_per_dim']:.3f}, held-out "
                  f"{metrics['held_out_bits_per_dim']:.3f} bits/dim", flush=True)
        return metrics

    step = timed(monitored)  # adds each step's wall time, "time_s" (summed: the run's time across resumes)

    path = workdir / f"{name}.run.pt"
    if os.environ.get("REALNVP_EXPORT_NOW", "") not in ("", "0"):
        if not path.exists():
            raise SystemExit(f"REALNVP_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
        print(f"REALNVP_EXPORT_NOW: exporting {path} at step {n_steps}.")
    else:
        n_steps = planned
    history = fit(step, n_steps, state={"model": flow, "opt": opt, "warmup": warmup, "gen": gen},
                  checkpoint=path, checkpoint_every=budget["checkpoint_every"], desc=name)
    done = len(history["step"])
    tail = history["bits_per_dim"][-monitor_every:]
    details = {
        "data": f"train: {train_set.source}",
        "steps": done,
        "planned_steps": planned,
        "batch_size": batch,
        "epochs": round(done * batch / len(train_set), 1),
        "optimizer": (f"Adam(lr={lr}), linear warm-up over {warm} steps, constant to step "
                      f"{budget['decay_from']:,}, then half-cosine decay to 0 at step {planned:,}; "
                      f"grad-norm clip {clip}"),
        "snapshot": (f"exported at step {done} of {planned} (REALNVP_EXPORT_NOW)" if done < planned
                     else "end of the planned run"),
        "train_wall_time_s": round(sum(history["time_s"]), 1),
        "final_train_bits_per_dim_mean": round(sum(tail) / len(tail), 4),
        "test_bits_per_dim": round(bound_bits(flow, test_set.images, n_samples=N_DEQUANT), 4),
        "test": (f"{len(test_set):,} digits of {test_set.source}; uniform dequantisation, seed 123, "
                 f"{N_DEQUANT} draws per digit averaged (image_log_prob_bound)"),
        "curve": {"step": [int(s) for s in history.get("monitor_step", [])],
                  "held_out_bits_per_dim": [round(v, 4) for v in history.get("held_out_bits_per_dim", [])]},
    }
    return flow.cpu().eval(), details
