"""The LiDO prediction network (Table 5), its targets, decoding and loss."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lido_jax import generator, latents, network, refine


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def _dense(cin, cout):
    return cin * cout + cout


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def params64():
    return network.init(jax.random.key(0), 64)


def test_blocks_have_table_5s_parameter_counts(params64):
    p = params64["params"]
    z = network.Z_SIZE
    assert z == latents.OBJECT_SIZE + 3 * latents.GLOBAL_SIZE == 26 + 30
    assert _count(p["trunk"]) == _conv(3, 9, 32) + _conv(3, 32, 64) + _conv(3, 64, 128)
    for name in network.GEOMETRY_HEADS:      # 64 -> pools to 16 in the trunk, 8 in the head
        flat = 8 * 8 * 32
        expected = (_conv(3, 128, 64) + _conv(3, 64, 32) + _dense(flat + z, 40)
                    + 2 * _dense(40 + z, 40) + _dense(40 + z, network.HEADS[name]))
        assert _count(p[name]) == expected, name
    for name in network.COLOUR_HEADS:        # three stride-2 convolutions: 64 -> 8
        expected = (_conv(3, 9, 32) + _conv(3, 32, 64) + _conv(3, 64, 128)
                    + _dense(8 * 8 * 128 + z, 40) + 2 * _dense(40 + z, 40) + _dense(40 + z, 3))
        assert _count(p[name]) == expected, name
    assert set(p) == {"trunk", *network.HEADS}


def test_outputs_have_the_heads_widths(params64):
    model = network.PredictionNetwork()
    out = model.apply(params64, jnp.zeros((5, 64, 64, 9)), jnp.zeros((5, network.Z_SIZE)))
    assert {k: v.shape for k, v in out.items()} == {k: (5, w) for k, w in network.HEADS.items()}
    train = model.apply(params64, jnp.ones((5, 64, 64, 9)), jnp.ones((5, network.Z_SIZE)),
                        train=True, rngs={"dropout": jax.random.key(1)})
    test = model.apply(params64, jnp.ones((5, 64, 64, 9)), jnp.ones((5, network.Z_SIZE)))
    assert not np.allclose(train["size"], test["size"])   # dropout is on only in training


@pytest.mark.parametrize("patches, z, match", [
    ((2, 64, 64, 6), (2, network.Z_SIZE), "patches"), ((2, 60, 60, 9), (2, network.Z_SIZE), "multiple"),
    ((2, 64, 64, 9), (2, 10), "z must")])
def test_bad_input_shapes_are_named(params64, patches, z, match):
    with pytest.raises(ValueError, match=match):
        network.PredictionNetwork().apply(params64, jnp.zeros(patches), jnp.zeros(z))



@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), frame=st.sampled_from(network.POSITION_FRAMES))
def test_decoding_the_targets_gives_back_the_truth(seed, frame):
    keys = jax.random.split(jax.random.key(seed), 4)
    n = 4
    lo, hi = refine.OBJECT_LOW, refine.OBJECT_HIGH
    current = jax.random.uniform(keys[0], (n, 7), minval=lo, maxval=hi)
    truth = jax.random.uniform(keys[1], (n, 7), minval=lo, maxval=hi)
    glob = jax.random.uniform(keys[2], (9,), minval=refine.GLOBAL_LOW, maxval=refine.GLOBAL_HIGH)
    image = dict(globals_=glob, resolution=(48, 64)) if frame == "image" else {}
    t = network.targets(current, truth, glob, frame, **image)
    outputs = dict(t, azimuth=100.0 * jax.nn.one_hot(t["azimuth"], network.AZIMUTH_BINS))
    objects, votes = network.decode(outputs, current, frame, **image)
    turn = refine.difference(objects[:, 3], truth[:, 3], True)
    assert np.all(np.abs(turn) <= math.pi / network.AZIMUTH_BINS + 1e-4)   # half a 1-degree bin
    keep = [0, 1, 2, 4, 5, 6]
    seen = np.all(np.abs(np.asarray(t["position"])) < network.IMAGE_CLIP, -1)   # unclipped rows
    if frame == "image":
        assert np.all(np.abs(np.asarray(t["position"])) <= network.IMAGE_CLIP)
        np.testing.assert_allclose(objects[seen][:, :2], truth[seen][:, :2], atol=2e-4)
        keep = [2, 4, 5, 6]
    np.testing.assert_allclose(objects[:, keep], truth[:, keep], atol=2e-5)
    d = refine.difference(votes, jnp.broadcast_to(glob, (n, 9)), refine.GLOBAL_PERIODIC)
    np.testing.assert_allclose(d, 0.0, atol=2e-5)


def test_position_target_is_in_the_objects_frame():
    current = jnp.array([[0.0, 1.0, 0.1, math.pi / 2, 0.5, 0.5, 0.5]])
    truth = current.at[0, 0].add(0.2)                       # 20 cm along world x
    t = network.targets(current, truth, jnp.zeros(9) + 0.3)
    rotated = network.targets(current.at[0, 3].set(0.0), truth.at[0, 3].set(0.0), jnp.zeros(9) + 0.3)
    np.testing.assert_allclose(rotated["position"], [[2.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(t["position"]), 2.0, atol=1e-5)
    assert abs(float(t["position"][0, 0])) < 1e-5          # a quarter turn moves it to the other axis
    # In the camera frame the azimuth plays no part: 20 cm along x is (2, 0) units.
    for az in (0.0, 1.0, math.pi / 2, 4.0):
        c = network.targets(current.at[0, 3].set(az), truth.at[0, 3].set(az), jnp.zeros(9) + 0.3, "camera")
        np.testing.assert_allclose(c["position"], [[2.0, 0.0]], atol=1e-5)
    with pytest.raises(ValueError, match="position_frame"):
        network.targets(current, truth, jnp.zeros(9), "pixels")
    with pytest.raises(ValueError, match="resolution"):
        network.targets(current, truth, jnp.zeros(9), "image")
    with pytest.raises(ValueError, match="resolution"):
        network.predictor({}, position_frame="image")


def test_image_offsets_are_what_the_two_cameras_see():
    """"image" targets are the contact point's pixel offset between the current
    camera's view of the current object and the true camera's view of the truth; decoding
    them puts the object where the current camera sees the truth's contact point."""
    res = (64, 64)
    current = jnp.array([[0.1, 1.2, 0.1, 0.3, 0.5, 0.5, 0.5], [-0.2, 0.9, 0.1, 2.0, 0.2, 0.3, 0.4]])
    truth = current.at[:, :2].add(jnp.array([[0.05, -0.1], [0.02, 0.2]]))
    now_g = refine.global_vector(_scene_with_camera(0.4, 0.5))
    true_g = refine.global_vector(_scene_with_camera(0.5, 0.6))
    t = network.targets(current, truth, true_g, "image", globals_=now_g, resolution=res)
    want = (refine.contact_pixels(truth, true_g, res) - refine.contact_pixels(current, now_g, res))
    np.testing.assert_allclose(t["position"] * network.IMAGE_UNIT * 64, want, atol=1e-4)
    objects, _ = network.decode(dict(t, azimuth=jnp.zeros((2, network.AZIMUTH_BINS))), current,
                                "image", globals_=now_g, resolution=res)
    np.testing.assert_allclose(refine.contact_pixels(objects, now_g, res),
                               refine.contact_pixels(truth, true_g, res), atol=2e-3)
    assert float(jnp.abs(objects[:, :2] - truth[:, :2]).max()) > 0.01   # not the truth: other camera


