from pathlib import Path

import numpy as np
import pytest

from tinyconv.device.errors import ModelError
from tinyconv.device.runners import check_onnx, make_runner
from tinyconv.device.tflite_file import load_tflite
from tinyconv.firmware_sim.report import simulate
from tinyconv.firmware_sim.synthetic import write_tiny_model

from .conftest import ref_model

# Cross-runtime tolerance (DESIGN.md s5): TFLM vs LiteRT reference kernels bit-exact;
# LiteRT XNNPACK within 2 output LSB.
XNNPACK_LSB = 2


def test_tflm_matches_litert_reference_on_tiny_model(tiny_tflite: Path) -> None:
    model = load_tflite(tiny_tflite)
    runners = {r: make_runner(r, model, arena_size=64_000) for r in ("tflm", "litert_ref", "litert")}
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.integers(-128, 128, size=(1, 98, 40)).astype(np.int8)
        out = {k: r.run(x).astype(int) for k, r in runners.items()}
        np.testing.assert_array_equal(out["tflm"], out["litert_ref"])
        assert np.abs(out["tflm"] - out["litert"]).max() <= XNNPACK_LSB


def test_streaming_state_matches_between_tflm_and_litert_ref() -> None:
    model = load_tflite(ref_model("mww_v2_okay_nabu.tflite"))
    tflm, ref = make_runner("tflm", model, arena_size=40_000), make_runner("litert_ref", model)
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(20):  # state carries across invokes through the resource variables
        x = rng.integers(-128, 20, size=(1, 3, 40)).astype(np.int8)
        outs.append((int(tflm.run(x)[0, 0]), int(ref.run(x)[0, 0])))
    assert all(a == b for a, b in outs)


def test_float_model_against_int8_only_budget(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "float_io.tflite", float_io=True)
    with pytest.raises(ModelError, match="is not an int8-only model .* budget 'nrf52840' links only int8 kernels"):
        simulate(path, ["nrf52840"])


def test_op_tflm_lacks(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "custom.tflite", missing_op=True)
    with pytest.raises(ModelError, match="TFLite Micro cannot run this model.*CUSTOM"):
        simulate(path, [])


def test_malformed_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match="malformed or invalid ONNX model"):
        check_onnx(bad)
