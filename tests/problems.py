"""Small bilevel problems with known answers, for the hypergradient tests.

Both build float64 arrays: call them inside a test that uses the ``x64`` fixture.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def ridge(seed: int, n: int, d: int, cond: float = 10.0, m: int = 15):
    """Ridge regression with outer parameters ``{"log_lam": (), "X": (n, d)}``.

    ``train_loss(w, outer) = ||X w - y||^2 / (2 n) + exp(log_lam) / 2 ||w||^2``;
    ``val_loss(w) = ||X_val w - y_val||^2 / (2 m)``. The columns of ``X`` are scaled
    so that ``X^T X / n`` has a condition number of about ``cond``.

    Returns:
      ``(train_loss, val_loss, solve, outer)``; ``solve(outer)`` is the exact
      minimiser, differentiable (a dense solve).
    """
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 1.0 / np.sqrt(cond), d)
    x = rng.normal(size=(n, d)) * scales
    w_true = rng.normal(size=d)
    y = jnp.asarray(x @ w_true + 0.1 * rng.normal(size=n))
    x_val = jnp.asarray(rng.normal(size=(m, d)) * scales)
    y_val = x_val @ jnp.asarray(w_true) + 0.1 * jnp.asarray(rng.normal(size=m))
    outer = {"log_lam": jnp.asarray(np.log(1e-2)), "X": jnp.asarray(x)}

    def train_loss(w, o):
        return 0.5 * jnp.mean((o["X"] @ w - y) ** 2) + 0.5 * jnp.exp(o["log_lam"]) * jnp.sum(w**2)

    def val_loss(w):
        return 0.5 * jnp.mean((x_val @ w - y_val) ** 2)

    def solve(o):
        a = o["X"].T @ o["X"] / n + jnp.exp(o["log_lam"]) * jnp.eye(d)
        return jnp.linalg.solve(a, o["X"].T @ y / n)

    return train_loss, val_loss, solve, outer


def logistic(seed: int, n: int = 30, d: int = 5, m: int = 20):
    """L2-regularised, per-example-weighted logistic regression.

    Outer parameters ``{"log_lam": (), "weights": (n,)}``; params ``{"w": (d,),
    "b": ()}``. ``solve(outer)`` runs Newton's method to machine precision (not
    differentiable: use it for finite differences of the re-solved problem).

    Returns:
      ``(train_loss, val_loss, solve, outer)``.
    """
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=d)
    x = jnp.asarray(rng.normal(size=(n, d)))
    labels = jnp.asarray((rng.random(n) < jax.nn.sigmoid(x @ w_true)).astype(float))
    x_val = jnp.asarray(rng.normal(size=(m, d)))
    labels_val = jnp.asarray((rng.random(m) < jax.nn.sigmoid(x_val @ w_true)).astype(float))
    outer = {"log_lam": jnp.asarray(np.log(0.1)), "weights": jnp.asarray(rng.uniform(0.5, 1.5, n))}

    def nll(p, xs, ys):
        logits = xs @ p["w"] + p["b"]
        return jnp.logaddexp(0.0, logits) - ys * logits

    def train_loss(p, o):
        reg = 0.5 * jnp.exp(o["log_lam"]) * (jnp.sum(p["w"] ** 2) + p["b"] ** 2)
        return jnp.mean(o["weights"] * nll(p, x, labels)) + reg

    def val_loss(p):
        return jnp.mean(nll(p, x_val, labels_val))

    @jax.jit
    def solve(o):
        flat0 = jnp.zeros(d + 1)
        unflat = lambda v: {"w": v[:d], "b": v[d]}
        f = lambda v: train_loss(unflat(v), o)

        def newton(v, _):
            return v - jnp.linalg.solve(jax.hessian(f)(v), jax.grad(f)(v)), None

        return unflat(jax.lax.scan(newton, flat0, length=30)[0])

    return train_loss, val_loss, solve, outer
