"""Reading a .tflite flatbuffer in pure Python: op list, tensor shapes, MACs, memory traffic.

The schema comes from `ai_edge_litert.schema_py_generated` (shipped with the pinned
ai-edge-litert==2.3.0, so it tracks the runtime we execute with; no extra parser package).
Parsing is pure Python, so a malformed file raises an exception here instead of crashing
a native interpreter; every such exception becomes a `ModelError` naming the file.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyconv.device.errors import ModelError
from tinyconv.device.tflite_checks import check_buffers, validate_graph

# TFLite TensorType enum -> (name, bytes per element). Only the types a micro model uses.
_TYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
    5: ("string", 1), 6: ("bool", 1), 7: ("int16", 2), 9: ("int8", 1), 10: ("float64", 8),
    13: ("resource", 0), 16: ("uint32", 4), 17: ("uint16", 2), 18: ("int4", 1),
}
# Ops whose presence on a tensor path means the model computes in float (not int8-only).
_QUANT_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    is_const: bool  # has data in the flatbuffer (weights, biases, shape vectors)
    is_variable: bool


@dataclass(frozen=True)
class OpInfo:
    index: int
    subgraph: int
    name: str  # builtin name, e.g. CONV_2D, or the custom code
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    macs: int
    # Bytes the op reads and writes (activations + weights): the memory-traffic term of the cost model.
    bytes_read: int
    bytes_written: int
    params: dict[str, int] = field(default_factory=dict)  # kernel/stride/padding facts for scratch models


@dataclass(frozen=True)
class TfliteModel:
    path: str
    model_bytes: int
    sha256: str
    tensors: tuple[tuple[TensorInfo, ...], ...]  # per subgraph
    ops: tuple[OpInfo, ...]  # all subgraphs, subgraph 0 first
    input_indices: tuple[int, ...]
    output_indices: tuple[int, ...]
    num_subgraphs: int

    @property
    def op_names(self) -> list[str]:
        return sorted({op.name for op in self.ops})

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def main_ops(self) -> list[OpInfo]:
        return [op for op in self.ops if op.subgraph == 0]

    def tensor(self, index: int, subgraph: int = 0) -> TensorInfo:
        return self.tensors[subgraph][index]

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self.tensors[0][i] for i in self.input_indices]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self.tensors[0][i] for i in self.output_indices]

    @property
    def float_tensors(self) -> list[TensorInfo]:
        """Non-constant float32 activations: a model with these is not int8-only."""
        return [t for t in self.tensors[0] if t.dtype == "float32" and not t.is_const]

    @property
    def is_int8_only(self) -> bool:
        return not self.float_tensors and all(t.dtype in ("int8", "uint8") for t in self.inputs)

    @property
    def is_streaming(self) -> bool:
        return any(op.name in ("READ_VARIABLE", "ASSIGN_VARIABLE", "VAR_HANDLE") for op in self.ops)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for g in self.tensors for t in g if t.is_const)


def _schema():  # imported lazily: the module is large and only needed to parse
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names() -> dict[int, str]:
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # Python ints: np.prod wraps around on hostile shapes


def _conv_params(name: str, options: object, ins: list[TensorInfo], outs: list[TensorInfo]) -> dict[str, int]:
    """Kernel geometry (NHWC) used by the scratch-buffer and cycle models."""
    params: dict[str, int] = {}
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(ins) >= 2 and len(ins[0].shape) == 4:
        _, ih, iw, ic = ins[0].shape
        filt = ins[1].shape
        _, oh, ow, oc = outs[0].shape
        params = {"in_h": ih, "in_w": iw, "in_c": ic, "k_h": filt[1], "k_w": filt[2],
                  "out_h": oh, "out_w": ow, "out_c": oc,
                  "stride_h": int(getattr(options, "strideH", 1) or 1),
                  "stride_w": int(getattr(options, "strideW", 1) or 1),
                  # TFLite padding enum: 0 SAME, 1 VALID. SAME with a kernel > 1 pads.
                  "same_padding": int(getattr(options, "padding", 1) == 0),
                  "depth_multiplier": int(getattr(options, "depthMultiplier", 1) or 1)}
    elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and ins and len(ins[0].shape) == 4:
        _, ih, iw, ic = ins[0].shape
        params = {"in_h": ih, "in_w": iw, "in_c": ic,
                  "k_h": int(getattr(options, "filterHeight", 1)), "k_w": int(getattr(options, "filterWidth", 1))}
    elif name == "FULLY_CONNECTED" and len(ins) >= 2:
        params = {"in_features": ins[1].shape[-1] if ins[1].shape else 0,
                  "out_features": ins[1].shape[0] if ins[1].shape else 0}
    return params


def _macs(name: str, ins: list[TensorInfo], outs: list[TensorInfo], params: dict[str, int]) -> int:
    """Multiply-accumulates of one op (the standard counting MLPerf Tiny uses)."""
    if not outs:
        return 0
    out_elems = _prod(outs[0].shape)
    if name == "CONV_2D" and params:
        return out_elems * params["k_h"] * params["k_w"] * params["in_c"]
    if name == "DEPTHWISE_CONV_2D" and params:
        return out_elems * params["k_h"] * params["k_w"]
    if name == "FULLY_CONNECTED" and len(ins) >= 2 and ins[1].shape:
        batch = out_elems // max(1, ins[1].shape[0])
        return batch * ins[1].shape[0] * ins[1].shape[-1]
    if name in ("AVERAGE_POOL_2D",) and params:
        return out_elems * params["k_h"] * params["k_w"]
    if name in ("MEAN", "SUM") and ins:
        return _prod(ins[0].shape)
    return 0


def load_tflite(path: str | Path) -> TfliteModel:
    """Parse a .tflite file. Raises ModelError for anything that is not a sound TFLite model."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    return parse_tflite(data, str(path))


