"""`tinyconv` command line: thin subcommands, each calling one library function.

Each subpackage that owns commands exposes `add_parsers(subparsers)`; a handler takes the parsed
namespace and returns the exit code: 0 ok, 1 a budget or quality gate failed, 2 usage or input
error. Library code raises; only this module prints errors and picks exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subpackages with commands, imported lazily so `tinyconv simulate` never imports torch.
_COMMAND_MODULES = {
    "data": "tinyconv.data.cli",
    "train": "tinyconv.trainer.cli",
    "eval": "tinyconv.trainer.cli",
    "quickstart": "tinyconv.trainer.cli",
    "teacher": "tinyconv.trainer.cli",
    "export": "tinyconv.export.cli",
    "simulate": "tinyconv.firmware_sim.cli",
    "bench": "tinyconv.firmware_sim.cli",
    "gate": "tinyconv.firmware_sim.cli",
    "ui": "tinyconv.ui.cli",
}


from tinyconv.errors import TinyconvError


class UsageError(TinyconvError):
    """Raised by handlers for bad input; printed without a traceback, exit code 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = sorted(set(_COMMAND_MODULES.values())) if command not in _COMMAND_MODULES else [
        _COMMAND_MODULES[command]
    ]
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("tinyconv"):
                continue  # a subpackage not built yet
            raise
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (TinyconvError, ValueError, OSError) as exc:
        print(f"tinyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
