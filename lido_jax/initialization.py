"""LiDO's initialisation (sec. 3, App. D.1): detect objects, predict latents per patch,
vote on the globals, back-project into a scene ``z_0``.

Both networks are trained from scratch here: the paper's trunk is VGG-16 with
ImageNet weights, which cannot be downloaded on these machines, so each network has
a small convolutional trunk of its own instead. The paper trains six separate
initialisation networks (and per-class object networks); we train one patch network
with a head per latent set, on a shared trunk, to keep CPU training short.

- **Detector** (:class:`Detector`): a fully convolutional heat-map detector with
  output stride :data:`STRIDE`. Each output cell predicts softmax logits over
  background and the classes (does an object's contact point fall in this cell?),
  the contact point's offset inside the cell and the object's projected size (its
  scale in pixels at the contact point's depth, over the image height). Its labels
  are soft, a Gaussian of one cell around each contact point (as CenterNet's).
  :func:`detect` keeps cells that are a 3x3 local maximum of the object score
  (non-maximum suppression by max-pooling) above a threshold, best first, at most
  ``spec.MAX_OBJECTS``.
- **Patch network** (:class:`PatchNetwork`): a patch centred at each detection's
  contact point (zero outside the image), plus the detection (position, size, class;
  the paper's ``Fd`` layers), predicts the shape (one of the class's variants), the
  azimuth in 18 bins of 20 degrees, the object colour, and the globals as this object
  sees them: lighting (uniform, directional strength, elevation, sin/cos azimuth),
  camera (height, elevation) and ground colour.
- **Assembly** (:func:`initial_scene`): the globals are the median of the objects'
  votes (``refine.aggregate``); each contact pixel is back-projected onto the ground
  plane with that camera and each size turned into a scale with the distance of the
  back-projected point (:func:`scale_from_size`).

Everything is jittable; :func:`initial_scene` returns the scene and each object's
votes, which is where LiDO's refinement starts (``refine.refine(..., votes=...)``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

import render
from lido_jax import network, refine
from render import spec

STRIDE: int = 4
"""Pixels per detector output cell."""

NUM_CLASSES: int = len(spec.CLASS_NAMES)
MAX_SHAPES: int = max(spec.NUM_SHAPES)
AZIMUTH_BINS: int = 18
"""Azimuth classes of 20 degrees (App. D.1)."""

DETECTION_SIZE: int = 3 + NUM_CLASSES
"""Length of a detection's vector fed to the ``Fd`` layers: row and column over the
image size, projected size, class one-hot."""

POSITIVE_WEIGHT: float = 20.0
"""Weight of object cells in the detector's cross-entropy (they are rare)."""

Params = Any


# ---------------------------------------------------------------------------------------
# Geometry: projected sizes and back-projection.


def _depth(camera, position) -> jax.Array:
    points = jnp.stack([position[..., 0], jnp.zeros_like(position[..., 0]), position[..., 1]], -1)
    return render.camera.to_camera(camera, points)[..., 2]


def projected_size(scene: render.Scene, resolution: tuple[int, int]) -> jax.Array:
    """(N,) each object's scale in pixels at its contact point's depth, over the image
    height: what the detector regresses."""
    f = render.camera.focal_pixels(tuple(resolution))
    return scene.objects.scale * f / _depth(scene.camera, scene.objects.position) / resolution[0]


def scale_from_size(camera, pixels, size, resolution: tuple[int, int]):
    """Back-projection (sec. 3): contact points (N, 2) on the ground seen at ``pixels``
    (N, 2) and scales (N,) from projected ``size`` (N,), both with ``camera``."""
    position = render.camera.ground_point(camera, pixels, tuple(resolution))
    f = render.camera.focal_pixels(tuple(resolution))
    return position, size * resolution[0] * _depth(camera, position) / f


# ---------------------------------------------------------------------------------------
# Networks.


