"""lido_jax.fit: the fit command end to end on a tiny dataset, and benchmarks.lido_baselines."""

import json
import math

import jax
import numpy as np
import pytest

import render
from benchmarks import lido_baselines
from lido_jax import baselines, dataset, fit, latents, metrics
from lido_jax.__main__ import main

RESOLUTION = 32
ARGS = ["--iterations", "2", "--resolution", str(RESOLUTION), "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two scenes observed at 32 px (the settings of the benchmark's --quick, whose run
    then reuses the compiled generator and renderers)."""
    out = tmp_path_factory.mktemp("lido") / "data"
    dataset.write_dataset(out, 2, dataset.Settings(seed=0, resolution=(RESOLUTION,) * 2),
                          progress=False)
    return out


def _files(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


@pytest.mark.slow
def test_fit_command_end_to_end(data, tmp_path, capsys):
    out = tmp_path / "fits"
    assert main(["fit", "--data", str(data), "--out", str(out), *ARGS]) == 0
    assert "| LV name | gbo | simplex |" in capsys.readouterr().out

    names = {p.name for p in out.iterdir()}
    for i in (0, 1):
        assert f"scene_{i:06d}.png" in names
        for m in fit.METHODS:
            assert {f"scene_{i:06d}_{m}.npz", f"scene_{i:06d}_{m}.json"} <= names
    assert {fit.SETTINGS, fit.SUMMARY, "summary.md"} <= names

    gt, _ = dataset.load_scene(dataset.scene_path(data, 0))
    for m in fit.METHODS:
        scene, arrays = dataset.load_scene(out / f"scene_000000_{m}.npz")
        render.validate(scene)
        assert int(arrays["index"]) == 0
        np.testing.assert_array_equal(scene.objects.class_id, gt.objects.class_id)
        record = json.loads((out / f"scene_000000_{m}.json").read_text())
        for key in ("init", "fit"):
            assert set(record[key]) == set(metrics.LV_SETS) | set(metrics.IMAGE_MEASURES)
            for k in metrics.OBJECT_LV_SETS + ("object IoU", "object MSE"):
                assert len(record[key][k]) == gt.objects.valid.shape[0]
        assert record["wall_s"] > 0 and record["evaluations"] == len(record["nll"]) == len(record["times_s"])
        assert record["config"]["budget"] == 2 and record["config"]["resolution"] == [RESOLUTION] * 2
        trace = record["trace"]
        assert trace["evaluation"][0] == 0 and trace["evaluation"][-1] == record["evaluations"] - 1
        assert 2 <= len(trace["evaluation"]) <= fit.TRACE_POINTS
        assert np.all(np.diff(trace["time_s"]) >= 0) and np.all(np.diff(trace["nll"]) <= 0)
        assert trace["nll"][-1] == min(record["nll"])
        loaded = fit.load_record(out, 0, m)
        for k in metrics.LV_SETS:   # the trace starts at the init and ends at the fit
            assert len(trace["errors"][k]) == len(trace["evaluation"])
            for at, key in ((0, "init"), (-1, "fit")):
                finite = loaded[key][k][~np.isnan(loaded[key][k])]
                assert loaded["trace"]["errors"][k][at] == pytest.approx(np.median(finite), abs=1e-6)

    summary = json.loads((out / fit.SUMMARY).read_text())
    assert summary["methods"] == list(fit.METHODS) and summary["scenes"] == [0, 1]
    assert [row["lv_set"] for row in summary["table"]] == list(metrics.LV_SETS)
    for row in summary["table"]:
        assert set(row["improvement"]) == set(fit.METHODS)
    assert all(summary["median_s_per_scene"][m] > 0 for m in fit.METHODS)
    cells = {line.split("|")[1].strip() for line in (out / "summary.md").read_text().splitlines()
             if line.startswith("|")}
    assert {k[:1].upper() + k[1:] for k in metrics.LV_SETS} <= cells

    # Resuming writes nothing new.
    before = _files(out)
    result = fit.fit_dataset(data, out, config={"iterations": 2, "resolution": (RESOLUTION,) * 2},
                             progress=False)
    assert result["run"]["fitted"] == [] and len(result["run"]["resumed"]) == 4
    assert _files(out) == before
    with pytest.raises(ValueError, match="other settings"):
        fit.fit_dataset(data, out, config={"iterations": 3, "resolution": (RESOLUTION,) * 2})

    # One method, one scene file, a time budget that lets only the first scene start.
    result = fit.fit_dataset(data, tmp_path / "budget", ["simplex"], max_minutes=1e-9,
                             config={"iterations": 2, "resolution": (RESOLUTION,) * 2},
                             progress=False)
    assert result["scenes"] == [0] and result["run"]["not_started"] == [1]
    assert result["methods"] == ["simplex"]
    single = fit.fit_dataset(dataset.scene_path(data, 1), tmp_path / "single", ["simplex"],
                             config={"iterations": 1, "resolution": (RESOLUTION,) * 2},
                             progress=False)
    assert single["scenes"] == [1]


def test_fit_rejects_bad_input(tmp_path, capsys):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        fit.fit_dataset(missing, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no scene files"):
        fit.fit_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown method"):
        fit.fit_dataset(tmp_path / "empty", tmp_path / "out", ["gbo", "annealing"])
    with pytest.raises(ValueError, match="FitConfig"):
        fit.fit_dataset(tmp_path / "empty", tmp_path / "out", config={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="limit"):
        fit.fit_dataset(tmp_path / "empty", tmp_path / "out", limit=0)
    with pytest.raises(ValueError, match="init_perturbation"):
        fit.fit_dataset(tmp_path / "empty", tmp_path / "out", init_perturbation=-0.1)
    for argv, message in ((["--data", str(missing)], "no such dataset"),
                          (["--data", str(tmp_path / "empty")], "no scene files"),
                          (["--data", str(tmp_path), "--method", "annealing"], "invalid choice")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--out", str(tmp_path / "out"), *argv])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_error_trace_subsamples_the_best_so_far():
    scene = render.random_scene(jax.random.key(0), num_objects=2, max_objects=3)
    slots = latents.padded_slots(scene)
    start = np.asarray(latents.get(scene, slots), np.float64)
    count = 57
    nll = np.array([5.0, 6.0] + list(np.linspace(4.0, 1.0, count - 2)))
    nll[30] = 9.0   # a worse evaluation is never the best so far
    vectors = np.stack([start] * count)
    result = baselines.FitResult(scene=scene, times=np.linspace(0.0, 2.0, count), nll=nll,
                                 vectors=vectors, slots=slots, sets=[("all", count)])
    trace = fit.error_trace(result, scene, (RESOLUTION,) * 2, points=20)
    assert trace["evaluation"][0] == 0 and trace["evaluation"][-1] == count - 1
    assert len(trace["evaluation"]) == 20 and np.all(np.diff(trace["evaluation"]) > 0)
    for i, b in zip(trace["evaluation"], trace["best"]):
        assert b == int(np.argmin(nll[:i + 1]))
    assert trace["nll"] == [nll[b] for b in trace["best"]]
    for k in metrics.LV_SETS:   # the scene is the GT at every evaluation
        assert all(e == pytest.approx(0.0, abs=1e-4) or math.isnan(e) for e in trace["errors"][k])
    with pytest.raises(ValueError, match="points"):
        fit.error_trace(result, scene, (RESOLUTION,) * 2, points=1)


@pytest.mark.slow
def test_lido_baselines_quick(tmp_path):
    out = tmp_path / "lido_baselines.json"
    lido_baselines.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["header"]["config"]["scenes"] == 2 and result["not_started"] == []
    assert result["header"]["budgets"] == {m: 2 for m in fit.METHODS}
    assert set(result["warmup_s"]) == set(fit.METHODS)
    assert [row["lv_set"] for row in result["summary"]["table"]] == list(metrics.LV_SETS)
    assert [s["index"] for s in result["per_scene"]] == [0, 1]
    for s in result["per_scene"]:
        for m in fit.METHODS:
            assert s[m]["wall_s"] > 0 and s[m]["nll_fit"] <= s[m]["nll_init"]
    curves = result["curves"]
    assert curves["time_s"][0] == 0.0
    for m in fit.METHODS:
        for k in metrics.LV_SETS:
            assert len(curves["median"][m][k]) == len(curves["time_s"])
            assert curves["median"][m][k][0] == pytest.approx(curves["init"][k])
    markdown = out.with_suffix(".md").read_text()
    assert "| LV name | gbo | simplex |" in markdown and "perturbed" in markdown
    assert "CPUs" in markdown
    assert out.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "lido_testset" / "32px_seed0" / "scene_000001.npz").exists()
    assert (tmp_path / "lido_baselines_fits" / "scene_000001.png").exists()
