"""INT8 TFLite: PT2E QDQ graph -> litert-torch -> .tflite bytes, and a flatbuffer inspector.

litert-torch (0.10.0) lowers the quantize/dequantize pairs of a converted PT2E graph to int8
kernels in STATIC QDQ mode: per-channel int8 weights, int32 biases, int8 activations, and the
input quantize / output dequantize are absorbed, so the model's input and output are int8.
BN is already folded by convert_pt2e, and the converter fuses ReLU into the conv
(fused_activation_function RELU). `inspect_tflite` reads the flatbuffer with the schema module
that ships in ai-edge-litert (pinned 2.3.0) so tests and the exporter check the op list.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinyconv._quiet import native_stderr_captured
from tinyconv.export.errors import ExportError


@dataclass(frozen=True)
class TFLiteOp:
    index: int
    name: str  # builtin name, e.g. "CONV_2D"
    fused_activation: str | None  # "RELU", "NONE" or None when the op has no such option
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


@dataclass(frozen=True)
class TensorQuant:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


@dataclass(frozen=True)
class WeightQuant:
    """Quantization of one conv/FC weight tensor, as the flatbuffer declares it."""

    op_index: int
    symmetric: bool  # every zero point is 0
    num_scales: int
    num_zero_points: int
    quantized_dimension: int
    # Size of the weight tensor along `quantized_dimension` (its output channels): a per-channel
    # tensor needs exactly this many scales; -1 when the dimension is outside the shape.
    num_channels: int


@dataclass(frozen=True)
class TFLiteInfo:
    ops: tuple[TFLiteOp, ...]
    input: TensorQuant
    output: TensorQuant
    tensor_types: tuple[str, ...]
    # Weight quantization of each conv/FC (scale and zero-point counts per output channel).
    weight_quant: tuple[WeightQuant, ...]
    bias_types: tuple[str, ...]

    @property
    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch prints progress to stdout; library code must not print."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def convert_to_tflite(reference: torch.fx.GraphModule, input_shape: tuple[int, ...]) -> bytes:
    """Convert a PT2E-converted (QDQ) GraphModule to full-integer INT8 TFLite bytes (batch 1)."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from tinyconv.models.pt2e import make_quantizer

    litert_torch.config.show_progress = False
    sample = (torch.zeros(1, *input_shape),)
    # The quantizer only tells litert-torch to lower QDQ statically; scales come from the graph.
    quant_config = QuantConfig(pt2e_quantizer=make_quantizer(is_qat=False))
    # The converter's C++ logs to fd 2 (shown on failure, or with `tinyconv --verbose`).
    with _quiet(), native_stderr_captured():
        edge_model = litert_torch.convert(reference, sample, quant_config=quant_config)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.tflite")
            edge_model.export(path)
            return Path(path).read_bytes()


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def inspect_tflite(data: bytes) -> TFLiteInfo:
    """Ops, fused activations, tensor types and I/O quantization of a .tflite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # the flatbuffer reader raises assorted errors on garbage
        raise ExportError(f"not a valid .tflite flatbuffer: {exc}") from exc
    if model.subgraphs is None or len(model.subgraphs) != 1:
        raise ExportError("expected a .tflite with exactly one subgraph")
    op_names = _enum_names(schema.BuiltinOperator)
    act_names = _enum_names(schema.ActivationFunctionType)
    type_names = _enum_names(schema.TensorType)
    graph = model.subgraphs[0]
    tensors = graph.tensors

    def ttype(i: int) -> str:
        return type_names.get(tensors[i].type, str(tensors[i].type)) if i >= 0 else "NONE"

    ops: list[TFLiteOp] = []
    weight_quant: list[WeightQuant] = []
    bias_types: list[str] = []
    for index, op in enumerate(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        # Opcodes above 127 live in builtinCode; old files only fill deprecatedBuiltinCode.
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"OPCODE_{code.builtinCode}")
        act = getattr(op.builtinOptions, "fusedActivationFunction", None)
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        ops.append(
            TFLiteOp(
                index=index,
                name=name,
                fused_activation=None if act is None else act_names.get(act, str(act)),
                input_types=tuple(ttype(i) for i in inputs),
                output_types=tuple(ttype(i) for i in outputs),
            )
        )
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(inputs) >= 2:
            w = tensors[inputs[1]]
            q = w.quantization
            zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [1])
            n_scales = len(q.scale) if q is not None and q.scale is not None else 0
            n_zps = len(q.zeroPoint) if q is not None and q.zeroPoint is not None else 0
            dim = int(q.quantizedDimension) if q is not None else 0
            shape = [int(d) for d in (w.shape if w.shape is not None else [])]
            channels = shape[dim] if 0 <= dim < len(shape) else -1
            weight_quant.append(WeightQuant(index, bool(np.all(zps == 0)), n_scales, n_zps, dim, channels))
            if len(inputs) >= 3:
                bias_types.append(ttype(inputs[2]))

    def io(i: int) -> TensorQuant:
        t = tensors[i]
        q = t.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        return TensorQuant(
            shape=tuple(int(s) for s in t.shape), dtype=type_names.get(t.type, "?").lower(), scale=scale, zero_point=zp
        )

    return TFLiteInfo(
        ops=tuple(ops),
        input=io(int(graph.inputs[0])),
        output=io(int(graph.outputs[0])),
        tensor_types=tuple(ttype(i) for i in range(len(tensors))),
        weight_quant=tuple(weight_quant),
        bias_types=tuple(bias_types),
    )


def check_full_integer(info: TFLiteInfo) -> None:
    """Raise ExportError unless every op runs on int8/int32 tensors with int8 I/O."""
    if info.input.dtype != "int8" or info.output.dtype != "int8":
        raise ExportError(f"model input/output must be int8, got {info.input.dtype}/{info.output.dtype}")
    for op in info.ops:
        floats = [t for t in op.input_types + op.output_types if t in ("FLOAT32", "FLOAT16")]
        if floats or op.name in ("QUANTIZE", "DEQUANTIZE"):
            raise ExportError(f"op #{op.index} {op.name} is not full-integer (tensor types {op.input_types})")
    for wq in info.weight_quant:
        where = f"op #{wq.op_index} {info.ops[wq.op_index].name}"
        if not wq.symmetric:
            raise ExportError(f"{where}: weight zero points must be 0 (symmetric)")
        if wq.num_scales == 0:
            raise ExportError(f"{where}: weights are not quantized (no scales)")
        # Per-channel (more than one scale): TFLM reads one scale and one zero point per output
        # channel along quantized_dimension; a short list reads past its end on the device.
        if wq.num_scales > 1 and wq.num_scales != wq.num_channels:
            raise ExportError(f"{where}: {wq.num_scales} per-channel weight scales for {wq.num_channels} channels "
                              f"along quantized dimension {wq.quantized_dimension}; expected one per channel")
        if wq.num_zero_points != wq.num_scales:
            raise ExportError(f"{where}: {wq.num_zero_points} weight zero points for {wq.num_scales} scales; "
                              "expected one per scale")
    bad_bias = [t for t in info.bias_types if t != "INT32"]
    if bad_bias:
        raise ExportError(f"biases must be int32, got {bad_bias}")


def run_litert(data: bytes, x_int8: np.ndarray, *, reference_kernels: bool = True) -> np.ndarray:
    """Run a batch through LiteRT one example at a time; BUILTIN_REF kernels match TFLM."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    interp = Interpreter(model_content=bytes(data), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    results = []
    for row in x_int8:
        interp.set_tensor(inp, row[None].astype(np.int8))
        interp.invoke()
        results.append(interp.get_tensor(out)[0].copy())
    return np.stack(results)
