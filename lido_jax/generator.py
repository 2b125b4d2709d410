"""LiDO's stochastic scene generator (App. A), a pure function of a PRNG key.

:func:`generate` samples the global latents (camera, light, ground colour) and a
target number of objects, then proposes objects one at a time and keeps a proposal
only if it passes three rules. How each is measured:

(a) **In the image**: at least ``MIN_IN_IMAGE`` of ``SURFACE_SAMPLES`` points spread
    uniformly by area over the posed mesh's surface (``render.shapes.object_mesh``,
    posed like ``render.gl_renderer.object_vertices``) project inside the image
    rectangle (``render.camera.project``; points behind the camera count as outside).
(b) **No intersection**: the ground footprints, convex hulls of the posed meshes'
    ``(x, z)`` vertices, of no two objects overlap (separating-axis test). A hull is
    conservative: a mug's handle or a banana's bend keeps nothing inside it.
(c) **Occlusion**: with the JAX renderer at ``check_resolution``, shadows off, an
    object's visible fraction is its pixels in the instance mask of the whole scene
    over its pixels when rendered alone; the new object and every earlier one must
    keep ``MIN_VISIBLE`` of it. An object covering no pixel alone has fraction 0.

Proposals failing the cheap rules (a contact point outside
``spec.FIELDS["objects.position"]``, (a), (b)) are rejected before anything is
rendered. If the target cannot be reached in ``max_attempts`` proposals the whole
scene is rejected and resampled (new target, camera, light, ...) from
``jax.random.fold_in(key, r)`` for the ``r``-th try, so the result depends on the
key alone. Random draws use ``jax.random`` in jitted samplers; checks run on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy.spatial import ConvexHull

import render
from render import jax_renderer, shapes, spec

# ---------------------------------------------------------------------------------------
# Colours (App. A).

CSS_COLOURS: dict[str, tuple[float, float, float]] = {
    name: (r / 255, g / 255, b / 255) for name, (r, g, b) in {
        # The 16 basic colour keywords of HTML 4.01 / CSS 1, plus CSS "orange".
        "black": (0, 0, 0), "silver": (192, 192, 192), "gray": (128, 128, 128),
        "white": (255, 255, 255), "maroon": (128, 0, 0), "red": (255, 0, 0),
        "purple": (128, 0, 128), "fuchsia": (255, 0, 255), "green": (0, 128, 0),
        "lime": (0, 255, 0), "olive": (128, 128, 0), "yellow": (255, 255, 0),
        "navy": (0, 0, 128), "blue": (0, 0, 255), "teal": (0, 128, 128),
        "aqua": (0, 255, 255), "orange": (255, 165, 0),
    }.items()
}
"""The 17 predefined colours that object and ground colours mix, RGB in [0, 1]."""

BANANA_COLOURS: dict[str, tuple[float, float, float]] = {
    name: CSS_COLOURS.get(name, (165 / 255, 42 / 255, 42 / 255))   # CSS "brown" #A52A2A
    for name in ("yellow", "orange", "green", "brown", "olive", "white")
}
"""Partners of yellow in a banana's colour pair (App. A)."""

COLOUR_NOISE: float = 0.2
"""Half-width of the uniform noise added to each RGB component before clipping."""

COLOUR_KINDS: tuple[str, ...] = ("object", "banana", "ground")


