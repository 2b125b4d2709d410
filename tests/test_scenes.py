"""The CLEVR-like scene simulator: geometry against ray casts, psi's effects, AutoSimulate.

Labels are checked against an independent reference: every shape is an
intersection of slabs and quadrics, so whether a pixel's ray meets it is a closed
form (ray-sphere, ray-box slabs, ray-cylinder), compared pixel by pixel with the
sphere tracer's label map.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from render.sdf_render import camera_rays
from simopt_jax import autosimulate
from simopt_jax.scenes import CLASS_NAMES, SceneSimulator
from simopt_jax.tasks import Segmentation

SIM = SceneSimulator()
PSI = SIM.init_psi()
N = 16


@functools.cache
def _decode_batch(sim):
    return jax.jit(jax.vmap(sim.decode))


@functools.cache
def _sample_batch(sim):
    return jax.jit(jax.vmap(sim.distribution().sample, (0, None)))


def _scenes(sim, psi, seed, num=N, **overrides):
    """``num`` samples ``s`` of ``psi`` with some parts replaced (broadcast over the batch)."""
    s = _sample_batch(sim)(jax.random.split(jax.random.key(seed), num), psi)
    for name, value in overrides.items():
        s[name] = jnp.broadcast_to(jnp.asarray(value, s[name].dtype), s[name].shape)
    return s


def _probs(sim, regions=None, quality=None):
    """Layout probabilities (num_regions, 2) with (almost) all mass on the chosen ones."""
    probs = np.full((sim.num_regions, 2), 1e-3)
    rows = range(sim.num_regions) if regions is None else regions
    cols = range(2) if quality is None else [quality]
    for r in rows:
        for q in cols:
            probs[r, q] = 1.0
    return probs


def test_shapes_dtypes_and_psi():
    images, targets = SIM(PSI, jax.random.key(0), N)
    assert images.shape == (N, 32, 32, 3) and images.dtype == jnp.float32
    assert targets["labels"].shape == (N, 32, 32) and targets["labels"].dtype == jnp.int32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(np.unique(targets["labels"])) <= set(range(len(CLASS_NAMES)))
    assert CLASS_NAMES == ("background", "sphere", "cube", "cylinder")
    flat, _ = ravel_pytree(PSI)
    assert flat.shape == (36,)
    assert set(PSI) == {"light", "elevation", "offset", "colour", "layout", "class", "size",
                        "azimuth", "noise"}
    assert PSI["colour"]["loc"].shape == (3, 3) and PSI["layout"]["logits"].shape == (8,)
    np.testing.assert_allclose(SIM.layout_probabilities(PSI), np.full((4, 2), 1 / 8), rtol=1e-6)


def test_deterministic_given_the_key():
    a, ya = SIM(PSI, jax.random.key(3), N)
    b, yb = SIM(PSI, jax.random.key(3), N)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya["labels"], yb["labels"])
    c, _ = SIM(PSI, jax.random.key(4), N)
    assert not np.array_equal(a, c)


def test_simulator_matches_the_call_and_jit_vmap_matches_one_by_one():
    key = jax.random.key(5)
    simulator = SIM.simulator()
    assert isinstance(simulator, autosimulate.Simulator) and simulator.dist == SIM.distribution()
    s = _sample_batch(SIM)(jax.random.split(key, N), PSI)  # as Simulator.simulate draws
    batched = _decode_batch(SIM)(s)
    images, targets = SIM(PSI, key, N)
    np.testing.assert_allclose(images, batched[0], atol=1e-5)
    np.testing.assert_array_equal(targets["labels"], batched[1]["labels"])
    one = jax.jit(SIM.decode)
    for i in range(3):
        image, target = one(jax.tree.map(lambda leaf: leaf[i], s))
        np.testing.assert_allclose(image, batched[0][i], atol=1e-5)
        np.testing.assert_array_equal(target["labels"], batched[1]["labels"][i])


def test_default_scenes_show_every_class_inside_the_view():
    labels = np.concatenate([np.asarray(SIM(PSI, jax.random.key(k), N)[1]["labels"])
                             for k in (10, 11)])  # 32 scenes
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    covered = (labels > 0).mean(axis=(1, 2))
    assert np.all(covered > 0.01) and 0.05 < covered.mean() < 0.4, covered
    border = np.concatenate([labels[:, [0, -1], :].reshape(-1), labels[:, :, [0, -1]].reshape(-1)])
    assert np.mean(border > 0) < 0.02


def _slab(o, d, low, high):
    """Ray parameters (t0, t1) where ``low <= o + t d <= high`` (a coordinate each)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (low - o) / d, (high - o) / d
    t0, t1 = np.minimum(a, b), np.maximum(a, b)
    inside = (o >= low) & (o <= high)
    flat = d == 0
    return (np.where(flat, np.where(inside, -np.inf, np.inf), t0),
            np.where(flat, np.where(inside, np.inf, -np.inf), t1))


