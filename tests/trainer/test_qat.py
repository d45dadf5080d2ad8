"""QAT: Conv+BN+ReLU fusion, the PT2E/litert-torch workaround, freezing, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests.export.synthetic import LABELS, make_features, synthetic_config, train_float, v1_config
from tinyconv.checkpoint import model_from_checkpoint
from tinyconv.models import create_model
from tinyconv.models.fusion import FusedConvBNReLU2d, QuantizationError, fold_tiny_conv, fuse_tiny_conv
from tinyconv.trainer.qat import (
    prepare_model_for_qat,
    qat_epoch_hook,
    qat_finetune,
    qat_state_for_checkpoint,
)


def _with_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN running stats/affine params so fusion is really tested."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("use_depthwise", [True, False], ids=["V2", "V1"])
def test_fused_equals_unfused_in_eval(use_depthwise: bool) -> None:
    model = _with_bn_statistics(create_model("tinyconv_test", num_classes=3, use_depthwise=use_depthwise))
    x = torch.rand(8, 98, 40) * 20
    fused = fuse_tiny_conv(model).eval()
    folded = fold_tiny_conv(model)
    with torch.no_grad():
        ref = model(x)
        assert (fused(x) - ref).abs().max().item() <= 1e-5
        assert (folded(x) - ref).abs().max().item() <= 1e-5
    for m in (fused, folded):
        assert not [n for n, mod in m.named_modules()
                    if isinstance(mod, nn.BatchNorm2d) and "bn" not in n.split(".")[-1:]]
    assert not [mod for mod in folded.modules() if isinstance(mod, nn.BatchNorm2d)]  # BN gone for good
    n_units = 1 + (2 if use_depthwise else 1) * len(model.blocks)  # type: ignore[arg-type]
    assert sum(isinstance(mod, FusedConvBNReLU2d) for mod in fused.modules()) == n_units
    assert not any(isinstance(mod, nn.BatchNorm2d) for name, mod in fused.named_children())  # no standalone BN
    # The input model is untouched.
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in model.modules())


def test_unsupported_architecture_is_refused() -> None:
    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

    with pytest.raises(QuantizationError, match=r"supports TinyConv V1/V2 .*got architecture 'Other'"):
        prepare_model_for_qat(Other(), synthetic_config())


def test_stray_layer_is_named() -> None:
    model = create_model("tinyconv_test", num_classes=3)
    model.extra = nn.Conv2d(8, 8, 1)
    with pytest.raises(QuantizationError, match=r"layer 'extra' \(Conv2d\) is not part of a Conv\+BN\+ReLU unit"):
        fuse_tiny_conv(model)


def test_litert_workaround_still_needed() -> None:
    """Regression guard on DESIGN.md s4: if this fails, litert-torch/torchao changed.

    Without the wrapper, litert-torch 0.10.0's conv-bn annotator hands torchao 0.18.0 a plain
    function and prepare_qat_pt2e fails. If an upgrade fixes that, this test fails: drop
    `_install_litert_pattern_workaround` and update PINNED_VERSIONS; if an upgrade breaks it
    differently, the QAT tests below fail.
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from tinyconv.models import pt2e

    pt2e._install_litert_pattern_workaround()
    patched = utils._get_aten_graph_module_for_pattern
    try:
        utils._get_aten_graph_module_for_pattern = patched.__wrapped__  # the original
        fused = fuse_tiny_conv(create_model("tinyconv_test", num_classes=2)).train()
        gm = pt2e._export(fused, fused.input_shape)
        from litert_torch.quantize import pt2e_quantizer as pq

        qconfig = pq.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        quantizer = pq.PT2EQuantizer().set_global(qconfig)
        with pytest.raises(Exception, match=r"instance of .*Module"):
            prepare_qat_pt2e(gm, quantizer)
    finally:
        utils._get_aten_graph_module_for_pattern = patched


