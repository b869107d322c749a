"""Variational inference on a one-dimensional latent-variable model (chapter 3).

The running example: a latent z ~ Exponential(1) (density e^{-z} on z >= 0) and an observation
x | z ~ N(z, 1). Its posterior is N(x - 1, 1) truncated to z >= 0 and its evidence has the closed
form p(x) = e^{1/2 - x} Phi(x - 1), so every variational answer can be checked against the truth.

A variational distribution ``q`` is any object with ``rsample(n, generator) -> (n, *shape)``
(reparameterised: differentiable in q's parameters) and ``log_prob(z)``; ``PositiveNormal`` is the
family of the chapter. ``x`` may be a tensor of observations ``(...)``, one q per entry.
Conventions: float64 throughout, natural logarithms (nats), ``logvar`` = log sigma^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import train

Tensor = torch.Tensor
_LOG_2PI = math.log(2 * math.pi)
LINKS = ("softplus", "exp")


def _f64(x) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("the observations x (or z) must be finite numbers; got NaN or infinity.")
    return x


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


# --- the model: z ~ Exponential(1), x | z ~ N(z, 1) ----------------------------------------------

def log_prior(z: Tensor) -> Tensor:
    """log p(z) = -z for z >= 0 and -inf for z < 0 (Exponential(1)); elementwise."""
    z = torch.as_tensor(z, dtype=torch.float64)
    return torch.where(z >= 0, -z, -math.inf)


def log_likelihood(x: Tensor, z: Tensor) -> Tensor:
    """log p(x|z) = log N(x; z, 1) = -1/2 log(2 pi) - (x - z)^2 / 2; shapes broadcast."""
    return -0.5 * _LOG_2PI - 0.5 * (_f64(x) - z) ** 2


def log_joint(x: Tensor, z: Tensor) -> Tensor:
    """log p(x, z) = log p(z) + log p(x|z); shapes broadcast (z: (S, ...) against x: (...))."""
    return log_prior(z) + log_likelihood(x, z)


def sample_model(n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Ancestral sampling: z ~ Exponential(1), then x ~ N(z, 1). Returns (z, x), each (n,)."""
    _check_positive_int(n, "n")
    z = -torch.log1p(-torch.rand(n, generator=generator, dtype=torch.float64))  # inverse CDF
    return z, z + torch.randn(n, generator=generator, dtype=torch.float64)


def log_evidence(x: Tensor) -> Tensor:
    """The exact log p(x) = 1/2 - x + log Phi(x - 1) (Phi: standard normal CDF); elementwise.

    From -z - (x - z)^2/2 = -(z - (x - 1))^2/2 + 1/2 - x, integrated over z >= 0.
    """
    x = _f64(x)
    return 0.5 - x + torch.special.log_ndtr(x - 1)


def posterior_log_prob(z: Tensor, x: Tensor) -> Tensor:
    """log p(z|x) = log N(z; x - 1, 1) - log Phi(x - 1) on z >= 0, -inf below; shapes broadcast."""
    x = _f64(x)
    return log_joint(x, z) - log_evidence(x)


def truncated_normal_log_prob(z: Tensor, c: Tensor) -> Tensor:
    """log density of N(c, 1) truncated to [0, inf): log phi(z - c) - log Phi(c), -inf for z < 0."""
    z, c = torch.as_tensor(z, dtype=torch.float64), _f64(c)
    return torch.where(z >= 0, -0.5 * _LOG_2PI - 0.5 * (z - c) ** 2 - torch.special.log_ndtr(c),
                       -math.inf)


