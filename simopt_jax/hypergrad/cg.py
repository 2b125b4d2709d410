"""Conjugate gradients over pytrees that reports what it did.

``jax.scipy.sparse.linalg.cg`` returns no iteration count and no residual, so a
solve that stopped at ``maxiter`` looks exactly like a converged one. This CG has
the same maths (Hestenes-Stiefel, stop when ``||r|| <= tol * ||b||``) and returns
its iteration count and the norm of its recursive residual; callers that need the
*true* residual ``||A x - b||`` (which drifts from the recursive one in floating
point) compute it with one more product, as :mod:`simopt_jax.hypergrad.implicit`
does.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu


class CGState(NamedTuple):
    """What a CG solve did.

    Attributes:
      iterations: int32 scalar, matrix-vector products spent in the loop.
      recursive_residual: scalar ``||r_k|| / ||b||`` from the CG recurrence
        (0 when ``b = 0``).
    """

    iterations: jax.Array
    recursive_residual: jax.Array


def cg(
    matvec: Callable[[Any], Any],
    b: Any,
    *,
    x0: Any = None,
    maxiter: int = 100,
    tol: float = 1e-6,
    unroll: bool = False,
) -> tuple[Any, CGState]:
    """Solves ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``.

    Args:
      matvec: linear map ``x -> A x`` on pytrees shaped like ``b``.
      b: right-hand side, any pytree of float arrays.
      x0: initial guess (zeros when ``None``).
      maxiter: most matrix-vector products in the loop (``x0 != None`` costs one more).
      unroll: run all ``maxiter`` iterations as straight-line code, each masked to a
        no-op once the solve has stopped, instead of a ``while_loop``: the same
        numbers, always ``maxiter`` products, and no loop around ``matvec`` (XLA on
        CPU runs convolutions inside loop bodies several times slower, jax#12868).
      tol: stop when ``||r|| <= tol * ||b||``.

    Returns:
      ``(x, CGState)``. ``x = 0`` when ``b = 0``; ``x`` is NaN when ``b`` or the
      starting residual is not finite (never a silent 0), and NaN spreads from a
      non-finite ``matvec``.
    """
    b_norm = otu.tree_norm(b)
    if x0 is None:
        x0 = otu.tree_zeros_like(b)
        r0 = b
    else:
        r0 = otu.tree_sub(b, matvec(x0))
    gamma0 = otu.tree_vdot(r0, r0).real
    threshold = (tol * b_norm) ** 2

    def cond(carry):
        _, _, _, gamma, k = carry
        return (k < maxiter) & (gamma > threshold)

    def body(carry):
        x, r, p, gamma, k = carry
        ap = matvec(p)
        alpha = gamma / otu.tree_vdot(p, ap).real
        x = otu.tree_add_scale(x, alpha, p)
        r = otu.tree_add_scale(r, -alpha, ap)
        gamma_new = otu.tree_vdot(r, r).real
        p = otu.tree_add_scale(r, gamma_new / gamma, p)
        return x, r, p, gamma_new, k + 1

    init = (x0, r0, r0, gamma0, jnp.zeros((), jnp.int32))
    if unroll:
        carry = init
        for _ in range(int(maxiter)):
            active = cond(carry)
            carry = jax.tree.map(lambda new, old: jnp.where(active, new, old), body(carry), carry)
        x, _, _, gamma, k = carry
    else:
        x, _, _, gamma, k = jax.lax.while_loop(cond, body, init)
    relative = jnp.where(b_norm > 0, jnp.sqrt(gamma) / jnp.where(b_norm > 0, b_norm, 1.0), 0.0)
    # A NaN b fails ``gamma > threshold`` at once and would leave x = x0.
    bad = ~jnp.isfinite(gamma0)
    x = jax.tree.map(lambda leaf: jnp.where(bad, jnp.nan, leaf), x)
    return x, CGState(k, jnp.where(bad, jnp.nan, relative))
