"""Where a world point lands in the image, by each renderer's own camera model."""

import math

import numpy as np

from render import gl_renderer, spec


def jax_pixel(point, height, elevation, resolution):
    """(row, col) of a world point under render.spec's camera (as jax_renderer traces)."""
    h, w = resolution
    se, ce = math.sin(elevation), math.cos(elevation)
    rel = np.asarray(point) - [0.0, height, 0.0]
    x_c, y_c, z_c = rel[0], rel @ [0.0, ce, se], rel @ [0.0, -se, ce]
    tan_half = math.tan(spec.VERTICAL_FOV / 2)
    row = (-(y_c / z_c) / tan_half + 1) * h / 2 - 0.5
    col = ((x_c / z_c) / tan_half * h / w + 1) * w / 2 - 0.5
    return row, col


def gl_pixel(point, height, elevation, resolution):
    """(row, col) of a world point through pyrender's own camera matrices."""
    pyrender = gl_renderer.pyrender_module()
    h, w = resolution
    camera = pyrender.PerspectiveCamera(yfov=spec.VERTICAL_FOV, aspectRatio=w / h)
    view = np.linalg.inv(gl_renderer.camera_pose(height, elevation))
    clip = camera.get_projection_matrix(w, h) @ view @ np.append(point, 1.0)
    ndc = clip[:3] / clip[3]
    col_gl = (ndc[0] + 1) * w / 2 - 0.5
    return (1 - ndc[1]) * h / 2 - 0.5, (w - 1) - col_gl   # the image is flipped left-right
