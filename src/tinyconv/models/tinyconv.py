"""TinyConv students: V1 (standard convolutions) and V2 (depthwise-separable, `use_depthwise`).

Input: float features [batch, frames, channels] from the TFLM frontend (98 x 40 for 1 s).
Layout: a 10x4 stride-2 stem (as micro_speech / DS-CNN), then blocks of 3x3 convolutions, global
average pooling and one fully connected layer. Every conv is a `ConvBNReLU` (Sequential with
children conv/bn/relu) so QAT fusion finds each unit by structure, not by name lists.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from tinyconv.models.registry import register_model


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU: one fused unit after QAT fusion."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int] = (0, 0),
        groups: int = 1,
        dilation: tuple[int, int] = (1, 1),
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=False),
        )


def _block(channels: int, stride: int, use_depthwise: bool, time_dilation: int = 1) -> nn.Sequential:
    s = (stride, stride)
    pad = (time_dilation, 1)
    dil = (time_dilation, 1)
    if use_depthwise:
        return nn.Sequential(
            ConvBNReLU(channels, channels, (3, 3), s, pad, groups=channels, dilation=dil),
            ConvBNReLU(channels, channels, (1, 1)),
        )
    return nn.Sequential(ConvBNReLU(channels, channels, (3, 3), s, pad, dilation=dil))


def scaled_channels(base: int, width_multiplier: float) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of 8 (SIMD-friendly)."""
    return max(8, int(round(base * width_multiplier / 8)) * 8)


class TinyConvWakeword(nn.Module):
    """TinyConv V1 (`use_depthwise=False`) or V2 (`use_depthwise=True`)."""

    def __init__(
        self,
        *,
        num_classes: int,
        use_depthwise: bool = True,
        width_multiplier: float = 1.0,
        base_channels: int = 64,
        num_blocks: int = 4,
        strided_blocks: int = 1,
        time_dilations: tuple[int, ...] | None = None,
        dropout: float = 0.1,
        num_frames: int = 98,
        num_channels: int = 40,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0 <= strided_blocks <= num_blocks:
            raise ValueError(f"strided_blocks must be in [0, {num_blocks}], got {strided_blocks}")
        dilations = tuple(time_dilations) if time_dilations else (1,) * num_blocks
        if len(dilations) != num_blocks or min(dilations) < 1:
            raise ValueError(f"time_dilations must be {num_blocks} integers >= 1, got {dilations}")
        c = scaled_channels(base_channels, width_multiplier)
        self.num_classes = num_classes
        self.use_depthwise = use_depthwise
        self.width = c
        self.input_shape = (num_frames, num_channels)
        # Stem: 10 frames x 4 channels, stride 2x2, "same"-style padding (98x40 -> 49x20).
        self.stem = ConvBNReLU(1, c, (10, 4), (2, 2), (4, 1))
        # The first `strided_blocks` blocks halve time and frequency again (49x20 -> 25x10 -> ...):
        # each one doubles the receptive field growth of the blocks after it and cuts their MACs 4x.
        self.blocks = nn.ModuleList(
            _block(c, 2 if i < strided_blocks else 1, use_depthwise, dilations[i]) for i in range(num_blocks)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout: nn.Module = nn.Dropout(dropout)  # fusion.drop_dropout swaps in nn.Identity
        self.classifier = nn.Linear(c, num_classes)

    @property
    def feature_dims(self) -> list[int]:
        """Channel width of each output of `forward_features` (stem, then each block)."""
        return [self.width] * (1 + len(self.blocks))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, T, F] features -> [stem, block1, ...] maps of shape [B, C, T', F']."""
        h = self.stem(x.unsqueeze(1))
        maps = [h]
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        return maps

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(h), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.unsqueeze(1))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


# Each variant fixes what its name says; the registry passes `fixed` (and refuses other values)
# and `defaults` to the factory, so every body just builds the model.


@register_model
def tinyconv(**kwargs: Any) -> TinyConvWakeword:
    """Generic entry: every hyper-parameter (depthwise toggle and width included) comes from the config."""
    return TinyConvWakeword(**kwargs)


@register_model(fixed={"use_depthwise": False, "width_multiplier": 1.0})
def tinyconv_v1(**kwargs: Any) -> TinyConvWakeword:
    return TinyConvWakeword(**kwargs)


@register_model(fixed={"use_depthwise": False, "width_multiplier": 0.5})
def tinyconv_v1_050(**kwargs: Any) -> TinyConvWakeword:
    return TinyConvWakeword(**kwargs)


@register_model(fixed={"use_depthwise": True, "width_multiplier": 1.0})
def tinyconv_v2(**kwargs: Any) -> TinyConvWakeword:
    return TinyConvWakeword(**kwargs)


@register_model(fixed={"use_depthwise": True, "width_multiplier": 0.75})
def tinyconv_v2_075(**kwargs: Any) -> TinyConvWakeword:
    return TinyConvWakeword(**kwargs)


@register_model(fixed={"use_depthwise": True, "width_multiplier": 0.5})
def tinyconv_v2_050(**kwargs: Any) -> TinyConvWakeword:
    return TinyConvWakeword(**kwargs)


# Two blocks, so the config's four per-block dilations cannot apply: fixed undilated.
@register_model(fixed={"width_multiplier": 0.125, "num_blocks": 2, "time_dilations": (1, 1)})
def tinyconv_test(**kwargs: Any) -> TinyConvWakeword:
    """A tiny model (8 channels, 2 blocks; V2 unless the config says V1) so every test runs in seconds."""
    return TinyConvWakeword(**kwargs)
