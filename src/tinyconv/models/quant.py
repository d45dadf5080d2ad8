"""Conv+BN+ReLU fusion and PT2E quantization of TinyConv (TFLite Micro integer scheme).

Shared by `tinyconv.trainer.qat` (QAT fine-tuning) and `tinyconv.export` (rebuilding a QAT
model from a checkpoint, post-training quantization), so that export never imports the trainer.

The scheme is TFLite Micro's: int8 weights per output channel, symmetric, zero point 0, range
[-127, 127]; int8 activations per tensor (asymmetric, [-128, 127]); int32 bias with scale
input_scale * weight_scale (the converter derives it). The quantizer is litert-torch's
`PT2EQuantizer`, so the QDQ graph is exactly what `litert_torch.convert` lowers to int8 TFLite
kernels and the learned QAT ranges reach the .tflite unchanged (no re-calibration).

Pins (DESIGN.md section 4): torch==2.13.0, torchao==0.18.0, litert-torch==0.10.0. The
combination needs the pattern-wrapping workaround in `_install_litert_pattern_workaround`;
tests/trainer/test_qat.py fails loudly if an upgrade breaks or obsoletes it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyconv.models.streaming import StreamTinyConv
from tinyconv.models.tinyconv import ConvBNReLU, TinyConvWakeword

# Architectures built only from ConvBNReLU units (+ pooling/slicing and one Linear): fusable.
_FUSABLE = (TinyConvWakeword, StreamTinyConv)

PINNED_VERSIONS = {"torch": "2.13.0", "torchao": "0.18.0", "litert-torch": "0.10.0"}

# torch.export traces with a dynamic batch so the same graph trains on batches and converts
# with batch 1 (litert-torch needs the dynamic dim; an example batch of 1 would specialize it).
_EXAMPLE_BATCH = 2
_MAX_BATCH = 1 << 16

from tinyconv.errors import TinyconvError


class QuantizationError(TinyconvError, ValueError):
    """A model cannot be fused or quantized (unsupported architecture or layer)."""


# --------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------


class FusedConvBNReLU2d(nn.Module):
    """One fused unit: Conv2d + BatchNorm2d (+ ReLU) owned by a single module.

    Train mode computes conv -> batch norm (batch statistics, running stats updated) -> ReLU as
    plain functional ops: exactly the aten pattern torchao's `prepare_qat_pt2e` rewrites into
    simulated BN folding, with the weight fake-quantized *after* folding (Jacob et al. 2018,
    section 3.2). Eval mode is one convolution with the folded weight and bias, i.e. what the
    int8 kernel computes. `freeze_bn` switches train mode to running statistics.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool = True) -> None:
        super().__init__()
        if conv.bias is not None:
            raise QuantizationError("fusion expects Conv2d(bias=False) before BatchNorm2d")
        self.conv = copy.deepcopy(conv)
        self.bn = copy.deepcopy(bn)
        self.relu = relu
        self.bn_frozen = False

    def folded_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """BN folded into the conv: w * gamma / sigma and beta - mu * gamma / sigma."""
        bn = self.bn
        assert bn.running_var is not None and bn.running_mean is not None
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(inv_std)
        scale = gamma * inv_std
        weight = self.conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = beta - bn.running_mean * scale
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if self.training:
            y = F.conv2d(x, c.weight, None, c.stride, c.padding, c.dilation, c.groups)
            y = F.batch_norm(
                y,
                self.bn.running_mean,
                self.bn.running_var,
                self.bn.weight,
                self.bn.bias,
                training=not self.bn_frozen,
                momentum=self.bn.momentum if self.bn.momentum is not None else 0.1,
                eps=self.bn.eps,
            )
        else:
            weight, bias = self.folded_weight_bias()
            y = F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)
        return F.relu(y) if self.relu else y

    def to_folded(self) -> nn.Sequential:
        """A plain Conv2d(bias=True) (+ ReLU) with the BN folded in: for PTQ and float export."""
        c = self.conv
        conv = nn.Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups, bias=True
        )
        with torch.no_grad():
            weight, bias = self.folded_weight_bias()
            conv.weight.copy_(weight)
            assert conv.bias is not None
            conv.bias.copy_(bias)
        return nn.Sequential(conv, nn.ReLU()) if self.relu else nn.Sequential(conv)


