"""ONNX exports: INT8 QDQ (same scales as the TFLite model) and the float model.

The INT8 model is exported from the same PT2E-converted graph the TFLite model comes from, so
activation scales/zero points and per-channel weight scales are identical by construction.
torch's exporter emits weights as float constants quantized at run time
(QuantizeLinear -> Clip -> DequantizeLinear); `_fold_weights` stores them as int8 initializers
feeding DequantizeLinear (the QDQ convention for "int8 weights"), and biases as int32 with
scale input_scale * weight_scale, as TFLite stores them. Input and output stay float
(QDQ format); the first QuantizeLinear uses the TFLite input's scale and zero point.
Exporting fake-quant modules directly fails (DESIGN.md section 4), hence the converted graph.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from tinyconv.export.errors import ExportError

if TYPE_CHECKING:
    import onnx  # annotations only; the functions import it when they run

OPSET = 18


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress lines to stdout and warns about torchvision; keep quiet."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export(model: torch.nn.Module, input_shape: tuple[int, ...]) -> onnx.ModelProto:
    example = (torch.zeros(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with _quiet():
        program = torch.onnx.export(
            model,
            example,
            input_names=["features"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,  # one self-contained file
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    return program.model_proto


def export_float_onnx(model: torch.nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The float model (BN folded) as ONNX: the baseline for the float->INT8 drop."""
    return _serialize(_export(model.eval(), input_shape))


def export_int8_onnx(reference: torch.fx.GraphModule, input_shape: tuple[int, ...]) -> bytes:
    """The PT2E-converted QDQ graph as ONNX with int8 weights and int32 biases."""
    model = _export(reference, input_shape)
    _fold_weights(model)
    return _serialize(model)


def _serialize(model: onnx.ModelProto) -> bytes:
    import onnx

    model.producer_name = "tinyconv"
    model.producer_version = ""  # keep files byte-identical across torch patch versions
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def _fold_weights(model: onnx.ModelProto) -> None:
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts: dict[str, np.ndarray] = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}

    def attr(node: onnx.NodeProto, name: str, default: int) -> int:
        for a in node.attribute:
            if a.name == name:
                return int(a.i)
        return default

    remove: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    folded = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            continue
        x = consts[node.input[0]].astype(np.float64)
        scale = consts[node.input[1]].astype(np.float64)
        zp = consts[node.input[2]] if len(node.input) > 2 else np.zeros((), np.int8)
        axis = attr(node, "axis", 1)
        shape = [1] * x.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        # ONNX QuantizeLinear rounds half to even, like np.rint and torch's quantize ops.
        q = np.rint(x / scale.reshape(shape)) + zp.astype(np.float64).reshape(shape)
        q = np.clip(q, -128, 127)
        out = node.output[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "Clip":
            clip = users[0]
            lo, hi = (float(consts[n]) if n in consts else None for n in (list(clip.input[1:3]) + ["", ""])[:2])
            q = np.clip(q, -128 if lo is None else lo, 127 if hi is None else hi)
            remove.append(clip)
            out = clip.output[0]
            users = consumers.get(out, [])
        if not users or any(u.op_type != "DequantizeLinear" for u in users):
            continue
        name = f"{node.input[0]}_int8"
        new_inits.append(numpy_helper.from_array(q.astype(np.int8), name))
        for user in users:
            user.input[0] = name
        remove.append(node)
        folded += 1
    if folded == 0:
        raise ExportError("ONNX export: found no quantized weights to store as int8")
    for node in remove:
        graph.node.remove(node)
    graph.initializer.extend(new_inits)

    # Biases: float -> int32 with scale = input scale * per-channel weight scale (as TFLite).
    producer = {out: node for node in graph.node for out in node.output}
    for node in list(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        s_x = consts[dq_x.input[1]].astype(np.float64).reshape(())
        s_w = consts[dq_w.input[1]].astype(np.float64).reshape(-1)
        bias = consts[node.input[2]].astype(np.float64).reshape(-1)
        bias_scale = (s_x * s_w) * np.ones_like(bias)
        q_bias = np.clip(np.rint(bias / bias_scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = node.input[2]
        graph.initializer.extend(
            [
                numpy_helper.from_array(q_bias, f"{base}_int32"),
                numpy_helper.from_array(bias_scale.astype(np.float32), f"{base}_int32_scale"),
                numpy_helper.from_array(np.zeros_like(q_bias), f"{base}_int32_zero_point"),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}_int32", f"{base}_int32_scale", f"{base}_int32_zero_point"],
            [f"{base}_dequantized"],
            name=f"{base}_DequantizeLinear",
            axis=0,
        )
        graph.node.insert(list(graph.node).index(node), dq)
        node.input[2] = f"{base}_dequantized"

    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
