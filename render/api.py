"""``render.render``: one call for every backend."""

from __future__ import annotations

from typing import Any, Callable

import jax

from render import jax_renderer
from render.jax_renderer import Image
from render.scene import Scene

BACKENDS: dict[str, Callable[..., Image]] = {"jax": jax_renderer.render}
"""Backend name -> ``fn(scene, resolution, config, background) -> Image`` for one scene."""

CONFIGS: dict[str, type] = {"jax": jax_renderer.JaxRenderConfig}
"""Backend name -> its frozen config dataclass (the keyword options it accepts)."""


def render(scene: Scene, *, backend: str = "jax", resolution: tuple[int, int] = (64, 64),
           background: jax.Array | None = None, **options: Any) -> Image:
    """Renders a scene, or a batch of scenes (leading axes on every leaf).

    Args:
      scene: a ``Scene``; batched scenes are rendered with ``jax.vmap``.
      backend: one of ``BACKENDS``. ``"jax"`` is differentiable and jittable.
      resolution: static (H, W) in pixels.
      background: optional (Hb, Wb, 3) image in [0, 1] seen above the horizon.
      **options: fields of the backend's config, e.g. ``shadows=False``,
        ``textures=True``, ``max_steps=64`` (see ``CONFIGS[backend]``).

    Returns:
      ``Image`` with ``rgb`` (..., H, W, 3), ``depth`` (..., H, W),
      ``normals`` (..., H, W, 3) and ``instance`` (..., H, W).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {sorted(BACKENDS)}")
    try:
        config = CONFIGS[backend](**options)
    except TypeError as e:
        raise TypeError(f"backend={backend!r}: bad option ({e}); options are the fields of "
                        f"{CONFIGS[backend].__name__}") from e
    resolution = tuple(int(r) for r in resolution)
    if len(resolution) != 2 or min(resolution) < 1:
        raise ValueError(f"resolution={resolution} must be (H, W) with positive sizes")
    fn = BACKENDS[backend]
    batch_dims = scene.objects.valid.ndim - 1
    single = lambda s: fn(s, resolution, config, background)  # noqa: E731
    for _ in range(batch_dims):
        single = jax.vmap(single)
    return single(scene)