class Detector(nn.Module):
    """``apply(params, images (B, H, W, 3))`` -> dict of ``logits`` (B, H/4, W/4, 1 +
    classes), ``offset`` (B, H/4, W/4, 2) in [0, 1) and ``size`` (B, H/4, W/4).

    No dropout by default: trained from scratch on procedural data, dropout 0.5 (the
    paper's, on top of fixed VGG layers) learnt slower (median object-cell score 0.53
    against 0.62 after 1500 steps at 64 px on the 2-core CPU)."""

    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, images, train: bool = False):
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % STRIDE or images.shape[2] % STRIDE:
            raise ValueError(f"images must be (B, H, W, 3) with H and W multiples of {STRIDE}, "
                             f"got {images.shape}")
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        h = nn.leaky_relu(nn.Conv(32, (3, 3))(images - 0.5))
        h = nn.leaky_relu(nn.Conv(32, (3, 3), strides=2)(h))
        h = nn.leaky_relu(nn.Conv(64, (3, 3))(h))
        h = nn.leaky_relu(nn.Conv(64, (3, 3), strides=2)(h))
        for dilation in (2, 4, 8):     # context: objects stand above their contact points
            h = drop(jnp.tanh(nn.Conv(64, (3, 3), kernel_dilation=dilation)(h)))
        h = jnp.tanh(nn.Conv(64, (1, 1))(h))
        # Background starts likely (bias 3: p ~ 0.87), as RetinaNet's prior: from a
        # uniform start some seeds stalled at one score everywhere.
        bias = lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype).at[0].set(3.0)  # noqa: E731
        out = nn.Conv(1 + NUM_CLASSES + 3, (1, 1), bias_init=bias)(h)
        return {"logits": out[..., :1 + NUM_CLASSES],
                "offset": jax.nn.sigmoid(out[..., 1 + NUM_CLASSES:3 + NUM_CLASSES]),
                "size": jax.nn.softplus(out[..., -1]) * 0.1}


PATCH_HEADS: dict[str, int] = {"shape": MAX_SHAPES, "azimuth": AZIMUTH_BINS, "object_colour": 3,
                               "light": 5, "camera": 2, "ground_colour": 3}


class PatchNetwork(nn.Module):
    """``apply(params, patches (B, S, S, 3), detections (B, DETECTION_SIZE))`` -> dict
    of :data:`PATCH_HEADS` outputs; colours through a sigmoid."""

    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, patches, detections, train: bool = False):
        if patches.ndim != 4 or patches.shape[-1] != 3:
            raise ValueError(f"patches must be (B, S, S, 3), got {patches.shape}")
        if detections.shape != (patches.shape[0], DETECTION_SIZE):
            raise ValueError(f"detections must be (B, {DETECTION_SIZE}), got {detections.shape}")
        h = jnp.tanh(nn.Conv(32, (3, 3), strides=2)(patches))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = jnp.tanh(nn.Conv(64, (3, 3), strides=2)(h))
        h = jnp.tanh(nn.Conv(64, (3, 3), strides=2)(h))
        h = h.reshape(h.shape[0], -1)
        h = jnp.tanh(nn.Dense(128)(jnp.concatenate([h, detections], -1)))
        out = {}
        for name, width in PATCH_HEADS.items():
            g = jnp.tanh(nn.Dense(50, name=f"{name}_hidden")(jnp.concatenate([h, detections], -1)))
            out[name] = nn.Dense(width, name=name)(g)
        for name in ("object_colour", "ground_colour"):
            out[name] = jax.nn.sigmoid(out[name])
        return out


# ---------------------------------------------------------------------------------------
# Targets and losses.


HEAT_SIGMA: float = 1.0
"""Spread, in cells, of the Gaussian heat around each contact point in the detector's
soft labels (neighbouring cells look alike; a hard one-cell label cannot be learnt)."""


