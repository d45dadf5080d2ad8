"""Offline text-to-speech voices: espeak-ng (English accents x variants) and flite.

Both are Debian command-line tools; there is no maintained Python binding for either that
ships the voices, so we call the binaries and read their WAV output from stdout/a temp file.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from tinyconv.data.audio import resample, to_int16


class TTSError(RuntimeError):
    """A TTS engine is missing or failed."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" or "flite"
    name: str  # espeak-ng voice (accent) or flite voice
    variant: str = ""  # espeak-ng variant (timbre), "" for none

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")

    @property
    def speaker(self) -> str:
        """What must not be shared across splits: the timbre (espeak variant) or flite voice."""
        return f"espeak-ng:{self.variant or 'default'}" if self.engine == "espeak-ng" else self.id


@lru_cache(maxsize=1)
def espeak_accents() -> tuple[str, ...]:
    """English accents of espeak-ng's own (gmw/en*) voices; mbrola voices need extra packages."""
    if shutil.which("espeak-ng") is None:
        return ()
    out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    accents = []
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("gmw/en") and cols[1] not in accents:
            accents.append(cols[1])
    return tuple(accents)


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Variant files (timbres) shipped with espeak-ng, e.g. m1..m7, f1..f5, klatt."""
    for root in (Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"), Path("/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
                 Path("/usr/share/espeak-ng-data")):
        vdir = root / "voices" / "!v"
        if vdir.is_dir():
            return tuple(sorted(p.name for p in vdir.iterdir() if p.is_file() and " " not in p.name))
    return ()


@lru_cache(maxsize=1)
def flite_voices() -> tuple[str, ...]:
    if shutil.which("flite") is None:
        return ()
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
    names = out.split(":", 1)[-1].split()
    # awb_time / kal16 duplicate other timbres (time-only / 16 kHz kal).
    return tuple(n for n in names if n not in ("awb_time", "kal16"))


def available_voices() -> list[Voice]:
    voices = [Voice("espeak-ng", a, v) for a in espeak_accents() for v in ("",) + espeak_variants()]
    voices += [Voice("flite", v) for v in flite_voices()]
    if not voices:
        raise TTSError("no offline TTS found: install Debian's espeak-ng (apt-get install espeak-ng flite)")
    return voices


def synthesize(text: str, voice: Voice, *, speed_wpm: int, pitch: int, sample_rate_hz: int = 16000) -> np.ndarray:
    """Speak `text` with `voice` -> int16 mono at `sample_rate_hz`, leading/trailing silence trimmed."""
    if voice.engine == "espeak-ng":
        name = voice.name + (f"+{voice.variant}" if voice.variant else "")
        cmd = ["espeak-ng", "-v", name, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0 or not proc.stdout:
            raise TTSError(f"espeak-ng failed for voice {name}: {proc.stderr.decode(errors='replace')[:200]}")
        audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    elif voice.engine == "flite":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            # flite has no pitch flag; speed via duration stretch (1.0 = 160 wpm-ish).
            stretch = f"{160.0 / speed_wpm:.3f}"
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch}", "-t", text, "-o", tmp.name]
            proc = subprocess.run(cmd, capture_output=True)
            if proc.returncode != 0:
                raise TTSError(f"flite failed for voice {voice.name}: {proc.stderr.decode(errors='replace')[:200]}")
            audio, rate = sf.read(tmp.name, dtype="float32")
    else:
        raise TTSError(f"unknown TTS engine {voice.engine!r}")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = resample(audio, rate, sample_rate_hz)
    return trim_silence(to_int16(audio))


def trim_silence(samples: np.ndarray, threshold: int = 200, pad: int = 480) -> np.ndarray:
    """Cut leading and trailing near-silence, keeping `pad` samples (30 ms) either side."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return samples
    return samples[max(0, loud[0] - pad) : loud[-1] + pad]
