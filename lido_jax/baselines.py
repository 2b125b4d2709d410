"""The error-based baselines of LiDO sec. 4.1: GBO (scipy TNC) and Simplex (Nelder-Mead).

Both minimise the robust negative log-likelihood of :mod:`lido_jax.likelihood`
between the observed image and a render of the current scene, over the LV sets of
:mod:`lido_jax.latents`, fitted **sequentially** in the paper's order (ground colour,
each object's colour, each object's pose, illumination, camera) or all at once.
Bounds are the generator's ranges; Simplex works in coordinates scaled by each LV's
range so that its steps match ("the stepsize is scaled by the distance between LV
boundaries"). GBO's gradients are exact, from the JAX renderer (the paper had
OpenDR's approximate ones); with ``backend="gl"`` the renderer is pyrender through
``render.host_render`` and gradients are finite differences.

Every function evaluation is recorded with its wall time, so error-vs-time curves
(LiDO Fig. 5) can be drawn for any metric afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import render
from lido_jax import latents
from lido_jax.likelihood import INLIER, SIGMA, negative_log_likelihood

METHODS: tuple[str, ...] = ("gbo", "simplex")
_PENALTY = 1e30
"""What the optimisers see for a non-finite objective (recorded as it was)."""
DEFAULT_ITERATIONS: dict[str, int] = {"gbo": 50, "simplex": 100}
"""Iterations per LV set (the paper's budgets: GBO 50, Simplex 100)."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How a baseline fits a scene to an observed image.

    Attributes:
      method: ``"gbo"`` (TNC with gradients) or ``"simplex"`` (Nelder-Mead).
      iterations: iterations per LV set; None takes ``DEFAULT_ITERATIONS[method]``.
      order: ``"sequential"`` (LiDO's order, one LV set at a time) or ``"all"``.
      sweeps: passes over the sequence of LV sets.
      backend: in-loop renderer, ``"jax"`` or ``"gl"``.
      resolution: in-loop render size; the observed image is resized to it.
      shadows: the in-loop renderer draws shadows.
      sigma, inlier: the robust likelihood's parameters.
      step: the initial step of Simplex and the largest line-search step of TNC, as
        a fraction of each LV's range (0.03 of the 4 m position range is 12 cm, about
        an object's size: larger steps let both push objects out of the image).
      fd_step: GBO with ``backend="gl"``: central-difference step as a fraction of
        each LV's range.
    """

    method: str = "gbo"
    iterations: int | None = None
    order: str = "sequential"
    sweeps: int = 1
    backend: str = "jax"
    resolution: tuple[int, int] = (64, 64)
    shadows: bool = True
    sigma: float = SIGMA
    inlier: float = INLIER
    step: float = 0.03
    fd_step: float = 0.02

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.order not in ("sequential", "all"):
            raise ValueError(f"order={self.order!r} must be 'sequential' or 'all'")
        if self.backend not in ("jax", "gl"):
            raise ValueError(f"backend={self.backend!r} must be 'jax' or 'gl'")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations={self.iterations} must be >= 1")
        if self.sweeps < 1:
            raise ValueError(f"sweeps={self.sweeps} must be >= 1")

    @property
    def budget(self) -> int:
        return self.iterations or DEFAULT_ITERATIONS[self.method]


@dataclasses.dataclass
class FitResult:
    """A fitted scene and its trace.

    Attributes:
      scene: the final scene.
      times: (E,) seconds since the start at every objective evaluation.
      nll: (E,) the objective at those evaluations.
      vectors: (E, D) every continuous LV (``latents.padded_slots`` of the initial
        scene) at those evaluations, for error-vs-time curves.
      slots: the slots of ``vectors``' columns.
      sets: (name, evaluations used) per LV set fitted, in order.
    """

    scene: render.Scene
    times: np.ndarray
    nll: np.ndarray
    vectors: np.ndarray
    slots: list[latents.Slot]
    sets: list[tuple[str, int]]

    def scene_at(self, evaluation: int) -> render.Scene:
        """The scene as it was at one recorded evaluation."""
        return latents.put(self.scene, self.slots, self.vectors[evaluation])


def _resize(image, resolution):
    image = jnp.asarray(image, jnp.float32)
    if image.shape[:2] == tuple(resolution):
        return image
    return jax.image.resize(image, tuple(resolution) + (3,), "linear")


@functools.lru_cache(maxsize=16)
def _compiled(backend: str, resolution: tuple[int, int], shadows: bool, sigma: float,
              inlier: float, fd_step: float, num_objects: int):
    """Jitted NLL and its gradient w.r.t. the padded LV vector, as functions of
    ``(x, base scene, observed)``: compiled once per renderer setting and object count."""
    if backend == "jax":
        def image(s):
            return render.render(s, resolution=resolution, shadows=shadows).rgb
    else:
        g = render.host_render("gl", resolution=resolution, shadows=shadows)

        def image(s):
            return g(s)[0]

    slots = latents.padded_slots(num_objects)

    def nll(x, base, observed):
        return negative_log_likelihood(image(latents.put(base, slots, x)), observed,
                                       sigma=sigma, inlier=inlier)

    return jax.jit(nll), (jax.jit(jax.value_and_grad(nll)) if backend == "jax" else None)


class _Objective:
    """NLL of the observed image as a function of the padded LV vector; records calls."""

    def __init__(self, scene, observed, config: FitConfig):
        self.slots = latents.padded_slots(scene)
        self.base = jax.tree.map(jnp.asarray, scene)
        self.observed = _resize(observed, config.resolution)
        self._value, self._value_and_grad = _compiled(
            config.backend, tuple(int(r) for r in config.resolution), config.shadows,
            config.sigma, config.inlier, config.fd_step, int(scene.objects.valid.shape[0]))
        self.backend, self.fd_step = config.backend, config.fd_step
        self.start = time.perf_counter()
        self.times, self.values, self.vectors = [], [], []

    def value(self, x):
        return self._value(jnp.asarray(x, jnp.float32), self.base, self.observed)

    def value_and_grad(self, x, index, width):
        """The objective and its gradient with respect to ``x[index]``.

        JAX renderer: reverse mode through the renderer (one compile for every set).
        gl: central differences of the objective along each LV of the set, steps of
        ``fd_step`` times the LV's range (``2 len(index)`` renders; the renders go
        through ``render.black_box``).
        """
        x = jnp.asarray(x, jnp.float32)
        if self.backend == "jax":
            value, grad = self._value_and_grad(x, self.base, self.observed)
            return value, np.asarray(grad, np.float64)[index]
        x0 = x[index]
        scale = jnp.asarray(width, jnp.float32)

        def in_units(u):
            return self._value(x.at[index].set(x0 + u * scale), self.base, self.observed)

        grad = render.finite_diff.central_jacobian(
            in_units, jnp.zeros(len(index), jnp.float32), step=self.fd_step)
        return self.value(x), np.asarray(grad, np.float64) / np.asarray(width)

    def record(self, x, value):
        self.times.append(time.perf_counter() - self.start)
        self.values.append(float(value))
        self.vectors.append(np.array(x, np.float64))


def fit(scene: render.Scene, observed, config: FitConfig = FitConfig(), *,
        progress: Callable[[str], None] | None = None) -> FitResult:
    """Fits ``scene``'s continuous LVs to an observed (H, W, 3) image in [0, 1].

    Discrete LVs (classes, shapes) and which objects exist stay as in ``scene``.

    Args:
      scene: the initial scene (one, unbatched), e.g. from the initialisation
        networks or ``latents.perturb`` of the ground truth.
      observed: the image to explain.
      config: method, budgets, in-loop renderer.
      progress: called with the name of each LV set as it starts.

    Raises:
      ValueError: a scene outside the ranges of ``render.spec`` (named by
        ``render.validate``), a batched scene or a malformed image.
    """
    render.validate(scene)
    if scene.objects.valid.ndim != 1:
        raise ValueError(f"fit takes one scene, got a batch of shape {scene.objects.valid.shape[:-1]}")
    observed = np.asarray(observed, np.float32)
    if observed.ndim != 3 or observed.shape[-1] != 3:
        raise ValueError(f"observed must be an (H, W, 3) image, got shape {observed.shape}")
    objective = _Objective(scene, observed, config)
    slots = objective.slots
    names = {s.name: i for i, s in enumerate(slots)}
    if config.order == "sequential":
        groups = [(name, [names[s.name] for s in group]) for name, group in latents.lv_sets(scene)]
    else:
        groups = [("all", [names[s.name] for s in latents.all_slots(scene)])]   # valid objects
    lo, hi = latents.bounds(slots)
    x = np.array(latents.get(scene, slots), np.float64)
    objective.record(x, objective.value(x))
    used = []
    for _ in range(config.sweeps):
        for name, index in groups:
            if progress is not None:
                progress(name)
            before = len(objective.times)
            x = (_fit_gbo if config.method == "gbo" else _fit_simplex)(
                objective, x, np.asarray(index), lo, hi, config)
            used.append((name, len(objective.times) - before))
    values = np.asarray(objective.values)
    best = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
    final = latents.clip(latents.put(scene, slots, objective.vectors[best].astype(np.float32)))
    return FitResult(scene=final, times=np.asarray(objective.times), nll=np.asarray(objective.values),
                     vectors=np.stack(objective.vectors), slots=slots, sets=used)


def _fit_gbo(objective: _Objective, x, index, lo, hi, config: FitConfig):
    """scipy TNC on one LV set, with gradients of the full vector restricted to it."""
    def f(v):
        full = x.copy()
        full[index] = v
        value, grad = objective.value_and_grad(full, index, hi[index] - lo[index])
        objective.record(full, value)
        if not np.isfinite(value):   # a failed render must not steer TNC into NaNs
            return _PENALTY, np.zeros(len(index))
        return float(value), np.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    result = scipy.optimize.minimize(
        f, x[index], jac=True, method="TNC", bounds=list(zip(lo[index], hi[index])),
        options={"maxfun": config.budget, "scale": hi[index] - lo[index],
                 "stepmx": config.step})
    out = x.copy()
    if np.all(np.isfinite(result.x)):
        out[index] = np.clip(result.x, lo[index], hi[index])
    return out


def _fit_simplex(objective: _Objective, x, index, lo, hi, config: FitConfig):
    """Nelder-Mead on one LV set in coordinates scaled to [0, 1] by each LV's range."""
    width = hi[index] - lo[index]

    def f(u):
        full = x.copy()
        full[index] = lo[index] + np.clip(u, 0.0, 1.0) * width
        value = objective.value(full)
        objective.record(full, value)
        return float(value) if np.isfinite(value) else _PENALTY

    u0 = (x[index] - lo[index]) / width
    d = len(index)
    step = np.where(u0 + config.step <= 1.0, config.step, -config.step)
    simplex = np.vstack([u0] + [u0 + step[i] * np.eye(d)[i] for i in range(d)])
    result = scipy.optimize.minimize(
        f, u0, method="Nelder-Mead", bounds=[(0.0, 1.0)] * d,
        options={"maxiter": config.budget, "initial_simplex": simplex,
                 "xatol": 1e-4, "fatol": 1e-3})
    out = x.copy()
    out[index] = lo[index] + np.clip(result.x, 0.0, 1.0) * width
    return out


def pixel_error(scene: render.Scene, observed, resolution=(64, 64)) -> float:
    """Mean squared RGB error between a JAX render of ``scene`` and ``observed``."""
    rgb = render.render(scene, resolution=tuple(resolution)).rgb
    return float(jnp.mean((rgb - _resize(observed, resolution)) ** 2))

