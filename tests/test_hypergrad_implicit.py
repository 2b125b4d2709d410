"""simopt_jax.implicit_hypergrad against closed forms, dense formulas and re-solved problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import simopt_jax
from simopt_jax import implicit_direction, implicit_hypergrad
from tests.problems import logistic, ridge

SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _rel(got, want) -> float:
    got, want = ravel_pytree(got)[0], ravel_pytree(want)[0]
    return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(12, 3), (20, 6), (40, 10)]),
    cond=st.sampled_from([1.0, 1e2, 1e4]),
    log_lam=st.floats(-6.0, 1.0),
)
def test_quadratic_is_the_exact_ridge_hypergradient(seed, shape, cond, log_lam):
    """d val(w*(outer)) / d(log lambda, X_train) from the closed-form solution."""
    n, d = shape
    train_loss, val_loss, solve, outer = ridge(seed, n, d, cond)
    outer = {**outer, "log_lam": jnp.asarray(log_lam)}
    exact = jax.grad(lambda o: val_loss(solve(o)))(outer)
    grad, info = jax.jit(lambda o: implicit_hypergrad(
        train_loss, val_loss, solve(o), o, maxiter=20 * d, tol=1e-13))(outer)
    assert bool(info.converged) and float(info.residual) <= 1e-13
    assert 1 <= int(info.iterations) <= 20 * d
    assert float(info.val_loss) == pytest.approx(float(val_loss(solve(outer))), rel=1e-12)
    assert _rel(grad["log_lam"], exact["log_lam"]) <= 1e-6
    assert _rel(grad["X"], exact["X"]) <= 1e-6


def _dense_pieces(train_loss, val_loss, params, outer):
    """H, C (d/d outer of grad_params train_loss) and g_val as dense matrices."""
    flat_p, unravel_p = ravel_pytree(params)
    flat_o, unravel_o = ravel_pytree(outer)
    grad_p = lambda p, o: ravel_pytree(jax.grad(train_loss)(unravel_p(p), unravel_o(o)))[0]
    hessian = jax.jacobian(grad_p, argnums=0)(flat_p, flat_o)
    cross = jax.jacobian(grad_p, argnums=1)(flat_p, flat_o)
    g_val = ravel_pytree(jax.grad(val_loss)(params))[0]
    return hessian, cross, g_val, unravel_o


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("damping", [0.0, 0.3])
@pytest.mark.parametrize("method", simopt_jax.METHODS)
def test_every_method_is_its_table_1_formula(method, damping):
    """-C^T v with v from AutoSimulate Table 1, dense, at a point that is not an optimum."""
    train_loss, val_loss, solve, outer = logistic(1)
    params = jax.tree.map(lambda a: a + 0.3, solve(outer))   # away from the optimum
    hessian, cross, g_val, unravel_o = _dense_pieces(train_loss, val_loss, params, outer)
    damped = hessian + damping * jnp.eye(hessian.shape[0])
    v = {
        "quadratic": jnp.linalg.solve(damped, g_val),
        "approx_quadratic": damped @ g_val,
        "linear": g_val,
        "no_val": jnp.ones_like(g_val),
    }[method]
    want = unravel_o(-cross.T @ v)
    grad, info = jax.jit(lambda p, o: implicit_hypergrad(
        train_loss, val_loss, p, o, method=method, damping=damping, maxiter=200, tol=1e-14,
    ))(params, outer)
    assert _rel(grad, want) <= 1e-9
    assert bool(info.converged)
    if method == "no_val":
        assert np.isnan(info.val_loss)
    else:
        assert float(info.val_loss) == pytest.approx(float(val_loss(params)), rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_large_damping_turns_quadratic_into_linear_over_damping():
    """(H + delta I)^-1 -> I / delta: a check that damping enters as Levenberg's term."""
    train_loss, val_loss, solve, outer = logistic(2)
    params = solve(outer)
    delta = 1e6
    quadratic, _ = implicit_hypergrad(train_loss, val_loss, params, outer, damping=delta, tol=1e-14)
    linear, _ = implicit_hypergrad(train_loss, val_loss, params, outer, method="linear")
    assert _rel(jax.tree.map(lambda a: a * delta, quadratic), linear) <= 1e-5


@pytest.mark.usefixtures("x64")
def test_quadratic_matches_finite_differences_of_the_resolved_logistic_problem():
    """A non-quadratic inner problem: re-solve at outer +- h and difference val_loss."""
    train_loss, val_loss, solve, outer = logistic(3)
    params = solve(outer)
    grad_p_norm = float(ravel_pytree(jax.grad(train_loss)(params, outer))[0] @
                        ravel_pytree(jax.grad(train_loss)(params, outer))[0]) ** 0.5
    assert grad_p_norm < 1e-12   # the inner problem really is solved
    grad, info = implicit_hypergrad(train_loss, val_loss, params, outer, tol=1e-13, maxiter=100)
    assert bool(info.converged)

    flat, unravel = ravel_pytree(outer)
    h = 1e-5
    basis = jnp.eye(flat.shape[0]) * h
    objective = jax.jit(jax.vmap(lambda o: val_loss(solve(unravel(o)))))
    central = (objective(flat + basis) - objective(flat - basis)) / (2 * h)
    assert _rel(grad, unravel(central)) <= 1e-6


