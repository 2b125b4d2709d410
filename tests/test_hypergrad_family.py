"""One contract test per family, run over every member chosen by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import simopt_jax
from simopt_jax import EXPECTATION_GRADS, HYPERGRADS, Gaussian
from tests.stats import max_z

OPTIONS = {
    "unrolled": {"optimizer": optax.sgd(0.5), "num_steps": 200, "checkpoint": True},
}


@functools.cache
def _problem():
    """Nested pytrees on both levels, float32: a weighted ridge fit of a line."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    x_val = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
    y_val = x_val @ jnp.array([1.0, -2.0, 0.5]) + 0.3

    def train_loss(p, o):
        residual = x @ p["w"] + p["b"] - (y + o["shift"][0])
        return jnp.mean(o["weights"] * residual**2) / 2 + jnp.exp(o["log_lam"]) * jnp.sum(p["w"]**2) / 2

    def val_loss(p):
        return jnp.mean((x_val @ p["w"] + p["b"] - y_val) ** 2) / 2

    outer = {"log_lam": jnp.asarray(-3.0, jnp.float32), "weights": jnp.ones(32, jnp.float32),
             "shift": (jnp.zeros((), jnp.float32),)}
    params = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    solver = optax.lbfgs()
    objective = lambda p: train_loss(p, outer)

    @jax.jit
    def solve(params):
        def step(carry, _):
            params, state = carry
            value, grad = optax.value_and_grad_from_state(objective)(params, state=state)
            updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                           value_fn=objective)
            return (optax.apply_updates(params, updates), state), None
        return jax.lax.scan(step, (params, solver.init(params)), length=50)[0][0]

    return train_loss, val_loss, solve(params), outer


@pytest.mark.parametrize("name", sorted(HYPERGRADS))
def test_every_hypergradient_keeps_the_contract(name):
    train_loss, val_loss, params, outer = _problem()
    fn = jax.jit(lambda p, o: HYPERGRADS[name](train_loss, val_loss, p, o, **OPTIONS.get(name, {})))
    grad, info = fn(params, outer)
    assert jax.tree.structure(grad) == jax.tree.structure(outer)
    for g, o in zip(jax.tree.leaves(grad), jax.tree.leaves(outer)):
        assert g.shape == o.shape and g.dtype == o.dtype
        assert np.all(np.isfinite(g))
    if name != "no_val":
        assert float(info.val_loss) == pytest.approx(float(val_loss(params)), rel=1e-3, abs=1e-6)
    # Moving the target shifts the fit, so every method sees some dependence on it.
    assert float(jnp.abs(grad["shift"][0])) > 0


def test_exact_members_agree_on_the_descent_direction():
    """quadratic and unrolled (to convergence) estimate the same hypergradient."""
    train_loss, val_loss, params, outer = _problem()
    quadratic, info = HYPERGRADS["quadratic"](train_loss, val_loss, params, outer, tol=1e-5)
    assert bool(info.converged)
    unrolled, _ = HYPERGRADS["unrolled"](train_loss, val_loss, params, outer,
                                         **{**OPTIONS["unrolled"], "num_steps": 2000})
    a, b = (jax.flatten_util.ravel_pytree(g)[0] for g in (quadratic, unrolled))
    assert float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))) > 0.99


def _case():
    """h(s) = {"lin": a . s, "sq": s^2}: E[h] in closed form."""
    a = jnp.array([1.0, -2.0, 0.5])
    psi = Gaussian.init(jnp.array([0.3, -0.4, 1.0]), jnp.array([0.5, 1.0, 0.8]))
    h = lambda s: {"lin": a @ s, "sq": s**2}
    expectation = lambda p: {"lin": a @ p["loc"], "sq": p["loc"] ** 2 + jnp.exp(2 * p["log_scale"])}
    return h, psi, expectation


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", sorted(EXPECTATION_GRADS))
def test_every_expectation_gradient_keeps_the_contract_and_is_unbiased(name):
    h, psi, expectation = _case()
    estimator = EXPECTATION_GRADS[name]
    want = jax.jacobian(expectation)(psi)
    run = jax.jit(lambda k: estimator(k, h, Gaussian(), psi, num_samples=8))
    jac, stats = run(jax.random.key(0))
    assert jax.tree.structure(jac) == jax.tree.structure(want)
    assert jax.tree.map(jnp.shape, jac) == jax.tree.map(jnp.shape, want)
    assert jax.tree.map(jnp.shape, stats.value) == {"lin": (), "sq": (3,)}
    assert int(stats.num_evaluations) >= 8
    samples = jax.jit(jax.vmap(lambda k: run(k)[0]))(jax.random.split(jax.random.key(1), 2000))
    for got, target in zip(jax.tree.leaves(samples), jax.tree.leaves(want)):
        assert max_z(got, target) < 5.0
    cotangent = {"lin": jnp.asarray(2.0), "sq": jnp.array([1.0, 0.0, -1.0])}
    grad, _ = estimator(jax.random.key(0), h, Gaussian(), psi, num_samples=8, cotangent=cotangent)
    assert jax.tree.map(jnp.shape, grad) == jax.tree.map(jnp.shape, psi)


def test_the_families_list_every_method():
    assert set(HYPERGRADS) == set(simopt_jax.METHODS) | {"unrolled"}
    assert set(EXPECTATION_GRADS) == {"score_function", "pathwise", "finite_diff"}
