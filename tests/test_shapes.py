"""Tests of render.shapes: primitives, object SDF families and their meshes."""

import itertools
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from render import shapes
from render.spec import NUM_SHAPES

ALL_SHAPES = [(c, s) for c in range(len(NUM_SHAPES)) for s in range(NUM_SHAPES[c])]

_sdf = jax.jit(shapes.object_sdf)
_grad = jax.jit(jax.vmap(jax.grad(shapes.object_sdf), in_axes=(0, None, None)))
_CHUNK = 4096


def _chunked(fn, points, *args):
    """fn over (N, 3) points in fixed-size chunks, so it compiles once."""
    n = len(points)
    padded = np.pad(np.asarray(points, np.float32), ((0, -n % _CHUNK), (0, 0)))
    chunks = [padded[i : i + _CHUNK] for i in range(0, len(padded), _CHUNK)]
    outs = [fn(jnp.asarray(chunk), *args) for chunk in chunks]
    return jax.tree.map(lambda *x: np.concatenate(x)[:n], *outs)


@pytest.fixture(scope="module", autouse=True)
def _mesh_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCENE_OPT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _point_triangle_distance(p, a, b, c):
    """Exact distance (...) from points p (..., 3) to triangles a, b, c (..., 3)."""
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = (ab * ab).sum(-1), (ab * ac).sum(-1), (ac * ac).sum(-1)
    d20, d21 = (ap * ab).sum(-1), (ap * ac).sum(-1)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / denom
    w = (d00 * d21 - d01 * d20) / denom
    n = np.cross(ab, ac)
    plane = np.abs((ap * n).sum(-1)) / np.sqrt(np.maximum((n * n).sum(-1), 1e-30))

    def segment(p, a, b):
        ba = b - a
        t = np.clip(((p - a) * ba).sum(-1) / np.maximum((ba * ba).sum(-1), 1e-30), 0, 1)
        return np.linalg.norm(p - a - t[..., None] * ba, axis=-1)

    edges = np.minimum(np.minimum(segment(p, a, b), segment(p, b, c)), segment(p, c, a))
    return np.where((v >= 0) & (w >= 0) & (v + w <= 1), plane, edges)


def _mesh_distance(points, verts, faces, k=8):
    """Distance from points (N, 3) to a triangle mesh (upper bound, exact if the
    closest triangle is among the k with the nearest centroids)."""
    tri = verts[faces].astype(np.float64)
    _, idx = cKDTree(tri.mean(1)).query(points, k=k)
    t = tri[idx]
    d = _point_triangle_distance(points[:, None], t[..., 0, :], t[..., 1, :], t[..., 2, :])
    return d.min(-1)


@jax.jit
def _newton(p, class_id, shape_id, steps):
    def step(_, p):
        d = shapes.object_sdf(p, class_id, shape_id)
        g = jax.vmap(jax.grad(shapes.object_sdf), (0, None, None))(p, class_id, shape_id)
        return p - (d / jnp.maximum(jnp.sum(g * g, -1), 1e-12))[:, None] * g

    p = jax.lax.fori_loop(0, steps, step, p)
    return p, jnp.abs(shapes.object_sdf(p, class_id, shape_id))


def _project(points, c, s, steps):
    """Newton steps onto the zero set: the points (N, 3) and their final |sdf| (N,)."""
    return _chunked(_newton, points, c, s, steps)


def _normals(points, c, s):
    g = _chunked(_grad, points, c, s)
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


# ------------------------------------------------------------------ primitives


def test_sphere_and_box_known_distances():
    p = jnp.array([[0.0, 0, 0], [2, 0, 0], [0.5, 0.5, 0.5]])
    want = [-1, 1, math.sqrt(0.75) - 1]
    np.testing.assert_allclose(shapes.sphere(p, 1.0), want, atol=1e-6)
    half = jnp.array([1.0, 2.0, 3.0])
    # Inside (centre, near a face), then beyond a face, an edge and a corner.
    p = jnp.array([[0.0, 0, 0], [0.5, 0, 0], [0, 1.5, 2], [2, 0, 0], [2, 3, 0], [2, 3, 4]])
    want = [-1, -0.5, -0.5, 1, math.sqrt(2), math.sqrt(3)]
    np.testing.assert_allclose(shapes.box(p, half), want, atol=1e-6)


