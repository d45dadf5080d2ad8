"""Reading audio robustly: every clip becomes 16 kHz mono int16, or a clear per-file error.

soundfile (libsndfile) reads every PCM width and float WAV; we convert, resample and downmix
here so one bad file never crashes a run. Problems that were fixed are returned as notes so a
summary can count them.

A WAV header is checked before any sample is read: a 244-byte file can declare 2 GHz (resampling
it would need ~300 GiB) and a 40 KB one 1 Hz (hours of audio once resampled). So the rate must lie
in MIN_RATE_HZ..MAX_RATE_HZ, the channels at most MAX_CHANNELS and a clip at most `max_seconds`
long; samples are read in blocks (downmixed per block), and long recordings (background noise)
are read a segment at a time through `AudioStream`, never whole.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tinyconv.errors import TinyconvError

# Rates we resample from: telephone (8 kHz) to studio (192 kHz). Outside this range a header is
# either hostile or broken, and resampling it costs memory in proportion to the odd rate.
MIN_RATE_HZ, MAX_RATE_HZ = 8000, 192000
MAX_CHANNELS = 64
# Longest clip `load_audio` reads (a keyword clip is ~1 s; a 60 s clip at 192 kHz is 46 MB of
# float32 mono). Callers pass `max_seconds` to change it; long recordings use AudioStream.
MAX_CLIP_SECONDS = 60.0
_BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) decoded per read: bounds memory per block
_MAX_CHUNKS = 4096  # RIFF chunks walked looking for 'data' before giving up the truncation check
# A data-chunk size at or above this that overruns the file is a streaming placeholder: arecord
# and ffmpeg write 0x7FFFFFFF / 0xFFFFFFFF when the length is unknown (writing to a pipe), and
# libsndfile then reads the samples to the end of the file. A really truncated clip declares its
# real size, far below 2 GiB.
_STREAMING_DATA_SIZE = 0x7FFFFFFF


class AudioError(ValueError, TinyconvError):
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
    with np.errstate(over="ignore"):  # a float file's 1e38 becomes inf, then clips like any loud sample
        return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of float audio."""
    if rate_in == rate_out:
        return audio
    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def _wav_declared_data_bytes(path: Path) -> int | None:
    """End offset of the RIFF 'data' chunk as the header declares it (None if not found, or if
    the size is a streaming placeholder: see _STREAMING_DATA_SIZE).

    Hand-written because neither soundfile nor the stdlib `wave` module reports truncation.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        for _ in range(_MAX_CHUNKS):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return None if size >= _STREAMING_DATA_SIZE else offset + 8 + size
            offset += 8 + size + (size & 1)
            fh.seek(offset)
    return None


# Everything soundfile/libsndfile and numpy raise on a malformed file (found by fuzzing).
_READ_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OverflowError, EOFError, OSError)


def _checked_info(path: Path, sample_rate_hz: int, max_seconds: float | None) -> sf._SoundFileInfo:
    """The header, checked before any sample is read (see the module docstring)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise AudioError(path, "file not found", "missing") from None
    except OSError as exc:  # a symlink loop, a permission problem
        raise AudioError(path, f"unreadable ({exc.strerror or exc})", "unreadable") from None
    try:
        info = sf.info(str(path))
        # libsndfile reads a truncated data chunk without complaint; compare against the header.
        declared = _wav_declared_data_bytes(path) if info.format == "WAV" else None
    except _READ_ERRORS as exc:
        raise AudioError(path, f"unreadable audio ({exc})", "unreadable") from None
    if declared is not None and declared > size:
        raise AudioError(path, f"truncated: header declares {declared} data bytes, the file has {size}", "truncated")
    if not MIN_RATE_HZ <= info.samplerate <= MAX_RATE_HZ:
        raise AudioError(path, f"sample rate {info.samplerate} Hz is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz "
                               f"(expected {sample_rate_hz} Hz): a broken or hostile header", "rate")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(path, f"{info.channels} channels (at most {MAX_CHANNELS} are read)", "channels")
    if max_seconds is not None and info.frames > max_seconds * info.samplerate:
        raise AudioError(path, f"{info.frames / info.samplerate:.1f} s long: clips may last at most "
                               f"{max_seconds:g} s", "too_long")
    return info


