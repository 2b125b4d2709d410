"""Pure-JAX sphere tracer: the differentiable, jittable, vmappable backend.

Tracing is *lazy over objects*: every ray keeps, per object, a lower bound on the
free distance along the ray (first the entry of the object's bounding sphere, then
its last SDF value minus the distance travelled since). Each step evaluates the
SDF of one object only, the one with the tightest bound, and advances by the
smallest bound. Objects whose bounding sphere a ray misses are never evaluated, so
a step costs one SDF evaluation whatever the number of objects.

The march itself runs under ``stop_gradient``; derivatives come from a few
differentiable re-evaluations at the points it found:

* hit points: one Newton step on ``sdf(o + t d) = 0`` with the slope held fixed,
  which gives the exact implicit derivative of the hit depth;
* silhouettes: every ray remembers how close it passed to each object (bounding
  spheres are widened by the blend band so near misses are seen); the closest
  approach is refined, and a miss within a pixel or so blends that object's colour
  in with weight ``exp(-(distance / softness) ** 2)`` (distance in pixels), so
  moving an object changes the pixels at its edge continuously and with the right
  sign;
* soft shadows: ``min_t d / t`` along the shadow ray over a penumbra angle,
  re-evaluated at its argmin.

Edges inside one object (self-occlusion) and the horizon have no soft term.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from render import shapes, spec
from render.scene import Scene

BACKGROUND = 0
GROUND = 1
FIRST_OBJECT = 2
"""Instance ids: 0 background, 1 ground, ``2 + k`` object ``k``."""


@struct.dataclass
class Image:
    """What every backend returns for one scene (leading batch axes allowed).

    Attributes:
      rgb: (H, W, 3) colour in [0, 1].
      depth: (H, W) distance along the camera axis in metres; 0 on the background.
      normals: (H, W, 3) unit world-space normals; 0 on the background.
      instance: (H, W) int32: 0 background, 1 ground, 2 + k object k.
    """

    rgb: jax.Array
    depth: jax.Array
    normals: jax.Array
    instance: jax.Array


@dataclasses.dataclass(frozen=True)
class JaxRenderConfig:
    """Static options of the JAX renderer.

    Attributes:
      shadows: cast soft shadows from the directional light.
      textures: multiply albedos by a procedural greyscale solid texture (mean 1).
      max_steps: sphere-tracing steps for camera rays.
      shadow_steps: sphere-tracing steps for shadow rays.
      softness: silhouette blur in pixels (the decay length of the edge blend).
      shadow_softness: penumbra width as an angle in radians.
      background_rgb: colour above the horizon when no background image is given.
    """

    shadows: bool = True
    textures: bool = False
    max_steps: int = 48
    shadow_steps: int = 24
    softness: float = 0.5
    shadow_softness: float = 0.04
    background_rgb: tuple[float, float, float] = (0.55, 0.6, 0.7)


_HIT_PIXELS = 0.1      # a hit when the SDF is below this fraction of a pixel footprint
_FAR = 50.0            # metres: rays longer than this see the background
_SHADOW_FAR = 2.0      # metres: shadow rays stop here (objects are all within reach)
_NORMAL_STEP = 1e-3    # canonical units: finite-difference step of the SDF normal
_SHADOW_OFFSET = 2e-3  # metres: shadow rays start this far off the surface


_POSE = 6   # leading columns of a packed object row: x, z, cos az, sin az, scale, class


@struct.dataclass
class _WorldObjects:
    """Per-object quantities computed once per scene.

    ``rows`` packs everything the SDF of an object needs, (N, 6 + family params):
    ``x, z, cos(az), sin(az), scale, class_id`` then the object's row of every
    family table, so a tracing step fetches one row with a select, not a gather
    (gathers dominate the step time on CPU).
    """

    rows: jax.Array        # (N, P)
    sphere_c: jax.Array    # (N, 3) bounding-sphere centre, world
    sphere_r: jax.Array    # (N,) bounding-sphere radius, world
    valid: jax.Array       # (N,)


def _world_objects(scene: Scene) -> _WorldObjects:
    obj = scene.objects
    # Padded objects may hold zeros: keep their (never used) transforms finite.
    scale = jnp.where(obj.valid, obj.scale, 1.0)
    c, s = jnp.cos(obj.azimuth), jnp.sin(obj.azimuth)
    pose = jnp.stack([obj.position[:, 0], obj.position[:, 1], c, s, scale,
                      obj.class_id.astype(scale.dtype)], -1)
    rows = jnp.concatenate([pose, shapes.packed_params(obj.shape_id).astype(scale.dtype)], -1)
    bc, br = jax.vmap(shapes.bounding_sphere)(obj.class_id, obj.shape_id)
    bc = bc * scale[:, None]
    # R_y(azimuth) applied to the local centre: +x turns towards -z.
    bc_world = jnp.stack([c * bc[:, 0] + s * bc[:, 2], bc[:, 1], -s * bc[:, 0] + c * bc[:, 2]], -1)
    center = jnp.stack([obj.position[:, 0], jnp.zeros_like(scale), obj.position[:, 1]], -1)
    return _WorldObjects(rows=rows, sphere_c=center + bc_world, sphere_r=br * scale,
                         valid=obj.valid)


def _row(objs: _WorldObjects, k):
    """Packed row of object k (a traced scalar)."""
    return jax.lax.select_n(k, *objs.rows)


def _to_local(row, p):
    """World point p (3,) to the canonical frame of a packed object row."""
    dx, dy, dz = p[0] - row[0], p[1], p[2] - row[1]
    c, s, scale = row[2], row[3], row[4]
    return jnp.stack([c * dx - s * dz, dy, s * dx + c * dz]) / scale


def _to_world_dir(row, v):
    c, s = row[2], row[3]
    return jnp.stack([c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2]])


def _canonical_sdf(row, q):
    """Canonical distance of the object in ``row`` at canonical point(s) q (..., 3)."""
    return shapes.packed_sdf(q, row[5], row[_POSE:])


def _sdf(row, p):
    """Distance bound in metres from world point p (3,) to the object in ``row``."""
    return row[4] * _canonical_sdf(row, _to_local(row, p))


def _normal(row, p):
    """Unit outward world normal of the object in ``row`` near p: tetrahedral differences."""
    q = _to_local(row, p)
    offsets = jnp.array([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], q.dtype)
    d = _canonical_sdf(row, q + _NORMAL_STEP * offsets)
    n = _to_world_dir(row, offsets.T @ d)
    return n / jnp.sqrt(jnp.sum(n * n) + 1e-20)


class _Trace(struct.PyTreeNode):
    """State of one ray's march; after the march, its result."""

    t: jax.Array          # () distance along the ray
    done: jax.Array       # () bool: stopped (hit, or reached t_stop)
    hit: jax.Array        # () bool: stopped on an object
    k: jax.Array          # () int: the object hit (or last evaluated)
    bound: jax.Array      # (N,) free distance of each object at ``ref``
    ref: jax.Array        # (N,) where ``bound`` was measured
    near: jax.Array       # (N,) min over the march of sdf_k / t (angular closeness)
    near_t: jax.Array     # (N,) the t where that minimum was seen


