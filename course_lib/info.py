"""Information theory: entropy, cross-entropy, KL and JS divergences (chapter 2).

Conventions: natural logarithms (nats) unless ``base=2`` (bits) is asked for; ``logvar`` is the
log-variance of a Gaussian.
"""

from __future__ import annotations

import torch


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
