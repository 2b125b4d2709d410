"""The LiDO prediction network (sec. 4.2, App. D.2, Table 5) and its loss.

Per object the input is the observed and rendered patches and their difference,
stacked ``(S, S, 9)`` (S = 64 in the paper), plus the current latents ``z``
standardised (:func:`encode_inputs`): the object's own LVs (class and shape one-hot),
the globals as this object estimates them (GO), the globals as rendered after the
vote (GV) and ``GO - GV``.

Architecture (Table 5): five non-colour sub-networks (position, size, azimuth,
lighting, camera) share three convolutions (32, 64*, 128*; 3x3, tanh; ``*`` = dropout
0.5 after it) with two 2x2 max-pools; each then has its own 64* conv, a max-pool, a
32 conv and three fully connected tanh layers of 40, each fed the features
concatenated with ``z`` (``Fz``), and an ``Fz`` output layer. The two colour
sub-networks (object, ground) are separate and simpler: three stride-2 ReLU
convolutions (32, 64, 128*), three ``Fz-40`` ReLU layers and ``Fz-3``.

Outputs (:data:`HEADS`) and what they predict, the targets of :func:`targets`:

- ``position`` (2): the contact point's offset to the truth from its current value,
  in units of ``POSITION_UNIT`` metres, in one of :data:`POSITION_FRAMES`:
  ``"object"``, the object's current frame (rotated by minus its azimuth; App. D.2's
  wording), ``"camera"``, the ground axes the camera looks along (x across the
  image, z into it), so an offset seen in the patches maps to the same target
  whatever the object's (often wrong) azimuth, or ``"image"``, the (row, col) offset
  of the contact point in the image in units of ``IMAGE_UNIT`` of the image height
  (targets clipped to ``IMAGE_CLIP``), which is what the patches show; it is
  back-projected onto the ground with the current camera (use it with
  ``refine.RefineConfig(anchor_pixels=True)``);
- ``size`` (1): the standardised scale; ``azimuth`` (360): logits over the offset to
  the true azimuth in 1-degree bins;
- ``light`` (5): standardised uniform strength, directional strength and elevation,
  then sin and cos of the azimuth; ``camera`` (2): standardised height and elevation;
- ``object_colour``, ``ground_colour`` (3 each): RGB.

Loss (App. D.2): L1 + L2 summed over the continuous outputs, plus 0.2 times the
cross-entropy of the azimuth bins; Adam with learning rate 3e-4 (:func:`optimizer`).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import render
from lido_jax import latents, refine
from render import spec

HEADS: dict[str, int] = {"position": 2, "size": 1, "azimuth": 360, "light": 5, "camera": 2,
                         "object_colour": 3, "ground_colour": 3}
"""Output heads and their widths (Table 5's last row)."""

GEOMETRY_HEADS: tuple[str, ...] = ("position", "size", "azimuth", "light", "camera")
COLOUR_HEADS: tuple[str, ...] = ("object_colour", "ground_colour")

Z_SIZE: int = latents.OBJECT_SIZE + 3 * latents.GLOBAL_SIZE
"""Length of the standardised ``z`` fed to every ``Fz`` layer (object, GO, GV, GO-GV)."""

POSITION_UNIT: float = 0.1
"""Metres per unit of the ``position`` output."""

AZIMUTH_BINS: int = HEADS["azimuth"]
CROSS_ENTROPY_WEIGHT: float = 0.2
LEARNING_RATE: float = 3e-4

Params = Any


class _Fz(nn.Module):
    """Dense layer on the features concatenated with ``z``."""

    features: int

    @nn.compact
    def __call__(self, h, z):
        return nn.Dense(self.features)(jnp.concatenate([h, z], -1))


class _GeometryHead(nn.Module):
    out: int
    dropout_rate: float

    @nn.compact
    def __call__(self, h, z, train: bool):
        h = jnp.tanh(nn.Conv(64, (3, 3))(h))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = jnp.tanh(nn.Conv(32, (3, 3))(h))
        h = h.reshape(h.shape[:-3] + (-1,))
        for _ in range(3):
            h = jnp.tanh(_Fz(40)(h, z))
        return _Fz(self.out)(h, z)


class _ColourHead(nn.Module):
    out: int
    dropout_rate: float

    @nn.compact
    def __call__(self, x, z, train: bool):
        h = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h))
        h = nn.relu(nn.Conv(128, (3, 3), strides=2)(h))
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = h.reshape(h.shape[:-3] + (-1,))
        for _ in range(3):
            h = nn.relu(_Fz(40)(h, z))
        return _Fz(self.out)(h, z)


