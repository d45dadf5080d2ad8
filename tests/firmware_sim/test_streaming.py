from pathlib import Path

import numpy as np
import pytest

from tinyconv.firmware_sim.model import load_tflite
from tinyconv.firmware_sim.runtimes import make_runner
from tinyconv.firmware_sim.streaming import (DetectorConfig, build_streams, detect, esphome_features_int8,
                                             evaluate_streams, smooth, stream_probabilities)

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


def test_esphome_feature_formula() -> None:
    # ESPHome micro_wake_word: int8 = (v * 256 + 333) // 666 - 128 on the frontend's uint16 v (= feature * 25.6)
    v = np.array([0, 1, 333, 334, 500, 664, 666, 1000])
    expected = np.clip((v * 256 + 333) // 666 - 128, -128, 127)
    assert esphome_features_int8(v / 25.6).tolist() == expected.tolist() == [-128, -128, 0, 0, 64, 127, 127, 127]


def _esphome_loop(model: Path, samples: np.ndarray, arena: int) -> np.ndarray:
    """An independent re-implementation of ESPHome's micro_wake_word loop: 10 ms of audio per frontend call,
    ESPHome's integer int8 conversion, `stride` frames per invoke, one interpreter never reset, uint8 / 255."""
    from pymicro_features import MicroFrontend
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model.read_bytes(), arena_size=arena)
    stride = int(interp.get_input_details(0)["shape"][1])
    frontend, data, pos, block, out = MicroFrontend(), samples.astype(np.int16).tobytes(), 0, [], []
    while pos + 320 <= len(data):
        res = frontend.process_samples(data[pos : pos + 320])
        pos += res.samples_read * 2
        if not res.features:
            continue
        v = np.round(np.asarray(res.features) * 25.6).astype(np.int64)
        block.append(np.clip((v * 256 + 333) // 666 - 128, -128, 127))
        if len(block) == stride:
            interp.set_input(np.asarray(block, dtype=np.int8)[None], 0)
            interp.invoke()
            out.append(int(np.asarray(interp.get_output(0)).reshape(-1)[0]))
            block = []
    return np.asarray(out, dtype=np.float64) / 255.0


def test_microwakeword_stream_matches_esphome_loop_and_fires() -> None:
    """Guards the stream path for streaming models: feature int8 conversion, 3 new frames per invoke, state kept
    across invokes (reset only per stream), uint8 output. Any of those wrong breaks the per-invoke match with the
    independent loop, and the released model stops firing on a clearly spoken wake word."""
    path = ref_model("mww_v2_okay_nabu.tflite")
    rng = np.random.default_rng(0)
    word = say("okay nabu", "en-us").astype(np.float64)
    lead, tail = rng.normal(0, 30, 32000), rng.normal(0, 30, 32000)
    audio = np.clip(np.concatenate([lead, word + rng.normal(0, 30, len(word)), tail]), -32768, 32767).astype(np.int16)
    runner = make_runner("tflm", load_tflite(path), arena_size=40_000)
    times, probs = stream_probabilities(runner, audio)
    ref = _esphome_loop(path, audio, 40_000)
    assert len(probs) == len(ref) == (len(audio) - 320) // 160 // 3
    assert np.array_equal(np.round(probs * 255), np.round(ref * 255))
    s = smooth(probs, 5)
    word_end = (len(lead) + len(word)) / 16000
    assert s.max() > 0.97, f"okay_nabu should fire on espeak 'okay nabu' (smoothed max {s.max():.3f})"
    assert 2.0 <= times[int(np.argmax(s))] <= word_end + 1.0
    assert s[times < 1.9].max() < 0.1  # noise alone does not
    _, again = stream_probabilities(runner, audio)  # a second stream on the same runner starts from fresh state
    assert np.array_equal(again, probs)
