"""benchmarks.render_speed: smoke runs of both parts of the render benchmark."""

import json
import math

import pytest

from benchmarks import render_speed


@pytest.mark.slow
def test_render_speed_quick(tmp_path):
    out = tmp_path / "r.json"
    render_speed.main(["--part", "jax", "--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["mode"] for r in rows} == set(render_speed.MODES)
    assert not result["skipped"]
    for r in rows:
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
        assert r["repeats"] >= 1 and r["compile_s"] > 0
        if r["mode"] == "grad":
            assert r["grad_over_forward"] > 0
    markdown = out.with_suffix(".md").read_text().splitlines()
    table = [line for line in markdown if line.startswith("|")]
    assert len(table) == 2 + len(rows)   # header, separator, one line per row
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.slow
def test_render_backends_quick(tmp_path):
    out = tmp_path / "b.json"
    results = render_speed.main(["--part", "backends", "--quick", "--out", str(out)])
    assert set(results) == {"backends"}
    result = json.loads(out.read_text())
    assert not result["skipped"]
    rows = {(r["backend"], r["workers"]): r for r in result["rows"]}
    assert set(rows) == {("jax", None), ("gl", None), ("blender", 1), ("blender", 2)}
    for r in rows.values():
        assert r["resolution"] in (16, 32) and r["scenes"] == 2 and r["repeats"] == 1
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
        assert r["warmup_s"] > 0
    assert rows[("jax", None)]["compile_s"] > 0
    [ratio] = result["jax_over_gl"]
    assert ratio["ratio"] == pytest.approx(
        rows[("jax", None)]["images_per_s"] / rows[("gl", None)]["images_per_s"])
    assert result["jax_gl_target"]["met"] is None   # 64 px is not measured by --quick
    overhead = result["blender_overhead"]
    assert overhead["requests"] == 3 and overhead["resolution"] == 64
    for key in ("round_trip_s", "render_s", "overhead_s", "overhead_over_render"):
        assert math.isfinite(overhead[key])
    assert overhead["render_s"] > 0 and overhead["round_trip_s"] > overhead["render_s"]
    assert overhead["met"] == (overhead["overhead_over_render"] <= render_speed.TARGET_OVERHEAD)
    markdown = out.with_suffix(".md").read_text()
    assert "bpy 5.0.1" in markdown and "pyrender" in markdown
    assert sum(line.startswith("| 16 |") or line.startswith("| 32 |")
               for line in markdown.splitlines()) == len(rows) + 1   # rows and the ratio
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize("other, mine, verdict, ratio", [
    (960.0, 320.0, "met", 3.0),                  # 3x fewer: a 2.5x target is met
    (640.0, 320.0, "not met", 2.0),
    (math.inf, 320.0, "met", 3.0),               # never reached: > 960, so >= 3x
    (math.inf, 880.0, "undecided", 960 / 880),   # > 960 proves only >= 1.09x
    (320.0, math.inf, "not met", math.nan),
])
def test_scene_ratios_claim_no_more_than_was_measured(other, mine, verdict, ratio):
    from benchmarks.simopt_scenes import compare

    r = compare(other, mine, 960, 2.5)
    assert r["verdict"] == verdict and r["met"] == (verdict == "met")
    assert r["ratio"] == pytest.approx(ratio, nan_ok=True)


def _table_lines(path):
    return [line for line in path.with_suffix(".md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| method")]


@pytest.mark.slow
def test_simopt_scenes_quick(tmp_path):
    from benchmarks import simopt_scenes

    out = tmp_path / "scenes.json"
    simopt_scenes.main(["--quick", "--out", str(out), "--runs", str(tmp_path / "runs")])
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {e.label for e in simopt_scenes.ENTRIES}
    [target] = result["targets"]
    best = max(r["final_val_miou"] for r in rows.values())
    assert target == pytest.approx(simopt_scenes.TARGET_FRACTION * best)
    for r in rows.values():
        assert r["images"] == result["budget_images"]
        assert 0 <= r["final_test_miou"] <= 1 and r["psi_distance"] >= 0
        # A run reaching the target reached it within its budget; the best one surely did.
        assert r["reached"] == math.isfinite(r["images_to_target"])
        assert not r["reached"] or 0 < r["images_to_target"] <= result["budget_images"]
    assert min(rows.values(), key=lambda r: -r["final_val_miou"])["reached"] == 1
    for name, ratio in result["ratios"].items():
        mine = rows[result["best_autosimulate"]]["images_to_target"]
        other = rows[name]["images_to_target"]
        assert ratio["at_least"] == math.isinf(other)
        bound = result["budget_images"] if ratio["at_least"] else other
        assert ratio["ratio"] == pytest.approx(bound / mine)
        assert ratio["met"] == (ratio["ratio"] >= simopt_scenes.TARGET_RATIOS[name])
    assert len(_table_lines(out)) == len(rows)
    assert out.with_suffix(".png").stat().st_size > 0
    # A second call reuses the finished runs and gives the same table.
    again = simopt_scenes.main(["--quick", "--out", str(tmp_path / "again.json"),
                                "--runs", str(tmp_path / "runs")])
    assert again["rows"] == result["rows"]


@pytest.mark.slow
def test_simopt_shapes_quick(tmp_path):
    from benchmarks import simopt_shapes

    out = tmp_path / "shapes.json"
    simopt_shapes.main(["--quick", "--out", str(out), "--runs", str(tmp_path / "runs")])
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"hybrid", "fixed_psi0", "basic_random_search", "evolution",
                         *(f"random_fixed ({w} of 10)" for w in ("best", "median", "worst"))}
    fixed = [rows[f"random_fixed ({w} of 10)"]["val_angle_mean"] for w in ("best", "median",
                                                                           "worst")]
    assert all(math.isfinite(v) for v in fixed)
    for r in rows.values():
        assert 0 <= r["angle_median"] <= 180 and 0 <= r["angle_mean"] <= 180
        assert 0 <= r["within_11.25"] <= r["within_22.5"] <= r["within_30"] <= 100
    assert result["verdicts"]["hybrid_beats_brs"] == (
        rows["hybrid"]["angle_mean"] < rows["basic_random_search"]["angle_mean"])
    assert len(_table_lines(out)) == len(rows)
    assert out.with_suffix(".png").stat().st_size > 0
