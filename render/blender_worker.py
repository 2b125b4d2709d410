"""A Blender (bpy + Cycles) render worker: one process, many requests.

Started by :mod:`render.blender` as ``python -I -S blender_worker.py ENV_DIR``, so it
sees neither the main environment nor its numpy 2: ``ENV_DIR`` holds ``bpy`` and a
numpy < 2 (``python -m render.blender install``). Imports only the standard
library, numpy and bpy.

Protocol over stdin/stdout, one request at a time: a message is an 8-byte
little-endian length followed by an ``.npz`` archive (no pickles). A request holds
``header`` (JSON as uint8: ``op``, ``config``) and the scene's arrays; the reply
holds ``header`` (``ok``, ``error``, ``render_s``) and, for renders, ``rgba``,
``depth``, ``normals`` and ``instance``. Blender's own messages on fd 1 are sent to
stderr so that stdout carries replies only.

Blender hands render passes out only through files when it runs without a UI (the
compositor's viewer is disabled in background mode), so the passes go through
OpenEXR files in a private directory on ``/dev/shm`` (memory, not disk) that is
emptied after every request.

Conventions: the world of :mod:`render.spec` is y-up with ``+x`` to the right of
the image, a mirror image of Blender's right-handed z-up world. The worker maps
``(x, y, z) -> (x, z, y)`` (vertices, normals, light direction) and reverses face
winding so that outward normals stay outward.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback

_PASSES = (("rgba", "Image", "RGBA"), ("depth", "Depth", "FLOAT"),
           ("normals", "Normal", "VECTOR"), ("index", "Object Index", "FLOAT"))
"""(file name, render-layer output, file-output socket type) of every pass written."""


def _read_message(stream):
    head = _read_exactly(stream, 8)
    if head is None:
        return None
    (size,) = struct.unpack("<Q", head)
    body = _read_exactly(stream, size)
    if body is None:
        raise EOFError("stdin closed mid-message")
    return body


def _read_exactly(stream, size):
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_message(stream, np, header, **arrays):
    buffer = io.BytesIO()
    np.savez(buffer, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    body = buffer.getvalue()
    stream.write(struct.pack("<Q", len(body)))
    stream.write(body)
    stream.flush()


class Worker:
    """The Blender scene kept across requests; only objects and values change."""

    def __init__(self, bpy, np, pass_dir):
        self.bpy, self.np, self.pass_dir = bpy, np, pass_dir
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True   # alpha = coverage; the parent composites
        scene.render.use_persistent_data = True
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.cycles.use_adaptive_sampling = True
        layer = scene.view_layers[0]
        layer.use_pass_z = layer.use_pass_normal = layer.use_pass_object_index = True

        world = bpy.data.worlds.new("world")
        world.use_nodes = True
        scene.world = world
        self.world_background = world.node_tree.nodes["Background"]
        self.world_background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)

        camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        camera.data.sensor_fit = "VERTICAL"
        camera.data.clip_start, camera.data.clip_end = 0.005, 200.0
        self.camera = camera

        sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
        scene.collection.objects.link(sun)
        self.sun = sun

        e = 60.0   # half-size of the ground quad in metres, as the gl backend
        ground_mesh = bpy.data.meshes.new("ground")
        ground_mesh.from_pydata([(-e, -e, 0), (e, -e, 0), (e, e, 0), (-e, e, 0)], [], [(0, 1, 2, 3)])
        ground = bpy.data.objects.new("ground", ground_mesh)
        scene.collection.objects.link(ground)
        ground.pass_index = 1
        self.ground = ground
        self.ground_material = self._material("ground", texture_scale=6.0)
        ground_mesh.materials.append(self.ground_material)
        self.object_materials = []
        self.objects = []
        self.meshes = {}
        self._compositor()

    def _material(self, name, texture_scale):
        """Diffuse material whose colour is albedo x a greyscale noise of mean ~1."""
        material = self.bpy.data.materials.new(name)
        material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        nodes.clear()
        out = nodes.new("ShaderNodeOutputMaterial")
        bsdf = nodes.new("ShaderNodeBsdfDiffuse")
        coords = nodes.new("ShaderNodeTexCoord")
        noise = nodes.new("ShaderNodeTexNoise")
        noise.noise_dimensions = "4D"
        noise.inputs["Scale"].default_value = texture_scale
        noise.inputs["Detail"].default_value = 4.0
        # Noise fac: mean 0.5, nearly all within [0.3, 0.7] -> factor 1 +- contrast.
        spread = nodes.new("ShaderNodeMapRange")
        spread.inputs["From Min"].default_value = 0.3
        spread.inputs["From Max"].default_value = 0.7
        albedo = nodes.new("ShaderNodeRGB")
        albedo.name = "albedo"
        mix = nodes.new("ShaderNodeMix")
        mix.data_type = "RGBA"
        mix.blend_type = "MULTIPLY"
        mix.inputs["Factor"].default_value = 1.0
        links.new(coords.outputs["Object"], noise.inputs["Vector"])
        links.new(noise.outputs["Fac"], spread.inputs["Value"])
        links.new(albedo.outputs["Color"], mix.inputs["A"])
        links.new(spread.outputs["Result"], mix.inputs["B"])
        links.new(mix.outputs["Result"], bsdf.inputs["Color"])
        links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
        noise.name, spread.name = "noise", "spread"
        return material

    def _set_material(self, material, rgb, seed, textured, contrast):
        nodes = material.node_tree.nodes
        nodes["albedo"].outputs["Color"].default_value = (*map(float, rgb), 1.0)
        nodes["noise"].inputs["W"].default_value = float(seed)
        c = float(contrast) if textured else 0.0
        nodes["spread"].inputs["To Min"].default_value = 1.0 - c
        nodes["spread"].inputs["To Max"].default_value = 1.0 + c

    def _compositor(self):
        bpy = self.bpy
        tree = bpy.data.node_groups.new("passes", "CompositorNodeTree")
        self.scene.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        output = tree.nodes.new("CompositorNodeOutputFile")
        output.file_output_items.clear()
        for name, socket, kind in _PASSES:
            output.file_output_items.new(kind, name)
            tree.links.new(layers.outputs[socket], output.inputs[name])
        output.directory = self.pass_dir
        output.file_name = ""
        output.save_as_render = False
        fmt = output.format
        fmt.media_type = "IMAGE"
        fmt.file_format = "OPEN_EXR"
        fmt.color_depth = "32"
        fmt.exr_codec = "NONE"

    def _clear_objects(self):
        for obj in self.objects:
            self.bpy.data.objects.remove(obj, do_unlink=True)
        self.objects = []

    def _mesh(self, key, arrays):
        """The mesh datablock of one shape variant, built once and shared by objects."""
        if key in self.meshes:
            return self.meshes[key]
        if f"verts:{key}" not in arrays:
            raise KeyError(f"mesh {key!r} was neither sent nor cached in this worker")
        bpy, np = self.bpy, self.np
        # spec (x, y, z) -> Blender (x, z, y): a mirror, so reverse the winding too.
        verts = np.ascontiguousarray(arrays[f"verts:{key}"][:, [0, 2, 1]], np.float32)
        faces = np.ascontiguousarray(arrays[f"faces:{key}"][:, ::-1], np.int32)
        mesh = bpy.data.meshes.new(key)
        mesh.vertices.add(len(verts))
        mesh.vertices.foreach_set("co", verts.ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        mesh.validate()
        mesh.shade_smooth()
        mesh.materials.append(None)   # one slot; each object links its own material
        self.meshes[key] = mesh
        return mesh

    def _add_object(self, k, mesh, pose, rgb, seed, config):
        bpy = self.bpy
        while len(self.object_materials) <= k:
            self.object_materials.append(
                self._material(f"object{len(self.object_materials)}", texture_scale=8.0))
        material = self.object_materials[k]
        self._set_material(material, rgb, seed, config["textures"], config["texture_contrast"])
        obj = bpy.data.objects.new(f"object{k}", mesh)
        obj.material_slots[0].link = "OBJECT"
        obj.material_slots[0].material = material
        x, z, azimuth, scale = (float(v) for v in pose)
        obj.location = (x, z, 0.0)
        obj.rotation_euler = (0.0, 0.0, -azimuth)   # R_y(az) conjugated by the mirror
        obj.scale = (scale, scale, scale)
        obj.pass_index = int(config["first_object"]) + k
        self.scene.collection.objects.link(obj)
        self.objects.append(obj)

    def _set_camera(self, config, camera):
        import mathutils

        h, w = config["resolution"]
        self.scene.render.resolution_x, self.scene.render.resolution_y = int(w), int(h)
        height, elevation = (float(v) for v in camera)
        se, ce = math.sin(elevation), math.cos(elevation)
        self.camera.location = (0.0, 0.0, height)
        # Columns: right, up, backwards (Blender cameras look along their -z).
        rotation = mathutils.Matrix(((1.0, 0.0, 0.0), (0.0, se, -ce), (0.0, ce, se)))
        self.camera.rotation_euler = rotation.to_euler()
        self.camera.data.lens_unit = "FOV"
        self.camera.data.angle_y = float(config["vertical_fov"])

    def project(self, config, arrays):
        """(row, col) pixel coordinates (centres at integers) of spec-frame points,
        through Blender's own camera model."""
        import mathutils
        from bpy_extras.object_utils import world_to_camera_view

        self._set_camera(config, arrays["camera"])
        self.bpy.context.view_layer.update()
        h, w = config["resolution"]
        out = []
        for x, y, z in arrays["points"]:
            u, v, _ = world_to_camera_view(self.scene, self.camera, mathutils.Vector((x, z, y)))
            out.append(((1 - v) * h - 0.5, u * w - 0.5))
        return self.np.asarray(out, self.np.float64)

    def render(self, config, arrays):
        import mathutils

        bpy, np, scene = self.bpy, self.np, self.scene
        cycles = scene.cycles
        cycles.samples = int(config["samples"])
        cycles.seed = int(config["seed"])
        cycles.filter_width = float(config["filter_width"])
        cycles.use_denoising = bool(config["denoise"])
        cycles.device = self._device(config["device"])
        threads = int(config["threads"])
        scene.render.threads_mode = "FIXED" if threads > 0 else "AUTO"
        if threads > 0:
            scene.render.threads = threads

        self._set_camera(config, arrays["camera"])

        ambient, strength, azimuth, light_elevation = (float(v) for v in arrays["light"])
        towards = (math.cos(light_elevation) * math.sin(azimuth),
                   math.cos(light_elevation) * math.cos(azimuth), math.sin(light_elevation))
        self.sun.rotation_euler = mathutils.Vector(towards).to_track_quat("Z", "Y").to_euler()
        # Diffuse BSDF: radiance = albedo / pi * irradiance; the JAX model is albedo * strength.
        self.sun.data.energy = strength * math.pi
        self.sun.data.angle = float(config["sun_angle"])
        self.sun.data.use_shadow = bool(config["shadows"])
        # A uniform sky of radiance `ambient` lights an open surface with albedo * ambient.
        self.world_background.inputs["Strength"].default_value = ambient

        self.ground.hide_render = not config.get("ground", True)
        self._set_material(self.ground_material, arrays["ground_rgb"], 0.5,
                           config["textures"], config["texture_contrast"])
        self._clear_objects()
        for k, key in enumerate(config["meshes"]):
            if key is not None:
                self._add_object(k, self._mesh(key, arrays), arrays["pose"][k], arrays["rgb"][k],
                                 arrays["seed"][k], config)

        try:
            start = time.perf_counter()
            bpy.ops.render.render()
            render_s = time.perf_counter() - start
            passes = {name: self._read_pass(name) for name, _, _ in _PASSES}
        finally:
            if config.get("transient_meshes", False):
                # Shapes drawn once (a grammar's samples): free them instead of caching.
                self._clear_objects()
                for key in set(config["meshes"]) - {None}:
                    if key in self.meshes:
                        bpy.data.meshes.remove(self.meshes.pop(key))
        rgba = passes["rgba"]
        normals = passes["normals"][..., :3][..., [0, 2, 1]]   # Blender -> spec axes
        # The pass averages samples (background ones count as zero): renormalise.
        length = np.linalg.norm(normals, axis=-1, keepdims=True)
        normals = np.where(length > 1e-6, normals / np.maximum(length, 1e-6), 0.0)
        instance = np.rint(passes["index"][..., 0]).astype(np.int32)
        depth = passes["depth"][..., 0]
        background = instance == 0
        depth = np.where(background, 0.0, depth).astype(np.float32)
        normals = np.where(background[..., None], 0.0, normals).astype(np.float32)
        return render_s, dict(rgba=rgba.astype(np.float32), depth=depth, normals=normals,
                              instance=instance)

    def _read_pass(self, name):
        bpy, np = self.bpy, self.np
        path = os.path.join(self.pass_dir, name + ".exr")
        image = bpy.data.images.load(path)
        try:
            image.colorspace_settings.name = "Non-Color"
            w, h = image.size
            pixels = np.empty(w * h * image.channels, np.float32)
            image.pixels.foreach_get(pixels)
        finally:
            bpy.data.images.remove(image)
            os.unlink(path)
        # Blender images start at the bottom row.
        return pixels.reshape(h, w, -1)[::-1].copy()

    _gpu_checked = None

    def _device(self, device):
        if device == "cpu":
            return "CPU"
        if self._gpu_checked is None:
            self._gpu_checked = self._enable_gpu()
        if device == "gpu" and not self._gpu_checked:
            raise RuntimeError("device='gpu' asked for, but Cycles found no CUDA/OptiX/HIP/oneAPI device")
        return "GPU" if self._gpu_checked else "CPU"

    def _enable_gpu(self):
        try:
            prefs = self.bpy.context.preferences.addons["cycles"].preferences
        except KeyError:
            return False
        for kind in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
            try:
                prefs.compute_device_type = kind
                prefs.get_devices()
            except TypeError:
                continue
            gpus = [d for d in prefs.devices if d.type == kind]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == kind
                return True
        prefs.compute_device_type = "NONE"
        return False