def parse_tflite(data: bytes, name: str = "<bytes>") -> TfliteModel:
    if len(data) < 8:
        raise ModelError(f"{name}: not a TFLite model ({len(data)} bytes, too short)")
    if data[4:8] != b"TFL3":
        raise ModelError(f"{name}: not a TFLite model (missing the 'TFL3' flatbuffer identifier)")
    schema = _schema()
    try:
        check_buffers(data, name)  # before unpacking: a vector past the end is named, not a decode error
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        return _build(model, data, name)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 (the generated reader raises IndexError/struct.error/... on garbage)
        raise ModelError(f"{name}: malformed or truncated TFLite flatbuffer ({type(exc).__name__}: {exc})") from None


def _build(model: Any, data: bytes, name: str) -> TfliteModel:  # model: the generated (untyped) schema.ModelT
    names = _op_names()
    if getattr(model, "version", 0) != 3:
        raise ModelError(f"{name}: TFLite schema version {model.version} is not supported (expected 3)")
    subgraphs = model.subgraphs or []
    if not subgraphs:
        raise ModelError(f"{name}: TFLite model has no subgraphs")
    buffers = model.buffers or []
    tensors: list[tuple[TensorInfo, ...]] = []
    for g in subgraphs:
        infos = []
        for i, t in enumerate(g.tensors or []):
            shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
            # Negative dimensions are checked (and named) in validate_graph; a dynamic batch (-1) runs with 1.
            shape = tuple(max(d, 1) for d in shape)
            if t.type not in _TYPES:
                raise ModelError(f"{name}: tensor {i} has unsupported type code {t.type}")
            dtype, width = _TYPES[t.type]
            if not 0 <= t.buffer < max(1, len(buffers)):
                raise ModelError(f"{name}: tensor {i} points at buffer {t.buffer}, model has {len(buffers)}")
            buf = buffers[t.buffer] if buffers else None
            has_data = buf is not None and ((buf.data is not None and len(buf.data) > 0) or (buf.size or 0) > 0)
            tname = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
            infos.append(TensorInfo(i, tname, shape, dtype, _prod(shape) * width, bool(has_data), bool(t.isVariable)))
        tensors.append(tuple(infos))
    codes = model.operatorCodes or []
    ops: list[OpInfo] = []
    for gi, g in enumerate(subgraphs):
        gt = tensors[gi]
        for oi, op in enumerate(g.operators or []):
            if not 0 <= op.opcodeIndex < len(codes):
                raise ModelError(f"{name}: operator {oi} uses opcode {op.opcodeIndex}, model has {len(codes)}")
            oc = codes[op.opcodeIndex]
            code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
            if code == 32:  # CUSTOM
                op_name = f"CUSTOM:{oc.customCode.decode(errors='replace') if oc.customCode else '?'}"
            elif code in names:
                op_name = names[code]
            else:
                raise ModelError(f"{name}: operator {oi} has unknown builtin code {code}")
            idx_in = tuple(int(i) for i in (op.inputs if op.inputs is not None else []))
            idx_out = tuple(int(i) for i in (op.outputs if op.outputs is not None else []))
            for i in idx_in + idx_out:
                if i >= len(gt) or i < -1:
                    raise ModelError(f"{name}: operator {oi} ({op_name}) references tensor {i}, subgraph has {len(gt)}")
            ins = [gt[i] for i in idx_in if i >= 0]
            outs = [gt[i] for i in idx_out if i >= 0]
            params = _conv_params(op_name, op.builtinOptions, ins, outs)
            ops.append(OpInfo(
                index=oi, subgraph=gi, name=op_name, inputs=idx_in, outputs=idx_out,
                macs=_macs(op_name, ins, outs, params),
                bytes_read=sum(t.nbytes for t in ins), bytes_written=sum(t.nbytes for t in outs),
                params=params,
            ))
    g0 = subgraphs[0]
    inputs = tuple(int(i) for i in (g0.inputs if g0.inputs is not None else []))
    outputs = tuple(int(i) for i in (g0.outputs if g0.outputs is not None else []))
    for i in inputs + outputs:
        if not 0 <= i < len(tensors[0]):
            raise ModelError(f"{name}: subgraph input/output {i} is out of range")
    if not inputs or not outputs:
        raise ModelError(f"{name}: the main subgraph declares no inputs or no outputs")
    per_graph: list[list[str]] = [[] for _ in subgraphs]
    for op in ops:
        per_graph[op.subgraph].append(op.name)
    validate_graph(model, name, _TYPES, per_graph)  # buffers, dataflow order, strides (see tflite_checks.py)
    return TfliteModel(
        path=name, model_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
        tensors=tuple(tensors), ops=tuple(ops), input_indices=inputs, output_indices=outputs,
        num_subgraphs=len(subgraphs),
    )


def live_bytes_per_op(model: TfliteModel, align: int = 16) -> list[int]:
    """Activation bytes alive during each op of the main subgraph (TFLM's planner lower bound).

    A non-constant tensor lives from the op that writes it (graph inputs: from the start) to the
    last op that reads it (graph outputs: to the end). Each buffer is rounded up to `align`,
    as TFLM's planner aligns offsets to 16 bytes. Variables live in the persistent section.
    """
    ops = model.main_ops
    tensors = model.tensors[0]
    first: dict[int, int] = {i: 0 for i in model.input_indices}
    last: dict[int, int] = {i: len(ops) - 1 for i in model.output_indices}
    for k, op in enumerate(ops):
        for i in op.outputs:
            if i >= 0:
                first.setdefault(i, k)
        for i in op.inputs:
            if i >= 0:
                last[i] = max(last.get(i, k), k)
    live = [0] * len(ops)
    for i, start in first.items():
        t = tensors[i]
        if t.is_const or t.is_variable or t.dtype == "resource":
            continue
        end = last.get(i, start)
        size = -(-t.nbytes // align) * align
        for k in range(start, end + 1):
            live[k] += size
    return live
