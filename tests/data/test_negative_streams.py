"""Long negative audio stored with the validation and test splits (data.negative_stream_minutes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import STREAM_SECONDS
from tinyconv.data.dataset import load_features
from tinyconv.data.manifest import DatasetError, read_manifest
from tinyconv.data.negative_streams import negative_stream_audio
from tinyconv.data.tts import available_voices

SECONDS = STREAM_SECONDS


@pytest.fixture()
def streamed(streamed_dataset: Path) -> Path:
    return streamed_dataset


def test_each_split_gets_its_minutes_of_stream_audio(streamed: Path) -> None:
    rows, info = read_manifest(streamed)
    assert info.negative_streams is not None and set(info.negative_streams) == {"train", "val", "test"}
    for split, entry in info.negative_streams.items():
        assert sum(f["seconds"] for f in entry["files"]) == pytest.approx(SECONDS)
        assert all((streamed / f["path"]).is_file() for f in entry["files"])
        # Spoken by the split's own voices only (speaker-disjoint from training).
        split_voices = {r.voice for r in rows if r.split == split and r.voice.startswith(("espeak-ng", "flite"))}
        assert entry["voices"] == len(split_voices)
        assert entry["speech_utterances"] > 0
    fs = load_features(streamed, "val", with_streams=True)
    assert len(fs.negative_streams) == 1
    assert abs(fs.negative_streams[0].shape[0] - SECONDS * 100) <= 3  # 10 ms frames of continuous audio
    # The one everyday-audio stream: every everyday negative clip, then the long stream.
    stream = fs.negative_stream()
    assert stream is not None
    clips = int(fs.everyday_negatives().sum())
    assert stream.shape[0] == clips * fs.x.shape[1] + fs.negative_streams[0].shape[0]
    np.testing.assert_array_equal(stream[-100:], fs.negative_streams[0][-100:])
    assert len(load_features(streamed, "train", with_streams=True).negative_streams) == 1
    # Only on request: loaders that need the clips alone (calibration, teachers) skip the hours.
    assert load_features(streamed, "train").negative_streams == []


def test_validation_streams_hold_the_long_audio(streamed: Path) -> None:
    from tinyconv.trainer.streams import build_feature_streams

    fs = load_features(streamed, "val", with_streams=True)
    with_audio = build_feature_streams(fs, seed=0)
    fs.negative_streams = []
    clips_only = build_feature_streams(fs, seed=0)
    assert with_audio.negative_hours - clips_only.negative_hours == pytest.approx(SECONDS / 3600, abs=1e-4)
    np.testing.assert_array_equal(with_audio.positive, clips_only.positive)


def test_generation_is_seeded_and_keeps_to_its_voices() -> None:
    voices = [v for v in available_voices() if v.engine == "espeak-ng"][:2]
    rirs = [np.r_[1.0, np.zeros(99)].astype(np.float32)]
    a, info = negative_stream_audio("hey tiny", voices, 12.0, rirs, seed=3, stream_s=5.0)
    b, _ = negative_stream_audio("hey tiny", voices, 12.0, rirs, seed=3, stream_s=5.0)
    assert [len(p) for p in a] == [80000, 80000, 32000]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert info["voices"] == 2 and info["hours"] == pytest.approx(12.0 / 3600)
    c, _ = negative_stream_audio("hey tiny", voices, 12.0, rirs, seed=4, stream_s=5.0)
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(ValueError, match="at least one voice"):
        negative_stream_audio("hey tiny", [], 12.0, rirs, seed=3)


def _copy(streamed: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(streamed, dst, ignore=shutil.ignore_patterns(".feature_cache"))
    return dst


def test_a_changed_stream_file_is_refused_by_name(streamed: Path, tmp_path: Path) -> None:
    ds = _copy(streamed, tmp_path)
    _, info = read_manifest(ds)
    assert info.negative_streams is not None
    victim = ds / info.negative_streams["val"]["files"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[-2:] = b"\x01\x02"
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"val_negative_000\.wav changed since the dataset was written"):
        load_features(ds, "val", with_streams=True)
    # The ESPHome exporter's cutoff search reads the same split: a damaged dataset is an error
    # there too, not a silent fall-back to the default cutoff.
    from types import SimpleNamespace

    from tests.helpers import tiny_config
    from tinyconv.export.esphome import _dataset_split

    src = SimpleNamespace(config=tiny_config(tmp_path, f"data.dataset_dir={ds}"))
    with pytest.raises(DatasetError, match=r"val_negative_000\.wav changed since the dataset was written"):
        _dataset_split(src, "val", with_streams=True)
    assert _dataset_split(SimpleNamespace(config=tiny_config(tmp_path / "none")), "val") is None
    victim.unlink()
    with pytest.raises(DatasetError, match=r"val_negative_000\.wav is unreadable"):
        load_features(ds, "val", with_streams=True)


@pytest.mark.parametrize("streams, message", [
    ({"val": {"files": [{"path": "../outside.wav", "sha256": "00"}]}}, "outside the dataset folder"),
    ({"val": {"files": [{"path": "/etc/passwd", "sha256": "00"}]}}, "outside the dataset folder"),
    ({"holdout": {"files": []}}, "is not a split"),
    ({"val": {"files": [{"path": "streams/a.wav"}]}}, "without path and sha256"),
    (["streams/a.wav"], "not a mapping"),
])
def test_malformed_stream_entries_in_labels_json_are_refused(streamed: Path, tmp_path: Path, streams: object,
                                                            message: str) -> None:
    ds = _copy(streamed, tmp_path)
    labels = json.loads((ds / "labels.json").read_text())
    labels["negative_streams"] = streams
    (ds / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match=message):
        read_manifest(ds)


def test_datasets_without_streams_keep_labels_json_as_it_was(tiny_dataset: Path) -> None:
    assert "negative_streams" not in json.loads((tiny_dataset / "labels.json").read_text())
    assert load_features(tiny_dataset, "val", with_streams=True).negative_streams == []


def test_training_batches_draw_negatives_from_the_long_audio(streamed: Path, tmp_path: Path) -> None:
    """train.long_negative_fraction of a batch's negatives become windows of the training split's
    long negative audio; positives are untouched; the draw is seeded (exact resume)."""
    import torch

    from tests.helpers import TINY_OVERRIDES
    from tinyconv.config import load_config
    from tinyconv.trainer.loop import Trainer

    cfg = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={streamed}", f"train.out_dir={tmp_path}",
                             "train.long_negative_fraction=1.0"])
    train, val = load_features(streamed, "train", with_streams=True), load_features(streamed, "val", with_streams=True)
    trainer = Trainer(cfg, train, val, tmp_path)
    assert trainer.long_negatives is not None
    long = trainer.long_negatives
    x, y = trainer.x[:64], trainer.y[:64]
    out = trainer._long_negative_windows(x, y, torch.Generator().manual_seed(0))
    again = trainer._long_negative_windows(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    pos = y == train.positive_index
    assert torch.equal(out[pos], x[pos]) and bool(pos.any()) and bool((~pos).any())
    t = x.shape[1]
    for row in out[~pos]:  # every negative is now a window of the long audio
        hits = torch.nonzero(torch.all(long[: len(long) - t + 1] == row[0], dim=1)).flatten()
        assert any(torch.equal(long[h : h + t], row) for h in hits.tolist())
    off = Trainer(load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={streamed}", f"train.out_dir={tmp_path}",
                                     "train.long_negative_fraction=0"]), train, val, tmp_path)
    assert off.long_negatives is None


def _stream_trainer(streamed: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.config import load_config
    from tinyconv.trainer.loop import Trainer

    cfg = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={streamed}", f"train.out_dir={out}",
                             "model.name=stream_tinyconv_test", "train.long_negative_fraction=1.0",
                             "train.hard_negative_fraction=1.0", *extra])
    train = load_features(streamed, "train", with_streams=True, with_context=True)
    val = load_features(streamed, "val", with_streams=True, with_context=True)
    return Trainer(cfg, train, val, out)


def test_hard_negatives_are_the_windows_the_model_scores_highest(streamed: Path, tmp_path: Path) -> None:
    """train.hard_negative_fraction: the mined windows are the top HARD_NEGATIVE_POOL of the
    training stream's windows by the model's own (non-streaming) score, and a batch with fraction
    1.0 draws its long negatives from them only."""
    import torch

    from tinyconv.trainer.loop import HARD_NEGATIVE_POOL

    trainer = _stream_trainer(streamed, tmp_path)
    long, t = trainer.long_negatives, trainer.x.shape[1]
    assert long is not None
    starts = trainer.mine_hard_negatives()
    model = trainer.eval_module.eval()
    step = 3
    # Every window that ends on a step of the stream (the last step ends at the last frame).
    ends = np.arange(len(long), t - 1, -step)[::-1]
    with torch.no_grad():
        windows = torch.stack([long[e - t : e] for e in ends])
        scores = torch.softmax(model(windows), dim=-1)[:, trainer.train_set.positive_index].numpy()
    k = max(1, round(HARD_NEGATIVE_POOL * len(scores)))
    assert len(starts) == k and len(set(starts.tolist())) == k
    mined = np.isin(ends - t, starts.numpy())
    assert mined.sum() == k  # every mined start is a step-aligned window of the stream
    assert scores[mined].min() >= scores[~mined].max() - 1e-5
    trainer.hard_starts = starts
    x, y = trainer.x[:64], trainer.y[:64]
    out = trainer._long_negative_windows(x, y, torch.Generator().manual_seed(0))
    neg = y != trainer.train_set.positive_index
    hard = {tuple(long[s : s + t].flatten()[:8].tolist()) for s in starts.tolist()}
    assert all(tuple(row.flatten()[:8].tolist()) in hard for row in out[neg])


def test_hard_negative_mining_resumes_exactly(streamed: Path, tmp_path: Path) -> None:
    """A run stopped after an epoch and resumed mines from the same weights, so it ends with the
    weights of the run that was not stopped."""
    import torch

    from tinyconv.trainer.loop import LAST

    full = _stream_trainer(streamed, tmp_path / "full", "train.epochs=3")
    full.fit()

    class Killed(Exception):
        pass

    def kill_at_epoch_2(_module: object, epoch: int) -> None:
        if epoch == 2:
            raise Killed

    stopped = _stream_trainer(streamed, tmp_path / "stopped", "train.epochs=3")
    stopped.epoch_hook = kill_at_epoch_2
    with pytest.raises(Killed):
        stopped.fit()
    _stream_trainer(streamed, tmp_path / "stopped", "train.epochs=3").fit(resume=True)
    a = torch.load(tmp_path / "full" / LAST, weights_only=True)
    b = torch.load(tmp_path / "stopped" / LAST, weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_hard_negatives_need_a_float_streaming_model(streamed: Path, tmp_path: Path) -> None:
    from tinyconv.trainer.streams import StreamSelectionError

    with pytest.raises(StreamSelectionError, match=r"train\.hard_negative_fraction .* needs a float streaming model.*"
                                                   r"got 'tinyconv'.*set train\.hard_negative_fraction=0"):
        _stream_trainer(streamed, tmp_path, "model.name=tinyconv")


def test_context_positives_are_the_clips_heard_in_the_long_audio(streamed: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each positive mixed over the split's long audio, featurized continuously: its first
    num_frames frames end where the clip ends, and the audio before and under it changes them."""
    from tinyconv.config import FrontendConfig
    from tinyconv.data import negative_streams as ns
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import resolve
    from tinyconv.features import StreamingFrontend
    from tinyconv.features.frontend import clip_features

    fc = FrontendConfig()
    val = load_features(streamed, "val", with_streams=True, with_context=True)
    pos_rows = [r for r in val.rows if r.label == val.positive_label]
    post = ns.CONTEXT_POST_MS // fc.step_ms
    assert val.context_positives is not None
    assert val.context_positives.shape == (len(pos_rows), fc.num_frames + post, fc.num_channels)
    assert load_features(streamed, "val", with_streams=True).context_positives is None  # not asked for
    _, info = read_manifest(streamed)
    audio = ns.read_negative_streams(streamed, ns.stream_entries(info, "val"))
    again = ns.context_positives(streamed, pos_rows[:3], audio, seed=ns.split_seed("val"))
    np.testing.assert_array_equal(again, val.context_positives[:3])  # seeded: the same every load
    clip = load_audio(resolve(str(streamed), pos_rows[0])).samples
    assert not np.allclose(val.context_positives[0, : fc.num_frames], clip_features(clip, fc))
    # Alignment: with the long audio silenced, the first frames are the clip's own, ending at its end.
    monkeypatch.setattr(ns, "CONTEXT_GAIN", (0.0, 0.0))
    quiet = ns.context_positives(streamed, pos_rows[:1], audio)
    pre = int(ns.CONTEXT_S * fc.sample_rate_hz) // fc.step_samples * fc.step_samples
    alone = StreamingFrontend(fc).process(np.concatenate([np.zeros(pre, np.int16), clip]))[-fc.num_frames :]
    np.testing.assert_array_equal(quiet[0, : fc.num_frames], alone)