class _Ray(struct.PyTreeNode):
    origin: jax.Array     # (3,)
    direction: jax.Array  # (3,) unit
    t_stop: jax.Array     # () give up here (the ground, or a far limit)
    enter: jax.Array      # (N,) entry into each bounding sphere
    leave: jax.Array      # (N,) exit from each bounding sphere


def _start(objs: _WorldObjects, origin, direction, t_start, t_stop, margin):
    """Intersects a ray with every bounding sphere; the march starts at t_start.

    Spheres are widened by ``margin`` (an angle, times their distance) so that rays
    passing just outside an object still record how close they came: the
    silhouette blend and soft shadows need that band.
    """
    n = objs.valid.shape[0]
    oc = origin - objs.sphere_c
    b = oc @ direction
    radius = objs.sphere_r + margin * jnp.sqrt(jnp.sum(oc * oc, -1))
    disc = b * b - (jnp.sum(oc * oc, -1) - radius ** 2)
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    enter, leave = -b - root, -b + root
    crosses = objs.valid & (disc > 0) & (leave > t_start) & (enter < t_stop)
    inf = jnp.asarray(jnp.inf, direction.dtype)
    state = _Trace(t=t_start, done=~jnp.any(crosses), hit=jnp.bool_(False), k=jnp.int32(0),
                   bound=jnp.where(crosses, jnp.maximum(enter - t_start, 0.0), inf),
                   ref=jnp.full((n,), t_start), near=jnp.full((n,), inf),
                   near_t=jnp.full((n,), t_start))
    state = state.replace(t=jnp.where(state.done, t_stop, t_start))
    return _Ray(origin=origin, direction=direction, t_stop=t_stop, enter=enter, leave=leave), state