def _scene_with_camera(height, elevation):
    from lido_jax import generator
    s = generator.generate(jax.random.key(0), min_objects=1, max_objects=1, check_resolution=(16, 16)).scene
    return s.replace(camera=s.camera.replace(height=jnp.float32(height), elevation=jnp.float32(elevation)))
    with pytest.raises(ValueError, match="position_frame"):
        network.predictor({}, position_frame="world")


def test_loss_is_l1_plus_l2_plus_weighted_cross_entropy():
    n = 3
    target = {k: jnp.zeros((n, w)) for k, w in network.HEADS.items() if k != "azimuth"}
    target["azimuth"] = jnp.zeros(n, jnp.int32)
    outputs = {k: jnp.zeros((n, w)) for k, w in network.HEADS.items()}
    outputs["size"] = jnp.array([[0.5], [0.5], [9.0]])
    valid = jnp.array([True, True, False])                  # the third row is ignored
    value = network.loss(outputs, target, valid)
    expected = (0.5 + 0.25) + network.CROSS_ENTROPY_WEIGHT * math.log(network.AZIMUTH_BINS)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def _batch(key, size=16, n=8):
    keys = jax.random.split(key, 5)
    current = jax.random.uniform(keys[0], (n, 7), minval=refine.OBJECT_LOW, maxval=refine.OBJECT_HIGH)
    truth = jax.random.uniform(keys[1], (n, 7), minval=refine.OBJECT_LOW, maxval=refine.OBJECT_HIGH)
    glob = jax.random.uniform(keys[2], (9,), minval=refine.GLOBAL_LOW, maxval=refine.GLOBAL_HIGH)
    return {"patches": jax.random.uniform(keys[3], (n, size, size, 9)),
            "z": jax.random.normal(keys[4], (n, network.Z_SIZE)),
            "targets": network.targets(current, truth, glob), "valid": jnp.ones(n, bool)}


def test_one_training_step_lowers_the_loss():
    model = network.PredictionNetwork()
    params = network.init(jax.random.key(0), 16, model)
    opt = network.optimizer()
    state = opt.init(params)
    batch = _batch(jax.random.key(1))
    evaluate = jax.jit(lambda p: network.loss(model.apply(p, batch["patches"], batch["z"]),
                                              batch["targets"], batch["valid"]))
    before = float(evaluate(params))
    step = network.train_step(model, opt)
    params, state, _ = step(params, state, batch, jax.random.key(2))
    after = float(evaluate(params))
    assert after < before, (before, after)


def test_network_drives_the_refinement_loop():
    gt = generator.generate(jax.random.key(3), min_objects=2, max_objects=2,
                            check_resolution=(32, 32))
    init = latents.perturb(jax.random.key(4), gt.scene, 0.1)
    observed = generator.observe(gt, jax.random.key(5), resolution=(32, 32))
    params = network.init(jax.random.key(0), 16)
    config = refine.RefineConfig(steps=2, patch_size=16)
    scene, trace = jax.jit(lambda o, s: refine.refine(network.predictor(params), o, s, config))(
        observed.rgb, init)
    assert trace["objects"].shape == (3, init.objects.valid.shape[0], 7)
    assert np.all(np.isfinite(np.asarray(trace["objects"])))
    assert np.all(np.isfinite(np.asarray(trace["globals"])))
    valid = np.asarray(init.objects.valid)
    assert float(jnp.max(jnp.abs(trace["objects"][-1] - trace["objects"][0])[valid])) > 0
