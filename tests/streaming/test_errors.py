"""Bad input for the ESPHome export: a clear error naming what, and no output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyconv.checkpoint import Checkpoint, save_checkpoint
from tinyconv.export.errors import ExportError
from tinyconv.export.esphome import EsphomeExportError, check_esphome_model, convert_streaming, stream_spec
from tinyconv.models import build_model, create_model

from .conftest import LABELS, stream_config


def _untrained_checkpoint(path, name: str, labels: list[str]):  # type: ignore[no-untyped-def]
    import dataclasses

    from tinyconv.config import ModelConfig

    config = dataclasses.replace(stream_config(), model=ModelConfig(name=name))
    model = build_model(config.model, len(labels), config.frontend)
    save_checkpoint(Checkpoint(config=config, labels=labels, state_dict=model.state_dict(),
                               positive_label=labels[-1], kind="float"), path)
    return path


def test_non_streamable_checkpoint_asked_for_esphome(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.export import export_checkpoint

    ckpt = _untrained_checkpoint(tmp_path / "window.pt", "tinyconv_test", LABELS)
    with pytest.raises(EsphomeExportError,
                       match=r"model 'tinyconv_test' \(TinyConvWakeword\), which is not streamable"):
        export_checkpoint(ckpt, tmp_path / "out", formats="esphome")
    assert not (tmp_path / "out").exists()


def test_esphome_cannot_share_a_folder_with_window_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.export import export_checkpoint

    ckpt = _untrained_checkpoint(tmp_path / "s.pt", "stream_tinyconv_test", LABELS)
    with pytest.raises(ExportError, match="esphome .* cannot be combined with tflite"):
        export_checkpoint(ckpt, tmp_path / "out", formats="tflite,esphome")
    assert not (tmp_path / "out").exists()


def test_three_class_streaming_model_is_refused() -> None:
    model = create_model("stream_tinyconv_test", num_classes=3).eval()
    with pytest.raises(EsphomeExportError, match="needs a 2-class model .* this one has 3 classes"):
        stream_spec(model)


def test_op_outside_esphome_resolver_is_named() -> None:
    from tests.helpers import reference_model

    path = reference_model("mlperf_tiny_kws_dscnn_int8.tflite")
    with pytest.raises(EsphomeExportError, match="op SOFTMAX is not in ESPHome micro_wake_word's op resolver"):
        check_esphome_model(path.read_bytes())


def test_more_than_20_state_variables_is_refused() -> None:
    pytest.importorskip("tensorflow", reason="ESPHome export needs tensorflow-cpu (scripts/setup.sh installs it)")
    # 20 blocks with a temporal kernel + the stem + the head: 22 ring buffers.
    torch.manual_seed(0)
    model = create_model("stream_tinyconv_test", num_classes=2, kernels=(2,) * 20).eval()
    stream = np.random.default_rng(0).uniform(0, 20, size=(60, 40)).astype(np.float32)
    tflite = convert_streaming(stream_spec(model), stream)
    with pytest.raises(EsphomeExportError, match="22 state variables; ESPHome allocates at most 20"):
        check_esphome_model(tflite)


def test_not_a_tflite_file() -> None:
    with pytest.raises(EsphomeExportError, match="not a valid .tflite flatbuffer"):
        check_esphome_model(b"this is not a flatbuffer")


def test_arena_over_budget_fails_without_output(stream_trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.export.esphome import export_esphome

    with pytest.raises(EsphomeExportError, match=r"tensor arena \d+ bytes .* exceeds the budget of 4096 bytes"):
        export_esphome(stream_trained.float_path, tmp_path / "out", representative=stream_trained.train_x[:40],
                       arena_budget_bytes=4096)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left behind either


def test_cli_defaults_streaming_checkpoint_to_esphome(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.cli import main

    # The checkpoint's dataset does not exist: the default route must be the ESPHome export,
    # which calibrates on real feature streams and says so.
    ckpt = _untrained_checkpoint(tmp_path / "s.pt", "stream_tinyconv_test", LABELS)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    assert "ESPHome export calibrates on real feature streams" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("formats", ["tflite", "onnx,c", "tflite,onnx,c"])
def test_window_formats_on_a_streaming_checkpoint_point_to_esphome(tmp_path, formats: str) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.export import export_checkpoint

    ckpt = _untrained_checkpoint(tmp_path / "s.pt", "stream_tinyconv_test", LABELS)
    with pytest.raises(EsphomeExportError, match=r"holds streaming model 'stream_tinyconv_test': format (tflite|onnx)"
                                                 r".* use --formats esphome,c"):
        export_checkpoint(ckpt, tmp_path / "out", formats=formats)
    assert not (tmp_path / "out").exists()


def test_c_alone_on_a_streaming_checkpoint_is_the_esphome_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tinyconv.export.esphome import route_formats

    ckpt = _untrained_checkpoint(tmp_path / "s.pt", "stream_tinyconv_test", LABELS)
    assert route_formats(ckpt, "c") == ("c", "esphome")
    window = _untrained_checkpoint(tmp_path / "w.pt", "tinyconv_test", LABELS)
    assert route_formats(window, "tflite,c") == ("tflite", "c")


def test_a_cutoff_from_minutes_of_negatives_comes_with_a_note() -> None:
    from tinyconv.export.esphome import cutoff_resolution_note

    note = cutoff_resolution_note(0.58, 2.7 / 60, 0.5)
    assert note is not None and "2.7 min" in note and "needs 2 h" in note and "--probability-cutoff" in note
    assert cutoff_resolution_note(0.9, 2.0, 0.5) is None


def test_export_probability_cutoff_is_for_esphome_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    tinyconv = str(Path(sys.executable).with_name("tinyconv"))
    proc = subprocess.run([tinyconv, "export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "out"),
                           "--probability-cutoff", "1.5"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--probability-cutoff must be in (0, 1), got 1.5" in proc.stderr
    assert not (tmp_path / "out").exists()
