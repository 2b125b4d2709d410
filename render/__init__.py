"""Scenes and renderers: the part every experiment calls.

Public names are listed here; see ``render.spec`` for every range and unit.
"""

from render import spec
from render.api import BACKENDS, CONFIGS, render
from render.jax_renderer import Image, JaxRenderConfig
from render.scene import Camera, Light, Objects, Scene, random_scene, validate

__all__ = [
    "BACKENDS", "CONFIGS", "Camera", "Image", "JaxRenderConfig", "Light", "Objects", "Scene",
    "random_scene", "render", "spec", "validate",
]
