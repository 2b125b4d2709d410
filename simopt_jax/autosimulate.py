"""One outer step of AutoSimulate (Alg. 1), generic over simulator and task.

Per step: draw ``K`` scene parameters ``s_k ~ q_psi`` and simulate examples
``(x_k, y_k) = decode(s_k)``; fine-tune the task network on them, carried across
steps (incremental training, hybrid gradient Eq. 11); take the implicit direction
``v`` (AutoSimulate Table 1: ``quadratic``, ``approx_quadratic``, ``linear``,
``no_val``) at the fine-tuned parameters; then the hypergradient of the validation
loss w.r.t. ``psi`` is

    dL_val/dpsi = -d/dpsi E_{s ~ q_psi}[<grad_theta l(theta, decode(s)), v>]

(the mixed second derivative of the expected training loss, contracted with ``v``),
estimated by the score function over the same ``K`` samples (any renderer) or
pathwise (a differentiable ``decode`` and a reparameterised ``q``: an option the
paper lacked). ``psi`` is updated by an optax optimiser unless the estimate is not
finite: a NaN step is never applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from simopt_jax.distributions import check_distribution
from simopt_jax.guarded import guarded_update
from simopt_jax.hypergrad.implicit import METHODS, implicit_direction
from simopt_jax.hypergrad.score import mean_outer
from simopt_jax.hypergrad.unrolled import InnerState, init_inner_state, unrolled_train

GRADIENTS: tuple[str, ...] = ("score_function", "pathwise")


@dataclasses.dataclass(frozen=True)
class Simulator:
    """``q_psi`` over scene parameters followed by a deterministic ``decode``.

    Attributes:
      dist: a distribution of :mod:`simopt_jax.distributions` (``sample``, ``log_prob``).
      decode: ``s -> (x, y)``, one example and its label from one scene-parameter
        sample (a renderer and its ground truth); randomness belongs in ``s``.
    """

    dist: Any
    decode: Callable[[Any], tuple[Any, Any]]

    def __post_init__(self):
        check_distribution(self.dist)

    def simulate(self, key: jax.Array, psi: Any, num: int) -> tuple[Any, Any, Any]:
        """``num`` samples ``s`` and their examples ``(x, y)``, each with a leading axis."""
        s = jax.vmap(self.dist.sample, (0, None))(jax.random.split(key, num), psi)
        x, y = jax.vmap(self.decode)(s)
        return s, x, y


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings of an AutoSimulate step.

    Attributes:
      num_samples: ``K``, examples simulated per step.
      inner_steps: fine-tuning steps on them (epsilon epochs of full-batch steps);
        0 takes the hypergradient at the carried parameters as they are.
      method: implicit direction, one of ``simopt_jax.METHODS``.
      damping, maxiter, tol: of the CG solve (``quadratic``), as ``implicit_hypergrad``.
      gradient: ``"score_function"`` or ``"pathwise"``.
      baseline: for the score function, ``"leave_one_out"`` or ``None``.
      unroll: unroll the fine-tuning steps and CG's iterations into straight-line
        code (same numbers). On CPU that is several times faster for convolutional
        networks, which XLA runs slowly inside loop bodies (jax#12868); it costs
        compile time that grows with ``inner_steps + maxiter``.
    """

    num_samples: int = 32
    inner_steps: int = 10
    method: str = "quadratic"
    damping: float = 1e-3
    maxiter: int = 20
    tol: float = 1e-6
    gradient: str = "score_function"
    baseline: str | None = "leave_one_out"
    unroll: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient={self.gradient!r} is not one of {GRADIENTS}")
        if self.baseline not in (None, "leave_one_out"):
            raise ValueError(f"baseline={self.baseline!r} must be None or 'leave_one_out'")
        minimum = 2 if self.baseline == "leave_one_out" and self.gradient == "score_function" else 1
        if self.num_samples < minimum:
            raise ValueError(f"num_samples={self.num_samples} must be >= {minimum}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps={self.inner_steps} must be >= 0")
        if self.damping < 0:
            raise ValueError(f"damping={self.damping} must be >= 0")


class State(NamedTuple):
    """Everything an AutoSimulate run carries from one step to the next.

    Attributes:
      psi: simulator parameters.
      psi_opt_state: state of the outer optax optimiser.
      inner: task-network parameters and their optimiser state.
      step: outer steps taken.
    """

    psi: Any
    psi_opt_state: Any
    inner: InnerState
    step: jax.Array


