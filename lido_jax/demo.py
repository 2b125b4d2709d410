"""The LiDO story in a few minutes: ``python -m lido_jax demo --out results/lido_demo``.

From the committed networks (``lido_jax.pretrained``): generate a few held-out scenes
(textures, shadows, backgrounds), initialise each with the detector and patch
network, refine it with LiDO, GBO and Simplex from that same start, re-render LiDO's
scene with Blender (LiDO-R), then print Tables 1-2 and write to ``--out``:

- ``table.md``: the tables (``lido_jax.compare.markdown``);
- ``summary.json``: the tables, seconds, targets and Fig. 5's curves as numbers;
- ``fig5.png``: median error of each LV set against wall time;
- ``contact_sheet.png``: observed | INIT | GBO | Simplex | LiDO | LiDO-R per scene,
  the ground truth's object outlines drawn on each;
- ``testset_*/`` and ``scenes/``: the generated scenes and per-scene records.

``benchmarks/lido_table.py`` runs the same comparison on a larger test set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lido_jax import compare, dataset, fit, pretrained


def demo(out: str | Path = "results/lido_demo", *, scenes: int = 4, seed: int = 1,
         config: compare.CompareConfig = compare.CompareConfig(), networks: str | Path | None = None,
         progress: bool | None = None) -> dict:
    """Runs the comparison on ``scenes`` new scenes and writes the files of the module
    doc to ``out``; returns :func:`lido_jax.compare.run_testset`'s result."""
    out = Path(out)
    pre = pretrained.load() if networks is None else pretrained.load(networks)
    result = compare.run_testset(out, pre, config, scenes=scenes, seed=seed, contact_rows=scenes,
                                 progress=progress)
    table = compare.markdown(result)
    dataset.atomic_write(out / "table.md", (table + "\n").encode())
    summary = {k: v for k, v in result.items() if k != "records"}
    dataset.atomic_write(out / "summary.json", json.dumps(fit.json_safe(summary), indent=1).encode())
    compare.plot_errors(result["curves"], out / "fig5.png",
                        f"LiDO demo: median error vs wall time, {result['scenes']} scenes")
    return {**result, "table": table}


def add_demo_command(subparsers) -> argparse.ArgumentParser:
    """Registers ``demo`` on an ``argparse`` subparsers object."""
    d = compare.CompareConfig()
    p = subparsers.add_parser("demo", help="LiDO vs GBO and Simplex on a few new scenes, from "
                              "the committed networks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/lido_demo", help="output folder")
    p.add_argument("--scenes", type=int, default=4, help="test scenes")
    p.add_argument("--seed", type=int, default=1, help="test-set seed (0 is the training set)")
    p.add_argument("--steps", type=int, default=d.steps, help="LiDO iterations T")
    p.add_argument("--iterations", type=int, help="GBO / Simplex iterations per LV set "
                   "(default: the paper's, 50 / 100)")
    p.add_argument("--no-blender", dest="blender", action="store_false", help="leave LiDO-R out")
    p.add_argument("--networks", help="a folder written by `python -m lido_jax pretrain` "
                   "(default: the committed networks)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    def run(args) -> int:
        if args.scenes < 1:
            p.error(f"--scenes {args.scenes} must be >= 1")
        try:
            config = compare.CompareConfig(
                steps=args.steps, lido_checkpoints=tuple(t for t in (5, 10) if t < args.steps),
                iterations=args.iterations, blender=args.blender)
            result = demo(args.out, scenes=args.scenes, seed=args.seed, config=config,
                          networks=args.networks, progress=False if args.quiet else None)
        except (ValueError, FileNotFoundError) as e:
            p.error(str(e))
        print(result["table"])
        print(f"\nwrote {Path(args.out) / 'table.md'}, fig5.png, contact_sheet.png and summary.json")
        return 0

    p.set_defaults(run=run)
    return p
