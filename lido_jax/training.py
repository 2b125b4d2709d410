"""Training data for the LiDO prediction network and the training run (sec. 4, 4.2).

**Examples.** One example per object of a (truth, start) pair of scenes: the patches
of the observed image and of the start scene's render around the start's contact
point, the start's standardised ``z`` (:func:`lido_jax.network.encode_inputs`) and the
heads' targets (:func:`lido_jax.network.targets`). :func:`examples` is jittable.

**Sources.** The paper trains on two sources: (1) the initialisation networks'
outputs on generated images, paired with the truth by contact-point distance, and
(2) the truth plus uniform noise of +- the initialisation networks' median error per
latent, with the shape replaced by a random one (:func:`noisy_start`). Given a
trained initialisation run (``TrainConfig.init_run``, ``python -m lido_jax
train-init``) both sources are used and the noise is that run's measured median
error (:func:`noise_of`); without one, source 2 alone with the half-widths
:data:`DEFAULT_OBJECT_NOISE` / :data:`DEFAULT_GLOBAL_NOISE` (about a tenth of each
range; 30 degrees of azimuth).

**Source 3, refinement states** (beyond the paper). Refinement feeds the network its
own outputs, states that neither source contains: a network that errs a little at
``z_0`` is asked next about a scene it moved, and its errors compound over the 30
steps. With ``TrainConfig.rollout_from`` (a trained run), every scene's source-1
start and first source-2 start are refined by that run's best network for
``rollout_steps`` iterations, and the states after 2, 4, 8, ... iterations (and the
last) become examples labelled with the truth, as DAgger does for imitation
(Ross et al. 2011); training starts from that network's weights.

**Runs.** :func:`train` (``python -m lido_jax train --data DATASET --out RUN``)
builds the examples once from a dataset folder of :mod:`lido_jax.dataset` (cached in
the run folder), holds out a validation split of scenes, and trains with Adam
(lr 3e-4) in the run folder layout of the design: ``config.json``,
``history.jsonl`` (train and validation loss), ``checkpoints/latest.msgpack``
(written atomically every ``checkpoint_every`` steps), ``figures/loss.png`` and
``result.json``. ``--resume RUN`` continues from the checkpoint; batches depend only
on the seed and the step, so a resumed run gives the numbers of an uninterrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm.auto import tqdm

import render
from lido_jax import dataset, network, refine
from render import spec

DEFAULT_OBJECT_NOISE = np.array([0.15, 0.15, 0.01, math.radians(30), 0.1, 0.1, 0.1], np.float32)
"""Half-widths of source 2's uniform noise per object latent (``refine.OBJECT_FIELDS``):
metres, metres, metres of scale, radians, RGB."""

DEFAULT_GLOBAL_NOISE = np.array([0.05, math.radians(5), 0.1, 0.2, math.radians(30),
                                 math.radians(10), 0.1, 0.1, 0.1], np.float32)
"""Half-widths of source 2's uniform noise per global latent (``refine.GLOBAL_FIELDS``)."""


def noisy_start(key: jax.Array, truth: render.Scene, object_noise=DEFAULT_OBJECT_NOISE,
                global_noise=DEFAULT_GLOBAL_NOISE, shape_mismatch: bool = True) -> render.Scene:
    """Source 2: the truth plus uniform noise of +- the half-widths on every latent,
    clipped to the ranges, and (``shape_mismatch``) every shape replaced by a random
    variant of its class. Jittable; one unbatched scene."""
    k_obj, k_glob, k_shape = jax.random.split(key, 3)
    objects = refine.object_vectors(truth)
    g = refine.global_vector(truth)
    objects = objects + jnp.asarray(object_noise) * jax.random.uniform(
        k_obj, objects.shape, minval=-1.0, maxval=1.0)
    g = g + jnp.asarray(global_noise) * jax.random.uniform(k_glob, g.shape, minval=-1.0, maxval=1.0)
    class_id = truth.objects.class_id
    scene = refine.to_scene(truth, refine.clip_objects(objects, class_id), refine.clip_globals(g))
    if shape_mismatch:
        count = jnp.asarray(spec.NUM_SHAPES)[class_id]
        shape = jnp.floor(jax.random.uniform(k_shape, class_id.shape) * count).astype(jnp.int32)
        scene = scene.replace(objects=scene.objects.replace(shape_id=jnp.minimum(shape, count - 1)))
    return scene


