"""Runs that last: one simulator optimisation written to a run folder, resumable.

:func:`run` optimises ``psi`` of a :mod:`simopt_jax.problems` problem with one
method on an image budget and writes the run folder of DESIGN §7::

    config.json      the RunConfig (seed included): everything needed to repeat it
    history.jsonl    one line per outer step (or per baseline evaluation)
    checkpoints/     state.pkl (gradient methods) or evaluations/ (baselines), atomic
    figures/         metric vs images, vs wall time, distance of psi to psi*
    result.json      the summary a table is copied from

Methods (:data:`METHODS`):

- ``"autosimulate"``: AutoSimulate Alg. 1 (:func:`simopt_jax.autosimulate.step`),
  Adam on ``psi``; ``num_samples`` images per step.
- ``"hybrid"``: the hybrid gradient (:func:`simopt_jax.hybrid.step`), RMSprop on
  ``psi``; ``num_samples`` images per step for training plus ``2 m`` re-renders of
  them for the finite difference, all counted against the budget.
- every baseline of :data:`simopt_jax.baselines.BASELINES`: each evaluation renders
  ``num_samples`` images from a candidate ``psi``, trains a fresh network from the
  problem's ``params0`` for ``train_steps`` Adam steps and returns its validation
  loss (its validation and test metrics ride along).

Every history line has the same keys for every method: ``step``, ``images``,
``wall_time_s``, ``val_loss``, ``val_metric`` (of the method's current answer: the
carried network for gradient methods, the best evaluation so far for baselines),
``psi_distance`` (to ``psi_star``, NaN where unknown) and method-specific extras.

Resuming is exact on CPU: gradient methods restore the whole state (``psi``,
network parameters, optimiser states, counters, history) from the last
checkpoint, and step ``t`` always uses the key ``fold_in(key(seed), t)``;
baselines are deterministic given their key, so a resumed baseline replays the
evaluations it had cached and computes only the rest. Wall times continue from
the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simopt_jax import autosimulate, baselines, hybrid
from simopt_jax.hypergrad.implicit import METHODS as VARIANTS
from simopt_jax.problems import Problem, Spec, get_problem

GRADIENT_METHODS: tuple[str, ...] = ("autosimulate", "hybrid")
METHODS: tuple[str, ...] = GRADIENT_METHODS + tuple(sorted(baselines.BASELINES))
MAX_SKIPPED = 3
"""A run stops with an error after this many consecutive non-finite hypergradients."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (written to ``config.json``).

    Attributes:
      task: a problem of :data:`simopt_jax.problems.PROBLEMS` (``scenes``, ``shapes``).
      method: one of :data:`METHODS`.
      budget_images: images the method may render, in all.
      seed: of the run's keys (data sets and ``params0`` are fixed per problem).
      size: a key of :data:`simopt_jax.problems.SIZES`.
      backend: renderer of the training simulator (:class:`simopt_jax.problems.Spec`):
        ``"jax"``, or ``"gl"``/``"blender"`` for the ``scenes`` task.
      num_samples: images rendered per outer step (AutoSimulate's ``K``, the hybrid
        gradient's examples) and per baseline evaluation.
      inner_steps: AutoSimulate's fine-tuning steps per outer step.
      inner_lr: Adam's learning rate for the task network.
      outer_lr: learning rate on ``psi`` (Adam for AutoSimulate, RMSprop for hybrid).
      variant: AutoSimulate's implicit direction, one of ``simopt_jax.METHODS``.
      gradient: AutoSimulate's expectation gradient (``score_function``, ``pathwise``).
      cg_maxiter: CG iterations of the ``quadratic`` variant.
      epochs, batch_size, num_directions, sigma: the hybrid gradient's
        (:class:`simopt_jax.hybrid.Config`).
      train_steps: Adam steps that train a fresh network in a baseline evaluation.
      executor: ``"sequential"`` or ``"ray"`` (a local Ray is started if none is
        connected) for the independent candidates of a baseline.
      max_seconds: optional wall-time limit.
      eval_every: gradient methods measure the validation metric every this many steps.
      checkpoint_every: gradient methods checkpoint every this many steps.
      psi0: optional starting ``psi`` (nested lists like the problem's ``psi0``).
    """

    task: str
    method: str
    budget_images: int
    seed: int = 0
    size: str = "quick"
    backend: str = "jax"
    num_samples: int = 16
    inner_steps: int = 10
    inner_lr: float = 3e-3
    outer_lr: float = 0.05
    variant: str = "quadratic"
    gradient: str = "score_function"
    cg_maxiter: int = 10
    epochs: int = 1
    batch_size: int = 4
    num_directions: int = 4
    sigma: float = 0.05
    train_steps: int = 100
    executor: str = "sequential"
    max_seconds: float | None = None
    eval_every: int = 1
    checkpoint_every: int = 5
    psi0: Any = None

    def __post_init__(self):
        Spec(self.task, self.size, self.backend)   # names a bad task, size or backend
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not one of {METHODS}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant={self.variant!r} is not one of {VARIANTS}")
        if self.executor not in baselines.EXECUTORS:
            raise ValueError(f"executor={self.executor!r} is not one of {baselines.EXECUTORS}")
        for name in ("budget_images", "num_samples", "epochs", "batch_size", "num_directions",
                     "train_steps", "eval_every", "checkpoint_every", "cg_maxiter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        if isinstance(self.inner_steps, bool) or not isinstance(self.inner_steps, int) \
                or self.inner_steps < 0:
            raise ValueError(f"inner_steps={self.inner_steps!r} must be an int >= 0")
        for name in ("inner_lr", "outer_lr", "sigma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds={self.max_seconds!r} must be > 0")
        if self.images_per_step > self.budget_images:
            raise ValueError(f"budget_images={self.budget_images} is smaller than one step of "
                             f"{self.method} ({self.images_per_step} images)")
        # The outer-loop configs check their own fields.
        if self.method == "autosimulate":
            self.autosimulate_config()
        elif self.method == "hybrid":
            self.hybrid_config()

    @property
    def images_per_step(self) -> int:
        """Images one outer step (or one baseline evaluation) renders."""
        if self.method == "hybrid":
            return self.num_samples * (1 + 2 * self.num_directions)
        return self.num_samples

    def autosimulate_config(self) -> autosimulate.Config:
        return autosimulate.Config(num_samples=self.num_samples, inner_steps=self.inner_steps,
                                   method=self.variant, maxiter=self.cg_maxiter,
                                   gradient=self.gradient)

    def hybrid_config(self) -> hybrid.Config:
        return hybrid.Config(epochs=self.epochs, batch_size=self.batch_size,
                             num_directions=self.num_directions, sigma=self.sigma)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"config.json has unknown fields {unknown}")
        return cls(**data)


# ---------------------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file next to ``path``, then renames it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json(obj: Any) -> Any:
    """``obj`` with arrays and numpy scalars as lists and floats (NaN stays NaN)."""
    if isinstance(obj, dict):
        return {k: _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, (json.dumps(_json(obj), indent=1) + "\n").encode())


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The lines of a run's ``history.jsonl``."""
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_history(path: Path, history: list[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(_json(h)) + "\n" for h in history).encode())


def _append_history(path: Path, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_json(line)) + "\n")


# ---------------------------------------------------------------------------- the run


def _psi0(problem: Problem, config: RunConfig) -> Any:
    if config.psi0 is None:
        return problem.psi0
    try:
        psi = jax.tree.map(lambda ref, v: jnp.asarray(v, jnp.float32).reshape(jnp.shape(ref)),
                           problem.psi0, config.psi0)
    except (ValueError, TypeError) as err:
        raise ValueError(f"psi0 must be shaped like the {config.task} problem's psi0 "
                         f"({jax.tree.map(jnp.shape, problem.psi0)}): {err}") from None
    return problem.check_psi(psi)


def run(config: RunConfig | None = None, out: str | os.PathLike = "runs/run", *,
        resume: bool = False, progress: bool = True) -> dict:
    """Runs ``config`` into the run folder ``out`` and returns ``result.json``'s contents.

    Args:
      config: the run; None with ``resume=True`` reads ``out/config.json``.
      out: the run folder. A new run refuses a folder that already holds one.
      resume: continue the run in ``out`` from its last checkpoint (from the start
        if it has none); ``config``, if given, must equal the saved one.
      progress: show a tqdm bar (images, step, metric, time left).

    Raises:
      ValueError: a bad config, ``psi0`` outside its support, a folder that holds
        another run.
      FloatingPointError: the network's parameters became non-finite, or
        :data:`MAX_SKIPPED` hypergradients in a row were not finite (none of them
        was applied; the last checkpoint is intact).
    """
    out = Path(out)
    saved = out / "config.json"
    if resume:
        if not saved.exists():
            raise ValueError(f"--resume {out}: no run there (no config.json)")
        stored = RunConfig.from_json(json.loads(saved.read_text()))
        if config is not None and config != stored:
            raise ValueError(f"config differs from the one saved in {saved}; resume without one")
        config = stored
    else:
        if config is None:
            raise ValueError("config is required for a new run")
        if saved.exists():
            raise ValueError(f"{out} already holds a run; pass resume=True (--resume {out}) "
                             f"or choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        _write_json(saved, config.to_json())
    problem = get_problem(Spec(config.task, config.size, config.backend))
    psi0 = _psi0(problem, config)
    if config.method in GRADIENT_METHODS:
        history, summary = _run_gradient(problem, config, psi0, out, resume, progress)
    else:
        history, summary = _run_baseline(problem, config, psi0, out, resume, progress)
    result = {"task": config.task, "method": config.method, "seed": config.seed,
              "size": config.size, "metric": problem.metric,
              "higher_is_better": problem.higher_is_better, **summary}
    result = _json(result)
    _write_json(out / "result.json", result)
    plot_runs({config.method: history}, out / "figures", metric=problem.metric,
              has_star=problem.psi_star is not None)
    return result


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def _gradient_step(problem: Problem, config: RunConfig):
    """The jitted outer step ``(key, state) -> (state, info)`` with psi clipped to its box."""
    # eps_root > 0: Adam's update is then differentiable where a second moment is 0,
    # which the hybrid gradient's unrolled steps need (optax's advice for meta-learning).
    inner_optimizer = optax.adam(config.inner_lr, eps_root=1e-8)
    if config.method == "autosimulate":
        outer_optimizer = optax.adam(config.outer_lr)
        step = functools.partial(
            autosimulate.step, simulator=problem.simulator, loss=problem.loss,
            val_loss=problem.val_loss, inner_optimizer=inner_optimizer,
            outer_optimizer=outer_optimizer, config=config.autosimulate_config())
        init = functools.partial(autosimulate.init, outer_optimizer=outer_optimizer,
                                 inner_optimizer=inner_optimizer)
        field = "psi"
    else:
        outer_optimizer = optax.rmsprop(config.outer_lr)
        step = functools.partial(
            hybrid.step, generator=problem.generator(config.num_samples), loss=problem.loss,
            val_loss=problem.val_loss, inner_optimizer=inner_optimizer,
            outer_optimizer=outer_optimizer, config=config.hybrid_config())
        init = functools.partial(hybrid.init, outer_optimizer=outer_optimizer,
                                 inner_optimizer=inner_optimizer)
        field = "beta"

    @jax.jit
    def clipped_step(key, state):
        state, info = step(key, state)
        return state._replace(**{field: problem.clip(getattr(state, field))}), info

    return init, clipped_step, field


def _save_checkpoint(path: Path, payload: dict) -> None:
    _atomic_write(path, pickle.dumps(jax.tree.map(np.asarray, payload)))


def _run_gradient(problem: Problem, config: RunConfig, psi0, out: Path, resume: bool,
                  progress: bool) -> tuple[list[dict], dict]:
    from tqdm.auto import tqdm

    # psi0 travels separately: the cached step must not depend on it (nor hash it).
    init, step_fn, field = _gradient_step(problem, dataclasses.replace(config, psi0=None))
    ckpt = out / "checkpoints" / "state.pkl"
    history_path = out / "history.jsonl"
    if resume and ckpt.exists():
        saved = pickle.loads(ckpt.read_bytes())
        state = jax.tree.map(jnp.asarray, saved["state"])
        history, images, elapsed0 = saved["history"], int(saved["images"]), float(saved["elapsed"])
        skipped = int(saved["skipped"])
    else:
        state = init(psi0, problem.params0)
        history, images, elapsed0, skipped = [], 0, 0.0, 0
    _write_history(history_path, history)
    run_key = jax.random.key(config.seed)
    start = time.perf_counter()
    per_step = config.images_per_step
    metric = problem.metric
    bar = tqdm(total=config.budget_images, initial=images, unit="img", disable=not progress,
               desc=f"{config.method} on {config.task}")
    stop_reason = "images"
    last_metric = history[-1]["val_metric"] if history else float("nan")

    def checkpoint():
        _save_checkpoint(ckpt, {"state": state, "history": history, "images": images,
                                "elapsed": elapsed0 + time.perf_counter() - start,
                                "skipped": skipped})

    while images + per_step <= config.budget_images:
        elapsed = elapsed0 + time.perf_counter() - start
        if config.max_seconds is not None and elapsed >= config.max_seconds:
            stop_reason = "seconds"
            break
        t = int(state.step)
        state, info = step_fn(jax.random.fold_in(run_key, t), state)
        images += per_step
        if not _finite(state.inner.params):
            raise FloatingPointError(
                f"{config.method} step {t}: the network's parameters are not finite "
                f"(inner_lr={config.inner_lr} too large?); the checkpoint in {ckpt.parent} "
                f"holds the last good state")
        applied = bool(info.applied)
        skipped = 0 if applied else skipped + 1
        if not applied:
            bar.write(f"step {t}: the hypergradient was not finite; psi left unchanged",
                      file=sys.stderr)
        if skipped >= MAX_SKIPPED:
            raise FloatingPointError(
                f"{config.method} step {t}: {skipped} hypergradients in a row were not finite "
                f"(none applied); lower outer_lr={config.outer_lr} or inner_lr="
                f"{config.inner_lr}; the checkpoint in {ckpt.parent} holds the last good state")
        psi = getattr(state, field)
        t += 1
        if t % config.eval_every == 0 or images + per_step > config.budget_images:
            last_metric = problem.evaluate(state.inner.params, "val")[metric]
        line = {"step": t, "images": images,
                "wall_time_s": elapsed0 + time.perf_counter() - start,
                "val_loss": float(info.val_loss), "val_metric": last_metric,
                "psi_distance": problem.distance_to_star(psi), "applied": applied,
                "grad_norm": float(optax.tree.norm(info.grad))}
        if config.method == "autosimulate":
            line.update(train_loss=float(info.train_loss), cg_iterations=int(info.cg_iterations))
        history.append(line)
        _append_history(history_path, line)
        bar.update(per_step)
        bar.set_postfix(step=t, **{metric: f"{last_metric:.4g}"})
        if t % config.checkpoint_every == 0:
            checkpoint()
    else:
        stop_reason = "images"
    checkpoint()
    bar.close()
    psi = getattr(state, field)
    final_val = problem.evaluate(state.inner.params, "val")
    test = problem.evaluate(state.inner.params, "test")
    summary = {"images": images, "steps": int(state.step),
               "wall_time_s": elapsed0 + time.perf_counter() - start, "stop_reason": stop_reason,
               "val_metric": final_val[problem.metric], "test_metric": test[problem.metric],
               "test_metrics": test, "psi_distance": problem.distance_to_star(psi),
               "psi": problem.flatten(psi)}
    return history, summary


@dataclasses.dataclass(frozen=True)
class BaselineEvaluator:
    """``(psi (d,), key) -> Evaluation``: train a fresh network on ``num_samples``
    images from ``psi``; its validation loss is the value. Picklable (Ray): the
    problem is rebuilt from its spec in each process."""

    spec: Spec
    num_samples: int
    train_steps: int
    learning_rate: float

    def __call__(self, flat_psi: np.ndarray, key: jax.Array) -> baselines.Evaluation:
        problem = get_problem(self.spec)
        params, val_loss = _train_fresh(problem, self.num_samples, self.train_steps,
                                        self.learning_rate)(problem.unflatten(flat_psi), key)
        val, test = problem.evaluate(params, "val"), problem.evaluate(params, "test")
        return baselines.Evaluation(float(val_loss), self.num_samples,
                                    {"val_metric": val[problem.metric],
                                     "test_metric": test[problem.metric],
                                     **{f"test_{k}": v for k, v in test.items()}})


@functools.lru_cache(maxsize=None)
def _train_fresh(problem: Problem, num_samples: int, train_steps: int, learning_rate: float):
    """``(psi, key) -> (params, val_loss)``: a fresh network trained on ``num_samples``
    images from ``psi``. The steps are a Python loop of one jitted step, not a
    ``lax.scan``: XLA on CPU runs convolutions inside loop bodies ~10x slower
    (jax#12868), and unrolling 100 steps would take minutes to compile."""
    optimizer = optax.adam(learning_rate)
    simulate = jax.jit(lambda psi, key: problem.simulate(key, psi, num_samples))

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(problem.network.loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    val_loss = jax.jit(problem.val_loss)

    def train(psi, key):
        x, y = simulate(psi, key)
        params = problem.params0
        opt_state = optimizer.init(params)
        for _ in range(train_steps):
            params, opt_state = step(params, opt_state, x, y)
        return params, val_loss(params)

    return train


class _Cached:
    """An evaluator whose results are files ``dir/<hash of (psi, key)>.json``: written
    atomically as evaluations finish, replayed on resume."""

    def __init__(self, evaluate, directory: Path):
        self.evaluate, self.directory = evaluate, directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cache = {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}

    @staticmethod
    def name(psi: np.ndarray, key: jax.Array) -> str:
        data = np.asarray(psi, np.float64).tobytes() + np.asarray(jax.random.key_data(key)).tobytes()
        return hashlib.sha1(data).hexdigest()

    def __call__(self, psi, key):
        name = self.name(psi, key)
        if name in self.cache:
            c = self.cache[name]
            return baselines.Evaluation(c["value"], c["images"], c["metrics"])
        evaluation = self.evaluate(psi, key)
        _write_json(self.directory / f"{name}.json", evaluation._asdict())
        return evaluation


def _run_baseline(problem: Problem, config: RunConfig, psi0, out: Path, resume: bool,
                  progress: bool) -> tuple[list[dict], dict]:
    if config.executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
    evaluator = BaselineEvaluator(problem.spec, config.num_samples, config.train_steps,
                                  config.inner_lr)
    cached = _Cached(evaluator, out / "checkpoints" / "evaluations")
    if not resume:
        for path in cached.directory.glob("*.json"):
            path.unlink()
        cached.cache = {}
    budget = baselines.Budget(images=config.budget_images, seconds=config.max_seconds)
    result = baselines.run_baseline(config.method, jax.random.key(config.seed), cached,
                                    problem.flatten(psi0), problem.flat_bounds, budget=budget,
                                    executor=config.executor, progress=progress)
    history, best, best_metrics = [], math.inf, {}
    for i, h in enumerate(result.history):
        if not h["skipped"] and h["value"] < best:
            best, best_metrics = h["value"], h["metrics"] or {}
            best_psi = problem.unflatten(h["psi"])
            distance = problem.distance_to_star(best_psi)
        history.append({"step": i + 1, "images": h["images_so_far"],
                        "wall_time_s": h["wall_time_s"], "val_loss": h["value"],
                        "val_metric": best_metrics.get("val_metric", float("nan")),
                        "psi_distance": distance if best_metrics else float("nan"),
                        "best_val_loss": h["best_so_far"], "iteration": h["iteration"],
                        "skipped": h["skipped"], "eval_val_metric":
                            (h["metrics"] or {}).get("val_metric", float("nan"))})
    _write_history(out / "history.jsonl", history)
    last = result.history[-1] if result.history else {"images_so_far": 0, "wall_time_s": 0.0}
    summary = {"images": last["images_so_far"], "steps": len(result.history),
               "wall_time_s": last["wall_time_s"], "stop_reason": result.stop_reason,
               "val_metric": best_metrics.get("val_metric", float("nan")),
               "test_metric": best_metrics.get("test_metric", float("nan")),
               "test_metrics": {k[5:]: v for k, v in best_metrics.items()
                                if k.startswith("test_") and k != "test_metric"},
               "psi_distance": problem.distance_to_star(problem.unflatten(result.psi))
               if best_metrics else float("nan"),
               "psi": result.psi}
    if config.method == "random_fixed":
        # Best, median and worst of the ten fixed psi by validation loss, with the
        # metrics of the network each one trained (hybrid-gradient Table 1).
        summary["fixed"], summary["fixed_val_metric"], summary["fixed_test_metrics"] = {}, {}, {}
        for name, s in baselines.fixed_summary(result).items():
            entry = next(h for h in result.history
                         if h["value"] == s.value and np.array_equal(h["psi"], s.psi))
            metrics = entry["metrics"] or {}
            summary["fixed"][name] = {"value": s.value, "psi": s.psi}
            summary["fixed_val_metric"][name] = metrics.get("val_metric", float("nan"))
            summary["fixed_test_metrics"][name] = {
                k[5:]: v for k, v in metrics.items() if k.startswith("test_") and k != "test_metric"}
    return history, summary


# ---------------------------------------------------------------------------- figures


def plot_runs(histories: dict[str, list[dict]], directory: str | os.PathLike, *,
              metric: str, has_star: bool) -> list[Path]:
    """Validation metric vs images and vs wall time (and ``psi``'s distance to
    ``psi_star`` vs images when known), one line per history; returns the PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    panels = [("images", "val_metric", "images rendered", f"validation {metric}"),
              ("wall_time_s", "val_metric", "wall time (s)", f"validation {metric}")]
    if has_star:
        panels.append(("images", "psi_distance", "images rendered", "||psi - psi*|| (box units)"))
    paths = []
    for x, y, xlabel, ylabel in panels:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, history in histories.items():
            ax.plot([h[x] for h in history], [h[y] for h in history], label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"{y}_vs_{'time' if x == 'wall_time_s' else x}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
