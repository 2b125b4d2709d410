"""LiDO's initialisation: detector targets and decoding, back-projection, assembly."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lido_jax import generator, initialization as ini, refine
from render import spec

RES = (64, 64)
_GT = {}


def _gt(seed: int):
    if seed not in _GT:
        _GT[seed] = generator.generate(jax.random.key(seed), min_objects=2, max_objects=5,
                                       check_resolution=RES)
    return _GT[seed]


def _perfect_detector_outputs(scene):
    t = ini.detector_targets(scene, RES)
    return {"logits": 50.0 * jax.nn.one_hot(t["label"], 1 + ini.NUM_CLASSES), "offset": t["offset"],
            "size": t["size"]}, t


def _perfect_patch_outputs(scene, order):
    t = jax.tree.map(lambda x: x[order], ini.patch_targets(scene))
    return dict(t, shape=50.0 * jax.nn.one_hot(t["shape"], ini.MAX_SHAPES),
                azimuth=50.0 * jax.nn.one_hot(t["azimuth"], ini.AZIMUTH_BINS))


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 3))
def test_back_projection_inverts_the_projection(seed):
    scene = _gt(seed).scene
    valid = np.asarray(scene.objects.valid)
    pixels = generator.contact_pixels(scene, RES)
    size = ini.projected_size(scene, RES)
    position, scale = ini.scale_from_size(scene.camera, jnp.asarray(pixels), size, RES)
    np.testing.assert_allclose(np.asarray(position)[valid], np.asarray(scene.objects.position)[valid],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(scale)[valid], np.asarray(scene.objects.scale)[valid],
                               rtol=1e-4)
    # a nearer object of the same scale looks bigger
    near = scene.objects.position.at[:, 1].multiply(0.5)
    closer = ini.projected_size(scene.replace(objects=scene.objects.replace(position=near)), RES)
    assert np.all(np.asarray(closer)[valid] > np.asarray(size)[valid])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perfect_detector_outputs_decode_to_the_objects(seed):
    scene = _gt(seed).scene
    outputs, targets = _perfect_detector_outputs(scene)
    det = ini.decode_detections(outputs)
    valid = np.asarray(scene.objects.valid)
    assert int(np.sum(det.valid)) == int(np.sum(targets["label"] > 0)) == valid.sum()
    truth = generator.contact_pixels(scene, RES)[valid]
    found = np.asarray(det.pixel)[np.asarray(det.valid)]
    order = [int(np.argmin(np.linalg.norm(truth - p, axis=1))) for p in found]
    assert sorted(order) == list(range(valid.sum()))
    np.testing.assert_allclose(found, truth[order], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(det.class_id)[np.asarray(det.valid)],
                                  np.asarray(scene.objects.class_id)[valid][order])
    np.testing.assert_allclose(np.asarray(det.size)[np.asarray(det.valid)],
                               np.asarray(ini.projected_size(scene, RES))[valid][order], rtol=1e-5)


def test_non_maximum_suppression_keeps_local_peaks_above_the_threshold():
    score = np.full((8, 8), 0.01)
    score[2, 2], score[2, 3] = 0.9, 0.8       # neighbours: the weaker one is suppressed
    score[6, 6] = 0.7
    score[6, 1] = 0.4                          # below the threshold
    logits = np.log(np.stack([1 - score, score, np.zeros_like(score) + 1e-9,
                              np.zeros_like(score) + 1e-9], -1))
    outputs = {"logits": jnp.asarray(logits), "offset": jnp.full((8, 8, 2), 0.5),
               "size": jnp.full((8, 8), 0.1)}
    det = ini.decode_detections(outputs, threshold=0.5)
    kept = np.asarray(det.pixel)[np.asarray(det.valid)]
    np.testing.assert_allclose(kept, [[2.5 * 4 - 0.5, 2.5 * 4 - 0.5], [6.5 * 4 - 0.5, 6.5 * 4 - 0.5]])
    np.testing.assert_allclose(np.asarray(det.score)[:2], [0.9, 0.7], rtol=1e-5)
    assert det.valid.shape == (spec.MAX_OBJECTS,)
    none = ini.decode_detections(outputs, threshold=0.95)
    assert not np.any(none.valid)


@pytest.mark.parametrize("seed", [0, 1])
def test_perfect_outputs_assemble_the_true_scene(seed):
    scene = _gt(seed).scene
    det_out, _ = _perfect_detector_outputs(scene)
    det = ini.decode_detections(det_out)
    valid = np.asarray(scene.objects.valid)
    truth_px = generator.contact_pixels(scene, RES)
    # which object slot each detection row is (padding rows point anywhere)
    order = np.array([int(np.nanargmin(np.where(valid, np.linalg.norm(truth_px - p, axis=1), np.nan)))
                      for p in np.asarray(det.pixel)])
    outputs = _perfect_patch_outputs(scene, order)
    z0, votes = ini.assemble(det, outputs, RES)
    rows = np.asarray(det.valid)
    got = np.asarray(refine.object_vectors(z0))[rows]
    want = np.asarray(refine.object_vectors(scene))[order[rows]]
    np.testing.assert_allclose(got[:, :3], want[:, :3], rtol=1e-3, atol=1e-3)   # back-projected
    turn = np.asarray(refine.difference(got[:, 3], want[:, 3], True))
    assert np.all(np.abs(turn) <= math.radians(10) + 1e-5)                        # 18 bins
    np.testing.assert_allclose(got[:, 4:], want[:, 4:], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(z0.objects.shape_id)[rows],
                                  np.asarray(scene.objects.shape_id)[order[rows]])
    d = refine.difference(refine.global_vector(z0), refine.global_vector(scene), refine.GLOBAL_PERIODIC)
    np.testing.assert_allclose(d, 0.0, atol=1e-4)
    assert votes.shape == (spec.MAX_OBJECTS, 9)


def test_an_image_without_detections_gives_an_empty_scene():
    outputs = {"logits": jnp.zeros((16, 16, 4)).at[..., 0].set(10.0),
               "offset": jnp.zeros((16, 16, 2)), "size": jnp.zeros((16, 16))}
    det = ini.decode_detections(outputs)
    assert not np.any(det.valid)
    patch = {k: jnp.zeros((spec.MAX_OBJECTS, w)) for k, w in ini.PATCH_HEADS.items()}
    scene, votes = ini.assemble(det, patch, RES)
    assert not np.any(scene.objects.valid)
    g = np.asarray(refine.global_vector(scene))
    assert np.all(np.isfinite(g)) and np.all(g >= refine.GLOBAL_LOW) and np.all(g <= refine.GLOBAL_HIGH)


def test_initial_scene_runs_end_to_end_and_names_bad_images():
    params = ini.init_params(jax.random.key(0), RES, 16)
    image = generator.observe(_gt(0), jax.random.key(1), resolution=RES).rgb
    config = ini.InitConfig(threshold=0.3, patch_size=16)
    scene, votes, det = jax.jit(lambda p, x: ini.initial_scene(p, x, config))(params, image)
    assert scene.objects.valid.shape == (spec.MAX_OBJECTS,) and votes.shape == (spec.MAX_OBJECTS, 9)
    np.testing.assert_array_equal(scene.objects.valid, det.valid)
    assert np.all(np.isfinite(np.asarray(refine.object_vectors(scene))))
    with pytest.raises(ValueError, match="multiples of 4"):
        ini.initial_scene(params, jnp.zeros((30, 30, 3)), config)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ini.initial_scene(params, jnp.zeros((64, 64)), config)


def test_one_step_lowers_both_losses():
    import optax
    params = ini.init_params(jax.random.key(0), RES, 16)
    scenes = [_gt(s).scene for s in (0, 1)]
    images = jnp.stack([generator.observe(_gt(s), jax.random.key(s), resolution=RES).rgb
                        for s in (0, 1)])
    det_t = jax.tree.map(lambda *x: jnp.stack(x), *[ini.detector_targets(s, RES) for s in scenes])
    scene = scenes[0]
    pix = jnp.asarray(np.nan_to_num(generator.contact_pixels(scene, RES)))
    patches = refine.extract_patches(images[0], pix, 32.0, 16)
    dvec = ini.detection_vector(pix, ini.projected_size(scene, RES), scene.objects.class_id, RES)
    pt = ini.patch_targets(scene)

    def loss(p):
        d = ini.Detector().apply(p["detector"], images)
        o = ini.PatchNetwork().apply(p["patch"], patches, dvec)
        return (ini.detector_loss(d, det_t)
                + ini.patch_loss(o, pt, scene.objects.class_id, scene.objects.valid))

    opt = optax.adam(1e-3)
    before, grads = jax.value_and_grad(loss)(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    after = loss(optax.apply_updates(params, updates))
    assert float(after) < float(before)


def test_soft_detector_labels_peak_at_each_contact_point():
    scene = _gt(1).scene
    t = ini.detector_targets(scene, RES)
    heat = np.asarray(t["heat"])
    np.testing.assert_allclose(heat.sum(-1), 1.0, atol=1e-6)
    assert np.all(heat >= -1e-7)
    label = np.asarray(t["label"])
    rows, cols = np.nonzero(label)
    for r, c in zip(rows, cols):
        cls = label[r, c]
        assert heat[r, c, cls] >= np.exp(-1.0)   # within sqrt(2)/2 cells of the contact point
        window = heat[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2, cls]
        assert heat[r, c, cls] >= window.max() - 0.35
    far = np.ones(label.shape, bool)
    for r, c in zip(rows, cols):
        far[max(r - 4, 0):r + 5, max(c - 4, 0):c + 5] = False
    np.testing.assert_allclose(heat[far][:, 0], 1.0, atol=1e-3)   # background away from objects
