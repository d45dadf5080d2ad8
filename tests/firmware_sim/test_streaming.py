from pathlib import Path

import numpy as np
import pytest

from tinyconv.firmware_sim.model import load_tflite
from tinyconv.firmware_sim.runtimes import make_runner
from tinyconv.firmware_sim.streaming import DetectorConfig, build_streams, detect, evaluate_streams, smooth

from .conftest import ref_model, say


def test_smoothing_and_refractory() -> None:
    probs = np.array([0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1], dtype=np.float32)
    s = smooth(probs, 2)
    assert s[1] == pytest.approx(0.5) and s[2] == 1.0
    times = np.arange(len(probs)) * 0.03
    assert len(detect(times, s, 0.9, refractory_s=10.0)) == 1
    assert len(detect(times, s, 0.9, refractory_s=0.0)) == 8


def test_microwakeword_streaming_model_detects_spoken_wake_word() -> None:
    model = load_tflite(ref_model("mww_v2_hey_jarvis.tflite"))
    runner = make_runner("tflm", model, arena_size=40_000)
    pos = [say("hey jarvis", v) for v in ("en-us", "en", "en-us+f3", "en+m2")]
    neg = [say(t) for t in ("the weather is nice today", "please turn on the lights", "what time is it")]
    streams = build_streams(pos, neg, seed=0, positive_stream_s=30, negative_stream_s=30)
    res = evaluate_streams(runner, streams, DetectorConfig(cutoff=0.5, window=5), target_fa_per_hour=1.0)
    assert res["at_cutoff"]["positives"] == 4
    assert res["at_cutoff"]["detected"] >= 1  # espeak voices are far from the training data; some must fire
    assert res["cutoff_for_target"] is not None
    frr = [d["frr"] for d in res["det_curve"]]
    assert frr == sorted(frr)  # FRR never falls as the cutoff rises


def test_window_model_streams(tiny_tflite: Path) -> None:
    runner = make_runner("tflm", load_tflite(tiny_tflite), arena_size=64_000)
    noise = (np.random.default_rng(0).normal(0, 500, 16000 * 5)).astype(np.int16)
    streams = build_streams([noise[:16000]], [noise], positive_stream_s=10, negative_stream_s=10)
    res = evaluate_streams(runner, streams, DetectorConfig(stride_frames=10))
    assert 0.0 <= res["at_cutoff"]["frr"] <= 1.0 and res["at_cutoff"]["hours"] == pytest.approx(20 / 3600)


def test_bad_detector_config() -> None:
    with pytest.raises(ValueError, match="cutoff must be in"):
        DetectorConfig(cutoff=1.5)
