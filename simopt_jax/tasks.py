"""Task networks, their losses and their metrics: what a simulator is optimised for.

The outer loops train a task network on rendered data and score it on validation
data; both steps see only the pure functions of a :class:`TaskNetwork`:

- ``init(key, example_input) -> params`` and ``apply(params, x) -> outputs``;
- ``loss(params, x, targets) -> scalar``, differentiable in ``params`` (first and
  second derivatives, for unrolled and implicit hypergradients);
- ``metrics(params, x, targets) -> dict`` of scalars.

Two tasks, chosen by name from :data:`TASKS`:

- ``"segmentation"``: AutoSimulate sec. 5.1, a UNet with eight 3x3 convolutions
  scored by mean IoU; targets ``{"labels": (B, H, W) int, "valid": optional mask}``.
- ``"normals_depth"``: hybrid gradient sec. 5.1 (normals) and 5.3 (depth), one UNet
  predicting unit normals and positive depth; targets ``{"normals": (B, H, W, 3),
  "depth": (B, H, W) metres, "valid": optional mask}``, with pixels of depth 0 (the
  renderers' background) never counted.

Images are ``(B, H, W, C)`` floats. The networks have no batch normalisation, so
``params`` is the whole state and ``apply`` is a pure function of it. Losses and
metrics are jitted (``num_classes`` static), so calling them eagerly from an
evaluation loop costs one compilation per shape; where no pixel is valid the
metrics return NaN rather than raise (a traced mask cannot be inspected). Shapes,
dtypes and sizes are checked when a function is traced, with a ``ValueError``
naming the argument.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int

Params = Any
"""Flax parameters: a nested dict of arrays."""

NORMAL_EPS: float = 1e-6
"""Vectors shorter than this are scaled by ``1 / NORMAL_EPS`` instead of normalised."""

ANGLE_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)
"""Angle errors in degrees reported as "% of pixels within" (hybrid gradient Table 1)."""


# ---------------------------------------------------------------------------------------
# Checks and helpers.

def _check_shape(name: str, array: jax.Array, shape: tuple[int, ...], like: str) -> None:
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of {like}, {tuple(shape)}, "
                         f"got {array.shape}")


def _check_vectors(name: str, array: jax.Array) -> None:
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"{name} must be (..., 3) vectors, got shape {array.shape}")


def _check_integer(name: str, array: jax.Array) -> None:
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")


def _mask(valid, shape: tuple[int, ...]) -> jax.Array:
    """``valid`` as a bool array of ``shape`` (all True when None)."""
    if valid is None:
        return jnp.ones(shape, bool)
    valid = jnp.asarray(valid)
    _check_shape("valid", valid, shape, "the per-pixel targets")
    return valid.astype(bool)


def _masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of ``values`` over ``valid``; 0 when nothing is valid.

    ``values`` must be finite everywhere (also where not valid): the gradient of the
    ``where`` is zero there, but zero times a non-finite derivative is NaN.
    """
    total = jnp.sum(jnp.where(valid, values, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1)


def _nan_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of ``values`` over ``valid``; NaN when nothing is valid."""
    return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)


def unit_vectors(v: Float[Array, "*shape 3"], eps: float = NORMAL_EPS) -> Float[Array, "*shape 3"]:
    """``v / max(|v|, eps)`` along the last axis: unit length unless ``|v| < eps``.

    Finite with finite derivatives everywhere, the zero vector included.
    """
    squared = jnp.sum(v * v, axis=-1, keepdims=True)
    return v * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_features(features) -> tuple[int, ...]:
    features = tuple(features)
    if not features or not all(isinstance(f, int) and f >= 1 for f in features):
        raise ValueError(f"features must be a non-empty tuple of ints >= 1, got {features}")
    return features


# ---------------------------------------------------------------------------------------
# Networks.

def _upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour upsampling by 2 of (B, H, W, C) to (B, 2H, 2W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
    """A small UNet (Ronneberger et al. 2015), AutoSimulate sec. 5.1's segmentation network.

    Level ``i`` of the encoder has two 3x3 convolutions with ``features[i]`` channels,
    each followed by ReLU, and levels are joined by 2x2 max-pooling; the decoder
    upsamples by nearest neighbour, concatenates the encoder's output of the same
    level and applies one 3x3 convolution with ReLU; a 1x1 convolution makes the
    outputs. With ``L = len(features)`` that is ``3 L - 1`` 3x3 convolutions (eight
    for the default) and one 1x1. No normalisation layers: ``params`` is the state.

    Attributes:
      num_outputs: channels of the output (classes for segmentation).
      features: channels per level, finest first.
    """

    num_outputs: int
    features: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self):
        _check_count("num_outputs", self.num_outputs)
        _check_features(self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w k"]:
        """Logits (B, H, W, num_outputs) of images (B, H, W, C), H and W divisible by 2**(L-1)."""
        factor = 2 ** (len(self.features) - 1)
        if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"x must be (B, H, W, C) with H and W divisible by {factor}, "
                             f"got shape {x.shape}")
        skips = []
        for level, width in enumerate(self.features):
            if level:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(width, (3, 3), name=f"down{level}_0")(x))
            x = nn.relu(nn.Conv(width, (3, 3), name=f"down{level}_1")(x))
            skips.append(x)
        for level in reversed(range(len(self.features) - 1)):
            x = jnp.concatenate([_upsample(x), skips[level]], axis=-1)
            x = nn.relu(nn.Conv(self.features[level], (3, 3), name=f"up{level}")(x))
        return nn.Conv(self.num_outputs, (1, 1), name="head")(x)


class NormalDepthNet(nn.Module):
    """A UNet trunk with four outputs: unit surface normals and positive depth.

    Attributes:
      features: channels per level of the trunk, as for :class:`UNet`.
      min_depth: metres added to ``softplus`` so depth stays positive (and its log
        finite) even where ``softplus`` underflows.
    """

    features: tuple[int, ...] = (16, 32, 64)
    min_depth: float = 1e-3

    @nn.compact
    def __call__(self, x: Float[Array, "b h w c"]) -> dict[str, jax.Array]:
        """Outputs for images (B, H, W, C).

        Returns:
          ``{"normals": (B, H, W, 3) unit vectors, "depth": (B, H, W) metres}``.
        """
        raw = UNet(4, self.features, name="trunk")(x)
        return {"normals": unit_vectors(raw[..., :3]),
                "depth": jax.nn.softplus(raw[..., 3]) + self.min_depth}


# ---------------------------------------------------------------------------------------
# Losses.

@jax.jit
def segmentation_loss(logits: Float[ArrayLike, "*pixels k"], labels: Int[ArrayLike, "*pixels"],
                      valid: Bool[ArrayLike, "*pixels"] | None = None) -> Float[Array, ""]:
    """Mean softmax cross-entropy over valid pixels (0 when none is valid).

    Args:
      logits: (..., K) unnormalised class scores.
      labels: (...) int classes in [0, K) where valid (anything elsewhere).
      valid: (...) bool, pixels that count; all when None.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_integer("labels", labels)
    _check_shape("labels", labels, logits.shape[:-1], "logits without its class axis")
    valid = _mask(valid, labels.shape)
    safe_labels = jnp.where(valid, labels, 0)
    return _masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, safe_labels), valid)


