"""Render speed of the JAX renderer: images/s by resolution, batch, objects, shadows and mode.

    python -m benchmarks.render_speed --seed 0
    python -m benchmarks.render_speed --resolutions 64 128 --batches 1 64 --modes forward
    python -m benchmarks.render_speed --quick --out /tmp/render_speed.json

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

Writes ``--out`` (JSON), the same path with ``.md`` (the Markdown table, also
printed) and with ``.png`` (images/s against resolution).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.lines as mlines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

import render  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.common import machine_info  # noqa: E402

MODES = ("forward", "grad")


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


def predict_call_s(case: Case, measured: dict[Case, dict]) -> tuple[float, Case] | None:
    """Seconds per call scaled by pixel count from the largest comparable smaller row."""
    key = (case.mode, case.shadows, case.objects)
    refs = [c for c in measured
            if (c.mode, c.shadows, c.objects) == key and c.pixels <= case.pixels]
    if not refs:
        return None
    ref = max(refs, key=lambda c: c.pixels)
    return measured[ref]["median_s"] * case.pixels / ref.pixels, ref


def skip_reason(case: Case, config: Config, measured: dict[Case, dict], compile_guess_s: float,
                elapsed_s: float) -> str | None:
    """Why ``case`` is not measured, or None; ``compile_guess_s`` is 0 for a compiled one."""
    prediction = predict_call_s(case, measured)
    call_s = prediction[0] if prediction else 0.0
    if call_s > config.max_seconds_per_row:
        return (f"predicted {call_s:.0f} s per call (scaled by pixel count from "
                f"{prediction[1].resolution} px, batch {prediction[1].batch}) > "
                f"--max-seconds-per-row {config.max_seconds_per_row:g}")
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
    if result["skipped"]:
        lines += ["", "Skipped, not measured:", ""]
        for s in result["skipped"]:
            case = Case(**{k: v for k, v in s.items() if k != "reason"})
            lines.append(f"- {case.label()}: {s['reason']}")
    lines += ["", "median s: one call on the whole batch, median of `repeats` timed calls after "
              "an untimed warm-up. compile s: trace, lower and compile; rows that differ only in "
              "objects share one executable. grad: gradient of the MSE to a grey image with "
              "respect to every float leaf of the scenes. grad / forward: ratio of the median "
              "times, measured in the same run."]
    return "\n".join(lines)


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
    resolutions = sorted({r["resolution"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(resolutions, [str(r) for r in resolutions])
    ax.set_xlabel("resolution (px per side)")
    ax.set_ylabel("images / s")
    ax.set_title("JAX renderer speed", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, out: pathlib.Path) -> str:
    """Writes ``out`` (JSON) and its ``.md`` and ``.png`` siblings; returns the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table + "\n")
    plot(result["rows"], out.with_suffix(".png"))
    return table


def parse_args(argv=None) -> tuple[Config, pathlib.Path]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=d.resolutions, metavar="PX")
    p.add_argument("--batches", type=int, nargs="+", default=d.batches, metavar="B")
    p.add_argument("--objects", type=int, nargs="+", default=d.objects, metavar="N")
    p.add_argument("--shadows", nargs="+", choices=("on", "off"),
                   default=["on" if s else "off" for s in d.shadows])
    p.add_argument("--modes", nargs="+", choices=MODES, default=d.modes)
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed calls per row, at most")
    p.add_argument("--max-seconds-per-row", type=float, default=d.max_seconds_per_row,
                   help="budget of one row's timed calls; rows predicted to need more are skipped")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes,
                   help="budget of the whole run; rows predicted to end past it are skipped")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 16 px, batch 2, shadows off, 2 repeats (overrides the grid)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/render_speed.json"))
    a = p.parse_args(argv)
    config = Config(resolutions=tuple(a.resolutions), batches=tuple(a.batches),
                    objects=tuple(a.objects), shadows=tuple(s == "on" for s in a.shadows),
                    modes=tuple(a.modes), repeats=a.repeats,
                    max_seconds_per_row=a.max_seconds_per_row, max_minutes=a.max_minutes,
                    seed=a.seed)
    return (dataclasses.replace(config, **QUICK) if a.quick else config), a.out


def main(argv=None) -> dict:
    return common.main(parse_args, run, write, argv)


if __name__ == "__main__":
    main()
