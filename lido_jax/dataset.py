"""Writes generated scenes and their observed images to disk, resumably.

``python -m lido_jax dataset --num 100 --out data/lido --resolution 128``: scene ``i``
comes from ``key_i = jax.random.fold_in(jax.random.key(seed), i)``, split into the
generator's and the observation's keys (``jax.random.split(key_i)``), and is written
as ``scene_{i:06d}.npz`` plus a preview ``scene_{i:06d}.png``. Each file is written to
a temporary name and renamed, so a file that exists is complete; a killed run skips
them when restarted. ``manifest.json`` holds the settings (written before the first
scene, so a restart with other settings is refused) and, once done, the count and
package versions.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import io
import json
import os
import platform
import zipfile
from pathlib import Path

import jax
import numpy as np

import render
from lido_jax import generator

MANIFEST = "manifest.json"
OBSERVE_BACKENDS: tuple[str, ...] = tuple(sorted(render.BACKENDS))

_CLASS_COLOURS = ((230, 57, 70), (29, 161, 242), (255, 200, 0))   # preview markers by class


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a dataset folder holds; every scene file of a folder shares these.

    Attributes:
      seed: root of the scene keys.
      resolution: (H, W) of the observed images.
      backend: renderer of the observed images (``generator.observe``).
      check_resolution: (H, W) of the generator's occlusion masks.
      min_objects, max_objects: range of the target number of objects.
      textures, shadows, background: options of ``generator.observe``.
    """

    seed: int = 0
    resolution: tuple[int, int] = (128, 128)
    backend: str = "jax"
    check_resolution: tuple[int, int] = (64, 64)
    min_objects: int = 4
    max_objects: int = 7
    textures: bool = True
    shadows: bool = True
    background: bool = True

    def __post_init__(self):
        if self.backend not in render.BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {OBSERVE_BACKENDS}")
        for name in ("resolution", "check_resolution"):
            value = tuple(int(r) for r in getattr(self, name))
            if len(value) != 2 or min(value) < 1:
                raise ValueError(f"{name}={value} must be (H, W) with positive sizes")
            object.__setattr__(self, name, value)
        generator._check_counts(self.min_objects, self.max_objects)
        if self.textures and self.backend == "gl":
            raise ValueError("backend='gl' has no textures; pass textures=False (--no-textures)")

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def scene_path(out: str | os.PathLike, index: int) -> Path:
    """The ``.npz`` file of scene ``index`` (its preview has the suffix ``.png``)."""
    return Path(out) / f"scene_{index:06d}.npz"


def scene_leaves(scene: render.Scene) -> dict[str, np.ndarray]:
    """Every leaf of a scene as a numpy array under its dotted path (``"camera.height"``)."""
    paths, _ = jax.tree_util.tree_flatten_with_path(scene)
    return {".".join(k.name for k in path): np.asarray(leaf) for path, leaf in paths}


def _scene_treedef():
    zero = 0
    template = render.Scene(camera=render.Camera(zero, zero), light=render.Light(zero, zero, zero, zero),
                            ground_rgb=zero, objects=render.Objects(*(zero,) * 7))
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return [".".join(k.name for k in path) for path, _ in paths], treedef


def load_scene(path: str | os.PathLike) -> tuple[render.Scene, dict[str, np.ndarray]]:
    """Reads a scene file back.

    Returns:
      The ``render.Scene`` (numpy leaves) and the other arrays: ``rgb`` (H, W, 3),
      ``depth`` (H, W), ``instance`` (H, W) of the observed image, ``contact_pixels``
      (N, 2) at the image's resolution (NaN for padding), ``visible_fraction`` (N,),
      ``in_image_fraction`` (N,), ``check_instance`` (h, w) (the generator's mask at
      the check resolution), ``index`` and ``seed``.
    """
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    names, treedef = _scene_treedef()
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"{path}: not a scene file, missing {missing}")
    scene = jax.tree_util.tree_unflatten(treedef, [arrays.pop(n) for n in names])
    return scene, arrays


