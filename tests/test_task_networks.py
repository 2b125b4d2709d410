"""Task networks, losses and metrics of simopt_jax.tasks against hand-computed answers."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simopt_jax import tasks
from simopt_jax.tasks import (
    TASKS, NormalDepthNet, NormalsDepth, Segmentation, UNet, angle_errors, depth_errors,
    depth_loss, mean_iou, normal_loss, segmentation_loss, unit_vectors,
)

SETTINGS = settings(max_examples=10, deadline=None)
SIZES = [(16, 16), (32, 24)]
SMALL = (8, 16)   # features of the networks that are trained here: quick to compile
KEY = jax.random.key(0, impl="rbg")   # threefry keys take seconds to compile on CPU


# ---------------------------------------------------------------------------------------
# Synthetic data: a disc on a background, a shaded sphere.

def _disc_batch(size=(16, 16)):
    """Two RGB images of a red disc on a blue background; labels 1 on the disc."""
    h, w = size
    rows, cols = np.mgrid[:h, :w]
    labels = np.stack([(rows - cy) ** 2 + (cols - cx) ** 2 <= r ** 2
                       for cy, cx, r in [(h / 2, w / 2, h / 4), (h / 3, 2 * w / 3, h / 5)]])
    rgb = np.where(labels[..., None], [0.9, 0.2, 0.2], [0.2, 0.3, 0.8])
    return jnp.asarray(rgb, jnp.float32), {"labels": jnp.asarray(labels, jnp.int32),
                                           "valid": jnp.ones(labels.shape, bool)}


def _sphere_batch(size=(16, 16)):
    """Two images of a Lambertian sphere seen from 3 m: normals and depth, 0 off the sphere."""
    h, w = size
    v, u = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    images, normals, depths = [], [], []
    for radius in (0.8, 0.6):
        z2 = radius ** 2 - u ** 2 - v ** 2
        inside = z2 > 0
        z = np.sqrt(np.maximum(z2, 0))
        n = np.where(inside[..., None], np.stack([u, v, z], -1) / radius, 0.0)
        light = np.array([0.5, -0.5, 0.7]) / np.linalg.norm([0.5, -0.5, 0.7])
        shade = np.clip(n @ light, 0, 1)
        images.append(np.repeat(shade[..., None], 3, -1))
        normals.append(n)
        depths.append(np.where(inside, 3.0 - z, 0.0))
    targets = {"normals": jnp.asarray(np.stack(normals), jnp.float32),
               "depth": jnp.asarray(np.stack(depths), jnp.float32)}
    return jnp.asarray(np.stack(images), jnp.float32), targets


BATCHES = {"segmentation": _disc_batch, "normals_depth": _sphere_batch}
OPTIONS = {"segmentation": {"num_classes": 2}, "normals_depth": {}}


def _rotate(vectors, axis, angle):
    """Rodrigues: rotate (..., 3) vectors about unit (..., 3) axes by angles in radians."""
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    return (vectors * cos + np.cross(axis, vectors) * sin
            + axis * np.sum(axis * vectors, -1, keepdims=True) * (1 - cos))


def _rotated_fields(angles_deg, seed=0):
    """(true, pred): random unit normals and copies rotated by ``angles_deg`` (and rescaled)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(len(angles_deg), 3))
    true /= np.linalg.norm(true, axis=-1, keepdims=True)
    axis = np.cross(true, rng.normal(size=true.shape))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    pred = _rotate(true, axis, np.radians(angles_deg)) * rng.uniform(0.5, 3.0, (len(true), 1))
    return true, pred


# ---------------------------------------------------------------------------------------
# Networks.

def _param_shapes(init, example_input):
    """Parameter shapes of ``init(key, example_input)``, without computing anything."""
    return jax.eval_shape(init, KEY, example_input)


def _numpy_params(module, example_input, seed=0):
    """LeCun-normal kernels and N(0, 0.1^2) biases for ``module``, drawn by numpy.

    Apply-only tests use these: they skip compiling ``init``, which is tested with
    the task family below.
    """
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 100.0
        return jnp.asarray(rng.normal(0.0, fan_in ** -0.5, leaf.shape), leaf.dtype)

    return jax.tree.map(draw, _param_shapes(module.init, example_input))


@pytest.mark.parametrize("size", SIZES)
def test_unet_logits_have_one_channel_per_output(size):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, *size, 3)), jnp.float32)
    net = UNet(5)
    logits = jax.jit(net.apply)(_numpy_params(net, x), x)
    assert logits.shape == (2, *size, 5)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits)) and np.std(logits) > 0


