"""Hypergradients side by side: simopt_jax's estimators against jaxopt and optimistix.

    python -m benchmarks.hypergrad --seed 0
    python -m benchmarks.hypergrad --quick --out /tmp/hypergrad.json

Problems (all timed in float32):

- ``ridge_loglam``: ridge regression, ``train_loss(w, outer) = ||X w - y||^2 / (2 n)
  + (lambda / 2) ||w||^2`` with ``outer = log lambda``; ``val_loss`` the same squared
  error on a separate synthetic validation set; ``params`` the exact minimiser
  (solved in float64, cast to float32).
- ``ridge_x``: the same ridge problem with ``outer = X`` (the training inputs),
  ``lambda`` fixed.
- ``mlp_weights``: a tanh MLP classifier (Flax) on Gaussian inputs labelled by a
  random teacher network; ``outer`` = per-example weights (initially 1),
  ``train_loss = mean(weights * cross-entropy) + (l2 / 2) ||theta||^2``; ``params``
  trained to near-optimum by L-BFGS in float64 then cast to float32 (the final
  gradient norm is reported). ``l2 = 1e-2``: with ``1e-3`` the point reached after
  thousands of L-BFGS steps still had directions of negative curvature, and float64
  CG on its Hessian did not converge.

Methods, one row each:

- ``gradient``: one ``jax.grad`` of ``train_loss`` with respect to ``params``, the
  unit of ``grad_equivalents`` (a row's median time over this one's).
- ``quadratic``, ``approx_quadratic``, ``linear``, ``no_val``:
  ``simopt_jax.implicit_hypergrad`` with ``maxiter = --cg-iters`` and ``tol = 0``, so
  that ``quadratic`` does exactly that many CG iterations. The whole output
  ``(grad_outer, info)`` is timed, as a user gets it.
- ``jaxopt``: ``jaxopt.implicit_diff.custom_root(jax.grad(train_loss), solve=
  partial(jaxopt.linear_solve.solve_cg, maxiter=k, tol=0))`` around a "solver"
  that returns its initial parameters (the given optimum), and ``jax.grad`` of
  ``val_loss`` of its output with respect to ``outer``: only the hypergradient is
  timed.
- ``optimistix``: ``optimistix.minimise`` of ``train_loss`` with a minimiser that
  terminates before its first step (so the forward solve returns ``y0``, the given
  optimum), ``adjoint=ImplicitAdjoint(lineax.CG(rtol=0, atol=0, max_steps=k))``,
  ``tags={symmetric, positive_semidefinite}`` (lineax's CG requires them),
  ``throw=False``; ``jax.grad`` of ``val_loss`` of ``.value`` with respect to
  ``outer``. lineax's CG keeps its defaults otherwise: one extra product for the
  initial residual, and a recomputed residual every 10 steps.
- ``unrolled``: ``simopt_jax.unrolled_hypergrad`` from the optimum with SGD at step
  ``1 / lambda_max`` (of the Hessian; for the MLP the largest over the full Hessian
  and a few minibatch Hessians) for ``num_steps`` in ``--steps``, without checkpointing and
  with ``checkpoint="sqrt"``. Ridge steps are full-batch; MLP steps see minibatches
  of ``mlp_batch`` examples (per-epoch permutations, through ``batches``), which
  bounds the memory of plain unrolling.

Measurements: ``compile_s`` is ``jax.jit(f).lower(*args).compile()``; then one
untimed call (whose output gives ``rel_error = ||g - g_ref|| / ||g_ref||`` and the
cosine to the reference), and timed calls with ``jax.block_until_ready``, round
robin over a problem's rows so that rows are measured side by side under the same
machine load. A repeat is the mean of ``calls_per_repeat`` back-to-back calls
(enough for ``--min-sample-ms``); ``median_s`` is the median over repeats.
``peak_bytes`` is XLA's compiled memory analysis ``temp + output + argument`` bytes
(arguments are the data, the parameters and ``outer``; unused ones are pruned by
``jit``); ``temp_bytes`` is listed too. References are float64: ridge by
``jax.grad`` through ``jnp.linalg.solve``; the MLP by ``jax.scipy.sparse.linalg.cg``
on the float64 Hessian at the float64-cast parameters (its true relative residual is
reported).

Targets (per problem, pass or fail as measured): ``quadratic`` no slower than the
fastest peer (median of the per-round time ratios ``<= 1``) with equal or better
accuracy (``rel_error`` at most 1.1 times the peer's, or both below ``1e-5``,
float32 round-off at these sizes); ``quadratic`` costs at most ``k + 3``
gradient-equivalents; ``checkpoint="sqrt"`` at the largest ``num_steps`` needs at
most 1/5 of the ``peak_bytes`` of plain unrolling.

Budgets: an unrolled row predicted (linearly in ``num_steps`` from the largest
smaller one with the same checkpointing) to need more than
``--max-seconds-per-row`` for one call, or to end past ``--max-minutes``, is
skipped, as is a row whose ``peak_bytes`` exceed ``--max-gib``; repeats of a row
stop before their sum would pass ``--max-seconds-per-row`` (at least one is taken).
A row whose first call raises (a peer's runtime check) is skipped with the error.
Skipped rows are listed with their reason and never given numbers.

Writes ``--out`` (JSON), the same path with ``.md`` (the Markdown table, also
printed) and with ``.png`` (time against error, memory against ``num_steps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import pathlib
import statistics
import time
import warnings
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import optax.tree_utils as otu
from jax.flatten_util import ravel_pytree

matplotlib.use("Agg")
import matplotlib.lines as mlines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
from tqdm import tqdm  # noqa: E402

import simopt_jax  # noqa: E402
from benchmarks import common  # noqa: E402

try:
    import lineax as lx
    import optimistix as optx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # "JAXopt is no longer maintained"
        from jaxopt import implicit_diff as jaxopt_implicit_diff
        from jaxopt import linear_solve as jaxopt_linear_solve
except ImportError as error:   # pragma: no cover
    raise ImportError(
        "benchmarks.hypergrad compares against jaxopt and optimistix: "
        "pip install -e '.[bench]'"
    ) from error

PROBLEMS = ("ridge_loglam", "ridge_x", "mlp_weights")
PEERS = ("jaxopt", "optimistix")
LR_BATCHES = 8
"""The MLP's SGD step is ``1 / lambda_max`` over the full Hessian and the Hessians of the
first this many minibatches (a minibatch's curvature exceeds the full one's)."""
EQUAL_ACCURACY = 1.1
"""``rel_error`` within this factor of the peer's counts as equal accuracy."""
ROUNDOFF = 1e-5
"""Both ``rel_error`` below this count as equal: float32 round-off at these sizes."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Problem sizes, method settings and budgets.

    Attributes:
      problems: a subset of ``PROBLEMS``.
      cg_iters: CG iterations of ``quadratic`` and of both peers (``tol = 0``).
      steps: ``num_steps`` of the unrolled rows.
      ridge_n, ridge_d, ridge_val: training examples, features, validation examples.
      ridge_lambda: ``lambda`` (``outer = log lambda`` starts there).
      mlp_features: input size, hidden widths, classes.
      mlp_n, mlp_val: training and validation examples.
      mlp_l2: L2 weight on every parameter.
      mlp_teacher_scale: factor on the teacher's logits before labels are sampled
        (larger: less label noise).
      mlp_batch: examples per unrolled SGD step.
      mlp_fit_iters: float64 L-BFGS iterations to the optimum.
      reference_maxiter, reference_tol: float64 CG of the MLP reference.
      repeats: timed repeats per row, at most.
      min_sample_ms: back-to-back calls per repeat until one repeat lasts this long.
      max_seconds_per_row: budget of one row's timed calls, seconds.
      max_minutes: budget of the whole run, minutes.
      max_gib: rows whose ``peak_bytes`` exceed this are not run.
      seed: seed of the synthetic data, initial weights and minibatches.
    """

    problems: tuple[str, ...] = PROBLEMS
    cg_iters: int = 20
    steps: tuple[int, ...] = (10, 100, 1000)
    ridge_n: int = 2000
    ridge_d: int = 200
    ridge_val: int = 1000
    ridge_lambda: float = 0.1
    mlp_features: tuple[int, ...] = (32, 128, 128, 10)
    mlp_n: int = 4000
    mlp_val: int = 1000
    mlp_l2: float = 1e-2
    mlp_teacher_scale: float = 10.0
    mlp_batch: int = 400
    mlp_fit_iters: int = 4000
    reference_maxiter: int = 5000
    reference_tol: float = 1e-10
    repeats: int = 21
    min_sample_ms: float = 50.0
    max_seconds_per_row: float = 30.0
    max_minutes: float = 22.0
    max_gib: float = 8.0
    seed: int = 0


