"""`tinyconv` command line: thin subcommands, each calling one library function.

Each subpackage that owns commands exposes `add_parsers(subparsers)`; a handler takes the parsed
namespace and returns the exit code: 0 ok, 1 a budget or quality gate failed, 2 usage or input
error, 3 an unexpected exception (a bug; printed with its traceback). Library code raises; only
this module prints errors and picks exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from tinyconv import _quiet
from tinyconv.errors import TinyconvError

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
    "recipes": "tinyconv.recipes.cli",
}

# Exit code of an unexpected exception (a bug): distinct from 0 ok, 1 gate failed, 2 input error.
INTERNAL_ERROR = 3


class UsageError(TinyconvError):
    """Raised by handlers for bad input; printed without a traceback, exit code 2."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyconv", description=__doc__.splitlines()[0])
    # Read by main() before parsing (anywhere on the line); declared here for --help.
    parser.add_argument("--verbose", action="store_true", help="show the libraries' warnings and log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = sorted(set(_COMMAND_MODULES.values())) if command not in _COMMAND_MODULES else [
        _COMMAND_MODULES[command]
    ]
    for name in modules:
        # Every subpackage exists: a failing import is a bug and must show, not hide a command.
        importlib.import_module(name).add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args_list
    args_list = [a for a in args_list if a != "--verbose"]
    _quiet.configure(verbose=verbose)
    command = next((a for a in args_list if not a.startswith("-")), None)
    try:
        parser = build_parser(command)
    except Exception as exc:  # noqa: BLE001 (a subcommand that fails to import is a bug, not a usage error)
        return _internal_error(command or "", exc)
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`tinyconv recipes list | head`): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (TinyconvError, ValueError, OSError) as exc:
        print(f"tinyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 (anything else is a bug: show where, and never exit 0/1/2)
        return _internal_error(args.command, exc)


def _internal_error(command: str, exc: BaseException) -> int:
    traceback.print_exception(exc)
    print(f"tinyconv {command}: internal error ({type(exc).__name__}); this is a bug, please report it with the "
          f"traceback above", file=sys.stderr)
    return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
