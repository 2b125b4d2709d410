"""Simulator optimisation: hybrid gradients and AutoSimulate.

Hypergradient estimators (:mod:`simopt_jax.hypergrad`), the parametric
distributions over simulator inputs (:mod:`simopt_jax.distributions`) and the task
networks trained on simulated data, with their losses and metrics
(:mod:`simopt_jax.tasks`), the CSG shape grammar as a distribution
(:mod:`simopt_jax.grammar`) and its rendering simulator (:mod:`simopt_jax.simulators`),
the outer steps of AutoSimulate (:mod:`simopt_jax.autosimulate`) and of the
hybrid gradient (:mod:`simopt_jax.hybrid`), and the gradient-free baselines both
papers compare against (:mod:`simopt_jax.baselines`). Built on
``render`` (whose finite-difference estimator :mod:`simopt_jax.hypergrad.finite_diff`
shares); never imports ``lido_jax``.
"""

from simopt_jax import (
    autosimulate, baselines, distributions, grammar, hybrid, hypergrad, simulators, tasks,
)
from simopt_jax.distributions import (
    DISTRIBUTIONS, Categorical, Gaussian, LogNormal, Mixture, VonMises,
)
from simopt_jax.hypergrad import (
    CHECKPOINTS, EXPECTATION_GRADS, HYPERGRADS, METHODS, CGState, ExpectationStats,
    ImplicitInfo, InnerState, UnrolledInfo, cg, fd_jacobian, fd_vjp, finite_difference,
    implicit_direction, implicit_hypergrad, init_inner_state, pathwise, score_function,
    unrolled_hypergrad, unrolled_hypergrad_warm, unrolled_train,
)
from simopt_jax.grammar import Grammar, Tree
from simopt_jax.tasks import TASKS, NormalsDepth, Segmentation, TaskNetwork

__all__ = [
    "CGState", "CHECKPOINTS", "Categorical", "DISTRIBUTIONS", "EXPECTATION_GRADS",
    "ExpectationStats", "Gaussian", "Grammar", "HYPERGRADS", "ImplicitInfo", "InnerState",
    "LogNormal", "METHODS", "Mixture", "NormalsDepth", "Segmentation", "TASKS",
    "TaskNetwork", "Tree", "UnrolledInfo", "VonMises", "autosimulate", "baselines", "cg",
    "distributions", "fd_jacobian", "fd_vjp", "finite_difference", "grammar", "hybrid",
    "hypergrad", "implicit_direction", "implicit_hypergrad", "init_inner_state", "pathwise",
    "score_function", "simulators", "tasks", "unrolled_hypergrad", "unrolled_hypergrad_warm",
    "unrolled_train",
]
