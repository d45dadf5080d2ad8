"""Long negative audio: hours of everyday sound a wake word must not fire on. Torch-free.

A streaming detector is judged by false accepts per hour; 0.5 FA/h is one false accept in two
hours, so the audio a cutoff is chosen on (and an epoch selected on) must last hours, and the
rare false accepts it must show come from connected speech, music and TV-like mixtures that
one-second clips do not hold. This module makes such audio for one split, from that split's
own voices and rooms (speaker-disjoint from training): new sentences and other assistants' wake
words (alone, over noise or procedural music), babble, procedural music and coloured noise.

Used by synthesis (`data.negative_stream_minutes`: validation and test streams stored with the
dataset, `load_negative_streams`) and by `benchmarks/e2e.py` (held-out test streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.data.manifest import DatasetInfo
from tinyconv.data.tts import Voice

SAMPLE_RATE = 16000
# Stream files are cut into pieces this long (a 10 min int16 WAV is 19 MB).
STREAM_SECONDS = 600.0
# Shares of the mixture, by kind (speech alone, over noise, over music, babble, music, noise).
KINDS = {"speech": 0.3, "speech_over_noise": 0.15, "speech_over_music": 0.15, "babble": 0.1, "music": 0.15,
         "noise": 0.15}


def procedural_music(seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Procedural music, unit RMS: a chord pad, a melody with harmonics and a drum kit at a random
    tempo. Written by hand because no package ships royalty-free music to mix in offline."""
    n = int(seconds * sr)
    out = np.zeros(n + sr, dtype=np.float32)
    beat = 60.0 / rng.uniform(70, 160)
    root = rng.uniform(98, 262)
    scale = root * 2.0 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12.0)
    bright = rng.uniform(0.8, 2.5)  # harmonic roll-off: low = brassy, high = mellow

    def tone(freq: float, dur: float, amp: float) -> np.ndarray:
        t = np.arange(int(dur * sr)) / sr
        wave = sum(np.sin(2 * np.pi * freq * k * t) / k ** bright for k in range(1, 7) if freq * k < sr / 2)
        env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.5, 6.0))
        return (amp * wave * env).astype(np.float32)

    t, b = 0.0, 0
    while t < seconds:
        i = int(t * sr)
        if b % 4 == 0:  # a chord every bar
            deg = int(rng.integers(0, 5))
            for d in (0, 2, 4):
                note = tone(scale[min(deg + d, 7)] / 2, 4 * beat, 0.25)
                out[i : i + len(note)] += note[: len(out) - i]
        for half in (0.0, 0.5):  # melody in eighths, sometimes resting
            if rng.random() < 0.7:
                j = int((t + half * beat) * sr)
                note = tone(float(rng.choice(scale)) * rng.choice([1, 2]), beat * rng.uniform(0.4, 1.0), 0.4)
                out[j : j + len(note)] += note[: len(out) - j]
        if rng.random() < 0.8:  # kick on 1 and 3, snare on 2 and 4, hi-hat
            d = np.arange(int(0.15 * sr)) / sr
            hit = (np.sin(2 * np.pi * (50 + 100 * np.exp(-d * 30)) * d) * np.exp(-d * 20) if b % 2 == 0
                   else rng.standard_normal(len(d)) * np.exp(-d * 30) * 0.5)
            out[i : i + len(hit)] += hit[: len(out) - i].astype(np.float32)
        t += beat
        b += 1
    out = out[:n]
    return out / (np.sqrt(np.mean(out**2)) + 1e-9)


def _speak_job(job: tuple[str, Voice, int, int]) -> np.ndarray:
    from tinyconv.data.tts import synthesize

    text, voice, wpm, pitch = job
    try:
        return synthesize(text, voice, speed_wpm=wpm, pitch=pitch)
    except Exception:  # noqa: BLE001 (one failed utterance is dropped, not the whole stream)
        return np.zeros(0, np.int16)


