"""`export --out DIR` replaces DIR only when DIR is a previous export of ours.

The exporter swaps in a new folder and deletes the old one, so before this check any folder
holding a file named manifest.json (a dataset's, a web project's) was deleted whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.export.synthetic import LABELS, synthetic_config
from tinyconv.checkpoint import Checkpoint, save_checkpoint
from tinyconv.cli import main
from tinyconv.export import export_checkpoint
from tinyconv.export.errors import ExportError
from tinyconv.models import build_model

CALIBRATION = np.random.default_rng(0).uniform(0, 20, (32, 98, 40)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = synthetic_config()
    torch.manual_seed(0)  # untrained and seeded: these tests only look at the output folder
    model = build_model(cfg.model, len(LABELS), cfg.frontend)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(Checkpoint(config=cfg, labels=LABELS, state_dict=model.state_dict(), positive_label="hey_tiny"),
                    path)
    return path


@pytest.fixture(scope="module")
def previous(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_checkpoint(checkpoint, tmp_path_factory.mktemp("prev") / "export", formats="tflite",
                             representative=CALIBRATION).out_dir


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _export(checkpoint: Path, out: Path) -> None:
    export_checkpoint(checkpoint, out, formats="tflite", representative=CALIBRATION)


@pytest.mark.parametrize("manifest, why", [
    ('{"name": "my-web-app", "version": "1.0.0", "files": {}}', "not a tinyconv export manifest"),
    ('["format_version", 1]', "not a tinyconv export manifest"),
    ('{"format_version": 1, "files": ["model_int8.tflite"]}', "not a tinyconv export manifest"),
    ('{"format_version": 99, "files": {}, "source_checkpoint": {}}', "not a tinyconv export manifest"),
    ("not json {", r"not a tinyconv export manifest \(Expecting value"),
    (b"\xff\xfe", "not a tinyconv export manifest"),
])
def test_foreign_manifest_folder_is_refused_and_intact(manifest: str | bytes, why: str, checkpoint: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    if isinstance(manifest, bytes):
        (out / "manifest.json").write_bytes(manifest)
    else:
        (out / "manifest.json").write_text(manifest)
    (out / "index.html").write_text("<h1>keep me</h1>")
    before = _snapshot(out)
    with pytest.raises(ExportError, match=rf"output folder .*site is not empty and its manifest.json is {why}"):
        _export(checkpoint, out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp or .old folder left behind


def test_cli_refuses_a_foreign_manifest_folder(checkpoint: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"clips": 3}))
    (out / "clip.wav").write_bytes(b"RIFF")
    assert main(["export", str(checkpoint), "--out", str(out), "--formats", "tflite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinyconv export: error: output folder ") and "refusing to replace it" in err
    assert str(out) in err and sorted(p.name for p in out.iterdir()) == ["clip.wav", "manifest.json"]


def test_previous_export_with_a_foreign_file_is_refused(previous: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    shutil.copytree(previous, out)
    (out / "notes.txt").write_text("my notes")
    before = _snapshot(out)
    with pytest.raises(ExportError, match=r"export is not empty and holds notes.txt, which the previous export did "
                                          r"not write; move it or choose another --out"):
        _export(checkpoint, out)
    assert _snapshot(out) == before


def test_reexport_replaces_a_previous_export_and_its_sim_folder(previous: Path, checkpoint: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "export"
    shutil.copytree(previous, out)
    (out / "model_int8.tflite").write_bytes(b"stale")
    (out / "sim").mkdir()  # `tinyconv simulate` writes its report here by default
    (out / "sim" / "report.json").write_text("{}")
    _export(checkpoint, out)
    assert (out / "model_int8.tflite").read_bytes() == (previous / "model_int8.tflite").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model_int8.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
