"""A QAT checkpoint's ESPHome export keeps its learned quantization (no silent re-calibration).

Tolerances (stated once): every conv's exported weight scales and output scale equal the QAT
ones within float32 rounding (rtol 1e-6; measured 0), zero points and int8 weights equal exactly.
TFLM vs the integer reference: 0 uint8 steps. TFLM vs the QAT model (fake quantization, window
form, steps with a full window): max |dp| <= esphome.SELF_CHECK_MAX_PROB_DIFF (measured 0.04).
Not carried, by ESPHome's design: the input (26/255, -128) and the head's logit difference.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from tinyconv.export.esphome import (
    INPUT_SCALE,
    SELF_CHECK_MAX_PROB_DIFF,
    EsphomeExportError,
    check_conversion,
    convert_streaming,
    qat_stream_spec,
)
from tinyconv.export.int8_reference import TfliteIntegerReference

# The QAT streaming fixture trains, converts with PT2E and then with TensorFlow (~80-110 s on 2 busy
# cores): CI runs these in its -m slow step.
pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=2)  # the session's QAT checkpoint: converted once, read only
def _learned(qat_path) -> list[dict]:  # type: ignore[no-untyped-def]
    """Each conv of the QAT model's converted graph: int8 weights, weight scales, output scale/zp."""
    from tinyconv.checkpoint import model_from_checkpoint
    from tinyconv.export.source import read_checkpoint

    ref = model_from_checkpoint(read_checkpoint(qat_path), "qat").to_reference()
    out = []
    for node in ref.graph.nodes:
        if node.target != torch.ops.aten.conv2d.default:
            continue
        q = next(iter(next(iter(node.users)).users))  # conv -> relu -> quantize_per_tensor
        w_q = node.args[1].args[0]  # dequantize_per_channel(quantize_per_channel(w, scale, zp, ...))
        def attr(a):  # type: ignore[no-untyped-def]
            is_attr = isinstance(a, torch.fx.Node) and a.op == "get_attr"
            return functools.reduce(getattr, a.target.split("."), ref) if is_attr else a

        weight = torch.ops.quantized_decomposed.quantize_per_channel.default(*[attr(a) for a in w_q.args])
        out.append({"weight": weight.numpy(), "weight_scale": attr(w_q.args[1]).numpy(),
                    "scale": float(q.args[1]), "zero_point": int(q.args[2])})
    return out


def test_exported_scales_are_the_qat_scales(stream_qat_export) -> None:  # type: ignore[no-untyped-def]
    qat_path, result = stream_qat_export
    assert result.quantization == "qat" and result.manifest["quantization"] == "qat"
    data = (result.out_dir / "hey_tiny.tflite").read_bytes()
    layers = TfliteIntegerReference(data).quantized_layers()
    learned = _learned(qat_path)
    assert len(learned) == len(layers) - 1 == 5  # 5 convs + the head
    for q, want in zip(layers[:-1], learned, strict=True):
        assert q.output.zero_point.tolist() == [want["zero_point"]]
        np.testing.assert_allclose(q.output.scale, [want["scale"]], rtol=1e-6)
        np.testing.assert_allclose(q.weight.scale, want["weight_scale"], rtol=1e-6)
        w = q.weight.const  # TFLite OHWI / [1, k, 1, C] -> PyTorch [Cout, Cin/g, k, 1]
        torch_layout = w.transpose(0, 3, 1, 2) if q.op == "CONV_2D" else w.transpose(3, 0, 1, 2)
        np.testing.assert_array_equal(torch_layout, want["weight"])
    # The next layer's input (concat of its state and the new step) has the learned scale too.
    for q, want in zip(layers[1:], learned, strict=True):
        np.testing.assert_allclose(q.input.scale, [want["scale"]], rtol=1e-6)
    # Not carried: the input is ESPHome's, whatever QAT learned (recorded in the manifest).
    assert layers[0].input.qparams == (pytest.approx(INPUT_SCALE, rel=1e-6), -128)
    ours = json.loads((result.out_dir / "manifest.json").read_text())
    assert ours["esphome"]["qat_ranges"]["input"]["qat_scale"] != pytest.approx(INPUT_SCALE)
    assert ours["esphome"]["conversion_check"]["qat_scale_rel"] <= 1e-6


def test_qat_export_self_checks(stream_qat_export) -> None:  # type: ignore[no-untyped-def]
    _, result = stream_qat_export
    check = result.self_check
    assert check["reference"].startswith("pytorch qat")
    assert check["tflm_vs_integer_max_u8_diff"] == 0
    assert check["max_abs_prob_diff"] <= SELF_CHECK_MAX_PROB_DIFF


@functools.lru_cache(maxsize=2)  # frozen dataclasses: the tests replace, never mutate
def _widened_spec(qat_path):  # type: ignore[no-untyped-def]
    """The QAT spec with the last conv's learned range 1.5x wider than any data reaches."""
    import dataclasses

    from tinyconv.checkpoint import model_from_checkpoint
    from tinyconv.export.esphome import load_streaming_model
    from tinyconv.export.source import read_checkpoint

    src = read_checkpoint(qat_path)
    spec, _ = qat_stream_spec(model_from_checkpoint(src, "qat"), load_streaming_model(src), 1)
    last = spec.layers[-1]
    wide = dataclasses.replace(last, out_range=(0.0, 1.5 * last.out_range[1]))
    return dataclasses.replace(spec, layers=spec.layers[:-1] + (wide,))


def test_pinned_ranges_survive_where_calibration_would_break_the_bias(stream_qat_export, stream_trained) -> None:  # type: ignore[no-untyped-def]
    """The TF 2.21 quirk, kept as a regression test: pinned ranges mixed with calibration put the
    head's bias on the calibrated input scale; converted without calibration (what the export
    does for QAT) every bias is on input_scale x weight_scale."""
    import dataclasses

    qat_path, _ = stream_qat_export
    spec = _widened_spec(qat_path)
    stream = np.concatenate(list(stream_trained.train_x[:16]), 0)
    check = check_conversion(convert_streaming(spec, stream), spec)
    assert check["qat_scale_rel"] <= 1e-6 and check["bias_scale_rel"] <= 1e-5

    # Only the logit difference left to calibration: the converter then calibrates the graph and
    # quantizes the head's bias with the calibrated range of its input (the data never reaches
    # the pinned maximum), not the pinned one the kernel uses.
    mixed = dataclasses.replace(spec, logit_range=None)
    assert mixed.pinned and not mixed.fully_pinned
    data = convert_streaming(mixed, stream)
    with pytest.raises(EsphomeExportError, match=r"FULLY_CONNECTED\): the int32 bias is not on input_scale x "
                                                 r"weight_scale"):
        check_conversion(data, mixed)


def test_ranges_that_did_not_carry_are_named(stream_qat_export) -> None:  # type: ignore[no-untyped-def]
    qat_path, result = stream_qat_export
    spec = _widened_spec(qat_path)  # claims a range the exported file does not hold
    data = (result.out_dir / "hey_tiny.tflite").read_bytes()
    with pytest.raises(EsphomeExportError, match=r"layer 4 \(CONV_2D\): the QAT ranges did not carry through"):
        check_conversion(data, spec)
