"""TFLite Micro audio frontend via pymicro-features (the C code ESPHome's micro_wake_word runs).

The frontend is stateful (noise reduction and PCAN adapt over time), so a clip gets a fresh
frontend and a stream keeps one. pymicro-features consumes at most one step (160 samples) per
call, hence the loop.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pymicro_features import MicroFrontend

from tinyconv.config import FrontendConfig


class StreamingFrontend:
    """Feeds int16 audio in any chunk size and returns the feature frames completed so far."""

    def __init__(self, config: FrontendConfig | None = None) -> None:
        self.config = config or FrontendConfig()
        self._frontend = MicroFrontend()
        self._pending = b""

    def reset(self) -> None:
        self._frontend = MicroFrontend()
        self._pending = b""

    def process(self, samples: np.ndarray) -> np.ndarray:
        """int16 samples -> float32 [frames, num_channels] for every window completed."""
        data = self._pending + np.ascontiguousarray(samples, dtype=np.int16).tobytes()
        frames: list[list[float]] = []
        offset = 0
        step_bytes = self.config.step_samples * 2
        while len(data) - offset >= step_bytes:
            out = self._frontend.process_samples(data[offset : offset + step_bytes])
            offset += out.samples_read * 2
            if out.features:
                frames.append(out.features)
        self._pending = data[offset:]
        if not frames:
            return np.zeros((0, self.config.num_channels), dtype=np.float32)
        return np.asarray(frames, dtype=np.float32)


def fit_clip(samples: np.ndarray, num_samples: int) -> np.ndarray:
    """Pad with zeros at the front, or keep the last `num_samples`, so a clip has window length.

    The end is kept because wake words are detected when they end (streaming models fire then).
    """
    if len(samples) >= num_samples:
        return samples[len(samples) - num_samples :]
    return np.concatenate([np.zeros(num_samples - len(samples), dtype=samples.dtype), samples])


# Pre-roll before each clip, and the smallest noise floor assumed for it (int16 LSB RMS). A real
# microphone is never digitally silent and the frontend never starts cold on a device.
PREROLL_MS = 1000
MIN_NOISE_FLOOR = 8.0


def noise_floor(samples: np.ndarray, step: int = 160) -> float:
    """RMS of the quietest 10 % of 10 ms frames: the clip's background level."""
    n = len(samples) // step * step
    if n == 0:
        return MIN_NOISE_FLOOR
    rms = np.sqrt(np.mean(samples[:n].astype(np.float64).reshape(-1, step) ** 2, axis=1))
    return max(float(np.percentile(rms, 10)), MIN_NOISE_FLOOR)


def clip_features(samples: np.ndarray, config: FrontendConfig | None = None) -> np.ndarray:
    """One clip (int16, 16 kHz) -> float32 [num_frames, num_channels], as a device would see it.

    A device runs the frontend continuously, so its noise estimate and PCAN gain have settled on
    the room's background when a word starts. A cold frontend instead saturates every channel at
    the first sound (its noise estimate starts at zero), which erases exactly the onsets that
    tell "hey tiny" from "pey tiny". So the frontend first hears PREROLL_MS of Gaussian noise at
    the clip's own background level, and only the clip's frames are returned.
    """
    config = config or FrontendConfig()
    clip = fit_clip(np.asarray(samples, dtype=np.int16), config.clip_samples)
    rng = np.random.default_rng(0)  # fixed: the same clip always gives the same features
    n_pre = config.sample_rate_hz * PREROLL_MS // 1000 // config.step_samples * config.step_samples
    preroll = np.clip(np.round(rng.standard_normal(n_pre) * noise_floor(clip)), -32768, 32767).astype(np.int16)
    frontend = StreamingFrontend(config)
    frontend.process(preroll)
    # The first frames after the pre-roll straddle it; the last num_frames windows lie in the clip.
    feats = frontend.process(clip)[-config.num_frames :]
    if feats.shape[0] != config.num_frames:  # the C frontend is fixed; this guards a version change
        raise RuntimeError(
            f"frontend produced {feats.shape[0]} frames for {config.clip_samples} samples, "
            f"expected {config.num_frames}: pymicro-features behaviour changed"
        )
    return feats


def features_to_int8(features: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The one float-feature -> int8 rule: q = round(features / scale) + zero_point, clipped.

    Used by the export's self-check, the simulator and the benchmarks; the generated C helper
    (`tinyconv_feature_to_int8` in model_data.h) computes the same in double precision, bit for
    bit (tests/export/test_c_array.py sweeps every frontend value). Ties round half away from
    zero, as TFLite's own QUANTIZE kernel does (TfLiteRound = std::round), not to even.
    Computed in float64 so that C's double arithmetic reproduces it exactly.
    """
    x = np.asarray(features, dtype=np.float64) / float(scale)
    q = np.sign(x) * np.floor(np.abs(x) + 0.5) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def frontend_key(config: FrontendConfig) -> str:
    """A short hash of the frontend settings and implementation version, for cache keys."""
    from importlib.metadata import version

    payload = json.dumps({"config": asdict(config), "impl": version("pymicro-features"),
                          "preroll": [PREROLL_MS, MIN_NOISE_FLOOR]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class FeatureCache:
    """Per-clip features on disk keyed by audio content and frontend config.

    Layout: ROOT/<frontend_key>/<sha[:2]>/<sha>.npy. Writes are atomic (tmp + rename) so a
    killed run never leaves a truncated entry.
    """

    def __init__(self, root: str | Path, config: FrontendConfig | None = None) -> None:
        self.config = config or FrontendConfig()
        self.root = Path(root) / frontend_key(self.config)
        self.hits = 0
        self.misses = 0

    def features(self, samples: np.ndarray) -> np.ndarray:
        samples = np.ascontiguousarray(samples, dtype=np.int16)
        digest = hashlib.sha256(samples.tobytes()).hexdigest()
        path = self.root / digest[:2] / f"{digest}.npy"
        if path.is_file():
            try:
                feats = np.load(path)
                self.hits += 1
                return feats
            except (ValueError, OSError):
                pass  # a damaged entry is recomputed below
        feats = clip_features(samples, self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}.npy")
        np.save(tmp, feats)
        tmp.replace(path)
        self.misses += 1
        return feats
