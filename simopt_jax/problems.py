"""The two simulator-optimisation problems a run or a benchmark solves, by name.

A :class:`Problem` bundles what every outer loop needs, for one task:

- ``simulator``: ``q_psi`` over scene parameters and a deterministic ``decode``
  (:class:`simopt_jax.autosimulate.Simulator`), so AutoSimulate can use it as is,
  the hybrid gradient through :meth:`Problem.generator` and the baselines through
  the flat-vector view :meth:`Problem.flatten` / :meth:`Problem.unflatten` in the
  box :attr:`Problem.flat_bounds`;
- ``network``: the task network (:mod:`simopt_jax.tasks`) and a fixed starting
  ``params0`` shared by every method;
- ``val`` and ``test``: fixed data sets ``(x, targets)``, the same for every method
  and run seed; ``metric`` names the number a table reports.

The problems (:data:`PROBLEMS`; sizes in :data:`SIZES`):

- ``"scenes"``: AutoSimulate sec. 5.1 in miniature. Scenes of spheres, cubes and
  cylinders (:class:`simopt_jax.scenes.SceneSimulator`); the validation and test
  sets are drawn from a hidden ``psi_star``; the task is segmentation scored by mIoU.
- ``"shapes"``: hybrid gradient sec. 5.1. Shapes of the CSG grammar; the validation
  and test sets are the shape library's staplers, mugs and bananas, textured
  (:class:`simopt_jax.library.LibraryShapes`): shapes the grammar cannot make, so
  there is no ``psi_star``; the task is surface normals (and depth) scored by the
  mean angle error.

``psi`` always stays in :attr:`Problem.bounds`: :meth:`Problem.check_psi` names a
leaf outside it, and :meth:`Problem.clip` projects an updated ``psi`` back.
Problems are built once per process and cached (:func:`get_problem`), so workers
(Ray tasks included) rebuild them from their hashable :class:`Spec`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from simopt_jax.autosimulate import Simulator
from simopt_jax.grammar import DEFAULT_SIZE_MEDIAN, Grammar
from simopt_jax.library import LibraryShapes
from simopt_jax.scenes import BACKENDS, CLASS_NAMES, DEFAULT_COLOURS, SceneSimulator
from simopt_jax.simulators import ShapeSimulator
from simopt_jax.tasks import NormalsDepth, Segmentation, TaskNetwork

DATA_SEED = 20_201_202
"""Seed of every problem's validation and test sets and of ``params0``: fixed, so
every method and run seed sees the same data and starts from the same network."""


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a problem is.

    Attributes:
      resolution: (H, W) of every image.
      features: UNet channels per level.
      num_val, num_test: examples in the validation and test sets.
    """

    resolution: tuple[int, int]
    features: tuple[int, ...]
    num_val: int
    num_test: int


