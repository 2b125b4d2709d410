"""Implicit hypergradients: AutoSimulate's local model of the bilevel objective.

With ``theta*(outer) = argmin_theta train_loss(theta, outer)``, the implicit
function theorem gives

    d val_loss(theta*(outer)) / d outer = -C^T H^-1 g_val,

with ``H = d^2 train_loss / d theta^2``, ``C = d^2 train_loss / d theta d outer``
and ``g_val = d val_loss / d theta``, all at ``theta*``. AutoSimulate (Sec. 4, Eq.
8 and 13, Table 1) writes this as ``v = H^-1 g_val`` (CG with the Levenberg
damping ``H + damping I``) followed by ``-v . grad_outer g_train``, and proposes
cheaper choices of ``v``. Every method here computes one ``v`` and then the single
vector-Jacobian product ``-C^T v``; no Hessian is ever formed.

Hessian-vector products are forward-over-reverse (``jax.linearize`` of the
gradient, so the CG loop re-runs only the tangent pass), and the last product
``-C^T v`` comes from one reverse pass over a JVP of ``train_loss`` that also
yields ``H v``, from which the true residual of the solve is computed. That
residual costs about one Hessian-vector product more than the hypergradient
alone (3-5 % at 20 CG iterations in ``benchmarks/hypergrad.py``); under ``jit``
XLA drops it when ``info`` is not used.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from simopt_jax.hypergrad.cg import cg

METHODS: tuple[str, ...] = ("quadratic", "approx_quadratic", "linear", "no_val")
"""AutoSimulate Table 1, in its order."""


class ImplicitInfo(NamedTuple):
    """Statistics of one implicit hypergradient.

    Attributes:
      val_loss: scalar, ``val_loss(params)`` (``nan`` for ``no_val``, which never
        evaluates it).
      iterations: int32, CG iterations (0 for methods that solve nothing).
      residual: true relative residual ``||(H + damping I) v - g_val|| / ||g_val||``
        of the CG solution (0 for methods that solve nothing, and when ``g_val = 0``).
      converged: bool, ``residual <= tol`` (always true for methods without a solve).
    """

    val_loss: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def _check(method: str, damping, maxiter, tol) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(maxiter, numbers.Integral) or isinstance(maxiter, bool) or maxiter < 0:
        raise ValueError(f"maxiter must be an int >= 0, got {maxiter!r}")
    for name, value in (("damping", damping), ("tol", tol)):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _hvp(train_loss: Callable, params: Any, outer: Any, damping: float) -> Callable:
    """``u -> (H + damping I) u`` at ``(params, outer)``, forward-over-reverse.

    ``jax.linearize`` runs the primal gradient once; each product then costs one
    tangent pass (about one gradient).
    """
    _, hvp = jax.linearize(lambda p: jax.grad(train_loss)(p, outer), params)
    if damping == 0:
        return hvp
    return lambda u: otu.tree_add_scale(hvp(u), damping, u)


def _direction(train_loss, val_loss, params, outer, method, damping, maxiter, tol, unroll):
    """``v`` of ``method`` and the pieces the callers need.

    Returns ``(v, val_value, g_val, iterations)``.
    """
    zero = jnp.zeros((), jnp.int32)
    if method == "no_val":
        # Table 1, "No Val": Delta theta = 1, so v is the all-ones vector and the
        # validation set is never used.
        nan = jnp.full((), jnp.nan, jnp.result_type(*jax.tree.leaves(params)))
        return otu.tree_ones_like(params), nan, None, zero
    val_value, g_val = jax.value_and_grad(val_loss)(params)
    if method == "linear":
        return g_val, val_value, g_val, zero
    hvp = _hvp(train_loss, params, outer, damping)
    if method == "approx_quadratic":
        return hvp(g_val), val_value, g_val, zero
    v, state = cg(hvp, g_val, maxiter=maxiter, tol=tol, unroll=unroll)
    return v, val_value, g_val, state.iterations


def _relative_residual(hv, v, g_val, damping):
    r = otu.tree_sub(otu.tree_add_scale(hv, damping, v), g_val)
    g_norm = otu.tree_norm(g_val)
    return jnp.where(g_norm > 0, otu.tree_norm(r) / jnp.where(g_norm > 0, g_norm, 1.0), 0.0)


def _info(method, val_value, iterations, residual, tol):
    if method != "quadratic":
        return ImplicitInfo(val_value, iterations, jnp.zeros_like(val_value), jnp.array(True))
    return ImplicitInfo(val_value, iterations, residual, residual <= tol)


def implicit_hypergrad(
    train_loss: Callable[[Any, Any], jax.Array],
    val_loss: Callable[[Any], jax.Array],
    params: Any,
    outer: Any,
    *,
    method: str = "quadratic",
    damping: float = 0.0,
    maxiter: int = 100,
    tol: float = 1e-6,
    unroll: bool = False,
) -> tuple[Any, ImplicitInfo]:
    """Hypergradient of ``val_loss(theta*(outer))`` by the implicit function theorem.

    ``grad_outer = -C^T v`` (AutoSimulate Eq. 8, 13b), ``C = d/d outer grad_theta
    train_loss``, with ``v`` by ``method`` (AutoSimulate Table 1):

    - ``"quadratic"``: ``v = (H + damping I)^-1 g_val`` by CG (Eq. 13a); the exact
      implicit hypergradient when ``damping = 0`` and CG converges.
    - ``"approx_quadratic"``: ``v = (H + damping I) g_val``. Table 1 prints this row
      with a ``+`` sign; we keep ``-C^T v`` for every row, so that all four are
      descent directions for the same objective.
    - ``"linear"``: ``v = g_val`` (one SGD step as the inner model).
    - ``"no_val"``: ``v = 1`` (Table 1's ``Delta theta = 1``): no validation data,
      ``val_loss`` is never called.

    Works under ``jit`` (``method``, ``damping``, ``maxiter``, ``tol`` are static) for
    any pytrees ``params`` and ``outer``. ``outer`` must be differentiable in
    ``train_loss``; for a non-differentiable simulator use
    :func:`implicit_direction` and a score-function estimator of ``C^T v``.

    Args:
      train_loss: ``(params, outer) -> scalar``.
      val_loss: ``params -> scalar``.
      params: pytree near ``argmin train_loss(., outer)``.
      outer: pytree of float arrays, the outer parameters.
      method: one of :data:`METHODS`.
      damping: Levenberg term ``damping * I`` added to ``H`` (Sec. 4.2).
      maxiter: CG iteration budget (``quadratic`` only).
      tol: CG stops when the relative residual is below ``tol``.
      unroll: unroll CG's ``maxiter`` iterations (:func:`simopt_jax.cg`): the same
        numbers, faster on CPU for convolutional networks, slower to compile.

    Returns:
      ``(grad_outer, info)``: ``grad_outer`` shaped like ``outer``; ``info`` an
      :class:`ImplicitInfo`. A solve that stopped at ``maxiter`` above ``tol`` has
      ``info.converged = False``. ``converged`` judges the true residual, which
      rounding keeps above CG's own estimate: in float32 with an ill-conditioned
      ``H`` the default ``tol = 1e-6`` is near round-off, and ``1e-5`` or ``1e-4``
      is the realistic request.

    Raises:
      ValueError: on an unknown ``method`` or a negative/non-finite setting.
    """
    _check(method, damping, maxiter, tol)
    v, val_value, g_val, iterations = _direction(
        train_loss, val_loss, params, outer, method, damping, maxiter, tol, unroll
    )
    v = jax.lax.stop_gradient(v)

    def along_v(p, o):
        # <grad_theta train_loss(p, o), v> as a JVP; its gradient is (H v, C^T v).
        return jax.jvp(lambda q: train_loss(q, o), (p,), (v,))[1]

    if method == "quadratic":
        hv, cross = jax.grad(along_v, argnums=(0, 1))(params, outer)
        residual = _relative_residual(hv, v, g_val, damping)
    else:
        cross = jax.grad(along_v, argnums=1)(params, outer)
        residual = None
    grad_outer = jax.tree.map(jnp.negative, cross)
    return grad_outer, _info(method, val_value, iterations, residual, tol)


def implicit_direction(
    train_loss: Callable[[Any, Any], jax.Array],
    val_loss: Callable[[Any], jax.Array],
    params: Any,
    outer: Any,
    *,
    method: str = "quadratic",
    damping: float = 0.0,
    maxiter: int = 100,
    tol: float = 1e-6,
    unroll: bool = False,
) -> tuple[Any, ImplicitInfo]:
    """Only ``v`` of :func:`implicit_hypergrad`, for simulators ``outer`` cannot reach.

    AutoSimulate Alg. 1 with a non-differentiable renderer: ``train_loss`` is the
    loss on the current rendered data (``outer`` may be ``None``), and the
    hypergradient is then ``-d/dpsi E_s[<grad_theta l(r(s), theta), v>]``, which a
    score-function estimator gives (``simopt_jax.score_function(..., cotangent=v)``).
    Arguments, methods and ``info`` as :func:`implicit_hypergrad`; the residual of
    ``quadratic`` costs one extra Hessian-vector product here.

    Returns:
      ``(v, info)``, ``v`` shaped like ``params``.
    """
    _check(method, damping, maxiter, tol)
    v, val_value, g_val, iterations = _direction(
        train_loss, val_loss, params, outer, method, damping, maxiter, tol, unroll
    )
    residual = None
    if method == "quadratic":
        hv = _hvp(train_loss, params, outer, 0.0)(v)
        residual = _relative_residual(hv, v, g_val, damping)
    return v, _info(method, val_value, iterations, residual, tol)
