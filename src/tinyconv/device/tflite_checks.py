"""Structural checks of a .tflite flatbuffer, run before any native runtime sees the file.

TFLite Micro trusts the flatbuffer: it runs a model whose weights buffer points past the end of
the file, whose constant tensor is larger than its buffer, whose operators read tensors that a
later operator writes, or whose convolution has stride 0 (measured: it invokes them and the
report said PASS, while LiteRT rejects all four). On a microcontroller those are out-of-bounds
reads or a division by zero. So every .tflite is checked here, in pure Python, and the first
problem becomes a `ModelError` naming the buffer, tensor or operator.
"""

from __future__ import annotations

import math
from typing import Any

from tinyconv.device.errors import ModelError

# A tensor over 2 GiB cannot be allocated by TFLite Micro (32-bit sizes) nor live in a flatbuffer.
MAX_TENSOR_BYTES = 1 << 31
# Largest model input the simulator feeds (random/zero inputs are allocated on the host): a
# wake-word input is a few thousand elements; 16 M is a generous cap against hostile shapes.
MAX_INPUT_ELEMENTS = 16 * 1024 * 1024

# Options class (in the LiteRT schema) and the fields that must be >= 1, per builtin op.
_GEOMETRY: dict[str, tuple[str, tuple[str, ...]]] = {
    "CONV_2D": ("Conv2DOptionsT", ("strideH", "strideW", "dilationHFactor", "dilationWFactor")),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptionsT", ("strideH", "strideW", "dilationHFactor", "dilationWFactor")),
    "TRANSPOSE_CONV": ("TransposeConvOptionsT", ("strideH", "strideW")),
    "CONV_3D": ("Conv3DOptionsT", ("strideD", "strideH", "strideW", "dilationDFactor", "dilationHFactor",
                                   "dilationWFactor")),
    "AVERAGE_POOL_2D": ("Pool2DOptionsT", ("strideH", "strideW", "filterHeight", "filterWidth")),
    "MAX_POOL_2D": ("Pool2DOptionsT", ("strideH", "strideW", "filterHeight", "filterWidth")),
    "L2_POOL_2D": ("Pool2DOptionsT", ("strideH", "strideW", "filterHeight", "filterWidth")),
}
# Ops that name other subgraphs: (options class, fields holding a subgraph index).
_CALLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CALL_ONCE": ("CallOnceOptionsT", ("initSubgraphIndex",)),
    "IF": ("IfOptionsT", ("thenSubgraphIndex", "elseSubgraphIndex")),
    "WHILE": ("WhileOptionsT", ("condSubgraphIndex", "bodySubgraphIndex")),
    "CALL": ("CallOptionsT", ("subgraph",)),
}
_SNAKE = {"strideH": "stride_h", "strideW": "stride_w", "strideD": "stride_d", "filterHeight": "filter_height",
          "filterWidth": "filter_width", "dilationHFactor": "dilation_h_factor",
          "dilationWFactor": "dilation_w_factor", "dilationDFactor": "dilation_d_factor"}


def _tname(t: Any) -> str:
    return t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")


def _users(root: Any, buffer_index: int) -> str:
    """' (tensor 3 'conv/weights')': which tensors use a buffer, for the message (best effort)."""
    try:
        found = []
        for g in range(root.SubgraphsLength()):
            sg = root.Subgraphs(g)
            for t in range(sg.TensorsLength()):
                if sg.Tensors(t).Buffer() == buffer_index:
                    name = (sg.Tensors(t).Name() or b"").decode(errors="replace")
                    found.append(f"tensor {t} {name!r}" + (f" of subgraph {g}" if g else ""))
        return f" (used by {', '.join(found[:3])})" if found else ""
    except Exception:  # noqa: BLE001 (the message is a courtesy; the error is raised anyway)
        return ""


