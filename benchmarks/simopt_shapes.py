"""Hybrid gradient sec. 5.1 in miniature: tune the shape grammar for a normal estimator.

    python -m benchmarks.simopt_shapes            # results/simopt_shapes.*
    python -m benchmarks.simopt_shapes --quick    # tiny size (the CI smoke test)

The ``shapes`` problem (:mod:`simopt_jax.problems`): a normal/depth UNet is
trained on shapes of the CSG grammar with parameters ``psi``; the validation and
test sets are textured staplers, mugs and bananas of the shape library, which the
grammar cannot make. Every method gets the same image budget, starts from the
grammar's default ``psi0`` and the same network ``params0``:

- ``hybrid``: the hybrid gradient (unrolled SGD for dL/dX times a finite
  difference of the renderer in ``psi``, RMSprop), the network carried across steps;
  every image counts, the ``2 m`` finite-difference re-renders included;
- ``fixed_psi0``: the same training with ``psi`` frozen at ``psi0``
  (``outer_lr = 1e-12``): what the optimisation of ``psi`` adds;
- ``basic_random_search`` (Mania et al.) and ``evolution``: each evaluation renders
  ``num_samples`` images, trains a fresh network for ``train_steps`` and scores
  its validation loss;
- ``random_fixed``: 10 uniform ``psi`` evaluated like that; rows for the best,
  median and worst by validation loss (hybrid-gradient Table 1).

The table is in the format of the hybrid-gradient paper's Tables 1-2: test-set
mean and median angle error (degrees) and % of pixels within 11.25, 22.5 and 30
degrees, with depth abs-rel and RMSE; values are of the method's final answer
(the carried network, or the network of the best evaluation), medians over seeds.
"""

from __future__ import annotations

import argparse
import math
import pathlib

from benchmarks import common
from benchmarks.simopt_common import Entry, fmt, median, plot_curves, run_grid

COLUMNS = (("angle_mean", "mean°"), ("angle_median", "median°"),
           ("within_11.25", "≤11.25° %"), ("within_22.5", "≤22.5° %"),
           ("within_30", "≤30° %"), ("abs_rel", "depth abs-rel"), ("rmse", "depth RMSE"))


def entries(num_samples: int, num_directions: int) -> list[Entry]:
    hybrid = (("num_samples", num_samples), ("num_directions", num_directions))
    return [Entry("hybrid", "hybrid", hybrid),
            Entry("fixed_psi0", "hybrid", hybrid + (("outer_lr", 1e-12),)),
            Entry("basic_random_search", "basic_random_search"),
            Entry("evolution", "evolution")]


FULL = dict(size="quick", budget_images=480, seeds=[0], num_directions=2,
            common=dict(num_samples=8, batch_size=4, epochs=2, sigma=0.05, outer_lr=0.05,
                        inner_lr=3e-3, train_steps=100))
