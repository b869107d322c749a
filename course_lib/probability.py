"""Probability for generative modelling (chapter 1): maximum likelihood, Bayes' rule, the primer's
Gaussian conditionals and Monte Carlo estimates with standard errors, discrete Bayesian networks
(ancestral sampling, exact inference), Gaussian mixtures fitted by EM, and a tiny autoregressive
model over binary pixels.

Conventions: natural logarithms; discrete variables take values ``0, ..., K-1``; probabilities
along the *last* dimension of a table sum to one; randomness comes from an explicit ``generator``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


# --- maximum likelihood -------------------------------------------------------------------------

def bernoulli_log_likelihood(theta, k: int, n: int) -> Tensor:
    """log L(theta) = k log theta + (n - k) log(1 - theta) for k successes in n i.i.d. draws.

    ``theta`` may be any shape (e.g. a grid of candidate values); the result has its shape.
    """
    _check_counts(k, n)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    # xlogy gives 0 log 0 = 0 at the ends of [0, 1]
    return torch.xlogy(torch.tensor(float(k)), theta) + torch.xlogy(torch.tensor(float(n - k)), 1 - theta)


def bernoulli_mle(k: int, n: int) -> float:
    """Maximum-likelihood estimate of a Bernoulli probability: theta_hat = k / n."""
    _check_counts(k, n)
    return k / n


def categorical_mle(counts) -> Tensor:
    """Maximum-likelihood categorical distribution from counts ``(..., K)``: p_hat_k = n_k / sum_j n_j."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() == 0 or (counts < 0).any() or (counts.sum(-1) <= 0).any():
        raise ValueError("counts must be a (..., K) tensor of non-negative numbers with at least one "
                         f"observation per row; got {counts.tolist()}.")
    return counts / counts.sum(-1, keepdim=True)


def _check_counts(k: int, n: int) -> None:
    if not (isinstance(k, int) and isinstance(n, int)) or n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n with n >= 1 (k successes in n draws); got k={k!r}, "
                         f"n={n!r}.")


# --- Bayes' rule --------------------------------------------------------------------------------

def bayes_rule(prior, likelihood) -> Tensor:
    """Posterior over K hypotheses h after evidence e: p(h | e) = p(e | h) p(h) / sum_h' p(e | h') p(h').

    ``prior`` ``(K,)`` sums to one; ``likelihood`` ``(..., K)`` holds p(e | h) for each h.
    Returns ``(..., K)``.
    """
    prior = _check_table(prior, "prior")
    likelihood = torch.as_tensor(likelihood, dtype=torch.float64)
    if likelihood.shape[-1:] != prior.shape or (likelihood < 0).any() or (likelihood > 1).any():
        raise ValueError(f"likelihood must hold p(e | h) in [0, 1] for each of the {prior.numel()} "
                         f"hypotheses (last dimension); got shape {tuple(likelihood.shape)}.")
    joint = likelihood * prior  # p(e, h)
    evidence = joint.sum(-1, keepdim=True)  # p(e) = sum_h p(e, h)
    if (evidence == 0).any():
        raise ValueError("the evidence has probability zero under every hypothesis; p(h | e) is undefined.")
    return joint / evidence


def _check_table(table, name: str) -> Tensor:
    table = torch.as_tensor(table, dtype=torch.float64)
    if table.dim() == 0 or (table < 0).any() or ((table.sum(-1) - 1).abs() > 1e-6).any():
        raise ValueError(f"{name} must hold non-negative probabilities that sum to one along its last "
                         f"dimension; got {table.tolist()}. Normalise it with t / t.sum(-1, keepdim=True).")
    return table


# --- expectations, Gaussians and Monte Carlo (the primer) --------------------------------------

def _check_gaussian(mean, cov) -> tuple[Tensor, Tensor]:
    mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    d = mean.shape[-1] if mean.dim() == 1 else -1
    if mean.dim() != 1 or cov.shape != (d, d) or not torch.allclose(cov, cov.T):
        raise ValueError(f"need a mean of shape (D,) and a symmetric covariance of shape (D, D); got "
                         f"{tuple(mean.shape)} and {tuple(cov.shape)}.")
    if torch.linalg.cholesky_ex(cov).info != 0:
        raise ValueError("the covariance must be positive definite (all eigenvalues > 0); got eigenvalues "
                         f"{torch.linalg.eigvalsh(cov).tolist()}.")
    return mean, cov