def sample_colour(key: jax.Array, kind: str = "object") -> jax.Array:
    """One albedo (3,) in [0, 1]: a random mixture of a pair of colours plus noise (App. A).

    ``"object"`` (staplers, mugs) mixes two of ``CSS_COLOURS``; ``"banana"`` mixes yellow
    with one of ``BANANA_COLOURS``; ``"ground"`` mixes white with one of ``CSS_COLOURS``.
    The mixing proportion is U[0, 1]; noise U[-0.2, 0.2] per component; then clipped.
    Jittable and vmappable (``kind`` is static).
    """
    if kind not in COLOUR_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {COLOUR_KINDS}")
    css = jnp.asarray(list(CSS_COLOURS.values()), jnp.float32)
    k_first, k_second, k_mix, k_noise = jax.random.split(key, 4)
    if kind == "object":
        first = css[jax.random.randint(k_first, (), 0, len(css))]
        second = css[jax.random.randint(k_second, (), 0, len(css))]
    else:
        first = jnp.asarray(CSS_COLOURS["yellow" if kind == "banana" else "white"], jnp.float32)
        partners = jnp.asarray(list(BANANA_COLOURS.values()), jnp.float32) if kind == "banana" else css
        second = partners[jax.random.randint(k_second, (), 0, len(partners))]
    mix = jax.random.uniform(k_mix)
    noise = jax.random.uniform(k_noise, (3,), minval=-COLOUR_NOISE, maxval=COLOUR_NOISE)
    return jnp.clip(mix * first + (1 - mix) * second + noise, 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# Ground truth.

MIN_IN_IMAGE: float = 0.5
"""Rule (a): least fraction of an object's surface samples inside the image."""

MIN_VISIBLE: float = 0.5
"""Rule (c): least visible fraction of every object (occluded by at most 50%)."""

SURFACE_SAMPLES: int = 512
"""Area-uniform points per shape variant used by rule (a)."""

MAX_SCENE_TRIES: int = 200
"""Scenes resampled before :func:`generate` gives up with a ``RuntimeError``."""


@struct.dataclass
class GroundTruth:
    """A generated scene and what the generator measured on it.

    Attributes:
      scene: ``render.Scene`` padded to ``spec.MAX_OBJECTS`` objects; slots are filled
        in the order objects were accepted.
      instance: (H, W) int32 instance mask at ``resolution`` (JAX renderer, shadows
        off): 0 background, 1 ground, 2 + k object k.
      contact_pixels: (N, 2) (row, col) of each contact point at ``resolution``; NaN
        for padding slots.
      visible_fraction: (N,) object pixels in the scene over its pixels alone; 0 for
        padding.
      in_image_fraction: (N,) share of its surface samples inside the image; 0 for
        padding.
      resolution: the check resolution (H, W).
      scene_tries: scenes sampled until this one was accepted (1 if the first).
      proposals: objects proposed for the accepted scene.
    """

    scene: render.Scene
    instance: np.ndarray
    contact_pixels: np.ndarray
    visible_fraction: np.ndarray
    in_image_fraction: np.ndarray
    resolution: tuple[int, int] = struct.field(pytree_node=False)
    scene_tries: int = struct.field(pytree_node=False)
    proposals: int = struct.field(pytree_node=False)

    @property
    def num_objects(self) -> int:
        return int(np.sum(np.asarray(self.scene.objects.valid)))

    def contact_pixels_at(self, resolution: tuple[int, int]) -> np.ndarray:
        """(N, 2) contact pixels at another resolution (see :func:`contact_pixels`)."""
        return contact_pixels(self.scene, resolution)


_project = jax.jit(render.camera.project, static_argnums=2)


def contact_pixels(scene: render.Scene, resolution: tuple[int, int]) -> np.ndarray:
    """(N, 2) float32 (row, col) where each object's contact point is seen; NaN for
    padding slots. One unbatched scene."""
    obj = scene.objects
    position = jnp.asarray(obj.position)
    points = jnp.stack([position[:, 0], jnp.zeros_like(position[:, 0]), position[:, 1]], -1)
    pixels = np.asarray(_project(scene.camera, points, tuple(resolution)), np.float32)
    return np.where(np.asarray(obj.valid)[:, None], pixels, np.nan).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Geometry of the shape variants (canonical units).


@dataclasses.dataclass(frozen=True)
class _Variant:
    samples: np.ndarray    # (S, 3) area-uniform surface points
    hull: np.ndarray       # (H, 2) convex hull of the (x, z) vertices, counter-clockwise


@functools.cache
def _variant(class_id: int, shape_id: int) -> _Variant:
    verts, faces = shapes.object_mesh(class_id, shape_id)
    verts = np.asarray(verts, np.float64)
    tri = verts[faces]                                                  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    rng = np.random.default_rng([class_id, shape_id])                   # fixed: same samples
    pick = rng.choice(len(tri), SURFACE_SAMPLES, p=area / area.sum())
    u, v = rng.random((2, SURFACE_SAMPLES, 1))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[pick]
    samples = t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])
    xz = verts[:, [0, 2]]
    hull = xz[ConvexHull(xz).vertices]
    return _Variant(samples=samples, hull=hull)


