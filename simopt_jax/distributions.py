"""Parametric distributions ``q_psi(s)`` over simulator inputs (AutoSimulate Sec. 4.1).

Each distribution is a frozen dataclass holding only static settings; its
parameters ``psi`` are a dict of arrays, so they can be differentiated, jitted and
updated by optax. Every distribution provides

- ``sample(key, psi) -> s``: one sample (``jax.vmap`` over keys for many);
- ``log_prob(psi, s) -> scalar``: log density (or mass) of one sample, summed
  over independent coordinates;
- ``reparameterised``: whether ``sample`` is differentiable in ``psi`` with the
  right derivative (pathwise estimators need it);
- ``init(...) -> psi``: parameters from natural quantities; it raises
  ``ValueError`` naming an argument out of range (checked for concrete values,
  not for traced ones).

The family: :class:`Gaussian` (positions), :class:`LogNormal` (positive
quantities: sizes, intensities), :class:`VonMises` (angles), :class:`Categorical`
(discrete choices) and :class:`Mixture` of any one of them (multi-modal scene
parameters, e.g. mixtures of Gaussians for positions and of von Mises for poses).

Combinators and fixed randomness, for simulators whose ``s`` has several parts:

- :class:`Joint`: a product of independent named distributions, ``psi`` and ``s``
  dicts by name, ``log_prob`` the sum (a whole scene's parameters);
- :class:`Iid`: ``n`` independent samples of one distribution sharing its ``psi``
  (one Gaussian's parameters driving the placement of every object);
- :class:`Uniform`: fixed uniform randomness with no parameters (``psi = {}``):
  nuisance inputs that are not optimised (object classes, azimuths, pixel noise);
  its ``log_prob`` is constant, so its score is zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats
from jax.scipy.special import i0e, logsumexp


def _checked(name: str, value, *, positive: bool) -> jax.Array:
    """``value`` as a float array; ``ValueError`` naming ``name`` if it is out of range.

    ``positive``: require ``> 0`` everywhere, else ``>= 0``. Traced values pass
    unchecked.
    """
    value = jnp.asarray(value, dtype=jnp.result_type(float))
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value)
        if not np.all(array > 0 if positive else array >= 0):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be {bound} everywhere, got {array}")
    return value


def _broadcast(name: str, value: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``value`` broadcast to ``shape``; ``ValueError`` naming ``name`` if it does not."""
    try:
        return jnp.broadcast_to(value, shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {value.shape} does not broadcast to shape {shape}") from None


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Independent Gaussians, ``psi = {"loc": (*shape), "log_scale": (*shape)}``.

    ``s = loc + exp(log_scale) * eps`` with ``eps ~ N(0, I)``: reparameterised.
    """

    reparameterised = True

    @staticmethod
    def init(loc, scale) -> dict[str, jax.Array]:
        """Parameters of ``N(loc, scale^2)`` per coordinate.

        Args:
          loc: ``(*shape)`` means, in the units of ``s``.
          scale: standard deviations ``> 0`` (units of ``s``), broadcast to ``loc``.
        """
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        scale = _broadcast("scale", _checked("scale", scale, positive=True), loc.shape)
        return {"loc": loc, "log_scale": jnp.log(scale.astype(loc.dtype))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        loc = psi["loc"]
        eps = jax.random.normal(key, loc.shape, loc.dtype)
        return loc + jnp.exp(psi["log_scale"]) * eps

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        return jnp.sum(stats.norm.logpdf(s, psi["loc"], jnp.exp(psi["log_scale"])))


@dataclasses.dataclass(frozen=True)
class LogNormal:
    """Independent log-normals, ``psi = {"loc": (*shape), "log_scale": (*shape)}``.

    ``log s ~ N(loc, exp(log_scale)^2)``: ``loc`` and ``log_scale`` are those of the
    underlying normal. ``s = exp(loc + exp(log_scale) * eps)`` with ``eps ~ N(0, I)``:
    reparameterised. The density includes the Jacobian ``1 / s`` of ``log``; it is
    zero (``log_prob = -inf``) for ``s <= 0``.
    """

    reparameterised = True

    @staticmethod
    def init(median, sigma) -> dict[str, jax.Array]:
        """Parameters from the median and the spread of ``log s``.

        Args:
          median: ``(*shape)`` medians ``exp(loc) > 0``, in the units of ``s``.
          sigma: standard deviations ``> 0`` of ``log s`` (dimensionless: ``s`` is
            within a factor ``exp(sigma)`` of the median with probability 0.68),
            broadcast to ``median``.
        """
        median = _checked("median", median, positive=True)
        sigma = _broadcast("sigma", _checked("sigma", sigma, positive=True), median.shape)
        return {"loc": jnp.log(median), "log_scale": jnp.log(sigma.astype(median.dtype))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        return jnp.exp(Gaussian.sample(key, psi))

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        positive = s > 0
        log_s = jnp.log(jnp.where(positive, s, 1.0))
        log_p = stats.norm.logpdf(log_s, psi["loc"], jnp.exp(psi["log_scale"])) - log_s
        return jnp.sum(jnp.where(positive, log_p, -jnp.inf))


_MAX_ROUNDS = 64  # Best-Fisher rounds; each accepts with probability >= 0.65.


@dataclasses.dataclass(frozen=True)
class VonMises:
    """Independent von Mises angles, ``psi = {"loc": (*shape), "log_concentration": (*shape)}``.

    Density ``exp(kappa cos(s - loc)) / (2 pi I0(kappa))`` per coordinate, with
    ``kappa = exp(log_concentration)``; angles in radians. ``log_prob`` is
    ``2 pi``-periodic in ``s``; ``sample`` returns ``loc + theta`` with
    ``|theta| <= pi``, i.e. each coordinate within ``pi`` of its ``loc``, not wrapped
    to ``[-pi, pi)`` (wrap it yourself if you need that).

    Sampled by Best and Fisher's rejection sampler (Appl. Statist. 28, 1979), in
    forms that stay accurate in float32 from ``kappa -> 0`` (uniform) to
    ``kappa ~ 1e18`` (where ``kappa^2`` overflows). Not reparameterised: which proposal is accepted is a
    discontinuous function of ``psi``, so ``sample`` has no useful derivative; use
    a score-function estimator. The loop is bounded by 64 rounds per sample; a
    coordinate still rejected then (probability < 0.35^64) keeps its last proposal.
    """

    reparameterised = False

    @staticmethod
    def init(loc, concentration) -> dict[str, jax.Array]:
        """Parameters from the mean direction and the concentration.

        Args:
          loc: ``(*shape)`` mean directions, radians.
          concentration: ``kappa > 0`` (radians^-2: for large ``kappa`` the angle is
            about ``N(loc, 1 / kappa)``), broadcast to ``loc``.
        """
        loc = jnp.asarray(loc, dtype=jnp.result_type(float))
        kappa = _broadcast(
            "concentration", _checked("concentration", concentration, positive=True), loc.shape)
        return {"loc": loc, "log_concentration": jnp.log(kappa.astype(loc.dtype))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        loc = psi["loc"]
        kappa = jnp.exp(psi["log_concentration"])
        # Best-Fisher's r = (1 + rho^2) / (2 rho) enters only through d = r - 1, kept
        # as inv_d = 1 / d and kappa_d = kappa * d (both finite as kappa -> 0), with
        # 1 - rho as a sum of positive terms (no cancellation as kappa -> inf).
        q = jnp.sqrt(1 + 4 * kappa**2)
        tau = 1 + q
        root = jnp.sqrt(2 * tau)
        g = tau + root
        rho = 2 * kappa / g
        one_minus_rho = (1 + 1 / (q + 2 * kappa) + root) / g
        kappa_d = one_minus_rho**2 * g / 4
        inv_d = 2 * rho / one_minus_rho**2
        sign_key, loop_key = jax.random.split(key)

        def body(carry):
            i, theta, done = carry
            u_key, v_key = jax.random.split(jax.random.fold_in(loop_key, i))
            # Proposal z = cos(2 half) with 1 + z = 2 cos(half)^2, 1 - z = 2 sin(half)^2.
            half = jnp.pi / 2 * jax.random.uniform(u_key, loc.shape, loc.dtype)
            v = jax.random.uniform(v_key, loc.shape, loc.dtype)
            denominator = 1 + 2 * jnp.cos(half) ** 2 * inv_d  # (r + z) / d
            y = kappa_d * (1 + 2 * inv_d) / denominator  # kappa (r - w)
            accept = (y * (2 - y) > v) | (jnp.log(y) - jnp.log(v) + 1 - y >= 0)
            # |theta| = arccos(w) with 1 - w = 2 sin(half)^2 / denominator.
            proposal = 2 * jnp.arcsin(jnp.sin(half) / jnp.sqrt(denominator))
            return i + 1, jnp.where(done, theta, proposal), done | accept

        def cond(carry):
            i, _, done = carry
            return (i < _MAX_ROUNDS) & ~jnp.all(done)

        init = (jnp.zeros((), jnp.int32), jnp.zeros_like(loc), jnp.zeros(loc.shape, bool))
        _, theta, _ = jax.lax.while_loop(cond, body, init)
        return loc + jnp.where(jax.random.bernoulli(sign_key, 0.5, loc.shape), theta, -theta)

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        kappa = jnp.exp(psi["log_concentration"])
        # log I0(kappa) = log(i0e(kappa)) + kappa, folded into the cosine term.
        log_p = kappa * (jnp.cos(s - psi["loc"]) - 1) - jnp.log(i0e(kappa)) - math.log(2 * math.pi)
        return jnp.sum(log_p)


@dataclasses.dataclass(frozen=True)
class Categorical:
    """Independent categoricals, ``psi = {"logits": (*shape, K)}``, samples ``(*shape)`` ints.

    Probabilities are ``softmax(logits)`` over the last axis. Not reparameterised:
    use a score-function estimator.
    """

    reparameterised = False

    @staticmethod
    def init(probs) -> dict[str, jax.Array]:
        """Parameters from ``(*shape, K)`` probabilities ``>= 0`` (need not sum to 1)."""
        return {"logits": jnp.log(_checked("probs", probs, positive=False))}

    @staticmethod
    def sample(key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        return jax.random.categorical(key, psi["logits"], axis=-1)

    @staticmethod
    def log_prob(psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(psi["logits"], axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, jnp.asarray(s)[..., None], axis=-1))


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A mixture of ``K`` members of one family ``component``.

    ``psi = {"logits": (K,), "components": psi of component with a leading K axis}``.
    The mixture is over whole samples: one component index ``k ~ softmax(logits)``
    is drawn, then ``s ~ component(components[k])``, so ``s`` has the component's
    shape and its coordinates are dependent through ``k``. Not reparameterised
    (``k`` is discrete): use a score-function estimator.

    Attributes:
      component: the family of every component, e.g. ``Gaussian()`` or ``VonMises()``.
    """

    component: Any
    reparameterised = False

    def __post_init__(self):
        check_distribution(self.component)

    @staticmethod
    def init(weights, components_psi: dict[str, Any]) -> dict[str, Any]:
        """Parameters from component weights and stacked component parameters.

        Args:
          weights: ``(K,)`` weights ``>= 0`` with a positive sum (normalised here).
          components_psi: the component's ``psi`` with a leading ``K`` axis on every
            leaf, e.g. ``Gaussian.init(locs, scales)`` with ``locs`` of shape ``(K, d)``.
        """
        weights = _checked("weights", weights, positive=False)
        leading = {leaf.shape[:1] for leaf in jax.tree.leaves(components_psi)}
        if weights.ndim != 1 or leading != {weights.shape}:
            raise ValueError(
                f"weights of shape {weights.shape} must be (K,) with K the leading axis "
                f"of every leaf of components_psi, whose leading axes are {sorted(leading)}")
        if not isinstance(weights, jax.core.Tracer) and not weights.sum() > 0:
            raise ValueError(f"weights must have a positive sum, got {np.asarray(weights)}")
        return {"logits": jnp.log(weights / weights.sum()), "components": components_psi}

    def sample(self, key: jax.Array, psi: dict[str, Any]) -> jax.Array:
        index_key, component_key = jax.random.split(key)
        k = jax.random.categorical(index_key, psi["logits"])
        chosen = jax.tree.map(lambda leaf: leaf[k], psi["components"])
        return self.component.sample(component_key, chosen)

    def log_prob(self, psi: dict[str, Any], s: jax.Array) -> jax.Array:
        log_weights = jax.nn.log_softmax(psi["logits"])
        log_ps = jax.vmap(self.component.log_prob, (0, None))(psi["components"], s)
        return logsumexp(log_weights + log_ps)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Fixed independent uniforms on ``[low, high)``, ``psi = {}``: randomness not optimised.

    For nuisance inputs of a simulator (classes drawn as ``floor(u)``, azimuths,
    pixel noise) that belong in ``s`` so ``decode`` stays deterministic. ``log_prob``
    is ``-prod(shape) log(high - low)`` inside the box and ``-inf`` outside; it does
    not depend on ``psi``, so its score is zero and a score-function estimator
    ignores it. Reparameterised (trivially: nothing to differentiate).

    Attributes:
      low, high: bounds of every coordinate, ``low < high``, in the units of ``s``.
      shape: of one sample.
    """

    low: float = 0.0
    high: float = 1.0
    shape: tuple[int, ...] = ()
    reparameterised = True

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"low={self.low} and high={self.high} must be finite with low < high")
        shape = tuple(self.shape)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"shape={self.shape} must be a tuple of ints >= 0")
        object.__setattr__(self, "shape", shape)

    @staticmethod
    def init() -> dict[str, jax.Array]:
        """No parameters: ``{}``."""
        return {}

    def sample(self, key: jax.Array, psi: dict[str, jax.Array]) -> jax.Array:
        del psi
        return jax.random.uniform(key, self.shape, jnp.result_type(float),
                                  minval=self.low, maxval=self.high)

    def log_prob(self, psi: dict[str, jax.Array], s: jax.Array) -> jax.Array:
        del psi
        s = jnp.asarray(s)
        inside = jnp.all((s >= self.low) & (s < self.high))
        constant = -math.prod(self.shape) * math.log(self.high - self.low)
        return jnp.where(inside, jnp.asarray(constant, s.dtype), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class Iid:
    """``num`` independent samples of ``dist``, all with the same ``psi``.

    ``psi`` is ``dist``'s; ``s`` is ``dist``'s sample with a leading ``num`` axis,
    drawn with ``jax.random.split(key, num)`` (sample ``i`` uses key ``i``), and
    ``log_prob`` is the sum over the ``num`` samples. Reparameterised when ``dist`` is.

    Attributes:
      dist: the distribution of each sample, e.g. ``Gaussian()``.
      num: number of samples, ``>= 1``.
    """

    dist: Any
    num: int

    def __post_init__(self):
        check_distribution(self.dist)
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 1:
            raise ValueError(f"num={self.num!r} must be an int >= 1")

    @property
    def reparameterised(self) -> bool:
        return bool(self.dist.reparameterised)

    def init(self, *args, **kwargs) -> dict[str, Any]:
        """``dist.init(*args, **kwargs)``: the parameters shared by every sample."""
        return self.dist.init(*args, **kwargs)

    def sample(self, key: jax.Array, psi: dict[str, Any]) -> Any:
        return jax.vmap(self.dist.sample, (0, None))(jax.random.split(key, self.num), psi)

    def log_prob(self, psi: dict[str, Any], s: Any) -> jax.Array:
        return jnp.sum(jax.vmap(self.dist.log_prob, (None, 0))(psi, s))


@dataclasses.dataclass(frozen=True)
class Joint:
    """A product of independent named distributions: ``q(s) = prod_name q_name(s[name])``.

    ``psi = {name: psi_name}`` and ``s = {name: s_name}``; ``log_prob`` is the sum
    of the components' and ``reparameterised`` is true when every component is.
    Component ``i`` (in the order given) samples with key ``i`` of
    ``jax.random.split(key, len(components))``, so a sample is a deterministic
    function of the key, and each part's randomness does not depend on the others.

    Attributes:
      components: ``((name, dist), ...)``, names unique strings; a mapping
        ``{name: dist}`` is accepted and stored as such a tuple (hashable, so the
        joint can be static under ``jit``).
    """

    components: tuple[tuple[str, Any], ...]

    def __post_init__(self):
        items = self.components
        items = tuple(items.items()) if hasattr(items, "items") else tuple(
            tuple(item) for item in items)
        if not items:
            raise ValueError("components must name at least one distribution")
        for item in items:
            if len(item) != 2 or not isinstance(item[0], str) or not item[0]:
                raise ValueError(f"components must be (name, dist) pairs with non-empty "
                                 f"string names, got {item!r}")
            check_distribution(item[1])
        names = [name for name, _ in items]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"components has repeated names {repeated}")
        object.__setattr__(self, "components", items)

    @property
    def names(self) -> tuple[str, ...]:
        """The components' names, in order."""
        return tuple(name for name, _ in self.components)

    @property
    def reparameterised(self) -> bool:
        return all(bool(dist.reparameterised) for _, dist in self.components)

    def init(self, **psis) -> dict[str, Any]:
        """``psi`` from each component's parameters, passed by name.

        :class:`Uniform` components (no parameters) may be left out. Raises
        ``ValueError`` naming a missing or unknown component.
        """
        unknown = sorted(set(psis) - set(self.names))
        if unknown:
            raise ValueError(f"unknown components {unknown}; the joint has {list(self.names)}")
        psi = {}
        for name, dist in self.components:
            if name in psis:
                psi[name] = psis[name]
            elif isinstance(dist, Uniform):
                psi[name] = {}
            else:
                raise ValueError(f"missing parameters of component {name!r}")
        return psi

    def _keys(self, key: jax.Array) -> jax.Array:
        return jax.random.split(key, len(self.components))

    def sample(self, key: jax.Array, psi: dict[str, Any]) -> dict[str, Any]:
        keys = self._keys(key)
        return {name: dist.sample(keys[i], psi[name])
                for i, (name, dist) in enumerate(self.components)}

    def log_prob(self, psi: dict[str, Any], s: dict[str, Any]) -> jax.Array:
        return sum(dist.log_prob(psi[name], s[name]) for name, dist in self.components)


# Families by name. Mixture is not here: it needs a component, e.g. Mixture(Gaussian()).
DISTRIBUTIONS: dict[str, type] = {
    "gaussian": Gaussian, "log_normal": LogNormal, "von_mises": VonMises,
    "categorical": Categorical,
}


def check_distribution(dist: Any) -> None:
    """Raises ``TypeError`` naming what ``dist`` lacks."""
    missing = [n for n in ("sample", "log_prob", "reparameterised") if not hasattr(dist, n)]
    if missing:
        raise TypeError(
            f"{type(dist).__name__} is not a distribution: it lacks {', '.join(missing)}"
        )
