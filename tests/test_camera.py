"""render.camera: projection, back-projection and horizon agree with the renderers."""

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import render
from render import camera
from render.jax_renderer import BACKGROUND
from tests.cameras import gl_pixel, jax_pixel

RESOLUTION = (48, 64)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.floats(0.05, 0.75), elevation=st.floats(0.0, 1.3),
       x=st.floats(-1.0, 1.0), z=st.floats(0.3, 3.0), y=st.floats(0.0, 0.2))
def test_project_matches_both_renderer_cameras(x64, height, elevation, x, z, y):
    cam = render.Camera(height=np.float64(height), elevation=np.float64(elevation))
    depth = camera.to_camera(cam, np.array([x, y, z]))[2]
    if depth < 0.05:
        return
    row, col = np.asarray(camera.project(cam, np.array([x, y, z]), RESOLUTION))
    for other in (jax_pixel, gl_pixel):
        np.testing.assert_allclose((row, col), other([x, y, z], height, elevation, RESOLUTION),
                                   atol=1e-9 * (1 + abs(row) + abs(col)))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.floats(0.05, 0.75), elevation=st.floats(0.1, 1.3),
       row=st.floats(0.0, 47.0), col=st.floats(0.0, 63.0))
def test_ground_point_inverts_project(x64, height, elevation, row, col):
    cam = render.Camera(height=np.float64(height), elevation=np.float64(elevation))
    if row <= float(camera.horizon_row(cam, RESOLUTION)) + 0.5:
        assert np.all(np.isnan(np.asarray(camera.ground_point(cam, np.array([row, col]), RESOLUTION))))
        return
    x, z = np.asarray(camera.ground_point(cam, np.array([row, col]), RESOLUTION))
    back = np.asarray(camera.project(cam, np.array([x, 0.0, z]), RESOLUTION))
    np.testing.assert_allclose(back, (row, col), atol=1e-8)


def test_horizon_row_is_where_the_jax_renderer_draws_it():
    for seed in range(3):
        scene = render.random_scene(jax.random.key(seed), num_objects=0)
        image = render.render(scene, resolution=RESOLUTION, shadows=False)
        sky_rows = np.flatnonzero(np.all(np.asarray(image.instance) == BACKGROUND, axis=1))
        horizon = float(camera.horizon_row(scene.camera, RESOLUTION))
        # Rows whose centre lies above the horizon are sky, those below are ground.
        expected = np.arange(RESOLUTION[0])[np.arange(RESOLUTION[0]) < horizon]
        np.testing.assert_array_equal(sky_rows, expected)
