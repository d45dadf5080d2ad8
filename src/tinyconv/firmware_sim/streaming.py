"""Streaming wake-word evaluation: the model slid over long audio, as firmware runs it.

Two model kinds, told apart by the input size:
- window models (ours): input = a whole clip of features (98 x 40); invoked every
  `stride_frames` feature frames on the last 98 frames; output logits -> softmax -> P(positive).
- streaming models (microWakeWord): input = `stride` new frames ([1, 3, 40]); the model keeps
  its own state in resource variables (one interpreter per stream, never reset inside it);
  output is already a probability (uint8).

Streaming models run exactly as ESPHome's micro_wake_word feeds them (the firmware they ship in):
- features: the frontend's uint16 value v becomes int8 as (v * 256 + 333) // 666 - 128, clamped
  (ESPHome's integer form of v / 25.6 / 26 * 256 - 128; within 1 LSB of the model's own
  26/255 input scale);
- probability: the raw uint8 output / 255 (ESPHome averages uint8 values over 255 * window; the
  tensor's 1/256 scale would put every probability 0.4 % lower and shift the cutoff by 1 LSB).

Detection is ESPHome micro_wake_word's own loop (tinyconv.device.esphome_detector, shared with
the exporter's cutoff search): uint8 probabilities in a sliding window of `window`, a detection
when their sum > int(cutoff * 255) * window, no detection in the first 74 feature slices (740 ms)
after the start of each stream and after each detection (the window is zeroed and refills; the
model keeps running). Window models (ours, 98 frames) go through the same loop with their
probability rounded to uint8 and one invoke per `stride_frames` slices.

Cross-checked (see docs/FIRMWARE_SIM.md): per invoke, these probabilities match an independent
detector (pymicro-wakeword 2.5.0, TFLite C library) on the same audio to within a few uint8
steps (kernel rounding), and DET points on the e2e streams are identical.
Metrics: a positive counts as detected if a detection falls in [start, end + tolerance_s];
every other detection is a false accept; FA/hour is over the total duration of all streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyconv.config import FrontendConfig
from tinyconv.device.esphome_detector import (
    DEFAULT_PROBABILITY_CUTOFF,
    DEFAULT_SLIDING_WINDOW,
    MIN_SLICES_BEFORE_DETECTION,
    detect,
)
from tinyconv.device.esphome_features import ESPHOME_INPUT_SCALE, ESPHOME_INPUT_ZERO_POINT, esphome_features_int8
from tinyconv.device.runners import Runner, dequantize
from tinyconv.features import StreamingFrontend
from tinyconv.firmware_sim.accuracy import model_input
from tinyconv.metrics import softmax


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    window: int = DEFAULT_SLIDING_WINDOW  # ESPHome sliding_window_size (uint8 values summed)
    cutoff: float = DEFAULT_PROBABILITY_CUTOFF  # ESPHome probability_cutoff (compared as int(cutoff * 255))
    wait_slices: int = MIN_SLICES_BEFORE_DETECTION  # 10 ms feature slices ignored after start / a detection
    tolerance_s: float = 1.0  # a detection up to this long after a positive ends still counts
    stride_frames: int = 3  # window models: invoke every N feature frames (30 ms)

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride_frames < 1:
            raise ValueError("window and stride_frames must be >= 1")
        if self.wait_slices < 0:
            raise ValueError(f"wait_slices must be >= 0, got {self.wait_slices}")
        if not 0.0 <= self.cutoff <= 1.0:
            raise ValueError(f"cutoff must be in [0, 1], got {self.cutoff}")


@dataclass
class Stream:
    samples: np.ndarray  # int16 at 16 kHz
    positives: list[tuple[float, float]] = field(default_factory=list)  # (start_s, end_s)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / 16000.0


MWW_INPUT_QUANT = (ESPHOME_INPUT_SCALE, ESPHOME_INPUT_ZERO_POINT)  # what every microWakeWord model declares


def _is_mww_input(runner: Runner) -> bool:
    scale, zp = runner.input_quant
    return runner.input_dtype == np.int8 and zp == MWW_INPUT_QUANT[1] and abs(scale / MWW_INPUT_QUANT[0] - 1) < 0.01


def stream_probabilities(runner: Runner, samples: np.ndarray, *, positive_index: int = 1, stride_frames: int = 3,
                         frontend: FrontendConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P(positive) over time: (times_s at the end of each inference, probabilities)."""
    fcfg = frontend or FrontendConfig()
    feats = StreamingFrontend(fcfg).process(np.asarray(samples, dtype=np.int16))
    per_input = int(np.prod(runner.input_shape)) // fcfg.num_channels
    if per_input < 1 or per_input * fcfg.num_channels != int(np.prod(runner.input_shape)):
        raise ValueError(f"{runner.name}: input shape {list(runner.input_shape)} is not a whole number of "
                         f"{fcfg.num_channels}-channel feature frames")
    streaming = per_input < fcfg.num_frames  # the model consumes new frames only, keeping state
    step = per_input if streaming else stride_frames
    ends = list(range(per_input, feats.shape[0] + 1, step))
    esphome = streaming and _is_mww_input(runner)
    qfeats = esphome_features_int8(feats, fcfg.feature_scale) if esphome else None
    runner.reset()  # fresh state per stream; never reset between invokes (the state is the model's memory)
    probs = np.zeros(len(ends), dtype=np.float32)
    for k, end in enumerate(ends):
        if qfeats is not None:  # ESPHome: consecutive, non-overlapping blocks of `per_input` frames
            raw = runner.run(qfeats[end - per_input : end].reshape(runner.input_shape)).reshape(-1)
        else:
            raw = runner.run(model_input(runner, feats[end - per_input : end])).reshape(-1)
        if streaming and raw.size == 1 and raw.dtype == np.uint8:
            probs[k] = float(raw[0]) / 255.0  # ESPHome: uint8 probability / 255
            continue
        y = dequantize(raw, runner.output_quant)
        probs[k] = float(y[0]) if y.size == 1 else float(softmax(y[None, :])[0, positive_index])
    offset_s = fcfg.window_ms / 1000.0
    times = np.array([(e - 1) * fcfg.step_ms / 1000.0 + offset_s for e in ends], dtype=np.float64)
    return times, np.clip(probs, 0.0, 1.0)


