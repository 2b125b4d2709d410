"""Library objects rendered like grammar shapes: a validation set the grammar cannot make.

The hybrid-gradient paper (sec. 5.1) tunes the shape grammar so that a normal
estimator trained on grammar shapes does well on *other* shapes, rendered
differently. :class:`LibraryShapes` draws those: the procedural staplers, mugs and
bananas of :mod:`render.shapes` at their real sizes (:data:`render.spec.SCALE_RANGE`),
centred on their bounding sphere, turned by a random azimuth and seen by the same
random look-at camera as :class:`simopt_jax.simulators.ShapeSimulator`, through
:func:`render.render_sdf`. Appearance differs from grammar renders on purpose (a
solid texture in the object's frame, stripes, checks or waves in two random
colours, and another light direction); normals and depth do not depend on it.

Every example is a function of its own key, class and variant ids included (they are
traced: every family is evaluated and one selected), so the call jits and vmaps,
:meth:`LibraryShapes.draws` tells what each example shows, and
:func:`validation_set` gives the same examples in any chunking.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

import render
from render import shapes
from render.spec import CLASS_NAMES, NUM_SHAPES, SCALE_RANGE

PATTERNS: tuple[str, ...] = ("stripes", "checker", "waves")
"""Texture kinds, drawn uniformly per example."""


def _texture(key: jax.Array):
    """A random two-colour solid texture ``(N, 3) canonical points -> (N, 3) RGB``."""
    k_kind, k_colour, k_dir, k_freq, k_phase, k_waves = jax.random.split(key, 6)
    kind = jax.random.randint(k_kind, (), 0, len(PATTERNS))
    colours = jax.random.uniform(k_colour, (2, 3), minval=0.2, maxval=1.0)
    direction = jax.random.normal(k_dir, (3,))
    direction = direction / jnp.linalg.norm(direction)
    freq = jax.random.uniform(k_freq, (), minval=2.0, maxval=5.0)   # cycles per unit size
    phase = jax.random.uniform(k_phase, (3,), maxval=2 * math.pi)
    wave_freq = jax.random.normal(k_waves, (3, 3)) * 2 * math.pi * 2.0

    def albedo(q):
        stripes = (jnp.sin(2 * math.pi * freq * (q @ direction) + phase[0]) > 0).astype(q.dtype)
        cells = jnp.floor(q * (2 * freq) + phase / (2 * math.pi))
        checker = jnp.mod(jnp.sum(cells, -1), 2.0)
        waves = 0.5 + jnp.sum(jnp.sin(q @ wave_freq.T + phase), -1) / 6.0
        mix = jnp.where(kind == 0, stripes, jnp.where(kind == 1, checker, waves))
        return colours[0] + (colours[1] - colours[0]) * mix[..., None]

    return albedo


class Draw(NamedTuple):
    """What one example shows (leading (n,) when batched).

    Attributes:
      class_id, shape_id: int32 object class and variant (:mod:`render.shapes`).
      scale: the class's characteristic size, metres.
      azimuth: the object's turn about the vertical through its bounding-sphere
        centre, radians.
      eye: (3,) camera position, metres; it looks at the origin, where the
        bounding-sphere centre is.
    """

    class_id: Int[Array, ""]
    shape_id: Int[Array, ""]
    scale: Float[Array, ""]
    azimuth: Float[Array, ""]
    eye: Float[Array, "3"]


@dataclasses.dataclass(frozen=True)
class LibraryShapes:
    """Library objects rendered with normals and depth, in ``ShapeSimulator``'s framing.

    Attributes:
      num_examples: shapes per call.
      resolution: (H, W) of each image.
      distance: metres from the object's bounding-sphere centre to the camera. The
        default is nearer than ``ShapeSimulator``'s 0.45 so that objects cover about
        as many pixels as grammar shapes at ``Grammar.init_psi()`` (8% on average
        with the default field of view; 5% at 0.45), and every bounding sphere
        still fits in the image.
      elevation: (low, high) range of camera elevation above that centre, radians;
        the camera azimuth and the object's azimuth are uniform.
      config: the renderer's options.
      textured: a random solid texture (else the constant ``config.albedo``).
      classes: class ids (into :data:`render.spec.CLASS_NAMES`) to draw from,
        uniformly; the variant is uniform within the class.
      light_direction: towards the light, world frame (``ShapeSimulator`` uses
        ``render_sdf``'s default ``(0.4, 0.8, 0.45)``).
    """

    num_examples: int = 8
    resolution: tuple[int, int] = (32, 32)
    distance: float = 0.35
    elevation: tuple[float, float] = (math.radians(10.0), math.radians(50.0))
    config: render.SdfRenderConfig = render.SdfRenderConfig()
    textured: bool = True
    classes: tuple[int, ...] = tuple(range(len(CLASS_NAMES)))
    light_direction: tuple[float, float, float] = (-0.6, 0.7, -0.4)

    def __post_init__(self):
        if self.num_examples < 1:
            raise ValueError(f"num_examples={self.num_examples} must be >= 1")
        if not self.distance > 0:
            raise ValueError(f"distance={self.distance} must be > 0")
        low, high = self.elevation
        if not -math.pi / 2 < low <= high < math.pi / 2:
            raise ValueError(f"elevation={self.elevation} must be a range within (-pi/2, pi/2)")
        if not self.classes or any(c not in range(len(CLASS_NAMES)) for c in self.classes):
            raise ValueError(f"classes={self.classes} must be a non-empty tuple of ids in "
                             f"[0, {len(CLASS_NAMES)}) ({', '.join(CLASS_NAMES)})")
        if not np.linalg.norm(self.light_direction) > 0:
            raise ValueError(f"light_direction={self.light_direction} must be non-zero")

    def eye(self, key: jax.Array) -> jax.Array:
        """A camera position (3,) on the sphere of radius ``distance``, from ``key``."""
        k_az, k_el = jax.random.split(key)
        azimuth = jax.random.uniform(k_az, (), minval=0.0, maxval=2 * math.pi)
        elevation = jax.random.uniform(k_el, (), minval=self.elevation[0], maxval=self.elevation[1])
        return self.distance * jnp.stack([jnp.cos(elevation) * jnp.sin(azimuth),
                                          jnp.sin(elevation),
                                          jnp.cos(elevation) * jnp.cos(azimuth)])

    def draw(self, key: jax.Array) -> Draw:
        """The latents of the example ``example(key)`` renders (unbatched)."""
        k_class, k_shape, k_scale, k_az, k_view, _ = jax.random.split(key, 6)
        class_id = jnp.asarray(self.classes, jnp.int32)[
            jax.random.randint(k_class, (), 0, len(self.classes))]
        count = jnp.asarray(NUM_SHAPES, jnp.int32)[class_id]
        shape_id = jnp.minimum(jnp.floor(jax.random.uniform(k_shape, ()) * count), count - 1)
        low, high = jnp.asarray(SCALE_RANGE, jnp.float32)[class_id]
        return Draw(class_id=class_id, shape_id=shape_id.astype(jnp.int32),
                    scale=jax.random.uniform(k_scale, (), minval=low, maxval=high),
                    azimuth=jax.random.uniform(k_az, (), maxval=2 * math.pi),
                    eye=self.eye(k_view))

    def example(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One example ``(image (H, W, 3), normals (H, W, 3), depth (H, W))`` from ``key``."""
        d = self.draw(key)
        k_tex = jax.random.split(key, 6)[-1]
        centre, _ = shapes.bounding_sphere(d.class_id, d.shape_id)
        packed = shapes.packed_params(d.shape_id)
        c, s = jnp.cos(d.azimuth), jnp.sin(d.azimuth)

        def canonical(p):
            # World point -> canonical: undo R_y(azimuth) (+x turns towards -z, as in
            # render.spec), the scale and the move of the sphere's centre to the origin.
            x, y, z = p[..., 0], p[..., 1], p[..., 2]
            return jnp.stack([c * x - s * z, y, s * x + c * z], -1) / d.scale + centre

        def sdf(p):
            return d.scale * shapes.packed_sdf(canonical(p), d.class_id, packed)

        texture = _texture(k_tex) if self.textured else None
        image = render.render_sdf(
            sdf, d.eye, light_direction=self.light_direction,
            resolution=self.resolution, config=self.config,
            albedo=None if texture is None else (lambda p: texture(canonical(p))))
        return image.rgb, image.normals, image.depth

    def __call__(self, key: jax.Array) -> tuple[Float[Array, "n H W 3"], Float[Array, "n H W 3"],
                                                  Float[Array, "n H W"]]:
        """``num_examples`` examples from ``key``.

        Returns:
          ``(images (n, H, W, 3), normals (n, H, W, 3), depth (n, H, W))``; normals
          are world-frame unit vectors and depth metres, both 0 on the background.
        """
        return jax.vmap(self.example)(jax.random.split(key, self.num_examples))

    def draws(self, key: jax.Array) -> Draw:
        """The latents of the examples ``self(key)`` renders (fields (n, ...))."""
        return jax.vmap(self.draw)(jax.random.split(key, self.num_examples))


@functools.lru_cache(maxsize=16)
def _batch_renderer(library: LibraryShapes):
    """``jit(vmap(library.example))``, one per configuration (``num_examples`` aside)."""
    return jax.jit(jax.vmap(library.example))


def validation_set(key: jax.Array, num: int, *, batch_size: int = 256, **kwargs
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``LibraryShapes(num_examples=num, **kwargs)(key)`` as numpy, rendered in chunks.

    Args:
      key: PRNG key; the arrays are a function of it (and of ``kwargs``) only.
      num: number of examples.
      batch_size: examples per jitted call; it sets memory use, not the draws (any
        value gives the same examples, up to float rounding in the renderer).
      kwargs: other :class:`LibraryShapes` fields.

    Returns:
      ``(images (num, H, W, 3), normals (num, H, W, 3), depth (num, H, W))`` float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    library = LibraryShapes(num_examples=num, **kwargs)
    size = min(batch_size, num)
    # Pad to whole chunks (repeating the last key) so every chunk shares one compilation.
    chunks = -(-num // size)
    keys = jax.random.split(key, num)[np.minimum(np.arange(chunks * size), num - 1)]
    render_batch = _batch_renderer(dataclasses.replace(library, num_examples=1))
    parts = [[np.asarray(a) for a in render_batch(keys[i * size:(i + 1) * size])]
             for i in range(chunks)]
    return tuple(np.concatenate(arrays)[:num] for arrays in zip(*parts))
