"""Random scenes through the JAX renderer (`./dev.sh render-demo`; the main job is the LiDO demo).

    python -m render.demo --num 16 --resolution 128 --out results/demo

Writes ``contact_sheet.png`` (RGB, depth, instances) and ``timing.json`` to the
output folder and prints one timing line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import render  # noqa: E402


def contact_sheet(images: render.Image, path: pathlib.Path, columns: int = 8) -> None:
    """Saves RGB, depth and instance ids of a batch of images as one PNG."""
    rgb, depth, inst = (np.asarray(x) for x in (images.rgb, images.depth, images.instance))
    n = rgb.shape[0]
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(3 * rows, columns, figsize=(1.6 * columns, 1.6 * 3 * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        axes[3 * r, c].imshow(rgb[i])
        axes[3 * r + 1, c].imshow(np.log(np.where(depth[i] > 0, depth[i], np.nan)), cmap="viridis")
        axes[3 * r + 2, c].imshow(inst[i], cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[0, 0].set_title("rgb / log depth / instance", fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=16, help="number of scenes")
    parser.add_argument("--objects", type=int, default=5, help="objects per scene (<= 7)")
    parser.add_argument("--resolution", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shadows", action="store_true")
    parser.add_argument("--textures", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/demo"))
    args = parser.parse_args(argv)

    keys = jax.random.split(jax.random.key(args.seed), args.num)
    scenes = jax.vmap(lambda k: render.random_scene(k, args.objects))(keys)
    render.validate(scenes)
    res = (args.resolution, args.resolution)
    fn = jax.jit(lambda s: render.render(s, resolution=res, shadows=not args.no_shadows,
                                         textures=args.textures))
    t0 = time.perf_counter()
    compiled = fn.lower(scenes).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images = jax.block_until_ready(compiled(scenes))
    run_s = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    contact_sheet(images, args.out / "contact_sheet.png")
    timing = {
        "scenes": args.num, "objects": args.objects, "resolution": res,
        "shadows": not args.no_shadows, "textures": args.textures,
        "compile_s": round(compile_s, 3), "render_s": round(run_s, 4),
        "images_per_s": round(args.num / run_s, 2),
        "device": str(jax.devices()[0]), "machine": platform.machine(),
    }
    (args.out / "timing.json").write_text(json.dumps(timing, indent=1))
    print(f"rendered {args.num} scenes at {res[0]}x{res[1]} in {run_s:.3f} s "
          f"({timing['images_per_s']} images/s, compile {compile_s:.1f} s) on "
          f"{timing['device']} -> {args.out / 'contact_sheet.png'}")
    return timing


if __name__ == "__main__":
    main()
