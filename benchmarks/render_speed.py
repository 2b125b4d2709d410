"""Render speed: the JAX renderer's grid, and the three backends side by side.

    python -m benchmarks.render_speed --seed 0                  # both parts
    python -m benchmarks.render_speed --part jax --resolutions 64 128 --batches 1 64 --modes forward
    python -m benchmarks.render_speed --part backends --scenes 16 --workers 1 2
    python -m benchmarks.render_speed --quick --out /tmp/render_speed.json

``--part jax``: images/s of the JAX renderer by resolution, batch, objects, shadows
and mode. ``--part backends``: images/s of ``jax``, ``gl`` and ``blender`` on the
same scenes, and the Blender workers' overhead. ``--part all`` (the default) runs
both, the JAX grid first.

JAX grid
--------

Modes: ``forward`` renders a batch of random scenes (``render.render``, the whole
``Image``); ``grad`` takes the gradient of the mean squared error between the RGB
images and a uniform grey target with respect to every float leaf of the scenes.

Each row lowers and compiles its jitted function (``compile_s``: tracing, lowering
and XLA compilation), calls it once untimed, then times up to ``--repeats`` calls
with ``jax.block_until_ready``; ``median_s`` is the median time of one call on the
whole batch and ``images_per_s`` is ``batch / median_s``. Rows that differ only in
the number of objects share one executable (scenes are padded to
``spec.MAX_OBJECTS`` objects), so one compile time and one warm-up call.
``grad_over_forward`` divides a grad row's median by that of the forward row with
the same settings, both measured in this run.

Budgets keep the default grid to about a quarter of an hour on a 2-core CPU: a row
whose one call is predicted (from the largest smaller row measured with the same
mode, shadows and objects, scaled by pixel count) to take longer than
``--max-seconds-per-row`` is skipped; timed calls stop before their sum would pass
that budget (at least one is timed); rows predicted to end past ``--max-minutes``
are skipped. Skipped rows are listed with their reason and never given numbers.

Backends side by side
---------------------

Every row renders the same ``--scenes`` random scenes of 7 objects with shadows on
(``render.random_scene``), square, at each of ``--resolutions``; rows run by
resolution, every backend at one resolution before the next:

- ``jax``: ``render.render(scenes, resolution, shadows=True)`` on the batched scenes
  under ``jax.jit``; ``compile_s`` (trace, lower, compile) is reported apart and
  not timed.
- ``gl``: pyrender over EGL, ``render.render(scene, backend="gl", ...)`` one scene
  after another on the host.
- ``blender``: Cycles with ``--samples`` samples,
  ``render.render_many(scenes, backend="blender", workers=w, ...)`` on the shared
  pool of ``w`` worker processes (for each of ``--workers``); a pool of another size
  is replaced, so its workers start in the row's warm-up call.

Every row calls once untimed (``warmup_s``: for Blender it includes starting the
workers and sending them the meshes), then times up to ``--repeats`` calls on the
whole batch; ``median_s`` is their median and ``images_per_s`` is
``scenes / median_s``. The same budgets as the grid apply (a row's call predicted
from the same backend's largest smaller row, scaled by pixel count); a backend that
raises in a warm-up (no EGL, no bpy) is listed as skipped with the error, and so
are its larger rows. ``jax_over_gl`` divides JAX's images/s by gl's at each
resolution where both were measured in this run; the target (from the issue) is
JAX batched at 64 px within 2x of gl, i.e. ``jax_over_gl >= 0.5`` there.

Blender worker overhead: a fresh ``render.blender.Pool(1)`` gets
``--overhead-requests`` requests of 64 px scenes at ``--samples`` samples. Each is
sent once untimed (starts the worker, sends every mesh), then each again, one at a
time: ``round_trip_s`` is the parent's wall time from ``pool.submit`` to the
result, ``render_s`` the seconds ``bpy.ops.render.render()`` took in the worker
(from the reply's header), and ``overhead_s = round_trip_s - render_s`` (building
the Blender scene, reading the passes, the pipe protocol, the pool's thread). The
block reports the medians of the three and of the per-request
``overhead_s / render_s``; the target is that median <= 0.10. It runs after the
rows, outside ``--max-minutes``.

Output
------

Each part writes a JSON file, the same path with ``.md`` (the Markdown table, also
printed) and with ``.png`` (images/s against resolution). Default paths:
``results/render_speed.json`` for the grid and ``results/render_backends.json``
for the backends. ``--out PATH`` names the file of the part run; with
``--part all`` it names the grid's, and the backends go to ``PATH``'s stem plus
``_backends`` (``/tmp/r.json`` -> ``/tmp/r_backends.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.lines as mlines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

import render  # noqa: E402
import render.blender  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.common import machine_info  # noqa: E402

MODES = ("forward", "grad")

PARTS = ("jax", "backends")
"""``--part``: the JAX renderer's grid, the backends side by side (``all``: both)."""

