"""simopt_jax.unrolled_hypergrad: the scan, the checkpointing, the warm start."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from simopt_jax import (
    implicit_hypergrad, init_inner_state, unrolled_hypergrad, unrolled_hypergrad_warm,
    unrolled_train,
)
from tests.problems import logistic, ridge


def _rel(got, want) -> float:
    got, want = ravel_pytree(got)[0], ravel_pytree(want)[0]
    return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


def _python_loop(train_loss, val_loss, params0, optimizer, num_steps, batches=None):
    """The same training written as a plain Python loop, for jax.grad to unroll."""
    def objective(outer):
        params, state = params0, optimizer.init(params0)
        for k in range(num_steps):
            args = () if batches is None else (jax.tree.map(lambda b: b[k], batches),)
            grads = jax.grad(train_loss)(params, outer, *args)
            updates, state = optimizer.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return val_loss(params)
    return objective


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("optimizer", [optax.sgd(0.3, momentum=0.9), optax.adam(0.05, eps_root=1e-12)],
                         ids=["momentum", "adam"])
def test_scan_equals_the_python_loop(optimizer):
    train_loss, val_loss, solve, outer = logistic(0)
    params0 = jax.tree.map(jnp.zeros_like, solve(outer))
    objective = _python_loop(train_loss, val_loss, params0, optimizer, 12)
    want_value, want_grad = jax.value_and_grad(objective)(outer)
    value, grad = jax.jit(lambda o: unrolled_hypergrad(
        train_loss, val_loss, params0, o, optimizer=optimizer, num_steps=12))(outer)
    assert float(value) == pytest.approx(float(want_value), rel=1e-12)
    assert _rel(grad, want_grad) <= 1e-10


@pytest.mark.usefixtures("x64")
def test_per_step_batches_equal_the_python_loop():
    train_loss, val_loss, solve, outer = logistic(1)
    params0 = jax.tree.map(jnp.zeros_like, solve(outer))
    # A minibatch per step: a 0/1 mask of the examples it sees.
    masks = jnp.asarray(np.random.default_rng(0).random((9, 30)) < 0.5, dtype=jnp.float64)
    batched = lambda p, o, mask: train_loss(p, {**o, "weights": o["weights"] * mask})
    optimizer = optax.sgd(0.5)
    objective = _python_loop(batched, val_loss, params0, optimizer, 9, batches=masks)
    _, grad = unrolled_hypergrad(batched, val_loss, params0, outer, optimizer=optimizer,
                                 num_steps=9, batches=masks)
    assert _rel(grad, jax.grad(objective)(outer)) <= 1e-10


@pytest.mark.usefixtures("x64")
def test_unrolled_tends_to_the_implicit_hypergradient():
    """Gradient descent with step 1/L from zero: the error falls with num_steps."""
    train_loss, val_loss, solve, outer = ridge(0, 40, 6, cond=30.0)
    params_star = solve(outer)
    implicit, _ = implicit_hypergrad(train_loss, val_loss, params_star, outer, tol=1e-13)
    hessian = jax.hessian(train_loss)(params_star, outer)
    lr = 1.0 / float(jnp.linalg.eigvalsh(hessian)[-1])
    errors = []
    for num_steps in (10, 100, 1000, 4000):
        _, grad = jax.jit(lambda o, t=num_steps: unrolled_hypergrad(
            train_loss, val_loss, jnp.zeros(6), o, optimizer=optax.sgd(lr), num_steps=t))(outer)
        errors.append(_rel(grad, implicit))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-2 and errors[-1] <= 1e-6, errors


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("num_steps", [1, 7, 16, 17])
@pytest.mark.parametrize("checkpoint", ["step", "sqrt", True])
def test_checkpointing_gives_the_same_numbers(checkpoint, num_steps):
    train_loss, val_loss, solve, outer = logistic(2)
    params0 = jax.tree.map(jnp.zeros_like, solve(outer))
    masks = jnp.asarray(np.random.default_rng(1).random((num_steps, 30)) < 0.7, dtype=jnp.float64)
    batched = lambda p, o, mask: train_loss(p, {**o, "weights": o["weights"] * mask})
    optimizer = optax.sgd(0.2, momentum=0.5)
    run = lambda ck: jax.jit(lambda o: unrolled_hypergrad(
        batched, val_loss, params0, o, optimizer=optimizer, num_steps=num_steps,
        checkpoint=ck, batches=masks))(outer)
    (plain_value, plain), (value, grad) = run(False), run(checkpoint)
    assert float(value) == pytest.approx(float(plain_value), rel=1e-13)
    assert _rel(grad, plain) <= 1e-12


def _mlp_problem(num_steps):
    rng = np.random.default_rng(0)
    x, x_val = jnp.asarray(rng.normal(size=(2, 256, 16)), jnp.float32)
    y, y_val = (x @ jnp.ones(16) > 0).astype(jnp.int32), (x_val @ jnp.ones(16) > 0).astype(jnp.int32)
    params0 = {"w1": jnp.asarray(rng.normal(size=(16, 64)) / 4, jnp.float32),
               "w2": jnp.asarray(rng.normal(size=(64, 2)) / 8, jnp.float32)}

    def loss(p, xs, ys, weights):
        logits = jnp.tanh(xs @ p["w1"]) @ p["w2"]
        return jnp.mean(weights * optax.softmax_cross_entropy_with_integer_labels(logits, ys))

    train_loss = lambda p, weights: loss(p, x, y, weights)
    val_loss = lambda p: loss(p, x_val, y_val, 1.0)
    return train_loss, val_loss, params0, jnp.ones(256, jnp.float32)


def _temp_bytes(checkpoint, num_steps):
    train_loss, val_loss, params0, weights = _mlp_problem(num_steps)
    fn = jax.jit(lambda w: unrolled_hypergrad(
        train_loss, val_loss, params0, w, optimizer=optax.sgd(0.1), num_steps=num_steps,
        checkpoint=checkpoint))
    return fn.lower(weights).compile().memory_analysis().temp_size_in_bytes


def test_sqrt_checkpointing_bounds_memory():
    """XLA's buffer plan: plain unrolling grows like T, sqrt checkpointing like sqrt(T)."""
    plain, sqrt = _temp_bytes(False, 400), _temp_bytes(True, 400)
    assert sqrt * 5 <= plain, (sqrt, plain)
    assert _temp_bytes(False, 100) * 3 <= plain            # linear growth ...
    assert _temp_bytes(True, 100) * 3 > sqrt               # ... and sublinear