def examples(truth: render.Scene, start: render.Scene, observed, *, patch_fraction: float = 0.5,
             patch_size: int = 64, render_fn: refine.RenderFn | None = None, votes=None,
             position_frame: str = "object") -> dict:
    """The examples of one (truth, start) pair: a dict of ``patches`` (N, S, S, 9),
    ``z`` (N, Z_SIZE), ``targets`` (rows of N) and ``valid`` (N,), one row per object
    slot. The start is rendered by ``render_fn`` (default: the JAX tracer without
    shadows at the observed image's resolution), as in the refinement loop; ``votes``
    are the start's objects' votes on the globals (``refine.initial_state``);
    ``position_frame`` that of the position targets (``network.POSITION_FRAMES``).
    Rows are valid where the start's objects are (the truth's slots must be aligned
    with the start's: ``init_training.aligned_truth``)."""
    observed = jnp.asarray(observed, jnp.float32)
    resolution = tuple(observed.shape[:2])
    render_fn = render_fn or refine.jax_render_fn(resolution)
    state = refine.initial_state(start, votes)
    rgb, _ = render_fn(start)
    centres = refine.contact_pixels(state.objects, state.globals, resolution)
    side = patch_fraction * resolution[0]
    patches = network.stack_patches(refine.extract_patches(observed, centres, side, patch_size),
                                    refine.extract_patches(rgb, centres, side, patch_size))
    return {"patches": patches, "z": network.encode_inputs(state, start),
            "targets": network.targets(state.objects, refine.object_vectors(truth),
                                       refine.global_vector(truth), position_frame,
                                       globals_=state.globals, resolution=resolution),
            "valid": jnp.asarray(start.objects.valid, bool)}