DEFAULT_OUT = {"jax": pathlib.Path("results/render_speed.json"),
               "backends": pathlib.Path("results/render_backends.json")}


# --------------------------------------------------------------------------------------
# The JAX renderer's grid.


@dataclasses.dataclass(frozen=True)
class Config:
    """The grid and its budgets.

    Attributes:
      resolutions: square image sides in pixels.
      batches: scenes per call.
      objects: valid objects per scene.
      shadows: shadow settings to measure.
      modes: a subset of ``MODES``.
      repeats: timed calls per row, at most.
      max_seconds_per_row: time budget of one row's timed calls, in seconds.
      max_minutes: time budget of the whole run, in minutes.
      seed: PRNG seed of the random scenes.
    """

    resolutions: tuple[int, ...] = (64, 128, 256)
    batches: tuple[int, ...] = (1, 64)
    objects: tuple[int, ...] = (1, 7)
    shadows: tuple[bool, ...] = (True, False)
    modes: tuple[str, ...] = MODES
    repeats: int = 3
    max_seconds_per_row: float = 20.0
    max_minutes: float = 14.0
    seed: int = 0


QUICK = dict(resolutions=(16,), batches=(2,), objects=(1, 7), shadows=(False,), repeats=2)
"""``--quick``: a smoke run of both modes at 16 px, batch 2, shadows off."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the grid."""

    resolution: int
    batch: int
    objects: int
    shadows: bool
    mode: str

    @property
    def pixels(self) -> int:
        return self.batch * self.resolution ** 2

    @property
    def family(self) -> tuple:
        """Rows whose times scale with pixel count into each other."""
        return (self.mode, self.shadows, self.objects)

    @property
    def size(self) -> str:
        return f"{self.resolution} px, batch {self.batch}"

    @property
    def executable(self) -> tuple:
        """Cases with equal keys run the same compiled function."""
        return (self.mode, self.resolution, self.batch, self.shadows)

    def label(self) -> str:
        return (f"{self.resolution} px, batch {self.batch}, objects {self.objects}, "
                f"shadows {'on' if self.shadows else 'off'}, {self.mode}")


def plan(config: Config) -> list[Case]:
    """Rows in run order: by mode, then growing batch, then growing resolution, objects innermost.

    Cheap rows come first, so the budgets cut the largest ones, and each batch size
    gets a curve over resolutions before the next batch size starts.
    """
    return [Case(r, b, o, s, m) for m in config.modes for b in sorted(config.batches)
            for r in sorted(config.resolutions) for s in config.shadows for o in config.objects]


def random_scenes(seed: int, batch: int, objects: int) -> render.Scene:
    keys = jax.random.split(jax.random.key(seed), batch)
    return jax.vmap(lambda k: render.random_scene(k, objects))(keys)


def step_fn(mode: str, resolution: int, shadows: bool):
    """The function a row times, on a batch of scenes."""
    def forward(scenes):
        return render.render(scenes, resolution=(resolution, resolution), shadows=shadows)

    if mode == "forward":
        return forward
    return jax.grad(lambda scenes: jnp.mean((forward(scenes).rgb - 0.5) ** 2), allow_int=True)


def time_calls(fn, scenes, repeats: int, max_seconds: float) -> list[float]:
    """Seconds per call; stops before the next call would pass ``max_seconds`` in all."""
    times = []
    while len(times) < repeats and (not times or sum(times) + times[-1] <= max_seconds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(scenes))
        times.append(time.perf_counter() - t0)
    return times