SIZES: dict[str, Size] = {
    # For tests: seconds per run.
    "tiny": Size(resolution=(16, 16), features=(4, 8), num_val=8, num_test=8),
    # The default and the benchmarks' size on a 2-core CPU.
    "quick": Size(resolution=(32, 32), features=(8, 16, 32), num_val=48, num_test=64),
    # Closer to the papers (a GPU is advisable).
    "full": Size(resolution=(64, 64), features=(16, 32, 64), num_val=200, num_test=200),
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A problem by name, size and training renderer: hashable, so it can be sent
    to workers.

    Attributes:
      task: a key of :data:`PROBLEMS`.
      size: a key of :data:`SIZES`.
      backend: the renderer of the simulator the network trains on, one of
        :data:`simopt_jax.scenes.BACKENDS` (``"jax"``, ``"gl"``, ``"blender"``).
        The validation and test sets are always the JAX tracer's (the scenes of
        ``psi*``; the textured library shapes), so ``"gl"`` or ``"blender"`` make
        the training images come from another renderer than the ones the network
        is judged on.
    """

    task: str
    size: str = "quick"
    backend: str = "jax"

    def __post_init__(self):
        if self.task not in PROBLEMS:
            raise ValueError(f"task={self.task!r} is not one of {sorted(PROBLEMS)}")
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is not one of {sorted(SIZES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {BACKENDS}")


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """Everything an outer loop needs for one task (see the module docstring).

    Attributes:
      spec: how it was built.
      simulator: ``q_psi`` and ``decode``: ``s -> (x (H, W, 3), targets)``.
      network: the task network.
      params0: its starting parameters (the same for every method).
      psi0: the starting simulator parameters.
      bounds: pytree like ``psi`` whose leaves are ``(low, high)`` pairs of arrays
        shaped like ``psi``'s leaves: the box ``psi`` lives in.
      psi_star: the parameters the validation set was drawn from, or None.
      val, test: ``(x (n, H, W, 3), targets)`` data sets.
      metric: the key of ``network.metrics`` a table reports.
      higher_is_better: whether a larger ``metric`` is better.
    """

    spec: Spec
    simulator: Simulator
    network: TaskNetwork
    params0: Any
    psi0: Any
    bounds: Any
    psi_star: Any
    val: tuple[jax.Array, dict]
    test: tuple[jax.Array, dict]
    metric: str
    higher_is_better: bool

    # -------------------------------------------------------------- losses and metrics

    def loss(self, params, x, targets) -> jax.Array:
        """Training loss of one example ``x (H, W, 3)`` with its ``targets``."""
        return self.network.loss(params, x[None], jax.tree.map(lambda a: a[None], targets))

    def val_loss(self, params) -> jax.Array:
        """Loss on the validation set."""
        return self.network.loss(params, *self.val)

    def evaluate(self, params, split: str = "val") -> dict[str, float]:
        """The network's metrics on ``split`` (``"val"`` or ``"test"``), as floats."""
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r} must be 'val' or 'test'")
        return {k: float(v) for k, v in _metrics(self)(params, split == "val").items()}

    # -------------------------------------------------------------- data

    def simulate(self, key: jax.Array, psi: Any, num: int) -> tuple[jax.Array, dict]:
        """``num`` training examples ``(x, targets)`` from ``psi``."""
        _, x, y = self.simulator.simulate(key, psi, num)
        return x, y

    def generator(self, num: int) -> Callable[[Any, jax.Array], tuple[jax.Array, dict]]:
        """``(psi, key) -> (x, targets)`` of ``num`` examples: the hybrid gradient's ``f``."""
        return lambda psi, key: self.simulate(key, psi, num)

    # -------------------------------------------------------------- the box

    def flatten(self, psi: Any) -> np.ndarray:
        """``psi`` as a flat float64 vector (d,), the baselines' view."""
        return np.asarray(ravel_pytree(psi)[0], np.float64)

    def unflatten(self, flat) -> Any:
        """Inverse of :meth:`flatten` (float32 leaves)."""
        return _unravel(self)(jnp.asarray(flat, jnp.float32))

    @property
    def flat_bounds(self) -> np.ndarray:
        """(d, 2) box of :meth:`flatten`'s coordinates."""
        low, high = self._box()
        return np.stack([self.flatten(low), self.flatten(high)], axis=1)

    def _box(self) -> tuple[Any, Any]:
        """(low, high) as two pytrees like ``psi0``, leaves broadcast to its shapes."""
        def side(i):
            return jax.tree.map(lambda ref, pair: jnp.broadcast_to(
                jnp.asarray(pair[i], jnp.float32), jnp.shape(ref)), self.psi0, self.bounds)
        return side(0), side(1)

    def check_psi(self, psi: Any) -> Any:
        """``psi`` if it is finite, shaped like ``psi0`` and inside the box; else a
        ``ValueError`` naming the leaf and coordinates."""
        want = jax.tree.structure(self.psi0)
        if jax.tree.structure(psi) != want:
            raise ValueError(f"psi must have the structure of psi0 ({want}), got "
                             f"{jax.tree.structure(psi)}")
        paths = jax.tree_util.tree_flatten_with_path(psi)[0]
        lows, highs = (jax.tree.leaves(side) for side in self._box())
        for (path, leaf), ref, low, high in zip(paths, jax.tree.leaves(self.psi0), lows, highs):
            name = jax.tree_util.keystr(path)
            leaf = np.asarray(leaf)
            if leaf.shape != np.shape(ref):
                raise ValueError(f"psi{name} has shape {leaf.shape}, expected {np.shape(ref)}")
            low, high = np.asarray(low), np.asarray(high)
            bad = ~np.isfinite(leaf) | (leaf < low) | (leaf > high)
            if bad.any():
                where = np.argwhere(bad).tolist() if leaf.ndim else []
                raise ValueError(f"psi{name} is outside its support [{low.min()}, {high.max()}]"
                                 f" at {where or 'its only entry'}: {leaf[bad].tolist()}")
        return psi

    def clip(self, psi: Any) -> Any:
        """``psi`` projected onto the box."""
        low, high = self._box()
        return jax.tree.map(jnp.clip, psi, low, high)

    def distance_to_star(self, psi: Any) -> float:
        """``||u(psi) - u(psi_star)||`` with each coordinate rescaled to its box
        (``u`` in ``[0, 1]``), or NaN when ``psi_star`` is unknown."""
        if self.psi_star is None:
            return float("nan")
        low, high = self.flat_bounds.T
        u = (self.flatten(psi) - low) / (high - low)
        u_star = (self.flatten(self.psi_star) - low) / (high - low)
        return float(np.linalg.norm(u - u_star))


