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
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tinyconv.config import Config, config_from_dict, config_to_dict
from tinyconv.models import build_model

FORMAT_VERSION = 1

from tinyconv.errors import TinyconvError


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

    def build_model(self) -> nn.Module:
        """The float student with these weights (a QAT checkpoint needs trainer.qat to rebuild)."""
        model = build_model(self.config.model, len(self.labels), self.config.frontend)
        if self.kind != "float":
            raise CheckpointError(f"checkpoint is a {self.kind} checkpoint; load it with tinyconv.trainer.qat")
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint weights do not match model {self.model_name!r}: {exc}") from exc
        return model


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