@pytest.mark.parametrize("size", SIZES)
def test_normal_depth_net_gives_unit_normals_and_positive_depth(size):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, *size, 3)), jnp.float32)
    net = NormalDepthNet(min_depth=1e-3)
    out = jax.jit(net.apply)(_numpy_params(net, x), x)
    assert set(out) == {"normals", "depth"}
    assert out["normals"].shape == (2, *size, 3) and out["normals"].dtype == jnp.float32
    assert out["depth"].shape == (2, *size) and out["depth"].dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out["normals"], axis=-1), 1.0, atol=1e-5)
    assert np.all(out["depth"] > 1e-3)
    assert np.std(out["normals"][..., 0]) > 0 and np.std(out["depth"]) > 0


def test_unit_vectors_is_safe_at_zero():
    v = jnp.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0], [1e-8, 0.0, 0.0]])
    np.testing.assert_allclose(unit_vectors(v), [[0, 0, 0], [0.6, 0, 0.8], [1e-2, 0, 0]],
                               rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(unit_vectors(v)[:, 0]))(v)
    assert np.all(np.isfinite(grad))
    # d(x / |x|)/dx = (|x|^2 - x^2) / |x|^3 = z^2 / |x|^3 = 16 / 125 at (3, 0, 4).
    np.testing.assert_allclose(grad[1, 0], 16 / 125, rtol=1e-5)


def test_unet_parameter_count_by_hand():
    # features (4, 8), 3 input channels, 2 outputs; a 3x3 conv from a to b has 9 a b + b.
    want = ((9 * 3 * 4 + 4) + (9 * 4 * 4 + 4)          # level 0: 112 + 148
            + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8)        # level 1: 296 + 584
            + (9 * (8 + 4) * 4 + 4)                    # decoder, upsampled 8 + skip 4: 436
            + (4 * 2 + 2))                             # 1x1 head: 10
    assert want == 1586
    params = _param_shapes(UNet(2, (4, 8)).init, jnp.zeros((1, 8, 8, 3)))["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == want

    # Default features (16, 32, 64), 4 outputs.
    want = ((9 * 3 * 16 + 16) + (9 * 16 * 16 + 16)
            + (9 * 16 * 32 + 32) + (9 * 32 * 32 + 32)
            + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64)
            + (9 * (64 + 32) * 32 + 32) + (9 * (32 + 16) * 16 + 16)
            + (16 * 4 + 4))
    params = _param_shapes(Segmentation(num_classes=4).init, jnp.zeros((1, 8, 8, 3)))
    assert sum(p.size for p in jax.tree.leaves(params)) == want == 106756


def test_default_unet_has_eight_3x3_convolutions_and_a_1x1_head():
    params = _param_shapes(UNet(3).init, jnp.zeros((1, 8, 8, 3)))["params"]
    kernels = [layer["kernel"].shape for layer in params.values()]
    assert sum(k[:2] == (3, 3) for k in kernels) == 8
    assert sum(k[:2] == (1, 1) for k in kernels) == 1
    assert len(kernels) == 9
    assert params["head"]["kernel"].shape == (1, 1, 16, 3)


def test_unet_rejects_sizes_it_cannot_halve():
    net = UNet(2)   # three levels: H and W must be multiples of 4
    with pytest.raises(ValueError, match="x must be"):
        net.init(jax.random.key(0), jnp.zeros((1, 6, 8, 3)))
    with pytest.raises(ValueError, match="x must be"):
        net.init(jax.random.key(0), jnp.zeros((8, 8, 3)))


# ---------------------------------------------------------------------------------------
# The task family: one contract test over every member, and training.

def _nothing_valid(name, targets):
    """The same targets with no pixel that counts."""
    if name == "segmentation":
        return {**targets, "valid": jnp.zeros_like(targets["valid"])}
    return {**targets, "depth": jnp.zeros_like(targets["depth"])}


