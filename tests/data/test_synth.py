from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import tiny_config
from tinyconv.config import replace
from tinyconv.data.dataset import load_features
from tinyconv.data.manifest import DatasetError, read_manifest, resolve
from tinyconv.data.phrases import confusable_phrases, other_phrases, phonemes, phonemes_of
from tinyconv.data.synth import MAX_WPM, phrase_fit_counts, plan_utterances, speak_to_fit, synthesize_dataset
from tinyconv.data.tts import Voice, available_voices, espeak_accents, random_voices, synthesize


def test_manifest_splits_are_speaker_disjoint(tiny_dataset: Path) -> None:
    rows, info = read_manifest(tiny_dataset)
    assert info.labels == ["_negative_", "hey_tiny"] and info.positive_label == "hey_tiny"
    assert {r.split for r in rows} == {"train", "val", "test"}
    speakers: dict[str, set[str]] = {}
    for r in rows:
        if r.voice:
            voice = r.voice
            speaker = voice.split("+", 1)[1] if "+" in voice else ("default" if voice.startswith("espeak") else voice)
            speakers.setdefault(speaker, set()).add(r.split)
    assert speakers and all(len(s) == 1 for s in speakers.values())
    for r in rows[:20]:
        audio, rate = sf.read(resolve(tiny_dataset, r), dtype="int16")
        assert rate == 16000 and audio.ndim == 1 and len(audio) == 16000


def test_positives_and_negatives_are_labelled_by_kind(tiny_dataset: Path) -> None:
    rows, _ = read_manifest(tiny_dataset)
    kinds = {r.kind for r in rows}
    assert kinds == {"positive", "confusable", "speech", "background"}
    assert all((r.label == "hey_tiny") == (r.kind == "positive") for r in rows)