# ---------------------------------------------------------------------------------------
# The training run.


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (all saved in ``config.json``).

    Attributes:
      data: a dataset folder (``python -m lido_jax dataset``).
      steps: optimiser steps.
      batch_size: examples (objects) per step.
      copies: noisy starts (source 2) per scene.
      init_run: a ``train-init`` run folder. With it, each scene also gives source 1
        (the initialisation networks' ``z_0``, its objects paired with the truth) and
        source 2's noise is those networks' measured median error per latent (its
        ``result.json``); without it, source 2 alone with the default noise.
      patch_size, patch_fraction: as ``refine.RefineConfig``; use the same values
        when refining.
      position_frame: the frame of the position head's offsets
        (``network.POSITION_FRAMES``); the predictor must use the same.
      validation_fraction: share of the scenes held out for the validation loss.
      eval_every: steps between validation losses; checkpoint_every: between
        checkpoints.
      learning_rate: Adam's (3e-4 in the paper).
      seed: of the noise, the split, the batches, dropout and the initial weights.
      rollout_from: a trained run folder (same patch settings and position frame):
        adds source 3, the states of its best network's refinements
        (:func:`rollout_iterations`), and starts from its weights.
      rollout_steps: refinement iterations of those rollouts.
    """

    data: str
    steps: int = 2000
    batch_size: int = 32
    copies: int = 4
    init_run: str | None = None
    patch_size: int = 64
    patch_fraction: float = 0.5
    position_frame: str = "object"
    validation_fraction: float = 0.1
    eval_every: int = 100
    checkpoint_every: int = 100
    learning_rate: float = network.LEARNING_RATE
    seed: int = 0
    rollout_from: str | None = None
    rollout_steps: int = 16

    def __post_init__(self):
        for name in ("steps", "batch_size", "copies", "eval_every", "checkpoint_every",
                     "rollout_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.patch_size < 8 or self.patch_size % 8:
            raise ValueError(f"patch_size={self.patch_size} must be a positive multiple of 8")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} must be in (0, 1)")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of "
                             f"eval_every={self.eval_every} (a resumed run restarts at a "
                             "checkpoint and must see the same running train loss)")
        if self.position_frame not in network.POSITION_FRAMES:
            raise ValueError(f"position_frame={self.position_frame!r} must be one of "
                             f"{network.POSITION_FRAMES}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")


def rollout_iterations(steps: int) -> tuple[int, ...]:
    """The iterations whose states source 3 keeps: 2, 4, 8, ... below ``steps``, and
    ``steps`` (log-spaced: the steps shrink as ``1 / (t + a)``)."""
    return tuple(sorted({2 ** k for k in range(1, max(steps, 2).bit_length()) if 2 ** k < steps}
                        | {steps}))


def _rollout_fn(config: TrainConfig):
    """A jitted ``fn(truth, start, observed, votes)`` -> the examples of the states of
    ``config.rollout_from``'s best network refining ``start`` (source 3)."""
    run = Path(config.rollout_from)
    base = json.loads((run / "config.json").read_text())
    for name in ("patch_size", "patch_fraction", "position_frame"):
        if base.get(name, "object") != getattr(config, name):
            raise ValueError(f"rollout_from={str(run)!r} was trained with {name}="
                             f"{base.get(name, 'object')!r}, this run has {getattr(config, name)!r}")
    params, _ = load_params(run, which="best")
    at = rollout_iterations(config.rollout_steps)
    refine_config = refine.RefineConfig(steps=config.rollout_steps, patch_fraction=config.patch_fraction,
                                        patch_size=config.patch_size,
                                        anchor_pixels=config.position_frame == "image")

    @jax.jit
    def fn(truth, start, observed, votes):
        predict = network.predictor(params, position_frame=config.position_frame,
                                    resolution=observed.shape[:2])
        _, trace = refine.refine(predict, observed, start, refine_config, votes=votes)
        rows = [examples(truth, refine.to_scene(start, trace["objects"][t], trace["globals"][t]),
                         observed, patch_fraction=config.patch_fraction, patch_size=config.patch_size,
                         votes=trace["votes"][t], position_frame=config.position_frame)
                for t in at]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *rows)

    return fn


def _stack_rows(parts: list[dict]) -> dict:
    rows = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)
    keep = rows["valid"]
    return jax.tree.map(lambda x: x[keep], rows)