def _read_mono(path: Path, info: sf._SoundFileInfo, start: int = 0, frames: int | None = None) -> np.ndarray:
    """float32 mono samples [start, start + frames), decoded and downmixed a block at a time."""
    frames = info.frames - start if frames is None else frames
    block = max(1, _BLOCK_SAMPLES // info.channels)
    parts: list[np.ndarray] = []
    got = 0
    try:
        with sf.SoundFile(str(path)) as fh:
            if start:
                fh.seek(start)
            while got < frames:
                data = fh.read(min(block, frames - got), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                parts.append(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy())
                got += data.shape[0]
    except _READ_ERRORS as exc:
        raise AudioError(path, f"unreadable audio ({exc})", "unreadable") from None
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_audio(path: str | Path, sample_rate_hz: int = 16000, *, allow_silent: bool = False,
               max_seconds: float = MAX_CLIP_SECONDS) -> LoadedAudio:
    """Read a clip as int16 mono at `sample_rate_hz`. Raises AudioError with a category.

    Clips longer than `max_seconds` are refused from the header (use AudioStream for long audio).
    """
    path = Path(path)
    notes: list[str] = []
    info = _checked_info(path, sample_rate_hz, max_seconds)
    rate = info.samplerate
    mono = _read_mono(path, info)
    if mono.shape[0] == 0:
        raise AudioError(path, "empty clip (no samples)", "empty")
    if info.channels > 1:
        notes.append(f"downmixed {info.channels} channels")
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


class AudioStream:
    """A long recording (background noise) read one segment at a time, never whole.

    Reading a 2-hour file whole peaked at 1.4 GB; a segment costs its own length (plus a little
    filter context when resampling). Positions and lengths are in samples at `sample_rate_hz`.
    """

    def __init__(self, path: str | Path, sample_rate_hz: int = 16000) -> None:
        self.path = Path(path)
        self.sample_rate_hz = sample_rate_hz
        self.info = _checked_info(self.path, sample_rate_hz, max_seconds=None)
        self.num_samples = self.info.frames * sample_rate_hz // self.info.samplerate

    def segment(self, start: int, num_samples: int) -> np.ndarray:
        """int16 mono samples [start, start + num_samples), zero-padded past the end."""
        rate, want = self.info.samplerate, self.sample_rate_hz
        if rate == want:
            audio = _read_mono(self.path, self.info, start, min(num_samples, max(0, self.info.frames - start)))
        else:
            g = gcd(rate, want)
            up, down = want // g, rate // g
            context = 64 * (rate // want + 1)  # more than the filter's half-length, either side
            # Start on a multiple of `down` input frames: there the polyphase output grid of the
            # excerpt coincides with the whole file's, so segments equal reading the whole file.
            first = max(0, start * down // up - context) // down * down
            last = min(self.info.frames, -(-(start + num_samples) * down // up) + context)
            wide = resample(_read_mono(self.path, self.info, first, max(0, last - first)), rate, want)
            skip = start - first // down * up
            audio = wide[skip : skip + num_samples]
        if not np.all(np.isfinite(audio)):
            raise AudioError(self.path, "contains NaN or infinite samples", "invalid")
        out = np.zeros(num_samples, dtype=np.int16)
        out[: len(audio)] = to_int16(audio[:num_samples])
        return out


def encode_wav(samples: np.ndarray, sample_rate_hz: int = 16000) -> bytes:
    """16-bit PCM WAV bytes (encoded in memory, so writing them is one plain file write)."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.int16), sample_rate_hz, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    # A plain write, so a full disk surfaces as OSError(ENOSPC) (libsndfile's own writes report it
    # as a generic "System error").
    with open(path, "wb") as fh:
        fh.write(data)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int = 16000) -> str:
    """Write a 16-bit PCM WAV; returns the sha256 of the file's bytes (the manifest records it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_wav(samples, sample_rate_hz)
    _write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()