def _quadric(a, b, c):
    """(t0, t1) where ``a t^2 + 2 b t + c <= 0`` (a > 0), empty where no root."""
    disc = b * b - a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    return np.where(disc > 0, (-b - root) / a, np.inf), np.where(disc > 0, (-b + root) / a, -np.inf)


def _ray_hits(shape, eye, dirs, size, azimuth):
    """Closed-form: does each ray (P, 3) from ``eye`` meet the object at the origin?"""
    c, s = math.cos(azimuth), math.sin(azimuth)
    rotate = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # as decode's local frame
    o, d = rotate @ eye, dirs @ rotate.T
    if shape == "sphere":
        oc = o - np.array([0.0, size, 0.0])
        intervals = [_quadric(np.sum(d * d, -1), d @ oc, oc @ oc - size**2)]
    elif shape == "cube":
        h = 0.8 * size
        lows, highs = np.array([-h, 0.0, -h]), np.array([h, 2 * h, h])
        intervals = [_slab(o[k], d[:, k], lows[k], highs[k]) for k in range(3)]
    else:
        r = 0.8 * size
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        intervals = [_quadric(a, d[:, 0] * o[0] + d[:, 2] * o[2], o[0] ** 2 + o[2] ** 2 - r * r),
                     _slab(o[1], d[:, 1], 0.0, 2 * r)]
    t0 = np.max([i[0] for i in intervals], axis=0)
    t1 = np.min([i[1] for i in intervals], axis=0)
    return (t0 < t1) & (t1 > 0)


@pytest.mark.parametrize("label", [1, 2, 3])
def test_labels_of_one_object_match_a_closed_form_ray_cast(label):
    sim = SceneSimulator(num_objects=1, resolution=(48, 48), size_range=(0.6, 0.7))
    size, azimuth, elevation = 0.65, 0.4, math.radians(30.0)
    s = _scenes(sim, sim.init_psi(), 0, num=2, layout=1, elevation=elevation,
                offset=-sim.region_centres()[0], **{"class": label - 0.5},
                size=size, azimuth=azimuth)
    labels = np.asarray(_decode_batch(sim)(s)[1]["labels"][0])
    eye = sim.camera_distance * np.array([0.0, math.sin(elevation), math.cos(elevation)])
    dirs, _ = camera_rays(eye, np.zeros(3), sim.resolution, sim.fov)
    want = _ray_hits(CLASS_NAMES[label], eye, np.asarray(dirs, np.float64).reshape(-1, 3),
                     size, azimuth).reshape(sim.resolution)
    assert set(np.unique(labels)) == {0, label}
    got = labels == label
    assert want.sum() > 150  # a disc (or box, cylinder) of radius ~ 8 pixels
    assert abs(int(got.sum()) - int(want.sum())) <= 0.03 * want.sum()
    assert np.sum(got != want) <= 0.05 * want.sum()


def _centroids(labels):
    """Mean (row, col) of the object pixels of each image (n, 2)."""
    rows, cols = np.indices(labels.shape[1:])
    mask = labels > 0
    counts = mask.sum(axis=(1, 2))
    return np.stack([(mask * rows).sum((1, 2)) / counts, (mask * cols).sum((1, 2)) / counts], -1)


