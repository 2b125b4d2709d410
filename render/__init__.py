"""Scenes and renderers: the part every experiment calls.

Public names are listed here; see ``render.spec`` for every range and unit.
"""

from render import camera, finite_diff, shapes, spec
from render.api import BACKENDS, CONFIGS, EXECUTORS, HOST_BACKENDS, host_render, render, render_many
from render.black_box import BlackBoxError, black_box
from render.finite_diff import FD
from render.jax_renderer import Image, JaxRenderConfig
from render.scene import Camera, Light, Objects, Scene, random_scene, validate
from render.sdf_render import SdfRenderConfig, render_sdf

__all__ = [
    "BACKENDS", "CONFIGS", "EXECUTORS", "FD", "HOST_BACKENDS", "BlackBoxError", "Camera", "Image",
    "camera",
    "JaxRenderConfig", "Light", "Objects", "Scene", "black_box", "finite_diff", "host_render",
    "SdfRenderConfig", "random_scene", "render", "render_many", "render_sdf", "shapes", "spec",
    "validate",
]