def _march(objs: _WorldObjects, ray: _Ray, state: _Trace, steps: int, hit_angle) -> _Trace:
    """Up to ``steps`` steps of lazy union sphere tracing on one ray (not differentiated).

    A hit when sdf < hit_angle * t.
    """
    n = objs.valid.shape[0]
    inf = jnp.asarray(jnp.inf, ray.direction.dtype)

    def free_at(bound, ref, t):
        return jnp.where(ray.leave < t, inf, bound - (t - ref))

    def body(carry):
        i, st = carry
        t = st.t
        free = free_at(st.bound, st.ref, t)
        k = jnp.argmin(free)
        live = jnp.isfinite(free[k])
        d = _sdf(_row(objs, k), ray.origin + t * ray.direction)
        this = jnp.arange(n) == k
        bound = jnp.where(this, jnp.where(live, jnp.maximum(d, ray.enter[k] - t), inf), st.bound)
        ref = jnp.where(this, t, st.ref)
        better = this & live & (d / t < st.near)
        hit = live & (d < hit_angle * t)
        step = jnp.maximum(jnp.min(free_at(bound, ref, t)), 0.0)
        t_next = jnp.minimum(jnp.where(hit, t, t + step), ray.t_stop)
        return i + 1, _Trace(t=t_next, done=hit | (t_next >= ray.t_stop), hit=hit, k=k,
                             bound=bound, ref=ref, near=jnp.where(better, d / t, st.near),
                             near_t=jnp.where(better, t, st.near_t))

    _, state = jax.lax.while_loop(lambda c: (c[0] < steps) & ~c[1].done, body, (0, state))
    return state


def _closest_approach(row, origin, direction, t0, d0, t_end, iterations: int = 4):
    """Refines where a ray passes closest to an object, within (0, t_end].

    The march only samples the SDF at its own steps; the silhouette blend needs the
    true minimum along the ray, or its derivative would not match how the blended
    image changes. A shrinking pattern search around the best sample, not
    differentiated (the minimum's derivative is the SDF's partial at its argmin).
    """
    def step(_, carry):
        t, d, delta = carry
        for cand in (jnp.maximum(t - delta, 1e-3), jnp.minimum(t + delta, t_end)):
            dc = _sdf(row, origin + cand * direction)
            better = dc < d
            t, d = jnp.where(better, cand, t), jnp.where(better, dc, d)
        return t, d, delta * 0.5

    t, _, _ = jax.lax.fori_loop(0, iterations, step, (t0, d0, jnp.maximum(d0, 1e-3)))
    return t


def _trace_rays(objs: _WorldObjects, origins, directions, t_start, t_stop, hit_angle, margin,
                max_steps: int, first_steps: int = 12, straggler_fraction: float = 1 / 8) -> _Trace:
    """Traces R rays: ``first_steps`` for all, then the rest for the stragglers only.

    A batched while loop runs until its slowest ray is done, so instead of marching
    every ray ``max_steps`` times, all rays march ``first_steps``, then the at most
    ``straggler_fraction * R`` rays not yet done are gathered and march on. Rays
    beyond that budget keep their state (treated as misses); the benchmark reports
    how rarely that happens.

    Args:
      origins, directions: (R, 3); t_start, t_stop: (R,).
    """
    r = directions.shape[0]
    rays, state = jax.vmap(_start, (None, 0, 0, 0, 0, None))(objs, origins, directions, t_start,
                                                             t_stop, margin)
    march = jax.vmap(_march, (None, 0, 0, None, None))
    state = march(objs, rays, state, min(first_steps, max_steps), hit_angle)
    m = min(r, max(32, int(r * straggler_fraction)))
    if max_steps <= first_steps or m == 0:
        return state
    _, idx = jax.lax.top_k(jnp.where(state.done, 0.0, 1.0), m)
    take = lambda x: x[idx]  # noqa: E731
    sub = march(objs, jax.tree_util.tree_map(take, rays), jax.tree_util.tree_map(take, state),
                max_steps - first_steps, hit_angle)
    return jax.tree_util.tree_map(lambda x, y: x.at[idx].set(y), state, sub)