def detector_targets(scene: render.Scene, resolution: tuple[int, int]) -> dict[str, jax.Array]:
    """Per cell: ``label`` (0 background, 1 + class) of the cell holding a contact
    point, the contact point's ``offset`` inside it and the object's ``size``; and
    ``heat`` (gh, gw, 1 + classes), soft labels: each class's largest Gaussian
    (``HEAT_SIGMA`` cells) of its objects' contact points, background the rest.
    Objects whose contact point is outside the image are left out."""
    h, w = resolution
    gh, gw = h // STRIDE, w // STRIDE
    pixels = refine.contact_pixels(refine.object_vectors(scene), refine.global_vector(scene),
                                   resolution)
    cell = jnp.floor((pixels + 0.5) / STRIDE)
    offset = (pixels + 0.5) / STRIDE - cell
    inside = (scene.objects.valid & jnp.all(jnp.isfinite(pixels), -1)
              & (cell[:, 0] >= 0) & (cell[:, 0] < gh) & (cell[:, 1] >= 0) & (cell[:, 1] < gw))
    index = jnp.where(inside, cell[:, 0] * gw + cell[:, 1], gh * gw).astype(jnp.int32)
    size = projected_size(scene, resolution)
    label = jnp.zeros(gh * gw + 1, jnp.int32).at[index].set(1 + scene.objects.class_id)
    offsets = jnp.zeros((gh * gw + 1, 2)).at[index].set(jnp.nan_to_num(offset))
    sizes = jnp.zeros(gh * gw + 1).at[index].set(size)
    centre = (pixels + 0.5) / STRIDE                                         # in cells
    grid = jnp.stack(jnp.meshgrid(jnp.arange(gh) + 0.5, jnp.arange(gw) + 0.5, indexing="ij"), -1)
    d2 = jnp.sum(jnp.square(grid[None] - jnp.nan_to_num(centre)[:, None, None]), -1)
    bump = jnp.where(inside[:, None, None], jnp.exp(-d2 / (2 * HEAT_SIGMA ** 2)), 0.0)  # (N, gh, gw)
    per_class = jnp.stack([jnp.max(jnp.where((scene.objects.class_id == c)[:, None, None], bump, 0.0),
                                   axis=0, initial=0.0) for c in range(NUM_CLASSES)], -1)
    per_class = per_class / jnp.maximum(1.0, jnp.sum(per_class, -1, keepdims=True))
    heat = jnp.concatenate([1.0 - jnp.sum(per_class, -1, keepdims=True), per_class], -1)
    return {"label": label[:-1].reshape(gh, gw), "offset": offsets[:-1].reshape(gh, gw, 2),
            "size": sizes[:-1].reshape(gh, gw), "heat": heat}


def detector_loss(outputs, targets) -> jax.Array:
    """Cross-entropy against the soft ``heat`` labels, weighted up to
    ``POSITIVE_WEIGHT`` near objects, plus L1 of offset and size at object cells."""
    positive = targets["label"] > 0
    near = 1.0 - targets["heat"][..., 0]
    weight = 1.0 + (POSITIVE_WEIGHT - 1.0) * near
    ce = optax.softmax_cross_entropy(outputs["logits"], targets["heat"])
    count = jnp.maximum(jnp.sum(positive), 1.0)
    regress = (jnp.sum(positive[..., None] * jnp.abs(outputs["offset"] - targets["offset"]))
               + 10.0 * jnp.sum(positive * jnp.abs(outputs["size"] - targets["size"]))) / count
    return jnp.sum(weight * ce) / jnp.sum(weight) + regress


def detection_vector(pixels, size, class_id, resolution) -> jax.Array:
    """(N, DETECTION_SIZE) what the patch network's ``Fd`` layers see."""
    h, w = resolution
    return jnp.concatenate([pixels[:, :1] / h, pixels[:, 1:] / w, size[:, None],
                            jax.nn.one_hot(class_id, NUM_CLASSES)], -1)


def patch_targets(scene: render.Scene) -> dict[str, jax.Array]:
    """Per object slot: shape id, azimuth bin, colour, and the globals (standardised;
    the light's azimuth as sin, cos)."""
    n = scene.objects.valid.shape[0]
    light, camera = network.global_targets(refine.global_vector(scene))
    bins = jnp.floor(jnp.mod(scene.objects.azimuth, 2 * math.pi) / (2 * math.pi) * AZIMUTH_BINS)
    return {"shape": scene.objects.shape_id,
            "azimuth": jnp.clip(bins, 0, AZIMUTH_BINS - 1).astype(jnp.int32),
            "object_colour": scene.objects.rgb, "light": jnp.broadcast_to(light, (n, 5)),
            "camera": jnp.broadcast_to(camera, (n, 2)),
            "ground_colour": jnp.broadcast_to(scene.ground_rgb, (n, 3))}


