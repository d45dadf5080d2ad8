"""Training a streaming wake-word model for how ESPHome runs it, and selecting it on streams.

ESPHome's micro_wake_word invokes the model every 30 ms (3 new feature frames), averages the
last `sliding_window_size` probabilities and fires when the mean exceeds the cutoff; it ignores
the first 74 feature slices (740 ms) after start and after each detection. So a streaming model
must rise within a few hundred ms after the wake word ends, stay up for several steps, and stay
low everywhere else in long audio. The synthesized 1 s clips hold the wake word end-aligned
(ending 0-150 ms before the clip's end), which is one instant of that; this module makes the
rest at feature level:

- `shift_windows`: positives become the window that ends `d` frames after the clip's end
  (d drawn from 0..`train.stream_positive_delay_ms`), the clip followed by a random negative
  clip (or, for `train.context_positive_fraction` of them, the clip heard in the training
  streams, which run on after it: `FeatureSet.context_positives`); a share
  (`train.stream_negative_fraction`) of negatives become a window across the
  junction of two negative clips, as a window slides over long negative audio.
- `FeatureStreams` / `stream_report`: the validation split as two long feature streams (every
  negative clip back to back, then its long negative audio if the dataset has some; every
  positive, heard in that audio when there is some, after two negative clips) run through the model's
  `forward_steps` and ESPHome's detector at the export's cutoff grid: recall at the lowest cutoff
  whose false accepts per hour on the negative stream are <= `train.target_fa_per_hour`
  (`train.selection_metric: stream_recall_at_fa`).

Clips are featurized separately (each with its own frontend pre-roll), so a junction is not
exactly what the frontend computes on continuous audio; `benchmarks/e2e.py` measures the
exported model on real audio streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tinyconv.data.dataset import FeatureSet
from tinyconv.device.esphome_detector import CUTOFF_GRID, DEFAULT_SLIDING_WINDOW, detect
from tinyconv.errors import TinyconvError

# A detection up to this long after a positive clip ends still counts (benchmarks/e2e.py and the
# simulator's stream scoring use the same tolerance).
TOLERANCE_MS = 1000
# Negative clips before each positive in the positive stream: 2 s > ESPHome's 740 ms (74-slice) wait
# (2.2 s from a detection, which lands after the previous positive's end) minus that positive's
# own lead-in, so one detection cannot mask the next positive.
GAP_CLIPS = 2
# Output steps per forward pass over a long stream (bounds activation memory).
CHUNK_STEPS = 16384


class StreamSelectionError(TinyconvError):
    """Stream-based selection was asked for a model or a split that cannot provide it."""


def shift_windows(x: torch.Tensor, partner: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Window i = frames [shifts[i], shifts[i] + T) of cat(x[i], partner[i]) along time.

    shifts 0 keeps the clip; shifts T would be the partner alone. x, partner: [B, T, F]."""
    b, t, f = x.shape
    both = torch.cat([x, partner], dim=1)
    idx = torch.arange(t).view(1, t) + shifts.view(b, 1).clamp(0, t)
    return torch.gather(both, 1, idx.unsqueeze(-1).expand(b, t, f))


def streaming_shifts(y: torch.Tensor, g: torch.Generator, *, positive_index: int, max_delay_frames: int,
                     negative_fraction: float, num_frames: int) -> torch.Tensor:
    """Per clip: positives 0..max_delay_frames; a `negative_fraction` of negatives 1..T-1; else 0."""
    b = len(y)
    pos = y == positive_index
    delay = torch.randint(0, max_delay_frames + 1, (b,), generator=g)
    junction = torch.randint(1, num_frames, (b,), generator=g)
    take = torch.rand(b, generator=g) < negative_fraction
    return torch.where(pos, delay, torch.where(take, junction, torch.zeros_like(delay)))


@dataclass
class FeatureStreams:
    """A split's clips as two long feature streams [T, F] (see the module docstring)."""

    negative: np.ndarray
    positive: np.ndarray
    spans: np.ndarray  # [P, 2] (start, end) frame of each positive clip in `positive`
    step_ms: int = 10

    @property
    def negative_hours(self) -> float:
        return self.negative.shape[0] * self.step_ms / 3_600_000.0


