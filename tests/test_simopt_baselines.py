"""simopt_jax.baselines: the gradient-free outer loops on a toy quadratic objective."""

import os
import shutil
import tempfile
import time

import jax
import numpy as np
import pytest

from simopt_jax import baselines as B
from tests.stats import max_z

BOUNDS = np.array([[-1.0, 1.0], [0.0, 4.0]])   # unequal ranges: methods work on the unit box
PSI_STAR = np.array([0.3, 2.5])
PSI0 = np.array([-0.8, 0.5])
IMAGES = 10
NOISE = 1e-3


def toy(psi, key):
    """``|psi - psi*|^2`` plus a little noise from the key; 10 images per call."""
    noise = np.random.default_rng(np.asarray(jax.random.key_data(key))).normal()
    return B.Evaluation(float(np.sum((psi - PSI_STAR) ** 2) + NOISE * noise), IMAGES)


def nan_toy(psi, key):
    """``toy``, but NaN (a failed training) for ``psi[0] < -0.75``, which holds ``PSI0``."""
    value = toy(psi, key)
    return B.Evaluation(float("nan"), IMAGES) if psi[0] < -0.75 else value


START = float(np.sum((PSI0 - PSI_STAR) ** 2))   # 5.21

# per method: a config, the evaluations of the contract test, and the fraction of the
# value at psi0 below which the best value must be by then (every key in range(40)
# passes, range(12) for BO; REINFORCE is the slowest, as in AutoSimulate's comparison).
CASES = {
    "random_search": (B.RandomSearch(batch_size=4), 30, 0.1),
    "random_fixed": (B.RandomFixed(), 10, 0.25),
    "basic_random_search": (B.BasicRandomSearch(num_directions=4, step_size=0.2), 64, 0.1),
    "reinforce": (B.Reinforce(num_samples=8, learning_rate=0.1, baseline_decay=0.5), 80, 0.25),
    "bayesian_optimisation": (B.BayesianOptimisation(init_points=4), 20, 0.02),
    "evolution": (B.Evolution(population_size=4, num_offspring=4, mutation_scale=0.15), 48, 0.1),
}


