"""Streamable TinyConv (`stream_tinyconv`): trains on 1 s windows, runs one step per 30 ms.

The features are treated as a 1-D signal over time with 40 channels: input [B, T, 40] becomes
[B, 40, T, 1] (channels = frontend channels, height = time, width 1), so every layer is a
Conv2d with a (k, 1) kernel and 'valid' padding in time. That is streamable by construction:

- stem: Conv(40 -> c0, kernel k0 x 1, time stride 3) + BN + ReLU. Each step consumes 3 new
  feature frames (30 ms), the frontend's 10 ms step times the stride.
- blocks: V2 (`use_depthwise=True`): depthwise (k x 1) + BN + ReLU, then pointwise 1x1 + BN +
  ReLU (64 channels at width 1); V1: one standard (k x 1) conv + BN + ReLU (24 channels at
  width 1, so both variants cost ~23 K MACs per step). No time stride after the stem: one
  output step per input step.
- head: the last `head_steps` steps of the last block, flattened, one Linear layer.

Non-streaming form (`forward`, what the trainer trains): a 98-frame window -> logits of the last
step. `forward_steps` gives the logits of every step of a longer sequence at once.

Streaming form (`StreamingTinyConv`, same weights): one invoke per 3 new frames; each layer with
a temporal kernel keeps a ring buffer of its last (k - 1) input steps (the stem: its last k0 - 3
input frames), the head one of its last (head_steps - 1) steps. All state starts at zero, so the
streaming output equals the non-streaming output on the window ending at the same frame as soon
as one full window has been streamed (tests/streaming/test_model.py checks every step).

Every conv is a `ConvBNReLU`, so `tinyconv.models.fusion` and `tinyconv.models.pt2e` fuse and quantize it like TinyConv.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from tinyconv.models.registry import register_model
from tinyconv.models.tinyconv import ConvBNReLU, scaled_channels

# The stem's time stride: frames consumed per streaming step (ESPHome feeds [1, 3, 40]).
TIME_STRIDE = 3


def conv_of(unit: nn.Module) -> nn.Conv2d:
    """The Conv2d of a unit: ConvBNReLU / folded Sequential (first child) or a fused unit (.conv)."""
    conv = getattr(unit, "conv", None)
    if not isinstance(conv, nn.Conv2d) and isinstance(unit, nn.Sequential):
        conv = unit[0]
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{type(unit).__name__} is not a conv unit (no Conv2d as .conv or first child)")
    return conv


def _kernel_t(unit: nn.Module) -> int:
    return int(conv_of(unit).kernel_size[0])


class StreamTinyConv(nn.Module):
    """Streamable TinyConv: V1 (`use_depthwise=False`) or V2 (`use_depthwise=True`)."""

    # Marks a family whose checkpoints export to ESPHome (tinyconv.export.esphome).
    streamable = True

    def __init__(
        self,
        *,
        num_classes: int,
        use_depthwise: bool = True,
        width_multiplier: float = 1.0,
        stem_channels: int = 32,
        channels: int | None = None,
        stem_kernel: int = 5,
        kernels: tuple[int, ...] = (5, 7, 9, 11),
        head_steps: int = 4,
        dropout: float = 0.1,
        num_frames: int = 98,
        num_channels: int = 40,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if stem_kernel < TIME_STRIDE:
            raise ValueError(f"stem_kernel must be >= the time stride {TIME_STRIDE}, got {stem_kernel}")
        if not kernels or min(kernels) < 1 or head_steps < 1:
            raise ValueError(f"kernels must be integers >= 1 and head_steps >= 1, got {kernels}, {head_steps}")
        steps = (num_frames - stem_kernel) // TIME_STRIDE + 1
        needed = sum(k - 1 for k in kernels) + head_steps
        if steps < needed:
            raise ValueError(
                f"the receptive field ({needed} steps = {stem_kernel + TIME_STRIDE * (needed - 1)} frames) does "
                f"not fit the {num_frames}-frame training window ({steps} steps): use smaller kernels or head_steps"
            )
        if channels is None:
            channels = 64 if use_depthwise else 24
        c0 = scaled_channels(stem_channels if use_depthwise else channels, width_multiplier)
        c = scaled_channels(channels, width_multiplier)
        self.num_classes = num_classes
        self.use_depthwise = use_depthwise
        self.width = c
        self.input_shape = (num_frames, num_channels)
        self.kernels = tuple(int(k) for k in kernels)
        self.head_steps = int(head_steps)
        self.stem = ConvBNReLU(num_channels, c0, (stem_kernel, 1), (TIME_STRIDE, 1))
        blocks = []
        c_in = c0
        for k in self.kernels:
            if use_depthwise:
                blocks.append(nn.Sequential(
                    ConvBNReLU(c_in, c_in, (k, 1), groups=c_in),
                    ConvBNReLU(c_in, c, (1, 1)),
                ))
            else:
                blocks.append(nn.Sequential(ConvBNReLU(c_in, c, (k, 1))))
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.dropout: nn.Module = nn.Dropout(dropout)  # fusion.drop_dropout swaps in nn.Identity
        self.classifier = nn.Linear(c * head_steps, num_classes)

    # ---- properties used by export and reports ---------------------------------------------

    @property
    def stem_kernel(self) -> int:
        return _kernel_t(self.stem)

    @property
    def feature_dims(self) -> list[int]:
        """Channel width of each output of `forward_features` (stem, then each block)."""
        return [int(conv_of(self.stem).out_channels)] + [self.width] * len(self.blocks)

    @property
    def receptive_field_frames(self) -> int:
        steps = sum(k - 1 for k in self.kernels) + self.head_steps
        return self.stem_kernel + TIME_STRIDE * (steps - 1)

    def macs_per_step(self) -> int:
        """Multiply-accumulates of one streaming step (one invoke, 3 new frames)."""
        total = 0
        for unit in self.conv_units():
            conv = conv_of(unit)
            kh, kw = conv.kernel_size
            total += conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
        return total + self.classifier.in_features * self.classifier.out_features

    def conv_units(self) -> list[nn.Module]:
        units: list[nn.Module] = [self.stem]
        for block in self.blocks:
            units.extend(block.children())
        return units

    # ---- non-streaming form ----------------------------------------------------------------

    def _align(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, F, T', 1], dropping the leading frames so the last step ends at the last frame."""
        drop = (x.shape[1] - self.stem_kernel) % TIME_STRIDE
        return x[:, drop:].transpose(1, 2).unsqueeze(-1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, T, F] features -> [stem, block1, ...] maps of shape [B, C, steps, 1]."""
        h = self.stem(self._align(x))
        maps = [h]
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        return maps

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self._align(x))
        for block in self.blocks:
            h = block(h)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from the last `head_steps` steps of a [B, C, steps, 1] map."""
        last = h[:, :, h.shape[2] - self.head_steps :, :]
        return self.classifier(self.dropout(torch.flatten(last, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] window -> logits [B, classes] of its last step."""
        return self.head(self._trunk(x))

    def forward_steps(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] sequence -> logits [B, steps, classes] of every step with a full receptive field."""
        h = self._trunk(x)[..., 0]  # [B, C, S]
        windows = h.unfold(2, self.head_steps, 1)  # [B, C, S - H + 1, H]
        flat = windows.permute(0, 2, 1, 3).flatten(2)  # [B, S', C * H], same order as flatten(h[..., -H:])
        return self.classifier(self.dropout(flat))


class StreamingTinyConv(nn.Module):
    """The streaming form of a `StreamTinyConv`: `step([B, 3, F])` -> logits [B, classes].

    Shares the weights (and BN statistics) of the wrapped model; call it in eval mode. State is
    one buffer per layer with a temporal kernel, zero after `reset()`.
    """

    def __init__(self, model: StreamTinyConv) -> None:
        super().__init__()
        self.model = model
        self._state: list[torch.Tensor] | None = None

    def reset(self) -> None:
        self._state = None

    def state_shapes(self, batch: int = 1) -> list[tuple[int, ...]]:
        """[B, C, steps, 1] of each ring buffer: stem input frames, each temporal conv's input, the head."""
        m = self.model
        shapes: list[tuple[int, ...]] = [(batch, m.input_shape[1], m.stem_kernel - TIME_STRIDE, 1)]
        for unit in m.conv_units()[1:]:
            k = _kernel_t(unit)
            if k > 1:
                shapes.append((batch, int(conv_of(unit).in_channels), k - 1, 1))
        shapes.append((batch, m.width, m.head_steps - 1, 1))
        return shapes

    @staticmethod
    def _push(buffer: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(concat(buffer, new) along time, the updated buffer: its last `len(buffer)` steps)."""
        window = torch.cat([buffer, new], dim=2)
        return window, window[:, :, window.shape[2] - buffer.shape[2] :]

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        m = self.model
        if frames.dim() != 3 or frames.shape[1] != TIME_STRIDE or frames.shape[2] != m.input_shape[1]:
            raise ValueError(f"step expects [B, {TIME_STRIDE}, {m.input_shape[1]}] frames, got {list(frames.shape)}")
        if self._state is None or self._state[0].shape[0] != frames.shape[0]:
            self._state = [torch.zeros(s, dtype=frames.dtype) for s in self.state_shapes(frames.shape[0])]
        state = iter(range(len(self._state)))
        new_state: list[torch.Tensor] = []

        def push(x: torch.Tensor) -> torch.Tensor:
            i = next(state)
            window, kept = self._push(self._state[i], x)  # type: ignore[index]
            new_state.append(kept)
            return window

        h = m.stem(push(frames.transpose(1, 2).unsqueeze(-1)))
        for block in m.blocks:
            for unit in block.children():
                h = unit(push(h) if _kernel_t(unit) > 1 else h)
        window = push(h)
        logits = m.classifier(torch.flatten(window, 1))
        self._state = new_state
        return logits

    def run(self, features: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> logits [B, T // 3, classes]: `step` over consecutive blocks of 3 frames."""
        steps = features.shape[1] // TIME_STRIDE
        return torch.stack(
            [self.step(features[:, i * TIME_STRIDE : (i + 1) * TIME_STRIDE]) for i in range(steps)], dim=1
        )


def is_streamable(model: nn.Module) -> bool:
    return bool(getattr(model, "streamable", False))


# The registry passes each variant's `fixed` and `defaults` (models/registry.py): bodies only build.
@register_model
def stream_tinyconv(**kwargs: Any) -> StreamTinyConv:
    """Generic entry: `use_depthwise` and `width_multiplier` come from the config."""
    return StreamTinyConv(**kwargs)


@register_model(fixed={"use_depthwise": False, "width_multiplier": 1.0})
def stream_tinyconv_v1(**kwargs: Any) -> StreamTinyConv:
    return StreamTinyConv(**kwargs)


@register_model(fixed={"use_depthwise": True, "width_multiplier": 1.0})
def stream_tinyconv_v2(**kwargs: Any) -> StreamTinyConv:
    return StreamTinyConv(**kwargs)


@register_model(fixed={"width_multiplier": 0.125}, defaults={"kernels": (3, 3), "head_steps": 2})
def stream_tinyconv_test(**kwargs: Any) -> StreamTinyConv:
    """A tiny streamable model (8 channels, 2 small blocks) so every test runs in seconds."""
    return StreamTinyConv(**kwargs)
