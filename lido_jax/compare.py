"""LiDO against GBO and Simplex, every method from the same initialisation (sec. 4.4).

One test scene at a time (:func:`compare_scene`): the initialisation networks give
``z_0`` (``initialization.initial_scene``); GBO and Simplex (``baselines.fit``) and
LiDO (``refine.refine`` with the prediction network, ``T`` steps, the JAX tracer in
the loop) all start from it; LiDO-R is LiDO's final scene re-rendered with Blender
(its latents are LiDO's, so it differs only in the image measures). Errors are
measured against the ground truth (GT) aligned to the detections
(``init_training.pair``: same class, contact points within 10% of the image width);
a GT object without a paired detection has no latent error, and counts as missed
(IoU 0) in the image measures, where each rendered object is mapped to the GT object
it is paired with (:func:`paired_image_measures`).

:func:`run` does a folder of test scenes (``python -m lido_jax dataset`` layout),
writes one JSON record and one picture per scene (resumable: a record that exists is
reused when the settings match) and returns :func:`summarise`'s tables: Table 1
(median improvement over INIT per LV set, Wilcoxon stars), Table 2 (mean IoU and
MSE of objects and ground), seconds per scene and the paper's targets.
:func:`plot_errors` draws Fig. 5 and :func:`contact_sheet` stacks the pictures.

Timing: GBO and Simplex are timed around ``baselines.fit``; LiDO around its jitted
``T``-step loop (``block_until_ready``). Each is compiled by an untimed warm-up on the
first scene. LiDO's ``T = 5`` and ``T = 10`` results are the states after 5 and 10
steps of the same run (the step sizes ``1 / (t + a)`` do not depend on ``T``); their
times are ``t / T`` of the ``T``-step time, as every step does the same work.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

import render
from lido_jax import baselines, dataset, fit, init_training, initialization, metrics, refine
from lido_jax.pretrained import Pretrained
from render.jax_renderer import FIRST_OBJECT

SETTINGS = "compare_settings.json"
INIT, GBO, SIMPLEX, LIDO, LIDO_R = "INIT", "GBO", "Simplex", "LiDO", "LiDO-R"
TABLE1_METHODS: tuple[str, ...] = (GBO, SIMPLEX, LIDO)
"""The methods compared with the Wilcoxon test (``LiDO`` is ``T = steps``)."""
TABLE2_METHODS: tuple[str, ...] = (INIT, GBO, SIMPLEX, LIDO, LIDO_R)
_BASELINES = {GBO: "gbo", SIMPLEX: "simplex"}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What is compared and with which budgets.

    Attributes:
      steps: LiDO's iterations ``T`` (30 in the paper).
      lido_checkpoints: earlier steps also reported (``LiDO T=5`` ...), each < ``steps``.
      iterations: GBO / Simplex iterations per LV set; None: the paper's (50 / 100).
      trace_points: baseline evaluations scored for Fig. 5.
      blender: render LiDO-R with Blender (else LiDO-R is left out).
      blender_samples: Cycles samples per pixel of LiDO-R.
    """

    steps: int = 30
    lido_checkpoints: tuple[int, ...] = (5, 10)
    iterations: int | None = None
    trace_points: int = 12
    blender: bool = True
    blender_samples: int = 16

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        bad = [t for t in self.lido_checkpoints if not 0 < t < self.steps]
        if bad:
            raise ValueError(f"lido_checkpoints {bad} must lie in 1..steps-1 = 1..{self.steps - 1}")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations={self.iterations} must be >= 1")
        if self.trace_points < 2:
            raise ValueError(f"trace_points={self.trace_points} must be >= 2")
        object.__setattr__(self, "lido_checkpoints", tuple(int(t) for t in self.lido_checkpoints))

    def lido_names(self) -> list[str]:
        """``LiDO T=t`` for each checkpoint, then ``LiDO`` (``T = steps``)."""
        return [f"LiDO T={t}" for t in self.lido_checkpoints] + [LIDO]

    def methods(self) -> list[str]:
        """Every method with latents: INIT, GBO, Simplex and the LiDO steps."""
        return [INIT, GBO, SIMPLEX, *self.lido_names()]


# ---------------------------------------------------------------------------------------
# Measures.

