"""Session fixtures: a tiny TinyConv trained for seconds on seeded synthetic features, its QAT
fine-tune, and their exports (shared by every export test to keep the suite fast)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.export.synthetic import make_features, synthetic_config, train_float
from tinyconv.checkpoint import save_checkpoint


@dataclass
class Trained:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    float_path: Path
    qat_path: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from tinyconv.trainer.qat import qat_finetune

    root = tmp_path_factory.mktemp("trained")
    train_x, train_y = make_features(600, seed=0)
    test_x, test_y = make_features(300, seed=1)
    config = synthetic_config()
    float_ckpt = train_float(config, train_x, train_y)
    save_checkpoint(float_ckpt, root / "float.pt")
    qat_ckpt = qat_finetune(float_ckpt, train_x, train_y, test_x[:64], test_y[:64], config)
    save_checkpoint(qat_ckpt, root / "qat.pt")
    return Trained(train_x, train_y, test_x, test_y, root / "float.pt", root / "qat.pt")


@pytest.fixture(scope="session")
def qat_export(trained: Trained, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tinyconv.export import export_checkpoint

    return export_checkpoint(trained.qat_path, tmp_path_factory.mktemp("exp") / "qat", formats="tflite,onnx,c")


@pytest.fixture(scope="session")
def ptq_export(trained: Trained, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tinyconv.export import export_checkpoint

    return export_checkpoint(
        trained.float_path, tmp_path_factory.mktemp("exp") / "ptq", formats="tflite,onnx,c",
        representative=trained.train_x,
    )
