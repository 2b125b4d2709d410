"""Object shapes as signed distance functions (SDFs), CSG primitives and meshes.

Every object class of :mod:`render.spec` is a parametric SDF family; its variants are
rows of a parameter table, so a (possibly traced) ``shape_id`` picks a variant by a
gather. Shapes live in a canonical frame in units of the class's characteristic size
(stapler length, mug body diameter, banana end-to-end length, all ``1``): ``y`` is up,
the lowest point is at ``y = 0`` and the origin is the centre of the footprint (the
contact point) in ``(x, z)``. The stapler's length and the banana's chord run along
``x``; the mug's handle points to ``+x``. A renderer maps a world point ``p`` to
``q = R_y(-azimuth) (p - (x, 0, z)) / scale`` and uses ``scale * object_sdf(q, ...)``.

All SDFs are distance bounds: negative inside and ``|d(q)|`` at most the Euclidean
distance to the surface (1-Lipschitz), so sphere tracing never oversteps. Primitives
are exact; composites use min/max, and the banana divides by its Lipschitz constant.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from skimage.measure import marching_cubes

from render.spec import CLASS_NAMES, NUM_SHAPES

_TINY = 1e-36
"""Floor under squared norms so ``sqrt`` has a finite gradient at zero. It is tiny
so that points within float32 rounding of a surface still get a unit gradient."""


def _safe_sqrt(x):
    return jnp.sqrt(jnp.maximum(x, _TINY))


def _cols(params, n):
    """Splits the trailing axis of ``params`` (..., n) into ``n`` arrays (...)."""
    return [params[..., i] for i in range(n)]


# ----------------------------------------------------------------------------------
# CSG primitives (exact SDFs) and combinators
# ----------------------------------------------------------------------------------


def sphere(p, radius):
    """Sphere centred at the origin.

    Args:
      p: (..., 3) query points.
      radius: () or (...) radius.

    Returns:
      (...) signed distance.
    """
    return _safe_sqrt(jnp.sum(p * p, axis=-1)) - radius


def box(p, half_extents):
    """Axis-aligned box centred at the origin.

    Args:
      p: (..., 3) query points.
      half_extents: (3,) or (..., 3) half side lengths.

    Returns:
      (...) signed distance.
    """
    q = jnp.abs(p) - half_extents
    outside = _safe_sqrt(jnp.sum(jnp.maximum(q, 0.0) ** 2, axis=-1))
    return outside + jnp.minimum(jnp.max(q, axis=-1), 0.0)


def _revolved_trapezoid(r, y, height, radius_bottom, radius_top):
    """Exact 2D SDF of a trapezoid symmetric about ``r = 0``, in the ``r >= 0`` half.

    The trapezoid spans ``0 <= y <= height`` with half-widths ``radius_bottom`` at
    ``y = 0`` and ``radius_top`` at ``y = height``; with ``r = |(x, z)|`` this is the
    exact SDF of the solid of revolution (a truncated cone).
    """
    er = radius_top - radius_bottom
    inv_len2 = 1.0 / (er * er + height * height)
    rr = r - radius_bottom
    side = (rr * height - y * er) * jnp.sqrt(inv_len2)
    inside = jnp.maximum(jnp.maximum(-y, y - height), side)
    bottom = jnp.maximum(rr, 0.0) ** 2 + y * y
    top = jnp.maximum(r - radius_top, 0.0) ** 2 + (y - height) ** 2
    # Beyond its ends the slanted edge is no closer than the bottom or top edge; in
    # between, its distance is |side|, which keeps the gradient accurate near it.
    t = (rr * er + y * height) * inv_len2
    slant = jnp.where((t > 0.0) & (t < 1.0), side * side, jnp.inf)
    outside = _safe_sqrt(jnp.minimum(jnp.minimum(bottom, top), slant))
    return jnp.where(inside > 0.0, outside, inside)


def truncated_cone(p, height, radius_bottom, radius_top):
    """Truncated cone around the ``y`` axis with its base disc on ``y = 0``.

    Args:
      p: (..., 3) query points.
      height: () or (...) height; the top disc is at ``y = height``.
      radius_bottom, radius_top: () or (...) radii of the base and top discs (either
        may be 0 for a cone).

    Returns:
      (...) signed distance.
    """
    r = _safe_sqrt(p[..., 0] ** 2 + p[..., 2] ** 2)
    return _revolved_trapezoid(r, p[..., 1], height, radius_bottom, radius_top)


def _tetrahedron_tables():
    """Unit-circumradius regular tetrahedron: vertices, edges and face-edge planes."""
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float64)
    v /= math.sqrt(3.0)
    edges = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    # Face f is opposite vertex f; its outward normal is -v[f]. For each of its edges,
    # the in-plane normal pointing away from the face's third vertex.
    edge_normals, edge_offsets = [], []
    for f in range(4):
        face = [i for i in range(4) if i != f]
        normals, offsets = [], []
        for k in range(3):
            a, b, c = v[face[k]], v[face[(k + 1) % 3]], v[face[(k + 2) % 3]]
            m = np.cross(b - a, -v[f])
            m *= np.sign(np.dot(m, a - c)) / np.linalg.norm(m)
            normals.append(m)
            offsets.append(np.dot(m, a))
        edge_normals.append(normals)
        edge_offsets.append(offsets)
    return (
        v.astype(np.float32),
        np.array(edges, np.int32),
        np.array(edge_normals, np.float32),
        np.array(edge_offsets, np.float32),
    )


_TET_VERTS, _TET_EDGES, _TET_EDGE_NORMALS, _TET_EDGE_OFFSETS = _tetrahedron_tables()


def tetrahedron(p, size):
    """Regular tetrahedron centred at the origin.

    Its vertices are ``size / sqrt(3) * (1, 1, 1), (1, -1, -1), (-1, 1, -1),
    (-1, -1, 1)``: ``size`` is the circumradius (the inradius is ``size / 3``).

    Args:
      p: (..., 3) query points.
      size: () or (...) circumradius.

    Returns:
      (...) signed distance.
    """
    s = jnp.asarray(size)[..., None]
    planes = -(p @ _TET_VERTS.T) - s / 3.0
    inside = jnp.max(planes, axis=-1)
    edge_side = jnp.einsum("...k,fek->...fe", p, _TET_EDGE_NORMALS)
    in_face = jnp.all(edge_side <= s[..., None] * _TET_EDGE_OFFSETS, axis=-1)
    face = jnp.min(jnp.where(in_face, planes**2, jnp.inf), axis=-1)
    a = s[..., None] * _TET_VERTS[_TET_EDGES[:, 0]]
    ba = s[..., None] * (_TET_VERTS[_TET_EDGES[:, 1]] - _TET_VERTS[_TET_EDGES[:, 0]])
    pa = p[..., None, :] - a
    t = jnp.clip(jnp.sum(pa * ba, -1) / jnp.sum(ba * ba, -1), 0.0, 1.0)
    edge = jnp.min(jnp.sum((pa - t[..., None] * ba) ** 2, -1), axis=-1)
    return jnp.where(inside > 0.0, _safe_sqrt(jnp.minimum(face, edge)), inside)


def union(d1, d2):
    """Union of two shapes (a distance bound if both are)."""
    return jnp.minimum(d1, d2)


def subtract(d1, d2):
    """Shape 1 minus shape 2 (a distance bound if both are)."""
    return jnp.maximum(d1, -d2)


def intersect(d1, d2):
    """Intersection of two shapes (a distance bound if both are)."""
    return jnp.maximum(d1, d2)


def _round_box(x, y, z, hx, hy, hz, radius):
    """Exact SDF of a box with half extents ``(hx, hy, hz)`` and rounded edges."""
    qx = jnp.abs(x) - hx + radius
    qy = jnp.abs(y) - hy + radius
    qz = jnp.abs(z) - hz + radius
    outside = _safe_sqrt(
        jnp.maximum(qx, 0.0) ** 2 + jnp.maximum(qy, 0.0) ** 2 + jnp.maximum(qz, 0.0) ** 2
    )
    return outside + jnp.minimum(jnp.maximum(jnp.maximum(qx, qy), qz), 0.0) - radius


# ----------------------------------------------------------------------------------
# Object families: parameter tables (one row per variant) and SDFs
# ----------------------------------------------------------------------------------

# Stapler variants: base_width, base_thickness, arm_length, arm_width, arm_thickness,
# gap (between base and arm at the hinge), open_deg, post_length, post_width.
_STAPLER_DESIGNS = (
    (0.26, 0.07, 0.92, 0.22, 0.15, 0.030, 0.0, 0.18, 0.18),  # classic desk stapler
    (0.24, 0.06, 0.95, 0.20, 0.12, 0.020, 25.0, 0.15, 0.16),  # opened wide
    (0.17, 0.05, 0.84, 0.15, 0.09, 0.015, 0.0, 0.12, 0.12),  # slim mini
    (0.38, 0.09, 0.97, 0.32, 0.20, 0.040, 8.0, 0.22, 0.26),  # heavy duty
    (0.20, 0.05, 0.98, 0.13, 0.11, 0.060, 14.0, 0.10, 0.11),  # long thin arm, high hinge
    (0.32, 0.08, 0.70, 0.27, 0.22, 0.020, 3.0, 0.24, 0.24),  # chunky, short arm
)


def _stapler_row(bw, bt, al, aw, at, gap, open_deg, pl, pw):
    """SDF-ready row and bounding box of one stapler variant."""
    br, ar, pr = 0.3 * bt, 0.3 * at, 0.01
    c, s = math.cos(math.radians(open_deg)), math.sin(math.radians(open_deg))
    hy = bt + gap
    # Arm frame: hinge at the origin, arm along +x'; its rounded box is the inner box
    # (corners below) grown by ``ar``. Place the hinge so the arm starts at x = -0.5.
    corners = np.array([(x, y) for x in (ar, al - ar) for y in (ar, at - ar)])
    cx = corners[:, 0] * c - corners[:, 1] * s
    cy = corners[:, 0] * s + corners[:, 1] * c
    hx = -0.5 - cx.min() + ar
    assert hx + cx.max() + ar <= 0.5 + 1e-6, "arm sticks out in front of the base"
    ph = hy + 0.5 * at
    row = (0.5, bt / 2, bw / 2, br, al / 2, at / 2, aw / 2, ar, hx, hy, c, s,
           pl / 2, ph / 2, pw / 2, pr)
    half_w = max(bw, aw, pw) / 2
    lo = (-0.5, 0.0, -half_w)
    hi = (0.5, max(hy + cy.max() + ar, ph), half_w)
    return row, lo, hi


# Mug variants: height, radius_bottom, radius_top, wall, bottom, handle_height (of the
# loop centre, fraction of height), handle_span (half height of the loop's centre
# line), handle_reach (from the body to the outside of the centre line),
# handle_corner (corner radius of the loop), handle_tube (tube radius).
_MUG_DESIGNS = (
    (0.95, 0.50, 0.50, 0.050, 0.06, 0.52, 0.30, 0.30, 0.14, 0.045),  # classic
    (1.30, 0.50, 0.50, 0.050, 0.06, 0.55, 0.42, 0.26, 0.12, 0.045),  # tall
    (0.60, 0.50, 0.50, 0.050, 0.06, 0.50, 0.18, 0.24, 0.10, 0.040),  # short and wide
    (1.00, 0.50, 0.36, 0.050, 0.06, 0.48, 0.30, 0.30, 0.15, 0.045),  # narrowing top
    (0.95, 0.34, 0.50, 0.050, 0.06, 0.55, 0.26, 0.28, 0.12, 0.045),  # flared top
    (0.70, 0.40, 0.50, 0.045, 0.06, 0.52, 0.14, 0.17, 0.08, 0.035),  # espresso cup
    (0.90, 0.50, 0.50, 0.050, 0.06, 0.50, 0.30, 0.44, 0.30, 0.060),  # big ring handle
    (0.80, 0.50, 0.50, 0.050, 0.06, 0.58, 0.13, 0.46, 0.08, 0.050),  # wide flat loop
    (0.85, 0.50, 0.50, 0.060, 0.07, 0.40, 0.22, 0.26, 0.12, 0.075),  # thick low handle
    (1.45, 0.50, 0.45, 0.060, 0.08, 0.50, 0.55, 0.32, 0.15, 0.055),  # beer stein
    (1.10, 0.50, 0.50, 0.050, 0.06, 0.72, 0.14, 0.22, 0.10, 0.040),  # small high handle
    (0.52, 0.32, 0.50, 0.040, 0.05, 0.55, 0.12, 0.20, 0.08, 0.035),  # tea cup
    (1.15, 0.50, 0.42, 0.050, 0.06, 0.50, 0.38, 0.34, 0.05, 0.040),  # square handle
    (1.05, 0.50, 0.50, 0.045, 0.06, 0.50, 0.36, 0.36, 0.22, 0.030),  # thin round handle
    (0.75, 0.44, 0.50, 0.050, 0.06, 0.60, 0.22, 0.36, 0.20, 0.050),  # low, D handle
)


def _mug_row(h, rb, rt, wall, bottom, yfrac, span, reach, corner, tube):
    """SDF-ready row and bounding box of one mug variant."""
    assert max(rb, rt) == 0.5, "body diameter must be 1"
    slope = (rt - rb) / h
    yc = yfrac * h
    ro = rb + slope * yc
    # The loop's centre line runs from inside the wall (so both ends enter the body
    # at every taper) to ``reach`` outside it.
    inset = max(0.03 + abs(slope) * span, 2 * corner - reach)
    x_in, x_out = ro - inset, ro + reach
    ha, hb = max((x_out - x_in) / 2 - corner, 0.0), span - corner
    assert hb >= 0 and yc - span - tube > 0.02, "bad handle"
    # Cavity: the body moved in by ``wall``, from the bottom to above the rim.
    ch = h + 0.1 - bottom
    crb = rb + slope * bottom - wall
    crt = rb + slope * (h + 0.1) - wall
    row = (h, rb, rt, bottom, ch, crb, crt, (x_out + x_in) / 2, yc, ha, hb, corner, tube)
    lo = (-0.5, 0.0, -0.5)
    hi = (x_out + tube, max(h, yc + span + tube), 0.5)
    return row, lo, hi


# Banana variants: arc half-angle (deg), mid radius, tip radius, stalk length, stalk
# radius (0: no stalk), tilt of the arc's plane from vertical (deg, 90 lies on its side).
_BANANA_DESIGNS = (
    (35.0, 0.095, 0.025, 0.09, 0.030, 20.0),  # classic
    (14.0, 0.065, 0.012, 0.00, 0.000, 0.0),  # nearly straight, pointy
    (55.0, 0.090, 0.020, 0.07, 0.025, 0.0),  # strongly curved
    (28.0, 0.125, 0.040, 0.06, 0.035, 60.0),  # thick plantain
    (40.0, 0.080, 0.020, 0.09, 0.022, 90.0),  # lying on its side
    (45.0, 0.075, 0.012, 0.00, 0.000, 45.0),  # pointy, curved
    (22.0, 0.060, 0.015, 0.10, 0.020, 75.0),  # thin with a long stalk
    (45.0, 0.110, 0.035, 0.05, 0.030, 25.0),  # stubby baby banana
)


def _banana_row(alpha_deg, r0, rtip, stalk_len, stalk_r, tilt_deg):
    """SDF-ready row and bounding box of one banana variant."""
    ca, sa = math.cos(math.radians(alpha_deg)), math.sin(math.radians(alpha_deg))
    ct, st = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    has_stalk = stalk_r > 0
    front = max(rtip, stalk_len * ca + stalk_r) if has_stalk else rtip
    a = (1.0 - rtip - front) / 2  # x-extent: a + rtip behind, a + front ahead
    big_r = a / sa
    ve = big_r * (1 - ca)
    su, sv = (stalk_len * ca, stalk_len * sa) if has_stalk else (1.0, 0.0)
    lipschitz = 1 + 2 * (r0 - rtip) / a
    row = (a, big_r, ca, sa, ve, r0, rtip, ct, st, su, sv, 1 / (su * su + sv * sv),
           stalk_r if has_stalk else -1.0, 1 / lipschitz)
    # Box in the arc's frame (u along x, v towards the arc's centre, w normal), then
    # its corners mapped to the canonical frame.
    u_lo, u_hi = -(a + rtip), a + front
    v_hi = max(ve + r0, ve + sv + stalk_r)
    corners = np.array([(u, v, w) for u in (u_lo, u_hi) for v in (-r0, v_hi)
                        for w in (-r0, r0)])
    y = r0 + corners[:, 1] * ct - corners[:, 2] * st
    z = corners[:, 1] * st + corners[:, 2] * ct
    lo = (u_lo, max(y.min(), 0.0), z.min())
    hi = (u_hi, y.max(), z.max())
    return row, lo, hi


def _build(row_fn, designs):
    rows, los, his = zip(*(row_fn(*d) for d in designs))
    return np.array(rows, np.float32), np.array(los, np.float32), np.array(his, np.float32)


STAPLER_PARAMS, _STAPLER_LO, _STAPLER_HI = _build(_stapler_row, _STAPLER_DESIGNS)
"""(6, 16) stapler rows: base half extents (x, y, z) and rounding; arm half extents
(x, y, z) and rounding; hinge (x, y); cos, sin of the open angle; hinge post half
extents (x, y, z) and rounding."""

MUG_PARAMS, _MUG_LO, _MUG_HI = _build(_mug_row, _MUG_DESIGNS)
"""(15, 13) mug rows: height, bottom and top outer radius; cavity base y, height,
bottom and top radius; handle loop centre (x, y), straight half lengths (x, y),
corner radius and tube radius."""

BANANA_PARAMS, _BANANA_LO, _BANANA_HI = _build(_banana_row, _BANANA_DESIGNS)
"""(8, 14) banana rows: arc half chord ``a`` and radius; cos, sin of the arc
half-angle; arc end height; mid and tip radius; cos, sin of the tilt; stalk vector
(u, v) and its inverse squared length; stalk radius (< 0: none); 1 / Lipschitz."""

PARAMS: tuple[np.ndarray, ...] = (STAPLER_PARAMS, MUG_PARAMS, BANANA_PARAMS)
"""Parameter table of each class, indexed by class id."""

assert tuple(len(t) for t in PARAMS) == NUM_SHAPES


def stapler_sdf(q, params):
    """Stapler: rounded base plate, a top arm hinged at the back and a hinge post.

    Args:
      q: (..., 3) canonical points (length 1 along x).
      params: (16,) or (..., 16) row of :data:`STAPLER_PARAMS`.

    Returns:
      (...) exact-outside distance bound.
    """
    bx, by, bz, br, ax, ay, az, ar, hx, hy, c, s, px, py, pz, pr = _cols(params, 16)
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    base = _round_box(x, y - by, z, bx, by, bz, br)
    dx, dy = x - hx, y - hy
    arm = _round_box(c * dx + s * dy - ax, c * dy - s * dx - ay, z, ax, ay, az, ar)
    post = _round_box(x + 0.5 - px, y - py, z, px, py, pz, pr)
    return jnp.minimum(jnp.minimum(base, arm), post)


def mug_sdf(q, params):
    """Mug: hollow truncated-cone body with an open top and a loop handle.

    The handle is a tube around a rounded rectangle in the ``xy`` plane, merged with
    the wall and cut off by the cavity.

    Args:
      q: (..., 3) canonical points (body diameter 1).
      params: (13,) or (..., 13) row of :data:`MUG_PARAMS`.

    Returns:
      (...) distance bound.
    """
    h, rb, rt, cy, ch, crb, crt, lx, ly, ha, hb, hc, ht = _cols(params, 13)
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    r = _safe_sqrt(x * x + z * z)
    outer = _revolved_trapezoid(r, y, h, rb, rt)
    cavity = _revolved_trapezoid(r, y - cy, ch, crb, crt)
    qx, qy = jnp.abs(x - lx) - ha, jnp.abs(y - ly) - hb
    loop = (_safe_sqrt(jnp.maximum(qx, 0.0) ** 2 + jnp.maximum(qy, 0.0) ** 2)
            + jnp.minimum(jnp.maximum(qx, qy), 0.0) - hc)
    handle = jnp.maximum(_safe_sqrt(loop * loop + z * z) - ht, -cavity)
    return jnp.minimum(jnp.maximum(outer, -cavity), handle)


def banana_sdf(q, params):
    """Banana: a tube around a circular arc, tapering to the tips, with a stalk.

    The arc lies in a plane through the ``x`` axis tilted from vertical; its middle
    touches the ground at the origin. The tube radius is a parabola in ``x``, so the
    raw distance is divided by its Lipschitz constant.

    Args:
      q: (..., 3) canonical points (end-to-end length 1 along x).
      params: (14,) or (..., 14) row of :data:`BANANA_PARAMS`.

    Returns:
      (...) distance bound.
    """
    a, big_r, ca, sa, ve, r0, rtip, ct, st, su, sv, inv_s2, rs, inv_lip = _cols(params, 14)
    x, y, z = q[..., 0], q[..., 1] - r0, q[..., 2]
    v, w = y * ct + z * st, z * ct - y * st
    u = jnp.abs(x)
    past_end = u * ca > (big_r - v) * sa
    to_end = (u - a) ** 2 + (v - ve) ** 2
    to_arc = (_safe_sqrt(u * u + (v - big_r) ** 2) - big_r) ** 2
    dist = _safe_sqrt(jnp.where(past_end, to_end, to_arc) + w * w)
    radius = rtip + (r0 - rtip) * (1.0 - (jnp.minimum(u, a) / a) ** 2)
    body = (dist - radius) * inv_lip
    pu, pv = x - a, v - ve
    t = jnp.clip((pu * su + pv * sv) * inv_s2, 0.0, 1.0)
    stalk = _safe_sqrt((pu - t * su) ** 2 + (pv - t * sv) ** 2 + w * w) - rs
    return jnp.minimum(body, stalk)


FAMILIES = (stapler_sdf, mug_sdf, banana_sdf)
"""The SDF family of each class, indexed by class id (rows of :data:`PARAMS`)."""


PACKED_SIZE = sum(t.shape[1] for t in PARAMS)
"""Length of a packed parameter row: every family's row, concatenated in class order."""


