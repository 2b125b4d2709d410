"""The one table of every scene latent: range, unit, shape and standardisation.

Everything else (``validate``, ``random_scene``, the renderers, the optimisers and
networks of ``lido_jax``) reads ranges and units from here. Ranges follow the LiDO
seed, Appendix A. Angles are radians in code, lengths metres.

Conventions (shared by every backend):

* World frame: y is up, the ground plane is ``y = 0``. The camera sits at
  ``(0, height, 0)`` and looks along ``+z`` tilted down by ``elevation``
  (``elevation = 0`` looks at the horizon, ``pi/2`` straight down). Image rows grow
  downwards, columns to the right, so ``+x`` is to the right of the image.
* Object ``position`` is the contact point ``(x, z)`` on the ground plane; the object
  is rotated by ``azimuth`` about the vertical axis through that point
  (counter-clockwise seen from above, i.e. from ``+x`` towards ``-z``).
* Light ``azimuth``/``elevation`` give the direction *towards* the light:
  ``(cos(el) sin(az), sin(el), cos(el) cos(az))``.
* Object ``scale`` is the class's characteristic size in metres: stapler length,
  mug body diameter, banana length. Each class has its own range.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("stapler", "mug", "banana")
"""Object classes, indexed by ``Objects.class_id``."""

NUM_SHAPES: tuple[int, ...] = (6, 15, 8)
"""Procedural shape variants per class, indexed by ``Objects.shape_id``."""

SCALE_RANGE: tuple[tuple[float, float], ...] = ((0.12, 0.16), (0.07, 0.10), (0.15, 0.20))
"""Per-class range of ``Objects.scale`` in metres (App. A)."""

MAX_OBJECTS: int = 7
"""Default padding of ``Objects``: the LiDO generator places 4-7 objects."""

VERTICAL_FOV: float = math.radians(50.0)
"""Fixed camera intrinsics: vertical field of view (square pixels, centred)."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One continuous latent.

    Attributes:
      path: dotted name in the ``Scene`` pytree, e.g. ``"camera.height"``.
      low, high: allowed closed range; a
        tuple gives one range per component of the trailing axis.
      unit: unit of the stored value.
      shape: trailing shape of one value (per object for ``objects.*``).
      periodic: angles that wrap at ``high``; standardised as (cos, sin).
    """

    path: str
    low: float | tuple[float, ...]
    high: float | tuple[float, ...]
    unit: str
    shape: tuple[int, ...] = ()
    periodic: bool = False

    @property
    def mean(self) -> np.ndarray:
        return 0.5 * (np.asarray(self.low) + np.asarray(self.high))

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of the uniform distribution on the range."""
        return (np.asarray(self.high) - np.asarray(self.low)) / math.sqrt(12.0)


_DEG = math.pi / 180.0

FIELDS: dict[str, Field] = {
    f.path: f
    for f in (
        Field("camera.height", 0.05, 0.75, "m"),
        Field("camera.elevation", 0.0, 75 * _DEG, "rad"),
        Field("light.ambient", 0.0, 1.0, "1"),
        Field("light.strength", 0.0, 2.0, "1"),
        Field("light.azimuth", 0.0, 2 * math.pi, "rad", periodic=True),
        Field("light.elevation", 0.0, 90 * _DEG, "rad"),
        Field("ground_rgb", 0.0, 1.0, "1", shape=(3,)),
        # Contact point (x, z): the part of the ground plane in front of the camera.
        Field("objects.position", (-2.0, 0.0), (2.0, 4.0), "m", shape=(2,)),
        Field("objects.scale", min(r[0] for r in SCALE_RANGE),
              max(r[1] for r in SCALE_RANGE), "m"),
        Field("objects.azimuth", 0.0, 2 * math.pi, "rad", periodic=True),
        Field("objects.rgb", 0.0, 1.0, "1", shape=(3,)),
    )
}
"""Every continuous latent by dotted path."""


def standardize(path: str, value):
    """Maps a latent to zero mean, unit variance under its uniform prior.

    Periodic angles map to ``(cos, sin)`` on a new trailing axis instead.
    Works on numpy and jax arrays alike.
    """
    f = FIELDS[path]
    if f.periodic:
        xp = _namespace(value)
        return xp.stack([xp.cos(value), xp.sin(value)], axis=-1)
    return (value - f.mean) / f.std


def unstandardize(path: str, value):
    """Inverse of :func:`standardize` (periodic angles from ``(cos, sin)``)."""
    f = FIELDS[path]
    if f.periodic:
        xp = _namespace(value)
        return xp.mod(xp.arctan2(value[..., 1], value[..., 0]), 2 * math.pi)
    return value * f.std + f.mean


def _namespace(x):
    if isinstance(x, (np.ndarray, float, int, np.generic)):
        return np
    import jax.numpy as jnp

    return jnp
