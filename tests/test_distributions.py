"""The distributions q_psi(s) against scipy, closed-form moments and their own samples.

Every family is checked by one contract (determinism, vmap, jit, shapes, finite
scores) and by proofs that fail for a wrong factor: densities against
``scipy.stats`` in float64, normalisation by quadrature, sample moments and
Kolmogorov-Smirnov tests against closed forms (each with a power check: the same
test rejects samples whose scale is doubled), pathwise gradients against derivatives
of closed-form means and the score identity ``E[d log q / d psi] = 0``.
"""

import dataclasses
import functools
import itertools
import math
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from simopt_jax.distributions import (
    DISTRIBUTIONS, Categorical, Gaussian, Iid, Joint, LogNormal, Mixture, Uniform, VonMises,
    check_distribution,
)
from tests.stats import max_z

NUM_SAMPLES = 20000
Z = 4.5  # z-score tolerance of every moment test
SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _resultant(kappa):
    """``E[cos(s - loc)] = I1(kappa) / I0(kappa)`` of a von Mises."""
    return special.i1e(kappa) / special.i0e(kappa)


def _cos2(kappa):
    """``E[cos(2 (s - loc))] = I2(kappa) / I0(kappa)`` of a von Mises."""
    return special.ive(2, kappa) / special.i0e(kappa)


@dataclasses.dataclass(frozen=True)
class Case:
    """One member of the family, with closed forms in natural quantities.

    ``psi(factor)``: parameters, with the scale multiplied by ``factor`` (for the
    power checks; 1 is the true one). ``logpdf(s)``: the scipy log density.
    ``features(s)``: ``(N, *shape)`` samples to ``(N, F)`` statistics whose means are
    ``moments``. ``points(rng)``: a point of the support. ``shape``: one sample's.
    """

    dist: Any
    psi: Callable[[float], dict]
    logpdf: Callable[[np.ndarray], float]
    features: Callable[[np.ndarray], np.ndarray]
    moments: np.ndarray
    points: Callable[[np.random.Generator], np.ndarray]
    shape: tuple[int, ...]


G_LOC, G_SCALE = np.array([0.3, -1.2]), np.array([0.7, 1.9])
LN_MEDIAN, LN_SIGMA = np.array([0.5, 2.0]), np.array([0.4, 0.25])
LN_MU = np.log(LN_MEDIAN)
VM_LOC, VM_KAPPA = np.array([0.4, -2.8]), np.array([0.5, 8.0])  # -2.8: near the cut at -pi
C_PROBS = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
MG_W, MG_LOC = np.array([0.3, 0.7]), np.array([[-1.0, 2.0], [1.5, 0.0]])
MG_SCALE = np.array([[0.5, 1.0], [0.8, 0.3]])
MV_W, MV_LOC, MV_KAPPA = np.array([0.6, 0.4]), np.array([[0.0], [2.5]]), np.array([[4.0], [1.0]])


def _wrap(s):
    return (np.asarray(s) + np.pi) % (2 * np.pi) - np.pi


