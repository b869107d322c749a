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
``FM_SCORE_N`` (samples for the course FID and IS at export, for every checkpoint of this recipe: Heun
10 steps, the students' own steps, ``cfm_mnist`` guided at gamma 2; 0, the default, skips it).
The exported module is the ``UNet`` itself; sample with ``flow_matching.VelocityNet(model)``.

``fm_student_mnist`` is the one-step student of Liu et al.'s distillation, from ``fm_mnist`` (the
1-rectified flow; the digits get no reflow in between, which a longer budget would add):

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_checkpoint.py fm_student_mnist --threads 1 \
        > /tmp/fm_student.log 2>&1 &

Stage 1 draws ``STUDENT_PAIRS`` noise images x_1 and solves the teacher's ODE from each (Heun, 10 steps,
NFE 19) to its sample x_0; the noise of batch k comes from seed ``PAIR_SEED + k``, so only the samples are
stored (fp16, ``checkpoints/runs/fm_student_mnist.pairs.pt``, saved after every batch: the stage resumes).
Stage 2 trains a copy of the teacher on the pairs at t = 1 only (``make_flow_matching_step(...,
coupled=True, times=[1.0])``): the student maps x_1 to x_1 - v(x_1, 1) in one network evaluation. Adam
2e-4 with a 200-step warm-up, batch 64, EMA 0.999, the teacher's autocast, checkpoints every 200 steps in
``checkpoints/runs/fm_student_mnist.run.pt``. ``FM_STUDENT_STEPS`` sets the run's total (default 6,000).
``fm_student2_mnist``, the two-step student, continues from ``fm_student_mnist``'s weights on the same
pairs with t drawn from {1, 1/2} (``times=[1.0, 0.5]``; on a straight pair x_{1/2} = (x_0 + x_1) / 2) for
2,000 steps; it samples with two Euler steps, NFE 2.

``cfm_mnist`` is the class-conditional velocity model for classifier-free guidance (chapter 9's recipe for
``cddpm_mnist`` with the flow-matching loss): the same U-Net with ``num_classes=10``, labels dropped to the
null label with probability ``P_UNCOND``. To fit a CPU budget it starts from ``fm_mnist``'s weights with
the label embedding set to zero, so at step 0 it is the unconditional model for every label, and is
fine-tuned for ``CFM_STEPS`` (default 4,000) with Adam 2e-4 after a 200-step warm-up, batch 64, EMA 0.999,
checkpoints every 200 steps in ``checkpoints/runs/cfm_mnist.run.pt`` (resumable; ``FM_EXPORT_NOW`` works):

    OMP_NUM_THREADS=1 nohup .venv/bin/python scripts/train_checkpoint.py cfm_mnist --threads 1 \
        > /tmp/cfm_mnist.log 2>&1 &
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from course_lib import flow_matching, unet
from course_lib.config import get_device
from course_lib.train import fit, timed

NAMES = ["fm_mnist", "fm_student_mnist", "fm_student2_mnist", "cfm_mnist"]

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


STUDENT_PAIRS = 20_000  # (noise, teacher sample) pairs
PAIR_BATCH = 250
PAIR_SEED = 10_000
TEACHER_STEPS = 10  # Heun, NFE 19
STUDENT_LR, STUDENT_WARMUP = 2e-4, 200
STUDENT_STEPS = 6_000
# name -> (distillation times, initial weights, default steps): the two-step student continues the
# one-step one on the grid {1, 1/2} (Liu et al.'s k-step distillation), on the same pairs
STUDENTS = {"fm_student_mnist": ([1.0], "fm_mnist", STUDENT_STEPS),
            "fm_student2_mnist": ([1.0, 0.5], "fm_student_mnist", 2_000)}
P_UNCOND = 0.2  # chapter 9's label-dropout rate
CFM_STEPS = 4_000


def _fit_or_export(inner, state: dict, path: Path, planned: int, desc: str) -> dict:
    """``train.fit`` of ``inner`` (with each step's wall time, summed over resumes) up to ``planned`` steps,
    checkpointing to ``path``; with ``FM_EXPORT_NOW`` set, only the run state's history at its step."""
    step = timed(inner)  # adds each step's wall time, "time_s" (summed: the run's time across resumes)
    n_steps = planned
    if os.environ.get("FM_EXPORT_NOW", "") not in ("", "0"):
        if not path.exists():
            raise SystemExit(f"FM_EXPORT_NOW: no run state at {path} yet; start the training first.")
        n_steps = int(torch.load(path, map_location="cpu", weights_only=True)["step"])
        print(f"FM_EXPORT_NOW: exporting the EMA weights of {path} at step {n_steps}.")
    return fit(step, n_steps, state=state, checkpoint=path, checkpoint_every=CHECKPOINT_EVERY, desc=desc)


