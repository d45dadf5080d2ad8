"""Distillation: projectors, soft-confidence weights, exact layer selection, cache, trainer (float + QAT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyconv.config import Config, replace
from tinyconv.data.dataset import FeatureSet, load_features
from tinyconv.trainer.distill import (
    DistillationError,
    DistillationTrainer,
    Projector,
    confidence_weights,
    feature_distance,
    predictive_entropy,
    student_sequence,
)
from tinyconv.trainer.teachers import (
    Teacher,
    TeacherError,
    backbone_config,
    build_teacher,
    normalize_waveform,
    save_teacher,
)

# --- projector ---------------------------------------------------------------------------------

@pytest.mark.parametrize("teacher_dim, student_dim, hidden", [(768, 64, 0), (768, 64, 128), (256, 8, 0), (64, 24, 32)])
@pytest.mark.parametrize("frames", [49, 25])
def test_projector_maps_width_and_time(teacher_dim: int, student_dim: int, hidden: int, frames: int) -> None:
    proj = Projector(teacher_dim, student_dim, hidden)
    h = torch.randn(3, 49, teacher_dim)
    out = proj(h, frames)
    assert out.shape == (3, frames, student_dim)
    student = torch.randn(3, frames, student_dim, requires_grad=True)
    feature_distance(student, out).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    assert student.grad is not None


def test_projector_time_alignment_averages_neighbouring_teacher_frames() -> None:
    proj = Projector(4, 4)
    with torch.no_grad():
        proj.net.weight.copy_(torch.eye(4))
        proj.net.bias.zero_()
    h = torch.arange(49, dtype=torch.float32).view(1, 49, 1).expand(1, 49, 4)
    assert torch.equal(proj(h, 49), h)  # 20 ms teacher frames onto the 20 ms stem: identity
    out = proj(h, 25)  # onto 40 ms block frames: each output averages <= 3 neighbours, in order
    assert out.shape == (1, 25, 4) and bool((out[0, 1:, 0] > out[0, :-1, 0]).all())


def test_projector_rejects_a_wrong_teacher_width() -> None:
    with pytest.raises(DistillationError, match="projector expects teacher width 768, got 64"):
        Projector(768, 64)(torch.randn(1, 49, 64), 49)


# --- soft-confidence weighting -----------------------------------------------------------------

def test_weights_sum_to_one_and_shift_to_the_confident_teacher() -> None:
    base = torch.tensor([[4.0, 0.0, -1.0]] * 5)
    # Teacher 1 grows less confident step by step (logits flattened): its weight must fall.
    flatten = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0]).view(5, 1)
    logits = torch.stack([base, base * flatten])  # [K=2, B=5, C=3]
    w = confidence_weights(logits, temperature=1.0)
    assert w.shape == (5, 2)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5))
    torch.testing.assert_close(w[0], torch.tensor([0.5, 0.5]))  # equal entropy, equal weight
    assert bool((w[1:, 1] < w[:-1, 1]).all()) and bool((w[:, 0] >= 0.5).all())
    h = predictive_entropy(logits)
    assert bool((h[1, 1:] > h[1, :-1]).all())
    # A lower weighting temperature sharpens the preference, a higher one evens it out.
    sharp, flat = confidence_weights(logits, 0.1), confidence_weights(logits, 10.0)
    assert sharp[-1, 0] > w[-1, 0] > flat[-1, 0] > 0.5


def test_weights_carry_no_gradient() -> None:
    logits = torch.randn(2, 4, 3, requires_grad=True)
    w = confidence_weights(logits, 1.0)
    assert not w.requires_grad and w.grad_fn is None


# --- trainer fixtures --------------------------------------------------------------------------

def _subset(fs: FeatureSet, per_class: int) -> FeatureSet:
    idx = np.concatenate([np.flatnonzero(fs.y == c)[:per_class] for c in np.unique(fs.y)])
    return FeatureSet(fs.x[idx], fs.y[idx], fs.labels, fs.positive_label, [fs.rows[i] for i in idx])


@pytest.fixture(scope="module")
def splits(tiny_dataset: Path) -> tuple[FeatureSet, FeatureSet]:
    # 16 training clips keep the teacher cache pass (a real transformer forward) to ~1 s.
    return (_subset(load_features(tiny_dataset, "train"), 8), _subset(load_features(tiny_dataset, "val"), 6))


@pytest.fixture(scope="module")
def teachers() -> dict[str, Teacher]:
    return {k: build_teacher(k, "tiny", 2, ["_negative_", "hey_tiny"], seed=i).eval()
            for i, k in enumerate(("wav2vec2", "conformer"))}


@pytest.fixture()
def dcfg(tiny_cfg: Config, tmp_path: Path) -> Config:
    return replace(tiny_cfg, distill={"enabled": True, "teacher_cache_dir": str(tmp_path / "cache"),
                                      "teacher_dir": str(tmp_path / "teachers")},
                   train={"batch_size": 8, "epochs": 1})


def _trainer(cfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher],
             **kwargs: object) -> DistillationTrainer:
    return DistillationTrainer(cfg, splits[0], splits[1], cfg.train.out_dir, teachers=teachers, **kwargs)


def test_cache_holds_exactly_the_selected_layers(dcfg: Config, splits: tuple[FeatureSet, FeatureSet],
                                                 teachers: dict[str, Teacher]) -> None:
    cfg = replace(dcfg, distill={"teacher_alignment_layers": {"wav2vec2": [0, 2], "conformer": [-2]},
                                 "student_alignment_layers": [0]})
    tr = _trainer(cfg, splits, teachers)
    assert set(tr.hidden["wav2vec2"]) == {0, 2} and set(tr.hidden["conformer"]) == {1}
    assert set(tr.projectors) == {"wav2vec2_t0_s0", "wav2vec2_t2_s0", "conformer_t1_s0"}
    # Compare against every hidden state the backbone computes (stored as float16).
    from tinyconv.trainer.teachers import load_waveforms

    waves = load_waveforms(cfg.data.dataset_dir, splits[0].rows[:4], splits[0].labels, splits[0].positive_label)
    for kind, layers in (("wav2vec2", (0, 2)), ("conformer", (1,))):
        with torch.no_grad():
            ref = teachers[kind].backbone(normalize_waveform(torch.from_numpy(waves.x)),
                                          output_hidden_states=True).hidden_states
        for i in layers:
            torch.testing.assert_close(tr.hidden[kind][i][:4].float(), ref[i], rtol=2e-3, atol=2e-3)


def test_cache_is_computed_once_and_keyed_by_teacher_and_layers(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher]) -> None:
    n = len(splits[0])
    first = _trainer(dcfg, splits, teachers)
    assert first.cache_computed == {"wav2vec2": n, "conformer": n}
    second = _trainer(dcfg, splits, teachers)
    assert second.cache_computed == {"wav2vec2": 0, "conformer": 0}
    assert all(torch.equal(first.teacher_logits[k], second.teacher_logits[k]) for k in first.teacher_logits)
    root = Path(dcfg.distill.teacher_cache_dir)
    files = list(root.rglob("*.pt"))
    assert len(files) == 2 * len({r.path for r in splits[0].rows}) and not list(root.rglob(".*"))
    # Other layers, or a teacher with other weights, never read the old entries.
    other = replace(dcfg, distill={"teacher_alignment_layers": {"wav2vec2": [1], "conformer": [-1]}})
    assert _trainer(other, splits, teachers).cache_computed == {"wav2vec2": n, "conformer": 0}
    changed = {**teachers, "conformer": build_teacher("conformer", "tiny", 2, ["_negative_", "hey_tiny"], seed=9)}
    assert _trainer(dcfg, splits, changed).cache_computed == {"wav2vec2": 0, "conformer": n}


def test_out_of_range_teacher_layer_names_teacher_and_range(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher]) -> None:
    cfg = replace(dcfg, distill={"teacher_alignment_layers": {"wav2vec2": [-1], "conformer": [5]}})
    with pytest.raises(TeacherError, match=r"layer 5 is out of range for teacher 'conformer'.*0\.\.2"):
        _trainer(cfg, splits, teachers)


def test_student_layer_errors(dcfg: Config, splits: tuple[FeatureSet, FeatureSet],
                              teachers: dict[str, Teacher]) -> None:
    cfg = replace(dcfg, distill={"student_alignment_layers": [3]})
    with pytest.raises(DistillationError, match=r"student_alignment_layers: layer 3 .*3 feature maps.*0\.\.2"):
        _trainer(cfg, splits, teachers)
    cfg = replace(dcfg, distill={"student_alignment_layers": [0, 1, 2],
                                 "teacher_alignment_layers": {"wav2vec2": [1, 2], "conformer": [1, 2, 0]}})
    with pytest.raises(DistillationError, match="3 entries but teacher 'wav2vec2' has 2 alignment layers"):
        _trainer(cfg, splits, teachers)


def test_missing_teachers_name_the_command(dcfg: Config, splits: tuple[FeatureSet, FeatureSet]) -> None:
    with pytest.raises(DistillationError, match=r"teacher 'wav2vec2' not found at .*`tinyconv teacher train"):
        DistillationTrainer(dcfg, splits[0], splits[1], dcfg.train.out_dir)


def test_hooks_capture_forward_features(dcfg: Config, splits: tuple[FeatureSet, FeatureSet],
                                        teachers: dict[str, Teacher]) -> None:
    tr = _trainer(dcfg, splits, teachers)
    x = torch.from_numpy(splits[0].x[:3])
    tr.module.eval()
    tr._capture = True
    with torch.no_grad():
        tr.module(x)
        maps = tr.module.forward_features(x)
    tr._capture = False
    assert len(tr._captured) == len(maps)
    for i, m in enumerate(maps):
        assert torch.equal(tr._captured[i], m)
    assert student_sequence(maps[0]).shape == (3, 49, 8) and student_sequence(maps[1]).shape == (3, 25, 8)


def test_loss_gradients_reach_student_and_projectors_only(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher]) -> None:
    # 768-wide teacher (one layer, small conv encoder to stay fast) onto a 64-wide student.
    from transformers import Wav2Vec2Model

    cfg768 = backbone_config("wav2vec2", "tiny")
    cfg768.hidden_size, cfg768.num_attention_heads, cfg768.intermediate_size = 768, 12, 256
    cfg768.num_hidden_layers, cfg768.num_conv_pos_embedding_groups = 1, 16
    torch.manual_seed(0)
    wide = Teacher("wav2vec2", Wav2Vec2Model(cfg768), 2, ["_negative_", "hey_tiny"]).eval()
    cfg = replace(dcfg, model={"name": "tinyconv", "width_multiplier": 1.0},
                  distill={"student_alignment_layers": [0, 1], "teacher_alignment_layers":
                           {"wav2vec2": [0, 1], "conformer": [1, 2]}, "alpha_feature": 1.0})
    tr = _trainer(cfg, splits, {**teachers, "wav2vec2": wide})
    p = tr.projectors["wav2vec2_t0_s0"]
    assert (p.teacher_dim, p.student_dim) == (768, 64)
    assert (tr.projectors["conformer_t2_s1"].teacher_dim, tr.projectors["conformer_t2_s1"].student_dim) == (64, 64)
    # Projector parameters train with the student, each group under the schedule.
    opt_params = {id(q) for g in tr.optimizer.param_groups for q in g["params"]}
    assert all(id(q) in opt_params for q in tr.projectors.parameters())
    assert len(tr.scheduler.lr_lambdas) == len(tr.optimizer.param_groups) == 2
    assert not any(id(q) in opt_params for t in teachers.values() for q in t.parameters())
    idx = torch.arange(8)
    tr.model.train()
    loss = tr.compute_loss(tr.model, torch.from_numpy(splits[0].x[:8]), torch.from_numpy(splits[0].y[:8]), idx)
    loss.backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in tr.projectors.parameters())
    assert tr.module.stem[0].weight.grad.abs().sum() > 0
    assert all(q.grad is None for t in (wide, *teachers.values()) for q in t.parameters())
    assert not any(t.requires_grad for t in tr.teacher_logits.values())
    assert set(tr.last_losses) == {"ce", "kd", "feature", "teacher_weights"} and tr.last_losses["feature"] > 0
    # The loss is the configured mix of its parts.
    dc = cfg.distill
    losses = tr.last_losses
    mix = dc.alpha_ce * losses["ce"] + dc.alpha_kd * losses["kd"] + dc.alpha_feature * losses["feature"]
    assert loss.item() == pytest.approx(mix, rel=1e-5)


def test_train_entry_point_distils_from_saved_teachers(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher]) -> None:
    from tinyconv.checkpoint import load_checkpoint
    from tinyconv.trainer.run import train

    for kind, t in teachers.items():
        save_teacher(t, Path(dcfg.distill.teacher_dir) / kind)
    result = train(dcfg, data={"train": splits[0], "val": splits[1]})
    ckpt = load_checkpoint(result.checkpoint_path)
    assert set(ckpt.extra["distill"]["teachers"]) == {"wav2vec2", "conformer"}
    assert not any(k.startswith("projectors") for k in ckpt.state_dict)  # the student stays exportable
    assert "projectors" in torch.load(Path(dcfg.train.out_dir) / "last.pt", weights_only=False)


def test_qat_student_distils_logits_only(dcfg: Config, splits: tuple[FeatureSet, FeatureSet],
                                         teachers: dict[str, Teacher]) -> None:
    from tinyconv.models import build_model
    from tinyconv.trainer.qat import prepare_model_for_qat  # a rename fails here, never skips

    model = prepare_model_for_qat(build_model(dcfg.model, 2, dcfg.frontend), dcfg)
    with pytest.warns(UserWarning, match="distilling logits only"):
        tr = _trainer(dcfg, splits, teachers, model=model, kind="qat")
    assert not tr.features_enabled and len(tr.projectors) == 0
    tr.model.train()
    loss = tr.compute_loss(tr.model, torch.from_numpy(splits[0].x[:8]), torch.from_numpy(splits[0].y[:8]),
                           torch.arange(8))
    loss.backward()
    assert torch.isfinite(loss) and tr.last_losses["kd"] > 0 and tr.last_losses["feature"] == 0
    assert any(q.grad is not None for q in tr.module.parameters())


# --- a trained tinyconv checkpoint as a feature teacher ----------------------------------------

@pytest.fixture(scope="module")
def window_teacher(splits: tuple[FeatureSet, FeatureSet], tiny_dataset: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A window TinyConv trained (briefly) on the same clips: what `distill.teachers: [tinyconv]` reads."""
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.config import load_config
    from tinyconv.trainer.run import train

    out = tmp_path_factory.mktemp("window_teacher")
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}", f"train.out_dir={out}",
                             "train.epochs=1", "train.batch_size=8"])
    train(cfg, data={"train": splits[0], "val": splits[1]})
    return out