def run(name, key=0, evaluate=toy, **kw):
    config, evaluations, _ = CASES[name]
    kw.setdefault("budget", B.Budget(images=IMAGES * evaluations + IMAGES // 2))
    return B.run_baseline(name, jax.random.key(key), evaluate, PSI0, BOUNDS, config,
                          progress=False, **kw)


def values_of(result):
    return np.array([h["value"] for h in result.history])


def test_family_lists_every_member_with_its_config():
    assert set(B.BASELINES) == set(B.CONFIGS) == set(CASES)
    for name, config in CASES.items():
        assert isinstance(config[0], B.CONFIGS[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_contract(name):
    _, evaluations, fraction = CASES[name]
    budget = B.Budget(images=IMAGES * evaluations + IMAGES // 2)
    result = run(name, budget=budget)
    history = result.history

    # the images budget binds: exactly the evaluations that fit, then it stopped
    # (random_fixed ends with its 10 samples)
    assert len(history) == evaluations
    assert result.stop_reason == ("done" if name == "random_fixed" else "images")
    assert [h["evaluations_so_far"] for h in history] == list(range(1, evaluations + 1))
    assert [h["images_so_far"] for h in history] == list(range(IMAGES, IMAGES * evaluations + 1,
                                                               IMAGES))
    assert history[-1]["images_so_far"] <= budget.images
    walls = [h["wall_time_s"] for h in history]
    assert walls[0] >= 0 and all(b >= a for a, b in zip(walls, walls[1:]))
    assert [h["iteration"] for h in history] == sorted(h["iteration"] for h in history)

    values = values_of(result)
    assert np.all(np.isfinite(values)) and not any(h["skipped"] for h in history)
    np.testing.assert_array_equal([h["best_so_far"] for h in history],
                                  np.minimum.accumulate(values))
    assert result.value == values.min()
    np.testing.assert_array_equal(result.psi, history[int(values.argmin())]["psi"])
    for psi in [result.psi] + [h["psi"] for h in history]:
        assert psi.shape == (2,)
        assert np.all((BOUNDS[:, 0] <= psi) & (psi <= BOUNDS[:, 1]))

    again = run(name, budget=budget)
    np.testing.assert_array_equal(values_of(again), values)
    np.testing.assert_array_equal(again.psi, result.psi)
    other = run(name, key=1, budget=budget)
    assert not np.array_equal(values_of(other), values)

    assert result.value < fraction * START
    if name == "bayesian_optimisation":   # the GP's proposals, not the random first batch
        assert min(h["value"] for h in history if h["iteration"] > 0) < fraction * START


@pytest.mark.parametrize("name", sorted(CASES))
def test_budgets_cut_batches_exactly(name):
    result = run(name, budget=B.Budget(evaluations=13))   # 13 = 8 + 5 cuts batches of 8
    expected = 10 if name == "random_fixed" else 13      # random_fixed has only 10
    assert len(result.history) == expected
    assert result.stop_reason == ("done" if name == "random_fixed" else "evaluations")
    assert result.history[-1]["images_so_far"] == expected * IMAGES
    if name == "random_fixed":
        assert len(run(name, budget=B.Budget(evaluations=6)).history) == 6
    # before any evaluation reports its images, one runs alone; then 20 of 25 fit
    result = run(name, budget=B.Budget(images=25))
    assert [h["images_so_far"] for h in result.history] == [10, 20]
    assert result.stop_reason == "images"


def test_images_budget_with_varying_images_is_never_exceeded():
    counts = iter([10, 4, 7, 10, 3, 9, 10] * 20)

    def varying(psi, key):
        return B.Evaluation(toy(psi, key).value, next(counts))

    result = B.random_search(jax.random.key(0), varying, PSI0, BOUNDS, B.RandomSearch(batch_size=3),
                             budget=B.Budget(images=80), progress=False)
    spent = [h["images_so_far"] for h in result.history]
    assert spent[-1] <= 80
    assert 80 - spent[-1] < 10       # it stopped only when a 10-image evaluation might not fit
    np.testing.assert_array_equal(spent, np.cumsum([h["images"] for h in result.history]))
    assert result.stop_reason == "images"


def test_seconds_budget_stops_between_evaluations():
    def slow(psi, key):
        time.sleep(0.02)
        return toy(psi, key)

    result = B.random_search(jax.random.key(0), slow, PSI0, BOUNDS, B.RandomSearch(batch_size=1),
                             budget=B.Budget(seconds=0.3, evaluations=1000), progress=False)
    assert result.stop_reason == "seconds"
    assert 3 <= len(result.history) < 1000
    assert result.history[-2]["wall_time_s"] < 0.3   # the last one started before time ran out


def test_random_search_starts_at_psi0_and_samples_the_box_uniformly():
    result = B.random_search(jax.random.key(3), toy, PSI0, BOUNDS, budget=B.Budget(evaluations=400),
                             progress=False)
    psis = np.stack([h["psi"] for h in result.history])
    np.testing.assert_array_equal(psis[0], PSI0)
    unit = (psis[1:] - BOUNDS[:, 0]) / (BOUNDS[:, 1] - BOUNDS[:, 0])
    # uniform on [0, 1]: mean 1/2, variance 1/12, per coordinate, 399 samples
    assert np.all(np.abs(unit.mean(axis=0) - 0.5) < 4 * np.sqrt(1 / 12 / 399))
    assert np.all(np.abs(unit.var(axis=0) - 1 / 12) < 0.015)
    batched = B.random_search(jax.random.key(3), toy, PSI0, BOUNDS, B.RandomSearch(batch_size=7),
                              budget=B.Budget(evaluations=400), progress=False)
    np.testing.assert_array_equal(values_of(batched), values_of(result))


def test_random_fixed_summary_is_best_median_worst_of_the_ten():
    result = B.random_fixed(jax.random.key(5), toy, PSI0, BOUNDS,
                            budget=B.Budget(evaluations=50), progress=False)
    assert len(result.history) == 10 and result.stop_reason == "done"
    values = values_of(result)
    assert len(np.unique(values)) == 10
    summary = B.fixed_summary(result)
    assert summary["best"].value <= summary["median"].value <= summary["worst"].value
    expected = np.percentile(values, [0, 50, 100], method="lower")
    np.testing.assert_array_equal([summary[k].value for k in ("best", "median", "worst")], expected)
    assert summary["median"].value == np.sort(values)[4]
    for name in ("best", "median", "worst"):
        i = int(np.flatnonzero(values == summary[name].value)[0])
        np.testing.assert_array_equal(summary[name].psi, result.history[i]["psi"])
    assert summary["best"].value == result.value


def test_fixed_summary_ignores_nan_and_needs_a_finite_value():
    result = B.random_fixed(jax.random.key(5), toy, PSI0, BOUNDS,
                            budget=B.Budget(evaluations=50), progress=False)
    values = values_of(result)
    history = [dict(h) for h in result.history]
    history[int(values.argmax())]["value"] = float("nan")
    history[int(values.argmin())]["value"] = float("nan")
    summary = B.fixed_summary(result._replace(history=history))
    finite = np.sort(values)[1:-1]
    assert (summary["best"].value, summary["median"].value, summary["worst"].value) == (
        finite[0], finite[3], finite[-1])
    with pytest.raises(ValueError, match="result"):
        B.fixed_summary(result._replace(history=[dict(h, value=float("nan")) for h in history]))


def test_brs_update_matches_a_hand_computation():
    u = np.array([0.4, 0.6])
    deltas = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    r_plus, r_minus = np.array([1.0, -2.0, 0.5]), np.array([0.0, -1.0, 3.0])
    config = B.BasicRandomSearch(num_directions=3, top_directions=2, step_size=0.1)
    new, used = B.brs_update(u, deltas, r_plus, r_minus, config)
    # max(r+, r-) = (1, -1, 3): the top two are directions 2 and 0
    sigma = np.std([0.5, 3.0, 1.0, 0.0])
    step = (0.5 - 3.0) * np.array([1.0, -1.0]) + (1.0 - 0.0) * np.array([1.0, 0.0])
    np.testing.assert_allclose(new, u + 0.1 / (2 * sigma) * step, rtol=1e-12)
    np.testing.assert_array_equal(used, [True, False, True])

    # a NaN reward drops its direction; the next best takes its place
    new, used = B.brs_update(u, deltas, np.array([1.0, -2.0, np.nan]), r_minus, config)
    sigma = np.std([1.0, 0.0, -2.0, -1.0])
    step = 1.0 * np.array([1.0, 0.0]) + (-2.0 + 1.0) * np.array([0.0, 1.0])
    np.testing.assert_allclose(new, u + 0.1 / (2 * sigma) * step, rtol=1e-12)
    np.testing.assert_array_equal(used, [True, True, False])

    # all directions (top_directions=None), clipped to the unit box
    big = B.BasicRandomSearch(num_directions=3, step_size=10.0)
    new, used = B.brs_update(u, deltas, r_plus, r_minus, big)
    sigma = np.std(np.concatenate([r_plus, r_minus]))
    raw = u + 10.0 / (3 * sigma) * ((r_plus - r_minus) @ deltas)
    np.testing.assert_allclose(new, np.clip(raw, 0, 1), rtol=1e-12)
    assert np.any((raw < 0) | (raw > 1)) and used.all()

    # equal rewards, or none finite: no step
    same, _ = B.brs_update(u, deltas, np.ones(3), np.ones(3), config)
    none, used = B.brs_update(u, deltas, np.full(3, np.nan), r_minus, config)
    np.testing.assert_array_equal(same, u)
    np.testing.assert_array_equal(none, u)
    assert not used.any()


def test_brs_run_follows_the_documented_keys_and_update():
    unit_box = np.array([[0.0, 1.0], [0.0, 1.0]])
    config = B.BasicRandomSearch(num_directions=2, step_size=0.3, noise=0.05)
    key = jax.random.key(7)
    result = B.basic_random_search(key, toy, np.array([0.5, 0.5]), unit_box, config,
                                   budget=B.Budget(evaluations=8), progress=False)
    sample_key, eval_key = jax.random.split(key)
    u = np.array([0.5, 0.5])
    for t in range(2):
        deltas = np.asarray(jax.random.normal(jax.random.fold_in(sample_key, t), (2, 2),
                                              dtype=np.float32), np.float64)
        rows = result.history[4 * t:4 * t + 4]
        expected = [u + 0.05 * deltas[0], u - 0.05 * deltas[0], u + 0.05 * deltas[1],
                    u - 0.05 * deltas[1]]
        np.testing.assert_allclose([h["psi"] for h in rows], np.clip(expected, 0, 1), rtol=1e-12)
        for i, h in enumerate(rows):
            expected_value = toy(h["psi"], jax.random.fold_in(eval_key, 4 * t + i)).value
            assert h["value"] == expected_value and h["iteration"] == t
        values = np.array([h["value"] for h in rows])
        u, _ = B.brs_update(u, deltas, -values[0::2], -values[1::2], config)
    assert not np.allclose(u, 0.5)


@pytest.mark.parametrize("name", ["random_search", "basic_random_search", "evolution",
                                  "bayesian_optimisation"])
def test_numbers_do_not_depend_on_x64(name, request):
    plain = run(name, budget=B.Budget(evaluations=12))
    request.getfixturevalue("x64")
    wide = run(name, budget=B.Budget(evaluations=12))
    assert jax.config.jax_enable_x64
    np.testing.assert_array_equal([h["psi"] for h in wide.history],
                                  [h["psi"] for h in plain.history])


def test_reinforce_gradient_is_unbiased_on_a_quadratic():
    rng = np.random.default_rng(0)
    target = np.array([0.5, 0.5])
    loc, scale = np.array([0.3, 0.6]), np.array([0.1, 0.2])
    n, k = 4000, 4
    samples = loc + scale * rng.normal(size=(n, k, 2))
    values = np.sum((samples - target) ** 2, axis=-1)
    baseline = 0.07                     # fixed, independent of the samples
    grad_loc, grad_log_scale = B.reinforce_gradient(loc, np.log(scale), samples, values, baseline)
    assert grad_loc.shape == grad_log_scale.shape == (n, 2)
    # E|s - s*|^2 = |loc - s*|^2 + sum scale^2
    exact_loc, exact_log_scale = 2 * (loc - target), 2 * scale ** 2
    assert max_z(grad_loc, exact_loc) < 4.5
    assert max_z(grad_log_scale, exact_log_scale) < 4.5
    assert max_z(grad_loc, 2 * exact_loc) > 10       # power against a factor 2
    assert max_z(grad_log_scale, 2 * exact_log_scale) > 10
    assert max_z(grad_loc / 2, exact_loc) > 10


def test_reinforce_gradient_leaves_out_nan_values():
    loc, log_scale = np.zeros(2), np.zeros(2)
    samples = np.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    values = np.array([3.0, 1.0, np.nan])
    grad_loc, grad_log_scale = B.reinforce_gradient(loc, log_scale, samples, values, 1.0)
    # only the first two: advantages (2, 0), scores (s - loc) and (s^2 - 1)
    np.testing.assert_allclose(grad_loc, [1.0, 0.0])
    np.testing.assert_allclose(grad_log_scale, [0.0, -1.0])
    none = B.reinforce_gradient(loc, log_scale, samples, np.full(3, np.nan), 1.0)
    np.testing.assert_array_equal(none, np.zeros((2, 2)))


def test_reinforce_learns_the_std_only_when_asked():
    runs = {learn: B.reinforce(jax.random.key(0), toy, PSI0, BOUNDS,
                               B.Reinforce(learn_std=learn), budget=B.Budget(evaluations=24),
                               progress=False)
            for learn in (False, True)}
    psis = {learn: np.stack([h["psi"] for h in r.history]) for learn, r in runs.items()}
    np.testing.assert_array_equal(psis[True][:8], psis[False][:8])   # same first policy
    # afterwards the learned log_scale changes the samples
    assert not np.allclose(psis[True][8:], psis[False][8:])


@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_is_recorded_but_never_best(name):
    result = run(name, evaluate=nan_toy)
    values = values_of(result)
    assert np.isnan(values).any() and np.isfinite(values).any()
    assert np.isfinite(result.value) and result.value == np.nanmin(values)
    best = [h["best_so_far"] for h in result.history]
    assert not np.isnan(best).any()
    np.testing.assert_array_equal(best, np.fmin.accumulate(np.where(np.isnan(values), np.inf,
                                                                    values)))
    for h in result.history:
        assert h["skipped"] or np.isfinite(h["value"])
        assert np.all(np.isfinite(h["psi"]))
    if name in ("basic_random_search", "reinforce", "evolution"):
        assert result.value < START     # the method kept moving away from the failures
    if name == "basic_random_search":
        for a, b in zip(result.history[0::2], result.history[1::2]):
            pair_finite = np.isfinite(a["value"]) and np.isfinite(b["value"])
            assert a["skipped"] == b["skipped"] == (not pair_finite)
        assert any(h["skipped"] and np.isfinite(h["value"]) for h in result.history)


def counting(evaluate):
    calls = []

    def wrapped(psi, key):
        calls.append(psi)
        return evaluate(psi, key)

    return wrapped, calls


@pytest.mark.parametrize("change, match", [
    (dict(bounds=np.array([[-1.0, 1.0], [2.0, 2.0]])), "bounds"),
    (dict(bounds=np.array([[1.0, -1.0], [0.0, 4.0]])), "bounds"),
    (dict(bounds=np.array([[-1.0, 1.0], [0.0, 4.0], [0.0, 1.0]])), "bounds"),
    (dict(bounds=np.array([-1.0, 1.0])), "bounds"),
    (dict(psi0=np.array([-0.8, 4.5])), "psi0"),
    (dict(psi0=np.array([[-0.8, 0.5]])), "psi0"),
    (dict(psi0=np.array([np.nan, 0.5])), "psi0"),
    (dict(method="grid_search"), "method"),
    (dict(executor="threads"), "executor"),
])
def test_bad_inputs_raise_naming_the_argument(change, match):
    evaluate, calls = counting(toy)
    args = dict(method="random_search", psi0=PSI0, bounds=BOUNDS, executor="sequential") | change
    with pytest.raises(ValueError, match=match):
        B.run_baseline(args["method"], jax.random.key(0), evaluate, args["psi0"], args["bounds"],
                       budget=B.Budget(evaluations=3), executor=args["executor"], progress=False)
    assert calls == []


@pytest.mark.parametrize("make, match", [
    (lambda: B.Budget(), "budget"),
    (lambda: B.Budget(images=0), "images"),
    (lambda: B.Budget(evaluations=-2), "evaluations"),
    (lambda: B.Budget(images=100, seconds=0.0), "seconds"),
    (lambda: B.BasicRandomSearch(num_directions=4, top_directions=5), "top_directions"),
    (lambda: B.BasicRandomSearch(noise=0.0), "noise"),
    (lambda: B.Reinforce(baseline_decay=1.0), "baseline_decay"),
    (lambda: B.Reinforce(init_std=-0.1), "init_std"),
    (lambda: B.RandomFixed(num_samples=0), "num_samples"),
    (lambda: B.Evolution(mutation_scale=0.0), "mutation_scale"),
    (lambda: B.BayesianOptimisation(kappa=-1.0), "kappa"),
    (lambda: B.RandomSearch(batch_size=0), "batch_size"),
])
def test_bad_budgets_and_configs_raise_naming_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_config_type_and_bad_evaluate_output_are_caught():
    with pytest.raises(TypeError, match="config"):
        B.reinforce(jax.random.key(0), toy, PSI0, BOUNDS, B.Evolution(),
                    budget=B.Budget(evaluations=3), progress=False)
    with pytest.raises(ValueError, match="images"):
        B.random_search(jax.random.key(0), lambda psi, key: B.Evaluation(1.0, -1), PSI0, BOUNDS,
                        budget=B.Budget(evaluations=3), progress=False)
    with pytest.raises(ValueError, match="Evaluation"):
        B.random_search(jax.random.key(0), lambda psi, key: 1.0, PSI0, BOUNDS,
                        budget=B.Budget(evaluations=3), progress=False)


def test_evaluate_many_keeps_order_and_reports_each_candidate():
    psis = np.array([[0.0, 1.0], [0.5, 2.0], [-0.5, 3.0]])
    keys = [jax.random.key(i) for i in range(3)]
    seen = []
    out = B.evaluate_many(toy, psis, keys, on_done=lambda i, e: seen.append((i, e.value)))
    assert [e.value for e in out] == [toy(p, k).value for p, k in zip(psis, keys)]
    assert seen == [(i, e.value) for i, e in enumerate(out)]
    with pytest.raises(ValueError, match="key"):
        B.evaluate_many(toy, psis, keys[:2])


def test_progress_bar_shows_evaluations_images_and_best(capsys):
    B.random_search(jax.random.key(0), toy, PSI0, BOUNDS, budget=B.Budget(evaluations=5))
    err = capsys.readouterr().err
    assert "random_search" in err and "5/5" in err and "images=50" in err and "best=" in err
    B.random_search(jax.random.key(0), toy, PSI0, BOUNDS, budget=B.Budget(evaluations=5),
                    progress=False)
    assert capsys.readouterr().err == ""


def test_ray_executor_without_ray_initialised_asks_for_ray_init(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    evaluate, calls = counting(toy)
    with pytest.raises(RuntimeError, match=r"ray\.init"):
        B.basic_random_search(jax.random.key(0), evaluate, PSI0, BOUNDS,
                              budget=B.Budget(evaluations=8), executor="ray", progress=False)
    assert calls == []


@pytest.fixture(scope="module")
def local_ray():
    """A two-CPU Ray on this machine, without the dashboard or token auth, in a temp dir."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_AUTH_MODE"] = "disabled"   # Ray 2.60 would write ~/.ray/auth_token
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's sockets live here
    here = os.path.dirname(os.path.abspath(__file__))   # workers import toy from this file
    path = os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.parametrize("name, config, evaluations", [
    ("random_search", B.RandomSearch(batch_size=4), 10),
    ("basic_random_search", B.BasicRandomSearch(num_directions=2), 8),
])
def test_ray_executor_gives_the_sequential_numbers(local_ray, name, config, evaluations):
    budget = B.Budget(evaluations=evaluations)
    results = [B.run_baseline(name, jax.random.key(2), toy, PSI0, BOUNDS, config, budget=budget,
                              executor=executor, progress=False)
               for executor in ("sequential", "ray")]
    local, remote = results
    assert len(remote.history) == evaluations
    np.testing.assert_array_equal(values_of(remote), values_of(local))
    np.testing.assert_array_equal([h["psi"] for h in remote.history],
                                  [h["psi"] for h in local.history])
    np.testing.assert_array_equal(remote.psi, local.psi)
    assert remote.value == local.value
    walls = [h["wall_time_s"] for h in remote.history]
    assert all(b >= a for a, b in zip(walls, walls[1:]))
