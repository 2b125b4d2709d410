"""Host renderers of :class:`simopt_jax.scenes.SceneSimulator`: pyrender and Blender.

``SceneSimulator(backend="gl")`` and ``backend="blender"`` draw the scene of the
JAX sphere tracer as triangle meshes on the host, entered from JAX through
``render.black_box`` (:func:`host_function`). Both take the decoded sample
(:class:`simopt_jax.scenes.SceneParts`, numpy) and return linear colour and class
labels from the renderer's instance pass (0 for the ground and the sky).

The meshes are trimesh primitives of the tracer's SDFs: an icosphere of radius
``size`` centred at height ``size``; a cube of half side ``0.8 size`` and a cylinder
of radius and half height ``0.8 size``, both standing on the ground, turned by the
object's azimuth (object frame to world: ``R = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``).
The ground is a disc around the camera's foot point whose rim is ``far`` from the
camera, so that, as in the tracer, the sky begins at ``far``. The camera, its field
of view, the key light and the colours are the simulator's.

``gl``: pyrender over EGL, on the process's one offscreen renderer and GL thread
(:mod:`render.gl_renderer`); high quality turns on the directional light's shadow
map. ``blender``: Cycles in the worker pool of :mod:`render.blender`, through its
ordinary request protocol (meshes by key, an object pose ``(x, z, azimuth, scale)``
and a camera ``(height, elevation)`` in the frame of :mod:`render.spec`); high
quality turns on the sun's shadows. Cycles adds what the tracer lacks (ambient
occlusion from its uniform sky, bounced light) and its ground is the worker's fixed
60 m quad, so its images are the realistic ones rather than a match.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from render.jax_renderer import FIRST_OBJECT, GROUND

if TYPE_CHECKING:
    from simopt_jax.scenes import SceneSimulator

_GAMMA = 2.2
"""Pyrender's shader writes ``linear ** (1 / 2.2)``; we return linear colour."""

_GROUND_SIDES = 128
"""Sides of the polygon standing in for the ground disc."""



class HostScene(NamedTuple):
    """One scene as numpy arrays, in the order of :func:`host_function`'s arguments."""

    light: np.ndarray       # (2,) ambient and key-light strengths
    rgb: np.ndarray         # (n, 3) object albedo
    elevation: np.ndarray   # () camera elevation, radians
    high: np.ndarray        # () bool, high quality
    xz: np.ndarray          # (n, 2) contact points, metres
    classes: np.ndarray     # (n,) in {1, 2, 3}
    size: np.ndarray        # (n,) metres
    cos_a: np.ndarray       # (n,)
    sin_a: np.ndarray       # (n,)


_NDIMS = (1, 2, 0, 0, 2, 1, 1, 1, 1)
"""Unbatched ``ndim`` of each :class:`HostScene` field."""