class StepInfo(NamedTuple):
    """What one step measured.

    Attributes:
      grad: the hypergradient estimate, shaped like ``psi``.
      applied: whether ``psi`` was updated (False for a non-finite estimate).
      train_loss: mean loss on the simulated examples after fine-tuning.
      val_loss: validation loss at the fine-tuned parameters.
      cg_iterations, cg_residual: of the implicit solve (0 for methods without one).
    """

    grad: Any
    applied: jax.Array
    train_loss: jax.Array
    val_loss: jax.Array
    cg_iterations: jax.Array
    cg_residual: jax.Array


def init(psi: Any, params: Any, *, outer_optimizer: optax.GradientTransformation,
         inner_optimizer: optax.GradientTransformation) -> State:
    """The state of a run starting from ``psi`` and network ``params``."""
    return State(psi=psi, psi_opt_state=outer_optimizer.init(psi),
                 inner=init_inner_state(inner_optimizer, params), step=jnp.zeros((), jnp.int32))


def _batch_loss(loss: Callable, params, x, y):
    return jnp.mean(jax.vmap(loss, (None, 0, 0))(params, x, y))


def step(key: jax.Array, state: State, *, simulator: Simulator,
         loss: Callable[[Any, Any, Any], jax.Array], val_loss: Callable[[Any], jax.Array],
         inner_optimizer: optax.GradientTransformation,
         outer_optimizer: optax.GradientTransformation,
         config: Config = Config()) -> tuple[State, StepInfo]:
    """One outer step of AutoSimulate Alg. 1; pure, and jittable with the keyword
    arguments closed over (``functools.partial``).

    Args:
      key: PRNG key of this step's samples.
      state: from :func:`init` or the previous step.
      simulator: ``q_psi`` and ``decode``.
      loss: per-example training loss ``(params, x, y) -> scalar``.
      val_loss: ``params -> scalar`` on the validation set.
      inner_optimizer, outer_optimizer: optax transformations for the network and psi.
      config: static settings.

    Returns:
      ``(new_state, StepInfo)``.
    """
    if config.gradient == "pathwise" and not simulator.dist.reparameterised:
        raise ValueError(f"gradient='pathwise' needs a reparameterised distribution; "
                         f"{type(simulator.dist).__name__} is not: use 'score_function'")
    psi = state.psi
    s, x, y = simulator.simulate(key, jax.lax.stop_gradient(psi), config.num_samples)

    def train_loss(params, _outer=None):
        return _batch_loss(loss, params, x, y)

    inner = state.inner
    if config.inner_steps:
        inner = unrolled_train(train_loss, inner, None, optimizer=inner_optimizer,
                               num_steps=config.inner_steps, unroll=config.unroll)
    params = inner.params
    v, info = implicit_direction(train_loss, val_loss, params, None, method=config.method,
                                 damping=config.damping, maxiter=config.maxiter, tol=config.tol,
                                 unroll=config.unroll)

    def influence(x_k, y_k):
        """``<grad_theta l(theta, x_k, y_k), v>``."""
        return otu.tree_vdot(jax.grad(loss)(params, x_k, y_k), v)

    if config.gradient == "score_function":
        values = jax.vmap(influence)(x, y)
        if config.baseline == "leave_one_out":
            k = config.num_samples
            values = k / (k - 1) * (values - values.mean())
        scores = jax.vmap(jax.grad(simulator.dist.log_prob), (None, 0))(psi, s)
        grad = jax.tree.map(jnp.negative, mean_outer(values, scores, config.num_samples))
    else:
        keys = jax.random.split(key, config.num_samples)

        def mean_influence(p):
            s_p = jax.vmap(simulator.dist.sample, (0, None))(keys, p)
            x_p, y_p = jax.vmap(simulator.decode)(s_p)
            return -jnp.mean(jax.vmap(influence)(x_p, y_p))

        grad = jax.grad(mean_influence)(psi)

    new_psi, opt_state, applied = guarded_update(grad, outer_optimizer, state.psi_opt_state, psi)
    new_state = State(psi=new_psi, psi_opt_state=opt_state, inner=inner, step=state.step + 1)
    return new_state, StepInfo(grad=grad, applied=applied, train_loss=train_loss(params),
                               val_loss=info.val_loss, cg_iterations=info.iterations,
                               cg_residual=info.residual)