QUICK = dict(cg_iters=5, steps=(10, 30), ridge_n=200, ridge_d=20, ridge_val=100,
             mlp_features=(8, 16, 16, 3), mlp_n=200, mlp_val=100, mlp_batch=50, mlp_fit_iters=200,
             reference_maxiter=1000, repeats=2, min_sample_ms=2.0)
"""``--quick``: tiny problems, 5 CG iterations, 10 and 30 unrolled steps, 2 repeats."""


class Problem(NamedTuple):
    """One bilevel problem at its inner optimum.

    Attributes:
      name: one of ``PROBLEMS``.
      description: one line for the report.
      train_loss: ``(params, outer, data) -> scalar``.
      val_loss: ``(params, data) -> scalar``.
      params, outer, data: float32 pytrees (``data`` may hold int labels).
      lr: SGD step of the unrolled rows, ``1 / lambda_max(H)`` (for the MLP, the
        largest over the full Hessian and those of the first ``LR_BATCHES`` minibatches).
      minibatches: ``num_steps -> (num_steps, batch)`` int32 example indices, or None
        for full-batch unrolling.
      batch_loss: ``(params, outer, data, indices) -> scalar`` on a minibatch, or None.
      reference: float64 ``d val_loss(theta*(outer)) / d outer``, shaped like ``outer``.
      info: facts for the report (sizes, gradient norm, reference residual).
    """

    name: str
    description: str
    train_loss: Callable
    val_loss: Callable
    params: Any
    outer: Any
    data: Any
    lr: float
    minibatches: Callable | None
    batch_loss: Callable | None
    reference: np.ndarray
    info: dict


def _cast(tree: Any, dtype) -> Any:
    """Float leaves to ``dtype``, other leaves unchanged."""
    return jax.tree.map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
        else jnp.asarray(a), tree)


def _flat64(tree: Any) -> np.ndarray:
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in jax.tree.leaves(tree)])


def _grad_norm(train_loss, params, outer, data) -> float:
    return float(otu.tree_norm(jax.jit(jax.grad(train_loss))(params, outer, data)))


# ----------------------------------------------------------------------------- ridge


def _ridge_losses(outer_kind: str, lam: float):
    """``(train_loss, val_loss)`` with ``outer`` = ``log lambda`` or ``X``."""
    def train_loss(w, outer, data):
        if outer_kind == "loglam":
            x, lam_ = data["x"], jnp.exp(outer)
        else:
            x, lam_ = outer, lam
        r = x @ w - data["y"]
        return 0.5 * jnp.mean(r ** 2) + 0.5 * lam_ * jnp.sum(w ** 2)

    def val_loss(w, data):
        return 0.5 * jnp.mean((data["x_val"] @ w - data["y_val"]) ** 2)

    return train_loss, val_loss