def _pose_xz(xz, position, scale, azimuth):
    """Canonical (x, z) -> world (x, z): ``R_y(azimuth)``, ``scale``, then the contact point
    (as ``render.gl_renderer.object_vertices``)."""
    c, s = math.cos(azimuth), math.sin(azimuth)
    x, z = xz[..., 0], xz[..., 1]
    return np.stack([scale * (c * x + s * z) + position[0],
                     scale * (-s * x + c * z) + position[1]], -1)


def footprint(class_id: int, shape_id: int, position, scale: float, azimuth: float) -> np.ndarray:
    """(H, 2) world (x, z) vertices, in order, of the convex hull of a posed object's
    footprint (the (x, z) projection of its mesh)."""
    return _pose_xz(_variant(int(class_id), int(shape_id)).hull, np.asarray(position, np.float64),
                    float(scale), float(azimuth))


def surface_points(class_id: int, shape_id: int, position, scale: float, azimuth: float) -> np.ndarray:
    """(S, 3) world points spread uniformly by area over a posed object's surface."""
    samples = _variant(int(class_id), int(shape_id)).samples
    xz = _pose_xz(samples[:, [0, 2]], np.asarray(position, np.float64), float(scale), float(azimuth))
    return np.stack([xz[:, 0], scale * samples[:, 1], xz[:, 1]], -1)


def in_image_fraction(camera: render.Camera, points, resolution: tuple[int, int]) -> float:
    """Share of world points (S, 3) projecting inside the image rectangle."""
    h, w = resolution
    px = np.asarray(_project(camera, jnp.asarray(points, jnp.float32), (h, w)))
    inside = ((px[:, 0] >= -0.5) & (px[:, 0] <= h - 0.5)
              & (px[:, 1] >= -0.5) & (px[:, 1] <= w - 0.5))      # NaN (behind) is False
    return float(np.mean(inside))


