"""The streamable family: registry, budget, and streaming == non-streaming at every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyconv.config import load_config
from tinyconv.models import build_model, create_model, list_models
from tinyconv.models.streaming import TIME_STRIDE, StreamingTinyConv, StreamTinyConv


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics, so the comparison covers the folded affine part too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)


def test_family_registered_with_toggle_and_width() -> None:
    assert {"stream_tinyconv", "stream_tinyconv_v1", "stream_tinyconv_v2", "stream_tinyconv_test"} <= set(
        list_models("stream_*")
    )
    cfg = load_config(None, ["model.name=stream_tinyconv", "model.tiny_conv_use_depthwise=false",
                             "model.width_multiplier=0.5"])
    model = build_model(cfg.model, 2, cfg.frontend)
    assert isinstance(model, StreamTinyConv) and not model.use_depthwise and model.width == 16
    assert model(torch.zeros(2, 98, 40)).shape == (2, 2)


@pytest.mark.parametrize("name", ["stream_tinyconv_v1", "stream_tinyconv_v2"])
def test_budget_per_step(name: str) -> None:
    """~25 K MACs per 30 ms step (microWakeWord v2: 21.6-24.1 K), receptive field within the 1 s window."""
    model = create_model(name, num_classes=2)
    macs = model.macs_per_step()
    params = sum(p.numel() for p in model.parameters())
    assert 20_000 <= macs <= 26_000, macs
    assert params <= 40_000, params  # int8 weights: the .tflite stays well under 60 KB
    assert model.receptive_field_frames <= 98


@pytest.mark.parametrize("name", ["stream_tinyconv_test", "stream_tinyconv_v1", "stream_tinyconv_v2"])
def test_streaming_equals_non_streaming_every_step(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    _randomize_bn(model)
    model.eval()
    frames = 98 + TIME_STRIDE * 60  # 61 full windows
    x = torch.rand(2, frames, 40) * 26.0
    with torch.no_grad():
        streamed = StreamingTinyConv(model).run(x)  # [B, steps, classes]
        # forward_steps aligns its last step with the last frame: cut at the last invoke's end.
        all_steps = model.forward_steps(x[:, : TIME_STRIDE * streamed.shape[1]])
        # Invoke n has seen frames [0, 3n + 3); from the first full window on, it must equal
        # the non-streaming model on the 98-frame window ending at the same frame.
        first = -(-(98 - TIME_STRIDE) // TIME_STRIDE)  # the first n with 3n + 3 >= 98
        windows = torch.stack([model(x[:, 3 * n + 3 - 98 : 3 * n + 3]) for n in range(first, streamed.shape[1])], 1)
    np.testing.assert_allclose(streamed[:, first:].numpy(), windows.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(all_steps[:, -windows.shape[1] :].numpy(), windows.numpy(), atol=1e-5, rtol=0)


def test_step_rejects_wrong_frame_count() -> None:
    model = create_model("stream_tinyconv_test", num_classes=2).eval()
    with pytest.raises(ValueError, match=r"step expects \[B, 3, 40\] frames"):
        StreamingTinyConv(model).step(torch.zeros(1, 4, 40))


def test_receptive_field_must_fit_window() -> None:
    with pytest.raises(ValueError, match="does not fit the 98-frame training window"):
        create_model("stream_tinyconv", num_classes=2, kernels=(23, 23))


def test_qat_fusion_accepts_streaming_family() -> None:
    from tinyconv.models.fusion import fold_tiny_conv, fuse_tiny_conv

    torch.manual_seed(0)
    model = create_model("stream_tinyconv_test", num_classes=2)
    _randomize_bn(model)
    model.eval()
    x = torch.rand(3, 98, 40) * 26
    with torch.no_grad():
        ref = model(x)
        np.testing.assert_allclose(fuse_tiny_conv(model).eval()(x).numpy(), ref.numpy(), atol=1e-4)
        np.testing.assert_allclose(fold_tiny_conv(model)(x).numpy(), ref.numpy(), atol=1e-4)


def test_existing_trainer_and_qat_train_the_streaming_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The non-streaming form trains with the project's Trainer, then QAT-fine-tunes (fused)."""
    import dataclasses

    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
    from tinyconv.data.dataset import FeatureSet
    from tinyconv.trainer.loop import Trainer
    from tinyconv.trainer.qat import qat_finetune

    from .conftest import LABELS, make_clips, stream_config

    x, y = make_clips(96, seed=0)
    vx, vy = make_clips(32, seed=1)
    cfg = stream_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, batch_size=32,
                                                             out_dir=str(tmp_path / "run")))
    train = FeatureSet(x=x, y=y, labels=list(LABELS), positive_label=LABELS[1])
    val = FeatureSet(x=vx, y=vy, labels=list(LABELS), positive_label=LABELS[1])
    result = Trainer(cfg, train, val, tmp_path / "run").fit()
    ckpt = load_checkpoint(result.checkpoint_path)
    model = model_from_checkpoint(ckpt, "float")
    assert isinstance(model, StreamTinyConv)
    qat = qat_finetune(ckpt, x[:64], y[:64], vx, vy, dataclasses.replace(
        cfg, qat=dataclasses.replace(cfg.qat, epochs=1)))
    assert qat.kind == "qat" and 0.0 <= qat.metrics["val_accuracy"] <= 1.0
