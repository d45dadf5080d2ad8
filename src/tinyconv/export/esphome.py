"""ESPHome `micro_wake_word` export: a stateful INT8 streaming .tflite and its manifest v2 .json.

What ESPHome loads (DESIGN.md section 6, measured on its source and on microWakeWord v2 files):
input 0 int8 [1, 3, 40] (it quantizes the frontend's uint16 value itself as
(v * 256 + 333) // 666 - 128, i.e. scale 26/255, zero point -128), output 0 uint8 [1, 1] (the
probability), state in at most 20 int8 resource variables (VAR_HANDLE / READ_VARIABLE /
ASSIGN_VARIABLE, initialized by a CALL_ONCE subgraph), and only the 20 ops of its resolver.

Why TensorFlow: litert-torch turns in-place buffer updates into extra model inputs/outputs
(its KV-cache scheme), which ESPHome cannot feed. A TensorFlow graph whose ring buffers are
`tf.Variable`s converts to exactly the op pattern microWakeWord's files use: per layer
READ_VARIABLE -> CONCATENATION(state, new) -> STRIDED_SLICE -> ASSIGN_VARIABLE, then the conv on
the concatenated window. The graph is built from the PyTorch weights (BN folded into each conv)
of `StreamingTinyConv`, the streaming form of `stream_tinyconv`; tensorflow is imported only
here, lazily (`pip install tensorflow-cpu==2.21.0`, pinned in pyproject.toml).

The converter calibrates every activation and state range on a representative feature stream
(consecutive 3-frame blocks, so the state variables hold what they hold at run time) and
`_experimental_variable_quantization` keeps the state int8: without it the variables stay float
and QUANTIZE/DEQUANTIZE pairs appear (DEQUANTIZE is not in ESPHome's resolver).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tinyconv._quiet import native_stderr_captured
from tinyconv.device.esphome_detector import (
    CUTOFF_GRID,
    DEFAULT_PROBABILITY_CUTOFF,
    DEFAULT_SLIDING_WINDOW,
    count_detections,
)
from tinyconv.device.esphome_features import (
    ESPHOME_FEATURE_MAX,
    ESPHOME_INPUT_SCALE,
    ESPHOME_INPUT_ZERO_POINT,
    esphome_features_int8,
)
from tinyconv.export.errors import ExportError

if TYPE_CHECKING:
    from tinyconv.data.dataset import FeatureSet

# ESPHome micro_wake_word's op resolver (esphome/components/micro_wake_word/streaming_model.cpp):
# exactly these 20 ops; a model with any other op fails to load on the device.
ESPHOME_OPS = frozenset({
    "CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "RESHAPE", "STRIDED_SLICE",
    "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "ADD", "MEAN",
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "PACK", "SPLIT_V", "LOGISTIC", "QUANTIZE",
})
# ESPHome allocates at most 20 resource variables per model (its MicroResourceVariables).
MAX_STATE_VARIABLES = 20
FRAMES_PER_INVOKE = 3  # ESPHome feeds [1, stride, 40]; stride 3 = one invoke per 30 ms
# Every released microWakeWord model declares this input quantization, and ESPHome's integer
# formula (v * 256 + 333) // 666 - 128 implements it (v / 25.6 features, 26 = the top of the range).
INPUT_SCALE = ESPHOME_INPUT_SCALE  # tinyconv.device.esphome_features holds the formula
INPUT_ZERO_POINT = ESPHOME_INPUT_ZERO_POINT
FEATURE_MAX = ESPHOME_FEATURE_MAX
MANIFEST_VERSION = 2
MINIMUM_ESPHOME_VERSION = "2024.7.0"
FEATURE_STEP_MS = 10
# tensor_arena_size = TFLM arena measured on the host for this file x this factor, rounded up to
# 16 bytes. ESP-NN >= 1.2 (ESPHome 2026) needs more than the host reference kernels: okay_nabu
# runs with 33,488 B on the device, its host TFLM arena is 24,512 B (measured with
# tinyconv.device.arena.measure_host_arena): x1.366. 1.4 leaves a little headroom over that.
ESP_NN_ARENA_FACTOR = 1.4
# Self-check 1 (exact): TFLite Micro vs the integer reference of the same .tflite
# (`export/int8_reference.py`: the file's int8 weights, int32 biases, scales and zero points with
# TFLM's kernel arithmetic, resource variables kept), step by step over a feature stream of
# held-out clips. Allowed difference of the uint8 output: 0 steps (measured 0 on every model
# and stream so far, random int8 streams included). This checks that the device computes the
# graph in the file: state read before it is overwritten, CALL_ONCE init, slices, requantization.
SELF_CHECK_MAX_U8_DIFF = 0
# Self-check 2 (quality): the same stream against the PyTorch float streaming form, which checks
# the conversion itself (weights, BN folding, layouts; the integer reference reproduces whatever
# the file holds). Per-tensor int8 activations of ~6 layers and the uint8 output (1/256 steps)
# measured max 0.074 / mean 0.012 on an 8-channel test model (largest where sigmoid is steepest,
# p ~ 0.4); a broken conversion (a bias on the wrong scale, wrong layout, stale state) misses by
# 0.3-0.7.
SELF_CHECK_MAX_PROB_DIFF = 0.12
SELF_CHECK_MEAN_PROB_DIFF = 0.03


class EsphomeExportError(ExportError):
    """The checkpoint or the converted model cannot be exported for ESPHome."""


@dataclass(frozen=True)
class StreamLayer:
    """One conv of the streaming graph, TF layout, BN folded: weight [k, 1, Cin, Cout] (conv) or
    [k, 1, C, 1] (depthwise); `buffer` = steps of its input kept in a ring buffer (0: none)."""

    kind: str  # "conv" or "depthwise"
    weight: np.ndarray
    bias: np.ndarray
    buffer: int
    # QAT checkpoints only (`qat_stream_spec`): the learned per-output-channel weight scales and
    # the learned (min, max) of the output after ReLU, pinned in the TF graph with fake-quant
    # ops so that the converter keeps them instead of calibrating.
    weight_scale: np.ndarray | None = None
    out_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class StreamSpec:
    """Everything the TF graph needs: the layers, the head (logit difference) and the shapes."""

    num_channels: int
    layers: tuple[StreamLayer, ...]
    head_steps: int
    head_channels: int
    head_weight: np.ndarray  # [head_steps * C, 1]: w_pos - w_neg in TF flatten order (step, channel)
    head_bias: np.ndarray  # [1]
    # QAT only: the (min, max) pinned on the logit difference (from the learned logit range).
    logit_range: tuple[float, float] | None = None

    @property
    def pinned(self) -> bool:
        """Whether the conv ranges are pinned (a QAT checkpoint) rather than calibrated."""
        return all(layer.out_range is not None for layer in self.layers)

    @property
    def fully_pinned(self) -> bool:
        """Every range pinned, the logit difference included: converted with no calibration."""
        return self.pinned and self.logit_range is not None

    @property
    def state_shapes(self) -> list[tuple[int, int, int, int]]:
        shapes = []
        for i, layer in enumerate(self.layers):
            if layer.buffer > 0:
                cin = self.num_channels if i == 0 else int(layer.weight.shape[2])
                shapes.append((1, layer.buffer, 1, cin))
        if self.head_steps > 1:
            shapes.append((1, self.head_steps - 1, 1, self.head_channels))
        return shapes


def _folded(unit: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, torch.nn.Conv2d]:
    """(weight [Cout, Cin/g, k, 1], bias [Cout]) of a Conv+BN(+ReLU) unit with BN folded in."""
    from tinyconv.models.fusion import FusedConvBNReLU2d

    if isinstance(unit, FusedConvBNReLU2d):
        fused = unit
    else:
        conv, bn = unit[0], unit[1]  # type: ignore[index]
        if not isinstance(bn, torch.nn.BatchNorm2d):  # already folded: Conv2d(bias) + ReLU
            return conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy(), conv
        fused = FusedConvBNReLU2d(conv, bn)
    with torch.no_grad():
        w, b = fused.folded_weight_bias()
    return w.detach().double().numpy(), b.detach().double().numpy(), fused.conv


def stream_spec(model: torch.nn.Module, positive_index: int = 1) -> StreamSpec:
    """The TF streaming graph's weights from a float `StreamTinyConv` (or its fused copy)."""
    from tinyconv.models.streaming import TIME_STRIDE, StreamTinyConv

    if not isinstance(model, StreamTinyConv):
        raise EsphomeExportError(
            f"model {type(model).__name__} is not streamable; ESPHome export needs a stream_tinyconv checkpoint"
        )
    if model.num_classes != 2:
        raise EsphomeExportError(
            f"ESPHome export needs a 2-class model (wake word vs rest: its output is one probability, and "
            f"SOFTMAX is not in ESPHome's op set); this one has {model.num_classes} classes"
        )
    layers = []
    for i, unit in enumerate(model.conv_units()):
        w, b, conv = _folded(unit)
        k = int(conv.kernel_size[0])
        if conv.groups == 1:
            weight = w.transpose(2, 3, 1, 0)  # [Cout, Cin, k, 1] -> [k, 1, Cin, Cout]
            kind = "conv"
        elif conv.groups == conv.in_channels == conv.out_channels:
            weight = w.transpose(2, 3, 0, 1)  # [C, 1, k, 1] -> [k, 1, C, 1]
            kind = "depthwise"
        else:
            raise EsphomeExportError(f"conv unit {i} has groups={conv.groups}: only standard or depthwise convs export")
        buffer = (k - TIME_STRIDE) if i == 0 else (k - 1)
        layers.append(StreamLayer(kind, weight.astype(np.float32), b.astype(np.float32), buffer))
    lin = model.classifier
    h, c = model.head_steps, model.width
    w = lin.weight.detach().double().numpy().reshape(2, c, h)  # PyTorch flatten order: (channel, step)
    diff = (w[positive_index] - w[1 - positive_index]).T.reshape(h * c, 1)  # TF order: (step, channel)
    bias = lin.bias.detach().double().numpy()
    return StreamSpec(
        num_channels=int(model.input_shape[1]),
        layers=tuple(layers),
        head_steps=h,
        head_channels=c,
        head_weight=diff.astype(np.float32),
        head_bias=np.array([bias[positive_index] - bias[1 - positive_index]], dtype=np.float32),
    )


