"""`export_checkpoint`: checkpoint -> INT8 TFLite, INT8/float ONNX, C arrays, manifest.json.

Every file is written into a temporary folder beside the output folder, checked, and only then
renamed into place, so a failure never leaves half-written files. Each export checks itself
against its source (as timm's ONNX export does): TFLM must match the PyTorch integer-kernel
reference within `SELF_CHECK_MAX_LSB` output LSB, and ONNX Runtime must match TFLM within
`ONNX_SELF_CHECK_MAX_LSB`, on seeded inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyconv.checkpoint import CheckpointError, model_from_checkpoint
from tinyconv.export.errors import ExportError
from tinyconv.export.source import SourceCheckpoint, read_checkpoint
from tinyconv.features import features_to_int8

FORMATS = ("tflite", "onnx", "c", "esphome")
# The default for window models; streaming checkpoints default to esphome + c (export/esphome.py).
WINDOW_FORMATS = ("tflite", "onnx", "c")
MANIFEST_FORMAT_VERSION = 1
TFLITE_NAME = "model_int8.tflite"
ONNX_INT8_NAME = "model_int8.onnx"
ONNX_FLOAT_NAME = "model_float.onnx"
MANIFEST_NAME = "manifest.json"
# TFLM is checked against `integer_kernel_reference` (int8_kernels.py): the converted graph computed
# with int32 accumulation and TFLite's fixed-point requantization, which TFLM matches bit for
# bit (0 LSB on the test split). 1 LSB of slack covers integer kernels that round one layer
# differently (LiteRT's reference FULLY_CONNECTED uses a 16-bit multiplier: 1 LSB on ~1-2 % of
# logits). Broken conversions miss by tens of LSB.
SELF_CHECK_MAX_LSB = 1
# ONNX Runtime runs the QDQ graph with float requantization (round half to even), as the float
# PyTorch graph does: the fixed-point double rounding of TFLite's kernels moves ~0.05-2 % of
# activations per layer by one LSB, and the classifier turns one pooled LSB into up to ~4
# output LSB (max 4-6 measured). The tolerance table is in docs/EXPORT.md and
# tests/export/test_equivalence.py.
ONNX_SELF_CHECK_MAX_LSB = 8
DEFAULT_NUM_CALIBRATION = 500
_SELF_CHECK_EXAMPLES = 16
# Ops a fused Conv+BN+ReLU model must not contain (BN leftovers, float islands).
FORBIDDEN_OPS = ("ADD", "MUL", "SUB", "DIV", "RSQRT", "SQRT", "RELU", "QUANTIZE", "DEQUANTIZE")


@dataclass
class QuantizedReference:
    """The PyTorch quantized model an export is converted from and checked against."""

    reference: torch.fx.GraphModule  # converted QDQ graph: BN folded, scales frozen, eval
    # `reference` computed as the int8 kernels compute it (int32 accumulation, TFLite's
    # fixed-point requantization and MEAN): what TFLM outputs, bit for bit.
    integer: torch.fx.GraphModule
    quantization: str  # "qat" or "ptq"
    calibration: np.ndarray | None  # PTQ calibration features (None for QAT)
    float_model: torch.nn.Module | None  # float checkpoint's model (None for QAT)
    qat_model: Any = None  # QATTinyConv for a QAT checkpoint


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    quantization: str  # "qat" or "ptq"
    tensor_arena_bytes: int
    self_check: dict[str, float]
    reference: QuantizedReference  # the PyTorch quantized model the files were converted from


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    items = [f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise ExportError(f"unknown export format(s) {unknown or items}; choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def _check_out_dir(out_dir: Path) -> None:
    parent = out_dir.parent
    if parent.exists() and not parent.is_dir():
        raise ExportError(f"output folder {out_dir} is not writable: {parent} is a file")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output folder {out_dir} is not writable: it exists and is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        _check_previous_export(out_dir)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"output folder {out_dir} is not writable: {exc}") from exc
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output folder {out_dir} is not writable: no write permission on {parent}")


# Entries of an export folder the exporter may replace besides the files its manifest lists:
# `tinyconv simulate` writes its report into EXPORT_DIR/sim by default, and it describes the
# export being replaced.
_REPLACEABLE_EXTRAS = ("sim",)


def _check_previous_export(out_dir: Path) -> None:
    """Refuse to replace a non-empty folder unless it is a previous export of ours.

    The whole folder is swapped out and deleted, so "holds a manifest.json" is not enough (a
    dataset or a web project has one too): the manifest must be this exporter's (JSON object,
    a known format_version, files and source_checkpoint), and the folder may hold only the files
    it lists. Anything else is left untouched.
    """
    manifest_path = out_dir / MANIFEST_NAME
    refuse = f"output folder {out_dir} is not empty and"
    if not manifest_path.is_file():
        raise ExportError(f"{refuse} holds no previous export ({MANIFEST_NAME}); refusing to replace it")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ExportError(f"{refuse} its {MANIFEST_NAME} is not a tinyconv export manifest ({exc}); "
                          "refusing to replace it") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    ours = (
        isinstance(manifest, dict)
        and type(version) is int
        and 1 <= version <= MANIFEST_FORMAT_VERSION
        and isinstance(manifest.get("files"), dict)
        and isinstance(manifest.get("source_checkpoint"), dict)
    )
    if not ours:
        raise ExportError(f"{refuse} its {MANIFEST_NAME} is not a tinyconv export manifest (format_version "
                          f"{MANIFEST_FORMAT_VERSION} with files and source_checkpoint); refusing to replace it")
    listed = set(manifest["files"]) | {MANIFEST_NAME}
    foreign = sorted(
        e.name for e in out_dir.iterdir()
        if not (e.name in listed and e.is_file() and not e.is_symlink()) and e.name not in _REPLACEABLE_EXTRAS
    )
    if foreign:
        raise ExportError(f"{refuse} holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which the "
                          f"previous export did not write; move {'it' if len(foreign) == 1 else 'them'} or choose "
                          "another --out (refusing to replace it)")


def _representative(src: SourceCheckpoint, representative: np.ndarray | None, count: int) -> np.ndarray:
    """Calibration features: given, or a seeded subset of the training split."""
    if representative is None:
        from tinyconv.data.dataset import load_features

        dataset_dir = Path(src.config.data.dataset_dir).resolve()
        try:
            representative = load_features(dataset_dir, "train", src.config.frontend).x
        except (OSError, ValueError) as exc:
            raise ExportError(
                f"post-training quantization of float checkpoint {src.path} needs training features "
                f"from {dataset_dir}: {exc}"
            ) from exc
    x = np.asarray(representative, dtype=np.float32)
    if x.ndim != 3 or len(x) == 0:
        raise ExportError(f"representative features must be a non-empty [N, frames, channels] array, got {x.shape}")
    if len(x) > count:
        x = x[np.sort(np.random.default_rng(0).choice(len(x), count, replace=False))]
    return x


def _self_check_inputs(src: SourceCheckpoint, calibration: np.ndarray | None, in_scale: float,
                       in_zp: int) -> np.ndarray:
    """Seeded int8 inputs for self-checks: calibration rows if any, else uniform noise."""
    if calibration is not None and len(calibration):
        return features_to_int8(calibration[:_SELF_CHECK_EXAMPLES], in_scale, in_zp)
    fe = src.config.frontend
    rng = np.random.default_rng(0)
    return rng.integers(-128, 128, size=(_SELF_CHECK_EXAMPLES, fe.num_frames, fe.num_channels), dtype=np.int8)


def _lsb_diff(a_int8: np.ndarray, b_float: np.ndarray, scale: float, zp: int) -> float:
    return float(np.max(np.abs((a_int8.astype(np.float64) - zp) - b_float.astype(np.float64) / scale)))


def build_reference(
    src: SourceCheckpoint, *, representative: np.ndarray | None = None, num_calibration: int = DEFAULT_NUM_CALIBRATION
) -> QuantizedReference:
    """QAT checkpoint: its learned ranges as they are. Float checkpoint: PTQ on training data."""
    from tinyconv.export.int8_kernels import integer_kernel_reference
    from tinyconv.models.fusion import QuantizationError
    from tinyconv.models.pt2e import quantize_ptq

    torch.manual_seed(0)  # nothing here should be random; this pins it if something is
    qat_model: Any = None
    calibration: np.ndarray | None = None
    float_model: torch.nn.Module | None = None
    try:
        if src.kind == "qat":
            qat_model = model_from_checkpoint(src, "qat")
            reference = qat_model.to_reference()  # type: ignore[operator]
        else:
            float_model = model_from_checkpoint(src, "float")
            calibration = _representative(src, representative, num_calibration)
            batches = [torch.from_numpy(calibration[i : i + 64]) for i in range(0, len(calibration), 64)]
            reference = quantize_ptq(float_model, batches)
        for module in reference.modules():
            module.training = False  # converted graphs are inference graphs
        integer = integer_kernel_reference(reference)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc  # it names the checkpoint
    except QuantizationError as exc:
        raise ExportError(f"checkpoint {src.path}: {exc}") from exc
    return QuantizedReference(
        reference, integer, "qat" if src.kind == "qat" else "ptq", calibration, float_model, qat_model
    )


def export_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    formats: str | Sequence[str] | None = None,
    representative: np.ndarray | None = None,
    num_calibration: int = DEFAULT_NUM_CALIBRATION,
    probability_cutoff: float | None = None,
) -> ExportResult:
    """Export a float (PTQ) or QAT checkpoint; returns where the files are and what they hold.

    `probability_cutoff` (esphome only): the manifest's cutoff, instead of the one chosen on the
    validation split's everyday negatives.

    `formats`: any of tflite, onnx, c, esphome (None: tflite,onnx,c, or esphome,c for a
    streaming checkpoint; esphome is export/esphome.py's stateful model). The INT8 .tflite is
    always written: the manifest's quantization and arena size describe it, and the C arrays
    embed it. `representative`:
    float features [N, frames, channels] for PTQ calibration (default: a seeded subset of the
    training split of config.data.dataset_dir); a QAT checkpoint keeps its learned ranges.
    """
    from tinyconv.device.arena import measure_host_arena
    from tinyconv.device.errors import ModelError
    from tinyconv.device.runners import run_tflm
    from tinyconv.export.c_array import HEADER_NAME, SOURCE_NAME, CArrayInputs, render_header, render_source
    from tinyconv.export.esphome import export_esphome, route_formats
    from tinyconv.export.onnx_export import export_float_onnx, export_int8_onnx
    from tinyconv.export.tflite import check_full_integer, convert_to_tflite, inspect_tflite

    try:  # model_from_checkpoint names the checkpoint in a CheckpointError
        wanted = route_formats(checkpoint_path, formats)
        if "esphome" in wanted:
            return export_esphome(checkpoint_path, out_dir, with_c="c" in wanted,  # type: ignore[return-value]
                                  representative=representative, probability_cutoff=probability_cutoff)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    if probability_cutoff is not None:
        raise ExportError("a probability cutoff goes into the ESPHome manifest: add esphome to the formats "
                          "(a streaming checkpoint)")
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir)
    src = read_checkpoint(checkpoint_path)
    fe = src.config.frontend
    input_shape = (fe.num_frames, fe.num_channels)

    ref = build_reference(src, representative=representative, num_calibration=num_calibration)
    reference, calibration = ref.reference, ref.calibration

    tflite = convert_to_tflite(reference, input_shape)
    info = inspect_tflite(tflite)
    check_full_integer(info)
    forbidden = [f"#{op.index} {op.name}" for op in info.ops if op.name in FORBIDDEN_OPS]
    if forbidden:
        raise ExportError(f"converted model has unfused ops {', '.join(forbidden)} (BN/ReLU fusion failed)")
    try:  # the TFLM arena `tinyconv simulate` reports as arena_bytes_host (one measurement)
        arena = measure_host_arena(tflite).arena_bytes
    except ModelError as exc:  # names the op TFLM has no kernel for
        raise ExportError(str(exc)) from exc

    # Self-check: TFLM vs the PyTorch quantized model computed with the int8 kernels' arithmetic.
    x_int8 = _self_check_inputs(src, calibration, info.input.scale, info.input.zero_point)
    x_float = torch.from_numpy((x_int8.astype(np.float32) - info.input.zero_point) * info.input.scale)
    with torch.no_grad():
        ref_out = ref.integer(x_float).numpy()
    tflm_out = run_tflm(tflite, x_int8, arena)
    tflm_lsb = _lsb_diff(tflm_out, ref_out, info.output.scale, info.output.zero_point)
    if tflm_lsb > SELF_CHECK_MAX_LSB:
        raise ExportError(
            f"self-check failed: TFLite Micro output differs from the PyTorch quantized model by "
            f"{tflm_lsb:.1f} LSB (allowed {SELF_CHECK_MAX_LSB})"
        )
    self_check = {"tflm_vs_torch_max_lsb": tflm_lsb}

    blobs: dict[str, bytes] = {TFLITE_NAME: tflite}
    if "onnx" in wanted:
        import onnxruntime as ort

        onnx_int8 = export_int8_onnx(reference, input_shape)
        session = ort.InferenceSession(onnx_int8, providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {session.get_inputs()[0].name: x_float.numpy()})[0]
        onnx_lsb = _lsb_diff(tflm_out, onnx_out, info.output.scale, info.output.zero_point)
        if onnx_lsb > ONNX_SELF_CHECK_MAX_LSB:
            raise ExportError(
                f"self-check failed: INT8 ONNX differs from TFLite Micro by {onnx_lsb:.1f} LSB "
                f"(allowed {ONNX_SELF_CHECK_MAX_LSB})"
            )
        self_check["onnx_vs_tflm_max_lsb"] = onnx_lsb
        blobs[ONNX_INT8_NAME] = onnx_int8
        blobs[ONNX_FLOAT_NAME] = export_float_onnx(model_from_checkpoint(src, "folded"), input_shape)
    if "c" in wanted:
        c_inputs = CArrayInputs(
            tflite=tflite,
            info=info,
            labels=src.labels,
            positive_label=src.positive_label,
            frontend=fe,
            tensor_arena_bytes=arena,
            source_description=f"{src.path.name} (sha256 {src.sha256[:16]})",
        )
        blobs[HEADER_NAME] = render_header(c_inputs).encode()
        blobs[SOURCE_NAME] = render_source(c_inputs).encode()

    manifest = export_manifest(src, (info.input, info.output), blobs, ref.quantization, arena)
    blobs[MANIFEST_NAME] = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    _write_atomically(out_dir, blobs)
    return ExportResult(
        out_dir=out_dir,
        files={name: out_dir / name for name in blobs},
        manifest=manifest,
        quantization=ref.quantization,
        tensor_arena_bytes=arena,
        self_check=self_check,
        reference=ref,
    )


def export_manifest(src: SourceCheckpoint, io: tuple[Any, Any], blobs: dict[str, bytes], quantization: str,
                    arena: int, **extra: Any) -> dict[str, Any]:
    """manifest.json of any export folder (window or ESPHome streaming): frontend, I/O
    quantization (`io`: input and output TensorQuant), the sha256 of every file, and `extra` keys
    of the export kind. `_check_previous_export` and the simulator read this format."""
    fe = src.config.frontend
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "model_name": src.config.model.name,
        "labels": list(src.labels),
        "positive_label": src.positive_label,
        "frontend": {
            "sample_rate_hz": fe.sample_rate_hz,
            "window_ms": fe.window_ms,
            "step_ms": fe.step_ms,
            "num_channels": fe.num_channels,
            "clip_duration_ms": fe.clip_duration_ms,
            "num_frames": fe.num_frames,
            "feature_scale": fe.feature_scale,
        },
        **{key: {"shape": list(t.shape), "dtype": t.dtype, "scale": t.scale, "zero_point": t.zero_point}
           for key, t in zip(("input", "output"), io, strict=True)},
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in blobs.items()
        },
        "source_checkpoint": {"path": str(src.path), "sha256": src.sha256, "kind": src.kind},
        "quantization": quantization,
        "dataset_dir": str(Path(src.config.data.dataset_dir).resolve()),
        "tensor_arena_bytes": arena,
        **extra,
    }


def _write_atomically(out_dir: Path, blobs: dict[str, bytes]) -> None:
    """Write every file into a sibling temp folder, fsync, then swap it in with renames."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise ExportError(f"output folder {out_dir} is not writable: {exc}") from exc
    old: Path | None = None
    try:
        for name, data in blobs.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except OSError as exc:
        if old is not None and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"could not write export to {out_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