def _shape_logits(logits, class_id):
    allowed = jnp.arange(MAX_SHAPES) < jnp.asarray(spec.NUM_SHAPES)[class_id][:, None]
    return jnp.where(allowed, logits, -1e9)


def patch_loss(outputs, targets, class_id, valid) -> jax.Array:
    """Cross-entropy for shape (among the class's variants) and azimuth bins, L2 for
    the rest, averaged over valid rows."""
    w = jnp.asarray(valid, jnp.float32)
    count = jnp.maximum(jnp.sum(w), 1.0)
    total = jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(
        _shape_logits(outputs["shape"], class_id), targets["shape"]))
    total += jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(outputs["azimuth"],
                                                                         targets["azimuth"]))
    for name in ("object_colour", "light", "camera", "ground_colour"):
        total += jnp.sum(w[:, None] * jnp.square(outputs[name] - targets[name]))
    return total / count


# ---------------------------------------------------------------------------------------
# Inference.


@struct.dataclass
class Detections:
    """Up to ``spec.MAX_OBJECTS`` detections, best first; rows past ``valid`` are padding.

    Attributes: ``valid`` (N,), ``class_id`` (N,), ``pixel`` (N, 2) contact point
    (row, col), ``size`` (N,) projected size, ``score`` (N,) 1 - p(background)."""

    valid: jax.Array
    class_id: jax.Array
    pixel: jax.Array
    size: jax.Array
    score: jax.Array


def decode_detections(outputs, threshold: float = 0.5, max_objects: int = spec.MAX_OBJECTS) -> Detections:
    """Detections of one image's detector outputs (no batch axis): cells whose object
    score is a 3x3 local maximum and at least ``threshold``."""
    probs = jax.nn.softmax(outputs["logits"], -1)
    score = 1.0 - probs[..., 0]
    peak = score >= jax.lax.reduce_window(score, -jnp.inf, jax.lax.max, (3, 3), (1, 1), "SAME")
    keep = peak & (score >= threshold)
    gh, gw = score.shape
    flat = jnp.where(keep, score, -1.0).reshape(-1)
    best, index = jax.lax.top_k(flat, max_objects)
    row, col = index // gw, index % gw
    offset = outputs["offset"][row, col]
    pixel = jnp.stack([(row + offset[:, 0]) * STRIDE - 0.5, (col + offset[:, 1]) * STRIDE - 0.5], -1)
    return Detections(valid=best >= threshold,
                      class_id=jnp.argmax(probs[row, col, 1:], -1).astype(jnp.int32),
                      pixel=pixel, size=outputs["size"][row, col], score=jnp.maximum(best, 0.0))


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Settings of :func:`initial_scene`: detection ``threshold``, and the patches'
    side as a fraction of the image height (``patch_fraction``) resampled to
    ``patch_size`` pixels."""

    threshold: float = 0.5
    patch_fraction: float = 0.5
    patch_size: int = 32

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1)")
        if not 0 < self.patch_fraction <= 2:
            raise ValueError(f"patch_fraction={self.patch_fraction} must be in (0, 2]")
        if self.patch_size < 8 or self.patch_size % 8:
            raise ValueError(f"patch_size={self.patch_size} must be a positive multiple of 8")


def votes_from_outputs(outputs) -> jax.Array:
    """(N, 9) physical globals (``refine.GLOBAL_FIELDS``) from the patch heads."""
    return network.votes_from_heads(outputs["light"], outputs["camera"], outputs["ground_colour"])


def assemble(detections: Detections, outputs, resolution) -> tuple[render.Scene, jax.Array]:
    """The scene ``z_0`` and each object's clipped votes (N, 9) from detections and the
    patch network's outputs (sec. 3, steps 2-3 and back-projection)."""
    votes = jax.vmap(refine.clip_globals)(votes_from_outputs(outputs))
    valid = detections.valid
    fallback = refine.global_vector(_blank_scene(valid.shape[0]))
    g = refine.aggregate(votes, valid, fallback)
    camera = render.Camera(height=g[0], elevation=g[1])
    position, scale = scale_from_size(camera, detections.pixel, detections.size, resolution)
    class_id = detections.class_id
    shape_id = jnp.argmax(_shape_logits(outputs["shape"], class_id), -1).astype(jnp.int32)
    azimuth = (jnp.argmax(outputs["azimuth"], -1) + 0.5) * (2 * math.pi / AZIMUTH_BINS)
    objects = jnp.concatenate([jnp.nan_to_num(position), jnp.nan_to_num(scale)[:, None],
                               azimuth[:, None], outputs["object_colour"]], -1)
    objects = jnp.where(valid[:, None], refine.clip_objects(objects, class_id), 0.0)
    template = _blank_scene(valid.shape[0])
    template = template.replace(objects=template.objects.replace(
        valid=valid, class_id=jnp.where(valid, class_id, 0), shape_id=jnp.where(valid, shape_id, 0)))
    return refine.to_scene(template, objects, g), votes


