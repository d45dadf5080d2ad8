"""The integer reference (export/int8_reference.py) against TFLite Micro, bit for bit.

Tolerance (stated once, also in docs/EXPORT.md): TFLM vs the integer reference of the same
.tflite, uint8 output of every invoke of a stream: 0 steps apart (esphome.SELF_CHECK_MAX_U8_DIFF).
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.esphome_features import esphome_features_int8
from tinyconv.export.esphome import (
    FRAMES_PER_INVOKE,
    SELF_CHECK_MAX_U8_DIFF,
    run_tflm_stream,
)
from tinyconv.export.int8_reference import (
    IntegerReferenceError,
    TfliteIntegerReference,
    fixed_point_logistic,
    run_reference_stream,
)


def _streams(test_x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "held-out clips": esphome_features_int8(np.concatenate(list(test_x[:20]), 0)),
        # Uniform int8 noise saturates layers and the logistic at both ends.
        "random int8": rng.integers(-128, 128, size=(450, 40)).astype(np.int8),
    }


def test_exported_model_matches_tflm_bit_for_bit(esphome_export, stream_trained) -> None:  # type: ignore[no-untyped-def]
    data = (esphome_export.out_dir / "hey_tiny.tflite").read_bytes()
    for name, q in _streams(stream_trained.test_x).items():
        tflm = run_tflm_stream(data, q, esphome_export.tensor_arena_bytes)
        ref = run_reference_stream(data, q, FRAMES_PER_INVOKE)
        assert ref.dtype == np.uint8 and len(ref) == len(tflm) == len(q) // 3
        assert len(np.unique(tflm)) > 10, name  # the stream exercises the output range
        assert np.abs(tflm.astype(int) - ref.astype(int)).max() <= SELF_CHECK_MAX_U8_DIFF, name
    check = esphome_export.self_check
    assert check["tflm_vs_integer_max_u8_diff"] == 0 and check["tflm_vs_integer_mismatches"] == 0


def test_the_comparison_sees_the_state(esphome_export, stream_trained) -> None:  # type: ignore[no-untyped-def]
    """A reference that forgets its state every invoke (ESPHome resetting the model) differs from TFLM."""
    data = (esphome_export.out_dir / "hey_tiny.tflite").read_bytes()
    q = _streams(stream_trained.test_x)["held-out clips"]
    tflm = run_tflm_stream(data, q, esphome_export.tensor_arena_bytes)
    ref = TfliteIntegerReference(data)
    stateless = []
    for i in range(len(tflm)):
        ref.reset()
        stateless.append(ref.invoke(q[None, 3 * i : 3 * i + 3]).reshape(-1)[0])
    assert (np.asarray(stateless) != tflm).mean() > 0.3


@pytest.mark.parametrize("name", ["okay_nabu", "hey_jarvis"])
def test_microwakeword_models_match_tflm_bit_for_bit(name: str, stream_trained) -> None:  # type: ignore[no-untyped-def]
    """Released microWakeWord v2 files (MixConv with SPLIT_V, 6 state variables) as a third-party check."""
    from tests.helpers import reference_model

    data = reference_model(f"mww_v2_{name}.tflite").read_bytes()
    arena = measure_host_arena(data).arena_bytes
    for stream, q in _streams(stream_trained.test_x).items():
        tflm = run_tflm_stream(data, q[: 3 * 200], arena)
        ref = run_reference_stream(data, q[: 3 * 200], FRAMES_PER_INVOKE)
        assert np.array_equal(tflm, ref), stream


@pytest.mark.parametrize("low,high", [(-9.0, 7.0), (-1.5, 2.5), (-30.0, 20.0)])
def test_logistic_all_int8_inputs_match_tflm(low: float, high: float) -> None:
    """gemmlowp's fixed-point logistic, ported: every one of the 256 int8 inputs equals TFLM's output
    (input scales 0.016-0.2: the fine middle, and the saturated ends beyond the input radius)."""
    tf = pytest.importorskip("tensorflow")

    class Sigmoid(tf.Module):  # type: ignore[misc,name-defined]
        @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
        def __call__(self, x):  # type: ignore[no-untyped-def]
            return tf.sigmoid(x)

    module = Sigmoid()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.optimizations = {tf.lite.Optimize.DEFAULT}
    converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
    converter.inference_input_type = converter.inference_output_type = tf.int8
    converter.representative_dataset = lambda: ([np.linspace(low, high, 256, dtype=np.float32)[None]] for _ in range(2))
    data = bytes(converter.convert())
    from tflite_micro import runtime

    x = np.arange(-128, 128, dtype=np.int8)[None]
    interp = runtime.Interpreter.from_bytes(data, arena_size=16384)
    interp.set_input(x, 0)
    interp.invoke()
    tflm = np.asarray(interp.get_output(0))
    ref = TfliteIntegerReference(data).invoke(x)
    assert "LOGISTIC" in _op_names(data)
    assert len(np.unique(tflm)) > 40
    assert np.array_equal(ref, tflm)


def _op_names(data: bytes) -> set[str]:
    from tinyconv.export.esphome import inspect_esphome_model

    return set(inspect_esphome_model(data).op_names)


def test_fixed_point_logistic_is_a_logistic() -> None:
    for v in (-7.9, -2.0, -0.5, 0.0, 0.3, 1.0, 4.0, 7.9):
        raw = fixed_point_logistic(int(round(v * (1 << 27))), 4)  # Q4.27 in, Q0.31 out
        assert abs(raw / 2**31 - 1 / (1 + np.exp(-v))) < 1e-6


def test_op_without_emulation_is_named() -> None:
    from tests.helpers import reference_model

    ref = TfliteIntegerReference(reference_model("mlperf_tiny_kws_dscnn_int8.tflite").read_bytes())
    shape = ref._tensors[0][ref._model.subgraphs[0].inputs[0]].shape
    with pytest.raises(IntegerReferenceError, match=r"op #\d+ AVERAGE_POOL_2D \(subgraph 0\): the integer reference "
                                                    r"has no emulation of AVERAGE_POOL_2D"):
        ref.invoke(np.zeros(shape, np.int8))


def test_wrong_input_and_garbage_are_refused(esphome_export) -> None:  # type: ignore[no-untyped-def]
    ref = TfliteIntegerReference((esphome_export.out_dir / "hey_tiny.tflite").read_bytes())
    with pytest.raises(IntegerReferenceError, match=r"input must be int8 \[1, 3, 40\], got float32 \[1, 3, 40\]"):
        ref.invoke(np.zeros((1, 3, 40), np.float32))
    with pytest.raises(IntegerReferenceError, match="not a valid .tflite flatbuffer"):
        TfliteIntegerReference(b"not a flatbuffer at all")
