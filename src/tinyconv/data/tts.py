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
from tinyconv.errors import TinyconvError

# A phrase takes well under a second to speak; a stuck engine must not stall a whole synthesis run.
TTS_TIMEOUT_S = 60.0


class TTSError(TinyconvError):
    """A TTS engine is missing or failed."""


def run_engine(cmd: list[str], *, text: str | None = None,
               timeout_s: float = TTS_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    """Run a TTS binary (cmd[0]) with `text`, if any, on stdin; never in argv.

    In argv the text would be parsed as options: a wake word "-f/etc/passwd" makes espeak-ng
    speak that file and "-s200" leaves it waiting on stdin. espeak-ng reads its text from stdin
    and flite from `-f -` with byte-identical audio, so the text never reaches the option
    parser. With no text, stdin is /dev/null so nothing can wait on the terminal.
    """
    engine = cmd[0]
    try:
        if text is None:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
        return subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=timeout_s)
    except FileNotFoundError as exc:
        raise TTSError(f"TTS engine {engine} is not installed (not found on PATH): apt-get install {engine}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TTSError(f"TTS engine {engine} did not finish within {timeout_s:g} s") from exc


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng", "flite", or natural (tinyconv.data.natural_tts): "kokoro", "hibari", "klettres"
    name: str  # espeak-ng voice (accent) or flite voice
    variant: str = ""  # espeak-ng variant (timbre), "" for none
    # espeak-ng data folder that holds this variant ("" = the system's): generated voices.
    data_path: str = ""

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")

    @property
    def speaker(self) -> str:
        """What must not be shared across splits: the timbre (espeak variant), flite voice, Kokoro
        base voices ("kokoro:jf_alpha&jm_kumo": a blend belongs to its bases), klettres language."""
        if self.engine == "espeak-ng":
            return f"espeak-ng:{self.variant or 'default'}"
        return f"{self.engine}:{self.name}" if self.engine in ("kokoro", "klettres") else self.id


@lru_cache(maxsize=1)
def espeak_voice_files() -> dict[str, str]:
    """English accent -> voice file of espeak-ng's own (gmw/en*) voices (mbrola needs extra packages).

    Synthesis names the file ("gmw/en"), not the accent: espeak-ng 1.51 drops the variant of
    `-v en-gb+m3` without a word (it speaks plain en-gb), while `-v gmw/en+m3` applies it.
    """
    if shutil.which("espeak-ng") is None:
        return {}
    proc = run_engine(["espeak-ng", "--voices=en"])
    if proc.returncode != 0:
        raise TTSError(f"espeak-ng --voices=en failed: {proc.stderr.decode(errors='replace')[:200]}")
    out = proc.stdout.decode(errors="replace")
    files: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("gmw/en") and cols[1] not in files:
            files[cols[1]] = cols[4]
    return files


def espeak_accents() -> tuple[str, ...]:
    """English accents of espeak-ng's own voices, e.g. en-gb, en-us, en-gb-scotland."""
    return tuple(espeak_voice_files())


@lru_cache(maxsize=1)
def espeak_data_root() -> Path | None:
    """The system's espeak-ng-data folder (Debian's multiarch path or /usr/share)."""
    for root in (Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"), Path("/usr/lib/aarch64-linux-gnu/espeak-ng-data"),
                 Path("/usr/share/espeak-ng-data")):
        if (root / "voices" / "!v").is_dir():
            return root
    return None


@lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """Variant files (timbres) shipped with espeak-ng, e.g. m1..m7, f1..f5, klatt."""
    root = espeak_data_root()
    if root is None:
        return ()
    vdir = root / "voices" / "!v"
    return tuple(sorted(p.name for p in vdir.iterdir() if p.is_file() and " " not in p.name))


def random_variant(rng: np.random.Generator, name: str) -> str:
    """An espeak-ng variant file (see espeak-ng's docs/voices.md) with a random timbre.

    Ranges lie inside those of the variants espeak-ng ships: one vocal-tract scale for all
    formant frequencies (+-8 % each), formant heights and widths, pitch base and range,
    voicing, consonant strength, flutter, roughness, and sometimes echo, breath and a tone (EQ)
    curve. The Klatt models stay with the shipped klatt variants. (Drawing every parameter
    over the shipped variants' full span, Klatt included, scored lower on validation voices.)
    """
    scale = rng.uniform(0.82, 1.22)
    lines = ["language variant", f"name {name}"]
    for k in range(9):
        freq = round(100 * scale * rng.uniform(0.92, 1.08))
        lines.append(f"formant {k} {freq} {rng.integers(70, 161)} {rng.integers(70, 161)}")
    base = int(rng.integers(60, 200))
    lines.append(f"pitch {base} {base + int(rng.integers(20, 150))}")
    lines.append(f"voicing {rng.integers(40, 161)}")
    lines.append(f"consonants {rng.integers(70, 141)} {rng.integers(70, 141)}")
    lines.append(f"flutter {rng.integers(0, 30)}")
    lines.append(f"roughness {rng.integers(0, 5)}")
    if rng.random() < 0.3:
        lines.append(f"echo {rng.integers(10, 140)} {rng.integers(5, 60)}")
    if rng.random() < 0.2:
        lines.append("breath " + " ".join(str(v) for v in rng.integers(0, 4, 8)))
    if rng.random() < 0.3:
        lines.append("tone " + " ".join(f"{f} {rng.integers(50, 256)}" for f in (600, 1200, 2000, 3000)))
    return "\n".join(lines) + "\n"


# espeak-ng lists at most 349 voice files (N_VOICES_LIST) and fails past that, so each generated
# data folder holds only the English language files and at most this many variants.
_VARIANTS_PER_FOLDER = 256


def _espeak_data_folder(folder: Path, root: Path, variants: dict[str, str]) -> None:
    """`folder`/espeak-ng-data: symlinks to the system's data, English voices only, + `variants`."""
    data = folder / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True, exist_ok=True)
    (data / "lang").mkdir(exist_ok=True)
    links = [(e, data / e.name) for e in root.iterdir() if e.name not in ("voices", "lang")]
    links += [(e, data / "lang" / e.name) for e in (root / "lang").iterdir() if e.name == "gmw"]
    for target, link in links:
        if not link.exists():
            link.symlink_to(target)
    for name, text in variants.items():
        (data / "voices" / "!v" / name).write_text(text)


