"""Export errors: every message names the file, layer or op at fault."""

from __future__ import annotations

from tinyconv.errors import TinyconvError


class ExportError(TinyconvError, ValueError):
    """A checkpoint cannot be exported, or an exported file fails its self-check."""
