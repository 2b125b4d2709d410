"""The scene pytree (LiDO Sec. 3, App. A): camera, light, ground colour, objects.

Every range and unit is in :mod:`render.spec`; this module only holds the data
structure, a quick random scene and validation. All leaves are JAX arrays, so a
``Scene`` can be jitted, vmapped (stack scenes leaf by leaf) and differentiated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from render import spec


@struct.dataclass
class Camera:
    """Camera pose; intrinsics are fixed (``spec.VERTICAL_FOV``).

    Attributes:
      height: () metres above the ground plane.
      elevation: () radians below the horizon the camera looks at.
    """

    height: jax.Array
    elevation: jax.Array


@struct.dataclass
class Light:
    """Uniform plus directional light.

    Attributes:
      ambient: () strength of the uniform light.
      strength: () strength of the directional light.
      azimuth: () radians, direction towards the light about the vertical axis.
      elevation: () radians above the ground plane.
    """

    ambient: jax.Array
    strength: jax.Array
    azimuth: jax.Array
    elevation: jax.Array


@struct.dataclass
class Objects:
    """Objects padded to a fixed maximum ``N``; ``valid`` marks the real ones.

    Attributes:
      valid: (N,) bool.
      class_id: (N,) int32 index into ``spec.CLASS_NAMES``.
      shape_id: (N,) int32 variant of the class, < ``spec.NUM_SHAPES[class_id]``.
      position: (N, 2) contact point (x, z) on the ground plane, metres.
      scale: (N,) characteristic size in metres (``spec.SCALE_RANGE``).
      azimuth: (N,) rotation about the vertical axis, radians.
      rgb: (N, 3) albedo in [0, 1].
    """

    valid: jax.Array
    class_id: jax.Array
    shape_id: jax.Array
    position: jax.Array
    scale: jax.Array
    azimuth: jax.Array
    rgb: jax.Array


@struct.dataclass
class Scene:
    """One scene. ``ground_rgb``: (3,) albedo of the ground plane in [0, 1]."""

    camera: Camera
    light: Light
    ground_rgb: jax.Array
    objects: Objects


def _uniform(key, field: spec.Field, shape=()):
    lo = jnp.asarray(field.low, jnp.float32)
    hi = jnp.asarray(field.high, jnp.float32)
    return jax.random.uniform(key, shape + lo.shape, jnp.float32, lo, hi)


def random_scene(key: jax.Array, num_objects: int = 5, *,
                 max_objects: int = spec.MAX_OBJECTS) -> Scene:
    """A valid random scene, quickly: uniform latents, objects placed in view.

    Contact points are sampled as image positions below the horizon (rows in the
    lower 60% of the visible ground, columns within the middle 80%) and
    back-projected onto the ground plane, so objects are in front of the camera
    and mostly in view. Objects may overlap: the full generator with rejection
    rules is ``lido_jax``'s. Jittable for a static ``num_objects``.

    Args:
      key: PRNG key.
      num_objects: number of valid objects, 0 <= num_objects <= max_objects.
      max_objects: padded length of ``Objects``.
    """
    if not 0 <= num_objects <= max_objects:
        raise ValueError(f"num_objects={num_objects} must lie in [0, max_objects={max_objects}]")
    f = spec.FIELDS
    keys = jax.random.split(key, 13)
    camera = Camera(
        height=_uniform(keys[0], spec.Field("", 0.2, f["camera.height"].high, "m")),
        elevation=_uniform(keys[1], spec.Field("", 10 * math.pi / 180, f["camera.elevation"].high, "rad")),
    )
    light = Light(
        ambient=_uniform(keys[2], spec.Field("", 0.2, 0.8, "1")),
        strength=_uniform(keys[3], spec.Field("", 0.3, 1.5, "1")),
        azimuth=_uniform(keys[4], f["light.azimuth"]),
        elevation=_uniform(keys[5], spec.Field("", 20 * math.pi / 180, f["light.elevation"].high, "rad")),
    )
    n = max_objects
    class_id = jax.random.randint(keys[6], (n,), 0, len(spec.CLASS_NAMES))
    num_shapes = jnp.asarray(spec.NUM_SHAPES)[class_id]
    shape_id = jnp.floor(jax.random.uniform(keys[7], (n,)) * num_shapes).astype(jnp.int32)
    scale_lo = jnp.asarray([r[0] for r in spec.SCALE_RANGE])[class_id]
    scale_hi = jnp.asarray([r[1] for r in spec.SCALE_RANGE])[class_id]
    scale = scale_lo + jax.random.uniform(keys[8], (n,)) * (scale_hi - scale_lo)

    # Back-project image points below the horizon onto the ground plane.
    tan_half = math.tan(spec.VERTICAL_FOV / 2)
    u = jax.random.uniform(keys[9], (n,), minval=-0.8, maxval=0.8)     # x_ndc
    v_horizon = -jnp.tan(camera.elevation) / tan_half                  # y_ndc of the horizon (down +)
    v_lo = jnp.maximum(v_horizon, -1.0)
    v = v_lo + (1.0 - v_lo) * jax.random.uniform(keys[10], (n,), minval=0.4, maxval=0.95)
    ray_cam = jnp.stack([u * tan_half, -v * tan_half, jnp.ones_like(u)], -1)
    se, ce = jnp.sin(camera.elevation), jnp.cos(camera.elevation)
    down = ray_cam[:, 1] * ce - se               # world y of the ray (negative: hits ground)
    fwd = ray_cam[:, 1] * se + ce                # world z of the ray
    t = camera.height / jnp.maximum(-down, 1e-3)
    lo_x, lo_z = spec.FIELDS["objects.position"].low
    hi_x, hi_z = spec.FIELDS["objects.position"].high
    position = jnp.stack([jnp.clip(t * ray_cam[:, 0], lo_x, hi_x),
                          jnp.clip(t * fwd, lo_z, hi_z)], -1)

    objects = Objects(
        valid=jnp.arange(n) < num_objects,
        class_id=class_id.astype(jnp.int32),
        shape_id=shape_id,
        position=position.astype(jnp.float32),
        scale=scale.astype(jnp.float32),
        azimuth=_uniform(keys[11], f["objects.azimuth"], (n,)),
        rgb=jax.random.uniform(keys[12], (n, 3)),
    )
    ground_rgb = jax.random.uniform(jax.random.fold_in(key, 1), (3,), minval=0.3, maxval=1.0)
    return Scene(camera=camera, light=light, ground_rgb=ground_rgb, objects=objects)


def validate(scene: Scene) -> Scene:
    """Checks every field of a scene against :mod:`render.spec`.

    Host-side check (not jittable): call it at boundaries, on concrete scenes.
    A batch of scenes (leading axes on every leaf) is accepted.

    Returns:
      The scene unchanged.

    Raises:
      ValueError: naming the field, the offending value and the allowed range,
        for values out of range, NaN/inf, wrong shapes or wrong dtypes.
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"expected a render.Scene, got {type(scene).__name__}")
    objects = scene.objects
    valid = _array("objects.valid", objects.valid, "bool", ndim=1)
    batch = valid.shape[:-1]
    n = valid.shape[-1]

    def continuous(path, value, mask=None):
        f = spec.FIELDS[path]
        lead = batch + ((n,) if mask is not None else ())
        x = _array(path, value, "float", shape=lead + f.shape)
        if mask is not None:
            x = x[mask]
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{path}: contains NaN or inf: {x[~np.isfinite(x)][:3]}")
        lo, hi = np.asarray(f.low), np.asarray(f.high)
        # Closed at both ends, with float32 rounding slack (float32(2 pi) > 2 pi).
        slack = 1e-6 * np.maximum(1.0, np.abs(hi))
        bad = (x < lo - slack) | (x > hi + slack)
        if np.any(bad):
            raise ValueError(f"{path}: value {float(x[bad][0]):.6g} outside the allowed range "
                             f"[{f.low}, {f.high}] ({f.unit})")
        return x

    continuous("camera.height", scene.camera.height)
    continuous("camera.elevation", scene.camera.elevation)
    continuous("light.ambient", scene.light.ambient)
    continuous("light.strength", scene.light.strength)
    continuous("light.azimuth", scene.light.azimuth)
    continuous("light.elevation", scene.light.elevation)
    continuous("ground_rgb", scene.ground_rgb)

    class_id = _array("objects.class_id", objects.class_id, "int", shape=valid.shape)[valid]
    shape_id = _array("objects.shape_id", objects.shape_id, "int", shape=valid.shape)[valid]
    bad = (class_id < 0) | (class_id >= len(spec.CLASS_NAMES))
    if np.any(bad):
        raise ValueError(f"objects.class_id: value {class_id[bad][0]} outside the allowed range "
                         f"[0, {len(spec.CLASS_NAMES) - 1}] ({', '.join(spec.CLASS_NAMES)})")
    limit = np.asarray(spec.NUM_SHAPES)[class_id]
    bad = (shape_id < 0) | (shape_id >= limit)
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        raise ValueError(f"objects.shape_id: value {shape_id[i]} outside the allowed range "
                         f"[0, {limit[i] - 1}] for class {spec.CLASS_NAMES[class_id[i]]!r}")

    continuous("objects.position", objects.position, valid)
    scale = continuous("objects.scale", objects.scale, valid)
    continuous("objects.azimuth", objects.azimuth, valid)
    continuous("objects.rgb", objects.rgb, valid)
    lo = np.asarray([r[0] for r in spec.SCALE_RANGE])[class_id]
    hi = np.asarray([r[1] for r in spec.SCALE_RANGE])[class_id]
    bad = (scale < lo - 1e-6) | (scale > hi + 1e-6)
    if np.any(bad):
        i = np.flatnonzero(bad)[0]
        raise ValueError(f"objects.scale: value {float(scale[i]):.6g} outside the allowed range "
                         f"[{lo[i]}, {hi[i]}] (m) for class {spec.CLASS_NAMES[class_id[i]]!r}")
    return scene


def _array(path: str, value, kind: str, *, shape=None, ndim=None) -> np.ndarray:
    """Host copy of one leaf, checked for dtype kind and shape."""
    try:
        x = np.asarray(value)
    except Exception as e:  # a tracer or an unconvertible object
        raise ValueError(f"{path}: cannot read as an array ({type(value).__name__}): {e}") from e
    ok = {"bool": x.dtype == np.bool_,
          "int": np.issubdtype(x.dtype, np.integer),
          "float": np.issubdtype(x.dtype, np.floating)}[kind]
    if not ok:
        raise ValueError(f"{path}: dtype {x.dtype} is not {kind}")
    if ndim is not None and x.ndim < ndim:
        raise ValueError(f"{path}: shape {x.shape} needs at least {ndim} dimension(s)")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{path}: shape {x.shape} != expected {tuple(shape)}")
    return x
