"""LiDO's refinement loop (sec. 4.2): step sizes, aggregation, patches, batching."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import render
from lido_jax import generator, refine

_SCENES = {}


def _scene(seed: int = 0) -> render.Scene:
    if seed not in _SCENES:
        _SCENES[seed] = generator.generate(jax.random.key(seed), min_objects=2, max_objects=3,
                                           check_resolution=(32, 32)).scene
    return _SCENES[seed]


def _blank(resolution=(16, 16)):
    """A renderer that draws nothing: isolates the update rule from rendering."""
    h, w = resolution
    return lambda scene: (jnp.zeros((h, w, 3)), jnp.zeros((h, w), jnp.int32))


def _oracle(truth: render.Scene):
    """The perfect predictor: every object predicts the truth, and votes for its globals."""
    objects = refine.object_vectors(truth)
    globals_ = refine.global_vector(truth)

    def predict(obs, ren, state, scene):
        return objects, jnp.broadcast_to(globals_, state.votes.shape)

    return predict


def _moved_scene(truth: render.Scene, key) -> render.Scene:
    """The truth with every latent moved by 20% of its range, kept inside the ranges."""
    from lido_jax import latents
    return latents.perturb(key, truth, 0.2)


def _errors(trace, truth):
    obj = refine.difference(trace["objects"], refine.object_vectors(truth), refine.OBJECT_PERIODIC)
    glob = refine.difference(trace["globals"], refine.global_vector(truth), refine.GLOBAL_PERIODIC)
    valid = np.asarray(truth.objects.valid)
    return np.asarray(obj)[:, valid], np.asarray(glob)


@settings(max_examples=8, deadline=None)
@given(a=st.sampled_from([1.5, 2.0, 3.0]), seed=st.integers(0, 2**16))
def test_perfect_predictor_converges_at_the_rate_of_the_step_sizes(a, seed):
    truth = _scene(0)
    init = _moved_scene(truth, jax.random.key(seed))
    steps = 6
    _, trace = jax.jit(lambda o, s: refine.refine(
        _oracle(truth), o, s, refine.RefineConfig(steps=steps, a=a, patch_size=4),
        _blank()))(jnp.zeros((16, 16, 3)), init)
    obj, glob = _errors(trace, truth)
    # e_{t+1} = (1 - 1/(t + a)) e_t, so e_t = e_0 prod_{s<t} (s + a - 1)/(s + a).
    factor = np.cumprod([1.0] + [(t + a - 1) / (t + a) for t in range(steps)])
    np.testing.assert_allclose(obj, factor[:, None, None] * obj[0], atol=2e-5)
    np.testing.assert_allclose(glob, factor[:, None] * glob[0], atol=2e-5)
    if a == 2.0:   # the paper's a: the error after T steps is e_0 / (T + 1)
        np.testing.assert_allclose(obj[-1], obj[0] / (steps + 1), atol=2e-5)
    assert np.abs(glob[0]).max() > 0.01   # the init really was wrong
    # the trace's votes are the states' votes: the oracle's, which vote as one
    votes = refine.difference(trace["votes"], refine.global_vector(truth), refine.GLOBAL_PERIODIC)
    valid = np.asarray(truth.objects.valid)
    np.testing.assert_allclose(np.asarray(votes)[:, valid], np.broadcast_to(
        glob[:, None], np.asarray(votes)[:, valid].shape), atol=2e-5)


def test_tol_stops_the_loop_and_freezes_the_state():
    truth = _scene(0)
    init = _moved_scene(truth, jax.random.key(1))
    config = refine.RefineConfig(steps=40, tol=0.05, patch_size=4)
    scene, trace = refine.refine(_oracle(truth), jnp.zeros((16, 16, 3)), init, config, _blank())
    active = np.asarray(trace["active"])
    moved = np.asarray(trace["moved"])
    stop = int(np.argmin(active))
    assert 0 < stop < 40 and not active[stop:].any() and active[:stop].all()
    assert moved[stop - 1] < 0.05 <= moved[stop - 2]        # fired on the first small step
    np.testing.assert_array_equal(trace["objects"][stop], trace["objects"][-1])
    np.testing.assert_array_equal(refine.object_vectors(scene), trace["objects"][-1])


@pytest.mark.parametrize("anchor", [False, True])
def test_anchored_objects_stay_put_in_the_image_while_the_camera_moves(anchor):
    """A predictor that keeps the objects and votes for another camera: with
    ``anchor_pixels`` every contact point stays at its first pixel under each step's
    camera; without, the objects stay put on the ground and move in the image."""
    truth = _scene(0)
    g0 = refine.global_vector(truth)
    other = g0.at[0].add(0.15).at[1].add(0.1)            # higher and steeper camera

    def keep_objects(obs, ren, state, scene):
        return state.objects, jnp.broadcast_to(other, state.votes.shape)

    res = (32, 32)
    config = refine.RefineConfig(steps=4, patch_size=4, anchor_pixels=anchor)
    _, trace = refine.refine(keep_objects, jnp.zeros(res + (3,)), truth, config, _blank(res))
    valid = np.asarray(truth.objects.valid)
    pixels = np.stack([np.asarray(refine.contact_pixels(o, g, res))[valid]
                       for o, g in zip(trace["objects"], trace["globals"])])
    assert np.abs(np.asarray(trace["globals"][-1] - trace["globals"][0])).max() > 0.05
    shift = np.abs(pixels - pixels[0]).max()
    if anchor:
        assert shift < 1e-3, shift
        assert np.abs(np.asarray(trace["objects"][-1] - trace["objects"][0])[valid, :2]).max() > 0.01
    else:
        assert shift > 0.5, shift
        np.testing.assert_array_equal(trace["objects"][-1], trace["objects"][0])


def test_median_aggregation_ignores_invalid_objects_and_outliers():
    votes = jnp.array([[0.3, 0.5, 0.5, 1.0, 0.1, 1.0, 0.2, 0.2, 0.2],
                       [0.3, 0.5, 0.5, 1.0, 6.2, 1.0, 0.2, 0.2, 0.2],
                       [0.7, 0.1, 0.9, 1.5, 0.3, 0.2, 0.9, 0.9, 0.9],    # an outlier
                       [0.4, 0.6, 0.6, 1.2, 0.05, 1.1, 0.3, 0.3, 0.3],
                       [9.0, 9.0, 9.0, 9.0, 3.0, 9.0, 9.0, 9.0, 9.0]])   # invalid
    valid = jnp.array([True, True, True, True, False])
    g = np.asarray(refine.aggregate(votes, valid, jnp.zeros(9)))
    np.testing.assert_allclose(g[[0, 1, 2, 3, 5, 6]], [0.35, 0.5, 0.55, 1.1, 1.0, 0.25], atol=1e-6)
    # azimuths 0.1, 6.2 (= -0.083), 0.3, 0.05 straddle 0: their median is near 0.07, not pi
    assert min(g[4], 2 * math.pi - g[4]) < 0.15
    none = refine.aggregate(votes, jnp.zeros(5, bool), jnp.arange(9.0))
    np.testing.assert_array_equal(none, np.arange(9.0))


def test_patches_sample_the_image_around_the_centre():
    image = jnp.arange(32 * 32 * 3, dtype=jnp.float32).reshape(32, 32, 3) / (32 * 32 * 3)
    centres = jnp.array([[15.5, 15.5], [1.5, 7.5], [jnp.nan, 1.0], [-40.0, -40.0]])
    p = refine.extract_patches(image, centres, side=8.0, size=8)
    assert p.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(p[0], image[12:20, 12:20], atol=1e-6)   # side = size: a crop
    np.testing.assert_allclose(p[1, 2:], image[0:6, 4:12], atol=1e-6)
    np.testing.assert_array_equal(p[1, :2], 0.0)          # above the image: zero
    np.testing.assert_array_equal(p[2], 0.0)              # NaN centre
    np.testing.assert_array_equal(p[3], 0.0)              # outside
    half = refine.extract_patches(image, centres[:1], side=16.0, size=8)   # 2x down
    np.testing.assert_allclose(half[0], 0.5 * (image[8:24:2, 8:24:2] + image[9:24:2, 9:24:2]),
                               atol=1e-6)


def test_patches_follow_the_contact_point():
    truth = _scene(1)
    resolution = (32, 32)
    pixels = refine.contact_pixels(refine.object_vectors(truth), refine.global_vector(truth),
                                   resolution)
    valid = np.asarray(truth.objects.valid)
    np.testing.assert_allclose(np.asarray(pixels)[valid],
                               generator.contact_pixels(truth, resolution)[valid], atol=1e-4)


def test_batched_refinement_equals_one_image_at_a_time():
    scenes = [_scene(0), _scene(1)]
    inits = [_moved_scene(s, jax.random.key(i)) for i, s in enumerate(scenes)]
    resolution = (24, 24)
    observed = jnp.stack([render.render(s, resolution=resolution).rgb for s in scenes])

    def predict(obs, ren, state, scene):   # depends on the patches, so rendering matters
        shift = jnp.mean(obs - ren, axis=(1, 2, 3))
        return (state.objects.at[:, 4:].add(shift[:, None]),
                state.votes.at[:, 6:].add(0.5 * shift[:, None]))

    config = refine.RefineConfig(steps=3, patch_size=8)
    render_fn = refine.jax_render_fn(resolution)
    batch_init = jax.tree.map(lambda *x: jnp.stack(x), *inits)
    batched, trace = refine.refine_batch(predict, observed, batch_init, config, render_fn)
    for i in range(2):
        one, one_trace = jax.jit(lambda o, s: refine.refine(predict, o, s, config, render_fn))(
            observed[i], inits[i])
        np.testing.assert_allclose(trace["objects"][i], one_trace["objects"], atol=1e-5)
        np.testing.assert_allclose(trace["globals"][i], one_trace["globals"], atol=1e-5)
    assert float(jnp.max(jnp.abs(trace["objects"][:, -1] - trace["objects"][:, 0]))) > 1e-3


def test_brightness_adjustment_matches_the_observed_mean_over_each_mask():
    truth = _scene(0)   # dim light: no shaded colour reaches 1, so shading is linear in albedo
    truth = truth.replace(light=truth.light.replace(ambient=jnp.float32(0.3),
                                                    strength=jnp.float32(0.6)))
    resolution = (24, 24)
    image = render.render(truth, resolution=resolution, shadows=False)
    darker = truth.replace(ground_rgb=truth.ground_rgb * 0.5,
                           objects=truth.objects.replace(rgb=truth.objects.rgb * 0.5))
    dark = render.render(darker, resolution=resolution, shadows=False)
    fixed = refine.brightness_adjusted(darker, image.rgb, dark.rgb, dark.instance)
    seen = np.unique(np.asarray(dark.instance))
    for k in np.flatnonzero(np.asarray(truth.objects.valid)):
        if 2 + k in seen:
            np.testing.assert_allclose(fixed.objects.rgb[k], truth.objects.rgb[k], rtol=0.03,
                                       atol=0.01)
    np.testing.assert_allclose(fixed.ground_rgb, truth.ground_rgb, rtol=0.03, atol=0.01)
    assert len(seen) >= 3   # the ground and at least one object were checked


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=-1), "steps"), (dict(a=1.0), "a="), (dict(tol=-0.1), "tol"),
    (dict(patch_fraction=0.0), "patch_fraction"), (dict(patch_size=2), "patch_size")])
def test_bad_configs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        refine.RefineConfig(**kwargs)


def test_bad_images_are_named():
    truth = _scene(0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        refine.refine(_oracle(truth), jnp.zeros((16, 16)), truth)
    with pytest.raises(ValueError, match="batch"):
        refine.refine_batch(_oracle(truth), jnp.zeros((16, 16, 3)), truth)


def test_initial_votes_seed_the_state_and_the_first_median():
    truth = _scene(0)
    n = truth.objects.valid.shape[0]
    votes = jnp.broadcast_to(refine.global_vector(truth), (n, 9)).at[:, 0].set(0.6)
    state = refine.initial_state(truth, votes)
    np.testing.assert_array_equal(state.votes, votes)

    def keep(obs, ren, state, scene):   # predicts no change: only the votes' median moves
        return state.objects, state.votes

    _, trace = refine.refine(keep, jnp.zeros((16, 16, 3)), truth,
                             refine.RefineConfig(steps=1, patch_size=4), _blank(), votes=votes)
    assert float(trace["globals"][0, 0]) == pytest.approx(float(truth.camera.height))
    assert float(trace["globals"][1, 0]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="votes must have shape"):
        refine.initial_state(truth, votes[:, :4])
