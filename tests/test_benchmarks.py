"""benchmarks.render_speed: a smoke run of the render benchmark."""

import json
import math

import pytest

from benchmarks import render_speed


@pytest.mark.slow
def test_render_speed_quick(tmp_path):
    out = tmp_path / "r.json"
    render_speed.main(["--quick", "--out", str(out)])
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