def truncated_normal_moments(c: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of N(c, 1) truncated to [0, inf): c + lam and 1 - c lam - lam^2,
    lam = phi(c) / Phi(c). For c = x - 1 this is the posterior mean and variance."""
    c = _f64(c)
    lam = torch.exp(-0.5 * c**2 - 0.5 * _LOG_2PI - torch.special.log_ndtr(c))  # phi(c) / Phi(c)
    return c + lam, 1 - c * lam - lam**2


# --- the variational family -----------------------------------------------------------------------

class PositiveNormal:
    """q(z): the law of z = g(u) with u ~ N(mu, e^{logvar}) and g = softplus or exp.

    ``link="exp"`` is the log-normal family. By the change of variables u = g^{-1}(z),
    log q(z) = log N(u; mu, sigma^2) - log g'(u), with g'(u) = sigmoid(u) for softplus and e^u
    for exp. ``mu``, ``logvar``: tensors of the same shape (...), one distribution per entry.
    """

    def __init__(self, mu: Tensor, logvar: Tensor, link: str = "softplus"):
        mu, logvar = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(logvar, dtype=torch.float64)
        if mu.shape != logvar.shape:
            raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                             f"{tuple(logvar.shape)}.")
        if link not in LINKS:
            raise ValueError(f"link must be 'softplus' or 'exp' (log-normal), got {link!r}.")
        self.mu, self.logvar, self.link = mu, logvar, link

    def _g(self, u: Tensor) -> Tensor:
        return F.softplus(u) if self.link == "softplus" else torch.exp(u)

    def _log_dg(self, u: Tensor) -> Tensor:  # log g'(u)
        return F.logsigmoid(u) if self.link == "softplus" else u

    def _log_prob_u(self, u: Tensor) -> Tensor:
        # log N(u; mu, sigma^2) - log g'(u)
        return (-0.5 * (_LOG_2PI + self.logvar + (u - self.mu) ** 2 / self.logvar.exp())
                - self._log_dg(u))

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n reparameterised draws (n, ...): z = g(mu + sigma eps), eps ~ N(0, 1) from ``generator``."""
        _check_positive_int(n, "n")
        eps = torch.randn(n, *self.mu.shape, generator=generator, dtype=torch.float64)
        return self._g(self.mu + torch.exp(0.5 * self.logvar) * eps)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z), -inf for z <= 0; ``z`` broadcasts against (...)."""
        z = torch.as_tensor(z, dtype=torch.float64)
        safe = torch.where(z > 0, z, torch.ones_like(z))
        # u = g^{-1}(z): log(e^z - 1) = z + log(1 - e^{-z}) for softplus, log z for exp
        u = safe + torch.log(-torch.expm1(-safe)) if self.link == "softplus" else torch.log(safe)
        return torch.where(z > 0, self._log_prob_u(u), -math.inf)

    def expectation(self, f: Callable[[Tensor], Tensor], n_nodes: int = 2001) -> Tensor:
        """E_q[f(z)] by the trapezoid rule over u = mu + sigma t, t in [-12, 12]; shape (...).

        Deterministic and differentiable in (mu, logvar). ``f`` maps (n_nodes, ...) -> same.
        """
        if not isinstance(n_nodes, int) or n_nodes < 3:
            raise ValueError(f"n_nodes must be an integer >= 3, got {n_nodes!r}.")
        t = torch.linspace(-12.0, 12.0, n_nodes, dtype=torch.float64)
        w = torch.exp(-0.5 * t**2)
        w[[0, -1]] *= 0.5
        w = (w / w.sum()).reshape(-1, *([1] * self.mu.dim()))  # (n_nodes, 1, ...)
        u = self.mu + torch.exp(0.5 * self.logvar) * t.reshape(w.shape)
        return (w * f(self._g(u))).sum(0)

    def detach(self) -> PositiveNormal:
        return PositiveNormal(self.mu.detach(), self.logvar.detach(), self.link)

    def __repr__(self) -> str:
        return f"PositiveNormal(mu={self.mu.detach()}, logvar={self.logvar.detach()}, link={self.link!r})"


# --- the evidence lower bound ---------------------------------------------------------------------

def _check_q(q) -> None:
    if not (hasattr(q, "rsample") and hasattr(q, "log_prob")):
        raise TypeError(f"q must be a variational distribution with rsample and log_prob (such as "
                        f"PositiveNormal), got {type(q).__name__}. The order is (q, x, ...): q first.")


def log_weights(q, x: Tensor, n_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """log p(x, z_s) - log q(z_s) for n_samples reparameterised draws z_s ~ q; shape (n_samples, ...)."""
    _check_q(q)
    _check_positive_int(n_samples, "n_samples")
    z = q.rsample(n_samples, generator)  # (S, ...)
    return log_joint(x, z) - q.log_prob(z)


def elbo(q, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Monte Carlo estimate of ELBO(q) = E_q[log p(x, z) - log q(z)] <= log p(x): the mean of
    ``log_weights`` over n_samples draws, unbiased for the ELBO.

    Differentiable in q's parameters (reparameterisation); shape (...) of x and q. The distribution
    comes first, as the model does in ``elbo.elbo(model, x)`` of chapter 5.
    """
    return log_weights(q, x, n_samples, generator).mean(0)


