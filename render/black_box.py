"""The one bridge from numpy code (pyrender, Blender, scipy) into JAX.

:func:`black_box` wraps a numpy function in ``jax.pure_callback`` and gives it
finite-difference derivatives through a ``jax.custom_jvp``. The JVP rule never
calls back on tangents: it evaluates the wrapped function at perturbed *primal*
points (:mod:`render.finite_diff`), gets the low-rank pieces
``J ~= scale * sum_j differences_j (x) directions_j`` and maps the input tangent
``t`` to ``scale * differences^T (directions @ t)``, a JAX-linear function that
JAX transposes for ``grad``/``vjp``. Hence a VJP with an image-sized cotangent
costs ``2 m`` calls of the function (``m`` random directions, or ``m = d``
coordinate axes for central differences) and never a ``(pixels, d)`` Jacobian.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.flatten_util import ravel_pytree

from render import finite_diff
from render.finite_diff import FD

VMAP_METHODS: tuple[str, ...] = (
    "sequential", "sequential_unrolled", "expand_dims", "broadcast_all"
)
"""Accepted ``vmap_method`` values, with ``jax.pure_callback``'s meaning."""


class BlackBoxError(RuntimeError):
    """A wrapped function raised, or returned arrays that do not match ``result_shape``.

    Raised on the host inside the callback; JAX re-raises it as a
    ``jax.errors.JaxRuntimeError`` (also a ``RuntimeError``) whose message ends
    with this error's message.
    """


