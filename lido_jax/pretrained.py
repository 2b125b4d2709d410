"""The committed networks, and the command that retrains them from scratch.

``lido_jax/checkpoints/`` holds the initialisation networks (``init.msgpack``) and
the LiDO prediction network (``lido.msgpack``, its checkpoint of lowest validation
loss), parameters only, stored as float16 to keep the repository small, plus
``meta.json``: the dataset settings, both training configs and their ``result.json``
(losses, detection precision/recall, median errors), so every number about them can
be traced to a run.

``python -m lido_jax pretrain --work runs/pretrain`` retrains them: it writes a
dataset (:mod:`lido_jax.dataset`), trains the initialisation networks
(:mod:`lido_jax.init_training`), trains the prediction network on both sources
(:mod:`lido_jax.training`), with ``--finetune-steps N`` fine-tunes it on the states
of its own refinements (source 3, ``training.TrainConfig.rollout_from``; off by
default: it did not improve LiDO here) and saves the result to ``--out`` (default:
the committed folder). Each stage is resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from lido_jax import dataset, init_training, initialization as ini, network, refine, training

FOLDER = Path(__file__).resolve().parent / "checkpoints"
"""Where the committed networks live."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Loaded networks and the settings they were trained with.

    Attributes:
      init_params: ``{"detector", "patch"}`` for ``initialization.initial_scene``.
      init_config: its ``InitConfig``.
      lido_params: the prediction network's, for ``network.predictor``.
      refine_config: a ``refine.RefineConfig`` with the training patch settings (and
        ``anchor_pixels`` for a network with ``"image"`` position offsets).
      resolution: (H, W) of the training images; use observed images of this size.
      meta: the contents of ``meta.json``.
      position_frame: the frame of the prediction network's position offsets
        (``network.POSITION_FRAMES``).
    """

    init_params: Any
    init_config: ini.InitConfig
    lido_params: Any
    refine_config: refine.RefineConfig
    resolution: tuple[int, int]
    meta: dict
    position_frame: str = "object"

    @property
    def predictor(self) -> refine.Predictor:
        return network.predictor(self.lido_params, position_frame=self.position_frame,
                                 resolution=self.resolution)


def _to_bytes(params) -> bytes:
    half = jax.tree.map(lambda x: np.asarray(x, np.float16), params)
    return serialization.msgpack_serialize(serialization.to_state_dict(half))


def _from_bytes(template, data: bytes):
    state = serialization.msgpack_restore(data)
    restored = serialization.from_state_dict(template, state)
    return jax.tree.map(lambda t, x: jnp.asarray(x, t.dtype), template, restored)


def save(folder: str | Path, init_run: str | Path, lido_run: str | Path) -> Path:
    """Writes the networks of a ``train-init`` and a ``train`` run folder to ``folder``."""
    folder, init_run, lido_run = Path(folder), Path(init_run), Path(lido_run)
    folder.mkdir(parents=True, exist_ok=True)
    init_params, _ = init_training.load_init(init_run)
    lido_params, _ = training.load_params(lido_run, which="best")
    init_config = json.loads((init_run / "config.json").read_text())
    data = Path(init_config["data"])
    meta = {"dataset": json.loads((data / dataset.MANIFEST).read_text())["settings"],
            "init": {"config": init_config, "result": json.loads((init_run / "result.json").read_text())},
            "lido": {"config": json.loads((lido_run / "config.json").read_text()),
                     "result": json.loads((lido_run / "result.json").read_text())},
            "dtype": "float16"}
    dataset.atomic_write(folder / "init.msgpack", _to_bytes(init_params))
    dataset.atomic_write(folder / "lido.msgpack", _to_bytes(lido_params))
    dataset.atomic_write(folder / "meta.json", json.dumps(meta, indent=2).encode())
    return folder


def load(folder: str | Path = FOLDER) -> Pretrained:
    """The networks saved in ``folder`` (default: the committed ones)."""
    folder = Path(folder)
    missing = [n for n in ("init.msgpack", "lido.msgpack", "meta.json") if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {missing}; retrain with "
                                "`python -m lido_jax pretrain --work runs/pretrain`")
    meta = json.loads((folder / "meta.json").read_text())
    resolution = tuple(meta["dataset"]["resolution"])
    ic, lc = meta["init"]["config"], meta["lido"]["config"]
    init_config = ini.InitConfig(threshold=ic["threshold"], patch_fraction=ic["patch_fraction"],
                                 patch_size=ic["patch_size"])
    init_params = _from_bytes(ini.init_params(jax.random.key(0), resolution, ic["patch_size"]),
                              (folder / "init.msgpack").read_bytes())
    lido_params = _from_bytes(network.init(jax.random.key(0), lc["patch_size"]),
                              (folder / "lido.msgpack").read_bytes())
    frame = lc.get("position_frame", "object")   # runs before the option: object
    return Pretrained(init_params=init_params, init_config=init_config, lido_params=lido_params,
                      refine_config=refine.RefineConfig(patch_fraction=lc["patch_fraction"],
                                                        patch_size=lc["patch_size"],
                                                        anchor_pixels=frame == "image"),
                      resolution=resolution, meta=meta,
                      position_frame=frame)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """What ``pretrain`` does (defaults sized for a 2-core CPU: about 40 minutes).

    Attributes:
      num_scenes: scenes of the training dataset (the paper: 10k images per source).
      resolution: side of the square observed images.
      init_steps, lido_steps: optimiser steps of the two trainings.
      copies: source-2 starts per scene.
      patch_size: both networks' input patches.
      seed: of the dataset and the trainings.
      position_frame: of the prediction network's position offsets
        (``network.POSITION_FRAMES``).
      finetune_steps: steps of the third stage, trained on sources 1-3 from the
        second stage's best network; 0 skips it.
    """

    num_scenes: int = 2000
    resolution: int = 64
    init_steps: int = 5000
    lido_steps: int = 6000
    copies: int = 6
    patch_size: int = 32
    seed: int = 0
    position_frame: str = "camera"
    finetune_steps: int = 0


def pretrain(work: str | Path, config: PretrainConfig = PretrainConfig(), out: str | Path = FOLDER,
             progress: bool = True) -> Pretrained:
    """Dataset, initialisation networks, prediction network, saved to ``out``;
    resumable stage by stage in ``work``."""
    work = Path(work)
    data = work / "data"
    res = (config.resolution, config.resolution)
    dataset.write_dataset(data, config.num_scenes,
                          dataset.Settings(seed=config.seed, resolution=res, check_resolution=res),
                          progress=progress)
    init_run, lido_run = work / "init", work / "lido"
    every = max(1, min(100, config.init_steps // 10))
    init_cfg = init_training.InitTrainConfig(
        data=str(data), steps=config.init_steps, patch_size=config.patch_size, eval_every=every,
        checkpoint_every=every, seed=config.seed)
    if not (init_run / "result.json").exists():
        init_training.train_init(init_cfg, init_run, resume=(init_run / "config.json").exists(),
                                 progress=progress)
    every = max(1, min(250, config.lido_steps // 20))   # each validation pass costs ~20 steps
    lido_cfg = training.TrainConfig(
        data=str(data), steps=config.lido_steps, copies=config.copies, init_run=str(init_run),
        patch_size=config.patch_size, patch_fraction=0.5, position_frame=config.position_frame,
        eval_every=every, checkpoint_every=every, seed=config.seed)
    if not (lido_run / "result.json").exists():
        training.train(lido_cfg, lido_run, resume=(lido_run / "config.json").exists(),
                       progress=progress)
    if config.finetune_steps:
        every = max(1, min(250, config.finetune_steps // 20))
        tuned_cfg = dataclasses.replace(lido_cfg, steps=config.finetune_steps, rollout_from=str(lido_run),
                                        eval_every=every, checkpoint_every=every)
        lido_run = work / "lido_rollout"
        if not (lido_run / "result.json").exists():
            training.train(tuned_cfg, lido_run, resume=(lido_run / "config.json").exists(),
                           progress=progress)
    save(out, init_run, lido_run)
    return load(out)


def add_pretrain_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pretrain", help="retrain the committed networks from scratch",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for the dataset and the two runs")
    p.add_argument("--out", default=str(FOLDER), help="where to save the networks")
    defaults = PretrainConfig()
    for f in dataclasses.fields(PretrainConfig):
        if f.name != "position_frame":
            p.add_argument("--" + f.name.replace("_", "-"), type=int, default=getattr(defaults, f.name))
    p.add_argument("--position-frame", choices=network.POSITION_FRAMES, default=defaults.position_frame)
    p.add_argument("--no-progress", action="store_true")

    def run(args) -> int:
        fields = {f.name for f in dataclasses.fields(PretrainConfig)}
        config = PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        pretrained = pretrain(args.work, config, args.out, progress=not args.no_progress)
        print(json.dumps({"out": args.out, "init": pretrained.meta["init"]["result"],
                          "lido": pretrained.meta["lido"]["result"]}, indent=2))
        return 0

    p.set_defaults(run=run)
    return p
