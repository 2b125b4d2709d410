"""Score-function and pathwise gradients of expectations against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simopt_jax
from simopt_jax import Categorical, Gaussian, pathwise, score_function
from tests.stats import max_z

SETTINGS = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _gaussian_case(d, seed):
    """h(s) = (a . s, sum b s^2): E[h] = (a . loc, sum b (loc^2 + scale^2))."""
    rng = np.random.default_rng(seed)
    a, b = jnp.asarray(rng.normal(size=(2, d)))
    psi = Gaussian.init(jnp.asarray(rng.normal(size=d)), jnp.asarray(rng.uniform(0.3, 1.5, d)))
    h = lambda s: jnp.stack([a @ s, jnp.sum(b * s**2)])
    expectation = lambda p: jnp.stack(
        [a @ p["loc"], jnp.sum(b * (p["loc"] ** 2 + jnp.exp(2 * p["log_scale"])))])
    return h, psi, expectation


def _categorical_case(k, seed):
    """h(i) = table[i]: E[h] = softmax(logits) @ table."""
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(size=(k, 3)))
    psi = {"logits": jnp.asarray(rng.normal(size=k))}
    return (lambda s: table[s]), psi, lambda p: jax.nn.softmax(p["logits"]) @ table


def _estimates(estimator, h, dist, psi, num_samples, repeats=2000, **options):
    run = jax.jit(jax.vmap(lambda k: estimator(k, h, dist, psi, num_samples=num_samples,
                                               **options)[0]))
    return run(jax.random.split(jax.random.key(0), repeats))


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(d=st.sampled_from([1, 3]), num_samples=st.sampled_from([2, 16]),
       baseline=st.sampled_from([None, "leave_one_out", 1.5]), seed=st.integers(0, 2**16))
def test_score_function_is_unbiased_for_gaussians(d, num_samples, baseline, seed):
    h, psi, expectation = _gaussian_case(d, seed)
    want = jax.jacobian(expectation)(psi)
    samples = _estimates(score_function, h, Gaussian(), psi, num_samples, baseline=baseline)
    for name in ("loc", "log_scale"):
        assert max_z(samples[name], want[name]) < 5.0


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(k=st.sampled_from([2, 5]), num_samples=st.sampled_from([2, 16]),
       baseline=st.sampled_from([None, "leave_one_out"]), seed=st.integers(0, 2**16))
def test_score_function_is_unbiased_for_categoricals(k, num_samples, baseline, seed):
    h, psi, expectation = _categorical_case(k, seed)
    want = jax.jacobian(expectation)(psi)["logits"]
    samples = _estimates(score_function, h, Categorical(), psi, num_samples, baseline=baseline)
    assert max_z(samples["logits"], want) < 5.0


@pytest.mark.usefixtures("x64")
def test_the_test_detects_a_missing_mean_and_a_wrong_factor():
    """Eq. 11 printed as a sum over K samples is K times too large: z-tests see it."""
    h, psi, expectation = _gaussian_case(3, 0)
    want = jax.jacobian(expectation)(psi)
    samples = _estimates(score_function, h, Gaussian(), psi, 16, repeats=4000)
    assert max_z(samples["loc"], want["loc"]) < 5.0
    assert max_z(16 * samples["loc"], want["loc"]) > 20.0
    assert max_z(2 * samples["log_scale"], want["log_scale"]) > 20.0


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("dist_case", ["gaussian", "categorical"])
def test_leave_one_out_keeps_the_mean_and_cuts_the_variance(dist_case):
    if dist_case == "gaussian":
        h0, psi, expectation = _gaussian_case(2, 3)
        dist, names = Gaussian(), ("loc", "log_scale")
    else:
        h0, psi, expectation = _categorical_case(4, 3)
        dist, names = Categorical(), ("logits",)
    h = lambda s: h0(s) + 10.0    # a large offset: what a baseline is for
    want = jax.jacobian(expectation)(psi)
    plain = _estimates(score_function, h, dist, psi, 8, repeats=3000)
    loo = _estimates(score_function, h, dist, psi, 8, repeats=3000, baseline="leave_one_out")
    for name in names:
        assert max_z(loo[name], want[name]) < 5.0
        assert float(jnp.var(loo[name], 0).sum()) < 0.2 * float(jnp.var(plain[name], 0).sum())


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("estimator", [score_function, pathwise, simopt_jax.finite_difference])
def test_cotangent_form_is_the_contracted_jacobian(estimator):
    h, psi, _ = _gaussian_case(3, 4)
    key, cotangent = jax.random.key(5), jnp.array([0.7, -1.3])
    jac, stats = estimator(key, h, Gaussian(), psi, num_samples=6)
    grad, grad_stats = estimator(key, h, Gaussian(), psi, num_samples=6, cotangent=cotangent)
    for name in ("loc", "log_scale"):
        np.testing.assert_allclose(grad[name], cotangent @ jac[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_stats.value, cotangent @ stats.value, rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_pathwise_is_unbiased_and_quieter_than_the_score_function():
    h, psi, expectation = _gaussian_case(3, 6)
    want = jax.jacobian(expectation)(psi)
    path = _estimates(pathwise, h, Gaussian(), psi, 4)
    score = _estimates(score_function, h, Gaussian(), psi, 4, baseline="leave_one_out")
    for name in ("loc", "log_scale"):
        assert max_z(path[name], want[name]) < 5.0
        assert max_z(2 * path[name], want[name]) > 20.0
        assert float(jnp.var(path[name], 0).sum()) < float(jnp.var(score[name], 0).sum())


def test_pathwise_refuses_a_discrete_distribution():
    h, psi, _ = _categorical_case(3, 0)
    with pytest.raises(ValueError, match="Categorical is not"):
        pathwise(jax.random.key(0), h, Categorical(), psi, num_samples=4)


def test_bad_arguments_are_named():
    h, psi, _ = _gaussian_case(2, 0)
    with pytest.raises(ValueError, match="num_samples must be an int >= 2"):
        score_function(jax.random.key(0), h, Gaussian(), psi, num_samples=1,
                       baseline="leave_one_out")
    with pytest.raises(ValueError, match="baseline must be"):
        score_function(jax.random.key(0), h, Gaussian(), psi, num_samples=4, baseline="median")
    with pytest.raises(TypeError, match="lacks sample, log_prob"):
        score_function(jax.random.key(0), h, object(), psi, num_samples=4)


@pytest.mark.usefixtures("x64")
def test_log_probs_are_the_scipy_densities():
    from scipy import stats
    psi = Gaussian.init(jnp.array([0.2, -1.0]), jnp.array([0.5, 2.0]))
    s = jnp.array([0.1, 0.4])
    want = stats.norm.logpdf([0.1, 0.4], [0.2, -1.0], [0.5, 2.0]).sum()
    assert float(Gaussian.log_prob(psi, s)) == pytest.approx(want, rel=1e-12)
    probs = jnp.array([0.2, 0.5, 0.3])
    assert float(Categorical.log_prob(Categorical.init(probs), jnp.array(1))) == pytest.approx(
        np.log(0.5), rel=1e-12)
    draws = jax.vmap(Categorical.sample, (0, None))(
        jax.random.split(jax.random.key(0), 20000), Categorical.init(probs))
    np.testing.assert_allclose(np.bincount(np.asarray(draws), minlength=3) / 20000, probs, atol=0.015)
