"""Gradient-free outer loops: the baselines of AutoSimulate and of the hybrid gradient.

Every baseline optimises a black box ``evaluate(psi, key) -> Evaluation(value,
images)``: it simulates data from the flat simulator parameters ``psi`` (``(d,)``,
float64 numpy), trains or fine-tunes a task network on it and returns the
validation loss (lower is better) and how many images it rendered. ``psi`` lives
in a box ``bounds: (d, 2)`` of (low, high) per coordinate. The family
(``BASELINES``, one signature, each with a frozen config of the same name in
``CONFIGS``):

- ``random_search``: ``psi0``, then uniform samples in the box (AutoSimulate).
- ``random_fixed``: 10 uniform ``psi`` drawn once and evaluated; summarise them
  with :func:`fixed_summary` (hybrid gradient, Table 1).
- ``basic_random_search``: Basic Random Search of Mania et al. (2018), antithetic
  directions, update :func:`brs_update` (hybrid gradient's baseline).
- ``reinforce``: Learning to Simulate (Ruiz et al. 2019): a Gaussian policy over
  ``psi`` moved by the score-function gradient :func:`reinforce_gradient` with Adam.
- ``bayesian_optimisation``: the ``bayes_opt`` package (AutoSimulate's BO).
- ``evolution``: mutation and (mu + lambda) selection, after Yang and Deng's shape
  evolution (hybrid gradient, Table 2).

All share one budget accounting (:class:`Budget`: images, evaluations, seconds) and
one way to run independent candidates, :func:`evaluate_many`, one after another or
as Ray tasks, with the same numbers either way. Methods work in box coordinates
rescaled to ``[0, 1]^d`` (``u = (psi - low) / (high - low)``), so step sizes and
noise scales are fractions of each coordinate's range, and every evaluated ``psi``
is clipped to the box.

Keys: ``sample_key, eval_key = jax.random.split(key)``; evaluation number ``i`` of
a run (0-based, in history order) gets ``jax.random.fold_in(eval_key, i)``, and
iteration (or candidate) ``t`` of a method draws float32 numbers from
``jax.random.fold_in(sample_key, t)``, so runs repeat with or without x64.

A value that is not finite (a failed training) is recorded but never chosen as
best, and never used by an update. ``executor="ray"`` uses the Ray this process
is connected to and does not start one: call ``ray.init(...)`` first.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import optax
from jaxtyping import ArrayLike, Float

EXECUTORS: tuple[str, ...] = ("sequential", "ray")


class Evaluation(NamedTuple):
    """What one call of ``evaluate`` returns.

    Attributes:
      value: validation loss of the network trained on data from ``psi``; lower is
        better; NaN for a failed training.
      images: images rendered for this evaluation.
      metrics: optional extra numbers (e.g. the trained network's validation and
        test metrics), kept in the history; never used by a method.
    """

    value: float
    images: int
    metrics: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Budget:
    """When a run stops: before any set limit would be exceeded.

    Attributes:
      images: images rendered, summed over evaluations. Until the first evaluation
        reports its count, one evaluation runs alone; after it, a batch only starts
        the evaluations that fit at the largest count seen so far (exact when every
        evaluation renders the same number).
      evaluations: calls of ``evaluate``.
      seconds: wall time, checked before each batch (a batch already running ends).
    """

    images: int | None = None
    evaluations: int | None = None
    seconds: float | None = None

    def __post_init__(self):
        if self.images is None and self.evaluations is None and self.seconds is None:
            raise ValueError("budget: set at least one of images, evaluations, seconds")
        for name in ("images", "evaluations", "seconds"):
            limit = getattr(self, name)
            if limit is not None and not limit > 0:
                raise ValueError(f"budget: {name}={limit} must be > 0")


class Result(NamedTuple):
    """What a baseline found.

    Attributes:
      psi: ``(d,)`` best evaluated parameters (``psi0`` if no value was finite).
      value: its value (NaN if none was finite).
      history: one dict per evaluation, in order: ``psi`` ``(d,)``, ``value``,
        ``images``, ``images_so_far``, ``evaluations_so_far``, ``wall_time_s``
        (seconds from the start until it and every earlier evaluation had finished),
        ``best_so_far`` (``inf`` before a finite value), ``iteration`` (the method's
        batch), ``skipped`` (left out of selection and updates: its value, or for
        Basic Random Search its antithetic partner's, was not finite), ``metrics``
        (the evaluation's, or None).
      stop_reason: ``"images"``, ``"evaluations"`` or ``"seconds"`` (the budget
        that ended it), or ``"done"`` (``random_fixed`` evaluated all its samples).
    """

    psi: np.ndarray
    value: float
    history: list[dict[str, Any]]
    stop_reason: str


# ----------------------------------------------------------------------------- configs


def _at_least(config, name: str, minimum):
    if getattr(config, name) < minimum:
        raise ValueError(f"{name}={getattr(config, name)} must be >= {minimum}")


def _positive(config, name: str):
    if not getattr(config, name) > 0:
        raise ValueError(f"{name}={getattr(config, name)} must be > 0")


@dataclasses.dataclass(frozen=True)
class RandomSearch:
    """Random search: ``psi0``, then uniform samples in the box.

    Attributes:
      batch_size: candidates started at once (in parallel with ``executor="ray"``);
        the candidates and their values do not depend on it.
    """

    batch_size: int = 8

    def __post_init__(self):
        _at_least(self, "batch_size", 1)


@dataclasses.dataclass(frozen=True)
class RandomFixed:
    """Random but fixed ``psi`` (hybrid gradient, Table 1).

    Attributes:
      num_samples: uniform ``psi`` drawn once and evaluated (10 in the paper).
    """

    num_samples: int = 10

    def __post_init__(self):
        _at_least(self, "num_samples", 1)


@dataclasses.dataclass(frozen=True)
class BasicRandomSearch:
    """Basic Random Search (Mania et al. 2018, V1 with the top-b rule of V1-t).

    Attributes:
      num_directions: ``N``, antithetic directions per iteration (``2 N`` evaluations).
      top_directions: ``b``, directions with the highest ``max(r+, r-)`` used in the
        update; None uses all ``N``.
      step_size: ``alpha``, in fractions of the box's range.
      noise: ``nu``, the exploration scale in fractions of the box's range.
    """

    num_directions: int = 8
    top_directions: int | None = None
    step_size: float = 0.05
    noise: float = 0.05

    def __post_init__(self):
        _at_least(self, "num_directions", 1)
        if self.top_directions is not None and not 1 <= self.top_directions <= self.num_directions:
            raise ValueError(f"top_directions={self.top_directions} must be None or in "
                             f"[1, num_directions={self.num_directions}]")
        _positive(self, "step_size")
        _positive(self, "noise")


@dataclasses.dataclass(frozen=True)
class Reinforce:
    """REINFORCE over a Gaussian policy on ``psi`` (Learning to Simulate).

    Attributes:
      num_samples: ``K``, ``psi`` sampled (and evaluated) per iteration.
      learning_rate: of Adam on the policy mean, in fractions of the box's range.
      init_std: the policy's initial standard deviation, fraction of the range.
      learn_std: also learn the log standard deviation (else it stays fixed).
      baseline_decay: of the moving-average baseline of the rewards.
    """

    num_samples: int = 8
    learning_rate: float = 0.05
    init_std: float = 0.1
    learn_std: bool = False
    baseline_decay: float = 0.9

    def __post_init__(self):
        _at_least(self, "num_samples", 1)
        _positive(self, "learning_rate")
        _positive(self, "init_std")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay={self.baseline_decay} must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class BayesianOptimisation:
    """Bayesian optimisation by ``bayes_opt`` (GP with a Matern 5/2 kernel, UCB).

    Attributes:
      init_points: uniform samples evaluated after ``psi0`` before the GP proposes.
      kappa: of the upper-confidence-bound acquisition (``bayes_opt``'s default).
    """

    init_points: int = 5
    kappa: float = 2.576

    def __post_init__(self):
        _at_least(self, "init_points", 0)
        _at_least(self, "kappa", 0)


@dataclasses.dataclass(frozen=True)
class Evolution:
    """Mutation and (mu + lambda) selection of a population of ``psi``.

    Attributes:
      population_size: ``mu``, the members kept; the first population is ``psi0``
        and ``mu - 1`` mutations of it.
      num_offspring: ``lambda``, mutations of uniformly chosen members per generation.
      mutation_scale: standard deviation of the Gaussian mutation, fraction of the range.
    """

    population_size: int = 8
    num_offspring: int = 8
    mutation_scale: float = 0.1

    def __post_init__(self):
        _at_least(self, "population_size", 1)
        _at_least(self, "num_offspring", 1)
        _positive(self, "mutation_scale")


# ----------------------------------------------------------------------------- evaluation


def _as_evaluation(result: Any, index: int) -> Evaluation:
    metrics = result.metrics if isinstance(result, Evaluation) else None
    try:
        value, images = result[:2] if isinstance(result, Evaluation) else result
    except (TypeError, ValueError):
        raise ValueError(f"evaluate returned {result!r} for candidate {index}; expected "
                         f"Evaluation(value, images)") from None
    if isinstance(images, (bool, np.bool_)) or int(images) != images or images < 0:
        raise ValueError(f"evaluate returned images={images!r} for candidate {index}; "
                         f"expected an integer >= 0")
    return Evaluation(float(value), int(images),
                      None if metrics is None else {k: float(v) for k, v in metrics.items()})


def _call(evaluate: Callable, psi: np.ndarray, key: jax.Array):
    """The body of a Ray task."""
    return evaluate(psi, key)


def _ray():
    """The ``ray`` module, connected; errors say how to install or connect it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError('executor="ray" needs Ray: pip install -e ".[ray]"') from err
    if not ray.is_initialized():
        raise RuntimeError('executor="ray" runs on the Ray this process is connected to; '
                           'call ray.init(...) first (ray.init() for this machine, '
                           'ray.init(address="auto") for a running cluster)')
    return ray


def _check_executor(executor: str):
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not one of {EXECUTORS}")
    if executor == "ray":
        _ray()


def evaluate_many(evaluate: Callable[[np.ndarray, jax.Array], Evaluation],
                  psis: Float[ArrayLike, "n d"], keys: list[jax.Array],
                  executor: str = "sequential", *,
                  on_done: Callable[[int, Evaluation], None] | None = None) -> list[Evaluation]:
    """Evaluates independent candidates, one after another or as Ray tasks.

    Args:
      evaluate: ``(psi, key) -> Evaluation``.
      psis: ``(n, d)`` candidates.
      keys: ``n`` PRNG keys, one per candidate.
      executor: ``"sequential"`` (a loop here) or ``"ray"``: one Ray task per
        candidate (one CPU each) on the Ray this process is connected to; it does
        not start one (``RuntimeError`` asking for ``ray.init(...)``).
      on_done: called as ``on_done(i, evaluation)`` when candidate ``i`` finishes.

    Returns:
      ``n`` :class:`Evaluation` in the order of ``psis``; a deterministic
      ``evaluate`` gives the same numbers under both executors.
    """
    _check_executor(executor)
    psis = np.asarray(psis, dtype=np.float64)
    if psis.ndim != 2 or len(keys) != len(psis):
        raise ValueError(f"psis must be (n, d) with one key each; got shape {psis.shape} "
                         f"and {len(keys)} keys")
    results: list[Evaluation | None] = [None] * len(psis)
    if executor == "sequential":
        for i, (psi, key) in enumerate(zip(psis, keys)):
            results[i] = _as_evaluation(evaluate(psi, key), i)
            if on_done is not None:
                on_done(i, results[i])
        return results
    ray = _ray()
    function = ray.put(evaluate)
    task = ray.remote(_call)
    refs = [task.remote(function, psi, key) for psi, key in zip(psis, keys)]
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i = index[done[0]]
        results[i] = _as_evaluation(ray.get(done[0]), i)
        if on_done is not None:
            on_done(i, results[i])
    return results


class _Runner:
    """One run's budget, history, best value and progress bar."""

    def __init__(self, evaluate, psi0, bounds, budget, executor, progress, eval_key, name):
        from tqdm.auto import tqdm

        self.evaluate_fn, self.budget, self.executor = evaluate, budget, executor
        self.psi0, self.low, self.high = psi0, bounds[:, 0], bounds[:, 1]
        self.eval_key = eval_key
        self.history: list[dict[str, Any]] = []
        self.images = 0
        self.most_images: int | None = None
        self.best_value, self.best_psi = math.inf, None
        self.stop_reason = ""
        self.start = time.perf_counter()
        self.bar = tqdm(total=budget.evaluations, desc=name, unit="eval", disable=not progress)

    def to_psi(self, u: np.ndarray) -> np.ndarray:
        """Unit-box points ``u`` as ``psi``, clipped to the box."""
        u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
        return np.clip(self.low + (self.high - self.low) * u, self.low, self.high)

    def to_unit(self, psi: np.ndarray) -> np.ndarray:
        return (psi - self.low) / (self.high - self.low)

    def allowed(self) -> int | float:
        """How many more evaluations may start now (recording why when none)."""
        budget, room = self.budget, math.inf
        if budget.seconds is not None and time.perf_counter() - self.start >= budget.seconds:
            self.stop_reason = "seconds"
            return 0
        if budget.evaluations is not None:
            room = budget.evaluations - len(self.history)
            if room <= 0:
                self.stop_reason = "evaluations"
                return 0
        if budget.images is not None:
            left = budget.images - self.images
            if left <= 0 or (self.most_images is not None and left < self.most_images):
                self.stop_reason = "images"
                return 0
            if self.most_images is None:
                room = 1
            elif self.most_images > 0:
                room = min(room, left // self.most_images)
        return room

    def evaluate(self, u: np.ndarray, iteration: int) -> np.ndarray:
        """Evaluates the unit-box points ``u: (n, d)`` that fit the budget.

        Returns:
          their values, ``(m,)`` with ``m <= n`` (fewer: the budget ended the run).
        """
        psis = self.to_psi(u)
        values: list[float] = []
        while len(values) < len(psis):
            room = self.allowed()
            if room == 0:
                break
            chunk = psis[len(values):len(values) + int(min(room, len(psis) - len(values)))]
            first = len(self.history)
            keys = [jax.random.fold_in(self.eval_key, first + j) for j in range(len(chunk))]
            finished = [0.0] * len(chunk)

            def on_done(j, evaluation, finished=finished):
                finished[j] = time.perf_counter() - self.start
                self.bar.update(1)

            for j, evaluation in enumerate(evaluate_many(self.evaluate_fn, chunk, keys,
                                                         self.executor, on_done=on_done)):
                self.record(chunk[j], evaluation, finished[j], iteration)
                values.append(evaluation.value)
            best = self.best_value if self.best_psi is not None else float("nan")
            self.bar.set_postfix(images=self.images, best=f"{best:.4g}")
        return np.asarray(values, dtype=np.float64)

    def record(self, psi, evaluation: Evaluation, finished: float, iteration: int):
        self.images += evaluation.images
        self.most_images = max(self.most_images or 0, evaluation.images)
        finite = math.isfinite(evaluation.value)
        if finite and evaluation.value < self.best_value:
            self.best_value, self.best_psi = evaluation.value, psi
        wall = max(finished, self.history[-1]["wall_time_s"] if self.history else 0.0)
        self.history.append(dict(
            psi=psi.copy(), value=evaluation.value, images=evaluation.images,
            images_so_far=self.images, evaluations_so_far=len(self.history) + 1,
            wall_time_s=wall, best_so_far=self.best_value, iteration=iteration,
            skipped=not finite, metrics=evaluation.metrics))

    def skip(self, index: int):
        """Marks history entry ``index`` as left out of the method's update."""
        self.history[index]["skipped"] = True

    def more(self) -> bool:
        return self.allowed() > 0

    def result(self) -> Result:
        self.bar.close()
        if self.best_psi is None:
            return Result(self.psi0.copy(), float("nan"), self.history, self.stop_reason)
        return Result(self.best_psi.copy(), self.best_value, self.history, self.stop_reason)


def _check_box(psi0, bounds) -> tuple[np.ndarray, np.ndarray]:
    psi0 = np.asarray(psi0, dtype=np.float64)
    if psi0.ndim != 1 or psi0.size == 0:
        raise ValueError(f"psi0 must be a flat vector of shape (d,), got shape {psi0.shape}")
    if not np.all(np.isfinite(psi0)):
        raise ValueError(f"psi0 must be finite, got {psi0}")
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.shape != (psi0.size, 2):
        raise ValueError(f"bounds must have shape (d, 2) = ({psi0.size}, 2), rows (low, high) "
                         f"per coordinate of psi0; got shape {bounds.shape}")
    low, high = bounds[:, 0], bounds[:, 1]
    bad = np.flatnonzero(~(np.isfinite(bounds).all(axis=1) & (low < high)))
    if bad.size:
        raise ValueError(f"bounds must be finite with low < high; coordinates {bad.tolist()} "
                         f"have (low, high) {bounds[bad].tolist()}")
    outside = np.flatnonzero((psi0 < low) | (psi0 > high))
    if outside.size:
        raise ValueError(f"psi0 lies outside bounds at coordinates {outside.tolist()}: "
                         f"{psi0[outside].tolist()} not in {bounds[outside].tolist()}")
    return psi0, bounds


def _start(name, key, evaluate, psi0, bounds, config, budget, executor, progress):
    """Validated inputs, the method's sample key and a runner."""
    if not isinstance(config, CONFIGS[name]):
        raise TypeError(f"config of {name} must be a {CONFIGS[name].__name__}, "
                        f"got {type(config).__name__}")
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    _check_executor(executor)
    psi0, bounds = _check_box(psi0, bounds)
    sample_key, eval_key = jax.random.split(key)
    runner = _Runner(evaluate, psi0, bounds, budget, executor, progress, eval_key, name)
    return sample_key, runner


def _uniform(key: jax.Array, t: int, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 draws (the same with or without x64) from ``fold_in(key, t)``, as float64."""
    draw = jax.random.uniform(jax.random.fold_in(key, t), shape, dtype=np.float32)
    return np.asarray(draw, dtype=np.float64)


def _normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 standard normal draws (the same with or without x64), as float64."""
    return np.asarray(jax.random.normal(key, shape, dtype=np.float32), dtype=np.float64)


# ----------------------------------------------------------------------------- members


def random_search(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
                  bounds: Float[ArrayLike, "d 2"], config: RandomSearch = RandomSearch(), *,
                  budget: Budget, executor: str = "sequential", progress: bool = True) -> Result:
    """Random search: ``psi0``, then candidate ``t >= 1`` uniform from ``fold_in(sample_key, t)``.

    Args and returns as :func:`run_baseline`.
    """
    sample_key, runner = _start("random_search", key, evaluate, psi0, bounds, config, budget,
                                executor, progress)
    d, t = runner.psi0.size, 0
    while runner.more():
        batch = [runner.to_unit(runner.psi0) if i == 0 else _uniform(sample_key, i, (d,))
                 for i in range(t, t + config.batch_size)]
        runner.evaluate(np.stack(batch), iteration=t // config.batch_size)
        t += config.batch_size
    return runner.result()


def random_fixed(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
                 bounds: Float[ArrayLike, "d 2"], config: RandomFixed = RandomFixed(), *,
                 budget: Budget, executor: str = "sequential", progress: bool = True) -> Result:
    """Random fixed ``psi``: ``num_samples`` uniform samples, evaluated once.

    Sample ``t`` is drawn from ``fold_in(sample_key, t)``; ``psi0`` only fixes the
    dimension. Summarise with :func:`fixed_summary`. Args and returns as
    :func:`run_baseline`.
    """
    sample_key, runner = _start("random_fixed", key, evaluate, psi0, bounds, config, budget,
                                executor, progress)
    d = runner.psi0.size
    u = np.stack([_uniform(sample_key, t, (d,)) for t in range(config.num_samples)])
    if len(runner.evaluate(u, iteration=0)) == config.num_samples:
        runner.stop_reason = "done"
    return runner.result()


class FixedSummary(NamedTuple):
    """One of the best, median and worst evaluations: its value and ``psi`` ``(d,)``."""

    value: float
    psi: np.ndarray


def fixed_summary(result: Result) -> dict[str, FixedSummary]:
    """Best, median and worst of the finite values in ``result.history`` (Table 1).

    The median is the lower one for an even count (``np.percentile(...,
    method="lower")``), so that it is a value some ``psi`` produced.

    Returns:
      ``{"best": ..., "median": ..., "worst": ...}`` of :class:`FixedSummary`.

    Raises:
      ValueError: no value in the history is finite.
    """
    entries = [h for h in result.history if math.isfinite(h["value"])]
    if not entries:
        raise ValueError("result: no evaluation in its history has a finite value")
    values = np.array([h["value"] for h in entries])
    order = np.argsort(values, kind="stable")
    ranks = {"best": 0, "median": (len(values) - 1) // 2, "worst": len(values) - 1}
    return {name: FixedSummary(float(values[order[r]]), entries[order[r]]["psi"].copy())
            for name, r in ranks.items()}


def brs_update(u: Float[ArrayLike, " d"], deltas: Float[ArrayLike, "n d"],
               r_plus: Float[ArrayLike, " n"], r_minus: Float[ArrayLike, " n"],
               config: BasicRandomSearch) -> tuple[np.ndarray, np.ndarray]:
    """One Basic Random Search step (Mania et al. 2018, Alg. 1 V1 with top-b of V1-t).

    ``u + alpha / (b sigma_R) * sum_{top b} (r+_i - r-_i) delta_i``, clipped to
    ``[0, 1]^d``, over the directions whose two rewards are finite, ranked by
    ``max(r+_i, r-_i)``; ``b`` is ``min(top_directions, finite directions)`` and
    ``sigma_R`` the standard deviation of their ``2 b`` rewards (no step when it is 0).

    Args:
      u: ``(d,)`` current point in unit-box coordinates.
      deltas: ``(n, d)`` directions.
      r_plus, r_minus: ``(n,)`` rewards (``-value``) at ``u + nu delta_i`` and ``u - nu delta_i``.
      config: ``step_size`` (alpha) and ``top_directions`` (b; None: all).

    Returns:
      ``(new_u, used)``: ``(d,)`` and ``(n,)`` bool, the directions in the update.
    """
    u, deltas = np.asarray(u, np.float64), np.asarray(deltas, np.float64)
    r_plus, r_minus = np.asarray(r_plus, np.float64), np.asarray(r_minus, np.float64)
    finite = np.flatnonzero(np.isfinite(r_plus) & np.isfinite(r_minus))
    top = len(deltas) if config.top_directions is None else config.top_directions
    ranked = finite[np.argsort(-np.maximum(r_plus[finite], r_minus[finite]), kind="stable")]
    chosen = ranked[:top]
    used = np.zeros(len(deltas), dtype=bool)
    used[chosen] = True
    sigma = np.std(np.concatenate([r_plus[chosen], r_minus[chosen]])) if chosen.size else 0.0
    if not sigma > 0:
        return u.copy(), used
    step = (r_plus[chosen] - r_minus[chosen]) @ deltas[chosen]
    return np.clip(u + config.step_size / (chosen.size * sigma) * step, 0.0, 1.0), used


def basic_random_search(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
                        bounds: Float[ArrayLike, "d 2"],
                        config: BasicRandomSearch = BasicRandomSearch(), *, budget: Budget,
                        executor: str = "sequential", progress: bool = True) -> Result:
    """Basic Random Search from ``psi0``; ``2 N`` evaluations per iteration.

    Iteration ``t`` draws ``deltas ~ N(0, I)``, ``(N, d)``, from
    ``fold_in(sample_key, t)`` and evaluates, in this order, ``u + nu delta_0, u -
    nu delta_0, u + nu delta_1, ...`` (clipped to the box), then steps by
    :func:`brs_update`. A direction with a non-finite value is skipped. An
    iteration cut short by the budget takes no step. Args and returns as
    :func:`run_baseline`.
    """
    sample_key, runner = _start("basic_random_search", key, evaluate, psi0, bounds, config,
                                budget, executor, progress)
    u, n, t = runner.to_unit(runner.psi0), config.num_directions, 0
    while runner.more():
        deltas = _normal(jax.random.fold_in(sample_key, t), (n, u.size))
        points = u + config.noise * np.stack([deltas, -deltas], axis=1).reshape(2 * n, u.size)
        first = len(runner.history)
        values = runner.evaluate(points, iteration=t)
        if len(values) < 2 * n:
            break
        r_plus, r_minus = -values[0::2], -values[1::2]
        u, _ = brs_update(u, deltas, r_plus, r_minus, config)
        for i in np.flatnonzero(~(np.isfinite(r_plus) & np.isfinite(r_minus))):
            runner.skip(first + 2 * i)
            runner.skip(first + 2 * i + 1)
        t += 1
    return runner.result()


def reinforce_gradient(loc: Float[ArrayLike, " d"], log_scale: Float[ArrayLike, " d"],
                       samples: Float[ArrayLike, "*batch k d"],
                       values: Float[ArrayLike, "*batch k"],
                       baseline: Float[ArrayLike, "*batch"]) -> tuple[np.ndarray, np.ndarray]:
    """Score-function estimate of the gradient of ``E[value]`` for ``N(loc, exp(log_scale)^2)``.

    ``mean_k (value_k - baseline) d/dparams log N(s_k)`` over the samples with a
    finite value (REINFORCE with reward ``-value``, negated, so descend on it).
    Unbiased when ``baseline`` does not depend on the samples.

    Args:
      loc, log_scale: ``(d,)`` policy parameters.
      samples: ``(*batch, k, d)`` draws of the policy (before any clipping).
      values: ``(*batch, k)`` their values; non-finite ones are left out.
      baseline: ``(*batch)`` or scalar, in units of ``value``.

    Returns:
      ``(grad_loc, grad_log_scale)``, each ``(*batch, d)`` (zero without a finite value).
    """
    loc, log_scale = np.asarray(loc, np.float64), np.asarray(log_scale, np.float64)
    samples, values = np.asarray(samples, np.float64), np.asarray(values, np.float64)
    finite = np.isfinite(values)
    advantage = np.where(finite, values - np.asarray(baseline, np.float64)[..., None], 0.0)
    count = np.maximum(finite.sum(axis=-1), 1)[..., None]
    z = (samples - loc) / np.exp(log_scale)
    grad_loc = np.einsum("...k,...kd->...d", advantage, z / np.exp(log_scale)) / count
    grad_log_scale = np.einsum("...k,...kd->...d", advantage, z ** 2 - 1.0) / count
    return grad_loc, grad_log_scale


def reinforce(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
              bounds: Float[ArrayLike, "d 2"], config: Reinforce = Reinforce(), *,
              budget: Budget, executor: str = "sequential", progress: bool = True) -> Result:
    """REINFORCE (Learning to Simulate) with a Gaussian policy centred on ``psi0``.

    Iteration ``t`` samples ``s_k = loc + std * eps_k``, ``eps ~ N(0, I)`` ``(K,
    d)`` from ``fold_in(sample_key, t)`` (unit-box coordinates), evaluates the
    clipped ``s_k``, and takes an Adam step along :func:`reinforce_gradient` with the
    baseline of earlier iterations (the first uses its own mean); the mean is then
    clipped to the box. Non-finite values are skipped. Args and returns as
    :func:`run_baseline`.
    """
    sample_key, runner = _start("reinforce", key, evaluate, psi0, bounds, config, budget,
                                executor, progress)
    d = runner.psi0.size
    params = {"loc": runner.to_unit(runner.psi0), "log_scale": np.full(d, np.log(config.init_std))}
    optimizer = optax.adam(config.learning_rate)
    opt_state = optimizer.init(params)
    baseline, t = None, 0
    while runner.more():
        eps = _normal(jax.random.fold_in(sample_key, t), (config.num_samples, d))
        samples = params["loc"] + np.exp(params["log_scale"]) * eps
        first = len(runner.history)
        values = runner.evaluate(samples, iteration=t)
        if len(values) < config.num_samples:
            break
        finite = np.isfinite(values)
        for i in np.flatnonzero(~finite):
            runner.skip(first + i)
        if finite.any():
            mean = float(values[finite].mean())
            baseline = mean if baseline is None else baseline
            grad_loc, grad_log_scale = reinforce_gradient(params["loc"], params["log_scale"],
                                                          samples, values, baseline)
            grads = {"loc": grad_loc,
                     "log_scale": grad_log_scale if config.learn_std else np.zeros(d)}
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = {k: np.asarray(v, np.float64)
                      for k, v in optax.apply_updates(params, updates).items()}
            params["loc"] = np.clip(params["loc"], 0.0, 1.0)
            baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * mean
        t += 1
    return runner.result()


def _import_bayes_opt():
    try:
        import bayes_opt
    except ImportError as err:
        raise ImportError('bayesian_optimisation needs bayesian-optimization: '
                          'pip install -e ".[bo]"') from err
    return bayes_opt


def bayesian_optimisation(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
                          bounds: Float[ArrayLike, "d 2"],
                          config: BayesianOptimisation = BayesianOptimisation(), *,
                          budget: Budget, executor: str = "sequential",
                          progress: bool = True) -> Result:
    """Bayesian optimisation by ``bayes_opt``, maximising ``-value`` on the unit box.

    The first batch is ``psi0`` and ``init_points`` uniform samples; then the GP
    proposes one point at a time (``suggest``/``register``). ``bayes_opt`` is seeded
    from ``sample_key``. A non-finite value is registered as the lowest finite target
    seen so far (dropped before any), so the GP learns to avoid the region. Args and
    returns as :func:`run_baseline`.
    """
    bayes_opt = _import_bayes_opt()
    sample_key, runner = _start("bayesian_optimisation", key, evaluate, psi0, bounds, config,
                                budget, executor, progress)
    d = runner.psi0.size
    names = [f"psi_{i:0{len(str(d - 1))}d}" for i in range(d)]
    seed = int(jax.random.randint(sample_key, (), 0, np.iinfo(np.int32).max, dtype=np.int32))
    optimizer = bayes_opt.BayesianOptimization(
        f=None, pbounds={name: (0.0, 1.0) for name in names},
        acquisition_function=bayes_opt.acquisition.UpperConfidenceBound(kappa=config.kappa),
        random_state=seed, verbose=0, allow_duplicate_points=True)
    as_array = lambda params: np.array([params[name] for name in names])  # noqa: E731
    batch = [runner.to_unit(runner.psi0)]
    batch += [as_array(p) for p in optimizer.random_sample(config.init_points)]
    lowest, t = math.inf, 0   # the lowest finite target so far
    while runner.more():
        points = np.stack(batch)
        values = runner.evaluate(points, iteration=t)
        for point, value in zip(np.clip(points, 0.0, 1.0), values):
            if math.isfinite(value):
                lowest = min(lowest, -value)
            if math.isfinite(value) or math.isfinite(lowest):
                target = -value if math.isfinite(value) else lowest
                optimizer.register(dict(zip(names, point)), target)
        if not runner.more():
            break
        batch = [as_array(optimizer.suggest())]
        t += 1
    return runner.result()


def evolution(key: jax.Array, evaluate: Callable, psi0: Float[ArrayLike, " d"],
              bounds: Float[ArrayLike, "d 2"], config: Evolution = Evolution(), *,
              budget: Budget, executor: str = "sequential", progress: bool = True) -> Result:
    """Evolution by Gaussian mutation and (mu + lambda) selection, from ``psi0``.

    Generation 0 is ``psi0`` and ``mu - 1`` mutations of it (noise from
    ``fold_in(sample_key, 0)``); generation ``t`` splits ``fold_in(sample_key, t)``
    into the parents' indices and the noise. The ``mu`` lowest values of parents and
    offspring survive, non-finite ones ranked last (ties: earlier first). Args and
    returns as :func:`run_baseline`.
    """
    sample_key, runner = _start("evolution", key, evaluate, psi0, bounds, config, budget,
                                executor, progress)
    u0, mu, scale = runner.to_unit(runner.psi0), config.population_size, config.mutation_scale
    noise = _normal(jax.random.fold_in(sample_key, 0), (mu - 1, u0.size))
    population = np.clip(np.concatenate([u0[None], u0 + scale * noise]), 0.0, 1.0)
    values = runner.evaluate(population, iteration=0)
    population, t = population[:len(values)], 1
    while runner.more():
        parent_key, noise_key = jax.random.split(jax.random.fold_in(sample_key, t))
        parents = np.asarray(jax.random.randint(parent_key, (config.num_offspring,), 0,
                                                len(population), dtype=np.int32))
        noise = _normal(noise_key, (config.num_offspring, u0.size))
        offspring = np.clip(population[parents] + scale * noise, 0.0, 1.0)
        offspring_values = runner.evaluate(offspring, iteration=t)
        pool = np.concatenate([population, offspring[:len(offspring_values)]])
        pool_values = np.concatenate([values, offspring_values])
        order = np.argsort(np.where(np.isfinite(pool_values), pool_values, np.inf),
                           kind="stable")[:mu]
        population, values, t = pool[order], pool_values[order], t + 1
    return runner.result()


BASELINES: dict[str, Callable[..., Result]] = {
    "random_search": random_search,
    "random_fixed": random_fixed,
    "basic_random_search": basic_random_search,
    "reinforce": reinforce,
    "bayesian_optimisation": bayesian_optimisation,
    "evolution": evolution,
}
CONFIGS: dict[str, type] = {
    "random_search": RandomSearch,
    "random_fixed": RandomFixed,
    "basic_random_search": BasicRandomSearch,
    "reinforce": Reinforce,
    "bayesian_optimisation": BayesianOptimisation,
    "evolution": Evolution,
}


def run_baseline(method: str, key: jax.Array,
                 evaluate: Callable[[np.ndarray, jax.Array], Evaluation],
                 psi0: Float[ArrayLike, " d"], bounds: Float[ArrayLike, "d 2"],
                 config: Any = None, *, budget: Budget, executor: str = "sequential",
                 progress: bool = True) -> Result:
    """Runs the baseline ``BASELINES[method]``.

    Args:
      method: a key of ``BASELINES``.
      key: PRNG key of the run (split as the module docstring says).
      evaluate: ``(psi, key) -> Evaluation``; ``psi`` is ``(d,)`` float64 in the box.
      psi0: ``(d,)`` starting point, inside ``bounds``.
      bounds: ``(d, 2)`` (low, high) per coordinate, low < high.
      config: a ``CONFIGS[method]`` (None: its defaults).
      budget: when to stop.
      executor: one of ``EXECUTORS``, for the independent candidates of a batch.
      progress: show a tqdm bar (evaluations, images, best value).

    Returns:
      :class:`Result`.

    Raises:
      ValueError: naming a bad ``method``, ``executor``, ``bounds``, ``psi0``,
        ``budget`` or config field.
    """
    if method not in BASELINES:
        raise ValueError(f"method={method!r} is not one of {sorted(BASELINES)}")
    config = CONFIGS[method]() if config is None else config
    return BASELINES[method](key, evaluate, psi0, bounds, config, budget=budget,
                             executor=executor, progress=progress)
