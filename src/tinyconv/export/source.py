"""Read a training checkpoint (tinyconv.checkpoint, shared with the trainer) for export.

Models are built from it by `tinyconv.checkpoint.model_from_checkpoint` (a SourceCheckpoint is a
`CheckpointLike`; its path is named in errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tinyconv.checkpoint import CheckpointError, load_checkpoint
from tinyconv.config import Config
from tinyconv.export.errors import ExportError
from tinyconv.hashing import file_sha256


@dataclass(frozen=True)
class SourceCheckpoint:
    path: Path
    sha256: str
    config: Config
    labels: list[str]
    positive_label: str | None
    kind: str  # "float" or "qat"
    state_dict: dict[str, torch.Tensor]


def read_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Load and validate a checkpoint file; ExportError names the path and what is wrong."""
    path = Path(path).resolve()
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    return SourceCheckpoint(
        path=path,
        sha256=file_sha256(path),
        config=ckpt.config,
        labels=[str(x) for x in ckpt.labels],
        positive_label=ckpt.positive_label,
        kind=ckpt.kind,
        state_dict=ckpt.state_dict,
    )
