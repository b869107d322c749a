"""Run profile, per-lab budgets, device selection and seeding.

One switch chooses the profile: the environment variable ``COURSE_FAST``.
``COURSE_FAST=1`` gives tiny budgets (every lab in at most 60 s on two CPU cores, as in CI);
unset or ``0`` gives the full profile (good results in about ten minutes on a Colab T4 GPU).
The code paths are the same in both; only sizes, steps and sample counts change.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# Every lab's budget, in one place: {lab: {"fast": {...}, "full": {...}}}.
# Keys are the lab's notebook name without ".ipynb". Both profiles must have the same keys.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "00_getting_started": {
        # n_train: training digits used (at most what is available); steps: Adam steps of the
        # pixel model; batch_size: digits per step; lr: Adam's learning rate
        "fast": {"n_train": 1024, "steps": 60, "batch_size": 64, "lr": 0.05},
        "full": {"n_train": 60_000, "steps": 1500, "batch_size": 128, "lr": 0.05},
    },
    "01_probability": {
        # n_max / n_repeats: largest number of draws and independent runs in the MLE-vs-sample-size
        # plot; n_samples: ancestral samples from the Bayesian network; n_gmm / em_iters: 2-D points
        # and EM iterations of each Gaussian-mixture fit; n_restarts: EM runs from random starts;
        # n_bars / ar_steps / ar_lr: training images, Adam steps and learning rate of the
        # autoregressive model; n_ar: images sampled from it
        "fast": {"n_max": 10_000, "n_repeats": 5, "n_samples": 20_000, "n_gmm": 1_000,
                 "em_iters": 100, "n_restarts": 5, "n_bars": 500, "ar_steps": 300, "ar_lr": 0.05,
                 "n_ar": 5_000},
        "full": {"n_max": 1_000_000, "n_repeats": 20, "n_samples": 1_000_000, "n_gmm": 5_000,
                 "em_iters": 300, "n_restarts": 10, "n_bars": 2_000, "ar_steps": 1_000,
                 "ar_lr": 0.05, "n_ar": 100_000},
    },
    "02_information_theory": {
        # n_mc: samples of each Monte Carlo check; n_max / n_repeats: largest sample size and
        # number of independent runs in the Gaussian-KL convergence plot; n_pairs: random pairs
        # of distributions for Gibbs' inequality and the asymmetry scatter; n_data / mle_steps:
        # categorical samples and Adam steps of the cross-entropy (MLE) fit; fit_steps: Adam steps
        # of each reverse-KL fit; n_starts: starting means in the reverse-KL basin plot;
        # n_bins: grid cells of the discretised shifted uniforms in the JS plot
        "fast": {"n_mc": 20_000, "n_max": 10_000, "n_repeats": 5, "n_pairs": 2_000,
                 "n_data": 1_000, "mle_steps": 100, "fit_steps": 300, "n_starts": 11,
                 "n_bins": 200},
        "full": {"n_mc": 1_000_000, "n_max": 1_000_000, "n_repeats": 20, "n_pairs": 50_000,
                 "n_data": 20_000, "mle_steps": 300, "fit_steps": 600, "n_starts": 41,
                 "n_bins": 1_000},
    },
    "03_variational_inference": {
        # fit_steps / n_samples / lr: Adam steps of each ELBO fit, reparameterised draws per
        # ELBO estimate and Adam's initial learning rate (decayed linearly to zero); n_eval: draws
        # of the final Monte Carlo checks (ELBO, samples of q, importance sampling); n_x: points of
        # the gap-against-x grid; amortised_steps / batch_size / hidden: Adam steps, observations
        # per step and hidden width of the inference network; n_sweeps: CAVI sweeps
        "fast": {"fit_steps": 400, "n_samples": 16, "lr": 0.05, "n_eval": 20_000, "n_x": 9,
                 "amortised_steps": 400, "batch_size": 128, "hidden": 32, "n_sweeps": 10},
        "full": {"fit_steps": 3_000, "n_samples": 32, "lr": 0.05, "n_eval": 1_000_000, "n_x": 33,
                 "amortised_steps": 6_000, "batch_size": 512, "hidden": 64, "n_sweeps": 10},
    },
    "04_markov_chains": {
        # n_days: days of pi_n plotted; sim_days: length of the long simulation (method 3);
        # walk_steps / n_walkers: random-walk length and number of walkers for the moments;
        # bm_steps: grid steps of the Brownian path; mh_chains / mh_steps: Metropolis-Hastings
        # chains run side by side and their length; trace_steps: steps shown in the trace plot;
        # sweep_steps / n_step_sizes: steps per chain
        # and number of proposal scales in the acceptance-rate sweep; langevin_chains /
        # langevin_steps: Langevin chains and their length; n_data: two-moons points noised;
        # T: steps of the noising chain
        "fast": {"n_days": 30, "sim_days": 20_000, "walk_steps": 200, "n_walkers": 5_000,
                 "bm_steps": 2_000, "mh_chains": 200, "mh_steps": 1_000, "trace_steps": 300,
                 "sweep_steps": 300,
                 "n_step_sizes": 6, "langevin_chains": 1_000, "langevin_steps": 500,
                 "n_data": 2_000, "T": 100},
        "full": {"n_days": 30, "sim_days": 200_000, "walk_steps": 1_000, "n_walkers": 50_000,
                 "bm_steps": 10_000, "mh_chains": 2_000, "mh_steps": 5_000, "trace_steps": 300,
                 "sweep_steps": 1_000,
                 "n_step_sizes": 12, "langevin_chains": 5_000, "langevin_steps": 2_000,
                 "n_data": 5_000, "T": 100},
    },
    "05_vae": {
        # batch_size / lr: digits per Adam step and its learning rate (all models); ae_epochs /
        # vae_epochs / conv_epochs: passes over the training digits of the autoencoders, of each
        # MLP VAE (latent 2, 20, 100, beta-VAE) and of the convolutional VAE, each capped at
        # max_steps Adam steps (offline, 4,000 digits: the epochs decide; on 60,000 digits: the
        # cap); checkpoint_every: steps between checkpoints; monitor_every / n_monitor: steps
        # between learning-curve points and digits in each monitored set (train and held out);
        # beta: KL weight of the beta-VAE; iwae_k / n_iwae: importance samples of the IWAE
        # estimate and held-out digits of the results table
        "fast": {"batch_size": 128, "lr": 1e-3, "ae_epochs": 4, "vae_epochs": 5, "conv_epochs": 2,
                 "max_steps": 150, "checkpoint_every": 100, "monitor_every": 25, "n_monitor": 200,
                 "beta": 4.0, "iwae_k": 100, "n_iwae": 100},
        "full": {"batch_size": 128, "lr": 1e-3, "ae_epochs": 50, "vae_epochs": 100, "conv_epochs": 100,
                 "max_steps": 8_000, "checkpoint_every": 500, "monitor_every": 100, "n_monitor": 1_000,
                 "beta": 4.0, "iwae_k": 1_000, "n_iwae": 1_000},
    },
    "06_gan": {
        # toy_*: the 2-D GANs (MLP G and D): toy_n training points, toy_steps generator steps of
        # toy_batch points each with Adam(toy_lr, betas (0.5, 0.999)); n_seeds: seeds of the
        # mode-coverage table; n_coverage: samples scored by gan.mode_coverage; n_1d / d1_steps:
        # samples and Adam steps of the discriminator trained towards D* on two 1-D Gaussians;
        # mlp_steps / dcgan_steps / cdcgan_steps: generator steps of the MNIST MLP GAN, the DCGAN and
        # the conditional DCGAN when they are trained in the lab (on a GPU; the shipped checkpoints
        # use the full values: 64, 77 and 22 epochs of the 5,000 offline digits), batch_size / lr:
        # digits per step and Adam's rate (betas (0.5, 0.999), as pytorch/examples' dcgan);
        # demo_steps: the short run a CPU does before loading the shipped checkpoint; n_snapshots:
        # sample grids over training;
        # checkpoint_every: steps between checkpoints; n_fid: samples per FID (against the test split)
        "fast": {"toy_n": 5_000, "toy_steps": 200, "toy_batch": 256, "toy_lr": 1e-3, "n_seeds": 2,
                 "n_coverage": 1_000, "n_1d": 2_000, "d1_steps": 150, "mlp_steps": 40, "dcgan_steps": 40,
                 "cdcgan_steps": 40,
                 "batch_size": 64, "lr": 2e-4, "demo_steps": 10, "n_snapshots": 2,
                 "checkpoint_every": 20, "n_fid": 500},
        "full": {"toy_n": 50_000, "toy_steps": 2_000, "toy_batch": 256, "toy_lr": 1e-3, "n_seeds": 4,
                 "n_coverage": 2_500, "n_1d": 20_000, "d1_steps": 2_000, "mlp_steps": 5_000,
                 "dcgan_steps": 6_000, "cdcgan_steps": 1_750,
                 "batch_size": 64, "lr": 2e-4, "demo_steps": 200, "n_snapshots": 4,
                 "checkpoint_every": 500, "n_fid": 10_000},
    },
    "07_wgan": {
        # n_theta: values of theta in the parallel-lines plot; n_1d / d1_steps: samples of the two
        # 1-D distributions and critic steps of the dual fit; toy_n / toy_steps / toy_batch: 2-D
        # training points, generator steps (each WGAN step has n_critic = 5 critic steps) and points
        # per batch of every toy run; toy_lr: learning rate of all toy runs; n_seeds: seeds of the
        # mode-coverage table; n_coverage: samples scored by gan.mode_coverage; n_w1: points of the
        # exact sample W1 monitored every monitor_every steps; mnist_steps / batch_size: generator
        # steps and digits per step of the MNIST WGANs (trained in the lab on a GPU; the shipped
        # checkpoints use the full values); demo_steps: the short run a CPU does before loading
        # the checkpoints; checkpoint_every: steps between checkpoints; n_fid: samples per FID
        "fast": {"n_theta": 61, "n_1d": 1_000, "d1_steps": 80, "toy_n": 5_000, "toy_steps": 30,
                 "toy_batch": 128, "toy_lr": 1e-3, "n_seeds": 1, "n_coverage": 1_000, "n_w1": 200,
                 "monitor_every": 10, "mnist_steps": 10, "batch_size": 64, "demo_steps": 3,
                 "checkpoint_every": 50, "n_fid": 500},
        "full": {"n_theta": 401, "n_1d": 20_000, "d1_steps": 1_000, "toy_n": 50_000, "toy_steps": 400,
                 "toy_batch": 256, "toy_lr": 1e-3, "n_seeds": 3, "n_coverage": 2_500, "n_w1": 1_000,
                 "monitor_every": 25, "mnist_steps": 5_000, "batch_size": 64, "demo_steps": 20,
                 "checkpoint_every": 100, "n_fid": 10_000},
    },
    "08_diffusion": {
        # toy_n / toy_T / toy_steps / toy_batch / toy_lr: two-moons points, diffusion steps of the
        # 2-D schedule, Adam steps, points per step and learning rate of the MLP denoiser;
        # n_toy_samples: points sampled from it; n_gauss: samples of the Gaussian-data check;
        # unet_steps: U-Net steps when training from scratch (full profile on a GPU); demo_steps:
        # the short run on a CPU before the shipped checkpoint is loaded; batch_size / lr: digits
        # per step and Adam's learning rate; checkpoint_every: steps between checkpoints;
        # ddim_steps: DDIM step counts compared; n_eval: images per DDIM setting (grids, FID, IS);
        # n_ddpm: images sampled with 1000-step DDPM (also the N of the FID compared across all
        # rows); n_traj: digits in the trajectory figure
        "fast": {"toy_n": 4_000, "toy_T": 100, "toy_steps": 400, "toy_batch": 256, "toy_lr": 2e-3,
                 "n_toy_samples": 1_000, "n_gauss": 5_000, "unet_steps": 20, "demo_steps": 5,
                 "batch_size": 64, "lr": 5e-4, "checkpoint_every": 100, "ddim_steps": (10, 20),
                 "n_eval": 70, "n_ddpm": 1, "n_traj": 4},
        "full": {"toy_n": 20_000, "toy_T": 100, "toy_steps": 4_000, "toy_batch": 512, "toy_lr": 2e-3,
                 "n_toy_samples": 2_000, "n_gauss": 20_000, "unet_steps": 8_000, "demo_steps": 150,
                 "batch_size": 64, "lr": 5e-4, "checkpoint_every": 500, "ddim_steps": (10, 20, 50, 100),
                 "n_eval": 300, "n_ddpm": 80, "n_traj": 8},
    },
    "09_guidance": {
        # (the closed-form 2-D guidance toy runs on the theory page, not in the lab)
        # gammas: classifier-free guidance weights compared (0: unconditional, 1: conditional);
        # n_per_class: columns of the class-by-row grids; ddim_steps: DDIM steps of every image sample;
        # n_eval: samples per gamma for the classifier accuracy and the FID (and held-out digits for
        # the noisy classifier's accuracy against t); cg_scales / n_cg /
        # cg_steps: classifier-guidance scales, images per scale and DDIM steps (eps-form);
        # n_ldm: latent-diffusion samples, also N of the cost comparison's FIDs and speeds;
        # n_timing: training steps timed per model for the cost comparison;
        # cddpm_steps / classifier_steps / ae_steps / ldm_steps: steps when training from scratch (on a
        # GPU; the shipped checkpoints are used on a CPU after demo_steps), batch_size / lr as chapter 8;
        # checkpoint_every: steps between checkpoints
        "fast": {"gammas": (0.0, 1.0, 3.0, 5.0), "n_per_class": 1,
                 "ddim_steps": 10, "n_eval": 20, "cg_scales": (0.0, 3.0), "n_cg": 10, "cg_steps": 10,
                 "n_ldm": 20, "n_timing": 2, "demo_steps": 3, "cddpm_steps": 20, "classifier_steps": 20,
                 "ae_steps": 20, "ldm_steps": 20, "batch_size": 64, "lr": 5e-4, "checkpoint_every": 100},
        "full": {"gammas": (0.0, 1.0, 2.0, 3.0, 5.0),
                 "n_per_class": 10, "ddim_steps": 50, "n_eval": 300, "cg_scales": (0.0, 1.0, 3.0, 10.0),
                 "n_cg": 100, "cg_steps": 50, "n_ldm": 300, "n_timing": 20, "demo_steps": 50,
                 "cddpm_steps": 8_000, "classifier_steps": 3_000, "ae_steps": 3_000, "ldm_steps": 8_000,
                 "batch_size": 64, "lr": 5e-4, "checkpoint_every": 500},
    },
    "10_evaluation": {
        # n_table: samples per row of the comparison table (the same N for every row that can
        # afford it); max_evaluations: network evaluations one row may spend (a sampler needing
        # `evaluations` per image gets min(n_table, max_evaluations // evaluations) samples, with
        # its 1/N-corrected FID reported; below n_min samples only its speed is measured, on
        # n_speed images after one warm-up image, if that fits in max_evaluations); ns: sample
        # sizes of the FID-against-1/N fits; n_pitfall: images of the blur / noise / memorisation
        # experiments; repeats: subsets averaged per N
        "fast": {"n_table": 300, "max_evaluations": 1_000, "n_min": 200, "n_speed": 2,
                 "ns": (100, 150, 200, 300), "n_pitfall": 300, "repeats": 1},
        "full": {"n_table": 5_000, "max_evaluations": 50_000, "n_min": 200, "n_speed": 4,
                 "ns": (250, 500, 1_000, 2_000, 5_000), "n_pitfall": 5_000, "repeats": 3},
    },
}


def is_fast() -> bool:
    """Return True when ``COURSE_FAST`` asks for the fast profile (``1``, ``true``, ``yes``, ``on``)."""
    value = os.environ.get("COURSE_FAST", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"COURSE_FAST={value!r} is not understood: set COURSE_FAST=1 for the fast profile, "
        "or unset it (or set it to 0) for the full profile."
    )


def profile() -> str:
    """The active run profile: ``"fast"`` or ``"full"``."""
    return "fast" if is_fast() else "full"


def budget(lab: str, profile_name: str | None = None) -> MappingProxyType:
    """The read-only budget of ``lab`` for the active profile (or ``profile_name``).

    >>> budget("00_getting_started")["steps"]  # doctest: +SKIP
    600
    """
    if lab not in BUDGETS:
        known = ", ".join(sorted(BUDGETS))
        raise KeyError(f"No budget for lab {lab!r}. Known labs: {known}. Add one to config.BUDGETS.")
    name = profile() if profile_name is None else profile_name
    if name not in ("fast", "full"):
        raise ValueError(f"profile_name must be 'fast' or 'full', got {name!r}.")
    return MappingProxyType(dict(BUDGETS[lab][name]))


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the best available device: ``cuda``, else ``mps``, else ``cpu``.

    ``prefer`` (or the environment variable ``COURSE_DEVICE``) forces one of ``"cuda"``,
    ``"mps"`` or ``"cpu"``; asking for a device that is not available raises ``RuntimeError``.
    """
    choice = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if choice is None:
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if choice not in available:
        raise ValueError(f"Unknown device {choice!r}: choose 'cuda', 'mps' or 'cpu'.")
    if not available[choice]:
        raise RuntimeError(
            f"Device {choice!r} was requested but is not available on this machine. "
            "On Colab choose Runtime > Change runtime type > GPU, or ask for 'cpu'."
        )
    return torch.device(choice)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and CUDA); return a seeded CPU generator.

    Same seed, same numbers on the CPU. GPU kernels may still differ in the last bits.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def data_dir() -> Path:
    """Where datasets are stored: ``$COURSE_DATA_DIR``, else ``~/.cache/course_lib/data``."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_lib" / "data"


def describe(lab: str | None = None) -> str:
    """One line saying which profile and device this run uses (and the lab's budget)."""
    text = f"profile: {profile()} (COURSE_FAST={os.environ.get('COURSE_FAST', 'unset')}), "
    text += f"device: {get_device()}, torch {torch.__version__}"
    if lab is not None:
        text += f"\nbudget for {lab}: {dict(budget(lab))}"
    return text