def footprints_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex polygons (n, 2), (m, 2) (vertices in order) overlap with a
    positive area: separating-axis test on every edge normal of both."""
    for poly in (a, b):
        edge = np.roll(poly, -1, axis=0) - poly
        normal = np.stack([-edge[:, 1], edge[:, 0]], -1)
        pa, pb = a @ normal.T, b @ normal.T
        if np.any((pa.max(0) <= pb.min(0)) | (pb.max(0) <= pa.min(0))):
            return False
    return True


# ---------------------------------------------------------------------------------------
# Jitted samplers and mask renders.


def _uniform(key, path):
    f = spec.FIELDS[path]
    return jax.random.uniform(key, (), jnp.float32, f.low, f.high)


@jax.jit
def _sample_globals(key, min_objects, max_objects):
    keys = jax.random.split(key, 8)
    target = jax.random.randint(keys[0], (), min_objects, max_objects + 1)
    camera = render.Camera(height=_uniform(keys[1], "camera.height"),
                           elevation=_uniform(keys[2], "camera.elevation"))
    light = render.Light(ambient=_uniform(keys[3], "light.ambient"),
                         strength=_uniform(keys[4], "light.strength"),
                         azimuth=_uniform(keys[5], "light.azimuth"),
                         elevation=_uniform(keys[6], "light.elevation"))
    return target, camera, light, sample_colour(keys[7], "ground")


@functools.partial(jax.jit, static_argnames="resolution")
def _sample_object(key, camera, resolution):
    """Class, shape, scale, azimuth, colour and a contact point seen below the horizon."""
    keys = jax.random.split(key, 7)
    class_id = jax.random.randint(keys[0], (), 0, len(spec.CLASS_NAMES))
    shape_id = jnp.floor(jax.random.uniform(keys[1]) * jnp.asarray(spec.NUM_SHAPES)[class_id])
    lo, hi = (jnp.asarray(r, jnp.float32)[class_id] for r in zip(*spec.SCALE_RANGE))
    scale = jax.random.uniform(keys[2], (), jnp.float32, lo, hi)
    azimuth = _uniform(keys[3], "objects.azimuth")
    h, w = resolution
    top = jnp.clip(render.camera.horizon_row(camera, resolution), -0.5, h - 0.5)
    pixel = jnp.stack([jax.random.uniform(keys[4], (), jnp.float32, top, h - 0.5),
                       jax.random.uniform(keys[5], (), jnp.float32, -0.5, w - 0.5)])
    position = render.camera.ground_point(camera, pixel, resolution)
    banana = class_id == spec.CLASS_NAMES.index("banana")
    rgb = jnp.where(banana, sample_colour(keys[6], "banana"), sample_colour(keys[6], "object"))
    return class_id.astype(jnp.int32), shape_id.astype(jnp.int32), scale, azimuth, position, rgb


@functools.lru_cache(maxsize=None)
def _instance_renderer(resolution: tuple[int, int]):
    """Jitted (2, ...) batch of scenes -> (2, H, W) instance masks, shadows off."""
    config = jax_renderer.JaxRenderConfig(shadows=False)
    return jax.jit(jax.vmap(lambda s: jax_renderer.render(s, resolution, config).instance))


def _empty_objects(n: int) -> dict[str, np.ndarray]:
    return dict(valid=np.zeros(n, bool), class_id=np.zeros(n, np.int32),
                shape_id=np.zeros(n, np.int32), position=np.zeros((n, 2), np.float32),
                scale=np.zeros(n, np.float32), azimuth=np.zeros(n, np.float32),
                rgb=np.zeros((n, 3), np.float32))


def _pair(camera, light, ground_rgb, objects, k):
    """The scene and object ``k`` alone, stacked on a leading axis of 2."""
    alone = dict(objects, valid=np.arange(len(objects["valid"])) == k)
    leaves = {name: np.stack([objects[name], alone[name]]) for name in objects}
    two = lambda x: jnp.broadcast_to(x, (2,) + jnp.shape(x))   # noqa: E731
    return render.Scene(camera=jax.tree.map(two, camera), light=jax.tree.map(two, light),
                        ground_rgb=two(ground_rgb), objects=render.Objects(**leaves))


# ---------------------------------------------------------------------------------------


def _check_counts(min_objects: int, max_objects: int) -> None:
    if not 0 <= min_objects <= max_objects <= spec.MAX_OBJECTS:
        raise ValueError(f"need 0 <= min_objects ({min_objects}) <= max_objects ({max_objects}) "
                         f"<= spec.MAX_OBJECTS ({spec.MAX_OBJECTS})")


def generate(key: jax.Array, *, min_objects: int = 4, max_objects: int = 7,
             check_resolution: tuple[int, int] = (64, 64), max_attempts: int = 60) -> GroundTruth:
    """Samples one scene by LiDO's generator (App. A); the same key gives the same scene.

    Args:
      key: PRNG key.
      min_objects, max_objects: the target number of objects is U{min..max};
        ``0 <= min_objects <= max_objects <= spec.MAX_OBJECTS``.
      check_resolution: (H, W) of the instance masks of rule (c) (and of the
        returned mask and contact pixels). Each new resolution compiles once.
      max_attempts: object proposals per sampled scene before it is rejected.

    Returns:
      ``GroundTruth`` with the scene padded to ``spec.MAX_OBJECTS``.

    Raises:
      ValueError: bad counts, resolution or attempts.
      RuntimeError: no scene accepted in ``MAX_SCENE_TRIES`` tries.
    """
    _check_counts(min_objects, max_objects)
    check_resolution = tuple(int(r) for r in check_resolution)
    if len(check_resolution) != 2 or min(check_resolution) < 1:
        raise ValueError(f"check_resolution={check_resolution} must be (H, W) with positive sizes")
    if max_attempts < 1:
        raise ValueError(f"max_attempts={max_attempts} must be >= 1")
    for r in range(MAX_SCENE_TRIES):
        gt = _try_scene(jax.random.fold_in(key, r), min_objects, max_objects, check_resolution,
                        max_attempts, r + 1)
        if gt is not None:
            return gt
    raise RuntimeError(f"no scene with {min_objects}-{max_objects} objects accepted in "
                       f"{MAX_SCENE_TRIES} tries of {max_attempts} proposals each")


def _try_scene(key, min_objects, max_objects, resolution, max_attempts, tries):
    """One scene: globals, then proposals until the target is met (None if it is not)."""
    k_globals, k_objects = jax.random.split(key)
    target, camera, light, ground_rgb = _sample_globals(k_globals, min_objects, max_objects)
    target = int(target)
    lo, hi = (np.asarray(v, np.float32) for v in (spec.FIELDS["objects.position"].low,
                                                  spec.FIELDS["objects.position"].high))
    n_max = spec.MAX_OBJECTS
    objects = _empty_objects(n_max)
    hulls: list[np.ndarray] = []
    alone = np.zeros(n_max, np.int64)            # pixels of each accepted object alone
    visible = np.zeros(n_max)
    in_image = np.zeros(n_max)
    instance = None
    renderer = _instance_renderer(resolution)
    n, attempt = 0, 0
    while n < target and attempt < max_attempts:
        draw = jax.device_get(_sample_object(jax.random.fold_in(k_objects, attempt), camera,
                                             resolution))
        attempt += 1
        class_id, shape_id, scale, azimuth, position, rgb = draw
        if not (np.all(np.isfinite(position)) and np.all((position >= lo) & (position <= hi))):
            continue
        frac = in_image_fraction(camera, surface_points(class_id, shape_id, position, scale,
                                                        azimuth), resolution)
        if frac < MIN_IN_IMAGE:                                              # rule (a)
            continue
        hull = footprint(class_id, shape_id, position, scale, azimuth)
        if any(footprints_overlap(hull, other) for other in hulls):          # rule (b)
            continue
        trial = {name: value.copy() for name, value in objects.items()}
        for name, value in (("valid", True), ("class_id", class_id), ("shape_id", shape_id),
                            ("position", position), ("scale", scale), ("azimuth", azimuth),
                            ("rgb", rgb)):
            trial[name][n] = value
        masks = np.asarray(renderer(_pair(camera, light, ground_rgb, trial, n)))
        counts = np.bincount(masks[0].ravel(), minlength=jax_renderer.FIRST_OBJECT + n_max)
        pixels = counts[jax_renderer.FIRST_OBJECT:]
        trial_alone = alone.copy()
        trial_alone[n] = np.sum(masks[1] == jax_renderer.FIRST_OBJECT + n)
        fraction = pixels[: n + 1] / np.maximum(trial_alone[: n + 1], 1)
        if np.any(fraction < MIN_VISIBLE):                                   # rule (c)
            continue
        objects, alone, hulls, instance = trial, trial_alone, hulls + [hull], masks[0]
        visible[: n + 1] = fraction
        in_image[n] = frac
        n += 1
    if n < target:
        return None
    scene = render.Scene(camera=camera, light=light, ground_rgb=ground_rgb,
                         objects=render.Objects(**{k: jnp.asarray(v) for k, v in objects.items()}))
    if instance is None:     # a target of zero objects
        instance = np.asarray(renderer(_pair(camera, light, ground_rgb, objects, 0)))[0]
    return GroundTruth(scene=scene, instance=instance.astype(np.int32),
                       contact_pixels=contact_pixels(scene, resolution),
                       visible_fraction=visible.astype(np.float32),
                       in_image_fraction=in_image.astype(np.float32),
                       resolution=resolution, scene_tries=tries, proposals=attempt)


# ---------------------------------------------------------------------------------------
# Observed images.


@functools.partial(jax.jit, static_argnames="resolution")
def background_image(key: jax.Array, resolution: tuple[int, int] = (128, 128)) -> jax.Array:
    """A procedural stand-in for the paper's NYU Depth backgrounds: (H, W, 3) in [0, 1].

    A bilinear gradient between four random corner colours, low-frequency colour noise
    (a 4 x 4 grid upsampled cubically) and six soft Gaussian blobs of random colour.
    """
    h, w = resolution
    k_corner, k_noise, k_centre, k_width, k_colour, k_amp = jax.random.split(key, 6)
    corner = jax.random.uniform(k_corner, (2, 2, 3))
    y = jnp.linspace(0.0, 1.0, h)[:, None, None]
    x = jnp.linspace(0.0, 1.0, w)[None, :, None]
    image = ((1 - y) * ((1 - x) * corner[0, 0] + x * corner[0, 1])
             + y * ((1 - x) * corner[1, 0] + x * corner[1, 1]))
    image = image + jax.image.resize(0.12 * jax.random.normal(k_noise, (4, 4, 3)), (h, w, 3), "cubic")
    centre = jax.random.uniform(k_centre, (6, 2))
    width = jax.random.uniform(k_width, (6,), minval=0.05, maxval=0.25)
    colour = jax.random.uniform(k_colour, (6, 3))
    amp = jax.random.uniform(k_amp, (6,), minval=0.2, maxval=0.8)
    dist2 = (y[None, ..., 0] - centre[:, None, None, 0]) ** 2 + (x[None, ..., 0] - centre[:, None, None, 1]) ** 2
    weight = amp[:, None, None] * jnp.exp(-dist2 / (2 * width[:, None, None] ** 2))   # (6, H, W)
    for k in range(6):
        image = (1 - weight[k, ..., None]) * image + weight[k, ..., None] * colour[k]
    return jnp.clip(image, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _jax_observer(resolution: tuple[int, int], config: jax_renderer.JaxRenderConfig):
    return jax.jit(lambda scene, bg: jax_renderer.render(scene, resolution, config, bg))


def observe(gt_or_scene: GroundTruth | render.Scene, key: jax.Array, *, backend: str = "jax",
            resolution: tuple[int, int] = (128, 128), textures: bool = True, shadows: bool = True,
            background: bool = True, **options) -> render.Image:
    """The "observed" image of a scene: textures, shadows and a background image.

    The ground truth is unchanged: textures multiply albedos by a greyscale pattern of
    mean ~1, so the scene's albedo stays the mean colour (App. A).

    Args:
      gt_or_scene: a ``GroundTruth`` or one ``render.Scene``.
      key: PRNG key of the background image (and of Blender's sampling seed).
      backend: ``"jax"`` (jitted once per resolution and options; procedural solid
        textures, soft shadows) or ``"blender"`` (Cycles); ``"gl"`` without textures.
      resolution: (H, W) in pixels.
      textures, shadows: passed to the backend's config.
      background: a :func:`background_image` above the horizon, else the backend's
        flat background colour.
      **options: other fields of ``render.CONFIGS[backend]``.

    Returns:
      ``render.Image`` of the scene.
    """
    scene = gt_or_scene.scene if isinstance(gt_or_scene, GroundTruth) else gt_or_scene
    if backend not in render.BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {sorted(render.BACKENDS)}")
    resolution = tuple(int(r) for r in resolution)
    if len(resolution) != 2 or min(resolution) < 1:
        raise ValueError(f"resolution={resolution} must be (H, W) with positive sizes")
    fields = {f.name for f in dataclasses.fields(render.CONFIGS[backend])}
    options = dict(options, shadows=shadows)
    if "textures" in fields:
        options["textures"] = textures
    elif textures:
        raise ValueError(f"backend={backend!r} has no textures; pass textures=False")
    k_background, k_seed = jax.random.split(key)
    if backend == "blender" and "seed" not in options:
        options["seed"] = int(jax.random.randint(k_seed, (), 0, 2**31 - 1))
    bg = background_image(k_background, resolution) if background else None
    if backend == "jax":
        try:
            config = jax_renderer.JaxRenderConfig(**options)
        except TypeError as e:
            raise TypeError(f"backend='jax': bad option ({e})") from e
        return _jax_observer(resolution, config)(scene, bg)
    return render.render(scene, backend=backend, resolution=resolution,
                         background=None if bg is None else np.asarray(bg), **options)
