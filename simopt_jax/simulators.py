"""Simulators ``f(psi, r) -> data`` built from a distribution and a renderer.

:class:`ShapeSimulator` is the hybrid-gradient paper's generator (Eq. 5): shapes
``S = f_S(psi, r_S)`` from the CSG grammar, each rendered by
:func:`render.render_sdf` from a random viewpoint ``P = f_R(r_R)`` on a sphere around
it, with the renderer's surface normals and depth as labels. It is deterministic
given ``(psi, r)`` (common random numbers for finite differences) and plugs into
:func:`simopt_jax.hybrid.step` as its ``generator``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import render
from simopt_jax.grammar import Grammar


@dataclasses.dataclass(frozen=True)
class ShapeSimulator:
    """Grammar shapes rendered with normals and depth.

    Attributes:
      grammar: the shape distribution (its ``max_depth`` is static).
      num_examples: shapes per call.
      resolution: (H, W) of each image.
      distance: metres from the shape's origin to the camera.
      elevation: (low, high) range of camera elevation above the shape, radians;
        the azimuth is uniform.
      config: the renderer's options.
    """

    grammar: Grammar = Grammar()
    num_examples: int = 8
    resolution: tuple[int, int] = (32, 32)
    distance: float = 0.45
    elevation: tuple[float, float] = (math.radians(10.0), math.radians(50.0))
    config: render.SdfRenderConfig = render.SdfRenderConfig()

    def __post_init__(self):
        if self.num_examples < 1:
            raise ValueError(f"num_examples={self.num_examples} must be >= 1")
        if not self.distance > 0:
            raise ValueError(f"distance={self.distance} must be > 0")
        low, high = self.elevation
        if not -math.pi / 2 < low <= high < math.pi / 2:
            raise ValueError(f"elevation={self.elevation} must be a range within (-pi/2, pi/2)")

    def eye(self, key: jax.Array) -> jax.Array:
        """A camera position (3,) on the sphere of radius ``distance``, from ``key``."""
        k_az, k_el = jax.random.split(key)
        azimuth = jax.random.uniform(k_az, (), minval=0.0, maxval=2 * math.pi)
        elevation = jax.random.uniform(k_el, (), minval=self.elevation[0], maxval=self.elevation[1])
        return self.distance * jnp.stack([jnp.cos(elevation) * jnp.sin(azimuth),
                                          jnp.sin(elevation),
                                          jnp.cos(elevation) * jnp.cos(azimuth)])

    def render(self, tree, eye: jax.Array) -> render.Image:
        """One grammar shape ``tree`` seen from ``eye`` (3,), looking at its origin."""
        return render.render_sdf(functools.partial(self.grammar.sdf, tree), eye,
                                 resolution=self.resolution, config=self.config)

    def __call__(self, psi: dict, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``num_examples`` examples from grammar parameters ``psi`` and random string ``key``.

        Returns:
          ``(images (n, H, W, 3), normals (n, H, W, 3), depth (n, H, W))``; normals
          are world-frame unit vectors and depth metres, both 0 on the background.
        """
        def one(k):
            k_shape, k_view = jax.random.split(k)
            image = self.render(self.grammar.sample(k_shape, psi), self.eye(k_view))
            return image.rgb, image.normals, image.depth

        return jax.vmap(one)(jax.random.split(key, self.num_examples))
