"""Simulator optimisation: hybrid gradients and AutoSimulate.

Hypergradient estimators (:mod:`simopt_jax.hypergrad`) and the parametric
distributions over simulator inputs (:mod:`simopt_jax.distributions`). Built on
``render`` (whose finite-difference estimator :mod:`simopt_jax.hypergrad.finite_diff`
shares); never imports ``lido_jax``.
"""

from simopt_jax import distributions, hypergrad
from simopt_jax.distributions import Categorical, Gaussian
from simopt_jax.hypergrad import (
    CHECKPOINTS, EXPECTATION_GRADS, HYPERGRADS, METHODS, CGState, ExpectationStats,
    ImplicitInfo, InnerState, UnrolledInfo, cg, fd_jacobian, fd_vjp, finite_difference,
    implicit_direction, implicit_hypergrad, init_inner_state, pathwise, score_function,
    unrolled_hypergrad, unrolled_hypergrad_warm, unrolled_train,
)

__all__ = [
    "CHECKPOINTS", "CGState", "Categorical", "EXPECTATION_GRADS", "ExpectationStats", "Gaussian",
    "HYPERGRADS", "ImplicitInfo", "InnerState", "METHODS", "UnrolledInfo", "cg", "distributions",
    "fd_jacobian", "fd_vjp", "finite_difference", "hypergrad", "implicit_direction",
    "implicit_hypergrad", "init_inner_state", "pathwise", "score_function", "unrolled_hypergrad",
    "unrolled_hypergrad_warm", "unrolled_train",
]
