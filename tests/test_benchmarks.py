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
