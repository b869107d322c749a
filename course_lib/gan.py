"""Generative adversarial networks (chapter 6): losses on logits, the optimal discriminator,
networks for 2-D points and 28x28 images, a training step for ``train.fit``, mode coverage.

Conventions. A discriminator returns a *logit* a (shape ``(B,)``), and D(x) = sigmoid(a) is the
probability it gives to "x is real"; every loss is computed from logits with ``softplus`` (never
``log(sigmoid(a))``, which underflows). Image generators end in tanh, so images live in [-1, 1]:
``to_tanh_range`` / ``from_tanh_range`` convert from and to the [0, 1] grey levels of
``course_lib.data``. Setting ``n_classes > 0`` in any config makes the network conditional: a
learned label embedding is joined to z (generators) or to the input (discriminators), and
``forward`` then needs the labels ``y``.

    G = DCGANGenerator(DCGANGeneratorConfig())
    D = DCGANDiscriminator(DCGANDiscriminatorConfig(norm="batch"))  # or "none", "layer", "spectral"
    step = make_gan_step(G, D, opt_g, opt_d, batch, k=1, generator=g)
    history = train.fit(step, n_steps, state={"G": G, "D": D, "opt_g": opt_g, "opt_d": opt_d, "gen": g})
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from . import _checks

Tensor = torch.Tensor
NORMS = ("none", "batch", "layer", "spectral")  # normalisation choices of the discriminators
LOSS_KINDS = ("non_saturating", "minimax")
__all__ = ["NORMS", "LOSS_KINDS", "MLPGeneratorConfig", "MLPDiscriminatorConfig", "DCGANGeneratorConfig",
           "DCGANDiscriminatorConfig", "MLPGenerator", "MLPDiscriminator", "DCGANGenerator",
           "DCGANDiscriminator", "MNIST_MODELS", "mnist_models", "to_tanh_range", "from_tanh_range",
           "discriminator_loss", "generator_loss", "optimal_discriminator", "gan_value", "make_gan_step",
           "mode_coverage"]


# --- configurations ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MLPGeneratorConfig:
    """z in R^latent_dim (plus a label embedding) -> hidden_dims (ReLU) -> a point or an image."""

    latent_dim: int = 2  # size of z ~ N(0, I)
    hidden_dims: tuple[int, ...] = (128, 128, 128)  # widths of the hidden layers
    out_shape: tuple[int, ...] = (2,)  # (2,) for the toys, (1, 28, 28) for MNIST
    out_activation: str = "none"  # "none" (points in R^d) or "tanh" (images in [-1, 1])
    norm: str = "none"  # "none" or "batch": BatchNorm after each hidden linear layer
    n_classes: int = 0  # > 0: conditional generator G(z, y)
    embed_dim: int = 16  # size of the label embedding joined to z (used when n_classes > 0)

    def __post_init__(self):
        _check_common(self, "latent_dim", self.out_shape)
        _check_choice("out_activation", self.out_activation, ("none", "tanh"))
        _check_choice("norm", self.norm, ("none", "batch"))


@dataclass(frozen=True)
class MLPDiscriminatorConfig:
    """A point or an image (plus a label embedding) -> hidden_dims (LeakyReLU 0.2) -> one logit."""

    in_shape: tuple[int, ...] = (2,)  # (2,) for the toys, (1, 28, 28) for MNIST
    hidden_dims: tuple[int, ...] = (128, 128, 128)  # widths of the hidden layers
    norm: str = "none"  # one of NORMS: "none", "batch", "layer" (LayerNorm), "spectral" (every layer)
    n_classes: int = 0  # > 0: conditional discriminator D(x, y)
    embed_dim: int = 16  # size of the label embedding joined to the flattened input

    def __post_init__(self):
        _check_common(self, None, self.in_shape)
        _check_choice("norm", self.norm, NORMS)


@dataclass(frozen=True)
class DCGANGeneratorConfig:
    """DCGAN generator: z as a 1x1 map -> ConvT to (H/4, W/4) -> two stride-2 ConvT -> tanh image."""

    latent_dim: int = 64  # size of z ~ N(0, I)
    channels: tuple[int, int] = (64, 32)  # feature maps at H/4 x W/4 and at H/2 x W/2
    out_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); H and W divisible by 4
    n_classes: int = 0  # > 0: conditional generator G(z, y)
    embed_dim: int = 16  # size of the label embedding joined to z (used when n_classes > 0)

    def __post_init__(self):
        _check_common(self, "latent_dim", self.out_shape)
        _check_conv(self.out_shape, self.channels)


@dataclass(frozen=True)
class DCGANDiscriminatorConfig:
    """DCGAN discriminator: two stride-2 convolutions (LeakyReLU 0.2), then one conv to a logit."""

    in_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W); H and W divisible by 4
    channels: tuple[int, int] = (32, 64)  # feature maps at H/2 x W/2 and at H/4 x W/4
    norm: str = "batch"  # one of NORMS; never on the input layer (DCGAN); "spectral" on every layer
    n_classes: int = 0  # > 0: conditional D(x, y); the label enters as one extra input channel

    def __post_init__(self):
        _check_common(self, None, self.in_shape)
        _check_conv(self.in_shape, self.channels)
        _check_choice("norm", self.norm, NORMS)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def _check_common(cfg, latent: str | None, shape: tuple[int, ...]) -> None:
    if latent is not None and (not isinstance(getattr(cfg, latent), int) or getattr(cfg, latent) <= 0):
        raise ValueError(f"{latent} must be a positive integer, got {getattr(cfg, latent)!r}: the noise "
                         "z needs at least one dimension.")
    if not shape or min(shape) <= 0:
        raise ValueError(f"the data shape must be a non-empty tuple of positive sizes, got {shape}.")
    if min(getattr(cfg, "hidden_dims", (1,)) or (1,)) <= 0:
        raise ValueError(f"hidden_dims must be positive, got {cfg.hidden_dims}.")
    if not isinstance(cfg.n_classes, int) or cfg.n_classes < 0 or getattr(cfg, "embed_dim", 1) <= 0:
        raise ValueError(f"n_classes must be an integer >= 0 (0: unconditional) and embed_dim positive, "
                         f"got {cfg.n_classes!r} and {getattr(cfg, 'embed_dim', 1)!r}.")


def _check_conv(shape: tuple[int, ...], channels: tuple[int, ...]) -> None:
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the image shape must be (C, H, W) with H and W divisible by 4, got {shape}.")
    if len(channels) != 2 or min(channels) <= 0:
        raise ValueError(f"channels must be two positive integers, got {channels}.")


# --- networks ----------------------------------------------------------------------------------

def _norm(kind: str, features: int, conv: bool) -> nn.Module:
    """The normalisation layer after a hidden layer: BatchNorm, LayerNorm (GroupNorm(1) on maps) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)
    return nn.Identity()  # "none", and "spectral", which acts on the weights instead


