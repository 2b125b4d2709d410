"""The outer loops' parameter update that never applies a non-finite step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def guarded_update(grad: Any, optimizer: optax.GradientTransformation, opt_state: Any,
                   params: Any) -> tuple[Any, Any, jax.Array]:
    """One optax step on ``params``, skipped when any leaf of ``grad`` is not finite.

    Returns:
      ``(params, opt_state, applied)``: the updated pair, or the given one unchanged
      (optimiser moments included) when ``applied`` is False.
    """
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)]))
    safe = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grad)
    updates, new_state = optimizer.update(safe, opt_state, params)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    return (jax.tree.map(keep, optax.apply_updates(params, updates), params),
            jax.tree.map(keep, new_state, opt_state), finite)