def random_voices(count: int, seed: int, folder: Path) -> list[Voice]:
    """`count` generated espeak-ng timbres (x every English accent), written under `folder`.

    espeak-ng reads variants only from its data folder, so each generated folder is a copy of
    the system's made of symlinks plus the generated files in voices/!v. Deterministic for a seed.
    """
    root = espeak_data_root()
    if root is None or not espeak_accents():
        raise TTSError("random voices need espeak-ng: apt-get install espeak-ng")
    rng = np.random.default_rng([seed, 11])
    names = [f"tinyconv{i:03d}" for i in range(count)]
    texts = {name: random_variant(rng, name) for name in names}
    voices = []
    for start in range(0, count, _VARIANTS_PER_FOLDER):
        chunk = names[start : start + _VARIANTS_PER_FOLDER]
        sub = folder / f"set{start // _VARIANTS_PER_FOLDER}"
        _espeak_data_folder(sub, root, {n: texts[n] for n in chunk})
        voices += [Voice("espeak-ng", a, n, str(sub)) for a in espeak_accents() for n in chunk]
    # espeak-ng silently falls back to its default timbre for a variant it cannot find.
    for probe in (voices[0], voices[-1]) if voices else ():
        plain = Voice("espeak-ng", probe.name, "", probe.data_path)
        if np.array_equal(synthesize("test", probe, speed_wpm=160, pitch=50),
                          synthesize("test", plain, speed_wpm=160, pitch=50)):
            raise TTSError(f"espeak-ng ignored the generated variant {probe.variant!r} in {probe.data_path}")
    return voices


@lru_cache(maxsize=1)
def flite_voices() -> tuple[str, ...]:
    if shutil.which("flite") is None:
        return ()
    out = run_engine(["flite", "-lv"]).stdout.decode(errors="replace")
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
    if voice.engine in ("kokoro", "hibari", "klettres"):  # natural voices, cached (natural_tts)
        from tinyconv.data.natural_tts import synthesize_natural

        return synthesize_natural(text, voice, speed_wpm=speed_wpm, pitch=pitch, sample_rate_hz=sample_rate_hz)
    if voice.engine == "espeak-ng":
        name = espeak_voice_files().get(voice.name, voice.name) + (f"+{voice.variant}" if voice.variant else "")
        cmd = ["espeak-ng", "-v", name, "-s", str(speed_wpm), "-p", str(pitch), "--stdout"]
        if voice.data_path:
            cmd.insert(1, f"--path={voice.data_path}")
        proc = run_engine(cmd, text=text)
        if proc.returncode != 0 or not proc.stdout:
            raise TTSError(f"espeak-ng failed for voice {name}: {proc.stderr.decode(errors='replace')[:200]}")
        audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    elif voice.engine == "flite":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            # flite has no pitch flag; speed via duration stretch (1.0 = 160 wpm-ish).
            stretch = f"{160.0 / speed_wpm:.3f}"
            # `-f -`: the text from stdin (see run_engine); flite's -t would take it from argv.
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch}", "-f", "-", "-o", tmp.name]
            proc = run_engine(cmd, text=text)
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
