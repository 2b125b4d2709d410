"""OpenGL backend: pyrender over EGL (Mesa in software on machines without a GPU).

Draws the marching-cubes meshes of :mod:`render.shapes` (the same geometry as the
JAX renderer's SDFs) with the conventions of :mod:`render.spec`. One offscreen
renderer per process is created on first use and reused (a GL context per image
is far too slow); it is resized when the resolution changes.

Not differentiable and not traceable: call it on concrete scenes, or through
``render.black_box`` for finite-difference derivatives inside jitted code.

The world of :mod:`render.spec` has ``+x`` to the right of the image while the
camera looks along ``+z`` with ``y`` up, a mirror image of OpenGL's right-handed
camera frame; we render with the camera's right axis along ``-x`` (a proper
rotation) and flip the image left-right.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os

import numpy as np

from render import shapes, spec
from render.jax_renderer import BACKGROUND, FIRST_OBJECT, GROUND, Image

_GROUND_EXTENT = 60.0
"""Half-size in metres of the ground quad (the JAX renderer's ground is infinite)."""

_GAMMA = 2.2
"""Pyrender's shader writes ``linear ** (1 / 2.2)``; we return linear colour like ``jax``."""

_RENDERER = None
"""The process's one ``pyrender.OffscreenRenderer``, used on ``_GL_THREAD`` only."""

_GL_THREAD = None
"""The one thread that owns the EGL context."""


@dataclasses.dataclass(frozen=True)
class GlRenderConfig:
    """Options of the OpenGL backend.

    Attributes:
      shadows: shadow map of the directional light.
      background_rgb: colour above the horizon when no background image is given.
      mesh_resolution: marching-cubes grid of the object meshes.
    """

    shadows: bool = True
    background_rgb: tuple[float, float, float] = (0.55, 0.6, 0.7)
    mesh_resolution: int = shapes.DEFAULT_MESH_RESOLUTION


def pyrender_module():
    """Imports pyrender for EGL, or says what to install."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if not hasattr(np, "infty"):
        np.infty = np.inf   # pyrender 0.1.45 still uses np.infty, removed in numpy 2
    try:
        import pyrender
    except ImportError as err:
        raise ImportError(
            "backend='gl' needs pyrender: pip install -e '.[gl]' (and, on Debian, "
            "apt-get install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri)"
        ) from err
    return pyrender


def shared_renderer(resolution):
    """The process's one ``pyrender.OffscreenRenderer``, resized to ``(H, W)``.

    Creating a renderer per image is far slower than reusing one; call it only on
    :func:`gl_thread`, which owns the EGL context.
    """
    global _RENDERER
    pyrender = pyrender_module()
    h, w = resolution
    if _RENDERER is None:
        try:
            _RENDERER = pyrender.OffscreenRenderer(w, h)
        except Exception as err:   # EGL/Mesa missing or broken
            raise RuntimeError(
                f"backend='gl' could not create an EGL context ({type(err).__name__}: {err}); "
                "install Debian's libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri"
            ) from err
    _RENDERER.viewport_width, _RENDERER.viewport_height = w, h
    return _RENDERER


@functools.cache
def shadow_scene_class(pyrender):
    """A ``pyrender.Scene`` whose shadow map frames the objects, not the whole ground.

    Pyrender fits a directional light's shadow map to ``scene.centroid`` and
    ``scene.scale``; with a ground quad reaching the horizon that is ~170 m, and
    10 cm objects fall inside one texel. Here both come from the objects' meshes
    (``shadow_bounds``, set before rendering).
    """
    class ShadowScene(pyrender.Scene):
        shadow_bounds = None

        @property
        def centroid(self):
            if self.shadow_bounds is None:
                return super().centroid
            return self.shadow_bounds.mean(axis=0)

        @property
        def scale(self):
            if self.shadow_bounds is None:
                return super().scale
            return float(np.linalg.norm(self.shadow_bounds[1] - self.shadow_bounds[0]))

    return ShadowScene


@functools.cache
def sun_class(pyrender):
    """A ``pyrender.DirectionalLight`` that lights what lies outside its shadow map.

    Pyrender samples shadow maps with ``GL_REPEAT``, so ground outside the map's
    square (fitted to the objects by ``shadow_bounds``) gets far-away copies of their
    shadows. Clamping to the border (depth 1, pyrender's border colour) lights it.
    """
    from OpenGL.GL import GL_CLAMP_TO_BORDER

    class Sun(pyrender.DirectionalLight):
        def _generate_shadow_texture(self, size=None):
            super()._generate_shadow_texture(size)
            self.shadow_texture.sampler = pyrender.Sampler(
                wrapS=GL_CLAMP_TO_BORDER, wrapT=GL_CLAMP_TO_BORDER)

    return Sun


def camera_pose(height: float, elevation: float) -> np.ndarray:
    """4x4 camera-to-world pose in OpenGL's convention (looks along its -z)."""
    se, ce = math.sin(elevation), math.cos(elevation)
    pose = np.eye(4)
    pose[:3, 0] = (-1.0, 0.0, 0.0)          # right, mirrored (see module docstring)
    pose[:3, 1] = (0.0, ce, se)             # up
    pose[:3, 2] = (0.0, se, -ce)            # backwards: -forward
    pose[:3, 3] = (0.0, height, 0.0)
    return pose


def light_pose(azimuth: float, elevation: float) -> np.ndarray:
    """Pose whose -z axis points from the light into the scene."""
    towards = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                        math.cos(elevation) * math.cos(azimuth)])
    z = towards
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[1]) > 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = x, np.cross(z, x), z
    return pose