def _sn(layer: nn.Module, kind: str) -> nn.Module:
    """Wrap a layer in spectral normalisation W / sigma_max(W) when ``kind == "spectral"``."""
    return spectral_norm(layer) if kind == "spectral" else layer


class _Conditional(nn.Module):
    """Label checks shared by the four networks."""

    config: MLPGeneratorConfig | MLPDiscriminatorConfig | DCGANGeneratorConfig | DCGANDiscriminatorConfig

    def _labels(self, y: Tensor | None, batch: int) -> Tensor | None:
        k = self.config.n_classes
        if k == 0:
            if y is not None:
                raise ValueError("this network is unconditional (n_classes = 0); do not pass labels y.")
            return None
        y = None if y is None else torch.as_tensor(y)
        if y is None or y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32):
            got = "None" if y is None else f"{tuple(y.shape)} {y.dtype}"
            raise ValueError(f"this network is conditional (n_classes = {k}): pass integer labels y of "
                             f"shape ({batch},), got {got}.")
        if batch and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"labels must lie in [0, {k - 1}], got values "
                             f"{y.min().item()}..{y.max().item()}.")
        return y.long()


class _Generator(_Conditional):
    """x = G(z) (or G(z, y)): noise (B, latent_dim) -> samples (B, *out_shape)."""

    def _noise(self, z: Tensor) -> Tensor:
        z = _checks.network_input(z, self, "z")
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim or z.shape[0] == 0:
            raise ValueError(f"z must have shape (B, {self.config.latent_dim}) (latent_dim) with B >= 1, "
                             f"got {tuple(z.shape)}.")
        return z

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """G(z) for n draws z ~ N(0, I) (with labels ``y`` (n,) when conditional): (n, *out_shape)."""
        try:
            n = _checks.count(n, "n")
        except (TypeError, ValueError):
            raise ValueError(f"n must be a positive integer (the number of samples), got {n!r}.") from None
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator,
                        device=generator.device if generator is not None else device)
        return self(z.to(device), None if y is None else torch.as_tensor(y).to(device))


