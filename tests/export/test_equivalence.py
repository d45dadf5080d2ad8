"""Cross-runtime equivalence on the test split, with one tolerance table (docs/EXPORT.md).

"PyTorch" is the quantized reference the export converts: the QAT fake-quant graph with BN
folded and scales frozen (convert_pt2e), or the PTQ-calibrated graph, computed the way the int8
kernels compute it (`integer_kernel_reference`: int32 accumulation, TFLite's fixed-point
requantization and MEAN). "PyTorch QDQ" is the same graph computed in float, as QAT trains it.
"LSB" is one step of the int8 output (manifest output.scale).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# The one tolerance table (docs/EXPORT.md repeats it).
# pair: (min top-1 agreement, min fraction of logits within 2 output LSB, max LSB anywhere)
# The integer-kernel reference gives TFLite Micro's output bit for bit, and every intermediate
# int8 tensor of LiteRT's BUILTIN_REF kernels; LiteRT's FULLY_CONNECTED alone rescales with a
# multiplier rounded to 16 bits and one rounding, 1 LSB off on ~1-2 % of logits. The float QDQ
# graph (and ONNX Runtime, which runs it) rounds once, half to even, where the kernels round
# twice (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT, ties away from zero) and
# MEAN folds 1/N into its multiplier: ~0.05 % of stem outputs and ~1-2 % of the
# last conv's outputs move by one LSB or more, and the classifier turns one pooled LSB into up to
# ~4 output LSB. A broken conversion misses by tens of LSB.
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "tflm_vs_litert_ref": (0.99, 1.0, 1.0),
    "torch_vs_tflm": (1.0, 1.0, 0.0),
    "torch_vs_litert_ref": (0.99, 1.0, 1.0),
    "torch_qdq_vs_tflm": (0.99, 0.90, 8.0),
    "onnx_vs_tflite": (0.99, 0.90, 8.0),
}


# Dequantized float32 outputs divided by the output scale are integers up to ~1e-5.
_EPS = 1e-3


def _lsb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b.astype(np.float64))


def _check(pair: str, a_top1: np.ndarray, b_top1: np.ndarray, lsb: np.ndarray, stats: dict) -> None:
    min_top1, min_within2, max_lsb = TOLERANCES[pair]
    top1 = float(np.mean(a_top1 == b_top1))
    within2 = float(np.mean(lsb <= 2.0 + _EPS))
    stats[pair] = {"top1": top1, "within_2_lsb": within2, "max_lsb": float(lsb.max()), "mean_lsb": float(lsb.mean())}
    assert top1 >= min_top1, (pair, stats[pair])
    assert within2 >= min_within2, (pair, stats[pair])
    assert lsb.max() <= max_lsb + _EPS, (pair, stats[pair])


@pytest.mark.parametrize("which", ["qat_export", "ptq_export"])
def test_cross_runtime_equivalence(which: str, request: pytest.FixtureRequest, trained) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from tinyconv.device.runners import run_tflm
    from tinyconv.export.tflite import run_litert
    from tinyconv.features import features_to_int8

    result = request.getfixturevalue(which)
    m = result.manifest
    reference = result.reference.integer
    qdq = result.reference.reference
    s_in, z_in = m["input"]["scale"], m["input"]["zero_point"]
    s_out, z_out = m["output"]["scale"], m["output"]["zero_point"]

    x_int8 = features_to_int8(trained.test_x, s_in, z_in)
    x_float = (x_int8.astype(np.float32) - z_in) * s_in
    with torch.no_grad():
        torch_q = reference(torch.from_numpy(x_float)).numpy() / s_out  # in output LSB
        qdq_q = qdq(torch.from_numpy(x_float)).numpy() / s_out
    tflite = result.files["model_int8.tflite"].read_bytes()
    tflm = run_tflm(tflite, x_int8, result.tensor_arena_bytes).astype(np.float64) - z_out
    litert = run_litert(tflite, x_int8).astype(np.float64) - z_out
    session = ort.InferenceSession(str(result.files["model_int8.onnx"]), providers=["CPUExecutionProvider"])
    onnx_q = session.run(None, {"features": x_float})[0] / s_out

    stats: dict = {}
    _check("tflm_vs_litert_ref", tflm.argmax(1), litert.argmax(1), _lsb(tflm, litert), stats)
    _check("torch_vs_tflm", torch_q.argmax(1), tflm.argmax(1), _lsb(torch_q, tflm), stats)
    _check("torch_vs_litert_ref", torch_q.argmax(1), litert.argmax(1), _lsb(torch_q, litert), stats)
    _check("torch_qdq_vs_tflm", qdq_q.argmax(1), tflm.argmax(1), _lsb(qdq_q, tflm), stats)
    _check("onnx_vs_tflite", onnx_q.argmax(1), tflm.argmax(1), _lsb(onnx_q, tflm), stats)
    print(which, stats)
    # And the model is actually good on this data (the checks above are not vacuous).
    assert float(np.mean(tflm.argmax(1) == trained.test_y)) >= 0.9


def test_float_onnx_matches_float_model(ptq_export, trained) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from tinyconv.checkpoint import model_from_checkpoint
    from tinyconv.export.source import read_checkpoint

    model = model_from_checkpoint(read_checkpoint(trained.float_path), "float")
    x = trained.test_x[:64]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(ptq_export.files["model_float.onnx"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {"features": x})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_onnx_int8_weights_and_tflite_scales(qat_export) -> None:  # type: ignore[no-untyped-def]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qat_export.files["model_int8.onnx"]))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_inputs = [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    producers = {o: n for n in model.graph.node for o in n.output}
    for name in weight_inputs:
        dq = producers[name]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
    assert not [n for n in model.graph.node if n.op_type == "Clip"]
    # The first QuantizeLinear quantizes the features exactly as the .tflite input.
    first_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    m = qat_export.manifest
    assert float(inits[first_q.input[1]]) == pytest.approx(m["input"]["scale"], rel=1e-6)
    assert int(inits[first_q.input[2]]) == m["input"]["zero_point"]