def qat_stream_spec(qat_model: Any, float_model: torch.nn.Module,
                    positive_index: int = 1) -> tuple[StreamSpec, dict[str, Any]]:
    """The streaming graph of a QAT checkpoint with its learned quantization, and what was carried.

    From the QAT model's converted graph (BN folded, scales frozen): every conv's int8 weights
    and per-channel scales, its int32-grid bias and the learned range of its output, which the
    TF graph pins with fake-quant ops (`build_tf_module`), so the .tflite holds the QAT scales
    and no re-calibration happens. Not carried, because ESPHome's model has no such tensor or
    fixes it: the input (ESPHome feeds scale 26/255, zero point -128 whatever QAT learned; the
    first conv's bias is re-gridded on it) and the head (QAT learned two logits; the model
    outputs sigmoid(l_pos - l_neg): the difference is pinned at [lo - hi, hi - lo] of the
    learned logit range, the probability is uint8 with TFLite's fixed 1/256).
    """
    from tinyconv.export.int8_kernels import graph_constant

    ref = qat_model.to_reference()
    aten = torch.ops.aten
    found: list[dict[str, Any]] = []
    for node in ref.graph.nodes:
        if node.op != "call_function" or node.target not in (aten.conv2d.default, aten.linear.default):
            continue
        dq_in, dq_w = node.args[0], node.args[1]
        out = next(iter(node.users))
        if out.target == aten.relu.default:
            out = next(iter(out.users))
        if "quantize_per_tensor" not in str(out.target) or "dequantize" not in str(dq_w.target):
            raise EsphomeExportError(f"QAT graph: {node.name} is not an int8 layer with a quantized output")
        found.append({
            "kind": "linear" if node.target == aten.linear.default else "conv",
            "input": (float(dq_in.args[1]), int(dq_in.args[2])),
            "weight_int8": graph_constant(ref, dq_w.args[0]).to(torch.float64).numpy(),
            "weight_scale": graph_constant(ref, dq_w.args[1]).to(torch.float64).numpy().reshape(-1),
            "bias": graph_constant(ref, node.args[2]).to(torch.float64).numpy(),
            "output": (float(out.args[1]), int(out.args[2])),
        })
    base = stream_spec(float_model, positive_index)  # structure, shapes and checks of the float path
    convs, heads = found[:-1], found[-1:]
    if len(convs) != len(base.layers) or not heads or heads[0]["kind"] != "linear":
        raise EsphomeExportError(f"QAT graph has {len(convs)} convs and {len(heads)} linear layers; the streaming "
                                 f"model has {len(base.layers)} convs and one linear head")
    layers = []
    for layer, q in zip(base.layers, convs, strict=True):
        w = q["weight_int8"] * q["weight_scale"].reshape(-1, 1, 1, 1)  # [Cout, Cin/g, k, 1], on the QAT grid
        weight = w.transpose(2, 3, 1, 0) if layer.kind == "conv" else w.transpose(2, 3, 0, 1)
        if weight.shape != layer.weight.shape:
            raise EsphomeExportError(f"QAT conv weight {list(weight.shape)} does not match the model's "
                                     f"{list(layer.weight.shape)}")
        scale, zp = q["output"]
        layers.append(StreamLayer(layer.kind, weight.astype(np.float32), q["bias"].astype(np.float32), layer.buffer,
                                  weight_scale=q["weight_scale"].astype(np.float32),
                                  out_range=((-128 - zp) * scale, (127 - zp) * scale)))
    head = heads[0]
    h, c = base.head_steps, base.head_channels
    w = (head["weight_int8"] * head["weight_scale"].reshape(-1, 1)).reshape(2, c, h)
    diff = (w[positive_index] - w[1 - positive_index]).T.reshape(h * c, 1)
    bias = head["bias"]
    # The logit difference of two logits learned in [lo, hi] lies in [lo - hi, hi - lo].
    s_logit, zp_logit = head["output"]
    span = 255 * s_logit
    spec = StreamSpec(num_channels=base.num_channels, layers=tuple(layers), head_steps=h, head_channels=c,
                      head_weight=diff.astype(np.float32),
                      head_bias=np.array([bias[positive_index] - bias[1 - positive_index]], np.float32),
                      logit_range=(-span, span))
    carried = {
        "layers": [{"kind": layer.kind, "weight_scales": q["weight_scale"].tolist(), "output_scale": q["output"][0],
                    "output_zero_point": q["output"][1]} for layer, q in zip(layers, convs, strict=True)],
        "input": {"qat_scale": convs[0]["input"][0], "qat_zero_point": convs[0]["input"][1],
                  "device_scale": INPUT_SCALE, "device_zero_point": INPUT_ZERO_POINT},
        "logit_difference_range": [-span, span],
        "not_carried": "input (ESPHome fixes 26/255, -128); head: the logit difference is pinned at +-255 x the "
                       "learned logit scale, the probability is uint8 1/256",
    }
    return spec, carried


