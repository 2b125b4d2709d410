"""The robust pixel likelihood of the error-based baselines (LiDO sec. 4.1).

"We compute the match between the actual and rendered image pixels (RGB intensities
being between 0 and 1) using a robustified Gaussian likelihood model (with standard
deviation 0.1 and inlier probability 0.8)." Per pixel, the observed RGB ``x`` given
the rendered RGB ``r`` has density

    p(x | r) = w N(x; r, sigma^2 I_3) + (1 - w) U([0, 1]^3),

a Gaussian inlier mixed with a uniform outlier on the colour cube (density 1).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import logsumexp

SIGMA: float = 0.1
INLIER: float = 0.8


def pixel_log_likelihood(rendered, observed, *, sigma: float = SIGMA, inlier: float = INLIER):
    """``log p(observed | rendered)`` per pixel: (..., H, W, 3) -> (..., H, W)."""
    if not 0.0 < inlier <= 1.0:
        raise ValueError(f"inlier={inlier} must lie in (0, 1]")
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be positive")
    rendered, observed = jnp.asarray(rendered), jnp.asarray(observed)
    if rendered.shape != observed.shape or rendered.shape[-1:] != (3,):
        raise ValueError(f"rendered {rendered.shape} and observed {observed.shape} must be "
                         "equal shapes ending in 3 (RGB)")
    sq = jnp.sum((observed - rendered) ** 2, -1)
    log_gauss = -0.5 * sq / sigma ** 2 - 1.5 * math.log(2 * math.pi * sigma ** 2)
    if inlier == 1.0:
        return log_gauss
    return logsumexp(jnp.stack([math.log(inlier) + log_gauss,
                                jnp.full_like(log_gauss, math.log(1 - inlier))]), axis=0)


def negative_log_likelihood(rendered, observed, mask=None, **kw):
    """Sum over pixels (of ``mask`` when given) of ``-log p``: the baselines' objective."""
    ll = pixel_log_likelihood(rendered, observed, **kw)
    if mask is not None:
        ll = jnp.where(jnp.asarray(mask, bool), ll, 0.0)
    return -jnp.sum(ll, axis=(-2, -1))
