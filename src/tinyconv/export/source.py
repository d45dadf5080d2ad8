"""Read a training checkpoint (tinyconv.checkpoint, shared with the trainer) for export.

Models are built from it by `tinyconv.checkpoint.model_from_checkpoint` (a SourceCheckpoint is a
`CheckpointLike`; its path is named in errors).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from tinyconv.checkpoint import CheckpointError, load_checkpoint
from tinyconv.config import Config
from tinyconv.export.errors import ExportError


@dataclass(frozen=True)
class SourceCheckpoint:
    path: Path
    sha256: str
    config: Config
    labels: list[str]
    positive_label: str | None
    kind: str  # "float" or "qat"
    state_dict: dict[str, torch.Tensor]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Load and validate a checkpoint file; ExportError names the path and what is wrong."""
    path = Path(path).resolve()
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    return SourceCheckpoint(
        path=path,
        sha256=sha256_file(path),
        config=ckpt.config,
        labels=[str(x) for x in ckpt.labels],
        positive_label=ckpt.positive_label,
        kind=ckpt.kind,
        state_dict=ckpt.state_dict,
    )
