"""Simulators ``f(psi, r) -> data`` built from a distribution and a renderer.

:class:`ShapeSimulator` is the hybrid-gradient paper's generator (Eq. 5): shapes
``S = f_S(psi, r_S)`` from the CSG grammar, each rendered by
:func:`render.render_sdf` from a random viewpoint ``P = f_R(r_R)`` on a sphere around
it, with the renderer's surface normals and depth as labels. It is deterministic
given ``(psi, r)`` (common random numbers for finite differences) and plugs into
:func:`simopt_jax.hybrid.step` as its ``generator``.

Any renderer can draw the shapes (``backend``, one of :data:`BACKENDS`): ``"jax"``
sphere-traces the SDF; ``"gl"`` (pyrender) and ``"blender"`` (Cycles) draw a
marching-cubes mesh of it on the host through ``render.black_box``
(:mod:`simopt_jax.shape_hosts`). The shape is sampled in JAX in every case, so
the same ``(psi, key)`` gives the same shape and viewpoint whatever the backend.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import render
from render import black_box
from simopt_jax import shape_hosts
from simopt_jax.grammar import Grammar
from simopt_jax.scenes import BACKENDS


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
      config: the renderer's options (every backend follows its field of view,
        ``far``, light strengths, albedo and background colour).
      light_direction: towards the directional light, world frame.
      backend: the renderer, one of :data:`BACKENDS`.
      mesh_resolution: for ``"gl"``/``"blender"``, SDF samples along each side of
        the cube around the shape's bounding sphere that marching cubes meshes.
    """

    grammar: Grammar = Grammar()
    num_examples: int = 8
    resolution: tuple[int, int] = (32, 32)
    distance: float = 0.45
    elevation: tuple[float, float] = (math.radians(10.0), math.radians(50.0))
    config: render.SdfRenderConfig = render.SdfRenderConfig()
    light_direction: tuple[float, float, float] = (0.4, 0.8, 0.45)
    backend: str = "jax"
    mesh_resolution: int = 48

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {BACKENDS}")
        if self.mesh_resolution < 8:
            raise ValueError(f"mesh_resolution={self.mesh_resolution} must be >= 8")
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
        """One grammar shape ``tree`` seen from ``eye`` (3,), looking at its origin.

        With a host backend the geometry enters under ``stop_gradient`` (the tracer
        does not differentiate its march either): differentiate the simulator in
        ``psi`` by finite differences with common random numbers.
        """
        if self.backend == "jax":
            return render.render_sdf(functools.partial(self.grammar.sdf, tree), eye,
                                     resolution=self.resolution, config=self.config,
                                     light_direction=self.light_direction)
        grid, lo, spacing = jax.lax.stop_gradient(self.sdf_grid(tree))
        h, w = self.resolution
        f32 = jnp.float32
        fn = black_box(shape_hosts.host_function(self),
                       (jax.ShapeDtypeStruct((h, w, 3), f32), jax.ShapeDtypeStruct((h, w), f32),
                        jax.ShapeDtypeStruct((h, w, 3), f32),
                        jax.ShapeDtypeStruct((h, w), jnp.int32)),
                       vmap_method="broadcast_all")
        rgb, depth, normals, instance = fn(grid, lo, spacing,
                                           jax.lax.stop_gradient(jnp.asarray(eye, f32)))
        return render.Image(rgb=rgb, depth=depth, normals=normals, instance=instance)

    def sdf_grid(self, tree) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The shape's SDF on a ``G**3`` grid (``G = mesh_resolution``) around its
        bounding sphere: ``(values (G, G, G), lo (), spacing ())``, sample ``(i, j, k)``
        at ``lo + spacing * (i, j, k)``. Evaluated one ``x`` slab at a time."""
        g = self.mesh_resolution
        # A margin of a few cells, so the surface never touches the grid's faces.
        half = self.grammar.bounding_radius(tree).astype(jnp.float32) * (1 + 4 / g) + 1e-3
        spacing = 2 * half / (g - 1)
        axis = -half + spacing * jnp.arange(g, dtype=jnp.float32)
        y, z = jnp.meshgrid(axis, axis, indexing="ij")

        def slab(x):
            points = jnp.stack([jnp.full_like(y, x), y, z], axis=-1)
            return self.grammar.sdf(tree, points).astype(jnp.float32)

        return jax.lax.map(slab, axis), -half, spacing

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