CASES = {
    "gaussian": Case(
        Gaussian(), lambda f=1.0: Gaussian.init(G_LOC, f * G_SCALE),
        lambda s: stats.norm.logpdf(s, G_LOC, G_SCALE).sum(),
        lambda s: np.concatenate([s, (s - G_LOC) ** 2], axis=1),
        np.concatenate([G_LOC, G_SCALE**2]),
        lambda rng: G_LOC + 3 * rng.normal(size=2), (2,)),
    "log_normal": Case(
        LogNormal(), lambda f=1.0: LogNormal.init(LN_MEDIAN, f * LN_SIGMA),
        lambda s: stats.lognorm.logpdf(s, s=LN_SIGMA, scale=np.exp(LN_MU)).sum(),
        lambda s: np.concatenate([s, s**2], axis=1),
        np.concatenate([np.exp(LN_MU + LN_SIGMA**2 / 2), np.exp(2 * LN_MU + 2 * LN_SIGMA**2)]),
        lambda rng: rng.lognormal(LN_MU, 2 * LN_SIGMA), (2,)),
    "von_mises": Case(
        # Doubling the scale ~ 1 / sqrt(kappa) divides kappa by 4.
        VonMises(), lambda f=1.0: VonMises.init(VM_LOC, VM_KAPPA / f**2),
        lambda s: stats.vonmises.logpdf(s, VM_KAPPA, loc=VM_LOC).sum(),
        lambda s: np.concatenate(
            [np.cos(s - VM_LOC), np.sin(s - VM_LOC), np.cos(2 * (s - VM_LOC))], axis=1),
        np.concatenate([_resultant(VM_KAPPA), [0.0, 0.0], _cos2(VM_KAPPA)]),
        lambda rng: rng.uniform(-7, 7, size=2), (2,)),
    "categorical": Case(
        # No scale: the power check flattens the probabilities (logits halved).
        Categorical(), lambda f=1.0: Categorical.init(C_PROBS ** (1 / f)),
        lambda s: np.log(C_PROBS[np.arange(2), s]).sum(),
        lambda s: (s[:, :, None] == np.arange(3)).reshape(len(s), -1).astype(float),
        C_PROBS.ravel(),
        lambda rng: rng.integers(0, 3, size=2), (2,)),
    "mixture_gaussian": Case(
        Mixture(Gaussian()), lambda f=1.0: Mixture.init(MG_W, Gaussian.init(MG_LOC, f * MG_SCALE)),
        lambda s: special.logsumexp(np.log(MG_W) + stats.norm.logpdf(s, MG_LOC, MG_SCALE).sum(1)),
        lambda s: np.concatenate([s, s**2], axis=1),
        np.concatenate([MG_W @ MG_LOC, MG_W @ (MG_SCALE**2 + MG_LOC**2)]),
        lambda rng: 3 * rng.normal(size=2), (2,)),
    "mixture_von_mises": Case(
        Mixture(VonMises()),
        lambda f=1.0: Mixture.init(MV_W, VonMises.init(MV_LOC, MV_KAPPA / f**2)),
        lambda s: special.logsumexp(
            np.log(MV_W) + stats.vonmises.logpdf(s, MV_KAPPA, loc=MV_LOC).sum(1)),
        lambda s: np.concatenate([np.cos(s), np.sin(s)], axis=1),
        np.concatenate([MV_W @ (_resultant(MV_KAPPA) * np.cos(MV_LOC)),
                        MV_W @ (_resultant(MV_KAPPA) * np.sin(MV_LOC))]),
        lambda rng: rng.uniform(-7, 7, size=1), (1,)),
}
REPARAMETERISED = {"gaussian": True, "log_normal": True}
names = pytest.mark.parametrize("name", list(CASES))


@functools.cache
def _jitted(dist) -> types.SimpleNamespace:
    """``dist``'s functions compiled once, shared by the tests (compiling dominates)."""
    return types.SimpleNamespace(
        sample=jax.jit(dist.sample),
        samples=jax.jit(jax.vmap(dist.sample, (0, None))),
        log_prob=jax.jit(dist.log_prob),
        log_probs=jax.jit(jax.vmap(dist.log_prob, (None, 0))),
        scores=jax.jit(jax.vmap(jax.grad(dist.log_prob), (None, 0))),
    )


def _keys(name: str, factor: float = 1.0) -> jax.Array:
    seed = 2 * list(CASES).index(name) + (factor != 1.0)
    return jax.random.split(jax.random.key(seed), NUM_SAMPLES)


@functools.cache
def _draw(name: str, factor: float = 1.0) -> np.ndarray:
    """``(NUM_SAMPLES, *shape)`` float32 samples of ``CASES[name].psi(factor)``."""
    case = CASES[name]
    return np.asarray(_jitted(case.dist).samples(_keys(name, factor), case.psi(factor)))


def _scores(dist, psi, samples) -> np.ndarray:
    """``(N, P)``: ``d log q(s_n) / d psi``, flattened."""
    scores = _jitted(dist).scores(psi, jnp.asarray(samples))
    return np.concatenate([np.asarray(g).reshape(len(samples), -1)
                           for g in jax.tree.leaves(scores)], axis=1)


# --- contract -------------------------------------------------------------------


