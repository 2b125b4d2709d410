"""Host renderers of :class:`simopt_jax.simulators.ShapeSimulator`: pyrender and Blender.

``ShapeSimulator(backend="gl")`` and ``backend="blender"`` draw the grammar's shapes
as triangle meshes on the host, entered from JAX through ``render.black_box``
(:func:`host_function`). The simulator samples the shape in JAX as for the
tracer, evaluates its SDF on a ``G**3`` grid around its bounding sphere (in JAX,
so no JAX runs inside the callback) and hands the grid and the camera position to
the host, which makes the mesh by marching cubes (:func:`render.shapes.mesh_from_grid`)
and renders colour, depth along the camera axis, world-frame unit normals and the
instance pass, with :func:`render.render_sdf`'s conventions (0 depth and normals
and ``background_rgb`` where the shape is not; linear colour).

The camera looks at the shape's origin from ``eye`` with ``render_sdf``'s frame
(right ``= forward x up``, then the true up), its field of view and ``far``; the
light is ``config.ambient`` plus one directional light of ``config.strength``
from the simulator's ``light_direction``; the albedo is ``config.albedo``.

``gl``: pyrender over EGL on the process's one GL thread and renderer
(:mod:`render.gl_renderer`), no shadows (like the tracer). ``blender``: Cycles in
the worker pool of :mod:`render.blender`, with the ground hidden and the meshes
forgotten after each render; the sun casts shadows (self-shadowing that the
tracer lacks) and the uniform sky adds ambient occlusion, so its images are the
realistic ones rather than a match.

Blender's worker has a fixed camera frame (:mod:`render.spec`: the camera at
``(0, height, 0)`` pitched down by its elevation, ``+x`` to the right of the image,
a mirror of a right-handed frame). :func:`to_spec` is the isometry that carries
our camera onto it: a rotation about the vertical and a reflection, so meshes
change winding and normals come back through its transpose.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING, Callable

import numpy as np

from render import shapes
from render.jax_renderer import BACKGROUND, FIRST_OBJECT, Image

if TYPE_CHECKING:
    from simopt_jax.simulators import ShapeSimulator

_GAMMA = 2.2
"""Pyrender's shader writes ``linear ** (1 / 2.2)``; we return linear colour."""

_FIELDS = ("rgb", "depth", "normals", "instance")
"""The host function's outputs, in order: the fields of :class:`render.Image`."""

_NDIMS = (3, 0, 0, 1)
"""Unbatched ``ndim`` of the host function's arguments (grid, lo, spacing, eye)."""


def host_function(sim: ShapeSimulator) -> Callable[..., tuple[np.ndarray, ...]]:
    """The numpy function that ``black_box`` wraps for ``sim.backend``.

    It takes ``(grid (..., G, G, G), lo (...), spacing (...), eye (..., 3))`` with
    common leading batch axes (``vmap_method="broadcast_all"``): the SDF samples at
    ``lo + spacing * (i, j, k)`` on every axis, and the camera position. It returns
    ``(rgb (..., H, W, 3) float32, depth (..., H, W) float32, normals (..., H, W, 3)
    float32, instance (..., H, W) int32)``. A batch renders one shape after another
    on the GL thread, or in parallel on the Blender pool.
    """
    render_all = {"gl": _render_gl_all, "blender": _render_blender_all}[sim.backend]

    def render(grid, lo, spacing, eye):
        batch = np.shape(grid)[:np.ndim(grid) - _NDIMS[0]]
        count = math.prod(batch)
        args = [np.reshape(a, (count,) + np.shape(a)[len(batch):])
                for a in (grid, lo, spacing, eye)]
        images = render_all(sim, [tuple(a[i] for a in args) for i in range(count)])
        return tuple(np.stack([getattr(im, f) for im in images]).reshape(
            batch + np.shape(getattr(images[0], f))) for f in _FIELDS)

    render.__qualname__ = f"ShapeSimulator(backend={sim.backend!r}).render"
    return render


# --------------------------------------------------------------------------------------
# Geometry shared by both renderers.

