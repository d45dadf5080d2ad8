"""Teachers: presets, exact layer selection, offline local loading, save/load, fine-tune CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyconv.config import Config, ConfigError, load_config, replace
from tinyconv.trainer.teachers import (
    Teacher,
    TeacherError,
    backbone_config,
    build_teacher,
    load_backbone,
    load_teacher,
    normalize_waveform,
    resolve_layers,
    save_teacher,
)

KINDS = ("wav2vec2", "conformer")


def _waves(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 16000, generator=g) * 3000).round()


@pytest.fixture(scope="module", params=KINDS)
def tiny_teacher(request: pytest.FixtureRequest) -> Teacher:
    return build_teacher(request.param, "tiny", 3, ["a", "b", "c"]).eval()


def test_tiny_preset_shapes(tiny_teacher: Teacher) -> None:
    with torch.no_grad():
        out = tiny_teacher(_waves(), layers=(0, -1))
    assert out.logits.shape == (2, 3)
    # 20 ms frames: 49 for one second at 16 kHz, the preset's width.
    assert [h.shape for h in out.hidden_states] == [(2, 49, 64)] * 2
    assert tiny_teacher.num_layers == 2 and tiny_teacher.width == 64


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size, width, layers", [("small", 256, 4), ("base", 768, 12)])
def test_larger_presets_are_configured(kind: str, size: str, width: int, layers: int) -> None:
    cfg = backbone_config(kind, size)  # config only: building base weights costs seconds
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (width, layers)


def test_reads_exactly_the_selected_hidden_states(tiny_teacher: Teacher) -> None:
    x = _waves(seed=1)
    with torch.no_grad():
        ref = tiny_teacher.backbone(normalize_waveform(x), output_hidden_states=True).hidden_states
        out = tiny_teacher(x, layers=(2, 0, -2))
    assert len(out.hidden_states) == 3
    for got, i in zip(out.hidden_states, (2, 0, 1), strict=True):
        torch.testing.assert_close(got, ref[i], rtol=0, atol=0)
    assert not torch.equal(out.hidden_states[0], out.hidden_states[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [3, -4, 12])
def test_out_of_range_layer_names_teacher_and_range(kind: str, bad: int) -> None:
    with pytest.raises(TeacherError, match=rf"layer {bad} is out of range for teacher '{kind}'.*"
                                          r"valid indices are 0\.\.2 .* or -3\.\.-1"):
        resolve_layers(kind, (0, bad), num_layers=2)


def test_local_pretrained_folder_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A "pretrained" folder built here with save_pretrained, read with the hub off.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import Wav2Vec2ConformerModel

    torch.manual_seed(3)
    src = Wav2Vec2ConformerModel(backbone_config("conformer", "tiny"))
    src.save_pretrained(str(tmp_path / "w2v"))
    teacher = build_teacher("conformer", "base", 2, pretrained_dir=tmp_path / "w2v").eval()
    assert teacher.width == 64  # the folder's config wins over the size preset
    for (name, a), b in zip(src.state_dict().items(), teacher.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(teacher(_waves(), (1,)).hidden_states[0],
                                   src.eval()(normalize_waveform(_waves()), output_hidden_states=True).hidden_states[1])


def test_missing_local_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="not a local transformers model folder .*downloads are disabled"):
        load_backbone("wav2vec2", tmp_path / "nowhere")
    with pytest.raises(TeacherError, match="unknown teacher size 'huge'"):
        build_teacher("wav2vec2", "huge", 2)
    with pytest.raises(TeacherError, match="unknown teacher kind 'hubert'"):
        build_teacher("hubert", "tiny", 2)


def test_save_and_load_teacher_round_trip(tiny_teacher: Teacher, tmp_path: Path) -> None:
    path = save_teacher(tiny_teacher, tmp_path / tiny_teacher.kind, {"val_accuracy": 0.5})
    loaded = load_teacher(path, kind=tiny_teacher.kind, labels=["a", "b", "c"])
    assert loaded.identity() == tiny_teacher.identity()
    with torch.no_grad():
        assert torch.equal(loaded(_waves()).logits, tiny_teacher(_waves()).logits)
    with pytest.raises(TeacherError, match=r"was trained on labels \['a', 'b', 'c'\].*retrain"):
        load_teacher(path, labels=["x", "y"])
    other = "conformer" if tiny_teacher.kind == "wav2vec2" else "wav2vec2"
    with pytest.raises(TeacherError, match=f"holds a '{tiny_teacher.kind}' teacher, expected '{other}'"):
        load_teacher(path, kind=other)
    with pytest.raises(TeacherError, match="no fine-tuned teacher at .*run `tinyconv teacher train` first"):
        load_teacher(tmp_path / "empty")


def test_config_validates_teacher_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown teacher 'wav2vec' \(did you mean 'wav2vec2'\?\)"):
        load_config(None, ["distill.teachers=[wav2vec, conformer]"])
    with pytest.raises(ConfigError, match=r"teacher_alignment_layers: unknown teacher 'conformr'"):
        load_config(None, ["distill.teacher_alignment_layers={conformr: [1]}"])
    with pytest.raises(ConfigError, match="distill.teachers has duplicates"):
        load_config(None, ["distill.teachers=[conformer, conformer]"])
    with pytest.raises(ConfigError, match=r"distill\.projector_hidden_dim must be in \[0, 65536\], got -1"):
        load_config(None, ["distill.projector_hidden_dim=-1"])
    # The default layer map names both teachers; a single-teacher config must still load.
    assert load_config(None, ["distill.teachers=[conformer]"]).distill.teachers == ("conformer",)


def test_teacher_train_cli_fine_tunes_and_saves(tiny_cfg: Config, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tinyconv.trainer.teacher_cli import add_parsers

    parser = argparse.ArgumentParser(prog="tinyconv")
    add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "teachers"
    args = parser.parse_args(["teacher", "train", "--out", str(out),
                              "--set", f"data.dataset_dir={tiny_cfg.data.dataset_dir}",
                              "--set", "distill.teacher_epochs=1", "--set", "distill.teacher_batch_size=32"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind} (tiny," in text and "val accuracy" in text
        assert load_teacher(out / kind, kind=kind, labels=["_negative_", "hey_tiny"]).kind == kind
        meta = json.loads((out / kind / "tinyconv_teacher.json").read_text())
        assert 0.0 <= meta["metrics"]["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_fine_tuning_learns_a_separable_task(tiny_cfg: Config) -> None:
    """Tone vs noise: a tiny teacher from random init must get it right after a few epochs."""
    from tinyconv.trainer.teachers import WaveSet, fine_tune_teacher

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000

    def make(n: int) -> WaveSet:
        y = rng.integers(0, 2, n)
        x = np.where(y[:, None] == 1, 8000 * np.sin(2 * np.pi * rng.uniform(300, 900, (n, 1)) * t),
                     rng.normal(0, 3000, (n, 16000)))
        return WaveSet(x.astype(np.int16), y.astype(np.int64), ["noise", "tone"], None)

    teacher = build_teacher("wav2vec2", "tiny", 2, ["noise", "tone"])
    acc, history = fine_tune_teacher(teacher, make(64), make(32), epochs=4, learning_rate=1e-3, batch_size=16)
    assert acc >= 0.9, history


def test_replace_keeps_teacher_dir(tiny_cfg: Config, tmp_path: Path) -> None:
    from tinyconv.trainer.teachers import teacher_dir

    assert teacher_dir(tiny_cfg) == Path(tiny_cfg.train.out_dir) / "teachers"
    assert teacher_dir(replace(tiny_cfg, distill={"teacher_dir": str(tmp_path)})) == tmp_path


# --- whisper and speech_embedding teachers ------------------------------------------------------

from tests.trainer.teacher_models import tiny_whisper, write_speech_embedding_onnx  # noqa: E402
from tinyconv.trainer.teachers import (  # noqa: E402
    WaveSet,
    fine_tune_teacher,
    whisper_log_mel,
)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'pretrained' Whisper folder as `tinyconv teacher import --whisper` writes it (a full
    WhisperModel with 1500 positions), built here with random weights."""
    path = tmp_path_factory.mktemp("whisper") / "w"
    tiny_whisper(seed=4).model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def se_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_speech_embedding_onnx(tmp_path_factory.mktemp("se") / "models")