def probabilities_u8(probs: np.ndarray) -> np.ndarray:
    """Probabilities as the uint8 values ESPHome's detector sums (exact for uint8 model outputs / 255)."""
    return np.clip(np.round(np.asarray(probs, np.float64) * 255.0), 0, 255).astype(np.uint8)


def detection_times(times: np.ndarray, probs: np.ndarray, cfg: DetectorConfig, cutoff: float,
                    stride: int, first_invoke: int) -> np.ndarray:
    """Times of ESPHome's detections on one stream (the end of the newest invoke in the window)."""
    k = detect(probabilities_u8(probs), cutoff, cfg.window, stride=stride, wait_slices=cfg.wait_slices,
               first_invoke=first_invoke)
    return np.asarray(times, np.float64)[k]


def score(detections: list[np.ndarray], streams: list[Stream], tolerance_s: float) -> dict[str, float]:
    hits = total = false = 0
    for det, st in zip(detections, streams, strict=True):
        matched = np.zeros(len(det), dtype=bool)
        for start, end in st.positives:
            total += 1
            inside = (det >= start) & (det <= end + tolerance_s)
            if inside.any():
                hits += 1
            matched |= inside
        false += int((~matched).sum())
    hours = sum(s.duration_s for s in streams) / 3600.0
    return {"positives": total, "detected": hits, "frr": 1.0 - hits / total if total else 0.0,
            "false_accepts": false, "hours": hours, "fa_per_hour": false / hours if hours else 0.0}