@names
def test_contract(name):
    case = CASES[name]
    dist, psi = case.dist, case.psi()
    check_distribution(dist)
    assert dist.reparameterised is REPARAMETERISED.get(name, False)
    assert dataclasses.is_dataclass(dist) and dist.__dataclass_params__.frozen
    assert isinstance(psi, dict) and all(isinstance(x, jax.Array) for x in jax.tree.leaves(psi))

    fns, keys, draws = _jitted(dist), _keys(name), _draw(name)
    s = fns.sample(keys[5], psi)
    assert s.shape == case.shape
    assert jnp.issubdtype(s.dtype, jnp.integer if name == "categorical" else jnp.floating)
    np.testing.assert_array_equal(fns.sample(keys[5], psi), s)  # deterministic given the key
    np.testing.assert_allclose(draws[5], s, rtol=1e-6)  # vmap over keys: one key each
    np.testing.assert_allclose(dist.sample(keys[5], psi), s, rtol=1e-6)  # eager = jit
    assert len(np.unique(draws[:8], axis=0)) > 1

    log_p = fns.log_prob(psi, s)
    assert log_p.shape == () and np.isfinite(log_p)
    np.testing.assert_allclose(dist.log_prob(psi, s), log_p, rtol=1e-6)  # eager = jit
    log_ps = fns.log_probs(psi, draws)
    assert log_ps.shape == (NUM_SAMPLES,) and np.isfinite(log_ps).all()
    np.testing.assert_allclose(log_ps[5], log_p, rtol=1e-6)
    scores = fns.scores(psi, draws)
    assert jax.tree.structure(scores) == jax.tree.structure(psi)
    for score, leaf in zip(jax.tree.leaves(scores), jax.tree.leaves(psi)):
        assert score.shape == (NUM_SAMPLES, *leaf.shape) and np.isfinite(score).all()


def test_registry():
    assert DISTRIBUTIONS == {"gaussian": Gaussian, "log_normal": LogNormal,
                             "von_mises": VonMises, "categorical": Categorical}
    for family in DISTRIBUTIONS.values():
        check_distribution(family())


# --- densities ------------------------------------------------------------------


@pytest.mark.usefixtures("x64")
@names
def test_log_prob_matches_scipy(name):
    case = CASES[name]
    psi = case.psi()
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(psi))
    log_prob = _jitted(case.dist).log_prob
    rng = np.random.default_rng(0)
    for _ in range(6):
        s = case.points(rng)
        assert float(log_prob(psi, jnp.asarray(s))) == pytest.approx(case.logpdf(s), rel=1e-6)


ONE_D = {  # (distribution, psi, support) of one coordinate
    "gaussian": (Gaussian(), lambda: Gaussian.init(0.3, 0.7), (-30.0, 30.0)),
    # log(median) != -sigma^2 / 2: without the Jacobian the integral would be 0.75.
    "log_normal": (LogNormal(), lambda: LogNormal.init(0.5, 0.9), (0.0, np.inf)),
    "von_mises": (VonMises(), lambda: VonMises.init(2.9, 3.0), (-np.pi, np.pi)),
    "mixture_gaussian": (Mixture(Gaussian()), lambda: Mixture.init(
        [0.2, 0.8], Gaussian.init([-1.0, 2.0], [0.3, 1.5])), (-30.0, 30.0)),
    "mixture_von_mises": (Mixture(VonMises()), lambda: Mixture.init(
        [0.5, 0.5], VonMises.init([0.0, 3.0], [20.0, 0.5])), (-np.pi, np.pi)),
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", list(ONE_D))
def test_density_integrates_to_one(name):
    dist, psi, (low, high) = ONE_D[name]
    log_prob, params = _jitted(dist).log_prob, psi()
    total, error = integrate.quad(
        lambda s: math.exp(log_prob(params, s)), low, high, limit=200)
    assert error < 1e-7
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.usefixtures("x64")
def test_categorical_probabilities_sum_to_one():
    psi = Categorical.init(C_PROBS)
    log_prob = _jitted(Categorical()).log_prob
    outcomes = list(itertools.product(range(3), repeat=2))
    probs = [float(jnp.exp(log_prob(psi, jnp.asarray(s)))) for s in outcomes]
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)
    assert probs == pytest.approx([C_PROBS[0, i] * C_PROBS[1, j] for i, j in outcomes])


