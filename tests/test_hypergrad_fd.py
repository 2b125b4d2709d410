"""simopt_jax.fd_jacobian / fd_vjp / finite_difference: Eq. 10 with the exact scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simopt_jax
from render import finite_diff as render_fd
from simopt_jax import fd_jacobian, fd_vjp
from tests.stats import max_z

SETTINGS = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("sigma", [1e-4, 0.1, 10.0])
def test_one_input_is_exact_for_quadratics(sigma):
    """d = 1: every direction is +-1, so the estimate is the central difference,
    exact for a quadratic at any sigma. A /2 or a sigma in place of |delta| fails."""
    fn = lambda x: jnp.stack([3.0 * x[0] ** 2 - 2.0 * x[0], 5.0 * x[0]])
    x = jnp.array([0.7])
    for seed in range(5):
        jac = fd_jacobian(fn, x, jax.random.key(seed), num_directions=3, sigma=sigma)
        np.testing.assert_allclose(jac, [[3.0 * 2 * 0.7 - 2.0], [5.0]], rtol=1e-9)


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(d=st.sampled_from([2, 5, 12]), m=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**16))
def test_unbiased_with_the_theoretical_error_on_linear_maps(d, m, seed):
    """Mean = J (a missing factor d would give J / d), and for a linear map
    E ||J_hat - J||_F^2 = (d - 1) ||J||_F^2 / m exactly (module docstring)."""
    rng = np.random.default_rng(seed)
    a = jnp.asarray(rng.normal(size=(3, d)))
    x = jnp.asarray(rng.normal(size=d))
    keys = jax.random.split(jax.random.key(seed), 4000)
    samples = np.asarray(jax.jit(jax.vmap(
        lambda k: fd_jacobian(lambda v: a @ v, x, k, num_directions=m, sigma=0.3)))(keys))
    assert max_z(samples, a) < 5.0
    mse = np.mean(np.sum((samples - np.asarray(a)) ** 2, axis=(1, 2)))
    theory = (d - 1) * float(jnp.sum(a**2)) / m
    assert mse == pytest.approx(theory, rel=0.15)


@pytest.mark.usefixtures("x64")
def test_error_shrinks_like_one_over_sqrt_num_directions():
    rng = np.random.default_rng(7)
    d = 8
    a = jnp.asarray(rng.normal(size=(4, d)))
    fn = lambda v: jnp.tanh(a @ v)   # not linear: first-order accurate in sigma
    x = jnp.asarray(rng.normal(size=d) * 0.2)
    exact = jax.jacobian(fn)(x)
    rms = []
    ms = (4, 16, 64, 256)
    for m in ms:
        keys = jax.random.split(jax.random.key(m), 500)
        est = jax.jit(jax.vmap(lambda k: fd_jacobian(fn, x, k, num_directions=m, sigma=1e-4)))(keys)
        rms.append(float(jnp.sqrt(jnp.mean(jnp.sum((est - exact) ** 2, axis=(1, 2))))))
    slope = np.polyfit(np.log(ms), np.log(rms), 1)[0]
    assert -0.6 < slope < -0.4, (slope, rms)


@pytest.mark.usefixtures("x64")
def test_pytree_inputs_nest_like_jax_jacobian_and_vjp_contracts_it():
    fn = lambda p: {"y": jnp.sin(p["a"]) * p["b"].sum(), "z": jnp.sum(p["b"] ** 2)}
    x = {"a": jnp.array([0.1, 0.4, -0.3]), "b": jnp.array([[1.0, 2.0], [0.5, -1.0]])}
    key = jax.random.key(0)
    jac = fd_jacobian(fn, x, key, num_directions=5, sigma=1e-3)
    exact = jax.jacobian(fn)(x)
    assert jax.tree.structure(jac) == jax.tree.structure(exact)
    assert jax.tree.map(jnp.shape, jac) == jax.tree.map(jnp.shape, exact)
    cotangent = {"y": jnp.array([1.0, -2.0, 0.5]), "z": jnp.array(3.0)}
    vjp = fd_vjp(fn, x, cotangent, key, num_directions=5, sigma=1e-3)
    by_hand = jax.tree.map(
        lambda jy, jz: jnp.tensordot(cotangent["y"], jy, axes=1) + cotangent["z"] * jz,
        jac["y"], jac["z"])
    assert jax.tree.map(jnp.shape, vjp) == jax.tree.map(jnp.shape, x)
    for got, want in zip(jax.tree.leaves(vjp), jax.tree.leaves(by_hand)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.usefixtures("x64")
def test_one_implementation_shared_with_render_black_box():
    a = jnp.asarray(np.random.default_rng(3).normal(size=(5, 7)))
    x, key = jnp.linspace(-1.0, 1.0, 7), jax.random.key(2)
    fn = lambda v: jnp.cos(a @ v)
    np.testing.assert_array_equal(
        fd_jacobian(fn, x, key, num_directions=6, sigma=1e-2),
        render_fd.fd_jacobian(fn, x, key, num_directions=6, sigma=1e-2))


@pytest.mark.usefixtures("x64")
def test_common_random_numbers_estimator_of_an_expectation_gradient():
    """Hybrid gradient: d/dpsi E[h(loc + exp(log_scale) eps)] with a black-box h."""
    dist = simopt_jax.Gaussian()
    psi = dist.init(jnp.array([0.5, -1.0]), jnp.array([0.3, 0.7]))
    c = jnp.array([2.0, -1.0])
    h = lambda s: jnp.stack([c @ s, jnp.sum(s**2)])
    # E[h] = (c . loc, |loc|^2 + sum scale^2), differentiated by hand.
    scale2 = jnp.exp(2 * psi["log_scale"])
    want = {"loc": jnp.stack([c, 2 * psi["loc"]]),
            "log_scale": jnp.stack([jnp.zeros(2), 2 * scale2])}
    estimate = jax.jit(jax.vmap(lambda k: simopt_jax.finite_difference(
        k, h, dist, psi, num_samples=8, num_directions=3, sigma=1e-4)[0]))
    samples = estimate(jax.random.split(jax.random.key(0), 3000))
    for name in ("loc", "log_scale"):
        assert max_z(samples[name], want[name]) < 5.0
        assert max_z(2 * samples[name], want[name]) > 20.0   # the test has power
    jac, stats = simopt_jax.finite_difference(jax.random.key(1), h, dist, psi, num_samples=8,
                                              num_directions=3)
    assert int(stats.num_evaluations) == 8 * 7
    assert stats.value.shape == (2,)