def packed_params(shape_id):
    """Every family's parameter row for ``shape_id`` (clipped per family), concatenated.

    Args:
      shape_id: int32 () or (...) (may be traced).

    Returns:
      (..., PACKED_SIZE) float32; pair it with the class id in :func:`packed_sdf`.
    """
    return jnp.concatenate(
        [jnp.asarray(t)[jnp.clip(shape_id, 0, len(t) - 1)] for t in PARAMS], axis=-1)


def packed_sdf(q, class_id, packed):
    """Distance bound of the class's family evaluated on a packed row.

    Evaluates every family and selects by class, so ``class_id`` may be traced
    (and a float: it is compared with 0.5 and 1.5).

    Args:
      q: (..., 3) canonical points.
      class_id: () or broadcastable to q's leading dims.
      packed: (PACKED_SIZE,) or (..., PACKED_SIZE) row from :func:`packed_params`.
    """
    d, start = [], 0
    for fn, table in zip(FAMILIES, PARAMS):
        d.append(fn(q, packed[..., start:start + table.shape[1]]))
        start += table.shape[1]
    return jnp.where(class_id < 0.5, d[0], jnp.where(class_id < 1.5, d[1], d[2]))


def object_sdf(q, class_id, shape_id):
    """Signed distance bound of any object variant in its canonical frame.

    Ids may be traced; out-of-range ``shape_id`` is clipped to the class's variants.

    Args:
      q: (..., 3) canonical points.
      class_id: int32 () (or broadcastable to q's leading dims) in ``[0, 3)``.
      shape_id: int32, same shape as ``class_id``.

    Returns:
      (...) signed distance in canonical units.
    """
    return packed_sdf(q, class_id, packed_params(shape_id))


