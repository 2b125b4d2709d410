"""Parametric distributions ``q_psi(s)`` over simulator inputs (AutoSimulate Sec. 4.1).

Each distribution is a frozen dataclass holding only static settings; its
parameters ``psi`` are a dict of arrays, so they can be differentiated, jitted and
updated by optax. Every distribution provides

- ``sample(key, psi) -> s``: one sample (``jax.vmap`` over keys for many);
- ``log_prob(psi, s) -> scalar``: log density (or mass) of one sample, summed
  over independent coordinates;
- ``reparameterised``: whether ``sample`` is differentiable in ``psi`` with the
  right derivative (pathwise estimators need it);
- ``init(...) -> psi``: parameters from natural quantities.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy import stats


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Independent Gaussians, ``psi = {"loc": (*shape), "log_scale": (*shape)}``.

    ``s = loc + exp(log_scale) * eps`` with ``eps ~ N(0, I)``: reparameterised.
    """

    reparameterised = True

    @staticmethod
    def init(loc, scale) -> dict[str, jax.Array]:
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        return {"loc": loc, "log_scale": jnp.log(jnp.broadcast_to(scale, loc.shape).astype(loc.dtype))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        loc = psi["loc"]
        eps = jax.random.normal(key, loc.shape, loc.dtype)
        return loc + jnp.exp(psi["log_scale"]) * eps

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        return jnp.sum(stats.norm.logpdf(s, psi["loc"], jnp.exp(psi["log_scale"])))


@dataclasses.dataclass(frozen=True)
class Categorical:
    """Independent categoricals, ``psi = {"logits": (*shape, K)}``, samples ``(*shape)`` ints.

    Probabilities are ``softmax(logits)`` over the last axis. Not reparameterised:
    use a score-function estimator.
    """

    reparameterised = False

    @staticmethod
    def init(probs) -> dict[str, jax.Array]:
        return {"logits": jnp.log(jnp.asarray(probs, dtype=jnp.result_type(float)))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        return jax.random.categorical(key, psi["logits"], axis=-1)

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(psi["logits"], axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, jnp.asarray(s)[..., None], axis=-1))


def check_distribution(dist: Any) -> None:
    """Raises ``TypeError`` naming what ``dist`` lacks."""
    missing = [n for n in ("sample", "log_prob", "reparameterised") if not hasattr(dist, n)]
    if missing:
        raise TypeError(
            f"{type(dist).__name__} is not a distribution: it lacks {', '.join(missing)}"
        )