def negative_stream_audio(wake_word: str, voices: Sequence[Voice], seconds: float, rirs: Sequence[np.ndarray], *,
                          seed: int, speeds_wpm: Sequence[int] = (120, 140, 160, 180, 200), workers: int = 0,
                          stream_s: float = STREAM_SECONDS) -> tuple[list[np.ndarray], dict[str, Any]]:
    """`seconds` of negative audio as int16 pieces of at most `stream_s`, spoken by `voices` in `rirs`.

    Sentences, everyday phrases and other assistants' wake words (never `wake_word`), each by a
    random voice at a random speed and pitch, 40 % of them reverberant; deterministic for a seed.
    Returns (pieces, info: hours, utterances, voices, seconds by kind)."""
    from scipy.signal import fftconvolve

    from tinyconv.data.augment import coloured_noise
    from tinyconv.data.phrases import LONG_SENTENCES, other_phrases, other_wake_words
    from tinyconv.data.synth import num_workers, parallel_map

    if not voices:
        raise ValueError("negative stream audio needs at least one voice of the split")
    if not rirs:
        raise ValueError("negative stream audio needs at least one room impulse response")
    sr = SAMPLE_RATE
    hours = seconds / 3600.0
    rng = np.random.default_rng([seed, 5])
    texts = list(LONG_SENTENCES) * 3 + other_phrases(wake_word, 600, np.random.default_rng([seed, 99]))
    texts += other_wake_words(wake_word, 150)
    count = min(2400, max(60, int(hours * 480)))
    jobs = [(texts[int(rng.integers(len(texts)))], voices[int(rng.integers(len(voices)))],
             int(rng.choice(list(speeds_wpm))), int(rng.integers(25, 76))) for _ in range(count)]
    speech = [a for a in parallel_map(_speak_job, jobs, num_workers(workers), "negative stream speech") if len(a)]
    if not speech:
        raise ValueError(f"none of {len(jobs)} negative-stream utterances could be spoken by {len(voices)} voices")
    music = [procedural_music(20.0, np.random.default_rng([seed, 6, i])) for i in range(40)]
    kinds = dict.fromkeys(KINDS, 0.0)

    def utterances(secs: float) -> np.ndarray:
        parts, have = [], 0
        while have < secs * sr:
            u = speech[int(rng.integers(len(speech)))].astype(np.float32)
            u = u / (np.sqrt(np.mean(u**2)) + 1e-9)
            if rng.random() < 0.4:
                u = fftconvolve(u, rirs[int(rng.integers(len(rirs)))])[: len(u) + sr // 4]
                u = u / (np.sqrt(np.mean(u**2)) + 1e-9)
            gap = np.zeros(int(rng.uniform(0.2, 2.0) * sr), np.float32)
            parts += [u, gap]
            have += len(u) + len(gap)
        return np.concatenate(parts)[: int(secs * sr)]

    def bed(kind: str, n: int) -> np.ndarray:
        if kind == "music":
            return np.resize(music[int(rng.integers(len(music)))], n)
        noise = coloured_noise(n, str(rng.choice(["white", "pink", "brown"])), rng)
        return noise * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * np.arange(n) / sr))

    pieces = []
    for k in range(max(1, int(np.ceil(seconds / stream_s)))):
        piece_s = min(stream_s, seconds - k * stream_s) if seconds > 0 else stream_s
        parts, have = [], 0
        while have < piece_s * sr:
            kind = str(rng.choice(list(KINDS), p=list(KINDS.values())))
            secs = float(rng.uniform(8, 40))
            n = int(secs * sr)
            if kind.startswith("speech"):
                x = utterances(secs)
                if kind != "speech":
                    x = x + bed("music" if kind.endswith("music") else "noise", n) * 10 ** (-rng.uniform(5, 25) / 20)
            elif kind == "babble":
                x = sum(utterances(secs) * rng.uniform(0.3, 1.0) for _ in range(int(rng.integers(3, 7))))
            else:
                x = bed(kind, n)
            x = x / (np.sqrt(np.mean(x**2)) + 1e-9) * 3000 * 10 ** (rng.uniform(-20, 6) / 20)
            parts.append(x)
            kinds[kind] += secs
            have += n
        audio = np.concatenate(parts)[: int(piece_s * sr)]
        pieces.append(np.clip(audio, -32768, 32767).astype(np.int16))
    info = {"hours": sum(len(p) for p in pieces) / sr / 3600.0, "speech_utterances": len(speech), "voices": len(voices),
            "seconds_by_kind": {k: round(v) for k, v in kinds.items()}}
    return pieces, info


def stream_entries(info: DatasetInfo, split: str) -> list[dict[str, Any]]:
    """The stored negative-stream files of `split` (labels.json `negative_streams`; [] if none)."""
    return list(((info.negative_streams or {}).get(split) or {}).get("files", []))


def read_negative_streams(dataset_dir: str | Path, entries: Sequence[dict[str, Any]],
                          sample_rate_hz: int = SAMPLE_RATE) -> list[np.ndarray]:
    """The int16 audio of each stored negative stream (labels.json `negative_streams` entries),
    each file checked against the sha256 written with it."""
    from tinyconv.data.audio import AudioError, AudioStream
    from tinyconv.data.manifest import DatasetError
    from tinyconv.hashing import file_sha256

    out = []
    for entry in entries:
        path = Path(dataset_dir) / str(entry["path"])
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise DatasetError(f"negative stream {path} is unreadable ({exc.strerror or exc}); re-create the "
                               "dataset") from None
        expected = str(entry["sha256"]).lower()
        if digest != expected:
            raise DatasetError(f"negative stream {path} changed since the dataset was written (sha256 "
                               f"{digest[:12]}..., labels.json says {expected[:12]}...); re-create the dataset")
        try:
            audio = AudioStream(path, sample_rate_hz)
            out.append(audio.segment(0, audio.num_samples))
        except AudioError as err:
            raise DatasetError(f"negative stream {err}") from None
    return out


