"""Every shipped generator of the course behind one interface, for chapter 14's comparison table.

A ``Sampler`` says how to draw images in [0, 1] from one shipped checkpoint (``pretrained``) and how
many network evaluations an image costs. ``SAMPLERS`` lists a row for every model of the course;
``available()`` keeps those whose checkpoint is shipped, so re-running the lab after a new
checkpoint lands adds its row automatically. To add a model: ship its checkpoint and add an entry.

    for name, s in zoo.available().items():
        model = pretrained.load(s.checkpoint, device)
        images = s.sample(model, 100, torch.Generator(device=device).manual_seed(0))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import _checks, metrics, pretrained

Tensor = torch.Tensor
SampleFn = Callable[[nn.Module, int, torch.Generator], Tensor]


@dataclass(frozen=True)
class Sampler:
    """How to draw n images in [0, 1] from shipped checkpoint ``checkpoint``."""

    label: str  # the row's name in the table
    checkpoint: str  # name in pretrained.available()
    chapter: int  # chapter that trains it
    evaluations: int  # network evaluations per image (sequential steps of the sampler)
    sample: SampleFn | None  # (model, n, generator) -> (n, 1, 28, 28) in [0, 1]; None: not written yet
    note: str = ""  # why a row is missing, or how it is sampled
    requires: tuple[str, ...] = ()  # further shipped checkpoints the sample function loads itself


def _vae(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    return model.sample(n, g)  # mean images sigmoid(logits) of z ~ N(0, I)


def _gan(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    from .gan import from_tanh_range

    return from_tanh_range(model.sample(n, generator=g))


def _conditional_gan(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    from .gan import from_tanh_range

    y = torch.arange(n, device=g.device) % model.config.n_classes  # balanced labels 0, 1, ..., 9, 0, ...
    return from_tanh_range(model.sample(n, y=y, generator=g))


def _schedule(model: nn.Module):
    """The noise schedule a shipped diffusion model was trained with (its manifest entry records it)."""
    from .diffusion import linear_schedule

    return getattr(model, "trained_schedule", None) or linear_schedule(1000)


def _diffusion(steps: int | None) -> SampleFn:
    """DDPM ancestral sampling (steps None: all T) or deterministic DDIM with ``steps`` steps."""
    def sample(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
        from .diffusion import ddim_sample, ddpm_sample

        sched = _schedule(model)  # ddpm_mnist's: linear, T = 1000
        device = next(model.parameters()).device
        shape = (n, 1, 28, 28)
        with torch.no_grad():
            x = (ddpm_sample(model, sched, shape, generator=g, clip_x0=1.0, device=device) if steps is None
                 else ddim_sample(model, sched, shape, steps=steps, generator=g, clip_x0=1.0, device=device))
        return ((x + 1) / 2).clamp(0, 1)
    return sample


HEUN_STEPS = 10  # chapter 12's few-step sampler: 10 rho-spaced noise levels, NFE 2 x 10 - 1 = 19


def _heun(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    """Heun's method on the probability-flow ODE of the same network (chapter 12), rho = 7, x0-hat
    clamped to [-1, 1] as the DDIM rows do."""
    from .sde import ode_sample

    device = next(model.parameters()).device
    with torch.no_grad():
        x, _ = ode_sample(model, _schedule(model), (n, 1, 28, 28), steps=HEUN_STEPS, method="heun",
                          clip_x0=1.0, generator=g, device=device)
    return ((x + 1) / 2).clamp(0, 1)


FM_STEPS = 10  # chapter 13's flow-matching rows: 10 uniform steps of Euler (NFE 10) or Heun (NFE 19)


def _flow(steps: int, method: str) -> SampleFn:
    """Chapter 13: a velocity model (a shipped U-Net fed 1000 t) solved from t = 1 to 0 with ``steps``
    uniform steps of ``method``; the one- and two-step students are ``_flow(1 or 2, "euler")``."""
    def sample(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
        from .flow_matching import VelocityNet
        from .flow_matching import sample as fm_sample

        device = next(model.parameters()).device
        with torch.no_grad():
            x, _ = fm_sample(VelocityNet(model), (n, 1, 28, 28), steps, method, generator=g, device=device)
        return ((x + 1) / 2).clamp(0, 1)
    return sample


GUIDANCE_SCALE = 2.0  # gamma of the chapter-9 rows (1: the plain conditional model; see chapter 9)


def _balanced_labels(n: int, device: torch.device) -> Tensor:
    return torch.arange(n, device=device) % 10  # 0, 1, ..., 9, 0, ...


def _cfg(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    """DDIM-50 on chapter 9's class-conditional DDPM, guided with gamma = GUIDANCE_SCALE."""
    from .diffusion import ddim_sample
    from .guidance import guided_eps

    device = next(model.parameters()).device
    eps = guided_eps(model, _balanced_labels(n, device), GUIDANCE_SCALE)
    with torch.no_grad():
        x = ddim_sample(eps, _schedule(model), (n, 1, 28, 28), steps=50, generator=g, clip_x0=1.0,
                        device=device)
    return ((x + 1) / 2).clamp(0, 1)