_BOX_LO = np.concatenate([_STAPLER_LO, _MUG_LO, _BANANA_LO])
_BOX_HI = np.concatenate([_STAPLER_HI, _MUG_HI, _BANANA_HI])
_OFFSETS = np.cumsum((0,) + NUM_SHAPES[:-1]).astype(np.int32)

_BOX_RADIUS = np.linalg.norm(_BOX_HI - _BOX_LO, axis=-1, keepdims=True) / 2
_BOX_CENTRE = (_BOX_LO + _BOX_HI) / 2
BOUNDING_SPHERES = np.concatenate([_BOX_CENTRE, _BOX_RADIUS], -1, dtype=np.float32)
"""(29, 4) canonical centre (x, y, z) and radius of a sphere around each variant,
classes stacked in order (see :func:`bounding_sphere`)."""


def _flat_index(class_id, shape_id):
    c = jnp.clip(class_id, 0, len(NUM_SHAPES) - 1)
    s = jnp.clip(shape_id, 0, jnp.asarray(NUM_SHAPES)[c] - 1)
    return jnp.asarray(_OFFSETS)[c] + s


def bounding_sphere(class_id, shape_id):
    """Sphere containing a variant, in canonical units.

    Args:
      class_id, shape_id: int32 () or (...) ids (may be traced).

    Returns:
      center (..., 3) and radius (...).
    """
    row = jnp.asarray(BOUNDING_SPHERES)[_flat_index(class_id, shape_id)]
    return row[..., :3], row[..., 3]


