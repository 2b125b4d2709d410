"""ShapeSimulator: grammar shapes rendered with normals and depth, into the hybrid step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simopt_jax import Grammar, NormalsDepth, hybrid
from simopt_jax.simulators import ShapeSimulator

SIM = ShapeSimulator(Grammar(max_depth=2), num_examples=6, resolution=(16, 16))


@functools.lru_cache(maxsize=None)
def _simulate():
    return jax.jit(SIM.__call__)


def test_deterministic_and_labels_agree_with_the_image():
    psi, key = Grammar.init_psi(), jax.random.key(0)
    images, normals, depth = _simulate()(psi, key)
    again = _simulate()(psi, key)
    for a, b in zip((images, normals, depth), again):
        np.testing.assert_array_equal(a, b)
    assert images.shape == (6, 16, 16, 3) and normals.shape == (6, 16, 16, 3)
    assert depth.shape == (6, 16, 16)
    fg = np.asarray(depth) > 0
    assert fg.sum() > 0 and (~fg).sum() > 0
    np.testing.assert_allclose(np.linalg.norm(np.asarray(normals)[fg], axis=-1), 1.0, atol=1e-4)
    assert np.all(np.asarray(normals)[~fg] == 0) and np.all(np.asarray(images)[~fg] == 0)
    assert np.all(np.asarray(images)[fg].max(-1) > 0)


def test_larger_size_parameters_give_larger_silhouettes_and_nudges_are_smooth():
    psi, key = Grammar.init_psi(), jax.random.key(1)
    area = lambda p: float((np.asarray(_simulate()(p, key)[2]) > 0).mean())  # noqa: E731
    bigger = dict(psi, size_loc=psi["size_loc"] + 0.3)
    assert area(bigger) > 1.2 * area(psi)
    nudged = dict(psi, size_loc=psi["size_loc"] + 1e-3)
    changed = np.mean(np.asarray(_simulate()(nudged, key)[2] > 0)
                      != np.asarray(_simulate()(psi, key)[2] > 0))
    assert changed < 0.01   # common random numbers: same shapes, same views


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="num_examples"):
        ShapeSimulator(num_examples=0)
    with pytest.raises(ValueError, match="distance"):
        ShapeSimulator(distance=0.0)
    with pytest.raises(ValueError, match="elevation"):
        ShapeSimulator(elevation=(1.0, 0.5))


@pytest.mark.slow
def test_a_hybrid_gradient_step_on_grammar_shapes_with_a_normal_depth_network():
    """End to end: simulated shapes train a tiny normal/depth UNet through unrolled SGD,
    the finite-difference Jacobian of the renderer closes the chain, psi moves."""
    sim = ShapeSimulator(Grammar(max_depth=2), num_examples=2, resolution=(16, 16))
    task = NormalsDepth(features=(4, 8))
    val_images, val_normals, val_depth = sim(Grammar.init_psi(combine_prob=0.8), jax.random.key(9))
    val_targets = {"normals": val_normals, "depth": val_depth}
    params = task.init(jax.random.key(0), val_images)
    inner, outer = optax.sgd(0.05), optax.rmsprop(1e-2)

    def loss(p, image, normals, depth):
        return task.loss(p, image[None], {"normals": normals[None], "depth": depth[None]})

    state = hybrid.init(Grammar.init_psi(), params, outer_optimizer=outer, inner_optimizer=inner)
    step = jax.jit(functools.partial(
        hybrid.step, generator=sim, loss=loss,
        val_loss=lambda p: task.loss(p, val_images, val_targets), inner_optimizer=inner,
        outer_optimizer=outer, config=hybrid.Config(epochs=1, batch_size=2, num_directions=2,
                                                    sigma=0.05)))
    new, info = step(jax.random.key(1), state)
    assert bool(info.applied) and np.isfinite(float(info.val_loss))
    grads = jax.tree.leaves(info.grad)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert sum(float(jnp.abs(g).sum()) for g in grads) > 0
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.beta),
                                                         jax.tree.leaves(state.beta)))
