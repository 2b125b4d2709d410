"""AutoSimulate sec. 5.1 in miniature: which method finds the hidden psi* soonest?

    python -m benchmarks.simopt_scenes            # 3 seeds, results/simopt_scenes.*
    python -m benchmarks.simopt_scenes --quick    # tiny size, one seed (the CI smoke test)

The ``scenes`` problem (:mod:`simopt_jax.problems`): a segmentation UNet is trained
on scenes from ``psi``; the validation and test sets were drawn from a hidden
``psi_star``. Every method gets the same image budget and starts from the same
``psi0`` and network ``params0``:

- ``autosimulate_<variant>``: AutoSimulate Alg. 1 with each implicit direction of
  its Table 1 (``quadratic`` by CG, ``approx_quadratic``, ``linear``, ``no_val``),
  score-function gradient, the network carried across steps;
- ``bayesian_optimisation`` (the ``bayesian-optimization`` package), ``reinforce``
  (Learning to Simulate) and ``random_search``: each evaluation renders
  ``num_samples`` images from a candidate, trains a fresh network for
  ``train_steps`` and scores its validation loss.

Per seed, the target is 95% of the best final validation mIoU any method reached
on that seed; a run's "images to target" is the images it had rendered when its
validation mIoU (of the carried network, or of the best evaluation so far for a
baseline) first reached it. The table gives medians over seeds ("not reached"
when most runs never got there), the final test mIoU and ``||psi - psi*||`` in
box units (each coordinate scaled by its box width). The paper's target ratios
(best AutoSimulate variant <= 1/2.5 of BO's images, <= 1/5 of REINFORCE's and
random search's) are computed from these medians and reported as met or not.
"""

from __future__ import annotations

import argparse
import math
import pathlib


from benchmarks import common
from benchmarks.simopt_common import Entry, first_reaching, fmt, median, plot_curves, run_grid

VARIANTS = ("quadratic", "approx_quadratic", "linear", "no_val")
ENTRIES = [Entry(f"autosimulate_{v}", "autosimulate", (("variant", v),)) for v in VARIANTS] + [
    Entry("bayesian_optimisation", "bayesian_optimisation"),
    Entry("reinforce", "reinforce"),
    Entry("random_search", "random_search"),
]
TARGET_FRACTION = 0.95
TARGET_RATIOS = {"bayesian_optimisation": 2.5, "reinforce": 5.0, "random_search": 5.0}
"""AutoSimulate's paper: 390 images vs 960 (BO), 2090 (random search), 3750 (REINFORCE)."""

FULL = dict(size="quick", budget_images=960, seeds=[0, 1, 2],
            common=dict(num_samples=16, inner_steps=10, cg_maxiter=10, train_steps=100,
                        outer_lr=0.05, inner_lr=3e-3))
