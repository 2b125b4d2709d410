"""``render.render``: one call for every backend."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

import numpy as np

from render import blender, gl_renderer, jax_renderer
from render.black_box import black_box
from render.finite_diff import FD
from render.jax_renderer import Image
from render.scene import Scene, validate

BACKENDS: dict[str, Callable[..., Image]] = {
    "jax": jax_renderer.render, "gl": gl_renderer.render, "blender": blender.render}
"""Backend name -> ``fn(scene, resolution, config, background) -> Image`` for one scene."""

CONFIGS: dict[str, type] = {"jax": jax_renderer.JaxRenderConfig, "gl": gl_renderer.GlRenderConfig,
                            "blender": blender.BlenderRenderConfig}
"""Backend name -> its frozen config dataclass (the keyword options it accepts)."""

HOST_BACKENDS: frozenset[str] = frozenset({"gl", "blender"})
"""Backends that run numpy code on concrete scenes (not traceable; inside ``jit`` reach
them through ``render.host_render``). Batches loop on the host for ``gl`` and go to
the worker pool in parallel for ``blender``."""

EXECUTORS: tuple[str, ...] = ("local", "ray")
"""Where ``render_many`` renders: this process (and its Blender workers), or Ray tasks."""


def render(scene: Scene, *, backend: str = "jax", resolution: tuple[int, int] = (64, 64),
           background: jax.Array | None = None, chunk: int = 4, check: bool = True,
           **options: Any) -> Image:
    """Renders a scene, or a batch of scenes (leading axes on every leaf).

    Args:
      scene: a ``Scene``; a batch is rendered ``chunk`` scenes at a time
        (``jax.lax.map`` over ``jax.vmap``'d chunks): a vmapped sphere tracer runs
        until its slowest ray is done, so small chunks are faster than one big vmap
        (measured 1.3x at 64 px, batch 64, on CPU). ``jax.vmap(render.render)``
        works as well.
      backend: one of ``BACKENDS``. ``"jax"`` is differentiable and jittable;
        ``"gl"`` (pyrender over EGL) and ``"blender"`` (Cycles, in worker processes
        of :mod:`render.blender`) render concrete scenes and return numpy arrays.
      resolution: static (H, W) in pixels.
      background: optional (Hb, Wb, 3) image in [0, 1] seen above the horizon.
      check: host backends run ``render.validate`` on the scene first, so a bad
        scene is named before any renderer or worker sees it.
      **options: fields of the backend's config, e.g. ``shadows=False``,
        ``textures=True``, ``max_steps=64`` (see ``CONFIGS[backend]``).

    Returns:
      ``Image`` with ``rgb`` (..., H, W, 3), ``depth`` (..., H, W),
      ``normals`` (..., H, W, 3) and ``instance`` (..., H, W).
    """
    config = _config(backend, options)
    resolution = _resolution(resolution)
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be a positive number of scenes")
    fn = BACKENDS[backend]
    batch = scene.objects.valid.shape[:-1]
    if backend in HOST_BACKENDS:
        return _render_on_host(scene, resolution, config, background, batch, backend, check)
    if not batch:
        return fn(scene, resolution, config, background)
    flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[len(batch):]), scene)
    images = jax.lax.map(lambda s: fn(s, resolution, config, background), flat,
                         batch_size=min(chunk, flat.objects.valid.shape[0]))
    return jax.tree_util.tree_map(lambda x: x.reshape(batch + x.shape[1:]), images)


def _config(backend: str, options: dict):
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {sorted(BACKENDS)}")
    try:
        return CONFIGS[backend](**options)
    except TypeError as e:
        raise TypeError(f"backend={backend!r}: bad option ({e}); options are the fields of "
                        f"{CONFIGS[backend].__name__}") from e


def _resolution(resolution) -> tuple[int, int]:
    resolution = tuple(int(r) for r in resolution)
    if len(resolution) != 2 or min(resolution) < 1:
        raise ValueError(f"resolution={resolution} must be (H, W) with positive sizes")
    return resolution


def _concrete(scene: Scene, backend: str) -> Scene:
    leaves = jax.tree_util.tree_leaves(scene)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        raise TypeError(f"backend={backend!r} renders concrete scenes, not traced ones; inside "
                        "jit/grad/vmap call it through render.host_render")
    return jax.tree_util.tree_map(np.asarray, scene)


def _unstack(scene: Scene, batch: tuple[int, ...]) -> list[Scene]:
    count = int(np.prod(batch))
    flat = jax.tree_util.tree_map(lambda x: x.reshape((count,) + x.shape[len(batch):]), scene)
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], flat) for i in range(count)]


def _stack(images: Sequence[Image], batch: tuple[int, ...]) -> Image:
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs).reshape(batch + xs[0].shape), *images)


def _render_on_host(scene, resolution, config, background, batch, backend, check) -> Image:
    """A numpy backend on concrete scenes; a batch is stacked into numpy arrays."""
    scene = _concrete(scene, backend)
    if check:
        validate(scene)
    if background is not None:
        background = np.asarray(background)
    if not batch:
        return BACKENDS[backend](scene, resolution, config, background)
    scenes = _unstack(scene, batch)
    if backend == "blender":   # the worker pool renders them in parallel
        images = blender.render_scenes(scenes, resolution, config, background)
    else:
        images = [BACKENDS[backend](s, resolution, config, background) for s in scenes]
    return _stack(images, batch)


def render_many(scenes: Scene | Sequence[Scene], *, backend: str = "jax",
                resolution: tuple[int, int] = (64, 64), background: jax.Array | None = None,
                executor: str = "local", workers: int | None = None,
                progress: bool | None = None, **options: Any) -> Image:
    """Renders many scenes, in parallel where the backend allows.

    Every scene is checked with ``render.validate`` before any renderer sees one.

    Args:
      scenes: a list of ``Scene`` (same number of object slots) or one batched
        ``Scene`` (leading axes on every leaf).
      backend: one of ``BACKENDS``.
      resolution: (H, W) in pixels.
      background: optional (Hb, Wb, 3) image in [0, 1] seen above the horizon.
      executor: ``"local"``: ``jax`` renders a vmapped batch, ``gl`` one scene after
        another, ``blender`` on ``workers`` Blender processes in parallel.
        ``"ray"``: one Ray task per scene on the Ray cluster this process is
        connected to (``ray.init()`` is called if it is not; the ``ray`` extra), each
        Ray worker process keeping its own renderer (and Blender worker) across tasks.
      workers: Blender worker processes for ``executor="local"`` (default: the shared
        pool's current size, 1 at first).
      progress: a tqdm progress bar; ``None`` shows it on terminals for more than 8
        scenes.
      **options: fields of ``CONFIGS[backend]``.

    Returns:
      ``Image`` of numpy arrays with one leading axis over the scenes (or the batch
      axes of a batched ``Scene``).

    Raises:
      ValueError: a bad scene (naming it and the field), backend or executor.
      render.blender.BlenderError: naming every scene Blender failed to render.
    """
    config = _config(backend, options)
    resolution = _resolution(resolution)
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not one of {EXECUTORS}")
    if isinstance(scenes, Scene):
        batch = scenes.objects.valid.shape[:-1]
        scenes = _unstack(_concrete(scenes, backend), batch) if batch else [scenes]
        batch = batch or (1,)
    else:
        scenes = [_concrete(s, backend) for s in scenes]
        batch = (len(scenes),)
    for i, s in enumerate(scenes):
        try:
            validate(s)
        except ValueError as err:
            raise ValueError(f"scene {i}: {err}") from err
    if background is not None:
        background = np.asarray(background)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(scenes), desc=f"render {backend}", unit="scene",
               disable=(len(scenes) <= 8 or None) if progress is None else not progress)
    with bar:
        if executor == "ray":
            images = _render_with_ray(scenes, backend, resolution, options, background, bar)
        elif backend == "blender":
            images = blender.render_scenes(scenes, resolution, config, background,
                                           workers=workers, progress=bar)
        elif backend == "jax":
            stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *scenes)
            image = render(stacked, backend="jax", resolution=resolution, background=background,
                           **options)
            bar.update(len(scenes))
            return jax.tree_util.tree_map(
                lambda x: np.asarray(x).reshape(batch + x.shape[1:]), image)
        else:
            images = []
            for s in scenes:
                images.append(BACKENDS[backend](s, resolution, config, background))
                bar.update(1)
    return _stack(images, batch)


def _render_one(scene, backend, resolution, options, background):
    """The body of a Ray task: renders in the Ray worker with its own (cached) renderer."""
    image = render(scene, backend=backend, resolution=resolution, background=background,
                   check=False, **options)
    return jax.tree_util.tree_map(np.asarray, image)


def _render_with_ray(scenes, backend, resolution, options, background, bar) -> list[Image]:
    try:
        import ray
    except ImportError as err:
        raise ImportError("executor='ray' needs Ray: pip install -e '.[ray]'") from err
    if not ray.is_initialized():
        ray.init()
    if backend == "blender" and "threads" not in options:
        options = {**options, "threads": 2}   # a task holds one CPU; Cycles needs >= 2 threads
    # Ray re-runs a task whose worker process died; Blender crashes inside a task are
    # already retried by that process's own Blender pool.
    task = ray.remote(_render_one).options(max_retries=2)
    refs = [task.remote(s, backend, resolution, options, background) for s in scenes]
    index = {ref: i for i, ref in enumerate(refs)}
    images: list[Any] = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        images[index[done[0]]] = ray.get(done[0])
        bar.update(1)
    return images


def host_render(backend: str, *, resolution: tuple[int, int] = (64, 64),
                fields: tuple[str, ...] = ("rgb",), fd: FD = FD(), **options: Any
                ) -> Callable[..., Any]:
    """A host backend made callable under ``jit``/``vmap``/``grad`` by ``render.black_box``.

    Derivatives are finite differences (``fd``) with respect to every float leaf of
    the scene that is being differentiated: ``2 d`` renders for ``d`` such numbers
    (central), or ``2 m`` (random directions). Host renderers quantise colour to 8
    bits, so use steps far above 1/255 of the image change (e.g. ``FD(step=0.05)``
    for a light strength).

    Args:
      backend: one of ``HOST_BACKENDS``.
      resolution: (H, W) in pixels.
      fields: which ``Image`` fields to return, in order.
      fd: finite-difference settings.
      **options: fields of the backend's config.

    Returns:
      ``g(scene, key=None)`` returning a tuple of the requested fields (one
      unbatched scene; ``jax.vmap`` it for a batch).
    """
    if backend not in HOST_BACKENDS:
        raise ValueError(f"backend={backend!r} is not a host backend; one of {sorted(HOST_BACKENDS)}")
    h, w = (int(r) for r in resolution)
    specs = {"rgb": ((h, w, 3), np.float32), "depth": ((h, w), np.float32),
             "normals": ((h, w, 3), np.float32), "instance": ((h, w), np.int32)}
    unknown = [f for f in fields if f not in specs]
    if unknown or not fields:
        raise ValueError(f"fields={fields!r} must name Image fields {tuple(specs)}")
    result_shape = tuple(jax.ShapeDtypeStruct(*specs[f]) for f in fields)

    def g(scene: Scene, key=None):
        leaves, treedef = jax.tree_util.tree_flatten(scene)

        def host(*arrays):
            # Perturbed scenes of finite differences may step just outside the
            # ranges of render.spec: no validation here.
            image = render(jax.tree_util.tree_unflatten(treedef, arrays), backend=backend,
                           resolution=(h, w), check=False, **options)
            return tuple(getattr(image, f) for f in fields)

        host.__qualname__ = f"render(backend={backend!r})"
        # broadcast_all: a vmapped call (and the perturbed scenes of a derivative)
        # arrives as one batched scene, which the Blender pool renders in parallel.
        return black_box(host, result_shape, fd=fd, vmap_method="broadcast_all")(*leaves, key=key)

    return g