def _cosines(pred_normals, true_normals, valid) -> tuple[jax.Array, jax.Array]:
    """Checked cosines between two normal fields and the pixels that count.

    ``valid`` None: where ``true_normals`` is non-zero.
    """
    pred, true = jnp.asarray(pred_normals), jnp.asarray(true_normals)
    _check_vectors("pred_normals", pred)
    _check_shape("true_normals", true, pred.shape, "pred_normals")
    if valid is None:
        valid = jnp.any(true != 0, axis=-1)
    valid = _mask(valid, pred.shape[:-1])
    return jnp.sum(unit_vectors(pred) * unit_vectors(true), axis=-1), valid


@jax.jit
def normal_loss(pred_normals: Float[ArrayLike, "*pixels 3"],
                true_normals: Float[ArrayLike, "*pixels 3"],
                valid: Bool[ArrayLike, "*pixels"] | None = None) -> Float[Array, ""]:
    """Mean ``1 - cos(angle)`` between normal fields over valid pixels (0 when none is valid).

    Both fields are normalised first, so the loss is in [0, 2]: 0 for equal
    directions, 1 for perpendicular ones, 2 for opposite ones.

    Args:
      pred_normals: (..., 3) predicted normals, any non-zero length.
      true_normals: (..., 3) true normals; 0 on the background.
      valid: (...) bool, pixels that count; None: where ``true_normals`` is non-zero.
    """
    cos, valid = _cosines(pred_normals, true_normals, valid)
    return _masked_mean(1.0 - cos, valid)


