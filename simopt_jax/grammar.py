"""The CSG shape grammar of the hybrid-gradient paper (sec. 5.1) as a distribution.

The probabilistic context-free grammar

    S -> E
    E -> C(E, T(E)) | P
    C -> union | subtract
    P -> sphere | cube | truncated_cone | tetrahedron
    T -> attach * translate * rotate * scale

with ``psi`` = rule probabilities (as logits) and the parameters of log-normal
primitive sizes, translation magnitudes and scale factors, plus the spread of
Gaussian rotation angles. :class:`Grammar` samples shapes ``S = f(psi, key)``
(Eq. 3), scores them with ``log_prob`` for score-function estimators, and
evaluates their signed distance for the renderers.

**Encoding.** A shape of maximum depth ``D`` is a :class:`Tree`: a complete binary
tree of ``2**D - 1`` slots in heap order (the children of slot ``i`` are ``2i + 1``
and ``2i + 2``; slot ``i`` is at depth ``floor(log2(i + 1))``), so every array has a
fixed shape and ``sample``, ``log_prob`` and ``sdf`` jit and vmap without Python
recursion over the sampled structure. An active slot is a primitive leaf
(``kind`` 0) or a combine node (``kind`` 1) whose two children are active; the left
child ``E`` shares its parent's frame and the right child ``T(E)`` is placed by the
transform stored at the parent. At depth ``D - 1`` the rule ``E -> P`` is forced:
that choice has probability 1 and contributes 0 to ``log_prob``.

**Geometry.** Every primitive is centred at its frame's origin (the truncated cone
spans ``-h/2 <= y <= h/2`` around the ``y`` axis) and a left child shares its
parent's frame, so every subtree has a bounding sphere about its own origin, with a
radius computed bottom up: a primitive's circumradius; for a union, the larger of
the left child's and the distance to the placed right child's origin plus its
scaled radius; for a subtraction, the left child's. ``T`` maps a point ``x`` of the
right child's frame to its parent's frame as

    x -> rho_L u + m v + s R(angles) x

*attach* puts the right child's origin on the surface of the left child's bounding
sphere (radius ``rho_L``) in the unit direction ``u`` (uniform on the
sphere); *translate* moves it by ``m v``, a log-normal magnitude ``m`` (metres) in a
uniform direction ``v``; *rotate* is ``R = R_z(c) R_y(b) R_x(a)`` of Euler angles
``(a, b, c)`` (radians), each ``N(0, sigma_rot^2)``, about the child's origin;
*scale* is a log-normal uniform factor ``s``. Lengths are metres.

**Randomness.** ``sample`` draws one ``(S, 17)`` array of standard normals from the
key, so every slot's randomness is fixed whatever the outcome elsewhere: discrete
choices by inverse CDF of uniforms ``Phi(z)`` (the normal CDF of three of them),
continuous ones as ``exp(loc + exp(log_scale) eps)`` (common random
numbers: nudging ``psi`` keeps the structure unless a uniform crosses a CDF
boundary, and the continuous leaves are differentiable in the log-normal ``psi``).
The structure itself is not reparameterised, so ``reparameterised`` is False and
the grammar plugs into :func:`simopt_jax.hypergrad.score_function` like any
distribution of :mod:`simopt_jax.distributions`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy import stats
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from render import shapes

PRIMITIVES: tuple[str, ...] = ("sphere", "cube", "truncated_cone", "tetrahedron")
"""Terminals ``P``, indexed by ``Tree.primitive``."""

OPS: tuple[str, ...] = ("union", "subtract")
"""Combinators ``C``, indexed by ``Tree.op``; subtract is left minus placed right."""

SIZE_NAMES: tuple[str, ...] = (
    "sphere_radius", "cube_half_side", "cone_height", "cone_radius_bottom",
    "cone_radius_top", "tetrahedron_circumradius",
)
"""The log-normal primitive sizes (metres), in the order of ``psi["size_loc"]``."""

DEFAULT_SIZE_MEDIAN: tuple[float, ...] = (0.05, 0.04, 0.08, 0.05, 0.025, 0.06)
"""Default medians of :data:`SIZE_NAMES`, metres."""

MAX_DEPTH = 6
"""Largest supported ``max_depth`` (63 slots; ``sdf`` evaluates every primitive at every slot)."""

# Row k: indices into SIZE_NAMES of primitive k's parameters, in Tree.size column
# order, and which of the three columns it uses.
_SIZE_INDEX = np.array([[0, 0, 0], [1, 1, 1], [2, 3, 4], [5, 5, 5]], np.int32)
_SIZE_USED = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]], bool)

_LOG_SPHERE_AREA = math.log(4 * math.pi)
_TINY = 1e-30  # floor under squared norms, so that sqrt has a finite gradient at 0


def psi_shapes() -> dict[str, tuple[int, ...]]:
    """The shape of every entry of ``psi``."""
    n = len(SIZE_NAMES)
    return {
        "expand_logits": (2,), "op_logits": (2,), "primitive_logits": (len(PRIMITIVES),),
        "size_loc": (n,), "size_log_scale": (n,), "offset_loc": (), "offset_log_scale": (),
        "scale_loc": (), "scale_log_scale": (), "rotation_log_scale": (),
    }


@struct.dataclass
class Tree:
    """A sampled shape: ``S = 2**D - 1`` slots in heap order.

    Only the entries a slot uses are meaningful: ``op`` and the transform at active
    combine slots, ``primitive`` and ``size`` at active leaves; elsewhere they hold
    whatever was drawn and neither ``log_prob`` nor ``sdf`` reads them.

    Attributes:
      active: (S,) bool, the slot is part of the shape.
      kind: (S,) int32, 0 primitive leaf, 1 combine node (0 where inactive).
      op: (S,) int32 index into :data:`OPS`.
      primitive: (S,) int32 index into :data:`PRIMITIVES`.
      size: (S, 3) metres, the primitive's parameters: radius (sphere), half side
        (cube), (height, bottom radius, top radius) (truncated cone), circumradius
        (tetrahedron); unused columns 0.
      attach_dir: (S, 3) unit direction from the slot's origin (the centre of the
        left child's bounding sphere) to the right child's attach point.
      offset_dir: (S, 3) unit direction of the translation.
      offset: (S,) metres, translation magnitude.
      angles: (S, 3) radians, Euler angles (x, y, z) of ``R_z R_y R_x``.
      scale: (S,) uniform scale factor of the right child.
    """

    active: Bool[Array, "S"]
    kind: Int[Array, "S"]
    op: Int[Array, "S"]
    primitive: Int[Array, "S"]
    size: Float[Array, "S 3"]
    attach_dir: Float[Array, "S 3"]
    offset_dir: Float[Array, "S 3"]
    offset: Float[Array, "S"]
    angles: Float[Array, "S 3"]
    scale: Float[Array, "S"]


def _level(level: int) -> slice:
    """The slots at ``level`` in heap order."""
    return slice(2**level - 1, 2 ** (level + 1) - 1)


def _norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=-1), _TINY))


def _inverse_cdf(u: jax.Array, logits: jax.Array) -> jax.Array:
    """Categorical draws ``(...)`` int32 from uniforms ``u`` in [0, 1] by inverse CDF."""
    cdf = jnp.cumsum(jax.nn.softmax(logits))[:-1]
    return jnp.sum(u[..., None] >= cdf, axis=-1).astype(jnp.int32)


def _log_normal(x: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    """Elementwise log density of ``log x ~ N(loc, exp(log_scale)^2)`` (``-inf`` at ``x <= 0``)."""
    positive = x > 0
    log_x = jnp.log(jnp.where(positive, x, 1.0))
    log_p = stats.norm.logpdf(log_x, loc, jnp.exp(log_scale)) - log_x
    return jnp.where(positive, log_p, -jnp.inf)


def _rotation(angles: jax.Array) -> jax.Array:
    """``R_z(c) R_y(b) R_x(a)`` (..., 3, 3) of Euler angles ``(a, b, c)`` (..., 3)."""
    ca, cb, cc = (jnp.cos(angles[..., i]) for i in range(3))
    sa, sb, sc = (jnp.sin(angles[..., i]) for i in range(3))
    rows = (
        (cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa),
        (sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa),
        (-sb, cb * sa, cb * ca),
    )
    return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def _array(name: str, value, shape: tuple[int, ...]) -> jax.Array:
    """``value`` as a float array broadcast to ``shape``; ``ValueError`` naming ``name``."""
    value = jnp.asarray(value, dtype=jnp.result_type(float))
    try:
        return jnp.broadcast_to(value, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {value.shape} does not broadcast to {shape}") from None


def _check_range(name: str, value: jax.Array, low: float, high: float) -> None:
    """``ValueError`` naming ``name`` unless ``low < value < high`` (traced values pass)."""
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value)
        if not np.all((array > low) & (array < high)):
            raise ValueError(f"{name} must be in ({low}, {high}) everywhere, got {array}")


@dataclasses.dataclass(frozen=True)
class Grammar:
    """The PCFG over CSG shapes, with trees of at most ``max_depth`` levels.

    Attributes:
      max_depth: levels ``D`` in ``[1, MAX_DEPTH]``; a tree has ``2**D - 1`` slots
        and every slot at depth ``D - 1`` is a primitive (``D = 1``: one primitive).
    """

    max_depth: int = 3
    reparameterised = False

    def __post_init__(self):
        d = self.max_depth
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DEPTH:
            raise ValueError(f"max_depth must be an int in [1, {MAX_DEPTH}], got {d!r}")

    @property
    def num_slots(self) -> int:
        """``2**max_depth - 1``."""
        return 2**self.max_depth - 1

    @property
    def slot_depth(self) -> np.ndarray:
        """(S,) int32 depth ``floor(log2(i + 1))`` of every slot ``i`` (the root is at 0)."""
        return np.array([(i + 1).bit_length() - 1 for i in range(self.num_slots)], np.int32)

    @staticmethod
    def init_psi(
        *,
        combine_prob: float = 0.4,
        subtract_prob: float = 0.5,
        primitive_probs: ArrayLike = (0.25, 0.25, 0.25, 0.25),
        size_median: ArrayLike = DEFAULT_SIZE_MEDIAN,
        size_sigma: ArrayLike = 0.2,
        offset_median: float = 0.01,
        offset_sigma: float = 0.5,
        scale_median: float = 0.7,
        scale_sigma: float = 0.2,
        rotation_sigma: float = 0.5,
    ) -> dict[str, jax.Array]:
        """Parameters from natural quantities; ``ValueError`` naming one out of range.

        Args:
          combine_prob: probability in (0, 1) of ``E -> C(E, T(E))`` where not forced.
          subtract_prob: probability in (0, 1) of ``C -> subtract``.
          primitive_probs: (4,) weights > 0 of :data:`PRIMITIVES` (normalised here).
          size_median: (6,) medians > 0 of :data:`SIZE_NAMES`, metres.
          size_sigma: standard deviations > 0 of their logs, broadcast to (6,).
          offset_median, offset_sigma: median (metres) and log-spread of the
            translation magnitude ``m``.
          scale_median, scale_sigma: median and log-spread of the scale factor ``s``.
          rotation_sigma: standard deviation > 0 of each Euler angle, radians.
        """
        n = len(SIZE_NAMES)
        inf = math.inf
        scalars = {"combine_prob": (combine_prob, 1.0), "subtract_prob": (subtract_prob, 1.0),
                   "offset_median": (offset_median, inf), "offset_sigma": (offset_sigma, inf),
                   "scale_median": (scale_median, inf), "scale_sigma": (scale_sigma, inf),
                   "rotation_sigma": (rotation_sigma, inf)}
        values = {}
        for name, (value, high) in scalars.items():
            values[name] = _array(name, value, ())
            _check_range(name, values[name], 0.0, high)
        arrays = {"primitive_probs": (primitive_probs, (len(PRIMITIVES),)),
                  "size_median": (size_median, (n,)), "size_sigma": (size_sigma, (n,))}
        for name, (value, shape) in arrays.items():
            values[name] = _array(name, value, shape)
            _check_range(name, values[name], 0.0, inf)
        c, u = values["combine_prob"], values["subtract_prob"]
        weights = values["primitive_probs"]
        return {
            "expand_logits": jnp.log(jnp.stack([1 - c, c])),
            "op_logits": jnp.log(jnp.stack([1 - u, u])),
            "primitive_logits": jnp.log(weights / weights.sum()),
            "size_loc": jnp.log(values["size_median"]),
            "size_log_scale": jnp.log(values["size_sigma"]),
            "offset_loc": jnp.log(values["offset_median"]),
            "offset_log_scale": jnp.log(values["offset_sigma"]),
            "scale_loc": jnp.log(values["scale_median"]),
            "scale_log_scale": jnp.log(values["scale_sigma"]),
            "rotation_log_scale": jnp.log(values["rotation_sigma"]),
        }

    def sample(self, key: jax.Array, psi: dict[str, jax.Array]) -> Tree:
        """One shape, a deterministic function of ``(key, psi)``; vmap over keys for many.

        Args:
          key: PRNG key.
          psi: parameters from :meth:`init_psi`.

        Returns:
          A :class:`Tree` with ``2**max_depth - 1`` slots.
        """
        psi = _check_psi(psi)
        n, depth = self.num_slots, self.slot_depth
        # One draw (one compiled generator): per slot, 3 normals made uniform by the
        # normal CDF for the discrete choices, then the continuous ones' normals.
        z = jax.random.normal(key, (n, 17), psi["size_loc"].dtype)
        u_expand, u_op, u_primitive = (ndtr(z[:, i]) for i in range(3))
        eps_size, g_attach, g_offset, eps_angles = (z[:, i:i + 3] for i in (3, 6, 9, 13))
        eps_offset, eps_scale = z[:, 12], z[:, 16]

        expands = (_inverse_cdf(u_expand, psi["expand_logits"]) == 1) & (depth < self.max_depth - 1)
        levels = [jnp.ones((1,), bool)]
        for level in range(self.max_depth - 1):
            levels.append(jnp.repeat(levels[-1] & expands[_level(level)], 2))
        active = jnp.concatenate(levels)

        primitive = _inverse_cdf(u_primitive, psi["primitive_logits"])
        index = jnp.asarray(_SIZE_INDEX)[primitive]
        log_size = psi["size_loc"][index] + jnp.exp(psi["size_log_scale"][index]) * eps_size
        size = jnp.where(jnp.asarray(_SIZE_USED)[primitive], jnp.exp(log_size), 0.0)
        return Tree(
            active=active,
            kind=(active & expands).astype(jnp.int32),
            op=_inverse_cdf(u_op, psi["op_logits"]),
            primitive=primitive,
            size=size,
            attach_dir=g_attach / _norm(g_attach)[:, None],
            offset_dir=g_offset / _norm(g_offset)[:, None],
            offset=jnp.exp(psi["offset_loc"] + jnp.exp(psi["offset_log_scale"]) * eps_offset),
            angles=jnp.exp(psi["rotation_log_scale"]) * eps_angles,
            scale=jnp.exp(psi["scale_loc"] + jnp.exp(psi["scale_log_scale"]) * eps_scale),
        )

    def structure_log_prob(self, psi: dict[str, jax.Array], tree: Tree) -> jax.Array:
        """Log-probability () of the tree's discrete choices.

        The sum over active slots of the log-softmax of the chosen rules: the
        expansion (0 at depth ``max_depth - 1``, where ``E -> P`` is forced), the
        combinator at combine slots and the terminal at leaves. ``tree`` must be
        consistent (children of active combine slots active, all others inactive).
        """
        psi, tree = _check_psi(psi), self._check_tree(tree)
        leaf, combine = tree.active & (tree.kind == 0), tree.active & (tree.kind == 1)
        free = jnp.asarray(self.slot_depth < self.max_depth - 1)
        expand = jax.nn.log_softmax(psi["expand_logits"])[tree.kind]
        op = jax.nn.log_softmax(psi["op_logits"])[tree.op]
        primitive = jax.nn.log_softmax(psi["primitive_logits"])[tree.primitive]
        return (jnp.sum(jnp.where(tree.active & free, expand, 0.0))
                + jnp.sum(jnp.where(combine, op, 0.0)) + jnp.sum(jnp.where(leaf, primitive, 0.0)))

    def parameter_log_prob(self, psi: dict[str, jax.Array], tree: Tree) -> jax.Array:
        """Log-density () of the continuous parameters of the active slots.

        Leaves: the log-normal densities of the primitive's sizes (with the ``1 / x``
        Jacobian). Combine slots: log-normal offset and scale, Gaussian angles, and
        ``-log(4 pi)`` for each of the two uniform unit directions (density on the
        sphere's surface). ``-inf`` where a counted size, offset or scale is ``<= 0``.
        """
        psi, tree = _check_psi(psi), self._check_tree(tree)
        leaf, combine = tree.active & (tree.kind == 0), tree.active & (tree.kind == 1)
        index = jnp.asarray(_SIZE_INDEX)[tree.primitive]
        counted = leaf[:, None] & jnp.asarray(_SIZE_USED)[tree.primitive]
        size = _log_normal(jnp.where(counted, tree.size, 1.0), psi["size_loc"][index],
                           psi["size_log_scale"][index])
        offset = _log_normal(jnp.where(combine, tree.offset, 1.0), psi["offset_loc"],
                             psi["offset_log_scale"])
        scale = _log_normal(jnp.where(combine, tree.scale, 1.0), psi["scale_loc"],
                            psi["scale_log_scale"])
        angles = stats.norm.logpdf(jnp.where(combine[:, None], tree.angles, 0.0), 0.0,
                                   jnp.exp(psi["rotation_log_scale"])).sum(axis=-1)
        transform = offset + scale + angles - 2 * _LOG_SPHERE_AREA
        return jnp.sum(jnp.where(counted, size, 0.0)) + jnp.sum(jnp.where(combine, transform, 0.0))

    def log_prob(self, psi: dict[str, jax.Array], tree: Tree) -> jax.Array:
        """Log-probability () of a tree: :meth:`structure_log_prob` + :meth:`parameter_log_prob`."""
        return self.structure_log_prob(psi, tree) + self.parameter_log_prob(psi, tree)

    def bounding_radius(self, tree: Tree) -> Float[Array, ""]:
        """Radius () in metres of a ball about the origin that contains the shape.

        Every point with ``sdf <= 0`` is within it (see the module docstring for
        how it is built); renderers can start and stop rays on it.
        """
        return self._placement(self._sanitised(tree))[1][0]

    def sdf(self, tree: Tree, p: Float[Array, "*batch 3"]) -> Float[Array, "*batch"]:
        """Signed distance bound of the shape, negative inside.

        Primitives are exact SDFs of :mod:`render.shapes`, combined by min/max and
        scaled by the product of scale factors above them, so the result is a
        distance bound wherever the primitives' are. Inactive slots and unused
        entries are never read (they may hold anything, NaN included).

        Args:
          tree: one shape (vmap over trees for many).
          p: (..., 3) points, metres.

        Returns:
          (...) signed distance, metres.
        """
        p = jnp.asarray(p)
        if p.ndim < 1 or p.shape[-1] != 3:
            raise ValueError(f"p must be (..., 3) points, got shape {p.shape}")
        tree = self._sanitised(tree)
        p = p.astype(jnp.result_type(p, tree.size, float))
        origin, _ = self._placement(tree)
        rotation = _rotation(tree.angles)
        combine = tree.kind == 1

        # Top down: world point -> slot frame, q = M p + v, distances scaled by sigma.
        frames = [(jnp.eye(3, dtype=p.dtype)[None], jnp.zeros((1, 3), p.dtype),
                   jnp.ones((1,), p.dtype))]
        for level in range(self.max_depth - 1):
            m, v, sigma = frames[-1]
            sl = _level(level)
            r_t, s = jnp.swapaxes(rotation[sl], -1, -2), tree.scale[sl]
            m_right = r_t @ m / s[:, None, None]
            v_right = jnp.einsum("kij,kj->ki", r_t, v - origin[sl]) / s[:, None]
            frames.append(tuple(
                jnp.stack([left, right], axis=1).reshape(-1, *left.shape[1:])
                for left, right in ((m, m_right), (v, v_right), (sigma, sigma * s))))
        m, v, sigma = (jnp.concatenate(parts) for parts in zip(*frames))

        points = p.reshape(-1, 3)
        q = jnp.einsum("nij,mj->nmi", m, points) + v[:, None, :]
        size = tree.size[:, None, :]
        half_height = jnp.stack([jnp.zeros_like(size[..., 0]), size[..., 0] / 2,
                                 jnp.zeros_like(size[..., 0])], axis=-1)
        candidates = jnp.stack([
            shapes.sphere(q, size[..., 0]),
            shapes.box(q, size[..., :1]),
            shapes.truncated_cone(q + half_height, size[..., 0], size[..., 1], size[..., 2]),
            shapes.tetrahedron(q, size[..., 0]),
        ])
        d_leaf = sigma[:, None] * candidates[tree.primitive, jnp.arange(self.num_slots)]

        # Bottom up: combine the children's distances (already in world units).
        d = d_leaf[_level(self.max_depth - 1)]
        for level in reversed(range(self.max_depth - 1)):
            sl = _level(level)
            children = d.reshape(-1, 2, d.shape[-1])
            left, right = children[:, 0], children[:, 1]
            combined = jnp.where(tree.op[sl, None] == 0, shapes.union(left, right),
                                 shapes.subtract(left, right))
            d = jnp.where(combine[sl, None], combined, d_leaf[sl])
        return d[0].reshape(p.shape[:-1])

    def _placement(self, tree: Tree) -> tuple[jax.Array, jax.Array]:
        """Right-child origins and bounding radii of a sanitised tree, bottom up.

        Returns:
          origin (S, 3): where each combine slot puts its right child's origin
          (attach point plus translation), and radius (S,): every slot's subtree
          lies within this distance of the slot's origin; both in the slot's frame.
        """
        size = tree.size
        cone = jnp.sqrt((size[:, 0] / 2) ** 2 + jnp.maximum(size[:, 1], size[:, 2]) ** 2)
        leaf_radius = jnp.stack(
            [size[:, 0], math.sqrt(3) * size[:, 0], cone, size[:, 0]], axis=-1)
        leaf_radius = jnp.take_along_axis(leaf_radius, tree.primitive[:, None], axis=-1)[:, 0]
        last = _level(self.max_depth - 1)
        radii, origins = [leaf_radius[last]], [jnp.zeros_like(size[last])]
        for level in reversed(range(self.max_depth - 1)):
            sl = _level(level)
            r = radii[-1].reshape(-1, 2)
            r_left, r_right = r[:, 0], r[:, 1]
            origin = (r_left[:, None] * tree.attach_dir[sl]
                      + tree.offset[sl, None] * tree.offset_dir[sl])
            union = jnp.maximum(r_left, _norm(origin) + tree.scale[sl] * r_right)
            radius = jnp.where(tree.op[sl] == 0, union, r_left)
            radii.append(jnp.where(tree.kind[sl] == 1, radius, leaf_radius[sl]))
            origins.append(origin)
        return tuple(jnp.concatenate(parts[::-1]) for parts in (origins, radii))

    def _sanitised(self, tree: Tree) -> Tree:
        """``tree`` with harmless defaults in every entry its slot does not use."""
        tree = self._check_tree(tree)
        leaf, combine = tree.active & (tree.kind == 0), tree.active & (tree.kind == 1)
        primitive = jnp.clip(tree.primitive, 0, len(PRIMITIVES) - 1)
        counted = leaf[:, None] & jnp.asarray(_SIZE_USED)[primitive]
        column = combine[:, None]
        return Tree(
            active=tree.active,
            kind=combine.astype(jnp.int32),
            op=jnp.where(combine, jnp.clip(tree.op, 0, len(OPS) - 1), 0),
            primitive=jnp.where(leaf, primitive, 0),
            size=jnp.where(counted, tree.size, 1.0),
            attach_dir=jnp.where(column, tree.attach_dir, 0.0),
            offset_dir=jnp.where(column, tree.offset_dir, 0.0),
            offset=jnp.where(combine, tree.offset, 0.0),
            angles=jnp.where(column, tree.angles, 0.0),
            scale=jnp.where(combine, tree.scale, 1.0),
        )

    def _check_tree(self, tree: Tree) -> Tree:
        """``ValueError`` naming the field of ``tree`` whose shape does not fit."""
        if not isinstance(tree, Tree):
            raise ValueError(f"tree must be a Tree, got {type(tree).__name__}")
        n = self.num_slots
        for field in dataclasses.fields(Tree):
            value = jnp.asarray(getattr(tree, field.name))
            vector = field.name in ("size", "attach_dir", "offset_dir", "angles")
            want = (n, 3) if vector else (n,)
            if value.shape != want:
                raise ValueError(
                    f"tree.{field.name} must have shape {want} for max_depth "
                    f"{self.max_depth}, got {value.shape}")
        return tree


def _check_psi(psi: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """``psi`` with array values; ``ValueError`` naming a missing, unknown or misshapen entry."""
    if not isinstance(psi, Mapping):
        raise ValueError(f"psi must be a dict, got {type(psi).__name__}")
    want = psi_shapes()
    missing, unknown = sorted(set(want) - set(psi)), sorted(set(psi) - set(want))
    if missing or unknown:
        raise ValueError(f"psi lacks {missing} and has unknown entries {unknown}")
    psi = {name: jnp.asarray(psi[name]) for name in want}
    for name, shape in want.items():
        if psi[name].shape != shape:
            raise ValueError(f"psi['{name}'] must have shape {shape}, got {psi[name].shape}")
    return psi