def predict_call_s(case, measured: dict) -> tuple[float, Any] | None:
    """Seconds per call scaled by pixel count from the largest smaller row of the same
    ``family`` (a ``Case`` or a ``BackendCase``)."""
    refs = [c for c in measured if c.family == case.family and c.pixels <= case.pixels]
    if not refs:
        return None
    ref = max(refs, key=lambda c: c.pixels)
    return measured[ref]["median_s"] * case.pixels / ref.pixels, ref


def skip_reason(case, config, measured: dict, compile_guess_s: float,
                elapsed_s: float) -> str | None:
    """Why ``case`` is not measured, or None; ``compile_guess_s`` is 0 for a compiled one."""
    prediction = predict_call_s(case, measured)
    call_s = prediction[0] if prediction else 0.0
    if call_s > config.max_seconds_per_row:
        return (f"predicted {call_s:.0f} s per call (scaled by pixel count from "
                f"{prediction[1].size}) > --max-seconds-per-row {config.max_seconds_per_row:g}")
    cost_s = compile_guess_s + call_s * (config.repeats + 1)
    if elapsed_s + cost_s > 60 * config.max_minutes:
        return (f"--max-minutes {config.max_minutes:g} reached: {elapsed_s:.0f} s spent, "
                f"about {cost_s:.0f} s more predicted")
    return None


def run(config: Config) -> dict:
    """Measures every row of the grid; returns the header, measured rows and skipped rows."""
    start = time.perf_counter()
    measured: dict[Case, dict] = {}
    skipped = []
    last_compile_s = {}              # mode -> seconds of its latest compile
    executable = compiled = compile_s = None
    bar = tqdm(plan(config), desc="render_speed", unit="row")
    for case in bar:
        bar.set_postfix_str(case.label())
        fresh = case.executable != executable
        compile_guess_s = last_compile_s.get(case.mode, 0.0) if fresh else 0.0
        reason = skip_reason(case, config, measured, compile_guess_s, time.perf_counter() - start)
        if reason:
            skipped.append({**dataclasses.asdict(case), "reason": reason})
            continue
        scenes = random_scenes(config.seed, case.batch, case.objects)
        if fresh:
            t0 = time.perf_counter()
            fn = jax.jit(step_fn(case.mode, case.resolution, case.shadows))
            compiled = fn.lower(scenes).compile()
            compile_s = last_compile_s[case.mode] = time.perf_counter() - t0
            executable = case.executable
            jax.block_until_ready(compiled(scenes))
        times = time_calls(compiled, scenes, config.repeats, config.max_seconds_per_row)
        median_s = statistics.median(times)
        measured[case] = {**dataclasses.asdict(case), "compile_s": compile_s, "median_s": median_s,
                          "repeats": len(times), "images_per_s": case.batch / median_s,
                          "grad_over_forward": None, "times_s": times}
    for case, row in measured.items():
        forward = measured.get(dataclasses.replace(case, mode="forward"))
        if case.mode == "grad" and forward:
            row["grad_over_forward"] = row["median_s"] / forward["median_s"]
    header = {"machine": machine_info(), "config": dataclasses.asdict(config),
              "wall_s": time.perf_counter() - start}
    return {"header": header, "rows": list(measured.values()), "skipped": skipped}