def paired_image_measures(pred_image, gt_image, gt: render.Scene, match) -> dict[str, np.ndarray]:
    """Image measures (``metrics.IMAGE_MEASURES``) of a render whose object slot ``k``
    holds detection ``k``, paired with GT slot ``match[k]`` (-1: none).

    The rendered instance ids are relabelled to the paired GT slot's id before the
    IoUs, so a GT object's IoU compares it with the object fitted to it (0 when no
    detection is paired with it, or its object is hidden); the pixels of unpaired
    detections belong to no GT object and still reduce the ground IoU. MSEs are taken
    at the GT masks, whatever was rendered there.
    """
    instance = np.asarray(pred_image.instance)
    match = np.asarray(match)
    relabelled = np.where(instance >= FIRST_OBJECT, -1, instance)
    for k, j in enumerate(match):
        if j >= 0:
            relabelled[instance == FIRST_OBJECT + k] = FIRST_OBJECT + j
    gt_instance, gt_rgb = np.asarray(gt_image.instance), np.asarray(gt_image.rgb)
    rgb = np.asarray(pred_image.rgb)
    ious = metrics.object_ious(relabelled, gt_instance, gt)
    seen = np.array([np.any(gt_instance == FIRST_OBJECT + k) for k in range(ious.shape[0])])
    valid = np.asarray(gt.objects.valid, bool)
    ious = np.where(valid & seen, np.nan_to_num(ious, nan=0.0), np.nan)
    return {"object IoU": ious,
            "ground IoU": np.array([metrics.ground_iou(relabelled, gt_instance, gt)]),
            "object MSE": metrics.object_mses(rgb, gt_rgb, gt_instance, gt),
            "ground MSE": np.array([metrics.ground_mse(rgb, gt_rgb, gt_instance, gt)])}


def _mean(values) -> float:
    values = np.asarray(values, np.float64).ravel()
    values = values[~np.isnan(values)]
    return float(np.mean(values)) if values.size else math.nan


def _set_medians(errors: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: fit.finite_median(errors[k]) for k in metrics.LV_SETS}


# ---------------------------------------------------------------------------------------
# One scene.

@functools.lru_cache(maxsize=4)
def _init_fn(init_config: initialization.InitConfig):
    return jax.jit(lambda params, image: initialization.initial_scene(params, image, init_config))


@functools.lru_cache(maxsize=4)
def _pair_fn(resolution: tuple[int, int]):
    return jax.jit(lambda det, gt: init_training.pair(det, gt, resolution))


@functools.lru_cache(maxsize=4)
def _lido_fn(predictor, config: refine.RefineConfig):
    return jax.jit(lambda observed, init, votes: refine.refine(predictor, observed, init, config,
                                                               votes=votes))


@functools.lru_cache(maxsize=4)
def _predict_fn(predictor, config: refine.RefineConfig):
    return jax.jit(lambda observed, scene, votes: refine.predict_once(predictor, observed, scene,
                                                                      config, votes=votes))


def one_step_errors(predicted, start: render.Scene, votes, truth: render.Scene) -> dict:
    """Absolute errors of one prediction ``(objects (N, 7), votes (N, 9))`` made at
    ``start`` and of ``start`` itself (its objects, and its ``votes``), against the
    truth aligned to ``start``'s slots: ``{"objects": {"network", "start"}: (M, 7)``
    over the M objects valid in both, ``"globals": {"network", "start"}: (V, 9)``
    over ``start``'s valid votes}``, in ``refine.OBJECT_FIELDS`` /
    ``refine.GLOBAL_FIELDS`` units (angles along the shorter arc)."""
    pred_objects, pred_votes = (np.asarray(x) for x in predicted)
    ok = np.asarray(truth.objects.valid, bool) & np.asarray(start.objects.valid, bool)
    true_o, true_g = refine.object_vectors(truth), refine.global_vector(truth)
    err_o = lambda o: np.abs(np.asarray(refine.difference(o, true_o, refine.OBJECT_PERIODIC)))[ok]  # noqa: E731
    err_g = lambda g: np.abs(np.asarray(refine.difference(  # noqa: E731
        g, true_g, refine.GLOBAL_PERIODIC)))[np.asarray(start.objects.valid, bool)]
    return {"objects": {"network": err_o(pred_objects), "start": err_o(refine.object_vectors(start))},
            "globals": {"network": err_g(pred_votes), "start": err_g(np.asarray(votes))}}


