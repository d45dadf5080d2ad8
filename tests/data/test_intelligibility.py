"""The intelligibility gate (tinyconv.data.intelligibility): the real Whisper tiny.en (imported
once per session from the installed package) listens to hibari; the rule, the counts in
labels.json and the synth summary, clear errors for a missing or damaged Whisper folder, and
`--strict`. Tests that only check the plumbing use a stub gate (fast and deterministic)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import skip_unless_ci, tiny_config
from tinyconv.config import ConfigError, load_config
from tinyconv.data import intelligibility
from tinyconv.data.intelligibility import WakeWordMatcher, WhisperGate, keep, normalize_words
from tinyconv.data.manifest import read_manifest
from tinyconv.data.natural_tts import (
    HIBARI_VOICE,
    GateError,
    GateItem,
    GateVerdict,
    GateWarning,
    missing_message,
    run_gate,
    synthesize_natural,
)
from tinyconv.data.synth import synthesize_dataset


def _need_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")


def _need_hibari() -> None:
    message = missing_message("hibari")
    if message is not None:
        skip_unless_ci(message)


def _hibari(text: str) -> np.ndarray:
    return synthesize_natural(text, HIBARI_VOICE, speed_wpm=160, pitch=50, cache_dir="")


# --- the rule ------------------------------------------------------------------------------------------

def test_the_rule_and_what_counts_as_the_wake_word() -> None:
    _need_espeak()
    assert normalize_words("Hey, Tiny!") == ["hey", "tiny"]
    assert normalize_words("  hey-tiny... don't Café ") == ["hey", "tiny", "don't", "cafe"]
    m = WakeWordMatcher("hey tiny")
    # Spellings that sound the same, with punctuation, inside longer speech, joined: the wake word.
    for heard in ("Hey, Tiny.", "Hay tiny!", "HEY TINY?", "well, hey tiny there", "Heytiny.", "hey-tiny"):
        assert m.heard(heard), heard
    # One phoneme off, or another name: not the wake word (what Whisper really heard from near misses).
    for heard in ("Hey, tidy.", "Hey Tonya!", "Hey Tony.", "Hi Tiny.", "Pay tiny.", "tiny", "Hey.", ""):
        assert not m.heard(heard), heard
    assert WakeWordMatcher("okay nabu").heard("OK, Nabu.")  # "ok" and "okay" are pronounced alike
    assert WakeWordMatcher("hey two").heard("Hey 2!")  # digits are read as words
    assert (keep("positive", True), keep("positive", False)) == (True, False)
    for kind in ("confusable", "other_wake_word"):
        assert (keep(kind, True), keep(kind, False)) == (False, True)
    with pytest.raises(GateError, match="no letters or digits"):
        WakeWordMatcher("?!")


def test_the_config_key_is_a_folder_path_off_by_default() -> None:
    assert load_config(None).data.intelligibility_gate == ""
    assert load_config(None, ["data.intelligibility_gate=/some/where"]).data.intelligibility_gate == "/some/where"
    with pytest.raises(ConfigError, match="data.intelligibility_gate must be a string"):
        load_config(None, ["data.intelligibility_gate=3"])
    with pytest.raises(ConfigError, match=r"unknown key data.intelligibility_gat \(did you mean"):
        load_config(None, ["data.intelligibility_gat=x"])


# --- missing and damaged Whisper folders ---------------------------------------------------------------

def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    from tinyconv.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_missing_or_incomplete_folder_is_a_one_line_error_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    absent = tmp_path / "no-whisper"
    err = _one_line_error(capsys, ["data", "synth", "--out", str(out), "--intelligibility-gate", str(absent)])
    assert err.startswith(f"tinyconv data: error: data.intelligibility_gate: the Whisper folder {absent} does not "
                          f"exist; import one with `tinyconv teacher import --whisper tiny.en --out {absent}`")
    assert not out.exists()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"model_type": "whisper", "architectures": ["WhisperModel"]}))
    (partial / "preprocessor_config.json").write_text("{}")
    err = _one_line_error(capsys, ["data", "synth", "--out", str(out), "--set",
                                   f"data.intelligibility_gate={partial}"])
    assert (f"{partial} is not a complete Whisper import: tokenizer.json missing (imported by an older tinyconv, "
            f"which kept no tokenizer); import it again: tinyconv teacher import --whisper tiny.en") in err
    (partial / "tokenizer.json").write_text("{}")
    (partial / "config.json").write_text(json.dumps({"model_type": "whisper", "architectures": ["WhisperEncoder"]}))
    err = _one_line_error(capsys, ["data", "synth", "--out", str(out), "--intelligibility-gate", str(partial)])
    assert "holds only a Whisper encoder (a trained teacher); the gate needs the decoder too" in err
    (partial / "config.json").write_text("{not json")
    err = _one_line_error(capsys, ["data", "synth", "--out", str(out), "--intelligibility-gate", str(partial)])
    assert f"{partial}/config.json is damaged" in err
    assert not out.exists()


def test_damaged_weights_are_a_one_line_error(whisper_tiny_en: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json", "tinyconv_import.json"):
        shutil.copy(whisper_tiny_en / name, damaged / name)
    blob = (whisper_tiny_en / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(blob[: len(blob) // 3])  # a truncated copy
    err = _one_line_error(capsys, ["data", "synth", "--out", str(tmp_path / "d"), "--intelligibility-gate",
                                   str(damaged)])
    assert err.startswith(f"tinyconv data: error: data.intelligibility_gate: the Whisper folder {damaged} is damaged (")
    assert err.rstrip().endswith(f"import it again: tinyconv teacher import --whisper tiny.en --out {damaged}")


# --- the real Whisper on hibari ----------------------------------------------------------------------

def test_whisper_keeps_heard_wake_words_and_drops_the_rest(whisper_tiny_en: Path, tmp_path: Path) -> None:
    _need_hibari()
    _need_espeak()
    wake, sentence, near = _hibari("hey tiny"), _hibari("turn on the kitchen lights"), _hibari("hey tony")
    items = [
        GateItem(0, "hey tiny", "positive", HIBARI_VOICE.id, wake, 16000),
        # A "positive" that says something else: dropped.
        GateItem(1, "hey tiny", "positive", HIBARI_VOICE.id, sentence, 16000),
        # A near miss heard as itself: kept.
        GateItem(2, "hey tony", "confusable", HIBARI_VOICE.id, near, 16000),
        # A near miss (and another assistant's wake word) that Whisper hears as the wake word: here
        # a voice that said the wake word for the text "hey tidy" (or "alexa"). Dropped.
        GateItem(3, "hey tidy", "confusable", HIBARI_VOICE.id, wake, 16000),
        GateItem(4, "alexa", "other_wake_word", HIBARI_VOICE.id, wake, 16000),
    ]
    gate = WhisperGate(whisper_tiny_en, "hey tiny", cache_dir=str(tmp_path / "cache"))
    verdicts = gate(items)
    heard = [v.heard for v in verdicts]
    assert [v.keep for v in verdicts] == [True, False, True, False, False], heard
    assert normalize_words(heard[0]) == ["hey", "tiny"]  # "Hey, tiny."
    assert "kitchen" in heard[1].lower() and "tony" in heard[2].lower()
    assert (gate.transcribed, gate.cached) == (5, 0)
    # The same clips again: every transcript from the cache, the same verdicts, no Whisper run.
    again = WhisperGate(whisper_tiny_en, "hey tiny", cache_dir=str(tmp_path / "cache"))
    again.transcribe = None  # type: ignore[assignment,method-assign]  # would fail if called
    assert again(items) == verdicts and (again.transcribed, again.cached) == (0, 5)
    report = run_gate(items, gate)
    assert report.checked == {"positive": 2, "confusable": 2, "other_wake_word": 1}
    assert report.rejected_by_kind() == {"positive": 1, "confusable": 1, "other_wake_word": 1}
    assert report.about["variant"] == "tiny.en" and report.about["whisper"] == str(whisper_tiny_en)


# --- counts in labels.json and the summary, the warning, --strict ----------------------------------------

class StubGate:
    """Rejects every 'Hey tiny' positive and the first near miss; hears 'what it heard'."""

    def __init__(self) -> None:
        self.seen: list[GateItem] = []

    def __call__(self, items):  # type: ignore[no-untyped-def]
        self.seen = list(items)
        first = next((i for i in items if i.kind == "confusable"), None)
        return [GateVerdict(not (i.text == "Hey tiny" or i is first), f"heard {i.index}") for i in items]


# Ten wake words and four near misses, every one spoken by hibari in the training split (two of
# the wake words spelled "Hey tiny"); one clip each.
NATURAL = ("data.num_positive=10", "data.num_confusable=4", "data.num_other_speech=1", "data.num_background=1",
           "data.natural_voices=[hibari]", "data.kokoro_fraction=0", "data.hibari_fraction=1.0",
           "data.natural_negative_seconds=0", "data.num_workers=1", "augment.copies_per_clip=1")


def _natural_cfg(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return tiny_config(tmp_path, *NATURAL, f"data.tts_cache_dir={tmp_path / 'tts'}", *extra)


def test_rejections_are_counted_in_labels_json_and_named_in_a_warning(tmp_path: Path) -> None:
    _need_hibari()
    _need_espeak()
    gate = StubGate()
    with pytest.warns(GateWarning) as caught:
        out = synthesize_dataset(_natural_cfg(tmp_path), tmp_path / "data", gate=gate)
    first = next(j for j in gate.seen if j.kind == "confusable")
    rejected = [i for i in gate.seen if i.text == "Hey tiny" or i is first]
    assert len(rejected) == 3 and all(i.voice == HIBARI_VOICE.id and i.split == "train" for i in gate.seen)
    rows, info = read_manifest(out)
    entry = info.intelligibility_gate
    assert entry is not None
    checked = {k: sum(i.kind == k for i in gate.seen) for k in ("positive", "confusable")}
    assert entry["checked"] == {k: n for k, n in checked.items() if n}
    assert entry["rejected"]["confusable"] == 1
    assert sum(entry["rejected"].values()) == len(rejected)
    assert [(c["index"], c["kind"], c["text"], c["heard"]) for c in entry["rejected_clips"]] == [
        (i.index, i.kind, i.text, f"heard {i.index}") for i in rejected]
    # No clip of a rejected utterance is in the dataset; every other one is.
    indices = {int(Path(r.path).name.split("_")[0]) for r in rows}
    assert not indices & {i.index for i in rejected}
    assert {i.index for i in gate.seen} - {i.index for i in rejected} <= indices
    message = str(caught[0].message)
    assert message.startswith(f"the intelligibility gate rejected {len(rejected)} of {len(gate.seen)} natural-voice "
                              f"clips")
    assert f"hibari:heart saying {rejected[0].text!r} ({rejected[0].kind}) was heard as 'heard " in message
    # Without a gate labels.json is as it always was.
    plain = synthesize_dataset(_natural_cfg(tmp_path), tmp_path / "plain")
    assert "intelligibility_gate" not in json.loads((plain / "labels.json").read_text())


def test_cli_summary_and_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    _need_hibari()
    _need_espeak()
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.cli import main

    gate = StubGate()
    monkeypatch.setattr(intelligibility, "gate_from_config", lambda config: gate)
    sets = [a for o in [*TINY_OVERRIDES, *NATURAL, f"data.tts_cache_dir={tmp_path / 'tts'}"] for a in ("--set", o)]
    argv = ["data", "synth", "--out", str(tmp_path / "d"), "--intelligibility-gate", str(tmp_path / "stub"), *sets]
    with pytest.warns(GateWarning, match="rejected 3 of 12 natural-voice clips"):
        assert main(argv) == 0
    out = capsys.readouterr().out
    info = read_manifest(tmp_path / "d")[1].intelligibility_gate
    assert info is not None
    n = sum(info["rejected"].values())
    line = next(line for line in out.splitlines() if "intelligibility gate" in line)
    assert line.strip().startswith(f"intelligibility gate (custom gate, 0 s): rejected {n} of {len(gate.seen)} "
                                   f"natural-voice clips (positive {info['rejected']['positive']}/")
    # --strict: the first rejection stops the run, one line naming clips, the old dataset stays.
    before = (tmp_path / "d" / "manifest.csv").read_bytes()
    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"tinyconv data: error: the intelligibility gate rejected {n} of {len(gate.seen)} "
                          f"natural-voice clips")
    assert "(strict mode; without strict they are left out and the run goes on): hibari:heart saying" in err
    assert (tmp_path / "d" / "manifest.csv").read_bytes() == before


@pytest.mark.slow
def test_real_gate_end_to_end_with_kokoro_and_hibari(whisper_tiny_en: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Whisper tiny.en over a small natural-voice dataset through the CLI (~1 s a gated clip)."""
    _need_hibari()
    if missing_message("kokoro") is not None:
        skip_unless_ci(str(missing_message("kokoro")))
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.cli import main

    sets = [a for o in [*TINY_OVERRIDES, "data.num_positive=12", "data.num_confusable=6", "data.num_other_speech=2",
                        "data.num_background=1", "data.natural_voices=[kokoro,hibari]", "data.kokoro_fraction=0.5",
                        "data.hibari_fraction=0.5", "data.kokoro_blends=0", "data.natural_negative_seconds=0",
                        "data.num_other_wake_words=2", "data.num_workers=1", "augment.copies_per_clip=1",
                        f"data.tts_cache_dir={tmp_path / 'tts'}"] for a in ("--set", o)]
    with pytest.warns(GateWarning, match=r"kokoro:jf_\w+\+(us|gb) saying '.*' \(positive\) was heard as"):
        # Kokoro's Japanese voices say "tiny" as "Tony", "Tonya", "Connie": Whisper hears no "hey tiny" from them.
        assert main(["data", "synth", "--out", str(tmp_path / "d"), "--intelligibility-gate", str(whisper_tiny_en),
                     *sets]) == 0
    out = capsys.readouterr().out
    info = read_manifest(tmp_path / "d")[1].intelligibility_gate
    assert info is not None and info["variant"] == "tiny.en" and info["transcribed"] == sum(info["checked"].values())
    assert len(info["rejected_clips"]) == sum(info["rejected"].values())
    assert "intelligibility gate (Whisper tiny.en" in out
    hibari_positives = [c for c in info["rejected_clips"] if c["voice"] == HIBARI_VOICE.id and c["kind"] == "positive"]
    assert not hibari_positives  # hibari says "hey tiny" clearly: Whisper hears it every time
