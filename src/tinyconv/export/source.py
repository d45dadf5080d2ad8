"""Read a training checkpoint (tinyconv.checkpoint, shared with the trainer) for export."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

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


def _describe_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing layer(s) {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"unexpected layer(s) {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
    if shapes:
        parts.append(f"shape mismatch in {'; '.join(shapes[:4])}")
    return "; ".join(parts)


def build_float_architecture(src: SourceCheckpoint) -> nn.Module:
    from tinyconv.models import build_model

    try:
        return build_model(src.config.model, len(src.labels), src.config.frontend)
    except ValueError as exc:
        raise ExportError(f"checkpoint {src.path}: cannot build model {src.config.model.name!r}: {exc}") from exc


def build_float_model(src: SourceCheckpoint) -> nn.Module:
    """The float student with the checkpoint's weights (eval mode)."""
    model = build_float_architecture(src)
    expected = model.state_dict()
    mismatch = _describe_mismatch(expected, src.state_dict)
    if mismatch:
        raise ExportError(
            f"checkpoint {src.path} does not match architecture {src.config.model.name!r} "
            f"(use_depthwise={src.config.model.tiny_conv_use_depthwise}, "
            f"width={src.config.model.width_multiplier}): {mismatch}"
        )
    model.load_state_dict(src.state_dict)
    return model.eval()


def build_qat_model(src: SourceCheckpoint) -> nn.Module:
    """The fake-quantized QAT model of a kind='qat' checkpoint (eval mode)."""
    from tinyconv.models.quant import QuantizationError, load_qat_state

    model = build_float_architecture(src)
    try:
        return load_qat_state(model, src.state_dict)
    except QuantizationError as exc:
        raise ExportError(f"checkpoint {src.path} ({src.config.model.name!r}, kind qat): {exc}") from exc