def atomic_write(path: Path, data: bytes) -> None:
    """Writes a file under a temporary name in its folder, then renames it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


ZIP64_FROM = 2**30
"""Arrays of this many bytes or more are written as ZIP64 members (zipfile refuses
members over 2 GiB otherwise)."""


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``np.load``-able archive with fixed timestamps: same arrays, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            value = np.asanyarray(value)
            # ZIP64 only where needed (example tables of big runs): small files keep their bytes.
            with archive.open(info, "w", force_zip64=value.nbytes >= ZIP64_FROM) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    return buffer.getvalue()


def preview_png(rgb: np.ndarray, contact_pixels: np.ndarray, class_id: np.ndarray) -> bytes:
    """PNG of an image (H, W, 3) in [0, 1], enlarged to >= 256 px wide, with a ring at
    each contact point coloured by class (red stapler, blue mug, yellow banana)."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    zoom = max(1, -(-256 // w))
    image = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    image = image.resize((w * zoom, h * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    for (row, col), c in zip(contact_pixels, class_id):
        if not np.all(np.isfinite([row, col])):
            continue
        y, x, r = (row + 0.5) * zoom, (col + 0.5) * zoom, 4
        draw.ellipse([x - r - 1, y - r - 1, x + r + 1, y + r + 1], outline=(0, 0, 0), width=1)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=_CLASS_COLOURS[int(c)], width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_scene(index: int, settings: Settings) -> dict[str, np.ndarray]:
    """Generates and observes scene ``index``: every array of its file."""
    key = jax.random.fold_in(jax.random.key(settings.seed), index)
    k_generate, k_observe = jax.random.split(key)
    gt = generator.generate(k_generate, min_objects=settings.min_objects,
                            max_objects=settings.max_objects,
                            check_resolution=settings.check_resolution)
    image = generator.observe(gt, k_observe, backend=settings.backend,
                              resolution=settings.resolution, textures=settings.textures,
                              shadows=settings.shadows, background=settings.background)
    return {
        **scene_leaves(gt.scene),
        "rgb": np.asarray(image.rgb, np.float32),
        "depth": np.asarray(image.depth, np.float32),
        "instance": np.asarray(image.instance, np.int32),
        "contact_pixels": gt.contact_pixels_at(settings.resolution),
        "visible_fraction": np.asarray(gt.visible_fraction),
        "in_image_fraction": np.asarray(gt.in_image_fraction),
        "check_instance": np.asarray(gt.instance),
        "index": np.asarray(index, np.int64),
        "seed": np.asarray(settings.seed, np.int64),
    }


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("scene-opt-jax", "jax", "jaxlib", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_dataset(out: str | os.PathLike, num: int, settings: Settings = Settings(), *,
                  progress: bool | None = None) -> Path:
    """Writes scenes ``0 .. num - 1`` to ``out``, skipping those already there.

    Args:
      out: folder (created if missing).
      num: number of scenes, >= 0.
      settings: must equal those of an existing ``manifest.json`` in ``out``.
      progress: a tqdm bar (``None``: on terminals).

    Returns:
      The path of ``manifest.json``.

    Raises:
      ValueError: ``num < 0``, or ``out`` holds a dataset written with other settings.
    """
    from tqdm.auto import tqdm

    if num < 0:
        raise ValueError(f"num={num} must be >= 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = settings.to_json()
    manifest = _read_manifest(out)
    if manifest is not None and manifest.get("settings") != wanted:
        old = manifest.get("settings", {})
        diff = ", ".join(f"{k}={old.get(k)!r} there vs {v!r} now"
                         for k, v in wanted.items() if old.get(k) != v)
        raise ValueError(f"{out} holds a dataset written with other settings ({diff}); "
                         "use another --out or the same settings")
    previous = (manifest or {}).get("count", 0)
    if manifest is None:
        _write_manifest(out, {"settings": wanted, "count": 0, "complete": False})
    todo = [i for i in range(num)
            if not (scene_path(out, i).exists() and scene_path(out, i).with_suffix(".png").exists())]
    with tqdm(total=num, initial=num - len(todo), desc="lido dataset", unit="scene",
              disable=(None if progress is None else not progress)) as bar:
        for i in todo:
            arrays = make_scene(i, settings)
            path = scene_path(out, i)
            atomic_write(path, npz_bytes(arrays))
            atomic_write(path.with_suffix(".png"), preview_png(
                arrays["rgb"], arrays["contact_pixels"], arrays["objects.class_id"]))
            bar.update(1)
    return _write_manifest(out, {"settings": wanted, "count": max(num, previous),
                                 "complete": True, "versions": _versions()})


def _write_manifest(out: Path, manifest: dict) -> Path:
    """Writes ``manifest.json`` unless it already holds exactly this."""
    path = out / MANIFEST
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:
        atomic_write(path, text.encode())
    return path


def add_dataset_command(subparsers) -> argparse.ArgumentParser:
    """Registers ``dataset`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser("dataset", help="write generated scenes and observed images",
                              description=__doc__.split("\n\n")[0])
    d = Settings()
    p.add_argument("--num", type=int, required=True, help="number of scenes")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resolution", type=int, default=d.resolution[0],
                   help="side of the (square) observed images, pixels")
    p.add_argument("--check-resolution", type=int, default=d.check_resolution[0],
                   help="side of the generator's occlusion masks, pixels")
    p.add_argument("--backend", choices=OBSERVE_BACKENDS, default=d.backend)
    p.add_argument("--min-objects", type=int, default=d.min_objects)
    p.add_argument("--max-objects", type=int, default=d.max_objects)
    for flag in ("textures", "shadows", "background"):
        p.add_argument(f"--no-{flag}", dest=flag, action="store_false", help=f"observe without {flag}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args) -> int:
        try:
            settings = Settings(seed=args.seed, resolution=(args.resolution,) * 2,
                                backend=args.backend, check_resolution=(args.check_resolution,) * 2,
                                min_objects=args.min_objects, max_objects=args.max_objects,
                                textures=args.textures, shadows=args.shadows,
                                background=args.background)
            manifest = write_dataset(args.out, args.num, settings,
                                     progress=False if args.quiet else None)
        except ValueError as e:
            p.error(str(e))
        print(manifest)
        return 0

    p.set_defaults(run=run)
    return p
