"""INT8 TFLite: fused ops, full-integer, TFLM-loadable, manifest, determinism, pins."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import pytest

from tinyconv.export.errors import ExportError
from tinyconv.export.pipeline import FORBIDDEN_OPS, export_checkpoint
from tinyconv.export.tflite import check_full_integer, inspect_tflite

# Fused units of tinyconv_test (V2, 2 blocks): stem + 2 x (depthwise, pointwise).
EXPECTED_OPS = ["RESHAPE", "DEPTHWISE_CONV_2D", "PAD", "DEPTHWISE_CONV_2D", "CONV_2D",
                "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]


def test_pins_match_the_measured_workaround() -> None:
    """The PT2E + litert-torch workaround was measured with exactly these versions."""
    from tinyconv.models.pt2e import PINNED_VERSIONS

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
    assert len(info.weight_quant) == 6  # 5 convs + the classifier
    assert all(w.symmetric and w.num_scales == w.num_zero_points == w.num_channels > 1 for w in info.weight_quant)
    assert info.bias_types and all(t == "INT32" for t in info.bias_types)


def _mutate_first_weights(data: bytes, op_name: str, change) -> bytes:  # type: ignore[no-untyped-def]
    """`data` with `change(quantization)` applied to the weights of the first `op_name` op."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    code = getattr(schema.BuiltinOperator, op_name)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    op = next(o for o in model.subgraphs[0].operators if codes[o.opcodeIndex] == code)
    change(model.subgraphs[0].tensors[op.inputs[1]].quantization)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _drop_last_channel(q) -> None:  # type: ignore[no-untyped-def]
    q.scale, q.zeroPoint = list(q.scale)[:-1], list(q.zeroPoint)[:-1]


def _one_zero_point(q) -> None:  # type: ignore[no-untyped-def]
    q.zeroPoint = [0]


def _wrong_dimension(q) -> None:  # type: ignore[no-untyped-def]
    q.quantizedDimension = 1  # a conv's kernel height, not its output channels


@pytest.mark.parametrize(("op_name", "change", "message"), [
    ("CONV_2D", _drop_last_channel, r"op #4 CONV_2D: 7 per-channel weight scales for 8 channels along quantized "
                                    r"dimension 0; expected one per channel"),
    ("DEPTHWISE_CONV_2D", _drop_last_channel, r"op #1 DEPTHWISE_CONV_2D: 7 per-channel weight scales for 8 channels "
                                              r"along quantized dimension 3"),
    ("FULLY_CONNECTED", _drop_last_channel, r"op #8 FULLY_CONNECTED: 2 per-channel weight scales for 3 channels"),
    ("CONV_2D", _one_zero_point, r"op #4 CONV_2D: 1 weight zero points for 8 scales; expected one per scale"),
    ("CONV_2D", _wrong_dimension, r"op #4 CONV_2D: 8 per-channel weight scales for 1 channels along quantized "
                                  r"dimension 1"),
])
def test_per_channel_scale_counts_are_checked(qat_export, op_name, change, message) -> None:  # type: ignore[no-untyped-def]
    data = qat_export.files["model_int8.tflite"].read_bytes()
    check_full_integer(inspect_tflite(data))  # the export itself passes
    with pytest.raises(ExportError, match=message):
        check_full_integer(inspect_tflite(_mutate_first_weights(data, op_name, change)))


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


@pytest.mark.slow  # ~110 s on 2 busy cores: a second architecture through the whole PT2E export
def test_time_dilated_model_exports_bit_exact(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Dilated 3x3 convs (model.time_dilations), PTQ and QAT, convert to dilated TFLite convs: the export's
    self-check runs TFLite Micro against the integer reference of the dilated PyTorch graph, so
    a converter that dropped the dilation would fail it by many LSB."""
    import dataclasses

    from tests.export.synthetic import synthetic_config, train_float
    from tinyconv.checkpoint import save_checkpoint
    from tinyconv.config import ModelConfig
    from tinyconv.trainer.qat import qat_finetune

    model = ModelConfig(name="tinyconv", width_multiplier=0.125, time_dilations=(1, 2, 4, 4))
    config = dataclasses.replace(synthetic_config(), model=model)
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
