"""The camera of :mod:`render.spec` as plain maths: projection and back-projection.

Every backend draws through this model (tested against each renderer's own camera);
metrics, the scene generator and initialisation use these functions instead of
rendering. Pixel coordinates are ``(row, col)`` with pixel centres at integers, rows
growing downwards. Pure ``jax.numpy``: jit, vmap and grad work; numpy inputs are fine.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from render import spec


def focal_pixels(resolution) -> float:
    """Focal length in pixels (square pixels, vertical field of view ``spec.VERTICAL_FOV``)."""
    return resolution[0] / (2 * math.tan(spec.VERTICAL_FOV / 2))


def to_camera(camera, points):
    """World points (..., 3) -> camera coordinates (x right, y up, z forward) (..., 3)."""
    se, ce = jnp.sin(camera.elevation), jnp.cos(camera.elevation)
    rel = jnp.asarray(points) - jnp.stack([jnp.zeros_like(se), camera.height, jnp.zeros_like(se)])
    x, y, z = rel[..., 0], rel[..., 1], rel[..., 2]
    return jnp.stack([x, y * ce + z * se, -y * se + z * ce], -1)


def project(camera, points, resolution):
    """(row, col) pixel coordinates (..., 2) of world points (..., 3).

    Points behind the camera (depth <= 0) get NaN.
    """
    h, w = resolution
    c = to_camera(camera, points)
    f = focal_pixels(resolution)
    depth = jnp.where(c[..., 2] > 0, c[..., 2], jnp.nan)
    row = (h - 1) / 2 - f * c[..., 1] / depth
    col = (w - 1) / 2 + f * c[..., 0] / depth
    return jnp.stack([row, col], -1)


def ground_point(camera, pixels, resolution):
    """Contact points (..., 2) = (x, z) on the ground plane seen at pixels (..., 2).

    Pixels at or above the horizon have no ground point: NaN.
    """
    h, w = resolution
    pixels = jnp.asarray(pixels)
    f = focal_pixels(resolution)
    x_c = (pixels[..., 1] - (w - 1) / 2) / f
    y_c = ((h - 1) / 2 - pixels[..., 0]) / f
    se, ce = jnp.sin(camera.elevation), jnp.cos(camera.elevation)
    down = se - y_c * ce                      # -(world y) of the ray (x_c, y_c, 1)
    forward = y_c * se + ce                   # world z of the ray
    t = jnp.where(down > 0, camera.height / jnp.where(down > 0, down, 1.0), jnp.nan)
    return jnp.stack([t * x_c, t * forward], -1)


def horizon_row(camera, resolution):
    """Image row (may lie outside the image) where the ground plane meets the sky."""
    h = resolution[0]
    return (h - 1) / 2 - focal_pixels(resolution) * jnp.tan(camera.elevation)
