"""Quantization-aware training with Conv+BN+ReLU fusion (TFLite Micro integer scheme).

The training loop uses three functions, and `tinyconv.checkpoint` rebuilds the result:

    model = prepare_model_for_qat(float_model, config)   # fused, fake-quantized, trainable
    qat_epoch_hook(model, epoch, config.qat)              # at the start of every epoch (0-based)
    state = qat_state_for_checkpoint(model)               # Checkpoint(kind="qat", state_dict=state)
    model = model_from_checkpoint(checkpoint, "qat")      # rebuild (eval mode; tinyconv.checkpoint)

`qat_finetune` is a small self-contained fine-tune loop (AdamW, cross-entropy) for tests and
scripts. The fusion (`tinyconv.models.fusion`) and PT2E machinery (`tinyconv.models.pt2e`)
live in models/ so that export can rebuild a QAT model without importing the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from tinyconv.models.fusion import QuantizationError
from tinyconv.models.pt2e import QATTinyConv, prepare_qat

if TYPE_CHECKING:
    from tinyconv.checkpoint import Checkpoint
    from tinyconv.config import Config, QATConfig

__all__ = [
    "prepare_model_for_qat",
    "qat_epoch_hook",
    "qat_finetune",
    "qat_state_for_checkpoint",
]


def prepare_model_for_qat(model: nn.Module, config: Config) -> QATTinyConv:
    """Fuse every Conv+BN+ReLU of a TinyConv V1/V2 and insert fake quantization.

    Returns a model trainable with the float loop (forward(x) -> logits, .train()/.eval()).
    The float model is not modified. Raises QuantizationError naming an unsupported
    architecture or layer.
    """
    del config  # the scheme is fixed by TFLite Micro; freeze epochs are applied by the hook
    return prepare_qat(model)


def qat_epoch_hook(model: nn.Module, epoch: int, qat_config: QATConfig) -> None:
    """Freeze BN statistics / observers from the configured epochs on (0-based, inclusive).

    Call at the start of each epoch. Freezing BN late in QAT stops the batch statistics from
    jittering the folded weights; freezing observers lets the weights settle on fixed ranges.
    Observers always get the first epoch: frozen before seeing data they would hold no range
    at all (so freeze_observers_epoch=0 acts as 1).
    """
    if not isinstance(model, QATTinyConv):
        raise QuantizationError(f"qat_epoch_hook needs a model from prepare_model_for_qat, got {type(model).__name__}")
    if epoch >= qat_config.freeze_bn_epoch and not bool(model.bn_frozen):
        model.freeze_bn()
    if epoch >= max(1, qat_config.freeze_observers_epoch) and not bool(model.observers_frozen):
        model.freeze_observers()


def qat_state_for_checkpoint(model: nn.Module) -> dict[str, torch.Tensor]:
    """The QAT model's tensors (weights, BN stats, learned scales, freeze flags), on CPU."""
    if not isinstance(model, QATTinyConv):
        raise QuantizationError(f"expected a model from prepare_model_for_qat, got {type(model).__name__}")
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def qat_finetune(
    float_checkpoint: Checkpoint,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: Config,
) -> Checkpoint:
    """Fine-tune a float checkpoint with QAT; returns a kind='qat' checkpoint (last epoch).

    AdamW at `config.qat.learning_rate`, cross-entropy, `config.qat.epochs` epochs of
    `config.train.batch_size`, seeded by `config.train.seed`. Metrics: val accuracy of the
    fake-quantized model.
    """
    from tinyconv.checkpoint import Checkpoint, model_from_checkpoint

    if float_checkpoint.kind != "float":
        raise QuantizationError(f"qat_finetune starts from a float checkpoint, got kind {float_checkpoint.kind!r}")
    if len(train_x) == 0 or len(train_x) != len(train_y):
        raise ValueError(f"train_x ({len(train_x)}) and train_y ({len(train_y)}) must be non-empty and equal length")
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    model = prepare_model_for_qat(model_from_checkpoint(float_checkpoint, "float"), config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.qat.learning_rate, weight_decay=config.train.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    x_all = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64))
    batch_size = config.train.batch_size
    history: list[dict[str, float]] = []
    for epoch in range(config.qat.epochs):
        qat_epoch_hook(model, epoch, config.qat)
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue  # batch norm in train mode needs more than one value per channel
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": float(epoch), "train_loss": total / len(order),
                        "val_accuracy": _accuracy(model, val_x, val_y)})
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    metrics["history"] = history
    return Checkpoint(
        config=dataclasses.replace(config, qat=dataclasses.replace(config.qat, enabled=True)),
        labels=list(float_checkpoint.labels),
        state_dict=qat_state_for_checkpoint(model),
        positive_label=float_checkpoint.positive_label,
        metrics=metrics,
        kind="qat",
        extra={**float_checkpoint.extra, "qat_from": "float_checkpoint"},
    )


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    if len(x) == 0:
        return float("nan")
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            correct += int((model(xb).argmax(1).numpy() == y[start : start + batch_size]).sum())
    return correct / len(x)