def ridge_problem(config: Config, outer_kind: str) -> Problem:
    """Ridge regression at its exact minimiser; ``outer_kind`` is ``"loglam"`` or ``"x"``."""
    n, d, lam = config.ridge_n, config.ridge_d, config.ridge_lambda
    rng = np.random.default_rng(config.seed)
    w_true = rng.normal(size=d) / math.sqrt(d)
    x, x_val = rng.normal(size=(n, d)), rng.normal(size=(config.ridge_val, d))
    y = x @ w_true + 0.5 * rng.normal(size=n)
    y_val = x_val @ w_true + 0.5 * rng.normal(size=config.ridge_val)
    hessian = x.T @ x / n + lam * np.eye(d)
    w = np.linalg.solve(hessian, x.T @ y / n)
    data64 = {"x": x, "y": y, "x_val": x_val, "y_val": y_val}
    outer64 = np.log(lam) if outer_kind == "loglam" else x
    if outer_kind == "x":
        del data64["x"]
    train_loss, val_loss = _ridge_losses(outer_kind, lam)

    def solution(outer, data):
        xs, lam_ = (data["x"], jnp.exp(outer)) if outer_kind == "loglam" else (outer, lam)
        h = xs.T @ xs / n + lam_ * jnp.eye(d, dtype=xs.dtype)
        return jnp.linalg.solve(h, xs.T @ data["y"] / n)

    with jax.enable_x64(True):
        d64, o64 = _cast(data64, jnp.float64), jnp.asarray(outer64, jnp.float64)
        reference = jax.jit(jax.grad(lambda o, d: val_loss(solution(o, d), d)))(o64, d64)
        reference = np.asarray(reference, np.float64)
    params, outer, data = (jnp.asarray(w, jnp.float32), jnp.asarray(outer64, jnp.float32),
                           _cast(data64, jnp.float32))
    what = "log lambda" if outer_kind == "loglam" else f"X ({n}x{d})"
    return Problem(
        name=f"ridge_{outer_kind}",
        description=f"ridge regression, n={n}, d={d}, {config.ridge_val} validation examples, "
                    f"lambda={lam:g}; outer = {what}",
        train_loss=train_loss, val_loss=val_loss, params=params, outer=outer, data=data,
        lr=float(1.0 / np.linalg.eigvalsh(hessian)[-1]), minibatches=None, batch_loss=None,
        reference=reference,
        info={"params": d, "outer": int(np.size(outer64)),
              "grad_norm": _grad_norm(train_loss, params, outer, data),
              "reference": "closed form: jax.grad through jnp.linalg.solve, float64",
              "reference_residual": 0.0, "unrolled": "full-batch SGD"},
    )


# ----------------------------------------------------------------------------- MLP


class MLP(nn.Module):
    """tanh MLP; ``features`` are the hidden widths then the number of outputs."""

    features: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.features[:-1]:
            x = jnp.tanh(nn.Dense(width)(x))
        return nn.Dense(self.features[-1])(x)


def _fit(loss: Callable, params: Any, iters: int) -> Any:
    """``iters`` L-BFGS steps (optax, zoom line search) on ``loss(params)``."""
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def body(_, carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = optimizer.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), state

    return jax.lax.fori_loop(0, iters, body, (params, optimizer.init(params)))[0]


def _largest_eigenvalue(loss: Callable, params: Any, *args, key: jax.Array,
                        iters: int = 100) -> jax.Array:
    """Largest eigenvalue of the Hessian of ``loss(params, *args)`` by power iteration."""
    flat, unravel = ravel_pytree(params)
    _, hvp = jax.linearize(lambda q: ravel_pytree(jax.grad(loss)(unravel(q), *args))[0], flat)
    v = jax.random.normal(key, flat.shape, flat.dtype)

    def body(_, carry):
        v, _ = carry
        hv = hvp(v)
        norm = jnp.linalg.norm(hv)
        return hv / norm, norm

    return jax.lax.fori_loop(0, iters, body, (v / jnp.linalg.norm(v), jnp.zeros((), flat.dtype)))[1]


def cg_reference(train_loss, val_loss, params, outer, data, *, maxiter: int, tol: float):
    """Implicit hypergradient by float64 CG, independent of ``simopt_jax``.

    ``v = H^-1 grad val_loss`` by ``jax.scipy.sparse.linalg.cg``, then ``-C^T v`` as
    ``-grad_outer <grad_theta train_loss, v>``. Call under ``jax.enable_x64``.

    Returns:
      ``(grad_outer, relative_residual)``, the residual ``||H v - g|| / ||g||``.
    """
    g_val = jax.grad(val_loss)(params, data)
    _, hvp = jax.linearize(lambda p: jax.grad(train_loss)(p, outer, data), params)
    v, _ = jax.scipy.sparse.linalg.cg(hvp, g_val, tol=tol, atol=0.0, maxiter=maxiter)
    residual = otu.tree_norm(otu.tree_sub(hvp(v), g_val)) / otu.tree_norm(g_val)
    cross = jax.grad(lambda o: otu.tree_vdot(jax.grad(train_loss)(params, o, data), v))(outer)
    return jax.tree.map(jnp.negative, cross), residual


def _epochs(n: int, batch: int, num_steps: int, seed: int) -> np.ndarray:
    """``(num_steps, batch)`` indices: concatenated random permutations of ``range(n)``."""
    rng = np.random.default_rng(seed)
    count = num_steps * batch
    order = np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])
    return order[:count].reshape(num_steps, batch).astype(np.int32)


