"""Mutated WAV files: the one audio reader raises AudioError or returns audio, nothing else.

Like tests/firmware_sim/test_fuzz.py for .tflite: seeded mutations of valid files (header
fields, truncation, random bytes), read in a subprocess (so a crash in libsndfile shows as a
failure, not a dead test run) under an address-space cap (so a header asking for gigabytes
shows as MemoryError).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from .test_wav_limits import run_limited

NUM_FILES = 600

# Byte offsets of the canonical header's fields: RIFF size, fmt size, format tag, channels,
# rate, byte rate, block align, bits, data size.
_FIELDS = [(4, 4), (16, 4), (20, 2), (22, 2), (24, 4), (28, 4), (32, 2), (34, 2), (40, 4)]
_SPECIAL = [0, 1, 2, 3, 7, 8, 255, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 16000, 44100]


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(7)
    tone = np.sin(np.arange(4000) / 5.0).astype(np.float32) * 0.5
    out = []
    for rate, channels, subtype in [(16000, 1, "PCM_16"), (44100, 2, "PCM_24"), (8000, 1, "FLOAT"),
                                    (16000, 1, "PCM_U8"), (22050, 3, "PCM_32"), (16000, 1, "ULAW"),
                                    (16000, 2, "IMA_ADPCM"), (16000, 1, "MS_ADPCM")]:
        buf = io.BytesIO()
        data = np.stack([tone * (0.5 + rng.random()) for _ in range(channels)], axis=1)
        sf.write(buf, data, rate, format="WAV", subtype=subtype)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:  # truncation
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    if kind == 1:  # one or more header fields set to a special or random value
        for _ in range(int(rng.integers(1, 4))):
            pos, width = _FIELDS[int(rng.integers(len(_FIELDS)))]
            value = int(rng.choice(_SPECIAL)) if rng.random() < 0.7 else int(rng.integers(0, 2**32))
            buf[pos : pos + width] = (value & (2 ** (8 * width) - 1)).to_bytes(width, "little")
    elif kind == 2:  # random bytes anywhere
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
            buf[pos] = int(rng.integers(256))
    elif kind == 3:  # bit flips in the header region
        for pos in rng.integers(0, min(96, len(buf)), size=int(rng.integers(1, 6))):
            buf[pos] ^= 1 << int(rng.integers(8))
    else:  # a 32-bit value overwritten anywhere (chunk sizes past the first chunk, fact/LIST chunks)
        pos = int(rng.integers(0, len(buf) - 4))
        buf[pos : pos + 4] = struct.pack("<I", int(rng.integers(0, 2**32)))
    return bytes(buf)


def test_mutated_wavs_raise_only_audio_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(2024)
    seeds = _seeds()
    paths = []
    for i in range(NUM_FILES):
        p = tmp_path / f"f{i:04d}.wav"
        p.write_bytes(_mutate(seeds[i % len(seeds)], rng))
        paths.append(str(p))
    result = run_limited(f"""
        import traceback
        from collections import Counter
        t0 = time.perf_counter()
        outcomes, other = Counter(), []
        for path in {paths!r}:
            for read in (lambda p: load_audio(p), lambda p: AudioStream(p).segment(100, 1600)):
                try:
                    read(path)
                    outcomes["ok"] += 1
                except AudioError as err:
                    assert str(err).startswith(path)
                    outcomes[err.category] += 1
                except BaseException as exc:  # noqa: BLE001 - the point of the test
                    other.append(path + ": " + "".join(traceback.format_exception_only(exc)).strip())
        print(json.dumps({{"outcomes": outcomes, "other": other, "seconds": time.perf_counter() - t0}}))
    """, budget_mb=400)
    assert isinstance(result, dict)
    assert result["other"] == [], result["other"][:10]
    outcomes = result["outcomes"]
    assert sum(outcomes.values()) == 2 * NUM_FILES
    # The corpus exercises both sides: files that still read, and several kinds of refusal.
    assert outcomes["ok"] > 50 and {"unreadable", "truncated", "rate"} <= set(outcomes), outcomes
    assert result["seconds"] < 10, result["seconds"]
