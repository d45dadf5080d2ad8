"""The one base class of every error tinyconv raises for bad input.

The CLI prints a `TinyconvError` as one line and exits 2 (usage or input error); anything else
that escapes a handler is a bug and prints its traceback. Each subpackage subclasses this for its
own errors (`ConfigError`, `CheckpointError`, `AudioError`, ...).
"""

from __future__ import annotations


class TinyconvError(Exception):
    """Bad input, a missing tool or an unusable file: a clear one-line message, exit code 2."""