def evaluate_streams(runner: Runner, streams: list[Stream], config: DetectorConfig | None = None, *,
                     positive_index: int = 1, target_fa_per_hour: float = 0.5,
                     cutoffs: np.ndarray | None = None) -> dict[str, Any]:
    cfg = config or DetectorConfig()
    curves = [stream_probabilities(runner, s.samples, positive_index=positive_index,
                                   stride_frames=cfg.stride_frames) for s in streams]
    stride, first = _invoke_schedule(runner, cfg.stride_frames)

    def detections(c: float) -> list[np.ndarray]:
        return [detection_times(t, p, cfg, c, stride, first) for t, p in curves]

    at_cutoff = score(detections(cfg.cutoff), streams, cfg.tolerance_s)
    grid = np.round(np.linspace(0.0, 1.0, 101), 2) if cutoffs is None else np.asarray(cutoffs)
    det_curve = []
    for c in grid:
        s = score(detections(float(c)), streams, cfg.tolerance_s)
        det_curve.append({"cutoff": float(c), "frr": s["frr"], "fa_per_hour": s["fa_per_hour"]})
    meeting = [d for d in det_curve if d["fa_per_hour"] <= target_fa_per_hour]
    best = min(meeting, key=lambda d: (d["frr"], d["cutoff"])) if meeting else None
    return {"detector": {"loop": "esphome micro_wake_word", "window": cfg.window, "cutoff": cfg.cutoff,
                         "wait_slices": cfg.wait_slices, "stride_slices": stride,
                         "tolerance_s": cfg.tolerance_s, "stride_frames": cfg.stride_frames},
            "at_cutoff": at_cutoff, "det_curve": det_curve, "target_fa_per_hour": target_fa_per_hour,
            "cutoff_for_target": best}


def _invoke_schedule(runner: Runner, stride_frames: int) -> tuple[int, int]:
    """(feature slices per invoke, ESPHome's invoke count at the first probability) for this model:
    a streaming model is invoked every `per_input` slices from the first; a window model every
    `stride_frames` slices once its first full window exists (earlier invokes count as 0)."""
    fcfg = FrontendConfig()  # stream_probabilities' frontend
    per_input = max(1, int(np.prod(runner.input_shape)) // fcfg.num_channels)
    stride = per_input if per_input < fcfg.num_frames else stride_frames
    return stride, max(0, per_input // stride - 1)


def build_streams(positives: list[np.ndarray], negatives: list[np.ndarray], *, seed: int = 0,
                  positive_stream_s: float = 60.0, negative_stream_s: float = 120.0,
                  gap_s: tuple[float, float] = (3.0, 6.0), background_gain: float = 0.3) -> list[Stream]:
    """Positives placed inside long background streams, plus a negative-only stream.

    Backgrounds are the negative clips (speech and noise) concatenated in a seeded random order.
    """
    rng = np.random.default_rng(seed)
    sr = 16000

    def background(seconds: float) -> np.ndarray:
        need = int(seconds * sr)
        parts, have = [], 0
        while have < need and negatives:
            clip = negatives[int(rng.integers(len(negatives)))]
            parts.append(clip)
            have += len(clip)
        bg = np.concatenate(parts)[:need] if parts else np.zeros(need, dtype=np.int16)
        return np.pad(bg, (0, need - len(bg)))

    streams: list[Stream] = []
    if positives:
        bg = background(positive_stream_s).astype(np.float32) * background_gain
        marks: list[tuple[float, float]] = []
        t = float(rng.uniform(*gap_s))
        order = rng.permutation(len(positives))
        k = 0
        while k < len(order):
            clip = positives[order[k]].astype(np.float32)
            start = int(t * sr)
            if start + len(clip) > len(bg):
                break
            bg[start : start + len(clip)] += clip
            marks.append((start / sr, (start + len(clip)) / sr))
            t = (start + len(clip)) / sr + float(rng.uniform(*gap_s))
            k += 1
        streams.append(Stream(np.clip(bg, -32768, 32767).astype(np.int16), marks))
    if negatives and negative_stream_s > 0:
        streams.append(Stream(background(negative_stream_s)))
    return streams