class _Discriminator(_Conditional):
    """a = D(x) (or D(x, y)): samples (B, *in_shape) -> logits (B,); D(x) = sigmoid(a)."""

    def _inputs(self, x: Tensor) -> Tensor:
        shape = tuple(self.config.in_shape)
        x = _checks.network_input(x, self, "x")
        if tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, shape))}) with B >= 1, "
                             f"got {tuple(x.shape)}.")
        return x


class MLPGenerator(_Generator):
    """An MLP generator: [z, embed(y)] -> (Linear, norm, ReLU) x len(hidden_dims) -> Linear -> out."""

    def __init__(self, config: MLPGeneratorConfig = MLPGeneratorConfig()):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_classes, config.embed_dim) if config.n_classes else None
        width = config.latent_dim + (config.embed_dim if config.n_classes else 0)
        layers: list[nn.Module] = []
        for h in config.hidden_dims:
            layers += [nn.Linear(width, h), _norm(config.norm, h, conv=False), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, math.prod(config.out_shape)))
        if config.out_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Samples (B, *out_shape) from noise z (B, latent_dim) [and labels y (B,)]."""
        z = self._noise(z)
        y = self._labels(y, z.shape[0])
        h = z if y is None else torch.cat([z, self.embed(y)], dim=1)
        return self.net(h).view(z.shape[0], *self.config.out_shape)


class MLPDiscriminator(_Discriminator):
    """An MLP discriminator: [x, embed(y)] -> (Linear, norm, LeakyReLU 0.2) x len(hidden_dims) -> logit."""

    def __init__(self, config: MLPDiscriminatorConfig = MLPDiscriminatorConfig()):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_classes, config.embed_dim) if config.n_classes else None
        width = math.prod(config.in_shape) + (config.embed_dim if config.n_classes else 0)
        layers: list[nn.Module] = []
        for h in config.hidden_dims:
            layers += [_sn(nn.Linear(width, h), config.norm), _norm(config.norm, h, conv=False),
                       nn.LeakyReLU(0.2)]
            width = h
        layers.append(_sn(nn.Linear(width, 1), config.norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits a (B,) of samples x (B, *in_shape) [with labels y (B,)]."""
        x = self._inputs(x).flatten(1)
        y = self._labels(y, x.shape[0])
        h = x if y is None else torch.cat([x, self.embed(y)], dim=1)
        return self.net(h).squeeze(1)


