"""Gradients of expectations ``d/dpsi E_{s ~ q_psi}[h(s)]``: score function and pathwise.

AutoSimulate (Eq. 10-11) needs ``d/dpsi E_s[grad_theta l(r(s), theta)]``
contracted with ``v``; with a non-differentiable renderer ``r`` the score-function
(REINFORCE) identity ``grad E[h] = E[h(s) (x) grad_psi log q_psi(s)]`` is the only
way, and with the differentiable JAX renderer the pathwise (reparameterisation)
gradient ``E[d h(sample(eps, psi)) / d psi]`` is available too.

Estimates are Monte Carlo means over ``num_samples`` draws (Eq. 11 prints a sum;
the mean is the unbiased estimate of the gradient of the expectation). Both return
Jacobians nested like ``jax.jacobian``: the structure of ``h``'s output outside,
``psi``'s inside, each leaf of shape ``(*out_leaf, *psi_leaf)``. With
``cotangent=c`` they estimate ``d/dpsi E[<c, h(s)>]`` instead, shaped like ``psi``,
which never forms the Jacobian.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from simopt_jax.distributions import check_distribution


class ExpectationStats(NamedTuple):
    """What a gradient-of-expectation estimate cost and saw.

    Attributes:
      value: Monte Carlo estimate of ``E[h(s)]`` (of ``E[<c, h(s)>]`` with a
        cotangent), shaped like ``h``'s output.
      num_evaluations: int32, calls of ``h``.
    """

    value: Any
    num_evaluations: jax.Array


def _check(num_samples: int, minimum: int = 1) -> None:
    if (not isinstance(num_samples, numbers.Integral) or isinstance(num_samples, bool)
            or num_samples < minimum):
        raise ValueError(f"num_samples must be an int >= {minimum}, got {num_samples!r}")


def contract(h: Callable, cotangent: Any) -> Callable:
    """``s -> <cotangent, h(s)>`` (``h`` itself when ``cotangent`` is ``None``)."""
    if cotangent is None:
        return h
    return lambda s: otu.tree_vdot(cotangent, h(s))


def mean_outer(values: Any, weights: Any, count: int) -> Any:
    """``sum_k values[k] (x) weights[k] / count``, nested like ``jax.jacobian``."""
    def per_value(v):
        return jax.tree.map(
            lambda w: jnp.tensordot(v, w.astype(v.dtype), axes=((0,), (0,))) / count, weights
        )
    return jax.tree.map(per_value, values)


def _samples(key, dist, psi, num_samples):
    keys = jax.random.split(key, num_samples)
    return jax.vmap(dist.sample, (0, None))(keys, jax.lax.stop_gradient(psi))


def score_function(
    key: jax.Array,
    h: Callable[[Any], Any],
    dist: Any,
    psi: Any,
    *,
    num_samples: int,
    baseline: Any = None,
    cotangent: Any = None,
) -> tuple[Any, ExpectationStats]:
    """REINFORCE estimate of ``d/dpsi E_{s ~ q_psi}[h(s)]`` (AutoSimulate Eq. 11).

    ``mean_k (h(s_k) - b_k) (x) grad_psi log q_psi(s_k)``. Every baseline offered keeps
    the estimate unbiased, because ``E[grad log q] = 0`` and ``b_k`` never depends on
    ``s_k``:

    - ``None``: ``b = 0``;
    - ``"leave_one_out"``: ``b_k`` = mean of the other ``K - 1`` values (equal to
      ``K / (K - 1)`` times the batch-mean-centred estimate; needs ``K >= 2``);
    - a number (subtracted from every output; with a ``cotangent``, the baseline
      of ``<cotangent, h>``) or a pytree like ``h``'s output: a constant
      baseline, e.g. a running mean of earlier batches.

    Args:
      key: PRNG key of the samples.
      h: ``s -> pytree``, need not be differentiable (a renderer and a loss).
      dist: a distribution (``sample``, ``log_prob``), see ``simopt_jax.distributions``.
      psi: its parameters.
      num_samples: ``K``.
      baseline: control variate, see above.
      cotangent: optional pytree like ``h``'s output; then the result is
        ``d/dpsi E[<cotangent, h(s)>]``, shaped like ``psi``.

    Returns:
      ``(jacobian, ExpectationStats)``.
    """
    check_distribution(dist)
    _check(num_samples, 2 if isinstance(baseline, str) else 1)
    samples = _samples(key, dist, psi, num_samples)
    values = jax.vmap(contract(h, cotangent))(samples)
    scores = jax.vmap(jax.grad(dist.log_prob), (None, 0))(psi, samples)
    if isinstance(baseline, str):
        if baseline != "leave_one_out":
            raise ValueError(f"baseline must be None, 'leave_one_out' or values, got {baseline!r}")
        factor = num_samples / (num_samples - 1)
        centred = jax.tree.map(lambda v: factor * (v - v.mean(0)), values)
    elif baseline is None:
        centred = values
    elif jax.tree_util.treedef_is_leaf(jax.tree.structure(baseline)):
        centred = jax.tree.map(lambda v: v - baseline, values)
    else:
        centred = jax.tree.map(lambda v, b: v - b, values, baseline)
    jacobian = mean_outer(centred, scores, num_samples)
    value = jax.tree.map(lambda v: v.mean(0), values)
    return jacobian, ExpectationStats(value, jnp.asarray(num_samples, jnp.int32))


def pathwise(
    key: jax.Array,
    h: Callable[[Any], Any],
    dist: Any,
    psi: Any,
    *,
    num_samples: int,
    cotangent: Any = None,
) -> tuple[Any, ExpectationStats]:
    """Reparameterisation estimate ``mean_k d h(sample(key_k, psi)) / d psi``.

    Needs a reparameterised ``dist`` and a differentiable ``h`` (e.g. the JAX
    renderer). Usually far lower variance than :func:`score_function`.

    Args:
      key, h, dist, psi, num_samples, cotangent: as :func:`score_function`.

    Returns:
      ``(jacobian, ExpectationStats)``.

    Raises:
      ValueError: when ``dist`` is not reparameterised.
    """
    check_distribution(dist)
    _check(num_samples)
    if not dist.reparameterised:
        raise ValueError(
            f"pathwise gradients need a reparameterised distribution; {type(dist).__name__} "
            "is not: use score_function"
        )
    keys = jax.random.split(key, num_samples)
    h_c = contract(h, cotangent)

    def mean_value(p):
        values = jax.vmap(lambda k: h_c(dist.sample(k, p)))(keys)
        mean = jax.tree.map(lambda v: v.mean(0), values)
        return mean, mean

    if cotangent is None:
        jacobian, value = jax.jacrev(mean_value, has_aux=True)(psi)
    else:
        jacobian, value = jax.grad(mean_value, has_aux=True)(psi)
    return jacobian, ExpectationStats(value, jnp.asarray(num_samples, jnp.int32))
