"""Shared fixtures: a tiny synthesized dataset (seeded, built once per session in a temp dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinyconv.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "reference_models"

TINY_OVERRIDES = [
    "data.num_positive=48",
    "data.num_confusable=24",
    "data.num_other_speech=24",
    "data.num_background=12",
    "augment.num_room_impulse_responses=3",
    "model.name=tinyconv_test",
    "train.epochs=2",
    "train.batch_size=32",
    "train.early_stopping_patience=100",
]


def tiny_config(tmp: Path, *extra: str) -> Config:
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tmp / 'data'}", f"train.out_dir={tmp / 'run'}",
                              *extra])


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (the set-up installs it)")
    from tinyconv.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("tiny")
    return synthesize_dataset(tiny_config(root), root / "data")


@pytest.fixture()
def tiny_cfg(tiny_dataset: Path, tmp_path: Path) -> Config:
    """A config pointing at the shared tiny dataset, with a fresh run folder."""
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}", f"train.out_dir={tmp_path / 'run'}"])