def test_training_and_validation_use_the_positives_heard_in_context(streamed: Path, tmp_path: Path) -> None:
    """train.context_positive_fraction 1.0: every positive of a batch becomes its clip heard in the
    training streams, ending 0..stream_positive_delay_ms after the clip; negatives are untouched.
    The validation streams place the validation positives heard in context."""
    import torch

    from tinyconv.trainer.streams import build_feature_streams

    trainer = _stream_trainer(streamed, tmp_path, "train.context_positive_fraction=1.0",
                              "train.stream_positive_delay_ms=200", "train.hard_negative_fraction=0")
    ctx = trainer.context_positives
    assert ctx is not None
    x, y, idx = trainer.x[:64], trainer.y[:64], torch.arange(64)
    out = trainer._context_positive_windows(x, idx, torch.Generator().manual_seed(0))
    pos = y == trainer.train_set.positive_index
    assert bool(pos.any()) and torch.equal(out[~pos], x[~pos])
    t = x.shape[1]
    for i in torch.nonzero(pos).flatten().tolist():
        row = int(trainer.context_row[i])
        assert any(torch.equal(out[i], ctx[row, d : d + t]) for d in range(21)), i
    val = trainer.val_set
    assert val.context_positives is not None
    streams = build_feature_streams(val)
    for a, b in streams.spans:
        assert any(np.array_equal(streams.positive[a:b], c[:t]) for c in val.context_positives)


def test_context_positives_need_a_stream_longer_than_their_audio(streamed: Path) -> None:
    from tinyconv.data import negative_streams as ns

    val = load_features(streamed, "val")
    rows = [r for r in val.rows if r.label == val.positive_label][:1]
    with pytest.raises(DatasetError, match=r"need a negative stream of at least 3\.5 s, the longest is 1\.0 s.*"
                                           r"train\.context_positive_fraction=0"):
        ns.context_positives(streamed, rows, [np.zeros(16000, np.int16)])


def test_training_on_context_positives_needs_them_loaded(streamed: Path, tmp_path: Path) -> None:
    from tests.helpers import TINY_OVERRIDES
    from tinyconv.config import load_config
    from tinyconv.trainer.loop import Trainer
    from tinyconv.trainer.streams import StreamSelectionError

    cfg = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={streamed}", f"train.out_dir={tmp_path}",
                             "train.context_positive_fraction=1.0"])
    train, val = load_features(streamed, "train", with_streams=True), load_features(streamed, "val")
    with pytest.raises(StreamSelectionError, match=r"context_positive_fraction needs .* with_context=True"):
        Trainer(cfg, train, val, tmp_path)
