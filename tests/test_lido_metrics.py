"""lido_jax.metrics: known answers by hand, invariants by hypothesis, one rendered scene."""

import functools
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import render
from lido_jax import metrics

RES = (64, 48)
F = RES[0] / (2 * math.tan(math.radians(25.0)))      # focal length in pixels, by hand


@pytest.fixture(scope="module")
def gt():
    return render.random_scene(jax.random.key(0), num_objects=3, max_objects=4)


def _objects(scene, **fields):
    return scene.replace(objects=scene.objects.replace(**fields))


def _camera(scene, height, elevation):
    return scene.replace(camera=render.Camera(height=np.float32(height),
                                              elevation=np.float32(elevation)))


def _depth(scene, k):
    """Camera-space depth of object k's contact point, by hand."""
    h, el = float(scene.camera.height), float(scene.camera.elevation)
    return h * math.sin(el) + float(scene.objects.position[k, 1]) * math.cos(el)


def test_identical_scenes_have_zero_errors_and_nan_for_padding(gt):
    errors = metrics.lv_errors(gt, gt, RES)
    assert tuple(errors) == metrics.LV_SETS
    for name, e in errors.items():
        if name in metrics.OBJECT_LV_SETS:
            assert e.shape == (4,) and np.all(np.isnan(e[3:])), name
            np.testing.assert_allclose(e[:3], 0.0, atol=1e-4, err_msg=name)
        else:
            assert e.shape == (1,)
            np.testing.assert_allclose(e, 0.0, atol=1e-4, err_msg=name)


def test_position_error_of_a_sideways_move_is_focal_times_shift_over_depth(gt):
    dx = 0.05
    pred = _objects(gt, position=gt.objects.position.at[1, 0].add(dx))
    e = metrics.object_position_error(pred, gt, RES)
    # Moving along x keeps the depth: the column moves by f dx / depth.
    np.testing.assert_allclose(e[1], F * dx / _depth(gt, 1), rtol=1e-4)
    np.testing.assert_allclose(e[[0, 2]], 0.0, atol=1e-4)
    assert np.isnan(e[3])
    # Same contact points seen from another camera: positions in the image differ.
    moved = _camera(gt, float(gt.camera.height) * 0.8, gt.camera.elevation)
    assert np.all(metrics.object_position_error(moved, gt, RES)[:3] > 0.5)


def test_position_error_of_a_move_in_depth_at_a_level_camera(gt):
    # elevation 0: (row, col) = centre + f (h, x) / z, so moving z to 1.5 z moves the
    # point by f |(h, x)| (1/z - 1/(1.5 z)).
    level = _camera(gt, 0.4, 0.0)
    pred = _objects(level, position=level.objects.position.at[0, 1].mul(1.5))
    x, z = (float(v) for v in level.objects.position[0])
    e = metrics.object_position_error(pred, level, RES)
    np.testing.assert_allclose(e[0], F * math.hypot(0.4, x) * (1 / z - 1 / (1.5 * z)), rtol=1e-4)


def test_size_error_of_doubled_scale_equals_the_projected_size(gt):
    pred = _objects(gt, scale=gt.objects.scale * 2)
    e = metrics.object_size_error(pred, gt, RES)
    expected = [float(gt.objects.scale[k]) * F / _depth(gt, k) for k in range(3)]
    np.testing.assert_allclose(e[:3], expected, rtol=1e-4)
    np.testing.assert_allclose(metrics.projected_size(gt, RES)[:3], expected, rtol=1e-4)
    assert np.isnan(e[3])


def test_azimuth_error_wraps_around():
    deg = np.radians
    np.testing.assert_allclose(metrics.angle_difference(deg(350.0), deg(10.0)), 20.0, atol=1e-9)
    np.testing.assert_allclose(metrics.angle_difference(deg(10.0), deg(350.0)), 20.0, atol=1e-9)
    np.testing.assert_allclose(metrics.angle_difference(0.0, math.pi), 180.0, atol=1e-9)
    np.testing.assert_allclose(metrics.angle_difference(deg(30.0), deg(100.0)), 70.0, atol=1e-9)


