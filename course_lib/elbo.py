"""The VAE's objective and the bounds used to evaluate it (chapter 5).

A model here is anything with ``encode(x) -> (mu, logvar)`` (the Gaussian q(z|x), each ``(B, d)``)
and ``decode(z) -> logits`` (``(B, *image_shape)``, the Bernoulli decoder p(x|z) before the
sigmoid), such as ``vae.VAE`` and ``vae.ConvVAE``. The prior is p(z) = N(0, I).

Conventions: natural logarithms, so every number is in nats; per-example quantities have shape
``(B,)`` and are summed over pixels and latent dimensions; losses are averaged over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .info import gaussian_kl, gaussian_log_prob

Tensor = torch.Tensor


def _check_same_shape(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape or a.dim() < 2:
        raise ValueError(f"{names} must have the same shape (B, ...), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}. Pass one decoder output per image.")


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw z ~ N(mu, e^{logvar}) as a differentiable function of (mu, logvar); same shape as ``mu``.

    z = mu + sigma * eps with sigma = e^{logvar / 2} and eps ~ N(0, I) drawn from ``generator``
    (on the generator's device, then moved to ``mu``'s device).
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}.")
    device = generator.device if generator is not None else mu.device
    eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype).to(mu.device)
    # z = mu + sigma * eps: the randomness sits in eps, which does not depend on (mu, logvar)
    return mu + torch.exp(0.5 * logvar) * eps


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x|z) = sum_i [x_i log s_i + (1 - x_i) log(1 - s_i)], s = sigmoid(logits); shape (B,).

    Computed from the logits with ``binary_cross_entropy_with_logits`` (never log(sigmoid)), so
    it stays finite for saturated logits. ``x`` in {0, 1} (or grey levels in [0, 1] as soft targets).
    """
    _check_same_shape(logits, x, "logits and x")
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_log_likelihood(x_mean: Tensor, x: Tensor, logvar: Tensor | float = 0.0) -> Tensor:
    """log N(x; x_mean, sigma^2 I) summed over the D pixels, sigma^2 = e^{logvar}; shape (B,).

    = -||x - x_mean||^2 / (2 sigma^2) - D/2 log(2 pi sigma^2): a scaled squared error plus a
    constant. ``logvar`` is a float or a tensor broadcastable to ``x`` (a per-pixel variance).
    """
    _check_same_shape(x_mean, x, "x_mean and x")
    return gaussian_log_prob(x, x_mean, logvar).flatten(1).sum(1)


def gaussian_log_density(z: Tensor, mu: Tensor | float = 0.0, logvar: Tensor | float = 0.0) -> Tensor:
    """log N(z; mu, diag(e^{logvar})) summed over the last dimension; ``z`` (..., d) -> (...)."""
    return gaussian_log_prob(z, mu, logvar).sum(-1)


def kl_to_prior(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(e^{logvar})) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1).

    ``mu``, ``logvar``: (B, d) -> (B,). Closed form from ``info.gaussian_kl``, summed over j.
    """
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise ValueError(f"mu and logvar must both have shape (B, d), got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}.")
    return gaussian_kl(mu, logvar).sum(-1)


def vae_loss(logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """The negative ELBO of a Bernoulli-decoder VAE, as (reconstruction, KL), each a scalar.

    reconstruction = mean_b sum_i BCE(logits_bi, x_bi) = -mean_b E_q[log p(x_b|z)] (one sample z),
    KL = mean_b KL(q(z|x_b) || N(0, I)); the loss is reconstruction + beta * KL (beta = 1: the VAE).
    ``logits`` and ``x``: (B, *image_shape); ``mu`` and ``logvar``: (B, d).
    """
    # Kingma & Welling (2014), Appendix B: -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2);
    # the reconstruction term is the Bernoulli log-likelihood of their Appendix C.1, computed from
    # logits with a stable BCE, summed over pixels and averaged over the batch.
    if logits.shape[0] != mu.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} images but mu has {mu.shape[0]} rows.")
    recon = -bernoulli_log_likelihood(logits, x).mean()
    kl = kl_to_prior(mu, logvar).mean()
    return recon, kl


def gaussian_recon_loss(x_mean: Tensor, x: Tensor, logvar: Tensor | float = 0.0) -> Tensor:
    """Reconstruction term for a Gaussian decoder N(x_mean, sigma^2 I), averaged over the batch.

    -log p(x|z) = ||x - x_mean||^2 / (2 sigma^2) + D/2 log(2 pi sigma^2): "MSE" up to the factor
    1 / (2 sigma^2) and the constant, which matter as soon as it is added to the KL term.
    """
    return -gaussian_log_likelihood(x_mean, x, logvar).mean()


def elbo(model, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Monte Carlo estimate of ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) for each image, (B,).

    The expected log-likelihood is averaged over ``n_samples`` reparameterised draws z ~ q(z|x); the
    KL term is in closed form. Unbiased for the ELBO, which is <= log p(x). The model comes first, as
    the variational distribution does in ``vi.elbo(q, x)``.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    mu, logvar = model.encode(x)  # (B, d) each
    b, d = mu.shape
    x = x.reshape(b, *model.config.in_shape)
    z = reparameterize(mu.expand(n_samples, b, d), logvar.expand(n_samples, b, d), generator)  # (S, B, d)
    rec = bernoulli_log_likelihood(model.decode(z.reshape(n_samples * b, d)),
                                   x.repeat(n_samples, *([1] * (x.dim() - 1)))).view(n_samples, b)
    return rec.mean(0) - kl_to_prior(mu, logvar)


def log_importance_weights(model, x: Tensor, k: int, generator: torch.Generator | None = None,
                           max_decodes: int = 2**15) -> Tensor:
    """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x) for k draws z_s ~ q(z|x); shape (k, B).

    The k samples are decoded in chunks of at most ``max_decodes`` images, so k = 1000 or more
    fits in memory. Call it under ``torch.no_grad()`` for evaluation.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the number of importance samples) must be a positive integer, got {k!r}.")
    mu, logvar = model.encode(x)  # (B, d)
    b = mu.shape[0]
    x = x.reshape(b, *model.config.in_shape)
    chunk = max(1, max_decodes // b)
    out = []
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        z = reparameterize(mu.expand(c, *mu.shape), logvar.expand(c, *mu.shape), generator)  # (c, B, d)
        logits = model.decode(z.reshape(c * b, -1))  # (c*B, *image_shape)
        log_px_z = bernoulli_log_likelihood(logits, x.repeat(c, *([1] * (x.dim() - 1)))).view(c, b)
        out.append(log_px_z + gaussian_log_density(z) - gaussian_log_density(z, mu, logvar))
    return torch.cat(out)


def iwae_bound(model, x: Tensor, k: int, generator: torch.Generator | None = None,
               max_decodes: int = 2**15) -> Tensor:
    """One random estimate of the IWAE bound L_k of each image, (B,) in float64.

    Returns log (1/k) sum_{s=1}^k w_s = logsumexp_s(log w_s) - log k for k fresh draws z_s ~ q(z|x)
    (``log_importance_weights``). Its expectation is the bound of Burda et al. (2016),
    L_k = E[log (1/k) sum_s w_s], with ELBO = L_1 <= L_k <= L_{k+1} <= log p(x). The estimate is random:
    it is unbiased for L_k (not for log p(x)), and one draw can land above L_k, even above log p(x).
    Average many estimates (or many images) before comparing it with a bound.
    """
    log_w = log_importance_weights(model, x, k, generator, max_decodes).double()  # (k, B)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_log_likelihood(model, x: Tensor, k: int, generator: torch.Generator | None = None,
                        max_decodes: int = 2**15) -> Tensor:
    """The old name of ``iwae_bound`` (it estimates L_k, not log p(x)); kept for older code."""
    return iwae_bound(model, x, k, generator, max_decodes)


