"""``python -m simopt_jax run ...``: optimise a simulator into a run folder.

    python -m simopt_jax run --task scenes --method autosimulate --budget-images 3000 \\
        --seed 0 --out runs/NAME
    python -m simopt_jax run --resume runs/NAME      # continue after a crash or a kill

Every field of :class:`simopt_jax.run.RunConfig` is an option (``--num-samples``,
``--variant``, ...); ``--psi0 FILE`` starts from a JSON ``psi`` shaped like the
problem's. Bad options exit with status 2 and a message naming them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from simopt_jax.problems import PROBLEMS, SIZES
from simopt_jax.scenes import BACKENDS
from simopt_jax.run import METHODS, RunConfig, run

_CHOICES = {"task": sorted(PROBLEMS), "method": METHODS, "size": sorted(SIZES),
            "backend": BACKENDS}
_REQUIRED = ("task", "method", "budget_images")


def _type(field: dataclasses.Field):
    hint = typing.get_type_hints(RunConfig)[field.name]
    for t in (bool, int, float, str):
        if hint is t or t in typing.get_args(hint):
            return t
    return str


def add_run_command(subparsers) -> None:
    p = subparsers.add_parser("run", help="optimise psi of a simulator (see RunConfig)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="run folder (default runs/TASK-METHOD-sSEED)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--psi0", metavar="FILE", help="JSON starting psi, shaped like the problem's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for field in dataclasses.fields(RunConfig):
        if field.name == "psi0":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = None if field.default is dataclasses.MISSING else field.default
        p.add_argument(flag, type=_type(field), choices=_CHOICES.get(field.name), default=None,
                       help=f"default {default}" if field.name not in _REQUIRED else "required")
    p.set_defaults(run=_run, parser=p)


def _run(args) -> int:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
             if f.name != "psi0" and getattr(args, f.name) is not None}
    if args.psi0:
        try:
            given["psi0"] = json.loads(open(args.psi0).read())
        except (OSError, json.JSONDecodeError) as err:
            args.parser.error(f"--psi0 {args.psi0}: {err}")
    try:
        if args.resume:
            if given:
                args.parser.error(f"--resume takes the saved config; drop {sorted(given)}")
            result = run(None, args.resume, resume=True, progress=not args.no_progress)
        else:
            missing = [n for n in _REQUIRED if n not in given]
            if missing:
                args.parser.error("the following arguments are required: "
                                  + ", ".join("--" + n.replace("_", "-") for n in missing))
            config = RunConfig(**given)
            out = args.out or f"runs/{config.task}-{config.method}-s{config.seed}"
            result = run(config, out, progress=not args.no_progress)
    except ValueError as err:
        args.parser.error(str(err))
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in result.items() if k != "psi"}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simopt_jax",
                                     description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_command(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
