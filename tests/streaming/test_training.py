"""Training for streaming use and selection on validation streams (tinyconv.trainer.streams)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.streaming.conftest import LABELS, make_clips, stream_config
from tinyconv.config import ConfigError, load_config, replace
from tinyconv.data.dataset import FeatureSet
from tinyconv.data.manifest import Row
from tinyconv.device.esphome_detector import detect
from tinyconv.models import build_model
from tinyconv.models.streaming import StreamingTinyConv
from tinyconv.trainer import streams as st
from tinyconv.trainer.loop import Trainer
from tinyconv.trainer.run import train


def _fs(x: np.ndarray, y: np.ndarray, rows: list[Row] | None = None) -> FeatureSet:
    return FeatureSet(x, y, LABELS, LABELS[1], rows or [])


def test_shift_windows_slides_into_the_partner() -> None:
    x = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    partner = -1 - torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    out = st.shift_windows(x, partner, torch.tensor([0, 4]))
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], torch.cat([x[1, 4:], partner[1, :4]]))


def test_streaming_shifts_ranges_and_seed() -> None:
    y = torch.tensor([1, 0] * 500)
    s = st.streaming_shifts(y, torch.Generator().manual_seed(3), positive_index=1, max_delay_frames=30,
                            negative_fraction=0.25, num_frames=98)
    again = st.streaming_shifts(y, torch.Generator().manual_seed(3), positive_index=1, max_delay_frames=30,
                                negative_fraction=0.25, num_frames=98)
    assert torch.equal(s, again)
    pos, neg = s[y == 1], s[y == 0]
    assert int(pos.min()) == 0 and int(pos.max()) == 30 and len(set(pos.tolist())) == 31
    assert 0.15 < float((neg > 0).float().mean()) < 0.35 and int(neg.max()) <= 97
    none = st.streaming_shifts(y, torch.Generator().manual_seed(3), positive_index=1, max_delay_frames=0,
                               negative_fraction=0.0, num_frames=98)
    assert int(none.abs().sum()) == 0


def test_esphome_detections_are_the_device_detector_on_uint8() -> None:
    rng = np.random.default_rng(0)
    # Bursts of high probability in low noise, as a detector sees them.
    p = rng.integers(0, 60, 3000)
    for start in rng.integers(0, 2950, 40):
        p[start : start + int(rng.integers(3, 40))] = rng.integers(150, 256)
    fired = 0
    for cutoff in (0.5, 0.7, 0.9, 0.97):
        for window in (1, 5):
            got = st.esphome_detections(p / 255.0 + rng.uniform(-0.0019, 0.0019, len(p)), cutoff, window,
                                        first_invoke=4)
            assert got.tolist() == detect(p.astype(np.uint8), cutoff, window, first_invoke=4).tolist()
            fired += len(got)
    assert fired > 40
    # ESPHome's 74-slice (740 ms) wait: newest invokes of two detections at least 24 apart (74 / 3 slices).
    gaps = np.diff(st.esphome_detections(p / 255.0, 0.5, 5))
    assert gaps.min() == 24


def test_feature_streams_place_every_positive_after_negatives() -> None:
    x, y = make_clips(40, seed=1)
    fs = st.build_feature_streams(_fs(x, y), seed=0)
    assert fs.spans.shape == (int((y == 1).sum()), 2)
    assert fs.negative.shape == (int((y == 0).sum()) * 98, 40)
    pos_clips = {x[i].tobytes() for i in np.flatnonzero(y == 1)}
    for a, b in fs.spans:
        assert fs.positive[a:b].tobytes() in pos_clips
    assert fs.spans[0, 0] == st.GAP_CLIPS * 98
    assert fs.negative_hours == pytest.approx(fs.negative.shape[0] * 0.01 / 3600)
    with pytest.raises(st.StreamSelectionError, match="needs positive and negative validation clips"):
        st.build_feature_streams(_fs(x[y == 1], y[y == 1]))


def test_step_probabilities_equal_the_streaming_form(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model(stream_config().model, 2).eval()
    x, _ = make_clips(6, seed=2)
    frames = np.concatenate(list(x), 0)[5:]  # not a multiple of 3: alignment must follow forward_steps
    monkeypatch.setattr(st, "CHUNK_STEPS", 7)  # several chunks with overlap
    ends, p = st.step_probabilities(model, frames, 1)
    assert np.all(np.diff(ends) == 3) and ends[-1] == len(frames)
    with torch.no_grad():
        for k in (0, 13, len(ends) - 1):
            window = torch.from_numpy(frames[ends[k] - 98 : ends[k]][None]) if ends[k] >= 98 else None
            if window is None:
                continue
            ref = torch.softmax(model(window), -1)[0, 1].item()
            assert p[k] == pytest.approx(ref, abs=1e-5)
        # And the ring-buffer form ESPHome runs, on the same frames from the same start.
        s = StreamingTinyConv(model)
        drop = len(frames) % 3
        logits = s.run(torch.from_numpy(frames[drop:][None]))[0]
        ref = torch.softmax(logits, -1)[-len(p):, 1].numpy()
        assert np.allclose(p, ref, atol=1e-5)
    with pytest.raises(st.StreamSelectionError, match="not a streaming model"):
        st.step_probabilities(torch.nn.Linear(40, 2), frames, 1)


def test_stream_report_of_a_perfect_and_a_silent_model() -> None:
    x, y = make_clips(30, seed=4)
    streams = st.build_feature_streams(_fs(x, y), seed=0)

    class Oracle(torch.nn.Module):
        """Fires on the positive band (channels 8-20) in the last 20 frames of its window."""

        receptive_field_frames, stem_kernel = 98, 5

        def forward_steps(self, seq: torch.Tensor) -> torch.Tensor:
            w = seq[0].unfold(0, 98, 3)  # [steps, 40, 98]
            hot = (w[:, 8:20, -20:].mean(dim=(1, 2)) > 8).float()
            return torch.stack([1 - hot, hot], -1)[None] * 20

    rep = st.stream_report(Oracle(), streams, 1, target_fa_per_hour=0.5)
    assert rep["met"] and rep["recall"] == 1.0 and rep["false_accepts"] == 0 and rep["cutoff"] == 0.5
    assert rep["positives"] == int((y == 1).sum())

    class Silent(Oracle):
        def forward_steps(self, seq: torch.Tensor) -> torch.Tensor:
            return torch.zeros(1, (seq.shape[1] - 98) // 3 + 1, 2)  # P = 0.5 everywhere: never > a cutoff of 0.5

    rep = st.stream_report(Silent(), streams, 1, target_fa_per_hour=0.5)
    assert rep["met"] and rep["recall"] == 0.0 and rep["false_accepts"] == 0


def test_config_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"train\.stream_positive_delay_ms must be in \[0, 1000\], got -10"):
        load_config(None, ["train.stream_positive_delay_ms=-10"])
    with pytest.raises(ConfigError, match=r"train\.stream_negative_fraction must be in \[0, 1\], got 1.5"):
        load_config(None, ["train.stream_negative_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"train\.target_fa_per_hour must be in \(0, 1000\]"):
        load_config(None, ["train.target_fa_per_hour=0"])
    with pytest.raises(ConfigError, match="train.selection_metric must be accuracy, .* or stream_recall_at_fa"):
        load_config(None, ["train.selection_metric=streams"])


def _sets(seed: int = 0) -> tuple[FeatureSet, FeatureSet]:
    x, y = make_clips(160, seed=seed)
    vx, vy = make_clips(60, seed=seed + 100)
    return FeatureSet(x, y, list(LABELS), "hey_tiny"), FeatureSet(vx, vy, list(LABELS), "hey_tiny")


def test_stream_selection_refuses_a_window_model(tmp_path: Path) -> None:
    cfg = replace(stream_config("tinyconv_test"), train={"selection_metric": "stream_recall_at_fa",
                                                         "out_dir": str(tmp_path)})
    tr, va = _sets()
    with pytest.raises(st.StreamSelectionError, match="needs a streaming model .*got 'tinyconv_test'"):
        Trainer(cfg, tr, va, tmp_path)


def test_training_with_streaming_windows_selects_on_streams(tmp_path: Path) -> None:
    cfg = replace(stream_config(), train={
        "selection_metric": "stream_recall_at_fa", "stream_positive_delay_ms": 200, "stream_negative_fraction": 0.3,
        "epochs": 3, "batch_size": 32, "out_dir": str(tmp_path / "run"), "device": "cpu", "ema_decay": 0.0})
    tr, va = _sets()
    trainer = Trainer(cfg, tr, va, tmp_path / "run")
    assert trainer.stream_delay_frames == 20 and trainer.negative_pool is not None
    # The batch transform draws from the epoch's generator: the same seed gives the same windows.
    y = trainer.y[:32]
    a = trainer._stream_windows(trainer.x[:32], y, torch.Generator().manual_seed(1))
    b = trainer._stream_windows(trainer.x[:32], y, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, trainer.x[:32])
    result = train(cfg, data={"train": tr, "val": va})
    row = result.history[-1]
    assert {"val_stream_recall", "val_stream_cutoff", "val_stream_fa_per_hour", "val_stream_met"} <= set(row)
    metric = row["val_stream_recall"] - (0.0 if row["val_stream_met"] else 1.0)
    assert row["val_metric"] == pytest.approx(metric, abs=1.1e-3)
    from tinyconv.checkpoint import load_checkpoint

    assert "val_stream_recall" in load_checkpoint(result.checkpoint_path).metrics


def test_feature_streams_leave_near_misses_out() -> None:
    x, y = make_clips(40, seed=1)
    kinds = ["confusable" if i % 4 == 0 else ("positive" if y[i] == 1 else "speech") for i in range(len(y))]
    rows = [Row(path=f"{i}.wav", label=LABELS[int(y[i])], split="val", kind=k) for i, k in enumerate(kinds)]
    fs = st.build_feature_streams(_fs(x, y, rows), seed=0)
    near = {x[i].tobytes() for i in range(0, len(y), 4) if y[i] == 0}
    negatives = {fs.negative[k : k + 98].tobytes() for k in range(0, len(fs.negative), 98)}
    assert not near & negatives and len(negatives) == sum(bool(y[i] == 0 and i % 4) for i in range(len(y)))
    assert len(fs.spans) == int((y == 1).sum())


def test_quickstart_of_a_streaming_model_ends_with_the_esphome_pair(tiny_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default path: the pair ESPHome loads and the C array land in the run folder."""
    import json

    import tinyconv.data.synth as synth
    from tinyconv.trainer.run import quickstart

    monkeypatch.setattr(synth, "synthesize_dataset", lambda config, out: Path(out))  # the tiny set is built
    cfg = replace(tiny_cfg, model={"name": "stream_tinyconv_test", "time_dilations": [1, 1, 1, 1]},
                  train={"epochs": 1, "selection_metric": "stream_recall_at_fa", "stream_positive_delay_ms": 300,
                         "stream_negative_fraction": 0.3})
    result = quickstart(cfg)
    run = Path(cfg.train.out_dir)
    assert result.esphome is not None and result.esphome_manifest is not None and result.streaming is not None
    pair = json.loads((run / "hey_tiny.json").read_text())
    assert pair["model"] == "hey_tiny.tflite" and pair["micro"] == result.esphome_manifest["micro"]
    assert (run / "hey_tiny.tflite").read_bytes() == (run / "export" / "hey_tiny.tflite").read_bytes()
    assert (run / "model_data.cc").stat().st_size > (run / "hey_tiny.tflite").stat().st_size
    assert 0.0 <= result.streaming["recall"] <= 1.0 and "at_cutoff" in result.streaming
    assert {"export", "streams"} <= set(result.seconds)


def test_everyday_negatives_is_the_one_rule_for_fa_per_hour() -> None:
    """Validation streams, the exporter's cutoff and the quickstart's test streams all count false
    accepts on negatives other than near misses; without rows, every negative counts."""
    x, y = make_clips(8, seed=3)
    kinds = ["confusable", "speech", "background", "positive"] * 2
    rows = [Row(path=f"{i}.wav", label=LABELS[int(y[i])], split="val", kind=k) for i, k in enumerate(kinds)]
    mask = _fs(x, y, rows).everyday_negatives()
    assert mask.tolist() == [bool(y[i] == 0 and kinds[i] != "confusable") for i in range(8)]
    assert _fs(x, y).everyday_negatives().tolist() == (y == 0).tolist()