def _run_details(history: dict, planned: int, lr: float, warmup: int, amp) -> dict:
    """The provenance every recipe here records about its run: steps, optimiser, EMA, autocast, wall time,
    final loss and whether the export is the end of the planned run."""
    done = len(history["step"])
    tail = history.get("loss", [])[-500:]
    return {
        "steps": done,
        "planned_steps": planned,
        "batch_size": BATCH,
        "optimizer": f"Adam(lr={lr}), linear warm-up over {warmup} steps, then constant; grad-norm clip 1",
        "ema_decay": EMA_DECAY,
        "autocast": str(amp).replace("torch.", "") if amp else "none",
        "train_wall_time_s": round(sum(history.get("time_s", [])), 1),
        "final_loss_mean_last_500": round(sum(tail) / len(tail), 5) if tail else None,
        "snapshot": (f"exported at step {done} of {planned} (FM_EXPORT_NOW)" if done < planned
                     else "end of the planned run"),
    }


def train(name: str, workdir: Path):
    if name not in NAMES:
        raise ValueError(f"This recipe trains {NAMES}, not {name!r}.")
    if name in STUDENTS:
        return train_student(workdir, name)
    if name == "cfm_mnist":
        return train_conditional(workdir)
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
    state = {"model": model, "ema": averaged, "opt": opt, "warmup": warmup, "gen": gen}
    planned = int(os.environ.get("FM_STEPS", str(STEPS)))
    history = _fit_or_export(inner, state, workdir / f"{name}.run.pt", planned, name)
    details = {
        "data": source,
        "objective": "conditional flow matching, linear path x_t = (1 - t) x_0 + t eps, t ~ U[0, 1]",
        "time_input": f"{TIME_SCALE:g} t (flow_matching.VelocityNet)",
        **_run_details(history, planned, LR, WARMUP, amp),
        "scores": _scores(averaged.module, device),
        "half": True,
    }
    return averaged.module.net.eval(), details


def _scores(model: flow_matching.VelocityNet, device: torch.device, steps: int = 10, method: str = "heun",
            gamma: float | None = None) -> dict:
    """The course FID and IS of ``FM_SCORE_N`` samples (``steps`` of ``method``; with ``gamma``, guided on
    balanced labels 0, 1, ..., 9 in turn), if ``FM_SCORE_N`` > 0 and the classifier is shipped; batches
    of 250 from ``torch.Generator().manual_seed(123)``, the reference as in chapter 8's recipe. The
    chapter-13 entries' scores were computed by this function with ``FM_SCORE_N=1000``."""
    n = int(os.environ.get("FM_SCORE_N", "0"))
    if n <= 0:
        return {}
    from course_lib import metrics, pretrained

    if "digit_classifier" not in pretrained.available():
        return {}
    g = torch.Generator().manual_seed(123)
    model.eval()
    out = []
    for k in range(0, n, 250):
        field = model
        if gamma is not None:
            field = flow_matching.guided_velocity(model, torch.arange(k, k + min(250, n - k)) % 10, gamma)
        x, nfe = flow_matching.sample(field, (min(250, n - k), 1, 28, 28), steps, method, generator=g,
                                      device=device)
        out.append(x)
    images = ((torch.cat(out) + 1) / 2).clamp(0, 1).cpu()
    tag = f"{method}{steps}" + (f"_gamma{gamma:g}" if gamma is not None else "")
    reference = metrics.reference_statistics("mnist", "test", device=device)
    scores = {f"fid_{tag}": round(float(metrics.fid(images, reference)), 3), "n_fid": n, "nfe": nfe,
              f"inception_score_{tag}": round(float(metrics.inception_score(images)[0]), 3),
              "fid_reference": reference.source, "sampling_seed": 123}
    return scores | ({"labels": "balanced, 0..9 in turn"} if gamma is not None else {})