def _tone_or_noise(n: int, seed: int) -> WaveSet:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 1, 8000 * np.sin(2 * np.pi * rng.uniform(300, 900, (n, 1)) * t),
                 rng.normal(0, 3000, (n, 16000)))
    return WaveSet(x.astype(np.int16), y.astype(np.int64), ["noise", "tone"], None)


def test_whisper_preset_and_pretrained_shapes(whisper_dir: Path) -> None:
    preset = build_teacher("whisper", "tiny", 3, ["a", "b", "c"]).eval()
    assert (preset.width, preset.num_layers, preset.train_encoder) == (64, 2, True)
    pre = build_teacher("whisper", "base", 3, pretrained_dir=whisper_dir).eval()
    assert (pre.width, pre.num_layers, pre.train_encoder) == (32, 2, False)  # the folder wins, frozen
    # 1 s -> 100 mel frames -> 50 encoder frames, 20 ms apart: only the first 50 positions are kept.
    assert pre.backbone.config.max_source_positions == 50
    with torch.no_grad():
        out = pre(_waves(), layers=(0, -1))
    assert out.logits.shape == (2, 3) and [h.shape for h in out.hidden_states] == [(2, 50, 32)] * 2
    assert not torch.equal(out.hidden_states[0], out.hidden_states[1])
    with pytest.raises(TeacherError, match=r"layer 3 is out of range for teacher 'whisper'.*0\.\.2"):
        pre(_waves(), layers=(3,))
    # 1.5 s clips keep 75 positions.
    assert build_teacher("whisper", "tiny", 2, pretrained_dir=whisper_dir,
                         clip_samples=24000).backbone.config.max_source_positions == 75


