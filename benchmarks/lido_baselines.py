"""LiDO's baselines, GBO and Simplex, on a small synthetic test set: Table 1 and Fig. 5.

    python -m benchmarks.lido_baselines
    python -m benchmarks.lido_baselines --scenes 8 --resolution 64 --max-minutes 14
    python -m benchmarks.lido_baselines --quick --out /tmp/lido_baselines.json

Test set: ``--scenes`` scenes from ``lido_jax.dataset.write_dataset`` (seed
``--seed``, observed images at ``--data-resolution`` with textures, shadows and a
background, 4-7 objects; by default at the in-loop resolution), kept in ``lido_testset/<px>px_seed<seed>/`` next to
``--out`` and reused by later runs (resumable).

Fits: ``lido_jax.fit.fit_dataset`` with both methods from the same initial scene per
test scene: the ground truth perturbed by ``latents.perturb`` with
``--init-perturbation`` (not LiDO's initialisation networks, which do not exist yet),
so the table measures how much each method improves a known starting error. The LV
sets are fitted sequentially in LiDO's order with ``--iterations`` per set (default
the paper's budgets: GBO 50 TNC evaluations, Simplex 100 Nelder-Mead iterations),
in-loop JAX renders at ``--resolution``. The fits go to ``<out stem>_fits/``
(per-scene fitted scenes, metrics JSON and side-by-side PNGs), cleared at the start
of every run so that every number comes from this run.

Timing: seconds per scene are the wall time of ``baselines.fit`` alone. Compilation
is excluded by a warm-up: before each method's first scene, an untimed fit with one
iteration per LV set compiles the renderer's NLL (and its gradient for GBO); its
wall time is reported as ``warmup_s``. Metrics and writing files are not timed.

Budget: a scene is not started once the run's elapsed time (the test set included)
plus the mean time of the scenes fitted so far would pass ``--max-minutes``; the
scenes not started are listed and given no numbers. The defaults (16 scenes at 64
px, the paper's budgets) should take about 12 minutes on a 2-core CPU, estimated from
a 2-scene run there: 4-6 s per test scene, 28 s of warm-up, then per scene 31 s of
fitting (GBO 12-22 s, Simplex 13-16 s) and 6 s of metrics and files.

Writes ``--out`` (JSON), the same path with ``.md`` (Table 1's format: median
improvement over the initialisation in % per LV set, * for significantly better by
the one-sided Wilcoxon signed-rank test; median seconds per scene) and with
``.png`` (Fig. 5: median error of each LV set against time, init at t = 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import time

import numpy as np

from benchmarks import common
from lido_jax import baselines, compare, dataset, fit, metrics

METHODS: tuple[str, ...] = baselines.METHODS
LABELS: dict[str, str] = {"gbo": "GBO", "simplex": "Simplex"}
CURVE_POINTS = 200
"""Points of the common time grid on which Fig. 5's medians are taken."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The test set, the fits and the budget.

    Attributes:
      scenes: test scenes.
      resolution: side of the in-loop renders, pixels.
      data_resolution: side of the observed images (and of the pixel errors); None:
        ``resolution``. ``baselines.fit`` resizes a larger observed image to the in-loop
        size, and that resize blends small objects' edges with the ground differently
        from the renderer's own edges: colour-only Simplex fits from a 1% perturbation
        then drifted to 20x the initial colour error (measured at 128 -> 64 px), and
        not at all with both at 64 px.
      iterations: per LV set for both methods; None: the paper's per method.
      init_perturbation: ``latents.perturb`` amount of the initial scenes.
      seed: of the test set and of the initial scenes.
      trace_points: evaluations per fit scored for Fig. 5.
      max_minutes: budget of the run; no scene starts past it.
      testsets: folder of the test sets (one subfolder per resolution and seed).
      fits: folder of the fits, cleared at the start of a run.
    """

    scenes: int = 16
    resolution: int = 64
    data_resolution: int | None = None
    iterations: int | None = None
    init_perturbation: float = fit.INIT_PERTURBATION
    seed: int = 0
    trace_points: int = fit.TRACE_POINTS
    max_minutes: float = 15.0
    testsets: str = "results/lido_testset"
    fits: str = "results/lido_baselines_fits"

    @property
    def observed_resolution(self) -> int:
        return self.resolution if self.data_resolution is None else self.data_resolution

    def budgets(self) -> dict[str, int]:
        return {m: baselines.FitConfig(method=m, iterations=self.iterations).budget for m in METHODS}


QUICK = dict(scenes=2, resolution=32, data_resolution=32, iterations=2, trace_points=5)
"""``--quick``: a smoke run."""


def testset_dir(config: Config) -> pathlib.Path:
    return pathlib.Path(config.testsets) / f"{config.observed_resolution}px_seed{config.seed}"


def clear_fits(folder: pathlib.Path) -> None:
    """Removes what ``fit_dataset`` writes in ``folder`` (and nothing else)."""
    if not folder.is_dir():
        return
    patterns = ["scene_*.png", fit.SETTINGS, fit.SUMMARY, pathlib.Path(fit.SUMMARY).stem + ".md"]
    patterns += [f"scene_*_{m}.{ext}" for m in METHODS for ext in ("npz", "json")]
    for pattern in patterns:
        for path in folder.glob(pattern):
            path.unlink()


def error_curves(records: dict[str, list[dict]], points: int = CURVE_POINTS) -> dict:
    """Fig. 5: per method and LV set, the median over scenes of each scene's error
    (its median over objects) on a common time grid.

    A scene's error at time ``t`` is that of its best-so-far scene at the last traced
    evaluation at or before ``t`` (``fit.error_trace``): the initial error before the
    first, the fitted scene's after its fit ended.
    """
    first = next(iter(records.values()))
    end = max(r["trace"]["time_s"][-1] for rs in records.values() for r in rs)
    grid = np.linspace(0.0, end, points)
    init = {k: fit.finite_median([fit.finite_median(r["init"][k]) for r in first]) for k in metrics.LV_SETS}
    curves = {}
    for m, rs in records.items():
        values = {k: np.full((len(rs), points), math.nan) for k in metrics.LV_SETS}
        for s, r in enumerate(rs):
            trace = r["trace"]
            at = np.searchsorted(np.asarray(trace["time_s"]), grid, side="right") - 1
            for k in metrics.LV_SETS:
                values[k][s] = np.where(at < 0, fit.finite_median(r["init"][k]),
                                        trace["errors"][k][np.maximum(at, 0)])
        curves[m] = {k: [fit.finite_median(column) for column in values[k].T] for k in metrics.LV_SETS}
    return {"time_s": grid.tolist(), "init": init, "median": curves}


def run(config: Config) -> dict:
    """Writes (or reuses) the test set, fits it with both methods; returns the result."""
    start = time.perf_counter()
    data = testset_dir(config)
    settings = dataset.Settings(seed=config.seed, resolution=(config.observed_resolution,) * 2)
    dataset.write_dataset(data, config.scenes, settings)
    data_s = time.perf_counter() - start
    fits = pathlib.Path(config.fits)
    clear_fits(fits)
    remaining = config.max_minutes - (time.perf_counter() - start) / 60
    summary = fit.fit_dataset(
        data, fits, METHODS, limit=config.scenes, seed=config.seed,
        init_perturbation=config.init_perturbation, trace_points=config.trace_points,
        max_minutes=remaining,
        config={"iterations": config.iterations, "resolution": (config.resolution,) * 2})
    run_info = summary.pop("run")
    records = {m: [fit.load_record(fits, i, m) for i in summary["scenes"]] for m in METHODS}
    per_scene = [{"index": i, "objects": records[METHODS[0]][s]["objects"],
                  **{m: {"wall_s": records[m][s]["wall_s"],
                         "evaluations": records[m][s]["evaluations"],
                         "nll_init": records[m][s]["nll"][0],
                         "nll_fit": min((v for v in records[m][s]["nll"] if v is not None),
                                        default=None)} for m in METHODS}}
                 for s, i in enumerate(summary["scenes"])]
    header = {"machine": common.machine_info(), "config": dataclasses.asdict(config),
              "observed_resolution": config.observed_resolution,
              "budgets": config.budgets(), "testset": str(data), "fits": str(fits),
              "testset_s": data_s, "wall_s": time.perf_counter() - start}
    return fit.json_safe({
        "header": header, "summary": summary, "warmup_s": run_info["warmup_s"],
        "not_started": run_info["not_started"], "per_scene": per_scene,
        "curves": error_curves(records)})


def markdown(result: dict) -> str:
    """Machine, setup, Table 1, seconds per scene, image measures and notes."""
    h = result["header"]
    m, config, summary = h["machine"], h["config"], result["summary"]
    done, requested = len(summary["scenes"]), config["scenes"]
    budgets = ", ".join(f"{LABELS[k]} {v}" for k, v in h["budgets"].items())
    warmup = ", ".join(f"{LABELS[k]} {v:.1f} s" for k, v in result["warmup_s"].items())
    lines = [f"JAX {m['jax']} on {m['device_kind']}: {m['processor']}, {m['cpu_count']} CPUs "
             f"({m['date']}).", "",
             f"{done} of {requested} synthetic scenes, observed at {h['observed_resolution']} px "
             f"(textures, shadows, background); in-loop JAX renders at {config['resolution']} px; "
             f"iterations per LV set: {budgets}.", "",
             fit.summary_markdown(summary), "",
             "Notes:", "",
             f"- Initialisation: the ground truth perturbed by `latents.perturb` (every continuous "
             f"LV moved by uniform noise of {config['init_perturbation']:g} of its range), the same "
             "for both methods; LiDO's initialisation networks do not exist yet.",
             "- LV sets fitted sequentially in LiDO's order (ground colour, object colours, object "
             "poses, illumination, camera), one sweep; GBO is scipy TNC with the JAX renderer's "
             "exact gradients, Simplex is Nelder-Mead.",
             f"- Seconds: wall time of `baselines.fit` per scene, warm. Compilation is excluded: "
             f"an untimed warm-up fit (one iteration per LV set) ran before each method's first "
             f"scene ({warmup}). Metrics are not timed.",
             f"- Errors in pixels are at {h['observed_resolution']} px; image measures compare a "
             "JAX render of the scene with the observed image at the GT masks.",
             f"- Run: {h['wall_s'] / 60:.1f} min, test set {h['testset_s']:.0f} s; budget "
             f"--max-minutes {config['max_minutes']:g}."]
    if result["not_started"]:
        lines += ["", f"Not started, no numbers (--max-minutes {config['max_minutes']:g} "
                  f"reached): scenes {', '.join(map(str, result['not_started']))}."]
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    """Fig. 5: median error of each LV set against seconds, one line per method."""
    n = len(result["summary"]["scenes"])
    compare.plot_errors(result["curves"], path, f"LiDO baselines: median errors vs time, {n} "
                        "scenes (top: object LVs, bottom: global LVs)", labels=LABELS,
                        log_time=False)


def write(result: dict, out: pathlib.Path) -> str:
    """Writes ``out`` (JSON) and its ``.md`` and ``.png`` siblings; returns the Markdown."""
    return common.write_outputs(result, out, markdown, plot)


def parse_args(argv=None) -> tuple[Config, pathlib.Path]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=d.scenes, help="test scenes")
    p.add_argument("--resolution", type=int, default=d.resolution,
                   help="side of the in-loop renders, pixels")
    p.add_argument("--data-resolution", type=int, default=d.data_resolution,
                   help="side of the observed images, pixels (default: --resolution; a larger "
                   "image is resized to the in-loop size, which biases colour fits)")
    p.add_argument("--iterations", type=int,
                   help="iterations per LV set for both methods (default: the paper's, "
                   + ", ".join(f"{m} {n}" for m, n in baselines.DEFAULT_ITERATIONS.items()) + ")")
    p.add_argument("--init-perturbation", type=float, default=d.init_perturbation,
                   help="initial scenes: the GT perturbed by latents.perturb by this fraction "
                   "of each LV's range")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-minutes", type=float, default=d.max_minutes,
                   help="no scene starts once the run would pass this budget")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 scenes at 32 px, 2 iterations per LV set")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/lido_baselines.json"),
                   help="JSON path; the test set goes to lido_testset/ in its folder, the fits "
                   "to its stem + _fits/")
    a = p.parse_args(argv)
    if a.scenes < 1:
        p.error(f"--scenes {a.scenes} must be >= 1")
    config = Config(scenes=a.scenes, resolution=a.resolution, data_resolution=a.data_resolution,
                    iterations=a.iterations, init_perturbation=a.init_perturbation, seed=a.seed,
                    max_minutes=a.max_minutes, testsets=str(a.out.parent / "lido_testset"),
                    fits=str(a.out.with_name(f"{a.out.stem}_fits")))
    if a.quick:
        config = dataclasses.replace(config, **QUICK)
    return config, a.out


def main(argv=None) -> dict:
    return common.main(parse_args, run, write, argv)


if __name__ == "__main__":
    main()