def build_feature_streams(fs: FeatureSet, *, seed: int = 0, step_ms: int = 10) -> FeatureStreams:
    """Every everyday negative clip back to back (seeded order), then the split's long negative
    streams (data.negative_stream_minutes); every positive after GAP_CLIPS negative clips, as
    heard in those streams when the split has them (`FeatureSet.context_positives`).

    Near misses ("confusable") are left out (`FeatureSet.everyday_negatives`): false accepts per
    hour are a measure on everyday audio, as the field and benchmarks/e2e.py measure them; near
    misses are nearly half the synthesized negatives (thousands of "stey tiny" an hour) and stay the
    clip-level metric's job (train.target_far)."""
    if fs.positive_index is None:
        raise StreamSelectionError("stream selection needs a wake-word split (a positive label)")
    x = fs.x
    pos = np.flatnonzero(fs.y == fs.positive_index)
    neg = np.flatnonzero(fs.everyday_negatives())
    if len(pos) == 0 or len(neg) == 0:
        raise StreamSelectionError(f"stream selection needs positive and negative validation clips, got "
                                   f"{len(pos)} and {len(neg)}")
    rng = np.random.default_rng([seed, 14])
    negative = fs.negative_stream(rng.permutation(len(neg)))
    assert negative is not None  # neg is not empty
    t = x.shape[1]
    # A positive as the device hears it when the split has long negative audio (mixed over it,
    # the frontend running on it before: FeatureSet.context_positives), else the clip.
    heard = fs.context_positives[:, :t] if fs.context_positives is not None else x[pos]
    parts, spans = [], []
    for k, j in enumerate(rng.permutation(len(pos))):
        parts.extend(x[rng.choice(neg, GAP_CLIPS)])
        parts.append(heard[j])
        start = (k * (GAP_CLIPS + 1) + GAP_CLIPS) * t
        spans.append((start, start + t))
    parts.extend(x[rng.choice(neg, GAP_CLIPS)])  # room to fire after the last positive
    return FeatureStreams(negative.astype(np.float32), np.concatenate(parts, axis=0).astype(np.float32),
                          np.array(spans, dtype=np.int64), step_ms)


def step_probabilities(model: nn.Module, frames: np.ndarray, positive_index: int,
                       device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(end frame of each step, P(positive) of each step) of a streamable model over a [T, F] stream.

    Steps are every 3 frames from the first full receptive field, aligned so the last step ends at
    the last frame (as the model's own `forward_steps`); computed in chunks with the needed overlap.
    """
    if not callable(getattr(model, "forward_steps", None)) or not hasattr(model, "receptive_field_frames"):
        raise StreamSelectionError(f"{type(model).__name__} is not a streaming model (no forward_steps): stream "
                                   "selection needs a stream_tinyconv model")
    rf, k0 = int(model.receptive_field_frames), int(model.stem_kernel)
    stride = 3
    if frames.shape[0] < rf:
        raise StreamSelectionError(f"a stream of {frames.shape[0]} frames is shorter than the receptive field ({rf})")
    drop = (frames.shape[0] - k0) % stride
    n = (frames.shape[0] - drop - rf) // stride + 1
    probs = []
    model.eval()
    with torch.no_grad():
        for s0 in range(0, n, CHUNK_STEPS):
            m = min(CHUNK_STEPS, n - s0)
            a = drop + stride * s0
            chunk = torch.from_numpy(np.ascontiguousarray(frames[a : a + rf + stride * (m - 1)]))[None].to(device)
            logits = model.forward_steps(chunk)[0]
            probs.append(torch.softmax(logits.float(), dim=-1)[:, positive_index].cpu().numpy())
    ends = drop + rf + stride * np.arange(n)
    return ends, np.concatenate(probs)


def esphome_detections(probs: np.ndarray, cutoff: float, window: int = DEFAULT_SLIDING_WINDOW,
                       first_invoke: int = 0) -> np.ndarray:
    """Step indices where ESPHome's detector fires on float probabilities (as uint8, round(p * 255)):
    tinyconv.device.esphome_detector, the loop the exporter and the simulator use. `first_invoke`:
    ESPHome's invoke count at probs[0] (a stream whose first steps were not run)."""
    u8 = np.clip(np.round(np.asarray(probs, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return detect(u8, cutoff, window, first_invoke=first_invoke)


def stream_report(model: nn.Module, streams: FeatureStreams, positive_index: int, *,
                  target_fa_per_hour: float, window: int = DEFAULT_SLIDING_WINDOW,
                  device: torch.device | str = "cpu", cutoffs: tuple[float, ...] = CUTOFF_GRID) -> dict[str, Any]:
    """Recall on the positive stream at the lowest cutoff meeting the FA/h target on the negative stream.

    When no cutoff meets it, `met` is False and the numbers are those of the highest cutoff."""
    neg_ends, p_neg = step_probabilities(model, streams.negative, positive_index, device)
    ends, p_pos = step_probabilities(model, streams.positive, positive_index, device)
    # ESPHome counts invokes from the stream's first 3 frames; the first step here ends later.
    first_neg, first_pos = int(neg_ends[0]) // 3 - 1, int(ends[0]) // 3 - 1
    hours = streams.negative_hours
    tol = TOLERANCE_MS // streams.step_ms
    curve = []
    for c in cutoffs:
        fa = len(esphome_detections(p_neg, c, window, first_invoke=first_neg))
        det = ends[esphome_detections(p_pos, c, window, first_invoke=first_pos)]
        # A positive is detected when a detection's window ends inside (start, end + tolerance].
        lo = np.searchsorted(det, streams.spans[:, 0], side="right")
        hi = np.searchsorted(det, streams.spans[:, 1] + tol, side="right")
        curve.append({"cutoff": float(c), "recall": float(np.mean(hi > lo)), "false_accepts": fa,
                      "fa_per_hour": fa / hours})
    meeting = [row for row in curve if row["fa_per_hour"] <= target_fa_per_hour]
    best = meeting[0] if meeting else curve[-1]
    return {**best, "met": bool(meeting), "target_fa_per_hour": target_fa_per_hour, "negative_hours": hours,
            "positives": int(len(streams.spans)), "sliding_window_size": window, "curve": curve}
