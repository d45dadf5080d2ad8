"""Bad input: every error names the file, layer or op at fault; nothing half-written."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import flatbuffers
import pytest
import torch

from tinyconv.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from tinyconv.config import ModelConfig
from tinyconv.export import ExportError, export_checkpoint


def test_checkpoint_of_another_format_version(tmp_path: Path) -> None:
    import torch

    torch.save({"format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(ExportError, match=rf"has checkpoint format {FORMAT_VERSION + 1}, this tinyconv reads"):
        export_checkpoint(tmp_path / "future.pt", tmp_path / "out")
    torch.save({"format_version": FORMAT_VERSION, "config": {}, "labels": ["a", "b"]}, tmp_path / "half.pt")
    with pytest.raises(ExportError, match=r"not a tinyconv checkpoint \(missing state_dict\)"):
        export_checkpoint(tmp_path / "half.pt", tmp_path / "out")


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(ExportError, match=r"checkpoint .*broken\.pt is corrupt"):
        export_checkpoint(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"checkpoint not found: .*nope\.pt"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "out")


def test_checkpoint_of_another_architecture(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """V2 weights under a V1 config: the message names the layers that do not fit."""
    ckpt = load_checkpoint(trained.float_path)
    v1: ModelConfig = dataclasses.replace(ckpt.config.model, name="tinyconv_v1_050")
    other = dataclasses.replace(ckpt, config=dataclasses.replace(ckpt.config, model=v1))
    save_checkpoint(other, tmp_path / "other.pt")
    with pytest.raises(ExportError, match=r"does not match architecture 'tinyconv_v1_050'"
                                          r".*(missing|unexpected) layer\(s\) .*blocks\."):
        export_checkpoint(tmp_path / "other.pt", tmp_path / "out", representative=trained.train_x[:8])
    assert not (tmp_path / "out").exists()


def test_unknown_architecture_name(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = torch.load(trained.float_path, weights_only=False)
    raw["config"]["model"]["name"] = "resnet_kws"
    torch.save(raw, tmp_path / "resnet.pt")
    with pytest.raises(ExportError, match=r"cannot build model 'resnet_kws'"):
        export_checkpoint(tmp_path / "resnet.pt", tmp_path / "out", representative=trained.train_x[:8])


def test_output_folder_not_writable(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"output folder .*a_file/export is not writable"):
        export_checkpoint(trained.float_path, blocker / "export")


def test_refuses_to_replace_a_folder_that_is_not_an_export(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"output folder .*mine is not empty"):
        export_checkpoint(trained.float_path, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_failed_write_leaves_the_previous_export_intact(tmp_path: Path) -> None:
    from tinyconv.export.pipeline import _write_atomically

    out = tmp_path / "export"
    _write_atomically(out, {"manifest.json": b"{}", "model_int8.tflite": b"old"})
    # The second file cannot be created (its folder does not exist): the write fails midway.
    with pytest.raises(ExportError, match=r"could not write export to .*export"):
        _write_atomically(out, {"manifest.json": b"{new}", "missing_dir/model.tflite": b"new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp folder left
    assert (out / "model_int8.tflite").read_bytes() == b"old" and (out / "manifest.json").read_bytes() == b"{}"


def test_failure_before_writing_leaves_nothing(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import tinyconv.export.tflite as tflite

    def boom(*args: object, **kwargs: object) -> bytes:
        raise ExportError("conversion failed (simulated)")

    monkeypatch.setattr(tflite, "convert_to_tflite", boom)
    with pytest.raises(ExportError, match="simulated"):
        export_checkpoint(trained.float_path, tmp_path / "out", representative=trained.train_x[:16])
    assert list(tmp_path.iterdir()) == []  # no out/, no temp folder


def test_unknown_format(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ExportError, match=r"unknown export format\(s\) \['tflite-micro'\]"):
        export_checkpoint(trained.float_path, tmp_path / "out", formats="tflite-micro")


def test_op_tflite_micro_cannot_run(trained, qat_export, tmp_path: Path,  # type: ignore[no-untyped-def]
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap one opcode for SKIP_GRAM (no TFLM kernel): the arena measurement (tinyconv.device) names
    the op, and the export fails with it as an ExportError, writing nothing."""
    from ai_edge_litert import schema_py_generated as schema

    import tinyconv.export.tflite as tflite
    from tinyconv.device.arena import measure_host_arena
    from tinyconv.device.errors import RuntimeFailure

    model = schema.ModelT.InitFromPackedBuf(bytearray(qat_export.files["model_int8.tflite"].read_bytes()), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SKIP_GRAM
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bad = bytes(builder.Output())
    with pytest.raises(RuntimeFailure, match=r"TFLite Micro cannot run op SKIP_GRAM: no kernel registered"):
        measure_host_arena(bad)
    monkeypatch.setattr(tflite, "convert_to_tflite", lambda *args, **kwargs: bad)
    with pytest.raises(ExportError, match=r"TFLite Micro cannot run op SKIP_GRAM"):
        export_checkpoint(trained.float_path, tmp_path / "out", representative=trained.train_x[:16])
    assert list(tmp_path.iterdir()) == []


def test_cli_exit_codes(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "tinyconv.cli", "export", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.pt is corrupt" in proc.stderr
    proc = subprocess.run([sys.executable, "tools/export_mcu.py", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 2 and "bad.pt is corrupt" in proc.stderr


def test_probability_cutoff_without_esphome(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ExportError, match=r"^a probability cutoff goes into the ESPHome manifest: add esphome"):
        export_checkpoint(trained.float_path, tmp_path / "out", probability_cutoff=0.9)
    assert not (tmp_path / "out").exists()