class Comparer:
    """The networks, configs and compiled functions shared by the scenes of one run."""

    def __init__(self, pre: Pretrained, config: CompareConfig = CompareConfig()):
        self.pre, self.config = pre, config
        self.resolution = tuple(int(r) for r in pre.resolution)
        self.refine_config = dataclasses.replace(pre.refine_config, steps=config.steps)
        self.predictor = pre.predictor
        self.fit_configs = {name: baselines.FitConfig(method=m, iterations=config.iterations,
                                                      resolution=self.resolution)
                            for name, m in _BASELINES.items()}
        self.warmup_s: dict[str, float] = {}

    def initial(self, observed):
        """``(z_0, votes, detections)`` of one observed image."""
        return _init_fn(self.pre.init_config)(self.pre.init_params, observed)

    def lido(self, observed, start, votes):
        return _lido_fn(self.predictor, self.refine_config)(observed, start, votes)

    def predict_once(self, observed, start, votes):
        """The prediction network's first ``z_pred`` at ``start``."""
        return _predict_fn(self.predictor, self.refine_config)(observed, start, votes)

    def warm_up(self, observed, start, votes) -> None:
        """Compiles every method on one scene (untimed in the results)."""
        if self.warmup_s:
            return
        t0 = time.perf_counter()
        jax.block_until_ready(self.initial(observed))
        jax.block_until_ready(self.lido(observed, start, votes))
        jax.block_until_ready(self.predict_once(observed, start, votes))
        self.warmup_s[LIDO] = time.perf_counter() - t0
        for name, cfg in self.fit_configs.items():
            self.warmup_s[name] = fit.warm_up(start, observed, cfg)

    def render(self, scene: render.Scene) -> render.Image:
        return fit.render_image(scene, self.resolution, shadows=True)

    def render_blender(self, scene: render.Scene) -> render.Image:
        return render.render(jax.tree.map(np.asarray, scene), backend="blender",
                             resolution=self.resolution, samples=self.config.blender_samples)