@functools.cache
def _setup(name):
    """Task, batch, initial parameters, Adam state and a jitted step shared by the tests below.

    ``step(params, state, targets) -> (seen, params, state)``: one Adam step, and in
    ``seen`` the loss, outputs, gradient, Hessian-vector product and metrics at the
    parameters passed in. One compilation serves every test of the task (compiling
    is what takes time here).
    """
    task = TASKS[name](features=SMALL, **OPTIONS[name])
    x, targets = BATCHES[name]()
    params = jax.jit(task.init)(KEY, x)
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, state, targets):
        outputs = task.apply(params, x)
        value_and_grad = lambda p: jax.value_and_grad(task.loss)(p, x, targets)
        # Forward over reverse: the gradient, and its derivative along all-ones (H 1).
        tangent = jax.tree.map(jnp.ones_like, params)
        (loss, grads), (_, hvp) = jax.jvp(value_and_grad, (params,), (tangent,))
        updates, new_state = optimizer.update(grads, state, params)
        seen = {"loss": loss, "outputs": outputs, "grads": grads, "hvp": hvp,
                "metrics": task.output_metrics(outputs, targets)}
        return seen, optax.apply_updates(params, updates), new_state

    return task, x, targets, params, optimizer.init(params), step


def _train(name, steps=40):
    """What :func:`_setup`'s step saw before and after ``steps`` Adam steps."""
    _, _, targets, params, state, step = _setup(name)
    first, params, state = step(params, state, targets)
    for _ in range(steps):
        last, params, state = step(params, state, targets)
    return first, last


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name):
    task, x, targets, params, state, step = _setup(name)
    assert isinstance(task, tasks.TaskNetwork)
    assert task == TASKS[name](features=list(SMALL), **OPTIONS[name])
    assert hash(task) == hash(TASKS[name](features=SMALL, **OPTIONS[name]))

    seen, _, _ = step(params, state, targets)
    assert seen["loss"].shape == () and np.isfinite(seen["loss"]) and seen["loss"] > 0
    assert jax.tree.structure(seen["grads"]) == jax.tree.structure(params)
    assert optax.tree_utils.tree_norm(seen["grads"]) > 0
    # Second derivatives exist (implicit hypergradients need Hessian-vector products).
    assert optax.tree_utils.tree_norm(seen["hvp"]) > 0
    for key in ("grads", "hvp"):
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(seen[key])), key

    # Nothing valid: loss 0, and zero (not NaN) first and second derivatives.
    empty, _, _ = step(params, state, _nothing_valid(name, targets))
    assert empty["loss"] == 0.0
    for key in ("grads", "hvp"):
        assert all(np.all(g == 0.0) for g in jax.tree.leaves(empty[key])), key

    metrics = seen["metrics"]
    want_keys = {"segmentation": {"miou"},
                 "normals_depth": {"angle_mean", "angle_median", "within_11.25", "within_22.5",
                                   "within_30", "abs_rel", "sq_rel", "rmse", "rmse_log",
                                   "rmse_scale_inv"}}[name]
    assert set(metrics) == want_keys
    assert all(np.shape(v) == () and np.isfinite(v) for v in metrics.values())


def test_adam_lowers_segmentation_loss_and_raises_miou():
    before, after = _train("segmentation")
    assert after["loss"] < 0.5 * before["loss"]
    assert before["metrics"]["miou"] < 0.8
    assert after["metrics"]["miou"] > 0.9


def test_adam_lowers_normal_and_depth_losses():
    before, after = _train("normals_depth")
    _, _, targets, *_ = _setup("normals_depth")
    valid = targets["depth"] > 0
    for loss, key in [(normal_loss, "normals"), (depth_loss, "depth")]:
        assert (loss(after["outputs"][key], targets[key], valid)
                < 0.5 * loss(before["outputs"][key], targets[key], valid)), key
    assert after["metrics"]["angle_mean"] < before["metrics"]["angle_mean"]
    assert after["metrics"]["abs_rel"] < before["metrics"]["abs_rel"]


# ---------------------------------------------------------------------------------------
# Losses: answers by hand.

def test_segmentation_loss_known_answers():
    labels = jnp.array([[0, 4, 2], [1, 3, 3]])
    np.testing.assert_allclose(segmentation_loss(jnp.zeros((2, 3, 5)), labels), math.log(5),
                               rtol=1e-6)
    # Pixel 0: p(label 1) = 3/4 -> log(4/3); pixel 1 is sure of the wrong class but masked.
    logits = jnp.array([[0.0, math.log(3.0)], [50.0, -50.0]])
    labels = jnp.array([1, 1])
    np.testing.assert_allclose(segmentation_loss(logits, labels, jnp.array([True, False])),
                               math.log(4 / 3), rtol=1e-6)
    np.testing.assert_allclose(segmentation_loss(logits, labels),
                               (math.log(4 / 3) + 100.0) / 2, rtol=1e-5)


