"""LibraryShapes: textured library objects as a validation set the grammar cannot make."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from render import sdf_render, shapes
from render.spec import NUM_SHAPES, SCALE_RANGE
from simopt_jax.library import LibraryShapes, validation_set

LIB = LibraryShapes(num_examples=12, resolution=(16, 16))
KEY = jax.random.key(0)


@functools.lru_cache(maxsize=None)
def _jitted(library):
    return jax.jit(library.__call__)


@functools.lru_cache(maxsize=None)
def _render(library=LIB, key_seed=0):
    return tuple(np.asarray(a) for a in _jitted(library)(jax.random.key(key_seed)))


def test_shapes_dtypes_and_determinism():
    images, normals, depth = _render()
    assert images.shape == (12, 16, 16, 3) and normals.shape == (12, 16, 16, 3)
    assert depth.shape == (12, 16, 16)
    assert images.dtype == normals.dtype == depth.dtype == np.float32
    for a, b in zip(_render(), _jitted(LIB)(KEY)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_render()[2], _render(key_seed=1)[2])
    assert np.all((images >= 0) & (images <= 1))


def test_labels_are_unit_normals_on_the_object_and_zero_elsewhere():
    images, normals, depth = _render()
    fg = depth > 0
    assert fg.any(axis=(1, 2)).all() and (~fg).any(axis=(1, 2)).all()
    np.testing.assert_allclose(np.linalg.norm(normals[fg], axis=-1), 1.0, atol=1e-4)
    assert np.all(normals[~fg] == 0) and np.all(depth[~fg] == 0) and np.all(images[~fg] == 0)


def test_normals_face_the_camera_and_hits_lie_in_the_centred_bounding_sphere():
    _, normals, depth = _render()
    draws = LIB.draws(KEY)
    facing = []
    for i in range(LIB.num_examples):
        dirs, forward = (np.asarray(a) for a in sdf_render.camera_rays(
            draws.eye[i], (0.0, 0.0, 0.0), LIB.resolution, LIB.config.fov))
        fg = depth[i] > 0
        dots = np.sum(normals[i][fg] * dirs[fg], -1)
        assert np.mean(dots < 0) > 0.9, i   # sphere tracing may stop by a silhouette edge
        facing.append(dots < 0)
        t = depth[i][fg] / (dirs[fg] @ forward)
        points = np.asarray(draws.eye[i]) + t[:, None] * dirs[fg]
        _, radius = shapes.bounding_sphere(draws.class_id[i], draws.shape_id[i])
        assert np.linalg.norm(points, axis=-1).max() <= 1.001 * float(radius * draws.scale[i])
    assert np.mean(np.concatenate(facing)) > 0.98


def test_draws_cover_every_class_and_stay_in_range():
    draws = jax.jit(dataclasses.replace(LIB, num_examples=60).draws)(KEY)
    class_id, shape_id = np.asarray(draws.class_id), np.asarray(draws.shape_id)
    assert set(class_id) == {0, 1, 2}
    assert np.all((shape_id >= 0) & (shape_id < np.asarray(NUM_SHAPES)[class_id]))
    low, high = np.asarray(SCALE_RANGE)[class_id].T
    assert np.all((np.asarray(draws.scale) >= low) & (np.asarray(draws.scale) <= high))
    np.testing.assert_allclose(np.linalg.norm(draws.eye, axis=-1), LIB.distance, rtol=1e-5)
    mugs = dataclasses.replace(LIB, num_examples=20, classes=(1,)).draws(KEY)
    assert np.all(np.asarray(mugs.class_id) == 1)
    assert len(set(np.asarray(mugs.shape_id))) > 5


def test_texture_changes_rgb_only():
    plain = _render(dataclasses.replace(LIB, textured=False))
    textured = _render()
    np.testing.assert_array_equal(plain[1], textured[1])
    np.testing.assert_array_equal(plain[2], textured[2])
    fg = textured[2] > 0
    # Untextured objects are grey like grammar renders; textured ones are coloured.
    assert np.ptp(plain[0][fg], axis=-1).max() < 1e-6
    assert np.ptp(textured[0][fg], axis=-1).mean() > 0.05
    assert np.all(textured[0][~fg] == plain[0][~fg])


def test_jit_vmap_equals_a_loop_over_examples():
    images, normals, depth = _render()
    one = jax.jit(LIB.example)
    loop = [np.stack(a) for a in zip(*(one(k) for k in jax.random.split(KEY, LIB.num_examples)))]
    np.testing.assert_array_equal(loop[2] > 0, depth > 0)
    np.testing.assert_allclose(loop[2], depth, atol=1e-5)
    fg = depth > 0
    # vmapped float reductions may round differently; at a crease of the SDF that moves
    # a gradient a little, so most pixels agree to float precision and all closely.
    for batched, looped in ((images, loop[0]), (normals, loop[1])):
        diff = np.abs(batched - looped).max(-1)[fg]
        assert np.mean(diff < 1e-4) > 0.97 and diff.max() < 0.1


def test_validation_set_is_the_call_in_any_chunking():
    whole = _render(LibraryShapes(num_examples=5, resolution=(8, 8)))
    chunked = validation_set(KEY, 5, batch_size=2, resolution=(8, 8))
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in chunked)
    assert [a.shape for a in chunked] == [a.shape for a in whole]
    np.testing.assert_array_equal(chunked[2] > 0, whole[2] > 0)
    for a, b in zip(chunked, whole):   # other batch sizes may round differently
        np.testing.assert_allclose(a, b, atol=0.1)
        assert np.mean(np.abs(a - b) < 1e-4) > 0.97
    for a, b in zip(chunked, validation_set(KEY, 5, batch_size=2, resolution=(8, 8))):
        np.testing.assert_array_equal(a, b)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="num_examples"):
        LibraryShapes(num_examples=0)
    with pytest.raises(ValueError, match="distance"):
        LibraryShapes(distance=-1.0)
    with pytest.raises(ValueError, match="elevation"):
        LibraryShapes(elevation=(1.0, 0.5))
    with pytest.raises(ValueError, match="classes"):
        LibraryShapes(classes=(3,))
    with pytest.raises(ValueError, match="classes"):
        LibraryShapes(classes=())
    with pytest.raises(ValueError, match="light_direction"):
        LibraryShapes(light_direction=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="batch_size"):
        validation_set(KEY, 4, batch_size=0)
