"""Information theory: entropy, cross-entropy, KL and JS divergences (chapter 2).

Conventions: natural logarithms (nats) unless ``base=2`` (bits) is asked for; ``logvar`` is the
log-variance of a Gaussian. A discrete distribution is a tensor of probabilities along its *last*
dimension (leading dimensions are a batch), and ``0 log 0 = 0``. Invalid distributions raise
``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import train
from .probability import log_mixture

Tensor = torch.Tensor


# --- checks ------------------------------------------------------------------------------------

def _as_float(x) -> Tensor:
    """``x`` as a floating tensor: tensors keep a floating dtype, anything else becomes float64."""
    x = torch.as_tensor(x) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=torch.float64)
    return x if x.is_floating_point() else x.to(torch.float64)


def _sum_tolerance(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-4


def check_distribution(p, name: str = "p") -> Tensor:
    """Return ``p`` as a floating tensor ``(..., K)``; ValueError unless every row along the last
    dimension is non-negative and sums to one (within 1e-6 in float64, 1e-4 otherwise)."""
    p = _as_float(p)
    if p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError(f"{name} must hold the probabilities of K >= 1 outcomes along its last "
                         f"dimension; got shape {tuple(p.shape)}.")
    values = p.detach()
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} has NaN or infinite entries; probabilities must be finite.")
    if (values < 0).any():
        raise ValueError(f"{name} has negative entries (smallest {values.min().item():.3g}); "
                         "probabilities must be >= 0.")
    sums = values.sum(-1)
    if ((sums - 1).abs() > _sum_tolerance(p.dtype)).any():
        worst = sums.reshape(-1)[(sums - 1).abs().reshape(-1).argmax()].item()
        raise ValueError(f"{name} does not sum to one along its last dimension (a row sums to "
                         f"{worst:.6g}); normalise it with p / p.sum(-1, keepdim=True), or use "
                         "torch.softmax on logits.")
    return p


def _check_pair(p, q) -> tuple[Tensor, Tensor]:
    p, q = check_distribution(p, "p"), check_distribution(q, "q")
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError:
        ok = False
    else:
        ok = p.shape[-1] == q.shape[-1]
    if not ok:
        raise ValueError(f"shape mismatch: p has shape {tuple(p.shape)} and q has shape "
                         f"{tuple(q.shape)}; they must be distributions over the same K outcomes "
                         "(same last dimension) with broadcastable batch dimensions.")
    dtype = torch.promote_types(p.dtype, q.dtype)
    return p.to(dtype), q.to(dtype)


def _in_base(nats: Tensor, base: float | None) -> Tensor:
    if base is None:
        return nats
    if not base > 0 or base == 1:
        raise ValueError(f"base must be positive and not 1 (2 for bits, None for nats); got {base}.")
    return nats / math.log(base)


# --- discrete distributions --------------------------------------------------------------------

def information_content(p, base: float | None = None) -> Tensor:
    """Information content (surprisal) of events of probability ``p`` (any shape), elementwise.

    I(x) = -log p(x); +inf where p = 0. ValueError for values outside [0, 1].
    """
    p = _as_float(p)
    if torch.isnan(p).any() or (p.detach() < 0).any() or (p.detach() > 1).any():
        raise ValueError("information_content needs probabilities in [0, 1]; got values from "
                         f"{p.min().item():.3g} to {p.max().item():.3g}.")
    return _in_base(-torch.log(p) + 0.0, base)  # + 0.0 turns -0.0 (at p = 1) into 0.0


def entropy(p, base: float | None = None) -> Tensor:
    """Entropy of the distributions ``p`` ``(..., K)``; returns shape ``(...)``.

    H(p) = -sum_k p_k log p_k, with 0 log 0 = 0.
    """
    p = check_distribution(p)
    # -sum_k p_k log p_k  (xlogy(0, 0) = 0)
    return _in_base(-torch.xlogy(p, p).sum(-1), base)


def huffman_code_lengths(p) -> Tensor:
    """Code lengths in bits of an optimal (Huffman) prefix code for a distribution ``p`` ``(K,)``.

    Huffman's algorithm repeatedly merges the two least probable groups; each merge adds one bit to
    every symbol in them. The average length L = sum_x p(x) l(x) is the smallest of any uniquely
    decodable binary code, and H(p) <= L < H(p) + 1 bits (Cover & Thomas, Theorem 5.4.1, 5.8.1).
    """
    p = check_distribution(p)
    if p.dim() != 1:
        raise ValueError(f"need one distribution of shape (K,), got shape {tuple(p.shape)}.")
    lengths = [0] * p.shape[0]
    heap = [(prob, i, [i]) for i, prob in enumerate(p.tolist())]  # (mass, tie-breaker, symbols)
    heapq.heapify(heap)
    while len(heap) > 1:
        m1, i1, s1 = heapq.heappop(heap)
        m2, _, s2 = heapq.heappop(heap)
        for i in s1 + s2:  # one more bit for every symbol under the merged node
            lengths[i] += 1
        heapq.heappush(heap, (m1 + m2, i1, s1 + s2))
    return torch.tensor(lengths, dtype=p.dtype)


def block_distribution(p, n: int) -> Tensor:
    """Distribution of n independent symbols from ``p`` ``(K,)``, as a vector ``(K^n,)`` (first symbol
    slowest): p(x_1, ..., x_n) = p(x_1) ... p(x_n)."""
    p = check_distribution(p)
    if p.dim() != 1 or not isinstance(n, int) or n < 1:
        raise ValueError(f"need one distribution p of shape (K,) and a block length n >= 1; got shape "
                         f"{tuple(p.shape)} and n={n!r}.")
    block = p
    for _ in range(n - 1):
        block = torch.outer(block, p).reshape(-1)  # p(x_1..x_m) p(x_{m+1})
    return block


def cross_entropy(p, q, base: float | None = None) -> Tensor:
    """Cross-entropy of ``q`` relative to ``p`` (both ``(..., K)``); returns shape ``(...)``.

    H(p, q) = -sum_k p_k log q_k; +inf where q_k = 0 < p_k.
    """
    p, q = _check_pair(p, q)
    # -sum_k p_k log q_k
    return _in_base(-torch.xlogy(p, q).sum(-1), base)


def kl_divergence(p, q, base: float | None = None) -> Tensor:
    """Kullback-Leibler divergence KL(p || q) of ``(..., K)`` distributions; shape ``(...)``.

    KL(p || q) = sum_k p_k log(p_k / q_k) = H(p, q) - H(p) >= 0; +inf where q_k = 0 < p_k.
    """
    p, q = _check_pair(p, q)
    # sum_k [p_k log p_k - p_k log q_k]: each term is exactly 0 where p_k = q_k
    return _in_base((torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1), base)


def js_divergence(p, q, base: float | None = None) -> Tensor:
    """Jensen-Shannon divergence of ``(..., K)`` distributions; shape ``(...)``.

    JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m) with m = (p + q) / 2; 0 <= JS <= log 2, with
    JS = log 2 exactly when p and q have disjoint supports.
    """
    p, q = _check_pair(p, q)
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m, base) + 0.5 * kl_divergence(q, m, base)


# --- Gaussians ---------------------------------------------------------------------------------

def gaussian_log_prob(x: Tensor, mu: Tensor | float = 0.0, logvar: Tensor | float = 0.0) -> Tensor:
    """Elementwise log N(x; mu, e^{logvar}) = -1/2 [log(2 pi) + logvar + (x - mu)^2 / e^{logvar}]."""
    x = _as_float(x)
    mu = torch.as_tensor(mu, dtype=x.dtype)
    logvar = torch.as_tensor(logvar, dtype=x.dtype)
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mu) ** 2 / logvar.exp())


def gaussian_entropy(logvar: Tensor | float) -> Tensor:
    """Elementwise differential entropy of N(mu, e^{logvar}) in nats: 1/2 [log(2 pi e) + logvar]."""
    return 0.5 * (math.log(2 * math.pi) + 1 + _as_float(logvar))


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | float = 0.0,
                logvar_p: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Elementwise KL( N(mu_q, e^{logvar_q}) || N(mu_p, e^{logvar_p}) ) in nats.

    KL = 1/2 [ logvar_p - logvar_q + (e^{logvar_q} + (mu_q - mu_p)^2) / e^{logvar_p} - 1 ].
    With mu_p = 0, logvar_p = 0 this is 1/2 (mu^2 + sigma^2 - log sigma^2 - 1). For a diagonal
    Gaussian, sum the result over the last dimension. Shapes broadcast.
    """
    mu_q, logvar_q = torch.as_tensor(mu_q), torch.as_tensor(logvar_q)
    mu_p = torch.as_tensor(mu_p, dtype=mu_q.dtype, device=mu_q.device)
    logvar_p = torch.as_tensor(logvar_p, dtype=logvar_q.dtype, device=logvar_q.device)
    # KL = 1/2 [log(s_p^2 / s_q^2) + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1]
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)