@pytest.mark.usefixtures("x64")
def test_warm_start_carries_the_trained_state():
    """Eq. 11: two calls of T steps train like one of 2T; no gradient flows into the start."""
    train_loss, val_loss, solve, outer = logistic(3)
    optimizer = optax.sgd(0.3, momentum=0.9)
    state = init_inner_state(optimizer, jax.tree.map(jnp.zeros_like, solve(outer)))
    warm = jax.jit(lambda s, o: unrolled_hypergrad_warm(
        train_loss, val_loss, s, o, optimizer=optimizer, num_steps=5))
    _, _, half = warm(state, outer)
    value, grad, full = warm(half, outer)
    once = unrolled_train(train_loss, state, outer, optimizer=optimizer, num_steps=10)
    assert _rel(full.params, once.params) <= 1e-12
    assert _rel(full.opt_state[0].trace, once.opt_state[0].trace) <= 1e-12

    def from_half(o):   # 5 steps from the carried state, which is held constant
        return val_loss(unrolled_train(train_loss, half, o, optimizer=optimizer,
                                       num_steps=5).params)

    assert float(value) == pytest.approx(float(from_half(outer)), rel=1e-12)
    assert _rel(grad, jax.grad(from_half)(outer)) <= 1e-10


@pytest.mark.parametrize("kwargs, message", [
    ({"num_steps": 0}, "num_steps must be"),
    ({"num_steps": 3, "checkpoint": "binomial"}, "checkpoint must be one of"),
    ({"num_steps": 3, "batches": jnp.zeros((4, 2))}, "leading axis of length num_steps=3"),
])
def test_bad_settings_are_named(kwargs, message):
    train_loss, val_loss, solve, outer = ridge(0, 10, 3)
    with pytest.raises(ValueError, match=message):
        unrolled_hypergrad(train_loss, val_loss, jnp.zeros(3), outer, optimizer=optax.sgd(0.1),
                           **kwargs)
