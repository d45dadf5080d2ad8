"""TFLite's int8 kernel arithmetic in PyTorch: a converted QDQ graph computed as TFLite Micro does.

The converted QDQ graph computes each layer in float32 and rounds once with torch.round (half
to even). TFLite's int8 kernels (TFLite Micro, and LiteRT's BUILTIN_REF) accumulate in int32
and requantize with a 31-bit fixed-point multiplier and two roundings (gemmlowp's
SaturatingRoundingDoublingHighMul to a 2^-shift grid, then RoundingDivideByPOT); MEAN folds
1/N into that multiplier. The first rounding pushes values up to 2^-(shift+1) LSB below a tie
up (shift 7-10 here), so 0.05 % of the stem's outputs and 1-2 % of the last conv's outputs
differ by one LSB or more, and the classifier turns one pooled LSB into up to ~4 output LSB.
`integer_kernel_reference` replaces each quantized layer of a converted graph by that integer
arithmetic, from the graph's own int8 weights, int32 biases and scales: TFLite Micro's output
bit for bit. (LiteRT's reference FULLY_CONNECTED alone differs: it rounds the multiplier to
16 bits and rounds once, 1 LSB on 1-2 % of logits.)

The fixed-point helpers and kernels are public: `tinyconv.export.int8_reference` (the streaming
model's .tflite interpreter) builds on them, and `graph_constant` reads the converted graph's
int8 weights and scales for the ESPHome export.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from tinyconv.models.fusion import QuantizationError
from tinyconv.models.pt2e import graph_attr


def quantize_multiplier(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TFLite's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    mantissa, exponent = torch.frexp(real.to(torch.float64))
    multiplier = torch.floor(mantissa * float(1 << 31) + 0.5).to(torch.int64)  # TfLiteRound, >= 0
    shift = exponent.to(torch.int64)
    carry = multiplier == (1 << 31)
    multiplier = torch.where(carry, multiplier // 2, multiplier)
    shift = shift + carry.to(torch.int64)
    tiny = shift < -31
    return torch.where(tiny, 0, multiplier), torch.where(tiny, 0, shift)


def multiply_by_quantized_multiplier(x: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """TFLite's MultiplyByQuantizedMultiplier (int64 tensors in and out), rounding twice as it does.

    SaturatingRoundingDoublingHighMul(x << left, multiplier) rounds to nearest with ties up,
    then RoundingDivideByPOT(right) rounds to nearest with ties away from zero. |x| < 2^31.
    """
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0)
    product = torch.bitwise_left_shift(x, left) * multiplier
    nudge = torch.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.div(product + nudge, 1 << 31, rounding_mode="trunc")
    mask = torch.bitwise_left_shift(torch.ones_like(right), right) - 1
    threshold = torch.bitwise_right_shift(mask, 1) + (high < 0).to(torch.int64)
    return torch.bitwise_right_shift(high, right) + (torch.bitwise_and(high, mask) > threshold).to(torch.int64)


def int8_conv_or_linear(
    q_in: torch.Tensor,
    in_zero_point: int,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    multiplier: torch.Tensor,
    shift: torch.Tensor,
    out_zero_point: int,
    act_min: int,
    act_max: int,
    conv: tuple[Any, ...] | None,
) -> torch.Tensor:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, int8 per-channel (reference kernels).

    The accumulation runs in float64 on integer values, which is exact (|acc| < 2^53).
    `conv` holds (stride, padding, dilation, groups), or None for a linear layer.
    """
    x = q_in.to(torch.float64) - in_zero_point
    acc = F.linear(x, weight) if conv is None else F.conv2d(x, weight, None, *conv)
    acc = torch.round(acc).to(torch.int64)
    view = (1, -1) + (1,) * (acc.dim() - 2)
    if bias is not None:
        acc = acc + bias.view(view)
    out = multiply_by_quantized_multiplier(acc, multiplier.view(view), shift.view(view)) + out_zero_point
    return out.clamp(act_min, act_max).to(torch.int8)


def int8_mean(
    q_in: torch.Tensor, in_zero_point: int, multiplier: int, shift: int, out_zero_point: int, qmin: int, qmax: int
) -> torch.Tensor:
    """MEAN over H, W (LiteRT's reference QuantizedMeanOrSum): 1/N folded into the multiplier."""
    count = int(q_in.shape[-1] * q_in.shape[-2])
    # 63 - CountLeadingZeros(N), capped so the multiplier stays valid.
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << extra) // count
    total = (q_in.to(torch.int64) - in_zero_point).sum(dim=(-2, -1), keepdim=True)
    out = multiply_by_quantized_multiplier(
        total, torch.tensor(multiplier, dtype=torch.int64), torch.tensor(shift - extra, dtype=torch.int64)
    )
    return (out + out_zero_point).clamp(qmin, qmax).to(torch.int8)


_SHAPE_OPS = {
    torch.ops.aten.flatten.using_ints,
    torch.ops.aten.view.default,
    torch.ops.aten.reshape.default,
    torch.ops.aten.squeeze.dim,
    torch.ops.aten.squeeze.dims,
    torch.ops.aten.unsqueeze.default,
    torch.ops.aten.permute.default,
}


