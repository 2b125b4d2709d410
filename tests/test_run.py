"""Runs that last: the CLI, the run folder, exact resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simopt_jax import problems
from simopt_jax import run as run_module
from simopt_jax.__main__ import main
from simopt_jax.run import RunConfig, read_history, run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(size="tiny", num_samples=4, inner_steps=2, cg_maxiter=3, train_steps=5)


def _without_times(history):
    return [{k: v for k, v in h.items() if k != "wall_time_s"} for h in history]


def _same(a, b):
    """Equal, NaN included (json round trips keep NaN)."""
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("changes, message", [
    (dict(budget_images=-5), "budget_images=-5 must be an int >= 1"),
    (dict(method="gradient_descent"), "method='gradient_descent' is not one of"),
    (dict(task="clevr"), "task='clevr' is not one of"),
    (dict(size="huge"), "size='huge' is not one of"),
    (dict(variant="cubic"), "variant='cubic' is not one of"),
    (dict(inner_lr=float("nan")), "inner_lr=nan must be a finite number > 0"),
    (dict(budget_images=3), "smaller than one step of autosimulate (4 images)"),
    (dict(backend="vulkan"), "backend='vulkan' is not one of"),
    (dict(method="hybrid", budget_images=19, num_directions=2),
     "smaller than one step of hybrid (20 images)"),
])
def test_bad_configs_name_the_bad_field(changes, message):
    fields = dict(task="scenes", method="autosimulate", budget_images=40, **TINY)
    fields.update(changes)
    with pytest.raises(ValueError, match=re.escape(message)):
        RunConfig(**fields)


def test_cli_rejects_bad_options_with_a_message(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--task", "scenes", "--method", "autosimulate", "--budget-images", "-1",
              "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "budget_images=-1 must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--task", "scenes", "--method", "nope", "--budget-images", "10"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--task", "scenes", "--budget-images", "10"])
    assert "--method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--resume", str(tmp_path / "nothing")])
    assert "no run there" in capsys.readouterr().err


def test_psi0_outside_its_support_is_named(tmp_path):
    problem = problems.get_problem(problems.Spec("scenes", "tiny"))
    low = problem._box()[0]["light"]["loc"]
    bad = jax.tree.map(lambda a: np.array(a), problem.psi0)
    bad["light"]["loc"][1] = float(low[1]) - 1.0
    with pytest.raises(ValueError, match=r"psi\['light'\]\['loc'\] is outside its support"
                                         r".* at \[\[1\]\]"):
        problem.check_psi(bad)
    path = tmp_path / "psi0.json"
    path.write_text(json.dumps(jax.tree.map(lambda a: np.asarray(a).tolist(), bad)))
    config = RunConfig(task="scenes", method="autosimulate", budget_images=8, **TINY,
                       psi0=json.loads(path.read_text()))
    with pytest.raises(ValueError, match="is outside its support"):
        run(config, tmp_path / "run", progress=False)


def test_a_folder_holding_a_run_is_not_overwritten(tmp_path):
    config = RunConfig(task="scenes", method="autosimulate", budget_images=4, **TINY)
    run(config, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        run(config, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="config differs"):
        run(RunConfig(task="scenes", method="autosimulate", budget_images=8, **TINY),
            tmp_path / "r", resume=True, progress=False)


def test_a_nan_hypergradient_is_never_applied_and_stops_the_run(tmp_path, monkeypatch):
    """A validation loss that is NaN makes every hypergradient NaN: psi must stay put,
    each step is logged as not applied, and the run stops with a clear error."""
    spec = problems.Spec("scenes", "tiny")
    good = problems.get_problem(spec)

    class NanValidation(problems.Problem):
        def val_loss(self, params):
            return super().val_loss(params) * jnp.nan

    import dataclasses

    bad = NanValidation(**{f.name: getattr(good, f.name) for f in dataclasses.fields(good)})
    monkeypatch.setattr(run_module, "get_problem", lambda _: bad)
    config = RunConfig(task="scenes", method="autosimulate", budget_images=40, **TINY,
                       checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="3 hypergradients in a row were not finite"):
        run(config, tmp_path / "r", progress=False)
    history = read_history(tmp_path / "r")
    assert [h["applied"] for h in history] == [False, False]   # the third raised
    import pickle

    saved = pickle.loads((tmp_path / "r" / "checkpoints" / "state.pkl").read_bytes())
    for a, b in zip(jax.tree.leaves(saved["state"].psi), jax.tree.leaves(good.psi0)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_scenes_can_train_on_gl_renders_and_validate_on_the_tracer(tmp_path):
    """--backend gl: the training simulator is pyrender's, the judged data the tracer's."""
    gl = problems.get_problem(problems.Spec("scenes", "tiny", "gl"))
    tracer = problems.get_problem(problems.Spec("scenes", "tiny"))
    for a, b in zip(jax.tree.leaves((gl.val, gl.test)), jax.tree.leaves((tracer.val, tracer.test))):
        np.testing.assert_array_equal(a, b)
    key = jax.random.key(5)
    _, x_gl, y_gl = gl.simulator.simulate(key, gl.psi0, 4)
    _, x_jax, y_jax = tracer.simulator.simulate(key, tracer.psi0, 4)
    assert np.mean(np.asarray(y_gl["labels"]) == np.asarray(y_jax["labels"])) > 0.9
    assert np.mean(np.abs(np.asarray(x_gl) - np.asarray(x_jax))) > 1e-4   # another renderer
    config = RunConfig(task="scenes", method="autosimulate", budget_images=8, backend="gl",
                       **TINY)
    result = run(config, tmp_path / "r", progress=False)
    assert result["images"] == 8 and result["steps"] == 2
    assert np.isfinite(result["val_metric"]) and np.isfinite(result["psi_distance"])
    assert json.loads((tmp_path / "r" / "config.json").read_text())["backend"] == "gl"


# ----------------------------------------------------------------------------- run folder


def test_cli_writes_the_whole_run_folder(tmp_path, capsys):
    out = tmp_path / "shapes-hybrid"
    code = main(["run", "--task", "shapes", "--method", "hybrid", "--size", "tiny",
                 "--budget-images", "24", "--num-samples", "4", "--num-directions", "2",
                 "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    result = json.loads((out / "result.json").read_text())
    assert printed["images"] == result["images"] == 20   # one step: 4 x (1 + 2 x 2)
    assert result["metric"] == "angle_mean" and np.isfinite(result["test_metric"])
    assert np.isnan(result["psi_distance"])              # shapes: no psi*
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "hybrid" and config["seed"] == 0
    history = read_history(out)
    assert [h["images"] for h in history] == [20]
    assert (out / "checkpoints" / "state.pkl").exists()
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "val_metric_vs_images.png", "val_metric_vs_time.png"]


def test_baseline_runs_resume_by_replaying_their_evaluations(tmp_path):
    config = RunConfig(task="scenes", method="random_search", budget_images=24, **TINY)
    full = run(config, tmp_path / "full", progress=False)
    assert full["steps"] == 6 and full["images"] == 24
    cache = tmp_path / "full" / "checkpoints" / "evaluations"
    assert len(list(cache.glob("*.json"))) == 6
    # An interrupted run: the folder with some evaluations done and nothing else.
    partial = tmp_path / "partial"
    (partial / "checkpoints" / "evaluations").mkdir(parents=True)
    (partial / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    for path in sorted(cache.glob("*.json"))[:3]:
        (partial / "checkpoints" / "evaluations" / path.name).write_text(path.read_text())
    resumed = run(None, partial, resume=True, progress=False)
    _same({k: v for k, v in resumed.items() if k != "wall_time_s"},
          {k: v for k, v in full.items() if k != "wall_time_s"})
    _same(_without_times(read_history(partial)), _without_times(read_history(tmp_path / "full")))


def test_random_fixed_reports_best_median_and_worst_of_its_ten_psi(tmp_path):
    config = RunConfig(task="scenes", method="random_fixed", budget_images=40, **TINY)
    result = run(config, tmp_path / "run", progress=False)
    assert result["steps"] == 10 and result["images"] == 40
    history = read_history(tmp_path / "run")
    losses = sorted(h["val_loss"] for h in history)
    fixed = result["fixed"]
    assert [fixed[k]["value"] for k in ("best", "median", "worst")] == pytest.approx(
        [losses[0], losses[4], losses[-1]])
    # Each row carries the metrics of the network its own psi trained.
    by_loss = {h["val_loss"]: h for h in history}
    for name in ("best", "median", "worst"):
        assert result["fixed_val_metric"][name] == pytest.approx(
            by_loss[fixed[name]["value"]]["eval_val_metric"])
        assert set(result["fixed_test_metrics"][name]) == {"miou"}
    assert result["fixed_test_metrics"]["best"]["miou"] == pytest.approx(result["test_metric"])


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    args = ["--task", "scenes", "--method", "autosimulate", "--size", "tiny",
            "--budget-images", "40", "--num-samples", "4", "--inner-steps", "2",
            "--cg-maxiter", "3", "--checkpoint-every", "2", "--seed", "3"]
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["run", *args, "--out", str(uninterrupted), "--no-progress"]) == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "simopt_jax", "run", *args, "--out",
                                str(killed), "--no-progress"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(read_history(killed)) < 5:   # past the checkpoint at step 4, before the end
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists()
    assert len(read_history(killed)) < 10

    resumed = subprocess.run([sys.executable, "-m", "simopt_jax", "run", "--resume", str(killed),
                              "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((killed / "result.json").read_text())
    b = json.loads((uninterrupted / "result.json").read_text())
    assert a["steps"] == b["steps"] == 10
    _same({k: v for k, v in a.items() if k != "wall_time_s"},
          {k: v for k, v in b.items() if k != "wall_time_s"})
    _same(_without_times(read_history(killed)), _without_times(read_history(uninterrupted)))


@pytest.mark.slow
def test_ray_executor_gives_the_sequential_numbers(tmp_path):
    ray = pytest.importorskip("ray")
    config = RunConfig(task="scenes", method="basic_random_search", budget_images=16, **TINY)
    sequential = run(config, tmp_path / "seq", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        import dataclasses

        parallel = run(dataclasses.replace(config, executor="ray"), tmp_path / "ray",
                       progress=False)
    finally:
        ray.shutdown()
    _same({k: v for k, v in parallel.items() if k != "wall_time_s"},
          {k: v for k, v in sequential.items() if k != "wall_time_s"})
