"""Fits a dataset's scenes with the GBO and Simplex baselines and scores them (LiDO sec. 4.4).

``python -m lido_jax fit --data data/lido --method gbo simplex --limit 10 --out results/fits``
fits every scene of a folder written by ``python -m lido_jax dataset`` (or one scene
file) with each method (:func:`lido_jax.baselines.fit`), all from the same initial
scene. Until LiDO's initialisation networks exist, the initial scene is the ground
truth (GT) perturbed by :func:`lido_jax.latents.perturb` (every continuous LV moved
by uniform noise of ``init_perturbation`` times its range) with the key
``fold_in(key(seed), scene index)``. The observed image is the file's ``rgb``, resized
by ``baselines.fit`` to the in-loop resolution.

Written to ``out``, per scene ``i`` and method ``m``:

- ``scene_{i:06d}_{m}.npz``: the fitted scene in the leaf layout of dataset files
  (:func:`lido_jax.dataset.load_scene` reads it);
- ``scene_{i:06d}_{m}.json``: :func:`lido_jax.metrics.evaluate` of the initial and of
  the fitted scene against the GT (images: a JAX render of the scene and the observed
  image, both at the dataset's resolution), the fit's wall time, evaluations, NLL
  trace, and the error-vs-time trace of LiDO Fig. 5 (:func:`error_trace`);
- ``scene_{i:06d}.png``: observed | init | each method's fit, with the GT object
  contours;

and ``summary.json`` / ``summary.md``: LiDO Table 1 (median improvement over the init
per LV set, ``*`` for significantly better by the Wilcoxon test), median seconds and
evaluations per scene, and median image measures. ``fit_settings.json`` holds the
settings: a restart with other settings is refused, one with the same settings skips
the (scene, method) pairs whose files exist. Files are written under a temporary name
and renamed, so a file that exists is complete.

Timing: a method's first fit in a process compiles the renderer's NLL (and for GBO
its gradient). Before it, an untimed warm-up fit (one iteration per LV set, on the
same scene) compiles them and is reported as ``warmup_s``; ``wall_s`` and the trace's
times are measured warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import os
import re
import statistics
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

import render
from lido_jax import baselines, dataset, latents, metrics
from render.jax_renderer import FIRST_OBJECT

METHODS: tuple[str, ...] = baselines.METHODS
INIT_PERTURBATION: float = 0.01
"""Default ``latents.perturb`` amount of the initial scene (fraction of each LV's range).
Measured on 3 generated scenes at 128 px: 0.01 leaves the initial object masks a median
IoU of 0.38 with the GT's (6.5 px contact-point error), 0.03 only 0.003 (20 px), too
far for a local optimiser to find the objects."""
TRACE_POINTS: int = 20
"""Default number of evaluations at which :func:`error_trace` measures the LV errors."""
SETTINGS = "fit_settings.json"
SUMMARY = "summary.json"

_SCENE_FILE = re.compile(r"scene_(\d+)\.npz")


# ---------------------------------------------------------------------------------------
# Inputs.

def scene_files(data: str | os.PathLike) -> list[Path]:
    """The scene files of a dataset folder (``scene_NNNNNN.npz``, sorted), or ``[data]``
    for one file.

    Raises:
      FileNotFoundError: ``data`` does not exist.
      ValueError: a folder without scene files.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset folder or scene file")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if _SCENE_FILE.fullmatch(p.name))
    if not files:
        raise ValueError(f"{path} holds no scene files (scene_NNNNNN.npz); write some with "
                         "`python -m lido_jax dataset --num N --out DIR`")
    return files


def scene_index(path: Path, arrays: dict[str, np.ndarray] | None = None) -> int:
    """A scene's index: from its file name, else its ``index`` array, else 0."""
    match = _SCENE_FILE.fullmatch(path.name)
    if match:
        return int(match.group(1))
    return int(arrays["index"]) if arrays is not None and "index" in arrays else 0


def initial_scene(gt: render.Scene, index: int, *, seed: int = 0,
                  amount: float = INIT_PERTURBATION) -> render.Scene:
    """The GT with every continuous LV perturbed (``latents.perturb``), key
    ``fold_in(key(seed), index)``: a stand-in for the initialisation networks."""
    return latents.perturb(jax.random.fold_in(jax.random.key(seed), index), gt, amount)


def observed_image(arrays: dict[str, np.ndarray]) -> render.Image:
    """The file's observed image as a ``render.Image`` (normals are not stored: zeros)."""
    rgb = np.asarray(arrays["rgb"], np.float32)
    return render.Image(rgb=rgb, depth=np.asarray(arrays["depth"], np.float32),
                        normals=np.zeros_like(rgb), instance=np.asarray(arrays["instance"], np.int32))


@functools.lru_cache(maxsize=8)
def _renderer(resolution: tuple[int, int], shadows: bool):
    return jax.jit(lambda scene: render.render(scene, resolution=resolution, shadows=shadows))


def render_image(scene: render.Scene, resolution: tuple[int, int], shadows: bool = True) -> render.Image:
    """A JAX render of one scene (no textures, flat background) with numpy leaves."""
    image = _renderer(tuple(int(r) for r in resolution), bool(shadows))(scene)
    return jax.tree.map(np.asarray, image)


# ---------------------------------------------------------------------------------------
# One scene.

def finite_median(values) -> float:
    """Median of the non-NaN values; NaN if there are none."""
    values = np.asarray(values, np.float64).ravel()
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else math.nan


def error_trace(result: baselines.FitResult, gt: render.Scene, resolution,
                points: int = TRACE_POINTS) -> dict:
    """LV errors against time for LiDO Fig. 5.

    At up to ``points`` evaluations evenly spaced in evaluation index (always the
    first, which is the initial scene, and the last), the best-so-far scene (lowest
    NLL up to that evaluation, clipped as ``baselines.fit`` clips its result, so the
    last point is the fitted scene) is scored by ``metrics.lv_errors`` at
    ``resolution``; object LV sets are reduced to their median over the scene's objects.

    Returns:
      ``evaluation`` (indices), ``best`` (best-so-far indices), ``time_s`` (seconds
      since the fit's start at those evaluations), ``nll`` (best so far) and
      ``errors``: LV set -> list of medians.
    """
    if points < 2:
        raise ValueError(f"points={points} must be >= 2 (the first and the last evaluation)")
    nll = np.asarray(result.nll, np.float64)
    nll = np.where(np.isfinite(nll), nll, np.inf)   # a failed render is never the best
    index = np.unique(np.round(np.linspace(0, len(nll) - 1, min(points, len(nll)))).astype(int))
    best = [int(np.argmin(nll[:i + 1])) for i in index]
    errors: dict[str, list[float]] = {k: [] for k in metrics.LV_SETS}
    for b in best:
        e = metrics.lv_errors(latents.clip(result.scene_at(b)), gt, resolution)
        for k in metrics.LV_SETS:
            errors[k].append(finite_median(e[k]))
    return {"evaluation": index.tolist(), "best": best,
            "time_s": np.asarray(result.times)[index].tolist(),
            "nll": nll[best].tolist(), "errors": errors}


def warm_up(init: render.Scene, observed, config: baselines.FitConfig) -> float:
    """Compiles what ``config``'s fits call (one iteration per LV set); returns seconds."""
    start = time.perf_counter()
    baselines.fit(init, observed, dataclasses.replace(config, iterations=1, sweeps=1))
    return time.perf_counter() - start


def json_safe(value):
    """``value`` with numpy arrays and tuples as lists and NaN as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def as_array(values) -> np.ndarray:
    """A JSON list of numbers (None for NaN) as a float64 array."""
    return np.array([math.nan if x is None else x for x in values], np.float64)


def _flat(measures: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64).ravel() for k, v in measures.items()}


def fit_scene(gt: render.Scene, arrays: dict[str, np.ndarray], init: render.Scene,
              config: baselines.FitConfig, *, init_measures: dict | None = None,
              trace_points: int = TRACE_POINTS) -> tuple[baselines.FitResult, dict]:
    """Fits one scene from ``init`` and scores the init and the fit against ``gt``.

    Args:
      gt, arrays: a scene file's content (``dataset.load_scene``).
      init: the initial scene.
      config: the baseline and its budgets.
      init_measures: ``metrics.evaluate`` of ``init``, when already computed.
      trace_points: evaluations scored by :func:`error_trace`.

    Returns:
      The ``FitResult`` and the record written as the scene's metrics JSON.
    """
    resolution = tuple(int(r) for r in np.shape(arrays["rgb"])[:2])
    start = time.perf_counter()
    result = baselines.fit(init, arrays["rgb"], config)
    wall_s = time.perf_counter() - start
    gt_image = observed_image(arrays)
    if init_measures is None:
        init_measures = metrics.evaluate(init, gt, resolution,
                                         render_image(init, resolution, config.shadows), gt_image)
    fit_measures = metrics.evaluate(result.scene, gt, resolution,
                                    render_image(result.scene, resolution, config.shadows), gt_image)
    record = {
        "method": config.method,
        "objects": int(np.count_nonzero(np.asarray(gt.objects.valid))),
        "resolution": list(resolution),
        "config": {**dataclasses.asdict(config), "budget": config.budget},
        "init": _flat(init_measures),
        "fit": _flat(fit_measures),
        "wall_s": wall_s,
        "evaluations": int(len(result.nll)),
        "sets": [[name, int(n)] for name, n in result.sets],
        "times_s": np.asarray(result.times).tolist(),
        "nll": np.asarray(result.nll).tolist(),
        "trace": error_trace(result, gt, resolution, trace_points),
    }
    return result, record


# ---------------------------------------------------------------------------------------
# Files.

def output_paths(out: str | os.PathLike, index: int, method: str) -> tuple[Path, Path]:
    """The fitted scene (``.npz``) and metrics (``.json``) of one scene and method."""
    stem = Path(out) / f"scene_{index:06d}_{method}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def preview_path(out: str | os.PathLike, index: int) -> Path:
    return Path(out) / f"scene_{index:06d}.png"


def _write_text(path: Path, text: str) -> bool:
    """Writes ``text`` atomically unless the file already holds it; True if written."""
    if path.exists() and path.read_text() == text:
        return False
    dataset.atomic_write(path, text.encode())
    return True


def load_record(out: str | os.PathLike, index: int, method: str) -> dict:
    """A scene's metrics JSON, with the measures of ``init``, ``fit`` and the trace's
    ``errors`` as float64 arrays (NaN where the file has None)."""
    record = json.loads(output_paths(out, index, method)[1].read_text())
    for key in ("init", "fit"):
        record[key] = {k: as_array(v) for k, v in record[key].items()}
    record["trace"]["errors"] = {k: as_array(v) for k, v in record["trace"]["errors"].items()}
    return record


def comparison_png(observed: np.ndarray, instance: np.ndarray, valid, images: dict[str, np.ndarray],
                   titles: dict[str, str] | None = None) -> bytes:
    """PNG of the observed image next to ``images`` (name -> (H, W, 3)), the GT object
    contours (instance ``2 + k`` of the valid slots) drawn in black on each of them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = titles or {}
    panels = {"observed": observed, **images}
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    masks = [np.asarray(instance) == FIRST_OBJECT + k for k, v in enumerate(np.asarray(valid)) if v]
    for ax, (name, rgb) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(np.clip(np.asarray(rgb), 0, 1), interpolation="nearest")
        if name != "observed":
            for mask in masks:
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.set_title(titles.get(name, name), fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            diff = ", ".join(f"{k}={old.get(k)!r} there vs {v!r} now"
                             for k, v in settings.items() if old.get(k) != v)
            raise ValueError(f"{out} holds fits made with other settings ({diff}); use another "
                             "--out or the same settings")
    _write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------
# A dataset.

def fit_dataset(data: str | os.PathLike, out: str | os.PathLike,
                methods: Sequence[str] = METHODS, *, config: dict | None = None,
                limit: int | None = None, seed: int = 0,
                init_perturbation: float = INIT_PERTURBATION, trace_points: int = TRACE_POINTS,
                max_minutes: float | None = None, progress: bool | None = None) -> dict:
    """Fits the scenes of ``data`` with each method; writes the files of the module doc.

    Args:
      data: a dataset folder (``python -m lido_jax dataset``) or one scene file.
      out: output folder (created if missing).
      methods: names from :data:`METHODS`.
      config: fields of ``baselines.FitConfig`` other than ``method``
        (``iterations``, ``resolution``, ``order``, ...), shared by the methods.
      limit: fit the first ``limit`` scenes only.
      seed, init_perturbation: the initial scenes (:func:`initial_scene`).
      trace_points: evaluations scored by :func:`error_trace`.
      max_minutes: no new scene is started once the time spent plus the mean time of
        the scenes fitted so far in this call (warm-ups left out) would pass it; at
        least one is fitted.
      progress: a tqdm bar (``None``: on terminals).

    Returns:
      The summary (:func:`summarise` of every selected scene whose files exist, as
      written to ``summary.json``) plus ``run``: this call's ``fitted`` (scene, method)
      pairs, ``resumed`` ones, ``warmup_s`` per method (compilation, not in any
      ``wall_s``), ``not_started`` scene indices and ``wall_s``.

    Raises:
      FileNotFoundError: ``data`` does not exist.
      ValueError: no scene files, an unknown method or config field, ``limit < 1``,
        a negative perturbation, or ``out`` holding fits with other settings.
    """
    from tqdm.auto import tqdm

    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise ValueError("no method given")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    config = dict(config or {})
    if "method" in config:
        raise ValueError("pass the methods as `methods`, not in `config`")
    if "resolution" in config:
        config["resolution"] = tuple(int(r) for r in config["resolution"])
    try:
        configs = {m: baselines.FitConfig(method=m, **config) for m in methods}
    except TypeError as e:
        raise ValueError(f"bad config ({e}); its keys are fields of baselines.FitConfig") from e
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1")
    if not init_perturbation >= 0:
        raise ValueError(f"init_perturbation={init_perturbation} must be >= 0")
    if trace_points < 2:
        raise ValueError(f"trace_points={trace_points} must be >= 2")
    files = scene_files(data)[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shared = {k: v for k, v in dataclasses.asdict(configs[methods[0]]).items() if k != "method"}
    _check_settings(out, json.loads(json.dumps({
        "data": str(Path(data).resolve()), "seed": seed, "init_perturbation": init_perturbation,
        "trace_points": trace_points, **shared})))

    start = time.perf_counter()
    warmed: dict[tuple[str, int], float] = {}
    fitted, resumed, done, not_started, scene_s = [], [], [], [], []
    bar = tqdm(files, desc="lido fit", unit="scene",
               disable=(None if progress is None else not progress))
    for position, path in enumerate(bar):
        elapsed = time.perf_counter() - start
        if max_minutes is not None and scene_s and elapsed + statistics.mean(scene_s) > 60 * max_minutes:
            not_started = [scene_index(p) for p in files[position:]]
            break
        t0 = time.perf_counter()
        gt, arrays = dataset.load_scene(path)
        index = scene_index(path, arrays)
        resolution = tuple(int(r) for r in arrays["rgb"].shape[:2])
        init = initial_scene(gt, index, seed=seed, amount=init_perturbation)
        init_measures = None
        scenes, wrote = {}, False
        for m in methods:
            npz, record_path = output_paths(out, index, m)
            if npz.exists() and record_path.exists():
                scenes[m] = dataset.load_scene(npz)[0]
                resumed.append((index, m))
                continue
            bar.set_postfix_str(f"scene {index} {m}")
            key = (m, int(gt.objects.valid.shape[0]))
            if key not in warmed:
                warmed[key] = warm_up(init, arrays["rgb"], configs[m])
                t0 += warmed[key]   # the budget's prediction leaves compilation out
            if init_measures is None:
                init_measures = metrics.evaluate(
                    init, gt, resolution, render_image(init, resolution, configs[m].shadows),
                    observed_image(arrays))
            result, record = fit_scene(gt, arrays, init, configs[m], init_measures=init_measures,
                                       trace_points=trace_points)
            record = {"index": index, "source": str(path), "seed": seed,
                      "init_perturbation": init_perturbation, **record}
            dataset.atomic_write(npz, dataset.npz_bytes(
                {**dataset.scene_leaves(result.scene), "index": np.asarray(index, np.int64)}))
            _write_text(record_path, json.dumps(json_safe(record), indent=1) + "\n")
            scenes[m] = result.scene
            fitted.append((index, m))
            wrote = True
        png = preview_path(out, index)
        if wrote or not png.exists():
            shadows = configs[methods[0]].shadows
            images = {"init": render_image(init, resolution, shadows).rgb}
            images.update({m: render_image(s, resolution, shadows).rgb for m, s in scenes.items()})
            dataset.atomic_write(png, comparison_png(arrays["rgb"], arrays["instance"],
                                                      gt.objects.valid, images))
        done.append(index)
        if wrote:
            scene_s.append(time.perf_counter() - t0)
    bar.close()

    summary = summarise({m: [load_record(out, i, m) for i in done] for m in methods})
    _write_text(out / SUMMARY, json.dumps(json_safe(summary), indent=1) + "\n")
    _write_text((out / SUMMARY).with_suffix(".md"), summary_markdown(summary) + "\n")
    warmup_s: dict[str, float] = {}
    for (m, _), seconds in warmed.items():
        warmup_s[m] = warmup_s.get(m, 0.0) + seconds
    run = {"fitted": fitted, "resumed": resumed, "warmup_s": warmup_s,
           "not_started": not_started, "wall_s": time.perf_counter() - start}
    return {**summary, "run": run}


# ---------------------------------------------------------------------------------------
# Summary.

def summarise(records: dict[str, list[dict]]) -> dict:
    """Table 1 and medians over scenes, from each method's records (:func:`load_record`)
    of the same scenes in the same order.

    Returns:
      ``methods``, ``scenes`` (indices), ``objects`` (GT objects in them), ``table``
      (``metrics.TableRow`` fields per LV set), ``median_s_per_scene``,
      ``median_evaluations`` (per method) and ``image_measures`` (``init`` and each
      method -> median of each of ``metrics.IMAGE_MEASURES`` over objects or scenes).
    """
    methods = list(records)
    if not methods:
        raise ValueError("no method to summarise")
    first = records[methods[0]]
    scenes = [r["index"] for r in first]
    for m in methods:
        if [r["index"] for r in records[m]] != scenes:
            raise ValueError(f"method {m!r} has other scenes than {methods[0]!r}")
    init = [r["init"] for r in first]
    fits = {m: [r["fit"] for r in records[m]] for m in methods}
    rows = metrics.improvement_table(init, fits) if scenes else []

    def pooled_median(dicts, key):
        return finite_median(np.concatenate([d[key] for d in dicts])) if dicts else math.nan

    image = {name: {k: pooled_median(dicts, k) for k in metrics.IMAGE_MEASURES}
             for name, dicts in [("init", init), *fits.items()]}

    def median(values):
        return statistics.median(values) if values else math.nan

    return {
        "methods": methods,
        "scenes": scenes,
        "objects": sum(r["objects"] for r in first),
        "table": [{"lv_set": r.lv_set, "improvement": r.improvement,
                   "significant": list(r.significant), "count": r.count} for r in rows],
        "median_s_per_scene": {m: median([r["wall_s"] for r in records[m]]) for m in methods},
        "median_evaluations": {m: median([r["evaluations"] for r in records[m]]) for m in methods},
        "image_measures": image,
    }


def summary_markdown(summary: dict) -> str:
    """Table 1 (``metrics.markdown_table``), seconds and evaluations per scene, and the
    image measures, as Markdown; takes :func:`summarise`'s dict or its JSON (None for NaN)."""
    def number(x):
        return math.nan if x is None else x

    def cell(x, spec):
        return "n/a" if x is None or math.isnan(x) else format(x, spec)

    methods = summary["methods"]
    rows = [metrics.TableRow(r["lv_set"], {m: number(v) for m, v in r["improvement"].items()},
                             tuple(r["significant"]), r["count"]) for r in summary["table"]]
    lines = [f"{len(summary['scenes'])} scenes, {summary['objects']} objects. Median improvement "
             "over the initialisation in % (LiDO Table 1); * marks a method significantly better "
             "than the other(s) (one-sided Wilcoxon signed-rank test, p < 0.05).", "",
             metrics.markdown_table(rows), "",
             "| per scene (median) | " + " | ".join(methods) + " |",
             "|---|" + "---:|" * len(methods) + "",
             "| seconds | " + " | ".join(cell(summary["median_s_per_scene"][m], ".3g")
                                         for m in methods) + " |",
             "| evaluations | " + " | ".join(cell(summary["median_evaluations"][m], ".0f")
                                             for m in methods) + " |", "",
             "| image measure (median) | init | " + " | ".join(methods) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for k in metrics.IMAGE_MEASURES:
        scale = 1e3 if "MSE" in k else 1.0
        cells = [cell(number(summary["image_measures"][name][k]) * scale, ".3g")
                 for name in ["init", *methods]]
        label = f"{k} x 10^3" if "MSE" in k else k
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Command line.

def add_fit_command(subparsers) -> argparse.ArgumentParser:
    """Registers ``fit`` on an ``argparse`` subparsers object."""
    d = baselines.FitConfig()
    p = subparsers.add_parser(
        "fit", help="fit scenes with the GBO / Simplex baselines and score them",
        description=__doc__.split("\n\n")[0] + " The initial scene is the ground truth "
        "perturbed by latents.perturb (--init-perturbation, key from --seed and the scene "
        "index), the same for every method, until LiDO's initialisation networks exist.")
    p.add_argument("--data", required=True,
                   help="a dataset folder written by `python -m lido_jax dataset`, or one scene file")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS), dest="methods")
    p.add_argument("--limit", type=int, help="fit the first N scenes only")
    p.add_argument("--iterations", type=int,
                   help="iterations per LV set (default: the paper's, "
                   + ", ".join(f"{m} {n}" for m, n in baselines.DEFAULT_ITERATIONS.items()) + ")")
    p.add_argument("--order", choices=("sequential", "all"), default=d.order,
                   help="fit the LV sets one after another (LiDO's order) or all at once")
    p.add_argument("--sweeps", type=int, default=d.sweeps, help="passes over the LV sets")
    p.add_argument("--resolution", type=int, default=d.resolution[0],
                   help="side of the in-loop renders, pixels; the observed image is resized to "
                   "it (best the dataset's own: resizing blends small objects' edges with the "
                   "ground unlike the renderer, which biases colour fits)")
    p.add_argument("--backend", choices=("jax", "gl"), default=d.backend, help="in-loop renderer")
    p.add_argument("--no-shadows", dest="shadows", action="store_false",
                   help="in-loop renders without shadows")
    p.add_argument("--step", type=float, default=d.step,
                   help="initial step, fraction of each LV's range")
    p.add_argument("--init-perturbation", type=float, default=INIT_PERTURBATION,
                   help="initial scene: the ground truth with every continuous LV moved by "
                   "uniform noise of this fraction of its range (latents.perturb; a stand-in "
                   "for LiDO's initialisation networks, which do not exist yet)")
    p.add_argument("--seed", type=int, default=0, help="root of the initial scenes' keys")
    p.add_argument("--trace-points", type=int, default=TRACE_POINTS,
                   help="evaluations at which the error-vs-time trace scores the LVs")
    p.add_argument("--max-minutes", type=float,
                   help="start no new scene once it would end past this budget")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args) -> int:
        config = {"iterations": args.iterations, "order": args.order, "sweeps": args.sweeps,
                  "resolution": (args.resolution,) * 2, "backend": args.backend,
                  "shadows": args.shadows, "step": args.step}
        try:
            summary = fit_dataset(args.data, args.out, args.methods, config=config,
                                  limit=args.limit, seed=args.seed,
                                  init_perturbation=args.init_perturbation,
                                  trace_points=args.trace_points, max_minutes=args.max_minutes,
                                  progress=False if args.quiet else None)
        except (ValueError, FileNotFoundError) as e:
            p.error(str(e))
        print(summary_markdown(summary))
        if summary["run"]["not_started"]:
            print(f"\n--max-minutes {args.max_minutes:g}: scenes {summary['run']['not_started']} "
                  "not started")
        print(f"\nwrote {Path(args.out) / SUMMARY}")
        return 0

    p.set_defaults(run=run)
    return p