def mlp_problem(config: Config) -> Problem:
    """Per-example weights of an MLP classifier, at an L-BFGS optimum."""
    n_in, *widths = config.mlp_features
    n, l2 = config.mlp_n, config.mlp_l2
    keys = jax.random.split(jax.random.key(config.seed), 6)
    x = jax.random.normal(keys[0], (n, n_in))
    x_val = jax.random.normal(keys[1], (config.mlp_val, n_in))
    teacher = MLP((2 * n_in, widths[-1]))
    teacher_params = teacher.init(keys[2], x[:1])
    scale = config.mlp_teacher_scale
    labels = jax.random.categorical(keys[3], scale * teacher.apply(teacher_params, x))
    labels_val = jax.random.categorical(keys[4], scale * teacher.apply(teacher_params, x_val))
    net = MLP(tuple(widths))
    params0 = net.init(keys[5], x[:1])
    data = {"x": x, "labels": labels, "x_val": x_val, "labels_val": labels_val}

    def penalty(params):
        return 0.5 * l2 * sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(params))

    def train_loss(params, weights, data):
        ce = optax.softmax_cross_entropy_with_integer_labels(net.apply(params, data["x"]),
                                                             data["labels"])
        return jnp.mean(weights * ce) + penalty(params)

    def batch_loss(params, weights, data, indices):
        ce = optax.softmax_cross_entropy_with_integer_labels(
            net.apply(params, data["x"][indices]), data["labels"][indices])
        return jnp.mean(weights[indices] * ce) + penalty(params)

    def val_loss(params, data):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            net.apply(params, data["x_val"]), data["labels_val"]))

    weights = jnp.ones((n,), jnp.float32)
    with jax.enable_x64(True):
        d64, w64 = _cast(data, jnp.float64), jnp.ones((n,), jnp.float64)
        fit = lambda p, w, d: _fit(lambda q: train_loss(q, w, d), p, config.mlp_fit_iters)
        fitted = jax.jit(fit)(_cast(params0, jnp.float64), w64, d64)
        params = _cast(fitted, jnp.float32)
        p64 = _cast(params, jnp.float64)
        reference, residual = jax.jit(functools.partial(
            cg_reference, train_loss, val_loss, maxiter=config.reference_maxiter,
            tol=config.reference_tol))(p64, w64, d64)
        lam_max = float(jax.jit(functools.partial(_largest_eigenvalue, train_loss))(
            p64, w64, d64, key=keys[0]))
        lam_batch_fn = jax.jit(functools.partial(_largest_eigenvalue, batch_loss))
        first = jnp.asarray(_epochs(n, config.mlp_batch, LR_BATCHES, config.seed))
        lam_batch = max(float(lam_batch_fn(p64, w64, d64, b, key=keys[0])) for b in first)
        grad_norm64 = float(otu.tree_norm(jax.jit(jax.grad(train_loss))(p64, w64, d64)))
        reference = np.asarray(reference, np.float64)
        residual = float(residual)
    data = _cast(data, jnp.float32)
    size = sum(leaf.size for leaf in jax.tree.leaves(params))
    batch, seed = config.mlp_batch, config.seed
    return Problem(
        name="mlp_weights",
        description=f"tanh MLP {'-'.join(map(str, config.mlp_features))} ({size} params), "
                    f"{n} training / {config.mlp_val} validation examples labelled by a random "
                    f"teacher, L2 {l2:g}; outer = per-example weights ({n},)",
        train_loss=train_loss, val_loss=val_loss, params=params, outer=weights, data=data,
        lr=1.0 / max(lam_max, lam_batch),
        minibatches=lambda steps: jnp.asarray(_epochs(n, batch, steps, seed)),
        batch_loss=batch_loss, reference=reference,
        info={"params": size, "outer": n,
              "grad_norm": _grad_norm(train_loss, params, weights, data),
              "grad_norm_float64": grad_norm64,
              "fit": f"{config.mlp_fit_iters} L-BFGS steps, float64",
              "lambda_max": lam_max, "lambda_max_minibatch": lam_batch,
              "reference": f"jax.scipy.sparse.linalg.cg, float64, tol {config.reference_tol:g}, "
                           f"maxiter {config.reference_maxiter}",
              "reference_residual": residual,
              "unrolled": f"SGD on minibatches of {batch} (per-epoch permutations)"},
    )


BUILDERS: dict[str, Callable[[Config], Problem]] = {
    "ridge_loglam": lambda config: ridge_problem(config, "loglam"),
    "ridge_x": lambda config: ridge_problem(config, "x"),
    "mlp_weights": mlp_problem,
}


# ----------------------------------------------------------------------------- methods


class Spec(NamedTuple):
    """One row to measure: ``fn(*args)`` returns ``grad_outer`` or ``(grad_outer, info)``."""

    method: str
    family: str
    options: dict
    fn: Callable
    args: tuple


def gradient_fn(problem: Problem) -> Callable:
    return jax.grad(problem.train_loss)


def implicit_fn(problem: Problem, method: str, cg_iters: int) -> Callable:
    def fn(params, outer, data):
        return simopt_jax.implicit_hypergrad(
            lambda p, o: problem.train_loss(p, o, data), lambda p: problem.val_loss(p, data),
            params, outer, method=method, maxiter=cg_iters, tol=0.0)
    return fn


def jaxopt_fn(problem: Problem, cg_iters: int) -> Callable:
    """jaxopt's implicit differentiation of an identity "solver" at the given optimum."""
    solve = functools.partial(jaxopt_linear_solve.solve_cg, maxiter=cg_iters, tol=0.0)
    at_optimum = jaxopt_implicit_diff.custom_root(jax.grad(problem.train_loss), solve=solve)(
        lambda init_params, outer, data: init_params)

    def fn(params, outer, data):
        return jax.grad(lambda o: problem.val_loss(at_optimum(params, o, data), data))(outer)
    return fn


