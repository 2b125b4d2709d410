"""Simulator optimisation: hybrid gradients and AutoSimulate.

Hypergradient estimators (:mod:`simopt_jax.hypergrad`), the parametric
distributions over simulator inputs (:mod:`simopt_jax.distributions`) and the task
networks trained on simulated data, with their losses and metrics
(:mod:`simopt_jax.tasks`), the CSG shape grammar as a distribution
(:mod:`simopt_jax.grammar`) and its rendering simulator (:mod:`simopt_jax.simulators`),
the outer steps of AutoSimulate (:mod:`simopt_jax.autosimulate`) and of the
hybrid gradient (:mod:`simopt_jax.hybrid`), and the gradient-free baselines both
papers compare against (:mod:`simopt_jax.baselines`). End to end: the scene
simulator of AutoSimulate's experiment (:mod:`simopt_jax.scenes`), the shape
library the shapes task validates on (:mod:`simopt_jax.library`), both problems by
name (:mod:`simopt_jax.problems`), and resumable runs of any method with their
history, checkpoints and figures (:mod:`simopt_jax.run`, also
``python -m simopt_jax run``). Built on
``render`` (whose finite-difference estimator :mod:`simopt_jax.hypergrad.finite_diff`
shares); never imports ``lido_jax``.
"""

from simopt_jax import (
    autosimulate, baselines, distributions, grammar, hybrid, hypergrad, library, problems, run,
    scenes, simulators, tasks,
)
from simopt_jax.distributions import (
    DISTRIBUTIONS, Categorical, Gaussian, Iid, Joint, LogNormal, Mixture, Uniform, VonMises,
)
from simopt_jax.hypergrad import (
    CHECKPOINTS, EXPECTATION_GRADS, HYPERGRADS, METHODS, CGState, ExpectationStats,
    ImplicitInfo, InnerState, UnrolledInfo, cg, fd_jacobian, fd_vjp, finite_difference,
    implicit_direction, implicit_hypergrad, init_inner_state, pathwise, score_function,
    unrolled_hypergrad, unrolled_hypergrad_warm, unrolled_train,
)
from simopt_jax.grammar import Grammar, Tree
from simopt_jax.library import LibraryShapes
from simopt_jax.problems import PROBLEMS, Problem, Spec, get_problem
from simopt_jax.run import RunConfig
from simopt_jax.scenes import SceneSimulator
from simopt_jax.tasks import TASKS, NormalsDepth, Segmentation, TaskNetwork

__all__ = [
    "CGState", "CHECKPOINTS", "Categorical", "DISTRIBUTIONS", "EXPECTATION_GRADS",
    "ExpectationStats", "Gaussian", "Grammar", "HYPERGRADS", "Iid", "ImplicitInfo",
    "InnerState", "Joint", "LibraryShapes", "LogNormal", "METHODS", "Mixture",
    "NormalsDepth", "PROBLEMS", "Problem", "RunConfig", "SceneSimulator",
    "Segmentation", "Spec", "TASKS", "TaskNetwork", "Tree", "Uniform", "UnrolledInfo",
    "VonMises", "autosimulate", "baselines", "cg", "distributions", "fd_jacobian",
    "fd_vjp", "finite_difference", "get_problem", "grammar", "hybrid", "hypergrad",
    "implicit_direction", "implicit_hypergrad", "init_inner_state", "library",
    "pathwise", "problems", "run", "scenes", "score_function", "simulators", "tasks",
    "unrolled_hypergrad", "unrolled_hypergrad_warm", "unrolled_train",
]