def test_whisper_log_mel_is_whispers_own_feature_on_the_unpadded_clip() -> None:
    """Short input = the first frames of Whisper's 30 s input (up to the clip's last STFT frames,
    where the 1 s clip is reflect-padded and the 30 s one sees zeros)."""
    from transformers import WhisperFeatureExtractor

    x = _waves(seed=2)
    short = whisper_log_mel(x, 80, 50)
    assert short.shape == (2, 80, 100)
    full = WhisperFeatureExtractor(feature_size=80)(list(x.numpy() / 32768.0), sampling_rate=16000,
                                                    return_tensors="np")["input_features"]
    assert full.shape == (2, 80, 3000)
    torch.testing.assert_close(short[..., :97], torch.from_numpy(full[..., :97]), rtol=0, atol=1e-4)


def test_speech_embedding_teacher(se_dir: Path) -> None:
    teacher = build_teacher("speech_embedding", "tiny", 3, ["a", "b", "c"], pretrained_dir=se_dir).eval()
    assert (teacher.width, teacher.num_layers, teacher.train_encoder) == (96, 0, False)
    assert list(teacher.parameters()) == list(teacher.head.parameters())  # the encoder is not torch
    with torch.no_grad():
        out = teacher(_waves(), layers=(-1,))
    assert out.logits.shape == (2, 3) and out.hidden_states[0].shape == (2, 49, 96)
    with pytest.raises(TeacherError, match=r"layer 1 is out of range for teacher 'speech_embedding', which exposes "
                                           r"one layer \(its embedding\): valid indices are 0 or -1"):
        teacher.resolve_layers((1,))
    with pytest.raises(TeacherError, match=r"has no size presets .*tinyconv teacher import --speech-embedding"):
        build_teacher("speech_embedding", "tiny", 2)
    with pytest.raises(TeacherError, match="runs frozen outside torch and cannot be fine-tuned"):
        build_teacher("speech_embedding", "tiny", 2, pretrained_dir=se_dir, train_encoder=True)
    with pytest.raises(TeacherError, match=r"has no melspectrogram\.onnx or melspectrogram\.tflite"):
        build_teacher("speech_embedding", "tiny", 2, pretrained_dir=se_dir.parent)


@pytest.mark.parametrize("kind", ["whisper", "speech_embedding"])
def test_new_kinds_save_and_load(kind: str, whisper_dir: Path, se_dir: Path, tmp_path: Path) -> None:
    src = {"whisper": whisper_dir, "speech_embedding": se_dir}[kind]
    teacher = build_teacher(kind, "tiny", 2, ["x", "y"], pretrained_dir=src).eval()
    with torch.no_grad():
        teacher.head.weight.add_(1.0)
    loaded = load_teacher(save_teacher(teacher, tmp_path / kind), kind=kind, labels=["x", "y"])
    assert loaded.identity() == teacher.identity() and loaded.train_encoder is False
    with torch.no_grad():
        assert torch.equal(loaded(_waves()).logits, teacher(_waves()).logits)