class _Trunk(nn.Module):
    dropout_rate: float

    @nn.compact
    def __call__(self, x, train: bool):
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        h = jnp.tanh(nn.Conv(32, (3, 3))(x))
        h = drop(jnp.tanh(nn.Conv(64, (3, 3))(h)))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = drop(jnp.tanh(nn.Conv(128, (3, 3))(h)))
        return nn.max_pool(h, (2, 2), (2, 2))


class PredictionNetwork(nn.Module):
    """Table 5's network: ``apply(params, patches (B, S, S, 9), z (B, Z_SIZE))`` returns
    a dict of :data:`HEADS` outputs (B, width). ``S`` must be a multiple of 8.

    Train with ``train=True`` and ``rngs={"dropout": key}``.
    """

    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, patches, z, train: bool = False) -> dict[str, jax.Array]:
        if patches.ndim != 4 or patches.shape[-1] != 9 or patches.shape[1] % 8 or \
                patches.shape[1] != patches.shape[2]:
            raise ValueError(f"patches must be (B, S, S, 9) with S a multiple of 8, got {patches.shape}")
        if z.shape != (patches.shape[0], Z_SIZE):
            raise ValueError(f"z must be (B, {Z_SIZE}) for patches {patches.shape}, got {z.shape}")
        trunk = _Trunk(self.dropout_rate, name="trunk")(patches, train)
        out = {name: _GeometryHead(HEADS[name], self.dropout_rate, name=name)(trunk, z, train)
               for name in GEOMETRY_HEADS}
        out.update({name: _ColourHead(HEADS[name], self.dropout_rate, name=name)(patches, z, train)
                    for name in COLOUR_HEADS})
        return out


def stack_patches(observed, rendered) -> jax.Array:
    """``(..., S, S, 9)``: observed, rendered and their difference (sec. 4.2)."""
    return jnp.concatenate([observed, rendered, observed - rendered], -1)


def encode_inputs(state: refine.RefineState, scene: render.Scene) -> jax.Array:
    """(N, Z_SIZE) standardised ``z`` per object: object LVs (class, shape one-hot), the
    object's vote on the globals (GO), the voted globals (GV) and ``GO - GV``."""
    objects = latents.encode_objects(refine.to_scene(scene, state.objects, state.globals))
    go = jax.vmap(lambda g: latents.encode_globals(refine.to_scene(scene, state.objects, g)))(
        state.votes)
    gv = jnp.broadcast_to(latents.encode_globals(refine.to_scene(scene, state.objects, state.globals)),
                          go.shape)
    return jnp.concatenate([objects, go, gv, go - gv], -1)


def global_targets(g) -> tuple[jax.Array, jax.Array]:
    """The ``light`` (5,) and ``camera`` (2,) outputs that encode physical globals (9,)
    (``refine.GLOBAL_FIELDS``): standardised values, the light's azimuth as sin, cos."""
    std = spec.standardize
    light = jnp.stack([std("light.ambient", g[2]), std("light.strength", g[3]),
                       std("light.elevation", g[5]), jnp.sin(g[4]), jnp.cos(g[4])])
    return light, jnp.stack([std("camera.height", g[0]), std("camera.elevation", g[1])])


def votes_from_heads(light, camera, ground_colour) -> jax.Array:
    """Inverse of :func:`global_targets` per row: (N, 5), (N, 2), (N, 3) head outputs
    -> (N, 9) physical globals (not clipped; the light's azimuth in [0, 2 pi))."""
    un = spec.unstandardize
    return jnp.concatenate([jnp.stack([
        un("camera.height", camera[:, 0]), un("camera.elevation", camera[:, 1]),
        un("light.ambient", light[:, 0]), un("light.strength", light[:, 1]),
        jnp.mod(jnp.arctan2(light[:, 3], light[:, 4]), 2 * math.pi),
        un("light.elevation", light[:, 2])], -1), ground_colour], -1)