def split_files(data: str | Path, validation_fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation) scene files of a dataset folder, split at random by ``seed``
    with at least one validation scene."""
    from lido_jax import fit   # scene_files lives with the other dataset readers

    files = fit.scene_files(data)
    if len(files) < 2:
        raise ValueError(f"{data}: need at least 2 scene files (one for validation), "
                         f"found {len(files)}")
    order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(seed), 0), len(files)))
    n_val = max(1, int(round(validation_fraction * len(files))))
    return [files[i] for i in order[n_val:]], [files[i] for i in order[:n_val]]


def build_examples(config: TrainConfig, progress: bool = True) -> tuple[dict, dict]:
    """(train, validation) example tables from the dataset: every scene's valid objects,
    ``copies`` noisy starts each (source 2), source 1 with ``init_run`` and source 3
    with ``rollout_from``; scenes split by ``validation_fraction``."""
    train_files, val_files = split_files(config.data, config.validation_fraction, config.seed)
    key = jax.random.key(config.seed)
    object_noise, global_noise = noise_of(config.init_run)
    rows = jax.jit(lambda truth, start, obs, votes: examples(
        truth, start, obs, patch_fraction=config.patch_fraction, patch_size=config.patch_size,
        votes=votes, position_frame=config.position_frame))
    noisy = jax.jit(lambda k, truth: noisy_start(k, truth, object_noise, global_noise))
    rollout = _rollout_fn(config) if config.rollout_from else None
    source1 = None
    if config.init_run:
        from lido_jax import init_training
        params, init_config = init_training.load_init(config.init_run)
        source1 = lambda truth, obs: init_training.source1_pairs(  # noqa: E731
            params, jax.tree.map(lambda x: x[None], truth), obs[None], init_config)
    split = {"train": [], "validation": []}
    for name, path in tqdm([("validation", f) for f in val_files] + [("train", f) for f in train_files],
                           desc="examples", disable=not progress):
        truth, arrays = dataset.load_scene(path)
        truth = jax.tree.map(jnp.asarray, truth)
        obs = jnp.asarray(arrays["rgb"], jnp.float32)
        index = int(arrays["index"])
        if source1 is not None:
            start, votes, aligned, _ = jax.tree.map(lambda x: x[0], source1(truth, obs))
            split[name].append(jax.device_get(rows(aligned, start, obs, votes)))
            if rollout is not None:
                split[name].append(jax.device_get(rollout(aligned, start, obs, votes)))
        for c in range(config.copies):
            k = jax.random.fold_in(jax.random.fold_in(key, 1 + index), c)
            start = noisy(k, truth)
            split[name].append(jax.device_get(rows(truth, start, obs, None)))
            if rollout is not None and c == 0:
                split[name].append(jax.device_get(
                    rollout(truth, start, obs, refine.initial_state(start).votes)))
    return _stack_rows(split["train"]), _stack_rows(split["validation"])


def noise_of(init_run: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Source 2's noise half-widths: an initialisation run's median errors per latent
    (``result.json``), or the defaults without one (or when it paired no object)."""
    if not init_run:
        return DEFAULT_OBJECT_NOISE, DEFAULT_GLOBAL_NOISE
    result = json.loads((Path(init_run) / "result.json").read_text())
    if not result.get("object_errors"):
        return DEFAULT_OBJECT_NOISE, np.asarray(result["global_errors"], np.float32)
    return (np.asarray(result["object_errors"], np.float32),
            np.asarray(result["global_errors"], np.float32))


def _save_examples(path: Path, table: dict) -> None:
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(table)[0]}
    dataset.atomic_write(path, dataset.npz_bytes(flat))


def _load_examples(path: Path) -> dict:
    with np.load(path) as data:
        flat = {k: data[k] for k in data.files}
    table = {"targets": {}}
    for k, v in flat.items():
        head, _, rest = k.partition("/")
        if rest:
            table[head][rest] = v
        else:
            table[k] = v
    return table


def _loss_fn(model):
    return jax.jit(lambda params, b: network.loss(model.apply(params, b["patches"], b["z"]),
                                                  b["targets"], b["valid"]))


def evaluate(params, table: dict, model: network.PredictionNetwork = network.PredictionNetwork(),
             batch_size: int = 256) -> float:
    """Mean loss (dropout off) over an example table."""
    loss = _loss_fn(model)
    n = len(table["valid"])
    total = 0.0
    for start in range(0, n, batch_size):
        b = jax.tree.map(lambda x: x[start:start + batch_size], table)
        total += float(loss(params, b)) * len(b["valid"])
    return total / max(n, 1)


def _batch(table: dict, key: jax.Array, step: int, batch_size: int) -> dict:
    n = len(table["valid"])
    idx = np.asarray(jax.random.choice(jax.random.fold_in(key, step), n, (batch_size,),
                                       replace=n < batch_size))
    return jax.tree.map(lambda x: x[idx], table)