@torch.no_grad()
def evaluate(model, x: Tensor, k: int = 1000, batch_size: int = 100,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """Held-out numbers in nats per image, averaged over ``x`` (already binarised).

    Returns ``neg_elbo`` (-ELBO, one sample, closed-form KL), ``recon`` and ``kl`` (its two terms)
    and ``iwae_nll`` (minus the average of one ``iwae_bound`` estimate of L_k per image, an upper
    bound on -log p(x) in expectation); iwae_nll <= neg_elbo on average.
    """
    totals = {"neg_elbo": 0.0, "recon": 0.0, "kl": 0.0, "iwae_nll": 0.0}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start: start + batch_size]
        mu, logvar = model.encode(xb)
        rec = bernoulli_log_likelihood(model.decode(reparameterize(mu, logvar, generator)),
                                       xb.reshape(mu.shape[0], *model.config.in_shape))
        kl = kl_to_prior(mu, logvar)
        totals["recon"] -= rec.double().sum().item()
        totals["kl"] += kl.double().sum().item()
        totals["iwae_nll"] -= iwae_bound(model, xb, k, generator).sum().item()
    totals["neg_elbo"] = totals["recon"] + totals["kl"]
    return {name: value / x.shape[0] for name, value in totals.items()}


@torch.no_grad()
def log_likelihood_quadrature(model, x: Tensor, n_points: int = 2001, limit: float = 8.0) -> Tensor:
    """log p(x) = log integral p(x|z) N(z; 0, I) dz on a grid, for latent_dim 1 or 2; (B,) float64.

    Midpoint rule on [-limit, limit]^d with ``n_points`` cells per dimension: the prior mass outside
    is below 1e-14 for limit = 8, and the rule's error shrinks like the cell width squared, also
    for the kinks of a ReLU decoder. The exact reference that the IWAE estimate is tested against.
    """
    d = model.config.latent_dim
    if d not in (1, 2):
        raise ValueError(f"quadrature needs latent_dim 1 or 2, this model has {d}; use "
                         "iwae_bound (an estimate of a lower bound on log p(x)) instead.")
    h = 2 * limit / n_points
    nodes = torch.linspace(-limit + h / 2, limit - h / 2, n_points, dtype=torch.float64)
    grid = nodes[:, None] if d == 1 else torch.cartesian_prod(nodes, nodes)  # (M, d)
    # log [ N(z; 0, I) h^d ]: the prior density times the cell volume
    log_w = gaussian_log_density(grid) + d * math.log(h)
    z = grid.to(x.device, torch.get_default_dtype())
    flat_x = x.reshape(x.shape[0], -1)
    logits = model.decode(z).reshape(z.shape[0], -1)  # (M, D), decoded once
    out = []
    for xb in flat_x:  # one image at a time
        log_px_z = bernoulli_log_likelihood(logits, xb.expand_as(logits)).double()  # (M,)
        out.append(torch.logsumexp(log_px_z + log_w.to(x.device), dim=0))
    return torch.stack(out)