class AtOptimum(optx.AbstractMinimiser):
    """A minimiser that stops before its first step: ``minimise`` returns ``y0``."""

    rtol: float = 0.0
    atol: float = 0.0
    norm: Callable = optx.max_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return None

    def step(self, fn, y, args, options, state, tags):
        return y, state, fn(y, args)[1]

    def terminate(self, fn, y, args, options, state, tags):
        return jnp.array(True), optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


def optimistix_fn(problem: Problem, cg_iters: int) -> Callable:
    """optimistix's ``ImplicitAdjoint`` (lineax CG) around :class:`AtOptimum`.

    lineax 0.1.1's CG sets its step to NaN when ``|p^T A p| <= 100 eps n |r^T r|``
    (``eps`` of the dtype, ``n`` unknowns), and ``linear_solve`` inside
    ``ImplicitAdjoint`` then raises. In float32 with many unknowns the threshold is
    large (0.26 for the 22k-parameter MLP), so a Hessian with small-curvature
    directions trips it a few iterations in; such a row is listed as failed.
    """
    adjoint = optx.ImplicitAdjoint(lx.CG(rtol=0.0, atol=0.0, max_steps=cg_iters))
    tags = frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag})

    def fn(params, outer, data):
        def solution(o):
            return optx.minimise(lambda p, args: problem.train_loss(p, *args), AtOptimum(), params,
                                 args=(o, data), adjoint=adjoint, tags=tags, throw=False).value
        return jax.grad(lambda o: problem.val_loss(solution(o), data))(outer)
    return fn


def unrolled_fn(problem: Problem, num_steps: int, checkpoint: bool | str) -> Callable:
    optimizer = optax.sgd(problem.lr)

    def fn(params, outer, data, batches):
        if batches is None:
            loss = lambda p, o: problem.train_loss(p, o, data)
        else:
            loss = lambda p, o, b: problem.batch_loss(p, o, data, b)
        return simopt_jax.unrolled_hypergrad(
            loss, lambda p: problem.val_loss(p, data), params, outer, optimizer=optimizer,
            num_steps=num_steps, checkpoint=checkpoint, batches=batches)[1]
    return fn


def specs(problem: Problem, config: Config) -> list[Spec]:
    """Rows in run order: gradient, quadratic and the peers next to each other (so that
    their paired samples are taken close in time), the other implicit methods, then
    unrolled by growing ``num_steps``."""
    k = config.cg_iters
    args = (problem.params, problem.outer, problem.data)
    rows = [Spec("gradient", "baseline", {}, gradient_fn(problem), args),
            Spec("quadratic", "implicit", {"maxiter": k, "tol": 0.0},
                 implicit_fn(problem, "quadratic", k), args)]
    peer_options = {"cg_iters": k, "tol": 0.0}
    rows.append(Spec("jaxopt", "peer", peer_options, jaxopt_fn(problem, k), args))
    rows.append(Spec("optimistix", "peer", peer_options, optimistix_fn(problem, k), args))
    for method in simopt_jax.METHODS[1:]:
        rows.append(Spec(method, "implicit", {}, implicit_fn(problem, method, k), args))
    batch = "full" if problem.minibatches is None else config.mlp_batch
    for steps in sorted(config.steps):
        batches = None if problem.minibatches is None else problem.minibatches(steps)
        for checkpoint in (False, "sqrt"):
            options = {"num_steps": steps, "checkpoint": checkpoint or "none",
                       "optimizer": f"sgd({problem.lr:.3g})", "batch": batch}
            rows.append(Spec("unrolled", "unrolled", options,
                             unrolled_fn(problem, steps, checkpoint), args + (batches,)))
    return rows


# ----------------------------------------------------------------------------- measuring


def compare(grad_outer: Any, reference: np.ndarray) -> tuple[float, float]:
    """``(||g - ref|| / ||ref||, cosine(g, ref))`` in float64."""
    g = _flat64(grad_outer)
    r = reference.ravel()
    ref_norm = np.linalg.norm(r)
    cosine = float(g @ r / (np.linalg.norm(g) * ref_norm)) if np.linalg.norm(g) > 0 else 0.0
    return float(np.linalg.norm(g - r) / ref_norm), cosine


def label(method: str, options: dict) -> str:
    if method == "unrolled":
        return f"unrolled T={options['num_steps']} ckpt={options['checkpoint']}"
    return method


def predict_call_s(spec: Spec, measured: list[dict]) -> float | None:
    """An unrolled row's seconds per call, linear in ``num_steps`` from a smaller one."""
    if spec.method != "unrolled":
        return None
    refs = [r for r in measured if r["method"] == "unrolled"
            and r["options"]["checkpoint"] == spec.options["checkpoint"]]
    if not refs:
        return None
    ref = max(refs, key=lambda r: r["options"]["num_steps"])
    return ref["first_call_s"] * spec.options["num_steps"] / ref["options"]["num_steps"]


def call_s(fn: Callable, args: tuple, number: int) -> float:
    """Mean seconds of ``number`` back-to-back calls, each waited for."""
    t0 = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / number


def _first_sentence(error: Exception) -> str:
    """The innermost ``...Error: message`` of a (callback) error, to its first full stop."""
    text = str(error)
    message = text.rsplit("Error: ", 1)[-1].strip()
    return message.split(". ", 1)[0].split("\n", 1)[0].rstrip(".") + "."