def _checkpoint_bytes(params, opt_state, step: int) -> bytes:
    return serialization.msgpack_serialize(
        {"params": serialization.to_state_dict(params),
         "opt_state": serialization.to_state_dict(opt_state), "step": step})


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("train_loss", "train (running mean)"), ("validation_loss", "validation")):
        pts = [(h["step"], h[key]) for h in history if key in h]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (L1 + L2 + 0.2 CE)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_history(out: str | Path) -> list[dict]:
    path = Path(out) / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_params(out: str | Path, template=None, which: str = "latest"):
    """The parameters of a run folder's checkpoint (and its step), restored into
    ``template`` (default: the prediction network of the run's ``patch_size``).
    ``which``: ``"latest"`` (where training stopped) or ``"best"`` (the lowest
    validation loss seen, ``checkpoints/best.msgpack``)."""
    out = Path(out)
    if which not in ("latest", "best"):
        raise ValueError(f"which={which!r} must be 'latest' or 'best'")
    if template is None:
        config = json.loads((out / "config.json").read_text())
        template = network.init(jax.random.key(0), config["patch_size"])
    state = serialization.msgpack_restore((out / "checkpoints" / f"{which}.msgpack").read_bytes())
    return serialization.from_state_dict(template, state["params"]), int(state["step"])


def open_run(out: str | Path, config_type, config, resume: bool):
    """The config of a run folder: ``config`` written to a new folder, or (``resume``)
    the one saved there, as a ``config_type``."""
    out = Path(out)
    if resume:
        if not (out / "config.json").exists():
            raise FileNotFoundError(f"{out}: no config.json to resume from")
        return config_type(**json.loads((out / "config.json").read_text()))
    if config is None:
        raise ValueError(f"pass a {config_type.__name__}, or resume=True with an existing run folder")
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it")
    out.mkdir(parents=True, exist_ok=True)
    dataset.atomic_write(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2).encode())
    return config