def _blank_scene(n: int) -> render.Scene:
    """A scene at the middle of every range, with ``n`` invalid object slots."""
    mid = lambda p: jnp.asarray(spec.FIELDS[p].mean, jnp.float32)  # noqa: E731
    return render.Scene(
        camera=render.Camera(height=mid("camera.height"), elevation=mid("camera.elevation")),
        light=render.Light(ambient=mid("light.ambient"), strength=mid("light.strength"),
                           azimuth=jnp.float32(math.pi), elevation=mid("light.elevation")),
        ground_rgb=jnp.broadcast_to(mid("ground_rgb"), (3,)),
        objects=render.Objects(valid=jnp.zeros(n, bool), class_id=jnp.zeros(n, jnp.int32),
                               shape_id=jnp.zeros(n, jnp.int32), position=jnp.zeros((n, 2)),
                               scale=jnp.zeros(n), azimuth=jnp.zeros(n), rgb=jnp.zeros((n, 3))))


def initial_scene(params: Params, image, config: InitConfig = InitConfig()):
    """``z_0`` of one observed image (H, W, 3): ``(scene, votes, detections)``. An image
    without detections gives a scene with no valid object and the middle of every
    global range. ``params`` = ``{"detector": ..., "patch": ...}``."""
    image = jnp.asarray(image, jnp.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] % STRIDE or image.shape[1] % STRIDE:
        raise ValueError(f"image must be one (H, W, 3) image with H and W multiples of {STRIDE}, "
                         f"got shape {image.shape}")
    resolution = tuple(image.shape[:2])
    det_out = jax.tree.map(lambda x: x[0], Detector().apply(params["detector"], image[None]))
    det = decode_detections(det_out, config.threshold)
    patches = refine.extract_patches(image, jnp.where(det.valid[:, None], det.pixel, jnp.nan),
                                     config.patch_fraction * resolution[0], config.patch_size)
    outputs = PatchNetwork().apply(params["patch"], patches,
                                   detection_vector(det.pixel, det.size, det.class_id, resolution))
    scene, votes = assemble(det, outputs, resolution)
    return scene, votes, det


def init_params(key: jax.Array, resolution=(128, 128), patch_size: int = 32) -> Params:
    """Fresh ``{"detector", "patch"}`` parameters."""
    k1, k2 = jax.random.split(key)
    return {"detector": Detector().init(k1, jnp.zeros((1, *resolution, 3))),
            "patch": PatchNetwork().init(k2, jnp.zeros((1, patch_size, patch_size, 3)),
                                         jnp.zeros((1, DETECTION_SIZE)))}


def detect(params: Params, image, threshold: float = 0.5) -> Detections:
    """The detector alone on one image (H, W, 3)."""
    out = Detector().apply(params["detector"], jnp.asarray(image, jnp.float32)[None])
    return decode_detections(jax.tree.map(lambda x: x[0], out), threshold)
