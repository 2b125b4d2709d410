"""Scene pytree, the spec table, random_scene and validate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import render
from render import spec


@pytest.fixture(scope="module")
def scene():
    return render.random_scene(jax.random.key(0), num_objects=5)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, spec.MAX_OBJECTS))
def test_random_scene_is_valid(seed, n):
    s = render.random_scene(jax.random.key(seed), num_objects=n)
    assert render.validate(s) is s
    assert int(s.objects.valid.sum()) == n
    assert s.objects.position.shape == (spec.MAX_OBJECTS, 2)


def test_random_scene_objects_in_front_of_camera(scene):
    # Contact points were back-projected from image points below the horizon.
    x, z = np.asarray(scene.objects.position).T
    assert np.all(z > 0)
    assert np.all(np.abs(x) < z * math.tan(spec.VERTICAL_FOV / 2) + 1e-6)


def test_random_scene_rejects_bad_count():
    with pytest.raises(ValueError, match="num_objects"):
        render.random_scene(jax.random.key(0), num_objects=spec.MAX_OBJECTS + 1)


def test_batched_scene_validates():
    scenes = jax.vmap(render.random_scene)(jax.random.split(jax.random.key(1), 3))
    render.validate(scenes)


def test_scene_is_a_pytree_with_replace(scene):
    leaves = jax.tree_util.tree_leaves(scene)
    assert len(leaves) == 2 + 4 + 1 + 7
    moved = scene.replace(camera=scene.camera.replace(height=jnp.float32(0.3)))
    assert float(moved.camera.height) == pytest.approx(0.3)
    assert float(scene.camera.height) != pytest.approx(0.3)


def _set(scene, path, value):
    """Returns the scene with the leaf at dotted `path` replaced."""
    head, _, tail = path.partition(".")
    if not tail:
        return scene.replace(**{head: value})
    return scene.replace(**{head: _set(getattr(scene, head), tail, value)})


def _get(scene, path):
    for name in path.split("."):
        scene = getattr(scene, name)
    return scene


@pytest.mark.parametrize("path", sorted(spec.FIELDS))
def test_validate_names_out_of_range_field(scene, path):
    f = spec.FIELDS[path]
    x = np.array(_get(scene, path))
    x[(0,) * x.ndim] = np.max(np.asarray(f.high)) + 1.0
    with pytest.raises(ValueError, match=rf"^{path}: value .* outside the allowed range"):
        render.validate(_set(scene, path, jnp.asarray(x)))


@pytest.mark.parametrize("path", sorted(spec.FIELDS))
def test_validate_names_nan_field(scene, path):
    x = np.array(_get(scene, path))
    x[(0,) * x.ndim] = np.nan
    with pytest.raises(ValueError, match=rf"^{path}: contains NaN"):
        render.validate(_set(scene, path, jnp.asarray(x)))


@pytest.mark.parametrize("path", sorted(spec.FIELDS))
def test_validate_names_wrong_shape(scene, path):
    x = np.asarray(_get(scene, path))
    with pytest.raises(ValueError, match=rf"^{path}: shape"):
        render.validate(_set(scene, path, jnp.concatenate([x.ravel(), x.ravel()[:1]])))


@pytest.mark.parametrize("path, value, kind", [
    ("objects.valid", np.ones(spec.MAX_OBJECTS, np.float32), "bool"),
    ("objects.class_id", np.zeros(spec.MAX_OBJECTS, np.float32), "int"),
    ("camera.height", np.int32(1), "float"),
])
def test_validate_names_wrong_dtype(scene, path, value, kind):
    with pytest.raises(ValueError, match=rf"^{path}: dtype .* is not {kind}"):
        render.validate(_set(scene, path, value))


def test_validate_names_bad_class_and_shape(scene):
    cls = np.array(scene.objects.class_id)
    cls[0] = 3
    with pytest.raises(ValueError, match=r"^objects.class_id: value 3 outside .*\[0, 2\]"):
        render.validate(_set(scene, "objects.class_id", cls))
    cls[0] = 0                                      # stapler has 6 shapes: 0..5
    shp = np.array(scene.objects.shape_id)
    shp[0] = 6
    s = _set(_set(scene, "objects.class_id", cls), "objects.shape_id", shp)
    with pytest.raises(ValueError, match=r"^objects.shape_id: value 6 outside .*\[0, 5\] for class 'stapler'"):
        render.validate(s)


def test_validate_checks_scale_per_class(scene):
    cls = np.array(scene.objects.class_id)
    cls[0] = 1                                      # mug: 0.07-0.10 m
    scale = np.array(scene.objects.scale)
    scale[0] = 0.15                                 # in the global range, too big for a mug
    s = _set(_set(scene, "objects.class_id", cls), "objects.scale", scale)
    with pytest.raises(ValueError, match=r"^objects.scale: value 0.15 .*for class 'mug'"):
        render.validate(s)


def test_validate_ignores_padding(scene):
    # Padded (invalid) objects may hold anything, e.g. NaN.
    rgb = np.array(scene.objects.rgb)
    rgb[~np.asarray(scene.objects.valid)] = np.nan
    render.validate(_set(scene, "objects.rgb", rgb))


def test_validate_rejects_non_scene():
    with pytest.raises(ValueError, match="render.Scene"):
        render.validate({"camera": None})


def test_standardize_round_trip():
    rng = np.random.default_rng(0)
    for path, f in spec.FIELDS.items():
        lo, hi = np.asarray(f.low), np.asarray(f.high)
        x = lo + (hi - lo) * rng.uniform(size=(1000,) + f.shape)
        z = spec.standardize(path, x)
        np.testing.assert_allclose(spec.unstandardize(path, z), x, rtol=1e-6, atol=1e-9)
        if not f.periodic:   # zero mean, unit variance under the uniform prior
            np.testing.assert_allclose(z.mean(0), 0.0, atol=0.1)
            np.testing.assert_allclose(z.std(0), 1.0, atol=0.05)
        else:
            assert z.shape == x.shape + (2,)