def fit(out: str | Path, *, steps: int, eval_every: int, checkpoint_every: int, params, opt_state,
        update, validate, progress: bool = True, desc: str = "train"):
    """The training loop of a run folder, resumable.

    ``update(params, opt_state, step) -> (params, opt_state, loss)`` must depend only
    on its arguments (draw batches and dropout from the step), so a run resumed from
    ``checkpoints/latest.msgpack`` repeats an uninterrupted one; ``validate(params)``
    gives the validation loss written to ``history.jsonl`` every ``eval_every`` steps
    with the running mean of the training loss. Checkpoints (every
    ``checkpoint_every`` steps, a multiple of ``eval_every``, and at the end) are
    written atomically, and so is ``checkpoints/best.msgpack``, the parameters of the
    lowest validation loss so far (early stopping without stopping). Saves
    ``figures/loss.png``.

    Returns:
      ``(params, opt_state, history)``.
    """
    out = Path(out)
    ckpt = out / "checkpoints" / "latest.msgpack"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    step0 = 0
    if ckpt.exists():
        state = serialization.msgpack_restore(ckpt.read_bytes())
        params = serialization.from_state_dict(params, state["params"])
        opt_state = serialization.from_state_dict(opt_state, state["opt_state"])
        step0 = int(state["step"])
    history = [h for h in read_history(out) if h["step"] <= step0]   # later lines are redone
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    best = min((h["validation_loss"] for h in history), default=math.inf)
    t0 = time.perf_counter() - (history[-1]["wall_time_s"] if history else 0.0)
    window: list[float] = []
    bar = tqdm(range(step0, steps), initial=step0, total=steps, desc=desc, disable=not progress)
    for step in bar:
        params, opt_state, loss = update(params, opt_state, step)
        window.append(float(loss))
        done = step + 1
        if done % eval_every == 0 or done == steps:
            line = {"step": done, "train_loss": float(np.mean(window)),
                    "validation_loss": float(validate(params)),
                    "wall_time_s": time.perf_counter() - t0}
            window = []
            history.append(line)
            if line["validation_loss"] < best:   # a resumed run rewrites the same file
                best = line["validation_loss"]
                dataset.atomic_write(ckpt.with_name("best.msgpack"), serialization.msgpack_serialize(
                    {"params": serialization.to_state_dict(params), "step": done,
                     "validation_loss": best}))
            with open(out / "history.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            bar.set_postfix(train=f"{line['train_loss']:.3f}", val=f"{line['validation_loss']:.3f}")
        if done % checkpoint_every == 0 or done == steps:
            dataset.atomic_write(ckpt, _checkpoint_bytes(params, opt_state, done))
    bar.close()
    _plot(history, out / "figures" / "loss.png")
    return params, opt_state, history


def train(config: TrainConfig | None, out: str | Path, *, resume: bool = False,
          progress: bool = True) -> dict:
    """Trains the prediction network on source-2 examples; see the module docstring.

    Returns the ``result.json`` dict: steps, final train and validation loss, example
    counts and wall time.
    """
    out = Path(out)
    config = open_run(out, TrainConfig, config, resume)
    cache = {name: out / f"examples_{name}.npz" for name in ("train", "validation")}
    if all(p.exists() for p in cache.values()):
        train_rows, val_rows = (_load_examples(cache[n]) for n in ("train", "validation"))
    else:
        train_rows, val_rows = build_examples(config, progress)
        _save_examples(cache["train"], train_rows)
        _save_examples(cache["validation"], val_rows)

    model = network.PredictionNetwork()
    opt = network.optimizer(config.learning_rate)
    key = jax.random.key(config.seed)
    initial = network.init(jax.random.fold_in(key, 2), config.patch_size, model)
    if config.rollout_from:
        initial, _ = load_params(config.rollout_from, initial, which="best")
    step_fn = network.train_step(model, opt)
    batch_key, dropout_key = jax.random.fold_in(key, 3), jax.random.fold_in(key, 4)

    def update(params, opt_state, step):
        batch = _batch(train_rows, batch_key, step, config.batch_size)
        return step_fn(params, opt_state, batch, jax.random.fold_in(dropout_key, step))

    _, _, history = fit(out, steps=config.steps, eval_every=config.eval_every,
                        checkpoint_every=config.checkpoint_every, params=initial,
                        opt_state=opt.init(initial), update=update,
                        validate=lambda p: evaluate(p, val_rows, model), progress=progress,
                        desc="train LiDO")
    last = history[-1]
    best = min(history, key=lambda h: h["validation_loss"])
    result = {"steps": config.steps, "train_examples": int(len(train_rows["valid"])),
              "validation_examples": int(len(val_rows["valid"])),
              "initial_validation_loss": evaluate(initial, val_rows, model),
              "train_loss": last["train_loss"], "validation_loss": last["validation_loss"],
              "best_step": best["step"], "best_validation_loss": best["validation_loss"],
              "wall_time_s": last["wall_time_s"]}
    dataset.atomic_write(out / "result.json", json.dumps(result, indent=2).encode())
    return result


def add_train_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the LiDO prediction network (source 2 examples)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (python -m lido_jax dataset)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    defaults = TrainConfig(data="")
    for name in ("steps", "batch_size", "copies", "patch_size", "eval_every", "checkpoint_every",
                 "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    p.add_argument("--init-run", default=None,
                   help="train-init run folder: adds source 1 and sets source 2's noise")
    p.add_argument("--patch-fraction", type=float, default=defaults.patch_fraction)
    p.add_argument("--position-frame", choices=network.POSITION_FRAMES, default=defaults.position_frame,
                   help="frame of the position offsets (object: App. D.2; camera: the ground axes)")
    p.add_argument("--rollout-from", default=None,
                   help="trained run folder: add its refinements' states (source 3), start from it")
    p.add_argument("--rollout-steps", type=int, default=defaults.rollout_steps)
    p.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--no-progress", action="store_true")

    def run(args) -> int:
        config = None
        if not args.resume:
            if not args.data:
                p.error("--data is required unless --resume")
            fields = {f.name for f in dataclasses.fields(TrainConfig)}
            config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
        print(json.dumps(result, indent=2))
        return 0

    p.set_defaults(run=run)
    return p