def monte_carlo_kl(log_q: Callable[[Tensor], Tensor], log_p: Callable[[Tensor], Tensor],
                   x: Tensor) -> tuple[Tensor, Tensor]:
    """Monte Carlo estimate of KL(q || p) = E_q[log q(x) - log p(x)] from samples ``x`` ~ q.

    ``x`` has shape ``(N, ...)``; ``log_q`` and ``log_p`` map it to ``(N,)``. Returns the
    estimate (the mean log-ratio) and its standard error (sample sd / sqrt(N)).
    """
    ratio = log_q(x) - log_p(x)  # (N,)
    if ratio.dim() != 1 or len(ratio) < 2:
        raise ValueError(f"log_q(x) - log_p(x) must have shape (N,) with N >= 2; got "
                         f"{tuple(ratio.shape)}.")
    return ratio.mean(), ratio.std() / math.sqrt(len(ratio))


# --- forward vs reverse KL: one Gaussian fitted to a 1-D mixture --------------------------------

@dataclass(frozen=True)
class GaussianFit:
    """A Gaussian N(mu, sigma^2) fitted to a target; ``history`` holds the optimiser's trace
    (``{"step": [...], "kl": [...]}``, empty for a closed-form fit)."""

    mu: float
    sigma: float
    history: dict[str, list[float]] = field(default_factory=dict, repr=False)


