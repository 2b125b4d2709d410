"""The CSG shape grammar against brute force, its own samples and hand-built shapes.

Normalisation of the structure probabilities by enumerating every tree; rule
frequencies and the score identity ``E[grad log q] = 0`` over sampled trees (each
with a power check: the same test rejects a probability off by 0.05, or a
``log_prob`` that counts the forced leaves); common random numbers and closed-form
pathwise gradients; signed distances of hand-built trees against
:mod:`render.shapes` and an independent placement written here.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.transform import Rotation
from scipy.special import logsumexp

from render import shapes
from simopt_jax.distributions import check_distribution
from simopt_jax.grammar import (
    DEFAULT_SIZE_MEDIAN, MAX_DEPTH, PRIMITIVES, SIZE_NAMES, Grammar, Tree, psi_shapes,
)
from simopt_jax.hypergrad import score_function
from tests.stats import max_z

Z = 4.5
COMBINE, SUBTRACT = 0.4, 0.3
PRIMITIVE_PROBS = np.array([0.1, 0.2, 0.3, 0.4])
PSI = Grammar.init_psi(combine_prob=COMBINE, subtract_prob=SUBTRACT,
                       primitive_probs=PRIMITIVE_PROBS)
NUM_TREES = 4000
SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# (primitive, Tree.size column) -> the entry of SIZE_NAMES it is drawn from.
SIZE_OF = {(0, 0): "sphere_radius", (1, 0): "cube_half_side", (2, 0): "cone_height",
           (2, 1): "cone_radius_bottom", (2, 2): "cone_radius_top",
           (3, 0): "tetrahedron_circumradius"}
DISCRETE = ("active", "kind", "op", "primitive")


@functools.cache
def _jit(depth, name):
    """``Grammar(depth).name``, jitted (compiled once per shape for the whole file)."""
    return jax.jit(getattr(Grammar(depth), name))


@functools.cache
def _sampler(depth):
    return jax.jit(jax.vmap(Grammar(depth).sample, (0, None)))


def _sample(depth, seed, psi=PSI):
    """``NUM_TREES`` trees (a batched Tree) from the keys ``split(key(seed), NUM_TREES)``.

    Always this many, so that each depth compiles once.
    """
    return _sampler(depth)(jax.random.split(jax.random.key(seed), NUM_TREES), psi)


@pytest.fixture(scope="module")
def trees():
    """``NUM_TREES`` trees of depth 3 drawn at ``PSI``."""
    return _sample(3, 0)


@pytest.fixture(scope="module")
def scores(trees):
    """``grad_psi log_prob(PSI, tree)`` of every tree."""
    return jax.jit(jax.vmap(jax.grad(Grammar(3).log_prob), (None, 0)))(PSI, trees)


def _build(depth, nodes, fill=np.nan):
    """A tree of ``depth`` levels whose slots ``nodes`` (slot -> fields) are active.

    Every other entry is ``fill`` (floats) or garbage (ints), which nothing may read.
    """
    n = 2**depth - 1
    a = {"active": np.zeros(n, bool), "kind": np.full(n, 7), "op": np.full(n, -3),
         "primitive": np.full(n, 9), "size": np.full((n, 3), fill),
         "attach_dir": np.full((n, 3), fill), "offset_dir": np.full((n, 3), fill),
         "offset": np.full(n, fill), "angles": np.full((n, 3), fill), "scale": np.full(n, fill)}
    for slot, fields in nodes.items():
        a["active"][slot] = True
        a["kind"][slot] = 0
        for name, value in fields.items():
            a[name][slot] = value
    ints = ("kind", "op", "primitive")
    return Tree(**{k: jnp.asarray(v, jnp.int32 if k in ints else None) for k, v in a.items()})


def _combine(op, attach, offset_dir, offset, angles, scale):
    return {"kind": 1, "op": op, "attach_dir": attach, "offset_dir": offset_dir,
            "offset": offset, "angles": angles, "scale": scale}


def _leaf(primitive, size):
    return {"primitive": primitive, "size": list(size) if np.ndim(size) else [size, 0, 0]}


def _primitive_sdf(k, q, size):
    """Reference distance of primitive ``k`` centred at the origin."""
    if k == 0:
        return shapes.sphere(q, size[0])
    if k == 1:
        return shapes.box(q, jnp.full(3, size[0]))
    if k == 2:
        return shapes.truncated_cone(q + jnp.array([0.0, size[0] / 2, 0.0]), *size)
    return shapes.tetrahedron(q, size[0])


def _primitive_radius(k, size):
    """Circumradius about the origin of primitive ``k``."""
    return [size[0], math.sqrt(3) * size[0], math.hypot(size[0] / 2, max(size[1:])), size[0]][k]


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _points(seed, count=64, half=0.15):
    return jnp.asarray(np.random.default_rng(seed).uniform(-half, half, (count, 3)))


# ------------------------------------------------------------------ structure probabilities


def _structures(slot, depth, max_depth):
    """Every subtree at ``slot``, as lists of (slot, kind, op, primitive), from the rules."""
    for primitive in range(len(PRIMITIVES)):
        yield [(slot, 0, 0, primitive)]
    if depth < max_depth - 1:
        for op in range(2):
            for left in _structures(2 * slot + 1, depth + 1, max_depth):
                for right in _structures(2 * slot + 2, depth + 1, max_depth):
                    yield [(slot, 1, op, 0)] + left + right


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("depth, count", [(1, 4), (2, 4 + 2 * 4**2), (3, 4 + 2 * 36**2)])
def test_structure_probabilities_sum_to_one_by_enumeration(depth, count):
    psi = Grammar.init_psi(combine_prob=0.35, subtract_prob=0.3, primitive_probs=(1, 2, 3, 4))
    structures = list(_structures(0, 0, depth))
    assert len(structures) == count
    n = 2**depth - 1
    batch = {k: np.zeros((count, n), np.int32) for k in ("active", "kind", "op", "primitive")}
    for i, structure in enumerate(structures):
        for slot, kind, op, primitive in structure:
            batch["active"][i, slot] = 1
            batch["kind"][i, slot], batch["op"][i, slot] = kind, op
            batch["primitive"][i, slot] = primitive
    ones = {k: jnp.ones((count, n, 3)) for k in ("size", "attach_dir", "offset_dir", "angles")}
    trees = Tree(active=jnp.asarray(batch["active"], bool), kind=jnp.asarray(batch["kind"]),
                 op=jnp.asarray(batch["op"]), primitive=jnp.asarray(batch["primitive"]),
                 offset=jnp.ones((count, n)), scale=jnp.ones((count, n)), **ones)
    log_p = jax.vmap(Grammar(depth).structure_log_prob, (None, 0))(psi, trees)
    assert abs(logsumexp(np.asarray(log_p))) < 1e-9
    if depth == 2:  # union(sphere, cube): the leaves at depth 1 are forced
        i = structures.index([(0, 1, 0, 0), (1, 0, 0, 0), (2, 0, 0, 1)])
        np.testing.assert_allclose(log_p[i], math.log(0.35 * 0.7 * 0.1 * 0.2), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_parameter_log_prob_matches_scipy():
    psi = Grammar.init_psi(size_sigma=np.linspace(0.1, 0.6, 6), offset_sigma=0.3,
                           scale_sigma=0.4, rotation_sigma=0.7)
    sizes = np.exp(np.asarray(psi["size_loc"]))
    angles = np.array([0.3, -0.4, 1.1])
    tree = _build(2, {0: _combine(1, _unit([1, 2, 3]), _unit([0, 0, 1]), 0.02, angles, 0.6),
                      1: _leaf(2, [0.07, 0.04, 0.02]), 2: _leaf(3, 0.05)})

    def log_normal(x, name):
        return stats.lognorm.logpdf(x, float(np.exp(psi[f"{name}_log_scale"])),
                                    scale=float(np.exp(psi[f"{name}_loc"])))

    sigma = np.exp(np.asarray(psi["size_log_scale"]))
    want = (sum(stats.lognorm.logpdf(x, sigma[i], scale=sizes[i])
                for x, i in ((0.07, 2), (0.04, 3), (0.02, 4), (0.05, 5)))
            + log_normal(0.02, "offset") + log_normal(0.6, "scale")
            + stats.norm.logpdf(angles, 0, 0.7).sum() - 2 * math.log(4 * math.pi))
    np.testing.assert_allclose(_jit(2, "parameter_log_prob")(psi, tree), want, rtol=1e-12)
    structure = math.log(0.4) + math.log(0.5) + 2 * math.log(0.25)  # init_psi's defaults
    np.testing.assert_allclose(_jit(2, "structure_log_prob")(psi, tree), structure, rtol=1e-12)
    np.testing.assert_allclose(_jit(2, "log_prob")(psi, tree), want + structure, rtol=1e-12)
    bad = tree.replace(scale=tree.scale.at[0].set(-1.0))
    assert _jit(2, "parameter_log_prob")(psi, bad) == -np.inf


# ------------------------------------------------------------------ sampling


def _leaves(trees):
    """Primitive indices of every active leaf of every tree."""
    leaf = np.asarray(trees.active) & (np.asarray(trees.kind) == 0)
    return np.asarray(trees.primitive)[leaf]


def test_rule_frequencies_match_the_probabilities(trees):
    root = np.asarray(trees.kind[:, 0], float)
    assert max_z(root, COMBINE) < Z
    assert max_z(root, COMBINE + 0.05) > Z and max_z(root, COMBINE - 0.05) > Z
    active, kind = np.asarray(trees.active), np.asarray(trees.kind)
    middle = kind[:, 1:3][active[:, 1:3]].astype(float)  # depth 1: free choice given active
    assert max_z(middle, COMBINE) < Z
    ops = np.asarray(trees.op)[active & (kind == 1)].astype(float)
    assert max_z(ops, SUBTRACT) < Z and max_z(ops, SUBTRACT + 0.05) > Z
    one_hot = np.eye(4)[_leaves(trees)]
    assert max_z(one_hot, PRIMITIVE_PROBS) < Z
    assert max_z(one_hot, PRIMITIVE_PROBS + [0.05, -0.05, 0, 0]) > Z


def test_tree_structure_respects_max_depth():
    for depth in (1, 3, MAX_DEPTH):
        t = _sample(depth, depth, Grammar.init_psi(combine_prob=0.9))
        active, kind = np.asarray(t.active), np.asarray(t.kind)
        assert active.shape == (NUM_TREES, 2**depth - 1)
        assert active[:, 0].all()
        assert not kind[:, 2 ** (depth - 1) - 1:].any()  # the last level is all leaves
        assert not (kind.astype(bool) & ~active).any()
        for child in range(1, 2**depth - 1):
            parent = (child - 1) // 2
            np.testing.assert_array_equal(active[:, child],
                                          active[:, parent] & (kind[:, parent] == 1))
        if depth > 1:
            assert active[:, -1].any()  # the deepest level is reached
        leaf = active & (kind == 0)
        assert (np.asarray(t.size)[..., 0][leaf] > 0).all()


def test_score_identity(trees, scores):
    grammar = Grammar(3)
    for name, values in scores.items():
        assert max_z(np.asarray(values).reshape(NUM_TREES, -1), 0.0) < Z, name

    def counts_forced_leaves(psi, tree):  # a wrong log_prob: the forced E -> P has probability 1
        forced = tree.active[3:] & (tree.kind[3:] == 0)
        return grammar.log_prob(psi, tree) + jnp.sum(
            jnp.where(forced, jax.nn.log_softmax(psi["expand_logits"])[0], 0.0))

    wrong = jax.jit(jax.vmap(jax.grad(counts_forced_leaves), (None, 0)))(PSI, trees)
    assert max_z(np.asarray(wrong["expand_logits"]), 0.0) > Z


def test_score_function_estimates_the_gradient_of_the_combine_probability(trees, scores):
    grammar = Grammar(3)
    check_distribution(grammar)
    h = lambda tree: tree.kind[0].astype(jnp.float32)
    estimate = jax.jit(lambda key: score_function(key, h, grammar, PSI, num_samples=NUM_TREES)[0])(
        jax.random.key(0))  # the keys of the trees fixture
    want = COMBINE * (1 - COMBINE) * np.array([-1.0, 1.0])
    products = np.asarray(trees.kind[:, :1], float) * np.asarray(scores["expand_logits"])
    np.testing.assert_allclose(estimate["expand_logits"], products.mean(0), rtol=1e-4, atol=1e-6)
    assert max_z(products, want) < Z
    assert max_z(products, want * 1.5) > Z


def test_sample_is_deterministic_in_the_key():
    a, b, c = _sample(3, 3), _sample(3, 3), _sample(3, 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.scale, c.scale) and not np.array_equal(a.active, c.active)


def _nudged(psi, delta, names):
    return {k: v + delta if k in names else v for k, v in psi.items()}


def test_common_random_numbers_keep_the_structure():
    delta = 1e-3
    sample = functools.partial(_sample, 3, 5)
    base = sample(PSI)
    moved = sample(_nudged(PSI, delta, ("size_loc", "offset_loc", "scale_loc")))
    for name in DISCRETE:
        np.testing.assert_array_equal(getattr(base, name), getattr(moved, name))
    for name in ("size", "offset", "scale"):
        x, y = np.asarray(getattr(base, name)), np.asarray(getattr(moved, name))
        used = x > 0
        np.testing.assert_allclose(y[used] / x[used], math.exp(delta), rtol=1e-5)
    for name in ("angles", "attach_dir", "offset_dir"):
        np.testing.assert_array_equal(getattr(base, name), getattr(moved, name))
    logits = sample(_nudged(PSI, jnp.array([0.0, delta]), ("expand_logits",)))
    changed = np.any(np.asarray(base.active) != np.asarray(logits.active), axis=1)
    assert changed.mean() <= 0.02


def test_each_slot_draws_independently_of_the_others():
    sparse = _sample(3, 6, Grammar.init_psi(combine_prob=0.2))
    dense = _sample(3, 6, Grammar.init_psi(combine_prob=0.8))
    for role, fields in ((0, ("primitive", "size")),
                         (1, ("op", "attach_dir", "offset_dir", "offset", "angles", "scale"))):
        both = (np.asarray(sparse.active) & (np.asarray(sparse.kind) == role)
                & np.asarray(dense.active) & (np.asarray(dense.kind) == role))
        assert both.sum() > 20
        for name in fields:
            np.testing.assert_array_equal(np.asarray(getattr(sparse, name))[both],
                                          np.asarray(getattr(dense, name))[both])


def test_pathwise_gradients_match_closed_forms():
    grammar = Grammar(3)
    keys = jax.random.split(jax.random.key(7), NUM_TREES)

    def totals(psi):
        t = jax.vmap(grammar.sample, (0, None))(keys, psi)
        leaf = (t.active & (t.kind == 0))[..., None] & (t.size > 0)
        combine = t.active & (t.kind == 1)
        return {"size": jnp.sum(jnp.where(leaf, t.size, 0.0)),
                "scale": jnp.sum(jnp.where(combine, t.scale, 0.0)),
                "offset": jnp.sum(jnp.where(combine, t.offset, 0.0)),
                "angles": jnp.sum(jnp.where(combine[..., None], t.angles**2, 0.0))}

    grads = jax.jit(jax.jacrev(totals))(PSI)
    t = _sample(3, 7)
    active, kind = np.asarray(t.active), np.asarray(t.kind)
    primitive, size = np.asarray(t.primitive), np.asarray(t.size)
    leaf, combine = active & (kind == 0), active & (kind == 1)
    loc = np.asarray(PSI["size_loc"])
    by_loc, by_scale = np.zeros(len(SIZE_NAMES)), np.zeros(len(SIZE_NAMES))
    for (k, column), name in SIZE_OF.items():
        x = size[..., column][leaf & (primitive == k)]
        i = SIZE_NAMES.index(name)
        by_loc[i], by_scale[i] = x.sum(), (x * (np.log(x) - loc[i])).sum()  # d/d log_scale
    np.testing.assert_allclose(grads["size"]["size_loc"], by_loc, rtol=1e-5)
    np.testing.assert_allclose(grads["size"]["size_log_scale"], by_scale, rtol=1e-4, atol=1e-6)
    for name in ("scale", "offset"):
        x = np.asarray(getattr(t, name))[combine]
        np.testing.assert_allclose(grads[name][f"{name}_loc"], x.sum(), rtol=1e-5)
    angles = np.asarray(t.angles)[combine]
    np.testing.assert_allclose(grads["angles"]["rotation_log_scale"], 2 * (angles**2).sum(),
                               rtol=1e-5)
    assert float(jnp.abs(grads["size"]["scale_loc"])) == 0.0


# ------------------------------------------------------------------ signed distance


@pytest.mark.parametrize("primitive, size", [(0, 0.05), (1, 0.04), (2, [0.08, 0.05, 0.02]),
                                             (3, 0.06)])
def test_single_primitive_is_the_centred_render_shape(primitive, size):
    tree = _build(1, {0: _leaf(primitive, size)})
    p = _points(primitive)
    size = np.asarray(tree.size[0])
    got = _jit(1, "sdf")(tree, p)
    np.testing.assert_allclose(got, _primitive_sdf(primitive, p, size), atol=1e-6)
    if primitive == 0:
        np.testing.assert_allclose(got, np.linalg.norm(p, axis=-1) - 0.05, atol=1e-6)


@SETTINGS
@given(op=st.sampled_from([0, 1]), left=st.sampled_from(range(4)), right=st.sampled_from(range(4)),
       seed=st.integers(0, 2**16))
def test_combine_places_the_right_child_as_documented(op, left, right, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.uniform(0.02, 0.06, (2, 3))
    attach, offset_dir = _unit(rng.normal(size=3)), _unit(rng.normal(size=3))
    offset, scale = rng.uniform(0.0, 0.03), rng.uniform(0.5, 1.5)
    angles = rng.uniform(-math.pi, math.pi, 3)
    tree = _build(2, {0: _combine(op, attach, offset_dir, offset, angles, scale),
                      1: _leaf(left, sizes[0]), 2: _leaf(right, sizes[1])})
    size_l, size_r = (np.asarray(tree.size[i]) for i in (1, 2))
    origin = _primitive_radius(left, size_l) * attach + offset * offset_dir
    rotation = Rotation.from_euler("xyz", angles).as_matrix()  # extrinsic: R_z R_y R_x
    p = _points(seed)
    q = (np.asarray(p) - origin) @ rotation / scale  # rows of R^T (p - origin) / s
    d_left = _primitive_sdf(left, p, size_l)
    d_right = scale * _primitive_sdf(right, jnp.asarray(q, p.dtype), size_r)
    want = np.minimum(d_left, d_right) if op == 0 else np.maximum(d_left, -d_right)
    np.testing.assert_allclose(_jit(2, "sdf")(tree, p), want, atol=2e-6)


def test_nested_transforms_compose():
    r0, r1, r2, s1, s2 = 0.05, 0.04, 0.03, 0.8, 0.6
    d1, e1, d2, e2 = _unit([1, 0, 0]), _unit([0, 1, 1]), _unit([0, 1, 0]), _unit([1, 1, 1])
    m1, m2, angles = 0.01, 0.02, np.array([0.2, 0.5, -0.7])
    tree = _build(3, {0: _combine(0, d1, e1, m1, angles, s1), 1: _leaf(0, r0),
                      2: _combine(0, d2, e2, m2, [0.4, 0.0, 1.0], s2), 5: _leaf(0, r1),
                      6: _leaf(0, r2)})
    rotation = Rotation.from_euler("xyz", angles).as_matrix()
    c1 = r0 * d1 + m1 * e1  # the right subtree's origin, in the root's frame
    c2 = r1 * d2 + m2 * e2  # the innermost sphere's centre, in the right subtree's frame
    c2_world = c1 + s1 * rotation @ c2
    p = jnp.concatenate([_points(8, 63), jnp.asarray(c2_world[None], jnp.float32)])
    want = np.min([np.linalg.norm(p - c, axis=-1) - r
                   for c, r in ((0, r0), (c1, s1 * r1), (c2_world, s1 * s2 * r2))], axis=0)
    got = _jit(3, "sdf")(tree, p)
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(got[-1], -s1 * s2 * r2, atol=1e-6)  # the innermost centre
    inner = max(r1, np.linalg.norm(c2) + s2 * r2)
    np.testing.assert_allclose(_jit(3, "bounding_radius")(tree),
                               max(r0, np.linalg.norm(c1) + s1 * inner), rtol=1e-6)
    subtracted = tree.replace(op=tree.op.at[0].set(1))
    np.testing.assert_allclose(_jit(3, "bounding_radius")(subtracted), r0, rtol=1e-6)
    right = np.min([np.linalg.norm(p - c, axis=-1) - r
                    for c, r in ((c1, s1 * r1), (c2_world, s1 * s2 * r2))], axis=0)
    np.testing.assert_allclose(_jit(3, "sdf")(subtracted, p),
                               np.maximum(np.linalg.norm(p, axis=-1) - r0, -right), atol=2e-6)


def test_inactive_slots_do_not_contribute():
    tree = _build(3, {0: _leaf(0, 0.05)})  # every other slot NaN with garbage ints
    p = _points(9)
    np.testing.assert_allclose(_jit(3, "sdf")(tree, p), np.linalg.norm(p, axis=-1) - 0.05,
                               atol=1e-6)
    assert np.isfinite(jax.jit(jax.grad(lambda x: _jit(3, "sdf")(tree, x).sum()))(p)).all()
    psi = Grammar.init_psi()
    want = (math.log(0.6) + math.log(0.25)  # a free leaf at the root, init_psi's defaults
            + stats.lognorm.logpdf(0.05, 0.2, scale=DEFAULT_SIZE_MEDIAN[0]))
    np.testing.assert_allclose(_jit(3, "log_prob")(psi, tree), want, rtol=1e-5)
    grads = jax.jit(jax.grad(Grammar(3).log_prob))(psi, tree)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_sdf_jits_and_vmaps_over_trees_and_points():
    grammar = Grammar(3)
    batch = jax.tree.map(lambda x: x[:6], _sample(3, 10, Grammar.init_psi(combine_prob=0.7)))
    p = _points(11)
    grid = p.reshape(8, 8, 3)
    got = jax.jit(jax.vmap(jax.vmap(grammar.sdf, (None, 0)), (0, None)))(batch, grid)
    assert got.shape == (6, 8, 8)
    for i in range(6):
        one = jax.tree.map(lambda x: x[i], batch)
        np.testing.assert_allclose(got[i].reshape(64), _jit(3, "sdf")(one, p), atol=1e-6)
    floats = ("size", "attach_dir", "offset_dir", "offset", "angles", "scale")
    total = lambda fields: jax.vmap(grammar.sdf, (0, None))(batch.replace(**fields), grid).sum()
    grads = jax.jit(jax.grad(total))({name: getattr(batch, name) for name in floats})
    for name in floats:
        assert np.isfinite(grads[name]).all(), name
        assert np.abs(grads[name]).max() > 0, name


def test_bounding_radius_contains_the_shape():
    grammar, count = Grammar(3), 16
    batch = jax.tree.map(lambda x: x[:count], _sample(3, 10, Grammar.init_psi(combine_prob=0.7)))
    radius = np.asarray(jax.jit(jax.vmap(grammar.bounding_radius))(batch))
    unit = np.random.default_rng(13).uniform(-1.5, 1.5, (4000, 3))
    p = jnp.asarray(radius[:, None, None] * unit, jnp.float32)  # (count, 4000, 3)
    inside = np.asarray(jax.jit(jax.vmap(grammar.sdf))(batch, p)) <= 0
    assert inside.sum() > 100
    distance = np.broadcast_to(np.linalg.norm(unit, axis=-1), inside.shape)
    assert (distance[inside] <= 1 + 1e-5).all()
    for primitive, size, want in ((0, 0.05, 0.05), (1, 0.04, 0.04 * math.sqrt(3)),
                                  (2, [0.08, 0.02, 0.03], 0.05), (3, 0.06, 0.06)):
        tree = _build(1, {0: _leaf(primitive, size)})
        np.testing.assert_allclose(_jit(1, "bounding_radius")(tree), want, rtol=1e-6)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("depth", [0, MAX_DEPTH + 1, 2.0, True])
def test_bad_max_depth_raises(depth):
    with pytest.raises(ValueError, match="max_depth"):
        Grammar(depth)


def test_bad_psi_and_inputs_raise():
    grammar = Grammar(3)
    key = jax.random.key(0)
    assert set(PSI) == set(psi_shapes())
    with pytest.raises(ValueError, match="primitive_logits"):
        grammar.sample(key, {**PSI, "primitive_logits": jnp.zeros(3)})
    tree = jax.tree.map(lambda x: x[0], _sample(3, 0))
    with pytest.raises(ValueError, match="size_loc"):
        grammar.log_prob({**PSI, "size_loc": jnp.zeros((4, 3))}, tree)
    with pytest.raises(ValueError, match="psi lacks .'scale_loc'"):
        grammar.sample(key, {k: v for k, v in PSI.items() if k != "scale_loc"})
    with pytest.raises(ValueError, match="combine_prob"):
        Grammar.init_psi(combine_prob=1.0)
    with pytest.raises(ValueError, match="size_median"):
        Grammar.init_psi(size_median=[0.1, -0.1, 0.1, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="primitive_probs"):
        Grammar.init_psi(primitive_probs=(1, 1, 1))
    with pytest.raises(ValueError, match="p must be"):
        grammar.sdf(tree, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="tree.active"):
        Grammar(2).sdf(tree, jnp.zeros(3))


def test_sampled_shapes_render_with_render_sdf_inside_their_bounding_sphere():
    """Grammar shapes through render.render_sdf (batched): every hit pixel's depth is
    within the bounding ball (eye distance +- radius), and each shape is seen."""
    import render

    grammar = Grammar(max_depth=3)
    psi = Grammar.init_psi()
    trees = jax.vmap(grammar.sample, (0, None))(jax.random.split(jax.random.key(11), 4), psi)
    eye = jnp.array([0.0, 0.15, 0.45])
    images = jax.jit(jax.vmap(lambda t: render.render_sdf(functools.partial(grammar.sdf, t), eye,
                                                          resolution=(24, 24))))(trees)
    radii = np.asarray(jax.vmap(grammar.bounding_radius)(trees))
    distance = float(jnp.linalg.norm(eye))
    for k in range(4):
        hit = np.asarray(images.instance[k]) > 0
        assert hit.sum() > 0, k
        depth = np.asarray(images.depth[k])[hit]
        assert np.all(np.isfinite(depth))
        assert depth.min() >= distance - radii[k] - 1e-2 and depth.max() <= distance + radii[k]