class DCGANGenerator(_Generator):
    """ConvT(k=H/4) to (c1, H/4, W/4), BN, ReLU; ConvT(4, 2, 1) to (c2, H/2, W/2), BN, ReLU;
    ConvT(4, 2, 1) to (C, H, W), tanh. No pooling, no hidden dense layer, no BN on the output."""

    def __init__(self, config: DCGANGeneratorConfig = DCGANGeneratorConfig()):
        super().__init__()
        self.config = config
        (c, h, w), (c1, c2) = config.out_shape, config.channels
        self.embed = nn.Embedding(config.n_classes, config.embed_dim) if config.n_classes else None
        width = config.latent_dim + (config.embed_dim if config.n_classes else 0)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(width, c1, (h // 4, w // 4), bias=False),  # (B, c1, H/4, W/4)
            nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1, bias=False),  # (B, c2, H/2, W/2)
            nn.BatchNorm2d(c2), nn.ReLU(),
            nn.ConvTranspose2d(c2, c, 4, stride=2, padding=1),  # (B, C, H, W)
            nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] from noise z (B, latent_dim) [and labels y (B,)]."""
        z = self._noise(z)
        y = self._labels(y, z.shape[0])
        h = z if y is None else torch.cat([z, self.embed(y)], dim=1)
        return self.net(h[:, :, None, None])  # z as a (B, latent_dim [+ embed_dim], 1, 1) map


class DCGANDiscriminator(_Discriminator):
    """Conv(4, 2, 1) to (c1, H/2, W/2), LeakyReLU; Conv(4, 2, 1) to (c2, H/4, W/4), norm, LeakyReLU;
    Conv(k=H/4) to one logit. With n_classes > 0 a learned (H, W) map per label is an extra channel."""

    def __init__(self, config: DCGANDiscriminatorConfig = DCGANDiscriminatorConfig()):
        super().__init__()
        self.config = config
        (c, h, w), (c1, c2), kind = config.in_shape, config.channels, config.norm
        self.embed = nn.Embedding(config.n_classes, h * w) if config.n_classes else None
        bias = kind != "batch"  # BatchNorm's shift replaces the bias
        self.net = nn.Sequential(
            _sn(nn.Conv2d(c + (1 if config.n_classes else 0), c1, 4, stride=2, padding=1), kind),
            nn.LeakyReLU(0.2),  # (B, c1, H/2, W/2); no normalisation on the input layer
            _sn(nn.Conv2d(c1, c2, 4, stride=2, padding=1, bias=bias), kind),
            _norm(kind, c2, conv=True), nn.LeakyReLU(0.2),  # (B, c2, H/4, W/4)
            _sn(nn.Conv2d(c2, 1, (h // 4, w // 4)), kind),  # (B, 1, 1, 1)
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits a (B,) of images x (B, C, H, W) in [-1, 1] [with labels y (B,)]."""
        x = self._inputs(x)
        y = self._labels(y, x.shape[0])
        if y is not None:
            x = torch.cat([x, self.embed(y).view(x.shape[0], 1, *x.shape[2:])], dim=1)
        return self.net(x).flatten()


# The MNIST models of the lab and of the shipped checkpoints (scripts/checkpoints/gan.py):
# {name: (generator class, its config, discriminator class, its config)}.
MNIST_MODELS = {
    "gan_mlp_mnist": (MLPGenerator, MLPGeneratorConfig(latent_dim=64, hidden_dims=(256, 512),
                                                       out_shape=(1, 28, 28), out_activation="tanh",
                                                       norm="batch"),
                      MLPDiscriminator, MLPDiscriminatorConfig(in_shape=(1, 28, 28), hidden_dims=(512, 256))),
    "dcgan_mnist": (DCGANGenerator, DCGANGeneratorConfig(), DCGANDiscriminator, DCGANDiscriminatorConfig()),
    "cdcgan_mnist": (DCGANGenerator, DCGANGeneratorConfig(n_classes=10),
                     DCGANDiscriminator, DCGANDiscriminatorConfig(n_classes=10)),
}


def mnist_models(name: str) -> tuple[_Generator, _Discriminator]:
    """Fresh (G, D) of one of the ``MNIST_MODELS`` ("gan_mlp_mnist", "dcgan_mnist", "cdcgan_mnist")."""
    if name not in MNIST_MODELS:
        raise ValueError(f"Unknown MNIST GAN {name!r}: choose one of {', '.join(MNIST_MODELS)}.")
    g_cls, g_cfg, d_cls, d_cfg = MNIST_MODELS[name]
    return g_cls(g_cfg), d_cls(d_cfg)


def to_tanh_range(x: Tensor) -> Tensor:
    """Grey levels in [0, 1] -> [-1, 1], the range of a tanh generator: 2x - 1.

    Refuses integer images (2x - 1 would wrap around in uint8) and values outside [0, 1].
    """
    _checks.floating(_checks.tensor(x, "x", nonempty=False), "x", " (divide uint8 grey levels by 255 first)")
    return 2 * _checks.unit_range(x, "x") - 1


def from_tanh_range(x: Tensor) -> Tensor:
    """Generator images in [-1, 1] -> grey levels in [0, 1]: (x + 1) / 2, clamped."""
    _checks.floating(_checks.tensor(x, "x", nonempty=False), "x")
    return ((x + 1) / 2).clamp(0, 1)


# --- losses on logits (Goodfellow et al. 2014) ---------------------------------------------------