def markdown(result: dict) -> str:
    """The results as a Markdown table, then the skipped rows and how to read it."""
    m = result["header"]["machine"]
    lines = [f"JAX {m['jax']} on {m['device_kind']}: {m['processor']}, {m['cpu_count']} CPUs "
             f"({m['date']}).", "",
             "| resolution | batch | objects | shadows | mode | compile s | median s | repeats "
             "| images/s | grad / forward |",
             "|---:|---:|---:|:---|:---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ratio = "" if r["grad_over_forward"] is None else f"{r['grad_over_forward']:.2f}"
        lines.append(f"| {r['resolution']} | {r['batch']} | {r['objects']} | "
                     f"{'on' if r['shadows'] else 'off'} | {r['mode']} | {r['compile_s']:.1f} | "
                     f"{r['median_s']:.3g} | {r['repeats']} | {r['images_per_s']:.3g} | {ratio} |")
    lines += skipped_lines(result["skipped"], Case)
    lines += ["", "median s: one call on the whole batch, median of `repeats` timed calls after "
              "an untimed warm-up. compile s: trace, lower and compile; rows that differ only in "
              "objects share one executable. grad: gradient of the MSE to a grey image with "
              "respect to every float leaf of the scenes. grad / forward: ratio of the median "
              "times, measured in the same run."]
    return "\n".join(lines)


def skipped_lines(skipped: list[dict], case_class) -> list[str]:
    """Markdown list of the rows not measured, with their reasons."""
    if not skipped:
        return []
    lines = ["", "Skipped, not measured:", ""]
    for s in skipped:
        case = case_class(**{k: v for k, v in s.items() if k != "reason"})
        lines.append(f"- {case.label()}: {s['reason']}")
    return lines


def resolution_axes(ax, rows: list[dict], title: str) -> None:
    """Log-log images/s against resolution, ticks at the measured resolutions."""
    resolutions = sorted({r["resolution"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(resolutions, [str(r) for r in resolutions])
    ax.set_xlabel("resolution (px per side)")
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """Images/s against resolution: a colour per (batch, objects, shadows), grad dashed."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    groups = sorted({(r["batch"], r["objects"], r["shadows"]) for r in rows})
    for i, group in enumerate(groups):
        for mode, style in (("forward", "-"), ("grad", "--")):
            points = sorted((r["resolution"], r["images_per_s"]) for r in rows if r["mode"] == mode
                            and (r["batch"], r["objects"], r["shadows"]) == group)
            if points:
                ax.plot(*zip(*points), style, marker="o", color=f"C{i}")
    handles = [mlines.Line2D([], [], color=f"C{i}", label=f"batch {b}, objects {o}, shadows "
                             f"{'on' if s else 'off'}") for i, (b, o, s) in enumerate(groups)]
    handles += [mlines.Line2D([], [], color="k", linestyle=style, label=mode)
                for mode, style in (("forward", "-"), ("grad", "--"))]
    resolution_axes(ax, rows, "JAX renderer speed")
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, out: pathlib.Path) -> str:
    """Writes ``out`` (JSON) and its ``.md`` and ``.png`` siblings; returns the table."""
    return common.write_outputs(result, out, markdown, lambda r, path: plot(r["rows"], path))


# --------------------------------------------------------------------------------------
# The three backends side by side.

BACKENDS = ("jax", "gl", "blender")

TARGET_RESOLUTION = 64
"""The issue's targets are set at 64 x 64 pixels."""

TARGET_JAX_OVER_GL = 0.5
"""JAX batched within 2x of gl: JAX's images/s at least half of gl's."""

TARGET_OVERHEAD = 0.10
"""Blender worker overhead at most 10% of Cycles' own render time."""


@dataclasses.dataclass(frozen=True)
class BackendsConfig:
    """The backend comparison and its budgets.

    Attributes:
      resolutions: square image sides in pixels.
      backends: a subset of ``BACKENDS``.
      workers: Blender worker counts, one row each per resolution.
      scenes: scenes per row (the batch every backend renders).
      objects: valid objects per scene.
      samples: Cycles samples per pixel.
      repeats: timed calls per row, at most.
      overhead_requests: timed requests of the Blender overhead measurement.
      max_seconds_per_row: time budget of one row's timed calls, in seconds.
      max_minutes: time budget of the rows, in minutes.
      seed: PRNG seed of the random scenes.
    """

    resolutions: tuple[int, ...] = (64, 128, 256)
    backends: tuple[str, ...] = BACKENDS
    workers: tuple[int, ...] = (1, 2)
    scenes: int = 16
    objects: int = 7
    samples: int = 16
    repeats: int = 3
    overhead_requests: int = 20
    max_seconds_per_row: float = 60.0
    max_minutes: float = 15.0
    seed: int = 0


BACKENDS_QUICK = dict(resolutions=(16,), scenes=2, repeats=1, overhead_requests=3)
"""``--quick``: a smoke run of every backend at 16 px on 2 scenes, overhead from 3 requests."""


@dataclasses.dataclass(frozen=True)
class BackendCase:
    """One row of the comparison: a backend (Blender: with ``workers`` processes) at one size."""

    backend: str
    workers: int | None
    resolution: int
    scenes: int

    @property
    def pixels(self) -> int:
        return self.scenes * self.resolution ** 2

    @property
    def family(self) -> str:
        return self.line

    @property
    def size(self) -> str:
        return f"{self.resolution} px"

    @property
    def line(self) -> str:
        """The backend and worker count: one line of the figure."""
        if self.workers is None:
            return self.backend
        return f"{self.backend}, {self.workers} worker{'s' if self.workers > 1 else ''}"

    def label(self) -> str:
        return f"{self.line}, {self.resolution} px, {self.scenes} scenes"


def backends_plan(config: BackendsConfig) -> list[BackendCase]:
    """Rows in run order: by growing resolution, every backend at one resolution in turn."""
    lines = [(b, w) for b in BACKENDS if b in config.backends
             for w in (config.workers if b == "blender" else (None,))]
    return [BackendCase(b, w, r, config.scenes) for r in sorted(config.resolutions)
            for b, w in lines]


def backend_fn(case: BackendCase, config: BackendsConfig, batched: render.Scene):
    """``(fn, compile_s)``: the call a row times, on the batched scenes (``jax``) or a list.

    ``compile_s`` is None for the host backends.
    """
    resolution = (case.resolution, case.resolution)
    if case.backend == "jax":
        t0 = time.perf_counter()
        fn = jax.jit(lambda scenes: render.render(scenes, resolution=resolution, shadows=True))
        compiled = fn.lower(batched).compile()
        return compiled, time.perf_counter() - t0
    if case.backend == "gl":
        return (lambda scenes: [render.render(s, backend="gl", resolution=resolution, shadows=True)
                                for s in scenes]), None
    return (lambda scenes: render.render_many(
        scenes, backend="blender", resolution=resolution, workers=case.workers,
        samples=config.samples, shadows=True, progress=False)), None


def unstack(batched: render.Scene) -> list[render.Scene]:
    """The scenes of a batch, one numpy ``Scene`` each (what the host backends get)."""
    count = batched.objects.valid.shape[0]
    return [jax.tree.map(lambda x, i=i: np.asarray(x[i]), batched) for i in range(count)]


def jax_over_gl(rows: list[dict]) -> list[dict]:
    """JAX's images/s over gl's, at every resolution where this run measured both."""
    by = {(r["backend"], r["resolution"]): r["images_per_s"] for r in rows}
    return [{"resolution": res, "jax_images_per_s": by[("jax", res)],
             "gl_images_per_s": by[("gl", res)], "ratio": by[("jax", res)] / by[("gl", res)]}
            for res in sorted({r["resolution"] for r in rows})
            if ("jax", res) in by and ("gl", res) in by]


def jax_gl_target(ratios: list[dict]) -> dict:
    """The issue's target, from this run's rows; ``met`` is None when 64 px was not measured."""
    ratio = next((r["ratio"] for r in ratios if r["resolution"] == TARGET_RESOLUTION), None)
    return {"resolution": TARGET_RESOLUTION, "min_ratio": TARGET_JAX_OVER_GL, "ratio": ratio,
            "met": None if ratio is None else ratio >= TARGET_JAX_OVER_GL}


def measure_overhead(config: BackendsConfig, scenes: list[render.Scene]) -> dict:
    """Round trip, Cycles time and overhead of one-at-a-time requests to a 1-worker pool."""
    resolution = (TARGET_RESOLUTION, TARGET_RESOLUTION)
    blender_config = render.blender.BlenderRenderConfig(samples=config.samples, shadows=True)
    requests = [render.blender.scene_request(s, resolution, blender_config, f"overhead {i}",
                                             workers=1) for i, s in enumerate(scenes)]
    round_trip, render_s = [], []
    pool = render.blender.Pool(1)
    try:
        t0 = time.perf_counter()
        for request in tqdm(requests, desc="blender overhead warm-up", unit="request",
                            leave=False):
            pool.submit(request).result()
        warmup_s = time.perf_counter() - t0
        for request in tqdm(requests, desc="blender overhead", unit="request", leave=False):
            t0 = time.perf_counter()
            header, _ = pool.submit(request).result()
            round_trip.append(time.perf_counter() - t0)
            render_s.append(header["render_s"])
    finally:
        pool.close()
    overhead = [t - r for t, r in zip(round_trip, render_s)]
    fraction = statistics.median(o / r for o, r in zip(overhead, render_s))
    return {"resolution": TARGET_RESOLUTION, "samples": config.samples, "workers": 1,
            "requests": len(requests), "warmup_s": warmup_s,
            "round_trip_s": statistics.median(round_trip),
            "render_s": statistics.median(render_s), "overhead_s": statistics.median(overhead),
            "overhead_over_render": fraction, "max_overhead_over_render": TARGET_OVERHEAD,
            "met": fraction <= TARGET_OVERHEAD,
            "times_s": {"round_trip": round_trip, "render": render_s}}


def run_backends(config: BackendsConfig) -> dict:
    """Measures every backend row, then the Blender overhead; returns them with the ratios."""
    start = time.perf_counter()
    batched = random_scenes(config.seed, config.scenes, config.objects)
    scenes = unstack(batched)
    measured: dict[BackendCase, dict] = {}
    skipped = []
    broken: dict[str, str] = {}      # line -> why its warm-up failed
    last_compile_s = 0.0
    bar = tqdm(backends_plan(config), desc="render backends", unit="row")
    for case in bar:
        bar.set_postfix_str(case.label())
        reason = (f"failed at a smaller size: {broken[case.line]}" if case.line in broken else
                  skip_reason(case, config, measured,
                                      last_compile_s if case.backend == "jax" else 0.0,
                                      time.perf_counter() - start))
        if reason:
            skipped.append({**dataclasses.asdict(case), "reason": reason})
            continue
        inputs = batched if case.backend == "jax" else scenes
        try:
            fn, compile_s = backend_fn(case, config, batched)
            t0 = time.perf_counter()
            jax.block_until_ready(fn(inputs))
            warmup_s = time.perf_counter() - t0
        except Exception as err:   # e.g. no EGL, no bpy: the other backends still run
            broken[case.line] = f"{type(err).__name__}: {err}".splitlines()[0]
            skipped.append({**dataclasses.asdict(case), "reason": f"failed: {broken[case.line]}"})
            continue
        if compile_s is not None:
            last_compile_s = compile_s
        times = time_calls(fn, inputs, config.repeats, config.max_seconds_per_row)
        median_s = statistics.median(times)
        measured[case] = {**dataclasses.asdict(case), "objects": config.objects,
                          "samples": config.samples if case.backend == "blender" else None,
                          "compile_s": compile_s, "warmup_s": warmup_s, "median_s": median_s,
                          "repeats": len(times), "images_per_s": case.scenes / median_s,
                          "times_s": times}
    render.blender.shutdown()        # the shared pool's workers are not needed any more
    overhead = None
    if "blender" in config.backends and config.overhead_requests > 0:
        overhead_scenes = unstack(random_scenes(config.seed, config.overhead_requests,
                                                config.objects))
        try:
            overhead = measure_overhead(config, overhead_scenes)
        except Exception as err:   # no bpy: recorded, never given numbers
            overhead = {"skipped": f"failed: {type(err).__name__}: {err}".splitlines()[0]}
    rows = list(measured.values())
    ratios = jax_over_gl(rows)
    machine = machine_info(("jax", "jaxlib", "pyrender"))
    machine["versions"]["bpy"] = render.blender.BPY_VERSION
    header = {"machine": machine, "config": dataclasses.asdict(config),
              "wall_s": time.perf_counter() - start}
    return {"header": header, "rows": rows, "skipped": skipped, "jax_over_gl": ratios,
            "jax_gl_target": jax_gl_target(ratios), "blender_overhead": overhead}


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**not met**")


def backends_markdown(result: dict) -> str:
    """The rows, the JAX / gl ratios, the Blender overhead, the skipped rows, how to read it."""
    m, config = result["header"]["machine"], result["header"]["config"]
    v = m["versions"]
    lines = [f"{m['processor']}, {m['cpu_count']} CPUs, {m['platform']}: Python {m['python']}, "
             f"JAX {m['jax']} (jaxlib {v['jaxlib']}, {m['device_kind']}), pyrender "
             f"{v['pyrender']}, bpy {v['bpy']} ({m['date']}).", "",
             f"{config['scenes']} random scenes of {config['objects']} objects per row, shadows "
             f"on; Blender: Cycles, {config['samples']} samples.", "",
             "| resolution | backend | workers | compile s | warm-up s | median s | repeats "
             "| images/s |",
             "|---:|:---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        lines.append(f"| {r['resolution']} | {r['backend']} | {r['workers'] or ''} | "
                     f"{compile_s} | {r['warmup_s']:.3g} | {r['median_s']:.3g} | "
                     f"{r['repeats']} | {r['images_per_s']:.3g} |")
    lines += ["", "JAX / gl, images/s of the rows above:", "",
              "| resolution | jax images/s | gl images/s | jax / gl |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['resolution']} | {r['jax_images_per_s']:.3g} | {r['gl_images_per_s']:.3g} "
              f"| {r['ratio']:.2f} |" for r in result["jax_over_gl"]]
    t = result["jax_gl_target"]
    measured = "" if t["ratio"] is None else f" (jax / gl = {t['ratio']:.2f})"
    lines += ["", f"Target, JAX batched at {t['resolution']} px within 2x of gl (jax / gl >= "
              f"{t['min_ratio']:g}): {_met(t['met'])}{measured}."]
    o = result["blender_overhead"]
    if o is None:
        lines += ["", "Blender worker overhead: not measured (Blender not in --backends)."]
    elif "skipped" in o:
        lines += ["", f"Blender worker overhead: not measured, {o['skipped']}."]
    else:
        lines += ["", f"Blender worker overhead: 1 worker, {o['resolution']} px, {o['samples']} "
                  f"samples, {o['requests']} requests one at a time (medians):", "",
                  "| round trip s | render_s | overhead s | overhead / render_s |",
                  "|---:|---:|---:|---:|",
                  f"| {o['round_trip_s']:.3g} | {o['render_s']:.3g} | {o['overhead_s']:.3g} "
                  f"| {o['overhead_over_render']:.1%} |", "",
                  f"Target, overhead <= {o['max_overhead_over_render']:.0%} of render_s: "
                  f"{_met(o['met'])}."]
    lines += skipped_lines(result["skipped"], BackendCase)
    lines += ["", "median s: one call on the whole batch (jax: one jitted call on the batched "
              "scenes; gl: one scene after another; blender: `render.render_many` on the "
              "worker pool), median of `repeats` timed calls after an untimed warm-up call "
              "(warm-up s; for Blender it starts the workers). compile s: trace, lower and "
              "compile, not timed. images/s: scenes / median s. Overhead: round trip of a "
              "request in the parent minus the seconds `bpy.ops.render.render()` took in the "
              "worker, after one untimed pass over every request; overhead / render_s is the "
              "median of the per-request ratios."]
    return "\n".join(lines)


def backends_plot(rows: list[dict], path: pathlib.Path) -> None:
    """Images/s against resolution, one line per backend (and Blender worker count)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = list(dict.fromkeys(BackendCase(r["backend"], r["workers"], 0, 0).line for r in rows))
    for i, line in enumerate(lines):
        points = sorted((r["resolution"], r["images_per_s"]) for r in rows
                        if BackendCase(r["backend"], r["workers"], 0, 0).line == line)
        ax.plot(*zip(*points), "-", marker="o", color=f"C{i}", label=line)
    batch = ", ".join(sorted({f"{r['scenes']} scenes of {r['objects']} objects" for r in rows}))
    resolution_axes(ax, rows, f"Render backends, {batch}, shadows on")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_backends(result: dict, out: pathlib.Path) -> str:
    """Writes ``out`` (JSON) and its ``.md`` and ``.png`` siblings; returns the Markdown."""
    return common.write_outputs(result, out, backends_markdown,
                                lambda r, path: backends_plot(r["rows"], path))


# --------------------------------------------------------------------------------------
# Command line.

RUNNERS = {"jax": (run, write), "backends": (run_backends, write_backends)}
"""Part -> (run, write), as ``common.main`` calls them."""


def out_paths(part: str, out: pathlib.Path | None) -> dict[str, pathlib.Path]:
    """Part -> JSON path: ``--out`` names the part run; with ``all``, the grid's."""
    parts = PARTS if part == "all" else (part,)
    if out is None:
        return {p: DEFAULT_OUT[p] for p in parts}
    if part != "all":
        return {part: out}
    return {"jax": out, "backends": out.with_name(f"{out.stem}_backends{out.suffix}")}


def parse_args(argv=None) -> list[tuple[str, Config | BackendsConfig, pathlib.Path]]:
    """``(part, config, out)`` for every part to run, in order."""
    d, b = Config(), BackendsConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=PARTS + ("all",), default="all",
                   help="jax: the JAX renderer's grid; backends: jax, gl and blender side by "
                   "side and the Blender overhead; all: both (default)")
    p.add_argument("--resolutions", type=int, nargs="+", metavar="PX",
                   help=f"both parts (default {' '.join(map(str, d.resolutions))})")
    p.add_argument("--repeats", type=int,
                   help=f"timed calls per row, at most, both parts (default {d.repeats})")
    p.add_argument("--max-seconds-per-row", type=float,
                   help="budget of one row's timed calls; rows predicted to need more are "
                   f"skipped (default {d.max_seconds_per_row:g} grid, "
                   f"{b.max_seconds_per_row:g} backends)")
    p.add_argument("--max-minutes", type=float,
                   help="budget of a part's rows; rows predicted to end past it are skipped "
                   f"(default {d.max_minutes:g} grid, {b.max_minutes:g} backends)")
    p.add_argument("--seed", type=int, help=f"both parts (default {d.seed})")
    grid = p.add_argument_group("JAX grid (--part jax)")
    grid.add_argument("--batches", type=int, nargs="+", default=d.batches, metavar="B")
    grid.add_argument("--objects", type=int, nargs="+", default=d.objects, metavar="N")
    grid.add_argument("--shadows", nargs="+", choices=("on", "off"),
                      default=["on" if s else "off" for s in d.shadows])
    grid.add_argument("--modes", nargs="+", choices=MODES, default=d.modes)
    side = p.add_argument_group("backends side by side (--part backends)")
    side.add_argument("--backends", nargs="+", choices=BACKENDS, default=b.backends)
    side.add_argument("--workers", type=int, nargs="+", default=b.workers, metavar="W",
                      help="Blender worker counts, a row each")
    side.add_argument("--scenes", type=int, default=b.scenes, help="scenes per row")
    side.add_argument("--samples", type=int, default=b.samples, help="Cycles samples")
    side.add_argument("--overhead-requests", type=int, default=b.overhead_requests,
                      help="timed requests of the Blender overhead (0: not measured)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (overrides the settings above): grid at 16 px, batch 2, "
                   "shadows off, 2 repeats; backends at 16 px, 2 scenes, 1 repeat, overhead "
                   "from 3 requests")
    p.add_argument("--out", type=pathlib.Path,
                   help="JSON path of the part run; with --part all, the grid's, and the "
                   "backends' is its stem + _backends (default "
                   + ", ".join(str(v) for v in DEFAULT_OUT.values()) + ")")
    a = p.parse_args(argv)
    shared = {k: v for k, v in dict(
        resolutions=a.resolutions and tuple(a.resolutions), repeats=a.repeats,
        max_seconds_per_row=a.max_seconds_per_row, max_minutes=a.max_minutes,
        seed=a.seed).items() if v is not None}
    configs = {
        "jax": dataclasses.replace(
            d, batches=tuple(a.batches), objects=tuple(a.objects),
            shadows=tuple(s == "on" for s in a.shadows), modes=tuple(a.modes), **shared),
        "backends": dataclasses.replace(
            b, backends=tuple(a.backends), workers=tuple(a.workers), scenes=a.scenes,
            samples=a.samples, overhead_requests=a.overhead_requests, **shared)}
    if a.quick:
        configs["jax"] = dataclasses.replace(configs["jax"], **QUICK)
        configs["backends"] = dataclasses.replace(configs["backends"], **BACKENDS_QUICK)
    return [(part, configs[part], out) for part, out in out_paths(a.part, a.out).items()]


def main(argv=None) -> dict:
    """Runs the parts asked for; returns ``{part: result}``."""
    return {part: common.main(lambda _argv, c=config, o=out: (c, o), *RUNNERS[part])
            for part, config, out in parse_args(argv)}


if __name__ == "__main__":
    main()
