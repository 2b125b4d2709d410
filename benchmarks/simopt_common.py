"""What both simulator-optimisation benchmarks share: a grid of resumable runs.

Every (method, seed) is one :func:`simopt_jax.run.run` in ``ROOT/runs/LABEL_sSEED``,
so a benchmark that was interrupted continues where it stopped: finished runs are
read back from their ``result.json``, started ones are resumed from their
checkpoint, and a run folder whose saved config differs from the requested one is
an error (delete it or pick another ``--runs``). Runs go to ``--workers``
processes (``spawn``, each with its own JAX); per-run wall times are measured
inside each run, so with two workers on two cores they are side by side under the
same load.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a benchmark: a method of :data:`simopt_jax.run.METHODS` and the
    :class:`simopt_jax.run.RunConfig` fields it overrides."""

    label: str
    method: str
    overrides: tuple[tuple[str, Any], ...] = ()

    def config(self, task: str, seed: int, budget_images: int, size: str, common: dict):
        from simopt_jax.run import RunConfig

        return RunConfig(task=task, method=self.method, budget_images=budget_images, seed=seed,
                         size=size, **{**common, **dict(self.overrides)})


def _one(config, run_dir: str) -> dict:
    """Runs (or resumes, or reads back) one run; returns its result and history."""
    from simopt_jax.run import RunConfig, read_history, run

    folder = Path(run_dir)
    saved = folder / "config.json"
    if saved.exists():
        stored = RunConfig.from_json(json.loads(saved.read_text()))
        if stored != config:
            raise ValueError(f"{folder} holds a run with another config; delete it or choose "
                             f"another --runs folder")
        if (folder / "result.json").exists():
            result = json.loads((folder / "result.json").read_text())
        else:
            result = run(None, folder, resume=True, progress=False)
    else:
        result = run(config, folder, progress=False)
    return {"result": result, "history": read_history(folder)}


def run_grid(task: str, entries: list[Entry], seeds: list[int], budget_images: int, size: str,
             root: Path, workers: int = 1, common: dict | None = None) -> dict[str, list[dict]]:
    """Every entry on every seed; ``{label: [ {"result", "history"} per seed ]}``."""
    from tqdm.auto import tqdm

    common = common or {}
    jobs = [(e.label, s, e.config(task, s, budget_images, size, common),
             str(root / "runs" / f"{e.label}_s{s}")) for e in entries for s in seeds]
    out: dict[str, dict[int, dict]] = {e.label: {} for e in entries}
    bar = tqdm(total=len(jobs), desc=f"{task} runs", unit="run")
    if workers <= 1:
        for label, seed, config, folder in jobs:
            out[label][seed] = _one(config, folder)
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_one, config, folder): (label, seed)
                       for label, seed, config, folder in jobs}
            for future in concurrent.futures.as_completed(futures):
                label, seed = futures[future]
                out[label][seed] = future.result()
                bar.update()
                bar.set_postfix(done=f"{label} s{seed}")
    bar.close()
    return {label: [runs[s] for s in seeds] for label, runs in out.items()}


def first_reaching(history: list[dict], target: float, higher_is_better: bool,
                   key: str = "val_metric") -> dict | None:
    """The first history line whose ``key`` reaches ``target``, or None."""
    for line in history:
        value = line[key]
        if value is None or not math.isfinite(value):
            continue
        if (value >= target) if higher_is_better else (value <= target):
            return line
    return None


def median(values) -> float:
    """Median of the finite values (``inf`` counts: a run that never got there); NaN if none."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(values)) if values else float("nan")


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "not reached"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def plot_curves(grid: dict[str, list[dict]], path: Path, *, metric: str, title: str,
                panels: list[tuple[str, str, str, str]]) -> None:
    """One panel per ``(x key, y key, x label, y label)``: each label's median over
    seeds (of the curves as step functions on a common grid), seeds faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    axes = np.atleast_1d(axes)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (x_key, y_key, x_label, y_label) in zip(axes, panels):
        for i, (label, runs) in enumerate(grid.items()):
            colour = colours[i % len(colours)]
            curves = [(np.array([h[x_key] for h in r["history"]], float),
                       np.array([h[y_key] for h in r["history"]], float)) for r in runs
                      if r["history"]]
            for xs, ys in curves:
                ax.plot(xs, ys, color=colour, alpha=0.2, lw=0.8)
            if not curves:
                continue
            grid_x = np.linspace(0, max(xs[-1] for xs, _ in curves), 200)
            stacked = []
            for xs, ys in curves:
                idx = np.searchsorted(xs, grid_x, side="right") - 1
                stacked.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan))
            with np.errstate(all="ignore"):
                ax.plot(grid_x, np.nanmedian(np.array(stacked), axis=0), color=colour,
                        lw=1.8, label=label)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
