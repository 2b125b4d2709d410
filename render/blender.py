"""Blender backend: bpy + Cycles in supervised worker processes.

bpy 5.0.1 (the newest for Python 3.11) needs numpy < 2 while this library uses
numpy 2, so Blender runs in **worker processes with their own package folder**
(:func:`install`, run by ``./dev.sh``; or ``python -m render.blender install``).
Workers start on first use, stay alive across calls and talk to the parent over
pipes (:mod:`render.blender_worker` has the protocol). A :class:`Pool` supervises
them: a worker that crashes or runs past ``timeout`` is killed and restarted and
its request retried up to ``retries`` times; a request that still fails raises a
:class:`BlenderError` naming the scene, and every other request of the batch is
rendered all the same.

Images follow the conventions of :mod:`render.spec` and the other backends:
linear colour, ``albedo * (ambient + strength * cos)`` shading (the sun's energy
is ``pi * strength``; the uniform light is a white sky of strength ``ambient``, so
Cycles adds what the JAX model lacks: ambient occlusion and bounced light). The
background colour or image is composited by coverage (Cycles' alpha), so it is
seen but does not light the scene.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from render import shapes, spec
from render.jax_renderer import BACKGROUND, FIRST_OBJECT, Image

BPY_VERSION = "5.0.1"
"""The bpy release the workers run (the newest with wheels for Python 3.11)."""

_WORKER_SCRIPT = pathlib.Path(__file__).with_name("blender_worker.py")


@dataclasses.dataclass(frozen=True)
class BlenderRenderConfig:
    """Options of the Blender backend.

    Attributes:
      samples: Cycles samples per pixel (adaptive sampling stops earlier where
        the image has converged).
      shadows: the sun casts shadows.
      textures: multiply every albedo by a greyscale noise texture of mean ~1
        (LiDO App. A: the scene's albedo is the textured surface's mean colour).
      texture_contrast: the texture spans ``1 +- texture_contrast`` around 1.
      denoise: OpenImageDenoise on the final image.
      device: ``"cpu"``, ``"gpu"`` (CUDA/OptiX/HIP/oneAPI; an error without one) or
        ``"auto"`` (a GPU when Cycles finds one).
      threads: Cycles threads per worker, 0 or at least 2; 0 divides the CPUs among
        the workers (at least 2 each). One thread is refused: with one thread,
        Cycles in bpy 5.0.1 keeps a CPU busy at 100% while the worker waits
        (measured), which slows everything else on the machine.
      seed: Cycles' sampling seed (same seed, same noise).
      filter_width: pixel filter width in pixels (Cycles' default is 1.5).
      sun_angle: angular diameter of the sun in radians (penumbra width).
      background_rgb: colour above the horizon when no background image is given.
      mesh_resolution: marching-cubes grid of the object meshes.
    """

    samples: int = 16
    shadows: bool = True
    textures: bool = False
    texture_contrast: float = 0.4
    denoise: bool = False
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    filter_width: float = 1.5
    sun_angle: float = 0.05
    background_rgb: tuple[float, float, float] = (0.55, 0.6, 0.7)
    mesh_resolution: int = shapes.DEFAULT_MESH_RESOLUTION

    def __post_init__(self):
        if self.samples < 1:
            raise ValueError(f"samples={self.samples} must be >= 1")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device={self.device!r} must be 'auto', 'cpu' or 'gpu'")
        if self.threads < 0 or self.threads == 1:
            raise ValueError(f"threads={self.threads} must be 0 (automatic) or >= 2: with one "
                             "thread Cycles spins at 100% CPU while the worker is idle")


class BlenderError(RuntimeError):
    """A scene could not be rendered: the worker raised, or kept crashing or hanging."""


class WorkerDied(RuntimeError):
    """A worker process exited or was killed mid-request (supervision retries these)."""


class WorkerTimeout(WorkerDied):
    """A worker did not answer within its timeout and was killed."""


# --------------------------------------------------------------------------------------
# The worker's own package folder.

def env_dir() -> pathlib.Path:
    """Folder holding bpy and numpy < 2 for the workers.

    ``$SCENE_OPT_BLENDER_ENV`` if set, else ``$SCENE_OPT_CACHE/bpy-5.0.1`` (default
    ``~/.cache/scene_opt_jax/bpy-5.0.1``).
    """
    if os.environ.get("SCENE_OPT_BLENDER_ENV"):
        return pathlib.Path(os.environ["SCENE_OPT_BLENDER_ENV"])
    cache = os.environ.get("SCENE_OPT_CACHE") or pathlib.Path.home() / ".cache" / "scene_opt_jax"
    return pathlib.Path(cache) / f"bpy-{BPY_VERSION}"


def installed() -> bool:
    """Whether :func:`env_dir` holds bpy."""
    return (env_dir() / "bpy").is_dir() and any((env_dir() / "bpy").glob("__init__.*"))


def install(*, force: bool = False) -> pathlib.Path:
    """Installs bpy and numpy < 2 into :func:`env_dir` (~940 MB; once per machine).

    Uses ``uv`` when it is on the path or in this environment, else pip.
    """
    target = env_dir()
    if installed() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    packages = [f"bpy=={BPY_VERSION}", "numpy<2"]   # bpy 5.0.1 is built against numpy 1.x
    uv = pathlib.Path(sys.executable).with_name("uv")
    if uv.exists():
        cmd = [str(uv), "pip", "install", "--quiet", "--python", sys.executable, "--target",
               str(target), *packages]
        env = {**os.environ, "UV_NATIVE_TLS": "1"}
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *packages]
        env = None
    subprocess.run(cmd, check=True, env=env)
    return target


# --------------------------------------------------------------------------------------
# One worker process.

def _pack(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    body = buffer.getvalue()
    return struct.pack("<Q", len(body)) + body


def _unpack(body: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(arrays.pop("header").tobytes().decode()), arrays


class Worker:
    """One Blender process, driven by one thread at a time.

    Args:
      start_timeout: seconds to wait for the worker to import bpy and answer.
    """

    def __init__(self, start_timeout: float = 120.0):
        if not installed():
            raise ImportError(
                f"backend='blender' needs bpy {BPY_VERSION} in its own folder {env_dir()}: run "
                "`python -m render.blender install` (./dev.sh does it), or set "
                "$SCENE_OPT_BLENDER_ENV to a folder holding bpy and numpy<2")
        self.meshes: set[str] = set()   # mesh keys this process has cached
        self._stderr = collections.deque(maxlen=40)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_WORKER_SCRIPT), str(env_dir())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)   # Ctrl-C in a notebook does not kill workers mid-write
        threading.Thread(target=self._drain, daemon=True, name="blender-stderr").start()
        header, _ = self._exchange(None, start_timeout)
        self.pid = int(header["pid"])
        self.blender = header.get("blender", "")

    def _drain(self):
        for line in iter(self.process.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def stderr_tail(self, lines: int = 12) -> str:
        """The last lines the worker wrote to stderr (Blender's messages)."""
        return "\n".join(list(self._stderr)[-lines:])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def request(self, header: dict, arrays: dict[str, np.ndarray], timeout: float
                ) -> tuple[dict, dict[str, np.ndarray]]:
        """Sends one request and waits for its reply.

        Raises:
          WorkerTimeout: no reply within ``timeout`` seconds (the worker is killed).
          WorkerDied: the worker exited before replying.
        """
        return self._exchange(_pack(header, arrays), timeout)

    def _exchange(self, message: bytes | None, timeout: float):
        deadline = time.monotonic() + timeout
        try:
            if message is not None:
                self._write(message, deadline)
            (size,) = struct.unpack("<Q", self._read(8, deadline))
            return _unpack(self._read(size, deadline))
        except WorkerDied:
            self.kill()
            raise

    def _write(self, data: bytes, deadline: float):
        fd = self.process.stdin.fileno()
        view = memoryview(data)
        while view:
            self._wait(fd, deadline, write=True)
            try:
                view = view[os.write(fd, view[:1 << 16]):]
            except (BrokenPipeError, OSError) as err:
                raise self._died(f"while sending a request ({err})") from err

    def _read(self, size: int, deadline: float) -> bytes:
        fd = self.process.stdout.fileno()
        chunks, left = [], size
        while left:
            self._wait(fd, deadline, write=False)
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise self._died("before replying")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _wait(self, fd: int, deadline: float, write: bool):
        left = deadline - time.monotonic()
        ready = select.select([], [fd], [], max(left, 0))[1] if write else \
            select.select([fd], [], [], max(left, 0))[0]
        if not ready:
            self.kill()
            raise WorkerTimeout(f"Blender worker pid {self.process.pid} did not answer in time "
                                "and was killed")

    def _died(self, when: str) -> WorkerDied:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        time.sleep(0.05)   # let the stderr thread catch the last lines
        reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return WorkerDied(f"Blender worker pid {self.process.pid} died {when} ({reason}); "
                          f"its last messages:\n{self.stderr_tail()}")

    def kill(self):
        """Kills the process (SIGKILL) and reaps it."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()

    def close(self):
        """Asks the worker to exit (end of input) and waits; kills it if it does not."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


# --------------------------------------------------------------------------------------
# A supervised pool.

@dataclasses.dataclass
class Request:
    """One unit of work: ``header``/``arrays`` as the worker protocol, ``name`` for errors.

    ``meshes`` maps mesh keys to (vertices, faces); only those a worker has not seen
    yet are sent to it.
    """

    name: str
    header: dict
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    meshes: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)


class Pool:
    """``workers`` Blender processes serving requests in parallel, supervised.

    Args:
      workers: number of worker processes (started lazily, on first need).
      timeout: seconds one request may take before its worker is killed.
      retries: how many times a request whose worker crashed or hung is retried
        on a fresh worker before it fails with :class:`BlenderError`.
      start_timeout: seconds a new worker may take to import bpy.
    """

    def __init__(self, workers: int = 1, *, timeout: float = 300.0, retries: int = 2,
                 start_timeout: float = 120.0):
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        self.size, self.timeout, self.retries = int(workers), float(timeout), int(retries)
        self.start_timeout = float(start_timeout)
        self._idle: queue.Queue[Worker | None] = queue.Queue()
        for _ in range(self.size):
            self._idle.put(None)   # a slot whose worker is not started yet
        self._busy: dict[int, Worker] = {}
        self._lock = threading.Lock()
        self._threads = concurrent.futures.ThreadPoolExecutor(self.size, thread_name_prefix="blender")
        self.restarts = 0
        self._closed = False

    def busy_pids(self) -> list[int]:
        """Process ids of workers that are rendering right now."""
        with self._lock:
            return [w.pid for w in self._busy.values()]

    def pids(self) -> list[int]:
        """Process ids of the live workers, busy or idle."""
        with self._lock:
            workers = [w for w in list(self._idle.queue) + list(self._busy.values()) if w is not None]
        return sorted(w.pid for w in workers if w.alive)

    def submit(self, request: Request) -> concurrent.futures.Future:
        """Schedules one request; the future holds ``(header, arrays)`` or raises BlenderError."""
        if self._closed:
            raise RuntimeError("this Blender pool is closed")
        return self._threads.submit(self._serve, request)

    def map(self, requests: Sequence[Request], progress=None) -> list[Any]:
        """Serves every request; returns replies or :class:`BlenderError` objects in order."""
        futures = [self.submit(r) for r in requests]
        results: list[Any] = [None] * len(futures)
        index = {f: i for i, f in enumerate(futures)}
        for future in concurrent.futures.as_completed(futures):
            try:
                results[index[future]] = future.result()
            except BlenderError as err:
                results[index[future]] = err
            if progress is not None:
                progress.update(1)
        return results

    def _serve(self, request: Request):
        worker = self._idle.get()
        failures = []
        try:
            for _ in range(self.retries + 1):
                if worker is None or not worker.alive:
                    if worker is not None:
                        self.restarts += 1
                    try:
                        worker = Worker(self.start_timeout)
                    except WorkerDied as err:
                        worker = None
                        failures.append(f"start: {err}")
                        continue
                arrays = dict(request.arrays)
                for key, (verts, faces) in request.meshes.items():
                    if key not in worker.meshes:
                        arrays[f"verts:{key}"], arrays[f"faces:{key}"] = verts, faces
                with self._lock:
                    self._busy[id(worker)] = worker
                try:
                    header, reply = worker.request(request.header, arrays, self.timeout)
                except WorkerDied as err:
                    failures.append(str(err))
                    continue
                finally:
                    with self._lock:
                        self._busy.pop(id(worker), None)
                if not header.get("ok"):
                    raise BlenderError(f"{request.name}: Blender raised in the worker:\n"
                                       f"{header.get('error', '').rstrip()}")
                worker.meshes.update(request.meshes)
                return header, reply
            raise BlenderError(
                f"{request.name}: failed {len(failures)} times (1 try + {self.retries} retries); "
                f"the last failure: {failures[-1]}")
        finally:
            self._idle.put(worker)

    def close(self):
        """Stops every worker; the pool cannot be used afterwards."""
        self._closed = True
        self._threads.shutdown(wait=True)
        while not self._idle.empty():
            worker = self._idle.get_nowait()
            if worker is not None:
                worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(workers: int | None = None) -> Pool:
    """The process's shared pool, created on first use; replaced if ``workers`` differs.

    ``workers=None`` keeps the current pool (one worker when there is none yet).
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and workers is not None and _POOL.size != workers:
            _POOL.close()
            _POOL = None
        if _POOL is None:
            _POOL = Pool(workers or 1)
        return _POOL


@atexit.register
def shutdown():
    """Stops the shared pool's workers (they also stop when this process exits: they
    read requests from a pipe, and its end is their end)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


