"""Session fixtures: a tiny stream_tinyconv trained for seconds on seeded synthetic features
(two classes: a wake-word band vs noise and a decoy band), and its ESPHome export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.export.synthetic import train_float
from tinyconv.checkpoint import Checkpoint, save_checkpoint
from tinyconv.config import Config, DataConfig, ModelConfig, TrainConfig

LABELS = ["_negative_", "hey_tiny"]
QAT_TRAIN_CLIPS = 160  # stream_qat_export: 3 batches of 64 an epoch


def make_clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 98, 40] features on the frontend's 1/25.6 grid; positives light channels 8-20, decoys 24-36."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    x = rng.uniform(0.0, 6.0, size=(n, 98, 40)).astype(np.float32)
    for i, label in enumerate(y):
        start = int(rng.integers(55, 68))  # ends in the last ~20 frames: the test model sees those
        if label == 1:
            x[i, start : start + 30, 8:20] += rng.uniform(6.0, 14.0)
        elif rng.random() < 0.5:
            x[i, start : start + 30, 24:36] += rng.uniform(6.0, 14.0)
    return np.round(np.clip(x, 0, 26) * 25.6) / 25.6, y


def stream_config(name: str = "stream_tinyconv_test") -> Config:
    return Config(
        data=DataConfig(dataset_dir="synthetic-features-no-dataset"),
        model=ModelConfig(name=name, dropout=0.0),
        train=TrainConfig(batch_size=64, learning_rate=3e-3, seed=0),
    )


def train_stream(config: Config, x: np.ndarray, y: np.ndarray, epochs: int = 8) -> Checkpoint:
    """The export tests' plain AdamW loop (tests.export.synthetic), with this folder's epochs."""
    return train_float(config, x, y, epochs=epochs, labels=LABELS)


@dataclass
class StreamTrained:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    float_path: Path


@pytest.fixture(scope="session")
def stream_trained(tmp_path_factory: pytest.TempPathFactory) -> StreamTrained:
    root = tmp_path_factory.mktemp("stream_trained")
    train_x, train_y = make_clips(400, seed=0)
    test_x, test_y = make_clips(120, seed=1)
    ckpt = train_stream(stream_config(), train_x, train_y)
    save_checkpoint(ckpt, root / "float.pt")
    return StreamTrained(train_x, train_y, test_x, test_y, root / "float.pt")


@pytest.fixture(scope="session")
def esphome_export(stream_trained: StreamTrained, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorflow", reason="ESPHome export needs tensorflow-cpu (scripts/setup.sh installs it)")
    from tinyconv.export.esphome import export_esphome

    neg = stream_trained.test_x[stream_trained.test_y == 0]
    return export_esphome(stream_trained.float_path, tmp_path_factory.mktemp("esphome") / "out", with_c=True,
                          representative=stream_trained.train_x, negatives=neg)


@pytest.fixture(scope="session")
def stream_qat_export(stream_trained: StreamTrained, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A QAT fine-tune of the float test model (2 epochs, BN and observers frozen after the first)
    and its ESPHome export: (checkpoint path, EsphomeExportResult).

    Kept small (QAT_TRAIN_CLIPS clips, 3 batches an epoch; the cutoff given, not searched: the
    float export covers the search): the tests check that the learned quantization carries
    through, not how well QAT trains."""
    pytest.importorskip("tensorflow", reason="ESPHome export needs tensorflow-cpu (scripts/setup.sh installs it)")
    import dataclasses

    from tinyconv.checkpoint import load_checkpoint
    from tinyconv.config import QATConfig
    from tinyconv.export.esphome import export_esphome
    from tinyconv.trainer.qat import qat_finetune

    config = dataclasses.replace(stream_config(), qat=QATConfig(enabled=True, epochs=2, learning_rate=1e-3,
                                                                freeze_bn_epoch=1, freeze_observers_epoch=1))
    float_ckpt = dataclasses.replace(load_checkpoint(stream_trained.float_path), config=config)
    x, y = stream_trained.train_x[:QAT_TRAIN_CLIPS], stream_trained.train_y[:QAT_TRAIN_CLIPS]
    qat = qat_finetune(float_ckpt, x, y, stream_trained.test_x[:32], stream_trained.test_y[:32], config)
    path = tmp_path_factory.mktemp("stream_qat") / "qat.pt"
    save_checkpoint(qat, path)
    return path, export_esphome(path, tmp_path_factory.mktemp("esphome_qat") / "out", representative=x,
                                probability_cutoff=0.9)
