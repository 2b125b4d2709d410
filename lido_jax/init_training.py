"""Training the initialisation networks, and what they give LiDO's training (sec. 4).

``python -m lido_jax train-init --data DATASET --out RUN``: the detector and the
patch network are trained together (one Adam, the sum of their losses) on a dataset
folder of :mod:`lido_jax.dataset`, in the resumable run folder of
:func:`lido_jax.training.fit`. Each step draws, from the seed and the step alone,
``image_batch`` images for the detector and ``object_batch`` objects for the patch
network, whose patches are centred at the true contact point moved by up to
``jitter`` of the image height (the paper: +- 8 px of 128) so the network learns to
work from imperfect detections.

With trained networks, :func:`pair` matches detections to the truth (same class,
contact points within ``PAIR_DISTANCE`` of the image width, nearest first; sec. 4.2)
and :func:`median_errors` measures the networks' median error per latent on a
dataset: source 2's noise (``training.noisy_start``); :func:`source1_pairs` gives
source 1, the initial scenes ``z_0`` with the truth aligned to their detections.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import render
from lido_jax import dataset, initialization as ini, refine, training

PAIR_DISTANCE: float = 0.1
"""Largest contact-point distance, over the image width, of a detection and its truth."""


@dataclasses.dataclass(frozen=True)
class InitTrainConfig:
    """Settings of :func:`train_init` (saved in ``config.json``).

    Attributes:
      data: a dataset folder; every image must have the same resolution.
      steps, image_batch, object_batch: optimiser steps and images / objects per step.
      patch_size, patch_fraction: the patch network's input (``ini.InitConfig``).
      jitter: largest move of a training patch's centre, over the image height.
      threshold: detection score threshold of the trained networks' inference.
      validation_fraction, eval_every, checkpoint_every, learning_rate, seed: as
        ``training.TrainConfig``.
    """

    data: str
    steps: int = 3000
    image_batch: int = 8
    object_batch: int = 32
    patch_size: int = 32
    patch_fraction: float = 0.5
    jitter: float = 0.0625
    threshold: float = 0.5
    validation_fraction: float = 0.1
    eval_every: int = 100
    checkpoint_every: int = 100
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "image_batch", "object_batch", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        self.inference   # checks patch_fraction, patch_size and threshold
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter={self.jitter} must be in [0, 0.5)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} must be in (0, 1)")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of "
                             f"eval_every={self.eval_every}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")

    @property
    def inference(self) -> ini.InitConfig:
        return ini.InitConfig(threshold=self.threshold, patch_fraction=self.patch_fraction,
                              patch_size=self.patch_size)


def load_scenes(files) -> tuple[render.Scene, jax.Array]:
    """The scenes (stacked) and observed images (B, H, W, 3) of scene files."""
    scenes, images = [], []
    for path in files:
        scene, arrays = dataset.load_scene(path)
        scenes.append(scene)
        images.append(arrays["rgb"])
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"the images have different shapes {sorted(shapes)}; use one resolution")
    return (jax.tree.map(lambda *x: jnp.asarray(np.stack(x)), *scenes),
            jnp.asarray(np.stack(images), jnp.float32))


def _losses(config: InitTrainConfig, resolution):
    det_model, patch_model = ini.Detector(), ini.PatchNetwork()
    side = config.patch_fraction * resolution[0]

    def loss(params, scenes, images, key, train: bool):
        k_img, k_obj, k_jit, k_d1, k_d2 = jax.random.split(key, 5)
        m = images.shape[0]
        pick = jax.random.choice(k_img, m, (config.image_batch,), replace=m < config.image_batch)
        batch = jax.tree.map(lambda x: x[pick], scenes)
        targets = jax.vmap(lambda s: ini.detector_targets(s, resolution))(batch)
        rngs = lambda k: {"dropout": k} if train else None  # noqa: E731
        det = det_model.apply(params["detector"], images[pick], train=train, rngs=rngs(k_d1))
        # objects: (image, slot) pairs among the valid ones
        valid = scenes.objects.valid.reshape(-1)
        weights = valid / jnp.maximum(jnp.sum(valid), 1)
        flat = jax.random.choice(k_obj, valid.shape[0], (config.object_batch,), p=weights)
        n = scenes.objects.valid.shape[1]
        img, slot = flat // n, flat % n
        one = jax.tree.map(lambda x: x[img], scenes)
        pixels = jax.vmap(lambda s, k: refine.contact_pixels(refine.object_vectors(s),
                                                             refine.global_vector(s), resolution)[k])(
            one, slot)
        moved = pixels + config.jitter * resolution[0] * jax.random.uniform(
            k_jit, pixels.shape, minval=-1.0, maxval=1.0)
        patches = jax.vmap(lambda im, c: refine.extract_patches(im, c[None], side,
                                                                config.patch_size)[0])(images[img], moved)
        size = jax.vmap(lambda s, k: ini.projected_size(s, resolution)[k])(one, slot)
        class_id = one.objects.class_id[jnp.arange(config.object_batch), slot]
        dvec = ini.detection_vector(moved, size, class_id, resolution)
        out = patch_model.apply(params["patch"], patches, dvec, train=train, rngs=rngs(k_d2))
        pt = jax.vmap(lambda s, k: jax.tree.map(lambda x: x[k], ini.patch_targets(s)))(one, slot)
        ok = valid[flat] & jnp.all(jnp.isfinite(pixels), -1)
        return ini.detector_loss(det, targets) + ini.patch_loss(out, pt, class_id, ok)

    return loss


def train_init(config: InitTrainConfig | None, out: str | Path, *, resume: bool = False,
               progress: bool = True) -> dict:
    """Trains the detector and patch network; returns ``result.json``'s dict (losses,
    counts, wall time, and the detection precision/recall and median errors of
    :func:`median_errors` on the validation scenes)."""
    out = Path(out)
    config = training.open_run(out, InitTrainConfig, config, resume)
    train_files, val_files = training.split_files(config.data, config.validation_fraction, config.seed)
    train_scenes, train_images = load_scenes(train_files)
    val_scenes, val_images = load_scenes(val_files)
    resolution = tuple(train_images.shape[1:3])
    key = jax.random.key(config.seed)
    params = ini.init_params(jax.random.fold_in(key, 2), resolution, config.patch_size)
    opt = optax.adam(config.learning_rate)
    loss = _losses(config, resolution)
    step_key, val_key = jax.random.fold_in(key, 3), jax.random.fold_in(key, 4)

    @jax.jit
    def step_fn(params, opt_state, step):
        value, grads = jax.value_and_grad(loss)(params, train_scenes, train_images,
                                                jax.random.fold_in(step_key, step), True)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    @jax.jit
    def validate(params):   # the same 8 draws every time: a comparable curve
        return jnp.mean(jnp.stack([loss(params, val_scenes, val_images, jax.random.fold_in(val_key, i),
                                        False) for i in range(8)]))

    params, _, history = training.fit(
        out, steps=config.steps, eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every, params=params, opt_state=opt.init(params),
        update=step_fn, validate=validate, progress=progress, desc="train init")
    quality = median_errors(params, val_scenes, val_images, config.inference)
    last = history[-1]
    result = {"steps": config.steps, "train_images": len(train_files), "validation_images": len(val_files),
              "train_loss": last["train_loss"], "validation_loss": last["validation_loss"],
              "wall_time_s": last["wall_time_s"], **quality}
    dataset.atomic_write(out / "result.json", json.dumps(result, indent=2).encode())
    return result


def load_init(out: str | Path):
    """``(params, InitConfig)`` of a ``train-init`` run folder."""
    out = Path(out)
    config = InitTrainConfig(**json.loads((out / "config.json").read_text()))
    template = ini.init_params(jax.random.key(0), _resolution_of(config.data), config.patch_size)
    params, _ = training.load_params(out, template)
    return params, config.inference


def _resolution_of(data) -> tuple[int, int]:
    manifest = json.loads((Path(data) / dataset.MANIFEST).read_text())
    return tuple(manifest["settings"]["resolution"])


# ---------------------------------------------------------------------------------------
# Pairing and errors.


def pair(detections: ini.Detections, truth: render.Scene, resolution) -> jax.Array:
    """(N,) the truth's object slot paired with each detection, -1 for none: same class,
    contact points closer than ``PAIR_DISTANCE`` of the image width, the closest pair
    first, each truth object used once. Jittable."""
    pixels = refine.contact_pixels(refine.object_vectors(truth), refine.global_vector(truth),
                                   resolution)
    d = jnp.linalg.norm(detections.pixel[:, None] - pixels[None], axis=-1)
    ok = (detections.valid[:, None] & truth.objects.valid[None]
          & (detections.class_id[:, None] == truth.objects.class_id[None])
          & (d < PAIR_DISTANCE * resolution[1]))
    d = jnp.where(ok, jnp.nan_to_num(d, nan=jnp.inf), jnp.inf)
    n = d.shape[0]

    def take(carry, _):
        d, match = carry
        i = jnp.argmin(d)
        row, col = i // d.shape[1], i % d.shape[1]
        found = jnp.isfinite(d[row, col])
        match = jnp.where(found, match.at[row].set(col), match)
        d = jnp.where(found, d.at[row].set(jnp.inf).at[:, col].set(jnp.inf), d)
        return (d, match), None

    (_, match), _ = jax.lax.scan(take, (d, jnp.full(n, -1, jnp.int32)), None, length=n)
    return match


def aligned_truth(start: render.Scene, truth: render.Scene, match) -> render.Scene:
    """The truth with object slot ``k`` holding the object paired with detection ``k``
    (``match[k]``; invalid where unpaired), classes and shapes the truth's."""
    idx = jnp.maximum(match, 0)
    objects = jax.tree.map(lambda x: x[idx], truth.objects)
    return truth.replace(objects=objects.replace(valid=(match >= 0) & start.objects.valid))


