"""Synthesize a wake-word dataset offline: TTS positives and negatives, augmented, split by speaker.

Two parallel phases (process pool, deterministic for a seed whatever the worker count):
1. speak every clean utterance (espeak-ng / flite voices, speeds, pitches);
2. place each in a 1 s window and augment it (reverb, noise incl. babble, gain), write WAVs.
Splits are speaker-disjoint: an espeak-ng variant (timbre) or flite voice belongs to one split
only, across every accent; natural voices (tinyconv.data.natural_tts) come with their splits, a
Kokoro blend in the split of the base voices it mixes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from tinyconv.config import Config, save_config
from tinyconv.data.audio import write_wav
from tinyconv.data.augment import augment_clip, place, simulate_rirs
from tinyconv.data.manifest import SPLITS, DatasetInfo, Row, write_manifest
from tinyconv.data.natural_tts import (
    GATED_KINDS,
    WORKER_SETTINGS,
    ClipGate,
    GateError,
    GateItem,
    GateReport,
    GateWarning,
    NaturalVoices,
    clip_count,
    natural_voices,
    run_gate,
    settings_for,
    stretch_count,
    window,
)
from tinyconv.data.phrases import confusable_phrases, natural_stretches, other_phrases, other_wake_words
from tinyconv.data.tts import Voice, available_voices, random_voices, synthesize
from tinyconv.data.writing import dataset_writer

NEGATIVE_LABEL = "_negative_"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Utterance:
    index: int
    text: str
    kind: str  # positive, confusable, speech, background, other_wake_word, long_speech, recorded
    split: str
    voice: Voice | None
    speed_wpm: int
    pitch: int
    # Spoken again faster while longer than this many samples (0 = any length).
    max_samples: int = 0


@dataclass(frozen=True)
class Spoken:
    audio: np.ndarray  # int16, silence trimmed
    speed_wpm: int  # the rate it was finally spoken at


# The fastest rate speak_to_fit tries (espeak-ng's maximum; flite gets the same cap).
MAX_WPM = 450


def num_workers(requested: int) -> int:
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[T], R],
    items: list[T],
    workers: int,
    desc: str,
    state: dict[str, Any] | None = None,
    state_global: str | None = None,
) -> Iterator[R]:
    """Ordered map over worker processes with a progress bar (serial for one worker or few items).

    `state` is copied into the module-global dict named by `state_global` ("module:name"), which
    `fn` reads, in every worker (and here when serial). Workers come from a forkserver, not a fork
    of this process: forking a process that runs threads (torch, tqdm's monitor) can copy a held
    lock and hang a worker forever, and a dead worker makes ProcessPoolExecutor raise instead of
    waiting. Workers exit when this process dies, even by SIGKILL (tinyconv.data.workers).
    """
    bar = tqdm(total=len(items), desc=desc, unit="clip", leave=False, disable=None)
    try:
        if workers <= 1 or len(items) < 8:
            _set_state(state or {}, state_global)
            for item in items:
                yield fn(item)
                bar.update()
            return
        ctx = mp.get_context("forkserver")
        chunk = max(1, min(32, len(items) // (workers * 8)))
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), state or {}, state_global)) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()


def _init_worker(run_pid: int, state: dict[str, Any], state_global: str | None) -> None:
    from tinyconv.data.workers import die_with_parent

    die_with_parent(run_pid)
    _set_state(state, state_global)


def _set_state(state: dict[str, Any], state_global: str | None) -> None:
    if state_global is not None:
        import importlib

        module, name = state_global.split(":")
        getattr(importlib.import_module(module), name).update(state)


def split_speakers(voices: list[Voice], cfg_seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """speaker -> split, shuffled with the seed; each split gets at least one speaker."""
    speakers = sorted({v.speaker for v in voices})
    rng = np.random.default_rng([cfg_seed, 7])
    rng.shuffle(speakers)
    n = len(speakers)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    if n_test + n_val >= n:
        raise ValueError(f"only {n} TTS speakers: too few for speaker-disjoint train/val/test splits")
    out = {s: "test" for s in speakers[:n_test]}
    out.update({s: "val" for s in speakers[n_test : n_test + n_val]})
    out.update({s: "train" for s in speakers[n_test + n_val :]})
    return out


def plan_utterances(config: Config, voices: list[Voice], train_only: list[Voice] | None = None,
                    natural: NaturalVoices | None = None) -> list[Utterance]:
    """Every clean utterance to speak, with its split and voice, decided up front from the seed.

    `train_only` voices (generated timbres) join the training split only, so validation and
    test stay on real held-out voices. `natural` voices (tinyconv.data.natural_tts) come with
    their splits: they take a share of the utterances of their split, speak the long stretches,
    and its recordings are added as negatives of their speaker's split. Without them (and with
    data.num_other_wake_words 0) the plan is what it was before they existed.
    """
    d = config.data
    rng = np.random.default_rng([d.seed, 1])
    speaker_split = split_speakers(voices, d.seed, d.val_fraction, d.test_fraction)
    extra = train_only or []
    speaker_split.update({v.speaker: "train" for v in extra})
    by_split = {s: [v for v in voices + extra if speaker_split[v.speaker] == s] for s in SPLITS}
    weights = np.array([1 - d.val_fraction - d.test_fraction, d.val_fraction, d.test_fraction])
    wake = d.wake_word.strip()
    spellings = [wake, wake.lower(), wake.capitalize(), wake + "!", wake.replace(" ", ", ") + "."]
    confusables = confusable_phrases(wake, d.confusable_min_phoneme_distance)
    texts: list[tuple[str, str]] = [(spellings[i % len(spellings)], "positive") for i in range(d.num_positive)]
    texts += [(confusables[i % len(confusables)], "confusable") for i in range(d.num_confusable)]
    texts += [(t, "speech") for t in other_phrases(wake, d.num_other_speech, rng)]
    texts += [(t, "other_wake_word") for t in other_wake_words(wake, d.num_other_wake_words)]
    texts += [("", "background")] * d.num_background
    nat_rng = np.random.default_rng([d.seed, 5])  # natural voices draw apart: the rest of the plan stays
    max_samples = int(d.max_phrase_fraction * config.frontend.clip_samples)
    plan = []
    for index, (text, kind) in enumerate(texts):
        split = str(rng.choice(SPLITS, p=weights))
        pool = by_split[split]
        voice = pool[int(rng.integers(len(pool)))] if kind != "background" else None
        speed = int(rng.choice(d.speeds_wpm))
        pitch = int(rng.integers(d.pitch_range[0], d.pitch_range[1] + 1))
        if natural is not None and voice is not None:
            voice = natural.pick(split, nat_rng) or voice
        plan.append(Utterance(index, text, kind, split, voice, speed, pitch,
                              max_samples if kind in ("positive", "confusable", "other_wake_word") else 0))
    if natural is not None:
        plan += _plan_natural_negatives(config, natural, len(plan), nat_rng)
    return plan


def _plan_natural_negatives(config: Config, natural: NaturalVoices, start: int,
                            rng: np.random.Generator) -> list[Utterance]:
    """Long stretches of natural speech (data.natural_negative_seconds, shared out like the
    splits) and the recordings (each in its speaker's split; speakers split like TTS voices)."""
    d = config.data
    plan: list[Utterance] = []
    fractions = {"train": 1 - d.val_fraction - d.test_fraction, "val": d.val_fraction, "test": d.test_fraction}
    for split in SPLITS:
        speakers = natural.speaking(split)
        count = stretch_count(natural.long_speech_seconds, fractions[split]) if speakers else 0
        for text in natural_stretches(d.wake_word, count, rng):
            voice = speakers[int(rng.integers(len(speakers)))]
            plan.append(Utterance(start + len(plan), text, "long_speech", split, voice, int(rng.choice(d.speeds_wpm)),
                                  int(rng.integers(d.pitch_range[0], d.pitch_range[1] + 1))))
    if natural.recordings:
        recorded = [v for v, _ in natural.recordings]
        speaker_split = split_speakers(recorded, d.seed, d.val_fraction, d.test_fraction)
        for voice, text in natural.recordings:
            plan.append(Utterance(start + len(plan), text, "recorded", speaker_split[voice.speaker], voice, 160, 50))
    return plan


def speak_to_fit(text: str, voice: Voice, *, speed_wpm: int, pitch: int, max_samples: int = 0,
                 attempts: int = 4) -> Spoken:
    """Speak `text`; while it lasts longer than `max_samples`, speak it again faster.

    Duration is not inversely proportional to the rate (stress lengthening adds fixed time), so
    the rate grows by the measured overshoot, 5 % more, a few times. What still does not fit
    after `attempts` (or at MAX_WPM) is returned as is; the window crops it later.
    """
    audio = synthesize(text, voice, speed_wpm=speed_wpm, pitch=pitch)
    for _ in range(attempts):
        if not max_samples or len(audio) <= max_samples or speed_wpm >= MAX_WPM:
            break
        speed_wpm = min(MAX_WPM, int(np.ceil(speed_wpm * 1.05 * len(audio) / max_samples)))
        audio = synthesize(text, voice, speed_wpm=speed_wpm, pitch=pitch)
    return Spoken(audio, speed_wpm)


def _speak(u: Utterance) -> Spoken:
    if u.voice is None:
        return Spoken(np.zeros(0, dtype=np.int16), u.speed_wpm)
    return speak_to_fit(u.text, u.voice, speed_wpm=u.speed_wpm, pitch=u.pitch, max_samples=u.max_samples)


# Shared with forked workers (read-only): set before the pool starts.
_AUG_STATE: dict[str, Any] = {}


def _augment(job: tuple[int, int]) -> Row:
    index, copy = job
    st = _AUG_STATE
    config: Config = st["config"]
    u: Utterance = st["plan"][index]
    rng = np.random.default_rng([config.data.seed, 2, index, copy])
    n = config.frontend.clip_samples
    spoken: Spoken = st["spoken"][index]
    clean = window(u.kind, spoken.audio, copy, n)  # a long stretch gives one clip per window
    shift = config.frontend.sample_rate_hz * config.augment.max_shift_ms // 1000
    # Negatives end where positives end as often as not: otherwise "speech that ends at the end
    # of the window" is itself a cue, the model learns it, and end-aligned near misses pass.
    end_aligned = u.kind in ("positive", "confusable", "other_wake_word") or (u.kind == "speech" and rng.random() < 0.5)
    placed = place(clean, n, rng, end_aligned=end_aligned, max_shift=shift)
    aug_cfg = config.augment
    if u.kind == "background":
        from dataclasses import replace as dc_replace

        aug_cfg = dc_replace(aug_cfg, noise_probability=1.0 if rng.random() > 0.1 else 0.0)
        if aug_cfg.noise_probability == 0.0:  # near-silence: a little dither
            placed = rng.normal(0, 3.0, n).astype(np.float32)
    samples, info = augment_clip(placed, rng, aug_cfg, st["rirs"][u.split], st["babble"][u.split])
    if spoken.speed_wpm != u.speed_wpm:
        info = {"wpm": spoken.speed_wpm, **info}  # spoken again faster to fit the window
    if u.max_samples and len(clean) > u.max_samples:
        info = {"too_long": 1, **info}
    label = st["positive_label"] if u.kind == "positive" else NEGATIVE_LABEL
    rel = f"{u.split}/{u.kind}/{index:06d}_{copy}.wav"
    sha = write_wav(Path(st["out"]) / rel, samples, config.frontend.sample_rate_hz)
    aug = ";".join(f"{k}={v}" for k, v in info.items())
    return Row(rel, label, u.split, u.voice.id if u.voice else "", u.text, u.kind, aug, sha,
               u.voice.speaker if u.voice else "")


def synthesize_dataset(config: Config, out_dir: str | Path | None = None, gate: ClipGate | None = None) -> Path:
    """Build the dataset folder (WAVs, manifest.csv, labels.json, config.yaml). Returns its path.

    `gate` (tinyconv.data.natural_tts.ClipGate; default: the Whisper gate data.intelligibility_gate
    names, tinyconv.data.intelligibility) sees every natural-voice wake word, near miss and other
    wake word once spoken; a clip it rejects is left out of the dataset, named in a GateWarning
    and counted under `intelligibility_gate` in labels.json; with data.strict it is a GateError
    and nothing is written. The gate's folder is loaded before anything is spoken.

    The folder is written whole into a temporary sibling and swapped in when complete, under a
    lock (tinyconv.data.writing): a killed run leaves the previous dataset intact.
    """
    d = config.data
    final = Path(out_dir or d.dataset_dir)
    if gate is None and d.intelligibility_gate:
        from tinyconv.data.intelligibility import gate_from_config

        gate = gate_from_config(config)  # a missing or damaged folder fails here, before any work
    with dataset_writer(final) as out:
        rows = _synthesize_into(config, out, gate)
    too_long = phrase_fit_counts(rows)["too_long"]
    if too_long:
        warnings.warn(f"{too_long} wake-word / near-miss clips last longer than {d.max_phrase_fraction:.0%} of the "
                      f"{config.frontend.clip_duration_ms} ms window even at {MAX_WPM} wpm and are cropped: use a "
                      f"shorter wake word or a longer frontend.clip_duration_ms", stacklevel=2)
    return final


def _synthesize_into(config: Config, out: Path, gate: ClipGate | None = None) -> list[Row]:
    d = config.data
    voices = available_voices()
    extra = random_voices(d.random_voices, d.seed, out / "espeak-voices") if d.random_voices else []
    natural = natural_voices(config)
    plan = plan_utterances(config, voices, extra, natural)
    workers = num_workers(d.num_workers)
    try:
        spoken = list(parallel_map(_speak, plan, workers, "speak", settings_for(config),
                                   "tinyconv.data.natural_tts:WORKER_SETTINGS"))
    finally:
        WORKER_SETTINGS.clear()  # set here too when serial: later direct calls use the defaults
    report = run_gate([GateItem(u.index, u.text, u.kind, u.voice.id, c.audio, config.frontend.sample_rate_hz, u.split)
                       for u, c in zip(plan, spoken, strict=True) if u.voice is not None and u.kind in GATED_KINDS
                       and u.voice.engine in ("kokoro", "hibari")], gate)
    _report_gate(report, d.strict)
    rejected = report.indices
    # RIRs and babble sources per split, so test audio never shares a room or a voice with train.
    rirs = {
        s: simulate_rirs(max(1, config.augment.num_room_impulse_responses // 3), config.frontend.sample_rate_hz,
                         seed=d.seed * 10 + i)
        for i, s in enumerate(SPLITS)
    }
    babble = {s: [c.audio for u, c in zip(plan, spoken, strict=True)
                  if u.split == s and u.kind in ("speech", "long_speech", "recorded") and len(c.audio)]
              for s in SPLITS}
    state = dict(config=config, plan=plan, spoken=spoken, rirs=rirs, babble=babble, out=str(out),
                 positive_label=d.wake_word_label)
    jobs = [(u.index, c) for u in plan if u.index not in rejected
            for c in range(clip_count(u.kind, spoken[u.index].audio, config.frontend.clip_samples,
                                      config.augment.copies_per_clip))]
    try:
        rows = list(parallel_map(_augment, jobs, workers, "augment", state, f"{__name__}:_AUG_STATE"))
    finally:
        _AUG_STATE.clear()
    streams = (_write_negative_streams(config, out, plan, rirs)
               if d.negative_stream_minutes > 0 or d.train_negative_stream_minutes > 0 else None)
    write_manifest(out, rows, DatasetInfo(labels=[NEGATIVE_LABEL, d.wake_word_label], positive_label=d.wake_word_label,
                                          intelligibility_gate=report.metadata() if gate is not None else None,
                                          negative_streams=streams))
    save_config(config, out / "config.yaml")
    return rows


# Engines fast enough for hours of negative-stream speech (Kokoro runs at about real time).
STREAM_ENGINES = ("espeak-ng", "flite")


def _write_negative_streams(config: Config, out: Path, plan: list[Utterance],
                            rirs: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """data.negative_stream_minutes of long negative audio for val and test (and
    data.train_negative_stream_minutes for train), by each split's own espeak-ng / flite voices in
    its own rooms (tinyconv.data.negative_streams), as 10 min WAVs."""
    from tinyconv.data.negative_streams import negative_stream_audio

    d = config.data
    result: dict[str, Any] = {}
    minutes = {"val": d.negative_stream_minutes, "test": d.negative_stream_minutes,
               "train": d.train_negative_stream_minutes}
    for i, split in enumerate(("val", "test", "train")):
        if minutes[split] <= 0:
            continue
        voices = sorted({u.voice for u in plan if u.split == split and u.voice is not None
                         and u.voice.engine in STREAM_ENGINES}, key=lambda v: v.id)
        if not voices:
            warnings.warn(f"negative streams: the {split} split has no espeak-ng/flite voice to speak them; it gets "
                          f"none", stacklevel=3)
            continue
        pieces, info = negative_stream_audio(d.wake_word, voices, minutes[split] * 60.0, rirs[split],
                                             seed=d.seed * 10 + 3 + i, speeds_wpm=d.speeds_wpm, workers=d.num_workers)
        files = []
        for k, audio in enumerate(pieces):
            rel = f"streams/{split}_negative_{k:03d}.wav"
            sha = write_wav(out / rel, audio, config.frontend.sample_rate_hz)
            files.append({"path": rel, "sha256": sha, "seconds": len(audio) / config.frontend.sample_rate_hz})
        result[split] = {**info, "files": files}
    return result


def _report_gate(report: GateReport, strict: bool) -> None:
    """Rejected clips: a GateWarning naming them (the run goes on), or a GateError with `strict`."""
    if not report.rejected:
        return
    if strict:
        raise GateError(f"{report.summary()} (strict mode; without strict they are left out and the run goes on): "
                        + "; ".join(report.named(3)))
    warnings.warn("; they were left out:\n  ".join([report.summary(), "\n  ".join(report.named())]), GateWarning,
                  stacklevel=4)


def phrase_fit_counts(rows: Iterable[Row]) -> dict[str, int]:
    """How many wake-word / near-miss clips were spoken faster to fit the window, and how many
    still did not fit (from the manifest's aug column)."""
    keys = [{kv.split("=", 1)[0] for kv in r.aug.split(";")} for r in rows]
    return {"faster": sum("wpm" in k for k in keys), "too_long": sum("too_long" in k for k in keys)}


def split_counts(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for r in rows:
        counts[r.split][r.label] = counts[r.split].get(r.label, 0) + 1
    return counts