def test_region_choice_moves_the_objects():
    """Camera on +z looking at -z, +x to the right: region 0 is near right, 1 near left,
    2 far left, 3 far right; near objects appear lower in the image."""
    centre = {}
    for region in range(4):
        psi = SIM.init_psi(layout_probs=_probs(SIM, regions=[region]))
        assert SIM.layout_probabilities(psi)[region].sum() > 0.99
        centre[region] = _centroids(np.asarray(SIM(psi, jax.random.key(20), N)[1]["labels"]))
    mean = {r: c.mean(0) for r, c in centre.items()}
    for right, left in ((0, 1), (3, 2)):
        assert mean[right][1] - mean[left][1] > 6, mean
    for near, far in ((0, 3), (1, 2)):
        assert mean[near][0] - mean[far][0] > 2, mean


def test_quality_changes_the_image_not_the_labels():
    elevation = math.radians(35.0)  # the whole view is ground or objects
    s = _scenes(SIM, PSI, 30, elevation=elevation)
    low, high = (_decode_batch(SIM)(dict(s, layout=jnp.full(N, q, jnp.int32))) for q in (0, 1))
    assert float(jnp.mean(jnp.abs(low[0] - high[0]))) > 0.02
    assert float(jnp.mean(low[1]["labels"] == high[1]["labels"])) > 0.97
    # High quality casts hard shadows: ground is ground * (ambient + key * L_y) where
    # the key light is seen, ground * ambient where it is not.
    image, labels = np.asarray(high[0])[..., 0], np.asarray(high[1]["labels"])
    ambient, key = (np.asarray(s["light"][:, i])[:, None, None] for i in (0, 1))
    lit = SIM.ground_rgb[0] * (ambient + key * SIM.light_direction()[1])
    dark = SIM.ground_rgb[0] * ambient
    ground = labels == 0
    shadow = ground & (np.abs(image - dark) < 1e-4)
    assert np.all((np.abs(image - lit) < 1e-4) | shadow | ~ground)
    assert shadow.sum() > 0.01 * ground.sum()
    # Low quality has no shadows (only noise around the lit ground).
    low_image = np.asarray(low[0])[..., 0]
    low_ground = np.asarray(low[1]["labels"]) == 0
    assert np.all(np.abs(low_image - lit)[low_ground] <= SIM.noise + 1e-4)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)])
def test_colours_follow_psi(order):
    base = np.array([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])
    colours = base[list(order)]
    psi = SIM.init_psi(ambient=0.3, key_light=0.5, colour_loc=colours, colour_scale=0.02,
                       layout_probs=_probs(SIM, quality=1))
    images, targets = SIM(psi, jax.random.key(40), N)
    images, labels = np.asarray(images), np.asarray(targets["labels"])
    for label in (1, 2, 3):
        pixels = images[labels == label]
        chroma = (pixels / pixels.sum(-1, keepdims=True)).mean(0)
        want = colours[label - 1] / colours[label - 1].sum()
        np.testing.assert_allclose(chroma, want, atol=0.02)


def test_init_psi_and_bounds_agree():
    bounds = SIM.psi_bounds()
    is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)
    assert jax.tree.structure(jax.tree.map(lambda b: b[0], bounds, is_leaf=is_pair)) \
        == jax.tree.structure(PSI)
    flat = SIM.flat_bounds()
    values, _ = ravel_pytree(PSI)
    assert flat.shape == (36, 2) and np.all(flat[:, 0] < flat[:, 1])
    assert np.all((flat[:, 0] <= values) & (values <= flat[:, 1]))
    assert SIM.check_psi(PSI) is PSI
    for end in (0, 1):  # the ends of every documented range are inside
        edge = SIM.init_psi(
            ambient=(0.02, 2.0)[end], key_light=(2.0, 0.02)[end], light_sigma=(0.01, 1.0)[end],
            elevation=SIM.elevation_range[end], elevation_scale=math.radians((0.5, 20.0)[end]),
            offset_loc=(-0.4, 0.4), offset_scale=(0.01, 0.5)[end],
            colour_loc=np.full((3, 3), float(end)), colour_scale=(0.01, 0.5)[end])
        values, _ = ravel_pytree(edge)
        assert np.all((flat[:, 0] - 1e-5 <= values) & (values <= flat[:, 1] + 1e-5))