def test_truncated_cone_known_distances():
    n = np.array([2, 0.5]) / math.hypot(2, 0.5)  # outward normal of the slant
    off_slant = np.array([0.75, 1]) + n  # 1 from the slant's midpoint
    p = jnp.array([[0.0, -1, 0], [0, 3, 0], [2, 0, 0], [0, off_slant[1], off_slant[0]],
                   [1.5, -1, 0], [0, 1, 0]])
    want = [1, 1, 1, 1, math.hypot(0.5, 1), -0.75 * n[0]]
    np.testing.assert_allclose(shapes.truncated_cone(p, 2.0, 1.0, 0.5), want, atol=1e-6)
    # A cone (top radius 0): the apex, and a point straight above it.
    p = jnp.array([[0.0, 1, 0], [0, 2, 0]])
    np.testing.assert_allclose(shapes.truncated_cone(p, 1.0, 1.0, 0.0), [0, 1], atol=1e-6)


def test_tetrahedron_known_distances():
    size = 1.5
    v = size * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    p = jnp.asarray(np.concatenate([v, -v / 3, 2 * v, -v, [[0, 0, 0]]]), jnp.float32)
    want = [0] * 8 + [size] * 4 + [2 * size / 3] * 4 + [-size / 3]
    np.testing.assert_allclose(shapes.tetrahedron(p, size), want, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(np.float32, (32, 3), elements=st.floats(-3, 3, width=32)),
    st.floats(0.2, 2.0),
    st.floats(0.0, 1.5),
    st.floats(0.0, 1.5),
)
def test_primitives_match_brute_force(p, size, r1, r2):
    # Box: outside |p - clamp(p)|, inside distance to the nearest face.
    half = np.array([size, 0.5 * size + 0.1, 1.0], np.float32)
    outside = np.linalg.norm(p - np.clip(p, -half, half), axis=-1)
    inside = np.min(half - np.abs(p), axis=-1)
    want = np.where(outside > 0, outside, -inside)
    np.testing.assert_allclose(shapes.box(p, half), want, atol=2e-5)
    # Tetrahedron: distance to its four triangles, negative inside.
    v = size * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    faces = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    dist = _mesh_distance(p.astype(np.float64), v, faces, k=4)
    inside = np.all(p @ -v.T / size - size / 3 < 0, axis=-1)
    want = np.where(inside, -dist, dist)
    np.testing.assert_allclose(shapes.tetrahedron(p, size), want, atol=2e-5)
    # Truncated cone: distance to its densely sampled (r, y) profile.
    r = np.hypot(p[:, 0], p[:, 2])
    t = np.linspace(0, 1, 20001)[:, None]
    bottom, top = t * [r1, 0], t * [r2, size] + (1 - t) * [0, size]
    profile = np.concatenate([bottom, top, t * [r2, size] + (1 - t) * [r1, 0]])
    dist = cKDTree(profile).query(np.stack([r, p[:, 1]], -1))[0]
    inside = (p[:, 1] > 0) & (p[:, 1] < size) & (r < r1 + (r2 - r1) * p[:, 1] / size)
    got = shapes.truncated_cone(p, size, r1, r2)
    np.testing.assert_allclose(got, np.where(inside, -dist, dist), atol=2e-4)


def test_combinators():
    p = jnp.array([[0.0, 0, 0], [3, 0, 0], [1, 1, 1], [1.5, 0, 0]])
    a, b = shapes.sphere(p, 2.0), shapes.sphere(p, 1.0)
    want = [1, 1, math.sqrt(3) - 2, -0.5]
    np.testing.assert_allclose(shapes.subtract(a, b), want, atol=1e-6)
    np.testing.assert_array_equal(shapes.subtract(a, b), shapes.intersect(a, -b))
    np.testing.assert_array_equal(shapes.union(a, a), a)
    np.testing.assert_array_equal(shapes.intersect(a, a), a)
    two = shapes.union(shapes.sphere(p, 1.0), shapes.sphere(p - jnp.array([3.0, 0, 0]), 1))
    np.testing.assert_allclose(two, [-1, -1, math.sqrt(3) - 1, 0.5], atol=1e-6)
    cap = shapes.intersect(shapes.box(p, jnp.ones(3)), shapes.sphere(p, 1.2))
    np.testing.assert_allclose(cap, [-1, 2, math.sqrt(3) - 1.2, 0.5], atol=1e-6)


# ------------------------------------------------------------------ object SDFs