def check_supported(model: nn.Module) -> TinyConvWakeword:
    """The model if QAT fusion supports it, else a QuantizationError naming what is not."""
    if not isinstance(model, _FUSABLE):
        raise QuantizationError(
            f"QAT fusion supports TinyConv V1/V2 (TinyConvWakeword, StreamTinyConv) only; got architecture "
            f"{type(model).__name__!r}"
        )
    inside_units: set[int] = set()
    for unit in model.modules():
        if isinstance(unit, (ConvBNReLU, FusedConvBNReLU2d)):
            inside_units.update(id(m) for m in unit.modules())
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)) and id(module) not in inside_units:
            raise QuantizationError(
                f"layer {name!r} ({type(module).__name__}) is not part of a Conv+BN+ReLU unit; "
                "QAT fusion supports only TinyConv's ConvBNReLU layout"
            )
        if isinstance(module, ConvBNReLU):
            kinds = [type(m) for m in module]
            if kinds != [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]:
                raise QuantizationError(
                    f"layer {name!r} is a ConvBNReLU with children {[k.__name__ for k in kinds]}; "
                    "expected Conv2d, BatchNorm2d, ReLU"
                )
    return model


def _replace_units(model: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    for name, child in list(model.named_children()):
        new = make(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _replace_units(child, make)
    return model


def fuse_tiny_conv(model: nn.Module) -> TinyConvWakeword:
    """A copy of a TinyConv V1/V2 with every Conv+BN+ReLU collapsed into a `FusedConvBNReLU2d`.

    The original is untouched. No standalone BatchNorm module remains; in eval mode the copy
    computes the same function as the original (folded conv). Raises QuantizationError for an
    unsupported architecture or a conv/BN outside a ConvBNReLU unit.
    """
    fused = copy.deepcopy(check_supported(model))

    def make(child: nn.Module) -> nn.Module | None:
        if isinstance(child, ConvBNReLU):
            conv, bn, _ = child
            unit = FusedConvBNReLU2d(conv, bn, relu=True)
            unit.train(child.training)
            return unit
        return None

    return _replace_units(fused, make)  # type: ignore[return-value]


def fold_tiny_conv(model: nn.Module) -> TinyConvWakeword:
    """A copy in eval mode with each Conv+BN+ReLU folded into Conv2d(bias)+ReLU (PTQ, float ONNX)."""
    fused = model if _is_fused(model) else fuse_tiny_conv(model)
    folded = copy.deepcopy(fused)

    def make(child: nn.Module) -> nn.Module | None:
        return child.to_folded() if isinstance(child, FusedConvBNReLU2d) else None

    _replace_units(folded, make)
    _drop_dropout(folded)
    return folded.eval()


def _drop_dropout(model: TinyConvWakeword) -> None:
    """Dropout -> Identity before quantizing.

    In a PT2E graph the dropout's output gets its own observer, so at inference the tensor is
    requantized from the pooled scale to a second scale (clamping it), while the converter
    removes the dropout and that requantization with it: torch and TFLite then disagree by
    tens of output LSB. Without dropout the pooled tensor has one scale end to end.
    """
    model.dropout = nn.Identity()


def _is_fused(model: nn.Module) -> bool:
    return isinstance(model, _FUSABLE) and any(isinstance(m, FusedConvBNReLU2d) for m in model.modules())


# --------------------------------------------------------------------------------------------
# litert-torch quantizer and the PT2E workaround
# --------------------------------------------------------------------------------------------


class _PatternModule(nn.Module):
    """Wraps a pattern function so torch.export accepts it (see the workaround below)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


_WORKAROUND_MARK = "_tinyconv_wraps_patterns"


def _install_litert_pattern_workaround() -> None:
    """litert-torch 0.10.0 + torchao 0.18.0: wrap conv-bn pattern functions in an nn.Module.

    litert-torch's conv+bn QAT annotator passes a plain function to torchao's
    `_get_aten_graph_module_for_pattern`, which now calls `torch.export.export` and fails with
    "Expected `mod` to be an instance of `torch.nn.Module`, got function". Wrapping the
    function is what torchao itself does for its own patterns. Idempotent.
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils

    original = utils._get_aten_graph_module_for_pattern
    if getattr(original, _WORKAROUND_MARK, False):
        return

    @functools.wraps(original)
    def wrapped(pattern: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(pattern, nn.Module):
            pattern = _PatternModule(pattern)
        return original(pattern, example_inputs, *args, **kwargs)

    setattr(wrapped, _WORKAROUND_MARK, True)
    utils._get_aten_graph_module_for_pattern = wrapped


def make_quantizer(*, is_qat: bool) -> Any:
    """litert-torch's PT2E quantizer with the TFLM scheme (per-channel symmetric int8 weights)."""
    from litert_torch.quantize import pt2e_quantizer as pq

    _install_litert_pattern_workaround()
    return pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat))


def _export(model: nn.Module, input_shape: tuple[int, int]) -> torch.fx.GraphModule:
    example = torch.zeros(_EXAMPLE_BATCH, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


# --------------------------------------------------------------------------------------------
# QAT model
# --------------------------------------------------------------------------------------------

_BATCH_NORM_OPS = (torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit.default)


class QATTinyConv(nn.Module):
    """A PT2E-prepared TinyConv with fake quantization, trainable like the float model.

    An exported graph does not switch BN/dropout on `.train()`/`.eval()` by itself; this wrapper
    does (torchao's move_exported_model_to_train/eval), keeps BN statistics frozen across those
    switches once frozen, and stops observers in eval mode (torchao's fake-quant modules would
    otherwise keep updating ranges on validation batches).
    """

    def __init__(self, graph_module: torch.fx.GraphModule, *, num_classes: int, input_shape: tuple[int, int]) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.num_classes = num_classes
        self.input_shape = input_shape
        # Buffers so that the freeze state travels in the checkpoint's state_dict.
        self.register_buffer("bn_frozen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("observers_frozen", torch.zeros((), dtype=torch.bool))
        self.train(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> QATTinyConv:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        gm = self.graph_module
        if mode:
            move_exported_model_to_train(gm)
            if bool(self.bn_frozen):
                self._set_bn_training(False)
        else:
            move_exported_model_to_eval(gm)
        gm.apply(enable_observer if mode and not bool(self.observers_frozen) else disable_observer)
        for module in self.modules():
            module.training = mode
        return self

    def _set_bn_training(self, training: bool) -> int:
        count = 0
        for node in self.graph_module.graph.nodes:
            if node.op == "call_function" and node.target in _BATCH_NORM_OPS:
                args = list(node.args)
                args[5] = training  # aten.batch_norm(input, w, b, mean, var, training, ...)
                node.args = tuple(args)
                count += 1
        self.graph_module.recompile()
        return count

    def freeze_bn(self) -> None:
        """Use running BN statistics from now on (they stop updating)."""
        self.bn_frozen.fill_(True)
        if self.training and self._set_bn_training(False) == 0:
            raise QuantizationError("freeze_bn found no batch-norm op in the prepared QAT graph")

    def freeze_observers(self) -> None:
        """Stop updating quantization ranges; fake quantization continues with the learned ones."""
        from torchao.quantization.pt2e import disable_observer

        self.observers_frozen.fill_(True)
        self.graph_module.apply(disable_observer)

    def to_reference(self) -> torch.fx.GraphModule:
        """The converted QDQ graph (BN folded, learned scales as constants), eval mode, a copy."""
        return convert_prepared(self.graph_module)

    def to_integer_reference(self) -> torch.fx.GraphModule:
        """`to_reference` computed as the int8 kernels compute it (what TFLite Micro outputs)."""
        return integer_kernel_reference(self.to_reference())


def convert_prepared(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    gm = copy.deepcopy(prepared)
    move_exported_model_to_eval(gm)
    # fold_quantize=False keeps weight quantize/dequantize pairs, which litert-torch's STATIC
    # QDQ lowering turns into int8 weights; it also keeps the graph runnable by the ONNX exporter.
    return quantize_biases_int32(convert_pt2e(gm, fold_quantize=False))


def _get_attr(module: nn.Module, target: str) -> torch.Tensor:
    return functools.reduce(getattr, target.split("."), module)  # type: ignore[arg-type,return-value]


def _dq_scale(node: Any, module: torch.fx.GraphModule) -> torch.Tensor | None:
    """The scale of a dequantize node (a float for per-tensor, a get_attr tensor per-channel)."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function" or "dequantize" not in str(node.target):
        return None
    scale = node.args[1]
    if isinstance(scale, torch.fx.Node) and scale.op == "get_attr":
        return _get_attr(module, str(scale.target)).detach().to(torch.float64)
    if isinstance(scale, (float, int)):
        return torch.tensor([float(scale)], dtype=torch.float64)
    return None


def quantize_biases_int32(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Round every conv/linear bias onto the int32 grid TFLite stores it on (in place).

    The converter stores bias as int32 with scale input_scale * weight_scale[c]. Leaving the
    float bias in the PyTorch reference makes it disagree with the int8 kernels by one LSB on
    ~1 % of activations (rounding ties), which compounds through the layers; rounding it here
    makes the reference compute what the device computes (and the converter's rounding a no-op).
    """
    targets = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in targets or len(node.args) < 3:
            continue
        bias_node = node.args[2]
        if not isinstance(bias_node, torch.fx.Node) or bias_node.op != "get_attr":
            continue
        s_in, s_w = _dq_scale(node.args[0], gm), _dq_scale(node.args[1], gm)
        if s_in is None or s_w is None:
            continue
        bias = _get_attr(gm, str(bias_node.target))
        step = (s_in * s_w).reshape(-1)
        with torch.no_grad():
            rounded = torch.round(bias.detach().to(torch.float64) / step).clamp(-(2**31), 2**31 - 1) * step
            bias.copy_(rounded.to(bias.dtype))
    return gm


def prepare_qat(model: nn.Module) -> QATTinyConv:
    """Fuse a float TinyConv and insert fake quantization (PT2E QAT). The input is untouched."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    fused = fuse_tiny_conv(model)
    # QAT fine-tunes without dropout (see _drop_dropout): a short fine-tune needs no extra
    # regularization, and a train-mode dropout would also skew the observed ranges by 1/(1-p).
    _drop_dropout(fused)
    fused.train()
    gm = _export(fused, fused.input_shape)
    prepared = prepare_qat_pt2e(gm, make_quantizer(is_qat=True))
    return QATTinyConv(prepared, num_classes=fused.num_classes, input_shape=fused.input_shape)


def load_qat_state(float_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> QATTinyConv:
    """Rebuild a QAT model from the float architecture and a `QATTinyConv.state_dict()`."""
    qat = prepare_qat(float_model)
    # Observers have not seen data yet, so per-channel buffers are still empty: run one batch
    # so every observer/fake-quant buffer has its trained shape before loading.
    with torch.no_grad():
        qat(torch.zeros(_EXAMPLE_BATCH, *qat.input_shape))
    try:
        qat.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise QuantizationError(f"QAT state does not match the model architecture: {exc}") from exc
    qat.train(False)
    return qat


def quantize_ptq(float_model: nn.Module, calibration: Iterable[torch.Tensor]) -> torch.fx.GraphModule:
    """Post-training quantization: fold BN, observe activation ranges on `calibration` batches."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    folded = fold_tiny_conv(float_model)
    prepared = prepare_pt2e(_export(folded, folded.input_shape), make_quantizer(is_qat=False))
    seen = 0
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
            seen += int(batch.shape[0])
    if seen == 0:
        raise QuantizationError("post-training quantization needs at least one calibration example")
    return quantize_biases_int32(convert_pt2e(prepared, fold_quantize=False))


# --------------------------------------------------------------------------------------------
# Integer-kernel reference: the converted graph computed the way TFLite's int8 kernels compute
# --------------------------------------------------------------------------------------------
#
# The converted QDQ graph computes each layer in float32 and rounds once with torch.round (half
# to even). TFLite's int8 kernels (TFLite Micro, and LiteRT's BUILTIN_REF) accumulate in int32
# and requantize with a 31-bit fixed-point multiplier and two roundings (gemmlowp's
# SaturatingRoundingDoublingHighMul to a 2^-shift grid, then RoundingDivideByPOT); MEAN folds
# 1/N into that multiplier. The first rounding pushes values up to 2^-(shift+1) LSB below a tie
# up (shift 7-10 here), so 0.05 % of the stem's outputs and 1-2 % of the last conv's outputs
# differ by one LSB or more, and the classifier turns one pooled LSB into up to ~4 output LSB.
# `integer_kernel_reference` replaces each quantized layer of a converted graph by that integer
# arithmetic, from the graph's own int8 weights, int32 biases and scales: TFLite Micro's output
# bit for bit. (LiteRT's reference FULLY_CONNECTED alone differs: it rounds the multiplier to
# 16 bits and rounds once, 1 LSB on 1-2 % of logits.)


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


def _int8_conv_or_linear(
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


def _int8_mean(
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


def _const(gm: torch.fx.GraphModule, node: Any) -> torch.Tensor:
    """The value of a constant subgraph (get_attr, or an op on get_attrs such as a weight quantize)."""
    if isinstance(node, (int, float)):
        return torch.tensor(float(node), dtype=torch.float64)
    if isinstance(node, torch.fx.Node):
        if node.op == "get_attr":
            return _get_attr(gm, str(node.target)).detach()
        if node.op == "call_function":
            args = [_const(gm, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
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
                weight = _const(gm, weight_dq.args[0]).to(torch.float64)  # int8 values
                s_w = _const(gm, weight_dq.args[1]).to(torch.float32).to(torch.float64).reshape(-1)
                step = s_in * s_w.expand(weight.shape[0])  # the int32 bias scale, per channel
                bias_node = core.args[2] if len(core.args) > 2 else core.kwargs.get("bias")
                bias = None
                if bias_node is not None:
                    bias = register(torch.round(_const(gm, bias_node).to(torch.float64) / step).to(torch.int64))
                multiplier, shift = quantize_multiplier(step / s_out)
                conv = None
                if core.target == torch.ops.aten.conv2d.default:
                    defaults = ([1, 1], [0, 0], [1, 1], 1)  # stride, padding, dilation, groups
                    conv = tuple(core.args[3:]) + defaults[len(core.args) - 3 :]
                args = (q_in, z_in, register(weight), bias, register(multiplier), register(shift))
                new = graph.call_function(_int8_conv_or_linear, (*args, z_out, act_min, qmax, conv))
            elif core.target == torch.ops.aten.adaptive_avg_pool2d.default and list(core.args[1]) == [1, 1]:
                m, sh = quantize_multiplier(torch.tensor(s_in / s_out, dtype=torch.float64))
                new = graph.call_function(_int8_mean, (q_in, z_in, int(m), int(sh), z_out, act_min, qmax))
            elif core.target in _SHAPE_OPS and not relu and (s_in, z_in) == (s_out, z_out):
                new = graph.call_function(core.target, (q_in, *core.args[1:]), dict(core.kwargs))
            else:
                raise QuantizationError(f"integer reference: no int8 kernel emulation for {core.target}")
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm.eval()