def mvn_sample(n: int, mean, cov, generator: torch.Generator | None = None) -> Tensor:
    """``n`` draws of N(mu, Sigma) as x = mu + L eps, eps ~ N(0, I), with Sigma = L L^T (Cholesky).

    ``mean`` ``(D,)``, ``cov`` ``(D, D)`` positive definite; returns ``(n, D)`` in float64.
    """
    mean, cov = _check_gaussian(mean, cov)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer number of samples, got {n!r}.")
    eps = torch.randn(n, mean.shape[0], dtype=torch.float64, generator=generator)
    return mean + eps @ torch.linalg.cholesky(cov).T  # (n, D): row i is mu + L eps_i


def gaussian_conditional(mean, cov, idx, value) -> tuple[Tensor, Tensor]:
    """Conditional of a Gaussian x ~ N(mu, Sigma) given x_b = value, where b = ``idx``, a = the rest:

    mu_{a|b} = mu_a + Sigma_ab Sigma_bb^{-1} (value - mu_b),
    Sigma_{a|b} = Sigma_aa - Sigma_ab Sigma_bb^{-1} Sigma_ba (the Schur complement of Sigma_bb).

    ``mean`` ``(D,)``, ``cov`` ``(D, D)``, ``idx`` a list of observed coordinates, ``value`` ``(len(idx),)``.
    Returns the mean ``(D - len(idx),)`` and covariance of the unobserved coordinates, in increasing order.
    """
    mean, cov = _check_gaussian(mean, cov)
    d = mean.shape[0]
    b = [int(i) for i in idx]
    if not b or len(set(b)) != len(b) or any(not 0 <= i < d for i in b) or len(b) == d:
        raise ValueError(f"idx must list distinct observed coordinates in [0, {d}), at least one and not all "
                         f"of them; got {list(idx)}.")
    value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if value.shape != (len(b),):
        raise ValueError(f"value must hold one number per observed coordinate ({len(b)}); got "
                         f"{value.tolist()}.")
    a = [i for i in range(d) if i not in b]
    s_ab, s_bb = cov[a][:, b], cov[b][:, b]
    gain = torch.linalg.solve(s_bb, s_ab.T).T  # Sigma_ab Sigma_bb^{-1}, (|a|, |b|)
    cond_mean = mean[a] + gain @ (value - mean[b])
    cond_cov = cov[a][:, a] - gain @ s_ab.T
    return cond_mean, (cond_cov + cond_cov.T) / 2  # symmetrise away rounding