def main(env_dir):
    # Keep the protocol's stdout for ourselves; Blender's prints go to stderr.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.path.insert(0, env_dir)
    import numpy as np

    import bpy

    pass_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    pass_dir = tempfile.mkdtemp(prefix="scene-opt-blender-", dir=pass_root)
    try:
        worker = Worker(bpy, np, pass_dir)
        stdin = sys.stdin.buffer
        _write_message(protocol_out, np, {"ok": True, "op": "ready", "pid": os.getpid(),
                                          "blender": bpy.app.version_string})
        while True:
            body = _read_message(stdin)
            if body is None:
                return
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            header = json.loads(arrays.pop("header").tobytes().decode())
            op = header.get("op")
            try:
                if op == "render":
                    render_s, images = worker.render(header["config"], arrays)
                    _write_message(protocol_out, np, {"ok": True, "render_s": render_s}, **images)
                elif op == "project":
                    _write_message(protocol_out, np, {"ok": True},
                                   pixels=worker.project(header["config"], arrays))
                elif op == "ping":
                    _write_message(protocol_out, np, {"ok": True, "pid": os.getpid()})
                elif op == "sleep":     # supervision tests: a request that hangs
                    time.sleep(float(header["seconds"]))
                    _write_message(protocol_out, np, {"ok": True})
                elif op == "crash":     # supervision tests: a request that kills the worker
                    os.abort()
                else:
                    raise ValueError(f"unknown op {op!r}")
            except Exception:
                _write_message(protocol_out, np, {"ok": False, "error": traceback.format_exc()})
    finally:
        shutil.rmtree(pass_dir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