def _latent_diffusion(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    """DDIM-50 in the latent space of ``latent_ae_mnist``, guided with gamma = GUIDANCE_SCALE, decoded."""
    from .latent import latent_sample

    device = next(model.parameters()).device
    autoencoder = pretrained.load("latent_ae_mnist", device)
    with torch.no_grad():
        return latent_sample(model, autoencoder, _schedule(model), n, steps=50,
                             y=_balanced_labels(n, device), gamma=GUIDANCE_SCALE, generator=g, device=device)


def _pixelcnn(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    """Ancestral sampling, pixel by pixel: binary images (the model is of binarised digits)."""
    from .autoregressive import sample

    return sample(model, n, generator=g)


def _realnvp(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
    """One inverse pass of the flow at temperature 1: grey images in [0, 1]."""
    from .flows import sample

    return sample(model, n, temperature=1.0, generator=g)


_EVALS_GUIDED = 50 * (1 if GUIDANCE_SCALE in (0.0, 1.0) else 2)  # two predictions per step when guided

SAMPLERS: dict[str, Sampler] = {
    "vae_mlp": Sampler("VAE (MLP, K = 20)", "vae_mlp", 5, 1, _vae),
    "vae_conv": Sampler("VAE (conv, K = 16)", "vae_conv", 5, 1, _vae),
    "gan": Sampler("GAN (MLP)", "gan_mlp_mnist", 6, 1, _gan),
    "dcgan": Sampler("DCGAN", "dcgan_mnist", 6, 1, _gan),
    "cdcgan": Sampler("conditional DCGAN", "cdcgan_mnist", 6, 1, _conditional_gan,
                      "balanced labels 0..9"),
    "wgan_gp": Sampler("WGAN-GP", "wgan_gp_mnist", 7, 1, _gan),
    "sngan": Sampler("SNGAN", "sngan_mnist", 7, 1, _gan),
    "ddpm": Sampler("DDPM (1000 steps)", "ddpm_mnist", 8, 1000, _diffusion(None)),
    "ddim50": Sampler("DDIM (50 steps)", "ddpm_mnist", 8, 50, _diffusion(50)),
    "ddim10": Sampler("DDIM (10 steps)", "ddpm_mnist", 8, 10, _diffusion(10)),
    "heun": Sampler(f"ODE Heun ({HEUN_STEPS} levels)", "ddpm_mnist", 12, 2 * HEUN_STEPS - 1, _heun,
                    "the DDPM's probability-flow ODE, rho-spaced noise levels"),
    "cfg": Sampler(f"CFG (γ = {GUIDANCE_SCALE:g}, DDIM 50)", "cddpm_mnist", 9, _EVALS_GUIDED, _cfg,
                   "balanced labels 0..9"),
    "fm_euler10": Sampler(f"flow matching (Euler, {FM_STEPS} steps)", "fm_mnist", 13, FM_STEPS,
                          _flow(FM_STEPS, "euler"), "chapter 8's U-Net trained by flow matching"),
    "fm_heun": Sampler(f"flow matching (Heun, {FM_STEPS} steps)", "fm_mnist", 13, 2 * FM_STEPS - 1,
                       _flow(FM_STEPS, "heun"), "chapter 8's U-Net trained by flow matching"),
    "fm_student": Sampler("flow matching, one-step student", "fm_student_mnist", 13, 1, _flow(1, "euler"),
                          "distilled from fm_mnist's Heun samples (chapter 13)"),
    "fm_student2": Sampler("flow matching, two-step student", "fm_student2_mnist", 13, 2, _flow(2, "euler"),
                           "the one-step student distilled further at t in {1, 1/2} (chapter 13)"),
    "pixelcnn": Sampler("PixelCNN", "pixelcnn_mnist", 10, 784, _pixelcnn,
                        "784 sequential steps; binary samples, scored against grey real digits"),
    "realnvp": Sampler("RealNVP (T = 1)", "realnvp_mnist", 11, 1, _realnvp,
                       "one inverse pass of the flow; the model of 8-bit digits, dequantised"),
    "latent_diffusion": Sampler(f"latent diffusion (γ = {GUIDANCE_SCALE:g}, DDIM 50)", "ldm_mnist", 9,
                                _EVALS_GUIDED, _latent_diffusion,
                                "balanced labels 0..9; the decoder of latent_ae_mnist adds one evaluation",
                                requires=("latent_ae_mnist",)),
}


def available(shipped: list[str] | None = None) -> dict[str, Sampler]:
    """The entries of ``SAMPLERS`` that can run now: a sample function and a shipped checkpoint."""
    shipped = pretrained.available() if shipped is None else shipped
    return {k: s for k, s in SAMPLERS.items()
            if s.sample is not None and all(c in shipped for c in (s.checkpoint, *s.requires))}


def missing(shipped: list[str] | None = None) -> dict[str, str]:
    """{entry: reason} for the rows of ``SAMPLERS`` that cannot run yet."""
    shipped = pretrained.available() if shipped is None else shipped
    ready = available(shipped)
    return {k: (s.note if s.sample is None else
                "checkpoint " + ", ".join(repr(c) for c in (s.checkpoint, *s.requires) if c not in shipped)
                + " not shipped yet")
            for k, s in SAMPLERS.items() if k not in ready}


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] as 8-bit levels round(255 x), uint8 (binary images stay exact: 0 and 255)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def quantised(sample: SampleFn) -> SampleFn:
    """``sample`` with its images rounded to 8-bit levels, ``to_uint8(x) / 255``: what a cached set holds."""
    def draw(model: nn.Module, n: int, g: torch.Generator) -> Tensor:
        return to_uint8(sample(model, n, g)).float() / 255
    return draw


# --- cached sample sets (scripts/sample_cache.py draws them; the table reads them) -----------------

SAMPLE_CACHE = pretrained.CHECKPOINTS / "samples"  # ROW-sSEED-nN.pt (uint8) + ROW-sSEED-nN.json


class StaleCache(ValueError):
    """A cached sample set that no longer matches its row: another checkpoint, sampler or batch size."""


def row_definition(key: str, batch_size: int) -> dict:
    """What a cached set of row ``key`` depends on: the sampler, its checkpoints' SHA-256, the batch size."""
    s = SAMPLERS[key]
    return {"row": key, "label": s.label, "evaluations": s.evaluations,
            "sample": f"{s.sample.__module__}.{s.sample.__qualname__}",
            "checkpoints": {c: pretrained.info(c)["sha256"] for c in (s.checkpoint, *s.requires)},
            "batch_size": _checks.count(batch_size, "batch_size"), "stored": "uint8 levels round(255 x)"}


def cache_path(key: str, seed: int, n: int, folder=None) -> Path:
    """``folder/ROW-sSEED-nN.pt`` (``folder``: ``SAMPLE_CACHE``); its manifest entry has suffix .json."""
    return Path(SAMPLE_CACHE if folder is None else folder) / f"{key}-s{seed}-n{n}.pt"


def read_cache(key: str, seed: int, n: int, batch_size: int, folder=None) -> tuple[Tensor, dict]:
    """The first n images (float in [0, 1], CPU) of the cached set of row ``key`` and seed, and its entry.

    Takes the file with exactly n images, else the smallest larger one when n is a multiple of
    ``batch_size`` (its first n images are then the set a live draw of n gives). Raises
    ``FileNotFoundError`` when there is none, ``StaleCache`` when its entry does not match
    ``row_definition(key, batch_size)`` (e.g. the checkpoint was retrained), ``ValueError`` when the
    file fails its SHA-256.
    """
    folder = Path(SAMPLE_CACHE if folder is None else folder)
    sizes = sorted(int(f.stem.rsplit("-n", 1)[1]) for f in folder.glob(f"{key}-s{seed}-n*.pt")
                   if f.stem.rsplit("-n", 1)[1].isdigit())
    usable = [m for m in sizes if m == n or (m > n and n % batch_size == 0)]
    if not usable:
        command = f"python scripts/sample_cache.py {key} --n {n} --seeds {seed} --batch-size {batch_size}"
        raise FileNotFoundError(f"no cached set of row {key!r}, seed {seed}, with {n} images in "
                                f"{folder.name}/ (found sizes {sizes or 'none'}); draw one with: {command}")
    file = cache_path(key, seed, usable[0], folder)
    entry = json.loads(file.with_suffix(".json").read_text())
    want, got = row_definition(key, batch_size), entry.get("definition", {})
    if got != want:
        old = got.get("checkpoints") or {}
        diff = [f"checkpoint {c} has SHA-256 {sha[:12]}... now, the set was drawn from "
                f"{old.get(c, '?')[:12]}..." for c, sha in want["checkpoints"].items() if old.get(c) != sha]
        diff += [f"{k}: cached {got.get(k)!r}, now {want[k]!r}" for k in want
                 if k != "checkpoints" and got.get(k) != want[k]]
        raise StaleCache(f"the cached set {file.name} does not match row {key!r} as defined now ("
                         + "; ".join(diff) + "). It was drawn from another checkpoint or sampler: refusing "
                         f"it. Redraw it with: {entry.get('command', 'scripts/sample_cache.py')}")
    stored = torch.load(file, weights_only=True)
    if hashlib.sha256(stored.numpy().tobytes()).hexdigest() != entry.get("sha256"):
        raise ValueError(f"{file.name} fails its SHA-256 check (a corrupt or replaced file): redraw it with: "
                         f"{entry.get('command')}")
    return stored[:n].float() / 255, entry


def sample_in_batches(sample: SampleFn, model: nn.Module, n: int, generator: torch.Generator,
                      batch_size: int = 500) -> Tensor:
    """n images from ``sample`` drawn in batches of at most ``batch_size`` (bounded memory)."""
    n, batch_size = _checks.count(n, "n"), _checks.count(batch_size, "batch_size")
    return torch.cat([sample(model, min(batch_size, n - k), generator) for k in range(0, n, batch_size)])


def scores(samples: Tensor, reference: Tensor, train: Tensor, held_out: Tensor,
           k: int = 3) -> dict[str, float]:
    """All quality and diversity columns of the table for ``samples`` (N, 1, 28, 28) in [0, 1].

    ``reference``: features (M, D) of the real reference images (FID and recall; precision/recall
    use its first N rows, so both sets have the same size); ``train``: training images for the
    memorisation ratio, with ``held_out`` real images (not in ``train``) as its yardstick.
    """
    feats = metrics.features(samples)
    n = len(samples)
    precision, recall = metrics.precision_recall(feats, reference[:n].to(feats.device), k=k)
    return {
        "fid": metrics.fid(feats, metrics.statistics(reference)),
        "inception_score": metrics.inception_score(samples, splits=10)[0],
        "precision": precision,
        "recall": recall,
        "min_class_share": metrics.class_coverage(samples).min_share,
        "nn_ratio": metrics.memorisation_ratio(samples, train, held_out),
    }


def score_seeds(sample: SampleFn, model: nn.Module | None, n: int, seeds, reference: Tensor, train: Tensor,
                held_out: Tensor, *, fid_inf_ns: tuple[int, ...] | None = None, k: int = 3,
                batch_size: int = 500, warmup: int = 1,
                device: torch.device | str | None = None) -> list[dict[str, float]]:
    """``scores`` of one independent set of n samples per seed: one row per seed, for ``summarise_seeds``.

    The set of seed s is ``sample_in_batches(sample, model, n, generator)`` with
    ``torch.Generator(device).manual_seed(s)`` (``device``: the model's unless given), so any row can
    be redrawn alone.
    Each row holds "seed", "speed" (images per second of that draw, after one untimed warm-up draw of
    ``warmup`` images with its own generator before the first seed), the columns of ``scores``, and
    "fid_inf" (``metrics.fid_infinity`` of the set on sizes ``fid_inf_ns``, at least three, the
    largest at most n) and "fid_inf_se" (its fit's standard error) when asked. The reference set is
    the same for every seed: the spread over seeds is that of the samples.
    """
    n = _checks.count(n, "n")
    seeds = [_checks.count(s, "every seed", 0) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (one independent sample set each), got {seeds}.")
    if device is None:
        if model is None or next(model.parameters(), None) is None:
            raise ValueError("pass device= (where the generators live): the model has no parameters to tell.")
        device = next(model.parameters()).device
    device = torch.device(device)
    ref_stats = metrics.statistics(reference) if fid_inf_ns is not None else None

    def draw(m: int, seed: int | None) -> Tensor:
        g = torch.Generator(device=device)  # unseeded: torch's fixed default seed (the warm-up)
        return sample_in_batches(sample, model, m, g if seed is None else g.manual_seed(seed), batch_size)

    if warmup:
        draw(_checks.count(warmup, "warmup"), None)  # not timed, not scored
    rows = []
    for seed in seeds:
        speed, images = metrics.sampling_speed(lambda m, s=seed: draw(m, s), n, device, warmup=0,
                                               return_samples=True)
        rows.append(score_set(images, seed, reference, train, held_out, fid_inf_ns=fid_inf_ns, k=k,
                              ref_stats=ref_stats, speed=speed))
    return rows


def score_set(images: Tensor, seed: int, reference: Tensor, train: Tensor, held_out: Tensor, *,
              fid_inf_ns: tuple[int, ...] | None = None, k: int = 3, ref_stats=None,
              speed: float = float("nan")) -> dict[str, float]:
    """One row of ``score_seeds`` for a set already drawn (e.g. a cached one): seed, speed, ``scores``,
    and "fid_inf" on sizes ``fid_inf_ns`` with subsets drawn by ``torch.Generator().manual_seed(seed)``,
    with "fid_inf_se", the standard error of that fit's intercept (``metrics.FIDInfinity.se``)."""
    row = {"seed": seed, "speed": speed, **scores(images, reference, train, held_out, k=k)}
    if fid_inf_ns is not None:
        ref_stats = metrics.statistics(reference) if ref_stats is None else ref_stats
        g = torch.Generator().manual_seed(seed)  # the subsets of the 1/N fit
        fit = metrics.fid_infinity(metrics.features(images), ref_stats, fid_inf_ns, generator=g)
        row["fid_inf"], row["fid_inf_se"] = fit.fid_inf, fit.se
    return row


def summarise_seeds(rows: list[dict[str, float]]) -> dict[str, metrics.Summary]:
    """{column: ``metrics.summarise`` of the column over the rows}, for each column of ``score_seeds``."""
    return {key: metrics.summarise([r[key] for r in rows]) for key in rows[0] if key != "seed"}
