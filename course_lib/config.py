"""Run profile, per-lab budgets, device selection and seeding.

One switch chooses the profile: the environment variable ``COURSE_FAST``.
``COURSE_FAST=1`` gives tiny budgets (every lab in under 45 s on an idle two-core CPU, as in CI);
unset or ``0`` gives the full profile (good results in about ten minutes on a Colab T4 GPU).
The code paths are the same in both; only sizes, steps and sample counts change.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

@dataclass(frozen=True)
class Size:
    """One budget entry: its value in the fast profile, in the full profile, and (if it differs) in the
    full profile on a machine without a CUDA GPU, where a lab loads shipped checkpoints and samples less."""

    fast: Any
    full: Any
    cpu: Any = None  # None: the same as ``full``

    def value(self, profile_name: str, gpu: bool = True) -> Any:
        if profile_name == "fast":
            return self.fast
        return self.full if gpu or self.cpu is None else self.cpu


# Every lab's budget, in one place: one table per lab, one row per key, Size(fast, full[, cpu=...]),
# each with what it sets. The labs read them with ``budget(lab)``; the table's name is the notebook's
# name without ".ipynb". A row's ``cpu`` value applies in the full profile when the lab runs without a
# CUDA GPU (labs 05, 08, 09): there the lab trains short demonstration runs, loads the shipped checkpoints and
# draws fewer samples, so that its full profile stays within 20 minutes on a 2-core CPU (DESIGN.md 11).

LAB_00_GETTING_STARTED = {
    "n_train": Size(1_024, 60_000),  # training digits used (at most what is available)
    "steps": Size(60, 1_500),  # Adam steps of the pixel model
    "batch_size": Size(64, 128),  # digits per step
    "lr": Size(0.05, 0.05),  # Adam's learning rate
}

LAB_01_PROBABILITY = {
    "n_max": Size(10_000, 1_000_000),  # largest number of draws in the MLE-vs-sample-size plot
    "n_repeats": Size(5, 20),  # independent runs in that plot
    "n_samples": Size(20_000, 1_000_000),  # ancestral samples from the Bayesian network
    "n_gmm": Size(1_000, 5_000),  # 2-D points of each Gaussian-mixture fit
    "em_iters": Size(100, 300),  # EM iterations of each fit
    "n_restarts": Size(5, 10),  # EM runs from random starts
    "n_bars": Size(500, 2_000),  # training images of the autoregressive model
    "ar_steps": Size(300, 1_000),  # its Adam steps
    "ar_lr": Size(0.05, 0.05),  # its learning rate
    "n_ar": Size(5_000, 100_000),  # images sampled from it
}

LAB_02_INFORMATION_THEORY = {
    "n_mc": Size(20_000, 1_000_000),  # samples of each Monte Carlo check
    "n_max": Size(10_000, 1_000_000),  # largest sample size in the Gaussian-KL convergence plot
    "n_repeats": Size(5, 20),  # independent runs in that plot
    "n_pairs": Size(2_000, 50_000),  # random pairs of distributions (Gibbs' inequality, asymmetry)
    "n_data": Size(1_000, 20_000),  # categorical samples of the cross-entropy (MLE) fit
    "mle_steps": Size(100, 300),  # Adam steps of that fit
    "fit_steps": Size(300, 600),  # Adam steps of each reverse-KL fit
    "n_starts": Size(11, 41),  # starting means in the reverse-KL basin plot
    "n_bins": Size(200, 1_000),  # grid cells of the discretised shifted uniforms in the JS plot
}

LAB_03_VARIATIONAL_INFERENCE = {
    "fit_steps": Size(400, 3_000),  # Adam steps of each ELBO fit
    "n_samples": Size(16, 32),  # reparameterised draws per ELBO estimate
    "lr": Size(0.05, 0.05),  # Adam's initial learning rate (decayed linearly to zero)
    "n_eval": Size(20_000, 1_000_000),  # draws of the final Monte Carlo checks (ELBO, q, importance sampling)
    "n_x": Size(9, 33),  # points of the gap-against-x grid
    "amortised_steps": Size(400, 6_000),  # Adam steps of the inference network
    "batch_size": Size(128, 512),  # observations per step of the inference network
    "hidden": Size(32, 64),  # hidden width of the inference network
    "n_sweeps": Size(10, 10),  # CAVI sweeps
}

LAB_04_MARKOV_CHAINS = {
    "n_days": Size(30, 30),  # days of pi_n plotted
    "sim_days": Size(20_000, 200_000),  # length of the long simulation (method 3)
    "walk_steps": Size(200, 1_000),  # random-walk length for the moments
    "n_walkers": Size(5_000, 50_000),  # number of walkers for the moments
    "bm_steps": Size(2_000, 10_000),  # grid steps of the Brownian path
    "mh_chains": Size(200, 2_000),  # Metropolis-Hastings chains run side by side
    "mh_steps": Size(1_000, 5_000),  # their length
    "trace_steps": Size(300, 300),  # steps shown in the trace plot
    "sweep_steps": Size(300, 1_000),  # steps per chain in the acceptance-rate sweep
    "n_step_sizes": Size(6, 12),  # proposal scales in that sweep
    "langevin_chains": Size(1_000, 5_000),  # Langevin chains
    "langevin_steps": Size(500, 2_000),  # their length
    "n_data": Size(2_000, 5_000),  # two-moons points noised
    "T": Size(100, 100),  # steps of the noising chain
}

LAB_05_VAE = {
    "batch_size": Size(128, 128),  # digits per Adam step (all models)
    "lr": Size(1e-3, 1e-3),  # Adam's learning rate (all models)
    # Passes over the training digits of the autoencoders, of each MLP VAE (latent 2, 20, 100,
    # beta-VAE) and of the convolutional VAE, each capped at max_steps Adam steps (offline, on a few
    # thousand digits, the epochs decide; on 60,000 digits, the cap). Without a GPU the lab trains the
    # two shipped models (vae_mlp = latent 20, vae_conv) for demo_steps only, then loads them, and
    # trains the others for at most cpu max_steps.
    "ae_epochs": Size(2, 50),
    "vae_epochs": Size(3, 100),
    "conv_epochs": Size(2, 100),
    "max_steps": Size(150, 8_000, cpu=1_000),
    "demo_steps": Size(25, 100),  # the short run before a shipped checkpoint is loaded (without a GPU)
    "checkpoint_every": Size(100, 500),  # steps between checkpoints
    "monitor_every": Size(25, 100),  # steps between learning-curve points
    "n_monitor": Size(200, 1_000),  # digits in each monitored set (train and held out)
    "beta": Size(4.0, 4.0),  # KL weight of the beta-VAE
    "iwae_k": Size(50, 1_000),  # importance samples of the IWAE estimate
    "n_iwae": Size(100, 1_000, cpu=300),  # held-out digits of the results table
}

LAB_06_GAN = {
    # the 2-D GANs (MLP G and D), Adam(toy_lr, betas (0.5, 0.999))
    "toy_n": Size(5_000, 50_000),  # training points
    "toy_steps": Size(120, 2_000),  # generator steps
    "toy_batch": Size(256, 256),  # points per step
    "toy_lr": Size(1e-3, 1e-3),  # learning rate
    "n_seeds": Size(2, 4),  # seeds of the mode-coverage table
    "n_coverage": Size(1_000, 2_500),  # samples scored by gan.mode_coverage
    "n_1d": Size(2_000, 20_000),  # samples of the two 1-D Gaussians
    "d1_steps": Size(150, 2_000),  # Adam steps of the discriminator trained towards D* on them
    # generator steps of the MNIST MLP GAN, the DCGAN and the conditional DCGAN when trained in the lab
    # (on a GPU; the shipped checkpoints use the full values: 64, 77 and 22 epochs of the 5,000
    # offline digits)
    "mlp_steps": Size(40, 5_000),
    "dcgan_steps": Size(40, 6_000),
    "cdcgan_steps": Size(40, 1_750),
    "batch_size": Size(64, 64),  # digits per step
    "lr": Size(2e-4, 2e-4),  # Adam's rate (betas (0.5, 0.999), as pytorch/examples' dcgan)
    "demo_steps": Size(10, 200),  # the short run a CPU does before loading the shipped checkpoint
    "n_snapshots": Size(2, 4),  # sample grids over training
    "checkpoint_every": Size(20, 500),  # steps between checkpoints
    "n_fid": Size(300, 10_000),  # samples per FID (against the test split)
}

LAB_07_WGAN = {
    "n_theta": Size(61, 401),  # values of theta in the parallel-lines plot
    "n_1d": Size(1_000, 20_000),  # samples of the two 1-D distributions
    "d1_steps": Size(80, 1_000),  # critic steps of the dual fit
    "toy_n": Size(5_000, 50_000),  # 2-D training points
    "toy_steps": Size(30, 400),  # generator steps of every toy run (a WGAN step: n_critic = 5 critic steps)
    "toy_batch": Size(128, 256),  # points per batch of every toy run
    "toy_lr": Size(1e-3, 1e-3),  # learning rate of all toy runs
    "n_seeds": Size(1, 3),  # seeds of the mode-coverage table
    "n_coverage": Size(1_000, 2_500),  # samples scored by gan.mode_coverage
    "n_w1": Size(200, 1_000),  # points of the exact sample W1, monitored every monitor_every steps
    "monitor_every": Size(10, 25),
    # generator steps of the MNIST WGANs (trained in the lab on a GPU; the shipped checkpoints use the
    # full value)
    "mnist_steps": Size(10, 5_000),
    "batch_size": Size(64, 64),  # digits per step
    "demo_steps": Size(3, 20),  # the short run a CPU does before loading the checkpoints
    "checkpoint_every": Size(50, 100),  # steps between checkpoints
    "n_fid": Size(500, 10_000),  # samples per FID
}

LAB_08_DIFFUSION = {
    # the 2-D model: two-moons points, diffusion steps of its schedule, Adam steps, points per step and
    # learning rate of the MLP denoiser, points sampled from it
    "toy_n": Size(4_000, 20_000),
    "toy_T": Size(100, 100),
    "toy_steps": Size(250, 4_000),
    "toy_batch": Size(256, 512),
    "toy_lr": Size(2e-3, 2e-3),
    "n_toy_samples": Size(1_000, 2_000),
    "n_gauss": Size(5_000, 20_000),  # samples of the Gaussian-data check
    "unet_steps": Size(20, 8_000),  # U-Net steps when training from scratch (full profile on a GPU)
    "demo_steps": Size(3, 100),  # the short run on a CPU before the shipped checkpoint is loaded
    "batch_size": Size(32, 64),  # digits per step
    "lr": Size(5e-4, 5e-4),  # Adam's learning rate
    "checkpoint_every": Size(100, 500),  # steps between checkpoints
    "ddim_steps": Size((2, 5), (10, 20, 50, 100)),  # DDIM step counts compared
    "n_eval": Size(66, 300, cpu=240),  # images per DDIM setting (grids, FID, IS)
    # images sampled with 1000-step DDPM (also the N of the FID compared across rows); 0 skips the row
    "n_ddpm": Size(0, 80),
    "n_traj": Size(4, 8),  # digits in the trajectory figure
}

LAB_09_GUIDANCE = {
    # (the closed-form 2-D guidance toy runs on the theory page, not in the lab)
    # classifier-free guidance weights compared (0: unconditional, 1: conditional)
    "gammas": Size((0.0, 1.0, 3.0), (0.0, 1.0, 2.0, 3.0, 5.0)),
    "n_per_class": Size(1, 10, cpu=8),  # columns of the class-by-row grids
    "ddim_steps": Size(10, 50),  # DDIM steps of every image sample
    # samples per gamma for the classifier accuracy and the FID (and held-out digits for the noisy
    # classifier's accuracy against t); FID needs more than 64
    "n_eval": Size(10, 300, cpu=200),
    "cg_scales": Size((0.0, 3.0), (0.0, 1.0, 3.0, 10.0)),  # classifier-guidance scales
    "n_cg": Size(10, 100),  # images per scale
    "cg_steps": Size(10, 50),  # DDIM steps (eps-form) of classifier guidance
    "n_exercise": Size(1, 20, cpu=10),  # samples per class in exercise 1 (at most n_eval / 10)
    "n_ldm": Size(10, 300, cpu=100),  # latent-diffusion samples, also N of the cost comparison's FIDs
    "n_timing": Size(1, 20, cpu=10),  # training steps timed per model for the cost comparison
    "demo_steps": Size(3, 50),  # the short run before a shipped checkpoint is loaded (no GPU)
    # steps when training from scratch (on a GPU; the shipped checkpoints are used after demo_steps)
    "cddpm_steps": Size(20, 8_000),
    "classifier_steps": Size(20, 3_000),
    "ae_steps": Size(20, 3_000),
    "ldm_steps": Size(20, 8_000),
    "batch_size": Size(32, 64),  # digits per step, as chapter 8
    "lr": Size(5e-4, 5e-4),  # Adam's learning rate, as chapter 8
    "checkpoint_every": Size(100, 500),  # steps between checkpoints
}

LAB_10_AUTOREGRESSIVE = {
    "batch_size": Size(16, 64),  # binarised digits per Adam step
    "lr": Size(1e-3, 1e-3),  # Adam's learning rate (constant: any stopping point is a usable model)
    # Adam steps of the gated PixelCNN (default PixelCNNConfig, 720,513 parameters). A GPU trains
    # from scratch; without one the lab trains demo_steps to show the loss falling, then loads the
    # shipped checkpoint pixelcnn_mnist for every result.
    "steps": Size(10, 10_000),
    "demo_steps": Size(5, 60),
    "checkpoint_every": Size(10, 500),  # steps between checkpoints
    "monitor_every": Size(5, 250),  # steps between held-out NLL points of the training curve
    "n_monitor": Size(64, 1_000),  # held-out digits scored at each monitor point
    "n_eval": Size(64, 1_000, cpu=300),  # held-out digits of the likelihood table (PixelCNN and VAE)
    "iwae_k": Size(20, 1_000),  # importance samples of the VAE's IWAE estimate
    "n_grid": Size(16, 100),  # samples in the grid (10 x 10 in the full profile)
    "n_complete": Size(3, 8),  # half-digits to complete
    "n_completions": Size(2, 5),  # completions drawn for each
    "n_timing": Size(4, 32),  # batch of the sampling-time comparison (all models)
}


LAB_11_FLOWS = {
    "n_moons": Size(2_000, 20_000),  # two-moons points of the 2-D flow's training set
    "moons_steps": Size(300, 3_000),  # Adam steps of the 2-D RealNVP (batch 256)
    "grid": Size(120, 400),  # points per axis of the density grid (quadrature of its integral)
    "n_hutchinson": Size(100, 2_000),  # repeated Hutchinson estimates per number of probes
    # the RealNVP on 8-bit digits (default RealNVPConfig, 780,540 parameters): a GPU trains it
    # from scratch; without one the lab trains demo_steps to show the bound falling, then loads
    # the shipped checkpoint realnvp_mnist. The full values are the recipe of realnvp_mnist.
    "batch_size": Size(16, 64),
    # Adam: linear warm-up over `warmup` steps, constant `lr` up to step `decay_from`, then half a
    # cosine down to 0 at `steps` (train.warmup_constant_cosine; the shipped run decided to decay
    # at step 2,750, when its held-out curve had flattened into noise)
    "lr": Size(1e-3, 1e-3),
    "warmup": Size(5, 200),
    "decay_from": Size(5, 2_750),
    "grad_clip": Size(50.0, 50.0),  # gradient-norm clip
    "steps": Size(10, 12_000),
    "demo_steps": Size(3, 60),
    "checkpoint_every": Size(10, 250),
    "monitor_every": Size(5, 250),  # steps between held-out bits/dim points of the curve
    "n_monitor": Size(32, 500),  # test digits scored at each monitor point (one fixed dequantisation)
    "n_eval": Size(100, 10_000),  # test digits of the bits/dim table
    "n_dequant": Size(1, 1),  # dequantisation draws per test digit, averaged (the export uses 4)
    "n_grid": Size(16, 64),  # samples per temperature (8 x 8 in the full profile)
    "n_quality": Size(200, 5_000),  # samples per set for FID, IS, precision, recall: Lab 14's N
    "quality_seeds": Size(1, 3),  # independent sample sets per row (mean and spread)
    "n_iw": Size(16, 200),  # test digits of exercise 2 (16 dequantisation draws each)
}


LAB_12_SCORE_SDE = {
    # 2-D: a mixture of two Gaussians with weights 0.2 and 0.8 (Song & Ermon's example of why one noise
    # level is not enough), a ScoreMLP trained by denoising score matching on a geometric ladder
    "n_points": Size(2_000, 20_000),  # training points
    "score_steps": Size(300, 4_000),  # Adam steps (batch 512)
    "n_levels": Size(10, 10),  # noise levels of the ladder, sigma from 20 down to 0.1
    "langevin_steps": Size(20, 100),  # Langevin steps per level
    "n_toy": Size(500, 5_000),  # 2-D samples per sampler
    "sde_steps": Size(100, 500),  # steps of the 2-D reverse SDE and ODE
    "n_prior_check": Size(5_000, 100_000),  # ODE runs from N(0, I) and from the exact p_1
    # the shipped ddpm_mnist, five samplers at (about) these NFEs, n_sweep images per set, one set
    # per seed; the samples of one seed start from the same noise for every sampler
    # (an FID needs more images than the classifier has features: 64)
    "sweep_nfe": Size((2,), (10, 20, 35, 50, 100), cpu=(10, 20, 50, 100)),
    "n_sweep": Size(72, 1_000, cpu=100),
    "sweep_seeds": Size((0,), (0, 1, 2)),
    "batch": Size(72, 500, cpu=100),  # images per sampling call
    "ex_nfe": Size(2, 20),  # the exercises' budget of network evaluations per image (n_sweep images)
    # likelihood on the first n_like digits of the real test split: the ODE by Heun with ode_steps
    # steps and one Rademacher probe, the ELBO with elbo_strata strata of the times
    "n_like": Size(2, 500, cpu=48),
    "ode_steps": Size(8, 100),
    "elbo_strata": Size(10, 200, cpu=100),
    "n_repeat": Size(1, 8, cpu=4),  # digits whose ODE estimate is repeated with 4 other probe draws
}


LAB_13_FLOW_MATCHING = {
    # 2-D: the page's mixture of three Gaussians, a velocity MLP (MLPDenoiser, Adam 1e-3, batch 512)
    # trained by conditional flow matching (the 1-rectified flow); reflowed on (noise, sample) pairs of
    # itself (the 2-rectified flow, from the 1-rectified weights); then distilled into a one-step student
    # on pairs of the 2-rectified flow (from its weights)
    "n_points": Size(2_000, 20_000),  # training points of the mixture
    "toy_steps": Size(200, 4_000),  # Adam steps of the 1-rectified flow
    "n_pairs": Size(1_000, 20_000),  # (noise, sample) pairs of each reflow or distillation
    "pair_steps": Size(20, 100),  # Heun steps solving for those pairs (NFE 2 x steps - 1)
    "reflow_steps": Size(200, 4_000),  # Adam steps of the 2-rectified flow
    "distill_steps": Size(200, 4_000),  # Adam steps of the one-step student
    "n_toy": Size(500, 2_000),  # 2-D samples per measurement (exact W1 by assignment: O(n^3))
    "toy_nfe": Size((1, 2, 4), (1, 2, 4, 8, 16)),  # Euler steps compared, before and after reflow
    # digits: chapter 8's U-Net trained by flow matching. A GPU (full profile) trains it from scratch
    # with the budget of the shipped ddpm_mnist and fm_mnist (14,800 steps of 64 digits, Adam 5e-4 with
    # a 500-step warm-up, EMA 0.999); otherwise demo_steps, then the shipped fm_mnist
    "unet_steps": Size(20, 14_800),
    "demo_steps": Size(3, 100),
    "batch_size": Size(32, 64),
    "n_grid": Size(16, 100),  # the sample grid, Heun with grid_steps steps
    "grid_steps": Size(2, 10),
    # FID against NFE: Lab 12's sweep (its N, seeds, batches and starting noise), so that the ddpm_mnist
    # rows of both labs are comparable; the CPU drops NFE 100 (Lab 12 has it for the DDPM)
    "sweep_nfe": Size((2,), (10, 20, 35, 50, 100), cpu=(10, 20, 50)),
    "few_nfe": Size((1,), (1, 2, 4)),  # Euler steps of fm_mnist below the sweep: where few steps fail
    "n_sweep": LAB_12_SCORE_SDE["n_sweep"],
    "sweep_seeds": LAB_12_SCORE_SDE["sweep_seeds"],
    "batch": LAB_12_SCORE_SDE["batch"],
    "ex_nfe": Size(2, 20),  # the exercise's network evaluations per image (n_sweep images, first seed)
    # classifier-free guidance of the shipped cfm_mnist: Heun with cfg_steps steps, the sweep's N, seeds and
    # batches, balanced labels (n_sweep / 10 per class); gamma 0 and 1 cost one pass per call, others two
    "cfg_gammas": Size((0.0, 2.0), (0.0, 1.0, 2.0, 3.0, 5.0), cpu=(0.0, 1.0, 2.0, 3.0)),
    "cfg_steps": Size(2, 10),
}


LAB_14_EVALUATION = {
    # the comparison table: one N for every row, one independent sample set per seed (mean and spread)
    "n_table": Size(300, 1_000),  # samples per set, the same N for every row
    "seeds": Size((10, 11), (10, 11, 12)),  # one set per seed, torch.Generator(device).manual_seed(seed)
    # the table measured again on new independent sets (the bar: no stated ordering may flip); a cached
    # row needs its sets for these seeds too (scripts/sample_cache.py ROW --seeds 13 14 15)
    "rerun_seeds": Size((12, 13), (13, 14, 15)),
    "batch_size": Size(100, 100),  # images per sampler call (a cached set matches only this value)
    "ns_table": Size((100, 150, 300), (250, 500, 1_000)),  # sizes of each set's FID-against-1/N fit
    # network evaluations a row may spend drawing its sets live (n_table x seeds x NFE); a row above
    # that reads its sets from checkpoints/samples/ (scripts/sample_cache.py), or is listed as not drawn
    "max_live_evaluations": Size(1_000, 10**9, cpu=30_000),
    # the speed of a cached row (or of one not drawn) is measured live on n_speed images after a one-image
    # warm-up, when (1 + n_speed) x NFE fits in max_evaluations
    "max_evaluations": Size(100, 50_000),
    "n_speed": Size(2, 4),
    "ns": Size((100, 150, 200, 300), (250, 500, 1_000, 2_000, 5_000)),  # N of section 2's 1/N fits
    "n_pitfall": Size(300, 5_000),  # images of the blur / noise / memorisation experiments
    "repeats": Size(1, 3),  # subsets averaged per N (section 2)
    # the likelihood columns, on the first test digits: nats per binarised digit (PixelCNN, the two
    # VAEs' IWAE estimates with iwae_k samples), bits/dim of 8-bit digits (RealNVP, the DDPM's ELBO with
    # elbo_strata + 1 network calls per digit, the DDPM's probability-flow ODE with ode_steps Heun steps
    # and one Hutchinson probe, and flow matching's ODE likewise, on the first n_ode of them)
    "n_nats": Size(32, 1_000, cpu=300),
    "iwae_k": Size(20, 1_000),
    "n_bpd": Size(16, 1_000, cpu=200),
    "elbo_strata": Size(5, 50),
    "n_ode": Size(2, 16, cpu=8),  # at least two: a mean ± standard error over digits
    # Heun steps of both ODE likelihoods (the DDPM's, flow matching's); Heun converges from below: 40 steps
    # are about 0.3 bits/dim low for the DDPM, the fast profile's 8 far more (a smoke test)
    "ode_steps": Size(8, 100),
}

BUDGETS: dict[str, dict[str, Size]] = {
    "00_getting_started": LAB_00_GETTING_STARTED,
    "01_probability": LAB_01_PROBABILITY,
    "02_information_theory": LAB_02_INFORMATION_THEORY,
    "03_variational_inference": LAB_03_VARIATIONAL_INFERENCE,
    "04_markov_chains": LAB_04_MARKOV_CHAINS,
    "05_vae": LAB_05_VAE,
    "06_gan": LAB_06_GAN,
    "07_wgan": LAB_07_WGAN,
    "08_diffusion": LAB_08_DIFFUSION,
    "09_guidance": LAB_09_GUIDANCE,
    "10_autoregressive": LAB_10_AUTOREGRESSIVE,
    "11_flows": LAB_11_FLOWS,
    "12_score_sde": LAB_12_SCORE_SDE,
    "13_flow_matching": LAB_13_FLOW_MATCHING,
    "14_evaluation": LAB_14_EVALUATION,
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


def budget(lab: str, profile_name: str | None = None, device: torch.device | str | None = None
           ) -> MappingProxyType:
    """The read-only budget of ``lab`` for the active profile (or ``profile_name``).

    In the full profile, ``device`` (the device the lab runs on) chooses between the values for a CUDA
    GPU (the default, also when ``device`` is None) and the ``cpu`` values of the rows that have them,
    for any other device: a CPU (or an Apple GPU) loads shipped checkpoints and draws fewer samples.

    >>> budget("00_getting_started")["steps"]  # doctest: +SKIP
    1500
    """
    if lab not in BUDGETS:
        known = ", ".join(sorted(BUDGETS))
        raise KeyError(f"No budget for lab {lab!r}. Known labs: {known}. Add one to config.BUDGETS.")
    name = profile() if profile_name is None else profile_name
    if name not in ("fast", "full"):
        raise ValueError(f"profile_name must be 'fast' or 'full', got {name!r}.")
    gpu = device is None or torch.device(device).type == "cuda"
    return MappingProxyType({key: size.value(name, gpu) for key, size in BUDGETS[lab].items()})


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
        text += f"\nbudget for {lab}: {dict(budget(lab, device=get_device()))}"
    return text
