"""Text given to the TTS engines is spoken, never parsed as an option (real espeak-ng and flite)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyconv.cli import main
from tinyconv.data.tts import TTSError, Voice, synthesize
from tinyconv.errors import TinyconvError

ENGINES = [
    pytest.param(Voice("espeak-ng", "en-us"), marks=pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                                                      reason="espeak-ng not installed")),
    pytest.param(Voice("flite", "slt"), marks=pytest.mark.skipif(shutil.which("flite") is None,
                                                                reason="flite not installed")),
]


def _seconds(text: str, voice: Voice) -> float:
    return len(synthesize(text, voice, speed_wpm=160, pitch=50)) / 16000


@pytest.mark.parametrize("voice", ENGINES)
def test_option_like_wake_words_are_spoken_as_text(voice: Voice, tmp_path: Path) -> None:
    # A file whose content would be spoken (one long sentence) if "-f<file>" were read as an option.
    target = tmp_path / "secret.txt"
    target.write_text("this file holds a long secret sentence that must never be read aloud by the engine " * 12)
    read_aloud = _seconds(target.read_text(), voice)
    as_text = _seconds(f"-f{target}", voice)
    # Spelled out, "-f/tmp/.../secret.txt" is up to ~12 s of speech; the file is over 50 s.
    assert 0.5 < as_text < read_aloud / 2
    # "-s200" as an option would set the speed and leave espeak-ng waiting on stdin (the test
    # would hang); as text it is "minus s two hundred", about a second.
    assert 0.5 < _seconds("-s200", voice) < 3.0
    assert 0.3 < _seconds("--help", voice) < 3.0


@pytest.mark.parametrize("voice", ENGINES)
def test_missing_engine_names_it_and_how_to_install(voice: Voice, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no engine binary on PATH
    with pytest.raises(TTSError, match=rf"TTS engine {voice.engine} is not installed .*apt-get install {voice.engine}"):
        synthesize("hey tiny", voice, speed_wpm=160, pitch=50)


def test_tts_error_is_a_tinyconv_error() -> None:
    # The CLI prints TinyconvError as one line (exit 2); a RuntimeError would be a traceback.
    assert issubclass(TTSError, TinyconvError)


@pytest.mark.parametrize("command", [["data", "synth"], ["quickstart"]])
@pytest.mark.parametrize("wake_word", ["", "   "])
def test_empty_wake_word_is_refused(command: list[str], wake_word: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Before: `--wake-word ''` was falsy and silently trained the default "hey tiny".
    out = ["--out", str(tmp_path / "data")] if command[0] == "data" else \
        ["--set", f"train.out_dir={tmp_path / 'run'}", "--set", f"data.dataset_dir={tmp_path / 'data'}"]
    assert main([*command, "--wake-word", wake_word, *out]) == 2
    assert "data.wake_word must not be empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
