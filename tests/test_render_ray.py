"""render.render_many(..., executor="ray") on a local Ray started by the test."""

import os
import shutil
import tempfile

import jax
import numpy as np
import pytest

import render

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A two-CPU Ray on this machine, without the dashboard or token auth, in a temp dir."""
    os.environ["RAY_AUTH_MODE"] = "disabled"   # Ray 2.60 would write ~/.ray/auth_token
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's sockets live here
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_blender_and_gl_on_ray_match_local_rendering(local_ray):
    scenes = [render.random_scene(jax.random.key(i), num_objects=4) for i in range(4)]
    kw = dict(resolution=(32, 40), samples=8, threads=2)
    on_ray = render.render_many(scenes, backend="blender", executor="ray", **kw)
    local = render.render_many(scenes, backend="blender", **kw)
    assert on_ray.rgb.shape == (4, 32, 40, 3)
    np.testing.assert_array_equal(on_ray.instance, local.instance)
    np.testing.assert_allclose(on_ray.rgb, local.rgb, atol=1e-6)

    gl_ray = render.render_many(scenes, backend="gl", executor="ray", resolution=(32, 40))
    gl_local = render.render_many(scenes, backend="gl", resolution=(32, 40))
    np.testing.assert_array_equal(gl_ray.rgb, gl_local.rgb)
    np.testing.assert_array_equal(gl_ray.instance, gl_local.instance)