def test_normal_loss_known_answers():
    n = jnp.array([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    np.testing.assert_allclose(normal_loss(n, n), 0.0, atol=1e-7)
    np.testing.assert_allclose(normal_loss(3.0 * n, n), 0.0, atol=1e-6)
    np.testing.assert_allclose(normal_loss(-n, n), 2.0, rtol=1e-6)
    np.testing.assert_allclose(normal_loss(n[::-1], n), 1.0, rtol=1e-6)   # perpendicular
    # Pixel 0 right (0), pixel 1 opposite (2): the mask and the default mask (zero true
    # normals, which would cost 1 if counted) leave pixel 1 out.
    pred = jnp.stack([n[0], -n[1]])
    np.testing.assert_allclose(normal_loss(pred, n), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normal_loss(pred, n, jnp.array([True, False])), 0.0, atol=1e-7)
    np.testing.assert_allclose(normal_loss(pred, n.at[1].set(0.0)), 0.0, atol=1e-7)
    # The mean is over valid pixels only: perpendicular pixel 0 alone gives 1, not 1 / 2.
    np.testing.assert_allclose(normal_loss(pred.at[0].set(n[1]), n, jnp.array([True, False])),
                               1.0, rtol=1e-6)


def test_depth_loss_known_answers():
    true = jnp.array([[1.0, 2.5], [4.0, 0.0]])   # 0: background, never counted
    pred = jnp.array([[2.0, 5.0], [8.0, 123.0]])
    np.testing.assert_allclose(depth_loss(pred, true), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(depth_loss(true / 2, true), math.log(2), rtol=1e-6)
    mixed = pred.at[0, 1].set(2.5 * math.e)   # pixel (0, 1) off by e instead of 2
    np.testing.assert_allclose(depth_loss(mixed, true), (2 * math.log(2) + 1) / 3, rtol=1e-6)
    np.testing.assert_allclose(depth_loss(mixed, true, jnp.array([[True, False], [True, True]])),
                               math.log(2), rtol=1e-6)
    # d/dp |log p - log t| = 1 / p where p > t, divided by the 3 valid pixels.
    grad = jax.grad(depth_loss)(pred, true)
    np.testing.assert_allclose(grad, [[1 / 6, 1 / 15], [1 / 24, 0.0]], rtol=1e-6)


def test_losses_with_nothing_valid_are_zero_with_finite_gradients():
    logits = jnp.array([[1.0, -1.0], [0.0, 2.0]])
    labels = jnp.array([7, -3])   # out of range, but masked
    none = jnp.zeros(2, bool)
    cases = [
        (lambda p: segmentation_loss(p, labels, none), logits),
        (lambda p: normal_loss(p, jnp.zeros((2, 3))), jnp.zeros((2, 3))),
        (lambda p: normal_loss(p, jnp.ones((2, 3)), none), jnp.ones((2, 3))),
        (lambda p: depth_loss(p, jnp.zeros(2)), jnp.array([0.0, -1.0])),
        (lambda p: depth_loss(p, jnp.ones(2), none), jnp.array([0.0, 1.0])),
    ]
    for loss, x in cases:
        value, grad = jax.jit(jax.value_and_grad(loss))(x)
        assert value == 0.0
        assert np.all(grad == 0.0)


# ---------------------------------------------------------------------------------------
# Metrics: answers by hand.

def test_mean_iou_by_hand_leaves_out_absent_classes():
    true = jnp.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 1, 1],
                      [2, 2, 2, 2]])
    pred = jnp.array([[0, 0, 0, 1],
                      [0, 1, 1, 1],
                      [2, 2, 1, 1],
                      [2, 2, 2, 1]])
    # class 0: |pred| 4, |true| 4, intersection 3 -> 3 / 5
    # class 1: |pred| 7, |true| 6, intersection 5 -> 5 / 8
    # class 2: |pred| 5, |true| 6, intersection 5 -> 5 / 6
    # class 3: in neither, left out (counting it as 0 would give 0.515, as 1 0.765)
    want = (3 / 5 + 5 / 8 + 5 / 6) / 3
    np.testing.assert_allclose(mean_iou(pred, true, 4), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(mean_iou, static_argnums=2)(pred, true, 4), want,
                               rtol=1e-6)


