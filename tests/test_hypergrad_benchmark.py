"""benchmarks.hypergrad: a smoke run of the hypergradient benchmark."""

import json
import math

import pytest

import simopt_jax
from benchmarks import hypergrad


@pytest.mark.slow
def test_hypergrad_quick(tmp_path):
    out = tmp_path / "h.json"
    hypergrad.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert not result["skipped"]
    for problem in hypergrad.PROBLEMS:
        methods = {r["method"] for r in rows if r["problem"] == problem}
        assert methods == {"gradient", *simopt_jax.METHODS, *hypergrad.PEERS, "unrolled"}
        checkpoints = {r["options"]["checkpoint"] for r in rows
                       if r["problem"] == problem and r["method"] == "unrolled"}
        assert checkpoints == {"none", "sqrt"}
    for r in rows:
        assert math.isfinite(r["median_s"]) and r["median_s"] > 0
        assert r["compile_s"] > 0 and r["repeats"] >= 1 and r["peak_bytes"] > 0
        assert math.isfinite(r["grad_equivalents"]) and r["grad_equivalents"] > 0
        if r["method"] != "gradient":
            assert math.isfinite(r["rel_error"])
    # Same CG budget, same maths: ours and both peers agree to float32 round-off.
    for problem in hypergrad.PROBLEMS:
        errors = [r["rel_error"] for r in rows if r["problem"] == problem
                  and r["method"] in ("quadratic", *hypergrad.PEERS)]
        assert max(errors) - min(errors) <= 1e-3 * max(errors) + 1e-5
    assert {t["problem"] for t in result["targets"]} == set(hypergrad.PROBLEMS)
    assert {"processor", "cpu_count", "device", "date"} <= set(result["machine"])
    assert result["machine"]["versions"]["jax"]
    markdown = out.with_suffix(".md").read_text().splitlines()
    start = markdown.index(next(line for line in markdown if line.startswith("| problem |")))
    table = markdown[start:start + len(rows) + 3]
    assert all(line.startswith("|") for line in table[:-1]) and not table[-1].startswith("|")
    assert len(table) - 1 == 2 + len(rows)   # header, separator, one line per row
    labels = {hypergrad.label(r["method"], r["options"]) for r in rows}
    assert len(hypergrad.summary(result)) == 2 + len(labels)   # the README's compact table
    assert out.with_suffix(".png").stat().st_size > 0
