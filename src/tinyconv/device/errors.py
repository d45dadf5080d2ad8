"""Errors of the device layer for bad input (the CLI turns them into exit code 2).

`tinyconv.firmware_sim` re-exports both (they are what `simulate` raises); the exporter turns
them into `ExportError`s with the same message.
"""

from __future__ import annotations

from tinyconv.errors import TinyconvError


class ModelError(TinyconvError, ValueError):
    """A model file is malformed, truncated, unsupported by a runtime, or wrong for a budget."""


class RuntimeFailure(ModelError):
    """A native interpreter rejected or crashed on a model (reported from an isolated process)."""
