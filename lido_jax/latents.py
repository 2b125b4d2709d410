"""LiDO's latent variables (LVs) on top of ``render``'s scene table.

A scene's continuous LVs are addressed by :class:`Slot` (a leaf of the ``Scene``
pytree and an index into it) and grouped into the **LV sets** of LiDO sec. 4.1 and
4.4: ground colour, each object's colour, each object's pose (contact point, size,
azimuth), illumination and camera. Optimisers see a set as a flat vector in physical
units with bounds (:func:`get`, :func:`put`, :func:`bounds`); networks see every LV
standardised by :mod:`render.spec`, angles as (cos, sin) and discrete LVs one-hot
(:func:`encode_globals`, :func:`encode_objects`). Ranges come from ``render.spec``
(LiDO App. A); an object's scale range is its class's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import render
from render import spec

GLOBAL_SETS: tuple[str, ...] = ("ground colour", "illumination", "camera")
"""Global LV sets, LiDO sec. 4.4."""

OBJECT_SETS: tuple[str, ...] = ("object colour", "object pose")
"""Per-object LV sets (the pose holds position, size and azimuth)."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One scalar LV: ``path`` is a field of ``render.spec.FIELDS``, ``index`` its place
    in the leaf (``()`` for a scalar leaf, ``(k,)`` or ``(k, c)`` for objects)."""

    path: str
    index: tuple[int, ...]
    low: float
    high: float
    periodic: bool = False

    @property
    def name(self) -> str:
        return self.path + "".join(f"[{i}]" for i in self.index)


def _field_slots(path: str, prefix: tuple[int, ...] = (), low=None, high=None) -> list[Slot]:
    f = spec.FIELDS[path]
    lo = np.broadcast_to(np.asarray(f.low if low is None else low, np.float64), f.shape or ())
    hi = np.broadcast_to(np.asarray(f.high if high is None else high, np.float64), f.shape or ())
    if not f.shape:
        return [Slot(path, prefix, float(lo), float(hi), f.periodic)]
    return [Slot(path, prefix + (c,), float(lo[c]), float(hi[c]), f.periodic)
            for c in range(f.shape[0])]


def ground_colour() -> list[Slot]:
    """Ground albedo RGB."""
    return _field_slots("ground_rgb")


def illumination() -> list[Slot]:
    """Uniform strength, directional strength, azimuth and elevation."""
    return [s for p in ("light.ambient", "light.strength", "light.azimuth", "light.elevation")
            for s in _field_slots(p)]


def camera() -> list[Slot]:
    """Camera height and elevation."""
    return _field_slots("camera.height") + _field_slots("camera.elevation")


def object_colour(k: int) -> list[Slot]:
    """Albedo RGB of object slot ``k``."""
    return _field_slots("objects.rgb", (k,))


def object_pose(k: int, class_id: int) -> list[Slot]:
    """Contact point (x, z), size (the class's scale range) and azimuth of object ``k``."""
    lo, hi = spec.SCALE_RANGE[int(class_id)]
    return (_field_slots("objects.position", (k,)) + _field_slots("objects.scale", (k,), lo, hi)
            + _field_slots("objects.azimuth", (k,)))


def lv_sets(scene: render.Scene) -> list[tuple[str, list[Slot]]]:
    """The LV sets in LiDO's fitting order (sec. 4.1): ground colour, object colours
    (each object), object poses (each object), illumination, camera.

    Names are ``"ground colour"``, ``"object colour 3"``, ``"object pose 3"``, ...
    """
    valid = np.flatnonzero(np.asarray(scene.objects.valid))
    class_id = np.asarray(scene.objects.class_id)
    return ([("ground colour", ground_colour())]
            + [(f"object colour {k}", object_colour(int(k))) for k in valid]
            + [(f"object pose {k}", object_pose(int(k), int(class_id[k]))) for k in valid]
            + [("illumination", illumination()), ("camera", camera())])


def all_slots(scene: render.Scene) -> list[Slot]:
    """Every continuous LV of the scene's valid objects and its globals."""
    return [s for _, slots in lv_sets(scene) for s in slots]


def padded_slots(scene: render.Scene | int) -> list[Slot]:
    """Globals and every object slot, valid or not: the same paths and indices for
    every scene with as many object slots, so one compiled function serves them all
    (only the bounds, which follow each slot's class, differ).

    Given a number of object slots instead of a scene (e.g. inside ``jit``, where
    classes are traced), scale bounds span every class's range.
    """
    if isinstance(scene, int):
        classes = [None] * scene
    else:
        classes = [int(c) for c in np.asarray(scene.objects.class_id)]
    return (ground_colour() + illumination() + camera()
            + [s for k, c in enumerate(classes) for s in object_colour(k) + (
                object_pose(k, c) if c is not None else _field_slots("objects.position", (k,))
                + _field_slots("objects.scale", (k,)) + _field_slots("objects.azimuth", (k,)))])


def bounds(slots: Sequence[Slot]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (float64) of a set, in physical units."""
    return (np.array([s.low for s in slots], np.float64),
            np.array([s.high for s in slots], np.float64))


def _leaf(scene: render.Scene, path: str):
    node = scene
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _replace(scene: render.Scene, path: str, value) -> render.Scene:
    head, _, rest = path.partition(".")
    if not rest:
        return scene.replace(**{head: value})
    return scene.replace(**{head: _replace(getattr(scene, head), rest, value)})


def get(scene: render.Scene, slots: Sequence[Slot]):
    """The values of ``slots`` as a vector (jax array; traceable)."""
    return jnp.stack([jnp.asarray(_leaf(scene, s.path))[s.index] for s in slots])


def put(scene: render.Scene, slots: Sequence[Slot], values) -> render.Scene:
    """A scene with ``slots`` set to ``values`` (traceable: gradients flow to values)."""
    by_path: dict[str, list[tuple[int, Slot]]] = {}
    for i, s in enumerate(slots):
        by_path.setdefault(s.path, []).append((i, s))
    values = jnp.asarray(values)
    for path, items in by_path.items():
        leaf = jnp.asarray(_leaf(scene, path))
        for i, s in items:
            leaf = leaf.at[s.index].set(values[i].astype(leaf.dtype))
        scene = _replace(scene, path, leaf)
    return scene


def clip(scene: render.Scene) -> render.Scene:
    """Every continuous LV of the valid objects and the globals clipped to its range;
    periodic angles wrapped into ``[0, 2 pi)``."""
    slots = all_slots(scene)
    lo, hi = bounds(slots)
    x = get(scene, slots)
    periodic = np.array([s.periodic for s in slots])
    x = jnp.where(periodic, jnp.mod(x, 2 * math.pi), jnp.clip(x, lo, hi))
    return put(scene, slots, x)


def perturb(key: jax.Array, scene: render.Scene, amount: float = 0.1,
            slots: Sequence[Slot] | None = None) -> render.Scene:
    """The scene with every continuous LV (or those of ``slots``) moved by uniform noise
    of ``amount`` times its range (angles by ``amount`` times 180 degrees), then
    clipped: a stand-in for the initialisation networks' output when starting
    optimisers from a known error."""
    slots = all_slots(scene) if slots is None else list(slots)
    lo, hi = bounds(slots)
    width = np.where([s.periodic for s in slots], math.pi, hi - lo)
    noise = jax.random.uniform(key, (len(slots),), minval=-1.0, maxval=1.0)
    return clip(put(scene, slots, get(scene, slots) + amount * width * noise))


# ---------------------------------------------------------------------------------------
# Standardised encodings for networks.

_GLOBAL_PATHS = ("camera.height", "camera.elevation", "light.ambient", "light.strength",
                 "light.azimuth", "light.elevation", "ground_rgb")
_OBJECT_PATHS = ("objects.position", "objects.scale", "objects.azimuth", "objects.rgb")


def _width(path: str) -> int:
    f = spec.FIELDS[path]
    size = int(np.prod(f.shape)) if f.shape else 1
    return 2 * size if f.periodic else size


GLOBAL_SIZE: int = sum(_width(p) for p in _GLOBAL_PATHS)
"""Length of :func:`encode_globals`' vector."""

NUM_CLASSES: int = len(spec.CLASS_NAMES)
MAX_SHAPES: int = max(spec.NUM_SHAPES)
OBJECT_SIZE: int = sum(_width(p) for p in _OBJECT_PATHS) + NUM_CLASSES + MAX_SHAPES
"""Length of one row of :func:`encode_objects`: continuous LVs, class and shape one-hot."""


def _encode(path: str, value):
    x = spec.standardize(path, jnp.asarray(value, jnp.float32))
    return x.reshape(x.shape[:-1] + (-1,)) if spec.FIELDS[path].periodic or spec.FIELDS[path].shape \
        else x[..., None]


def encode_globals(scene: render.Scene) -> jax.Array:
    """Standardised global LVs (camera, light with azimuth as cos/sin, ground RGB)."""
    return jnp.concatenate([_encode(p, _leaf(scene, p)) for p in _GLOBAL_PATHS], -1)


def encode_objects(scene: render.Scene) -> jax.Array:
    """(N, OBJECT_SIZE): standardised pose and colour, class and shape one-hot per slot."""
    obj = scene.objects
    parts = [_encode(p, _leaf(scene, p)) for p in _OBJECT_PATHS]
    parts += [jax.nn.one_hot(obj.class_id, NUM_CLASSES), jax.nn.one_hot(obj.shape_id, MAX_SHAPES)]
    return jnp.concatenate(parts, -1)


def _decode(path: str, x):
    f = spec.FIELDS[path]
    if f.periodic:
        return spec.unstandardize(path, x)
    value = spec.unstandardize(path, x)
    return value if f.shape else value[..., 0]


def _split(x, paths):
    out, start = {}, 0
    for p in paths:
        out[p] = x[..., start:start + _width(p)]
        start += _width(p)
    return out, x[..., start:]


def decode_globals(scene: render.Scene, x) -> render.Scene:
    """Inverse of :func:`encode_globals` into ``scene`` (its objects are kept)."""
    parts, _ = _split(jnp.asarray(x), _GLOBAL_PATHS)
    for p in _GLOBAL_PATHS:
        scene = _replace(scene, p, _decode(p, parts[p]).astype(jnp.float32))
    return scene


def decode_objects(scene: render.Scene, x) -> render.Scene:
    """Inverse of :func:`encode_objects` into ``scene``: class and shape by argmax
    (the shape clipped to its class's variants); ``valid`` is kept."""
    parts, rest = _split(jnp.asarray(x), _OBJECT_PATHS)
    for p in _OBJECT_PATHS:
        scene = _replace(scene, p, _decode(p, parts[p]).astype(jnp.float32))
    class_id = jnp.argmax(rest[..., :NUM_CLASSES], -1).astype(jnp.int32)
    shape_id = jnp.argmax(rest[..., NUM_CLASSES:], -1).astype(jnp.int32)
    shape_id = jnp.minimum(shape_id, jnp.asarray(spec.NUM_SHAPES)[class_id] - 1)
    return scene.replace(objects=scene.objects.replace(class_id=class_id, shape_id=shape_id))
