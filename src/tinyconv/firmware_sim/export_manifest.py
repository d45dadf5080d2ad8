"""Reading an export's manifest.json as untrusted input: structure, labels, and every file's sha256.

`simulate` and `gate` take labels, quantization and the dataset folder from the manifest, and the
model files next to it. A manifest of the wrong shape used to surface as a traceback deep inside
the simulator, and a model file swapped or corrupted after export was simulated as if it were
the export. Here the structure is checked key by key and every file the manifest lists is hashed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from tinyconv.device.errors import ModelError
from tinyconv.hashing import file_sha256

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REEXPORT = "re-run `tinyconv export` to rebuild the folder"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_quant(path: Path, section: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ModelError(f"{path}: {section} must be an object (shape, dtype, scale, zero_point), "
                         f"got {type(value).__name__}")
    scale, zp, shape = value.get("scale"), value.get("zero_point"), value.get("shape")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale) or scale <= 0):
        raise ModelError(f"{path}: {section}.scale must be a positive finite number, got {scale!r:.60}")
    if zp is not None and not _is_int(zp):
        raise ModelError(f"{path}: {section}.zero_point must be an integer, got {zp!r:.60}")
    if shape is not None and not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise ModelError(f"{path}: {section}.shape must be a list of non-negative integers, got {shape!r:.60}")


def validate_export_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """The manifest if its structure is sound; a ModelError naming the key otherwise."""
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: an export manifest must be a JSON object, got a {type(manifest).__name__}; "
                         f"{_REEXPORT}")
    version = manifest.get("format_version")
    if version is not None and not _is_int(version):
        raise ModelError(f"{path}: format_version must be an integer, got {version!r:.60}")
    labels = manifest.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ModelError(f"{path}: labels must be a non-empty list of non-empty strings, got {labels!r:.80}")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ModelError(f"{path}: labels must be unique; repeated: {dupes}")
    positive = manifest.get("positive_label")
    if positive is not None:
        if not isinstance(positive, str):
            raise ModelError(f"{path}: positive_label must be a string, got {positive!r:.60}")
        if labels is not None and positive not in labels:
            raise ModelError(f"{path}: positive_label {positive!r} is not one of the labels {labels}")
    dataset = manifest.get("dataset_dir")
    if dataset is not None and (not isinstance(dataset, str) or not dataset):
        raise ModelError(f"{path}: dataset_dir must be a path string, got {dataset!r:.60}")
    for section in ("input", "output"):
        if manifest.get(section) is not None:
            _check_quant(path, section, manifest[section])
    files = manifest.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise ModelError(f"{path}: files must be an object of file name -> {{sha256, bytes}}, "
                             f"got {type(files).__name__}")
        for name, entry in files.items():
            # Plain names only: a hostile manifest must not make us hash (or name) files elsewhere.
            if not name or name in (".", "..") or "/" in name or "\\" in name or name == path.name:
                raise ModelError(f"{path}: files lists {name!r}, which is not a file name in the export folder")
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                    or not _SHA256.fullmatch(entry["sha256"]):
                raise ModelError(f"{path}: files.{name} must hold a 64-digit lowercase hex sha256, got {entry!r:.100}")
            if "bytes" in entry and not (_is_int(entry["bytes"]) and entry["bytes"] >= 0):
                raise ModelError(f"{path}: files.{name}.bytes must be a non-negative integer, "
                                 f"got {entry['bytes']!r:.60}")
    return manifest


def verify_export_files(manifest: dict[str, Any], path: Path) -> None:
    """Every file the manifest lists is present and has the recorded size and sha256."""
    folder = path.parent
    for name, entry in (manifest.get("files") or {}).items():
        f = folder / name
        if not f.is_file():
            raise ModelError(f"{path}: the manifest lists {name} but {f} is missing; {_REEXPORT}")
        size = f.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise ModelError(f"{f}: {size} bytes, but the export manifest records {entry['bytes']}: the file "
                             f"changed after export; {_REEXPORT}")
        actual = file_sha256(f)
        if actual != entry["sha256"]:
            raise ModelError(f"{f}: sha256 {actual[:16]}... does not match the export manifest "
                             f"({entry['sha256'][:16]}...): the file changed after export; {_REEXPORT}")


def read_export_manifest(path: str | Path) -> dict[str, Any]:
    """Parse, validate and check the files of an export's manifest.json."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    manifest = validate_export_manifest(raw, path)
    verify_export_files(manifest, path)
    return manifest