def elbo_quadrature(q: PositiveNormal, x: Tensor, n_nodes: int = 2001) -> Tensor:
    """ELBO(q) by quadrature (no Monte Carlo noise): E_q[log p(x, z) - log q(z)]; shape (...).

    log p(x) - elbo_quadrature(q, x) is the gap KL(q || p(z|x)).
    """
    _check_q(q)
    return q.expectation(lambda z: log_joint(x, z) - q.log_prob(z), n_nodes)


@dataclass
class VIFit:
    """A fitted variational distribution and the optimiser's trace: ``history["elbo"]`` holds the
    Monte Carlo ELBO of each step, ``history["elbo_quad"]`` the exact one (both averaged over x)."""

    q: object
    history: dict[str, list[float]] = field(repr=False)


def fit_variational(x: Tensor, steps: int = 1000, lr: float = 0.05, n_samples: int = 16,
                    link: str = "softplus", family: Callable[[Tensor, Tensor], object] | None = None,
                    mu0: float = 0.0, logvar0: float = 0.0, generator: torch.Generator | None = None,
                    progress: bool = False) -> VIFit:
    """Maximise the ELBO over q = family(mu, logvar) by Adam on reparameterised gradients.

    One q per entry of ``x`` (their ELBOs are summed, so the fits are independent). ``family``
    defaults to ``PositiveNormal(mu, logvar, link)``; any q with rsample/log_prob works. The learning
    rate decays linearly to zero, which turns the noisy steps into a converging average.
    """
    x = _f64(x)
    _check_positive_int(steps, "steps")
    _check_positive_int(n_samples, "n_samples")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}.")
    family = family or (lambda m, lv: PositiveNormal(m, lv, link))
    mu = torch.full(x.shape, float(mu0), dtype=torch.float64, requires_grad=True)
    logvar = torch.full(x.shape, float(logvar0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, logvar], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)

    def step(i: int) -> dict[str, float]:
        q = family(mu, logvar)
        value = elbo(q, x, n_samples, generator)  # (...)
        opt.zero_grad()
        (-value.sum()).backward()  # gradient ascent on every ELBO
        metrics = {"elbo": value.mean().item()}
        if isinstance(q, PositiveNormal):
            with torch.no_grad():
                metrics["elbo_quad"] = elbo_quadrature(q, x, 401).mean().item()
        opt.step()
        sched.step()
        return metrics

    history = train.fit(step, steps, progress=progress, desc="ELBO ascent")
    return VIFit(family(mu.detach(), logvar.detach()), history)


