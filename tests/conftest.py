"""Shared fixtures: a tiny synthesized dataset (seeded, built once per session in a temp dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, skip_unless_ci, tiny_config
from tinyconv.config import Config, load_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")
    from tinyconv.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("tiny")
    return synthesize_dataset(tiny_config(root), root / "data")


@pytest.fixture()
def tiny_cfg(tiny_dataset: Path, tmp_path: Path) -> Config:
    """A config pointing at the shared tiny dataset, with a fresh run folder."""
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}", f"train.out_dir={tmp_path / 'run'}"])
