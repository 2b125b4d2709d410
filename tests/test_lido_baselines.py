"""GBO (TNC) and Simplex (Nelder-Mead) improve a perturbed scene (LiDO sec. 4.1)."""

import jax
import numpy as np
import pytest

import render
from lido_jax import baselines, latents

RESOLUTION = (48, 48)


def _slots(scene, kind):
    sets = dict(latents.lv_sets(scene))
    if kind == "colours":
        return [s for name, slots in sets.items() if "colour" in name for s in slots]
    return [s for name, slots in sets.items() if "pose" in name for s in slots
            if s.path == "objects.position"]


def _distance(scene, truth, slots):
    return float(np.mean(np.abs(np.asarray(latents.get(scene, slots))
                                - np.asarray(latents.get(truth, slots)))))


@pytest.fixture(scope="module")
def problems():
    """Two small scenes, each with its colours perturbed (15% of their range) or its
    contact points moved (0.8% of the 4 m range, about 3 cm), everything else right:
    then the perturbed LVs are identifiable and a fit must bring them back."""
    out = []
    for seed in range(2):
        truth = render.random_scene(jax.random.key(seed), num_objects=2, max_objects=3)
        observed = np.asarray(render.render(truth, resolution=RESOLUTION).rgb)
        for kind, amount in (("colours", 0.15), ("positions", 0.008)):
            slots = _slots(truth, kind)
            start = latents.perturb(jax.random.key(100 + seed), truth, amount, slots)
            out.append((kind, truth, observed, start, slots))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", baselines.METHODS)
def test_baselines_reduce_pixel_and_lv_errors(problems, method):
    config = baselines.FitConfig(method=method, iterations=12 if method == "gbo" else 25,
                                 resolution=RESOLUTION)
    for kind, truth, observed, start, slots in problems:
        result = baselines.fit(start, observed, config)
        assert result.nll.min() < result.nll[0]
        before = baselines.pixel_error(start, observed, RESOLUTION)
        after = baselines.pixel_error(result.scene, observed, RESOLUTION)
        assert after < 0.8 * before, (kind, before, after)
        lv_before, lv_after = _distance(start, truth, slots), _distance(result.scene, truth, slots)
        assert lv_after < (0.5 if kind == "colours" else 0.95) * lv_before, (kind, lv_before, lv_after)
        render.validate(result.scene)
        # The trace: increasing times, one vector per evaluation, sets in the paper's order.
        assert np.all(np.diff(result.times) >= 0) and len(result.vectors) == len(result.nll)
        names = [name for name, _ in result.sets]
        assert names[0] == "ground colour" and names[-2:] == ["illumination", "camera"]
        best = int(np.argmin(result.nll))
        np.testing.assert_allclose(latents.get(result.scene_at(best), slots),
                                   latents.get(result.scene, slots), atol=1e-5)


def test_fit_rejects_bad_input(problems):
    _, truth, observed, start, _ = problems[0]
    with pytest.raises(ValueError, match="method"):
        baselines.FitConfig(method="annealing")
    with pytest.raises(ValueError, match="objects.scale"):
        baselines.fit(start.replace(objects=start.objects.replace(scale=start.objects.scale * 9)),
                      observed)
    with pytest.raises(ValueError, match="one scene"):
        baselines.fit(jax.tree.map(lambda x: x[None], start), observed)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        baselines.fit(start, observed[..., 0])


@pytest.mark.slow
@pytest.mark.parametrize("method", baselines.METHODS)
def test_baselines_render_in_the_loop_with_gl(method):
    """pyrender in the loop (through render.host_render/black_box; GBO by central
    differences): a perturbed ground and object colour come back."""
    truth = render.random_scene(jax.random.key(5), num_objects=1, max_objects=2)
    observed = render.render(truth, backend="gl", resolution=(24, 24)).rgb
    slots = _slots(truth, "colours")
    start = latents.perturb(jax.random.key(6), truth, 0.2, slots)
    config = baselines.FitConfig(method=method, backend="gl", resolution=(24, 24),
                                 iterations=6 if method == "gbo" else 12)
    result = baselines.fit(start, observed, config)
    assert result.nll.min() < result.nll[0]
    assert _distance(result.scene, truth, slots) < 0.7 * _distance(start, truth, slots)