def test_mean_iou_accumulates_over_the_batch():
    true = jnp.array([[[0, 0], [0, 0]], [[0, 1], [1, 1]]])
    pred = jnp.array([[[0, 0], [0, 0]], [[1, 1], [1, 1]]])
    # Summed over both images: class 0 IoU 4 / 5, class 1 IoU 3 / 4. (Averaging the
    # images' mIoUs instead would give (1 + (0 + 3 / 4) / 2) / 2 = 0.6875.)
    np.testing.assert_allclose(mean_iou(pred, true, 2), (4 / 5 + 3 / 4) / 2, rtol=1e-6)
    valid = jnp.ones((2, 2, 2), bool).at[1, 0, 0].set(False)   # the one mistake
    np.testing.assert_allclose(mean_iou(pred, true, 2, valid), 1.0, rtol=1e-6)
    assert np.isnan(mean_iou(pred, true, 2, jnp.zeros((2, 2, 2), bool)))


def test_angle_errors_of_known_rotations():
    true, pred = _rotated_fields([10.0, 40.0, 10.0, 40.0])
    errors = angle_errors(pred.reshape(1, 2, 2, 3), true.reshape(1, 2, 2, 3))
    want = {"mean": 25.0, "median": 25.0, "within_11.25": 50.0, "within_22.5": 50.0,
            "within_30": 50.0}
    assert set(errors) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(errors[key], value, rtol=1e-4, err_msg=key)

    # Five pixels, the last (a 90-degree error) not valid.
    true, pred = _rotated_fields([25.0, 5.0, 50.0, 20.0, 90.0], seed=1)
    errors = angle_errors(pred, true, jnp.array([True, True, True, True, False]))
    want = {"mean": 25.0, "median": 22.5, "within_11.25": 25.0, "within_22.5": 50.0,
            "within_30": 75.0}
    for key, value in want.items():
        np.testing.assert_allclose(errors[key], value, rtol=1e-4, err_msg=key)

    # Zero true normals (the background) are left out by default; none left: NaN.
    errors = angle_errors(pred, np.concatenate([true[:4], np.zeros((1, 3))]))
    np.testing.assert_allclose(errors["mean"], 25.0, rtol=1e-4)
    assert all(np.isnan(v) for v in angle_errors(pred, np.zeros_like(true)).values())