@functools.lru_cache(maxsize=None)
def _unravel(problem: Problem):
    return ravel_pytree(problem.psi0)[1]


@functools.lru_cache(maxsize=None)
def _metrics(problem: Problem):
    val, test = problem.val, problem.test

    @functools.partial(jax.jit, static_argnums=1)
    def metrics(params, on_val: bool):
        return problem.network.metrics(params, *(val if on_val else test))

    return metrics


# ---------------------------------------------------------------------------- shapes


@dataclasses.dataclass(frozen=True)
class GrammarViews:
    """A grammar shape and a viewpoint: ``s = (tree, eye)``, the shapes problem's ``q_psi``.

    The viewpoint does not depend on ``psi`` (its score is zero), so
    ``log_prob`` is the grammar's.
    """

    shapes: ShapeSimulator
    reparameterised = False

    def sample(self, key: jax.Array, psi: dict):
        k_shape, k_view = jax.random.split(key)
        return self.shapes.grammar.sample(k_shape, psi), self.shapes.eye(k_view)

    def log_prob(self, psi: dict, s) -> jax.Array:
        return self.shapes.grammar.log_prob(psi, s[0])


def grammar_bounds(psi0: dict) -> dict:
    """The box of the shapes problem's ``psi`` (pytree of (low, high) pairs).

    Logits in [-4, 4]; log-medians of sizes within a factor 3 of the defaults and
    of the offset and scale within sensible ranges; log-spreads between
    ``log 0.05`` and ``log 1``.
    """
    def box(low, high, like):
        shape = np.shape(like)
        return (jnp.full(shape, low, jnp.float32), jnp.full(shape, high, jnp.float32))

    size_loc = np.log(np.asarray(DEFAULT_SIZE_MEDIAN, np.float32))
    spread = (math.log(0.05), 0.0)
    return {
        "expand_logits": box(-4.0, 4.0, psi0["expand_logits"]),
        "op_logits": box(-4.0, 4.0, psi0["op_logits"]),
        "primitive_logits": box(-4.0, 4.0, psi0["primitive_logits"]),
        "size_loc": (jnp.asarray(size_loc - math.log(3.0)), jnp.asarray(size_loc + math.log(3.0))),
        "size_log_scale": box(*spread, psi0["size_log_scale"]),
        "offset_loc": box(math.log(0.002), math.log(0.05), psi0["offset_loc"]),
        "offset_log_scale": box(*spread, psi0["offset_log_scale"]),
        "scale_loc": box(math.log(0.3), math.log(1.0), psi0["scale_loc"]),
        "scale_log_scale": box(*spread, psi0["scale_log_scale"]),
        "rotation_log_scale": box(math.log(0.05), math.log(2.0), psi0["rotation_log_scale"]),
    }