def check_buffers(data: bytes, name: str) -> None:
    """Every buffer's bytes lie inside the file: its data vector, or its offset/size (models > 2 GiB).

    Runs on the raw flatbuffer, before the object API unpacks it, so a data vector whose length
    runs past the end of the file is reported by buffer and tensor, not as a generic decode error.
    """
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    size = len(data)
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        field = buf._tab.Offset(4)  # `data` vector (field 0); the generated Data() reads it the same way
        if field:
            start = buf._tab.Vector(field)
            length = buf._tab.VectorLen(field)
            if start + length > size:
                raise ModelError(f"{name}: buffer {i}{_users(root, i)} declares {length} bytes at offset {start}, "
                                 f"past the end of the file ({size} bytes)")
        offset, nbytes = int(buf.Offset()), int(buf.Size())
        # offset/size place the data after the flatbuffer (offset 0 or 1 means unused).
        if offset > 1 or nbytes > 0:
            if offset <= 1:
                raise ModelError(f"{name}: buffer {i}{_users(root, i)} declares size {nbytes} without an offset")
            if offset + nbytes > size:
                raise ModelError(f"{name}: buffer {i}{_users(root, i)} points at bytes {offset}..{offset + nbytes}, "
                                 f"outside the file ({size} bytes)")


def _required_bytes(elements: int, type_code: int, width: int) -> int | None:
    if type_code in (5, 13, 15):  # string, resource, variant: no fixed size
        return None
    if type_code == 18:  # int4 packs two values per byte
        return (elements + 1) // 2
    return elements * width


def validate_graph(model: Any, name: str, types: dict[int, tuple[str, int]], op_names: list[list[str]]) -> None:
    """Tensors against buffers and size limits, operator dataflow order, geometry options, subgraph calls.

    `op_names[g][k]` is the resolved name of operator k of subgraph g (the parser computes them).
    """
    from ai_edge_litert import schema_py_generated as schema

    buffers = model.buffers or []
    subgraphs = model.subgraphs or []
    for gi, g in enumerate(subgraphs):
        where = f" of subgraph {gi}" if gi else ""
        tensors = g.tensors or []
        const: set[int] = set()
        for i, t in enumerate(tensors):
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            sig = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else [])]
            for k, d in enumerate(shape):  # -1 only where the signature marks a dynamic dimension
                if d < 0 and not (k < len(sig) and sig[k] == -1):
                    raise ModelError(f"{name}: tensor {i} {_tname(t)!r}{where} has a negative dimension {tuple(shape)}")
            elements = math.prod(max(d, 1) for d in shape)
            required = _required_bytes(elements, t.type, types[t.type][1])
            if required is not None and required > MAX_TENSOR_BYTES:
                raise ModelError(f"{name}: tensor {i} {_tname(t)!r}{where} declares shape {tuple(shape)} "
                                 f"({required:,} bytes), more than the 2 GiB any runtime can allocate")
            buf = buffers[t.buffer] if t.buffer < len(buffers) else None
            have = 0
            if buf is not None:
                have = len(buf.data) if buf.data is not None and len(buf.data) else int(buf.size or 0)
            if have:
                const.add(i)
                if required is not None and t.sparsity is None and required > have:
                    raise ModelError(f"{name}: constant tensor {i} {_tname(t)!r}{where} (shape {tuple(shape)}, "
                                     f"{types[t.type][0]}) needs {required} bytes but its buffer {t.buffer} holds "
                                     f"{have}")
        sg_inputs = [int(i) for i in (g.inputs if g.inputs is not None else [])]
        sg_outputs = [int(i) for i in (g.outputs if g.outputs is not None else [])]
        for i in sg_inputs + sg_outputs:
            if not 0 <= i < len(tensors):
                raise ModelError(f"{name}: subgraph {gi} input/output {i} is out of range ({len(tensors)} tensors)")
        if gi == 0:
            for i in sg_inputs:
                t = tensors[i]
                elements = math.prod(max(int(d), 1) for d in (t.shape if t.shape is not None else []))
                if elements > MAX_INPUT_ELEMENTS:
                    raise ModelError(f"{name}: input tensor {i} {_tname(t)!r} has shape "
                                     f"{tuple(int(d) for d in t.shape)} ({elements:,} elements), more than the "
                                     f"{MAX_INPUT_ELEMENTS:,} the simulator accepts")
        _check_dataflow(name, gi, g, const, sg_inputs, sg_outputs, op_names[gi])
        for k, op in enumerate(g.operators or []):
            op_name = op_names[gi][k]
            opts = op.builtinOptions
            if op_name in _GEOMETRY:
                cls, fields = _GEOMETRY[op_name]
                if not isinstance(opts, getattr(schema, cls)):
                    raise ModelError(f"{name}: operator {k} ({op_name}){where} has no {cls[:-1]} "
                                     f"(its strides would be 0)")
                for f in fields:
                    if int(getattr(opts, f)) < 1:
                        raise ModelError(f"{name}: operator {k} ({op_name}){where} has {_SNAKE[f]} "
                                         f"{getattr(opts, f)}; it must be >= 1")
            if op_name in _CALLS:
                cls, fields = _CALLS[op_name]
                if not isinstance(opts, getattr(schema, cls)):
                    raise ModelError(f"{name}: operator {k} ({op_name}){where} has no {cls[:-1]}")
                for f in fields:
                    target = int(getattr(opts, f))
                    if not 0 <= target < len(subgraphs) or target == gi:
                        raise ModelError(f"{name}: operator {k} ({op_name}){where} calls subgraph {target}; "
                                         f"the model has {len(subgraphs)} and a subgraph cannot call itself")


