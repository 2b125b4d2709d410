"""The pure-JAX renderer: ranges, invariances, occlusion and gradients."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import render
from render import spec

RES = (24, 24)


@functools.lru_cache(maxsize=None)
def _renderer(resolution=RES, **options):
    return jax.jit(lambda s: render.render(s, resolution=resolution, **options))


def _scene(seed=0, n=3, **camera):
    s = render.random_scene(jax.random.key(seed), num_objects=n)
    if camera:
        s = s.replace(camera=s.camera.replace(**{k: jnp.float32(v) for k, v in camera.items()}))
    return s


def _dim_light(s):
    """Lights low enough that no pixel saturates (so shading is linear)."""
    return s.replace(light=s.light.replace(ambient=jnp.float32(0.3), strength=jnp.float32(0.5)))


scenes = st.builds(
    lambda seed, n, h, el, amb, sun, az, lel: _scene(seed, n).replace(
        camera=render.Camera(jnp.float32(h), jnp.float32(el)),
        light=render.Light(jnp.float32(amb), jnp.float32(sun), jnp.float32(az), jnp.float32(lel))),
    seed=st.integers(0, 2**31 - 1), n=st.integers(0, spec.MAX_OBJECTS),
    h=st.floats(0.05, 0.75), el=st.floats(0.0, 75 * math.pi / 180),
    amb=st.floats(0.0, 1.0), sun=st.floats(0.0, 2.0),
    az=st.floats(0.0, 2 * math.pi, exclude_max=True), lel=st.floats(0.0, math.pi / 2))


@settings(deadline=None, max_examples=25)
@given(scene=scenes)
def test_outputs_finite_and_in_range(scene):
    render.validate(scene)
    img = _renderer()(scene)
    assert img.rgb.shape == RES + (3,) and img.instance.shape == RES
    assert np.all(np.isfinite(img.rgb)) and np.all(np.isfinite(img.depth))
    assert np.all(np.isfinite(img.normals))
    assert img.rgb.min() >= 0.0 and img.rgb.max() <= 1.0
    assert img.depth.min() >= 0.0
    inst = np.asarray(img.instance)
    assert inst.min() >= 0 and inst.max() < 2 + spec.MAX_OBJECTS
    valid = np.asarray(scene.objects.valid)
    for k in np.unique(inst[inst >= 2]) - 2:
        assert valid[k], "an invalid (padded) object was drawn"
    n = np.linalg.norm(np.asarray(img.normals), axis=-1)
    np.testing.assert_allclose(n[inst > 0], 1.0, atol=1e-3)
    np.testing.assert_allclose(n[inst == 0], 0.0)
    assert np.all((np.asarray(img.depth) > 0) == (inst > 0))


def test_batched_render_matches_single():
    scenes_ = jax.vmap(lambda k: render.random_scene(k, 4))(jax.random.split(jax.random.key(3), 2))
    batch = _renderer()(scenes_)
    assert batch.rgb.shape == (2,) + RES + (3,)
    one = _renderer()(jax.tree_util.tree_map(lambda x: x[1], scenes_))
    np.testing.assert_allclose(batch.rgb[1], one.rgb, atol=1e-4)


def test_azimuth_is_two_pi_periodic():
    s = _scene(1, 4, height=0.4, elevation=0.6)
    turned = s.replace(objects=s.objects.replace(azimuth=s.objects.azimuth + 2 * math.pi),
                       light=s.light.replace(azimuth=s.light.azimuth + 2 * math.pi))
    a, b = _renderer()(s), _renderer()(turned)
    assert np.mean(np.asarray(a.instance) == np.asarray(b.instance)) > 0.995
    np.testing.assert_allclose(a.rgb, b.rgb, atol=2e-2)
    assert float(jnp.mean(jnp.abs(a.rgb - b.rgb))) < 1e-3


def test_rotating_an_object_changes_its_pixels():
    s = _scene(1, 1, height=0.3, elevation=0.6)
    turned = s.replace(objects=s.objects.replace(azimuth=s.objects.azimuth + 1.0))
    a, b = _renderer()(s), _renderer()(turned)
    assert np.any(np.asarray(a.instance) != np.asarray(b.instance))


@pytest.mark.parametrize("shadows", [False, True])
def test_image_is_linear_in_albedo(shadows):
    s = _dim_light(_scene(2, 4, height=0.35, elevation=0.7))
    fn = _renderer(shadows=shadows)
    rgb_a = np.asarray(s.objects.rgb) * 0.8
    rgb_b = np.roll(rgb_a, 1, axis=-1)
    ground_a, ground_b = np.array([0.9, 0.5, 0.2]), np.array([0.1, 0.6, 0.7])

    def img(rgb, ground):
        return fn(s.replace(objects=s.objects.replace(rgb=jnp.asarray(rgb, jnp.float32)),
                            ground_rgb=jnp.asarray(ground, jnp.float32))).rgb

    w = 0.3
    mixed = img(w * rgb_a + (1 - w) * rgb_b, w * ground_a + (1 - w) * ground_b)
    np.testing.assert_allclose(mixed, w * img(rgb_a, ground_a) + (1 - w) * img(rgb_b, ground_b),
                               atol=1e-5)
    np.testing.assert_allclose(img(0.5 * rgb_a, 0.5 * ground_a), 0.5 * img(rgb_a, ground_a), atol=1e-5)


def test_object_outside_view_changes_no_pixel():
    s = _scene(4, 3, height=0.3, elevation=0.5)
    obj = s.objects
    # Object 6 is padding; make it valid but far to the side, near the camera's feet.
    moved = obj.replace(valid=obj.valid.at[6].set(True),
                        position=obj.position.at[6].set(jnp.array([1.9, 0.05])),
                        class_id=obj.class_id.at[6].set(0), shape_id=obj.shape_id.at[6].set(0),
                        scale=obj.scale.at[6].set(0.14))
    render.validate(s.replace(objects=moved))
    for shadows in (False, True):
        a = _renderer(shadows=shadows)(s)
        b = _renderer(shadows=shadows)(s.replace(objects=moved))
        assert not np.any(np.asarray(b.instance) == 8)
        np.testing.assert_array_equal(np.asarray(a.rgb), np.asarray(b.rgb))
        np.testing.assert_array_equal(np.asarray(a.depth), np.asarray(b.depth))


def test_instance_ids_follow_depth_order():
    s = _scene(5, 5, height=0.25, elevation=0.35)
    fn = _renderer(shadows=False)
    full = fn(s)
    inst, depth = np.asarray(full.instance), np.asarray(full.depth)
    assert len(np.unique(inst[inst >= 2])) >= 2
    alone = []
    for k in range(5):
        only = s.replace(objects=s.objects.replace(valid=jnp.arange(spec.MAX_OBJECTS) == k))
        alone.append(fn(only))
    for k in range(5):
        ik, dk = np.asarray(alone[k].instance), np.asarray(alone[k].depth)
        covered = ik == 2 + k
        # Where object k is drawn in the full scene it is what k alone shows, at that depth.
        mine = inst == 2 + k
        assert np.all(covered[mine])
        np.testing.assert_allclose(depth[mine], dk[mine], rtol=1e-3)
        # Where k alone covers a pixel but the full scene shows another object, that one is nearer.
        hidden = covered & (inst >= 2) & (inst != 2 + k)
        assert np.all(depth[hidden] <= dk[hidden] * (1 + 1e-3))
        # k is never hidden by the ground.
        assert not np.any(covered & (inst == 1))


def test_depth_of_ground_is_analytic():
    s = _scene(0, 0, height=0.5, elevation=0.6)
    img = _renderer()(s)
    h, w = RES
    tan_half = math.tan(spec.VERTICAL_FOV / 2)
    row = (np.arange(h) + 0.5) / h * 2 - 1
    y_cam = -row * tan_half                          # camera-frame ray y for z = 1
    se, ce = math.sin(0.6), math.cos(0.6)
    down = -(y_cam * ce - se)                        # world -y component (unnormalised)
    expected = np.where(down > 0, 0.5 / np.maximum(down, 1e-9), 0.0)  # z-depth: t_cam = h / down
    got = np.asarray(img.depth)[:, w // 2]
    sees = down > 1e-3
    np.testing.assert_allclose(got[sees], expected[sees], rtol=1e-4)
    assert np.all(np.asarray(img.instance)[~sees, w // 2] == 0)


# ---- gradients -------------------------------------------------------------------------


def _central_difference(f, x, eps):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def _with_colour_params(s, theta):
    """theta (3N + 5,): object albedos, ground albedo, ambient, strength."""
    n = s.objects.rgb.shape[0]
    return s.replace(objects=s.objects.replace(rgb=theta[:3 * n].reshape(n, 3)),
                     ground_rgb=theta[3 * n:3 * n + 3],
                     light=s.light.replace(ambient=theta[-2], strength=theta[-1]))


@pytest.mark.slow
@pytest.mark.parametrize("shadows", [False, True])
def test_colour_and_light_strength_gradients_match_central_differences(shadows):
    s = _dim_light(_scene(6, 4, height=0.3, elevation=0.6))
    # Albedos in [0.3, 0.7] so that the +-0.25 steps below stay inside [0, 1].
    s = s.replace(objects=s.objects.replace(rgb=0.3 + 0.4 * s.objects.rgb),
                  ground_rgb=0.3 + 0.4 * s.ground_rgb)
    weights = jax.random.uniform(jax.random.key(0), RES + (3,))
    loss = jax.jit(lambda th: jnp.sum(weights * render.render(
        _with_colour_params(s, th), resolution=RES, shadows=shadows).rgb))
    theta = jnp.concatenate([s.objects.rgb.ravel(), s.ground_rgb, s.light.ambient[None],
                             s.light.strength[None]])
    g = jax.grad(loss)(theta)
    # Shading is linear in each of these (no pixel saturates), so a large step is exact
    # and keeps float32 rounding of the summed loss out of the comparison.
    fd = _central_difference(lambda x: float(loss(jnp.asarray(x, jnp.float32))), theta, 0.25)
    np.testing.assert_allclose(g, fd, rtol=2e-3, atol=1e-3 * np.abs(fd).max())
    assert np.abs(fd).min() >= 0 and np.abs(fd).max() > 1.0


def test_light_direction_gradients_match_central_differences():
    s = _dim_light(_scene(7, 3, height=0.3, elevation=0.6))
    weights = jax.random.uniform(jax.random.key(1), RES + (3,))
    loss = jax.jit(lambda th: jnp.sum(weights * render.render(
        s.replace(light=s.light.replace(azimuth=th[0], elevation=th[1])),
        resolution=RES, shadows=False).rgb))
    theta = jnp.array([1.0, 0.7], jnp.float32)
    g = jax.grad(loss)(theta)
    fd = _central_difference(lambda x: float(loss(jnp.asarray(x, jnp.float32))), theta, 1e-2)
    np.testing.assert_allclose(g, fd, rtol=2e-2)


def _blur(x, sigma=2.0):
    """Separable Gaussian blur of an (H, W) image."""
    r = np.arange(-6, 7)
    k = np.exp(-0.5 * (r / sigma) ** 2)
    k = jnp.asarray(k / k.sum(), jnp.float32)
    x = jax.vmap(lambda c: jnp.convolve(c, k, mode="same"), in_axes=1, out_axes=1)(x)
    return jax.vmap(lambda c: jnp.convolve(c, k, mode="same"))(x)


GEOMETRY = ("x", "z", "scale", "camera.height", "camera.elevation")


def _with_geometry(s, theta):
    o = s.objects
    return s.replace(
        objects=o.replace(position=o.position.at[0].set(theta[:2]), scale=o.scale.at[0].set(theta[2])),
        camera=s.camera.replace(height=theta[3], elevation=theta[4]))


@jax.jit
def _blurred_image(theta, s):
    rgb = render.render(_with_geometry(s, theta), resolution=(32, 32), shadows=False).rgb
    return jax.vmap(_blur, in_axes=2, out_axes=2)(rgb)


@jax.jit
def _geometry_loss(theta, s, target):   # the scene is an argument: one compilation for all classes
    return jnp.sum((_blurred_image(theta, s) - target) ** 2)


_geometry_grad = jax.jit(jax.grad(_geometry_loss))


@pytest.mark.slow
@pytest.mark.parametrize("class_id", [0, 1, 2])
def test_geometry_gradients_have_the_sign_of_a_finite_difference(class_id):
    """Moving the object or the camera towards a target lowers a blurred pixel loss
    at the rate a finite difference of that loss says (sign, and size within 2x)."""
    s = _scene(8, 1, height=0.3, elevation=0.6)
    scale = [0.14, 0.09, 0.17][class_id]
    s = s.replace(objects=s.objects.replace(class_id=s.objects.class_id.at[0].set(class_id),
                                            shape_id=s.objects.shape_id.at[0].set(0),
                                            rgb=s.objects.rgb.at[0].set(jnp.array([0.9, 0.1, 0.1]))),
                  ground_rgb=jnp.array([0.2, 0.6, 0.3], jnp.float32))
    theta0 = jnp.array([0.02, 0.45, scale, 0.3, 0.6], jnp.float32)
    delta = np.array([0.03, 0.04, 0.1 * scale, 0.03, 0.05], np.float32)

    for i, name in enumerate(GEOMETRY):
        step = np.zeros(5, np.float32)
        step[i] = delta[i]
        target = _blurred_image(theta0 + step, s)
        g = float(_geometry_grad(theta0, s, target)[i])
        h = step / 4
        fd = (float(_geometry_loss(theta0 + h, s, target))
              - float(_geometry_loss(theta0 - h, s, target))) / (2 * h[i])
        assert fd < 0, f"{name}: the target lies at +delta, so the loss must fall towards it"
        assert g < 0, f"{name}: gradient {g} has the wrong sign (finite difference {fd})"
        assert 0.5 < g / fd < 2.0, f"{name}: gradient {g} vs finite difference {fd}"


@pytest.mark.slow
def test_gradients_are_finite_for_random_scenes():
    scenes_ = jax.vmap(lambda k: render.random_scene(k, 7))(jax.random.split(jax.random.key(9), 2))
    grad = jax.jit(jax.grad(lambda s: jnp.sum(render.render(s, resolution=(16, 16)).rgb ** 2),
                            allow_int=True))
    g = grad(scenes_)
    for path, leaf in jax.tree_util.tree_leaves_with_path(g):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert np.all(np.isfinite(leaf)), jax.tree_util.keystr(path)
    assert float(jnp.abs(g.objects.position).sum()) > 0
    assert float(jnp.abs(g.camera.height).sum()) > 0


def test_textures_and_background_image():
    s = _scene(10, 4, height=0.3, elevation=0.05)        # the horizon is in view
    background = jax.random.uniform(jax.random.key(2), RES + (3,))
    plain = _renderer()(s)
    img = jax.jit(lambda s, bg: render.render(s, resolution=RES, textures=True,
                                              background=bg))(s, background)
    inst = np.asarray(img.instance)
    sky = inst == 0
    assert sky.sum() > 20
    # Above the horizon: the background image (same resolution: resized is identity).
    np.testing.assert_allclose(np.asarray(img.rgb)[sky], np.asarray(background)[sky], atol=1e-5)
    assert np.all(np.asarray(img.rgb).min() >= 0) and np.all(np.asarray(img.rgb).max() <= 1)
    # Textures multiply the albedo by a greyscale factor with mean 1 and range [0.55, 1.45].
    ground = (inst == 1) & (np.asarray(plain.instance) == 1)
    ratio = np.asarray(img.rgb)[ground] / np.maximum(np.asarray(plain.rgb)[ground], 1e-3)
    unclipped = (np.asarray(plain.rgb)[ground] > 0.05) & (np.asarray(img.rgb)[ground] < 0.99)
    assert ratio[unclipped].std() > 0.05
    assert 0.5 < ratio[unclipped].min() and ratio[unclipped].max() < 1.5
    assert abs(np.median(ratio[unclipped]) - 1.0) < 0.15


@pytest.mark.slow
def test_position_gradient_with_shadows_matches_a_finite_difference():
    """With shadows on, moving objects back towards where they were lowers the pixel
    loss at the rate a central difference says. Regression: shadow rays that hit an
    occluder once differentiated its SDF at the hit, which flipped this sign."""
    res = (48, 48)
    truth = render.random_scene(jax.random.key(1), num_objects=2, max_objects=3)
    target = render.render(truth, resolution=res, shadows=True).rgb
    offset = jnp.array([[-0.0196, 0.0282], [0.0162, 0.0207], [0.0, 0.0]], jnp.float32)

    def loss(t):
        moved = truth.objects.replace(position=truth.objects.position + (1 - t) * offset)
        rgb = render.render(truth.replace(objects=moved), resolution=res, shadows=True).rgb
        return jnp.sum((rgb - target) ** 2)

    g = float(jax.jit(jax.grad(loss))(jnp.float32(0.0)))
    loss = jax.jit(loss)
    fd = [(float(loss(jnp.float32(h))) - float(loss(jnp.float32(-h)))) / (2 * h) for h in (0.05, 0.2)]
    assert all(f < 0 for f in fd), fd
    assert g < 0, f"gradient {g} has the wrong sign (finite differences {fd})"
    assert 0.7 < g / fd[0] < 1.4, (g, fd)
