"""A hostile probe of the public API of chapters 6-10: wrong shapes, dtypes, ranges, NaN/inf, empty
batches, zero or negative counts, out-of-range t, mismatched schedules and unknown names.

Each case is (name, call, expectation): either the exception type and a fragment of the message that
tells the student what to do, or, for a legitimate unusual input (numpy integers, float64 tensors), a
check of the correct result. The networks are tiny, so the whole table runs in a few seconds.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from course_lib import baselines as B
from course_lib import classifier as C
from course_lib import diffusion as D
from course_lib import gan, pretrained, toy, zoo
from course_lib import guidance as G
from course_lib import latent as L
from course_lib import metrics as M
from course_lib import unet as U
from course_lib import wgan as W

torch.manual_seed(0)
SCHED = D.linear_schedule(10)
TINY = U.UNetConfig(in_shape=(1, 8, 8), base_channels=8, channel_mults=(1,), attention_resolutions=(),
                    num_groups=4)
UN = U.UNet(TINY).eval()  # unconditional
CUN = U.UNet(replace(TINY, num_classes=3)).eval()  # labels 0, 1, 2 and the null label 3
MLP = U.MLPDenoiser(U.MLPDenoiserConfig(hidden=8, depth=1, time_dim=4)).eval()
X8 = torch.randn(2, 1, 8, 8)
IMG = torch.rand(3, 1, 28, 28)  # grey levels in [0, 1]
LAB = torch.tensor([0, 1, 2])
CLF = C.DigitClassifier(C.ClassifierConfig(channels=(2, 4), feature_dim=4)).eval()
NC = G.NoisyClassifier(G.NoisyClassifierConfig(in_shape=(1, 8, 8), channels=(4,), strides=(1,), time_dim=4,
                                               num_groups=2, num_classes=3)).eval()
GEN = gan.MLPGenerator(gan.MLPGeneratorConfig(latent_dim=2, hidden_dims=(8,)))
CGEN = gan.MLPGenerator(gan.MLPGeneratorConfig(latent_dim=2, hidden_dims=(8,), n_classes=3))
DIS = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,)))
CDIS = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,), n_classes=3))
AE = L.LatentAutoencoder(L.LatentAutoencoderConfig(in_shape=(1, 8, 8), channels=(4, 4), latent_channels=2))
LDEN = U.UNet(L.latent_unet_config(AE.latent_shape, num_classes=3, base_channels=8, num_res_blocks=1)).eval()
FEATS = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))


def raises(exc: type[Exception], fragment: str):
    return ("raises", exc, fragment)


def ok(check=lambda result: True):
    return ("ok", check)


def trained_on(model, sched):
    """A copy of ``model`` that records it was trained with ``sched`` (as pretrained.load does)."""
    m = copy.deepcopy(model)
    m.trained_schedule = sched
    return m


def nan_model(x, t):
    return torch.full_like(x, float("nan"))


def nan_weights(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        next(m.parameters()).fill_(math.nan)
    return m


def opt(model):
    return torch.optim.SGD(model.parameters(), lr=1e-3)


def diffusion_step(model, **kwargs):
    return D.make_diffusion_step(model, opt(model), SCHED, lambda i: (X8, torch.tensor([0, 2])), **kwargs)


def recorded_schedule():
    model = copy.deepcopy(CUN)
    diffusion_step(model, p_uncond=0.0)
    return model.trained_schedule


def one_step(make):
    return make()(0)


def sample_check(shape, dtype=torch.float32):
    return lambda x: tuple(x.shape) == shape and x.dtype == dtype and bool(torch.isfinite(x).all())


def psd_violating():
    cov = np.eye(3)
    cov[0, 0] = -1.0
    return cov


def gan_step(G_, D_, batch, k=1):
    return gan.make_gan_step(G_, D_, opt(G_), opt(D_), batch, k=k)


def wgan_step(batch):
    critic = gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(hidden_dims=(8,)))
    return W.make_wgan_step(GEN, critic, opt(GEN), opt(critic), batch, W.WGANConfig(n_critic=1))


CASES = [
    # --- diffusion: schedules --------------------------------------------------------------------
    ("schedule T=0", lambda: D.linear_schedule(0), raises(ValueError, "positive integer")),
    ("schedule T<0", lambda: D.linear_schedule(-5), raises(ValueError, "positive integer")),
    ("schedule T float", lambda: D.linear_schedule(10.0), raises(ValueError, "use int(10.0)")),
    ("schedule T numpy", lambda: D.linear_schedule(np.int64(10)), ok(lambda s: s.T == 10)),
    ("cosine T numpy", lambda: D.cosine_schedule(np.int32(10)), ok(lambda s: s.T == 10)),
    ("schedule beta >= 1", lambda: D.linear_schedule(10, beta_end=1.5),
     raises(ValueError, "strictly in (0, 1)")),
    ("schedule beta NaN", lambda: D.linear_schedule(10, beta_start=math.nan), raises(ValueError, "finite")),
    ("cosine s < 0", lambda: D.cosine_schedule(10, s=-1.0), raises(ValueError, "s >= 0")),
    ("from_betas empty", lambda: D.Schedule.from_betas([]), raises(ValueError, "1-D sequence")),
    ("from_betas 2-D", lambda: D.Schedule.from_betas([[0.1]]), raises(ValueError, "1-D sequence")),
    ("spec unknown kind", lambda: D.schedule_from_spec({"kind": "quadratic", "T": 10}),
     raises(ValueError, "kind 'linear' or 'cosine'")),
    ("spec unknown key", lambda: D.schedule_from_spec({"kind": "linear", "T": 10, "tau": 1}),
     raises(ValueError, "unknown keys")),
    ("spec round trip", lambda: D.schedule_from_spec(SCHED.spec),
     ok(lambda s: torch.equal(s.betas, SCHED.betas))),
    # --- diffusion: the forward process ------------------------------------------------------------
    ("q_sample uint8 images", lambda: D.q_sample(SCHED, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 0),
     raises(TypeError, "2 * images / 255 - 1")),
    ("q_sample t = T", lambda: D.q_sample(SCHED, X8, 10),
     raises(ValueError, "t must lie in [0, T-1] = [0, 9]")),
    ("q_sample t < 0", lambda: D.q_sample(SCHED, X8, -1), raises(ValueError, "t must lie in [0, T-1]")),
    ("q_sample float t", lambda: D.q_sample(SCHED, X8, 0.5), raises(TypeError, "integer time indices")),
    ("q_sample bool t", lambda: D.q_sample(SCHED, X8, torch.tensor([True, False])),
     raises(TypeError, "integer time indices")),
    ("q_sample t of another batch", lambda: D.q_sample(SCHED, X8, torch.tensor([0, 1, 2])),
     raises(ValueError, "shape (B,) = (2,)")),
    ("q_sample numpy t", lambda: D.q_sample(SCHED, X8, np.int64(3)), ok(lambda x: x.shape == X8.shape)),
    ("q_sample T instead of sched", lambda: D.q_sample(1000, X8, 0),
     raises(TypeError, "linear_schedule(1000)")),
    ("q_sample list x0", lambda: D.q_sample(SCHED, [[0.0]], 0), raises(TypeError, "torch.Tensor")),
    ("q_sample eps shape", lambda: D.q_sample(SCHED, X8, 0, eps=torch.zeros(2, 8)),
     raises(ValueError, "eps must")),
    ("q_posterior shapes", lambda: D.q_posterior(SCHED, X8, X8[:1], 1), raises(ValueError, "same shape")),
    ("predict_x0 t = T", lambda: D.predict_x0(SCHED, X8, 10, X8), raises(ValueError, "[0, 9]")),
    ("loss_weight t = 0", lambda: D.loss_weight(SCHED, 0), raises(ValueError, "[1, T-1]")),
    ("loss_weight float t", lambda: D.loss_weight(SCHED, torch.tensor([1.5])), raises(TypeError, "integer")),
    ("reverse_variance kind", lambda: D.reverse_variance(SCHED, "fixed"), raises(ValueError, "'beta_tilde'")),
    ("diffusion_loss empty", lambda: D.diffusion_loss(UN, SCHED, X8[:0]), raises(ValueError, "B >= 1")),
    ("diffusion_loss uint8", lambda: D.diffusion_loss(UN, SCHED, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
     raises(TypeError, "floating-point")),
    ("diffusion_loss float64", lambda: D.diffusion_loss(UN, SCHED, X8.double()),
     ok(lambda v: bool(torch.isfinite(v)))),
    # --- diffusion: steps and samplers ----------------------------------------------------------
    ("ddpm_step eps shape", lambda: D.ddpm_step(SCHED, X8[:1], X8, 3), raises(ValueError, "eps must have")),
    ("ddpm_step numpy t", lambda: D.ddpm_step(SCHED, X8, X8, np.int64(3)), ok(lambda x: x.shape == X8.shape)),
    ("ddpm_step float t", lambda: D.ddpm_step(SCHED, X8, X8, 2.5), raises(TypeError, "non-negative integer")),
    ("ddim_step eta < 0", lambda: D.ddim_step(SCHED, X8, X8, 5, 2, eta=-1.0), raises(ValueError, "eta")),
    ("ddim_step eta NaN", lambda: D.ddim_step(SCHED, X8, X8, 5, 2, eta=math.nan),
     raises(ValueError, "finite")),
    ("ddim_step t_prev >= t", lambda: D.ddim_step(SCHED, X8, X8, 5, 5), raises(ValueError, "t_prev")),
    ("ddim_step clip < 0", lambda: D.ddim_step(SCHED, X8, X8, 5, 2, clip_x0=-1.0),
     raises(ValueError, "clip_x0")),
    ("ddim_timesteps 0", lambda: D.ddim_timesteps(10, 0), raises(ValueError, "[1, T] = [1, 10]")),
    ("ddim_timesteps > T", lambda: D.ddim_timesteps(10, 11), raises(ValueError, "[1, T] = [1, 10]")),
    ("ddim_timesteps float", lambda: D.ddim_timesteps(10, 2.5), raises(ValueError, "[1, T] = [1, 10]")),
    ("ddim_timesteps numpy", lambda: D.ddim_timesteps(np.int64(10), np.int64(5)),
     ok(lambda ts: len(ts) == 5)),
    ("ddim_sample numpy steps", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=np.int64(3)),
     ok(sample_check((2, 1, 8, 8)))),
    ("ddim_sample tensor steps", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=torch.tensor(3)),
     ok(sample_check((2, 1, 8, 8)))),
    ("ddim_sample repeated times", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=[5, 5, 2]),
     raises(ValueError, "strictly decreasing")),
    ("ddim_sample time >= T", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=[12, 3]),
     raises(ValueError, "[0, 9]")),
    ("ddim_sample negative time", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=[3, -1]),
     raises(ValueError, "strictly decreasing list of integer times")),
    ("ddim_sample numpy times", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=np.array([9, 4, 0])),
     ok(sample_check((2, 1, 8, 8)))),
    ("sampler n = 0", lambda: D.ddim_sample(MLP, SCHED, (0, 2), steps=2),
     raises(ValueError, "positive integers")),
    ("sample numpy shape", lambda: D.ddim_sample(MLP, SCHED, (np.int64(3), 2), steps=2),
     ok(sample_check((3, 2)))),
    ("sample float shape", lambda: D.ddim_sample(MLP, SCHED, (3.0, 2), steps=2),
     raises(ValueError, "(16, 1, 28")),
    ("sample shape not a tuple", lambda: D.ddim_sample(MLP, SCHED, 5, steps=2), raises(ValueError, "tuple")),
    ("sample x_T shape", lambda: D.ddpm_sample(MLP, SCHED, (3, 2), x_T=torch.zeros(2, 2)),
     raises(ValueError, "x_T must have shape")),
    ("sample x_T NaN", lambda: D.ddpm_sample(MLP, SCHED, (1, 2), x_T=torch.tensor([[math.nan, 0.0]])),
     raises(ValueError, "NaN")),
    ("sample integer dtype", lambda: D.ddpm_sample(MLP, SCHED, (3, 2), dtype=torch.int64),
     raises(TypeError, "torch.float32")),
    ("sample variance kind", lambda: D.ddpm_sample(MLP, SCHED, (3, 2), variance="learned"),
     raises(ValueError, "'beta'")),
    ("sample not callable", lambda: D.ddim_sample("unet", SCHED, (3, 2), steps=2),
     raises(TypeError, "callable")),
    ("sample NaN model", lambda: D.ddim_sample(nan_model, SCHED, (3, 2), steps=2),
     raises(ValueError, "not finite")),
    ("sample float64", lambda: D.ddpm_sample(MLP, SCHED, (3, 2), dtype=torch.float64),
     ok(sample_check((3, 2), torch.float64))),
    ("unet float64 sampling", lambda: D.ddim_sample(UN, SCHED, (2, 1, 8, 8), steps=2, dtype=torch.float64),
     ok(sample_check((2, 1, 8, 8), torch.float64))),
    # --- diffusion: a model carries its schedule -------------------------------------------------
    ("shorter schedule", lambda: D.ddim_sample(trained_on(UN, D.linear_schedule(20)), SCHED, (2, 1, 8, 8), 2),
     raises(ValueError, "Use sched = linear_schedule(T=20)")),
    ("other kind", lambda: D.ddpm_sample(trained_on(MLP, D.cosine_schedule(10)), SCHED, (2, 2)),
     raises(ValueError, "cosine_schedule(T=10)")),
    ("schedule through EMA", lambda: D.ddim_sample(U.ema(trained_on(UN, D.linear_schedule(20))), SCHED,
                                                   (2, 1, 8, 8), 2), raises(ValueError, "trained with")),
    ("equal schedule", lambda: D.ddim_sample(trained_on(UN, D.linear_schedule(10)), SCHED, (2, 1, 8, 8), 2),
     ok(sample_check((2, 1, 8, 8)))),
    ("custom betas", lambda: D.ddim_sample(trained_on(UN, D.Schedule.from_betas([0.1] * 10)), SCHED,
                                           (2, 1, 8, 8), 2), raises(ValueError, "Schedule.from_betas")),
    ("guided eps carries it", lambda: D.ddim_sample(
        G.guided_eps(trained_on(CUN, D.linear_schedule(20)), torch.tensor([0, 1]), 2.0), SCHED, X8.shape, 2),
     raises(ValueError, "trained with")),
    ("training records it", recorded_schedule, ok(lambda s: s is SCHED)),
    ("fine-tune on another", lambda: diffusion_step(trained_on(CUN, D.linear_schedule(20)), p_uncond=0.1),
     raises(ValueError, "trained with")),
    ("shipped ddpm T = 100", lambda: D.ddim_sample(pretrained.build(pretrained.info("ddpm_mnist")),
                                                   D.linear_schedule(100), (1, 1, 28, 28), 2),
     raises(ValueError, "linear_schedule(T=1000)")),
    ("shipped cddpm T = 500", lambda: D.ddpm_sample(
        G.guided_eps(pretrained.build(pretrained.info("cddpm_mnist")), torch.tensor([1]), 2.0),
        D.linear_schedule(500), (1, 1, 28, 28)),
     raises(ValueError, "linear_schedule(T=1000)")),
    ("shipped ldm", lambda: pretrained.build(pretrained.info("ldm_mnist")).trained_schedule.T,
     ok(lambda T: T == 1000)),
    ("shipped noisy classifier", lambda: G.classifier_guided_eps(
        UN, pretrained.build(pretrained.info("noisy_classifier_mnist")), SCHED, torch.tensor([0]), 1.0),
     raises(ValueError, "trained with")),
    ("zoo uses the schedule", lambda: zoo._schedule(trained_on(UN, D.cosine_schedule(10))).spec["kind"],
     ok(lambda kind: kind == "cosine")),
    # --- diffusion: conditional training ----------------------------------------------------------
    ("cond without p_uncond", lambda: diffusion_step(CUN), raises(ValueError, "p_uncond=0.0")),
    ("uncond with p_uncond", lambda: diffusion_step(UN, p_uncond=0.1),
     raises(ValueError, "class-conditional")),
    ("p_uncond > 1", lambda: diffusion_step(copy.deepcopy(CUN), p_uncond=1.5),
     raises(ValueError, "probability")),
    ("p_uncond = 0 trains", lambda: one_step(lambda: diffusion_step(copy.deepcopy(CUN), p_uncond=0.0)),
     ok(lambda m: math.isfinite(m["loss"]))),
    ("p_uncond without labels", lambda: D.make_diffusion_step(copy.deepcopy(CUN), opt(CUN), SCHED,
                                                              lambda i: X8, p_uncond=0.1)(0),
     raises(ValueError, "(x_0, labels)")),
    ("label_dropout p < 0", lambda: D.label_dropout(LAB, -0.1, 3), raises(ValueError, "probability")),
    ("label_dropout float labels", lambda: D.label_dropout(torch.tensor([0.0, 1.0]), 0.1, 3),
     raises(ValueError, "integer tensor")),
    ("label_dropout label > K", lambda: D.label_dropout(torch.tensor([0, 7]), 0.1, 3),
     raises(ValueError, "[0, 3]")),
    ("label_dropout in guidance", lambda: G.label_dropout, ok(lambda f: f is D.label_dropout)),
    ("mixture eps shapes", lambda: D.gaussian_mixture_eps(SCHED, torch.zeros(2, 2), [1.0], [1.0]),
     raises(ValueError, "one row per component")),
    # --- unet -------------------------------------------------------------------------------------
    ("unet float64", lambda: UN(X8.double(), torch.tensor([1, 2])), ok(lambda e: e.dtype == torch.float64)),
    ("unet uint8", lambda: UN(X8.to(torch.uint8), torch.tensor([1, 2])), raises(TypeError, "divide uint8")),
    ("unet shape", lambda: UN(torch.zeros(2, 1, 28, 28), torch.tensor([1, 2])),
     raises(ValueError, "(B, 1, 8, 8)")),
    ("unet t shape", lambda: UN(X8, torch.tensor([1, 2, 3])), raises(ValueError, "t must be a scalar")),
    ("unet numpy t", lambda: UN(X8, np.int64(3)), ok(lambda e: e.shape == X8.shape)),
    ("cond unet float labels", lambda: CUN(X8, 1, torch.tensor([0.0, 1.0])),
     raises(ValueError, "integer tensor")),
    ("cond unet label > K", lambda: CUN(X8, 1, torch.tensor([0, 4])),
     raises(ValueError, "3 is the null label")),
    ("cond unet label count", lambda: CUN(X8, 1, torch.tensor([0])), raises(ValueError, "shape (2,)")),
    ("uncond unet with labels", lambda: UN(X8, 1, torch.tensor([0, 1])), raises(ValueError, "unconditional")),
    ("unet config classes 0", lambda: U.UNetConfig(num_classes=0), raises(ValueError, "num_classes")),
    ("mlp denoiser shape", lambda: MLP(torch.zeros(3, 3), 1), raises(ValueError, "(B, 2)")),
    ("mlp denoiser float64", lambda: MLP(torch.zeros(3, 2, dtype=torch.float64), 1),
     ok(lambda e: e.dtype == torch.float64)),
    ("mlp denoiser t shape", lambda: MLP(torch.zeros(3, 2), torch.tensor([1, 2])),
     raises(ValueError, "(3,)")),
    ("embedding odd dim", lambda: U.timestep_embedding(torch.arange(3), 3),
     raises(ValueError, "even integer")),
    ("embedding 2-D t", lambda: U.timestep_embedding(torch.zeros(3, 1), 4), raises(ValueError, "1-D tensor")),
    ("ema decay > 1", lambda: U.ema(MLP, 1.5), raises(ValueError, "(0, 1)")),
    ("ema decay NaN", lambda: U.ema(MLP, math.nan), raises(ValueError, "finite")),
    # --- guidance --------------------------------------------------------------------------------
    ("guided_eps uncond", lambda: G.guided_eps(UN, torch.tensor([0]), 2.0),
     raises(ValueError, "class-conditional")),
    ("guided_eps gamma < 0", lambda: G.guided_eps(CUN, torch.tensor([0]), -1.0), raises(ValueError, "gamma")),
    ("guided_eps gamma NaN", lambda: G.guided_eps(CUN, torch.tensor([0]), math.nan),
     raises(ValueError, "finite")),
    ("guided_eps gamma str", lambda: G.guided_eps(CUN, torch.tensor([0]), "2"), raises(ValueError, "number")),
    ("guided_eps numpy gamma", lambda: G.guided_eps(CUN, torch.tensor([0, 1]), np.float32(2.0))(X8, 1),
     ok(lambda e: e.shape == X8.shape)),
    ("guided_eps label > K", lambda: G.guided_eps(CUN, torch.tensor([5]), 2.0), raises(ValueError, "[0, 3]")),
    ("guided_eps no labels", lambda: G.guided_eps(CUN, torch.zeros(0, dtype=torch.long), 2.0),
     raises(ValueError, "at least one label")),
    ("guided_eps batch", lambda: G.guided_eps(CUN, torch.tensor([0]), 2.0)(X8, 1),
     raises(ValueError, "built for 1")),
    ("cfg_eps t shape", lambda: G.cfg_eps(CUN, X8, torch.tensor([1, 2, 3]), torch.tensor([0, 1]), 2.0, 3),
     raises(ValueError, "t must be a scalar")),
    ("noisy classifier float64", lambda: NC(X8.double(), torch.tensor([1, 2])),
     ok(lambda z: z.shape == (2, 3))),
    ("noisy classifier shape", lambda: NC(torch.zeros(2, 1, 28, 28), 1), raises(ValueError, "(B, 1, 8, 8)")),
    ("noisy classifier t shape", lambda: NC(X8, torch.tensor([1, 2, 3])), raises(ValueError, "t must be")),
    ("classifier_grad label", lambda: G.classifier_grad(NC, X8, torch.tensor([1, 2]), torch.tensor([0, 3])),
     raises(ValueError, "3 classes")),
    ("classifier guidance scale", lambda: G.classifier_guided_eps(UN, NC, SCHED, torch.tensor([0]), -1.0),
     raises(ValueError, "scale")),
    ("classifier guidance labels", lambda: G.classifier_guided_sample(UN, NC, SCHED, (2, 1, 8, 8),
                                                                      torch.tensor([0]), 1.0),
     raises(ValueError, "one label per sample")),
    ("classifier guidance schedule", lambda: G.classifier_guided_sample(
        UN, trained_on(NC, D.linear_schedule(20)), SCHED, (2, 1, 8, 8), torch.tensor([0, 1]), 1.0),
     raises(ValueError, "trained with")),
    ("classifier step without labels", lambda: G.make_classifier_step(copy.deepcopy(NC), opt(NC), SCHED,
                                                                      lambda i: (X8,))(0),
     raises(ValueError, "(x_0, labels)")),
    # --- the evaluation classifier --------------------------------------------------------------------
    ("accuracy on [0, 255]", lambda: C.accuracy(CLF, IMG * 255, LAB), raises(ValueError, "divide by 255")),
    ("accuracy on uint8", lambda: C.accuracy(CLF, (IMG * 255).to(torch.uint8), LAB),
     raises(TypeError, "uint8")),
    ("accuracy on [-1, 1]", lambda: C.accuracy(CLF, 2 * IMG - 1, LAB), raises(ValueError, "(x + 1) / 2")),
    ("accuracy labels (N, 1)", lambda: C.accuracy(CLF, IMG, LAB[:, None]), raises(ValueError, "shape (3,)")),
    ("accuracy label count", lambda: C.accuracy(CLF, IMG, LAB[:2]), raises(ValueError, "shape (3,)")),
    ("accuracy label range", lambda: C.accuracy(CLF, IMG, torch.tensor([0, 1, 10])),
     raises(ValueError, "10 classes")),
    ("accuracy empty", lambda: C.accuracy(CLF, IMG[:0], LAB[:0]), raises(ValueError, "empty batch")),
    ("accuracy batch_size 0", lambda: C.accuracy(CLF, IMG, LAB, batch_size=0),
     raises(ValueError, "batch_size")),
    ("accuracy numpy batch_size", lambda: C.accuracy(CLF, IMG, LAB, batch_size=np.int64(2)),
     ok(lambda a: 0 <= a <= 1)),
    ("accuracy float64", lambda: C.accuracy(CLF, IMG.double(), LAB), ok(lambda a: 0 <= a <= 1)),
    ("accuracy NaN", lambda: C.accuracy(CLF, IMG * math.nan, LAB), raises(ValueError, "NaN")),
    ("digit classifier uint8", lambda: CLF(IMG.to(torch.uint8)), raises(TypeError, "floating-point")),
    ("digit classifier shape", lambda: CLF(torch.zeros(2, 1, 8, 8)), raises(ValueError, "(B, 1, 28, 28)")),
    ("random_affine 3-D", lambda: C.random_affine(IMG[0]), raises(ValueError, "(B, C, H, W)")),
    ("classifier step tensor batch", lambda: C.make_classifier_step(CLF, opt(CLF), lambda i: IMG)(0),
     raises(ValueError, "(images, labels)")),
    # --- gan ----------------------------------------------------------------------------------------
    ("to_tanh_range uint8", lambda: gan.to_tanh_range(torch.tensor([0, 255], dtype=torch.uint8)),
     raises(TypeError, "divide uint8")),
    ("to_tanh_range [0, 255]", lambda: gan.to_tanh_range(torch.tensor([0.0, 255.0])),
     raises(ValueError, "divide by 255")),
    ("to_tanh_range twice", lambda: gan.to_tanh_range(gan.to_tanh_range(torch.tensor([0.0, 1.0]))),
     raises(ValueError, "[0, 1]")),
    ("to_tanh_range values", lambda: gan.to_tanh_range(torch.tensor([0.0, 0.5, 1.0])),
     ok(lambda x: torch.equal(x, torch.tensor([-1.0, 0.0, 1.0])))),
    ("from_tanh_range int", lambda: gan.from_tanh_range(torch.tensor([1])),
     raises(TypeError, "floating-point")),
    ("sample n = 0", lambda: GEN.sample(0), raises(ValueError, "positive integer")),
    ("sample n < 0", lambda: GEN.sample(-3), raises(ValueError, "positive integer")),
    ("sample n float", lambda: GEN.sample(2.0), raises(ValueError, "positive integer")),
    ("sample numpy n", lambda: GEN.sample(np.int64(3)), ok(lambda x: x.shape == (3, 2))),
    ("sample labels as list", lambda: CGEN.sample(3, y=[0, 1, 2]), ok(lambda x: x.shape == (3, 2))),
    ("generator float64 z", lambda: GEN(torch.zeros(2, 2, dtype=torch.float64)),
     ok(lambda x: x.shape == (2, 2))),
    ("generator int z", lambda: GEN(torch.zeros(2, 2, dtype=torch.long)),
     raises(TypeError, "floating-point")),
    ("generator z shape", lambda: GEN(torch.zeros(2, 3)), raises(ValueError, "latent_dim")),
    ("discriminator float64", lambda: DIS(torch.zeros(2, 2, dtype=torch.float64)),
     ok(lambda a: a.shape == (2,))),
    ("discriminator empty", lambda: DIS(torch.zeros(0, 2)), raises(ValueError, "B >= 1")),
    ("cond generator no labels", lambda: CGEN(torch.zeros(2, 2)), raises(ValueError, "pass integer labels")),
    ("cond generator float labels", lambda: CGEN(torch.zeros(2, 2), torch.tensor([0.0, 1.0])),
     raises(ValueError, "integer labels")),
    ("cond generator label range", lambda: CGEN(torch.zeros(2, 2), torch.tensor([0, 3])),
     raises(ValueError, "[0, 2]")),
    ("cond gan batch without labels", lambda: gan_step(CGEN, CDIS, lambda i: (torch.zeros(4, 2),))(0),
     raises(ValueError, "batch(i) must return (x, y)")),
    ("gan batch as a tensor", lambda: gan_step(GEN, DIS, lambda i: torch.randn(4, 2))(0),
     ok(lambda m: math.isfinite(m["loss_d"]))),
    ("gan batch of None", lambda: gan_step(GEN, DIS, lambda i: None)(0),
     raises(ValueError, "tensor x or a tuple")),
    ("gan k = 0", lambda: gan_step(GEN, DIS, lambda i: torch.randn(4, 2), k=0),
     raises(ValueError, "k (discrimin")),
    ("gan classes differ", lambda: gan_step(GEN, CDIS, lambda i: torch.randn(4, 2)),
     raises(ValueError, "agree")),
    ("discriminator_loss 2-D", lambda: gan.discriminator_loss(torch.zeros(2, 1), torch.zeros(2)),
     raises(ValueError, "shape (B,)")),
    ("generator_loss kind", lambda: gan.generator_loss(torch.zeros(2), "wasserstein"),
     raises(ValueError, "minimax")),
    ("gan_value negative", lambda: gan.gan_value(torch.tensor([0.5, -0.5]), torch.tensor([0.5, 0.5])),
     raises(ValueError, "non-negative")),
    ("mode_coverage std 0", lambda: gan.mode_coverage(torch.zeros(3, 2), toy.ring_centers(), 0.0),
     raises(ValueError, "std must be positive")),
    ("mode_coverage dims", lambda: gan.mode_coverage(torch.zeros(3, 3), toy.ring_centers(), 0.1),
     raises(ValueError, "same d")),
    ("mode_coverage NaN samples",
     lambda: gan.mode_coverage(torch.full((3, 2), math.nan), toy.ring_centers(), 0.1),
     ok(lambda r: r["modes"] == 0 and r["high_quality"] == 0.0)),
    ("mnist_models name", lambda: gan.mnist_models("stylegan"), raises(ValueError, "choose one of")),
    # --- wgan ---------------------------------------------------------------------------------------
    ("wasserstein_1d NaN", lambda: W.wasserstein_1d(torch.tensor([0.0, math.nan]), torch.zeros(2)),
     raises(ValueError, "NaN")),
    ("wasserstein_1d empty", lambda: W.wasserstein_1d(torch.zeros(0), torch.zeros(2)),
     raises(ValueError, "non-empty")),
    ("wasserstein_1d ints", lambda: W.wasserstein_1d([0, 1], [1, 2]), ok(lambda w: float(w) == 1.0)),
    ("empirical W1 NaN", lambda: W.empirical_wasserstein(torch.full((2, 2), math.nan), torch.zeros(2, 2)),
     raises(ValueError, "NaN")),
    ("empirical W1 sizes", lambda: W.empirical_wasserstein(torch.zeros(2, 2), torch.zeros(3, 2)),
     raises(ValueError, "earth_movers_distance")),
    ("emd masses", lambda: W.earth_movers_distance([1.0], [2.0], [[1.0]]),
     raises(ValueError, "same positive total")),
    ("interpolates ints", lambda: W.interpolates(torch.zeros(2, 2).long(), torch.ones(2, 2).long()),
     raises(TypeError, "floating-point")),
    ("gradient penalty weight",
     lambda: W.gradient_penalty(DIS, torch.zeros(2, 2), torch.zeros(2, 2), weight=-1.0),
     raises(ValueError, "lambda")),
    ("clip c = 0", lambda: W.clip_weights_(copy.deepcopy(DIS), 0.0), raises(ValueError, "0.01")),
    ("wgan lipschitz name", lambda: W.WGANConfig(lipschitz="lasso"), raises(ValueError, "choose one of")),
    ("wgan n_critic 0", lambda: W.WGANConfig(n_critic=0), raises(ValueError, "n_critic")),
    ("wgan gp with batchnorm", lambda: W.make_wgan_step(GEN, gan.MLPDiscriminator(gan.MLPDiscriminatorConfig(
        hidden_dims=(8,), norm="batch")), opt(GEN), opt(DIS), lambda i: torch.zeros(4, 2)),
     raises(ValueError, "without BatchNorm")),
    ("wgan batch as a tensor", lambda: wgan_step(lambda i: torch.randn(4, 2))(0),
     ok(lambda m: math.isfinite(m["w1"]))),
    ("wgan batch of None", lambda: wgan_step(lambda i: None)(0), raises(ValueError, "tensor x or a tuple")),
    ("parallel lines NaN", lambda: W.parallel_lines([0.0, math.nan]), raises(ValueError, "finite")),
    ("blurred theta NaN", lambda: W.blurred_parallel_lines(math.nan, 1.0), raises(ValueError, "finite")),
    ("blurred lines sigma 0", lambda: W.blurred_parallel_lines(1.0, 0.0), raises(ValueError, "sigma = 0")),
    # --- toy data ---------------------------------------------------------------------------------
    ("toy name", lambda: toy.toy_data("spiral", 10), raises(ValueError, "Available")),
    ("toy name not str", lambda: toy.toy_data(3, 10), raises(ValueError, "Available")),
    ("toy n = 0", lambda: toy.ring_mixture(0), raises(ValueError, "positive integer")),
    ("toy n float", lambda: toy.two_moons(2.5), raises(ValueError, "positive integer")),
    ("toy numpy n", lambda: toy.toy_data("moons", np.int64(5)), ok(lambda x: x.shape == (5, 2))),
    ("toy noise < 0", lambda: toy.swiss_roll(5, noise=-1.0), raises(ValueError, "non-negative")),
    ("toy noise NaN", lambda: toy.two_moons(5, noise=math.nan), raises(ValueError, "finite")),
    ("toy side 0", lambda: toy.grid_mixture(5, side=0),
     raises(ValueError, "side must be a positive integer")),
    ("toy numpy modes", lambda: toy.ring_mixture(5, n_modes=np.int64(4)), ok(lambda x: x.shape == (5, 2))),
    # --- latent diffusion --------------------------------------------------------------------------
    ("latent n = 0", lambda: L.latent_sample(LDEN, AE, SCHED, 0), raises(ValueError, "positive integer")),
    ("latent numpy n", lambda: L.latent_sample(LDEN, AE, SCHED, np.int64(2), steps=2, y=torch.tensor([0, 1])),
     ok(lambda x: x.shape == (2, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1)),
    ("latent sampler name", lambda: L.latent_sample(LDEN, AE, SCHED, 2, sampler="euler"),
     raises(ValueError, "'ddim' or 'ddpm'")),
    ("latent gamma without y", lambda: L.latent_sample(LDEN, AE, SCHED, 2, gamma=2.0),
     raises(ValueError, "needs labels")),
    ("latent y length", lambda: L.latent_sample(LDEN, AE, SCHED, 2, y=torch.tensor([0])),
     raises(ValueError, "one label per sample")),
    ("latent ddpm steps", lambda: L.latent_sample(LDEN, AE, SCHED, 2, steps=5, sampler="ddpm"),
     raises(ValueError, "all T = 10 steps")),
    ("latent shape mismatch", lambda: L.latent_sample(UN, AE, SCHED, 2),
     raises(ValueError, "latent_unet_config")),
    ("latent wrong schedule", lambda: L.latent_sample(trained_on(LDEN, D.linear_schedule(20)), AE, SCHED, 2,
                                                      steps=2, y=torch.tensor([0, 1])),
     raises(ValueError, "trained with")),
    ("encode uint8", lambda: AE.encode(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
     raises(TypeError, "divide uint8")),
    ("encode shape", lambda: AE.encode(torch.zeros(2, 1, 28, 28)), raises(ValueError, "(B, 1, 8, 8)")),
    ("encode float64", lambda: AE.encode(torch.rand(2, 1, 8, 8, dtype=torch.float64)),
     ok(lambda z: z.shape == (2, 2, 2, 2))),
    ("decode shape", lambda: AE.decode(torch.zeros(2, 3, 2, 2)),
     raises(ValueError, "latents must have shape")),
    ("latent scale on [0, 255]", lambda: copy.deepcopy(AE).fit_latent_scale(torch.rand(4, 1, 8, 8) * 255),
     raises(ValueError, "divide by 255")),
    ("latent scale NaN weights", lambda: nan_weights(AE).fit_latent_scale(torch.rand(4, 1, 8, 8)),
     raises(ValueError, "NaN")),
    ("latent scale empty", lambda: copy.deepcopy(AE).fit_latent_scale(torch.zeros(0, 1, 8, 8)),
     raises(ValueError, "empty batch")),
    ("latent ae penalty", lambda: L.make_latent_ae_step(AE, opt(AE), lambda i: None, penalty=-1.0),
     raises(ValueError, "penalty")),
    ("latent ae on [-1, 1]", lambda: L.make_latent_ae_step(copy.deepcopy(AE), opt(AE),
                                                           lambda i: (2 * torch.rand(4, 1, 8, 8) - 1,))(0),
     raises(ValueError, "(x + 1) / 2")),
    # --- metrics ----------------------------------------------------------------------------------
    ("check_images uint8", lambda: M.check_images(IMG.to(torch.uint8)),
     raises(TypeError, "divide uint8 by 255")),
    ("check_images [0, 255]", lambda: M.check_images(IMG * 255), raises(ValueError, "[0, 1]")),
    ("check_images NaN", lambda: M.check_images(IMG * math.nan), raises(ValueError, "NaN")),
    ("check_images shape", lambda: M.check_images(torch.zeros(3, 28, 28)),
     raises(ValueError, "(N, 1, 28, 28)")),
    ("check_images list", lambda: M.check_images([[0.0]]), raises(TypeError, "torch.Tensor")),
    ("features batch_size 0", lambda: M.features(IMG, CLF, batch_size=0), raises(ValueError, "batch_size")),
    ("features numpy batch_size", lambda: M.features(IMG, CLF, batch_size=np.int64(2)),
     ok(lambda f: f.shape == (3, 4))),
    ("statistics N <= D", lambda: M.statistics(torch.zeros(3, 4)), raises(ValueError, "N > 4")),
    ("statistics NaN", lambda: M.statistics(FEATS * math.nan), raises(ValueError, "NaN")),
    ("statistics 1-D", lambda: M.statistics(torch.zeros(5)), raises(ValueError, "matrix (N, D)")),
    ("frechet non-PSD", lambda: M.frechet_distance(np.zeros(3), psd_violating(), np.zeros(3), np.eye(3)),
     raises(ValueError, "positive semi-definite")),
    ("frechet asymmetric",
     lambda: M.frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)),
     raises(ValueError, "not symmetric")),
    ("frechet NaN", lambda: M.frechet_distance(np.array([math.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2)),
     raises(ValueError, "NaN")),
    ("frechet shapes", lambda: M.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)),
     raises(ValueError, "of one D")),
    ("frechet of itself", lambda: M.frechet_distance(np.ones(3), np.eye(3), np.ones(3), np.eye(3)),
     ok(lambda d: abs(d) < 1e-9)),
    ("frechet singular PSD", lambda: M.frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2),
                                                        np.diag([1.0, 0.0])), ok(lambda d: abs(d) < 1e-9)),
    ("fid_infinity one N", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), (20,)),
     raises(ValueError, "two different")),
    ("fid_infinity same N twice", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), (20, 20)),
     raises(ValueError, "two different")),
    ("fid_infinity repeats 0", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), (10, 20), repeats=0),
     raises(ValueError, "repeats")),
    ("fid_infinity N = 0", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), (0, 20)),
     raises(ValueError, "every N")),
    ("fid_infinity N too big", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), (10, 80)),
     raises(ValueError, "80")),
    ("fid_infinity images", lambda: M.fid_infinity(IMG, M.statistics(FEATS), (10, 20)),
     raises(ValueError, "2 dimensions")),
    ("fid_infinity numpy", lambda: M.fid_infinity(FEATS, M.statistics(FEATS), np.array([10, 20, 40]),
                                                  repeats=np.int64(2), generator=torch.Generator()),
     ok(lambda r: math.isfinite(r[0]) and len(r[2]) == 3)),
    ("memorisation held-out = train", lambda: M.memorisation_ratio(FEATS[:5], FEATS, FEATS[:10]),
     raises(ValueError, "not in train")),
    ("memorisation fine", lambda: M.memorisation_ratio(FEATS[:10], FEATS[10:], FEATS[:10] + 0.1),
     ok(lambda r: math.isfinite(r) and r > 0)),
    ("memorisation empty", lambda: M.memorisation_ratio(FEATS[:0], FEATS, FEATS[:3]),
     raises(ValueError, "empty batch")),
    ("nn distances NaN", lambda: M.nearest_neighbour_distances(FEATS * math.nan, FEATS),
     raises(ValueError, "NaN")),
    ("inception splits 0", lambda: M.inception_score_from_probs(torch.full((4, 2), 0.5), splits=0),
     raises(ValueError, "splits")),
    ("inception numpy splits",
     lambda: M.inception_score_from_probs(torch.full((4, 2), 0.5), splits=np.int64(2)),
     ok(lambda r: abs(r[0] - 1) < 1e-9)),
    ("inception rows", lambda: M.inception_score_from_probs(torch.ones(4, 2)),
     raises(ValueError, "rows sum to 1")),
    ("precision k = 0", lambda: M.precision_recall(FEATS, FEATS, k=0), raises(ValueError, "k must be")),
    ("precision numpy k", lambda: M.precision_recall(FEATS, FEATS, k=np.int64(3)),
     ok(lambda pr: pr == (1.0, 1.0))),
    ("precision NaN", lambda: M.precision_recall(FEATS * math.nan, FEATS), raises(ValueError, "NaN")),
    ("precision sets differ", lambda: M.precision_recall(FEATS, FEATS[:, :2]),
     raises(ValueError, "shapes per item")),
    ("speed n = 0", lambda: M.sampling_speed(lambda m: torch.zeros(m), 0, "cpu"),
     raises(ValueError, "positive")),
    ("speed numpy n", lambda: M.sampling_speed(lambda m: torch.zeros(m), np.int64(4), "cpu"),
     ok(lambda v: v > 0)),
    ("speed wrong count", lambda: M.sampling_speed(lambda m: torch.zeros(3), 4, "cpu"),
     raises(ValueError, "expected 4")),
    ("speed not callable", lambda: M.sampling_speed(None, 4, "cpu"), raises(TypeError, "function")),
    ("speed no warm-up", lambda: M.sampling_speed(lambda m: torch.zeros(m), 4, "cpu", warmup=0),
     ok(lambda v: v > 0)),
    # --- baselines --------------------------------------------------------------------------------
    ("pixel model numpy sizes", lambda: B.PixelBernoulli(np.int64(4), np.int64(2)).logits.shape,
     ok(lambda shape: shape == (2, 4))),
    ("pixel model size 0", lambda: B.PixelBernoulli(0), raises(ValueError, "positive integers")),
    ("pixel log_prob [0, 255]",
     lambda: B.PixelBernoulli(4, 2).log_prob(torch.full((2, 4), 255.0), LAB[:2]),
     raises(ValueError, "divide by 255")),
    ("pixel log_prob uint8", lambda: B.PixelBernoulli(4, 2).log_prob(torch.zeros(2, 4).byte(), LAB[:2]),
     raises(TypeError, "uint8")),
    ("pixel float labels",
     lambda: B.PixelBernoulli(4, 2).log_prob(torch.zeros(2, 4), torch.tensor([0.0, 1.0])),
     raises(ValueError, "integer labels")),
    ("pixel mle float labels", lambda: B.pixel_bernoulli_mle(torch.zeros(2, 4), torch.tensor([0.0, 1.0]), 2),
     raises(ValueError, "integer labels")),
    ("pixel sample label list", lambda: B.PixelBernoulli(4, 2).sample([0, 1]),
     ok(lambda x: x.shape == (2, 4))),
    ("zoo batches n = 0", lambda: zoo.sample_in_batches(lambda m, k, g: torch.zeros(k, 2), None, 0, None),
     raises(ValueError, "n must be a positive integer")),
    ("zoo batch_size 0", lambda: zoo.sample_in_batches(lambda m, k, g: torch.zeros(k, 2), None, 3, None, 0),
     raises(ValueError, "batch_size")),
    ("zoo numpy n",
     lambda: zoo.sample_in_batches(lambda m, k, g: torch.zeros(k, 2), None, np.int64(5), None, 2),
     ok(lambda x: x.shape == (5, 2))),
    ("latent unet config 2-D", lambda: L.latent_unet_config((4, 7)), raises(ValueError, "(C, H, W)")),
    ("critic gradient ints", lambda: W.critic_gradient_norms(DIS, torch.zeros(2, 2).long()),
     raises(TypeError, "floating-point")),
    # --- pretrained -------------------------------------------------------------------------------
    ("unknown checkpoint", lambda: pretrained.info("ddpm_cifar"),
     raises(pretrained.CheckpointError, "Available")),
    ("unshipped class", lambda: pretrained.build({"class": "os.system", "config": {}}),
     raises(pretrained.CheckpointError, "course_lib only")),
]


@pytest.mark.parametrize("name, call, expect", CASES, ids=[c[0] for c in CASES])
def test_probe(name, call, expect):
    if expect[0] == "raises":
        with pytest.raises(expect[1], match=re.escape(expect[2])):
            call()
    else:
        assert expect[1](call())


def test_the_probe_is_broad():
    assert len(CASES) >= 150
    assert len({c[0] for c in CASES}) == len(CASES)  # every case has its own name


def test_a_flipped_byte_in_the_cached_reference_features_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    M._REFERENCES.clear()
    feats, _ = M.reference_features("mnist", "test", limit=300, download=False)
    (file,) = (tmp_path / "metrics").glob("*.pt")
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 2] ^= 1
    file.write_bytes(bytes(raw))
    M._REFERENCES.clear()
    with pytest.warns(UserWarning, match="SHA-256"):
        again, _ = M.reference_features("mnist", "test", limit=300, download=False)
    assert torch.equal(feats, again)  # recomputed, not read from the corrupt file
    M._REFERENCES.clear()