def black_box(
    fn: Callable[..., Any],
    result_shape: Any,
    *,
    fd: FD = FD(),
    vmap_method: str = "sequential",
) -> Callable[..., Any]:
    """Makes a numpy function callable and differentiable from JAX.

    The returned ``g(*args, key=None)`` works under ``jit``, ``vmap``, ``grad``,
    ``vjp``, ``jvp``, ``jacfwd``/``jacrev`` and (by finite differences of finite
    differences) higher derivatives. Derivatives are taken with respect to every
    floating-point argument that is being differentiated; integer and bool
    arguments get no tangent. Only the perturbed arguments are stacked into the
    flat input of size ``d``, so ``fd.method="auto"`` and the cost (``2 d`` or
    ``2 m`` calls of ``fn`` per derivative) depend on which arguments are
    differentiated. The derivative evaluations are a ``jax.vmap`` over the
    perturbed points, so they are batched as ``vmap_method`` says: ``fn`` is called
    once per point for ``"sequential"``, once for all points for
    ``"expand_dims"``/``"broadcast_all"``.

    Random directions come from ``key``; with ``key=None`` they come from
    ``jax.random.key(fd.seed)``, i.e. every call uses the same directions. For
    fresh directions per call (e.g. per optimiser step) pass a new key, such as
    ``jax.random.fold_in(key, step)``.

    For float64 turn x64 on globally (``jax.config.update("jax_enable_x64",
    True)``): JAX casts callback outputs by the x64 setting of the thread that runs
    the callback, so the thread-local ``jax.enable_x64`` context is not enough.

    Args:
      fn: numpy function of one or more arrays returning arrays that match
        ``result_shape`` (same shapes; dtypes of the same kind, cast to the
        declared ones). Must be pure.
      result_shape: ``jax.ShapeDtypeStruct`` or pytree of them, as for
        ``jax.pure_callback``.
      fd: finite-difference settings.
      vmap_method: how ``jax.vmap`` batches ``fn``, see ``jax.pure_callback``.

    Returns:
      ``g(*args, key=None)`` returning a pytree like ``result_shape``.

    Raises:
      ValueError: on an unknown ``vmap_method`` or a malformed ``result_shape``.
      TypeError: if ``fd`` is not an :class:`FD`; from ``g``, on no or complex args.
      jax.errors.JaxRuntimeError: when ``fn`` raises or returns the wrong shape,
        with a :class:`BlackBoxError` message naming ``fn``.
    """
    if vmap_method not in VMAP_METHODS:
        raise ValueError(f"vmap_method must be one of {VMAP_METHODS}, got {vmap_method!r}")
    if not isinstance(fd, FD):
        raise TypeError(f"fd must be a render.finite_diff.FD, got {type(fd).__name__}")
    expected, treedef = jax.tree.flatten(result_shape)
    if not expected or not all(hasattr(s, "shape") and hasattr(s, "dtype") for s in expected):
        raise ValueError(
            "result_shape must be a jax.ShapeDtypeStruct or a non-empty pytree of them, "
            f"got {result_shape!r}"
        )
    name = _name(fn)

    def host(arg_ndims, declared, *args):
        try:
            out = fn(*(np.asarray(a) for a in args))
        except Exception as err:
            raise BlackBoxError(
                f"black-box function {name} raised {type(err).__name__}: {err}"
            ) from err
        # Under a vectorising vmap_method, args and outputs carry leading batch dims.
        batch_ndim = np.ndim(args[0]) - arg_ndims[0]
        batch = np.broadcast_shapes(*(np.shape(a)[:batch_ndim] for a in args))
        return _conform(out, declared, batch, name)

    @jax.custom_jvp
    def call(key, *args):
        del key  # Only the derivative rule uses it.
        declared = [
            jax.ShapeDtypeStruct(s.shape, jax.dtypes.canonicalize_dtype(s.dtype)) for s in expected
        ]
        leaves = jax.pure_callback(
            functools.partial(host, tuple(a.ndim for a in args), declared),
            declared,
            *args,
            vmap_method=vmap_method,
        )
        return jax.tree.unflatten(treedef, leaves)

    @functools.partial(call.defjvp, symbolic_zeros=True)
    def call_jvp(primals, tangents):
        key, *args = primals
        arg_dots = tangents[1:]
        out = call(key, *args)
        out_leaves = jax.tree.leaves(out)
        moved = [
            i
            for i, (a, t) in enumerate(zip(args, arg_dots))
            if not isinstance(t, SymbolicZero) and jnp.issubdtype(a.dtype, jnp.floating)
        ]
        floats = [
            i for i, leaf in enumerate(out_leaves) if jnp.issubdtype(leaf.dtype, jnp.floating)
        ]
        x_flat, unravel = ravel_pytree([args[i] for i in moved])

        def fn_flat(v):
            perturbed = list(args)
            for i, a in zip(moved, unravel(v)):
                perturbed[i] = a
            leaves = jax.tree.leaves(call(key, *perturbed))
            return [leaves[i] for i in floats]

        pieces = finite_diff.fd_pieces(fn_flat, x_flat, key, fd)
        t_flat, _ = ravel_pytree([arg_dots[i] for i in moved])
        dots = iter(finite_diff.jvp_from_pieces(pieces, t_flat.astype(x_flat.dtype)))
        out_dots = [
            next(dots).astype(leaf.dtype)
            if i in floats
            else np.zeros(leaf.shape, jax.dtypes.float0)
            for i, leaf in enumerate(out_leaves)
        ]
        return out, jax.tree.unflatten(treedef, out_dots)

    def wrapped(*args, key=None):
        if not args:
            raise TypeError(f"black_box({name}) needs at least one array argument")
        args = tuple(jnp.asarray(a) for a in args)
        for a in args:
            if jnp.issubdtype(a.dtype, jnp.complexfloating):
                raise TypeError(f"black_box({name}) takes real arguments, got {a.dtype}")
        if key is None:
            key = jax.random.key(fd.seed)
        return call(key, *args)

    wrapped.__name__ = wrapped.__qualname__ = f"black_box({name})"
    return wrapped


def _name(fn) -> str:
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if module else qualname


def _conform(out, declared, batch, name) -> list[np.ndarray]:
    """Checks ``fn``'s output leaves against ``declared`` and casts their dtypes."""
    leaves = jax.tree.leaves(out)
    if len(leaves) != len(declared):
        raise BlackBoxError(
            f"black-box function {name} returned {len(leaves)} arrays, "
            f"result_shape declares {len(declared)}"
        )
    conformed = []
    for k, (leaf, spec) in enumerate(zip(leaves, declared)):
        leaf = np.asarray(leaf)
        shape = tuple(batch) + tuple(spec.shape)
        if leaf.shape != shape:
            raise BlackBoxError(
                f"black-box function {name} returned shape {leaf.shape} for output {k}, "
                f"result_shape declares {shape}"
            )
        if not np.can_cast(leaf.dtype, spec.dtype, "same_kind"):
            raise BlackBoxError(
                f"black-box function {name} returned dtype {leaf.dtype} for output {k}, "
                f"result_shape declares {spec.dtype}"
            )
        conformed.append(leaf.astype(spec.dtype, copy=False))
    return conformed