POSITION_FRAMES = ("object", "camera", "image")
"""Frames of the position head's offset (see the module docstring)."""

IMAGE_UNIT = 0.05
"""Unit of ``"image"`` position offsets, as a fraction of the image height."""

IMAGE_CLIP = 5.0
"""``"image"`` position targets are clipped to +- this many units (a quarter of the
image height, the half-side of the default patches): farther offsets are not seen in
the patches, and near the horizon they reach hundreds of units, which would swamp the
L2 loss."""


def _check_frame(position_frame: str, resolution=None) -> None:
    if position_frame not in POSITION_FRAMES:
        raise ValueError(f"position_frame={position_frame!r} must be one of {POSITION_FRAMES}")
    if position_frame == "image" and resolution is None:
        raise ValueError("position_frame='image' needs the image resolution and the current globals")


def _pixel_unit(resolution) -> float:
    return IMAGE_UNIT * resolution[0]


def _image_offsets(objects, truth_objects, globals_, truth_globals, resolution):
    now = refine.contact_pixels(objects, globals_, resolution)
    seen = refine.contact_pixels(truth_objects, truth_globals, resolution)
    return jnp.clip(jnp.nan_to_num(seen - now) / _pixel_unit(resolution), -IMAGE_CLIP, IMAGE_CLIP)


def _image_positions(objects, offsets, globals_, resolution):
    """Positions (N, 2) whose contact points lie ``offsets`` (N, 2) from the objects'
    under the camera of ``globals_``; the current position where that is above the
    horizon."""
    pixels = refine.contact_pixels(objects, globals_, resolution) + _pixel_unit(resolution) * offsets
    return refine.ground_positions(pixels, globals_, resolution, objects[:, :2])


def _frame_angle(objects, position_frame: str):
    return objects[:, 3] if position_frame == "object" else jnp.zeros_like(objects[:, 3])


def _rotate(xz, azimuth, sign):
    c, s = jnp.cos(azimuth), jnp.sin(azimuth)
    return jnp.stack([c * xz[..., 0] + sign * s * xz[..., 1],
                      -sign * s * xz[..., 0] + c * xz[..., 1]], -1)


def targets(objects, truth_objects, truth_globals, position_frame: str = "object", *,
            globals_=None, resolution=None) -> dict[str, jax.Array]:
    """What the heads should output for current objects (N, 7) given the truth's
    objects (N, 7) and globals (9,) (physical units, ``refine.OBJECT_FIELDS`` /
    ``refine.GLOBAL_FIELDS``); ``azimuth`` is the integer bin of the offset, the
    position offset is in ``position_frame`` (:data:`POSITION_FRAMES`; ``"image"``
    also needs the current ``globals_`` (9,) and the image ``resolution``)."""
    _check_frame(position_frame, resolution if globals_ is not None else None)
    az = objects[:, 3]
    if position_frame == "image":
        offset = _image_offsets(objects, truth_objects, globals_, truth_globals, resolution)
    else:
        offset = _rotate(truth_objects[:, :2] - objects[:, :2], _frame_angle(objects, position_frame),
                         +1) / POSITION_UNIT
    turn = jnp.mod(truth_objects[:, 3] - az, 2 * math.pi)
    bins = jnp.clip(jnp.floor(turn / (2 * math.pi) * AZIMUTH_BINS), 0, AZIMUTH_BINS - 1)
    g = truth_globals
    light, camera = global_targets(g)
    n = objects.shape[0]
    return {"position": offset, "size": spec.standardize("objects.scale", truth_objects[:, 2:3]),
            "azimuth": bins.astype(jnp.int32), "light": jnp.broadcast_to(light, (n, 5)),
            "camera": jnp.broadcast_to(camera, (n, 2)), "object_colour": truth_objects[:, 4:7],
            "ground_colour": jnp.broadcast_to(g[6:9], (n, 3))}


