"""The `secoustic` console script: a thin dispatcher over command modules.

Each command module exposes `register(subparsers)`, which adds its sub-commands and sets
`func` on them. Modules are imported only when the script runs (never at package import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute sub-commands, in help order.
COMMAND_MODULES = (
    "secoustic_jax.commands.codec",  # import-torch, export-torch, encode, decode, roundtrip
    "secoustic_jax.commands.stream",  # stream
    "secoustic_jax.data.commands",  # corpus build, ingest ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secoustic", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside the module: surface it
                raise
            continue  # this command group is not part of the installed tree
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Our error types subclass ValueError and carry a message naming the problem.
        print(f"secoustic {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