def _camera_rays(scene: Scene, resolution):
    """Origin (3,) and unit directions (H, W, 3) plus the camera's forward axis."""
    h, w = resolution
    tan_half = math.tan(spec.VERTICAL_FOV / 2)
    rows = (jnp.arange(h) + 0.5) / h * 2 - 1
    cols = ((jnp.arange(w) + 0.5) / w * 2 - 1) * (w / h)
    y = -rows[:, None] * tan_half
    x = cols[None, :] * tan_half
    x, y = jnp.broadcast_arrays(x, y)
    se, ce = jnp.sin(scene.camera.elevation), jnp.cos(scene.camera.elevation)
    d = jnp.stack([x, y * ce - se, y * se + ce], -1)
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    origin = jnp.stack([jnp.zeros_like(se), scene.camera.height, jnp.zeros_like(se)])
    forward = jnp.stack([jnp.zeros_like(se), -se, ce])
    return origin, d, forward


def _light_direction(scene: Scene):
    az, el = scene.light.azimuth, scene.light.elevation
    return jnp.stack([jnp.cos(el) * jnp.sin(az), jnp.sin(el), jnp.cos(el) * jnp.cos(az)])


def _texture(p, frequency, phase):
    """Greyscale solid texture with mean 1 and values in [0.55, 1.45]."""
    waves = jnp.sin(p @ frequency.T + phase)                  # (3,)
    return 1.0 + 0.15 * jnp.sum(waves)


def _texture_params(seed):
    key = jax.random.fold_in(jax.random.key(1234), seed)
    kf, kp = jax.random.split(key)
    return jax.random.normal(kf, (3, 3)) * 12.0, jax.random.uniform(kp, (3,)) * 2 * math.pi


