"""Reading audio robustly: every clip becomes 16 kHz mono int16, or a clear per-file error.

soundfile (libsndfile) reads every PCM width and float WAV; we convert, resample and downmix
here so one bad file never crashes a run. Problems that were fixed are returned as notes so a
summary can count them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly


class AudioError(ValueError):
    """A clip cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str, category: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.category = category

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:  # crosses process boundaries
        return (AudioError, (self.path, self.reason, self.category))


@dataclass
class LoadedAudio:
    samples: np.ndarray  # int16 mono at the requested rate
    notes: list[str] = field(default_factory=list)  # fixes applied: "resampled", "downmixed", ...


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 with clipping."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of float audio."""
    if rate_in == rate_out:
        return audio
    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def _wav_declared_data_bytes(path: Path) -> int | None:
    """End offset of the RIFF 'data' chunk as the header declares it (None if not found).

    Hand-written because neither soundfile nor the stdlib `wave` module reports truncation.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return offset + 8 + size
            offset += 8 + size + (size & 1)
            fh.seek(offset)


def load_audio(path: str | Path, sample_rate_hz: int = 16000, *, allow_silent: bool = False) -> LoadedAudio:
    """Read a clip as int16 mono at `sample_rate_hz`. Raises AudioError with a category."""
    path = Path(path)
    notes: list[str] = []
    try:
        info = sf.info(str(path))
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioError(path, "file not found", "missing") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(path, f"unreadable audio ({exc})", "unreadable") from None
    # libsndfile reads a truncated data chunk without complaint; compare against the header.
    declared = _wav_declared_data_bytes(path) if info.format == "WAV" else None
    if declared is not None and declared > path.stat().st_size:
        raise AudioError(
            path, f"truncated: header declares {declared} data bytes, the file has {path.stat().st_size}",
            "truncated",
        )
    if audio.shape[0] == 0:
        raise AudioError(path, "empty clip (no samples)", "empty")
    if audio.shape[1] > 1:
        audio = audio.mean(axis=1, keepdims=True)
        notes.append(f"downmixed {info.channels} channels")
    mono = audio[:, 0]
    if info.subtype not in ("PCM_16",):
        notes.append(f"converted {info.subtype}")
    if rate != sample_rate_hz:
        mono = resample(mono, rate, sample_rate_hz)
        notes.append(f"resampled {rate} Hz")
    if not np.all(np.isfinite(mono)):
        raise AudioError(path, "contains NaN or infinite samples", "invalid")
    samples = to_int16(mono)
    if not allow_silent and not np.any(samples):
        raise AudioError(path, "silent clip (all samples are zero)", "silent")
    return LoadedAudio(samples, notes)


@dataclass
class LoadSummary:
    """Counts of problems over a run: skipped files by category and fixes by kind."""

    skipped: Counter[str] = field(default_factory=Counter)
    fixed: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def add_error(self, err: AudioError) -> None:
        self.skipped[err.category] += 1
        self.messages.append(str(err))

    def add_notes(self, notes: list[str]) -> None:
        for note in notes:
            self.fixed[note.split(" ")[0]] += 1

    def __str__(self) -> str:
        parts = [f"{sum(self.skipped.values())} skipped"]
        parts += [f"{k}: {v}" for k, v in sorted(self.skipped.items())]
        if self.fixed:
            parts.append("fixed " + ", ".join(f"{k}: {v}" for k, v in sorted(self.fixed.items())))
        return "; ".join(parts)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int = 16000) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, dtype=np.int16), sample_rate_hz, subtype="PCM_16")