def test_frozen_encoder_trains_only_the_head(whisper_dir: Path) -> None:
    teacher = build_teacher("whisper", "tiny", 2, ["noise", "tone"], pretrained_dir=whisper_dir)
    encoder_before = {k: v.clone() for k, v in teacher.backbone.state_dict().items()}
    head_before = teacher.head.weight.detach().clone()
    acc, history = fine_tune_teacher(teacher, _tone_or_noise(48, 0), _tone_or_noise(24, 1), epochs=30,
                                     learning_rate=3e-2, batch_size=16)
    assert all(torch.equal(v, encoder_before[k]) for k, v in teacher.backbone.state_dict().items())
    assert not torch.equal(teacher.head.weight, head_before)
    assert len(history) == 30 and acc >= 0.9, history[-1]


def test_config_accepts_new_kinds_and_refuses_fine_tuning_speech_embedding() -> None:
    cfg = load_config(None, ["distill.teachers=[whisper, speech_embedding]",
                             "distill.teacher_train_encoder={whisper: true}"])
    assert cfg.distill.teachers == ("whisper", "speech_embedding")
    assert cfg.distill.teacher_alignment_layers["speech_embedding"] == (-1,)
    with pytest.raises(ConfigError, match=r"teacher_train_encoder: 'speech_embedding' runs frozen outside torch"):
        load_config(None, ["distill.teacher_train_encoder={speech_embedding: true}"])
    with pytest.raises(ConfigError,
                       match=r"teacher_train_encoder: unknown teacher 'whispr' \(did you mean 'whisper'\?\)"):
        load_config(None, ["distill.teacher_train_encoder={whispr: false}"])


def test_whisper_and_speech_embedding_distil_a_student(tiny_cfg: Config, whisper_dir: Path, se_dir: Path,
                                                       tmp_path: Path) -> None:
    """The dual teacher from the two new kinds: teacher train (frozen encoders, heads on the
    dataset), then distillation with projectors 32 -> student and 96 -> student, cached outputs."""
    from tinyconv.data.dataset import FeatureSet, load_features
    from tinyconv.trainer.distill import DistillationTrainer, load_configured_teachers

    cfg = replace(tiny_cfg, distill={"enabled": True, "teachers": ["whisper", "speech_embedding"],
                                     "teacher_pretrained_dirs": {"whisper": str(whisper_dir),
                                                                 "speech_embedding": str(se_dir)},
                                     "teacher_dir": str(tmp_path / "teachers"), "teacher_epochs": 2,
                                     "teacher_cache_dir": str(tmp_path / "cache"),
                                     "teacher_alignment_layers": {"whisper": [1], "speech_embedding": [0]}},
                  train={"batch_size": 8, "epochs": 1})
    train_full, val_full = load_features(cfg.data.dataset_dir, "train"), load_features(cfg.data.dataset_dir, "val")

    def subset(fs: FeatureSet, n: int) -> FeatureSet:
        idx = np.concatenate([np.flatnonzero(fs.y == c)[:n] for c in np.unique(fs.y)])
        return FeatureSet(fs.x[idx], fs.y[idx], fs.labels, fs.positive_label, [fs.rows[i] for i in idx])

    train, val = subset(train_full, 6), subset(val_full, 4)
    from tinyconv.trainer.teachers import load_waveforms, train_teachers

    waves = {s: load_waveforms(cfg.data.dataset_dir, fs.rows, fs.labels, fs.positive_label) for s, fs in
             (("train", train), ("val", val))}
    results = train_teachers(cfg, data=waves)
    assert [r.kind for r in results] == ["whisper", "speech_embedding"]
    teachers = load_configured_teachers(cfg, train.labels)
    assert {k: t.train_encoder for k, t in teachers.items()} == {"whisper": False, "speech_embedding": False}
    trainer = DistillationTrainer(cfg, train, val, cfg.train.out_dir, teachers=teachers, waves=waves["train"])
    assert trainer.cache_computed == {"whisper": len(train), "speech_embedding": len(train)}
    # Projector keys are <kind>_t<teacher layer>_s<student layer>: widths 32 and 96 -> the student's.
    assert {k.split("_t")[0]: p.teacher_dim for k, p in trainer.projectors.items()} == {"whisper": 32,
                                                                                     "speech_embedding": 96}
    assert trainer.hidden["whisper"][1].shape == (len(train), 50, 32)
    assert trainer.hidden["speech_embedding"][0].shape == (len(train), 49, 96)
    result = trainer.fit()
    assert np.isfinite(trainer.last_losses["feature"]) and trainer.last_losses["feature"] > 0
    assert result is not None
    again = DistillationTrainer(cfg, train, val, tmp_path / "run2", teachers=teachers, waves=waves["train"])
    assert again.cache_computed == {"whisper": 0, "speech_embedding": 0}