@jax.jit
def depth_loss(pred_depth: Float[ArrayLike, "*pixels"], true_depth: Float[ArrayLike, "*pixels"],
               valid: Bool[ArrayLike, "*pixels"] | None = None) -> Float[Array, ""]:
    """Mean ``|log pred - log true|`` over valid pixels with ``true > 0`` (0 when none).

    An L1 loss on log depth: a prediction off by a factor ``s`` costs ``|log s|``
    wherever it is, so near and far surfaces weigh alike.

    Args:
      pred_depth: (...) predicted depth, metres, positive where valid.
      true_depth: (...) true depth, metres; 0 (the background) never counts.
      valid: (...) bool, further pixels to leave out (False); None: all with depth.
    """
    pred, true = jnp.asarray(pred_depth), jnp.asarray(true_depth)
    _check_shape("true_depth", true, pred.shape, "pred_depth")
    valid = _mask(valid, pred.shape) & (true > 0)
    log_ratio = jnp.log(jnp.where(valid, pred, 1.0)) - jnp.log(jnp.where(valid, true, 1.0))
    return _masked_mean(jnp.abs(log_ratio), valid)


# ---------------------------------------------------------------------------------------
# Metrics.

@functools.partial(jax.jit, static_argnames="num_classes")
def mean_iou(pred_labels: Int[ArrayLike, "*pixels"], true_labels: Int[ArrayLike, "*pixels"],
             num_classes: int, valid: Bool[ArrayLike, "*pixels"] | None = None) -> Float[Array, ""]:
    """Mean intersection over union of label maps (AutoSimulate sec. 5.1's "mIoU").

    Intersections and unions of each class are summed over every valid pixel of the
    whole batch before dividing (not averaged per image), then the per-class IoUs are
    averaged over the classes present in the prediction or the truth: a class absent
    from both is left out rather than counted as 0 or 1. Labels outside
    ``[0, num_classes)`` belong to no class. NaN when no class is present.

    Args:
      pred_labels: (...) int predicted classes, e.g. ``argmax`` of logits.
      true_labels: (...) int true classes.
      num_classes: number of classes K, a Python int >= 1.
      valid: (...) bool, pixels that count; all when None.

    Returns:
      Scalar in [0, 1].
    """
    _check_count("num_classes", num_classes)
    pred, true = jnp.asarray(pred_labels), jnp.asarray(true_labels)
    _check_integer("pred_labels", pred)
    _check_integer("true_labels", true)
    _check_shape("true_labels", true, pred.shape, "pred_labels")
    valid = _mask(valid, pred.shape)[..., None]
    classes = jnp.arange(num_classes)
    in_pred = (pred[..., None] == classes) & valid
    in_true = (true[..., None] == classes) & valid
    pixel_axes = tuple(range(pred.ndim))
    intersection = jnp.sum(in_pred & in_true, axis=pixel_axes)
    union = jnp.sum(in_pred | in_true, axis=pixel_axes)
    present = union > 0
    iou = intersection / jnp.maximum(union, 1)
    return jnp.sum(jnp.where(present, iou, 0.0)) / jnp.sum(present)


