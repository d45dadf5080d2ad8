"""Conv+BN(+ReLU) fusion and BN folding of TinyConv V1/V2 and the streaming family.

`fuse_tiny_conv` collapses each ConvBNReLU into a `FusedConvBNReLU2d` (the unit PT2E QAT
trains, `tinyconv.models.pt2e`); `fold_tiny_conv` folds BN into a plain Conv2d(bias) for
post-training quantization and the float ONNX export. In `models/` (not `trainer/`) so that
export can rebuild these forms without importing the trainer (DESIGN.md).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyconv.errors import TinyconvError
from tinyconv.models.streaming import StreamTinyConv
from tinyconv.models.tinyconv import ConvBNReLU, TinyConvWakeword

# Architectures built only from ConvBNReLU units (+ pooling/slicing and one Linear): fusable.
_FUSABLE = (TinyConvWakeword, StreamTinyConv)
FusableModel = TinyConvWakeword | StreamTinyConv
_M = TypeVar("_M", bound=nn.Module)


class QuantizationError(TinyconvError, ValueError):
    """A model cannot be fused or quantized (unsupported architecture or layer)."""


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
        # torch types a Conv2d's kernel_size/stride/padding/dilation as tuple[int, ...], its constructor as 2-tuples.
        conv = nn.Conv2d(
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,  # type: ignore[arg-type]
            bias=True,
        )
        with torch.no_grad():
            weight, bias = self.folded_weight_bias()
            conv.weight.copy_(weight)
            assert conv.bias is not None
            conv.bias.copy_(bias)
        return nn.Sequential(conv, nn.ReLU()) if self.relu else nn.Sequential(conv)


def check_supported(model: nn.Module) -> FusableModel:
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
        is_conv_or_bn = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d))
        if is_conv_or_bn and id(module) not in inside_units:
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


def _replace_units(model: _M, make: Callable[[nn.Module], nn.Module | None]) -> _M:
    for name, child in list(model.named_children()):
        new = make(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _replace_units(child, make)
    return model


def fuse_tiny_conv(model: nn.Module) -> FusableModel:
    """A copy of a TinyConv V1/V2 with every Conv+BN+ReLU collapsed into a `FusedConvBNReLU2d`.

    The original is untouched. No standalone BatchNorm module remains; in eval mode the copy
    computes the same function as the original (folded conv). Raises QuantizationError for an
    unsupported architecture or a conv/BN outside a ConvBNReLU unit.
    """
    fused = copy.deepcopy(check_supported(model))

    def make(child: nn.Module) -> nn.Module | None:
        if isinstance(child, ConvBNReLU):
            conv, bn, _ = child
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # check_supported checked
            unit = FusedConvBNReLU2d(conv, bn, relu=True)
            unit.train(child.training)
            return unit
        return None

    return _replace_units(fused, make)


def fold_tiny_conv(model: nn.Module) -> FusableModel:
    """A copy in eval mode with each Conv+BN+ReLU folded into Conv2d(bias)+ReLU (PTQ, float ONNX)."""
    fused = check_supported(model) if _is_fused(model) else fuse_tiny_conv(model)
    folded = copy.deepcopy(fused)

    def make(child: nn.Module) -> nn.Module | None:
        return child.to_folded() if isinstance(child, FusedConvBNReLU2d) else None

    _replace_units(folded, make)
    drop_dropout(folded)
    return folded.eval()


def drop_dropout(model: FusableModel) -> None:
    """Dropout -> Identity before quantizing.

    In a PT2E graph the dropout's output gets its own observer, so at inference the tensor is
    requantized from the pooled scale to a second scale (clamping it), while the converter
    removes the dropout and that requantization with it: torch and TFLite then disagree by
    tens of output LSB. Without dropout the pooled tensor has one scale end to end.
    """
    model.dropout = nn.Identity()


def _is_fused(model: nn.Module) -> bool:
    return isinstance(model, _FUSABLE) and any(isinstance(m, FusedConvBNReLU2d) for m in model.modules())