QUICK = dict(size="tiny", budget_images=24, seeds=[0],
             common=dict(num_samples=4, inner_steps=2, cg_maxiter=3, train_steps=5,
                         outer_lr=0.05, inner_lr=3e-3))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, one seed (minutes)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="JSON path (default results/simopt_scenes[_quick].json)")
    parser.add_argument("--runs", type=pathlib.Path, default=None,
                        help="folder of the run folders (default runs/simopt_scenes[_quick]); "
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
    plan["root"] = args.runs or pathlib.Path(f"runs/simopt_scenes{suffix}")
    plan["quick"] = args.quick
    return plan, args.out or pathlib.Path(f"results/simopt_scenes{suffix}.json")


def compare(other: float, mine: float, budget_images: int, wanted: float) -> dict:
    """How many times fewer images than ``other`` the best variant needed to target.

    A baseline that never reached the target needed more than ``budget_images``, so
    only the lower bound ``budget_images / mine`` is measured (``at_least``): the
    target is met when that bound reaches ``wanted``, and undecided otherwise.
    """
    if not math.isfinite(mine) or mine <= 0:
        return {"ratio": float("nan"), "at_least": False, "wanted": wanted, "met": False,
                "verdict": "not met"}
    at_least = math.isinf(other)
    ratio = (budget_images if at_least else other) / mine
    met = ratio >= wanted
    verdict = "met" if met else ("undecided" if at_least else "not met")
    return {"ratio": ratio, "at_least": at_least, "wanted": wanted, "met": met,
            "verdict": verdict}


def summarise(grid: dict[str, list[dict]], seeds: list[int], budget_images: int
              ) -> tuple[list[dict], dict]:
    """Table rows (medians over seeds) and the target ratios."""
    targets = []
    for i, _ in enumerate(seeds):
        best = max(runs[i]["result"]["val_metric"] for runs in grid.values()
                   if math.isfinite(runs[i]["result"]["val_metric"]))
        targets.append(TARGET_FRACTION * best)
    rows = []
    for label, runs in grid.items():
        images, seconds = [], []
        for i, r in enumerate(runs):
            hit = first_reaching(r["history"], targets[i], higher_is_better=True)
            images.append(math.inf if hit is None else float(hit["images"]))
            seconds.append(math.inf if hit is None else float(hit["wall_time_s"]))
        results = [r["result"] for r in runs]
        rows.append({
            "method": label, "images_to_target": median(images),
            "seconds_to_target": median(seconds), "reached": sum(map(math.isfinite, images)),
            "runs": len(runs), "images_to_target_per_seed": images,
            "final_val_miou": median([x["val_metric"] for x in results]),
            "final_test_miou": median([x["test_metric"] for x in results]),
            "psi_distance": median([x["psi_distance"] for x in results]),
            "images": median([x["images"] for x in results]),
            "wall_time_s": median([x["wall_time_s"] for x in results])})
    by_label = {r["method"]: r for r in rows}
    auto = [r for r in rows if r["method"].startswith("autosimulate")]
    best_auto = min(auto, key=lambda r: (r["images_to_target"], -r["final_val_miou"]))
    ratios = {}
    for name, wanted in TARGET_RATIOS.items():
        ratios[name] = compare(by_label[name]["images_to_target"],
                               best_auto["images_to_target"], budget_images, wanted)
    return rows, {"best_autosimulate": best_auto["method"], "targets": targets,
                  "ratios": ratios}


def run(plan: dict) -> dict:
    grid = run_grid("scenes", ENTRIES, plan["seeds"], plan["budget_images"], plan["size"],
                    plan["root"], workers=plan["workers"], common=plan["common"])
    rows, comparison = summarise(grid, plan["seeds"], plan["budget_images"])
    curves = {label: [{"seed": s, "history": r["history"]} for s, r in zip(plan["seeds"], runs)]
              for label, runs in grid.items()}
    return {"benchmark": "simopt_scenes", "machine": common.machine_info(),
            "quick": plan["quick"], "size": plan["size"], "budget_images": plan["budget_images"],
            "seeds": plan["seeds"], "settings": plan["common"], "workers": plan["workers"],
            "target_fraction": TARGET_FRACTION, "rows": rows, **comparison, "curves": curves}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Scenes (AutoSimulate sec. 5.1 in miniature), size `{result['size']}`, "
             f"{result['budget_images']} images per run, seeds {result['seeds']}; "
             f"{m['processor']} ({m['cpu_count']} cores), {m['date']}. Medians over seeds; "
             f"target = {result['target_fraction']:.0%} of the best final validation mIoU "
             f"of the seed.", "",
             "| method | images to target | time to target (s) | reached | final val mIoU | "
             "final test mIoU | ‖ψ−ψ*‖ | wall time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {fmt(r['images_to_target'])} | "
                     f"{fmt(r['seconds_to_target'])} | {r['reached']}/{r['runs']} | "
                     f"{fmt(r['final_val_miou'])} | {fmt(r['final_test_miou'])} | "
                     f"{fmt(r['psi_distance'])} | {fmt(r['wall_time_s'])} |")
    lines += ["", f"Best AutoSimulate variant: `{result['best_autosimulate']}`. Its images to "
              f"target against the paper's ratios:", ""]
    for name, r in result["ratios"].items():
        if r["at_least"]:
            how = (f"never reached the target in {result['budget_images']} images, so at least "
                   f"{fmt(r['ratio'])}x fewer images")
        else:
            how = f"{fmt(r['ratio'])}x fewer images"
        lines.append(f"- {name}: {how} (paper's target >= {r['wanted']}x): {r['verdict']}")
    return "\n".join(lines)


def plot(result: dict, path: pathlib.Path) -> None:
    grid = {label: [{"history": c["history"]} for c in runs]
            for label, runs in result["curves"].items()}
    plot_curves(grid, path, metric="miou",
                title=f"scenes: median over seeds {result['seeds']} (faint: each seed)",
                panels=[("images", "val_metric", "images rendered", "validation mIoU"),
                        ("wall_time_s", "val_metric", "wall time (s)", "validation mIoU"),
                        ("images", "psi_distance", "images rendered", "‖ψ−ψ*‖ (box units)")])


def write(result: dict, out: pathlib.Path) -> str:
    return common.write_outputs(result, out, markdown, plot)


def main(argv=None) -> dict:
    return common.main(parse_args, run, write, argv)


if __name__ == "__main__":
    main()
