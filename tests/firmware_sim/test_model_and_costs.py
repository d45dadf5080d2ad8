from pathlib import Path

import pytest

from tinyconv.device.errors import ModelError
from tinyconv.device.tflite_file import live_bytes_per_op, load_tflite, parse_tflite
from tinyconv.firmware_sim.costmodel import calibrate_dscnn, estimate_code_bytes

from .conftest import ref_model


def test_dscnn_macs_match_mlperf() -> None:
    model = load_tflite(ref_model("mlperf_tiny_kws_dscnn_int8.tflite"))
    assert model.macs == 2_664_768  # MLPerf Tiny quotes ~2.66 M MACs
    assert model.is_int8_only and not model.is_streaming


def test_streaming_model_parses_resource_variables() -> None:
    model = load_tflite(ref_model("mww_v2_okay_nabu.tflite"))
    assert model.is_streaming and model.num_subgraphs == 2
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"} <= set(model.op_names)
    assert [t.shape for t in model.inputs] == [(1, 3, 40)]


def test_live_bytes_never_exceed_sum_of_activations(tiny_tflite: Path) -> None:
    model = load_tflite(tiny_tflite)
    live = live_bytes_per_op(model)
    assert len(live) == len(model.main_ops) and max(live) > 98 * 40


def test_latency_calibration_on_mlperf_dscnn() -> None:
    """Stated in docs/FIRMWARE_SIM.md: reference within 5 %, optimized within 25 % of both stacks."""
    cal = calibrate_dscnn(load_tflite(ref_model("mlperf_tiny_kws_dscnn_int8.tflite")))
    assert abs(cal[0].error_pct) < 5.0
    assert all(abs(c.error_pct) < 25.0 for c in cal[1:])


def test_code_size_estimate_covers_every_op(tiny_tflite: Path) -> None:
    est = estimate_code_bytes(load_tflite(tiny_tflite), "cmsis-nn")
    assert set(est["kernel_bytes"]) == {"CONV_2D", "FULLY_CONNECTED", "RESHAPE"}
    assert est["total_bytes"] > est["framework_bytes"]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "too short"),
    (b"\x00" * 64, "missing the 'TFL3'"),
])
def test_not_a_tflite_file(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_tflite(data, "x.tflite")


def test_truncated_tflite(tiny_tflite: Path) -> None:
    with pytest.raises(ModelError, match="malformed or truncated TFLite flatbuffer"):
        parse_tflite(tiny_tflite.read_bytes()[:2000], "cut.tflite")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_tflite(tmp_path / "nope.tflite")
