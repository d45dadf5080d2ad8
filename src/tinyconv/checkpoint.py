"""Checkpoint files: one format for every stage, written atomically, versioned.

A top-level module (not under trainer/) because both the trainer and export read it, and
export must not import the trainer (DESIGN.md).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
import torch.nn as nn

from tinyconv.config import Config, config_from_dict, config_to_dict
from tinyconv.errors import TinyconvError
from tinyconv.models import build_model

FORMAT_VERSION = 1


class CheckpointError(TinyconvError, ValueError):
    """A checkpoint file is missing, corrupt or of an unexpected kind."""


@dataclass
class Checkpoint:
    config: Config
    labels: list[str]
    state_dict: dict[str, torch.Tensor]
    positive_label: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = "float"  # "float" or "qat"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.config.model.name


class CheckpointLike(Protocol):
    """What `model_from_checkpoint` reads: a `Checkpoint`, or export's `SourceCheckpoint`."""

    config: Config
    labels: list[str]
    kind: str
    state_dict: dict[str, torch.Tensor]


ModelForm = Literal["trained", "float", "qat", "fused", "folded", "architecture"]
MODEL_FORMS: tuple[str, ...] = get_args(ModelForm)


def model_from_checkpoint(ckpt: CheckpointLike, form: ModelForm = "trained") -> nn.Module:
    """The one way to build a model from a checkpoint; returned in eval mode.

    `form`:
      "trained"       what the checkpoint holds: "float" for a float checkpoint, "qat" for a QAT one.
      "float"         float arithmetic, no fake quantization. A QAT checkpoint gives its float
                      weights and BN statistics in the fused layout (`FusedConvBNReLU2d` units:
                      its graph stores them per fused unit), the same function in eval mode.
      "qat"           the fake-quantized `QATTinyConv` of a kind='qat' checkpoint.
      "fused"         "float" with every Conv+BN+ReLU one `FusedConvBNReLU2d`.
      "folded"        "float" with BN folded into Conv2d(bias) and no dropout (PTQ, float ONNX).
      "architecture"  the float architecture with fresh weights (for type checks).

    Raises CheckpointError naming the checkpoint (and its `path`, if it has one) when the model
    cannot be built from it: unknown model, weights of another architecture, a QAT form asked of a
    float checkpoint, an architecture that cannot be fused or quantized.
    """
    from tinyconv.models.fusion import QuantizationError, fold_tiny_conv, fuse_tiny_conv

    if form not in MODEL_FORMS:
        raise ValueError(f"unknown model form {form!r}; expected one of {', '.join(MODEL_FORMS)}")
    path = getattr(ckpt, "path", None)
    where = f"checkpoint {path}" if path is not None else "checkpoint"
    name = ckpt.config.model.name
    try:
        model = build_model(ckpt.config.model, len(ckpt.labels), ckpt.config.frontend)
    except ValueError as exc:
        raise CheckpointError(f"{where}: cannot build model {name!r}: {exc}") from exc
    if form == "trained":
        form = "qat" if ckpt.kind == "qat" else "float"
    try:
        if form == "architecture":
            pass
        elif form == "qat":
            if ckpt.kind != "qat":
                raise CheckpointError(f"{where} is a {ckpt.kind} checkpoint; model form 'qat' needs a QAT "
                                      "checkpoint (kind 'qat', from QAT fine-tuning)")
            from tinyconv.models.pt2e import load_qat_state

            model = load_qat_state(model, ckpt.state_dict)
        elif ckpt.kind == "qat":
            model = _float_from_qat_state(fuse_tiny_conv(model), ckpt.state_dict, where)
        else:
            _load_float_state(model, ckpt, where)
        if form == "fused":
            model = fuse_tiny_conv(model)
        elif form == "folded":
            model = fold_tiny_conv(model)
    except QuantizationError as exc:
        raise CheckpointError(f"{where} ({name!r}, kind {ckpt.kind}): {exc}") from exc
    return model.eval()