def _pair_noise(k: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(PAIR_SEED + k)
    return torch.randn(PAIR_BATCH, 1, 28, 28, generator=g).to(device)


def teacher_pairs(teacher: flow_matching.VelocityNet, device: torch.device, file: Path):
    """(x_1, x_0, seconds): STUDENT_PAIRS noise images and the teacher's Heun samples from them, resumable."""
    state = torch.load(file, weights_only=True) if file.exists() else {"data": [], "seconds": 0.0}
    n_batches = STUDENT_PAIRS // PAIR_BATCH
    for k in range(len(state["data"]), n_batches):
        t0 = time.perf_counter()
        x0, nfe = flow_matching.sample(teacher, (PAIR_BATCH, 1, 28, 28), TEACHER_STEPS, "heun",
                                       x1=_pair_noise(k, device))
        state["data"].append(x0.half().cpu())
        state["seconds"] += time.perf_counter() - t0
        tmp = file.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(file)
        print(f"pairs: batch {k + 1}/{n_batches} (NFE {nfe}), {state['seconds']:.0f} s so far", flush=True)
    noise = torch.cat([_pair_noise(k, device) for k in range(n_batches)])
    return noise, torch.cat(state["data"]).float().to(device), state["seconds"]


def train_student(workdir: Path, name: str = "fm_student_mnist"):
    from course_lib import data, pretrained

    chapter8 = _chapter8_recipe()
    device = get_device()
    torch.manual_seed(SEED)
    teacher_entry = pretrained.info("fm_mnist")
    teacher = flow_matching.VelocityNet(pretrained.load("fm_mnist", device), TIME_SCALE).eval()
    noise, samples, pair_seconds = teacher_pairs(teacher, device, workdir / "fm_student_mnist.pairs.pt")
    times, init, default_steps = STUDENTS[name]
    model = flow_matching.VelocityNet(pretrained.load(init, device), TIME_SCALE).train()
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=STUDENT_LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / STUDENT_WARMUP))
    gen = torch.Generator().manual_seed(SEED + 2)
    batches = data.Minibatches(samples, noise, batch_size=BATCH, seed=SEED + 2)
    amp = chapter8.autocast_dtype(device)
    inner = flow_matching.make_flow_matching_step(model, opt, batches, coupled=True, times=times,
                                                  ema=averaged, lr_scheduler=warmup, grad_clip=1.0, amp=amp,
                                                  generator=gen)
    state = {"model": model, "ema": averaged, "opt": opt, "warmup": warmup, "gen": gen}
    planned = int(os.environ.get("FM_STUDENT_STEPS", str(default_steps)))
    history = _fit_or_export(inner, state, workdir / f"{name}.run.pt", planned, name)
    details = {
        "data": f"{STUDENT_PAIRS:,} pairs (noise, sample) of the teacher fm_mnist",
        "teacher": f"fm_mnist (sha256 {teacher_entry['sha256'][:12]}), Heun {TEACHER_STEPS} steps, "
                   f"NFE {2 * TEACHER_STEPS - 1}; noise of batch k from seed {PAIR_SEED} + k",
        "pairs_wall_time_s": round(pair_seconds, 1),
        "objective": ("distillation: ||x_1 - x_0 - v(x_t, t)||^2 on the teacher's pairs, "
                      f"x_t = (1 - t) x_0 + t x_1, t in {times}"),
        "initialisation": "the teacher's weights" if init == "fm_mnist" else
                          f"{init} (sha256 {pretrained.info(init)['sha256'][:12]})",
        **_run_details(history, planned, STUDENT_LR, STUDENT_WARMUP, amp),
        "sampling": (f"flow_matching.sample(VelocityNet(model), shape, {len(times)}, 'euler'): "
                     f"NFE {len(times)}"),
        "scores": _scores(averaged.module, device, len(times), "euler"),
        "half": True,
    }
    return averaged.module.net.eval(), details


def train_conditional(workdir: Path):
    from dataclasses import replace

    from course_lib import data, pretrained

    chapter8 = _chapter8_recipe()
    device = get_device()
    torch.manual_seed(SEED)
    images, labels, source = chapter8.training_digits(device)
    net = unet.UNet(replace(CONFIG, num_classes=10)).to(device)
    start = pretrained.info("fm_mnist")
    missing, unexpected = net.load_state_dict(pretrained.load("fm_mnist", device).state_dict(), strict=False)
    if set(missing) != {"label_emb.weight"} or unexpected:
        raise RuntimeError(f"fm_mnist does not match the conditional U-Net: {missing}, {unexpected}")
    torch.nn.init.zeros_(net.label_emb.weight)  # step 0: the unconditional model for every label
    model = flow_matching.VelocityNet(net, TIME_SCALE)
    averaged = unet.ema(model, EMA_DECAY)
    opt = torch.optim.Adam(model.parameters(), lr=STUDENT_LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / STUDENT_WARMUP))
    gen = torch.Generator().manual_seed(SEED + 3)
    batches = data.Minibatches(images, labels, batch_size=BATCH, seed=SEED + 3)
    amp = chapter8.autocast_dtype(device)
    inner = flow_matching.make_flow_matching_step(model, opt, batches, ema=averaged, lr_scheduler=warmup,
                                                  grad_clip=1.0, amp=amp, generator=gen, p_uncond=P_UNCOND)
    state = {"model": model, "ema": averaged, "opt": opt, "warmup": warmup, "gen": gen}
    planned = int(os.environ.get("CFM_STEPS", str(CFM_STEPS)))
    history = _fit_or_export(inner, state, workdir / "cfm_mnist.run.pt", planned, "cfm_mnist")
    details = {
        "data": source + ", with labels",
        "objective": ("conditional flow matching as fm_mnist, v(x_t, t, y), labels dropped to the null "
                      f"label 10 with probability {P_UNCOND}"),
        "initialisation": (f"fm_mnist (sha256 {start['sha256'][:12]}, {start['provenance']['steps']:,} "
                           "steps), label embedding zero"),
        "time_input": f"{TIME_SCALE:g} t (flow_matching.VelocityNet)",
        **_run_details(history, planned, STUDENT_LR, STUDENT_WARMUP, amp),
        "sampling": "flow_matching.guided_velocity(VelocityNet(model), y, gamma), 2 network passes per call",
        "scores": _scores(averaged.module, device, gamma=2.0),
        "half": True,
    }
    return averaged.module.net.eval(), details
