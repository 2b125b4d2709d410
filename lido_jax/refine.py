"""LiDO's iterative refinement (sec. 4.2): predict a better scene, take a shrinking step.

For ``t = 0 .. T-1``:

1. take a patch of the observed image and of the render of ``z_t`` around every
   object's contact point (as seen by ``z_t``'s camera);
2. predict each object's latents and the global latents as that object sees them
   (a :data:`Predictor`, e.g. :func:`lido_jax.network.predictor`); clip to the ranges;
3. step ``z_{t+1} = z_t + mu_t (z_pred - z_t)`` with ``mu_t = 1 / (t + a)``, for the
   objects and for each object's own vote on the globals;
4. aggregate the votes into the global latents by the median over objects (sec. 3).

The state is a pair of flat vectors in physical units (metres, radians, RGB in [0, 1]):
per object ``OBJECT_FIELDS`` (N, 7) and globals ``GLOBAL_FIELDS`` (9,). Periodic
angles step along the shorter arc and are wrapped into ``[0, 2 pi)``; the median of
an angle is ``atan2`` of the medians of its sine and cosine. Classes, shapes and the
set of objects come from the initial scene and are kept fixed (sec. 4.3).

:func:`refine` is one ``jax.lax.scan``: pure, jittable and ``vmap``-able over a batch
of images when the in-loop renderer is the JAX one (the default); ``gl`` or
``blender`` in the loop enter through ``render.host_render`` (``render.black_box``),
which also works inside the scan. With ``tol > 0`` the state freezes once no latent
moves more than ``tol`` standard deviations (of its prior, ``render.spec``) in a
step; the scan still runs ``steps`` iterations so shapes stay static.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

import render
from render import jax_renderer, spec

OBJECT_FIELDS: tuple[str, ...] = ("x", "z", "scale", "azimuth", "r", "g", "b")
"""Columns of the per-object vector."""

GLOBAL_FIELDS: tuple[str, ...] = ("camera height", "camera elevation", "ambient", "strength",
                                  "light azimuth", "light elevation", "ground r", "ground g",
                                  "ground b")
"""Entries of the global vector."""

OBJECT_PERIODIC = np.array([False, False, False, True, False, False, False])
GLOBAL_PERIODIC = np.array([False, False, False, False, True, False, False, False, False])

_OBJECT_PATHS = ("objects.position",) * 2 + ("objects.scale", "objects.azimuth") + ("objects.rgb",) * 3
_GLOBAL_PATHS = ("camera.height", "camera.elevation", "light.ambient", "light.strength",
                 "light.azimuth", "light.elevation") + ("ground_rgb",) * 3
_OBJECT_COMPONENT = (0, 1, None, None, 0, 1, 2)
_GLOBAL_COMPONENT = (None,) * 6 + (0, 1, 2)


def _column(paths, components, attr):
    out = []
    for p, c in zip(paths, components):
        v = np.asarray(getattr(spec.FIELDS[p], attr), np.float64)
        out.append(float(v if c is None else np.broadcast_to(v, spec.FIELDS[p].shape)[c]))
    return np.array(out)


OBJECT_LOW, OBJECT_HIGH, OBJECT_STD = (_column(_OBJECT_PATHS, _OBJECT_COMPONENT, a)
                                       for a in ("low", "high", "std"))
GLOBAL_LOW, GLOBAL_HIGH, GLOBAL_STD = (_column(_GLOBAL_PATHS, _GLOBAL_COMPONENT, a)
                                       for a in ("low", "high", "std"))


# ---------------------------------------------------------------------------------------
# Scenes <-> vectors.


def object_vectors(scene: render.Scene) -> jax.Array:
    """(..., N, 7) physical object latents (``OBJECT_FIELDS``) of a scene."""
    o = scene.objects
    return jnp.concatenate([o.position, o.scale[..., None], o.azimuth[..., None], o.rgb], -1
                           ).astype(jnp.float32)


def global_vector(scene: render.Scene) -> jax.Array:
    """(..., 9) physical global latents (``GLOBAL_FIELDS``) of a scene."""
    c, li = scene.camera, scene.light
    parts = [c.height, c.elevation, li.ambient, li.strength, li.azimuth, li.elevation]
    return jnp.concatenate([jnp.stack(parts, -1), scene.ground_rgb], -1).astype(jnp.float32)


def to_scene(template: render.Scene, objects, globals_) -> render.Scene:
    """``template`` (for classes, shapes and ``valid``) with these latents."""
    g = jnp.asarray(globals_, jnp.float32)
    o = jnp.asarray(objects, jnp.float32)
    return template.replace(
        camera=render.Camera(height=g[..., 0], elevation=g[..., 1]),
        light=render.Light(ambient=g[..., 2], strength=g[..., 3], azimuth=g[..., 4],
                           elevation=g[..., 5]),
        ground_rgb=g[..., 6:9],
        objects=template.objects.replace(position=o[..., 0:2], scale=o[..., 2],
                                         azimuth=o[..., 3], rgb=o[..., 4:7]))


def clip_objects(objects, class_id) -> jax.Array:
    """Object latents clipped to their ranges (scale to the class's), angles wrapped."""
    lo = jnp.asarray(OBJECT_LOW, jnp.float32)
    hi = jnp.asarray(OBJECT_HIGH, jnp.float32)
    scale_range = jnp.asarray(spec.SCALE_RANGE, jnp.float32)[class_id]      # (N, 2)
    lo = jnp.broadcast_to(lo, objects.shape).at[..., 2].set(scale_range[..., 0])
    hi = jnp.broadcast_to(hi, objects.shape).at[..., 2].set(scale_range[..., 1])
    return jnp.where(OBJECT_PERIODIC, jnp.mod(objects, 2 * math.pi), jnp.clip(objects, lo, hi))


def clip_globals(globals_) -> jax.Array:
    """Global latents clipped to their ranges, the light azimuth wrapped."""
    return jnp.where(GLOBAL_PERIODIC, jnp.mod(globals_, 2 * math.pi),
                     jnp.clip(globals_, GLOBAL_LOW, GLOBAL_HIGH))


def difference(a, b, periodic) -> jax.Array:
    """``a - b``, with periodic entries along the shorter arc, in ``(-pi, pi]``."""
    d = a - b
    return jnp.where(periodic, jnp.mod(d + math.pi, 2 * math.pi) - math.pi, d)


def aggregate(votes, valid, fallback) -> jax.Array:
    """Median over valid objects of the (N, 9) votes on the globals; ``fallback`` (9,)
    where no object is valid. The light azimuth's median is ``atan2`` of the medians
    of its sine and cosine."""
    masked = jnp.where(valid[:, None], votes, jnp.nan)
    median = jnp.nanmedian(masked, axis=0)
    angle = masked[:, GLOBAL_PERIODIC][:, 0]
    azimuth = jnp.mod(jnp.arctan2(jnp.nanmedian(jnp.sin(angle)), jnp.nanmedian(jnp.cos(angle))),
                      2 * math.pi)
    median = jnp.where(GLOBAL_PERIODIC, azimuth, median)
    return jnp.where(jnp.any(valid), median, fallback)


# ---------------------------------------------------------------------------------------
# Patches.


def contact_pixels(objects, globals_, resolution) -> jax.Array:
    """(N, 2) (row, col) of each object's contact point seen by the globals' camera."""
    camera = render.Camera(height=globals_[0], elevation=globals_[1])
    points = jnp.stack([objects[:, 0], jnp.zeros_like(objects[:, 0]), objects[:, 1]], -1)
    return render.camera.project(camera, points, tuple(resolution))


def ground_positions(pixels, globals_, resolution, fallback) -> jax.Array:
    """(N, 2) ground positions (x, z) whose contact points the globals' camera sees at
    ``pixels`` (N, 2) (the inverse of :func:`contact_pixels`); ``fallback`` (N, 2)
    where a pixel has no ground point (at or above the horizon)."""
    camera = render.Camera(height=globals_[0], elevation=globals_[1])
    xz = render.camera.ground_point(camera, pixels, tuple(resolution))
    return jnp.where(jnp.isfinite(xz), xz, fallback)


def extract_patches(image, centres, side: float, size: int) -> jax.Array:
    """(N, size, size, C) patches of ``image`` (H, W, C), each a square of ``side``
    pixels centred at a (row, col) of ``centres`` (N, 2), resampled bilinearly; zero
    outside the image (and everywhere for a NaN centre)."""
    offsets = ((jnp.arange(size) + 0.5) / size - 0.5) * side

    def one(centre):
        rows = centre[0] + offsets[:, None] + jnp.zeros((size, size))
        cols = centre[1] + offsets[None, :] + jnp.zeros((size, size))
        sample = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [rows, cols], order=1,  # noqa: E731
                                                                mode="constant", cval=0.0)
        patch = jax.vmap(sample, in_axes=-1, out_axes=-1)(image)
        return jnp.where(jnp.all(jnp.isfinite(centre)), patch, 0.0)

    return jax.vmap(one)(jnp.asarray(centres, jnp.float32))


