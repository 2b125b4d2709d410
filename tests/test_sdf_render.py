"""render.render_sdf: a look-at sphere tracer for any SDF, against ray-sphere algebra."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import render
from render import sdf_render
from render.jax_renderer import BACKGROUND, FIRST_OBJECT

RES = (33, 33)
R, EYE = 0.3, np.array([0.2, 0.5, 1.6], np.float32)


def _sphere(p, centre=(0.0, 0.0, 0.0)):
    return jnp.linalg.norm(p - jnp.asarray(centre), axis=-1) - R


@pytest.fixture(scope="module")
def image():
    return jax.jit(lambda e: render.render_sdf(_sphere, e, resolution=RES))(jnp.asarray(EYE))


def _analytic(resolution=RES, config=sdf_render.SdfRenderConfig()):
    """Per-pixel ray-sphere intersection distance (inf for a miss)."""
    dirs, forward = sdf_render.camera_rays(EYE, (0, 0, 0), resolution, config.fov)
    d = np.asarray(dirs, np.float64)
    b = d @ EYE
    disc = b ** 2 - (EYE @ EYE - R ** 2)
    t = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    return t, d, np.asarray(forward, np.float64)


def test_depth_mask_and_normals_match_ray_sphere_intersection(image):
    t, d, forward = _analytic()
    # Pixels whose ray clears the rim by more than a hair hit in both, others miss in both.
    hit = np.asarray(image.instance) == FIRST_OBJECT
    inside = np.isfinite(t)
    b = d @ EYE
    miss_distance = np.sqrt(np.maximum(EYE @ EYE - b ** 2, 0)) - R   # closest approach - R
    clear = np.abs(miss_distance) > 2e-3
    np.testing.assert_array_equal(hit[clear], inside[clear])
    assert hit.sum() > 100
    depth = np.asarray(image.depth)
    np.testing.assert_allclose(depth[hit & clear], (t * (d @ forward))[hit & clear], atol=2e-3)
    points = EYE + t[..., None] * d
    np.testing.assert_allclose(np.asarray(image.normals)[hit & clear],
                               (points / R)[hit & clear], atol=5e-3)
    assert np.all(depth[~hit] == 0) and np.all(np.asarray(image.normals)[~hit] == 0)
    assert np.all(np.asarray(image.instance)[~hit] == BACKGROUND)


def test_lambert_shading_and_background(image):
    config = sdf_render.SdfRenderConfig()
    light = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])
    hit = np.asarray(image.instance) == FIRST_OBJECT
    n = np.asarray(image.normals)[hit]
    expected = np.clip(np.asarray(config.albedo) * (config.ambient + config.strength
                                                    * np.maximum(n @ light, 0))[:, None], 0, 1)
    np.testing.assert_allclose(np.asarray(image.rgb)[hit], expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(image.rgb)[~hit], 0.0)


def test_silhouette_area_is_the_projected_disc():
    """Centred sphere, eye on the z axis: the silhouette is a disc of angular radius
    asin(R / D), i.e. tan(asin(R/D)) / tan(fov/2) of the half-height, in pixels."""
    res, eye = (64, 64), jnp.array([0.0, 0.0, 1.5])
    image = render.render_sdf(_sphere, eye, resolution=res, config=sdf_render.SdfRenderConfig())
    fov = sdf_render.SdfRenderConfig().fov
    radius_px = math.tan(math.asin(R / 1.5)) / math.tan(fov / 2) * res[0] / 2
    area = float(np.sum(np.asarray(image.instance) == FIRST_OBJECT))
    assert abs(area / (math.pi * radius_px ** 2) - 1) < 0.04, (area, math.pi * radius_px ** 2)


def test_vmap_over_shapes_and_a_moved_shape_moves_its_depth():
    centres = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.2]])
    batch = jax.jit(jax.vmap(lambda c: render.render_sdf(lambda p: _sphere(p, c), jnp.asarray(EYE),
                                                         resolution=(16, 16))))(centres)
    assert batch.rgb.shape == (2, 16, 16, 3) and batch.instance.shape == (2, 16, 16)
    both = (np.asarray(batch.instance) == FIRST_OBJECT).all(0)
    # Moving the sphere towards the eye brings every commonly hit surface point nearer.
    assert both.sum() > 20
    assert np.all(np.asarray(batch.depth)[1][both] < np.asarray(batch.depth)[0][both])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="resolution"):
        render.render_sdf(_sphere, EYE, resolution=(0, 8))
    with pytest.raises(ValueError, match="eye"):
        render.render_sdf(_sphere, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="fov"):
        sdf_render.SdfRenderConfig(fov=4.0)
    with pytest.raises(ValueError, match="steps"):
        sdf_render.SdfRenderConfig(steps=0)


def _wavy(p):
    """A smooth solid texture (N, 3) -> (N, 3) in [0.2, 1]."""
    return 0.6 + 0.4 * jnp.sin(jnp.stack([9.0 * p[..., 0], 7.0 * p[..., 1] + 1.0,
                                          5.0 * (p[..., 0] + p[..., 2])], -1))


def test_albedo_none_and_a_constant_albedo_give_the_default_image_bit_for_bit(image):
    config = sdf_render.SdfRenderConfig()

    def constant(p):
        return jnp.broadcast_to(jnp.asarray(config.albedo), p.shape)

    for albedo in (None, constant):
        other = jax.jit(lambda e, albedo=albedo: render.render_sdf(
            _sphere, e, resolution=RES, albedo=albedo))(jnp.asarray(EYE))
        for field in ("rgb", "normals", "depth", "instance"):
            np.testing.assert_array_equal(getattr(other, field), getattr(image, field))


def test_a_texture_changes_rgb_only_and_is_evaluated_at_the_surface_point(image):
    textured = jax.jit(lambda e: render.render_sdf(_sphere, e, resolution=RES,
                                                   albedo=_wavy))(jnp.asarray(EYE))
    for field in ("normals", "depth", "instance"):
        np.testing.assert_array_equal(getattr(textured, field), getattr(image, field))
    hit = np.asarray(image.instance) == FIRST_OBJECT
    rgb, plain = np.asarray(textured.rgb), np.asarray(image.rgb)
    assert np.abs(rgb[hit] - plain[hit]).max() > 0.1
    np.testing.assert_array_equal(rgb[~hit], plain[~hit])
    # On a sphere at the origin the surface point is R * normal.
    config = sdf_render.SdfRenderConfig()
    light = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])
    n = np.asarray(image.normals)[hit]
    shade = config.ambient + config.strength * np.maximum(n @ light, 0)
    expected = np.clip(np.asarray(_wavy(jnp.asarray(R * n))) * shade[:, None], 0, 1)
    np.testing.assert_allclose(rgb[hit], expected, atol=5e-3)
