"""INT8 TFLite: fused ops, full-integer, TFLM-loadable, manifest, determinism, pins."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import pytest

from tinyconv.export.pipeline import FORBIDDEN_OPS, export_checkpoint
from tinyconv.export.tflite import check_full_integer, inspect_tflite

# Fused units of tinyconv_test (V2, 2 blocks): stem + 2 x (depthwise, pointwise).
EXPECTED_OPS = ["RESHAPE", "DEPTHWISE_CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D",
                "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_pins_match_the_measured_workaround() -> None:
    """The PT2E + litert-torch workaround was measured with exactly these versions."""
    from tinyconv.models.quant import PINNED_VERSIONS

    for package, version in PINNED_VERSIONS.items():
        installed = importlib.metadata.version(package).split("+")[0]
        assert installed == version, (
            f"{package} {installed} is installed but the QAT->TFLite path was verified with {version}: "
            "re-run tests/trainer/test_qat.py::test_litert_workaround_still_needed and update PINNED_VERSIONS"
        )


@pytest.mark.parametrize("which", ["qat_export", "ptq_export"])
def test_one_fused_conv_per_unit_with_relu(which: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(which)
    info = inspect_tflite(result.files["model_int8.tflite"].read_bytes())
    assert info.op_names == EXPECTED_OPS
    convs = [op for op in info.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == 5  # one per fused Conv+BN+ReLU unit
    assert all(op.fused_activation == "RELU" for op in convs)
    assert not [op for op in info.ops if op.name in FORBIDDEN_OPS]


@pytest.mark.parametrize("which", ["qat_export", "ptq_export"])
def test_full_integer_int8_io(which: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(which)
    info = inspect_tflite(result.files["model_int8.tflite"].read_bytes())
    check_full_integer(info)
    assert info.input.shape == (1, 98, 40) and info.input.dtype == "int8"
    assert info.output.shape == (1, 3) and info.output.dtype == "int8"
    # TFLM scheme: per-channel symmetric weights (zero point 0, one scale per output channel).
    assert all(zero and n > 1 for _, zero, n in info.weight_quant)
    assert info.bias_types and all(t == "INT32" for t in info.bias_types)


def test_loads_in_tflite_micro(qat_export) -> None:  # type: ignore[no-untyped-def]
    from tflite_micro import runtime

    data = qat_export.files["model_int8.tflite"].read_bytes()
    runtime.Interpreter.from_bytes(data, arena_size=qat_export.tensor_arena_bytes)
    assert 1000 < qat_export.tensor_arena_bytes < 200_000


def test_manifest_schema(qat_export, trained) -> None:  # type: ignore[no-untyped-def]
    m = json.loads(qat_export.files["manifest.json"].read_text())
    assert list(m) == ["format_version", "model_name", "labels", "positive_label", "frontend", "input", "output",
                       "files", "source_checkpoint", "quantization", "dataset_dir", "tensor_arena_bytes"]
    assert m["format_version"] == 1 and m["quantization"] == "qat" and m["positive_label"] == "hey_tiny"
    assert m["frontend"] == {"sample_rate_hz": 16000, "window_ms": 30, "step_ms": 10, "num_channels": 40,
                             "clip_duration_ms": 1000, "num_frames": 98, "feature_scale": 0.0390625}
    assert m["input"]["shape"] == [1, 98, 40] and m["output"]["shape"] == [1, 3]
    assert m["source_checkpoint"]["kind"] == "qat"
    assert m["source_checkpoint"]["sha256"] == hashlib.sha256(trained.qat_path.read_bytes()).hexdigest()
    expected_files = {"model_int8.tflite", "model_int8.onnx", "model_float.onnx", "model_data.h", "model_data.cc"}
    assert set(m["files"]) == expected_files
    for name, meta in m["files"].items():
        data = (qat_export.out_dir / name).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert m["tensor_arena_bytes"] == qat_export.tensor_arena_bytes


def _assert_same_files(a, b) -> None:  # type: ignore[no-untyped-def]
    for name in list(a.manifest["files"]) + ["manifest.json"]:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name


def test_same_checkpoint_exports_byte_identical_files(ptq_export, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    again = export_checkpoint(trained.float_path, tmp_path / "again", formats="tflite,onnx,c",
                              representative=trained.train_x)
    _assert_same_files(again, ptq_export)


@pytest.mark.slow
def test_same_qat_checkpoint_exports_byte_identical_files(qat_export, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _assert_same_files(export_checkpoint(trained.qat_path, tmp_path / "again", formats="tflite,onnx,c"), qat_export)


def test_qat_export_keeps_learned_ranges(qat_export) -> None:  # type: ignore[no-untyped-def]
    """No silent re-calibration: the .tflite I/O scales are the QAT fake-quant scales."""
    qat = qat_export.reference.qat_model  # rebuilt from the checkpoint's state_dict
    scales = sorted(
        float(m.scale.reshape(-1)[0]) for name, m in qat.graph_module.named_children()
        if name.startswith("activation_post_process") and m.scale.numel() == 1
    )
    m = qat_export.manifest
    for value in (m["input"]["scale"], m["output"]["scale"]):
        assert min(abs(value - s) for s in scales) <= 1e-7 * max(1.0, value)


def test_time_dilated_model_exports_bit_exact(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Dilated 3x3 convs (model.time_dilations), PTQ and QAT, convert to dilated TFLite convs: the export's
    self-check runs TFLite Micro against the integer reference of the dilated PyTorch graph, so
    a converter that dropped the dilation would fail it by many LSB."""
    import dataclasses

    from synthetic import tiny_config, train_float

    from tinyconv.checkpoint import save_checkpoint
    from tinyconv.config import ModelConfig

    from tinyconv.trainer.qat import qat_finetune

    model = ModelConfig(name="tinyconv", width_multiplier=0.125, time_dilations=(1, 2, 4, 4))
    config = dataclasses.replace(tiny_config(), model=model)
    x, y = trained.train_x[:256], trained.train_y[:256]
    float_ckpt = train_float(config, x, y, epochs=2)
    save_checkpoint(float_ckpt, tmp_path / "d.pt")
    save_checkpoint(qat_finetune(float_ckpt, x, y, trained.test_x[:64], trained.test_y[:64], config), tmp_path / "q.pt")
    for name, kwargs in (("d.pt", {"representative": trained.train_x[:128]}), ("q.pt", {})):
        result = export_checkpoint(tmp_path / name, tmp_path / f"exp_{name}", formats="tflite", **kwargs)
        assert result.self_check["tflm_vs_torch_max_lsb"] <= 1
        info = inspect_tflite(result.files["model_int8.tflite"].read_bytes())
        assert info.op_names.count("DEPTHWISE_CONV_2D") == 5  # stem + 4 blocks: no ops added for the dilation
        assert not [op for op in info.ops if op.name in FORBIDDEN_OPS]
