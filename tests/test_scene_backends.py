"""SceneSimulator(backend=...): the gl (and blender) renderers draw the JAX tracer's scenes.

The backends are different renderers (a sphere tracer with a hit tolerance, a
rasteriser sampling pixel centres, a path tracer), so silhouettes differ by about a
pixel. Measured on 24 scenes at 32x32 (jax vs gl): pixel agreement of the label
maps >= 0.979 per scene (0.995 on average; a left-right mirrored gl image scores
0.73 to 0.84), per-class IoU 0.95 on average (0.64 for a small, partly hidden
object), colour mean absolute difference on agreeing object pixels 0.023 (at most
0.040 per scene), and the derivative of the mean brightness in the light strengths
within 4%. The thresholds below leave a margin over those numbers and fail for a
mirrored, misplaced, wrongly lit or wrongly gamma-corrected image.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simopt_jax.scenes import BACKENDS, SceneSimulator

JAX = SceneSimulator()
GL = SceneSimulator(backend="gl")
PSI = JAX.init_psi()


def _scenes(num, seed=7):
    """``num`` samples of ``PSI``, alternating low and high quality over the regions."""
    s = jax.vmap(JAX.distribution().sample, (0, None))(jax.random.split(jax.random.key(seed), num),
                                                       PSI)
    return {**s, "layout": jnp.arange(num, dtype=s["layout"].dtype) % (2 * JAX.num_regions)}


@functools.cache
def _render(sim, num):
    images, targets = jax.jit(jax.vmap(sim.decode))(_scenes(num))
    return np.asarray(images), np.asarray(targets["labels"])


def _class_ious(a, b, min_pixels=5):
    """IoU of every class (1..3) that covers at least ``min_pixels`` of label map ``a``."""
    return [((a == c) & (b == c)).sum() / ((a == c) | (b == c)).sum()
            for c in (1, 2, 3) if (a == c).sum() >= min_pixels]


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="nope"):
        SceneSimulator(backend="nope")
    assert BACKENDS == ("jax", "gl", "blender")


def test_gl_labels_agree_with_jax():
    _, jax_labels = _render(JAX, 6)
    _, gl_labels = _render(GL, 6)
    assert set(np.unique(gl_labels)) <= {0, 1, 2, 3}
    agreement = (jax_labels == gl_labels).mean(axis=(1, 2))
    assert np.all(agreement >= 0.97), agreement
    ious = [iou for a, b in zip(jax_labels, gl_labels) for iou in _class_ious(a, b)]
    assert len(ious) >= 8 and np.mean(ious) >= 0.85, ious


def test_gl_colours_agree_with_jax_on_objects():
    jax_images, jax_labels = _render(JAX, 6)
    gl_images, gl_labels = _render(GL, 6)
    assert gl_images.dtype == np.float32 and np.all((gl_images >= 0) & (gl_images <= 1))
    diff = np.abs(jax_images - gl_images).mean(-1)
    on_objects = (jax_labels == gl_labels) & (jax_labels > 0)
    per_scene = [d[m].mean() for d, m in zip(diff, on_objects)]
    assert max(per_scene) < 0.07, per_scene
    assert diff.mean(axis=(1, 2)).max() < 0.03   # the ground and its shadows too


def test_gl_runs_under_jit_and_vmap_through_call():
    key = jax.random.key(3)
    images, targets = GL(PSI, key, 3)
    assert images.shape == (3, 32, 32, 3) and images.dtype == jnp.float32
    assert targets["labels"].shape == (3, 32, 32) and targets["labels"].dtype == jnp.int32
    _, jax_targets = JAX(PSI, key, 3)   # same key, same samples
    agreement = (np.asarray(targets["labels"]) == np.asarray(jax_targets["labels"])).mean()
    assert agreement >= 0.97


def test_gl_light_gradient_matches_jax_pathwise():
    """black_box's finite differences through pyrender against the tracer's exact gradient."""
    s = _scenes(2)   # one low, one high quality

    def light_gradient(sim):
        def brightness(light, sample):
            return sim.decode({**sample, "light": light})[0].mean()

        return np.asarray(jax.jit(jax.vmap(jax.grad(brightness)))(s["light"], s))

    exact, finite = light_gradient(JAX), light_gradient(GL)
    assert np.all(exact > 0) and np.all(finite > 0), (exact, finite)
    # Measured within 4%; 1.25x (tighter than 2x) fails a key light 0.7 times too strong.
    np.testing.assert_array_less(np.abs(np.log(finite / exact)), np.log(1.25))


def test_blender_labels_agree_with_jax():
    sim = SceneSimulator(backend="blender")
    images, bl_labels = _render(sim, 2)
    _, jax_labels = _render(JAX, 2)
    assert images.shape == (2, 32, 32, 3) and np.all((images >= 0) & (images <= 1))
    assert np.all((bl_labels == jax_labels).mean(axis=(1, 2)) >= 0.95)
    ious = [iou for a, b in zip(jax_labels, bl_labels) for iou in _class_ious(a, b)]
    assert np.mean(ious) >= 0.8, ious