@functools.lru_cache(maxsize=None)
def _canonical_normals(class_id: int, shape_id: int, resolution: int) -> np.ndarray:
    """Unit vertex normals (V, 3) of a variant's canonical mesh, computed once."""
    import trimesh
    verts, faces = shapes.object_mesh(class_id, shape_id, resolution)
    return np.asarray(trimesh.Trimesh(verts, faces, process=False).vertex_normals)


def object_vertices(class_id, shape_id, position, scale, azimuth, resolution):
    """World vertices (V, 3), faces (F, 3) and unit vertex normals (V, 3) of one object."""
    class_id, shape_id, resolution = int(class_id), int(shape_id), int(resolution)
    verts, faces = shapes.object_mesh(class_id, shape_id, resolution)
    c, s = math.cos(azimuth), math.sin(azimuth)
    # R_y(azimuth): local +x turns towards world -z, as in the JAX renderer.
    rot = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    world = (np.asarray(verts, np.float64) * scale) @ rot.T + [position[0], 0.0, position[1]]
    # A uniform scale and a rotation leave unit normals unit: rotate them only.
    return world, np.asarray(faces), _canonical_normals(class_id, shape_id, resolution) @ rot.T


def normals_pass(renderer, camera, pose: np.ndarray, meshes) -> np.ndarray:
    """World-frame unit normals (H, W, 3) seen by ``camera`` at ``pose``.

    An unlit pass whose vertex colours encode the normals (8 bits per channel, so
    about 0.5 degrees of quantisation). ``meshes`` are ``(vertices, faces,
    unit vertex normals)`` in the world frame; call on the GL thread. Pixels that
    show nothing hold an arbitrary unit vector: mask them with the instance pass.
    """
    pyrender = pyrender_module()
    # Background grey encodes the zero vector: where multisampling blends a silhouette
    # with it the normal only shortens (renormalised below) instead of turning.
    flat = pyrender.Scene(bg_color=np.array([0.5, 0.5, 0.5, 1.0]), ambient_light=np.ones(3))
    flat.add(camera, pose=pose)
    for verts, faces, normals in meshes:
        colours = np.c_[(normals + 1) / 2, np.ones(len(normals))]
        flat.add(pyrender.Mesh([pyrender.Primitive(positions=verts, normals=normals,
                                                   indices=faces, color_0=colours)]))
    encoded, _ = renderer.render(flat, flags=pyrender.RenderFlags.FLAT)
    normals = encoded[..., :3].astype(np.float64) / 255 * 2 - 1
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return np.where(norm > 0, normals / np.maximum(norm, 1e-9), 0.0)


def render(scene, resolution=(64, 64), config: GlRenderConfig = GlRenderConfig(),
           background=None) -> Image:
    """Renders one concrete scene with pyrender (numpy in, ``Image`` of numpy out).

    An EGL context is current in one thread only, and JAX runs callbacks (e.g.
    ``render.host_render`` under ``jit``) on threads of its own, so every render
    runs on the process's one GL thread.
    """
    return gl_thread().submit(_render, scene, resolution, config, background).result()