def _feature_cfg(dcfg: Config, teacher: Path, teachers: tuple[str, ...] = ("tinyconv",)) -> Config:
    return replace(dcfg, distill={"teachers": list(teachers), "teacher_pretrained_dirs": {"tinyconv": str(teacher)}})


def test_checkpoint_teacher_runs_on_the_windows_the_student_sees(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], teachers: dict[str, Teacher],
        window_teacher: Path) -> None:
    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint

    cfg = _feature_cfg(dcfg, window_teacher, ("wav2vec2", "tinyconv"))
    tr = _trainer(cfg, splits, {"wav2vec2": teachers["wav2vec2"]})
    assert set(tr.teacher_logits) == {"wav2vec2"}  # only the speech teacher is cached
    assert "tinyconv" not in tr.pairs and tr.teacher_ids["tinyconv"] != "in-memory"
    x = torch.from_numpy(splits[0].x[:8])
    shifted = torch.roll(x, 7, dims=1)  # any window: the feature teacher sees exactly this one
    t = tr._teacher_logits(shifted, torch.arange(8))
    reference = model_from_checkpoint(load_checkpoint(window_teacher / "checkpoint.pt"), form="float")
    with torch.no_grad():
        assert torch.allclose(t[1], reference(shifted), atol=1e-5)
        assert not torch.allclose(t[1], reference(x), atol=1e-3)
    assert torch.equal(t[0], tr.teacher_logits["wav2vec2"][:8])
    before = {k: v.clone() for k, v in tr.feature_teachers["tinyconv"].state_dict().items()}
    tr.model.train()
    loss = tr.compute_loss(tr.model, shifted, torch.from_numpy(splits[0].y[:8]), torch.arange(8))
    loss.backward()
    assert tr.last_losses["kd"] > 0 and len(tr.last_losses["teacher_weights"]) == 2
    assert all(p.grad is None for p in tr.feature_teachers["tinyconv"].parameters())
    assert all(torch.equal(before[k], v) for k, v in tr.feature_teachers["tinyconv"].state_dict().items())