def test_object_sdf_matches_families_under_jit_and_vmap():
    q = jnp.asarray(np.random.default_rng(0).uniform(-0.7, 1.2, (256, 3)), jnp.float32)
    cls, sid = (jnp.array(x, jnp.int32) for x in zip(*ALL_SHAPES))
    got = jax.jit(jax.vmap(shapes.object_sdf, in_axes=(None, 0, 0)))(q, cls, sid)
    families = [jax.jit(f) for f in (shapes.stapler_sdf, shapes.mug_sdf, shapes.banana_sdf)]
    for i, (c, s) in enumerate(ALL_SHAPES):
        want = families[c](q, shapes.PARAMS[c][s])
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)
    # Per-point ids broadcast against the points.
    per_point = jax.jit(shapes.object_sdf)(q[:29], cls, sid)
    np.testing.assert_allclose(per_point, got[jnp.arange(29), jnp.arange(29)], atol=1e-6)
    # Out-of-range variant ids are clipped.
    np.testing.assert_array_equal(
        _chunked(_sdf, q, 2, 99), _chunked(_sdf, q, 2, NUM_SHAPES[2] - 1)
    )


def test_gradient_finite_everywhere():
    axis = np.concatenate([np.eye(3) * t for t in (-1, -0.5, 0, 0.3, 0.5, 1)])
    special = [[0, 0, 0]]
    for row in shapes.MUG_PARAMS:  # axis and handle loop centre
        special += [[0, row[0] / 2, 0], [row[7], row[8], 0]]
    for row in shapes.BANANA_PARAMS:  # centre of the arc
        special += [[0, row[5] + row[1] * row[7], row[1] * row[8]]]
    for row in shapes.STAPLER_PARAMS:  # hinge
        special += [[row[8], row[9], 0]]
    q = np.concatenate([axis, special])
    for c, s in ALL_SHAPES:
        g = _chunked(_grad, q, c, s)
        assert np.all(np.isfinite(g)), (c, s)
        assert np.all(np.linalg.norm(g, axis=-1) <= 1 + 1e-4), (c, s)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(ALL_SHAPES),
    hnp.arrays(np.float32, (64, 3), elements=st.floats(-0.75, 1.25, width=32)),
    hnp.arrays(np.float32, (64, 3), elements=st.floats(-0.25, 0.25, width=32)),
)
def test_sdf_is_one_lipschitz(shape, a, delta):
    c, s = shape
    b = a + delta
    da, db = _chunked(_sdf, a, c, s), _chunked(_sdf, b, c, s)
    gap = np.linalg.norm(a.astype(np.float64) - b, axis=-1)
    assert np.all(np.abs(da - db) <= gap * (1 + 1e-4) + 2e-6)


# ------------------------------------------------------------------ meshes


@pytest.fixture(scope="module")
def meshes():
    return {cs: shapes.object_mesh(*cs) for cs in ALL_SHAPES}


@pytest.mark.parametrize("class_id", range(len(NUM_SHAPES)))
def test_mesh_hausdorff_to_zero_set(meshes, class_id):
    rng = np.random.default_rng(class_id)
    worst = 0.0
    for s in range(NUM_SHAPES[class_id]):
        verts, faces = meshes[class_id, s]
        # Mesh -> surface: project every vertex onto the zero set.
        proj, res = _project(verts, class_id, s, 12)
        assert res.max() < 1e-5
        to_surface = np.linalg.norm(proj - verts, axis=-1).max()
        # Surface -> mesh: zero-set samples from random points in the box and near
        # the mesh (for thin parts), measured to the closest triangle.
        centre, radius = (np.asarray(x) for x in shapes.bounding_sphere(class_id, s))
        seeds = np.concatenate([
            centre + rng.uniform(-radius, radius, (2000, 3)),
            verts[rng.integers(len(verts), size=2000)] + rng.normal(0, 0.03, (2000, 3)),
        ]).astype(np.float32)
        samples, res = _project(seeds, class_id, s, 40)
        samples = samples[res < 1e-5]
        assert len(samples) > 3500
        to_mesh = _mesh_distance(samples.astype(np.float64), verts, faces).max()
        worst = max(worst, to_surface, to_mesh)
    assert worst <= 0.02, worst