def render(scene: Scene, resolution=(64, 64), config: JaxRenderConfig = JaxRenderConfig(),
           background: jax.Array | None = None) -> Image:
    """Renders one scene; ``jax.vmap`` it for a batch.

    Args:
      scene: one (unbatched) scene.
      resolution: static (H, W) in pixels.
      config: static options.
      background: optional (Hb, Wb, 3) image shown above the horizon, resized to
        the output resolution.

    Returns:
      ``Image`` with fields of shape (H, W, ...).
    """
    h, w = resolution
    objs = _world_objects(scene)
    origin, dirs, forward = _camera_rays(scene, resolution)
    pixel_angle = 2 * math.tan(spec.VERTICAL_FOV / 2) / h
    light = _light_direction(scene)
    sg = jax.lax.stop_gradient
    objs_sg = sg(objs)
    num_objects = objs.valid.shape[0]
    tex_params = [_texture_params(i) for i in range(num_objects + 1)]
    tex_freq = jnp.stack([f for f, _ in tex_params])
    tex_phase = jnp.stack([p for _, p in tex_params])

    if background is None:
        bg = jnp.broadcast_to(jnp.asarray(config.background_rgb, dirs.dtype), (h, w, 3))
    else:
        bg = jax.image.resize(jnp.asarray(background, dirs.dtype), (h, w, 3), "linear")

    def albedo(index, local_p):
        """Albedo of the ground (index 0) or object index - 1, textured if asked."""
        rgb = jnp.concatenate([scene.ground_rgb[None], scene.objects.rgb])[index]
        if config.textures:
            rgb = rgb * _texture(local_p, tex_freq[index], tex_phase[index])
        return rgb

    def surface(d, tr):
        """Differentiable surface point, normal and albedo of one camera ray."""
        down = -d[1]
        sees_ground = down > 1e-6
        t_ground = jnp.minimum(scene.camera.height / jnp.maximum(down, 1e-6), _FAR)
        row_k = _row(objs, tr.k)
        # Object hit: one Newton step with a frozen slope gives the implicit derivative.
        p0 = origin + tr.t * d
        slope = sg(jnp.minimum(_normal(row_k, sg(p0)) @ d, -0.25))
        t_obj = tr.t - _sdf(row_k, p0) / slope
        p_obj = origin + t_obj * d
        p_gnd = origin + t_ground * d        # the ground is exact and analytic
        p = jnp.where(tr.hit, p_obj, p_gnd)
        normal = jnp.where(tr.hit, _normal(row_k, p_obj), jnp.array([0.0, 1.0, 0.0], d.dtype))
        rgb = albedo(jnp.where(tr.hit, tr.k + 1, 0),
                     jnp.where(tr.hit, _to_local(row_k, p_obj), p_gnd))
        depth = jnp.where(tr.hit | sees_ground, jnp.where(tr.hit, t_obj, t_ground) * (d @ forward), 0.0)
        normal = jnp.where(tr.hit | sees_ground, normal, 0.0)
        instance = jnp.where(tr.hit, FIRST_OBJECT + tr.k, jnp.where(sees_ground, GROUND, BACKGROUND))
        return p, normal, rgb, depth, instance.astype(jnp.int32)

    def shadow(p, normal, tr):
        """Soft shadow factor in [0, 1] from a shadow ray's march; 1 when unshadowed."""
        k = jnp.argmin(tr.near)
        start = sg(p + _SHADOW_OFFSET * normal)
        closeness = _sdf(_row(objs, k), start + tr.near_t[k] * light) / tr.near_t[k]
        factor = jnp.clip(closeness / config.shadow_softness, 0.0, 1.0)
        # A ray that hit is in the umbra: a constant 0. Its last sample's SDF lies on
        # the occluder's light side, and its derivative would say that moving the
        # occluder towards the light lifts the whole umbra.
        return jnp.where(tr.hit, 0.0, jnp.where(jnp.isfinite(tr.near[k]), factor, 1.0))

    def finish(d, tr, p, normal, rgb, instance, sun, bg_rgb):
        """Shading plus the silhouette blend of the object passed closest to."""
        def shade(rgb, n):
            return jnp.clip(rgb * (scene.light.ambient + sun * jnp.maximum(n @ light, 0.0)), 0, 1)

        rgb_base = jnp.where(instance > BACKGROUND, shade(rgb, normal), bg_rgb)
        near = jnp.where((jnp.arange(num_objects) == tr.k) & tr.hit, jnp.inf, tr.near)
        near = jnp.where(tr.near_t <= tr.t, near, jnp.inf)
        j = jnp.argmin(near)
        row_j = _row(objs, j)
        t_near = _closest_approach(row_j, sg(origin), sg(d), sg(tr.near_t[j]),
                                   sg(near[j] * tr.near_t[j]), sg(tr.t))
        # Closest at the end of the segment (the ground point): that end moves with
        # the camera, so take the differentiable surface point, not a fixed t.
        at_end = t_near >= tr.t * (1 - 1e-4)
        p_near = jnp.where(at_end, p, origin + t_near * d)
        dist_px = jnp.maximum(_sdf(row_j, p_near), 0.0) / (t_near * pixel_angle)
        alpha = jnp.where(jnp.isfinite(near[j]), jnp.exp(-jnp.square(dist_px / config.softness)), 0.0)
        rgb_near = shade(albedo(j + 1, _to_local(row_j, p_near)), _normal(row_j, sg(p_near)))
        return alpha * rgb_near + (1 - alpha) * rgb_base

    d = dirs.reshape(-1, 3)
    r = d.shape[0]
    down = -sg(d[:, 1])
    t_ground = jnp.minimum(sg(scene.camera.height) / jnp.maximum(down, 1e-6), _FAR)
    tr = _trace_rays(objs_sg, jnp.broadcast_to(sg(origin), (r, 3)), sg(d),
                     jnp.full((r,), 1e-3, d.dtype), t_ground,
                     jnp.asarray(_HIT_PIXELS * pixel_angle, d.dtype),
                     jnp.asarray(3 * config.softness * pixel_angle, d.dtype), config.max_steps)
    p, normal, rgb, depth, instance = jax.vmap(surface)(d, tr)
    if config.shadows:
        light_dirs = jnp.broadcast_to(sg(light), (r, 3))
        shadow_tr = _trace_rays(objs_sg, sg(p + _SHADOW_OFFSET * normal), light_dirs,
                                jnp.full((r,), 1e-3, d.dtype), jnp.full((r,), _SHADOW_FAR, d.dtype),
                                jnp.asarray(0.02 * config.shadow_softness, d.dtype),
                                jnp.asarray(config.shadow_softness, d.dtype), config.shadow_steps)
        sun = scene.light.strength * jax.vmap(shadow)(p, normal, shadow_tr)
    else:
        sun = jnp.broadcast_to(scene.light.strength, (r,))
    rgb = jax.vmap(finish)(d, tr, p, normal, rgb, instance, sun, bg.reshape(-1, 3))
    rgb, depth, normals, instance = (x.reshape((h, w) + x.shape[1:])
                                     for x in (rgb, depth, normal, instance))
    return Image(rgb=rgb, depth=depth, normals=normals, instance=instance)