@jax.jit
def angle_errors(pred_normals: Float[ArrayLike, "*pixels 3"],
                 true_normals: Float[ArrayLike, "*pixels 3"],
                 valid: Bool[ArrayLike, "*pixels"] | None = None) -> dict[str, jax.Array]:
    """Angle errors of normal fields (hybrid gradient sec. 5.1 and Table 1).

    The error of a pixel is ``arccos(clip(p . t, -1, 1))`` of the normalised vectors,
    in degrees. Every entry is NaN when no pixel is valid.

    Args:
      pred_normals: (..., 3) predicted normals, any non-zero length.
      true_normals: (..., 3) true normals; 0 on the background.
      valid: (...) bool, pixels that count; None: where ``true_normals`` is non-zero.

    Returns:
      ``"mean"`` and ``"median"`` error in degrees (the median of an even count is
      the mean of the middle two), and ``"within_11.25"``, ``"within_22.5"``,
      ``"within_30"``: percent of valid pixels with error <= that many degrees.
    """
    cos, valid = _cosines(pred_normals, true_normals, valid)
    error = jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))
    result = {"mean": _nan_mean(error, valid),
              "median": jnp.nanmedian(jnp.where(valid, error, jnp.nan))}
    for threshold in ANGLE_THRESHOLDS:
        result[f"within_{threshold:g}"] = 100.0 * _nan_mean(error <= threshold, valid)
    return result


@jax.jit
def depth_errors(pred_depth: Float[ArrayLike, "*pixels"], true_depth: Float[ArrayLike, "*pixels"],
                 valid: Bool[ArrayLike, "*pixels"] | None = None) -> dict[str, jax.Array]:
    """The standard depth errors of Eigen et al. 2014, as in hybrid gradient sec. 5.3.

    Over valid pixels with ``true > 0``, with ``d = log pred - log true``. Every
    entry is NaN when no pixel is valid; the log errors are NaN if a valid
    prediction is not positive.

    Args:
      pred_depth: (...) predicted depth, metres.
      true_depth: (...) true depth, metres; 0 (the background) never counts.
      valid: (...) bool, further pixels to leave out (False); None: all with depth.

    Returns:
      ``"abs_rel"``: mean ``|pred - true| / true``; ``"sq_rel"``: mean
      ``(pred - true)^2 / true``, metres; ``"rmse"``: ``sqrt(mean (pred - true)^2)``,
      metres; ``"rmse_log"``: ``sqrt(mean d^2)``; ``"rmse_scale_inv"``:
      ``sqrt(mean (d - mean d)^2)``, blind to a global scale of ``pred``.
    """
    pred, true = jnp.asarray(pred_depth), jnp.asarray(true_depth)
    _check_shape("true_depth", true, pred.shape, "pred_depth")
    valid = _mask(valid, pred.shape) & (true > 0)
    safe_true = jnp.where(valid, true, 1.0)
    diff = pred - true
    log_diff = jnp.log(jnp.where(valid, pred, 1.0)) - jnp.log(safe_true)
    centred = log_diff - _nan_mean(log_diff, valid)   # two passes: no cancellation
    return {"abs_rel": _nan_mean(jnp.abs(diff) / safe_true, valid),
            "sq_rel": _nan_mean(diff ** 2 / safe_true, valid),
            "rmse": jnp.sqrt(_nan_mean(diff ** 2, valid)),
            "rmse_log": jnp.sqrt(_nan_mean(log_diff ** 2, valid)),
            "rmse_scale_inv": jnp.sqrt(_nan_mean(centred ** 2, valid))}


# ---------------------------------------------------------------------------------------
# Tasks: networks seen through pure functions.