@pytest.mark.parametrize("name,value", [
    ("ambient", 0.0), ("key_light", 5.0), ("light_sigma", 2.0), ("elevation", math.radians(85)),
    ("elevation_scale", 1.0), ("offset_loc", (1.0, 0.0)), ("offset_scale", 0.0),
    ("colour_loc", np.full((3, 3), 1.5)), ("colour_scale", 0.9),
    ("layout_probs", np.ones((3, 2))), ("layout_probs", np.zeros((4, 2))),
    ("offset_scale", np.full(3, 0.1)), ("colour_scale", np.full((2, 3, 3), 0.1)),
    ("elevation", np.full(2, 0.5)),
])
def test_init_psi_names_a_bad_value(name, value):
    with pytest.raises(ValueError, match=name):
        SIM.init_psi(**{name: value})


def test_check_psi_names_the_bad_leaf():
    bad = jax.tree.map(lambda x: x, PSI)
    bad["light"] = dict(bad["light"], loc=jnp.array([0.0, 3.0]))
    with pytest.raises(ValueError, match=r"psi\['light'\]\['loc'\]"):
        SIM.check_psi(bad)
    bad = dict(PSI, layout={"logits": jnp.zeros(6)})
    with pytest.raises(ValueError, match=r"psi\['layout'\]\['logits'\] must have shape"):
        SIM(bad, jax.random.key(0), 2)
    with pytest.raises(ValueError, match="structure"):
        SIM.check_psi({k: v for k, v in PSI.items() if k != "noise"})
    with pytest.raises(ValueError, match="num"):
        SIM(PSI, jax.random.key(0), 0)


@pytest.mark.parametrize("kwargs,name", [
    ({"num_objects": 0}, "num_objects"), ({"num_regions": 0}, "num_regions"),
    ({"steps": (20, 10)}, "steps"), ({"resolution": (0, 8)}, "resolution"),
    ({"size_range": (0.5, 0.2)}, "size_range"),
    ({"elevation_range": (0.1, 2.0)}, "elevation_range"),
    ({"fov": 4.0}, "fov"), ({"far": 1.0}, "far"), ({"noise": -1.0}, "noise"),
])
def test_bad_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SceneSimulator(**kwargs)


def test_one_autosimulate_step_gives_a_finite_gradient_shaped_like_psi():
    task = Segmentation(features=(4, 8), num_classes=4)
    # Validation data from another psi (N scenes: the shapes already compiled).
    images, targets = SIM(SIM.init_psi(elevation=math.radians(50)), jax.random.key(50), N)
    params = task.init(jax.random.key(51), images[:1])

    def loss(p, x, y):
        return task.loss(p, x[None], {"labels": y["labels"][None]})

    def val_loss(p):
        return task.loss(p, images, targets)

    inner, outer = optax.adam(1e-3), optax.sgd(1e-2)
    state = autosimulate.init(PSI, params, outer_optimizer=outer, inner_optimizer=inner)
    config = autosimulate.Config(num_samples=4, inner_steps=1, method="linear")
    step = functools.partial(autosimulate.step, simulator=SIM.simulator(), loss=loss,
                             val_loss=val_loss, inner_optimizer=inner, outer_optimizer=outer,
                             config=config)
    new_state, info = jax.jit(step)(jax.random.key(52), state)
    assert jax.tree.structure(info.grad) == jax.tree.structure(PSI)
    for g, leaf in zip(jax.tree.leaves(info.grad), jax.tree.leaves(PSI)):
        assert g.shape == leaf.shape and np.all(np.isfinite(g))
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(info.grad))) > 0
    assert bool(info.applied) and np.isfinite(float(info.val_loss))
    assert not np.array_equal(ravel_pytree(new_state.psi)[0], ravel_pytree(PSI)[0])
    with pytest.raises(ValueError, match="pathwise"):
        step(jax.random.key(52), state,
             config=autosimulate.Config(num_samples=4, gradient="pathwise"))
