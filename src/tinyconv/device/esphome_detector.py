"""ESPHome `micro_wake_word`'s wake-word detector, as its firmware runs it (2024.7 - 2025.x).

One implementation, used by the exporter's cutoff search (export/esphome.py), the simulator's
stream evaluation (firmware_sim/streaming.py) and training-time checkpoint selection
(trainer/streams.py). From esphome/components/micro_wake_word (micro_wake_word.cpp,
streaming_model.cpp, __init__.py):

- the frontend delivers one 40-value feature slice every 10 ms; the model is invoked once per
  `stride` slices (3 for microWakeWord v2 and ours: 30 ms) and its uint8 output goes into a ring
  buffer of `sliding_window_size` values, zero-filled at start and after each detection;
- `ignore_windows_` starts at -MIN_SLICES_BEFORE_DETECTION (74) and is incremented once per
  feature *slice* (not per invoke): no detection in the first 74 slices (740 ms, ~24.7 invokes)
  after start and after each detection, while the model keeps running and the window refills;
- detection: sum of the window's uint8 values > quantized_cutoff * window, where
  quantized_cutoff = int(probability_cutoff * 255) (the code generator truncates: 0.97 -> 247).
  ESPHome 2024.7 compared the float mean sum / (255 * window) > cutoff instead; the two differ
  only for sums between int(c * 255) * w and c * 255 * w.

Not modelled: after a detection the firmware stops the microphone and reloads the model (fresh
state) when the voice pipeline restarts it; on a continuous test stream the model's state is
kept. Newer firmware (2025.x with detection profiles) waits 100 slices and counts only slices
whose latest probability is below the cutoff.
"""

from __future__ import annotations

import numpy as np

MIN_SLICES_BEFORE_DETECTION = 74  # esphome micro_wake_word.h (2024.7 - 2025.x)
FEATURE_SLICE_MS = 10  # one frontend slice
DEFAULT_STRIDE = 3  # feature slices per invoke ([1, 3, 40] input: 30 ms)
DEFAULT_SLIDING_WINDOW = 5
DEFAULT_PROBABILITY_CUTOFF = 0.9
CUTOFF_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))  # 0.50 .. 0.99, the exporter's search


def quantized_cutoff(cutoff: float) -> int:
    """The uint8 threshold ESPHome's code generator writes: int(probability_cutoff * 255)."""
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"probability cutoff must be in [0, 1], got {cutoff}")
    return int(cutoff * 255)


def _as_u8(probs_u8: np.ndarray) -> np.ndarray:
    p = np.asarray(probs_u8)
    if p.ndim != 1:
        raise ValueError(f"probabilities must be one stream [N], got shape {list(p.shape)}")
    if p.dtype != np.uint8:
        raise ValueError(f"probabilities must be the model's uint8 outputs, got {p.dtype}")
    return p.astype(np.int64)


def detect(probs_u8: np.ndarray, cutoff: float, window: int = DEFAULT_SLIDING_WINDOW, *,
           stride: int = DEFAULT_STRIDE, wait_slices: int = MIN_SLICES_BEFORE_DETECTION,
           first_invoke: int = 0) -> np.ndarray:
    """Invoke indices (into `probs_u8`) at which ESPHome reports a detection on one stream.

    `probs_u8[k]` is the uint8 output of invoke `first_invoke + k` since the detector started
    (invoke i runs after feature slice (i + 1) * stride); earlier invokes, if any, count as 0.
    The index returned is the newest invoke in the detecting window (the detection itself happens
    at that invoke's slice, or at the slice where the wait ends if that is later).
    """
    if window < 1 or stride < 1 or wait_slices < 0 or first_invoke < 0:
        raise ValueError(f"window and stride must be >= 1, wait_slices and first_invoke >= 0 "
                         f"(got {window}, {stride}, {wait_slices}, {first_invoke})")
    p = _as_u8(probs_u8)
    n = len(p)
    threshold = quantized_cutoff(cutoff) * window
    c = np.concatenate([[0], np.cumsum(p)])
    # Window sums with no reset: invokes before the stream count as 0 (zero-filled ring buffer).
    full = c[1:] - c[np.maximum(np.arange(1, n + 1) - window, 0)]
    out: list[int] = []
    arm_slice = 0  # slice count at start / at the last detection
    zero_through = -1  # invokes <= this were cleared by the last detection's reset
    for k in map(int, np.flatnonzero(full > threshold)):
        invoke = first_invoke + k
        # Window k is what every check sees from its slice until the next invoke's slice - 1.
        if (invoke + 2) * stride - 1 < arm_slice + wait_slices:
            continue
        lo = max(k - window + 1, zero_through + 1, 0)
        if lo > k or int(c[k + 1] - c[lo]) <= threshold:
            continue
        out.append(k)
        arm_slice = max((invoke + 1) * stride, arm_slice + wait_slices)
        zero_through = k
    return np.asarray(out, dtype=np.int64)


def count_detections(probs_u8: np.ndarray, cutoff: float, window: int = DEFAULT_SLIDING_WINDOW, **kwargs: int) -> int:
    """How many detections ESPHome reports on one stream of uint8 probabilities."""
    return int(len(detect(probs_u8, cutoff, window, **kwargs)))