def prepare(problem: Problem, spec: Spec, config: Config) -> dict | str:
    """Compiles a row, calls it once and checks it; returns the row or why it is skipped."""
    t0 = time.perf_counter()
    compiled = jax.jit(spec.fn).lower(*spec.args).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    peak = memory.temp_size_in_bytes + memory.output_size_in_bytes + memory.argument_size_in_bytes
    if peak > config.max_gib * 2 ** 30:
        return f"peak_bytes {peak / 2 ** 30:.1f} GiB > --max-gib {config.max_gib:g}"
    t0 = time.perf_counter()
    try:
        out = jax.block_until_ready(compiled(*spec.args))
    except jax.errors.JaxRuntimeError as error:   # e.g. a peer's runtime check
        return f"failed at run time: {_first_sentence(error)}"
    first_s = time.perf_counter() - t0
    grad_outer = out[0] if spec.family == "implicit" else out
    row = {"problem": problem.name, "method": spec.method, "family": spec.family,
           "options": spec.options, "compile_s": compile_s, "first_call_s": first_s,
           "peak_bytes": int(peak), "temp_bytes": int(memory.temp_size_in_bytes),
           "rel_error": None, "cosine": None}
    if spec.family != "baseline":
        row["rel_error"], row["cosine"] = compare(grad_outer, problem.reference)
    if spec.method == "quadratic":
        row["cg_iterations"] = int(out[1].iterations)
        row["cg_residual"] = float(out[1].residual)
    per_call = first_s if first_s > 1e-3 * config.min_sample_ms else call_s(compiled, spec.args, 1)
    row["calls_per_repeat"] = max(1, math.ceil(1e-3 * config.min_sample_ms / per_call))
    row["_call"] = (compiled, spec.args)
    return row


def time_round_robin(rows: list[dict], config: Config, deadline: float, desc: str) -> None:
    """Fills each row's ``times_s``: round ``r`` times every row once, starting at row ``r``.

    A row sits out once its repeats are done, or when its next repeat would pass
    ``max_seconds_per_row`` of timed calls or the deadline (its first repeat is
    always taken).
    """
    for row in rows:
        row["times_s"] = []
    bar = tqdm(total=config.repeats * len(rows), desc=desc, unit="call", leave=False)
    for r in range(config.repeats):
        for row in rows[r % len(rows):] + rows[:r % len(rows)]:
            times, number = row["times_s"], row["calls_per_repeat"]
            if times:
                spent, next_s = sum(times) * number, times[-1] * number
                if (spent + next_s > config.max_seconds_per_row
                        or time.perf_counter() + next_s > deadline):
                    continue
            times.append(call_s(*row["_call"], number))
            bar.update()
    bar.close()


def measure(problem: Problem, config: Config, start: float) -> tuple[list[dict], list[dict]]:
    """Measured and skipped rows of one problem."""
    deadline = start + 60 * config.max_minutes
    rows, skipped = [], []
    bar = tqdm(specs(problem, config), desc=f"{problem.name} compile", unit="row", leave=False)
    for spec in bar:
        bar.set_postfix_str(label(spec.method, spec.options))
        predicted = predict_call_s(spec, rows)
        reason = None
        if predicted is not None and predicted > config.max_seconds_per_row:
            reason = (f"predicted {predicted:.0f} s per call (linear in num_steps) > "
                      f"--max-seconds-per-row {config.max_seconds_per_row:g}")
        elif predicted is not None:
            compile_guess = max(r["compile_s"] for r in rows)
            timed = min(predicted * config.repeats, config.max_seconds_per_row)
            cost = compile_guess + predicted + timed
            if time.perf_counter() + cost > deadline:
                reason = (f"--max-minutes {config.max_minutes:g} reached: about {cost:.0f} s "
                          f"more predicted")
        if reason is None:
            prepared = prepare(problem, spec, config)
            if isinstance(prepared, dict):
                rows.append(prepared)
                continue
            reason = prepared
        skipped.append({"problem": problem.name, "method": spec.method, "options": spec.options,
                        "reason": reason})
    time_round_robin(rows, config, deadline, f"{problem.name} timing")
    base = next(r for r in rows if r["method"] == "gradient")
    base_s = statistics.median(base["times_s"])
    for row in rows:
        del row["_call"]
        row["median_s"] = statistics.median(row["times_s"])
        row["repeats"] = len(row["times_s"])
        row["grad_equivalents"] = row["median_s"] / base_s
    return rows, skipped


# ----------------------------------------------------------------------------- targets


def _find(rows, problem, method, **options):
    for r in rows:
        if r["problem"] == problem and r["method"] == method and all(
                r["options"].get(k) == v for k, v in options.items()):
            return r
    return None


def paired_ratios(a: dict, b: dict) -> list[float]:
    """``a``'s time over ``b``'s, round by round."""
    return [x / y for x, y in zip(a["times_s"], b["times_s"])]


