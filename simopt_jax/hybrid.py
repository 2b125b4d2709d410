"""One outer step of the hybrid gradient (hybrid-gradient paper, Eqs. 6-11).

The generator ``f(beta, r) -> data`` renders a set of training examples with their
ground truth (Eq. 5); ``r`` is the step's PRNG key, reused for every evaluation of
the step (common random numbers). The hybrid gradient multiplies

- ``dL/dX``: the validation loss after ``T`` SGD steps on the generated data,
  differentiated through the unrolled steps with respect to the data (Eqs. 6-8), by
  :func:`simopt_jax.unrolled_hypergrad_warm`;
- ``dX/dbeta``: a random-direction central finite difference of the generator
  (Eq. 10, rescaled by ``d / m`` so that it is unbiased; :func:`simopt_jax.fd_vjp`),
  so the renderer can be a black box;

and ``beta`` is updated by an optax optimiser (RMSprop in the paper) while the
trained network is kept for the next step (Eq. 11). Integer leaves of the data
(class labels) are held constant; every floating leaf, images and 3D ground truth
alike, is differentiated. A non-finite estimate is never applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from simopt_jax.guarded import guarded_update
from simopt_jax.hypergrad.finite_diff import fd_vjp
from simopt_jax.hypergrad.unrolled import InnerState, init_inner_state, unrolled_hypergrad_warm


@dataclasses.dataclass(frozen=True)
class Config:
    """Static settings of a hybrid-gradient step.

    Attributes:
      epochs: passes of SGD over the step's examples.
      batch_size: examples per SGD step (the paper's analysis uses 1); must divide
        the number of examples the generator makes.
      num_directions: ``m``, finite-difference directions of Eq. 10.
      sigma: their scale, in the units of ``beta``.
      checkpoint: of the unrolled steps, as :func:`simopt_jax.unrolled_train`.
      unroll: ``jax.lax.scan``'s for those steps (``True``: straight-line code, the
        same numbers; faster on CPU for convolutional networks, jax#12868, slower to
        compile as ``epochs * n / batch_size`` grows).
    """

    epochs: int = 1
    batch_size: int = 1
    num_directions: int = 16
    sigma: float = 1e-2
    checkpoint: bool | str = False
    unroll: int | bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "num_directions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma} must be > 0")


class State(NamedTuple):
    """What a hybrid-gradient run carries between steps.

    Attributes:
      beta: generator parameters (a pytree of floats).
      beta_opt_state: the outer optimiser's state.
      inner: network parameters and their optimiser state (Eq. 11).
      step: outer steps taken.
    """

    beta: Any
    beta_opt_state: Any
    inner: InnerState
    step: jax.Array


class StepInfo(NamedTuple):
    """What one step measured.

    Attributes:
      grad: the hybrid gradient, shaped like ``beta``.
      applied: whether ``beta`` was updated (False for a non-finite gradient).
      val_loss: validation loss after this step's training.
    """

    grad: Any
    applied: jax.Array
    val_loss: jax.Array


def init(beta: Any, params: Any, *, outer_optimizer: optax.GradientTransformation,
         inner_optimizer: optax.GradientTransformation) -> State:
    """The state of a run starting from ``beta`` and network ``params``."""
    return State(beta=beta, beta_opt_state=outer_optimizer.init(beta),
                 inner=init_inner_state(inner_optimizer, params), step=jnp.zeros((), jnp.int32))


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)


def step(key: jax.Array, state: State, *, generator: Callable[[Any, jax.Array], Any],
         loss: Callable[..., jax.Array], val_loss: Callable[[Any], jax.Array],
         inner_optimizer: optax.GradientTransformation,
         outer_optimizer: optax.GradientTransformation,
         config: Config = Config()) -> tuple[State, StepInfo]:
    """One outer step of Eq. 11; pure, and jittable with the keyword arguments closed over.

    Args:
      key: this step's random string ``r`` (and the finite-difference directions).
      state: from :func:`init` or the previous step.
      generator: ``(beta, r) -> data``, a pytree whose leaves have a leading axis of
        ``n`` examples (e.g. ``(images, normals)``); need not be differentiable.
      loss: per-example training loss ``(params, *example) -> scalar``, where
        ``example`` is ``data`` indexed at one example and unpacked if a tuple.
      val_loss: ``params -> scalar`` on the validation set.
      inner_optimizer: the network's optax optimiser (SGD in Eq. 6).
      outer_optimizer: ``beta``'s optax optimiser (e.g. ``optax.rmsprop``).
      config: static settings.

    Returns:
      ``(new_state, StepInfo)``.
    """
    data_key, fd_key = jax.random.split(key)
    data = generator(state.beta, data_key)
    leaves, treedef = jax.tree.flatten(data)
    n = leaves[0].shape[0]
    if any(leaf.shape[:1] != (n,) for leaf in leaves):
        raise ValueError(f"generator's leaves must share a leading axis of examples, got shapes "
                         f"{[leaf.shape for leaf in leaves]}")
    if n % config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} must divide the {n} generated examples")
    floating = [_is_float(leaf) for leaf in leaves]

    def rebuild(float_leaves):
        it = iter(float_leaves)
        return jax.tree.unflatten(treedef, [next(it) if f else leaf
                                            for leaf, f in zip(leaves, floating)])

    def float_part(tree):
        return [leaf for leaf, f in zip(jax.tree.leaves(tree), floating) if f]

    def train_loss(params, float_leaves, batch):
        examples = jax.tree.map(lambda leaf: leaf[batch], rebuild(float_leaves))

        def one(i):
            example = jax.tree.map(lambda leaf: leaf[i], examples)
            return loss(params, *example) if isinstance(example, tuple) else loss(params, example)

        return jnp.mean(jax.vmap(one)(jnp.arange(config.batch_size)))

    steps_per_epoch = n // config.batch_size
    order = jnp.arange(n).reshape(steps_per_epoch, config.batch_size)
    batches = jnp.tile(order, (config.epochs, 1))
    value, grad_data, inner = unrolled_hypergrad_warm(
        train_loss, val_loss, state.inner, float_part(data), optimizer=inner_optimizer,
        num_steps=config.epochs * steps_per_epoch, checkpoint=config.checkpoint, batches=batches,
        unroll=config.unroll)
    grad = fd_vjp(lambda b: float_part(generator(b, data_key)), state.beta, grad_data, fd_key,
                  num_directions=config.num_directions, sigma=config.sigma)

    beta, opt_state, applied = guarded_update(grad, outer_optimizer, state.beta_opt_state,
                                              state.beta)
    new_state = State(beta=beta, beta_opt_state=opt_state, inner=inner, step=state.step + 1)
    return new_state, StepInfo(grad=grad, applied=applied, val_loss=value)