def _load_float_state(model: nn.Module, ckpt: CheckpointLike, where: str) -> None:
    mismatch = _describe_mismatch(model.state_dict(), ckpt.state_dict)
    if mismatch:
        m = ckpt.config.model
        raise CheckpointError(
            f"{where} does not match architecture {m.name!r} (use_depthwise={m.tiny_conv_use_depthwise}, "
            f"width={m.width_multiplier}): {mismatch}"
        )
    model.load_state_dict(ckpt.state_dict)


def _float_from_qat_state(fused: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> nn.Module:
    """The float model inside a QAT checkpoint: same weights and BN statistics, no fake quant.

    The prepared graph keeps the fused model's parameter names (stem.conv.weight, stem.bn.*).
    """
    graph_state = {k.removeprefix("graph_module."): v for k, v in state_dict.items()}
    # num_batches_tracked is bookkeeping the functional QAT graph does not keep.
    missing = [k for k in fused.state_dict() if k not in graph_state and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"QAT {where} lacks float weights {missing[:4]}")
    fused.load_state_dict({k: graph_state[k] for k in fused.state_dict() if k in graph_state}, strict=False)
    return fused


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


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python numbers, recursively, so the file loads with weights_only=True.

    metrics/extra are free-form; one np.float64 from a metric would make every later load of
    the checkpoint fail the weights-only unpickler.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def load_torch_file(path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True: tensors, numbers, strings and containers only.

    A .pt file is a pickle, and unpickling an arbitrary pickle runs whatever code it names, so a
    crafted checkpoint handed to `tinyconv export`/`eval`/`train --resume` could run a command.
    tinyconv only ever saves plain data, so the weights-only unpickler loses nothing. Anything
    else is a CheckpointError naming the file; we never fall back to a full unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler raises UnpicklingError for both a foreign object and bytes
        # that are no pickle at all; torch.save always writes a zip, so a readable zip means
        # the pickle inside asked for something other than plain data.
        if not zipfile.is_zipfile(path):
            # (torch's own text here suggests weights_only=False: not advice to pass on.)
            raise CheckpointError(f"{what} {path} is corrupt or not a torch file (not the zip archive "
                                  "torch.save writes)") from exc
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise CheckpointError(
            f"{path} is not a plain tinyconv {what}: it holds Python objects "
            f"{f'({found.group(1)}) ' if found else ''}that tinyconv never saves; refusing to unpickle it "
            "because that could run code"
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{what} {path} is corrupt or not a torch file: {first}") from exc


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> None:
    atomic_save(
        {
            "format_version": FORMAT_VERSION,
            "config": config_to_dict(ckpt.config),
            "model_name": ckpt.model_name,
            "labels": list(ckpt.labels),
            "positive_label": ckpt.positive_label,
            "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
            "metrics": _plain(ckpt.metrics),
            "kind": ckpt.kind,
            "extra": _plain(ckpt.extra),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    raw = load_torch_file(path, what="checkpoint")
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise CheckpointError(f"{path} is not a tinyconv checkpoint (no format_version)")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {raw['format_version']}, this tinyconv reads {FORMAT_VERSION}"
        )
    missing = [k for k in ("config", "labels", "state_dict") if k not in raw]
    if missing or not isinstance(raw["state_dict"], dict):
        raise CheckpointError(f"{path} is not a tinyconv checkpoint (missing {', '.join(missing) or 'state_dict'})")
    if raw.get("kind", "float") not in ("float", "qat"):
        raise CheckpointError(f"checkpoint {path} has kind {raw['kind']!r}; expected 'float' or 'qat'")
    try:
        config = config_from_dict(raw["config"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid config: {exc}") from exc
    return Checkpoint(
        config=config,
        labels=list(raw["labels"]),
        state_dict=raw["state_dict"],
        positive_label=raw.get("positive_label"),
        metrics=raw.get("metrics", {}),
        kind=raw.get("kind", "float"),
        extra=raw.get("extra", {}),
    )
