"""AutoSimulate's CLEVR experiment (sec. 5.1) in miniature: a scene simulator.

Scenes of spheres, cubes and cylinders standing on the ground plane ``y = 0``,
seen by a camera at distance ``camera_distance`` looking at the origin from a
``psi``-controlled elevation, lit by ambient light and a directional key light,
rendered by a multi-object sphere tracer with per-pixel class labels (0: ground
and background, 1: sphere, 2: cube, 3: cylinder; :data:`CLASS_NAMES`). The task
is semantic segmentation, as in the paper.

The simulator is ``q_psi(s)`` followed by a deterministic ``decode(s)``
(AutoSimulate sec. 4.1), a :class:`simopt_jax.autosimulate.Simulator`. ``s`` and
``psi`` are dicts by part (a :class:`simopt_jax.distributions.Joint`):

====================  ==========================  ===========================================
part                  distribution                what ``psi`` controls (optimised)
====================  ==========================  ===========================================
``light``             ``LogNormal``, (2,)         ambient and key-light strengths
``elevation``         ``Gaussian``, ()            camera elevation, radians (clipped in decode)
``offset``            ``Iid(Gaussian, n)``, (2,)  per-object (x, z) offsets from the slots of
                                                  the chosen region, metres
``colour``            ``Iid(Gaussian, n)``,       RGB per class (rows: sphere, cube,
                      (3, 3)                      cylinder; clipped to [0, 1] in decode)
``layout``            ``Categorical``,            which region the objects stand in and the
                      (2 num_regions,)            rendering quality: ``layout = 2 region +
                                                  quality`` (0 low, 1 high), the paper's
                                                  54-parameter discrete experiment in small
``class``             ``Uniform(0, 3)``, (n,)     nuisance (not optimised): class ``floor + 1``
``size``              ``Uniform``, (n,)           nuisance: object size, metres
``azimuth``           ``Uniform(0, 2 pi)``, (n,)  nuisance: object rotation about ``y``
``noise``             ``Uniform(-1, 1)``,         nuisance: pixel noise of low quality
                      (H, W, 3)
====================  ==========================  ===========================================

Every object draws an RGB for each of the three classes and shows the one of its
class: the product form keeps ``q`` a :class:`Joint`, at the cost of score terms
from the unused draws (extra variance, no bias). With the default 3 objects and 4
regions ``psi`` has 36 numbers (:meth:`SceneSimulator.psi_bounds` gives the box
baselines search in).

Low quality traces ``steps[0]`` sphere-tracing steps, casts no shadows and adds
pixel noise; high quality traces ``steps[1]`` steps and casts a hard shadow ray
towards the key light. Both run the same fixed loops (low quality freezes its
rays after ``steps[0]`` steps), so ``decode`` jits and vmaps and costs the same
either way. The march is not differentiated: the image is differentiable in the
light strengths and colours (a pathwise gradient is exact for those), not in the
geometry; the :class:`Categorical` makes the simulator a score-function one.

Any renderer can draw the scenes (``SceneSimulator(backend=...)``, one of
:data:`BACKENDS`): ``"jax"`` (default) is the sphere tracer above; ``"gl"``
(pyrender over EGL) and ``"blender"`` (Cycles) rasterise or path-trace meshes of the
same shapes from the same camera and light on the host
(:mod:`simopt_jax.scene_hosts`), entered through ``render.black_box``, so ``decode``
still jits and vmaps. All backends read ``s`` through one decoding,
:meth:`SceneSimulator.parts`. On the host, labels come from the renderer's instance
pass, high quality turns shadows on, low quality adds the same pixel noise, and the
image's derivatives in the light strengths and colours are finite differences
(``fd``; the geometry is not differentiated, as in the tracer).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from render import shapes
from render.black_box import black_box
from render.finite_diff import FD
from render.sdf_render import camera_rays
from simopt_jax import scene_hosts
from simopt_jax.autosimulate import Simulator
from simopt_jax.distributions import Categorical, Gaussian, Iid, Joint, LogNormal, Uniform

BACKENDS: tuple[str, ...] = ("jax", "gl", "blender")
"""Renderers :class:`SceneSimulator` can draw with (its ``backend``)."""

CLASS_NAMES: tuple[str, ...] = ("background", "sphere", "cube", "cylinder")
"""Label of each class index; 0 is the ground plane and the sky."""

DEFAULT_COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.80, 0.25, 0.20), (0.25, 0.70, 0.30), (0.25, 0.35, 0.85))
"""Mean RGB of spheres, cubes and cylinders for :meth:`SceneSimulator.init_psi`."""

# Ranges of psi's natural quantities: they define SceneSimulator.psi_bounds.
_LIGHT_MEDIAN = (0.02, 2.0)       # ambient and key-light strength medians
_LIGHT_SIGMA = (0.01, 1.0)        # spread of log strength
_ELEVATION_SCALE = (math.radians(0.5), math.radians(20.0))
_OFFSET_LOC = (-0.4, 0.4)         # metres
_OFFSET_SCALE = (0.01, 0.5)       # metres
_COLOUR_LOC = (0.0, 1.0)
_COLOUR_SCALE = (0.01, 0.5)
_LOGITS = (-10.0, 10.0)           # layout logits (softmax is shift invariant)

_CUBE = 0.8      # cube half side, in units of the object size (sphere radius)
_CYLINDER = 0.8  # cylinder radius and half height, same units
_SHADOW_BIAS = 0.02   # metres along the normal where shadow rays start
_SHADOW_HIT = 1e-3    # metres: a shadow ray closer than this to a surface is blocked


class SceneParts(NamedTuple):
    """One decoded sample ``s``: what every backend draws (:meth:`SceneSimulator.parts`).

    Attributes:
      ambient, key_light: () float32 light strengths.
      elevation: () float32 camera elevation, radians, clipped to ``elevation_range``.
      high: () bool, high rendering quality (shadows, no noise).
      xz: (n, 2) float32 contact points of the objects on the ground, metres.
      classes: (n,) int32 classes in {1, 2, 3} (sphere, cube, cylinder).
      size: (n,) float32 object sizes, metres.
      cos_a, sin_a: (n,) float32 cosine and sine of the objects' azimuths; a point
        ``p`` is ``(cos_a dx - sin_a dz, y, sin_a dx + cos_a dz)`` in the frame of
        an object standing at ``xz``, with ``(dx, dz) = (p_x, p_z) - xz``.
      rgb: (n, 3) float32 albedo of each object, in [0, 1].
    """

    ambient: jax.Array
    key_light: jax.Array
    elevation: jax.Array
    high: jax.Array
    xz: jax.Array
    classes: jax.Array
    size: jax.Array
    cos_a: jax.Array
    sin_a: jax.Array
    rgb: jax.Array


def _in_range(name: str, value, low: float, high: float) -> jax.Array:
    """``value`` as a float array; ``ValueError`` naming ``name`` unless in [low, high].

    Traced values pass unchecked.
    """
    value = jnp.asarray(value, dtype=jnp.result_type(float))
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value)
        if not np.all((array >= low) & (array <= high)):
            raise ValueError(f"{name} must be in [{low:.6g}, {high:.6g}] everywhere, got {array}")
    return value


def _check_broadcast(name: str, value: jax.Array, shape: tuple[int, ...]) -> None:
    """``ValueError`` naming ``name`` unless ``value`` broadcasts to exactly ``shape``."""
    try:
        fits = np.broadcast_shapes(value.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {value.shape} does not broadcast to shape {shape}")


def _is_pair(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)


@dataclasses.dataclass(frozen=True)
class SceneSimulator:
    """Spheres, cubes and cylinders on a ground plane: images and label maps.

    Attributes:
      num_objects: objects per scene, ``n``.
      resolution: (H, W) pixels.
      num_regions: placement regions, centred on a circle of radius
        ``region_radius`` around the origin on the ground plane.
      region_radius: metres from the origin to each region's centre.
      cluster_radius: metres from a region's centre to its ``n`` object slots (evenly
        spaced on a circle); the objects' Gaussian offsets are added to the slots.
      size_range: (low, high) object size, metres: sphere radius; cubes have half
        side and cylinders radius and half height ``0.8`` times it.
      camera_distance: metres from the camera to the origin it looks at.
      fov: vertical field of view, radians.
      elevation_range: (low, high) camera elevation, radians, in (0, pi/2):
        decode clips the sampled elevation to it, and it bounds its mean.
      light_azimuth, light_elevation: direction towards the key light, radians
        (azimuth from ``+z`` towards ``+x``).
      steps: sphere-tracing steps per ray of (low, high) quality.
      shadow_steps: steps of a shadow ray (high quality only).
      noise: amplitude of the uniform pixel noise of low quality.
      hit_angle: a ray has reached an object where its distance is below
        ``hit_angle * t`` (radians: a fraction of a pixel's angular size); a ray that
        has not (grazing a silhouette, or out of steps) is labelled and shaded as
        the ground or sky behind it.
      far: metres; rays stop there (the sky).
      ground_rgb, sky_rgb: colours of the ground plane (shaded) and the sky (flat).
      backend: renderer of :meth:`decode`, one of :data:`BACKENDS`. ``"jax"`` (the
        default) is the sphere tracer above. ``"gl"`` (pyrender over EGL) and
        ``"blender"`` (Cycles in the worker processes of :mod:`render.blender`) draw
        the same scene as triangle meshes on the host, entered through
        ``render.black_box`` (see :mod:`simopt_jax.scene_hosts`).
      fd: finite differences of a host backend's image in the light strengths and
        colours; host renderers quantise colour to 8 bits, so the step is far above
        1/255 of the change it measures.
    """

    num_objects: int = 3
    resolution: tuple[int, int] = (32, 32)
    num_regions: int = 4
    region_radius: float = 0.8
    cluster_radius: float = 0.5
    size_range: tuple[float, float] = (0.25, 0.42)
    camera_distance: float = 4.5
    fov: float = math.radians(45.0)
    elevation_range: tuple[float, float] = (math.radians(10.0), math.radians(80.0))
    light_azimuth: float = math.radians(-50.0)
    light_elevation: float = math.radians(55.0)
    steps: tuple[int, int] = (10, 48)
    shadow_steps: int = 24
    noise: float = 0.08
    hit_angle: float = 1e-3
    far: float = 20.0
    ground_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)
    sky_rgb: tuple[float, float, float] = (0.12, 0.12, 0.16)
    backend: str = "jax"
    fd: FD = FD(step=0.05)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {BACKENDS}")
        if not isinstance(self.fd, FD):
            raise ValueError(f"fd={self.fd!r} must be a render.FD")

        def count(name, value, minimum=1):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r} must be an int >= {minimum}")

        count("num_objects", self.num_objects)
        count("num_regions", self.num_regions)
        count("shadow_steps", self.shadow_steps)
        for name in ("resolution", "steps", "size_range", "elevation_range", "ground_rgb",
                     "sky_rgb"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # hashable: static
        if len(self.resolution) != 2:
            raise ValueError(f"resolution={self.resolution} must be (H, W)")
        for r in self.resolution:
            count("resolution", r)
        if len(self.steps) != 2 or not all(
                isinstance(k, int) and not isinstance(k, bool) for k in self.steps) or not (
                1 <= self.steps[0] <= self.steps[1]):
            raise ValueError(f"steps={self.steps} must be ints (low, high), 1 <= low <= high")
        low, high = self.size_range
        if not 0 < low <= high:
            raise ValueError(f"size_range={self.size_range} must have 0 < low <= high")
        low, high = self.elevation_range
        if not 0 < low < high < math.pi / 2:
            raise ValueError(f"elevation_range={self.elevation_range} must have "
                             f"0 < low < high < pi/2 radians")
        if not 0 < self.fov < math.pi:
            raise ValueError(f"fov={self.fov} must be in (0, pi) radians")
        if not self.camera_distance > 0:
            raise ValueError(f"camera_distance={self.camera_distance} must be > 0")
        if not self.hit_angle > 0:
            raise ValueError(f"hit_angle={self.hit_angle} must be > 0")
        if not self.far > self.camera_distance:
            raise ValueError(f"far={self.far} must exceed camera_distance={self.camera_distance}")
        if not (self.region_radius >= 0 and self.cluster_radius >= 0 and self.noise >= 0):
            raise ValueError(f"region_radius={self.region_radius}, cluster_radius="
                             f"{self.cluster_radius} and noise={self.noise} must be >= 0")

    # --- q_psi ---------------------------------------------------------------------

    def distribution(self) -> Joint:
        """``q_psi`` over scene parameters ``s`` (the table in the module docstring)."""
        n = self.num_objects
        return Joint((
            ("light", LogNormal()),
            ("elevation", Gaussian()),
            ("offset", Iid(Gaussian(), n)),
            ("colour", Iid(Gaussian(), n)),
            ("layout", Categorical()),
            ("class", Uniform(0.0, 3.0, (n,))),
            ("size", Uniform(*self.size_range, (n,))),
            ("azimuth", Uniform(0.0, 2 * math.pi, (n,))),
            ("noise", Uniform(-1.0, 1.0, (*self.resolution, 3))),
        ))

    def init_psi(self, *, ambient=0.4, key_light=0.8, light_sigma=0.2,
                 elevation=math.radians(35.0), elevation_scale=math.radians(4.0),
                 offset_loc=(0.0, 0.0), offset_scale=0.12, colour_loc=DEFAULT_COLOURS,
                 colour_scale=0.1, layout_probs=None) -> dict[str, Any]:
        """``psi`` from natural quantities; ``ValueError`` naming one out of its range.

        Args:
          ambient, key_light: median light strengths, in [0.02, 2].
          light_sigma: spread of their logs, () or (2,), in [0.01, 1].
          elevation: mean camera elevation, radians, within ``elevation_range``.
          elevation_scale: its standard deviation, radians, in [0.5, 20] degrees.
          offset_loc: (2,) mean (x, z) offset of every object from its slot, metres,
            in [-0.4, 0.4].
          offset_scale: () or (2,) standard deviation of the offsets, metres, in
            [0.01, 0.5].
          colour_loc: (3, 3) mean RGB per class (rows sphere, cube, cylinder), in [0, 1].
          colour_scale: () or (3, 3) standard deviation of RGB, in [0.01, 0.5].
          layout_probs: (num_regions, 2) probabilities of (region, quality) (quality 0
            low, 1 high), ``> 0``, normalised here, none below ``exp(-10)`` of their
            sum; ``None``: uniform.
        """
        light = jnp.stack([_in_range("ambient", ambient, *_LIGHT_MEDIAN),
                           _in_range("key_light", key_light, *_LIGHT_MEDIAN)])
        light_sigma = _in_range("light_sigma", light_sigma, *_LIGHT_SIGMA)
        elevation = _in_range("elevation", elevation, *self.elevation_range)
        elevation_scale = _in_range("elevation_scale", elevation_scale, *_ELEVATION_SCALE)
        offset_loc = _in_range("offset_loc", offset_loc, *_OFFSET_LOC)
        offset_scale = _in_range("offset_scale", offset_scale, *_OFFSET_SCALE)
        colour_loc = _in_range("colour_loc", colour_loc, *_COLOUR_LOC)
        colour_scale = _in_range("colour_scale", colour_scale, *_COLOUR_SCALE)
        for name, value, shape in (("ambient", light[0], ()), ("key_light", light[1], ()),
                                   ("elevation", elevation, ()), ("offset_loc", offset_loc, (2,)),
                                   ("colour_loc", colour_loc, (3, 3))):
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
        for name, value, shape in (("light_sigma", light_sigma, (2,)),
                                   ("elevation_scale", elevation_scale, ()),
                                   ("offset_scale", offset_scale, (2,)),
                                   ("colour_scale", colour_scale, (3, 3))):
            _check_broadcast(name, value, shape)
        shape = (self.num_regions, 2)
        if layout_probs is None:
            probs = jnp.full(shape, 1.0 / (2 * self.num_regions))
        else:
            probs = jnp.asarray(layout_probs, dtype=jnp.result_type(float))
            if probs.shape != shape:
                raise ValueError(f"layout_probs must have shape (num_regions, 2) = {shape}, "
                                 f"got {probs.shape}")
            if not isinstance(probs, jax.core.Tracer):
                array = np.asarray(probs)
                if not (np.all(array > 0) and np.all(array >= math.exp(_LOGITS[0]) * array.sum())):
                    raise ValueError(f"layout_probs must be > 0, each at least exp({_LOGITS[0]:g})"
                                     f" of their sum, got {array}")
            probs = probs / jnp.sum(probs)
        psi = self.distribution().init(
            light=LogNormal.init(light, light_sigma),
            elevation=Gaussian.init(elevation, elevation_scale),
            offset=Gaussian.init(offset_loc, offset_scale),
            colour=Gaussian.init(colour_loc, colour_scale),
            layout=Categorical.init(probs.reshape(-1)))
        return self.check_psi(psi)

    def psi_bounds(self) -> dict[str, Any]:
        """The box of sensible ``psi``: a pytree like ``psi`` with a ``(low, high)``
        pair of float arrays (shaped like the leaf) for every leaf.

        Baselines such as Bayesian optimisation and random search search in it
        (:meth:`flat_bounds` gives it as their ``(d, 2)`` array), and
        :meth:`check_psi` validates ``psi`` against it (allowing float32 rounding).
        In natural quantities:
        light medians in [0.02, 2], log-spreads in [0.01, 1]; mean elevation within
        ``elevation_range``, its scale in [0.5, 20] degrees; offsets' mean in
        [-0.4, 0.4] m and scale in [0.01, 0.5] m; colour means in [0, 1] and scales
        in [0.01, 0.5]; layout logits in [-10, 10]. Log-parameterised leaves
        (``loc`` of ``light``, every ``log_scale``) have the logs of those bounds.
        """
        def box(shape, low, high, log=False):
            low, high = (math.log(low), math.log(high)) if log else (low, high)
            return (np.full(shape, low, np.float32), np.full(shape, high, np.float32))

        return {
            "light": {"loc": box((2,), *_LIGHT_MEDIAN, log=True),
                      "log_scale": box((2,), *_LIGHT_SIGMA, log=True)},
            "elevation": {"loc": box((), *self.elevation_range),
                          "log_scale": box((), *_ELEVATION_SCALE, log=True)},
            "offset": {"loc": box((2,), *_OFFSET_LOC),
                       "log_scale": box((2,), *_OFFSET_SCALE, log=True)},
            "colour": {"loc": box((3, 3), *_COLOUR_LOC),
                       "log_scale": box((3, 3), *_COLOUR_SCALE, log=True)},
            "layout": {"logits": box((2 * self.num_regions,), *_LOGITS)},
            "class": {}, "size": {}, "azimuth": {}, "noise": {},
        }

    def flat_bounds(self) -> np.ndarray:
        """:meth:`psi_bounds` as a ``(d, 2)`` float64 array of (low, high), in the order
        of ``jax.flatten_util.ravel_pytree(psi)[0]`` (the baselines' box)."""
        bounds = self.psi_bounds()
        low, high = (ravel_pytree(jax.tree.map(lambda b, i=i: b[i], bounds, is_leaf=_is_pair))[0]
                     for i in (0, 1))
        return np.stack([np.asarray(low), np.asarray(high)], axis=1).astype(np.float64)

    def check_psi(self, psi: dict[str, Any]) -> dict[str, Any]:
        """``psi`` itself; ``ValueError`` naming a leaf that is missing, misshaped or
        outside :meth:`psi_bounds` (values are checked when concrete, not traced)."""
        bounds = self.psi_bounds()
        want = jax.tree.structure(jax.tree.map(lambda b: b[0], bounds, is_leaf=_is_pair))
        if jax.tree.structure(psi) != want:
            raise ValueError(f"psi must have the structure {want}, got {jax.tree.structure(psi)}")
        flat_psi = jax.tree_util.tree_flatten_with_path(psi)[0]
        flat_bounds = jax.tree.leaves(bounds, is_leaf=_is_pair)
        for (path, leaf), (low, high) in zip(flat_psi, flat_bounds):
            name = f"psi{jax.tree_util.keystr(path)}"
            if jnp.shape(leaf) != low.shape:
                raise ValueError(f"{name} must have shape {low.shape}, got {jnp.shape(leaf)}")
            if not isinstance(leaf, jax.core.Tracer):
                value, low, high = (np.asarray(x, np.float64) for x in (leaf, low, high))
                slack = 1e-6 * (1 + np.maximum(np.abs(low), np.abs(high)))  # float32 rounding
                outside = ~((value >= low - slack) & (value <= high + slack))
                if np.any(outside):
                    raise ValueError(
                        f"{name} must be in [{float(low.min()):.6g}, {float(high.max()):.6g}]"
                        f" everywhere, got {value}")
        return psi

    def layout_probabilities(self, psi: dict[str, Any]) -> Float[Array, "regions 2"]:
        """``(num_regions, 2)`` probabilities of (region, quality) under ``psi``."""
        return jax.nn.softmax(psi["layout"]["logits"]).reshape(self.num_regions, 2)

    # --- decode --------------------------------------------------------------------

    def region_centres(self) -> np.ndarray:
        """``(num_regions, 2)`` (x, z) centres of the placement regions, metres."""
        angles = 2 * np.pi * np.arange(self.num_regions) / self.num_regions + np.pi / 4
        return self.region_radius * np.stack([np.cos(angles), np.sin(angles)], -1)

    def slots(self) -> np.ndarray:
        """``(num_objects, 2)`` (x, z) offsets of the objects' slots from a region's centre."""
        if self.num_objects == 1:
            return np.zeros((1, 2))
        angles = 2 * np.pi * np.arange(self.num_objects) / self.num_objects + np.pi / 2
        return self.cluster_radius * np.stack([np.cos(angles), np.sin(angles)], -1)

    def light_direction(self) -> np.ndarray:
        """Unit vector (3,) towards the key light."""
        a, e = self.light_azimuth, self.light_elevation
        return np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])

    def parts(self, s: dict[str, Any]) -> SceneParts:
        """What every backend draws for one sample ``s``: the one decoding of ``s``."""
        n = self.num_objects
        f32 = jnp.float32
        layout = jnp.asarray(s["layout"], jnp.int32)
        region = layout // 2
        classes = jnp.clip(jnp.floor(s["class"]).astype(jnp.int32), 0, 2) + 1
        return SceneParts(
            ambient=s["light"][0].astype(f32),
            key_light=s["light"][1].astype(f32),
            elevation=jnp.clip(s["elevation"], *self.elevation_range).astype(f32),
            high=layout % 2 == 1,
            xz=(jnp.asarray(self.region_centres(), f32)[region]
                + jnp.asarray(self.slots(), f32) + s["offset"].astype(f32)),
            classes=classes,
            size=s["size"].astype(f32),
            cos_a=jnp.cos(s["azimuth"]).astype(f32),
            sin_a=jnp.sin(s["azimuth"]).astype(f32),
            rgb=jnp.clip(s["colour"].astype(f32)[jnp.arange(n), classes - 1], 0.0, 1.0))

    def decode(self, s: dict[str, Any]
               ) -> tuple[Float[Array, "h w 3"], dict[str, Int[Array, "h w"]]]:
        """Renders one scene with ``backend``.

        Args:
          s: one sample of :meth:`distribution`.

        Returns:
          ``(image (H, W, 3) float32 in [0, 1], {"labels": (H, W) int32})``. With
          ``"jax"`` the label of a pixel is the class of the component (ground or
          object) nearest to the ray's end point, if the ray has reached it
          (``hit_angle``); with ``"gl"``/``"blender"`` the class of the object the
          rasteriser shows there. 0 for the ground and the sky.
        """
        parts = self.parts(s)
        if self.backend == "jax":
            colour, labels = self._trace(parts)
        else:
            colour, labels = self._host(parts)
        colour = colour + jnp.where(parts.high, 0.0, self.noise) * s["noise"].astype(jnp.float32)
        return jnp.clip(colour, 0.0, 1.0), {"labels": labels}

    def _host(self, p: SceneParts):
        """``(colour (H, W, 3), labels (H, W))`` from a host renderer via ``black_box``.

        The geometry enters under ``stop_gradient``, as the JAX tracer does not
        differentiate its march: finite differences cover the lights and colours only.
        """
        h, w = self.resolution
        fn = black_box(scene_hosts.host_function(self),
                       (jax.ShapeDtypeStruct((h, w, 3), jnp.float32),
                        jax.ShapeDtypeStruct((h, w), jnp.int32)),
                       fd=self.fd, vmap_method="broadcast_all")
        geometry = jax.lax.stop_gradient(
            (p.elevation, p.high, p.xz, p.classes, p.size, p.cos_a, p.sin_a))
        return fn(jnp.stack([p.ambient, p.key_light]), p.rgb, *geometry)

    def _trace(self, parts: SceneParts):
        """``(colour (H, W, 3) unclipped, labels (H, W))`` from the JAX sphere tracer."""
        n, (h, w) = self.num_objects, self.resolution
        f32 = jnp.float32
        ambient, key_light, elevation, high, xz, classes, size, cos_a, sin_a, rgb = parts
        half = _CUBE * size
        radius = _CYLINDER * size

        def components(p):
            """Distances (1 + n,) from point p (3,) to the ground and each object."""
            rx, ry, rz = p[0] - xz[:, 0], jnp.broadcast_to(p[1], (n,)), p[2] - xz[:, 1]
            q = jnp.stack([cos_a * rx - sin_a * rz, ry, sin_a * rx + cos_a * rz], -1)
            up = lambda height: q - jnp.stack([jnp.zeros(n, f32), height, jnp.zeros(n, f32)], -1)
            d_sphere = shapes.sphere(up(size), size)
            d_cube = shapes.box(up(half), jnp.stack([half, half, half], -1))
            d_cylinder = shapes.truncated_cone(q, 2 * radius, radius, radius)
            d = jnp.where(classes == 1, d_sphere, jnp.where(classes == 2, d_cube, d_cylinder))
            return jnp.concatenate([p[1:2], d])

        def scene(p):
            return jnp.min(components(p))

        eye = self.camera_distance * jnp.stack(
            [jnp.zeros((), f32), jnp.sin(elevation), jnp.cos(elevation)])
        dirs, _ = camera_rays(eye, jnp.zeros(3, f32), (h, w), self.fov)
        dirs = dirs.reshape(-1, 3)
        steps = jnp.where(high, self.steps[1], self.steps[0])
        light = jnp.asarray(self.light_direction(), f32)

        def march(direction):
            def body(i, t):
                moved = jnp.minimum(t + scene(eye + t * direction), self.far)
                return jnp.where(i < steps, moved, t)

            return jax.lax.fori_loop(0, self.steps[1], body, jnp.zeros((), f32))

        def shadowed(origin):
            def body(_, carry):
                t, closest = carry
                d = scene(origin + t * light)
                return jnp.minimum(t + d, self.far), jnp.minimum(closest, d)

            init = (jnp.zeros((), f32), jnp.asarray(jnp.inf, f32))
            return jax.lax.fori_loop(0, self.shadow_steps, body, init)[1] < _SHADOW_HIT

        t = jax.lax.stop_gradient(jax.vmap(march)(dirs))
        hit = t < self.far
        points = eye + t[:, None] * dirs
        distances = jax.vmap(components)(points)
        nearest = jnp.argmin(distances, axis=-1)
        # An object counts only where the ray has reached it; a ray still on its way
        # past a silhouette (grazing, or out of steps) goes on to the ground or sky.
        reached = jnp.take_along_axis(distances, nearest[:, None], -1)[:, 0] < self.hit_angle * t
        nearest = jnp.where(reached, nearest, 0)
        is_object = hit & (nearest > 0)
        index = jnp.maximum(nearest - 1, 0)
        labels = jnp.where(is_object, classes[index], 0).astype(jnp.int32)

        # The gradient of the nearest component, not of the min over all: jnp.min's
        # derivative needs an operand equal to the min, which XLA's fusion can break.
        grads = jax.vmap(jax.grad(lambda p, k: components(p)[k]))(points, nearest)
        normals = grads / jnp.maximum(jnp.linalg.norm(grads, axis=-1, keepdims=True), 1e-12)
        lit = jnp.where(high, ~jax.vmap(shadowed)(points + _SHADOW_BIAS * normals), True)
        diffuse = jnp.maximum(normals @ light, 0.0) * lit
        albedo = jnp.where(is_object[:, None], rgb[index], jnp.asarray(self.ground_rgb, f32))
        colour = albedo * (ambient + key_light * diffuse)[:, None]
        colour = jnp.where(hit[:, None], colour, jnp.asarray(self.sky_rgb, f32))
        return colour.reshape(h, w, 3), labels.reshape(h, w)

    # --- simulator -----------------------------------------------------------------

    def simulator(self) -> Simulator:
        """``q_psi`` and ``decode`` as an AutoSimulate :class:`Simulator`."""
        return Simulator(self.distribution(), self.decode)

    def __call__(self, psi: dict[str, Any], key: jax.Array, num: int
                 ) -> tuple[Float[Array, "n h w 3"], dict[str, Int[Array, "n h w"]]]:
        """``num`` scenes from ``psi`` (checked by :meth:`check_psi`), jitted.

        Returns:
          ``(images (num, H, W, 3), {"labels": (num, H, W)})``.
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num={num!r} must be an int >= 1")
        return _simulate(self, self.check_psi(psi), key, num)


@functools.partial(jax.jit, static_argnames=("simulator", "num"))
def _simulate(simulator: SceneSimulator, psi, key, num):
    _, images, targets = simulator.simulator().simulate(key, psi, num)
    return images, targets
