"""The hybrid gradient's outer step (Eqs. 6-11) against closed forms.

Generator: x_i = beta + 0.1 r_i (r_i standard normal from the step's key), n examples.
Task: l(theta, x) = |theta - x|^2 / 2, full-batch SGD with rate eta for T steps from
theta_0; validation |theta - t|^2 / 2. Then theta_T = xbar + (1 - eta)^T (theta_0 - xbar)
and dL/dbeta = (theta_T - t) (1 - (1 - eta)^T), since every x_i moves with beta.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simopt_jax import hybrid

N, ETA = 8, 0.3
TARGET3 = jnp.array([0.5, -1.0, 2.0])


def _generator(beta, r):
    return beta + 0.1 * jax.random.normal(r, (N,) + beta.shape)


def _loss(theta, x):
    return 0.5 * jnp.sum((theta - x) ** 2)


def _exact(beta, theta0, key, target, epochs):
    """The closed form, on the data the step draws (its key's first half)."""
    xbar = _generator(beta, jax.random.split(key)[0]).mean(0)
    decay = (1 - ETA) ** epochs
    theta = xbar + decay * (theta0 - xbar)
    return (theta - target) * (1 - decay)


def _step(target, config, outer=optax.sgd(0.0)):
    inner = optax.sgd(ETA)
    return inner, jax.jit(functools.partial(
        hybrid.step, generator=_generator, loss=_loss,
        val_loss=lambda th: 0.5 * jnp.sum((th - target) ** 2),
        inner_optimizer=inner, outer_optimizer=outer, config=config))


def test_one_parameter_is_exact_for_a_linear_generator():
    """d = 1: the central difference of a linear map is exact whatever sigma is."""
    target = jnp.array([0.7])
    config = hybrid.Config(epochs=4, batch_size=N, num_directions=3, sigma=0.5)
    inner, step = _step(target, config)
    beta, theta0 = jnp.array([-0.2]), jnp.array([1.5])
    state = hybrid.init(beta, theta0, outer_optimizer=optax.sgd(0.0), inner_optimizer=inner)
    for seed in range(3):
        key = jax.random.key(seed)
        _, info = step(key, state)
        np.testing.assert_allclose(info.grad, _exact(beta, theta0, key, target, 4), rtol=1e-4)


def test_many_parameters_unbiased_with_power():
    config = hybrid.Config(epochs=3, batch_size=N, num_directions=4, sigma=0.1)
    inner, step = _step(TARGET3, config)
    beta, theta0 = jnp.array([0.1, 0.2, 0.3]), jnp.array([1.0, 0.0, -1.0])
    state = hybrid.init(beta, theta0, outer_optimizer=optax.sgd(0.0), inner_optimizer=inner)
    keys = jax.random.split(jax.random.key(3), 400)
    est = np.asarray(jax.vmap(lambda k: step(k, state)[1].grad)(keys))
    exact = np.asarray(jax.vmap(lambda k: _exact(beta, theta0, k, TARGET3, 3))(keys))
    err = est - exact
    se = err.std(0, ddof=1) / np.sqrt(len(err))
    assert np.all(np.abs(err.mean(0) / se) < 5), (err.mean(0), se)
    for wrong in (2 * exact, 0.5 * exact):    # a factor 2 either way is far outside
        assert np.sum((((est - wrong).mean(0)) / se) ** 2) > 100


def test_unrolled_minibatch_sgd_matches_a_python_loop_through_autodiff():
    """Batch size 2 over two epochs: dL/dbeta equals jax.grad of a hand-written SGD
    loop through the (differentiable) generator, for d = 1 where FD is exact."""
    target = jnp.array([0.3])
    config = hybrid.Config(epochs=2, batch_size=2, num_directions=2, sigma=0.2)
    inner, step = _step(target, config)
    beta, theta0, key = jnp.array([0.4]), jnp.array([-1.0]), jax.random.key(7)
    state = hybrid.init(beta, theta0, outer_optimizer=optax.sgd(0.0), inner_optimizer=inner)

    def by_hand(b):
        x = _generator(b, jax.random.split(key)[0])
        theta = theta0
        for _ in range(2):
            for i in range(0, N, 2):
                theta = theta - ETA * jnp.mean(theta - x[i:i + 2], axis=0)
        return 0.5 * jnp.sum((theta - target) ** 2)

    _, info = step(key, state)
    np.testing.assert_allclose(info.grad, jax.grad(by_hand)(beta), rtol=1e-4)
    np.testing.assert_allclose(info.val_loss, by_hand(beta), rtol=1e-5)


def test_the_loop_moves_beta_to_the_validation_optimum_with_rmsprop():
    outer = optax.rmsprop(0.05)
    config = hybrid.Config(epochs=2, batch_size=N, num_directions=8, sigma=0.05)
    inner, step = _step(TARGET3, config, outer)
    state = hybrid.init(jnp.zeros(3), jnp.zeros(3), outer_optimizer=outer, inner_optimizer=inner)
    start = float(jnp.linalg.norm(state.beta - TARGET3))
    for k in jax.random.split(jax.random.key(4), 150):
        state, info = step(k, state)
    assert int(state.step) == 150
    assert float(jnp.linalg.norm(state.beta - TARGET3)) < 0.15 * start


def test_integer_labels_are_held_and_non_finite_gradients_not_applied():
    def generator(beta, r):
        x = _generator(beta, r)
        return x, (x[:, 0] > 0).astype(jnp.int32)

    def loss(theta, x, label):
        return 0.5 * jnp.sum((theta - x) ** 2) + 0.0 * label

    inner, outer = optax.sgd(ETA), optax.adam(0.1)
    config = hybrid.Config(epochs=1, batch_size=4, num_directions=2)
    state = hybrid.init(jnp.zeros(2), jnp.zeros(2), outer_optimizer=outer, inner_optimizer=inner)
    kwargs = dict(loss=loss, val_loss=lambda th: jnp.sum(th ** 2), inner_optimizer=inner,
                  outer_optimizer=outer, config=config)
    new, info = hybrid.step(jax.random.key(0), state, generator=generator, **kwargs)
    assert bool(info.applied) and np.all(np.isfinite(info.grad))
    assert not np.array_equal(new.beta, state.beta)
    nan_gen = lambda b, r: (generator(b, r)[0] * jnp.nan, generator(b, r)[1])  # noqa: E731
    new, info = hybrid.step(jax.random.key(0), state, generator=nan_gen, **kwargs)
    assert not bool(info.applied)
    for a, b in zip(jax.tree.leaves((new.beta, new.beta_opt_state)),
                    jax.tree.leaves((state.beta, state.beta_opt_state))):
        np.testing.assert_array_equal(a, b)


def test_bad_configurations_are_named():
    for name in ("epochs", "batch_size", "num_directions"):
        with pytest.raises(ValueError, match=name):
            hybrid.Config(**{name: 0})
    with pytest.raises(ValueError, match="sigma"):
        hybrid.Config(sigma=0.0)
    inner, outer = optax.sgd(0.1), optax.sgd(0.1)
    state = hybrid.init(jnp.zeros(1), jnp.zeros(1), outer_optimizer=outer, inner_optimizer=inner)
    with pytest.raises(ValueError, match="batch_size=3 must divide"):
        hybrid.step(jax.random.key(0), state, generator=_generator, loss=_loss,
                    val_loss=lambda th: jnp.sum(th ** 2), inner_optimizer=inner,
                    outer_optimizer=outer, config=hybrid.Config(batch_size=3))
