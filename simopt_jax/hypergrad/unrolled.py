"""Unrolled hypergradients: differentiate validation loss through training.

The hybrid-gradient paper (Eq. 6-8) trains with SGD steps
``w_{k+1} = g(w_k, X_k)`` and back-propagates ``dL/dw_{n+1}`` through every step to
the training data ``X_k``; here the step is any ``optax.GradientTransformation``,
the loop is a ``jax.lax.scan``, and the outer parameters ``outer`` (training data,
per-example weights, hyperparameters, simulator outputs) are whatever
``train_loss`` reads.

Reverse mode through ``T`` steps stores every step's intermediates: memory grows
like ``T``. ``checkpoint`` trades compute for memory:

- ``"step"``: ``jax.checkpoint`` on each step, so only the ``T`` carries (params
  and optimiser state) are stored, and each step's intermediates are recomputed.
- ``"sqrt"`` (also ``True``): two-level checkpointing. Steps run in about
  ``sqrt(T)`` segments of about ``sqrt(T)`` steps; only segment boundaries are
  stored in the forward pass, and a segment's steps are recomputed (and stored)
  while it is being differentiated: memory ``O(sqrt(T))`` carries for one extra
  forward pass. The two nested scans each accumulate a cotangent of ``outer``,
  so this costs about two extra ``outer``-sized buffers: worth it when the
  trajectory (``T`` steps of activations) dwarfs ``outer``, not when ``outer`` is
  the whole training set of a tiny model.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import jax
import optax

CHECKPOINTS: tuple[Any, ...] = (False, True, "step", "sqrt")
"""Accepted values of ``checkpoint``; ``True`` means ``"sqrt"``."""


class InnerState(NamedTuple):
    """Inner training state carried across outer steps (hybrid gradient Eq. 11).

    Attributes:
      params: network parameters.
      opt_state: state of the inner ``optax`` optimiser.
    """

    params: Any
    opt_state: Any


def init_inner_state(optimizer: optax.GradientTransformation, params: Any) -> InnerState:
    """Fresh :class:`InnerState` for ``params``."""
    return InnerState(params, optimizer.init(params))


def _check(num_steps, checkpoint, batches):
    if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if not (checkpoint is True or checkpoint is False or checkpoint in ("step", "sqrt")):
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if batches is not None:
        for leaf in jax.tree.leaves(batches):
            if leaf.ndim == 0 or leaf.shape[0] != num_steps:
                raise ValueError(
                    "every leaf of batches needs a leading axis of length num_steps="
                    f"{num_steps}, got shape {leaf.shape}"
                )


def unrolled_train(
    train_loss: Callable[..., jax.Array],
    state: InnerState,
    outer: Any,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    checkpoint: bool | str = False,
    batches: Any = None,
    unroll: int | bool = 1,
) -> InnerState:
    """``num_steps`` optimiser steps on ``train_loss``, differentiable in ``outer``.

    Args:
      train_loss: ``(params, outer) -> scalar``, or ``(params, outer, batch) ->
        scalar`` when ``batches`` is given.
      state: starting :class:`InnerState`.
      outer: pytree the loss depends on.
      optimizer: any optax transformation (for Adam through many steps pass
        ``eps_root > 0``, or the derivative of ``sqrt`` at 0 gives ``nan``).
      num_steps: ``T``, number of steps.
      checkpoint: ``False``, ``"step"``, ``"sqrt"`` or ``True`` (= ``"sqrt"``); see
        the module docstring. Numbers are identical for every choice.
      batches: optional pytree whose leaves have a leading axis of length ``T``;
        step ``k`` sees ``batch = tree_map(lambda x: x[k], batches)``.
      unroll: ``jax.lax.scan``'s: steps per loop iteration, ``True`` for none. The
        numbers do not change; unrolling trades compile time for speed (XLA on CPU
        runs convolutions inside loop bodies several times slower, jax#12868).

    Returns:
      The :class:`InnerState` after ``T`` steps.
    """
    _check(num_steps, checkpoint, batches)
    num_steps = int(num_steps)

    def step(carry: InnerState, batch):
        args = () if batches is None else (batch,)
        grads = jax.grad(train_loss)(carry.params, outer, *args)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        return InnerState(optax.apply_updates(carry.params, updates), opt_state), None

    if checkpoint is False:
        return jax.lax.scan(step, state, batches, length=num_steps, unroll=unroll)[0]
    if checkpoint == "step":
        return jax.lax.scan(jax.checkpoint(step), state, batches, length=num_steps,
                            unroll=unroll)[0]

    size = math.isqrt(num_steps - 1) + 1 if num_steps > 1 else 1   # ceil(sqrt(T))
    segments, tail = divmod(num_steps, size)

    @jax.checkpoint
    def segment(carry, seg_batches):
        return jax.lax.scan(step, carry, seg_batches, length=size, unroll=unroll)[0], None

    head = None if batches is None else jax.tree.map(
        lambda x: x[: segments * size].reshape((segments, size) + x.shape[1:]), batches
    )
    state = jax.lax.scan(segment, state, head, length=segments)[0]
    if tail:
        rest = None if batches is None else jax.tree.map(lambda x: x[segments * size:], batches)
        state = jax.lax.scan(jax.checkpoint(step), state, rest, length=tail, unroll=unroll)[0]
    return state


def unrolled_hypergrad_warm(
    train_loss: Callable[..., jax.Array],
    val_loss: Callable[[Any], jax.Array],
    state: InnerState,
    outer: Any,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    checkpoint: bool | str = False,
    batches: Any = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Any, InnerState]:
    """Unrolled hypergradient that also returns the trained state (Eq. 11).

    Incremental training: the network is carried across outer steps, so the next
    call starts from the returned state, ``w_{t+1}^(1) = w_t^(n+1)``. The starting
    state is a constant (no gradient flows into it). Arguments as
    :func:`unrolled_train`.

    Returns:
      ``(val_value, grad_outer, new_state)``: ``val_loss`` after training, its
      gradient with respect to ``outer`` through all ``num_steps`` steps (Eq. 7-8),
      and the trained :class:`InnerState`.
    """
    state = jax.lax.stop_gradient(state)

    def objective(o):
        trained = unrolled_train(
            train_loss, state, o, optimizer=optimizer, num_steps=num_steps,
            checkpoint=checkpoint, batches=batches, unroll=unroll,
        )
        return val_loss(trained.params), trained

    (value, trained), grad_outer = jax.value_and_grad(objective, has_aux=True)(outer)
    return value, grad_outer, trained


def unrolled_hypergrad(
    train_loss: Callable[..., jax.Array],
    val_loss: Callable[[Any], jax.Array],
    params0: Any,
    outer: Any,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    checkpoint: bool | str = False,
    batches: Any = None,
    unroll: int | bool = 1,
) -> tuple[jax.Array, Any]:
    """``val_loss`` after ``num_steps`` of training from ``params0``, and its gradient.

    Hybrid-gradient Eq. 6-8: the gradient of the validation loss of the trained
    parameters with respect to ``outer``, by reverse mode through the whole
    ``lax.scan`` of optimiser steps. With a convergent step size it tends to the
    implicit hypergradient as ``num_steps`` grows. The optimiser starts fresh
    (``optimizer.init(params0)``); see :func:`unrolled_hypergrad_warm` to carry
    state between outer steps. Arguments as :func:`unrolled_train`.

    Returns:
      ``(val_value, grad_outer)``, ``grad_outer`` shaped like ``outer``.
    """
    value, grad_outer, _ = unrolled_hypergrad_warm(
        train_loss, val_loss, init_inner_state(optimizer, params0), outer,
        optimizer=optimizer, num_steps=num_steps, checkpoint=checkpoint, batches=batches,
        unroll=unroll,
    )
    return value, grad_outer
