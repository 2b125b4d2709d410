"""Training the initialisation networks; pairing detections with the truth (source 1)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lido_jax import dataset, generator, init_training as it, initialization as ini, training
from lido_jax.__main__ import main

RES = (32, 32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("init_data")
    dataset.write_dataset(out, 6, dataset.Settings(resolution=RES, check_resolution=RES,
                                                   min_objects=2, max_objects=3), progress=False)
    return out


def _detections(scene, rows, classes=None, shift=0.0):
    """Detections at the truth's contact points of object slots ``rows``."""
    n = scene.objects.valid.shape[0]
    pixels = np.nan_to_num(generator.contact_pixels(scene, RES))[rows] + shift
    cls = np.asarray(scene.objects.class_id)[rows] if classes is None else np.asarray(classes)
    pad = n - len(rows)
    return ini.Detections(valid=jnp.asarray([True] * len(rows) + [False] * pad),
                          class_id=jnp.asarray(np.concatenate([cls, np.zeros(pad)]), jnp.int32),
                          pixel=jnp.asarray(np.concatenate([pixels, np.zeros((pad, 2))]), jnp.float32),
                          size=jnp.zeros(n), score=jnp.ones(n))


def test_pairing_takes_the_same_class_within_ten_percent_of_the_width():
    gt = generator.generate(jax.random.key(0), min_objects=3, max_objects=3, check_resolution=RES)
    scene = gt.scene
    rows = [2, 0, 1]
    match = np.asarray(it.pair(_detections(scene, rows), scene, RES))
    np.testing.assert_array_equal(match[:3], rows)
    assert np.all(match[3:] == -1)
    shifted = np.asarray(it.pair(_detections(scene, rows, shift=0.09 * RES[1] / np.sqrt(2)), scene, RES))
    np.testing.assert_array_equal(shifted[:3], rows)        # 9% of the width away: still paired
    far = np.asarray(it.pair(_detections(scene, rows, shift=0.11 * RES[1] / np.sqrt(2)), scene, RES))
    assert np.all(far == -1)                                 # 11%: not paired
    wrong = (np.asarray(scene.objects.class_id)[rows] + 1) % 3
    assert np.all(np.asarray(it.pair(_detections(scene, rows, classes=wrong), scene, RES)) == -1)
    twice = np.asarray(it.pair(_detections(scene, [1, 1]), scene, RES))   # one truth, two detections
    assert sorted(twice[:2].tolist()) == [-1, 1]


def test_aligned_truth_puts_each_paired_object_in_its_detections_slot():
    gt = generator.generate(jax.random.key(1), min_objects=3, max_objects=3, check_resolution=RES)
    scene = gt.scene
    match = jnp.asarray([2, -1, 0] + [-1] * (scene.objects.valid.shape[0] - 3), jnp.int32)
    start = scene.replace(objects=scene.objects.replace(valid=jnp.ones_like(scene.objects.valid)))
    truth = it.aligned_truth(start, scene, match)
    np.testing.assert_array_equal(truth.objects.valid[:3], [True, False, True])
    np.testing.assert_array_equal(truth.objects.position[0], scene.objects.position[2])
    np.testing.assert_array_equal(truth.objects.position[2], scene.objects.position[0])
    assert not np.any(truth.objects.valid[3:])


def test_train_init_runs_resumes_and_reports_its_errors(data, tmp_path, monkeypatch):
    args = ["--data", str(data), "--steps", "12", "--image-batch", "2", "--object-batch", "4",
            "--patch-size", "16", "--eval-every", "3", "--checkpoint-every", "3",
            "--validation-fraction", "0.34", "--no-progress"]
    assert main(["train-init", "--out", str(tmp_path / "whole"), *args]) == 0
    result = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert result["steps"] == 12 and result["validation_images"] == 2
    assert result["objects"] >= 4 and 0 <= result["recall"] <= 1
    assert len(result["global_errors"]) == 9

    real_fit = training.fit

    def crashing_fit(*a, update, **kw):   # dies after step 7, past the checkpoint at 6
        def update_then_crash(params, opt_state, step):
            if step == 7:
                raise KeyboardInterrupt
            return update(params, opt_state, step)
        return real_fit(*a, update=update_then_crash, **kw)

    monkeypatch.setattr(training, "fit", crashing_fit)
    with pytest.raises(KeyboardInterrupt):
        main(["train-init", "--out", str(tmp_path / "cut"), *args])
    monkeypatch.setattr(training, "fit", real_fit)
    assert len(training.read_history(tmp_path / "cut")) == 2
    assert main(["train-init", "--out", str(tmp_path / "cut"), "--resume", "--no-progress"]) == 0
    a, b = (it.load_init(tmp_path / d)[0] for d in ("cut", "whole"))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    strip = lambda h: [{k: v for k, v in x.items() if k != "wall_time_s"} for x in h]  # noqa: E731
    assert strip(training.read_history(tmp_path / "cut")) == strip(training.read_history(tmp_path / "whole"))


def test_source1_pairs_only_keep_paired_detections(data):
    files = training.split_files(data, 0.34, 0)[0]
    scenes, images = it.load_scenes(files)
    params = ini.init_params(jax.random.key(0), RES, 16)
    start, votes, truth, det = it.source1_pairs(params, scenes, images,
                                                ini.InitConfig(threshold=0.05, patch_size=16))
    assert votes.shape == (len(files), scenes.objects.valid.shape[1], 9)
    np.testing.assert_array_equal(start.objects.valid, truth.objects.valid)
    assert np.all(np.asarray(det.valid) | ~np.asarray(start.objects.valid))
    np.testing.assert_array_equal(np.asarray(start.objects.class_id)[np.asarray(start.objects.valid)],
                                  np.asarray(truth.objects.class_id)[np.asarray(truth.objects.valid)])