def test_mesh_closed_and_outward(meshes):
    for (c, s), (verts, faces) in meshes.items():
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        edges = edges.astype(np.int64)
        keys = np.sort(edges[:, 0] * len(verts) + edges[:, 1])
        reverse = np.sort(edges[:, 1] * len(verts) + edges[:, 0])
        assert np.all(np.diff(keys) > 0), (c, s)  # each directed edge once: consistent
        np.testing.assert_array_equal(keys, reverse)  # and each has its twin: closed
        tri = verts[faces].astype(np.float64)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        assert np.sum(normal * tri.mean(1)) > 0, (c, s)  # positive volume: outward
        some = np.random.default_rng(0).integers(len(faces), size=4000)
        outward = np.sum(normal[some] * _normals(tri[some].mean(1), c, s), -1)
        assert np.mean(outward > 0) > 0.999, (c, s)


def test_rest_on_ground_centred_unit_size(meshes):
    size_axis = (0, 2, 0)  # stapler x, mug body diameter (z), banana x
    for (c, s), (verts, _) in meshes.items():
        lo, hi = verts.min(0), verts.max(0)
        assert -1e-4 <= lo[1] <= 5e-3, (c, s, lo)
        foot = verts[verts[:, 1] < lo[1] + 0.01]
        centre = (foot.min(0) + foot.max(0)) / 2
        np.testing.assert_allclose(centre[[0, 2]], 0, atol=0.02, err_msg=str((c, s)))
        assert abs(hi[size_axis[c]] - lo[size_axis[c]] - 1) < 0.02, (c, s, lo, hi)


def test_bounding_sphere_contains_mesh(meshes):
    ids = jnp.array(ALL_SHAPES, jnp.int32)
    centres, radii = jax.jit(shapes.bounding_sphere)(ids[:, 0], ids[:, 1])
    for i, cs in enumerate(ALL_SHAPES):
        verts = meshes[cs][0]
        assert np.linalg.norm(verts - np.asarray(centres[i]), axis=-1).max() <= radii[i], cs


def test_inside_points_negative(meshes):
    rng = np.random.default_rng(0)
    for (c, s), (verts, faces) in meshes.items():
        v = verts[rng.integers(len(verts), size=3000)]
        inner = v - 0.01 * _normals(v, c, s)
        # Skip the few that land near the surface again (at sharp rims and corners).
        deep = _mesh_distance(inner.astype(np.float64), verts, faces) > 0.005
        assert deep.mean() > 0.95, (c, s)
        d = _chunked(_sdf, inner[deep], c, s)
        assert np.all(d < 0), (c, s, d.max())


@pytest.mark.parametrize("class_id", range(len(NUM_SHAPES)))
def test_variants_differ_in_silhouette(class_id):
    n = NUM_SHAPES[class_id]
    centres, radii = shapes.bounding_sphere(class_id, jnp.arange(n))
    lo = np.min(centres - radii[:, None], axis=0)
    hi = np.max(centres + radii[:, None], axis=0)
    axes = [np.linspace(lo[i], hi[i], 72, dtype=np.float32) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    solid = [_chunked(_sdf, grid.reshape(-1, 3), class_id, s).reshape(grid.shape[:3]) < 0
             for s in range(n)]
    views = [[m.any(axis=v) for v in range(3)] for m in solid]  # front, top, side
    for i, j in itertools.combinations(range(n), 2):
        iou = [(a & b).sum() / (a | b).sum() for a, b in zip(views[i], views[j])]
        assert min(iou) < 0.95, (class_id, i, j, iou)


def test_object_mesh_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENE_OPT_CACHE", str(tmp_path))
    verts, faces = shapes.object_mesh(2, 1, resolution=40)
    assert verts.dtype == np.float32 and faces.dtype == np.int32
    assert not verts.flags.writeable and not faces.flags.writeable
    assert shapes.object_mesh(2, 1, resolution=40)[0] is verts
    files = list((tmp_path / "meshes").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    shapes.object_mesh.cache_clear()
    again = shapes.object_mesh(2, 1, resolution=40)
    assert again[0] is not verts
    np.testing.assert_array_equal(again[0], verts)
    np.testing.assert_array_equal(again[1], faces)
    with pytest.raises(ValueError):
        shapes.object_mesh(0, NUM_SHAPES[0])


def test_mesh_from_sdf_sphere():
    verts, faces = shapes.mesh_from_sdf(
        lambda p: shapes.sphere(p, 0.5), -0.6 * np.ones(3), 0.6 * np.ones(3), 48
    )
    np.testing.assert_allclose(np.linalg.norm(verts, axis=-1), 0.5, atol=2e-3)
    tri = verts[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.sum(normal * tri.mean(1), -1) > 0)
