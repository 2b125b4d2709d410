"""Finite-difference Jacobians of functions of one flat vector, in pure JAX.

Every estimator here returns a low-rank factorisation of the Jacobian of
``fn: (d,) -> y`` at ``x`` (``y`` any array or pytree of arrays), the
:class:`JacobianPieces`::

    J ~= scale * sum_j differences[j] (x) directions[j]

``directions[j]`` is a unit vector in input space and ``differences[j]`` the
antithetic directional derivative ``(fn(x + delta_j) - fn(x - delta_j)) / |2 delta_j|``
along it. ``fn`` is evaluated ``2 m`` times (one ``jax.vmap`` over the stacked
perturbed points); the JVP, VJP and full Jacobian then follow from the pieces by
linear maps that JAX can differentiate and transpose, so a VJP costs
``O(m)`` evaluations of ``fn`` however large ``y`` is.

Random directions follow the hybrid-gradient paper (Eq. 9-10): ``delta_j ~ N(0,
sigma^2 I)``, the same ``delta_j`` for the ``+`` and ``-`` evaluation. The paper
averages ``differences[j] (x) u_j`` with ``u_j = delta_j / |delta_j|``; since
``E[u u^T] = I / d`` for isotropic unit vectors, that average has mean ``J / d``
for a linear ``fn``. We use ``scale = d / m`` instead of ``1 / m``, so the
estimate is unbiased for linear maps (and to first order in ``sigma`` for smooth
ones).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

METHODS: tuple[str, ...] = ("auto", "central", "random")
"""Accepted values of :attr:`FD.method`."""


@dataclasses.dataclass(frozen=True)
class FD:
    """How to estimate a Jacobian by finite differences.

    Attributes:
      method: ``"central"`` (one antithetic pair per input coordinate, ``2 d``
        evaluations), ``"random"`` (``num_directions`` random antithetic pairs,
        ``2 m`` evaluations) or ``"auto"`` (central when ``d <= max_central``).
      step: central-difference step, and standard deviation ``sigma`` of each
        coordinate of a random direction (absolute, in input units).
      num_directions: ``m``, random directions per estimate.
      max_central: largest input size that ``"auto"`` differentiates centrally.
      seed: seed of the random directions when the caller passes no key.
    """

    method: str = "auto"
    step: float = 1e-3
    num_directions: int = 16
    max_central: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"FD.method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.step, (int, float)) or not (
            math.isfinite(self.step) and self.step > 0
        ):
            raise ValueError(f"FD.step must be a finite number > 0, got {self.step!r}")
        for name, low in (("num_directions", 1), ("max_central", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"FD.{name} must be an int >= {low}, got {value!r}")
        if not _is_int(self.seed):
            raise ValueError(f"FD.seed must be an int, got {self.seed!r}")

    def resolve(self, size: int) -> str:
        """The concrete method (``"central"`` or ``"random"``) for ``size`` inputs."""
        if self.method == "auto":
            return "central" if size <= self.max_central else "random"
        return self.method


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JacobianPieces(NamedTuple):
    """Low-rank Jacobian ``J ~= scale * sum_j differences[j] (x) directions[j]``.

    Attributes:
      directions: ``(m, d)`` unit vectors in input space.
      differences: pytree of ``(m, *out)`` arrays, directional derivatives of the
        output along each direction.
      scale: scalar weight of the sum (``1`` central, ``d / m`` random).
    """

    directions: jax.Array
    differences: Any
    scale: Any


def _antithetic(fn: Callable, x: jax.Array, deltas: jax.Array, scale) -> JacobianPieces:
    """Evaluates ``fn`` at ``x +- deltas`` (``deltas``: ``(m, d)``) in one vmap."""
    plus, minus = x + deltas, x - deltas
    # The perturbation actually applied, after rounding of x +- delta.
    spans = plus - minus
    norms = jnp.linalg.norm(spans, axis=1)
    ys = jax.vmap(fn)(jnp.concatenate([plus, minus]))
    m = deltas.shape[0]

    def difference(y):
        y = jnp.asarray(y)
        dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else norms.dtype
        per_direction = norms.reshape((m,) + (1,) * (y.ndim - 1)).astype(dtype)
        return (y[:m] - y[m:]).astype(dtype) / per_direction

    return JacobianPieces(spans / norms[:, None], jax.tree.map(difference, ys), scale)


def _check_flat(x):
    if jnp.ndim(x) != 1:
        raise ValueError(f"finite differences need a flat input of shape (d,), got {jnp.shape(x)}")


def central_pieces(fn: Callable, x: jax.Array, *, step: float = 1e-3) -> JacobianPieces:
    """Central differences along every coordinate axis (``2 d`` calls of ``fn``).

    Args:
      fn: JAX-traceable ``(d,) -> y``.
      x: ``(d,)`` point of differentiation.
      step: perturbation of each coordinate.

    Returns:
      Pieces with ``directions = I`` (``(d, d)``) and ``scale = 1``.
    """
    _check_flat(x)
    return _antithetic(fn, x, step * jnp.eye(x.shape[0], dtype=x.dtype), 1.0)


def random_pieces(
    fn: Callable,
    x: jax.Array,
    key: jax.Array,
    *,
    num_directions: int = 16,
    sigma: float = 1e-3,
) -> JacobianPieces:
    """Random antithetic differences (``2 m`` calls of ``fn``), unbiased scale.

    Directions ``delta_j ~ N(0, sigma^2 I)`` are shared by the ``+`` and ``-``
    evaluation; ``scale = d / m`` corrects the paper's ``1 / m`` (whose mean is
    ``J / d``, see the module docstring).

    Args:
      fn: JAX-traceable ``(d,) -> y``.
      x: ``(d,)`` point of differentiation.
      key: PRNG key of the directions.
      num_directions: ``m``.
      sigma: standard deviation of each coordinate of ``delta_j``.

    Returns:
      Pieces with ``(m, d)`` unit directions.
    """
    _check_flat(x)
    d = x.shape[0]
    deltas = sigma * jax.random.normal(key, (num_directions, d), x.dtype)
    return _antithetic(fn, x, deltas, d / num_directions)


def fd_pieces(fn: Callable, x: jax.Array, key: jax.Array, fd: FD) -> JacobianPieces:
    """Pieces by the method that ``fd`` resolves to for ``x.size`` inputs.

    Args:
      fn: JAX-traceable ``(d,) -> y``.
      x: ``(d,)`` point of differentiation.
      key: PRNG key of random directions (unused by central differences).
      fd: estimator settings.
    """
    _check_flat(x)
    if fd.resolve(x.shape[0]) == "central":
        return central_pieces(fn, x, step=fd.step)
    return random_pieces(fn, x, key, num_directions=fd.num_directions, sigma=fd.step)


def jacobian_from_pieces(pieces: JacobianPieces):
    """Dense Jacobian: pytree of ``(*out, d)`` arrays, like ``jax.jacobian``."""
    return jax.tree.map(
        lambda diff: pieces.scale * jnp.tensordot(diff, pieces.directions, axes=((0,), (0,))),
        pieces.differences,
    )


def jvp_from_pieces(pieces: JacobianPieces, tangent: jax.Array):
    """``J @ tangent`` for a ``(d,)`` tangent: pytree of ``out``-shaped arrays."""
    weights = pieces.scale * (pieces.directions @ tangent)
    return jax.tree.map(lambda diff: jnp.tensordot(weights, diff, axes=1), pieces.differences)


def vjp_from_pieces(pieces: JacobianPieces, cotangent) -> jax.Array:
    """``cotangent @ J`` for an ``out``-shaped cotangent: ``(d,)``.

    Never forms the Jacobian: costs ``O(m * size(out) + m * d)``.
    """
    per_leaf = jax.tree.map(
        lambda diff, ct: jnp.tensordot(diff, ct, axes=jnp.ndim(ct)),
        pieces.differences,
        cotangent,
    )
    weights = sum(jax.tree.leaves(per_leaf))
    return pieces.scale * (weights @ pieces.directions)


def central_jacobian(fn: Callable, x: jax.Array, *, step: float = 1e-3):
    """Central-difference Jacobian of ``fn`` at ``(d,)`` ``x``: ``(*out, d)``."""
    return jacobian_from_pieces(central_pieces(fn, x, step=step))


def fd_jacobian(
    fn: Callable,
    x: jax.Array,
    key: jax.Array,
    *,
    num_directions: int = 16,
    sigma: float = 1e-3,
):
    """Random-direction antithetic Jacobian of ``fn`` at ``(d,)`` ``x``: ``(*out, d)``.

    Costs ``2 * num_directions`` calls of ``fn``; unbiased for linear ``fn``.
    """
    return jacobian_from_pieces(
        random_pieces(fn, x, key, num_directions=num_directions, sigma=sigma)
    )


def fd_vjp(
    fn: Callable,
    x: jax.Array,
    cotangent,
    key: jax.Array,
    *,
    num_directions: int = 16,
    sigma: float = 1e-3,
) -> jax.Array:
    """``cotangent @ fd_jacobian(fn, x, key, ...)`` without forming the Jacobian.

    Args:
      fn: JAX-traceable ``(d,) -> y``.
      x: ``(d,)`` point of differentiation.
      cotangent: array (or pytree) shaped like ``fn(x)``.
      key: PRNG key of the directions (same key, same directions as ``fd_jacobian``).
      num_directions: ``m``; costs ``2 m`` calls of ``fn``.
      sigma: standard deviation of each coordinate of a direction.

    Returns:
      ``(d,)`` vector-Jacobian product.
    """
    pieces = random_pieces(fn, x, key, num_directions=num_directions, sigma=sigma)
    return vjp_from_pieces(pieces, cotangent)