@functools.lru_cache(maxsize=None)
def _source1_fn(config: ini.InitConfig, resolution: tuple[int, int]):
    def one(params, truth, image):
        start, votes, det = ini.initial_scene(params, image, config)
        match = pair(det, truth, resolution)
        start = start.replace(objects=start.objects.replace(valid=start.objects.valid & (match >= 0)))
        return start, votes, aligned_truth(start, truth, match), det

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def source1_pairs(params, scenes: render.Scene, images, config: ini.InitConfig = ini.InitConfig()):
    """Source 1 (sec. 4.2): for a batch of truths and their observed images, the initial
    scenes ``z_0`` (only paired detections valid), their votes, the aligned truths
    and the detections (``(start, votes, truth, detections)``, each batched).
    Compiled once per config and resolution."""
    return _source1_fn(config, tuple(images.shape[1:3]))(params, scenes, images)


def median_errors(params, scenes: render.Scene, images, config: ini.InitConfig = ini.InitConfig(),
                  batch: int = 16) -> dict:
    """Detection precision and recall, and the median absolute error per latent of the
    paired objects (``refine.OBJECT_FIELDS``) and of the voted globals
    (``refine.GLOBAL_FIELDS``), shape accuracy among the paired: source 2's noise
    half-widths are ``object_errors`` and ``global_errors``."""
    objects_err, globals_err, shapes = [], [], []
    detected = paired = truths = 0
    m = images.shape[0]
    for i in range(0, m, batch):
        sl = jax.tree.map(lambda x: x[i:i + batch], scenes)
        start, _, truth, det = source1_pairs(params, sl, images[i:i + batch], config)
        detected += int(np.asarray(det.valid).sum())
        truths += int(np.asarray(sl.objects.valid).sum())
        ok = np.asarray(start.objects.valid)
        paired += int(ok.sum())
        d_obj = np.abs(np.asarray(refine.difference(refine.object_vectors(start),
                                                    refine.object_vectors(truth), refine.OBJECT_PERIODIC)))
        objects_err.append(d_obj[ok])
        shapes.append(np.asarray(start.objects.shape_id)[ok] == np.asarray(truth.objects.shape_id)[ok])
        globals_err.append(np.abs(np.asarray(refine.difference(
            refine.global_vector(start), refine.global_vector(sl), refine.GLOBAL_PERIODIC))))
    objects_err = np.concatenate(objects_err) if paired else np.zeros((0, 7))
    return {"detections": detected, "objects": truths, "paired": paired,
            "precision": paired / max(detected, 1), "recall": paired / max(truths, 1),
            "shape_accuracy": float(np.mean(np.concatenate(shapes))) if paired else None,
            "object_errors": np.median(objects_err, 0).tolist() if paired else None,
            "global_errors": np.median(np.concatenate(globals_err), 0).tolist()}


def add_train_init_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-init", help="train the detector and patch (initialisation) networks",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (python -m lido_jax dataset)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    defaults = InitTrainConfig(data="")
    for name in ("steps", "image_batch", "object_batch", "patch_size", "eval_every",
                 "checkpoint_every", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("patch_fraction", "jitter", "threshold", "validation_fraction", "learning_rate"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--no-progress", action="store_true")

    def run(args) -> int:
        config = None
        if not args.resume:
            if not args.data:
                p.error("--data is required unless --resume")
            fields = {f.name for f in dataclasses.fields(InitTrainConfig)}
            config = InitTrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        result = train_init(config, args.out, resume=args.resume, progress=not args.no_progress)
        print(json.dumps(result, indent=2))
        return 0

    p.set_defaults(run=run)
    return p