def test_log_normal_density_is_zero_off_its_support():
    psi = LogNormal.init([1.0, 1.0], 0.5)
    for s in ([0.0, 1.0], [1.0, -2.0]):
        assert LogNormal.log_prob(psi, jnp.asarray(s)) == -jnp.inf


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_von_mises_log_prob_is_stable_for_large_concentrations(x64, dtype):
    kappa = 1e4  # I0(kappa) overflows float64 (and float32 far earlier)
    psi = jax.tree.map(lambda x: x.astype(dtype), VonMises.init(1.0, kappa))
    # log I0(k) = k - log(2 pi k) / 2 + log(1 + 1/(8k) + 9/(128 k^2) + 225/(3072 k^3) + ...)
    log_i0 = (kappa - math.log(2 * math.pi * kappa) / 2
              + math.log1p(1 / (8 * kappa) + 9 / (128 * kappa**2) + 225 / (3072 * kappa**3)))
    for d in (0.0, 0.01):
        want = kappa * (math.cos(d) - 1) - math.log(2 * math.pi) - (log_i0 - kappa)
        got = VonMises.log_prob(psi, jnp.asarray(1.0 + d, dtype))
        assert float(got) == pytest.approx(want, rel=1e-6 if dtype == jnp.float64 else 1e-3)


# --- samples --------------------------------------------------------------------


@names
def test_sample_moments_match_closed_forms(name):
    case = CASES[name]
    assert max_z(case.features(_draw(name)), case.moments) < Z
    # Power: the same test rejects samples with the scale doubled.
    assert max_z(case.features(_draw(name, 2.0)), case.moments) > 3 * Z


KS = {  # name -> (coordinate, cdf of that coordinate, wrap the samples to [-pi, pi))
    "gaussian": [(j, stats.norm(G_LOC[j], G_SCALE[j]).cdf, False) for j in range(2)],
    "log_normal": [(j, stats.lognorm(s=LN_SIGMA[j], scale=LN_MEDIAN[j]).cdf, False)
                   for j in range(2)],
    # On [-pi, pi) the mass below s of a circular cdf F is F(s) - F(-pi).
    "von_mises": [(j, lambda s, j=j: stats.vonmises.cdf(s, VM_KAPPA[j], loc=VM_LOC[j])
                   - stats.vonmises.cdf(-np.pi, VM_KAPPA[j], loc=VM_LOC[j]), True)
                  for j in range(2)],
    "mixture_gaussian": [(j, lambda s, j=j: MG_W @ stats.norm.cdf(s, MG_LOC[:, j:j + 1],
                                                                  MG_SCALE[:, j:j + 1]), False)
                         for j in range(2)],
    "mixture_von_mises": [(0, lambda s: MV_W @ (
        stats.vonmises.cdf(s, MV_KAPPA, loc=MV_LOC)
        - stats.vonmises.cdf(-np.pi, MV_KAPPA, loc=MV_LOC)), True)],
}


@pytest.mark.parametrize("name", list(KS))
def test_samples_pass_kolmogorov_smirnov(name):
    for j, cdf, wrap in KS[name]:
        for factor, passes in ((1.0, True), (2.0, False)):
            s = _draw(name, factor)[:, j].astype(np.float64)
            p = stats.kstest(_wrap(s) if wrap else s, cdf).pvalue
            assert (p > 1e-3) if passes else (p < 1e-6), (j, factor, p)


def test_von_mises_samples_lie_within_pi_of_loc():
    """Not wrapped to [-pi, pi): loc = -2.8 puts 17 % of the mass of coordinate 1 below -pi."""
    offsets = _draw("von_mises") - VM_LOC
    assert np.all(np.abs(offsets) <= np.pi + 1e-6)
    assert np.mean(_draw("von_mises")[:, 1] < -np.pi) == pytest.approx(0.172, abs=0.02)