def targets(rows: list[dict], config: Config, problems: list[str]) -> list[dict]:
    """The three targets per problem, with measured values and pass/fail (None: not measured)."""
    out = []
    k, steps = config.cg_iters, max(config.steps)
    for p in problems:
        q = _find(rows, p, "quadratic")
        peers = [r for r in (_find(rows, p, name) for name in PEERS) if r]
        if q and peers:
            fastest = min(peers, key=lambda r: r["median_s"])
            ratios = paired_ratios(q, fastest)
            ratio = statistics.median(ratios)
            low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            accurate = (q["rel_error"] <= EQUAL_ACCURACY * fastest["rel_error"]
                        or max(q["rel_error"], fastest["rel_error"]) < ROUNDOFF)
            out.append({"problem": p, "target": "quadratic no slower than the fastest peer, "
                        "equal or better accuracy", "value": ratio, "threshold": 1.0,
                        "passed": bool(ratio <= 1.0 and accurate),
                        "ratio_quartiles": [low, high],
                        "detail": f"fastest peer {fastest['method']}; time ratio {ratio:.3f} "
                                  f"(median of {len(ratios)} paired rounds, quartiles "
                                  f"{low:.3f}-{high:.3f}, quadratic faster in "
                                  f"{sum(x < 1 for x in ratios)}); rel_error "
                                  f"{q['rel_error']:.3g} vs {fastest['rel_error']:.3g}"})
        else:
            out.append({"problem": p, "target": "quadratic no slower than the fastest peer, "
                        "equal or better accuracy", "value": None, "threshold": 1.0,
                        "passed": None, "detail": "quadratic or both peers not measured"})
        out.append({"problem": p, "target": f"quadratic costs <= {k} + 3 gradient-equivalents",
                    "value": q["grad_equivalents"] if q else None, "threshold": k + 3,
                    "passed": bool(q["grad_equivalents"] <= k + 3) if q else None,
                    "detail": (f"{q['grad_equivalents']:.1f} gradient-equivalents" if q
                               else "quadratic not measured")})
        plain = _find(rows, p, "unrolled", num_steps=steps, checkpoint="none")
        sqrt = _find(rows, p, "unrolled", num_steps=steps, checkpoint="sqrt")
        target = f"unrolled checkpoint=sqrt <= 1/5 of plain peak memory at num_steps={steps}"
        if plain and sqrt:
            ratio = sqrt["peak_bytes"] / plain["peak_bytes"]
            temp = sqrt["temp_bytes"] / max(plain["temp_bytes"], 1)
            out.append({"problem": p, "target": target, "value": ratio, "threshold": 0.2,
                        "passed": bool(ratio <= 0.2),
                        "detail": f"peak {sqrt['peak_bytes'] / 2**20:.2f} / "
                                  f"{plain['peak_bytes'] / 2**20:.2f} MiB = {ratio:.3f}; "
                                  f"temp alone {temp:.3f}"})
        else:
            out.append({"problem": p, "target": target, "value": None, "threshold": 0.2,
                        "passed": None, "detail": f"num_steps={steps} rows not measured"})
    return out


# ----------------------------------------------------------------------------- report


def machine_info() -> dict:
    return common.machine_info(("jax", "jaxlib", "optax", "flax", "jaxopt", "optimistix",
                                "lineax", "equinox"))


def run(config: Config) -> dict:
    """Builds every problem, measures its rows and evaluates the targets."""
    start = time.perf_counter()
    rows, skipped, problems = [], [], {}
    for name in tqdm(config.problems, desc="hypergrad", unit="problem"):
        t0 = time.perf_counter()
        problem = BUILDERS[name](config)
        problems[name] = {"description": problem.description, "setup_s": time.perf_counter() - t0,
                          "unrolled_lr": problem.lr, **problem.info}
        measured, left_out = measure(problem, config, start)
        rows += measured
        skipped += left_out
    header = {"config": dataclasses.asdict(config), "wall_s": time.perf_counter() - start}
    return {"header": header, "machine": machine_info(), "problems": problems, "rows": rows,
            "skipped": skipped, "targets": targets(rows, config, list(config.problems))}


def _options_text(row: dict) -> str:
    o = row["options"]
    if row["method"] == "unrolled":
        return f"T={o['num_steps']}, ckpt {o['checkpoint']}, batch {o['batch']}"
    if "cg_iters" in o or "maxiter" in o:
        return f"CG {o.get('cg_iters', o.get('maxiter'))}, tol 0"
    return ""