# ---- TensorFlow graph and conversion --------------------------------------------------------


def _import_tf() -> Any:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise EsphomeExportError(
            "ESPHome export needs TensorFlow to build the stateful graph: pip install tensorflow-cpu==2.21.0 "
            f"(or scripts/setup.sh) ({exc})"
        ) from exc
    return tf


def build_tf_module(spec: StreamSpec) -> Any:
    """A tf.Module whose `__call__([1, 3, F] float features)` -> [1, 1] probability, state in tf.Variables."""
    tf = _import_tf()

    class StreamingGraph(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(name="tinyconv_stream")
            # Zero-initialized ring buffers: the converter emits their initial values into the
            # CALL_ONCE subgraph, so the device starts from the state the PyTorch form starts from.
            self.states = [
                tf.Variable(tf.zeros(shape, tf.float32), trainable=False, name=f"state_{i}")
                for i, shape in enumerate(spec.state_shapes)
            ]

        @tf.function(input_signature=[tf.TensorSpec([1, FRAMES_PER_INVOKE, spec.num_channels], tf.float32,
                                                    name="features")])
        def __call__(self, x: Any) -> Any:
            # No fake-quant op pins the input range here: the TF 2.21 converter then quantizes the
            # first conv's int32 bias with the *calibrated* input scale while the kernel uses
            # the pinned one (measured: the stem off by up to 0.6 before ReLU). The calibration
            # stream instead starts with a block spanning exactly [0, 26] (`_range_block`).
            #
            # A QAT checkpoint (`spec.pinned`) pins every int8 tensor instead: the input at
            # [0, 26], each conv's weights at the learned per-channel scales and its output at
            # the learned range, each state read at the range of the tensor it is concatenated
            # with (TFLM's int8 CONCATENATION cannot rescale), and the logit difference. It is
            # then converted as a QAT graph, with no calibration at all (`convert_streaming`):
            # mixing pinned ranges with calibration is what the quirk above comes from.
            pinned = spec.pinned
            h = tf.reshape(_fake_quant(tf, x, (0.0, FEATURE_MAX)) if pinned else x,
                           [1, FRAMES_PER_INVOKE, 1, spec.num_channels])
            states = iter(self.states)

            def push(new: Any, keep: int, value_range: tuple[float, float] | None) -> Any:
                if keep == 0:
                    return new
                var = next(states)
                old = var.read_value()
                window = tf.concat([_fake_quant(tf, old, value_range) if pinned else old, new], axis=1)
                var.assign(window[:, -keep:])
                return window

            value_range: tuple[float, float] | None = (0.0, FEATURE_MAX)
            for layer in spec.layers:
                h = push(h, layer.buffer, value_range)
                weight = tf.constant(layer.weight)
                if layer.weight_scale is not None:
                    weight = _fake_quant_weight(tf, weight, layer.weight_scale, depthwise=layer.kind != "conv")
                if layer.kind == "conv":
                    h = tf.nn.conv2d(h, weight, strides=1, padding="VALID")
                else:
                    h = tf.nn.depthwise_conv2d(h, weight, strides=[1, 1, 1, 1], padding="VALID")
                h = tf.nn.relu(tf.nn.bias_add(h, tf.constant(layer.bias)))
                value_range = layer.out_range
                if pinned:
                    h = _fake_quant(tf, h, value_range)
            h = push(h, spec.head_steps - 1, value_range)
            flat = tf.reshape(h, [1, spec.head_steps * spec.head_channels])
            logit = tf.matmul(flat, tf.constant(spec.head_weight)) + tf.constant(spec.head_bias)
            if spec.logit_range is not None:
                logit = _fake_quant(tf, logit, spec.logit_range)
            # sigmoid(l_pos - l_neg) = softmax(l)[pos] for two classes; LOGISTIC is in the op set.
            return tf.sigmoid(logit)

    return StreamingGraph()


def _fake_quant(tf: Any, x: Any, value_range: tuple[float, float] | None) -> Any:
    """Pin a tensor's int8 range: the converter takes it from this op instead of calibrating."""
    assert value_range is not None  # every range is set when the spec is pinned
    return tf.quantization.fake_quant_with_min_max_vars(x, value_range[0], value_range[1], num_bits=8)


def _fake_quant_weight(tf: Any, weight: Any, scale: np.ndarray, *, depthwise: bool) -> Any:
    """Pin per-output-channel symmetric int8 weight scales ([-127, 127] x scale, narrow range).

    The op quantizes along the last axis: a conv kernel [k, 1, Cin, Cout] has its output
    channels there, a depthwise kernel [k, 1, C, 1] has them on axis 2, so it is reshaped around
    the op (the converter folds the reshapes into the int8 constant).
    """
    bound = (127.0 * np.asarray(scale, np.float64)).astype(np.float32)
    if not depthwise:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(weight, -bound, bound, num_bits=8,
                                                                        narrow_range=True)
    k, _, c, _ = weight.shape
    flat = tf.reshape(weight, [k, 1, 1, c])
    flat = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -bound, bound, num_bits=8, narrow_range=True)
    return tf.reshape(flat, [k, 1, c, 1])


