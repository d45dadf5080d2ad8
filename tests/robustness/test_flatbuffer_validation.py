"""Structurally invalid .tflite files are rejected before any runtime sees them (firmware_sim/validate.py).

TFLite Micro runs a model whose weights lie outside the file, whose constant tensor is larger than
its buffer, whose operators are out of execution order, or whose convolution has stride 0, and
`simulate` used to report PASS. Each hostile model here is a real model (the synthetic tiny model
or a reference model) with one field changed through the flatbuffers object API, or bytes patched
at offsets found with the schema's reader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as s

from tests.helpers import reference_model
from tinyconv.cli import main
from tinyconv.device.errors import ModelError
from tinyconv.device.isolate import run_isolated
from tinyconv.device.tflite_file import load_tflite, parse_tflite
from tinyconv.firmware_sim.synthetic import build_tiny_model

TINY = build_tiny_model(seed=0)  # RESHAPE -> CONV_2D (stride 2) -> FULLY_CONNECTED


def ref_bytes(name: str) -> bytes:
    return reference_model(name).read_bytes()


def mutate(data: bytes, change: Callable[[s.ModelT], None]) -> bytes:
    model = s.ModelT.InitFromPackedBuf(data, 0)
    change(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tensor(model: s.ModelT, name: bytes, graph: int = 0) -> tuple[int, s.TensorT]:
    tensors = model.subgraphs[graph].tensors
    index = [t.name for t in tensors].index(name)
    return index, tensors[index]


def op(model: s.ModelT, code: int, graph: int = 0) -> s.OperatorT:
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return next(o for o in model.subgraphs[graph].operators if codes[o.opcodeIndex] == code)


# ---- the four the issue names, against the runtimes ------------------------------------------------

def _weights_outside_file(m: s.ModelT) -> None:
    buf = m.buffers[tensor(m, b"conv/weights")[1].buffer]
    buf.offset, buf.size, buf.data = 1_000_000, len(buf.data), None


def _weights_half_missing(m: s.ModelT) -> None:
    buf = m.buffers[tensor(m, b"conv/weights")[1].buffer]
    buf.data = buf.data[: len(buf.data) // 2]


def _ops_out_of_order(m: s.ModelT) -> None:
    ops = m.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]  # CONV_2D now reads the RESHAPE output before RESHAPE runs


def _stride_zero(m: s.ModelT) -> None:
    op(m, s.BuiltinOperator.CONV_2D).builtinOptions.strideH = 0


HOSTILE = {
    "weights_outside_file": (_weights_outside_file,
                             r"buffer 4 \(used by tensor 3 'conv/weights'\) points at bytes 1000000\.\.1000640, "
                             r"outside the file"),
    "tensor_larger_than_buffer": (_weights_half_missing,
                                  r"constant tensor 3 'conv/weights' \(shape \(8, 10, 8, 1\), int8\) needs 640 bytes "
                                  r"but its buffer 4 holds 320"),
    "operator_cycle": (_ops_out_of_order,
                       r"operator 0 \(CONV_2D\) reads tensor 2 'features_4d' before operator 1 \(RESHAPE\) writes "
                       r"it: the operators are not in execution order \(the graph has a cycle\)"),
    "zero_stride": (_stride_zero, r"operator 1 \(CONV_2D\) has stride_h 0; it must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_issue_models_are_rejected_with_the_tensor_or_op_named(case: str) -> None:
    change, message = HOSTILE[case]
    with pytest.raises(ModelError, match=message):
        parse_tflite(mutate(TINY, change), f"{case}.tflite")


def test_runtimes_disagree_on_these_models_so_the_parser_decides(tmp_path: Path) -> None:
    """LiteRT rejects the invalid buffers and the zero stride; TFLite Micro runs every one of them
    (pinned tflite-micro), and neither notices the out-of-order operators. The parser rejects all four."""
    verdicts = {}
    for case, (change, _) in HOSTILE.items():
        path = tmp_path / f"{case}.tflite"
        path.write_bytes(mutate(TINY, change))
        verdicts[case] = run_isolated({"job": "probe", "path": str(path), "runtimes": ["tflm", "litert_ref"],
                                       "num_inputs": 1, "arena_size": 65536})
    assert all(v["tflm"]["ok"] for v in verdicts.values()), verdicts
    for case in ("weights_outside_file", "tensor_larger_than_buffer", "zero_stride"):
        assert not verdicts[case]["litert_ref"]["ok"], case
    assert verdicts["operator_cycle"]["litert_ref"]["ok"]


def test_simulate_refuses_an_invalid_model_instead_of_passing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(mutate(TINY, _stride_zero))
    out = tmp_path / "sim"
    assert main(["simulate", str(path), "--budget", "esp32s3", "--repeats", "2", "--out", str(out)]) == 2
    assert "has stride_h 0; it must be >= 1" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a rejected model


# ---- every other structural rule --------------------------------------------------------------------

def _size_without_offset(m: s.ModelT) -> None:
    m.buffers[tensor(m, b"conv/bias")[1].buffer].size = 32


def _self_loop(m: s.ModelT) -> None:
    conv = op(m, s.BuiltinOperator.CONV_2D)
    conv.inputs = [conv.outputs[0], *list(conv.inputs)[1:]]


def _reads_unwritten(m: s.ModelT) -> None:
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = b"ghost", [1, 98, 40, 1], s.TensorType.INT8, 0
    m.subgraphs[0].tensors.append(t)
    conv = op(m, s.BuiltinOperator.CONV_2D)
    conv.inputs = [len(m.subgraphs[0].tensors) - 1, *list(conv.inputs)[1:]]


def _double_write(m: s.ModelT) -> None:
    fc = op(m, s.BuiltinOperator.FULLY_CONNECTED)
    fc.outputs = [tensor(m, b"conv/relu")[0]]


def _writes_constant(m: s.ModelT) -> None:
    op(m, s.BuiltinOperator.RESHAPE).outputs = [tensor(m, b"shape")[0]]


def _output_never_written(m: s.ModelT) -> None:
    t = s.TensorT()
    t.name, t.shape, t.type, t.buffer = b"orphan", [1, 2], s.TensorType.INT8, 0
    m.subgraphs[0].tensors.append(t)
    m.subgraphs[0].outputs = [len(m.subgraphs[0].tensors) - 1]


def _dilation_zero(m: s.ModelT) -> None:
    op(m, s.BuiltinOperator.CONV_2D).builtinOptions.dilationWFactor = 0


def _negative_stride(m: s.ModelT) -> None:
    op(m, s.BuiltinOperator.CONV_2D).builtinOptions.strideW = -2


def _conv_without_options(m: s.ModelT) -> None:
    conv = op(m, s.BuiltinOperator.CONV_2D)
    conv.builtinOptionsType, conv.builtinOptions = 0, None


def _negative_dimension(m: s.ModelT) -> None:
    tensor(m, b"conv/relu")[1].shape = [1, -45, 17, 8]


def _huge_activation(m: s.ModelT) -> None:
    tensor(m, b"conv/relu")[1].shape = [1, 1 << 20, 1 << 20, 8]


def _huge_input(m: s.ModelT) -> None:
    tensor(m, b"features")[1].shape = [1, 98, 400_000]


RULES = {
    "size_without_offset": (_size_without_offset, r"buffer 5 \(used by tensor 4 'conv/bias'\) declares size 32 "
                                                  r"without an offset"),
    "op_reads_its_own_output": (_self_loop, r"operator 1 \(CONV_2D\) reads tensor 5 'conv/relu' before operator 1 "
                                            r"\(CONV_2D\) writes it"),
    "reads_unwritten_tensor": (_reads_unwritten, r"operator 1 \(CONV_2D\) reads tensor 9 'ghost', which no operator "
                                                 r"writes and which is not a constant, a variable or a subgraph input"),
    "tensor_written_twice": (_double_write, r"tensor 5 'conv/relu' is written by operator 1 \(CONV_2D\) and again "
                                            r"by operator 2 \(FULLY_CONNECTED\)"),
    "writes_a_constant": (_writes_constant, r"operator 0 \(RESHAPE\) writes tensor 1 'shape', which is a constant"),
    "output_never_written": (_output_never_written, r"subgraph 0 output tensor 9 'orphan' is never written"),
    "zero_dilation": (_dilation_zero, r"operator 1 \(CONV_2D\) has dilation_w_factor 0; it must be >= 1"),
    "negative_stride": (_negative_stride, r"operator 1 \(CONV_2D\) has stride_w -2; it must be >= 1"),
    "conv_without_options": (_conv_without_options, r"operator 1 \(CONV_2D\) has no Conv2DOptions"),
    "negative_dimension": (_negative_dimension, r"tensor 5 'conv/relu' has a negative dimension \(1, -45, 17, 8\)"),
    "activation_over_2_gib": (_huge_activation, r"tensor 5 'conv/relu' declares shape \(1, 1048576, 1048576, 8\) "
                                                r"\(8,796,093,022,208 bytes\), more than the 2 GiB"),
    "input_over_16m_elements": (_huge_input, r"input tensor 0 'features' has shape \(1, 98, 400000\) "
                                             r"\(39,200,000 elements\), more than the 16,777,216"),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_structural_rules(case: str) -> None:
    change, message = RULES[case]
    with pytest.raises(ModelError, match=message):
        parse_tflite(mutate(TINY, change), "bad.tflite")


def test_pool_with_zero_filter_in_the_mlperf_dscnn() -> None:
    def zero_filter(m: s.ModelT) -> None:
        op(m, s.BuiltinOperator.AVERAGE_POOL_2D).builtinOptions.filterWidth = 0

    with pytest.raises(ModelError, match=r"operator \d+ \(AVERAGE_POOL_2D\) has filter_width 0; it must be >= 1"):
        parse_tflite(mutate(ref_bytes("mlperf_tiny_kws_dscnn_int8.tflite"), zero_filter), "dscnn.tflite")


def test_call_once_to_a_missing_subgraph_in_a_streaming_model() -> None:
    def far_call(m: s.ModelT) -> None:
        op(m, s.BuiltinOperator.CALL_ONCE).builtinOptions.initSubgraphIndex = 7

    with pytest.raises(ModelError, match=r"\(CALL_ONCE\) calls subgraph 7; the model has 2"):
        parse_tflite(mutate(ref_bytes("mww_v2_okay_nabu.tflite"), far_call), "nabu.tflite")


# ---- bytes patched at offsets the schema reader finds ----------------------------------------------

def _weights_vector(data: bytes) -> tuple[int, int]:
    """(file offset of the conv weights' length prefix, its length) via the flatbuffer reader."""
    root = s.Model.GetRootAs(data, 0)
    g = root.Subgraphs(0)
    index = next(i for i in range(g.TensorsLength()) if g.Tensors(i).Name() == b"conv/weights")
    buf = root.Buffers(g.Tensors(index).Buffer())
    start = buf._tab.Vector(buf._tab.Offset(4))
    return start - 4, buf.DataLength()


def test_weights_vector_length_patched_past_the_end_of_the_file() -> None:
    data = bytearray(TINY)
    at, length = _weights_vector(TINY)
    assert length == 640 and struct.unpack_from("<I", data, at)[0] == 640
    struct.pack_into("<I", data, at, 1 << 30)
    with pytest.raises(ModelError, match=r"buffer 4 \(used by tensor 3 'conv/weights'\) declares 1073741824 bytes "
                                         r"at offset \d+, past the end of the file \(\d+ bytes\)"):
        parse_tflite(bytes(data), "patched.tflite")


def test_conv_stride_patched_to_zero_in_the_file() -> None:
    root = s.Model.GetRootAs(TINY, 0)
    conv = root.Subgraphs(0).Operators(1)
    opts = conv.BuiltinOptions()
    field = s.Conv2DOptions()
    field.Init(opts.Bytes, opts.Pos)
    at = field._tab.Pos + field._tab.Offset(8)  # stride_h (field 2)
    assert struct.unpack_from("<i", TINY, at)[0] == 2
    data = bytearray(TINY)
    struct.pack_into("<i", data, at, 0)
    with pytest.raises(ModelError, match=r"operator 1 \(CONV_2D\) has stride_h 0"):
        parse_tflite(bytes(data), "patched.tflite")


# ---- valid models still pass -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tflm_micro_speech_int8.tflite", "mlperf_tiny_kws_dscnn_int8.tflite",
                                  "mww_v2_okay_nabu.tflite", "mww_v2_alexa.tflite", "mww_v2_hey_jarvis.tflite",
                                  "mww_v2_vad.tflite"])