@pytest.mark.slow  # torchao's unfiltered passes trace ~130 patterns: the cost the filter removes
def test_conv_kind_filter_changes_nothing_but_time() -> None:
    """`_install_conv_kind_filter` skips torchao's conv+BN passes for conv kinds the graph does not
    hold; prepare and convert with it give the same graph outputs as torchao's own passes."""
    from torchao.quantization.pt2e import qat_utils

    from tinyconv.models import pt2e

    config = synthetic_config()
    x, y = make_features(64, seed=5)
    model = model_from_checkpoint(train_float(config, x, y, epochs=1), "float")
    xt = torch.from_numpy(x[:16])

    def prepare_train_convert() -> torch.Tensor:
        torch.manual_seed(0)
        qat = prepare_model_for_qat(model, config)
        qat.train()
        with torch.no_grad():
            qat(torch.from_numpy(x))  # observers see data
        with torch.no_grad():
            return pt2e.convert_prepared(qat.graph_module)(xt)

    pt2e._install_conv_kind_filter()
    names = ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper")
    filtered = {n: getattr(qat_utils, n) for n in names}
    assert all(getattr(f, pt2e._CONV_KIND_MARK) for f in filtered.values())
    with_filter = prepare_train_convert()
    try:
        for n in names:
            setattr(qat_utils, n, filtered[n].__wrapped__)
            setattr(qat_utils.__dict__[n], pt2e._CONV_KIND_MARK, True)  # keep the filter out
        without = prepare_train_convert()
    finally:
        for n in names:
            delattr(qat_utils.__dict__[n], pt2e._CONV_KIND_MARK)
            setattr(qat_utils, n, filtered[n])
    assert torch.equal(with_filter, without)


def test_qat_trains_freezes_and_round_trips_through_a_checkpoint() -> None:
    from tinyconv.checkpoint import Checkpoint

    config = synthetic_config()
    x, y = make_features(128, seed=3)
    float_ckpt = train_float(config, x, y, epochs=1)
    model = prepare_model_for_qat(model_from_checkpoint(float_ckpt, "float"), config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(3):
        qat_epoch_hook(model, epoch, config.qat)  # freezes BN and observers at epoch 1
        model.train()
        scales_before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".scale")}
        for idx in torch.split(torch.randperm(len(x)), 32):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scales_after = {k: v for k, v in model.state_dict().items() if k.endswith(".scale")}
        frozen = all(torch.equal(scales_before[k], scales_after[k]) for k in scales_after)
        assert frozen == (epoch >= config.qat.freeze_observers_epoch), epoch
    assert bool(model.bn_frozen) and bool(model.observers_frozen)
    # Eval does not move ranges (observers off in eval) and is deterministic.
    model.eval()
    with torch.no_grad():
        out = model(xt[:16])
        assert torch.equal(out, model(xt[:16]))
    qat_ckpt = Checkpoint(config=config, labels=list(LABELS), state_dict=qat_state_for_checkpoint(model), kind="qat")
    rebuilt = model_from_checkpoint(qat_ckpt, "qat")
    with torch.no_grad():
        assert torch.equal(rebuilt(xt[:16]), out)
    assert bool(rebuilt.bn_frozen)


def test_bn_freeze_survives_train_eval_switches() -> None:
    config = synthetic_config()
    model = prepare_model_for_qat(create_model("tinyconv_test", num_classes=3), config)
    model.freeze_bn()
    bn_running = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model.eval()
    model.train()
    model(torch.rand(4, 98, 40) * 20)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in bn_running.items())


@pytest.mark.slow
def test_qat_finetune_v1_end_to_end(tmp_path: Path) -> None:
    """V1 through the whole path: float -> QAT fine-tune -> export (slow: ~1 min)."""
    from tinyconv.checkpoint import save_checkpoint
    from tinyconv.export import export_checkpoint

    config = v1_config()
    x, y = make_features(320, seed=0)
    xv, yv = make_features(120, seed=1)
    float_ckpt = train_float(config, x, y, epochs=3)
    qat_ckpt = qat_finetune(float_ckpt, x, y, xv, yv, config)
    assert qat_ckpt.kind == "qat" and qat_ckpt.metrics["val_accuracy"] >= 0.9
    save_checkpoint(qat_ckpt, tmp_path / "qat.pt")
    result = export_checkpoint(tmp_path / "qat.pt", tmp_path / "export", formats="tflite,c")
    from tinyconv.export.tflite import inspect_tflite

    info = inspect_tflite(result.files["model_int8.tflite"].read_bytes())
    convs = [op for op in info.ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convs) == 1 + 4 and all(op.fused_activation == "RELU" for op in convs)
    # The TFLM arena was measured (an int: isfinite() on it could never fail) and is plausible.
    assert 1000 < result.tensor_arena_bytes < 200_000
    assert result.manifest["tensor_arena_bytes"] == result.tensor_arena_bytes
