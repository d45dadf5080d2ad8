"""INT8 export for microcontrollers: TFLite (TFLite Micro), ONNX (QDQ), C arrays, manifest.

`export_checkpoint(checkpoint, out_dir, formats=...)` is the entry point. Heavy imports (torch,
litert-torch) happen inside the functions, so `tinyconv.export` itself imports quickly. TFLite
Micro checks (arena, missing ops, inference) come from the torch-free `tinyconv.device` layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tinyconv.export.errors import ExportError

if TYPE_CHECKING:
    from tinyconv.export.pipeline import ExportResult, export_checkpoint

__all__ = ["ExportError", "ExportResult", "export_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("ExportResult", "export_checkpoint", "FORMATS"):
        from tinyconv.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'tinyconv.export' has no attribute {name!r}")
