"""AutoSimulate's outer step (Alg. 1) on a problem whose hypergradient is known.

Task: l(theta, x) = (theta - x)^T A (theta - x) / 2 with A = diag(a), x = decode(s) = s,
s ~ N(loc, sigma^2 I); validation: |theta - t|^2 / 2. Then H = A, and

    -d/dpsi E_s[<grad_theta l(theta, s), v>] = -d/dpsi E_s[<A (theta - s), v>]
                                             = A v w.r.t. loc, 0 w.r.t. log_scale,

with v = A^-1 (theta - t) for ``quadratic`` (so the exact hypergradient theta - t)
and v = theta - t for ``linear`` (so A (theta - t)).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simopt_jax import Categorical, Gaussian, autosimulate

D = 3
TARGET = jnp.array([0.5, -1.0, 2.0])
SIM = autosimulate.Simulator(Gaussian(), lambda s: (s, jnp.zeros(())))


A = jnp.array([1.0, 2.0, 4.0])


def _loss(theta, x, y):
    return 0.5 * jnp.sum(A * (theta - x) ** 2)


def _val(theta):
    return 0.5 * jnp.sum((theta - TARGET) ** 2)


def _run(config, theta, psi, keys, outer=optax.sgd(0.0)):
    """Hypergradient estimates at fixed theta (no fine-tuning, psi never moves)."""
    inner = optax.sgd(0.1)
    state = autosimulate.init(psi, theta, outer_optimizer=outer, inner_optimizer=inner)
    step = jax.jit(functools.partial(autosimulate.step, simulator=SIM, loss=_loss, val_loss=_val,
                                     inner_optimizer=inner, outer_optimizer=outer, config=config))
    return jax.vmap(lambda k: step(k, state)[1])(keys)


@pytest.mark.parametrize("gradient", autosimulate.GRADIENTS)
@pytest.mark.parametrize("method", ["quadratic", "linear"])
def test_hypergradient_is_unbiased_for_the_closed_form(gradient, method):
    theta = jnp.array([1.0, 0.0, -1.0])
    psi = Gaussian.init(jnp.array([0.2, 0.3, -0.4]), 0.7)
    config = autosimulate.Config(num_samples=16, inner_steps=0, method=method, damping=0.0,
                                 gradient=gradient)
    info = _run(config, theta, psi, jax.random.split(jax.random.key(0), 400))
    v = (theta - TARGET) / A if method == "quadratic" else theta - TARGET
    expected = {"loc": np.asarray(A * v), "log_scale": np.zeros(D)}
    for name in ("loc", "log_scale"):
        g = np.asarray(info.grad[name])
        # Pathwise has no spread here: floor the standard error at float32 round-off.
        mean, se = g.mean(0), np.maximum(g.std(0, ddof=1) / np.sqrt(len(g)), 1e-4)
        z = (mean - expected[name]) / se
        assert np.all(np.abs(z) < 5), (name, mean, expected[name], z)
        if name == "loc":
            # Power: an estimate off by a factor 2, or of the other method, or of the
            # opposite sign would be far outside (chi-square over the D coordinates).
            other = A * ((theta - TARGET) if method == "quadratic" else (theta - TARGET) / A)
            for wrong in (2 * expected[name], -expected[name], np.asarray(other)):
                assert np.sum(((mean - wrong) / se) ** 2) > 100, wrong
    assert np.all(info.applied)
    np.testing.assert_allclose(info.val_loss, float(_val(theta)), rtol=1e-6)
    if method == "quadratic":
        assert np.all(info.cg_residual < 1e-5) and np.all(info.cg_iterations >= 1)


def test_pathwise_has_lower_variance_than_the_score_function():
    theta, psi = jnp.zeros(D), Gaussian.init(jnp.zeros(D), 1.0)
    keys = jax.random.split(jax.random.key(1), 200)
    spread = {g: np.asarray(_run(autosimulate.Config(num_samples=8, inner_steps=0, gradient=g),
                                 theta, psi, keys).grad["loc"]).std(0).mean()
              for g in autosimulate.GRADIENTS}
    assert spread["pathwise"] < 0.5 * spread["score_function"], spread


def test_the_loop_moves_psi_to_the_validation_optimum():
    """With fine-tuning carried across steps, theta tracks loc and loc goes to the
    validation target (the distribution whose data trains the best network)."""
    inner, outer = optax.sgd(0.2), optax.sgd(0.2)
    config = autosimulate.Config(num_samples=16, inner_steps=5, damping=0.0)
    step = jax.jit(functools.partial(autosimulate.step, simulator=SIM, loss=_loss, val_loss=_val,
                                     inner_optimizer=inner, outer_optimizer=outer, config=config))
    state = autosimulate.init(Gaussian.init(jnp.zeros(D), 0.3), jnp.zeros(D),
                              outer_optimizer=outer, inner_optimizer=inner)
    start = float(jnp.linalg.norm(state.psi["loc"] - TARGET))
    for k in jax.random.split(jax.random.key(2), 60):
        state, info = step(k, state)
    assert int(state.step) == 60
    assert float(jnp.linalg.norm(state.psi["loc"] - TARGET)) < 0.1 * start
    assert float(info.val_loss) < 0.05


def test_a_non_finite_estimate_is_never_applied():
    bad = autosimulate.Simulator(Gaussian(), lambda s: (s * jnp.nan, jnp.zeros(())))
    outer, inner = optax.adam(0.1), optax.sgd(0.1)
    psi = Gaussian.init(jnp.zeros(D), 1.0)
    state = autosimulate.init(psi, jnp.zeros(D), outer_optimizer=outer, inner_optimizer=inner)
    new, info = autosimulate.step(jax.random.key(0), state, simulator=bad, loss=_loss,
                                  val_loss=_val, inner_optimizer=inner, outer_optimizer=outer,
                                  config=autosimulate.Config(num_samples=4, inner_steps=1))
    assert not bool(info.applied)
    for a, b in zip(jax.tree.leaves((new.psi, new.psi_opt_state)),
                    jax.tree.leaves((state.psi, state.psi_opt_state))):
        np.testing.assert_array_equal(a, b)


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="method"):
        autosimulate.Config(method="newton")
    with pytest.raises(ValueError, match="gradient"):
        autosimulate.Config(gradient="evolution")
    with pytest.raises(ValueError, match="num_samples"):
        autosimulate.Config(num_samples=1)
    with pytest.raises(ValueError, match="inner_steps"):
        autosimulate.Config(inner_steps=-1)
    with pytest.raises(TypeError, match="not a distribution"):
        autosimulate.Simulator(object(), lambda s: (s, s))
    categorical = autosimulate.Simulator(Categorical(), lambda s: (jnp.float32(s)[None], s))
    psi = Categorical.init(jnp.array([0.5, 0.5]))
    state = autosimulate.init(psi, jnp.zeros(1), outer_optimizer=optax.sgd(0.1),
                              inner_optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="reparameterised"):
        autosimulate.step(jax.random.key(0), state, simulator=categorical, loss=_loss,
                          val_loss=lambda p: jnp.sum(p ** 2), inner_optimizer=optax.sgd(0.1),
                          outer_optimizer=optax.sgd(0.1),
                          config=autosimulate.Config(gradient="pathwise"))