def test_teacher_train_trains_the_window_teacher_and_distillation_reads_it(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet]) -> None:
    from tinyconv.checkpoint import load_checkpoint
    from tinyconv.trainer.teachers import WINDOW_TEACHER_MODELS, train_teachers

    cfg = replace(dcfg, model={"name": "stream_tinyconv", "tiny_conv_use_depthwise": False},
                  distill={"teachers": ["tinyconv"], "teacher_epochs": 1},
                  train={"hard_negative_fraction": 0.8, "context_positive_fraction": 1.0})  # the recipes'
    (res,) = train_teachers(cfg, features={"train": splits[0], "val": splits[1]})
    ckpt = load_checkpoint(res.path / "checkpoint.pt")
    assert ckpt.config.model.name == "tinyconv" and ckpt.config.model.width_multiplier == 0.5
    assert ckpt.config.model.tiny_conv_use_depthwise == WINDOW_TEACHER_MODELS["tiny"]["tiny_conv_use_depthwise"]
    assert ckpt.config.train.stream_positive_delay_ms == 0 and res.num_parameters > 0
    # Window making of the streaming student stays with it (hard mining needs a streaming model).
    assert ckpt.config.train.hard_negative_fraction == 0 and ckpt.config.train.context_positive_fraction == 0
    assert res.val_accuracy == ckpt.metrics["val_accuracy"]  # accuracy, not the selection metric
    tr = _trainer(cfg, splits, {})
    assert list(tr.feature_teachers) == ["tinyconv"] and tr.teacher_ids["tinyconv"] != "in-memory"


