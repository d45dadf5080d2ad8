"""Seeded synthetic features and a tiny trained TinyConv, so export tests run in seconds.

Each class lights up its own band of frontend channels over the middle frames, on top of
noise shaped like real frontend output (values in [0, ~26]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from tinyconv.checkpoint import Checkpoint
from tinyconv.config import Config, DataConfig, ModelConfig, QATConfig, TrainConfig
from tinyconv.models import build_model

LABELS = ["_silence_", "_unknown_", "hey_tiny"]


def make_features(n: int, seed: int, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype(np.int64)
    x = rng.uniform(0.0, 6.0, size=(n, 98, 40)).astype(np.float32)
    band = 40 // num_classes
    for i, label in enumerate(y):
        start = int(rng.integers(20, 45))
        x[i, start : start + 30, label * band : label * band + band] += rng.uniform(6.0, 14.0)
    return np.round(x * 25.6) / 25.6, y  # on the frontend's 1/25.6 grid


def synthetic_config() -> Config:
    """TinyConv V2 test model (8 channels, 2 blocks) with a 2-epoch QAT fine-tune, for seeded synthetic
    features (no dataset folder; tests.helpers.tiny_config is the spoken-dataset one)."""
    return Config(
        # Trained on synthetic features: no dataset folder exists for it (the gate skips accuracy).
        data=DataConfig(dataset_dir="synthetic-features-no-dataset"),
        model=ModelConfig(name="tinyconv_test", dropout=0.1),
        train=TrainConfig(batch_size=64, learning_rate=3e-3, seed=0),
        qat=QATConfig(enabled=True, epochs=2, learning_rate=1e-3, freeze_bn_epoch=1, freeze_observers_epoch=1),
    )


def train_float(config: Config, x: np.ndarray, y: np.ndarray, epochs: int = 6,
                labels: Sequence[str] = LABELS) -> Checkpoint:
    """A few epochs of plain AdamW training; enough for near-perfect accuracy on this data."""
    torch.manual_seed(0)
    model = build_model(config.model, len(labels), config.frontend)
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    rng = np.random.default_rng(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 64)):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return Checkpoint(
        config=config,
        labels=list(labels),
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        positive_label="hey_tiny",
        kind="float",
    )


def v1_config() -> Config:
    """TinyConv V1 (standard 3x3 convs) at the smallest width, through the generic entry."""
    model = ModelConfig(name="tinyconv", tiny_conv_use_depthwise=False, width_multiplier=0.125)
    return dataclasses.replace(synthetic_config(), model=model)