def test_von_mises_sampler_is_accurate_at_extreme_concentrations():
    """float32: uniform for kappa = 1e-6, N(loc, 1 / kappa) for kappa = 1e6."""
    psi = VonMises.init(jnp.ones(2), jnp.array([1e-6, 1e6]))
    theta = np.asarray(_jitted(VonMises()).samples(_keys("von_mises"), psi), np.float64) - 1.0
    assert stats.kstest(theta[:, 0], stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3
    assert stats.kstest(theta[:, 1] * 1e3, "norm").pvalue > 1e-3
    # Power: the scale doubled (kappa / 4) is rejected.
    assert stats.kstest(theta[:, 1] * 1e3 / 2, "norm").pvalue < 1e-6


@settings(SETTINGS, max_examples=8)
@given(log10_kappa=st.floats(-8, 10), loc=st.floats(-4, 4), seed=st.integers(0, 2**16))
def test_von_mises_samples_are_finite_and_near_loc(log10_kappa, loc, seed):
    psi = VonMises.init(jnp.full(2, loc), 10.0**log10_kappa)  # shapes of CASES: compiled
    s = _jitted(VonMises()).samples(jax.random.split(jax.random.key(seed), NUM_SAMPLES), psi)
    assert np.isfinite(s).all()
    assert np.all(np.abs(s - psi["loc"]) <= np.pi + 1e-6)
    # For kappa >> 1 all but ~1e-11 of the mass is within 7 / sqrt(kappa) of loc.
    if log10_kappa > 2:
        assert np.all(np.abs(s - psi["loc"]) < 7 / np.sqrt(10.0**log10_kappa) + 1e-6)


# --- gradients ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian", "log_normal"])
def test_pathwise_gradient_matches_closed_form(name):
    """Gaussian: d E[s^2] = (2 loc, 2 sigma^2); log-normal: d E[s] = (E, sigma^2 E)."""
    case = CASES[name]
    if name == "gaussian":
        h = lambda s: jnp.sum(s**2)
        want = {"loc": 2 * G_LOC, "log_scale": 2 * G_SCALE**2}
    else:
        h = jnp.sum
        mean = np.exp(LN_MU + LN_SIGMA**2 / 2)
        want = {"loc": mean, "log_scale": LN_SIGMA**2 * mean}
    keys = jax.random.split(jax.random.key(5), NUM_SAMPLES)
    grads = jax.jit(jax.vmap(jax.grad(lambda p, k: h(case.dist.sample(k, p))), (None, 0)))(
        case.psi(), keys)
    for leaf in ("loc", "log_scale"):
        assert max_z(grads[leaf], want[leaf]) < Z
    # Power: a factor 2 off in the scale derivative is rejected.
    assert max_z(grads["log_scale"], 2 * want["log_scale"]) > 3 * Z


@names
def test_score_has_zero_mean(name):
    """E_q[d log q(s) / d psi] = 0: log_prob is the density that sample draws from."""
    case = CASES[name]
    psi = case.psi()
    assert max_z(_scores(case.dist, psi, _draw(name)), 0.0) < Z
    # Power: scores at samples of the distribution with the scale doubled.
    assert max_z(_scores(case.dist, psi, _draw(name, 2.0)), 0.0) > 3 * Z


# --- invariants -----------------------------------------------------------------


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(loc=st.floats(-np.pi, np.pi), log_kappa=st.floats(-5, 6), s=st.floats(-10, 10),
       turns=st.integers(-3, 3))
def test_von_mises_log_prob_is_periodic_and_symmetric(loc, log_kappa, s, turns):
    psi = VonMises.init(loc, math.exp(log_kappa))
    at = lambda x: float(VonMises.log_prob(psi, jnp.asarray(x)))
    tol = 1e-9 * (1 + math.exp(log_kappa))
    assert at(s + 2 * np.pi * turns) == pytest.approx(at(s), abs=tol)
    assert at(loc + s) == pytest.approx(at(loc - s), abs=tol)
    assert at(loc) >= at(s)
    assert at(s) == pytest.approx(stats.vonmises.logpdf(s, math.exp(log_kappa), loc=loc),
                                  rel=1e-9, abs=tol)


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(mu=st.floats(-3, 3), sigma=st.floats(0.05, 3), s=st.floats(1e-3, 1e3))
def test_log_normal_is_a_gaussian_in_log_s(mu, sigma, s):
    want = Gaussian.log_prob(Gaussian.init(mu, sigma), jnp.log(s)) - math.log(s)
    got = LogNormal.log_prob(LogNormal.init(math.exp(mu), sigma), jnp.asarray(s))
    assert float(got) == pytest.approx(float(want), rel=1e-12, abs=1e-12)


@pytest.mark.usefixtures("x64")
@SETTINGS
@given(weights=st.lists(st.floats(0.01, 10), min_size=1, max_size=3),
       component=st.sampled_from(["gaussian", "von_mises"]), s=st.floats(-5, 5))
def test_mixture_of_identical_components_is_the_component(weights, component, s):
    dist = DISTRIBUTIONS[component]
    single = dist.init([0.4, -1.0], [0.8, 2.0])
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(weights), *x.shape)), single)
    point = jnp.asarray([s, -s])
    got = _jitted(Mixture(dist())).log_prob(Mixture.init(weights, stacked), point)
    assert float(got) == pytest.approx(float(_jitted(dist()).log_prob(single, point)), rel=1e-12)