QUICK = dict(size="tiny", budget_images=20, seeds=[0], num_directions=1,
             common=dict(num_samples=4, batch_size=2, epochs=1, sigma=0.05, outer_lr=0.05,
                         inner_lr=3e-3, train_steps=5))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size (minutes)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="JSON path (default results/simopt_shapes[_quick].json)")
    parser.add_argument("--runs", type=pathlib.Path, default=None,
                        help="folder of the run folders (default runs/simopt_shapes[_quick]); "
                             "finished runs are reused, interrupted ones resumed")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes running runs (default 2, --quick 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--budget-images", type=int, default=None)
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    suffix = "_quick" if args.quick else ""
    if args.seeds is not None:
        plan["seeds"] = args.seeds
    if args.budget_images is not None:
        if args.budget_images < 1:
            parser.error(f"--budget-images {args.budget_images} must be >= 1")
        plan["budget_images"] = args.budget_images
    plan["workers"] = args.workers if args.workers is not None else (1 if args.quick else 2)
    plan["root"] = args.runs or pathlib.Path(f"runs/simopt_shapes{suffix}")
    plan["quick"] = args.quick
    return plan, args.out or pathlib.Path(f"results/simopt_shapes{suffix}.json")


def _row(label: str, results: list[dict], tests: list[dict]) -> dict:
    row = {"method": label, "images": median([r["images"] for r in results]),
           "wall_time_s": median([r["wall_time_s"] for r in results]),
           "val_angle_mean": median([r["val_metric"] for r in results]),
           "runs": len(results)}
    for key, _ in COLUMNS:
        row[key] = median([t.get(key, math.nan) for t in tests])
    return row


def summarise(grid: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for label, runs in grid.items():
        results = [r["result"] for r in runs]
        if label == "random_fixed":
            for which in ("best", "median", "worst"):
                tests = [r["fixed_test_metrics"][which] for r in results]
                row = _row(f"random_fixed ({which} of 10)", results, tests)
                row["images"] = median([r["images"] / r["steps"] for r in results])
                row["val_angle_mean"] = median([r["fixed_val_metric"][which] for r in results])
                rows.append(row)
        else:
            rows.append(_row(label, results, [r["test_metrics"] for r in results]))
    return rows


def run(plan: dict) -> dict:
    per_eval = plan["common"]["num_samples"]
    grid = run_grid("shapes", entries(per_eval, plan["num_directions"]), plan["seeds"],
                    plan["budget_images"], plan["size"], plan["root"],
                    workers=plan["workers"], common=plan["common"])
    # Ten fixed psi, each evaluated like one baseline evaluation.
    grid.update(run_grid("shapes", [Entry("random_fixed", "random_fixed")], plan["seeds"],
                         10 * per_eval, plan["size"], plan["root"], workers=1,
                         common=plan["common"]))
    rows = summarise(grid)
    by = {r["method"]: r for r in rows}
    best_fixed = by["random_fixed (best of 10)"]["angle_mean"]
    verdicts = {
        "hybrid_beats_brs": by["hybrid"]["angle_mean"] < by["basic_random_search"]["angle_mean"],
        "hybrid_beats_best_fixed": by["hybrid"]["angle_mean"] < best_fixed,
        "hybrid_beats_fixed_psi0": by["hybrid"]["angle_mean"] < by["fixed_psi0"]["angle_mean"],
    }
    curves = {label: [{"seed": s, "history": r["history"]} for s, r in zip(plan["seeds"], runs)]
              for label, runs in grid.items() if label != "random_fixed"}
    return {"benchmark": "simopt_shapes", "machine": common.machine_info(),
            "quick": plan["quick"], "size": plan["size"], "budget_images": plan["budget_images"],
            "seeds": plan["seeds"], "num_directions": plan["num_directions"],
            "settings": plan["common"], "workers": plan["workers"], "rows": rows,
            "verdicts": verdicts, "curves": curves}


def markdown(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    lines = [f"Shapes (hybrid gradient sec. 5.1 in miniature), size `{result['size']}`, "
             f"{result['budget_images']} images per run (random fixed: {s['num_samples']} per "
             f"psi), seeds {result['seeds']}; {m['processor']} ({m['cpu_count']} cores), "
             f"{m['date']}. Test set: textured library shapes; lower angles are better.", "",
             "| method | images | val mean° | " + " | ".join(n for _, n in COLUMNS)
             + " | wall time (s) |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {fmt(r['images'])} | {fmt(r['val_angle_mean'])} | "
                     + " | ".join(fmt(r[k]) for k, _ in COLUMNS)
                     + f" | {fmt(r['wall_time_s'])} |")
    v = result["verdicts"]
    lines += ["", f"- hybrid beats Basic Random Search at equal images (test mean angle): "
              f"{'yes' if v['hybrid_beats_brs'] else 'no'}",
              f"- hybrid beats the best of 10 random fixed psi: "
              f"{'yes' if v['hybrid_beats_best_fixed'] else 'no'}",
              f"- hybrid beats the same training on psi0: "
              f"{'yes' if v['hybrid_beats_fixed_psi0'] else 'no'}"]
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    grid = {label: [{"history": c["history"]} for c in runs]
            for label, runs in result["curves"].items()}
    plot_curves(grid, path, metric="angle_mean",
                title=f"shapes: validation mean angle error, seeds {result['seeds']}",
                panels=[("images", "val_metric", "images rendered", "validation mean angle (deg)"),
                        ("wall_time_s", "val_metric", "wall time (s)",
                         "validation mean angle (deg)")])


def write(result: dict, out: pathlib.Path) -> str:
    return common.write_outputs(result, out, markdown, plot)


def main(argv=None) -> dict:
    return common.main(parse_args, run, write, argv)


if __name__ == "__main__":
    main()