def convert_streaming(spec: StreamSpec, stream: np.ndarray) -> bytes:
    """INT8 .tflite (int8 input, uint8 output, int8 state) calibrated on a [T, F] feature stream."""
    tf = _import_tf()
    blocks = _blocks(stream, spec.num_channels)
    module = build_tf_module(spec)
    with tempfile.TemporaryDirectory(prefix="tinyconv-esphome-") as tmp:
        # From a SavedModel: the converter's resource-variable support (CALL_ONCE init subgraph)
        # works on saved models; microWakeWord converts the same way.
        tf.saved_model.save(module, tmp, signatures=module.__call__.get_concrete_function())
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = {tf.lite.Optimize.DEFAULT}
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.uint8
        converter._experimental_variable_quantization = True  # int8 state (see module docstring)
        if spec.fully_pinned:
            # QAT graph: every range comes from a fake-quant op. No representative dataset: the
            # TF 2.21 converter quantizes a layer's bias with the *calibrated* range of its input
            # when one exists, while the kernel uses the pinned one (measured: the head's bias
            # scale 3.9 % off where the data never reached the learned maximum). Without
            # calibration there is nothing else to take; `check_conversion` verifies every bias
            # scale. (supported_ops=INT8 would demand a representative dataset; the ESPHome load
            # check still refuses any float op.)
            try:
                return _quiet_convert(converter)
            except Exception as exc:  # the converter raises ConverterError and assorted others
                raise EsphomeExportError(
                    f"TensorFlow Lite conversion of the QAT streaming graph failed: {exc}") from exc
        converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}

        def representative() -> Iterable[list[np.ndarray]]:
            # Consecutive blocks of one stream: the calibrator's interpreter keeps the variables
            # between samples, so the state ranges are those the device sees. The first block
            # makes the input range exactly [0, 26]: scale 26/255, zero point -128, the
            # quantization ESPHome's integer feature formula implements.
            yield [_range_block(spec.num_channels)[None]]
            for block in blocks:
                yield [block[None].astype(np.float32)]

        converter.representative_dataset = representative
        try:
            return _quiet_convert(converter)
        except Exception as exc:  # the converter raises ConverterError and assorted others
            raise EsphomeExportError(f"TensorFlow Lite conversion of the streaming graph failed: {exc}") from exc


def _quiet_convert(converter: Any) -> bytes:
    # The TF converter prints its settings and C++ logs to fd 2: hidden under the CLI unless
    # `tinyconv --verbose`, and shown when the conversion fails (tinyconv._quiet).
    with native_stderr_captured():
        return bytes(converter.convert())


