"""The evaluation of LiDO sec. 4.4: errors of the seven LV sets, image-space IoU and
MSE, and Table 1's median improvement with the Wilcoxon signed-rank test.

Objects are matched **by slot**: slot ``k`` of the predicted scene is compared with
slot ``k`` of the ground-truth (GT) scene. Per-object errors are ``(N,)`` arrays with
NaN where the GT slot is not valid, and also where the GT object has no predicted
object in its slot (a missing object has no LV error; the ground IoU counts it, as
the paper notes). Global errors are floats. Scenes are single (unbatched) scenes;
every function runs on the host and returns numpy values. Angles in scenes are
radians, lengths metres, pixel coordinates ``(row, col)`` at ``resolution``
``(H, W)``, as in :mod:`render.camera`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import scipy.stats

import render
from render import camera as camera_lib
from render import spec
from render.jax_renderer import FIRST_OBJECT, GROUND

LV_SETS: tuple[str, ...] = ("object position", "object colour", "object size",
                            "azimuthal rotation", "illumination", "camera",
                            "ground plane colour")
"""The seven LV sets of LiDO Table 1, in its order: four object sets, three global."""

OBJECT_LV_SETS: tuple[str, ...] = LV_SETS[:4]
"""LV sets with one error per object; the others have one per scene."""

IMAGE_MEASURES: tuple[str, ...] = ("object IoU", "ground IoU", "object MSE", "ground MSE")
"""Image-space measures of LiDO Tables 2-3, added by :func:`evaluate` given images."""

SPHERE_POINTS: int = 313
"""Points on the sphere at which lighting is compared (sec. 4.4)."""


# ---------------------------------------------------------------------------------------
# Helpers.

def _camera(x):
    """The camera of a scene, or the camera itself."""
    return x.camera if isinstance(x, render.Scene) else x


def _light(x):
    """The light of a scene, or the light itself."""
    return x.light if isinstance(x, render.Scene) else x


def _matched(pred: render.Scene, gt: render.Scene) -> np.ndarray:
    """(N,) bool: slots valid in both scenes; ValueError if slot counts differ."""
    gt_valid = np.asarray(gt.objects.valid, bool)
    pred_valid = np.asarray(pred.objects.valid, bool)
    if gt_valid.shape != pred_valid.shape or gt_valid.ndim != 1:
        raise ValueError(f"pred and gt must be single scenes with the same object slots, got "
                         f"valid of shapes {pred_valid.shape} and {gt_valid.shape}")
    return gt_valid & pred_valid


def _masked(values, valid) -> np.ndarray:
    return np.where(valid, np.asarray(values, np.float64), np.nan)


def _contact_points(scene: render.Scene) -> np.ndarray:
    """(N, 3) world contact points (x, 0, z) of every slot."""
    pos = np.asarray(scene.objects.position, np.float64)
    return np.stack([pos[:, 0], np.zeros(len(pos)), pos[:, 1]], -1)


def _project(camera, points, resolution) -> np.ndarray:
    return np.asarray(camera_lib.project(camera, points, tuple(resolution)), np.float64)


def _depth(camera, points) -> np.ndarray:
    return np.asarray(camera_lib.to_camera(camera, points), np.float64)[..., 2]


# ---------------------------------------------------------------------------------------
# Object LVs.

def object_position_error(pred: render.Scene, gt: render.Scene, resolution) -> np.ndarray:
    """Distance in pixels between projected contact points, per object slot.

    "Object position error is a distance between object contact points in the
    image." Each scene's contact point ``(x, 0, z)`` is projected with that scene's
    own camera (:func:`render.camera.project`), so a wrong camera moves objects too.

    Returns:
      (N,) pixels; NaN for slots not valid in both scenes.
    """
    valid = _matched(pred, gt)
    d = (_project(pred.camera, _contact_points(pred), resolution)
         - _project(gt.camera, _contact_points(gt), resolution))
    return _masked(np.linalg.norm(d, axis=-1), valid)


def projected_size(scene: render.Scene, resolution) -> np.ndarray:
    """(N,) pixels: ``scale * focal_pixels / depth`` of each slot's contact point.

    Our reading of "the size of the projected object in the image frame": the image
    length of the object's characteristic size (``Objects.scale``, metres) held
    parallel to the image plane at the camera-space depth of its contact point.
    It is independent of the object's shape and azimuth, so it isolates the size LV
    (and the depth the position LV implies).
    """
    depth = _depth(scene.camera, _contact_points(scene))
    f = camera_lib.focal_pixels(tuple(resolution))
    return np.asarray(scene.objects.scale, np.float64) * f / depth


def object_size_error(pred: render.Scene, gt: render.Scene, resolution) -> np.ndarray:
    """``|projected size pred - projected size GT|`` in pixels, per object slot.

    "Object size is the size of the projected object in the image frame, the error
    is the size difference." The projected size is :func:`projected_size`.

    Returns:
      (N,) pixels; NaN for slots not valid in both scenes.
    """
    valid = _matched(pred, gt)
    return _masked(np.abs(projected_size(pred, resolution) - projected_size(gt, resolution)), valid)


def angle_difference(a, b) -> np.ndarray:
    """Absolute difference of angles in radians with wrap-around, in degrees [0, 180]."""
    d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64), 2 * math.pi)
    return np.degrees(np.minimum(d, 2 * math.pi - d))


def azimuth_error(pred: render.Scene, gt: render.Scene) -> np.ndarray:
    """Azimuthal rotation error in degrees, per object slot.

    "For azimuthal rotation we measure the absolute angular difference between the
    prediction and ground truth, but with wrap-around, so the maximum error is 180°."
    No symmetry of the shapes is taken into account (a mug's handle breaks it).

    Returns:
      (N,) degrees in [0, 180]; NaN for slots not valid in both scenes.
    """
    valid = _matched(pred, gt)
    return _masked(angle_difference(pred.objects.azimuth, gt.objects.azimuth), valid)


def normalized_rgb(rgb) -> np.ndarray:
    """``(R, G, B) / (R + G + B)`` over the last axis (LiDO footnote 5).

    Black (sum 0) has no chromaticity; we map it to grey ``(1/3, 1/3, 1/3)``, the
    limit of any grey going dark, so the function is safe everywhere.

    Args:
      rgb: (..., 3) non-negative colours.
    """
    rgb = np.asarray(rgb, np.float64)
    total = np.sum(rgb, -1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, rgb / safe, 1.0 / 3.0)


def colour_error(pred_rgb, gt_rgb) -> np.ndarray:
    """RMSE of the three normalised RGB components (sec. 4.4, footnote 5).

    "The error metric of the object colour (albedo) is the RMSE of normalized RGB
    components": ``sqrt(mean_c (n_pred[c] - n_gt[c])**2)`` with ``n`` from
    :func:`normalized_rgb`. Brightness does not count (it trades off against the
    light's strength).

    Args:
      pred_rgb, gt_rgb: (..., 3) albedos.

    Returns:
      (...) errors, dimensionless.
    """
    d = normalized_rgb(pred_rgb) - normalized_rgb(gt_rgb)
    return np.sqrt(np.mean(np.square(d), -1))


def object_colour_error(pred: render.Scene, gt: render.Scene) -> np.ndarray:
    """(N,) :func:`colour_error` of each object's albedo; NaN for slots not valid in both."""
    valid = _matched(pred, gt)
    return _masked(colour_error(pred.objects.rgb, gt.objects.rgb), valid)


def ground_colour_error(pred: render.Scene, gt: render.Scene) -> float:
    """:func:`colour_error` of the ground albedo: "evaluated as for object colour"."""
    return float(colour_error(pred.ground_rgb, gt.ground_rgb))


# ---------------------------------------------------------------------------------------
# Global LVs.

def sphere_points(n: int = SPHERE_POINTS) -> np.ndarray:
    """(n, 3) unit vectors spread uniformly over the sphere: a Fibonacci lattice.

    Point ``i`` has height ``y = 1 - (2 i + 1) / n`` (equal-area bands, y is up) and
    longitude ``i`` times the golden angle. Deterministic.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    i = np.arange(n, dtype=np.float64)
    y = 1.0 - (2.0 * i + 1.0) / n
    r = np.sqrt(1.0 - y * y)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.sin(phi), y, r * np.cos(phi)], -1)


def light_direction(light) -> np.ndarray:
    """(3,) unit vector towards the light (``render.spec`` convention)."""
    az = float(light.azimuth)
    el = float(light.elevation)
    return np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def sphere_shading(light, points: np.ndarray | None = None) -> np.ndarray:
    """Lambertian shading of a white unit sphere at ``points``: the light projected
    onto the sphere, ``ambient + strength * max(n . l, 0)`` (the renderers' model).

    Args:
      light: a ``render.Light`` (or a scene).
      points: (P, 3) unit normals; :func:`sphere_points` by default.

    Returns:
      (P,) shading.
    """
    light = _light(light)
    points = sphere_points() if points is None else np.asarray(points, np.float64)
    cos = points @ light_direction(light)
    return float(light.ambient) + float(light.strength) * np.maximum(cos, 0.0)


def lighting_error(pred, gt) -> float:
    """Illumination error: RMSE of normalised shading of a sphere at 313 points.

    "The lighting is projected onto a sphere and evaluated at 313 points
    uniformly-distributed on the sphere, then normalized; the error is RMSE."
    Our choice of normalisation: each shading vector (:func:`sphere_shading` at
    :func:`sphere_points`) is divided by its mean, so overall brightness, which
    trades off against albedo, does not count; scaling ambient and directional
    strength by one factor leaves the error unchanged. A light that is dark
    everywhere (mean 0) normalises to ones (uniform).

    Args:
      pred, gt: scenes (or ``render.Light``).

    Returns:
      dimensionless error; 0 for identical lights.
    """
    def normalise(s):
        m = np.mean(s)
        return s / m if m > 0 else np.ones_like(s)

    d = normalise(sphere_shading(pred)) - normalise(sphere_shading(gt))
    return float(np.sqrt(np.mean(np.square(d))))


CHECKER_CORNERS: int = 9
CHECKER_SQUARE: float = 0.1
CHECKER_NEAR: float = 0.5
CHECKER_FAR: float = float(spec.FIELDS["objects.position"].high[1])


def checkerboard(camera_or_scene, corners: int = CHECKER_CORNERS,
                 square: float = CHECKER_SQUARE) -> np.ndarray:
    """Corner points of a virtual checkerboard lying on the ground plane.

    A ``corners x corners`` grid of points, ``square`` metres apart (default 9 x 9
    corners of 10 cm squares, 80 cm across), aligned with the world axes and
    centred at ``(0, 0, z_c)``, where the camera's optical axis meets the ground:
    ``z_c = height / tan(elevation)``, clipped to ``[CHECKER_NEAR, CHECKER_FAR]`` =
    [0.5 m, 4 m]. The far clip (the far end of the objects' range) also serves a
    camera looking at the horizon and keeps the board continuous in the
    elevation; the near clip keeps every corner at least 10 cm ahead of the
    camera's foot, so none lies near the camera plane.

    Args:
      camera_or_scene: the (GT) ``render.Camera``, or a scene.

    Returns:
      (corners * corners, 3) world points (x, 0, z), metres.
    """
    cam = _camera(camera_or_scene)
    height, elevation = float(cam.height), float(cam.elevation)
    tan = math.tan(elevation)
    z_c = CHECKER_FAR if tan <= 0 else min(max(height / tan, CHECKER_NEAR), CHECKER_FAR)
    offsets = (np.arange(corners, dtype=np.float64) - (corners - 1) / 2) * square
    x, z = np.meshgrid(offsets, z_c + offsets, indexing="xy")
    return np.stack([x.ravel(), np.zeros(x.size), z.ravel()], -1)


def camera_error(pred, gt, resolution) -> float:
    """Camera error: RMSE in pixels of a virtual checkerboard's projected corners.

    "We place a (virtual) checkerboard in the scene, and compute the RMSE of the
    errors between the GT and predicted positions of the grid points in the image."
    The board is :func:`checkerboard` of the GT camera; each corner's error is the
    Euclidean distance between its projections by the predicted and GT cameras;
    only corners in front of both cameras count (all of them for cameras in range).

    Args:
      pred, gt: scenes (or ``render.Camera``).
      resolution: (H, W) pixels.

    Returns:
      pixels; NaN if no corner is in front of both cameras.
    """
    points = checkerboard(gt)
    d = np.linalg.norm(_project(_camera(pred), points, resolution)
                       - _project(_camera(gt), points, resolution), axis=-1)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(np.square(d)))) if d.size else math.nan


def lv_errors(pred: render.Scene, gt: render.Scene, resolution) -> dict[str, np.ndarray]:
    """Errors of the seven LV sets of Table 1 (:data:`LV_SETS`).

    Returns:
      name -> (N,) per object slot (NaN where not valid in both) for the object LV
      sets, (1,) for the global ones. Units: pixels (position, size, camera),
      degrees (azimuth), dimensionless (colours, illumination).
    """
    return {
        "object position": object_position_error(pred, gt, resolution),
        "object colour": object_colour_error(pred, gt),
        "object size": object_size_error(pred, gt, resolution),
        "azimuthal rotation": azimuth_error(pred, gt),
        "illumination": np.array([lighting_error(pred, gt)]),
        "camera": np.array([camera_error(pred, gt, resolution)]),
        "ground plane colour": np.array([ground_colour_error(pred, gt)]),
    }


# ---------------------------------------------------------------------------------------
# Image space.

def mask_iou(pred_instance, gt_instance, instance_id: int) -> float:
    """Intersection over union of the pixels labelled ``instance_id`` in two images.

    Args:
      pred_instance, gt_instance: (H, W) instance ids (``render.Image.instance``).

    Returns:
      IoU in [0, 1]; NaN when neither image has the label (nothing to compare).
    """
    return _iou(np.asarray(pred_instance) == instance_id, np.asarray(gt_instance) == instance_id)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else math.nan


def object_ious(pred_instance, gt_instance, gt_scene: render.Scene) -> np.ndarray:
    """(N,) :func:`mask_iou` of each object slot ``k`` (instance id ``2 + k``).

    NaN for slots not valid in the GT scene, and for GT objects drawn in neither
    image (e.g. fully occluded).
    """
    valid = np.asarray(gt_scene.objects.valid, bool)
    return np.array([mask_iou(pred_instance, gt_instance, FIRST_OBJECT + k) if v else math.nan
                     for k, v in enumerate(valid)], np.float64)


def ground_cut_row(gt_scene: render.Scene, resolution) -> float:
    """Image row of the contact point of the farthest valid GT object.

    The farthest object is the one of largest camera-space depth; on the ground
    plane that is also the highest contact point in the image. ``-inf`` (no cut)
    when the scene has no valid object.
    """
    valid = np.asarray(gt_scene.objects.valid, bool)
    if not np.any(valid):
        return -math.inf
    points = _contact_points(gt_scene)[valid]
    far = points[np.argmax(_depth(gt_scene.camera, points))]
    return float(_project(gt_scene.camera, far, resolution)[0])


def ground_mask(instance, gt_scene: render.Scene, resolution=None) -> np.ndarray:
    """Ground pixels below the horizontal line through the farthest GT contact point.

    "The GT mask is defined as the ground plane up to a horizontal line located at
    the contact point of the farthest GT object" (sec. 4, Test Datasets). A pixel is
    kept when it is labelled ground and its centre row is at or below the line
    (``row >= ground_cut_row``). The cut always comes from the GT scene, so
    applying this to a predicted image cuts it at the same line. Without valid GT
    objects nothing is cut.

    Args:
      instance: (H, W) instance ids.
      gt_scene: the GT scene.
      resolution: (H, W); defaults to ``instance.shape`` and must equal it.

    Returns:
      (H, W) bool.
    """
    instance = np.asarray(instance)
    if resolution is None:
        resolution = instance.shape
    if tuple(resolution) != instance.shape:
        raise ValueError(f"resolution {tuple(resolution)} != instance shape {instance.shape}")
    rows = np.arange(instance.shape[0])[:, None]
    return (instance == GROUND) & (rows >= ground_cut_row(gt_scene, resolution))


def ground_iou(pred_instance, gt_instance, gt_scene: render.Scene, resolution=None) -> float:
    """IoU of the predicted and GT ground masks, both cut by :func:`ground_mask`.

    "IoU of the ground plane assesses differences in the present, missing and
    superfluous objects." NaN when both masks are empty.
    """
    return _iou(ground_mask(pred_instance, gt_scene, resolution),
                ground_mask(gt_instance, gt_scene, resolution))


def masked_mse(pred_rgb, gt_rgb, mask) -> float:
    """Mean squared error of pixel intensities inside a (GT) mask.

    "MSE of pixel intensities calculated at the GT mask": the mean over the masked
    pixels and over colour channels of ``(pred - gt)**2``, intensities in [0, 1]
    (the paper's Tables 2-3 print it times 10^3).

    Args:
      pred_rgb, gt_rgb: (H, W, C) or (H, W) images.
      mask: (H, W) bool.

    Returns:
      the MSE; NaN for an empty mask.
    """
    pred_rgb = np.asarray(pred_rgb, np.float64)
    gt_rgb = np.asarray(gt_rgb, np.float64)
    mask = np.asarray(mask, bool)
    if pred_rgb.shape != gt_rgb.shape or pred_rgb.shape[:2] != mask.shape:
        raise ValueError(f"shapes differ: pred {pred_rgb.shape}, gt {gt_rgb.shape}, mask {mask.shape}")
    if not np.any(mask):
        return math.nan
    return float(np.mean(np.square(pred_rgb[mask] - gt_rgb[mask])))


def object_mses(pred_rgb, gt_rgb, gt_instance, gt_scene: render.Scene) -> np.ndarray:
    """(N,) :func:`masked_mse` at each GT object's mask; NaN for invalid or unseen slots."""
    gt_instance = np.asarray(gt_instance)
    valid = np.asarray(gt_scene.objects.valid, bool)
    return np.array([masked_mse(pred_rgb, gt_rgb, gt_instance == FIRST_OBJECT + k) if v else math.nan
                     for k, v in enumerate(valid)], np.float64)


def ground_mse(pred_rgb, gt_rgb, gt_instance, gt_scene: render.Scene, resolution=None) -> float:
    """:func:`masked_mse` at the GT ground mask (:func:`ground_mask` of the GT image)."""
    return masked_mse(pred_rgb, gt_rgb, ground_mask(gt_instance, gt_scene, resolution))


def evaluate(pred: render.Scene, gt: render.Scene, resolution, pred_image=None,
             gt_image=None) -> dict[str, np.ndarray]:
    """Every measure of sec. 4.4 for one scene.

    Args:
      pred, gt: predicted and GT scenes with the same object slots.
      resolution: (H, W) at which LV errors are measured in pixels.
      pred_image, gt_image: optional images (``render.Image`` or anything with
        ``.rgb`` and ``.instance``), both or neither; image measures use their own
        resolution.

    Returns:
      :func:`lv_errors`, plus with images the :data:`IMAGE_MEASURES`: ``"object
      IoU"`` and ``"object MSE"`` (N,), ``"ground IoU"`` and ``"ground MSE"`` (1,).
    """
    out = lv_errors(pred, gt, resolution)
    if (pred_image is None) != (gt_image is None):
        raise ValueError("give both pred_image and gt_image, or neither")
    if gt_image is None:
        return out
    pred_instance, gt_instance = np.asarray(pred_image.instance), np.asarray(gt_image.instance)
    pred_rgb, gt_rgb = np.asarray(pred_image.rgb), np.asarray(gt_image.rgb)
    out["object IoU"] = object_ious(pred_instance, gt_instance, gt)
    out["ground IoU"] = np.array([ground_iou(pred_instance, gt_instance, gt)])
    out["object MSE"] = object_mses(pred_rgb, gt_rgb, gt_instance, gt)
    out["ground MSE"] = np.array([ground_mse(pred_rgb, gt_rgb, gt_instance, gt)])
    return out


# ---------------------------------------------------------------------------------------
# Table 1: median improvement and the Wilcoxon signed-rank test.

def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.ravel(np.asarray(a, np.float64))
    b = np.ravel(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"paired errors need equal lengths, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def median_improvement(init_errors, fit_errors) -> float:
    """Percent by which the median error fell from initialisation to fit (Table 1).

    "Each value indicates how much (in %) the errors were lower after the
    refinement compared to the initialization": we take
    ``100 * (median(init) - median(fit)) / median(init)`` over the same objects
    (or scenes). Errors are paired; pairs with a NaN on either side are dropped.
    Negative when the fit made things worse.

    Returns:
      percent; NaN when no pair is left or the initial median is 0.
    """
    init, fit = _pairs(init_errors, fit_errors)
    if init.size == 0:
        return math.nan
    m0 = float(np.median(init))
    return 100.0 * (m0 - float(np.median(fit))) / m0 if m0 != 0 else math.nan


def wilcoxon_better(errors_a, errors_b, alpha: float = 0.05) -> tuple[bool, float]:
    """Whether method a has significantly lower errors than method b.

    "A paired test on the errors derived from each image (for global LVs) or object
    (for object LVs), using the Wilcoxon signed-rank test, at the significance level
    0.05": one-sided ``scipy.stats.wilcoxon(a, b, alternative="less")``. Pairs with
    a NaN are dropped; zero differences are dropped by scipy's default.

    Returns:
      ``(p < alpha, p)``; ``(False, 1.0)`` when no pair differs.
    """
    a, b = _pairs(errors_a, errors_b)
    if not np.any(a != b):
        return False, 1.0
    p = float(scipy.stats.wilcoxon(a, b, alternative="less").pvalue)
    return bool(p < alpha), p


class TableRow(NamedTuple):
    """One row of Table 1.

    Attributes:
      lv_set: name from :data:`LV_SETS`.
      improvement: method -> median improvement in percent.
      significant: methods significantly better than every other method.
      count: number of errors (objects or scenes) with a finite initial error.
    """

    lv_set: str
    improvement: dict[str, float]
    significant: tuple[str, ...]
    count: int


def improvement_table(init_errors: Sequence[dict], fit_errors: dict[str, Sequence[dict]], *,
                      keys: Sequence[str] = LV_SETS, alpha: float = 0.05) -> list[TableRow]:
    """Table 1: per LV set, each method's median improvement over the initialisation
    and which methods are significantly better than all the others.

    Args:
      init_errors: one dict per test scene, from :func:`lv_errors` (or
        :func:`evaluate`) of the initial scene against the GT.
      fit_errors: method name -> one dict per test scene, in the same order, of the
        scene after that method's refinement.
      keys: the measures to tabulate (lower is better for each).
      alpha: significance level of :func:`wilcoxon_better`.

    Errors are pooled over scenes (objects for object LVs, images for global ones).
    A method gets a star when it beats each other method by the one-sided Wilcoxon
    test, as the paper compares LiDO "with each of them separately"; with a single
    method nobody gets a star.
    """
    methods = list(fit_errors)
    if not methods:
        raise ValueError("fit_errors names no method")
    for m in methods:
        if len(fit_errors[m]) != len(init_errors):
            raise ValueError(f"method {m!r} has {len(fit_errors[m])} scenes, "
                             f"the initialisation {len(init_errors)}")

    def pooled(dicts, key):
        return np.concatenate([np.ravel(np.asarray(d[key], np.float64)) for d in dicts]) \
            if len(dicts) else np.zeros(0)

    rows = []
    for key in keys:
        init = pooled(init_errors, key)
        fits = {m: pooled(fit_errors[m], key) for m in methods}
        improvement = {m: median_improvement(init, fits[m]) for m in methods}
        significant = tuple(
            m for m in methods if len(methods) > 1
            and all(wilcoxon_better(fits[m], fits[o], alpha)[0] for o in methods if o != m))
        rows.append(TableRow(key, improvement, significant, int(np.count_nonzero(np.isfinite(init)))))
    return rows


def markdown_table(rows: Sequence[TableRow]) -> str:
    """Table 1 as Markdown: one row per LV set, one column per method, improvement
    in percent to one decimal, ``*`` marking a significantly better method."""
    if not rows:
        return ""
    methods = list(rows[0].improvement)
    lines = ["| LV name | " + " | ".join(methods) + " |",
             "|---|" + "---:|" * len(methods)]
    for row in rows:
        cells = [f"{row.improvement[m]:.1f}" + ("*" if m in row.significant else "")
                 for m in methods]
        lines.append(f"| {row.lv_set[:1].upper() + row.lv_set[1:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
