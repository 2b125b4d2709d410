"""Hypergradient estimators, as two families chosen by name.

- :data:`HYPERGRADS`: how the validation loss changes with outer parameters
  through training, ``HYPERGRADS[name](train_loss, val_loss, params, outer,
  **options) -> (grad_outer, info)``; ``info.val_loss`` is always there.
- :data:`EXPECTATION_GRADS`: how an expectation over a simulator's random inputs
  changes with its parameters, ``EXPECTATION_GRADS[name](key, h, dist, psi, *,
  num_samples, cotangent=None, **options) -> (jacobian, ExpectationStats)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax

from simopt_jax.hypergrad.cg import CGState, cg
from simopt_jax.hypergrad.finite_diff import fd_jacobian, fd_vjp, finite_difference
from simopt_jax.hypergrad.implicit import (
    METHODS, ImplicitInfo, implicit_direction, implicit_hypergrad,
)
from simopt_jax.hypergrad.score import ExpectationStats, pathwise, score_function
from simopt_jax.hypergrad.unrolled import (
    CHECKPOINTS, InnerState, init_inner_state, unrolled_hypergrad, unrolled_hypergrad_warm,
    unrolled_train,
)


class UnrolledInfo(NamedTuple):
    """Statistics of an unrolled hypergradient.

    Attributes:
      val_loss: scalar, validation loss after training.
      num_steps: int, inner steps differentiated through.
    """

    val_loss: jax.Array
    num_steps: int


def _unrolled_member(train_loss, val_loss, params, outer, **options) -> tuple[Any, UnrolledInfo]:
    """``unrolled_hypergrad`` in the family's signature; ``params`` is where training starts."""
    value, grad_outer = unrolled_hypergrad(train_loss, val_loss, params, outer, **options)
    return grad_outer, UnrolledInfo(value, options["num_steps"])


HYPERGRADS: dict[str, Callable[..., tuple[Any, Any]]] = {
    **{m: functools.partial(implicit_hypergrad, method=m) for m in METHODS},
    "unrolled": _unrolled_member,
}
"""Every hypergradient method by name: the four implicit ones of AutoSimulate
Table 1 (options ``damping``, ``maxiter``, ``tol``; ``params`` near the inner
optimum) and ``"unrolled"`` (options ``optimizer``, ``num_steps``, ``checkpoint``,
``batches``; ``params`` where training starts)."""

EXPECTATION_GRADS: dict[str, Callable[..., tuple[Any, ExpectationStats]]] = {
    "score_function": score_function,
    "pathwise": pathwise,
    "finite_diff": finite_difference,
}
"""Every estimator of ``d/dpsi E_{s ~ q_psi}[h(s)]`` by name."""

__all__ = [
    "CGState", "CHECKPOINTS", "EXPECTATION_GRADS", "ExpectationStats", "HYPERGRADS",
    "ImplicitInfo", "InnerState", "METHODS", "UnrolledInfo", "cg", "fd_jacobian", "fd_vjp",
    "finite_difference", "implicit_direction", "implicit_hypergrad", "init_inner_state",
    "pathwise", "score_function", "unrolled_hypergrad", "unrolled_hypergrad_warm",
    "unrolled_train",
]