def test_depth_errors_of_a_ten_percent_overestimate():
    true = jnp.array([1.0, 2.0, 3.0, 4.0, 0.0])   # the last: background, never counted
    pred = (true * 1.1).at[4].set(5.0)
    errors = depth_errors(pred, true)
    want = {"abs_rel": 0.1,
            "sq_rel": 0.01 * (1 + 2 + 3 + 4) / 4,      # mean (0.1 t)^2 / t
            "rmse": 0.1 * math.sqrt((1 + 4 + 9 + 16) / 4),
            "rmse_log": math.log(1.1),
            "rmse_scale_inv": 0.0}                      # a global scale costs nothing
    assert set(errors) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(errors[key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    # d = log(pred / true) = (0, 1): rmse_log sqrt(1 / 2), scale-invariant sqrt(1/2 - 1/4).
    errors = depth_errors(jnp.array([2.0, 2.0 * math.e]), jnp.array([2.0, 2.0]))
    np.testing.assert_allclose(errors["rmse_log"], math.sqrt(0.5), rtol=1e-6)
    np.testing.assert_allclose(errors["rmse_scale_inv"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(errors["abs_rel"], (math.e - 1) / 2, rtol=1e-6)
    assert all(np.isnan(v) for v in depth_errors(true, true, jnp.zeros(5, bool)).values())


# ---------------------------------------------------------------------------------------
# Invariants.

@SETTINGS
@given(k=st.integers(1, 5), data=st.data())
def test_mean_iou_of_a_perfect_prediction_is_one(k, data):
    labels = data.draw(arrays(np.int32, (2, 4, 4), elements=st.integers(0, k - 1)))
    np.testing.assert_allclose(mean_iou(labels, labels, k), 1.0, rtol=1e-6)


@SETTINGS
@given(data=st.data())
def test_mean_iou_is_symmetric_and_blind_to_class_names(data):
    pred, true = (data.draw(arrays(np.int32, (2, 3, 3), elements=st.integers(0, 3)))
                  for _ in range(2))
    perm = np.asarray(data.draw(st.permutations(range(4))))
    value = mean_iou(pred, true, 4)
    np.testing.assert_allclose(mean_iou(true, pred, 4), value, rtol=1e-6)
    np.testing.assert_allclose(mean_iou(perm[pred], perm[true], 4), value, rtol=1e-6)


_angles = arrays(np.float64, (6, 2), elements=st.floats(0.0, 1.0))


def _directions(a):
    """Unit vectors from (n, 2) numbers in [0, 1]: uniform cos(polar) and azimuth."""
    cos_t, phi = 2 * a[:, 0] - 1, 2 * np.pi * a[:, 1]
    sin_t = np.sqrt(1 - cos_t ** 2)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], -1)


@SETTINGS
@given(pred=_angles, true=_angles, axis=arrays(np.float64, (1, 2), elements=st.floats(0, 1)),
       angle=st.floats(-np.pi, np.pi),
       scale=arrays(np.float64, (6, 1), elements=st.floats(0.1, 10.0)))
def test_angle_errors_match_float64_and_ignore_rotation_and_scale(pred, true, axis, angle, scale):
    pred, true = _directions(pred), _directions(true)
    errors = np.degrees(np.arccos(np.clip(np.sum(pred * true, -1), -1, 1)))
    assume(np.all(np.abs(errors[:, None] - np.array(tasks.ANGLE_THRESHOLDS)) > 0.1))
    want = {"mean": np.mean(errors), "median": np.median(errors),
            **{f"within_{t:g}": 100 * np.mean(errors <= t) for t in tasks.ANGLE_THRESHOLDS}}
    axis = np.broadcast_to(_directions(axis), pred.shape)
    angle = np.full(len(pred), angle)
    moved = angle_errors(scale * _rotate(pred, axis, angle), _rotate(true, axis, angle),
                         np.ones(6, bool))
    for key, value in want.items():
        # float32 arccos is good to ~0.03 degrees near 0 and 180 degrees
        np.testing.assert_allclose(moved[key], value, atol=0.05, err_msg=key)


@SETTINGS
@given(pred=arrays(np.float64, (2, 3, 3), elements=st.floats(0.1, 10.0)),
       true=arrays(np.float64, (2, 3, 3), elements=st.floats(0.1, 10.0)),
       s=st.floats(0.1, 10.0), c=st.floats(0.1, 10.0))
def test_depth_errors_under_scaling(pred, true, s, c):
    base = depth_errors(pred, true)
    both = depth_errors(s * pred, s * true)
    for key in ("abs_rel", "rmse_log", "rmse_scale_inv"):
        np.testing.assert_allclose(both[key], base[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in ("sq_rel", "rmse"):   # metres: scale with the scene
        np.testing.assert_allclose(both[key], s * base[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(depth_errors(c * pred, true)["rmse_scale_inv"],
                               base["rmse_scale_inv"], rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Bad input.

_LOGITS, _LABELS = jnp.zeros((2, 3, 3, 4)), jnp.zeros((2, 3, 3), jnp.int32)
_N = jnp.ones((2, 3, 3, 3))
_D = jnp.ones((2, 3, 3))


@pytest.mark.parametrize("call, name", [
    (lambda: segmentation_loss(_LOGITS, _LABELS[:, :2]), "labels"),
    (lambda: segmentation_loss(_LOGITS, _LABELS.astype(float)), "labels"),
    (lambda: segmentation_loss(_LOGITS, _LABELS, jnp.ones((2, 3), bool)), "valid"),
    (lambda: normal_loss(_N[..., :2], _N[..., :2]), "pred_normals"),
    (lambda: normal_loss(_N, _N[:1]), "true_normals"),
    (lambda: depth_loss(_D, _D[..., :2]), "true_depth"),
    (lambda: mean_iou(_LABELS, _LABELS, 0), "num_classes"),
    (lambda: mean_iou(_LABELS, _LABELS, 2.0), "num_classes"),
    (lambda: mean_iou(_LABELS, _LABELS[0], 2), "true_labels"),
    (lambda: mean_iou(_LABELS.astype(float), _LABELS, 2), "pred_labels"),
    (lambda: angle_errors(_N, _N[..., 0, :]), "true_normals"),
    (lambda: angle_errors(_N, _N, jnp.ones((2, 3, 3, 3), bool)), "valid"),
    (lambda: depth_errors(_D, _D[0]), "true_depth"),
    (lambda: UNet(0).init(jax.random.key(0), _N), "num_outputs"),
    (lambda: Segmentation(num_classes=0), "num_classes"),
    (lambda: Segmentation(features=()), "features"),
    (lambda: NormalsDepth(features=(8, 0)), "features"),
    (lambda: NormalsDepth(min_depth=0.0), "min_depth"),
    (lambda: NormalsDepth(depth_weight=-1.0), "depth_weight"),
])
def test_bad_input_raises_value_error_naming_it(call, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        call()