def _num(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def summary(result: dict) -> list[str]:
    """A compact table, one line per method and problems side by side (the README's)."""
    problems = list(result["problems"])
    by_label = {}
    for r in result["rows"]:
        by_label.setdefault(label(r["method"], r["options"]), {})[r["problem"]] = r
    head = "| method | " + " | ".join(f"{p} ms | grad-eq | rel error" for p in problems)
    lines = [head + " | mlp peak MiB |" if "mlp_weights" in problems else head + " |",
             "|:---|" + "---:|---:|---:|" * len(problems)
             + ("---:|" if "mlp_weights" in problems else "")]
    for name, cells in by_label.items():
        parts = []
        for p in problems:
            r = cells.get(p)
            parts += (["", "", ""] if r is None else [
                f"{1e3 * r['median_s']:.3g}", f"{r['grad_equivalents']:.3g}",
                _num(r["rel_error"], ".1e")])
        if "mlp_weights" in problems:
            r = cells.get("mlp_weights")
            parts.append("" if r is None else f"{r['peak_bytes'] / 2 ** 20:.3g}")
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return lines


def markdown(result: dict) -> str:
    """The table (one line per row), the problems, the targets and how to read them."""
    m = result["machine"]
    v = m["versions"]
    lines = [f"JAX {v['jax']} on {m['device_kind']}: {m['processor']}, {m['cpu_count']} CPUs; "
             f"jaxopt {v['jaxopt']}, optimistix {v['optimistix']}, lineax {v['lineax']} "
             f"({m['date']}).", ""]
    for name, p in result["problems"].items():
        fit = f", gradient norm at params {p['grad_norm']:.2g}"
        lines.append(f"- `{name}`: {p['description']}{fit}; reference {p['reference']}, "
                     f"relative residual {p['reference_residual']:.2g}; unrolled: "
                     f"{p['unrolled']}, step {p['unrolled_lr']:.3g}.")
    lines += ["", "Summary (medians; the full table follows):", "", *summary(result)]
    lines += ["", "| problem | method | options | compile s | median ms | repeats | grad-eq "
              "| peak MiB | rel error | cosine |",
              "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['problem']} | {r['method']} | {_options_text(r)} | {r['compile_s']:.2f} | "
            f"{1e3 * r['median_s']:.3g} | {r['repeats']} | {r['grad_equivalents']:.3g} | "
            f"{r['peak_bytes'] / 2 ** 20:.3g} | {_num(r['rel_error'], '.2e')} | "
            f"{_num(r['cosine'], '.4f')} |")
    lines += ["", "Targets:", ""]
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[t["passed"]]
        lines.append(f"- {verdict} `{t['problem']}`: {t['target']}: {t['detail']}.")
    if result["skipped"]:
        lines += ["", "Skipped, not measured:", ""]
        for s in result["skipped"]:
            lines.append(f"- `{s['problem']}` {label(s['method'], s['options'])}: {s['reason']}")
    lines += ["", "median ms: one hypergradient, median of `repeats` repeats taken round robin "
              "over a problem's rows after compiling (compile s) and one untimed call; the "
              "implicit rows time `implicit_hypergrad`'s whole output `(grad_outer, info)`, the "
              "peers only their gradient. grad-eq: median over that of one `jax.grad` of the "
              "training loss (the `gradient` row). peak MiB: XLA compiled memory analysis, temp "
              "+ output + argument bytes. rel error: ||g - g_ref|| / ||g_ref|| against the "
              "float64 reference; cosine: cos(g, g_ref). Everything timed in float32. A row "
              "that failed at run time is listed under Skipped with its error (see "
              "`optimistix_fn` in benchmarks/hypergrad.py for lineax's CG breakdown test)."]
    return "\n".join(lines)


MARKERS = {"quadratic": "o", "approx_quadratic": "^", "linear": "v", "no_val": "x",
           "jaxopt": "s", "optimistix": "D", "unrolled": "*"}


def plot(result: dict, path: pathlib.Path) -> None:
    """Left: grad-equivalents against rel error; right: unrolled peak memory against num_steps."""
    rows = [r for r in result["rows"] if r["rel_error"] is not None]
    problems = list(result["problems"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, p in enumerate(problems):
        for r in (r for r in rows if r["problem"] == p):
            point = (r["grad_equivalents"], max(r["rel_error"], 1e-8))
            hollow = r["options"].get("checkpoint") == "sqrt"
            left.scatter(*point, marker=MARKERS[r["method"]], s=40,
                         **({"facecolors": "none", "edgecolors": f"C{i}"} if hollow
                            else {"color": f"C{i}"}))
            if r["method"] == "unrolled" and not hollow:
                left.annotate(f"T={r['options']['num_steps']}", point, fontsize=6,
                              xytext=(3, 3), textcoords="offset points", color=f"C{i}")
        for checkpoint, style in (("none", "-"), ("sqrt", "--")):
            points = sorted((r["options"]["num_steps"], r["peak_bytes"] / 2 ** 20) for r in rows
                            if r["problem"] == p and r["method"] == "unrolled"
                            and r["options"]["checkpoint"] == checkpoint)
            if points:
                right.plot(*zip(*points), style, marker="o", color=f"C{i}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("time (gradient-equivalents)")
    left.set_ylabel("relative error vs float64 reference")
    left.set_title("hypergradient cost and accuracy", fontsize=10)
    handles = [mlines.Line2D([], [], color="k", marker=mk, linestyle="none", label=name)
               for name, mk in MARKERS.items()]
    handles += [mlines.Line2D([], [], color=f"C{i}", label=p) for i, p in enumerate(problems)]
    handles.append(mlines.Line2D([], [], color="k", marker="*", markerfacecolor="none",
                                 linestyle="none", label="unrolled, checkpoint sqrt"))
    left.legend(handles=handles, fontsize=7, loc="best")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("unrolled num_steps")
    right.set_ylabel("peak MiB (temp + output + argument)")
    right.set_title("unrolled memory: plain (solid) vs checkpoint sqrt (dashed)", fontsize=10)
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(result: dict, out: pathlib.Path) -> str:
    """Writes ``out`` (JSON) and its ``.md`` and ``.png`` siblings; returns the Markdown."""
    return common.write_outputs(result, out, markdown, plot)


def parse_args(argv=None) -> tuple[Config, pathlib.Path]:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", choices=PROBLEMS, default=d.problems)
    p.add_argument("--cg-iters", type=int, default=d.cg_iters,
                   help="CG iterations of quadratic and of both peers (tol 0)")
    p.add_argument("--steps", type=int, nargs="+", default=d.steps, metavar="T",
                   help="num_steps of the unrolled rows")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed repeats per row, at most")
    p.add_argument("--max-seconds-per-row", type=float, default=d.max_seconds_per_row,
                   help="budget of one row's timed calls; rows predicted to need more are skipped")
    p.add_argument("--max-minutes", type=float, default=d.max_minutes,
                   help="budget of the whole run; rows predicted to end past it are skipped")
    p.add_argument("--max-gib", type=float, default=d.max_gib,
                   help="rows whose compiled peak memory exceeds this are not run")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny problems, 5 CG iterations, T in {10, 30}, 2 repeats")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/hypergrad.json"))
    a = p.parse_args(argv)
    config = Config(problems=tuple(a.problems), cg_iters=a.cg_iters, steps=tuple(a.steps),
                    repeats=a.repeats, max_seconds_per_row=a.max_seconds_per_row,
                    max_minutes=a.max_minutes, max_gib=a.max_gib, seed=a.seed)
    return (dataclasses.replace(config, **QUICK) if a.quick else config), a.out


def main(argv=None) -> dict:
    return common.main(parse_args, run, write, argv)


if __name__ == "__main__":
    main()
