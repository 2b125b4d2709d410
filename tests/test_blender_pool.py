"""Supervision of the Blender workers: crashes, hangs, bad requests and bad scenes."""

import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

import render
from render import blender

RESOLUTION = (32, 40)
CONFIG = blender.BlenderRenderConfig(samples=8)


def _scenes(count, seed=0):
    keys = jax.random.split(jax.random.key(seed), count)
    return [jax.tree.map(np.asarray, render.random_scene(k, num_objects=4)) for k in keys]


def _requests(scenes):
    return [blender.scene_request(s, RESOLUTION, CONFIG, f"scene {i}", workers=2)
            for i, s in enumerate(scenes)]


def test_a_worker_killed_mid_request_is_restarted_and_the_batch_completes():
    scenes = _scenes(8)
    with blender.Pool(2, retries=2) as pool:
        reference = blender.render_scenes(scenes, RESOLUTION, CONFIG, pool=pool)
        killed = []

        def kill_one_busy_worker():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                pids = pool.busy_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.002)

        killer = threading.Thread(target=kill_one_busy_worker)
        killer.start()
        images = blender.render_scenes(scenes, RESOLUTION, CONFIG, pool=pool)
        killer.join()
        assert killed, "no worker was ever busy"
        assert pool.restarts >= 1
        for image, ref in zip(images, reference):   # every image, and the right one
            np.testing.assert_array_equal(image.instance, ref.instance)
            np.testing.assert_allclose(image.rgb, ref.rgb, atol=1e-6)


def test_a_request_that_always_crashes_fails_after_the_retry_bound_and_others_go_on():
    with blender.Pool(1, retries=2) as pool:
        good = _requests(_scenes(2))
        crash = blender.Request("scene 'always-crashes'", {"op": "crash"})
        replies = pool.map([good[0], crash, good[1]])
        assert isinstance(replies[1], blender.BlenderError)
        message = str(replies[1])
        assert "scene 'always-crashes'" in message and "failed 3 times" in message
        assert "killed by signal 6" in message   # SIGABRT, as os.abort() sends
        for reply in (replies[0], replies[2]):
            header, arrays = reply
            assert header["ok"] and arrays["rgba"].shape == RESOLUTION + (4,)
        assert pool.restarts == 3   # one per crash; the last one restarts for good[1]
        # And the pool keeps serving.
        header, _ = pool.submit(blender.Request("ping", {"op": "ping"})).result()
        assert header["ok"]


def test_a_hanging_request_is_killed_after_the_timeout():
    with blender.Pool(1, timeout=3.0, retries=1) as pool:
        start = time.monotonic()
        future = pool.submit(blender.Request("scene 'hangs'", {"op": "sleep", "seconds": 600}))
        with pytest.raises(blender.BlenderError, match="(?s)scene .hangs.*did not answer in time"):
            future.result()
        assert time.monotonic() - start < 60
        header, arrays = pool.submit(_requests(_scenes(1))[0]).result()
        assert header["ok"] and arrays["instance"].shape == RESOLUTION


def test_an_error_inside_blender_is_reported_once_and_the_worker_lives_on():
    with blender.Pool(1) as pool:
        pid = pool.submit(blender.Request("ping", {"op": "ping"})).result()[0]["pid"]
        with pytest.raises(blender.BlenderError, match="(?s)scene .odd.*unknown op .paint."):
            pool.submit(blender.Request("scene 'odd'", {"op": "paint"})).result()
        assert pool.submit(blender.Request("ping", {"op": "ping"})).result()[0]["pid"] == pid
        assert pool.restarts == 0


def test_bad_scenes_are_rejected_before_any_worker_sees_them():
    blender.shutdown()
    good, bad = _scenes(2)
    bad = bad.replace(objects=bad.objects.replace(scale=bad.objects.scale * 10))
    with pytest.raises(ValueError, match="scene 1: objects.scale"):
        render.render_many([good, bad], backend="blender", resolution=RESOLUTION)
    with pytest.raises(ValueError, match="objects.scale"):
        render.render(bad, backend="blender", resolution=RESOLUTION)
    assert blender._POOL is None   # no pool, so no worker, was started


def test_render_many_in_parallel_equals_one_at_a_time():
    scenes = _scenes(4, seed=1)
    many = render.render_many(scenes, backend="blender", resolution=RESOLUTION, workers=2,
                              samples=8)
    assert blender.shared_pool().size == 2
    for i in (0, 3):
        one = render.render(scenes[i], backend="blender", resolution=RESOLUTION, samples=8)
        np.testing.assert_array_equal(many.instance[i], one.instance)
        np.testing.assert_allclose(many.rgb[i], one.rgb, atol=1e-6)


def test_idle_workers_leave_the_cpus_alone():
    """Cycles with one thread spins while idle; the pool never asks for one thread."""
    with blender.Pool(2) as pool:
        blender.render_scenes(_scenes(2), RESOLUTION, CONFIG, pool=pool)
        pids = pool.pids()
        assert len(pids) == 2

        def cpu_seconds(pid):
            with open(f"/proc/{pid}/stat") as f:
                user, system = f.read().rsplit(")", 1)[1].split()[11:13]
            return (int(user) + int(system)) / os.sysconf("SC_CLK_TCK")

        before = [cpu_seconds(p) for p in pids]
        time.sleep(1.0)
        used = [cpu_seconds(p) - b for p, b in zip(pids, before)]
        assert max(used) < 0.2, used