def monte_carlo_mean(f: Callable[[Tensor], Tensor], sampler: Callable[..., Tensor], n: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Monte Carlo estimate of E[f(X)] and its standard error from ``n`` i.i.d. draws
    X_1, ..., X_n = sampler(n, generator):

    mu_hat = (1/n) sum_i f(X_i),   se = s / sqrt(n),   s^2 = sum_i (f(X_i) - mu_hat)^2 / (n - 1).

    ``f`` maps the samples to values of shape ``(n,)`` or ``(n, ...)``; both results have shape ``(...)``.
    mu_hat +- 1.96 se is an approximate 95% confidence interval (central limit theorem).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (a standard error needs two draws), got {n!r}.")
    values = torch.as_tensor(f(sampler(n, generator)), dtype=torch.float64)
    if values.dim() == 0 or values.shape[0] != n:
        raise ValueError(f"f must return one value per draw, shape ({n}, ...); got {tuple(values.shape)}.")
    return values.mean(0), values.std(0) / math.sqrt(n)  # std uses n - 1


def sticky_bernoulli(n_chains: int, n: int, theta: float, lam: float,
                     generator: torch.Generator | None = None) -> Tensor:
    """Dependent 0/1 draws with P(x_t = 1) = theta: x_1 ~ Bernoulli(theta), then x_{t+1} = x_t with
    probability lambda, else a fresh Bernoulli(theta). This two-state Markov chain is stationary, with
    Cov(x_t, x_{t+k}) = lambda^k theta (1 - theta). Returns ``(n_chains, n)`` float64."""
    if not (0 < theta < 1 and 0 <= lam < 1) or n_chains <= 0 or n <= 0:
        raise ValueError(f"need 0 < theta < 1, 0 <= lam < 1 and positive sizes; got theta={theta}, "
                         f"lam={lam}, n_chains={n_chains}, n={n}.")
    fresh = torch.bernoulli(torch.full((n_chains, n), theta, dtype=torch.float64), generator=generator)
    keep = torch.rand(n_chains, n, dtype=torch.float64, generator=generator) < lam
    x = fresh.clone()
    for t in range(1, n):  # x_t = x_{t-1} where the chain sticks, else the fresh draw
        x[:, t] = torch.where(keep[:, t], x[:, t - 1], fresh[:, t])
    return x


def variance_inflation(lam: float, n: int | None = None) -> float:
    """Var(mean of n draws) / (sigma^2 / n) for a stationary sequence with correlation lambda^k at lag k:

    1 + 2 sum_{k=1}^{n-1} (1 - k/n) lambda^k, which tends to (1 + lambda) / (1 - lambda) as n -> infinity
    (``n=None``). The effective sample size is n divided by this factor.
    """
    if not -1 < lam < 1:
        raise ValueError(f"the lag-one correlation lambda must lie in (-1, 1), got {lam}.")
    if n is None:
        return (1 + lam) / (1 - lam)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    k = torch.arange(1, n, dtype=torch.float64)
    return 1 + 2 * float(((1 - k / n) * lam**k).sum())


# --- discrete Bayesian networks -----------------------------------------------------------------

def count_parameters(cards: list[int], parents: list[tuple[int, ...]]) -> int:
    """Free parameters of a Bayesian network: sum_i (K_i - 1) prod_{j in pa(i)} K_j.

    ``cards[i]`` = K_i is the number of values of variable i, ``parents[i]`` its parents. With
    parents (), (0,), (0, 1), ... (the chain rule) this is prod_i K_i - 1, the full joint table.
    """
    _check_structure(cards, parents)
    return sum((k - 1) * math.prod(cards[j] for j in pa) for k, pa in zip(cards, parents, strict=True))


def _check_structure(cards: list[int], parents: list[tuple[int, ...]]) -> None:
    if len(cards) != len(parents) or any(not isinstance(k, int) or k < 2 for k in cards):
        raise ValueError(f"need one parent tuple per variable and every variable with >= 2 values; got "
                         f"cards={cards}, parents={parents}.")
    for i, pa in enumerate(parents):
        if any(not 0 <= j < i for j in pa) or len(set(pa)) != len(pa):
            raise ValueError(f"variable {i} has parents {pa}: number the variables so that every parent "
                             "comes before its child (a topological order); the graph must be acyclic.")


@dataclass
class BayesNet:
    """A discrete Bayesian network p(x) = prod_i p(x_i | x_pa(i)), variables in topological order.

    ``cpts[i]`` has shape ``(K_pa1, ..., K_paM, K_i)``: one distribution over x_i (last dimension)
    for each value of its parents, in the order of ``parents[i]``.
    """

    cards: list[int]
    parents: list[tuple[int, ...]]
    cpts: list[Tensor] = field(repr=False)
    names: list[str] | None = None

    def __post_init__(self) -> None:
        _check_structure(self.cards, self.parents)
        self.cpts = [_check_table(t, f"cpts[{i}]") for i, t in enumerate(self.cpts)]
        for i, (t, pa) in enumerate(zip(self.cpts, self.parents, strict=True)):
            want = tuple(self.cards[j] for j in pa) + (self.cards[i],)
            if tuple(t.shape) != want:
                raise ValueError(f"cpts[{i}] must have shape {want} (parents' values, then x_{i}); "
                                 f"got {tuple(t.shape)}.")

    def num_parameters(self) -> int:
        return count_parameters(self.cards, self.parents)


def sprinkler_network() -> BayesNet:
    """The chapter's network of four binary variables, p(x1) p(x2 | x1) p(x3 | x1) p(x4 | x2, x3):
    cloudy, sprinkler, rain, wet grass (0-based indices 0..3 in code)."""
    cpts = [[0.5, 0.5],                                          # p(x1)
            [[0.6, 0.4], [0.9, 0.1]],                            # p(x2 | x1): rows x1 = 0, 1
            [[0.8, 0.2], [0.3, 0.7]],                            # p(x3 | x1)
            [[[0.95, 0.05], [0.1, 0.9]], [[0.15, 0.85], [0.02, 0.98]]]]  # p(x4 | x2, x3)
    return BayesNet(cards=[2, 2, 2, 2], parents=[(), (0,), (0,), (1, 2)],
                    cpts=[torch.tensor(t, dtype=torch.float64) for t in cpts],
                    names=["cloudy", "sprinkler", "rain", "wet"])


def hmm_network(pi, A, B, T: int) -> BayesNet:
    """A hidden Markov model unrolled over T steps as a Bayesian network with variables
    (z_1, x_1, z_2, x_2, ...): p(z_1) = pi, p(z_t | z_{t-1}) = A[z_{t-1}] (transition),
    p(x_t | z_t) = B[z_t] (emission). ``pi`` ``(S,)``, ``A`` ``(S, S)``, ``B`` ``(S, M)``."""
    pi, A, B = (torch.as_tensor(t, dtype=torch.float64) for t in (pi, A, B))
    S, M = B.shape
    cards, parents, cpts = [], [], []
    for t in range(T):  # z_t has index 2t, x_t has index 2t + 1
        cards += [S, M]
        parents += [() if t == 0 else (2 * t - 2,), (2 * t,)]
        cpts += [pi if t == 0 else A, B]
    return BayesNet(cards, parents, cpts)


def joint_table(net: BayesNet) -> Tensor:
    """The full joint p(x_1, ..., x_V) = prod_i p(x_i | x_pa(i)) as a tensor of shape ``cards``."""
    return _contract(net, keep=list(range(len(net.cards))))


def marginal_by_enumeration(net: BayesNet, keep: list[int]) -> Tensor:
    """p(x_keep) by summing the full joint table over all other variables (cost prod_i K_i)."""
    if len(set(keep)) != len(keep) or any(not 0 <= i < len(net.cards) for i in keep):
        raise ValueError(f"keep must list distinct variable indices in [0, {len(net.cards)}); got {keep}.")
    joint = joint_table(net)
    drop = [i for i in range(len(net.cards)) if i not in keep]
    marginal = joint.sum(dim=drop) if drop else joint  # remaining dims are in increasing order
    return marginal.permute(*torch.tensor(keep).argsort().argsort().tolist())


def variable_elimination(net: BayesNet, query: int, evidence: dict[int, int] | None = None) -> Tensor:
    """p(x_query | evidence) by variable elimination: sum out one variable at a time, multiplying only
    the factors that mention it. Returns ``(K_query,)``."""
    evidence = dict(evidence or {})
    if query in evidence or not 0 <= query < len(net.cards):
        raise ValueError(f"query must be a variable index in [0, {len(net.cards)}) that is not observed.")
    # a factor is (variables, table); observing x_j = v slices every table that mentions j
    factors = []
    for i, (t, pa) in enumerate(zip(net.cpts, net.parents, strict=True)):
        scope = list(pa) + [i]
        for j, v in evidence.items():
            if j in scope:
                t = t.select(scope.index(j), v)
                scope.remove(j)
        factors.append((scope, t))
    hidden = [i for i in range(len(net.cards)) if i != query and i not in evidence]
    for var in hidden:  # elimination order: variable index order
        used = [f for f in factors if var in f[0]]
        factors = [f for f in factors if var not in f[0]]
        scope = sorted(set().union(*(f[0] for f in used)) - {var})
        factors.append((scope, _einsum(used, scope)))  # sum_{x_var} prod of the factors that use it
    unnormalised = _einsum(factors, [query])
    return unnormalised / unnormalised.sum()


def _einsum(factors: list[tuple[list[int], Tensor]], out: list[int]) -> Tensor:
    letters = string.ascii_letters
    lhs = ",".join("".join(letters[v] for v in scope) for scope, _ in factors)
    return torch.einsum(f"{lhs}->{''.join(letters[v] for v in out)}", *(t for _, t in factors))


def _contract(net: BayesNet, keep: list[int]) -> Tensor:
    return _einsum([(list(pa) + [i], t) for i, (t, pa) in enumerate(zip(net.cpts, net.parents, strict=True))],
                   keep)


def ancestral_sample(net: BayesNet, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` i.i.d. samples ``(n, V)`` of x: draw x_1, then each x_i ~ p(x_i | x_pa(i)) given its
    already-drawn parents (topological order)."""
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer number of samples, got {n!r}.")
    x = torch.zeros(n, len(net.cards), dtype=torch.long)
    for i, (t, pa) in enumerate(zip(net.cpts, net.parents, strict=True)):
        probs = t[tuple(x[:, j] for j in pa)] if pa else t.expand(n, -1)  # (n, K_i)
        x[:, i] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return x


# --- Gaussian mixtures and EM -------------------------------------------------------------------

def mvn_log_prob(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mu, Sigma) = -1/2 [D log 2 pi + log det Sigma + (x - mu)^T Sigma^{-1} (x - mu)].

    ``x`` ``(N, D)``, ``mean`` ``(..., D)``, ``cov`` ``(..., D, D)``; returns ``(N, ...)``.
    """
    chol = torch.linalg.cholesky(cov)  # Sigma = L L^T
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype).expand_as(cov)
    chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # L^{-1}, (..., D, D)
    diff = x.reshape(x.shape[0], *([1] * (mean.dim() - 1)), -1) - mean  # (N, ..., D)
    white = torch.einsum("...ij,n...j->n...i", chol_inv, diff)  # L^{-1} (x - mu), (N, ..., D)
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (x.shape[1] * math.log(2 * math.pi) + log_det + white.pow(2).sum(-1))


def log_mixture(weights: Tensor, log_components: Tensor) -> Tensor:
    """log p(x) = log sum_k pi_k p_k(x) of a mixture, from its components' log-densities log p_k(x):

    logsumexp_k (log pi_k + log p_k(x)), which never exponentiates a log-density (far from every
    component, p_k(x) underflows to 0 and the naive log of the sum to -inf). ``weights`` ``(K,)``
    are the mixing weights pi_k (non-negative, summing to one), ``log_components`` ``(..., K)``
    holds log p_k(x) in its last dimension; returns ``(...)``. Every mixture density of the course
    is this with its own components: ``gmm_log_prob`` (full covariances), ``info.mixture_log_prob``
    (1-D) and ``markov.gaussian_mixture_log_prob`` (isotropic).
    """
    given = torch.as_tensor(weights)
    low = (torch.float16, torch.bfloat16, torch.float32)
    # the sum is checked to the precision the weights were given in (float32 0.3 + 0.3 + 0.4 is
    # 1 + 2e-8 once cast to float64)
    tol = 1e-5 if given.dtype in low or log_components.dtype in low else 1e-9
    weights = given.to(dtype=log_components.dtype, device=log_components.device)
    if weights.dim() != 1 or log_components.shape[-1:] != weights.shape:
        raise ValueError(f"need weights (K,) and log_components (..., K); got {tuple(weights.shape)} and "
                         f"{tuple(log_components.shape)}.")
    if (weights < 0).any() or abs(weights.sum().item() - 1) > tol:
        raise ValueError(f"the mixing weights must be non-negative and sum to 1; got {weights.tolist()}.")
    return torch.logsumexp(weights.log() + log_components, dim=-1)


def gmm_log_prob(x: Tensor, weights: Tensor, means: Tensor, covs: Tensor) -> Tensor:
    """log p(x) = log sum_k pi_k N(x; mu_k, Sigma_k) for ``x`` ``(N, D)``, ``weights`` ``(K,)``,
    ``means`` ``(K, D)``, ``covs`` ``(K, D, D)``; returns ``(N,)``."""
    return log_mixture(weights, mvn_log_prob(x, means, covs))  # mvn_log_prob: (N, K)


def gmm_sample(n: int, weights: Tensor, means: Tensor, covs: Tensor,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Ancestral sampling: z ~ Categorical(pi), then x ~ N(mu_z, Sigma_z).

    ``weights`` ``(K,)``, ``means`` ``(K, D)``, ``covs`` ``(K, D, D)``; returns x ``(n, D)`` and z ``(n,)``.
    """
    z = torch.multinomial(weights, n, replacement=True, generator=generator)
    eps = torch.randn(n, means.shape[1], dtype=means.dtype, generator=generator)
    x = means[z] + (torch.linalg.cholesky(covs)[z] @ eps.unsqueeze(-1)).squeeze(-1)  # mu + L eps
    return x, z


@dataclass
class GMMFit:
    """Result of ``gmm_em``: parameters, mean log-likelihood per EM iteration, responsibilities."""

    weights: Tensor  # (K,)
    means: Tensor  # (K, D)
    covs: Tensor  # (K, D, D)
    log_likelihood: list[float]  # (1/N) sum_n log p(x_n) before each M-step, and at the end
    resp: Tensor  # (N, K) responsibilities r_nk = p(z_n = k | x_n)


def gmm_em(x: Tensor, k: int, n_iter: int = 100, generator: torch.Generator | None = None,
           tol: float = 1e-8, reg: float = 1e-6) -> GMMFit:
    """Fit a K-component Gaussian mixture to ``x`` ``(N, D)`` by expectation-maximisation.

    E-step: r_nk = pi_k N(x_n; mu_k, Sigma_k) / sum_j pi_j N(x_n; mu_j, Sigma_j) (Bayes' rule).
    M-step: N_k = sum_n r_nk, pi_k = N_k / N, mu_k = sum_n r_nk x_n / N_k,
    Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k (+ reg I for stability).
    Starts from K distinct data points as means; stops after ``n_iter`` steps or when the mean
    log-likelihood improves by less than ``tol``. Works in float64.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2 or not isinstance(k, int) or not 1 <= k <= x.shape[0]:
        raise ValueError(f"x must be a (N, D) tensor of data and k an integer in [1, N]; got x of shape "
                         f"{tuple(x.shape)} and k={k!r}.")
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype)
    weights = torch.full((k,), 1.0 / k, dtype=x.dtype)
    means = x[torch.randperm(n, generator=generator)[:k]].clone()
    covs = torch.cov(x.T).reshape(d, d).expand(k, d, d) + reg * eye
    history: list[float] = []
    for _ in range(n_iter + 1):
        log_joint = weights.log() + mvn_log_prob(x, means, covs)  # (N, K): log pi_k N(x_n; ...)
        log_px = torch.logsumexp(log_joint, dim=1)  # (N,)
        history.append(log_px.mean().item())
        resp = (log_joint - log_px[:, None]).exp()  # E-step
        if len(history) > n_iter or (len(history) > 1 and history[-1] - history[-2] < tol):
            break
        nk = resp.sum(0)  # (K,)  M-step
        weights = nk / n
        means = resp.T @ x / nk[:, None]
        diff = x[:, None, :] - means  # (N, K, D)
        covs = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk[:, None, None] + reg * eye
    return GMMFit(weights, means, covs, history, resp)


# --- a tiny autoregressive model over binary pixels ---------------------------------------------

def autoregressive_log_prob(x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
    """Exact log p(x) = sum_d log p(x_d | x_<d) for binary ``x`` ``(N, D)`` with logistic conditionals
    p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{j<d} W_dj x_j) (only the strictly lower triangle of
    ``weights`` ``(D, D)`` is used). All D conditionals are evaluated in parallel."""
    logits = x.to(weights.dtype) @ torch.tril(weights, -1).T + biases  # (N, D); row d sees x_<d
    return -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.to(weights.dtype), reduction="none").sum(-1)


def autoregressive_sample(weights: Tensor, biases: Tensor, n: int,
                          generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples ``(n, D)``, drawn one pixel at a time: x_d ~ Bernoulli(sigmoid(b_d + W_d,<d x_<d))."""
    d = biases.shape[0]
    x = torch.zeros(n, d, dtype=weights.dtype)
    for i in range(d):  # D sequential steps: pixel i needs pixels 0..i-1
        p = torch.sigmoid(biases[i] + x[:, :i] @ weights[i, :i])
        x[:, i] = torch.bernoulli(p, generator=generator)
    return x
