"""The pretrain command end to end at a tiny size, and the float16 save/load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lido_jax import generator, initialization as ini, network, pretrained, refine
from lido_jax.__main__ import main


def test_pretrain_writes_networks_that_load_and_run(tmp_path):
    out = tmp_path / "nets"
    args = ["pretrain", "--work", str(tmp_path / "work"), "--out", str(out), "--num-scenes", "4",
            "--resolution", "32", "--init-steps", "2", "--lido-steps", "2", "--copies", "1",
            "--patch-size", "16", "--finetune-steps", "2", "--no-progress"]
    assert main(args) == 0
    nets = pretrained.load(out)
    assert nets.resolution == (32, 32) and nets.refine_config.patch_size == 16
    assert nets.position_frame == "camera" == nets.meta["lido"]["config"]["position_frame"]
    assert nets.meta["lido"]["result"]["steps"] == 2 and nets.meta["init"]["config"]["steps"] == 2
    # the saved network is the third stage's, fine-tuned from the second's
    assert nets.meta["lido"]["config"]["rollout_from"] == str(tmp_path / "work" / "lido")
    # float16 storage: the loaded weights are the trained ones to half precision
    from lido_jax import init_training, training
    full, _ = training.load_params(tmp_path / "work" / "lido_rollout", which="best")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
                 nets.lido_params, full)
    init_full, _ = init_training.load_init(tmp_path / "work" / "init")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4),
                 nets.init_params, init_full)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nets.lido_params))
    # a second run finds every stage done and only saves again
    assert main(args) == 0
    gt = generator.generate(jax.random.key(9), min_objects=2, max_objects=2, check_resolution=(32, 32))
    image = generator.observe(gt, jax.random.key(1), resolution=(32, 32)).rgb
    scene, votes, _ = ini.initial_scene(nets.init_params, image, nets.init_config)
    config = refine.RefineConfig(steps=2, patch_fraction=nets.refine_config.patch_fraction,
                                 patch_size=nets.refine_config.patch_size)
    final, trace = refine.refine(network.predictor(nets.lido_params), image, scene, config, votes=votes)
    assert np.all(np.isfinite(np.asarray(trace["globals"])))


def test_missing_networks_say_how_to_retrain(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain"):
        pretrained.load(tmp_path)


def test_the_committed_detector_finds_contact_points_in_fresh_scenes():
    nets = pretrained.load()
    assert nets.resolution == (64, 64)
    assert nets.meta["init"]["result"]["recall"] > 0.3          # as measured when trained
    images, targets = [], []
    for seed in range(6):   # scenes the networks never saw (the dataset's seed is 0)
        gt = generator.generate(jax.random.key(1000 + seed), check_resolution=nets.resolution)
        images.append(generator.observe(gt, jax.random.key(seed), resolution=nets.resolution).rgb)
        targets.append(ini.detector_targets(gt.scene, nets.resolution))
    out = ini.Detector().apply(nets.init_params["detector"], jnp.stack(images))
    score = np.asarray(1.0 - jax.nn.softmax(out["logits"], -1)[..., 0])
    positive = np.stack([np.asarray(t["label"]) > 0 for t in targets])
    assert score[positive].mean() > score[~positive].mean() + 0.2, (score[positive].mean(),
                                                                    score[~positive].mean())