def shape_mesh(grid, lo, spacing):
    """World vertices (V, 3), outward faces (F, 3) and unit vertex normals (V, 3) of
    one grid, or None when the shape is empty (no zero crossing)."""
    import trimesh

    grid = np.asarray(grid, np.float32)
    if not (grid.min() < 0 < grid.max()):
        return None
    lo = np.full(3, float(lo), np.float32)
    verts, faces = shapes.mesh_from_grid(grid, lo, float(spacing))
    if len(faces) == 0:
        return None
    normals = np.asarray(trimesh.Trimesh(verts, faces, process=False).vertex_normals)
    return verts.astype(np.float64), faces, normals


def camera_axes(eye) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(right, up, forward)`` unit vectors of a camera at ``eye`` looking at the
    origin, as :func:`render.sdf_render.camera_rays` builds them (world up ``+y``)."""
    eye = np.asarray(eye, np.float64)
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward), forward


def _empty(sim: ShapeSimulator) -> Image:
    h, w = sim.resolution
    return Image(rgb=np.broadcast_to(np.asarray(sim.config.background_rgb, np.float32),
                                     (h, w, 3)).copy(),
                 depth=np.zeros((h, w), np.float32), normals=np.zeros((h, w, 3), np.float32),
                 instance=np.full((h, w), BACKGROUND, np.int32))


def _finish(sim: ShapeSimulator, rgb, depth, normals, hit) -> Image:
    """Masks the background with ``render_sdf``'s conventions."""
    background = np.asarray(sim.config.background_rgb, np.float64)
    return Image(rgb=np.where(hit[..., None], np.clip(rgb, 0, 1), background).astype(np.float32),
                 depth=np.where(hit, depth, 0.0).astype(np.float32),
                 normals=np.where(hit[..., None], normals, 0.0).astype(np.float32),
                 instance=np.where(hit, FIRST_OBJECT, BACKGROUND).astype(np.int32))


# --------------------------------------------------------------------------------------
# gl: pyrender over EGL.

def _render_gl_all(sim: ShapeSimulator, items) -> list[Image]:
    from render import gl_renderer

    # An EGL context is current in one thread only: every render runs on the
    # process's one GL thread, with its one reused renderer.
    return gl_renderer.gl_thread().submit(lambda: [_render_gl(sim, *i) for i in items]).result()


def _light_angles(direction) -> tuple[float, float]:
    """``(azimuth, elevation)`` of a direction towards the light, in the convention of
    :func:`render.gl_renderer.light_pose` (``(cos e sin a, sin e, cos e cos a)``)."""
    d = np.asarray(direction, np.float64)
    d = d / np.linalg.norm(d)
    return math.atan2(d[0], d[2]), math.asin(np.clip(d[1], -1.0, 1.0))


def _render_gl(sim: ShapeSimulator, grid, lo, spacing, eye) -> Image:
    from render import gl_renderer

    mesh = shape_mesh(grid, lo, spacing)
    if mesh is None:
        return _empty(sim)
    pyrender = gl_renderer.pyrender_module()
    h, w = sim.resolution
    cfg = sim.config
    scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.full(3, cfg.ambient))
    # Pyrender's diffuse term is 0.96 albedo / pi times the intensity (F0 = 0.04).
    sun = pyrender.DirectionalLight(color=np.ones(3), intensity=cfg.strength * math.pi / 0.96)
    scene.add(sun, pose=gl_renderer.light_pose(*_light_angles(sim.light_direction)))
    right, up, forward = camera_axes(eye)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -forward, eye
    camera = pyrender.PerspectiveCamera(yfov=cfg.fov, aspectRatio=w / h, znear=0.01,
                                        zfar=cfg.far)
    scene.add(camera, pose=pose)
    verts, faces, normals = mesh
    material = pyrender.MetallicRoughnessMaterial(
        baseColorFactor=np.append(np.clip(cfg.albedo, 0, 1), 1.0), metallicFactor=0.0,
        roughnessFactor=1.0)
    node = scene.add(pyrender.Mesh([pyrender.Primitive(
        positions=verts, normals=normals, indices=faces, material=material)]))

    renderer = gl_renderer.shared_renderer((h, w))
    colour, _ = renderer.render(scene, flags=pyrender.RenderFlags.NONE)
    # Depth of the unsampled segmentation pass: at the pixel centres (see gl_renderer).
    seg, depth = renderer.render(scene, flags=pyrender.RenderFlags.SEG,
                                 seg_node_map={node: np.array([255, 0, 0], np.uint8)})
    world_normals = gl_renderer.normals_pass(renderer, camera, pose, [mesh])
    rgb = (colour[..., :3].astype(np.float64) / 255) ** _GAMMA
    return _finish(sim, rgb, depth, world_normals, seg[..., 0] > 0)