def test_train_distils_from_a_checkpoint_teacher_without_waveforms(
        dcfg: Config, splits: tuple[FeatureSet, FeatureSet], window_teacher: Path) -> None:
    from tinyconv.checkpoint import load_checkpoint
    from tinyconv.hashing import file_sha256
    from tinyconv.trainer.run import train

    cfg = _feature_cfg(dcfg, window_teacher / "checkpoint.pt")
    result = train(cfg, data={"train": splits[0], "val": splits[1]})
    ids = load_checkpoint(result.checkpoint_path).extra["distill"]["teachers"]
    assert ids == {"tinyconv": file_sha256(window_teacher / "checkpoint.pt")[:16]}


def test_checkpoint_teacher_errors_name_the_key(dcfg: Config, splits: tuple[FeatureSet, FeatureSet],
                                                window_teacher: Path, tmp_path: Path) -> None:
    from tinyconv.config import ConfigError

    with pytest.raises(DistillationError, match=r"teacher 'tinyconv' .* not found: train it first"):
        _trainer(replace(dcfg, distill={"teachers": ["tinyconv"]}), splits, {})
    with pytest.raises(ConfigError, match=r"teacher_alignment_layers\['tinyconv'\] must be empty"):
        replace(_feature_cfg(dcfg, window_teacher), distill={"teacher_alignment_layers": {"tinyconv": [-1]}})
    with pytest.raises(DistillationError, match=r"teacher_pretrained_dirs.tinyconv .*nowhere"):
        _trainer(_feature_cfg(dcfg, tmp_path / "nowhere"), splits, {})
    with pytest.raises(ConfigError, match=r"teacher_train_encoder: a tinyconv teacher has no separate encoder"):
        replace(_feature_cfg(dcfg, window_teacher), distill={"teacher_train_encoder": {"tinyconv": True}})
    other_features = replace(_feature_cfg(dcfg, window_teacher), frontend={"feature_scale": 0.05})
    with pytest.raises(DistillationError, match=r"trained on other features \(frontend settings differ\)"):
        _trainer(other_features, splits, {})
    other = FeatureSet(splits[0].x, splits[0].y, ["_negative_", "okay_nabu"], "okay_nabu", splits[0].rows)
    with pytest.raises(DistillationError, match=r"trained for labels .* same dataset"):
        DistillationTrainer(_feature_cfg(dcfg, window_teacher), other, splits[1], dcfg.train.out_dir, teachers={})