def _logits(a: Tensor, name: str) -> Tensor:
    if not isinstance(a, Tensor) or a.dim() != 1 or a.shape[0] == 0 or not a.is_floating_point():
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(f"{name} must be a non-empty float tensor of logits, shape (B,), got {shape}; "
                         "a discriminator returns one logit per sample.")
    return a


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = -E_data[log D(x)] - E_z[log(1 - D(G(z)))], the negated value V(D, G), from logits.

    With D = sigmoid(a): -log sigmoid(a) = softplus(-a) and -log(1 - sigmoid(a)) = softplus(a), so
    L_D = mean softplus(-a_real) + mean softplus(a_fake). Logits (B,) and (B',); returns a scalar.
    """
    real_logits, fake_logits = _logits(real_logits, "real_logits"), _logits(fake_logits, "fake_logits")
    # -log D(x) = softplus(-a);  -log(1 - D(G(z))) = softplus(a)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    """The generator's loss from the logits a = D's logit on G(z), shape (B,); returns a scalar.

    ``"minimax"`` (saturating):  J_G = E_z[log(1 - D(G(z)))] = -mean softplus(a);
        dJ/da = -sigmoid(a) per sample, which vanishes when D(G(z)) -> 0 (early training).
    ``"non_saturating"``:  J_G = -E_z[log D(G(z))] = mean softplus(-a);
        dJ/da = -(1 - sigmoid(a)) per sample, close to -1 when D(G(z)) -> 0.
    """
    fake_logits = _logits(fake_logits, "fake_logits")
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()  # -log sigmoid(a)
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(a))
    raise ValueError(f"Unknown generator loss kind {kind!r}: choose one of {', '.join(LOSS_KINDS)}.")


# --- the optimal discriminator and the value of the game ----------------------------------------

def _density(p, x: Tensor | None, name: str) -> Tensor:
    if callable(p):
        if x is None:
            raise ValueError(f"{name} is a function: pass the points x at which to evaluate it.")
        p = p(x)
    p = torch.as_tensor(p, dtype=torch.float64)
    if (p < 0).any() or not torch.isfinite(p).all():
        raise ValueError(f"{name} must be finite and non-negative (a density or probabilities).")
    return p


def optimal_discriminator(p_data, p_g, x: Tensor | None = None) -> Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)), the discriminator that maximises V(D, G) for fixed G.

    ``p_data`` and ``p_g`` are arrays of density values (any common shape) or callables evaluated at
    ``x``. Where both densities are 0, D* is not determined; we return 1/2 there. Float64.
    """
    pd, pg = _density(p_data, x, "p_data"), _density(p_g, x, "p_g")
    if pd.shape != pg.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {tuple(pd.shape)} and "
                         f"{tuple(pg.shape)}.")
    total = pd + pg
    return torch.where(total > 0, pd / torch.where(total > 0, total, 1.0), 0.5)


def gan_value(p_data, p_g, x: Tensor | None = None) -> Tensor:
    """V(D*, G) = E_data[log D*(x)] + E_g[log(1 - D*(x))]  (= -log 4 + 2 JS(p_data || p_g)).

    Discrete: ``x=None`` and ``p_data``, ``p_g`` probability vectors (K,): the expectations are sums.
    Continuous: densities (arrays or callables) on an increasing 1-D grid ``x`` (N,): the integrals
    are taken with the trapezoidal rule. 0 log 0 = 0. Returns a float64 scalar.
    """
    pd, pg = _density(p_data, x, "p_data"), _density(p_g, x, "p_g")
    d, one_minus_d = optimal_discriminator(pd, pg), optimal_discriminator(pg, pd)  # 1 - D* = p_g/(p_d + p_g)
    # p_data log D* + p_g log(1 - D*), with xlogy(0, .) = 0; 1 - D* is not formed by subtraction
    # (1 - (1 - 1e-20) rounds to 0 and would turn a tiny p_g into -inf)
    integrand = torch.xlogy(pd, d) + torch.xlogy(pg, one_minus_d)
    if x is None:
        return integrand.sum()
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 1 or x.shape != pd.shape or (x.diff() <= 0).any():
        raise ValueError("x must be an increasing 1-D grid with one point per density value.")
    return torch.trapezoid(integrand, x)


# --- training ----------------------------------------------------------------------------------