def optimal_q(x: Tensor, link: str = "softplus", max_iter: int = 500) -> PositiveNormal:
    """The best member of the family, q* = argmax_q ELBO(q), one per entry of ``x`` (...).

    Deterministic: L-BFGS on the quadrature ELBO (no Monte Carlo noise), from mu = logvar = 0.
    log p(x) - elbo_quadrature(q*, x) is the family's approximation gap, the smallest KL(q || p(z|x))
    it can reach; no fit in the family, amortised or not, can do better.
    """
    x = _f64(x)
    _check_positive_int(max_iter, "max_iter")
    params = torch.zeros(2, *x.shape, dtype=torch.float64, requires_grad=True)  # (mu, logvar)
    opt = torch.optim.LBFGS([params], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -elbo_quadrature(PositiveNormal(params[0], params[1], link), x).sum()  # independent fits
        loss.backward()
        return loss

    opt.step(closure)
    return PositiveNormal(params[0].detach(), params[1].detach(), link)


# --- amortised inference: an inference network x -> (mu, logvar) ---------------------------------

class Encoder(nn.Module):
    """Inference network: an MLP mapping observations x (B,) to q's parameters (mu, logvar), each (B,)."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        _check_positive_int(hidden, "hidden")
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, 2)).double()  # last layer linear

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(_f64(x).reshape(-1, 1))  # (B, 2)
        return out[:, 0], out[:, 1]


def fit_amortised(encoder: Encoder, steps: int, batch_size: int = 256, lr: float = 3e-3,
                  n_samples: int = 4, link: str = "softplus",
                  generator: torch.Generator | None = None, progress: bool = False) -> dict:
    """Train ``encoder`` to maximise E_x[ELBO(q(z|x))] over fresh x ~ p(x) in every step.

    Returns the history: ``"elbo"`` and ``"gap"`` (mean of log p(x) - ELBO, an estimate of the
    average KL(q(z|x) || p(z|x))) per step, averaged over the batch.
    """
    _check_positive_int(steps, "steps")
    _check_positive_int(batch_size, "batch_size")
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)

    def step(i: int) -> dict[str, float]:
        _, x = sample_model(batch_size, generator)  # (B,): the model's own observations
        value = elbo(PositiveNormal(*encoder(x), link), x, n_samples, generator)  # (B,)
        opt.zero_grad()
        (-value.mean()).backward()
        opt.step()
        sched.step()
        return {"elbo": value.mean().item(), "gap": (log_evidence(x) - value).mean().item()}

    return train.fit(step, steps, state={"encoder": encoder, "opt": opt}, progress=progress,
                     desc="amortised ELBO")


# --- mean field: two causes, z1, z2 ~ Exponential(1), x | z ~ N(z1 + z2, 1) -----------------------

def two_cause_log_joint(x: Tensor, z: Tensor) -> Tensor:
    """log p(x, z1, z2) = log p(z1) + log p(z2) + log N(x; z1 + z2, 1); ``z`` (..., 2) -> (...)."""
    return log_prior(z[..., 0]) + log_prior(z[..., 1]) + log_likelihood(x, z[..., 0] + z[..., 1])


def two_cause_log_evidence(x: Tensor) -> Tensor:
    """log p(x) = 1/2 - x + log(phi(c) + c Phi(c)), c = x - 1 (s = z1 + z2 ~ Gamma(2, 1))."""
    c = _f64(x) - 1
    log_phi = -0.5 * c**2 - 0.5 * _LOG_2PI
    # phi(c) + c Phi(c) = phi(c) (1 + c Phi(c) / phi(c))
    return 0.5 - (c + 1) + log_phi + torch.log1p(c * torch.exp(torch.special.log_ndtr(c) - log_phi))


def mean_field_elbo(x: Tensor, c1: Tensor, c2: Tensor) -> Tensor:
    """ELBO of q(z1) q(z2), q_k = N(c_k, 1) truncated to [0, inf), in closed form:

    E_q[log p(x, z)] + H(q1) + H(q2), with E(x - z1 - z2)^2 = (x - m1 - m2)^2 + v1 + v2 and
    H(q_k) = 1/2 log(2 pi) + (1 - c_k lam_k) / 2 + log Phi(c_k).
    """
    x, out = _f64(x), 0.0
    (m1, v1), (m2, v2) = truncated_normal_moments(c1), truncated_normal_moments(c2)
    expected = -m1 - m2 - 0.5 * _LOG_2PI - 0.5 * ((x - m1 - m2) ** 2 + v1 + v2)
    for c, m in ((_f64(c1), m1), (_f64(c2), m2)):
        # E(z - c)^2 = v + (m - c)^2 = 1 - c lam
        out = out + 0.5 * _LOG_2PI + 0.5 * (1 - c * (m - c)) + torch.special.log_ndtr(c)
    return expected + out


def cavi(x: float, n_sweeps: int, c1: float = 0.0, c2: float = 0.0) -> dict[str, list[float]]:
    """Coordinate ascent (CAVI) for the two-cause model: q_k = N(c_k, 1) truncated to z_k >= 0.

    Each update maximises the ELBO over one whole factor: c1 <- x - 1 - E[z2], then
    c2 <- x - 1 - E[z1]. Returns the trace ``{"c1", "c2", "elbo"}`` after every single update
    (the first entry is the start); the ELBO never decreases.
    """
    _check_positive_int(n_sweeps, "n_sweeps")
    x = float(_f64(x))
    c = [float(c1), float(c2)]
    trace = {"c1": [c[0]], "c2": [c[1]], "elbo": [mean_field_elbo(x, c[0], c[1]).item()]}
    for i in range(2 * n_sweeps):
        k = i % 2
        c[k] = x - 1 - truncated_normal_moments(c[1 - k])[0].item()  # E[z_other] under q
        trace["c1"].append(c[0])
        trace["c2"].append(c[1])
        trace["elbo"].append(mean_field_elbo(x, c[0], c[1]).item())
    return trace