def test_azimuth_error_of_scenes(gt):
    az = np.radians(np.array([350.0, 0.0, 45.0, 0.0], np.float32))
    truth = _objects(gt, azimuth=np.radians(np.array([10.0, 180.0, 45.0, 90.0], np.float32)))
    e = metrics.azimuth_error(_objects(gt, azimuth=az), truth)
    np.testing.assert_allclose(e[:3], [20.0, 180.0, 0.0], atol=1e-4)
    assert np.isnan(e[3])


@settings(max_examples=25, deadline=None)
@given(a=st.floats(-10.0, 10.0), b=st.floats(-10.0, 10.0), turns=st.integers(-3, 3))
def test_angle_difference_is_a_symmetric_wrapped_distance(a, b, turns):
    d = metrics.angle_difference(a, b)
    assert 0.0 <= d <= 180.0
    np.testing.assert_allclose(metrics.angle_difference(b, a), d, atol=1e-9)
    np.testing.assert_allclose(metrics.angle_difference(a + 2 * math.pi * turns, b), d, atol=1e-8)


def test_normalized_rgb_by_hand():
    np.testing.assert_allclose(metrics.normalized_rgb([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(metrics.normalized_rgb([1.0, 1.0, 2.0]), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(metrics.normalized_rgb([0.0, 0.0, 0.0]), [1 / 3] * 3)
    # red vs yellow: (1, 0, 0) - (1/2, 1/2, 0), RMSE over 3 components = sqrt(1/6).
    np.testing.assert_allclose(metrics.colour_error([1.0, 0.0, 0.0], [1.0, 1.0, 0.0]),
                               math.sqrt(1 / 6), rtol=1e-12)
    np.testing.assert_allclose(metrics.colour_error([[0.0, 0.0, 0.0]], [[0.4, 0.4, 0.4]]), [0.0])


@settings(max_examples=20, deadline=None)
@given(rgb=st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), factor=st.floats(0.05, 20.0))
def test_colour_error_ignores_brightness(rgb, factor):
    rgb = np.asarray(rgb)
    assert metrics.colour_error(factor * rgb, rgb) < 1e-12


def test_object_and_ground_colour_errors(gt):
    rgb = np.array(gt.objects.rgb)
    pred_rgb = rgb * np.array([[0.5], [1.0], [1.0], [1.0]], np.float32)   # slot 0: darker only
    pred_rgb[1], rgb[1] = [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]              # slot 1: red vs yellow
    e = metrics.object_colour_error(_objects(gt, rgb=pred_rgb), _objects(gt, rgb=rgb))
    np.testing.assert_allclose(e[:3], [0.0, math.sqrt(1 / 6), 0.0], atol=1e-6)
    assert np.isnan(e[3])
    scene = gt.replace(ground_rgb=np.array([0.0, 0.0, 0.9], np.float32))
    other = gt.replace(ground_rgb=np.array([0.0, 0.3, 0.3], np.float32))
    # (0, 0, 1) vs (0, 1/2, 1/2): sqrt((1/4 + 1/4) / 3)
    assert isinstance(metrics.ground_colour_error(scene, other), float)
    np.testing.assert_allclose(metrics.ground_colour_error(scene, other), math.sqrt(1 / 6), rtol=1e-6)


def test_sphere_points_are_unit_and_spread_evenly():
    p = metrics.sphere_points()
    assert p.shape == (313, 3)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-12)
    assert np.linalg.norm(p.mean(0)) < 2e-3
    np.testing.assert_array_equal(p, metrics.sphere_points(313))
    # Nearest-neighbour distances all close to the spacing of 313 equal cells.
    d = np.linalg.norm(p[:, None] - p[None], axis=-1) + 10 * np.eye(313)
    nearest = d.min(1)
    spacing = math.sqrt(4 * math.pi / 313)
    assert 0.7 * spacing < nearest.min() and nearest.max() < 1.3 * spacing


def _light(ambient, strength, azimuth, elevation):
    return render.Light(ambient=np.float32(ambient), strength=np.float32(strength),
                        azimuth=np.float32(azimuth), elevation=np.float32(elevation))


def test_lighting_error_known_cases(gt):
    assert metrics.lighting_error(gt, gt) == 0.0
    light = _light(0.3, 1.2, 1.0, 0.7)
    scaled = _light(0.3 * 2.5, 1.2 * 2.5, 1.0, 0.7)
    assert metrics.lighting_error(scaled, light) < 1e-6
    turned = _light(0.3, 1.2, 1.0 + math.pi / 2, 0.7)
    assert metrics.lighting_error(turned, light) > 0.1
    # Uniform light vs a pure directional one: shading 1 vs 4 max(n.l, 0) after
    # normalising (mean of max(n.l, 0) over the sphere is 1/4, of its square 1/6),
    # so RMSE^2 = 16/6 - 2 * 4/4 + 1 = 5/3.
    uniform, sun = _light(0.7, 0.0, 0.0, 0.0), _light(0.0, 1.5, 2.0, 0.4)
    np.testing.assert_allclose(metrics.lighting_error(uniform, sun), math.sqrt(5 / 3), rtol=5e-3)
    np.testing.assert_allclose(metrics.lighting_error(sun, uniform), math.sqrt(5 / 3), rtol=5e-3)
    # A light dark everywhere counts as uniform.
    assert metrics.lighting_error(_light(0.0, 0.0, 0.0, 0.0), uniform) == 0.0


def test_lighting_error_grows_with_azimuth_difference():
    light = _light(0.2, 1.0, 0.5, 0.3)
    errors = [metrics.lighting_error(_light(0.2, 1.0, 0.5 + d, 0.3), light)
              for d in (0.0, 0.2, 0.6, 1.5, math.pi)]
    assert errors[0] < 1e-6 and np.all(np.diff(errors) > 0)


def test_checkerboard_is_centred_where_the_optical_axis_meets_the_ground(gt):
    cam = render.Camera(height=np.float32(0.5), elevation=np.float32(math.radians(30.0)))
    board = metrics.checkerboard(cam)
    assert board.shape == (81, 3) and np.all(board[:, 1] == 0)
    z_c = 0.5 / math.tan(math.radians(30.0))
    np.testing.assert_allclose(board.mean(0), [0.0, 0.0, z_c], atol=1e-6)
    np.testing.assert_allclose(np.ptp(board[:, [0, 2]], axis=0), [0.8, 0.8], atol=1e-12)
    # Its centre projects to the image centre.
    centre = np.asarray(render.camera.project(cam, np.array([0.0, 0.0, z_c]), RES))
    np.testing.assert_allclose(centre, [(RES[0] - 1) / 2, (RES[1] - 1) / 2], atol=1e-3)
    level = metrics.checkerboard(render.Camera(height=np.float32(0.5), elevation=np.float32(0.0)))
    np.testing.assert_allclose(level.mean(0), [0.0, 0.0, metrics.CHECKER_FAR], atol=1e-9)
    steep = metrics.checkerboard(render.Camera(height=np.float32(0.05), elevation=np.float32(1.3)))
    np.testing.assert_allclose(steep[:, 2].min(), metrics.CHECKER_NEAR - 0.4, atol=1e-9)
    np.testing.assert_array_equal(metrics.checkerboard(gt), metrics.checkerboard(gt.camera))


def test_camera_error_of_a_height_change_at_a_level_camera(gt):
    # elevation 0: the board sits at z in 4 +- 0.4 m and each corner's row moves by
    # f |dh| / z, so RMSE = f |dh| sqrt(mean(1 / z^2)).
    truth, pred = _camera(gt, 0.5, 0.0), _camera(gt, 0.45, 0.0)
    z = 4.0 + 0.1 * np.arange(-4, 5)
    expected = F * 0.05 * math.sqrt(np.mean(1 / z ** 2))
    np.testing.assert_allclose(metrics.camera_error(pred, truth, RES), expected, rtol=1e-4)
    assert metrics.camera_error(truth, truth, RES) == 0.0


def test_camera_error_grows_with_elevation_change(gt):
    truth = _camera(gt, 0.4, 0.6)
    errors = [metrics.camera_error(_camera(gt, 0.4, 0.6 + d), truth, RES)
              for d in (0.0, 0.01, 0.03, 0.1, 0.2)]
    assert errors[0] == 0.0 and np.all(np.diff(errors) > 0)
    # A small tilt moves the image centre by about f d pixels.
    np.testing.assert_allclose(errors[1], F * 0.01, rtol=0.15)


def test_mask_iou_by_hand():
    a = np.array([[2, 2, 0], [1, 1, 1]])
    b = np.array([[2, 0, 0], [2, 1, 1]])
    assert metrics.mask_iou(a, b, 2) == pytest.approx(1 / 3)
    assert metrics.mask_iou(a, b, 1) == pytest.approx(2 / 3)
    assert metrics.mask_iou(a, a, 2) == 1.0
    assert metrics.mask_iou(a, np.zeros_like(a), 2) == 0.0
    assert math.isnan(metrics.mask_iou(a, b, 5))
    with pytest.raises(ValueError):
        metrics.mask_iou(a, b[:, :2], 2)


@pytest.fixture(scope="module")
def hand_scene():
    """GT scene at 9 x 6 pixels: object 0 at the ground point of row 3.5, object 1 of
    row 6.2, slot 2 invalid with a far-away contact point (row 1.5)."""
    res = (9, 6)
    scene = render.random_scene(jax.random.key(3), num_objects=2, max_objects=3)
    scene = _camera(scene, 0.5, 0.3)
    rows = np.array([[3.5, 2.5], [6.2, 1.5], [1.5, 2.5]])
    position = np.asarray(render.camera.ground_point(scene.camera, rows, res), np.float32)
    scene = _objects(scene, position=position)
    instance = np.zeros(res, np.int32)
    instance[2:] = 1
    instance[3, 2:4] = 2          # object 0, above the cut
    instance[5, 1:3] = 3          # object 1
    return scene, instance, res


def test_ground_mask_cuts_at_the_farthest_gt_contact_point(hand_scene):
    scene, instance, res = hand_scene
    assert metrics.ground_cut_row(scene, res) == pytest.approx(3.5, abs=1e-3)
    expected = (instance == 1) & (np.arange(9)[:, None] >= 4)
    np.testing.assert_array_equal(metrics.ground_mask(instance, scene, res), expected)
    np.testing.assert_array_equal(metrics.ground_mask(instance, scene), expected)
    assert np.count_nonzero(expected) == 28
    # The predicted image is cut at the GT line too: 4 ground pixels lost below it.
    pred = instance.copy()
    pred[6:8, 4:6] = 2
    pred[0, :] = 1                # superfluous ground above the cut does not count
    assert metrics.ground_iou(pred, instance, scene, res) == pytest.approx(24 / 28)
    assert metrics.ground_iou(instance, instance, scene) == 1.0
    with pytest.raises(ValueError):
        metrics.ground_mask(instance, scene, (8, 6))


def test_object_ious_and_masked_mses_by_hand(hand_scene):
    scene, instance, _ = hand_scene
    pred = instance.copy()
    pred[3, 2:4] = 1              # object 0 missing from the prediction
    pred[5, 1:4] = [1, 3, 3]      # object 1 shifted by one pixel
    ious = metrics.object_ious(pred, instance, scene)
    np.testing.assert_allclose(ious[:2], [0.0, 1 / 3])
    assert np.isnan(ious[2])

    gt_rgb = np.zeros(instance.shape + (3,))
    pred_rgb = gt_rgb.copy()
    pred_rgb[5, 1] = [0.3, 0.0, 0.0]          # inside object 1's GT mask
    pred_rgb[8, 0] = [0.6, 0.6, 0.6]          # ground below the cut
    pred_rgb[2, 0] = [1.0, 1.0, 1.0]          # ground above the cut: not counted
    mses = metrics.object_mses(pred_rgb, gt_rgb, instance, scene)
    np.testing.assert_allclose(mses[:2], [0.0, 0.09 / 3 / 2])
    assert np.isnan(mses[2])
    np.testing.assert_allclose(metrics.ground_mse(pred_rgb, gt_rgb, instance, scene), 0.36 / 28)
    mask = np.zeros(instance.shape, bool)
    mask[5, 1] = True
    assert metrics.masked_mse(pred_rgb, gt_rgb, mask) == pytest.approx(0.03)
    assert metrics.masked_mse(pred_rgb[..., 0], gt_rgb[..., 0], mask) == pytest.approx(0.09)
    assert math.isnan(metrics.masked_mse(pred_rgb, gt_rgb, np.zeros_like(mask)))


def test_median_improvement_known_numbers():
    init = [1.0, 2.0, 3.0, 4.0, 100.0, np.nan]
    fit = [0.5, 1.0, 1.5, 2.0, 50.0, 0.1]
    assert metrics.median_improvement(init, fit) == pytest.approx(50.0)
    assert metrics.median_improvement([2.0, 4.0], [3.0, 5.0]) == pytest.approx(-100 / 3)
    assert metrics.median_improvement(init, init) == 0.0
    assert math.isnan(metrics.median_improvement([np.nan], [1.0]))
    assert math.isnan(metrics.median_improvement([0.0, 0.0], [1.0, 1.0]))
    with pytest.raises(ValueError):
        metrics.median_improvement([1.0, 2.0], [1.0])


@settings(max_examples=15, deadline=None)
@given(init=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=12),
       ratio=st.floats(0.0, 2.0), scale=st.floats(0.01, 100.0))
def test_median_improvement_of_a_uniform_ratio(init, ratio, scale):
    init = np.asarray(init)
    # fit = ratio * init improves by 100 (1 - ratio) %, in any unit.
    assert metrics.median_improvement(scale * init, scale * ratio * init) == pytest.approx(
        100 * (1 - ratio), abs=1e-9)


def test_wilcoxon_detects_a_clear_paired_improvement():
    rng = np.random.default_rng(0)
    b = rng.uniform(1.0, 5.0, 40)
    a = b * rng.uniform(0.5, 0.9, 40)
    better, p = metrics.wilcoxon_better(a, b)
    assert better and p < 1e-6
    better, p = metrics.wilcoxon_better(b, a)
    assert not better and p > 0.99
    # Null: same distribution, independent noise on each side.
    null_a, null_b = b + rng.normal(0, 0.3, 40), b + rng.normal(0, 0.3, 40)
    better, p = metrics.wilcoxon_better(null_a, null_b)
    assert not better and p > 0.05
    assert metrics.wilcoxon_better(b, b) == (False, 1.0)
    with_nan = metrics.wilcoxon_better(np.append(a, np.nan), np.append(b, 0.0))
    assert with_nan == metrics.wilcoxon_better(a, b)
    assert metrics.wilcoxon_better([np.nan], [np.nan]) == (False, 1.0)


def _per_scene(errors, rng, n_objects=3):
    """One lv_errors-like dict per scene with given typical error sizes."""
    out = []
    for _ in range(10):
        d = {}
        for name in metrics.LV_SETS:
            size = n_objects if name in metrics.OBJECT_LV_SETS else 1
            d[name] = errors[name] * rng.uniform(0.5, 1.5, size)
        out.append(d)
    return out


def test_improvement_table_and_markdown():
    rng = np.random.default_rng(1)
    init = _per_scene(dict.fromkeys(metrics.LV_SETS, 1.0), rng)
    lido = [{k: 0.4 * v for k, v in d.items()} for d in init]
    gbo = [{k: 0.8 * v for k, v in d.items()} for d in init]
    noisy = [{k: v * rng.uniform(0.7, 0.9, v.shape) for k, v in d.items()} for d in init]
    rows = metrics.improvement_table(init, {"GBO": gbo, "Simp": noisy, "LiDO": lido})
    assert [r.lv_set for r in rows] == list(metrics.LV_SETS)
    for r in rows:
        assert r.improvement["LiDO"] == pytest.approx(60.0)
        assert r.improvement["GBO"] == pytest.approx(20.0)
        assert r.significant == ("LiDO",)
        assert r.count == (30 if r.lv_set in metrics.OBJECT_LV_SETS else 10)
    table = metrics.markdown_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| LV name | GBO | Simp | LiDO |"
    assert lines[2].startswith("| Object position | 20.0 | ") and lines[2].endswith(" | 60.0* |")
    assert len(lines) == 2 + len(metrics.LV_SETS)
    # One method alone is better than nobody; mismatched scene counts are refused.
    assert metrics.improvement_table(init, {"LiDO": lido})[0].significant == ()
    with pytest.raises(ValueError):
        metrics.improvement_table(init, {"LiDO": lido[:-1]})


def test_all_invalid_objects_are_handled():
    empty = render.random_scene(jax.random.key(5), num_objects=0, max_objects=3)
    other = render.random_scene(jax.random.key(6), num_objects=0, max_objects=3)
    errors = metrics.lv_errors(other, empty, RES)
    for name in metrics.OBJECT_LV_SETS:
        assert errors[name].shape == (3,) and np.all(np.isnan(errors[name]))
    for name in metrics.LV_SETS[4:]:
        assert np.all(np.isfinite(errors[name]))
    instance = np.ones((5, 4), np.int32)
    instance[0] = 0
    assert metrics.ground_cut_row(empty, (5, 4)) == -math.inf
    np.testing.assert_array_equal(metrics.ground_mask(instance, empty), instance == 1)
    assert np.all(np.isnan(metrics.object_ious(instance, instance, empty)))
    assert np.all(np.isnan(metrics.object_mses(np.zeros((5, 4, 3)), np.zeros((5, 4, 3)), instance, empty)))
    assert math.isnan(metrics.median_improvement(errors["object size"], errors["object size"]))
    assert metrics.wilcoxon_better(errors["object size"], errors["object size"]) == (False, 1.0)
    rows = metrics.improvement_table([errors], {"a": [errors], "b": [errors]})
    assert math.isnan(rows[0].improvement["a"]) and rows[0].significant == () and rows[0].count == 0
    # No object slots at all, and scenes whose slots do not match.
    none = render.random_scene(jax.random.key(7), num_objects=0, max_objects=0)
    assert metrics.object_position_error(none, none, RES).shape == (0,)
    with pytest.raises(ValueError):
        metrics.object_colour_error(none, empty)


def test_evaluate_on_rendered_images(gt):
    res = (24, 24)
    draw = jax.jit(functools.partial(render.render, resolution=res, shadows=False))
    pred = _objects(gt, position=gt.objects.position.at[0, 0].add(0.1))
    gt_image, pred_image = draw(gt), draw(pred)
    same = metrics.evaluate(gt, gt, res, gt_image, gt_image)
    assert set(same) == set(metrics.LV_SETS) | set(metrics.IMAGE_MEASURES)
    seen = ~np.isnan(same["object IoU"])
    assert np.any(seen) and np.all(same["object IoU"][seen] == 1.0)
    assert same["ground IoU"] == 1.0 and same["ground MSE"] == 0.0
    moved = metrics.evaluate(pred, gt, res, pred_image, gt_image)
    np.testing.assert_allclose(moved["object position"][1:3], 0.0, atol=1e-4)
    assert moved["object position"][0] > 1.0
    if seen[0]:
        assert moved["object IoU"][0] < 1.0 and moved["object MSE"][0] > 0.0
    assert moved["ground IoU"] < 1.0
    with pytest.raises(ValueError):
        metrics.evaluate(pred, gt, res, pred_image)