def make_gan_step(G: _Generator, D: _Discriminator, opt_g: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, batch: Callable[[int], tuple], *, k: int = 1,
                  loss: str = "non_saturating", generator: torch.Generator | None = None
                  ) -> Callable[[int], dict[str, float]]:
    """A ``train.fit`` step: k discriminator updates, then one generator update (Goodfellow et al.,
    Algorithm 1).

    Step i uses the real batches ``batch(k*i)``, ..., ``batch(k*i + k - 1)`` (tuples whose first
    entry is x; with conditional networks the second entry is the labels y, which the fake samples
    of that batch reuse). Each discriminator update minimises ``discriminator_loss`` on one real
    batch and as many fakes G(z), z ~ N(0, I) drawn with ``generator`` (G is not updated); the
    generator update minimises ``generator_loss(kind=loss)`` on a fresh batch of z. Returns
    {"loss_d", "loss_g", "d_real", "d_fake"}: the last losses and D's mean output sigmoid(a) on
    the last real and fake batch that it judged.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (discriminator steps per generator step) must be an integer >= 1, got {k!r}.")
    _check_choice("loss", loss, LOSS_KINDS)
    if G.config.n_classes != D.config.n_classes:
        raise ValueError(f"G and D must agree on n_classes, got {G.config.n_classes} and "
                         f"{D.config.n_classes}.")
    conditional = G.config.n_classes > 0

    def noise(n: int, device: torch.device) -> Tensor:
        where = generator.device if generator is not None else device
        return torch.randn(n, G.config.latent_dim, generator=generator, device=where).to(device)

    def step(i: int) -> dict[str, float]:
        for j in range(k):
            x, y = _real_batch(batch(k * i + j), conditional)
            with torch.no_grad():
                fake = G(noise(x.shape[0], x.device), y)
            real_logits, fake_logits = D(x, y), D(fake, y)
            loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        gen_logits = D(G(noise(x.shape[0], x.device), y), y)
        loss_g = generator_loss(gen_logits, loss)
        opt_g.zero_grad()
        loss_g.backward()  # also fills D's gradients; opt_d.zero_grad() clears them next step
        opt_g.step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(),
                "d_real": torch.sigmoid(real_logits).mean().item(),
                "d_fake": torch.sigmoid(fake_logits).mean().item()}
    return step


def _real_batch(real, conditional: bool) -> tuple[Tensor, Tensor | None]:
    """(x, y) from what ``batch(i)`` returned: a tensor x, or a tuple (x, ...) / (x, y, ...)."""
    if isinstance(real, Tensor):
        real = (real,)
    if not isinstance(real, (tuple, list)) or not real or not isinstance(real[0], Tensor):
        raise ValueError(f"batch(i) must return a tensor x or a tuple (x, ...), got {type(real).__name__}.")
    if conditional and len(real) < 2:
        raise ValueError("G and D are conditional (n_classes > 0): batch(i) must return (x, y) with the "
                         "labels y, e.g. data.Minibatches(images, labels, batch_size=64).")
    return real[0], (real[1] if conditional else None)


# --- mode coverage on the 2-D toys (Metz et al. 2017; Srivastava et al. 2017) --------------------

def mode_coverage(samples: Tensor, centers: Tensor, std: float) -> dict[str, object]:
    """Modes captured and the fraction of high-quality samples of a mixture of Gaussians.

    A sample is *high quality* when it lies within 3 std of its nearest centre,
    ||x - mu_{k(x)}|| <= 3 std with k(x) = argmin_k ||x - mu_k||; a mode is *captured* when at
    least one high-quality sample is nearest to it. ``samples`` (N, d), ``centers`` (K, d).
    Returns {"modes": int, "high_quality": float in [0, 1], "counts": (K,) high-quality samples
    per mode}. For exact data from N(mu_k, std^2 I) in 2-D the high-quality fraction is
    P(chi_2 <= 3) = 1 - exp(-9/2) = 0.989. Non-finite samples (a diverged generator) count as low quality.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1] or \
            samples.shape[0] == 0 or centers.shape[0] == 0:
        raise ValueError(f"samples must be (N, d) and centers (K, d) with the same d, N, K >= 1; got "
                         f"{tuple(samples.shape)} and {tuple(centers.shape)}.")
    std = _checks.number(std, "std", low=0.0, low_open=True)
    dist, nearest = torch.cdist(samples.double(), centers.double().to(samples.device)).min(dim=1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0]).cpu()
    return {"modes": int((counts > 0).sum()), "high_quality": good.double().mean().item(), "counts": counts}