def graph_constant(gm: torch.fx.GraphModule, node: Any) -> torch.Tensor:
    """The value of a constant subgraph (get_attr, or an op on get_attrs such as a weight quantize)."""
    if isinstance(node, (int, float)):
        return torch.tensor(float(node), dtype=torch.float64)
    if isinstance(node, torch.fx.Node):
        if node.op == "get_attr":
            return graph_attr(gm, str(node.target)).detach()
        if node.op == "call_function":
            args = [graph_constant(gm, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
            with torch.no_grad():
                return node.target(*args, **node.kwargs)  # type: ignore[operator]
    raise QuantizationError(f"expected a constant, got {node}")


_RELU_OPS = (torch.ops.aten.relu.default, torch.ops.aten.relu_.default)


def _f32(value: Any) -> float:
    """A scale as TFLite stores it (float32), widened to a Python float."""
    return float(torch.tensor(float(value), dtype=torch.float32))


def _from_input(node: Any) -> bool:
    """Whether a node is the graph input or a reshape of it (no quantized tensor upstream)."""
    if not isinstance(node, torch.fx.Node):
        return False
    return node.op == "placeholder" or (node.target in _SHAPE_OPS and _from_input(node.args[0]))


def integer_kernel_reference(converted: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of a converted QDQ graph whose int8 layers compute what the int8 kernels compute.

    Same inputs and outputs as `converted` (float features in, dequantized logits out) and the
    same int8 tensors in between, but every conv/linear (+ReLU) -> quantize is int32
    accumulation of the int8 weights plus the int32 bias and TFLite's fixed-point
    requantization, and the global average pool is TFLite's int8 MEAN. Everything comes from
    the graph itself (its weights and scales), not from the .tflite, so the comparison still
    checks the conversion. Raises QuantizationError for a quantized op it does not know.
    """
    qd = torch.ops.quantized_decomposed
    q_ops = {qd.quantize_per_tensor.default}
    dq_ops = {qd.dequantize_per_tensor.default}
    gm = copy.deepcopy(converted)
    graph = gm.graph
    count = 0

    def register(value: torch.Tensor) -> torch.fx.Node:
        nonlocal count
        name = f"_int_ref_{count}"
        count += 1
        gm.register_buffer(name, value)
        return graph.get_attr(name)

    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in q_ops:
            continue
        src, s_out, z_out, qmin, qmax = node.args[:5]
        s_out, z_out, qmin, qmax = _f32(s_out), int(z_out), int(qmin), int(qmax)
        relu = isinstance(src, torch.fx.Node) and src.target in _RELU_OPS
        core = src.args[0] if relu else src
        if not isinstance(core, torch.fx.Node) or core.op != "call_function":
            continue  # the model input: stays as it is
        dq_in = core.args[0] if core.args else None
        if not (isinstance(dq_in, torch.fx.Node) and dq_in.target in dq_ops):
            if _from_input(core):
                continue  # the model input (quantized from float features): stays as it is
            raise QuantizationError(f"integer reference: {node.name} quantizes {core.target}, which has no int8 input")
        q_in, s_in, z_in = dq_in.args[0], _f32(dq_in.args[1]), int(dq_in.args[2])
        act_min = max(qmin, z_out) if relu else qmin  # a fused ReLU clamps at the zero point
        with graph.inserting_before(node):
            if core.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default):
                weight_dq = core.args[1]
                if not (isinstance(weight_dq, torch.fx.Node) and "dequantize" in str(weight_dq.target)):
                    raise QuantizationError(f"integer reference: {core.name} has no int8 weight")
                weight = graph_constant(gm, weight_dq.args[0]).to(torch.float64)  # int8 values
                s_w = graph_constant(gm, weight_dq.args[1]).to(torch.float32).to(torch.float64).reshape(-1)
                step = s_in * s_w.expand(weight.shape[0])  # the int32 bias scale, per channel
                bias_node = core.args[2] if len(core.args) > 2 else core.kwargs.get("bias")
                bias = None
                if bias_node is not None:
                    bias = register(torch.round(graph_constant(gm, bias_node).to(torch.float64) / step).to(torch.int64))
                multiplier, shift = quantize_multiplier(step / s_out)
                conv = None
                if core.target == torch.ops.aten.conv2d.default:
                    defaults = ([1, 1], [0, 0], [1, 1], 1)  # stride, padding, dilation, groups
                    conv = tuple(core.args[3:]) + defaults[len(core.args) - 3 :]
                args = (q_in, z_in, register(weight), bias, register(multiplier), register(shift))
                new = graph.call_function(int8_conv_or_linear, (*args, z_out, act_min, qmax, conv))
            elif core.target == torch.ops.aten.adaptive_avg_pool2d.default and list(core.args[1]) == [1, 1]:
                m, sh = quantize_multiplier(torch.tensor(s_in / s_out, dtype=torch.float64))
                new = graph.call_function(int8_mean, (q_in, z_in, int(m), int(sh), z_out, act_min, qmax))
            elif core.target in _SHAPE_OPS and not relu and (s_in, z_in) == (s_out, z_out):
                new = graph.call_function(core.target, (q_in, *core.args[1:]), dict(core.kwargs))
            else:
                raise QuantizationError(f"integer reference: no int8 kernel emulation for {core.target}")
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm.eval()
