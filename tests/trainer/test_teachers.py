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
    for got, i in zip(out.hidden_states, (2, 0, 1)):
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
    for (name, a), b in zip(src.state_dict().items(), teacher.backbone.state_dict().values()):
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
    args = parser.parse_args(["teacher", "train", "--out", str(out), "--set", f"data.dataset_dir={tiny_cfg.data.dataset_dir}",
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