@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskNetwork:
    """The pure interface of a task network; subclasses name the module, loss and metrics.

    A subclass defines ``module`` (the Flax module), ``output_loss(outputs,
    targets)`` and ``output_metrics(outputs, targets)``; ``loss`` and ``metrics``
    apply the network first. Frozen and hashable, so it can be static under ``jit``.

    Attributes:
      features: UNet channels per level, finest first.
    """

    features: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self):
        object.__setattr__(self, "features", _check_features(self.features))

    def init(self, key: jax.Array, example_input: Float[ArrayLike, "b h w c"]) -> Params:
        """Random parameters for images shaped like ``example_input`` (B, H, W, C)."""
        return self.module.init(key, jnp.asarray(example_input))["params"]

    def apply(self, params: Params, x: Float[ArrayLike, "b h w c"]) -> Any:
        """The network's outputs for images ``x`` (B, H, W, C)."""
        return self.module.apply({"params": params}, jnp.asarray(x))

    def loss(self, params: Params, x: Float[ArrayLike, "b h w c"], targets: dict) -> jax.Array:
        """Scalar training loss of the network on images ``x`` and per-pixel ``targets``."""
        return self.output_loss(self.apply(params, x), targets)

    def metrics(self, params: Params, x: Float[ArrayLike, "b h w c"],
                targets: dict) -> dict[str, jax.Array]:
        """Evaluation metrics of the network on images ``x`` and per-pixel ``targets``."""
        return self.output_metrics(self.apply(params, x), targets)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Segmentation(TaskNetwork):
    """Semantic segmentation with a :class:`UNet` (AutoSimulate sec. 5.1).

    Targets: ``{"labels": (B, H, W) int in [0, num_classes), "valid": optional
    (B, H, W) bool}``. Outputs: logits (B, H, W, num_classes). Metrics:
    ``{"miou": mean_iou(argmax logits, labels)}``.

    Attributes:
      num_classes: number of classes, background included.
    """

    num_classes: int = 4

    def __post_init__(self):
        super().__post_init__()
        _check_count("num_classes", self.num_classes)

    @property
    def module(self) -> UNet:
        """The Flax module."""
        return UNet(self.num_classes, self.features)

    def output_loss(self, logits: jax.Array, targets: dict) -> jax.Array:
        """:func:`segmentation_loss` of ``logits`` (B, H, W, K)."""
        return segmentation_loss(logits, targets["labels"], targets.get("valid"))

    def output_metrics(self, logits: jax.Array, targets: dict) -> dict[str, jax.Array]:
        """``{"miou"}`` of the most likely classes of ``logits`` (B, H, W, K)."""
        pred = jnp.argmax(logits, axis=-1)
        return {"miou": mean_iou(pred, targets["labels"], self.num_classes, targets.get("valid"))}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NormalsDepth(TaskNetwork):
    """Surface normals and depth from one :class:`NormalDepthNet` (hybrid gradient sec. 5).

    Targets: ``{"normals": (B, H, W, 3), "depth": (B, H, W) metres, "valid":
    optional (B, H, W) bool}``; only pixels with ``depth > 0`` count, for both
    outputs. Loss: ``normal_loss + depth_weight * depth_loss``. Metrics:
    :func:`angle_errors` with keys prefixed ``angle_`` for mean and median, and
    :func:`depth_errors`.

    Attributes:
      depth_weight: weight of the log-depth L1 loss against ``1 - cos``.
      min_depth: metres, the smallest depth the network predicts.
    """

    depth_weight: float = 1.0
    min_depth: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.depth_weight) and self.depth_weight >= 0):
            raise ValueError(f"depth_weight must be finite and >= 0, got {self.depth_weight!r}")
        if not (math.isfinite(self.min_depth) and self.min_depth > 0):
            raise ValueError(f"min_depth must be finite and > 0, got {self.min_depth!r}")

    @property
    def module(self) -> NormalDepthNet:
        """The Flax module."""
        return NormalDepthNet(self.features, self.min_depth)

    def _valid(self, targets: dict) -> jax.Array:
        depth = jnp.asarray(targets["depth"])
        return _mask(targets.get("valid"), depth.shape) & (depth > 0)

    def output_loss(self, outputs: dict, targets: dict) -> jax.Array:
        """``normal_loss + depth_weight * depth_loss`` over pixels with depth."""
        valid = self._valid(targets)
        return (normal_loss(outputs["normals"], targets["normals"], valid)
                + self.depth_weight * depth_loss(outputs["depth"], targets["depth"], valid))

    def output_metrics(self, outputs: dict, targets: dict) -> dict[str, jax.Array]:
        """Angle errors (``angle_mean``, ``angle_median``, ``within_*``) and depth errors."""
        valid = self._valid(targets)
        angles = angle_errors(outputs["normals"], targets["normals"], valid)
        return {"angle_mean": angles.pop("mean"), "angle_median": angles.pop("median"),
                **angles, **depth_errors(outputs["depth"], targets["depth"], valid)}


TASKS: dict[str, type[TaskNetwork]] = {
    "segmentation": Segmentation,
    "normals_depth": NormalsDepth,
}
"""Every task by name: ``TASKS[name](features=..., **options) -> TaskNetwork``
(options ``num_classes`` for segmentation; ``depth_weight``, ``min_depth`` for
normals and depth)."""