# --- init -----------------------------------------------------------------------


def test_init_holds_natural_quantities():
    g = Gaussian.init([1.0, 2.0], 0.5)
    np.testing.assert_allclose(jnp.exp(g["log_scale"]), [0.5, 0.5], rtol=1e-6)
    ln = LogNormal.init([0.5, 2.0], [0.3, 0.6])
    np.testing.assert_allclose(jnp.exp(ln["loc"]), [0.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(ln["log_scale"]), [0.3, 0.6], rtol=1e-6)
    vm = VonMises.init(0.3, 7.0)
    assert float(jnp.exp(vm["log_concentration"])) == pytest.approx(7.0, rel=1e-6)
    mix = Mixture.init([1.0, 3.0], Gaussian.init([0.0, 1.0], 1.0))
    np.testing.assert_allclose(jax.nn.softmax(mix["logits"]), [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(mix["logits"]).sum(), 1.0, rtol=1e-6)
    # Traced values (init under jit) are not checked, and give the same parameters.
    traced = jax.jit(lambda m, k: VonMises.init(m, k))(jnp.asarray(0.3), jnp.asarray(7.0))
    assert jax.tree.map(float, traced) == pytest.approx(jax.tree.map(float, vm))


_TWO = Gaussian.init([0.0, 1.0], 1.0)  # two components


BAD_INPUTS = {  # id: (call, the argument its error must name)
    "gaussian_zero_scale": (lambda: Gaussian.init(0.0, 0.0), "scale"),
    "gaussian_negative_scale": (lambda: Gaussian.init([0.0, 1.0], [1.0, -1.0]), "scale"),
    "gaussian_scale_shape": (lambda: Gaussian.init([0.0, 1.0], [1.0, 1.0, 1.0]), "scale"),
    "log_normal_zero_median": (lambda: LogNormal.init(0.0, 1.0), "median"),
    "log_normal_negative_median": (lambda: LogNormal.init(-1.0, 1.0), "median"),
    "log_normal_zero_sigma": (lambda: LogNormal.init(1.0, 0.0), "sigma"),
    "von_mises_zero_kappa": (lambda: VonMises.init(0.0, 0.0), "concentration"),
    "von_mises_negative_kappa": (lambda: VonMises.init([0.0, 1.0], [-2.0, 1.0]), "concentration"),
    "von_mises_nan_kappa": (lambda: VonMises.init(0.0, float("nan")), "concentration"),
    "categorical_negative": (lambda: Categorical.init([-0.1, 1.1]), "probs"),
    "mixture_negative": (lambda: Mixture.init([-0.5, 1.5], _TWO), "weights"),
    "mixture_zero_sum": (lambda: Mixture.init([0.0, 0.0], _TWO), "weights"),
    "mixture_wrong_k": (lambda: Mixture.init([0.2, 0.3, 0.5], _TWO), "weights"),
    "mixture_not_1d": (lambda: Mixture.init([[0.5, 0.5]], _TWO), "weights"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_naming_the_argument(case):
    make, argument = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        make()


def test_mixture_component_must_be_a_distribution():
    with pytest.raises(TypeError, match="lacks sample, log_prob, reparameterised"):
        Mixture(object())


# --- joint, iid and uniform -----------------------------------------------------------


def _joint(factor: float = 1.0) -> tuple[Joint, dict]:
    """A Gaussian, a Categorical, a Uniform and an Iid log-normal, with ``CASES``' psi."""
    joint = Joint((("position", Gaussian()), ("choice", Categorical()),
                   ("nuisance", Uniform(-1.0, 3.0, (2,))), ("sizes", Iid(LogNormal(), 3))))
    psi = joint.init(position=CASES["gaussian"].psi(factor),
                     choice=CASES["categorical"].psi(factor), sizes=LogNormal.init(0.5, 0.3))
    return joint, psi


def test_joint_contract():
    joint, psi = _joint()
    check_distribution(joint)
    assert joint.names == ("position", "choice", "nuisance", "sizes")
    assert not joint.reparameterised
    assert Joint({"a": Gaussian(), "b": Uniform()}).reparameterised  # a mapping is accepted
    assert Joint({"a": Gaussian()}) == Joint((("a", Gaussian()),)) and hash(joint)
    assert psi["nuisance"] == {}
    fns, key = _jitted(joint), jax.random.key(3)
    s = fns.sample(key, psi)
    assert set(s) == set(joint.names)
    assert s["position"].shape == (2,) and s["choice"].shape == (2,)
    assert s["nuisance"].shape == (2,) and s["sizes"].shape == (3,)
    assert jnp.issubdtype(s["choice"].dtype, jnp.integer)
    again, eager = fns.sample(key, psi), joint.sample(key, psi)
    for name in joint.names:  # deterministic given the key; eager = jit
        np.testing.assert_array_equal(again[name], s[name])
        np.testing.assert_allclose(eager[name], s[name], rtol=1e-6)
    # Component i samples with key i of split(key, 4), whatever the others are.
    keys = jax.random.split(key, 4)
    for i, (name, dist) in enumerate(joint.components):
        np.testing.assert_allclose(dist.sample(keys[i], psi[name]), s[name], rtol=1e-6)
    other = fns.sample(jax.random.key(4), psi)
    assert not np.array_equal(other["position"], s["position"])


def test_joint_log_prob_is_the_sum_of_its_components():
    joint, psi = _joint()
    for seed in range(4):
        s = joint.sample(jax.random.key(seed), psi)
        parts = [dist.log_prob(psi[name], s[name]) for name, dist in joint.components]
        assert float(joint.log_prob(psi, s)) == float(parts[0] + parts[1] + parts[2] + parts[3])
        assert np.isfinite(float(joint.log_prob(psi, s)))


@pytest.mark.usefixtures("x64")
def test_iid_is_a_product_of_samples_with_shared_parameters():
    iid, psi = Iid(Gaussian(), 5), Gaussian.init(G_LOC, G_SCALE)
    assert iid.reparameterised and not Iid(Categorical(), 2).reparameterised
    assert iid.init(G_LOC, G_SCALE)["loc"] == pytest.approx(psi["loc"])
    key = jax.random.key(7)
    s = iid.sample(key, psi)
    assert s.shape == (5, 2)
    for i, k in enumerate(jax.random.split(key, 5)):
        np.testing.assert_array_equal(Gaussian.sample(k, psi), s[i])
    want = stats.norm.logpdf(np.asarray(s), G_LOC, G_SCALE).sum()
    assert float(iid.log_prob(psi, s)) == pytest.approx(want, rel=1e-12)


def test_uniform_samples_its_box_and_has_no_score():
    uniform = Uniform(-1.0, 3.0, (2,))
    assert uniform.init() == {} and uniform.reparameterised
    draws = np.asarray(_jitted(uniform).samples(_keys("gaussian"), {}), np.float64)
    assert draws.shape == (NUM_SAMPLES, 2) and np.all((draws >= -1.0) & (draws < 3.0))
    for j in range(2):
        assert stats.kstest(draws[:, j], stats.uniform(-1.0, 4.0).cdf).pvalue > 1e-3
        assert stats.kstest(draws[:, j], stats.uniform(-1.0, 2.0).cdf).pvalue < 1e-6  # power
    assert float(uniform.log_prob({}, jnp.array([0.0, 2.5]))) == pytest.approx(-2 * math.log(4.0))
    assert uniform.log_prob({}, jnp.array([0.0, 3.5])) == -jnp.inf
    # In a joint, the score does not see the uniform part: {} for it, and the other
    # components' scores are the same whatever the uniform sample is.
    joint, psi = _joint()
    s = joint.sample(jax.random.key(0), psi)
    score = jax.grad(joint.log_prob)(psi, s)
    assert score["nuisance"] == {}
    moved = jax.grad(joint.log_prob)(psi, dict(s, nuisance=jnp.array([2.9, -0.9])))
    for a, b in zip(jax.tree.leaves(score), jax.tree.leaves(moved)):
        np.testing.assert_array_equal(a, b)


def test_joint_score_has_zero_mean():
    """E_q[d log q(s) / d psi] = 0 for a Gaussian and a Categorical together."""
    joint = Joint((("position", Gaussian()), ("choice", Categorical())))

    def psi(factor):
        return joint.init(position=CASES["gaussian"].psi(factor),
                          choice=CASES["categorical"].psi(factor))

    def draw(factor, seed):
        return _jitted(joint).samples(jax.random.split(jax.random.key(seed), NUM_SAMPLES),
                                      psi(factor))

    def scores(samples):  # (N, P): d log q(s_n) / d psi, flattened
        tree = _jitted(joint).scores(psi(1.0), samples)
        return np.concatenate([np.asarray(g).reshape(NUM_SAMPLES, -1)
                               for g in jax.tree.leaves(tree)], axis=1)

    assert scores(draw(1.0, 11)).shape == (NUM_SAMPLES, 4 + 6)
    assert max_z(scores(draw(1.0, 11)), 0.0) < Z
    # Power: samples with the Gaussian's scale doubled and the probabilities flattened.
    assert max_z(scores(draw(2.0, 12)), 0.0) > 3 * Z


def test_joint_of_reparameterised_parts_is_pathwise_differentiable():
    joint = Joint((("position", Gaussian()), ("noise", Uniform(0.0, 1.0, (2,)))))
    assert joint.reparameterised
    psi = joint.init(position=Gaussian.init(G_LOC, G_SCALE))
    grad = jax.grad(lambda p: jnp.sum(joint.sample(jax.random.key(0), p)["position"]))(psi)
    np.testing.assert_allclose(grad["position"]["loc"], np.ones(2))
    assert grad["noise"] == {}


COMBINATOR_ERRORS = {  # id: (call, error type, what the message names)
    "joint_empty": (lambda: Joint(()), ValueError, "at least one"),
    "joint_repeated": (lambda: Joint((("a", Gaussian()), ("a", LogNormal()))), ValueError,
                       "repeated names"),
    "joint_unnamed": (lambda: Joint(((1, Gaussian()),)), ValueError, "string names"),
    "joint_not_a_distribution": (lambda: Joint((("a", object()),)), TypeError, "lacks"),
    "joint_missing": (lambda: _joint()[0].init(choice=Categorical.init(C_PROBS)), ValueError,
                      "position"),
    "joint_unknown": (lambda: Joint({"a": Uniform()}).init(b={}), ValueError, "unknown"),
    "iid_zero": (lambda: Iid(Gaussian(), 0), ValueError, "num"),
    "iid_not_a_distribution": (lambda: Iid(object(), 2), TypeError, "lacks"),
    "uniform_empty": (lambda: Uniform(1.0, 1.0), ValueError, "low"),
    "uniform_shape": (lambda: Uniform(shape=(-1,)), ValueError, "shape"),
}


@pytest.mark.parametrize("case", list(COMBINATOR_ERRORS))
def test_bad_combinators_are_named(case):
    make, error, message = COMBINATOR_ERRORS[case]
    with pytest.raises(error, match=message):
        make()