# ---------------------------------------------------------------------------------------
# The loop.


@struct.dataclass
class RefineState:
    """What the loop carries.

    Attributes:
      objects: (N, 7) object latents (``OBJECT_FIELDS``).
      votes: (N, 9) each object's estimate of the globals (``GLOBAL_FIELDS``).
      globals: (9,) the aggregated globals, the ones that are rendered.
      done: whether the ``tol`` stop has fired.
    """

    objects: jax.Array
    votes: jax.Array
    globals: jax.Array
    done: jax.Array


Predictor = Callable[..., tuple[jax.Array, jax.Array]]
"""``predict(observed_patches, rendered_patches, state, scene) -> (objects, votes)``:
patches (N, S, S, 3), the current :class:`RefineState` and its scene (classes and
shapes); returns predicted (N, 7) object latents and (N, 9) global latents per object
in physical units (rows of invalid objects are ignored)."""

RenderFn = Callable[[render.Scene], tuple[jax.Array, jax.Array]]
"""``render_fn(scene) -> (rgb (H, W, 3), instance (H, W))`` for one scene."""


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Settings of :func:`refine`.

    Attributes:
      steps: T, the number of iterations (30 in the paper).
      a: offset of the step size ``mu_t = 1 / (t + a)`` (2 in the paper); > 1 keeps the
        first step below 1.
      tol: stop once no latent moves more than ``tol`` prior standard deviations in
        one step; 0 runs all ``steps``.
      patch_fraction: patch side as a fraction of the image height (the paper's
        128 px patches of its images); patches are resampled to ``patch_size``.
      patch_size: side of the network's input patches (64 in the paper).
      adjust_brightness: scale every object's and the ground's colour, before
        rendering, by the ratio of the observed to the rendered mean brightness over
        its rendered mask (sec. 4.2: an in-loop renderer without the training
        renderer's shadows). The state keeps the unadjusted colours.
      anchor_pixels: after each update of the globals, slide every object along the
        ground so that its contact point stays at the pixel it had under the previous
        camera: a camera update then moves no object in the image (back-projection
        ties positions to the camera, as in the initialisation); only the position
        predictions do. For networks with ``"image"`` position offsets.
    """

    steps: int = 30
    a: float = 2.0
    tol: float = 0.0
    patch_fraction: float = 0.5
    patch_size: int = 64
    adjust_brightness: bool = False
    anchor_pixels: bool = False

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps={self.steps} must be >= 0")
        if not self.a > 1:
            raise ValueError(f"a={self.a} must be > 1 so that mu_0 = 1/a < 1")
        if self.tol < 0:
            raise ValueError(f"tol={self.tol} must be >= 0")
        if not 0 < self.patch_fraction <= 2:
            raise ValueError(f"patch_fraction={self.patch_fraction} must be in (0, 2]")
        if self.patch_size < 4:
            raise ValueError(f"patch_size={self.patch_size} must be >= 4")


def anchored(objects, old_globals, new_globals, resolution) -> jax.Array:
    """``objects`` (N, 7) moved on the ground so that the camera of ``new_globals``
    sees each contact point where the camera of ``old_globals`` did (unchanged where
    that pixel has no ground point under the new camera)."""
    pixels = contact_pixels(objects, old_globals, resolution)
    return objects.at[:, :2].set(ground_positions(pixels, new_globals, resolution, objects[:, :2]))


def step_size(t, a: float) -> jax.Array:
    """``mu_t = 1 / (t + a)``."""
    return 1.0 / (jnp.asarray(t, jnp.float32) + a)


def jax_render_fn(resolution: tuple[int, int], shadows: bool = False, **options) -> RenderFn:
    """The JAX sphere tracer as a :data:`RenderFn` (jittable, differentiable)."""
    config = jax_renderer.JaxRenderConfig(shadows=shadows, **options)

    def fn(scene):
        image = jax_renderer.render(scene, tuple(resolution), config)
        return image.rgb, image.instance

    return fn


def host_render_fn(backend: str, resolution: tuple[int, int], **options) -> RenderFn:
    """A host backend (``"gl"``, ``"blender"``) as a :data:`RenderFn`, usable inside
    the jitted loop through ``render.host_render``."""
    g = render.host_render(backend, resolution=tuple(resolution), fields=("rgb", "instance"),
                           **options)
    return lambda scene: g(scene)


def brightness_adjusted(scene: render.Scene, observed, rgb, instance) -> render.Scene:
    """Sec. 4.2's brightness adjustment: every object's and the ground's colour times
    the ratio of the observed to the rendered mean brightness (channel mean) over its
    rendered pixels; unchanged where it covers no pixel. Clipped to [0, 1]."""
    n = scene.objects.valid.shape[-1]
    labels = jnp.arange(n + 1) + jax_renderer.FIRST_OBJECT - 1       # ground, objects
    masks = instance[None] == labels[:, None, None]
    count = jnp.sum(masks, (1, 2))
    mean = lambda img: jnp.sum(masks * jnp.mean(img, -1)[None], (1, 2)) / jnp.maximum(count, 1)  # noqa: E731
    ratio = jnp.where((count > 0) & (mean(rgb) > 1e-3), mean(observed) / jnp.maximum(mean(rgb), 1e-3),
                      1.0)
    return scene.replace(
        ground_rgb=jnp.clip(scene.ground_rgb * ratio[0], 0, 1),
        objects=scene.objects.replace(rgb=jnp.clip(scene.objects.rgb * ratio[1:, None], 0, 1)))


def initial_state(scene: render.Scene, votes=None) -> RefineState:
    """The state of an initial scene: each object's ``votes`` (N, 9) on the globals
    (e.g. the initialisation network's, ``initialization.initial_scene``), or by
    default every object voting for the scene's globals."""
    objects = object_vectors(scene)
    g = global_vector(scene)
    shape = (objects.shape[0], g.shape[0])
    if votes is None:
        votes = jnp.broadcast_to(g, shape)
    elif jnp.shape(votes) != shape:
        raise ValueError(f"votes must have shape {shape} (objects x globals), got {jnp.shape(votes)}")
    return RefineState(objects=objects, votes=jnp.asarray(votes, jnp.float32), globals=g,
                       done=jnp.asarray(False))


def _moved(new: RefineState, old: RefineState, valid) -> jax.Array:
    obj = jnp.abs(difference(new.objects, old.objects, OBJECT_PERIODIC)) / OBJECT_STD
    glob = jnp.abs(difference(new.globals, old.globals, GLOBAL_PERIODIC)) / GLOBAL_STD
    return jnp.maximum(jnp.max(jnp.where(valid[:, None], obj, 0.0), initial=0.0), jnp.max(glob))


def _prediction(predict: Predictor, observed, init: render.Scene, state: RefineState,
                config: RefineConfig, render_fn: RenderFn):
    """Step 1-2 of the loop at ``state``: render, cut patches, predict, clip."""
    resolution = tuple(observed.shape[:2])
    scene = to_scene(init, state.objects, state.globals)
    rgb, instance = render_fn(scene)
    if config.adjust_brightness:
        rgb, _ = render_fn(brightness_adjusted(scene, observed, rgb, instance))
    centres = contact_pixels(state.objects, state.globals, resolution)
    side = config.patch_fraction * resolution[0]
    obs_p = extract_patches(observed, centres, side, config.patch_size)
    ren_p = extract_patches(rgb, centres, side, config.patch_size)
    pred_objects, pred_votes = predict(obs_p, ren_p, state, scene)
    return (clip_objects(pred_objects, jnp.asarray(init.objects.class_id)),
            jax.vmap(clip_globals)(pred_votes))


def predict_once(predict: Predictor, observed, scene: render.Scene,
                 config: RefineConfig = RefineConfig(), render_fn: RenderFn | None = None,
                 votes=None) -> tuple[jax.Array, jax.Array]:
    """What the loop's first step aims at: the clipped prediction ``z_pred`` at
    ``scene`` (objects (N, 7), votes (N, 9)), before the ``mu_t`` step. Comparing it
    with the truth, against ``scene``'s own error, says whether a predictor moves
    the latents the right way (:func:`lido_jax.compare.one_step_errors`)."""
    observed = jnp.asarray(observed, jnp.float32)
    render_fn = render_fn or jax_render_fn(tuple(observed.shape[:2]))
    return _prediction(predict, observed, scene, initial_state(scene, votes), config, render_fn)


def refine(predict: Predictor, observed, init: render.Scene, config: RefineConfig = RefineConfig(),
           render_fn: RenderFn | None = None, votes=None):
    """Refines ``init`` towards the scene of ``observed`` (LiDO sec. 4.2).

    Args:
      predict: a :data:`Predictor`.
      observed: (H, W, 3) image in [0, 1].
      init: the initial scene ``z_0`` (one, unbatched; ``jax.vmap`` for a batch).
      config: :class:`RefineConfig`.
      render_fn: the in-loop renderer (default: the JAX tracer without shadows at the
        observed image's resolution).
      votes: optional (N, 9) initial votes of the objects on the globals (see
        :func:`initial_state`).

    Returns:
      ``(scene, trace)``: the refined scene and a dict of per-iteration arrays,
      ``objects`` (T + 1, N, 7), ``votes`` (T + 1, N, 9) and ``globals`` (T + 1, 9)
      (``z_0`` first; ``RefineState(objects[t], votes[t], globals[t])`` is the state
      after ``t`` steps), ``moved``
      (T,) the largest step in prior standard deviations and ``active`` (T,) whether
      the step was taken (False after the ``tol`` stop).
    """
    observed = jnp.asarray(observed, jnp.float32)
    if observed.ndim != 3 or observed.shape[-1] != 3:
        raise ValueError(f"observed must be one (H, W, 3) image, got shape {observed.shape}")
    if init.objects.valid.ndim != 1:
        raise ValueError(f"init must be one unbatched scene (valid of shape (N,)), got "
                         f"{init.objects.valid.shape}; jax.vmap refine for a batch")
    resolution = tuple(observed.shape[:2])
    render_fn = render_fn or jax_render_fn(resolution)
    valid = jnp.asarray(init.objects.valid, bool)
    class_id = jnp.asarray(init.objects.class_id)

    def body(state: RefineState, t):
        pred_objects, pred_votes = _prediction(predict, observed, init, state, config, render_fn)
        mu = step_size(t, config.a)
        objects = clip_objects(
            state.objects + mu * difference(pred_objects, state.objects, OBJECT_PERIODIC), class_id)
        votes = jax.vmap(clip_globals)(
            state.votes + mu * difference(pred_votes, state.votes, GLOBAL_PERIODIC))
        votes = jnp.where(valid[:, None], votes, state.votes)
        globals_ = aggregate(votes, valid, state.globals)
        if config.anchor_pixels:
            objects = clip_objects(anchored(objects, state.globals, globals_, resolution), class_id)
        objects = jnp.where(valid[:, None], objects, state.objects)
        new = RefineState(objects=objects, votes=votes, globals=globals_, done=state.done)
        moved = _moved(new, state, valid)
        active = ~state.done
        new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
        new = new.replace(done=state.done | (moved < config.tol))
        return new, (new.objects, new.votes, new.globals, moved, active)

    state0 = initial_state(init, votes)
    final, (objects, votes_, globals_, moved, active) = jax.lax.scan(
        body, state0, jnp.arange(config.steps))
    trace = dict(objects=jnp.concatenate([state0.objects[None], objects]),
                 votes=jnp.concatenate([state0.votes[None], votes_]),
                 globals=jnp.concatenate([state0.globals[None], globals_]),
                 moved=moved, active=active)
    return to_scene(init, final.objects, final.globals), trace


@functools.lru_cache(maxsize=None)
def _compiled_batch(predict, config: RefineConfig, render_fn):
    return jax.jit(jax.vmap(lambda obs, init, votes: refine(predict, obs, init, config, render_fn,
                                                            votes)))


def refine_batch(predict: Predictor, observed, init: render.Scene,
                 config: RefineConfig = RefineConfig(), render_fn: RenderFn | None = None,
                 votes=None):
    """:func:`refine` jitted and vmapped over a batch: ``observed`` (B, H, W, 3),
    ``init`` with a leading batch axis on every leaf, optional ``votes`` (B, N, 9).
    Compiled once per predictor, config and renderer (pass the same objects to reuse
    it)."""
    observed = jnp.asarray(observed, jnp.float32)
    if observed.ndim != 4:
        raise ValueError(f"observed must be a batch (B, H, W, 3), got shape {observed.shape}")
    if init.objects.valid.shape[:-1] != observed.shape[:1]:
        raise ValueError(f"init has batch shape {init.objects.valid.shape[:-1]}, observed "
                         f"{observed.shape[:1]}")
    if votes is None:
        votes = jax.vmap(lambda s: initial_state(s).votes)(init)
    return _compiled_batch(predict, config, render_fn)(observed, init, votes)