def compare_scene(comparer: Comparer, gt: render.Scene, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Every method on one test scene.

    Args:
      comparer: the shared :class:`Comparer`.
      gt, arrays: a test scene file's content (``dataset.load_scene``); its ``rgb``
        must be at the networks' resolution.

    Returns:
      ``(record, images)``: the JSON-safe record (``detections``, ``paired``,
      ``errors`` per method and LV set, ``image`` measures per Table 2 method,
      ``wall_s``, ``evaluations``, ``trace`` for Fig. 5) and the renders (method ->
      (H, W, 3), ``observed`` first) for pictures.
    """
    config = comparer.config
    observed = np.asarray(arrays["rgb"], np.float32)
    resolution = comparer.resolution
    if observed.shape[:2] != resolution:
        raise ValueError(f"observed image is {observed.shape[:2]}, the networks were trained at "
                         f"{resolution}; write the test set at that resolution")
    if not comparer.warmup_s:
        comparer.warm_up(observed, *comparer.initial(observed)[:2])
    t0 = time.perf_counter()
    start, votes, det = jax.block_until_ready(comparer.initial(observed))
    init_s = time.perf_counter() - t0
    match = np.asarray(_pair_fn(resolution)(det, gt))
    truth = init_training.aligned_truth(start, gt, match)
    gt_image = fit.observed_image(arrays)

    scenes: dict[str, render.Scene] = {INIT: start}
    wall_s: dict[str, float] = {}
    evaluations: dict[str, int] = {}
    trace: dict[str, dict] = {}
    for name, cfg in comparer.fit_configs.items():
        t0 = time.perf_counter()
        result = baselines.fit(start, observed, cfg)
        wall_s[name] = time.perf_counter() - t0
        scenes[name] = result.scene
        evaluations[name] = int(len(result.nll))
        t = fit.error_trace(result, truth, resolution, config.trace_points)
        trace[name] = {"time_s": t["time_s"], "errors": t["errors"]}

    t0 = time.perf_counter()
    final, steps = jax.block_until_ready(comparer.lido(observed, start, votes))
    lido_s = time.perf_counter() - t0
    objects, globals_ = np.asarray(steps["objects"]), np.asarray(steps["globals"])
    at = lambda t: refine.to_scene(start, objects[t], globals_[t])  # noqa: E731
    for t, name in zip((*config.lido_checkpoints, config.steps), config.lido_names()):
        scenes[name] = at(t)
        wall_s[name] = lido_s * t / config.steps
    lido_errors = [_set_medians(metrics.lv_errors(at(t), truth, resolution))
                   for t in range(config.steps + 1)]
    trace[LIDO] = {"time_s": [lido_s * t / config.steps for t in range(config.steps + 1)],
                   "errors": {k: [e[k] for e in lido_errors] for k in metrics.LV_SETS}}

    errors = {name: metrics.lv_errors(s, truth, resolution) for name, s in scenes.items()}
    one_step = one_step_errors(comparer.predict_once(observed, start, votes), start, votes, truth)
    renders = {name: comparer.render(scenes[name]) for name in (INIT, GBO, SIMPLEX, LIDO)}
    if config.blender:
        renders[LIDO_R] = comparer.render_blender(scenes[LIDO])
    image = {name: paired_image_measures(img, gt_image, gt, match) for name, img in renders.items()}
    record = {
        "objects": int(np.count_nonzero(np.asarray(gt.objects.valid))),
        "detections": int(np.count_nonzero(np.asarray(det.valid))),
        "paired": int(np.count_nonzero(match >= 0)),
        "errors": errors, "image": image, "init_s": init_s, "wall_s": wall_s,
        "evaluations": evaluations, "trace": trace, "one_step": one_step,
    }
    pictures = {"observed": observed, **{n: np.asarray(img.rgb) for n, img in renders.items()}}
    return fit.json_safe(record), pictures


# ---------------------------------------------------------------------------------------
# Tables.

def _arrays(d: dict) -> dict[str, np.ndarray]:
    return {k: fit.as_array(v) for k, v in d.items()}


def summarise(records: Sequence[dict], config: CompareConfig = CompareConfig(),
              alpha: float = 0.05) -> dict:
    """Tables 1 and 2, seconds and the paper's targets from the scenes' records.

    Returns:
      ``scenes``, ``objects``, ``detections``, ``paired``; ``table1``: per LV set the
      median improvement over INIT in % of every method (GBO, Simplex, the LiDO
      steps) and ``significant``, the Table 1 methods (GBO, Simplex, LiDO at ``T``)
      better than both others by the one-sided Wilcoxon test; ``table2``: per
      method the mean of each image measure over GT objects or scenes (a missed
      object's IoU is 0, which would make most medians 0 here); ``seconds``:
      median wall time per scene per method (``init`` for the initialisation);
      ``targets``: the checks of the paper's result.
    """
    if not records:
        raise ValueError("no scene records to summarise")
    names = [GBO, SIMPLEX, *config.lido_names()]
    init = [_arrays(r["errors"][INIT]) for r in records]
    fits = {m: [_arrays(r["errors"][m]) for r in records] for m in names}
    stars = {row.lv_set: row.significant for row in metrics.improvement_table(
        init, {m: fits[m] for m in TABLE1_METHODS}, alpha=alpha)}
    rows = metrics.improvement_table(init, fits, alpha=alpha)
    table1 = [{"lv_set": row.lv_set, "improvement": row.improvement,
               "significant": list(stars[row.lv_set]), "count": row.count} for row in rows]
    image_methods = [m for m in TABLE2_METHODS if all(m in r["image"] for r in records)]
    table2 = {m: {k: _mean(np.concatenate([fit.as_array(r["image"][m][k]) for r in records]))
                  for k in metrics.IMAGE_MEASURES} for m in image_methods}
    seconds = {m: float(np.median([r["wall_s"][m] for r in records])) for m in names}
    seconds["init"] = float(np.median([r["init_s"] for r in records]))
    lido_stars = sum(LIDO in row["significant"] for row in table1)
    better_iou = {k: all(table2[LIDO][k] > table2[m][k] for m in (GBO, SIMPLEX))
                  for k in ("object IoU", "ground IoU")}
    ratio = seconds[LIDO] / seconds[SIMPLEX]
    one_step = {}
    for part, fields in (("objects", refine.OBJECT_FIELDS), ("globals", refine.GLOBAL_FIELDS)):
        for who in ("network", "start"):
            rows = [np.reshape(fit.as_array(np.ravel(r["one_step"][part][who]).tolist()),
                               (-1, len(fields))) for r in records]
            pooled = np.concatenate(rows)
            for i, f in enumerate(fields):
                one_step.setdefault(f, {})[who] = fit.finite_median(pooled[:, i])
    targets = {
        "lv_sets_lido_significant": lido_stars,
        "lv_sets_lido_significant_met": lido_stars >= 6,
        "lido_better_iou": better_iou,
        "lido_better_iou_met": all(better_iou.values()),
        "lido_over_simplex_time": ratio,
        "lido_time_met": ratio <= 0.1,
    }
    return fit.json_safe({
        "scenes": len(records),
        "objects": sum(r["objects"] for r in records),
        "detections": sum(r["detections"] for r in records),
        "paired": sum(r["paired"] for r in records),
        "table1": table1, "table2": table2, "one_step": one_step, "seconds": seconds,
        "targets": targets})


def markdown(summary: dict) -> str:
    """Table 1, Table 2 and the seconds per scene as Markdown."""
    def cell(x, spec):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

    names = list(summary["table1"][0]["improvement"]) if summary["table1"] else []
    lines = [f"{summary['scenes']} test scenes, {summary['objects']} objects, "
             f"{summary['detections']} detections, {summary['paired']} paired with an object.", "",
             "Table 1: median improvement over INIT in %; * = better than each other method "
             f"of {', '.join(TABLE1_METHODS)} (one-sided Wilcoxon, p < 0.05).", "",
             "| LV set | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in summary["table1"]:
        cells = [cell(row["improvement"][m], ".1f") + ("*" if m in row["significant"] else "")
                 for m in names]
        lines.append(f"| {row['lv_set']} (n={row['count']}) | " + " | ".join(cells) + " |")
    methods = list(summary["table2"])
    lines += ["", "Table 2: means over GT objects (a missed object has IoU 0) or scenes; IoU in %, "
              "MSE x 10^3.", "",
              "| measure | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for k in metrics.IMAGE_MEASURES:
        scale = 1e3 if "MSE" in k else 100.0
        lines.append(f"| {k} | " + " | ".join(
            cell(None if summary["table2"][m][k] is None else summary["table2"][m][k] * scale, ".1f")
            for m in methods) + " |")
    seconds = summary["seconds"]
    lines += ["", "| seconds per scene (median) | init | " + " | ".join(names) + " |",
              "|---|---:|" + "---:|" * len(names),
              "| | " + " | ".join(cell(seconds[m], ".3g") for m in ["init", *names]) + " |"]
    one = summary["one_step"]
    lines += ["", "One prediction of the network at INIT vs INIT itself: median absolute error per "
              "latent (m, rad, RGB; globals per object vote).", "",
              "| | " + " | ".join(one) + " |", "|---|" + "---:|" * len(one),
              "| network | " + " | ".join(cell(v["network"], ".3g") for v in one.values()) + " |",
              "| INIT | " + " | ".join(cell(v["start"], ".3g") for v in one.values()) + " |"]
    t = summary["targets"]
    lines += ["", "Paper's targets: LiDO significantly better on "
              f"{t['lv_sets_lido_significant']}/7 LV sets (target >= 6: "
              f"{'met' if t['lv_sets_lido_significant_met'] else 'not met'}); better object and "
              f"ground IoU: {'met' if t['lido_better_iou_met'] else 'not met'}; LiDO / Simplex "
              f"time {t['lido_over_simplex_time']:.3f} (target <= 0.1: "
              f"{'met' if t['lido_time_met'] else 'not met'})."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Figures.

def error_curves(records: Sequence[dict], points: int = 200) -> dict:
    """Fig. 5: per method (GBO, Simplex, LiDO) and LV set, the median over scenes of
    the scene's error on a common log-spaced time grid (the error of the last traced
    state at or before each time: INIT before the first)."""
    end = max(tr["time_s"][-1] for r in records for tr in r["trace"].values())
    first = min(tr["time_s"][1] for r in records for tr in r["trace"].values()
                if len(tr["time_s"]) > 1 and tr["time_s"][1] > 0)
    grid = np.geomspace(first / 2, max(end, first), points)
    init = {k: fit.finite_median([fit.finite_median(fit.as_array(r["errors"][INIT][k])) for r in records])
            for k in metrics.LV_SETS}
    curves = {}
    for m in records[0]["trace"]:
        values = {k: np.full((len(records), points), math.nan) for k in metrics.LV_SETS}
        for s, r in enumerate(records):
            tr = r["trace"][m]
            at = np.searchsorted(np.asarray(tr["time_s"]), grid, side="right") - 1
            start = _set_medians(_arrays(r["errors"][INIT]))
            for k in metrics.LV_SETS:
                errs = fit.as_array(tr["errors"][k])
                values[k][s] = np.where(at < 0, start[k], errs[np.maximum(at, 0)])
        curves[m] = {k: [fit.finite_median(col) for col in values[k].T] for k in metrics.LV_SETS}
    return fit.json_safe({"time_s": grid.tolist(), "init": init, "median": curves})


UNITS: dict[str, str] = {"object position": "px", "object colour": "RMSE norm. RGB",
                         "object size": "px", "azimuthal rotation": "degrees",
                         "illumination": "RMSE", "camera": "px",
                         "ground plane colour": "RMSE norm. RGB"}


def plot_errors(curves: dict, path: str | os.PathLike, title: str = "", *,
                labels: dict[str, str] | None = None, log_time: bool = True) -> None:
    """Fig. 5: median error of each LV set against seconds, one line per method of
    ``curves`` (:func:`error_curves`' layout; ``labels`` renames methods), INIT dashed;
    ``log_time`` for a log time axis (the grid must then start above 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(curves["time_s"])
    fig, axes = plt.subplots(2, 4, figsize=(13, 6))
    for i, k in enumerate(metrics.LV_SETS):
        ax = axes.flat[i]
        for j, (m, median) in enumerate(curves["median"].items()):
            ax.plot(t, fit.as_array(median[k]), drawstyle="steps-post", color=f"C{j}",
                    label=(labels or {}).get(m, m))
        if curves["init"][k] is not None:
            ax.axhline(curves["init"][k], color="k", linestyle="--", linewidth=1, label=INIT)
        if log_time:
            ax.set_xscale("log")
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"median error ({UNITS[k]})", fontsize=8)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    axes[1, 3].legend(handles, labels, loc="center")
    axes[1, 3].set_axis_off()
    fig.suptitle(title or "Median error vs wall time (top: object LVs, bottom: global LVs)",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scene_png(pictures: dict[str, np.ndarray], gt_instance, valid) -> bytes:
    """One row: observed | INIT | GBO | Simplex | LiDO | LiDO-R, GT contours drawn."""
    images = {k: v for k, v in pictures.items() if k != "observed"}
    return fit.comparison_png(pictures["observed"], gt_instance, valid, images)


def contact_sheet(pngs: Sequence[str | os.PathLike], path: str | os.PathLike) -> None:
    """Stacks per-scene rows (:func:`scene_png` files) into one PNG."""
    import matplotlib.image

    rows = [matplotlib.image.imread(p) for p in pngs]
    if not rows:
        raise ValueError("no scene pictures to stack")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.concatenate(rows, 0), format="png")
    dataset.atomic_write(Path(path), buffer.getvalue())


# ---------------------------------------------------------------------------------------
# A test set.

def record_path(out: str | os.PathLike, index: int) -> Path:
    return Path(out) / f"scene_{index:06d}.json"


def run(data: str | os.PathLike, out: str | os.PathLike, pre: Pretrained,
        config: CompareConfig = CompareConfig(), *, limit: int | None = None,
        max_minutes: float | None = None, progress: bool | None = None) -> dict:
    """Compares every method on the scenes of ``data``; writes ``out/scene_N.json`` and
    ``.png`` per scene (existing records are reused when ``out/compare_settings.json``
    matches; other settings are refused).

    Args:
      data: a test-set folder (``dataset.write_dataset``) at ``pre.resolution``.
      out: output folder.
      pre: the networks (``pretrained.load()``).
      config: :class:`CompareConfig`.
      limit: the first ``limit`` scenes only.
      max_minutes: no new scene starts once the time spent plus the mean time per
        scene so far would pass it.
      progress: a tqdm bar (None: on terminals).

    Returns:
      :func:`summarise` plus ``records`` (per scene, with ``index``), ``warmup_s``,
      ``not_started`` and ``wall_s``.
    """
    from tqdm.auto import tqdm

    files = fit.scene_files(data)[:limit]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": str(Path(data).resolve()), "config": dataclasses.asdict(config),
                "networks": pre.meta.get("lido", {}).get("result", {}).get("steps")}
    settings = json.loads(json.dumps(settings))
    path = out / SETTINGS
    if path.exists() and json.loads(path.read_text()) != settings:
        raise ValueError(f"{out} holds a comparison made with other settings ({path}); use another "
                         "folder or the same settings")
    dataset.atomic_write(path, (json.dumps(settings, indent=2) + "\n").encode())
    comparer = Comparer(pre, config)
    start = time.perf_counter()
    records, per_scene, not_started = [], [], []
    bar = tqdm(files, desc="lido compare", unit="scene",
               disable=(None if progress is None else not progress))
    for position, file in enumerate(bar):
        elapsed = time.perf_counter() - start
        if max_minutes is not None and per_scene and elapsed + np.mean(per_scene) > 60 * max_minutes:
            not_started = [fit.scene_index(p) for p in files[position:]]
            break
        t0 = time.perf_counter()
        gt, arrays = dataset.load_scene(file)
        index = fit.scene_index(file, arrays)
        rec_path = record_path(out, index)
        if rec_path.exists():
            records.append(json.loads(rec_path.read_text()))
            continue
        warm = comparer.warmup_s.copy()
        record, pictures = compare_scene(comparer, gt, arrays)
        record = {"index": index, **record}
        dataset.atomic_write(rec_path.with_suffix(".png"),
                             scene_png(pictures, arrays["instance"], gt.objects.valid))
        dataset.atomic_write(rec_path, (json.dumps(record) + "\n").encode())
        records.append(record)
        warmed = sum(comparer.warmup_s.values()) - sum(warm.values())
        per_scene.append(time.perf_counter() - t0 - warmed)
        bar.set_postfix_str(f"LiDO {record['wall_s'][LIDO]:.2f} s, Simplex "
                            f"{record['wall_s'][SIMPLEX]:.1f} s")
    bar.close()
    summary = summarise(records, config)
    return {**summary, "records": records, "warmup_s": comparer.warmup_s,
            "not_started": not_started, "wall_s": time.perf_counter() - start}


def run_testset(folder: str | os.PathLike, pre: Pretrained, config: CompareConfig = CompareConfig(),
                *, scenes: int = 4, seed: int = 1, max_minutes: float | None = None,
                resume: bool = False, contact_rows: int = 4, contact: str | os.PathLike | None = None,
                progress: bool | None = None) -> dict:
    """Writes (or reuses) a held-out test set and compares every method on it.

    Args:
      folder: the test set goes to ``folder/testset_<px>px_seed<seed>/`` (kept and
        reused), the per-scene records and pictures to ``folder/scenes/`` (cleared
        first unless ``resume``).
      pre: the networks; the test set is written at their resolution with textures,
        shadows and backgrounds (``dataset.Settings`` defaults).
      config: :class:`CompareConfig`.
      scenes, seed: the test set (seed 0 is the committed networks' training set).
      max_minutes: budget of the run, the test set included.
      resume, contact_rows: see above; the first ``contact_rows`` scenes go in the
        contact sheet ``contact`` (default ``folder/contact_sheet.png``).
      progress: tqdm bars (None: on terminals).

    Returns:
      :func:`run`'s result plus ``curves`` (:func:`error_curves`), ``testset``,
      ``testset_s`` and ``contact_sheet``.
    """
    if scenes < 1:
        raise ValueError(f"scenes={scenes} must be >= 1")
    start = time.perf_counter()
    folder = Path(folder)
    data = folder / f"testset_{pre.resolution[0]}px_seed{seed}"
    dataset.write_dataset(data, scenes, dataset.Settings(seed=seed, resolution=pre.resolution),
                          progress=progress)
    testset_s = time.perf_counter() - start
    out = folder / "scenes"
    if out.exists() and not resume:
        shutil.rmtree(out)
    result = run(data, out, pre, config, limit=scenes, progress=progress,
                 max_minutes=None if max_minutes is None else max_minutes - testset_s / 60)
    sheet = Path(contact) if contact is not None else folder / "contact_sheet.png"
    contact_sheet([record_path(out, r["index"]).with_suffix(".png")
                   for r in result["records"][:contact_rows]], sheet)
    return {**result, "curves": error_curves(result["records"]), "testset": str(data),
            "testset_s": testset_s, "contact_sheet": str(sheet)}
