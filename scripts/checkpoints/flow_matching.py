"""Recipe for chapter 13's flow-matching model: ``fm_mnist``, the EMA weights of chapter 8's U-Net trained
as a velocity model v(x, t) on the linear path x_t = (1 - t) x_0 + t eps.

    OMP_NUM_THREADS=2 nohup .venv/bin/python scripts/train_checkpoint.py fm_mnist --threads 2 \
        > /tmp/fm_mnist.log 2>&1 &

The comparison with ``ddpm_mnist`` is meant to be fair, so everything but the objective is chapter 8's:
the same U-Net config (the time input is 1000 t, see ``flow_matching.VelocityNet``), data, batch 64,
Adam 5e-4 with a 500-step warm-up then constant, grad-norm clip 1, EMA 0.999, bf16 autocast where the
CPU has native bf16, and by default the number of steps of the shipped ``ddpm_mnist`` (14,800).
It trains with ``train.fit`` checkpoints in ``checkpoints/runs/fm_mnist.run.pt`` every 200 steps, so
the same command resumes an interrupted run. ``FM_EXPORT_NOW=1`` exports the latest state of a run
(going or stopped) without training. Environment variables: ``FM_STEPS`` (the run's total),
``FM_SCORE_N`` (Heun samples at NFE 19 for the course FID at export; 0, the default, skips it).
The exported module is the ``UNet`` itself; sample with ``flow_matching.VelocityNet(model)``.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from course_lib import flow_matching, unet
from course_lib.config import get_device
from course_lib.train import fit

NAMES = ["fm_mnist"]

CONFIG = unet.UNetConfig(in_shape=(1, 28, 28), base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                         attention_resolutions=(7,), dropout=0.0)  # ddpm_mnist's
TIME_SCALE = 1000.0  # the U-Net sees 1000 t, the range of the DDPM's steps
BATCH = 64
LR, WARMUP = 5e-4, 500  # Adam; linear warm-up, then constant (any stopping point is a usable model)
EMA_DECAY = 0.999
STEPS = 14_800  # the steps of the shipped ddpm_mnist (its provenance), for a like-for-like budget
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
    chapter8 = _chapter8_recipe()
    device = get_device()
    torch.manual_seed(SEED)
    images, _, source = chapter8.training_digits(device)
    net = unet.UNet(CONFIG).to(device)
    model = flow_matching.VelocityNet(net, TIME_SCALE)
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / WARMUP))
    gen = torch.Generator().manual_seed(SEED + 1)
    from course_lib import data

    batches = data.Minibatches(images, batch_size=BATCH, seed=SEED)
    amp = chapter8.autocast_dtype(device)
    inner = flow_matching.make_flow_matching_step(model, opt, batches, ema=averaged, lr_scheduler=warmup,
                                                  grad_clip=1.0, amp=amp, generator=gen)
    last = [time.perf_counter()]

    def step(i: int) -> dict[str, float]:
        metrics = inner(i)
        now = time.perf_counter()
        metrics["time_s"] = now - last[0]  # summed over the history: the wall time across resumes
        last[0] = now
        return metrics

    path = workdir / f"{name}.run.pt"
    state = {"model": model, "ema": averaged, "opt": opt, "warmup": warmup, "gen": gen}
    planned = int(os.environ.get("FM_STEPS", str(STEPS)))
    if os.environ.get("FM_EXPORT_NOW", "") not in ("", "0"):
        if not path.exists():
            raise SystemExit(f"FM_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
        print(f"FM_EXPORT_NOW: exporting the EMA weights of {path} at step {n_steps}.")
    else:
        n_steps = planned
    history = fit(step, n_steps, state=state, checkpoint=path, checkpoint_every=CHECKPOINT_EVERY, desc=name)
    done = len(history["step"])
    tail = history.get("loss", [])[-500:]
    details = {
        "data": source,
        "steps": done,
        "planned_steps": planned,
        "batch_size": BATCH,
        "objective": "conditional flow matching, linear path x_t = (1 - t) x_0 + t eps, t ~ U[0, 1]",
        "time_input": f"{TIME_SCALE:g} t (flow_matching.VelocityNet)",
        "optimizer": f"Adam(lr={LR}), linear warm-up over {WARMUP} steps, then constant; grad-norm clip 1",
        "ema_decay": EMA_DECAY,
        "autocast": str(amp).replace("torch.", "") if amp else "none",
        "train_wall_time_s": round(sum(history.get("time_s", [])), 1),
        "final_loss_mean_last_500": round(sum(tail) / len(tail), 5) if tail else None,
        "snapshot": (f"exported at step {done} of {planned} (FM_EXPORT_NOW)" if done < planned
                     else "end of the planned run"),
        "scores": _scores(averaged.module, device),
        "half": True,
    }
    return averaged.module.net.eval(), details


def _scores(model: flow_matching.VelocityNet, device: torch.device) -> dict:
    """The course FID and IS of Heun samples (10 steps, NFE 19), if ``FM_SCORE_N`` > 0 and the classifier
    is shipped; the reference as in chapter 8's recipe."""
    n = int(os.environ.get("FM_SCORE_N", "0"))
    if n <= 0:
        return {}
    from course_lib import metrics, pretrained

    if "digit_classifier" not in pretrained.available():
        return {}
    g = torch.Generator().manual_seed(123)
    model.eval()
    samples = torch.cat([flow_matching.sample(model, (min(250, n - k), 1, 28, 28), 10, "heun", generator=g,
                                              device=device)[0] for k in range(0, n, 250)])
    images = ((samples + 1) / 2).clamp(0, 1).cpu()
    reference = metrics.reference_statistics("mnist", "test", device=device)
    return {"fid_heun10": round(float(metrics.fid(images, reference)), 3), "n_fid": n, "nfe": 19,
            "inception_score_heun10": round(float(metrics.inception_score(images)[0]), 3),
            "fid_reference": reference.source}