# --------------------------------------------------------------------------------------
# Scenes -> requests -> images.

def _mesh_key(class_id: int, shape_id: int, resolution: int) -> str:
    return f"{spec.CLASS_NAMES[class_id]}{shape_id}r{resolution}"


def render_header(config: BlenderRenderConfig, resolution, meshes: list[str | None], *,
                  workers: int = 1, vertical_fov: float = spec.VERTICAL_FOV,
                  ground: bool = True, transient_meshes: bool = False) -> dict:
    """The header of a worker's ``render`` request: ``config`` for a ``(H, W)`` image of
    the objects whose mesh keys are ``meshes`` (None: an empty slot), with Cycles'
    threads shared among ``workers`` unless ``config.threads`` says otherwise.

    ``ground=False`` hides the ground plane (a lone shape in the sky);
    ``transient_meshes=True`` makes the worker forget the meshes after the render
    (shapes drawn once, which would otherwise pile up in its cache).
    """
    threads = config.threads or max(2, (os.cpu_count() or 1) // workers)
    return {"op": "render", "config": {
        "resolution": [int(r) for r in resolution], "samples": config.samples,
        "seed": config.seed, "filter_width": config.filter_width, "denoise": config.denoise,
        "device": config.device, "threads": threads, "shadows": config.shadows,
        "textures": config.textures, "texture_contrast": config.texture_contrast,
        "sun_angle": config.sun_angle, "vertical_fov": vertical_fov,
        "first_object": FIRST_OBJECT, "meshes": meshes, "ground": ground,
        "transient_meshes": transient_meshes}}


def scene_request(scene, resolution, config: BlenderRenderConfig, name: str, workers: int = 1
                  ) -> Request:
    """The worker request of one concrete (numpy) scene."""
    h, w = (int(r) for r in resolution)
    obj = scene.objects
    f64 = lambda x: np.asarray(x, np.float64)   # noqa: E731
    valid = np.asarray(obj.valid, bool)
    n = valid.shape[0]
    keys, meshes = [], {}
    for k in range(n):
        if not valid[k]:
            keys.append(None)
            continue
        c, s = int(obj.class_id[k]), int(obj.shape_id[k])
        key = _mesh_key(c, s, config.mesh_resolution)
        keys.append(key)
        if key not in meshes:
            meshes[key] = shapes.object_mesh(c, s, config.mesh_resolution)
    header = render_header(config, (h, w), keys, workers=workers)
    position = f64(obj.position)
    arrays = {
        "camera": np.array([f64(scene.camera.height), f64(scene.camera.elevation)]),
        "light": np.array([f64(scene.light.ambient), f64(scene.light.strength),
                           f64(scene.light.azimuth), f64(scene.light.elevation)]),
        "ground_rgb": f64(scene.ground_rgb),
        "pose": np.stack([position[:, 0], position[:, 1], f64(obj.azimuth),
                          np.where(valid, f64(obj.scale), 1.0)], -1),
        "rgb": f64(obj.rgb),
        # One texture per object slot, the same across scenes (like the JAX renderer).
        "seed": np.arange(n, dtype=np.float64) * 7.31 + 1.7,
    }
    return Request(name=name, header=header, arrays=arrays, meshes=meshes)


def image_from_reply(arrays: dict[str, np.ndarray], config: BlenderRenderConfig,
                     background=None) -> Image:
    """An ``Image`` from a worker's passes: the background is composited by coverage."""
    rgba = arrays["rgba"].astype(np.float64)
    h, w = rgba.shape[:2]
    if background is None:
        bg = np.broadcast_to(np.asarray(config.background_rgb, np.float64), (h, w, 3))
    else:
        from PIL import Image as PILImage
        bg_u8 = (np.clip(np.asarray(background, np.float64), 0, 1) * 255).astype(np.uint8)
        bg = np.asarray(PILImage.fromarray(bg_u8).resize((w, h), PILImage.BILINEAR)) / 255
    # Cycles' colour is premultiplied by coverage: over-composite the background.
    rgb = np.clip(rgba[..., :3] + (1 - rgba[..., 3:]) * bg, 0, 1)
    instance = arrays["instance"].astype(np.int32)
    instance = np.where(instance < 0, BACKGROUND, instance)
    # Cycles' depth pass is already along the camera axis, like the other backends.
    depth = arrays["depth"]
    return Image(rgb=rgb.astype(np.float32), depth=depth.astype(np.float32),
                 normals=arrays["normals"].astype(np.float32), instance=instance)


def render_scenes(scenes: Sequence[Any], resolution, config: BlenderRenderConfig,
                  background=None, *, workers: int | None = None, names: Sequence[str] | None = None,
                  progress=None, pool: Pool | None = None) -> list[Image]:
    """Renders concrete scenes on a pool (the shared one by default), in parallel.

    Raises:
      BlenderError: naming every scene that failed (after the others finished).
    """
    p = pool or shared_pool(workers)
    names = names or [f"scene {i}" for i in range(len(scenes))]
    requests = [scene_request(s, resolution, config, n, p.size) for s, n in zip(scenes, names)]
    replies = p.map(requests, progress=progress)
    errors = [r for r in replies if isinstance(r, BlenderError)]
    if errors:
        raise BlenderError(f"{len(errors)} of {len(scenes)} scenes failed:\n"
                           + "\n".join(str(e) for e in errors))
    return [image_from_reply(arrays, config, background) for _, arrays in replies]


def project(points, height: float, elevation: float, resolution) -> np.ndarray:
    """(row, col) pixel coordinates of spec-frame points through Blender's own camera.

    Pixel centres are at integers, as in the images. One request to the shared pool.
    """
    h, w = (int(r) for r in resolution)
    request = Request("projection", {"op": "project", "config": {
        "resolution": [h, w], "vertical_fov": spec.VERTICAL_FOV}}, {
        "camera": np.array([height, elevation], np.float64),
        "points": np.asarray(points, np.float64).reshape(-1, 3)})
    _, arrays = shared_pool().submit(request).result()
    return arrays["pixels"]


def render(scene, resolution=(64, 64), config: BlenderRenderConfig = BlenderRenderConfig(),
           background=None) -> Image:
    """Renders one concrete scene with Cycles in a worker (numpy in, ``Image`` of numpy out)."""
    return render_scenes([scene], resolution, config, background)[0]


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        print(install())
    else:
        sys.exit("usage: python -m render.blender install")
