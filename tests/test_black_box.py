"""render.black_box and render.finite_diff: derivatives of numpy functions in JAX."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from render import finite_diff
from render.black_box import BlackBoxError, black_box
from render.finite_diff import FD
from tests.stats import max_z

SETTINGS = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CENTRAL = FD(method="central", step=1e-5)


def _vector_fn(xp, x, y):
    """(4,), (2,) -> (3,)."""
    return xp.stack([
        xp.sum(xp.sin(x)) * y[0],
        xp.exp(0.3 * x) @ xp.arange(1.0, 5.0) + y[1] ** 2,
        x[0] * x[1] ** 2 - y[0] * y[1] + x[3] ** 3,
    ])


def _image_fn(xp, params, gain):
    """(3,), () -> (6, 5, 3) image."""
    v, u = xp.meshgrid(xp.linspace(-1.0, 1.0, 6), xp.linspace(-1.0, 1.0, 5), indexing="ij")
    base = xp.sin(params[0] * u + params[1] * v) * xp.exp(-params[2] * (u**2 + v**2))
    return gain * xp.stack([base, base**2, xp.cos(base + gain)], axis=-1)


CASES = {
    "vector": (_vector_fn, (4,), (2,), (3,)),
    "image": (_image_fn, (3,), (), (6, 5, 3)),
}


def _derivatives(fn, x, y, tx, ty, ct):
    """Every derivative the black box must reproduce, for a two-argument ``fn``."""
    out, vjp_fn = jax.vjp(fn, x, y)
    return {
        "value": out,
        "jvp": jax.jvp(fn, (x, y), (tx, ty))[1],
        "vjp": vjp_fn(ct),
        "jacfwd": jax.jacfwd(fn, argnums=(0, 1))(x, y),
        "jacrev": jax.jacrev(fn, argnums=(0, 1))(x, y),
        "grad": jax.grad(lambda x, y: jnp.sum(jnp.sin(fn(x, y))), argnums=(0, 1))(x, y),
    }


@functools.cache
def _checkers(case):
    fn, x_shape, y_shape, out_shape = CASES[case]
    box = black_box(
        functools.partial(fn, np), jax.ShapeDtypeStruct(out_shape, jnp.float64), fd=CENTRAL
    )
    reference = functools.partial(fn, jnp)
    return (
        jax.jit(functools.partial(_derivatives, box)),
        jax.jit(functools.partial(_derivatives, reference)),
        (x_shape, y_shape, out_shape),
    )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("case", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_central_derivatives_match_jax(case, data):
    black, reference, (x_shape, y_shape, out_shape) = _checkers(case)
    x, y = (data.draw(arrays(np.float64, shape, elements=st.floats(-1.5, 1.5)))
            for shape in (x_shape, y_shape))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    tx, ty, ct = (rng.normal(size=shape) for shape in (x_shape, y_shape, out_shape))
    got, want = black(x, y, tx, ty, ct), reference(x, y, tx, ty, ct)
    for (path, w), g in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        assert g.dtype == jnp.float64
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8, err_msg=jax.tree_util.keystr(path))


@pytest.mark.usefixtures("x64")
def test_hessian_by_nested_differences():
    box = black_box(functools.partial(_vector_fn, np), jax.ShapeDtypeStruct((3,), jnp.float64),
                    fd=FD(method="central", step=1e-4))
    y = jnp.array([0.4, -0.8])
    loss = lambda fn: (lambda x: jnp.sum(fn(x, y) ** 2))
    x = jnp.array([0.3, -0.2, 0.9, 0.5])
    np.testing.assert_allclose(jax.jit(jax.hessian(loss(box)))(x),
                               jax.hessian(loss(functools.partial(_vector_fn, jnp)))(x),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("x64")
def test_random_jacobian_is_unbiased_and_paper_scale_is_not():
    rng = np.random.default_rng(0)
    d, m = 12, 3
    a = jnp.asarray(rng.normal(size=(5, d)))
    x = jnp.asarray(rng.normal(size=d))
    keys = jax.random.split(jax.random.key(1), 4000)
    estimate = jax.jit(jax.vmap(lambda k: finite_diff.fd_jacobian(
        lambda v: a @ v, x, k, num_directions=m, sigma=0.1)))
    samples = np.asarray(estimate(keys))
    assert max_z(samples, a) < 5.0
    # The paper's Eq. 10 (weights 1/m, no factor d) has mean A / d: the same check fails.
    assert max_z(samples / d, a) > 20.0


@pytest.mark.usefixtures("x64")
def test_black_box_random_method_uses_the_finite_diff_estimator():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 20))
    m, sigma = 6, 1e-2
    box = black_box(lambda v: np.tanh(a @ v), jax.ShapeDtypeStruct((5,), jnp.float64),
                    fd=FD(method="random", num_directions=m, step=sigma))
    x = jnp.asarray(rng.normal(size=20) * 0.1)
    key = jax.random.key(3)
    want = finite_diff.fd_jacobian(lambda v: jnp.tanh(a @ v), x, key, num_directions=m, sigma=sigma)
    got = jax.jacrev(lambda v: box(v, key=key))(x)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # key=None means fd.seed: the same directions every call; a new key, new directions.
    default = jax.jacrev(box)(x)
    np.testing.assert_array_equal(default, jax.jacrev(box)(x))
    assert not np.allclose(default, want)


@pytest.mark.usefixtures("x64")
def test_fd_vjp_is_cotangent_times_fd_jacobian():
    rng = np.random.default_rng(2)
    fn = lambda v: jnp.sin(v[:, None] * jnp.arange(1.0, 4.0)) * v.sum()
    x, tangent = jnp.asarray(rng.normal(size=(2, 7)))
    ct = jnp.asarray(rng.normal(size=(7, 3)))

    @jax.jit
    def estimates(key):
        jac = finite_diff.fd_jacobian(fn, x, key, num_directions=4, sigma=1e-3)
        vjp = finite_diff.fd_vjp(fn, x, ct, key, num_directions=4, sigma=1e-3)
        pieces = finite_diff.random_pieces(fn, x, key, num_directions=4, sigma=1e-3)
        jvp = finite_diff.jvp_from_pieces(pieces, tangent)
        return jac, vjp, jvp, finite_diff.central_jacobian(fn, x, step=1e-5), jax.jacobian(fn)(x)

    jac, vjp, jvp, central, exact = estimates(jax.random.key(5))
    assert jac.shape == (7, 3, 7)
    np.testing.assert_allclose(vjp, jnp.tensordot(ct, jac, axes=2), rtol=1e-10)
    np.testing.assert_allclose(jvp, jac @ tangent, rtol=1e-10)
    np.testing.assert_allclose(central, exact, rtol=1e-7, atol=1e-9)


def _counting_image_fn(counter):
    weights = np.sin(np.arange(32 * 32 * 3 * 10).reshape(32 * 32 * 3, 10))

    def render(params, gain):
        counter.append(1)
        return (gain * np.tanh(weights @ params)).reshape(32, 32, 3).astype(np.float32)

    return render, lambda params, gain: (gain * jnp.tanh(weights @ params)).reshape(32, 32, 3)


def test_image_vjp_costs_two_calls_per_direction():
    calls = []
    render, reference = _counting_image_fn(calls)
    m = 5
    box = black_box(render, jax.ShapeDtypeStruct((32, 32, 3), jnp.float32),
                    fd=FD(method="random", num_directions=m, step=1e-2))
    params = jnp.linspace(-0.5, 0.5, 10, dtype=jnp.float32)
    key = jax.random.key(0)
    out, vjp_fn = jax.vjp(jax.jit(lambda p: box(p, 2, key=key)), params)
    assert len(calls) == 1 + 2 * m  # the primal, then one antithetic pair per direction
    ct = jnp.ones((32, 32, 3), jnp.float32)
    (grad,) = vjp_fn(ct)
    assert len(calls) == 1 + 2 * m  # the backward pass is pure JAX
    assert grad.shape == (10,) and grad.dtype == jnp.float32
    want = jax.jit(lambda p: finite_diff.fd_vjp(lambda q: reference(q, 2.0), p, ct, key,
                                                num_directions=m, sigma=1e-2))(params)
    np.testing.assert_allclose(grad, want, rtol=1e-3, atol=1e-3)
    # finite_diff.fd_vjp of the black box itself: exactly 2m calls, no primal.
    calls.clear()
    jax.jit(lambda p: finite_diff.fd_vjp(lambda q: box(q, 2), p, ct, key, num_directions=m))(params)
    assert len(calls) == 2 * m


def test_jit_vmap_and_their_gradients():
    box = black_box(lambda x, y: np.sin(x) * y, jax.ShapeDtypeStruct((3,), jnp.float32))
    ref = lambda x, y: jnp.sin(x) * y
    xs = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(4, 3)
    y = jnp.float32(1.5)
    np.testing.assert_allclose(jax.jit(box)(xs[0], y), ref(xs[0], y), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(box, (0, None))(xs, y), np.sin(np.asarray(xs)) * 1.5,
                               rtol=1e-6)
    loss = lambda fn: (lambda x, y: jnp.sum(fn(x, y) ** 2))
    np.testing.assert_allclose(jax.jit(jax.grad(loss(box)))(xs[0], y),
                               jax.grad(loss(ref))(xs[0], y), rtol=1e-3)
    per_example = lambda fn: jax.vmap(jax.grad(loss(fn), argnums=(0, 1)), (0, None))(xs, y)
    for got, want in zip(per_example(box), per_example(ref)):
        np.testing.assert_allclose(got, want, rtol=1e-3)
    # A vectorised fn: one call for the primal and one for all 2d perturbed points.
    calls = []
    vectorised = black_box(lambda x: calls.append(1) or np.sin(x),
                           jax.ShapeDtypeStruct((3,), jnp.float32), vmap_method="expand_dims")
    grads = jax.vmap(jax.grad(lambda x: jnp.sum(vectorised(x))))(xs)
    np.testing.assert_allclose(grads, jnp.cos(xs), rtol=1e-3)
    assert len(calls) == 2


@pytest.mark.usefixtures("x64")
def test_integer_arguments_and_pytree_outputs():
    def fn(x, n):
        return {"image": np.outer(np.sin(x), np.arange(n.item() + 1.0)), "count": np.int32(n + 1)}

    box = black_box(fn, {"image": jax.ShapeDtypeStruct((3, 4), jnp.float64),
                         "count": jax.ShapeDtypeStruct((), jnp.int32)}, fd=CENTRAL)
    x = jnp.array([0.1, 0.2, 0.3])
    out, dot = jax.jvp(lambda x: box(x, 3), (x,), (jnp.ones(3),))
    assert int(out["count"]) == 4 and dot["count"].dtype == jax.dtypes.float0
    np.testing.assert_allclose(dot["image"], np.outer(np.cos(x), np.arange(4.0)), rtol=1e-8)
    grad = jax.grad(lambda x: jnp.sum(box(x, 3)["image"]))(x)
    np.testing.assert_allclose(grad, 6.0 * np.cos(x), rtol=1e-8)


def _exploding_renderer(x):
    raise ValueError("scene has no camera")


@pytest.mark.parametrize("transform", ["eager", "jit", "grad", "vmap"])
def test_exception_names_the_function(transform):
    box = black_box(_exploding_renderer, jax.ShapeDtypeStruct((3,), jnp.float32))
    call = {
        "eager": box,
        "jit": jax.jit(box),
        "grad": jax.grad(lambda x: jnp.sum(box(x))),
        "vmap": lambda x: jax.vmap(box)(jnp.stack([x, x])),
    }[transform]
    message = "_exploding_renderer raised ValueError: scene has no camera"
    with pytest.raises(RuntimeError, match=message):
        jax.block_until_ready(call(jnp.ones(3)))


@pytest.mark.parametrize("output, message", [
    (np.ones(4), r"returned shape \(4,\) for output 0, result_shape declares \(3,\)"),
    (np.ones(3, np.complex64), "returned dtype complex64 for output 0"),
    ((np.ones(3), np.ones(3)), "returned 2 arrays, result_shape declares 1"),
])
def test_wrong_output_is_a_clear_error(output, message):
    def wrong_renderer(x):
        return output

    box = black_box(wrong_renderer, jax.ShapeDtypeStruct((3,), jnp.float32))
    with pytest.raises(RuntimeError, match=f"wrong_renderer {message}"):
        jax.block_until_ready(jax.jit(box)(jnp.ones(3)))


def test_configuration_errors():
    for bad in [dict(method="forward"), dict(step=0.0), dict(step=float("nan")),
                dict(num_directions=0), dict(max_central=-1), dict(seed=1.5),
                dict(num_directions=True)]:
        with pytest.raises(ValueError, match="FD."):
            FD(**bad)
    assert FD().resolve(16) == "central" and FD().resolve(17) == "random"
    assert FD(method="random").resolve(1) == "random"
    spec = jax.ShapeDtypeStruct((3,), jnp.float32)
    with pytest.raises(ValueError, match="vmap_method"):
        black_box(np.sin, spec, vmap_method="vectorized")
    with pytest.raises(ValueError, match="result_shape"):
        black_box(np.sin, (3,))
    with pytest.raises(TypeError, match="real arguments"):
        black_box(np.sin, spec)(jnp.ones(3, jnp.complex64))
    with pytest.raises(TypeError, match="at least one"):
        black_box(np.sin, spec)()
    with pytest.raises(ValueError, match=r"shape \(d,\)"):
        finite_diff.central_jacobian(jnp.sin, jnp.ones((2, 2)))
    assert issubclass(BlackBoxError, RuntimeError)