# ----------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------

DEFAULT_MESH_RESOLUTION = 96
"""Grid samples along the longest side of a variant's box for :func:`object_mesh`."""

_CHUNK = 1 << 17


@jax.jit
def _apply(fn, points):
    return fn(points)


def mesh_from_sdf(sdf_fn, lo, hi, resolution):
    """Triangle mesh of the zero set of an SDF by marching cubes.

    Args:
      sdf_fn: maps (N, 3) float32 points to (N,) distances, negative inside. A
        ``jax.tree_util.Partial`` shares one compilation across its array arguments.
      lo, hi: (3,) corners of a box containing the shape with some margin.
      resolution: grid samples along the longest side of the box (cubic cells).

    Returns:
      vertices (V, 3) float32 and faces (F, 3) int32, wound counter-clockwise seen
      from outside (normals point out).
    """
    if not isinstance(sdf_fn, jax.tree_util.Partial):
        sdf_fn = jax.tree_util.Partial(sdf_fn)
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    spacing = float(np.max(hi - lo)) / (resolution - 1)
    counts = np.ceil((hi - lo) / spacing).astype(int) + 1
    axes = [lo[i] + spacing * np.arange(counts[i], dtype=np.float32) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    n = len(points)
    points = np.pad(points, ((0, -n % _CHUNK), (0, 0)))
    chunks = [points[i : i + _CHUNK] for i in range(0, len(points), _CHUNK)]
    values = np.concatenate([np.asarray(_apply(sdf_fn, c)) for c in chunks])
    return mesh_from_grid(values[:n].reshape(counts), lo, spacing)


def mesh_from_grid(values, lo, spacing):
    """Triangle mesh of the zero set of SDF samples on a regular grid (marching cubes).

    Args:
      values: (X, Y, Z) signed distances at ``lo + spacing * (i, j, k)``, negative inside.
      lo: (3,) position of sample ``(0, 0, 0)``.
      spacing: distance between neighbouring samples (cubic cells).

    Returns:
      vertices (V, 3) float32 and faces (F, 3) int32, wound counter-clockwise seen
      from outside (normals point out).

    Raises:
      ValueError: the grid has no zero crossing (the shape is empty or fills it).
    """
    values = np.array(values, np.float32)   # a copy: marching_cubes needs a writable buffer
    if not (values.min() < 0 < values.max()):
        raise ValueError("the SDF grid has no surface: every sample has the same sign")
    verts, faces, _, _ = marching_cubes(
        values, level=0.0, spacing=(float(spacing),) * 3,
        gradient_direction="descent", allow_degenerate=False,
    )
    return (verts + np.asarray(lo, np.float32)).astype(np.float32), faces.astype(np.int32)


def _mesh_cache_dir() -> Path:
    root = os.environ.get("SCENE_OPT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "scene_opt_jax"
    return base / "meshes"


@functools.cache
def _tables_hash() -> str:
    """Hash of the parameter tables and of this module (which defines the SDFs)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for table in PARAMS:
        h.update(table.tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def object_mesh(class_id: int, shape_id: int, resolution: int = DEFAULT_MESH_RESOLUTION):
    """Mesh of one variant in canonical units, cached in memory and on disk.

    The disk cache is ``$SCENE_OPT_CACHE/meshes`` (default
    ``~/.cache/scene_opt_jax/meshes``), keyed by class, shape, resolution and a hash
    of the parameter tables and SDF code; files are written atomically.

    Args:
      class_id: class index into ``CLASS_NAMES``.
      shape_id: variant index, ``0 <= shape_id < NUM_SHAPES[class_id]``.
      resolution: grid samples along the longest side of the variant's box.

    Returns:
      read-only vertices (V, 3) float32 and outward-wound faces (F, 3) int32.
    """
    class_id, shape_id, resolution = int(class_id), int(shape_id), int(resolution)
    if not (0 <= class_id < len(NUM_SHAPES) and 0 <= shape_id < NUM_SHAPES[class_id]):
        raise ValueError(f"no shape ({class_id}, {shape_id})")
    path = _mesh_cache_dir() / (
        f"{CLASS_NAMES[class_id]}_{shape_id:02d}_r{resolution}_{_tables_hash()}.npz"
    )
    if path.exists():
        with np.load(path) as data:
            verts, faces = data["vertices"], data["faces"]
    else:
        index = int(_OFFSETS[class_id]) + shape_id
        fn = jax.tree_util.Partial(
            object_sdf, class_id=jnp.int32(class_id), shape_id=jnp.int32(shape_id)
        )
        lo, hi = _BOX_LO[index] - 0.05, _BOX_HI[index] + 0.05
        verts, faces = mesh_from_sdf(fn, lo, hi, resolution)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            try:
                np.savez(f, vertices=verts, faces=faces)
            except BaseException:
                os.unlink(f.name)
                raise
        os.replace(f.name, path)
    verts.flags.writeable = False
    faces.flags.writeable = False
    return verts, faces
