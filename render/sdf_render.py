"""Render any signed distance function seen by a look-at camera: one shape, no scene.

For shapes that are not objects of a :class:`render.Scene`, such as the CSG shapes
of a grammar (hybrid-gradient sec. 5.1): the shape is ``sdf(p) -> distance`` for
points ``p`` (..., 3) in metres, seen from ``eye`` looking at ``target``, lit by
ambient light and one directional light. The output is a :class:`render.Image` with
the same conventions as the scene renderers: world-frame unit normals, depth along
the camera's forward axis (0 where nothing is hit), instance ``FIRST_OBJECT`` on the
shape and ``BACKGROUND`` elsewhere.

Plain sphere tracing with a fixed number of steps, so it jits and vmaps; the march
is not differentiated (its derivative is not the image's): optimise such shapes
with finite differences (:func:`simopt_jax.fd_vjp`) or use the scene renderer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from render.jax_renderer import BACKGROUND, FIRST_OBJECT, Image


@dataclasses.dataclass(frozen=True)
class SdfRenderConfig:
    """Static options of :func:`render_sdf`.

    Attributes:
      fov: vertical field of view, radians.
      steps: sphere-tracing steps per ray.
      hit_angle: a ray hits where ``sdf < hit_angle * t`` (a fraction of a pixel's
        angular size is sensible).
      far: metres; rays stop there.
      ambient, strength: light (uniform and directional strengths).
      albedo: RGB of the shape; background_rgb: of everything else.
    """

    fov: float = math.radians(40.0)
    steps: int = 64
    hit_angle: float = 1e-3
    far: float = 10.0
    ambient: float = 0.3
    strength: float = 0.8
    albedo: tuple[float, float, float] = (0.8, 0.8, 0.8)
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if not 0 < self.fov < math.pi:
            raise ValueError(f"fov={self.fov} must be in (0, pi) radians")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if not (self.hit_angle > 0 and self.far > 0):
            raise ValueError(f"hit_angle={self.hit_angle} and far={self.far} must be > 0")


def camera_rays(eye: Float[ArrayLike, "3"], target: Float[ArrayLike, "3"], resolution,
                fov: float, up=(0.0, 1.0, 0.0)):
    """Unit ray directions (H, W, 3) through pixel centres and the forward axis (3,).

    Image rows go down and columns go right; ``up`` must not be parallel to the
    viewing direction.
    """
    h, w = resolution
    eye, target = jnp.asarray(eye, jnp.float32), jnp.asarray(target, jnp.float32)
    forward = target - eye
    forward = forward / jnp.linalg.norm(forward)
    right = jnp.cross(forward, jnp.asarray(up, jnp.float32))
    right = right / jnp.linalg.norm(right)
    true_up = jnp.cross(right, forward)
    tan_half = math.tan(fov / 2)
    y = -((jnp.arange(h) + 0.5) / h * 2 - 1) * tan_half
    x = ((jnp.arange(w) + 0.5) / w * 2 - 1) * tan_half * (w / h)
    d = (forward + x[None, :, None] * right + y[:, None, None] * true_up)
    return d / jnp.linalg.norm(d, axis=-1, keepdims=True), forward


def render_sdf(sdf: Callable[[jax.Array], jax.Array], eye: Float[ArrayLike, "3"], *,
               target: Float[ArrayLike, "3"] = (0.0, 0.0, 0.0),
               light_direction: Float[ArrayLike, "3"] = (0.4, 0.8, 0.45),
               resolution: tuple[int, int] = (32, 32),
               config: SdfRenderConfig = SdfRenderConfig(),
               albedo: Callable[[jax.Array], jax.Array] | None = None) -> Image:
    """Renders the shape ``sdf`` from ``eye`` (metres) looking at ``target``.

    Args:
      sdf: ``(..., 3) points -> (...)`` signed distances, metres (negative inside).
      eye, target: camera position and the point it looks at, metres.
      light_direction: towards the light (normalised here).
      resolution: static (H, W) in pixels.
      config: static options.
      albedo: optional texture, ``(N, 3) world points -> (N, 3)`` RGB in [0, 1],
        evaluated at every ray's end point (only hit pixels use it; a (3,) result
        broadcasts); ``None`` gives the constant ``config.albedo``.

    Returns:
      :class:`render.Image` with fields of shape (H, W, ...).

    Raises:
      ValueError: a bad resolution, or ``eye`` equal to ``target`` (when concrete).
    """
    h, w = (int(r) for r in resolution)
    if h < 1 or w < 1:
        raise ValueError(f"resolution={resolution} must be two positive ints")
    if not isinstance(eye, jax.core.Tracer) and not isinstance(target, jax.core.Tracer):
        if np.array_equal(np.asarray(eye, np.float32), np.asarray(target, np.float32)):
            raise ValueError(f"eye={eye} must differ from target={target}")
    eye = jnp.asarray(eye, jnp.float32)
    dirs, forward = camera_rays(eye, target, (h, w), config.fov)
    d = dirs.reshape(-1, 3)
    light = jnp.asarray(light_direction, jnp.float32)
    light = light / jnp.linalg.norm(light)

    def trace(direction):
        # No early stop: every step moves t by the distance bound, so a hit ray keeps
        # closing in on its surface (grazing rays too) instead of freezing within
        # hit_angle * t of it.
        def body(_, t):
            return jnp.minimum(t + sdf(eye + t * direction), config.far)

        t = jax.lax.fori_loop(0, config.steps, body, jnp.float32(1e-3))
        hit = (sdf(eye + t * direction) < config.hit_angle * t) & (t < config.far)
        return t, hit

    t, hit = jax.lax.stop_gradient(jax.vmap(trace)(d))
    points = eye + t[:, None] * d
    grads = jax.vmap(jax.grad(lambda p: sdf(p).sum()))(points)
    normals = grads / jnp.maximum(jnp.linalg.norm(grads, axis=-1, keepdims=True), 1e-12)
    normals = jnp.where(hit[:, None], normals, 0.0)
    shade = config.ambient + config.strength * jnp.maximum(normals @ light, 0.0)
    colour = (jnp.asarray(config.albedo) if albedo is None
              else jnp.asarray(albedo(points), jnp.float32))
    rgb = jnp.where(hit[:, None], jnp.clip(colour * shade[:, None], 0, 1),
                    jnp.asarray(config.background_rgb, jnp.float32))
    depth = jnp.where(hit, t * (d @ forward), 0.0)
    instance = jnp.where(hit, FIRST_OBJECT, BACKGROUND).astype(jnp.int32)
    return Image(rgb=rgb.reshape(h, w, 3), depth=depth.reshape(h, w),
                 normals=normals.reshape(h, w, 3), instance=instance.reshape(h, w))
