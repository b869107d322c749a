"""Markov chains and Markov chain Monte Carlo (chapter 4).

Conventions: a distribution over the states is a *row* vector, and a transition matrix ``P``
has rows = today, columns = tomorrow, so ``P[i, j] = Pr(X_{n+1} = j | X_n = i)`` and
``pi_{n+1} = pi_n P``. Matrices are float64. Time steps are 0-based: a chain run for ``n_steps``
returns ``n_steps + 1`` states, the first being the start. Langevin dynamics uses
``x <- x + tau * score(x) + sqrt(2 tau) * z`` with ``tau`` the step size.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch

from .probability import log_mixture

Tensor = torch.Tensor


def check_transition_matrix(P, atol: float = 1e-8) -> Tensor:
    """Return ``P`` as a float64 ``(S, S)`` tensor; ValueError if it is not row-stochastic."""
    P = torch.as_tensor(P, dtype=torch.float64)
    if P.dim() != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ValueError(f"A transition matrix must be square (S, S); got shape {tuple(P.shape)}.")
    if not torch.isfinite(P).all() or (P < -atol).any():
        raise ValueError("A transition matrix must have finite, non-negative entries "
                         f"(probabilities); its smallest entry is {P.min().item():.3g}.")
    sums = P.sum(dim=1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=atol, rtol=0):
        bad = int((sums - 1).abs().argmax())
        raise ValueError(f"The rows of a transition matrix must sum to 1 (row = today, column = "
                         f"tomorrow); row {bad} sums to {sums[bad].item():.6g}.")
    return P.clamp(min=0)


def _check_distribution(pi, S: int) -> Tensor:
    pi = torch.as_tensor(pi, dtype=torch.float64)
    if pi.shape != (S,) or (pi < 0).any() or abs(pi.sum().item() - 1) > 1e-8:
        raise ValueError(f"pi0 must be a probability vector of length {S} (non-negative, "
                         f"summing to 1); got {pi.tolist()}.")
    return pi


def propagate(pi0, P, n: int) -> Tensor:
    """The distributions ``pi_0, ..., pi_n`` as an ``(n + 1, S)`` tensor: pi_{k+1} = pi_k P."""
    P = check_transition_matrix(P)
    pis = [_check_distribution(pi0, P.shape[0])]
    for _ in range(n):
        pis.append(pis[-1] @ P)  # row vector times matrix
    return torch.stack(pis)


def eigenvalue_one_multiplicity(P, tol: float = 1e-8) -> int:
    """How many eigenvalues of ``P`` equal 1 (within ``tol``): the number of linearly
    independent stationary distributions (one per closed class of states)."""
    eigenvalues = torch.linalg.eigvals(check_transition_matrix(P))
    return int(((eigenvalues - 1).abs() < tol).sum())


def _require_unique(P: Tensor) -> None:
    m = eigenvalue_one_multiplicity(P)
    if m > 1:
        raise ValueError(
            f"The stationary distribution is not unique: the eigenvalue 1 has multiplicity {m}, "
            f"so the chain has {m} closed classes (it is reducible). Use "
            "stationary_distributions(P) to get one stationary distribution per closed class; "
            "every mixture of them is stationary too.")


def stationary_by_eigenvector(P) -> Tensor:
    """Left eigenvector of ``P`` for eigenvalue 1, scaled to sum to 1: pi P = pi. Shape (S,)."""
    P = check_transition_matrix(P)
    _require_unique(P)
    eigenvalues, vectors = torch.linalg.eig(P.T)  # left eigenvectors of P = right ones of P^T
    v = vectors[:, (eigenvalues - 1).abs().argmin()]  # complex, with an arbitrary phase
    return (v / v.sum()).real  # dividing by the sum removes the phase and the scale


def stationary_by_linear_system(P) -> Tensor:
    """Solve (P^T - I) pi = 0 with one (redundant) equation replaced by sum(pi) = 1. Shape (S,)."""
    P = check_transition_matrix(P)
    _require_unique(P)
    S = P.shape[0]
    M = P.T - torch.eye(S, dtype=P.dtype)
    # the rows of P^T - I add up to zero, so the last equation follows from the others
    M[-1] = 1.0
    b = torch.zeros(S, dtype=P.dtype)
    b[-1] = 1.0
    return torch.linalg.solve(M, b)


def stationary_by_simulation(P, n_steps: int, x0: int = 0, burn_in: int = 0,
                             generator: torch.Generator | None = None) -> Tensor:
    """Fraction of time spent in each state over one long run (after ``burn_in``). Shape (S,).

    By the ergodic theorem this tends to pi for an irreducible chain, with error ~ 1/sqrt(n)."""
    P = check_transition_matrix(P)
    if not 0 <= burn_in < n_steps:
        raise ValueError(f"burn_in must be in [0, n_steps); got {burn_in} with n_steps={n_steps}.")
    states = simulate_chain(P, x0, n_steps, generator=generator)[burn_in + 1:]
    return torch.bincount(states, minlength=P.shape[0]).double() / len(states)


def stationary_distribution(P, method: str = "eigenvector") -> Tensor:
    """The unique stationary distribution pi (pi P = pi, sum(pi) = 1) of ``P``. Shape (S,).

    ``method`` is ``"eigenvector"`` or ``"linear_system"``. Raises ValueError when ``P`` is not
    square and row-stochastic (saying which), and when the stationary distribution is not unique
    (eigenvalue 1 with multiplicity > 1); ``stationary_distributions`` then gives a basis.
    """
    solvers = {"eigenvector": stationary_by_eigenvector, "linear_system": stationary_by_linear_system}
    if method not in solvers:
        raise ValueError(f"Unknown method {method!r}: choose one of {', '.join(solvers)}.")
    return solvers[method](P)


def closed_classes(P) -> list[list[int]]:
    """The closed communicating classes of ``P``: sets the chain, once inside, never leaves."""
    P = check_transition_matrix(P)
    S = P.shape[0]
    reach = (P > 0) | torch.eye(S, dtype=torch.bool)  # paths of length 0 or 1
    for _ in range(max(1, S.bit_length())):  # squaring doubles the path length covered
        reach = (reach.double() @ reach.double()) > 0
    classes = []
    for i in range(S):
        members = [j for j in range(S) if reach[i, j] and reach[j, i]]
        closed = all(reach[j, i] for j in range(S) if reach[i, j])  # every exit leads back
        if closed and members[0] == i:
            classes.append(members)
    return classes


def stationary_distributions(P) -> Tensor:
    """A basis of the stationary distributions: one per closed class, ``(K, S)``, each row
    supported on its class. Every stationary distribution is a mixture of these rows."""
    P = check_transition_matrix(P)
    basis = torch.zeros(0, P.shape[0], dtype=P.dtype)
    for members in closed_classes(P):
        pi = torch.zeros(P.shape[0], dtype=P.dtype)
        idx = torch.tensor(members)
        pi[idx] = stationary_by_linear_system(P[idx][:, idx])  # the chain restricted to the class
        basis = torch.cat([basis, pi[None]])
    return basis


def simulate_chain(P, x0: int, n_steps: int, generator: torch.Generator | None = None) -> Tensor:
    """One trajectory X_0 = x0, X_1, ..., X_n with X_{k+1} ~ P[X_k, :]. Long tensor (n + 1,)."""
    P = check_transition_matrix(P)
    S = P.shape[0]
    if not 0 <= x0 < S or n_steps < 0:
        raise ValueError(f"x0 must be a state in 0..{S - 1} and n_steps >= 0; got {x0}, {n_steps}.")
    cumulative = torch.cumsum(P, dim=1).tolist()
    uniforms = torch.rand(n_steps, generator=generator, dtype=torch.float64).tolist()
    states = [x0]
    for u in uniforms:
        # inverse-CDF sampling: the first j with F(j) > u, where F is the row's cumulative sum
        states.append(min(bisect.bisect_right(cumulative[states[-1]], u), S - 1))
    return torch.tensor(states)


def random_walk(n_steps: int, p: float, generator: torch.Generator | None = None, *,
                n_walkers: int = 1) -> Tensor:
    """Positions X_0 = 0, ..., X_n of walkers stepping +1 w.p. ``p`` and -1 w.p. ``1 - p``.

    Long tensor (n_walkers, n_steps + 1). E[X_n] = n (2p - 1), Var[X_n] = 4 n p (1 - p)."""
    if not 0 <= p <= 1 or n_steps < 0 or n_walkers < 1:
        raise ValueError(f"Need 0 <= p <= 1, n_steps >= 0, n_walkers >= 1; got {p}, {n_steps}, "
                         f"{n_walkers}.")
    forward = torch.rand(n_walkers, n_steps, generator=generator) < p
    steps = 2 * forward.long() - 1  # +1 forward, -1 back
    return torch.cat([torch.zeros(n_walkers, 1, dtype=torch.long), steps.cumsum(dim=1)], dim=1)


def brownian_motion_2d(n_steps: int, dt: float, generator: torch.Generator | None = None, *,
                       n_paths: int = 1) -> Tensor:
    """Paths of planar Brownian motion B_0 = 0, B_{k+1} = B_k + sqrt(dt) z_k, z_k ~ N(0, I_2).

    Shape (n_paths, n_steps + 1, 2): B at times 0, dt, ..., n dt; increments have variance dt."""
    if dt <= 0 or n_steps < 0 or n_paths < 1:
        raise ValueError(f"Need dt > 0, n_steps >= 0, n_paths >= 1; got {dt}, {n_steps}, {n_paths}.")
    increments = math.sqrt(dt) * torch.randn(n_paths, n_steps, 2, generator=generator)
    return torch.cat([torch.zeros(n_paths, 1, 2), increments.cumsum(dim=1)], dim=1)


def _as_float(x0) -> Tensor:
    x0 = torch.as_tensor(x0)
    return x0 if x0.is_floating_point() else x0.to(torch.get_default_dtype())


def metropolis_hastings(log_target: Callable[[Tensor], Tensor], x0, n_steps: int,
                        step_size: float, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, float]:
    """Random-walk Metropolis-Hastings: propose x' = x + step_size * z, z ~ N(0, I), and accept
    with probability min(1, p(x') / p(x)) (the Gaussian proposal is symmetric, so q cancels).

    ``log_target`` maps (..., D) to (...), up to an additive constant. ``x0`` is (D,) for one
    chain or (C, D) for C chains run side by side. Returns the samples, shape
    (n_steps + 1, *x0.shape) with samples[0] = x0, and the fraction of proposals accepted."""
    if step_size <= 0 or n_steps < 1:
        raise ValueError(f"Need step_size > 0 and n_steps >= 1; got {step_size}, {n_steps}.")
    x = _as_float(x0)
    log_p = log_target(x)
    samples, n_accepted = [x], 0
    for _ in range(n_steps):
        proposal = x + step_size * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        log_p_new = log_target(proposal)
        # accept iff log u < log p(x') - log p(x), u ~ U(0, 1)
        log_u = torch.rand(log_p.shape, generator=generator, dtype=x.dtype).log()
        accept = log_u < log_p_new - log_p
        x = torch.where(accept[..., None], proposal, x)
        log_p = torch.where(accept, log_p_new, log_p)
        n_accepted += int(accept.sum())
        samples.append(x)
    return torch.stack(samples), n_accepted / (n_steps * max(1, log_p.numel()))


def langevin_sample(score: Callable[[Tensor], Tensor], x0, n_steps: int, step_size: float,
                    generator: torch.Generator | None = None) -> Tensor:
    """Unadjusted Langevin algorithm: x <- x + tau * score(x) + sqrt(2 tau) * z, z ~ N(0, I),
    with tau = ``step_size`` and score(x) = grad_x log p(x).

    Its stationary distribution tends to p as tau -> 0; for finite tau it is slightly off (for a
    Gaussian N(m, s^2): mean m, variance s^2 / (1 - tau / (2 s^2))). ``x0`` is (D,) or (C, D);
    returns (n_steps + 1, *x0.shape) with the start first."""
    if step_size <= 0 or n_steps < 1:
        raise ValueError(f"Need step_size > 0 and n_steps >= 1; got {step_size}, {n_steps}.")
    x = _as_float(x0)
    samples = [x]
    for _ in range(n_steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + step_size * score(x) + math.sqrt(2 * step_size) * z
        samples.append(x)
    return torch.stack(samples)


def gaussian_mixture_log_prob(x: Tensor, means: Tensor, stds, weights: Tensor) -> Tensor:
    """log p(x) for p = sum_k w_k N(mu_k, s_k^2 I). x (..., D), means (K, D), stds float or (K,),
    weights (K,) summing to 1. Returns (...)."""
    return log_mixture(weights, _component_log_densities(x, means, stds, weights))


def gaussian_mixture_score(x: Tensor, means: Tensor, stds, weights: Tensor) -> Tensor:
    """grad_x log p(x) = sum_k r_k(x) (mu_k - x) / s_k^2, r_k(x) the responsibilities. (..., D)."""
    r = torch.softmax(_component_log_terms(x, means, stds, weights), dim=-1)  # (..., K)
    var = torch.as_tensor(stds, dtype=x.dtype).expand(means.shape[0]) ** 2  # (K,)
    return ((r / var)[..., None] * (means.to(x.dtype) - x[..., None, :])).sum(dim=-2)


def _component_log_densities(x: Tensor, means: Tensor, stds, weights: Tensor) -> Tensor:
    """log N(x; mu_k, s_k^2 I) for every component k: (..., K)."""
    means, weights = means.to(x.dtype), torch.as_tensor(weights, dtype=x.dtype)
    if means.dim() != 2 or x.shape[-1] != means.shape[1] or weights.shape != means.shape[:1]:
        raise ValueError(f"Need x (..., D), means (K, D), weights (K,); got {tuple(x.shape)}, "
                         f"{tuple(means.shape)}, {tuple(weights.shape)}.")
    var = torch.as_tensor(stds, dtype=x.dtype).expand(means.shape[0]) ** 2  # (K,)
    sq = ((x[..., None, :] - means) ** 2).sum(-1)  # (..., K)
    return -sq / (2 * var) - 0.5 * means.shape[1] * torch.log(2 * math.pi * var)


def _component_log_terms(x: Tensor, means: Tensor, stds, weights: Tensor) -> Tensor:
    # log w_k + log N(x; mu_k, s_k^2 I): the log-posterior of component k up to a constant, (..., K)
    return torch.as_tensor(weights, dtype=x.dtype).log() + _component_log_densities(x, means, stds, weights)


def _check_betas(betas) -> Tensor:
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.dim() != 1 or len(betas) == 0 or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError("betas must be a non-empty 1-D sequence of noise levels in (0, 1).")
    return betas


def forward_noising_chain(x0: Tensor, betas, generator: torch.Generator | None = None) -> Tensor:
    """The forward chain of diffusion: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t.

    ``betas`` (T,) holds beta_1..beta_T. Returns x_0..x_T, shape (T + 1, *x0.shape). The chain's
    stationary distribution is N(0, I)."""
    x = _as_float(x0)
    path = [x]
    for beta in _check_betas(betas).tolist():
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * eps
        path.append(x)
    return torch.stack(path)


def noising_marginal(x0: Tensor, betas) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) for
    t = 0..T, with alpha_bar_t = prod_{s<=t} (1 - beta_s). Shapes (T + 1, *x0.shape), (T + 1,)."""
    betas = _check_betas(betas)
    # \bar\alpha_t = \prod_{s \le t} (1 - \beta_s), with \bar\alpha_0 = 1
    alphas_bar = torch.cat([torch.ones(1, dtype=betas.dtype), torch.cumprod(1 - betas, 0)])
    x0 = _as_float(x0)
    mean = alphas_bar.sqrt().to(x0.dtype).reshape(-1, *[1] * x0.dim()) * x0
    return mean, 1 - alphas_bar