def decode(outputs: dict[str, jax.Array], objects, position_frame: str = "object", *,
           globals_=None, resolution=None) -> tuple[jax.Array, jax.Array]:
    """Network outputs for current objects (N, 7) -> predicted objects (N, 7) and votes
    on the globals (N, 9), physical units (not clipped). The azimuth is the current
    one turned by the circular mean of the bins' centres under the softmax; the
    position offset is read in ``position_frame`` (as :func:`targets`)."""
    _check_frame(position_frame, resolution if globals_ is not None else None)
    az = objects[:, 3]
    if position_frame == "image":
        position = _image_positions(objects, outputs["position"], globals_, resolution)
    else:
        position = objects[:, :2] + _rotate(POSITION_UNIT * outputs["position"],
                                            _frame_angle(objects, position_frame), -1)
    centres = (jnp.arange(AZIMUTH_BINS) + 0.5) * (2 * math.pi / AZIMUTH_BINS)
    p = jax.nn.softmax(outputs["azimuth"], -1)
    turn = jnp.arctan2(p @ jnp.sin(centres), p @ jnp.cos(centres))
    scale = spec.unstandardize("objects.scale", outputs["size"][:, 0])
    new_objects = jnp.concatenate([position, scale[:, None], (az + turn)[:, None],
                                   outputs["object_colour"]], -1)
    return new_objects, votes_from_heads(outputs["light"], outputs["camera"],
                                         outputs["ground_colour"])


def loss(outputs: dict[str, jax.Array], target: dict[str, jax.Array], valid) -> jax.Array:
    """App. D.2's loss averaged over valid rows: L1 + L2 of every continuous head, plus
    ``CROSS_ENTROPY_WEIGHT`` times the azimuth bins' cross-entropy."""
    w = jnp.asarray(valid, jnp.float32)
    count = jnp.maximum(jnp.sum(w), 1.0)
    total = 0.0
    for name in HEADS:
        if name == "azimuth":
            ce = optax.softmax_cross_entropy_with_integer_labels(outputs[name], target[name])
            total += CROSS_ENTROPY_WEIGHT * jnp.sum(w * ce) / count
        else:
            d = outputs[name] - target[name]
            total += jnp.sum(w[:, None] * (jnp.abs(d) + jnp.square(d))) / count
    return total


def optimizer(learning_rate: float = LEARNING_RATE) -> optax.GradientTransformation:
    """Adam with the paper's learning rate."""
    return optax.adam(learning_rate)


def init(key: jax.Array, patch_size: int = 64, model: PredictionNetwork = PredictionNetwork()) -> Params:
    """Parameters for ``patch_size`` patches."""
    return model.init(key, jnp.zeros((1, patch_size, patch_size, 9)), jnp.zeros((1, Z_SIZE)))


def train_step(model: PredictionNetwork, opt: optax.GradientTransformation):
    """A jitted ``step(params, opt_state, batch, key) -> (params, opt_state, loss)`` on a
    batch dict of ``patches`` (B, S, S, 9), ``z`` (B, Z_SIZE), ``targets`` (a dict as
    :func:`targets` returns, rows of B) and ``valid`` (B,)."""

    def objective(params, batch, key):
        out = model.apply(params, batch["patches"], batch["z"], train=True, rngs={"dropout": key})
        return loss(out, batch["targets"], batch["valid"])

    @jax.jit
    def step(params, opt_state, batch, key):
        value, grads = jax.value_and_grad(objective)(params, batch, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def predictor(params: Params, model: PredictionNetwork = PredictionNetwork(),
              position_frame: str = "object", resolution=None) -> refine.Predictor:
    """The network as ``refine``'s predictor (dropout off); ``position_frame`` must be
    the one it was trained with (``"image"`` also needs the observed images'
    ``resolution``)."""
    _check_frame(position_frame, resolution)
    resolution = None if resolution is None else tuple(int(r) for r in resolution)

    def predict(observed_patches, rendered_patches, state, scene):
        z = encode_inputs(state, scene)
        out = model.apply(params, stack_patches(observed_patches, rendered_patches), z)
        return decode(out, state.objects, position_frame, globals_=state.globals,
                      resolution=resolution)

    return predict