def _shapes(spec: Spec) -> Problem:
    size = SIZES[spec.size]
    shapes = ShapeSimulator(grammar=Grammar(max_depth=3), resolution=size.resolution,
                            backend=spec.backend)
    dist = GrammarViews(shapes)

    def decode(s):
        tree, eye = s
        image = shapes.render(tree, eye)
        return image.rgb, {"normals": image.normals, "depth": image.depth}

    psi0 = Grammar.init_psi()
    k_val, k_test, k_params = jax.random.split(jax.random.key(DATA_SEED), 3)

    def library(key, num):
        images, normals, depth = LibraryShapes(num_examples=num, resolution=size.resolution)(key)
        return images, {"normals": normals, "depth": depth}

    network = NormalsDepth(features=size.features)
    val, test = library(k_val, size.num_val), library(k_test, size.num_test)
    return Problem(
        spec=spec, simulator=Simulator(dist, decode), network=network,
        params0=network.init(k_params, val[0][:1]), psi0=psi0, bounds=grammar_bounds(psi0),
        psi_star=None, val=val, test=test, metric="angle_mean", higher_is_better=False)


# ---------------------------------------------------------------------------- scenes


def scene_psi_star(scenes: SceneSimulator) -> dict:
    """The hidden parameters the scenes problem's validation and test sets come from.

    Far from the defaults (``psi0``) in what matters to a segmenter: the class
    colours are permuted (blue spheres, red cubes, green cylinders), the scene is
    darker with a stronger key light, seen from higher up, and mostly in one
    region at high quality.
    """
    layout = np.full((scenes.num_regions, 2), 0.3 / (2 * scenes.num_regions - 1))
    layout[min(2, scenes.num_regions - 1), 1] = 0.7
    colours = np.asarray(DEFAULT_COLOURS)[[2, 0, 1]]
    return scenes.init_psi(ambient=0.2, key_light=1.3, elevation=math.radians(55.0),
                           offset_loc=(0.1, -0.1), offset_scale=0.08, colour_loc=colours,
                           layout_probs=layout)


def _scenes(spec: Spec) -> Problem:
    size = SIZES[spec.size]
    scenes = SceneSimulator(resolution=size.resolution)   # the JAX tracer: val and test
    simulator = dataclasses.replace(scenes, backend=spec.backend).simulator()
    psi0, psi_star = scenes.init_psi(), scene_psi_star(scenes)
    k_val, k_test, k_params = jax.random.split(jax.random.key(DATA_SEED), 3)

    def data(key, num):
        _, x, y = scenes.simulator().simulate(key, psi_star, num)
        return x, y

    network = Segmentation(num_classes=len(CLASS_NAMES), features=size.features)
    val, test = data(k_val, size.num_val), data(k_test, size.num_test)
    return Problem(
        spec=spec, simulator=simulator, network=network,
        params0=network.init(k_params, val[0][:1]), psi0=psi0, bounds=scenes.psi_bounds(),
        psi_star=psi_star, val=val, test=test, metric="miou", higher_is_better=True)


PROBLEMS: dict[str, Callable[[Spec], Problem]] = {"scenes": _scenes, "shapes": _shapes}
"""Every problem by task name."""


@functools.lru_cache(maxsize=None)
def get_problem(spec: Spec) -> Problem:
    """The problem ``spec`` names, built once per process."""
    return PROBLEMS[spec.task](spec)