def _check_dataflow(name: str, gi: int, g: Any, const: set[int], sg_inputs: list[int], sg_outputs: list[int],
                    op_names: list[str]) -> None:
    """Operators run in the stored order: each one may read only what exists when it runs.

    A tensor read by operator k must be a constant, a variable, a subgraph input, or written by
    an operator before k. Reading one that a later operator writes is a cycle in execution order
    (TFLite Micro then reads an uninitialised arena slot); a tensor is written at most once.
    """
    tensors = g.tensors or []
    where = f" of subgraph {gi}" if gi else ""
    ops = g.operators or []
    writer: dict[int, int] = {}
    for k, op in enumerate(ops):
        for i in (op.outputs if op.outputs is not None else []):
            i = int(i)
            if i < 0:
                continue
            if i in writer:
                raise ModelError(f"{name}: tensor {i} {_tname(tensors[i])!r}{where} is written by operator "
                                 f"{writer[i]} ({op_names[writer[i]]}) and again by operator {k} ({op_names[k]})")
            if i in const or i in sg_inputs:
                kind = "a constant" if i in const else "a subgraph input"
                raise ModelError(f"{name}: operator {k} ({op_names[k]}){where} writes tensor {i} "
                                 f"{_tname(tensors[i])!r}, which is {kind}")
            writer[i] = k
    available = set(sg_inputs) | const | {i for i, t in enumerate(tensors) if t.isVariable}
    for k, op in enumerate(ops):
        for i in (op.inputs if op.inputs is not None else []):
            i = int(i)
            if i < 0 or i in available:
                continue
            label = f"{name}: operator {k} ({op_names[k]}){where} reads tensor {i} {_tname(tensors[i])!r}"
            if i in writer:
                raise ModelError(f"{label} before operator {writer[i]} ({op_names[writer[i]]}) writes it: the "
                                 f"operators are not in execution order (the graph has a cycle)")
            raise ModelError(f"{label}, which no operator writes and which is not a constant, a variable or a "
                             f"subgraph input")
        available.update(int(i) for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0)
    for i in sg_outputs:
        if i not in available:
            raise ModelError(f"{name}: subgraph {gi} output tensor {i} {_tname(tensors[i])!r} is never written")