def host_function(sim: SceneSimulator) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The numpy function that ``black_box`` wraps for ``sim.backend``.

    It takes the fields of :class:`HostScene` with common leading batch axes
    (``vmap_method="broadcast_all"``) and returns ``(colour (..., H, W, 3) float32
    in [0, 1], labels (..., H, W) int32)``. A batch renders one scene after another
    on the GL thread, or in parallel on the Blender pool.
    """
    render_all = {"gl": _render_gl_all, "blender": _render_blender_all}[sim.backend]

    def render(*args):
        batch = np.shape(args[0])[:np.ndim(args[0]) - _NDIMS[0]]
        count = math.prod(batch)
        flat = [np.reshape(a, (count,) + np.shape(a)[len(batch):]) for a in args]
        colour, labels = render_all(sim, [HostScene(*(f[i] for f in flat)) for i in range(count)])
        h, w = sim.resolution
        return colour.reshape(batch + (h, w, 3)), labels.reshape(batch + (h, w))

    render.__qualname__ = f"SceneSimulator(backend={sim.backend!r}).decode"
    return render


# --------------------------------------------------------------------------------------
# Geometry shared by both renderers.

@functools.cache
def unit_mesh(class_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (V, 3), faces (F, 3) and unit vertex normals (V, 3) of a size-1 object.

    In the object's frame, standing on ``y = 0``. The cube and the cylinder have a
    vertex per face corner, so edges stay sharp (Blender's smooth shading of them is
    flat per face); the cylinder's side corners carry radial normals for pyrender.
    """
    import trimesh

    from simopt_jax.scenes import _CUBE, _CYLINDER

    if class_id == 1:
        mesh = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
        verts = np.asarray(mesh.vertices)
        return verts + [0.0, 1.0, 0.0], np.asarray(mesh.faces), verts / np.linalg.norm(
            verts, axis=-1, keepdims=True)
    if class_id == 2:
        mesh = trimesh.creation.box(extents=(2 * _CUBE,) * 3)
        lift = _CUBE
    elif class_id == 3:
        mesh = trimesh.creation.cylinder(radius=_CYLINDER, height=2 * _CYLINDER, sections=64)
        # trimesh's axis is z: turn it to y by a rotation about x (y <- z, z <- -y).
        mesh.apply_transform([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
        lift = _CYLINDER
    else:
        raise ValueError(f"class_id={class_id} must be 1, 2 or 3")
    faces = np.asarray(mesh.faces)
    verts = np.asarray(mesh.vertices)[faces].reshape(-1, 3)
    normals = np.repeat(np.asarray(mesh.face_normals), 3, axis=0)
    if class_id == 3:
        side = np.abs(normals[:, 1]) < 0.5
        radial = verts * [1.0, 0.0, 1.0]
        normals[side] = radial[side] / np.linalg.norm(radial[side], axis=-1, keepdims=True)
    return verts + [0.0, lift, 0.0], np.arange(len(verts)).reshape(-1, 3), normals


def _rotation(cos_a: float, sin_a: float) -> np.ndarray:
    """Object frame to world: the inverse of the tracer's world-to-object turn."""
    return np.array([[cos_a, 0.0, sin_a], [0.0, 1.0, 0.0], [-sin_a, 0.0, cos_a]])


def _objects(scene: HostScene):
    """World vertices, faces and normals of every object, in order."""
    for k, class_id in enumerate(np.asarray(scene.classes, int)):
        verts, faces, normals = unit_mesh(int(class_id))
        rot = _rotation(float(scene.cos_a[k]), float(scene.sin_a[k]))
        x, z = (float(v) for v in scene.xz[k])
        yield verts * float(scene.size[k]) @ rot.T + [x, 0.0, z], faces, normals @ rot.T


def _eye(sim: SceneSimulator, elevation: float) -> np.ndarray:
    return sim.camera_distance * np.array([0.0, math.sin(elevation), math.cos(elevation)])


def _labels(instance: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class labels (H, W) int32 from instance ids (0 sky, 1 ground, 2 + k object k)."""
    table = np.concatenate([[0, 0], np.asarray(classes, np.int32)])
    return table[np.clip(instance, 0, len(table) - 1)].astype(np.int32)


# --------------------------------------------------------------------------------------
# gl: pyrender over EGL.

def _render_gl_all(sim: SceneSimulator, scenes: list[HostScene]):
    from render import gl_renderer

    # An EGL context is current in one thread only: every render runs on the
    # process's one GL thread, with its one reused renderer.
    out = gl_renderer.gl_thread().submit(lambda: [_render_gl(sim, s) for s in scenes]).result()
    return np.stack([c for c, _ in out]), np.stack([l for _, l in out])


def _camera_pose(eye: np.ndarray) -> np.ndarray:
    """4x4 camera-to-world pose looking from ``eye`` (on the y-z plane) at the origin.

    Columns right ``+x``, up, backwards, as the tracer's ``camera_rays``: a proper
    rotation, so no image flip (unlike :mod:`render.spec`'s mirrored frame).
    """
    back = eye / np.linalg.norm(eye)
    pose = np.eye(4)
    pose[:3, 0] = (1.0, 0.0, 0.0)
    pose[:3, 1] = np.cross(back, pose[:3, 0])
    pose[:3, 2] = back
    pose[:3, 3] = eye
    return pose


def _ground_disc(sim: SceneSimulator, eye: np.ndarray):
    """Vertices, faces (up-facing) and normals of the ground within ``far`` of ``eye``."""
    radius = math.sqrt(max(sim.far ** 2 - eye[1] ** 2, 0.0))
    angle = 2 * np.pi * np.arange(_GROUND_SIDES) / _GROUND_SIDES
    rim = np.stack([radius * np.cos(angle), np.zeros_like(angle), eye[2] + radius * np.sin(angle)], -1)
    verts = np.concatenate([[[0.0, 0.0, eye[2]]], rim])
    k = np.arange(1, _GROUND_SIDES + 1)
    faces = np.stack([np.zeros_like(k), k % _GROUND_SIDES + 1, k], -1)
    return verts, faces, np.tile([0.0, 1.0, 0.0], (len(verts), 1))


def _render_gl(sim: SceneSimulator, scene: HostScene):
    from render import gl_renderer

    pyrender = gl_renderer.pyrender_module()
    h, w = sim.resolution
    ambient, key_light = (float(v) for v in scene.light)
    gl_scene = gl_renderer.shadow_scene_class(pyrender)(
        bg_color=np.zeros(4), ambient_light=np.full(3, ambient))
    # Pyrender's diffuse term is 0.96 albedo / pi times the intensity (F0 = 0.04).
    sun = gl_renderer.sun_class(pyrender)(color=np.ones(3), intensity=key_light * math.pi / 0.96)
    gl_scene.add(sun, pose=gl_renderer.light_pose(sim.light_azimuth, sim.light_elevation))
    eye = _eye(sim, float(scene.elevation))
    camera = pyrender.PerspectiveCamera(yfov=sim.fov, aspectRatio=w / h, znear=0.01,
                                        zfar=2 * sim.far)
    gl_scene.add(camera, pose=_camera_pose(eye))

    def mesh(verts, faces, normals, rgb):
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=np.append(np.clip(rgb, 0, 1), 1.0), metallicFactor=0.0,
            roughnessFactor=1.0)
        return pyrender.Mesh([pyrender.Primitive(positions=verts, normals=normals, indices=faces,
                                                 material=material)])

    nodes = {gl_scene.add(mesh(*_ground_disc(sim, eye), np.asarray(sim.ground_rgb))): GROUND}
    points = []
    for k, parts in enumerate(_objects(scene)):
        nodes[gl_scene.add(mesh(*parts, scene.rgb[k]))] = FIRST_OBJECT + k
        points.append(parts[0])
    points = np.concatenate(points)
    gl_scene.shadow_bounds = np.stack([points.min(0), points.max(0)]) + [[-0.2], [0.2]]

    renderer = gl_renderer.shared_renderer((h, w))
    flags = (pyrender.RenderFlags.SHADOWS_DIRECTIONAL if bool(scene.high)
             else pyrender.RenderFlags.NONE)
    colour, _ = renderer.render(gl_scene, flags=flags)
    seg_map = {node: np.array([i, 0, 0], np.uint8) for node, i in nodes.items()}
    seg, _ = renderer.render(gl_scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
    instance = seg[..., 0].astype(np.int32)
    rgb = (colour[..., :3].astype(np.float64) / 255) ** _GAMMA
    rgb = np.where((instance == 0)[..., None], np.asarray(sim.sky_rgb), rgb)
    return rgb.astype(np.float32), _labels(instance, scene.classes)


# --------------------------------------------------------------------------------------
# blender: Cycles in render.blender's worker pool.

def _blender_request(sim: SceneSimulator, scene: HostScene, config, name: str, workers: int):
    """The worker request of one scene, in the frame of :mod:`render.spec`.

    That frame's camera stands at ``(0, height, 0)`` looking along ``+z`` with ``+x``
    to the right of the image; ours stands at ``eye`` looking along ``-z`` with ``+x``
    to the right. The reflection ``(x, y, z) -> (x, y, eye_z - z)`` maps one onto the
    other. Our meshes are symmetric under ``z -> -z``, so a reflected object is the
    same mesh turned by ``-azimuth``; the light's azimuth becomes ``pi - azimuth``.
    """
    from render import blender

    elevation = float(scene.elevation)
    eye = _eye(sim, elevation)
    classes = [int(c) for c in scene.classes]
    keys = [f"simopt-scenes-{('sphere', 'cube', 'cylinder')[c - 1]}" for c in classes]
    meshes = {key: unit_mesh(c)[:2] for key, c in zip(keys, classes)}
    azimuth = np.arctan2(np.asarray(scene.sin_a, np.float64), np.asarray(scene.cos_a, np.float64))
    xz = np.asarray(scene.xz, np.float64)
    header = blender.render_header(config, sim.resolution, keys, workers=workers,
                                   vertical_fov=sim.fov)
    arrays = {
        "camera": np.array([eye[1], elevation]),
        "light": np.array([float(scene.light[0]), float(scene.light[1]),
                           math.pi - sim.light_azimuth, sim.light_elevation]),
        "ground_rgb": np.asarray(sim.ground_rgb, np.float64),
        "pose": np.stack([xz[:, 0], eye[2] - xz[:, 1], -azimuth,
                          np.asarray(scene.size, np.float64)], -1),
        "rgb": np.asarray(scene.rgb, np.float64),
        "seed": np.zeros(len(classes)),
    }
    return blender.Request(name=name, header=header, arrays=arrays, meshes=meshes)


def _render_blender_all(sim: SceneSimulator, scenes: list[HostScene]):
    from render import blender

    pool = blender.shared_pool()
    configs = [blender.BlenderRenderConfig(shadows=bool(s.high), background_rgb=sim.sky_rgb)
               for s in scenes]
    requests = [_blender_request(sim, s, c, f"scene {i}", pool.size)
                for i, (s, c) in enumerate(zip(scenes, configs))]
    replies = pool.map(requests)
    errors = [r for r in replies if isinstance(r, blender.BlenderError)]
    if errors:
        raise blender.BlenderError(f"{len(errors)} of {len(scenes)} scenes failed:\n"
                                   + "\n".join(str(e) for e in errors))
    images = [blender.image_from_reply(arrays, c) for (_, arrays), c in zip(replies, configs)]
    return (np.stack([im.rgb for im in images]),
            np.stack([_labels(im.instance, s.classes) for im, s in zip(images, scenes)]))
