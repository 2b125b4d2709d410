"""Random-direction finite differences (hybrid gradient Eq. 9-10) for pytrees.

The estimator itself lives in :mod:`render.finite_diff`, shared with
``render.black_box``; this module accepts pytree inputs, and adds the
common-random-numbers estimator of ``d/dpsi E[h(f(psi, r))]`` that hybrid
gradient uses for renderers that are not differentiable.

Eq. 10 averages ``(f(x + delta_j) - f(x - delta_j)) / (2 |delta_j|) (x) delta_j /
|delta_j|`` over ``m`` Gaussian directions; its mean is ``J / d`` for a linear map
(``E[u u^T] = I / d`` for a random unit vector ``u``), so we scale by ``d / m``
instead of ``1 / m``, which makes the estimate unbiased for linear maps and
correct to first order in ``sigma`` for smooth ones. For a linear map its mean
squared error is ``(d - 1) ||J||_F^2 / m``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from render import finite_diff as _fd
from simopt_jax.distributions import check_distribution
from simopt_jax.hypergrad.score import ExpectationStats, _check, contract


def _unravel_columns(jacobian: Any, unravel: Callable, x: Any) -> Any:
    """``(*out, d)`` leaves to ``jax.jacobian``'s nesting for a pytree ``x``."""
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(x)) and jnp.ndim(x) == 1:
        return jacobian

    def leaf(j):
        out_shape = j.shape[:-1]
        rows = jax.vmap(unravel)(j.reshape((-1, j.shape[-1])))
        return jax.tree.map(lambda r: r.reshape(out_shape + r.shape[1:]), rows)

    return jax.tree.map(leaf, jacobian)


def _pieces(fn, x, key, num_directions, sigma):
    flat, unravel = ravel_pytree(x)
    pieces = _fd.random_pieces(
        lambda v: fn(unravel(v)), flat, key, num_directions=num_directions, sigma=sigma
    )
    return pieces, unravel


def fd_jacobian(
    fn: Callable[[Any], Any],
    x: Any,
    key: jax.Array,
    *,
    num_directions: int = 16,
    sigma: float = 1e-3,
) -> Any:
    """Eq. 10 Jacobian estimate of ``fn`` at ``x`` from ``2 num_directions`` calls.

    Args:
      fn: JAX-traceable function of a pytree ``x`` of float arrays.
      x: point of differentiation.
      key: PRNG key of the directions ``delta_j ~ N(0, sigma^2 I)``.
      num_directions: ``m``.
      sigma: standard deviation of each coordinate of ``delta_j``, in ``x``'s units.

    Returns:
      Nested like ``jax.jacobian(fn)(x)``: leaves ``(*out, *x_leaf)``; for a flat
      ``(d,)`` ``x`` simply ``(*out, d)``.
    """
    pieces, unravel = _pieces(fn, x, key, num_directions, sigma)
    return _unravel_columns(_fd.jacobian_from_pieces(pieces), unravel, x)


def fd_vjp(
    fn: Callable[[Any], Any],
    x: Any,
    cotangent: Any,
    key: jax.Array,
    *,
    num_directions: int = 16,
    sigma: float = 1e-3,
) -> Any:
    """``cotangent . fd_jacobian(fn, x, key, ...)`` without forming the Jacobian.

    What hybrid gradient needs (``dL/dX . dX/dbeta``, Eq. 11): ``2 m`` calls of
    ``fn`` and ``O(m (size(out) + size(x)))`` arithmetic. Same key, same directions
    as :func:`fd_jacobian`.

    Returns:
      Shaped like ``x``.
    """
    pieces, unravel = _pieces(fn, x, key, num_directions, sigma)
    return unravel(_fd.vjp_from_pieces(pieces, cotangent))


def finite_difference(
    key: jax.Array,
    h: Callable[[Any], Any],
    dist: Any,
    psi: Any,
    *,
    num_samples: int,
    num_directions: int = 16,
    sigma: float = 1e-3,
    cotangent: Any = None,
) -> tuple[Any, ExpectationStats]:
    """Hybrid-gradient estimate of ``d/dpsi E_r[h(sample(r, psi))]`` (Eq. 10).

    Common random numbers: sample ``k`` is the deterministic function
    ``psi -> h(dist.sample(key_k, psi))``, differenced along ``num_directions``
    random directions of its own. Unbiased as ``sigma -> 0`` when ``sample`` is
    smooth in ``psi`` (a ``Categorical``'s is not: its estimate is zero almost
    surely), and needs no derivative of ``h``: the renderer can be a black box.
    Costs ``num_samples * (2 num_directions + 1)`` calls of ``h``.

    Args:
      key: PRNG key of the samples and the directions.
      h, dist, psi, num_samples, cotangent: as ``simopt_jax.score_function``.
      num_directions, sigma: as :func:`fd_jacobian`.

    Returns:
      ``(jacobian, ExpectationStats)``, nested like ``jax.jacobian``.
    """
    check_distribution(dist)
    _check(num_samples)
    sample_key, direction_key = jax.random.split(key)
    sample_keys = jax.random.split(sample_key, num_samples)
    direction_keys = jax.random.split(direction_key, num_samples)
    h_c = contract(h, cotangent)
    flat, unravel = ravel_pytree(psi)

    def one(sample_k, direction_k):
        g = lambda v: h_c(dist.sample(sample_k, unravel(v)))
        pieces = _fd.random_pieces(g, flat, direction_k, num_directions=num_directions, sigma=sigma)
        return _fd.jacobian_from_pieces(pieces), g(flat)

    jacobians, values = jax.vmap(one)(sample_keys, direction_keys)
    mean = lambda t: jax.tree.map(lambda a: a.mean(0), t)
    if cotangent is None:
        jacobian = _unravel_columns(mean(jacobians), unravel, psi)
    else:
        # A scalar h: the "Jacobian" (d,) is the gradient, shaped like psi.
        jacobian = unravel(mean(jacobians))
    evaluations = num_samples * (2 * num_directions + 1)
    return jacobian, ExpectationStats(mean(values), jnp.asarray(evaluations, jnp.int32))