def _range_block(num_channels: int) -> np.ndarray:
    """A [3, F] block of zeros with one value at FEATURE_MAX (a single spike barely moves the
    calibrated ranges of the layers after the input)."""
    block = np.zeros((FRAMES_PER_INVOKE, num_channels), np.float32)
    block[-1, num_channels // 2] = FEATURE_MAX
    return block


def _blocks(stream: np.ndarray, num_channels: int) -> np.ndarray:
    x = np.asarray(stream, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != num_channels or x.shape[0] < FRAMES_PER_INVOKE:
        raise EsphomeExportError(f"a feature stream must be [frames >= 3, {num_channels}], got {list(x.shape)}")
    n = x.shape[0] // FRAMES_PER_INVOKE
    return x[: n * FRAMES_PER_INVOKE].reshape(n, FRAMES_PER_INVOKE, num_channels)


# ---- ESPHome's load checks ------------------------------------------------------------------


@dataclass(frozen=True)
class EsphomeModelInfo:
    """What ESPHome's loader looks at in a .tflite."""

    op_names: tuple[str, ...]  # every op of every subgraph, sorted, unique
    input_shape: tuple[int, ...]
    input_dtype: str
    input_quant: tuple[float, int]
    output_shape: tuple[int, ...]
    output_dtype: str
    output_quant: tuple[float, int]
    num_inputs: int
    num_outputs: int
    num_variables: int  # distinct resource variables (VAR_HANDLE shared names)
    state_dtypes: tuple[str, ...]  # READ_VARIABLE output types
    state_bytes: int
    num_subgraphs: int


def inspect_esphome_model(data: bytes) -> EsphomeModelInfo:
    """Parse a .tflite flatbuffer (all subgraphs) with the schema that ships in ai-edge-litert."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # the flatbuffer reader raises assorted errors on garbage
        raise EsphomeExportError(f"not a valid .tflite flatbuffer: {exc}") from exc
    if not model.subgraphs:
        raise EsphomeExportError("the .tflite has no subgraph")
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    sizes = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4, "float16": 2}
    names: set[str] = set()
    variables: set[tuple[str, str]] = set()
    state_dtypes: list[str] = []
    state_bytes = 0
    for sg in model.subgraphs:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            # Opcodes above 127 live in builtinCode; old files only fill deprecatedBuiltinCode.
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"OPCODE_{code.builtinCode}")
            if code.customCode:
                name = f"custom:{code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode}"
            names.add(name)
            if name == "VAR_HANDLE":
                opts = op.builtinOptions
                key = (_text(getattr(opts, "container", b"")), _text(getattr(opts, "sharedName", b"")))
                variables.add(key)
            if name == "READ_VARIABLE" and sg is model.subgraphs[0]:
                t = sg.tensors[op.outputs[0]]
                dtype = type_names.get(t.type, str(t.type))
                state_dtypes.append(dtype)
                state_bytes += int(np.prod(t.shape)) * sizes.get(dtype, 4)
    main = model.subgraphs[0]

    def tensor(i: int) -> tuple[tuple[int, ...], str, tuple[float, int]]:
        t = main.tensors[i]
        q = t.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        return tuple(int(s) for s in t.shape), type_names.get(t.type, str(t.type)), (scale, zp)

    inputs = list(main.inputs if main.inputs is not None else [])
    outputs = list(main.outputs if main.outputs is not None else [])
    if not inputs or not outputs:
        raise EsphomeExportError("the .tflite has no input or no output tensor")
    in_shape, in_dtype, in_q = tensor(int(inputs[0]))
    out_shape, out_dtype, out_q = tensor(int(outputs[0]))
    return EsphomeModelInfo(
        op_names=tuple(sorted(names)), input_shape=in_shape, input_dtype=in_dtype, input_quant=in_q,
        output_shape=out_shape, output_dtype=out_dtype, output_quant=out_q, num_inputs=len(inputs),
        num_outputs=len(outputs), num_variables=len(variables), state_dtypes=tuple(state_dtypes),
        state_bytes=state_bytes, num_subgraphs=len(model.subgraphs),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def check_esphome_model(data: bytes, *, num_channels: int = 40) -> EsphomeModelInfo:
    """Raise EsphomeExportError naming what ESPHome's micro_wake_word would refuse in this .tflite.

    The checks its loader (and its fixed op resolver) applies: ops only from ESPHome's 20, one
    int8 input [1, stride, 40], one uint8 output [1, 1], at most 20 resource variables, and
    int8 state (float state would need DEQUANTIZE, which the resolver lacks).
    """
    info = inspect_esphome_model(data)
    outside = [n for n in info.op_names if n not in ESPHOME_OPS]
    if outside:
        raise EsphomeExportError(
            f"op {', '.join(outside)} is not in ESPHome micro_wake_word's op resolver "
            f"(allowed: {', '.join(sorted(ESPHOME_OPS))})"
        )
    if info.num_inputs != 1 or info.num_outputs != 1:
        raise EsphomeExportError(
            f"ESPHome feeds one input and reads one output; the model has {info.num_inputs} inputs and "
            f"{info.num_outputs} outputs (state must live in resource variables, not in extra tensors)"
        )
    if info.input_dtype != "int8" or len(info.input_shape) != 3 or info.input_shape[0] != 1 \
            or info.input_shape[2] != num_channels or info.input_shape[1] < 1:
        raise EsphomeExportError(
            f"input 0 must be int8 [1, stride, {num_channels}], got {info.input_dtype} {list(info.input_shape)}"
        )
    if info.output_dtype != "uint8" or info.output_shape != (1, 1):
        raise EsphomeExportError(f"output 0 must be uint8 [1, 1], got {info.output_dtype} {list(info.output_shape)}")
    if info.num_variables > MAX_STATE_VARIABLES:
        raise EsphomeExportError(
            f"the model has {info.num_variables} state variables; ESPHome allocates at most {MAX_STATE_VARIABLES}"
        )
    float_state = [d for d in info.state_dtypes if d != "int8"]
    if float_state:
        raise EsphomeExportError(f"state variables must be int8, got {', '.join(sorted(set(float_state)))}")
    if info.num_variables and "CALL_ONCE" not in info.op_names:
        raise EsphomeExportError("the model has state variables but no CALL_ONCE initializer")
    return info


# ---- conversion check: the .tflite holds the graph's weights and (QAT) ranges ----------------

# Weights and biases in the .tflite, dequantized, must be the graph's within half a step (plus
# float32 slack); each bias scale must be input_scale x weight_scale (what the kernels assume).
# This is what caught the TF 2.21 quirk of a bias quantized with another input scale.
CONVERSION_MAX_STEPS = 0.5 + 1e-3
BIAS_SCALE_RTOL = 1e-5
# QAT: an exported scale may differ from the learned one by float32 rounding only (the TF
# fake-quant op recomputes scale = (max - min) / 255 from the pinned range).
QAT_SCALE_RTOL = 1e-5


def check_conversion(data: bytes, spec: StreamSpec) -> dict[str, Any]:
    """Compare the .tflite's int8 weights, int32 biases and (pinned) scales with the spec it came from."""
    from tinyconv.export.int8_reference import TfliteIntegerReference

    layers = TfliteIntegerReference(data).quantized_layers()
    expected = [(layer.kind, layer) for layer in spec.layers] + [("fc", None)]
    ops = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED"}
    got = [q.op for q in layers]
    if got != [ops[k] for k, _ in expected]:
        raise EsphomeExportError(f"converted model has layers {got}; expected {[ops[k] for k, _ in expected]}")
    worst = {"weight_steps": 0.0, "bias_steps": 0.0, "bias_scale_rel": 0.0, "qat_scale_rel": 0.0}
    for i, (q, (kind, layer)) in enumerate(zip(layers, expected, strict=True)):
        where = f"layer {i} ({q.op})"
        s_in = float(q.input.scale[0])
        s_w = q.weight.scale.astype(np.float64)
        if kind == "fc":
            w_ref, b_ref = spec.head_weight.T.astype(np.float64), spec.head_bias.astype(np.float64)
            s_view: tuple[int, ...] = (-1, 1) if s_w.size > 1 else (1, 1)
        else:
            w_ref = layer.weight.transpose(3, 0, 1, 2).astype(np.float64)  # -> OHWI / [1, k, 1, C]
            b_ref = layer.bias.astype(np.float64)
            s_view = (-1, 1, 1, 1) if kind == "conv" else (1, 1, 1, -1)
        w_steps = np.abs(q.weight.const.astype(np.float64) * s_w.reshape(s_view) - w_ref) / s_w.reshape(s_view)
        if q.bias is None or q.bias.const is None:
            raise EsphomeExportError(f"converted {where} has no constant bias")
        s_b = q.bias.scale.astype(np.float64)
        b_scale_rel = float(np.max(np.abs(s_b / (s_in * s_w) - 1.0)))
        # Less float32 rounding of the bias itself: TF quantizes the float32 value, and a bias
        # of many steps (a tiny input x weight scale) carries more than 1e-3 steps of it.
        b_steps = np.maximum(np.abs(q.bias.const.astype(np.float64) * s_b - b_ref)
                             - np.abs(b_ref) * np.finfo(np.float32).eps, 0.0) / (s_in * s_w)
        worst["weight_steps"] = max(worst["weight_steps"], float(w_steps.max()))
        worst["bias_steps"] = max(worst["bias_steps"], float(b_steps.max()))
        worst["bias_scale_rel"] = max(worst["bias_scale_rel"], b_scale_rel)
        if w_steps.max() > CONVERSION_MAX_STEPS:
            raise EsphomeExportError(f"converted {where}: int8 weights differ from the graph's by "
                                     f"{w_steps.max():.2f} steps (allowed {CONVERSION_MAX_STEPS:.3f})")
        if b_scale_rel > BIAS_SCALE_RTOL or b_steps.max() > CONVERSION_MAX_STEPS:
            raise EsphomeExportError(
                f"converted {where}: the int32 bias is not on input_scale x weight_scale (scale off by "
                f"{b_scale_rel:.2e}, values by {b_steps.max():.2f} steps): a converter quirk put it on another scale")
        if layer is not None and layer.weight_scale is not None and layer.out_range is not None:
            out_scale, out_zp = q.output.qparams
            learned = (layer.out_range[1] - layer.out_range[0]) / 255.0
            learned_zp = int(round(-128 - layer.out_range[0] / learned))
            rel = max(float(np.max(np.abs(s_w / layer.weight_scale.astype(np.float64) - 1.0))),
                      abs(out_scale / learned - 1.0))
            worst["qat_scale_rel"] = max(worst["qat_scale_rel"], rel)
            if rel > QAT_SCALE_RTOL or out_zp != learned_zp:
                raise EsphomeExportError(
                    f"converted {where}: the QAT ranges did not carry through (output scale {out_scale:.6g} zero "
                    f"point {out_zp} vs learned {learned:.6g} / {learned_zp}; weight scales off by up to {rel:.2e})")
    return worst


# ---- self-check: TFLM vs the integer reference and vs the PyTorch streaming form -------------


def run_tflm_stream(data: bytes, q_frames: np.ndarray, arena_bytes: int) -> np.ndarray:
    """uint8 outputs of one TFLM interpreter fed consecutive [1, 3, F] int8 blocks (state kept)."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(data), arena_size=int(arena_bytes))
    n = q_frames.shape[0] // FRAMES_PER_INVOKE
    out = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        interp.set_input(np.ascontiguousarray(q_frames[None, FRAMES_PER_INVOKE * i : FRAMES_PER_INVOKE * (i + 1)]), 0)
        interp.invoke()
        out[i] = np.asarray(interp.get_output(0)).reshape(-1)[0]
    return out


def torch_stream_probabilities(model: torch.nn.Module, frames: np.ndarray, positive_index: int = 1) -> np.ndarray:
    """P(positive) per invoke of the PyTorch streaming form (float) on a [T, F] stream."""
    from tinyconv.models.streaming import StreamingTinyConv

    with torch.no_grad():
        logits = StreamingTinyConv(model.eval()).run(torch.from_numpy(np.asarray(frames, np.float32))[None])[0]
    return torch.softmax(logits.double(), dim=-1)[:, positive_index].numpy()


def qat_window_probabilities(qat_model: Any, frames: np.ndarray, num_frames: int,
                             positive_index: int = 1) -> np.ndarray:
    """P(positive) of the QAT model's converted graph (fake quantization, BN folded, learned scales)
    on the window of `num_frames` frames ending at each invoke's last frame; NaN before the first
    full window. The streaming model equals the window model there (docs/STREAMING.md)."""
    steps = len(frames) // FRAMES_PER_INVOKE
    ends = [FRAMES_PER_INVOKE * (i + 1) for i in range(steps)]
    full = [i for i, e in enumerate(ends) if e >= num_frames]
    out = np.full(steps, np.nan)
    if not full:
        return out
    ref = qat_model.to_reference()
    x = np.asarray(frames, np.float32)
    with torch.no_grad():
        for start in range(0, len(full), 256):
            idx = full[start : start + 256]
            windows = torch.from_numpy(np.stack([x[ends[i] - num_frames : ends[i]] for i in idx]))
            out[idx] = torch.softmax(ref(windows).double(), dim=-1)[:, positive_index].numpy()
    return out


def self_check(data: bytes, model: torch.nn.Module, frames: np.ndarray, arena_bytes: int,
               positive_index: int = 1, feature_scale: float = 1.0 / 25.6, qat_model: Any = None) -> dict[str, Any]:
    """TFLM on a stream (ESPHome's int8 input) vs the integer reference and vs PyTorch float.

    `tflm_vs_integer_*`: uint8 outputs of TFLM and of `TfliteIntegerReference` on the same int8
    blocks (exact check). `*_prob_diff`: TFLM's uint8 / 255 (as ESPHome reads it) vs the PyTorch
    float streaming form fed the features ESPHome's int8 input stands for ((q + 128) * 26 / 255),
    so that difference is the model's own quantization, not the input rounding. With `qat_model`
    (a QAT checkpoint) the quality reference is the QAT model itself (`qat_window_probabilities`,
    steps with a full window), since its learned quantization is what the .tflite carries.
    """
    from tinyconv.export.int8_reference import run_reference_stream

    q = esphome_features_int8(frames, feature_scale)
    tflm_u8 = run_tflm_stream(data, q, arena_bytes)
    integer = run_reference_stream(data, q, FRAMES_PER_INVOKE)
    u8_diff = np.abs(tflm_u8.astype(np.int64) - integer.astype(np.int64))
    tflm = tflm_u8.astype(np.float64) / 255.0
    features = (q.astype(np.float32) - INPUT_ZERO_POINT) * INPUT_SCALE
    if qat_model is None:
        ref = torch_stream_probabilities(model, features, positive_index)
    else:
        ref = qat_window_probabilities(qat_model, features, int(model.input_shape[0]), positive_index)
    diff = np.abs(tflm - ref)[~np.isnan(ref)]
    return {"steps": int(len(tflm)), "reference": "pytorch float streaming" if qat_model is None else
            "pytorch qat (fake-quant window model)", "tflm_vs_integer_max_u8_diff": int(u8_diff.max()),
            "tflm_vs_integer_mismatches": int((u8_diff > 0).sum()),
            "max_abs_prob_diff": float(diff.max()), "mean_abs_prob_diff": float(diff.mean())}


# ---- probability cutoff ---------------------------------------------------------------------

def choose_cutoff(probs_u8: np.ndarray, hours: float, *, window: int, target_fa_per_hour: float) -> dict[str, Any]:
    """The lowest cutoff whose false accepts per hour on negative audio are <= the target.

    With little negative audio the estimate is coarse (one false accept in 10 minutes is
    6 FA/h), so the chosen cutoff and the hours it was measured on both go into the manifest.
    """
    for c in CUTOFF_GRID:  # ESPHome's detector loop (device/esphome_detector.py): uint8 window sum, 74-slice wait
        fa = count_detections(probs_u8, c, window, stride=FRAMES_PER_INVOKE)
        if fa / hours <= target_fa_per_hour:
            return {"cutoff": c, "false_accepts": fa, "fa_per_hour": fa / hours, "negative_hours": hours,
                    "target_fa_per_hour": target_fa_per_hour, "met": True}
    fa = count_detections(probs_u8, CUTOFF_GRID[-1], window, stride=FRAMES_PER_INVOKE)
    return {"cutoff": CUTOFF_GRID[-1], "false_accepts": fa, "fa_per_hour": fa / hours, "negative_hours": hours,
            "target_fa_per_hour": target_fa_per_hour, "met": False}


def cutoff_resolution_note(cutoff: float, hours: float, target_fa_per_hour: float) -> str | None:
    """Why a cutoff chosen on `hours` of negatives cannot be trusted at the target, or None.

    Zero false accepts in a few minutes says little about one in two hours: on long everyday audio
    such a cutoff can fire far more often (benchmarks/e2e.py measures it on 5 h)."""
    if hours * target_fa_per_hour >= 1.0:
        return None
    return (f"probability_cutoff {cutoff:.2f} was chosen on {hours * 60:.1f} min of validation negatives, too "
            f"little to resolve {target_fa_per_hour:g} false accepts per hour (that needs "
            f"{1 / target_fa_per_hour:.0f} h): check it on long negative audio (tinyconv simulate) or set it "
            f"with tinyconv export --probability-cutoff")


# ---- the export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EsphomeExportResult:
    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any]  # the tinyconv export manifest (manifest.json)
    esphome_manifest: dict[str, Any]  # <name>.json, what ESPHome reads
    quantization: str
    tensor_arena_bytes: int  # host TFLM arena (reference kernels)
    self_check: dict[str, Any]
    model_info: EsphomeModelInfo


def model_file_stem(wake_word: str) -> str:
    """'Hey Tiny' -> 'hey_tiny': the .tflite/.json names ESPHome configs refer to."""
    stem = "".join(ch if ch.isalnum() else "_" for ch in wake_word.strip().lower())
    stem = "_".join(p for p in stem.split("_") if p)
    return stem or "wake_word"


def _clip_stream(clips: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded choice of `count` clips [N, T, F] concatenated in time -> [count * T, F]."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(clips))[:count]
    return np.concatenate(list(clips[idx]), axis=0).astype(np.float32)


def _dataset_split(src: Any, split: str, *, with_streams: bool = False) -> FeatureSet | None:
    """The checkpoint's dataset split, or None when the dataset or the split is not there (then
    the caller's default applies). A dataset that is there but damaged (a changed clip or stream
    file) is an error: a cutoff silently chosen without its negatives would be wrong."""
    from tinyconv.data.dataset import load_features
    from tinyconv.data.manifest import DatasetError, read_manifest

    root = Path(src.config.data.dataset_dir).resolve()
    try:
        rows, _ = read_manifest(root)
    except (OSError, DatasetError):
        return None
    if not any(r.split == split for r in rows):
        return None
    return load_features(root, split, src.config.frontend, with_streams=with_streams)


def load_streaming_model(src: Any) -> torch.nn.Module:
    """The float StreamTinyConv of a checkpoint (a QAT one: its float weights and BN statistics)."""
    from tinyconv.checkpoint import model_from_checkpoint
    from tinyconv.models.streaming import is_streamable

    arch = model_from_checkpoint(src, "architecture")
    if not is_streamable(arch):
        raise EsphomeExportError(
            f"checkpoint {src.path} holds model {src.config.model.name!r} ({type(arch).__name__}), which is not "
            "streamable: ESPHome runs stateful streaming models only; train a stream_tinyconv model "
            "(model.name=stream_tinyconv) to export for ESPHome"
        )
    return model_from_checkpoint(src, "float")


def export_esphome(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    *,
    with_c: bool = False,
    representative: np.ndarray | None = None,
    negatives: np.ndarray | None = None,
    num_calibration_clips: int = 200,
    probability_cutoff: float | None = None,
    target_fa_per_hour: float = 0.5,
    sliding_window_size: int = DEFAULT_SLIDING_WINDOW,
    author: str = "tinyconv",
    website: str | None = None,
    trained_languages: tuple[str, ...] = ("en",),
    arena_budget_bytes: int | None = None,
) -> EsphomeExportResult:
    """Export a stream_tinyconv checkpoint as the <name>.tflite + <name>.json pair ESPHome loads.

    `representative`: float feature clips [N, T, F] (or one [T, F] stream) to calibrate on
    (default: the training split of the checkpoint's dataset). `negatives`: negative audio
    features ([N, T, F] clips or a [T, F] stream) to choose `probability_cutoff` at
    `target_fa_per_hour` (default: the validation split's `FeatureSet.negative_stream`); `probability_cutoff`
    given: used as is. `arena_budget_bytes`: fail if the manifest's tensor_arena_size exceeds it.
    Everything is written to a temporary folder and swapped in only after all checks pass.
    """
    from tinyconv.device.arena import measure_host_arena
    from tinyconv.device.errors import ModelError
    from tinyconv.export.pipeline import MANIFEST_NAME, _check_out_dir, _write_atomically, export_manifest
    from tinyconv.export.source import read_checkpoint

    if sliding_window_size < 1:
        raise EsphomeExportError(f"sliding_window_size must be >= 1, got {sliding_window_size}")
    if probability_cutoff is not None and not 0.0 < probability_cutoff < 1.0:
        raise EsphomeExportError(f"probability_cutoff must be in (0, 1), got {probability_cutoff}")
    out = Path(out_dir).resolve()
    _check_out_dir(out)
    src = read_checkpoint(checkpoint_path)
    model = load_streaming_model(src)
    labels = list(src.labels)
    if src.positive_label not in labels:
        raise EsphomeExportError(f"checkpoint {src.path} names no wake-word label (positive_label); ESPHome "
                                 "needs the probability of one wake word")
    pos = labels.index(src.positive_label)
    carried: dict[str, Any] | None = None
    if src.kind == "qat":
        from tinyconv.checkpoint import model_from_checkpoint

        # The learned ranges are pinned in the TF graph (no silent re-calibration).
        qat_model = model_from_checkpoint(src, "qat")
        spec, carried = qat_stream_spec(qat_model, model, pos)
    else:
        qat_model = None
        spec = stream_spec(model, pos)
    quantization = "qat" if spec.fully_pinned else "ptq"
    fe = src.config.frontend

    # Calibration and self-check streams: real feature clips, concatenated in time.
    if representative is None:
        train = _dataset_split(src, "train")
        if train is None:
            raise EsphomeExportError(
                f"ESPHome export calibrates on real feature streams: could not load the training split of "
                f"{src.config.data.dataset_dir}; pass representative features"
            )
        representative = train.x
    rep = np.asarray(representative, np.float32)
    if rep.ndim == 3:
        calib = _clip_stream(rep, num_calibration_clips, seed=0)
        check_frames = _clip_stream(rep, 24, seed=1)
    else:
        calib, check_frames = rep, rep[-24 * fe.num_frames :]
    tflite = convert_streaming(spec, calib)
    info = check_esphome_model(tflite, num_channels=fe.num_channels)
    conversion = check_conversion(tflite, spec)
    scale, zp = info.input_quant
    # ESPHome ignores the input tensor's parameters, but pymicro-wakeword (and any host runtime)
    # quantizes with them: they must be the ones the feature formula implements.
    if zp != INPUT_ZERO_POINT or abs(scale / INPUT_SCALE - 1.0) > 1e-4:
        raise EsphomeExportError(f"converted input quantization is scale {scale:.6g} zero point {zp}; expected "
                                 f"{INPUT_SCALE:.6g} and {INPUT_ZERO_POINT} (ESPHome's feature formula)")
    try:  # the TFLM arena `tinyconv simulate` reports as arena_bytes_host (one measurement)
        host_arena = measure_host_arena(tflite).arena_bytes
    except ModelError as exc:  # names the op TFLM has no kernel for
        raise EsphomeExportError(str(exc)) from exc
    tensor_arena_size = -(-int(host_arena * ESP_NN_ARENA_FACTOR) // 16) * 16
    if arena_budget_bytes is not None and tensor_arena_size > arena_budget_bytes:
        raise EsphomeExportError(
            f"tensor arena {tensor_arena_size} bytes (host TFLM {host_arena} x {ESP_NN_ARENA_FACTOR} for ESP-NN) "
            f"exceeds the budget of {arena_budget_bytes} bytes"
        )
    check = self_check(tflite, model, check_frames, host_arena, pos, fe.feature_scale, qat_model)
    if check["tflm_vs_integer_max_u8_diff"] > SELF_CHECK_MAX_U8_DIFF:
        raise EsphomeExportError(
            f"self-check failed: TFLite Micro differs from the integer reference of the same .tflite by up to "
            f"{check['tflm_vs_integer_max_u8_diff']} uint8 steps on {check['tflm_vs_integer_mismatches']} of "
            f"{check['steps']} invokes (allowed {SELF_CHECK_MAX_U8_DIFF}): the device would not compute the graph "
            "in the file"
        )
    if check["max_abs_prob_diff"] > SELF_CHECK_MAX_PROB_DIFF or check["mean_abs_prob_diff"] > SELF_CHECK_MEAN_PROB_DIFF:
        raise EsphomeExportError(
            f"self-check failed: the INT8 streaming model under TFLite Micro differs from the PyTorch streaming "
            f"form by {check['max_abs_prob_diff']:.3f} (mean {check['mean_abs_prob_diff']:.3f}) in probability "
            f"(allowed {SELF_CHECK_MAX_PROB_DIFF}, mean {SELF_CHECK_MEAN_PROB_DIFF})"
        )

    # Probability cutoff: given, or chosen on negative audio at the target FA/h.
    if probability_cutoff is not None:
        cutoff_info: dict[str, Any] = {"cutoff": float(probability_cutoff), "source": "given"}
    else:
        neg = negatives
        if neg is None:
            val = _dataset_split(src, "val", with_streams=True)
            neg = val.negative_stream() if val is not None else None
        if neg is None:
            cutoff_info = {"cutoff": DEFAULT_PROBABILITY_CUTOFF, "source": "default (no negative features)"}
        else:
            neg = np.asarray(neg, np.float32)
            stream = np.concatenate(list(neg), 0) if neg.ndim == 3 else neg
            probs = run_tflm_stream(tflite, esphome_features_int8(stream, fe.feature_scale), host_arena)
            hours = stream.shape[0] * fe.step_ms / 1000.0 / 3600.0
            cutoff_info = {**choose_cutoff(probs, hours, window=sliding_window_size,
                                           target_fa_per_hour=target_fa_per_hour), "source": "negatives"}
            note = cutoff_resolution_note(cutoff_info["cutoff"], hours, target_fa_per_hour)
            if note:
                cutoff_info["note"] = note
                warnings.warn(note, UserWarning, stacklevel=2)

    wake_word = src.config.data.wake_word if src.config.data.source == "synth" else str(src.positive_label)
    stem = model_file_stem(wake_word)
    tflite_name, json_name = f"{stem}.tflite", f"{stem}.json"
    esphome_manifest: dict[str, Any] = {
        "type": "micro",
        "wake_word": wake_word,
        "author": author,
        **({"website": website} if website else {}),
        "model": tflite_name,
        "trained_languages": list(trained_languages),
        "version": MANIFEST_VERSION,
        "micro": {
            "probability_cutoff": round(float(cutoff_info["cutoff"]), 2),
            "sliding_window_size": int(sliding_window_size),
            "feature_step_size": FEATURE_STEP_MS,
            "tensor_arena_size": int(tensor_arena_size),
            "minimum_esphome_version": MINIMUM_ESPHOME_VERSION,
        },
    }
    blobs: dict[str, bytes] = {
        tflite_name: tflite,
        json_name: (json.dumps(esphome_manifest, indent=2) + "\n").encode(),
    }
    if with_c:
        blobs.update(_c_arrays(src, tflite, info, host_arena, esphome_manifest["micro"]))
    from tinyconv.export.tflite import TensorQuant

    io = (TensorQuant(info.input_shape, info.input_dtype, *info.input_quant),
          TensorQuant(info.output_shape, info.output_dtype, *info.output_quant))
    # "ptq": the TF converter calibrated every range on real feature streams; "qat": the learned
    # ranges were pinned (esphome.qat_ranges says which tensors carry them).
    manifest = export_manifest(src, io, blobs, quantization, host_arena, streaming=True,
                               macs_per_step=int(model.macs_per_step()), esphome={
        "model": tflite_name, "manifest": json_name, "tensor_arena_size": tensor_arena_size,
        "esp_nn_arena_factor": ESP_NN_ARENA_FACTOR, "num_state_variables": info.num_variables,
        "state_bytes": info.state_bytes, "ops": list(info.op_names), "self_check": check,
        "self_check_max_u8_diff": SELF_CHECK_MAX_U8_DIFF, "self_check_max_prob_diff": SELF_CHECK_MAX_PROB_DIFF,
        "probability_cutoff": cutoff_info, "conversion_check": conversion,
        **({"qat_ranges": carried} if carried is not None else {}),
    })
    blobs[MANIFEST_NAME] = (json.dumps(manifest, indent=2) + "\n").encode()
    _write_atomically(out, blobs)
    return EsphomeExportResult(
        out_dir=out, files={n: out / n for n in blobs}, manifest=manifest, esphome_manifest=esphome_manifest,
        quantization=quantization, tensor_arena_bytes=host_arena, self_check=check, model_info=info,
    )


def _c_arrays(src: Any, tflite: bytes, info: EsphomeModelInfo, host_arena: int,
              micro: dict[str, Any]) -> dict[str, bytes]:
    """model_data.cc/.h embedding the streaming .tflite for plain TFLM firmware.

    The header (`render_streaming_header`) carries the stride, shapes and types from the .tflite,
    ESPHome's feature formula, and the tensor arena and detector parameters of the ESPHome
    manifest's `micro` block, as written.
    """
    from tinyconv.export.c_array import (
        HEADER_NAME,
        SOURCE_NAME,
        CArrayInputs,
        StreamingFacts,
        render_source,
        render_streaming_header,
    )
    from tinyconv.export.tflite import TensorQuant, TFLiteInfo
    from tinyconv.models.streaming import TIME_STRIDE

    stride = int(info.input_shape[1])
    if stride != TIME_STRIDE:
        raise EsphomeExportError(f"the streaming model's input takes {stride} frames per invoke; stream_tinyconv's "
                                 f"time stride is {TIME_STRIDE}")
    tinfo = TFLiteInfo(
        ops=(), tensor_types=(), weight_quant=(), bias_types=(),
        input=TensorQuant(info.input_shape, info.input_dtype, *info.input_quant),
        output=TensorQuant(info.output_shape, info.output_dtype, *info.output_quant),
    )
    inputs = CArrayInputs(tflite=tflite, info=tinfo, labels=list(src.labels), positive_label=src.positive_label,
                          frontend=src.config.frontend, tensor_arena_bytes=int(micro["tensor_arena_size"]),
                          source_description=f"{src.path.name} (sha256 {src.sha256[:16]})")
    facts = StreamingFacts.from_manifest(micro, stride_frames=stride, host_arena_bytes=host_arena,
                                         esp_nn_arena_factor=ESP_NN_ARENA_FACTOR,
                                         num_state_variables=info.num_variables, state_bytes=info.state_bytes)
    return {HEADER_NAME: render_streaming_header(inputs, facts).encode(), SOURCE_NAME: render_source(inputs).encode()}


def route_formats(checkpoint_path: str | Path, formats: str | Any | None) -> tuple[str, ...]:
    """The formats to write: the requested ones, or the default for this checkpoint's model.

    A streaming checkpoint defaults to esphome + c; esphome is a stateful streaming model and
    cannot share a folder with the window-model formats (tflite, onnx). A streaming checkpoint
    asked for tflite or onnx is refused with a pointer to esphome (the window formats' integer
    reference and checks are built for TinyConv window models); asked for c alone, it gets the C
    arrays of its ESPHome model (esphome + c).
    """
    from tinyconv.export.pipeline import WINDOW_FORMATS, parse_formats

    if formats is not None:
        wanted = parse_formats(formats)
        if "esphome" not in wanted:
            from tinyconv.checkpoint import model_from_checkpoint
            from tinyconv.export.source import read_checkpoint
            from tinyconv.models.streaming import is_streamable

            src = read_checkpoint(checkpoint_path)
            if not is_streamable(model_from_checkpoint(src, "architecture")):
                return wanted
            window = [f for f in wanted if f in ("tflite", "onnx")]
            if window:
                raise EsphomeExportError(
                    f"checkpoint {src.path} holds streaming model {src.config.model.name!r}: format "
                    f"{', '.join(window)} (1 s window models) is not exported for it; use --formats esphome,c "
                    "(the stateful INT8 .tflite ESPHome and TFLite Micro firmware run, with its C arrays)"
                )
            return ("c", "esphome")
        window = [f for f in wanted if f in ("tflite", "onnx")]
        if window:
            raise EsphomeExportError(
                f"format esphome (a stateful streaming model) cannot be combined with {', '.join(window)} "
                "(window-model formats) in one export; use --formats esphome or esphome,c"
            )
        return wanted
    from tinyconv.checkpoint import model_from_checkpoint
    from tinyconv.export.source import read_checkpoint
    from tinyconv.models.streaming import is_streamable

    if is_streamable(model_from_checkpoint(read_checkpoint(checkpoint_path), "architecture")):
        return ("c", "esphome")
    return WINDOW_FORMATS