def gl_thread() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that makes every OpenGL call of this process (EGL contexts are
    per thread); submit whole renders to it."""
    global _GL_THREAD
    if _GL_THREAD is None:
        _GL_THREAD = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="render-gl")
    return _GL_THREAD


def _render(scene, resolution, config, background) -> Image:
    pyrender = pyrender_module()
    h, w = resolution
    cam, light, obj = scene.camera, scene.light, scene.objects
    g = lambda x: np.asarray(x, np.float64)   # noqa: E731
    ambient = float(g(light.ambient))
    gl_scene = shadow_scene_class(pyrender)(bg_color=np.zeros(4), ambient_light=np.full(3, ambient))
    # Pyrender's diffuse term is 0.96 albedo / pi times the intensity (F0 = 0.04).
    sun = sun_class(pyrender)(color=np.ones(3),
                                    intensity=float(g(light.strength)) * math.pi / 0.96)
    gl_scene.add(sun, pose=light_pose(float(g(light.azimuth)), float(g(light.elevation))))
    camera = pyrender.PerspectiveCamera(yfov=spec.VERTICAL_FOV, aspectRatio=w / h,
                                        znear=0.005, zfar=2 * _GROUND_EXTENT)
    gl_scene.add(camera, pose=camera_pose(float(g(cam.height)), float(g(cam.elevation))))

    def material(rgb):
        return pyrender.MetallicRoughnessMaterial(
            baseColorFactor=np.append(np.clip(rgb, 0, 1), 1.0), metallicFactor=0.0,
            roughnessFactor=1.0)

    def mesh(verts, faces, normals, **kwargs):
        return pyrender.Mesh([pyrender.Primitive(positions=verts, normals=normals,
                                                 indices=faces, **kwargs)])

    e = _GROUND_EXTENT
    ground = (np.array([[-e, 0, -e], [e, 0, -e], [e, 0, e], [-e, 0, e]], np.float64),
              np.array([[0, 2, 1], [0, 3, 2]]), np.tile([0.0, 1.0, 0.0], (4, 1)))
    nodes = {gl_scene.add(mesh(*ground, material=material(g(scene.ground_rgb)))): GROUND}
    normal_meshes = [ground]
    for k in np.flatnonzero(np.asarray(obj.valid)):
        parts = object_vertices(
            obj.class_id[k], obj.shape_id[k], g(obj.position[k]), float(g(obj.scale[k])),
            float(g(obj.azimuth[k])), config.mesh_resolution)
        nodes[gl_scene.add(mesh(*parts, material=material(g(obj.rgb[k]))))] = FIRST_OBJECT + int(k)
        normal_meshes.append(parts)

    if len(normal_meshes) > 1:
        points = np.concatenate([v for v, _, _ in normal_meshes[1:]])
        gl_scene.shadow_bounds = np.stack([points.min(0), points.max(0)]) + [[-0.2], [0.2]]
    r = shared_renderer(resolution)
    flags = pyrender.RenderFlags.SHADOWS_DIRECTIONAL if config.shadows else pyrender.RenderFlags.NONE
    color, _ = r.render(gl_scene, flags=flags)
    seg_map = {node: np.array([i, 0, 0], np.uint8) for node, i in nodes.items()}
    # Depth from the segmentation pass: pyrender draws it without multisampling, so
    # it is the depth at the pixel centre. The colour pass's depth comes from one
    # sample of 4x MSAA, ~0.4 px off centre (1-3% too near on a receding ground).
    seg, depth = r.render(gl_scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
    instance = seg[..., 0].astype(np.int32)

    normals = normals_pass(r, camera, camera_pose(float(g(cam.height)), float(g(cam.elevation))),
                           normal_meshes)

    rgb = (color[..., :3].astype(np.float64) / 255) ** _GAMMA   # pyrender writes x^(1/2.2)
    if background is None:
        bg = np.broadcast_to(np.asarray(config.background_rgb, np.float64), (h, w, 3))
    else:
        from PIL import Image as PILImage
        bg_u8 = (np.clip(np.asarray(background, np.float64), 0, 1) * 255).astype(np.uint8)
        bg = np.asarray(PILImage.fromarray(bg_u8).resize((w, h), PILImage.BILINEAR)) / 255
        bg = bg[:, ::-1]    # undone by the flip below, so the image is not mirrored
    rgb = np.where((instance == BACKGROUND)[..., None], bg, rgb)
    normals = np.where((instance == BACKGROUND)[..., None], 0.0, normals)
    flip = lambda a: np.ascontiguousarray(a[:, ::-1])   # noqa: E731
    return Image(rgb=flip(rgb).astype(np.float32), depth=flip(depth).astype(np.float32),
                 normals=flip(normals).astype(np.float32), instance=flip(instance))
