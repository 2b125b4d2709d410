"""LiDO training data (source 2) and the training run: loss falls, resume is exact."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lido_jax import dataset, generator, network, refine, training
from lido_jax.__main__ import main
from render import spec

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(resolution=(32, 32), check_resolution=(32, 32), min_objects=2, max_objects=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("lido_data")
    dataset.write_dataset(out, 4, dataset.Settings(**SMALL), progress=False)
    return out


def _truth(seed=0):
    return generator.generate(jax.random.key(seed), min_objects=3, max_objects=3,
                              check_resolution=(32, 32))


def test_noisy_start_stays_within_the_noise_and_the_class():
    gt = _truth()
    start = training.noisy_start(jax.random.key(1), gt.scene)
    valid = np.asarray(gt.scene.objects.valid)
    d_obj = np.abs(np.asarray(refine.difference(refine.object_vectors(start),
                                                refine.object_vectors(gt.scene),
                                                refine.OBJECT_PERIODIC)))[valid]
    d_glob = np.abs(np.asarray(refine.difference(refine.global_vector(start),
                                                 refine.global_vector(gt.scene),
                                                 refine.GLOBAL_PERIODIC)))
    assert np.all(d_obj <= training.DEFAULT_OBJECT_NOISE + 1e-5)
    assert np.all(d_glob <= training.DEFAULT_GLOBAL_NOISE + 1e-5)
    assert d_obj.max() > 0 and d_glob.max() > 0
    np.testing.assert_array_equal(start.objects.class_id, gt.scene.objects.class_id)
    counts = np.asarray(spec.NUM_SHAPES)[np.asarray(start.objects.class_id)]
    assert np.all(np.asarray(start.objects.shape_id) < counts)
    shapes = [training.noisy_start(jax.random.key(k), gt.scene).objects.shape_id for k in range(8)]
    assert len({tuple(np.asarray(s)[valid]) for s in shapes}) > 1   # shapes are re-drawn
    same = training.noisy_start(jax.random.key(1), gt.scene, shape_mismatch=False)
    np.testing.assert_array_equal(same.objects.shape_id, gt.scene.objects.shape_id)


def test_examples_pair_patches_inputs_and_targets():
    gt = _truth()
    observed = generator.observe(gt, jax.random.key(2), resolution=(32, 32)).rgb
    start = training.noisy_start(jax.random.key(3), gt.scene)
    rows = training.examples(gt.scene, start, observed, patch_size=16)
    n = gt.scene.objects.valid.shape[0]
    assert rows["patches"].shape == (n, 16, 16, 9) and rows["z"].shape == (n, network.Z_SIZE)
    np.testing.assert_array_equal(rows["valid"], gt.scene.objects.valid)
    np.testing.assert_allclose(rows["patches"][..., 6:], rows["patches"][..., :3] - rows["patches"][..., 3:6],
                               atol=1e-6)
    # decoding the targets from the start gives back the truth
    outputs = dict(rows["targets"], azimuth=100.0 * jax.nn.one_hot(rows["targets"]["azimuth"], 360))
    objects, votes = network.decode(outputs, refine.object_vectors(start))
    valid = np.asarray(gt.scene.objects.valid)
    np.testing.assert_allclose(np.asarray(objects)[valid][:, [0, 1, 2, 4, 5, 6]],
                               np.asarray(refine.object_vectors(gt.scene))[valid][:, [0, 1, 2, 4, 5, 6]],
                               atol=2e-5)
    np.testing.assert_allclose(refine.difference(votes[0], refine.global_vector(gt.scene),
                                                 refine.GLOBAL_PERIODIC), 0.0, atol=2e-5)
    # "image" offsets: decoded at the start's camera, the objects sit where the truth is seen
    near = training.noisy_start(jax.random.key(3), gt.scene, 0.1 * training.DEFAULT_OBJECT_NOISE,
                                training.DEFAULT_GLOBAL_NOISE)   # offsets inside the clip
    image_rows = training.examples(gt.scene, near, observed, patch_size=16, position_frame="image")
    start_g = refine.initial_state(near).globals
    objects, _ = network.decode(dict(image_rows["targets"], azimuth=outputs["azimuth"]),
                                refine.object_vectors(near), "image", globals_=start_g,
                                resolution=(32, 32))
    seen = valid & np.all(np.abs(np.asarray(image_rows["targets"]["position"])) < network.IMAGE_CLIP, -1)
    assert seen.sum() >= 1
    np.testing.assert_allclose(
        np.asarray(refine.contact_pixels(objects, start_g, (32, 32)))[seen],
        np.asarray(refine.contact_pixels(refine.object_vectors(gt.scene),
                                         refine.global_vector(gt.scene), (32, 32)))[seen], atol=2e-3)


def test_training_lowers_the_validation_loss(data, tmp_path):
    config = training.TrainConfig(data=str(data), steps=60, batch_size=16, copies=3, patch_size=16,
                                  eval_every=20, checkpoint_every=20, validation_fraction=0.25)
    result = training.train(config, tmp_path / "run", progress=False)
    history = training.read_history(tmp_path / "run")
    assert [h["step"] for h in history] == [20, 40, 60]
    assert result["train_examples"] > result["validation_examples"] > 0
    assert (tmp_path / "run" / "figures" / "loss.png").stat().st_size > 1000
    params, step = training.load_params(tmp_path / "run")
    assert step == 60
    run = tmp_path / "run"
    rows = {n: training._load_examples(run / f"examples_{n}.npz") for n in ("train", "validation")}
    assert training.evaluate(params, rows["validation"]) == pytest.approx(result["validation_loss"],
                                                                         rel=1e-5)
    # Three training scenes are too few to generalise to the held-out one (the validation
    # loss is what a real dataset is for); the training examples must be learnt.
    initial = network.init(jax.random.fold_in(jax.random.key(0), 2), 16)
    before, after = (training.evaluate(p, rows["train"]) for p in (initial, params))
    assert after < 0.5 * before, (before, after)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # best.msgpack: the parameters at the lowest validation loss of the history
    best = min(history, key=lambda h: h["validation_loss"])
    best_params, best_step = training.load_params(run, which="best")
    assert (best_step, result["best_step"]) == (best["step"], best["step"])
    assert training.evaluate(best_params, rows["validation"]) == pytest.approx(
        best["validation_loss"], rel=1e-5)
    assert result["best_validation_loss"] == min(h["validation_loss"] for h in history)
    with pytest.raises(ValueError, match="which"):
        training.load_params(run, which="last")


def test_a_killed_run_resumes_to_the_same_numbers(data, tmp_path):
    args = ["--data", str(data), "--steps", "40", "--batch-size", "8", "--copies", "1",
            "--patch-size", "16", "--eval-every", "5", "--checkpoint-every", "5", "--no-progress"]
    assert main(["train", "--out", str(tmp_path / "whole"), *args]) == 0
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "lido_jax", "train", "--out", str(killed), *args],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(training.read_history(killed)) < 2:    # past a checkpoint, before the end
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists()
    assert main(["train", "--out", str(killed), "--resume", "--no-progress"]) == 0
    a, b = (json.loads((d / "result.json").read_text()) for d in (killed, tmp_path / "whole"))
    for k in ("steps", "train_loss", "validation_loss", "initial_validation_loss", "train_examples",
              "best_step", "best_validation_loss"):
        assert a[k] == b[k], k
    strip = lambda h: [{k: v for k, v in x.items() if k != "wall_time_s"} for x in h]  # noqa: E731
    assert strip(training.read_history(killed)) == strip(training.read_history(tmp_path / "whole"))
    for which in ("latest", "best"):
        (pa, sa), (pb, sb) = (training.load_params(d, which=which) for d in (killed, tmp_path / "whole"))
        assert sa == sb
        jax.tree.map(np.testing.assert_array_equal, pa, pb)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(patch_size=12), "multiple of 8"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(eval_every=3, checkpoint_every=4), "multiple of eval_every"),
    (dict(position_frame="pixels"), "position_frame")])
def test_bad_configs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.TrainConfig(data="x", **kwargs)


def test_runs_refuse_to_overwrite_and_to_resume_nothing(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        training.train(None, tmp_path / "none", resume=True)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--resume"):
        training.train(training.TrainConfig(data=str(data)), tmp_path / "taken")
    with pytest.raises(ValueError, match="at least 2 scene files"):
        training.build_examples(training.TrainConfig(data=str(data / "scene_000000.npz")), False)


def test_an_init_run_adds_source_1_and_sets_the_noise(data, tmp_path):
    from lido_jax import init_training
    init_run = tmp_path / "init"
    init_training.train_init(init_training.InitTrainConfig(
        data=str(data), steps=2, image_batch=2, object_batch=4, patch_size=16, eval_every=1,
        checkpoint_every=1, threshold=0.02, validation_fraction=0.25), init_run, progress=False)
    objects, globals_ = training.noise_of(init_run)
    result = json.loads((init_run / "result.json").read_text())
    np.testing.assert_allclose(globals_, result["global_errors"], rtol=1e-6)
    if result["object_errors"]:
        np.testing.assert_allclose(objects, result["object_errors"], rtol=1e-6)
    config = training.TrainConfig(data=str(data), copies=1, patch_size=16, init_run=str(init_run),
                                  validation_fraction=0.25)
    train_rows, val_rows = training.build_examples(config, progress=False)
    # every object once from source 2, plus every paired detection from source 1
    params, init_config = init_training.load_init(init_run)
    files = [*training.split_files(data, 0.25, 0)[0], *training.split_files(data, 0.25, 0)[1]]
    scenes, images = init_training.load_scenes(files)
    start, *_ = init_training.source1_pairs(params, scenes, images, init_config)
    assert (len(train_rows["valid"]) + len(val_rows["valid"])
            == int(np.sum(scenes.objects.valid)) + int(np.sum(start.objects.valid)))


def test_rollout_iterations_are_log_spaced_and_end_at_the_last():
    assert training.rollout_iterations(1) == (1,)
    assert training.rollout_iterations(3) == (2, 3)
    assert training.rollout_iterations(16) == (2, 4, 8, 16)
    assert training.rollout_iterations(30) == (2, 4, 8, 16, 30)
    with pytest.raises(ValueError, match="rollout_steps"):
        training.TrainConfig(data="x", rollout_steps=0)


def test_source_3_adds_the_states_of_the_base_networks_refinements(data, tmp_path):
    base = tmp_path / "base"
    common = dict(data=str(data), batch_size=8, copies=2, patch_size=16, eval_every=2,
                  checkpoint_every=2, validation_fraction=0.25, position_frame="image")
    training.train(training.TrainConfig(steps=4, **common), base, progress=False)
    config = training.TrainConfig(steps=2, rollout_from=str(base), rollout_steps=3, **common)
    result = training.train(config, tmp_path / "tuned", progress=False)
    # Per scene: 2 noisy starts (source 2), and the first one's states after 2 and 3
    # refinement steps (source 3): 4 rows per object.
    files = [*training.split_files(data, 0.25, 0)[0], *training.split_files(data, 0.25, 0)[1]]
    objects = sum(int(np.sum(dataset.load_scene(f)[0].objects.valid)) for f in files)
    assert result["train_examples"] + result["validation_examples"] == 4 * objects
    # warm start: the initial validation loss is the base network's best on these rows
    rows = training._load_examples(tmp_path / "tuned" / "examples_validation.npz")
    best, _ = training.load_params(base, which="best")
    assert result["initial_validation_loss"] == pytest.approx(training.evaluate(best, rows), rel=1e-5)
    # The rows are examples of the refinement's states: rebuild one scene's by hand.
    truth, arrays = dataset.load_scene(files[0])
    truth = jax.tree.map(jnp.asarray, truth)
    obs = jnp.asarray(arrays["rgb"], jnp.float32)
    start = training.noisy_start(jax.random.key(5), truth)
    got = training._rollout_fn(config)(truth, start, obs, refine.initial_state(start).votes)
    predict = network.predictor(best, position_frame="image", resolution=(32, 32))
    _, trace = refine.refine(predict, obs, start, refine.RefineConfig(
        steps=3, patch_fraction=0.5, patch_size=16, anchor_pixels=True))
    n = truth.objects.valid.shape[0]
    for i, t in enumerate((2, 3)):
        state = refine.RefineState(objects=trace["objects"][t], votes=trace["votes"][t],
                                   globals=trace["globals"][t], done=jnp.asarray(False))
        scene_t = refine.to_scene(start, state.objects, state.globals)
        np.testing.assert_allclose(got["z"][i * n:(i + 1) * n], network.encode_inputs(state, scene_t),
                                   atol=1e-5)
        want = network.targets(state.objects, refine.object_vectors(truth), refine.global_vector(truth),
                               "image", globals_=state.globals, resolution=(32, 32))
        np.testing.assert_allclose(got["targets"]["size"][i * n:(i + 1) * n], want["size"], atol=1e-5)
        np.testing.assert_allclose(got["targets"]["position"][i * n:(i + 1) * n], want["position"],
                                   atol=1e-4)
    assert float(jnp.max(jnp.abs(trace["objects"][3] - trace["objects"][0]))) > 0   # it moved
    # a base of another frame or patch size is refused by name
    with pytest.raises(ValueError, match="position_frame"):
        training.build_examples(dataclasses.replace(config, position_frame="camera"), progress=False)