def split_seed(split: str) -> int:
    """A split's own seed for its context positives (stable across runs, unlike hash())."""
    import zlib

    return zlib.crc32(split.encode())


def load_negative_streams(dataset_dir: str | Path, info: DatasetInfo, split: str, positive_rows: Sequence[Any],
                          frontend: Any = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A split's stored long negative audio as device features: ([T, F] per stream, computed on
    the continuous audio as the device computes them; `read_negative_streams` checks the files),
    and `context_positives` of `positive_rows` over that audio (None without streams or rows)."""
    from tinyconv.config import FrontendConfig
    from tinyconv.features import StreamingFrontend

    frontend = frontend or FrontendConfig()
    audio = read_negative_streams(dataset_dir, stream_entries(info, split), frontend.sample_rate_hz)
    features = [StreamingFrontend(frontend).process(a) for a in audio]
    context = None
    if audio and positive_rows:
        context = context_positives(dataset_dir, positive_rows, audio, frontend, seed=split_seed(split))
    return features, context


# Positives heard in context (`context_positives`): seconds of the split's long negative audio the
# frontend runs on before each wake word, the gain range of that audio (it keeps playing under the
# wake word), and how long it runs on after the clip (the streaming trainer's delayed windows).
CONTEXT_S = 2.0
CONTEXT_GAIN = (0.1, 0.5)
CONTEXT_POST_MS = 500


def context_positives(dataset_dir: str | Path, rows: Sequence[Any], streams: Sequence[np.ndarray],
                      frontend: Any = None, *, seed: int = 0) -> np.ndarray:
    """Device features of each positive clip as a device hears it in everyday audio: the clip mixed
    over a seeded piece of the split's long negative audio `streams` (int16) at a gain in
    CONTEXT_GAIN, featurized continuously from CONTEXT_S before the clip to CONTEXT_POST_MS after
    it. Returns float32 [len(rows), num_frames + post frames, F]; row i's first num_frames frames
    are the window that ends where the clip ends.

    Why: clip features start from a pre-roll of noise at the clip's own level
    (`features.frontend.clip_features`), while on a device the noise estimate and automatic gain
    of the frontend have just heard speech, music or a TV. A streaming model trained on hours of
    such context as negatives, and on wake words only ever after quiet noise, learns the context as
    evidence against the wake word (measured on benchmarks/e2e.py's held-out streams: the streaming
    model's share of positives above 0.8 at the clip's end fell from 0.45 to 0.20 in context)."""
    from tinyconv.config import FrontendConfig
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import resolve
    from tinyconv.features import StreamingFrontend
    from tinyconv.features.frontend import fit_clip

    fc = frontend or FrontendConfig()
    step = fc.step_samples
    pre = int(CONTEXT_S * fc.sample_rate_hz) // step * step
    post = int(CONTEXT_POST_MS * fc.sample_rate_hz / 1000) // step * step
    need = pre + fc.clip_samples + post
    usable = [s for s in streams if len(s) >= need]
    if not usable:
        from tinyconv.data.manifest import DatasetError

        raise DatasetError(f"{dataset_dir}: positives heard in context need a negative stream of at least "
                           f"{need / fc.sample_rate_hz:.1f} s, the longest is "
                           f"{max((len(s) for s in streams), default=0) / fc.sample_rate_hz:.1f} s; synthesize "
                           f"more (data.negative_stream_minutes, data.train_negative_stream_minutes) or set "
                           f"train.context_positive_fraction=0")
    frames = fc.num_frames + post // step
    out = np.empty((len(rows), frames, fc.num_channels), dtype=np.float32)
    rng = np.random.default_rng([seed, 41])
    for i, row in enumerate(rows):
        clip = fit_clip(load_audio(resolve(str(dataset_dir), row), fc.sample_rate_hz).samples, fc.clip_samples)
        bed = usable[int(rng.integers(len(usable)))]
        start = int(rng.integers(0, len(bed) - need + 1))
        mix = bed[start : start + need].astype(np.float32) * float(rng.uniform(*CONTEXT_GAIN))
        mix[pre : pre + fc.clip_samples] += clip
        feats = StreamingFrontend(fc).process(np.clip(np.round(mix), -32768, 32767).astype(np.int16))
        out[i] = feats[-frames:]
    return out