def _check_mixture(weights, means, stds) -> tuple[Tensor, Tensor, Tensor]:
    w = check_distribution(torch.as_tensor(weights, dtype=torch.float64), "weights")
    m = torch.as_tensor(means, dtype=torch.float64)
    s = torch.as_tensor(stds, dtype=torch.float64)
    if w.dim() != 1 or m.shape != w.shape or s.shape != w.shape:
        raise ValueError(f"weights, means and stds must be 1-D of the same length; got shapes "
                         f"{tuple(w.shape)}, {tuple(m.shape)}, {tuple(s.shape)}.")
    if not (s > 0).all():
        raise ValueError(f"stds must be positive; got {s.tolist()}.")
    return w, m, s


def mixture_log_prob(x: Tensor, weights, means, stds) -> Tensor:
    """Elementwise log p(x) of the 1-D mixture p = sum_k w_k N(m_k, s_k^2); ``x`` any shape."""
    w, m, s = _check_mixture(weights, means, stds)
    x = torch.as_tensor(x, dtype=torch.float64).unsqueeze(-1)  # (..., 1) against (K,)
    # log sum_k w_k N(x; m_k, s_k^2), computed with logsumexp
    return log_mixture(w, gaussian_log_prob(x, m, 2 * s.log()))


def mixture_sample(n: int, weights, means, stds, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples ``(n,)`` of the 1-D mixture: pick component k ~ w, then x ~ N(m_k, s_k^2)."""
    w, m, s = _check_mixture(weights, means, stds)
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    return m[k] + s[k] * torch.randn(n, generator=generator, dtype=torch.float64)


def _standard_normal_grid(n_nodes: int) -> tuple[Tensor, Tensor]:
    """Nodes t on [-8, 8] and weights v with sum_i v_i f(t_i) ~ E_{N(0, 1)}[f] (trapezoid rule)."""
    if not isinstance(n_nodes, int) or n_nodes < 3:
        raise ValueError(f"n_nodes must be an integer >= 3; got {n_nodes!r}.")
    t = torch.linspace(-8.0, 8.0, n_nodes, dtype=torch.float64)
    v = torch.exp(-0.5 * t**2)
    v[[0, -1]] *= 0.5  # trapezoid end points
    return t, v / v.sum()  # normalised: constants are integrated exactly


def mixture_kl(mu: Tensor, logvar: Tensor, weights, means, stds, direction: str = "reverse",
               n_nodes: int = 401) -> Tensor:
    """KL between q = N(mu, e^{logvar}) and the 1-D mixture p, by quadrature on a fine grid.

    ``direction="forward"``: KL(p || q) = sum_k w_k E_{N(m_k, s_k^2)}[log p(x) - log q(x)];
    ``direction="reverse"``: KL(q || p) = E_q[log q(x) - log p(x)]. Each expectation over
    N(a, b^2) is sum_i v_i f(a + b t_i) on a grid t_i of [-8, 8] (``n_nodes`` points): a
    deterministic reparameterisation, so the result is differentiable in ``mu`` and ``logvar``.
    """
    w, m, s = _check_mixture(weights, means, stds)
    t, v = _standard_normal_grid(n_nodes)
    mu, logvar = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(logvar, dtype=torch.float64)
    if direction == "reverse":
        x = mu + (0.5 * logvar).exp() * t  # (n_nodes,): x = mu + sigma t
        return (v * (gaussian_log_prob(x, mu, logvar) - mixture_log_prob(x, w, m, s))).sum()
    if direction == "forward":
        x = m[:, None] + s[:, None] * t  # (K, n_nodes): component k's grid
        log_ratio = mixture_log_prob(x, w, m, s) - gaussian_log_prob(x, mu, logvar)
        return (w[:, None] * v * log_ratio).sum()
    raise ValueError(f"direction must be 'forward' (KL(p || q)) or 'reverse' (KL(q || p)); "
                     f"got {direction!r}.")


def fit_forward_kl(weights, means, stds) -> GaussianFit:
    """The Gaussian minimising KL(p || q) for the mixture p: moment matching, in closed form.

    mu = sum_k w_k m_k,  sigma^2 = sum_k w_k (s_k^2 + m_k^2) - mu^2.
    """
    w, m, s = _check_mixture(weights, means, stds)
    mu = (w * m).sum()
    var = (w * (s**2 + m**2)).sum() - mu**2  # E[x^2] - E[x]^2
    return GaussianFit(mu.item(), var.sqrt().item())


def fit_reverse_kl(weights, means, stds, mu0: float = 0.0, sigma0: float = 1.0, steps: int = 300,
                   lr: float = 0.1, n_nodes: int = 401) -> GaussianFit:
    """The Gaussian minimising KL(q || p) for the mixture p, by Adam on (mu, log sigma^2).

    Reverse KL has a local minimum near each well-separated mode: the start (``mu0``,
    ``sigma0``) decides which one is found. ``history["kl"]`` is KL(q || p) at each step.
    """
    if not sigma0 > 0 or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"need sigma0 > 0 and an integer steps >= 1; got {sigma0}, {steps}.")
    w, m, s = _check_mixture(weights, means, stds)
    mu = torch.tensor(float(mu0), dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor(2 * math.log(sigma0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, logvar], lr=lr)

    def step(i: int) -> dict[str, float]:
        kl = mixture_kl(mu, logvar, w, m, s, "reverse", n_nodes)
        opt.zero_grad()
        kl.backward()
        opt.step()
        return {"kl": kl.item()}

    history = train.fit(step, steps, progress=False, desc="reverse KL")
    return GaussianFit(mu.item(), (0.5 * logvar).exp().item(), history)