def test_reference_models_pass_validation(name: str) -> None:
    model = load_tflite(reference_model(name))
    assert model.ops and model.inputs


def test_a_buffer_larger_than_its_tensor_is_accepted() -> None:
    """LiteRT requires buffer >= tensor bytes (not equality); so does the validator."""
    def pad(m: s.ModelT) -> None:
        buf = m.buffers[tensor(m, b"conv/bias")[1].buffer]
        buf.data = np.concatenate([buf.data, np.zeros(16, dtype=np.uint8)])

    assert parse_tflite(mutate(TINY, pad), "padded.tflite").macs == parse_tflite(TINY).macs


# ---- structured fuzz: random semantic mutations of real models are always rejected ------------------

def _random_semantic_mutation(m: s.ModelT, rng: np.random.Generator) -> None:
    g = m.subgraphs[0]
    kind = int(rng.integers(4))
    if kind == 0:  # truncate one constant buffer
        consts = [t for t in g.tensors if m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data)]
        buf = m.buffers[consts[int(rng.integers(len(consts)))].buffer]
        buf.data = buf.data[: int(rng.integers(0, len(buf.data)))]
    elif kind == 1:  # move an operator that consumes an activation before its producer
        k = int(rng.integers(1, len(g.operators)))
        g.operators.insert(0, g.operators.pop(k))
    elif kind == 2:  # break one geometry field of a conv/pool
        geo = [o for o in g.operators if o.builtinOptions is not None
               and any(hasattr(o.builtinOptions, f) for f in ("strideH", "filterWidth"))]
        opts = geo[int(rng.integers(len(geo)))].builtinOptions
        fields = [f for f in ("strideH", "strideW", "dilationHFactor", "dilationWFactor", "filterHeight",
                              "filterWidth") if hasattr(opts, f)]
        setattr(opts, fields[int(rng.integers(len(fields)))], int(rng.integers(-3, 1)))
    else:  # point one constant buffer past the end of the file
        consts = [t for t in g.tensors if m.buffers[t.buffer].data is not None and len(m.buffers[t.buffer].data)]
        buf = m.buffers[consts[int(rng.integers(len(consts)))].buffer]
        buf.offset, buf.size, buf.data = int(rng.integers(1 << 20, 1 << 40)), len(buf.data), None


@pytest.mark.parametrize("seed_model", ["tiny", "tflm_micro_speech_int8.tflite", "mlperf_tiny_kws_dscnn_int8.tflite"])
def test_random_semantic_mutations_are_rejected(seed_model: str) -> None:
    data = TINY if seed_model == "tiny" else ref_bytes(seed_model)
    rng = np.random.default_rng(7)
    for i in range(40):
        bad = mutate(data, lambda m: _random_semantic_mutation(m, rng))
        with pytest.raises(ModelError):
            parse_tflite(bad, f"{seed_model}#{i}")
