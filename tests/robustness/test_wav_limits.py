"""WAV headers that ask for absurd memory get a clear error fast; long recordings stream.

Each case runs in a subprocess whose address space is capped a few hundred MB above what its
imports take (RLIMIT_AS), so a regression fails with MemoryError instead of eating the host.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tinyconv.data.audio import AudioStream, load_audio, write_wav

BUDGET_MB = 300

_PRELUDE = """
import json, resource, sys, time
import numpy as np, scipy.signal, soundfile
from tinyconv.data.audio import AudioError, AudioStream, load_audio

def _vm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize"))

resource.setrlimit(resource.RLIMIT_AS, (_vm() + {budget} * 2**20, resource.RLIM_INFINITY))
"""


def run_limited(code: str, budget_mb: int = BUDGET_MB, timeout: float = 120) -> object:
    """Run `code` (which prints one JSON line last) under an address-space cap; return that JSON."""
    script = _PRELUDE.format(budget=budget_mb) + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wav_bytes(*, rate: int, channels: int = 1, bits: int = 16, data: bytes, data_size: int | None = None,
              riff_size: int | None = None) -> bytes:
    """A canonical 44-byte-header PCM WAV with any header values."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    riff = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff) + body


def _tone(n: int) -> bytes:
    return (np.sin(np.arange(n) / 7.0) * 8000).astype("<i2").tobytes()


def test_header_bombs_get_clear_errors_fast_with_bounded_memory(tmp_path: Path) -> None:
    bombs = {
        # 244 bytes declaring 2,000,000,011 Hz: resampling it to 16 kHz wanted ~298 GiB.
        "ghz": (wav_bytes(rate=2_000_000_011, data=_tone(100)), r"sample rate 2000000011 Hz is outside 8000\.\.192000 "
                                                                r"Hz \(expected 16000 Hz\)"),
        # 40 KB declaring 1 Hz: 20,000 s of audio once resampled (3.8 GB).
        "one_hz": (wav_bytes(rate=1, data=_tone(20000)), r"sample rate 1 Hz is outside"),
        "too_long": (wav_bytes(rate=8000, data=bytes(2 * 8000 * 61)), r"61\.0 s long: clips may last at most 60 s"),
        "channels": (wav_bytes(rate=16000, channels=200, data=bytes(2 * 200 * 10)), r"200 channels \(at most 64"),
    }
    assert len(bombs["ghz"][0]) == 244 and 40_000 <= len(bombs["one_hz"][0]) < 41_000
    paths = {}
    for name, (data, _) in bombs.items():
        paths[name] = str(tmp_path / f"{name}.wav")
        Path(paths[name]).write_bytes(data)
    result = run_limited(f"""
        out = {{}}
        for name, path in {paths!r}.items():
            t0 = time.perf_counter()
            try:
                load_audio(path)
                out[name] = ["loaded", "", 0.0]
            except AudioError as err:
                out[name] = [err.category, str(err), time.perf_counter() - t0]
        print(json.dumps(out))
    """)
    assert isinstance(result, dict)
    import re

    for name, (_, message) in bombs.items():
        category, text, seconds = result[name]
        assert re.search(message, text), (name, text)
        assert text.startswith(paths[name]) and seconds < 1.0, (name, seconds)
    assert result["ghz"][0] == result["one_hz"][0] == "rate"


def test_a_clip_longer_than_the_callers_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two_s.wav"
    write_wav(path, np.frombuffer(_tone(32000), dtype="<i2"))
    assert len(load_audio(path).samples) == 32000
    from tinyconv.data.audio import AudioError

    with pytest.raises(AudioError, match=r"2\.0 s long: clips may last at most 1\.5 s"):
        load_audio(path, max_seconds=1.5)


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFFFFF])
def test_a_streamed_wav_with_unknown_length_loads_every_sample(tmp_path: Path, size: int) -> None:
    # arecord / ffmpeg writing to a pipe cannot seek back to fill in the sizes.
    samples = np.frombuffer(_tone(16000), dtype="<i2")
    path = tmp_path / "stream.wav"
    path.write_bytes(wav_bytes(rate=16000, data=samples.tobytes(), data_size=size, riff_size=size))
    out = load_audio(path)
    assert np.array_equal(out.samples, samples)


def test_a_really_truncated_wav_is_still_refused(tmp_path: Path) -> None:
    from tinyconv.data.audio import AudioError

    path = tmp_path / "cut.wav"
    path.write_bytes(wav_bytes(rate=16000, data=_tone(8000), data_size=32000))
    with pytest.raises(AudioError, match="truncated: header declares 32044 data bytes, the file has 16044"):
        load_audio(path)


def _sparse_wav(path: Path, rate: int, seconds: int) -> None:
    """A long WAV that takes no disk space: the header, a tone at each end, holes between."""
    n = rate * seconds
    head = wav_bytes(rate=rate, data=b"", data_size=2 * n)
    tone = _tone(rate)
    with open(path, "wb") as fh:
        fh.write(head + tone)
        fh.seek(len(head) + 2 * n - len(tone))
        fh.write(tone)


def test_segments_of_a_recording_match_reading_it_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(44100 * 3) * 3000).astype(np.int16)
    for rate in (16000, 44100):
        path = tmp_path / f"r{rate}.wav"
        sf.write(path, x[: rate * 3], rate, subtype="PCM_16")
        whole = load_audio(path).samples
        stream = AudioStream(path)
        assert stream.num_samples == len(whole) == 48000
        for start in (0, 1, 20000, 31999):  # resampled excerpts are aligned with the whole file's grid
            assert np.array_equal(stream.segment(start, 16000), whole[start : start + 16000]), (rate, start)
        tail = stream.segment(40000, 16000)  # past the end: zero padded
        assert np.array_equal(tail[8000:], np.zeros(8000, np.int16))


def test_a_two_hour_background_recording_is_streamed_not_loaded(tmp_path: Path) -> None:
    src = tmp_path / "gsc"
    rng = np.random.default_rng(0)
    for word in ("yes", "no"):
        for i in range(4):
            write_wav(src / word / f"s{i}_nohash_0.wav", (rng.standard_normal(16000) * 1000).astype(np.int16))
    bg = src / "_background_noise_"
    bg.mkdir()
    _sparse_wav(bg / "two_hours.wav", 16000, 2 * 3600)  # 230 MB of samples; read whole it peaked at 1.4 GB
    _sparse_wav(bg / "two_hours_44k.wav", 44100, 2 * 3600)
    assert (bg / "two_hours.wav").stat().st_size > 2 * 16000 * 7200
    result = run_limited(f"""
        from tinyconv.config import load_config
        from tinyconv.data.manifest import read_manifest
        from tinyconv.data.speech_commands import prepare_speech_commands
        cfg = load_config(None, ["data.keywords=[yes, no]", "data.silence_fraction=0.5"])
        t0 = time.perf_counter()
        rows, _ = read_manifest(prepare_speech_commands({str(src)!r}, {str(tmp_path / "ds")!r}, cfg))
        print(json.dumps([sum(r.label == "_silence_" for r in rows), time.perf_counter() - t0]))
    """, budget_mb=150)
    silences, seconds = result
    assert silences >= 4 and seconds < 10
