"""lido_jax.latents and lido_jax.likelihood: LV sets, vectors, encodings, the robust likelihood."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import render
from lido_jax import latents
from lido_jax.likelihood import negative_log_likelihood, pixel_log_likelihood


@pytest.fixture(scope="module")
def scene():
    return render.random_scene(jax.random.key(4), num_objects=3, max_objects=5)


def test_lv_sets_follow_the_papers_order(scene):
    names = [name for name, _ in latents.lv_sets(scene)]
    assert names == ["ground colour", "object colour 0", "object colour 1", "object colour 2",
                     "object pose 0", "object pose 1", "object pose 2", "illumination", "camera"]
    sizes = {name: len(slots) for name, slots in latents.lv_sets(scene)}
    assert sizes["ground colour"] == 3 and sizes["illumination"] == 4 and sizes["camera"] == 2
    assert sizes["object pose 0"] == 4   # x, z, scale, azimuth
    pose = dict(latents.lv_sets(scene))["object pose 1"]
    class_id = int(scene.objects.class_id[1])
    assert (pose[2].low, pose[2].high) == render.spec.SCALE_RANGE[class_id]
    assert [s.periodic for s in pose] == [False, False, False, True]


def test_get_put_round_trip_and_bounds(scene):
    slots = latents.all_slots(scene)
    x = latents.get(scene, slots)
    assert x.shape == (3 + 4 + 2 + 3 * 7,)
    y = x + 0.01
    np.testing.assert_allclose(latents.get(latents.put(scene, slots, y), slots), y, rtol=1e-6)
    lo, hi = latents.bounds(slots)
    assert np.all(lo <= np.asarray(x) + 1e-6) and np.all(np.asarray(x) <= hi + 1e-6)
    padded = latents.padded_slots(scene)
    assert len(padded) == 9 + 5 * 7 and {s.name for s in slots} <= {s.name for s in padded}


def test_put_is_differentiable_through_the_renderer(scene):
    slots = dict(latents.lv_sets(scene))["illumination"]

    def brightness(v):
        return jnp.mean(render.render(latents.put(scene, slots, v), resolution=(16, 16)).rgb)

    g = jax.grad(brightness)(latents.get(scene, slots))
    assert float(g[0]) > 0 and float(g[1]) > 0     # more ambient / sun, brighter


def test_clip_and_perturb_keep_scenes_valid(scene):
    slots = latents.all_slots(scene)
    x = latents.get(scene, slots)
    wild = latents.put(scene, slots, x + 10.0)
    with pytest.raises(ValueError):
        render.validate(wild)
    clipped = latents.clip(wild)
    render.validate(clipped)
    azimuth = [i for i, s in enumerate(slots) if s.periodic]
    np.testing.assert_allclose(latents.get(clipped, slots)[np.array(azimuth)],
                               np.mod(np.asarray(x)[azimuth] + 10.0, 2 * math.pi), atol=1e-5)
    for seed in range(5):
        moved = latents.perturb(jax.random.key(seed), scene, 0.1)
        render.validate(moved)
        assert not np.allclose(latents.get(moved, slots), x)
        np.testing.assert_array_equal(moved.objects.class_id, scene.objects.class_id)


def test_encodings_round_trip(scene):
    g = latents.encode_globals(scene)
    o = latents.encode_objects(scene)
    assert g.shape == (latents.GLOBAL_SIZE,) and o.shape == (5, latents.OBJECT_SIZE)
    back = latents.decode_objects(latents.decode_globals(scene, g), o)
    slots = latents.all_slots(scene)
    np.testing.assert_allclose(latents.get(back, slots), latents.get(scene, slots), atol=1e-5)
    np.testing.assert_array_equal(back.objects.class_id, scene.objects.class_id)
    np.testing.assert_array_equal(back.objects.shape_id, scene.objects.shape_id)
    # Standardised: uniform draws over a range have mean 0 and variance 1.
    assert float(jnp.max(jnp.abs(g))) < 2.0


def test_pixel_likelihood_is_the_robust_gaussian_mixture(x64):
    rng = np.random.default_rng(0)
    rendered = rng.uniform(size=(4, 5, 3))
    observed = np.clip(rendered + rng.normal(0, 0.15, size=(4, 5, 3)), 0, 1)
    got = np.asarray(pixel_log_likelihood(rendered, observed))
    gauss = scipy.stats.multivariate_normal
    expected = np.array([[np.log(0.8 * gauss.pdf(observed[i, j], rendered[i, j], 0.01 * np.eye(3))
                                 + 0.2) for j in range(5)] for i in range(4)])
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # A perfect pixel, and a far outlier that only the uniform term explains.
    perfect = float(pixel_log_likelihood(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)))[0, 0])
    assert perfect == pytest.approx(math.log(0.8 * (2 * math.pi * 0.01) ** -1.5 + 0.2), rel=1e-12)
    far = float(pixel_log_likelihood(np.zeros((1, 1, 3)), np.ones((1, 1, 3)))[0, 0])
    assert far == pytest.approx(math.log(0.2), abs=1e-9)
    pure = float(pixel_log_likelihood(np.zeros((1, 1, 3)), np.full((1, 1, 3), 0.1), inlier=1.0)[0, 0])
    assert pure == pytest.approx(scipy.stats.multivariate_normal.logpdf(
        np.full(3, 0.1), np.zeros(3), 0.01 * np.eye(3)), rel=1e-12)
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    assert float(negative_log_likelihood(rendered, observed, mask)) == pytest.approx(-expected[1, 2])
    assert float(negative_log_likelihood(rendered, observed)) == pytest.approx(-expected.sum())


def test_likelihood_rejects_bad_input():
    with pytest.raises(ValueError, match="equal shapes"):
        pixel_log_likelihood(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="inlier"):
        pixel_log_likelihood(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), inlier=0.0)
