"""Bad input: every kind of broken or unusual clip gets a clear message; nothing crashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tinyconv.data.audio import AudioError, load_audio, write_wav


def _tone(n: int, rate: int = 16000) -> np.ndarray:
    return (np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 0.5).astype(np.float32)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_sample_format_becomes_int16(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, _tone(16000), 16000, subtype=subtype)
    out = load_audio(path)
    assert out.samples.dtype == np.int16 and len(out.samples) == 16000
    assert abs(int(out.samples.max()) - 16383) < 300
    assert (subtype == "PCM_16") == (not any(n.startswith("converted") for n in out.notes))


def test_other_rates_are_resampled_and_stereo_downmixed(tmp_path: Path) -> None:
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([_tone(44100, 44100), _tone(44100, 44100)], axis=1), 44100)
    out = load_audio(path)
    assert len(out.samples) == 16000
    assert "resampled 44100 Hz" in out.notes and "downmixed 2 channels" in out.notes


@pytest.mark.parametrize(
    ("make", "message", "category"),
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"), "unreadable audio", "unreadable"),
        (lambda p: p.write_bytes(b""), "unreadable audio", "unreadable"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.int16), 16000), "empty clip", "empty"),
        (lambda p: sf.write(p, np.zeros(16000, dtype=np.int16), 16000), "silent clip", "silent"),
        (lambda p: sf.write(p, np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT"), "NaN", "invalid"),
    ],
)
def test_bad_clips_raise_clear_errors(tmp_path: Path, make, message: str, category: str) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path)
    assert info.value.category == category and str(path) in str(info.value)


def test_truncated_wav_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    write_wav(path, (_tone(16000) * 20000).astype(np.int16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated: header declares 32044 data bytes"):
        load_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="unreadable audio|file not found"):
        load_audio(tmp_path / "none.wav")


def test_silent_allowed_for_background(tmp_path: Path) -> None:
    path = tmp_path / "z.wav"
    sf.write(path, np.zeros(16000, dtype=np.int16), 16000)
    assert not load_audio(path, allow_silent=True).samples.any()