# --------------------------------------------------------------------------------------
# blender: Cycles in render.blender's worker pool.

def to_spec(eye) -> tuple[np.ndarray, float, float]:
    """The isometry ``p -> M p + t`` from our world to the worker's frame, and its
    camera: ``(M (3, 3) with det -1, height, elevation)``; ``t = (0, height, 0) - M eye``.

    ``M`` maps our camera's right, up and forward axes onto the worker camera's
    (``+x``; ``(0, cos e, sin e)``; ``(0, -sin e, cos e)``), so the world's vertical
    stays vertical and the shape's origin lands at ``(0, 0, |eye| cos e)``.
    """
    eye = np.asarray(eye, np.float64)
    distance = float(np.linalg.norm(eye))
    elevation = math.asin(float(np.clip(eye[1] / distance, -1.0, 1.0)))
    se, ce = math.sin(elevation), math.cos(elevation)
    ours = np.stack(camera_axes(eye), axis=1)
    theirs = np.array([[1.0, 0.0, 0.0], [0.0, ce, -se], [0.0, se, ce]])
    return theirs @ ours.T, distance * se, elevation


def _blender_request(sim: ShapeSimulator, mesh, eye, config, name: str, workers: int):
    from render import blender

    m, height, elevation = to_spec(eye)
    verts, faces, _ = mesh
    shift = np.array([0.0, height, 0.0]) - m @ np.asarray(eye, np.float64)
    key = f"grammar-{uuid.uuid4().hex}"
    light = m @ np.asarray(sim.light_direction, np.float64)
    azimuth, light_elevation = _light_angles(light)
    header = blender.render_header(config, sim.resolution, [key], workers=workers,
                                   vertical_fov=sim.config.fov, ground=False,
                                   transient_meshes=True)
    arrays = {
        "camera": np.array([height, elevation]),
        "light": np.array([sim.config.ambient, sim.config.strength, azimuth, light_elevation]),
        "ground_rgb": np.zeros(3),
        "pose": np.array([[0.0, 0.0, 0.0, 1.0]]),
        "rgb": np.asarray([sim.config.albedo], np.float64),
        "seed": np.zeros(1),
    }
    # A reflection turns outward winding inward: reverse it.
    meshes = {key: ((verts @ m.T + shift).astype(np.float32), faces[:, ::-1].copy())}
    return blender.Request(name=name, header=header, arrays=arrays, meshes=meshes)


def _render_blender_all(sim: ShapeSimulator, items) -> list[Image]:
    from render import blender

    pool = blender.shared_pool()
    config = blender.BlenderRenderConfig(background_rgb=sim.config.background_rgb)
    meshes = [shape_mesh(grid, lo, spacing) for grid, lo, spacing, _ in items]
    drawn = [i for i, mesh in enumerate(meshes) if mesh is not None]
    requests = [_blender_request(sim, meshes[i], items[i][3], config, f"shape {i}", pool.size)
                for i in drawn]
    replies = pool.map(requests)
    errors = [r for r in replies if isinstance(r, blender.BlenderError)]
    if errors:
        raise blender.BlenderError(f"{len(errors)} of {len(requests)} shapes failed:\n"
                                   + "\n".join(str(e) for e in errors))
    images = [_empty(sim) for _ in items]
    for i, (_, arrays) in zip(drawn, replies):
        image = blender.image_from_reply(arrays, config)
        m, _, _ = to_spec(items[i][3])
        hit = image.instance != BACKGROUND
        images[i] = _finish(sim, image.rgb, image.depth, image.normals @ m, hit)
    return images