@pytest.mark.usefixtures("x64")
def test_non_converged_cg_is_flagged():
    train_loss, val_loss, solve, outer = ridge(0, 60, 20, cond=1e8)
    outer = {**outer, "log_lam": jnp.asarray(np.log(1e-9))}
    params = solve(outer)
    _, info = implicit_hypergrad(train_loss, val_loss, params, outer, maxiter=1, tol=1e-8)
    assert int(info.iterations) == 1
    assert not bool(info.converged)
    assert float(info.residual) > 1e-8
    v, direction_info = implicit_direction(train_loss, val_loss, params, outer, maxiter=1, tol=1e-8)
    assert not bool(direction_info.converged)
    np.testing.assert_allclose(direction_info.residual, info.residual, rtol=1e-6)
    # Enough iterations converge, and the flag says so.
    _, info = implicit_hypergrad(train_loss, val_loss, params, outer, maxiter=500, tol=1e-8)
    assert bool(info.converged) and float(info.residual) <= 1e-8


@pytest.mark.usefixtures("x64")
def test_zero_validation_gradient_gives_zero_and_converges():
    train_loss, _, solve, outer = ridge(1, 20, 4)
    params = solve(outer)
    grad, info = implicit_hypergrad(train_loss, lambda w: 0.0 * jnp.sum(w), params, outer)
    assert float(ravel_pytree(grad)[0] @ ravel_pytree(grad)[0]) == 0.0
    assert int(info.iterations) == 0 and float(info.residual) == 0.0 and bool(info.converged)


@pytest.mark.parametrize("method", simopt_jax.METHODS)
def test_a_nan_validation_gradient_gives_a_nan_hypergradient_never_zero(method):
    """CG must not turn a NaN right-hand side into v = 0 (a silently zero step)."""
    train_loss, _, solve, outer = ridge(1, 20, 4)
    params = solve(outer)
    grad, _ = implicit_hypergrad(train_loss, lambda w: jnp.nan * jnp.sum(w), params, outer,
                                 method=method)
    flat = ravel_pytree(grad)[0]
    if method == "no_val":    # ignores the validation loss by definition
        assert bool(jnp.all(jnp.isfinite(flat)))
    else:
        assert bool(jnp.all(jnp.isnan(flat)))


def test_cg_with_a_non_finite_right_hand_side_returns_nan():
    x, state = simopt_jax.cg(lambda v: 2.0 * v, jnp.array([1.0, jnp.inf]))
    assert bool(jnp.all(jnp.isnan(x))) and bool(jnp.isnan(state.recursive_residual))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("method", simopt_jax.METHODS)
def test_direction_then_one_vjp_is_the_hypergradient(method):
    """implicit_direction's v, contracted with C by hand, gives implicit_hypergrad."""
    train_loss, val_loss, solve, outer = logistic(4)
    params = solve(outer)
    v, info = implicit_direction(train_loss, val_loss, params, outer, method=method, tol=1e-13)
    _, vjp = jax.vjp(lambda o: jax.grad(train_loss)(params, o), outer)
    by_hand = jax.tree.map(jnp.negative, vjp(v)[0])
    grad, grad_info = implicit_hypergrad(train_loss, val_loss, params, outer, method=method,
                                         tol=1e-13)
    assert _rel(grad, by_hand) <= 1e-10
    assert bool(info.converged) == bool(grad_info.converged)


def test_no_val_never_evaluates_the_validation_loss():
    train_loss, _, solve, outer = ridge(2, 20, 4)

    def val_loss(params):
        raise AssertionError("no_val must not call val_loss")

    grad, _ = implicit_hypergrad(train_loss, val_loss, solve(outer), outer, method="no_val")
    assert np.all(np.isfinite(ravel_pytree(grad)[0]))


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "newton"}, "method must be one of"),
    ({"damping": -1.0}, "damping must be"),
    ({"tol": float("nan")}, "tol must be"),
    ({"maxiter": 2.5}, "maxiter must be"),
])
def test_bad_settings_are_named(kwargs, message):
    train_loss, val_loss, solve, outer = ridge(0, 10, 3)
    with pytest.raises(ValueError, match=message):
        implicit_hypergrad(train_loss, val_loss, solve(outer), outer, **kwargs)


@pytest.mark.usefixtures("x64")
def test_vmap_over_outer_values_matches_one_at_a_time():
    """Batch experiments: one jitted vmap over several outer values (CG loops run in lockstep)."""
    train_loss, val_loss, solve, outer = ridge(5, 30, 5, cond=100.0)

    def one(log_lam):
        o = {**outer, "log_lam": log_lam}
        grad, info = implicit_hypergrad(train_loss, val_loss, solve(o), o, tol=1e-12)
        return grad["log_lam"], info.iterations, info.converged

    log_lams = jnp.linspace(-6.0, 0.0, 5)
    grads, iterations, converged = jax.jit(jax.vmap(one))(log_lams)
    for k, log_lam in enumerate(log_lams):
        grad, iters, ok = one(log_lam)
        assert float(grads[k]) == pytest.approx(float(grad), rel=1e-9)
        # Batched arithmetic rounds differently: the stopping test may flip one step.
        assert abs(int(iterations[k]) - int(iters)) <= 1
        assert bool(converged[k]) and bool(ok)
