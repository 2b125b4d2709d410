"""``python -m lido_jax COMMAND ...``: the LiDO command line.

Each command lives in its module as ``add_<name>_command(subparsers)``, which adds a
subparser and sets ``run=fn(args) -> exit code`` as its default; register a new one
by importing it and appending it to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from lido_jax.dataset import add_dataset_command
from lido_jax.demo import add_demo_command
from lido_jax.fit import add_fit_command
from lido_jax.init_training import add_train_init_command
from lido_jax.pretrained import add_pretrain_command
from lido_jax.training import add_train_command

COMMANDS = (add_dataset_command, add_fit_command, add_train_init_command, add_train_command,
            add_pretrain_command, add_demo_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lido_jax", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