def test_synthesis_is_deterministic(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "data.num_positive=6", "data.num_confusable=3", "data.num_other_speech=3",
                      "data.num_background=2", "data.num_workers=2")

    def digest(d: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(d.rglob("*.wav")):
            h.update(p.read_bytes())
        return h.hexdigest()

    a = synthesize_dataset(cfg, tmp_path / "a")
    b = synthesize_dataset(replace(cfg, data={"num_workers": 1}), tmp_path / "b")
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    assert digest(a) == digest(b)


def test_confusables_never_contain_or_sound_like_the_wake_word() -> None:
    phrases = confusable_phrases("hey tiny")
    assert len(phrases) > 30
    assert "hey tiny" not in phrases and "hay tiny" not in phrases  # same phonemes
    target = phonemes("hey tiny")
    assert all(phonemes(p) != target for p in phrases)
    assert all("hey tiny" not in p for p in other_phrases("hey tiny", 200, np.random.default_rng(0)))


def test_voices_cover_accents_and_engines() -> None:
    voices = available_voices()
    assert len({v.name for v in voices if v.engine == "espeak-ng"}) >= 5
    assert len(voices) >= 100


def test_features_of_a_split(tiny_dataset: Path) -> None:
    fs = load_features(tiny_dataset, "train")
    assert fs.x.shape[1:] == (98, 40) and len(fs.x) == len(fs.y) and fs.positive_index == 1
    with pytest.raises(DatasetError, match="not a tinyconv dataset"):
        load_features(tiny_dataset / "nope", "train")


def test_bad_clips_are_skipped_with_a_summary_or_fail_in_strict(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds, ignore=shutil.ignore_patterns(".feature_cache"))
    rows, _ = read_manifest(ds)
    val = [r for r in rows if r.split == "val" and r.kind != "background"]
    resolve(ds, val[0]).write_bytes(b"not audio")
    sf.write(resolve(ds, val[1]), np.zeros(16000, dtype=np.int16), 16000)
    with pytest.warns(UserWarning, match="skipped 2 bad clips"):
        fs = load_features(ds, "val")
    assert fs.summary.skipped == {"unreadable": 1, "silent": 1}
    assert len(fs) == sum(1 for r in rows if r.split == "val") - 2
    with pytest.raises(DatasetError, match="bad clip \\(strict mode\\).*unreadable audio"):
        load_features(ds, "val", strict=True)


def _say(voice: Voice, text: str = "hey tiny") -> np.ndarray:
    return synthesize(text, voice, speed_wpm=160, pitch=50)


def test_every_espeak_accent_applies_its_variant() -> None:
    # espeak-ng speaks plain en-gb for "-v en-gb+m3" (it drops the variant without a word), which
    # once put one en-gb timbre into train, val and test under 100 different speaker names.
    accents = espeak_accents()
    assert "en-gb" in accents
    for accent in accents:
        plain, varied = _say(Voice("espeak-ng", accent)), _say(Voice("espeak-ng", accent, "m3"))
        assert plain.shape != varied.shape or not np.array_equal(plain, varied), accent


def test_random_voices_are_distinct_deterministic_and_train_only(tmp_path: Path) -> None:
    voices = random_voices(3, seed=5, folder=tmp_path / "a")
    assert len(voices) == 3 * len(espeak_accents())
    again = random_voices(3, seed=5, folder=tmp_path / "b")
    variant_dir = Path("set0") / "espeak-ng-data" / "voices" / "!v"
    for name in ("tinyconv000", "tinyconv001", "tinyconv002"):
        text = (tmp_path / "a" / variant_dir / name).read_text()
        assert text == (tmp_path / "b" / variant_dir / name).read_text() and "formant 1 " in text
    assert [v.variant for v in again] == [v.variant for v in voices]
    clips = [_say(v) for v in voices if v.name == "en-us"]
    clips.append(_say(Voice("espeak-ng", "en-us")))
    assert len({c.tobytes() for c in clips}) == 4  # three new timbres, none the default

    cfg = tiny_config(tmp_path, "data.num_positive=200")
    plan = plan_utterances(cfg, available_voices(), voices)
    generated = [u for u in plan if u.voice in set(voices)]
    assert generated and {u.split for u in generated} == {"train"}
    assert {u.split for u in plan} == {"train", "val", "test"}


def test_random_voices_end_to_end(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "data.num_positive=8", "data.num_confusable=2", "data.num_other_speech=2",
                      "data.num_background=1", "data.random_voices=50", "data.num_workers=1")
    out = synthesize_dataset(cfg, tmp_path / "d")
    rows, _ = read_manifest(out)
    generated = [r for r in rows if "+tinyconv" in r.voice]
    assert generated and all(r.split == "train" for r in generated)


def test_confusables_keep_their_distance_from_every_accents_wake_word() -> None:
    # en-GB-x-gbcwmd says "hey tiny" without the h ('eI t'aIni): "tiny" and "ey tiny" are one
    # phoneme from that positive, so at distance 2 they are not negatives; with en-us alone they are.
    every_accent = confusable_phrases("hey tiny", 2)
    us_only = confusable_phrases("hey tiny", 2, accents=["en-us"])
    assert {"tiny", "ey tiny"} <= set(us_only) - set(every_accent)
    assert "key tiny" in every_accent and "hey briny" in every_accent
    assert phonemes_of(["hey tiny", "key tiny"], "gmw/en-GB-x-gbcwmd") == ["eItaIni", "ki:taIni"]


def test_hundreds_of_random_voices_stay_under_espeaks_voice_list_limit(tmp_path: Path) -> None:
    # espeak-ng fails past 349 voice files; generated variants are spread over folders holding
    # only the English voices (random_voices itself checks its first and last voice are applied).
    voices = random_voices(300, seed=0, folder=tmp_path)
    assert {Path(v.data_path).name for v in voices} == {"set0", "set1"}
    last = voices[-1]
    assert last.variant == "tinyconv299" and Path(last.data_path).name == "set1"
    assert not np.array_equal(_say(last), _say(Voice("espeak-ng", last.name)))


def test_a_variant_espeak_cannot_find_is_an_error_not_the_default_voice(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # With the generated variant files missing, espeak-ng would speak its default timbre.
    from tinyconv.data import tts

    real = tts._espeak_data_folder
    monkeypatch.setattr(tts, "_espeak_data_folder", lambda folder, root, variants: real(folder, root, {}))
    with pytest.raises(tts.TTSError, match="espeak-ng ignored the generated variant 'tinyconv000'"):
        random_voices(2, seed=0, folder=tmp_path)


def test_a_slow_stretched_wake_word_is_spoken_faster_until_it_fits_the_window() -> None:
    # espeak-ng's "Marco" variant lengthens stressed syllables: at 120 wpm "hey tiny" outlasts the
    # 1 s window, which would keep only "...ey tiny" under the wake-word label.
    voice = Voice("espeak-ng", "en-us", "Marco")
    slow = synthesize("hey tiny", voice, speed_wpm=120, pitch=50)
    assert len(slow) > 16000
    fit = speak_to_fit("hey tiny", voice, speed_wpm=120, pitch=50, max_samples=14400)
    assert len(fit.audio) <= 14400 and 120 < fit.speed_wpm <= MAX_WPM
    # Already short enough: spoken once, at the planned rate.
    same = speak_to_fit("hey tiny", Voice("espeak-ng", "en-us"), speed_wpm=160, pitch=50, max_samples=14400)
    assert same.speed_wpm == 160
    assert np.array_equal(same.audio, synthesize("hey tiny", Voice("espeak-ng", "en-us"), speed_wpm=160, pitch=50))


def test_only_wake_words_and_near_misses_are_fitted_and_the_manifest_says_which(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "data.num_positive=12", "data.num_confusable=6", "data.num_other_speech=6",
                      "data.num_background=1", "data.num_workers=1", "data.speeds_wpm=[120]")
    plan = plan_utterances(cfg, available_voices())
    assert {u.max_samples for u in plan if u.kind in ("positive", "confusable")} == {14400}
    assert {u.max_samples for u in plan if u.kind in ("speech", "background")} == {0}
    off = plan_utterances(replace(cfg, data={"max_phrase_fraction": 0.0}), available_voices())
    assert {u.max_samples for u in off} == {0}  # 0 = any length, as before the fix
    # A limit no phrase can meet: every wake word / near miss is spoken at the fastest rate,
    # marked too_long in the manifest, and the run warns instead of failing.
    with pytest.warns(UserWarning, match=r"longer than 20% of the 1000 ms window even at 450 wpm"):
        out = synthesize_dataset(replace(cfg, data={"max_phrase_fraction": 0.2}), tmp_path / "d")
    rows, _ = read_manifest(out)
    fitted = [r for r in rows if r.kind in ("positive", "confusable")]
    assert all("wpm=" in r.aug for r in fitted), [r.aug for r in fitted]
    too_long = [r for r in fitted if "too_long=1" in r.aug]
    assert too_long and all(f"wpm={MAX_WPM}" in r.aug for r in too_long)
    assert not any("wpm=" in r.aug for r in rows if r.kind == "speech")
    assert phrase_fit_counts(rows) == {"faster": len(fitted), "too_long": len(too_long)}


def test_max_phrase_fraction_is_validated() -> None:
    from tinyconv.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.max_phrase_fraction must be in"):
        load_config(None, ["data.max_phrase_fraction=1.5"])
