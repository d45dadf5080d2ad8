from pathlib import Path

import numpy as np
import pytest

from tinyconv.device.runners import make_runner
from tinyconv.device.tflite_file import load_tflite
from tinyconv.firmware_sim.streaming import (
    DetectorConfig,
    build_streams,
    detection_times,
    esphome_features_int8,
    evaluate_streams,
    stream_probabilities,
)

from .conftest import ref_model, say


def test_detection_waits_74_slices_after_start_and_each_detection() -> None:
    # A model that is always sure: ESPHome fires when its 740 ms wait ends (slice 74, newest invoke 23 at
    # 3 slices per invoke), then every 74 slices; the old 2 s deaf time would fire at 0.69 s, 2.7 s, ...
    times = 0.03 * np.arange(1, 201) + 0.02
    det = detection_times(times, np.ones(200), DetectorConfig(), 0.9, stride=3, first_invoke=0)
    assert det[:3].tolist() == pytest.approx([times[23], times[48], times[73]])
    # With no wait, every invoke whose window refilled after the reset fires: one in `window`.
    assert len(detection_times(times, np.ones(200), DetectorConfig(wait_slices=0, window=5), 0.9, 3, 0)) == 40


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


def _esphome_loop(model: Path, samples: np.ndarray, arena: int, cutoff: float = 0.9,
                  window: int = 5) -> tuple[np.ndarray, list[int]]:
    """An independent re-implementation of ESPHome's micro_wake_word loop: 10 ms of audio per frontend call,
    ESPHome's integer int8 conversion, `stride` frames per invoke, one interpreter never reset, uint8 outputs;
    and its detector, slice by slice: ignore_windows_ from -74 incremented per feature slice, uint8 ring
    buffer, sum > int(cutoff * 255) * window, window zeroed and -74 again after a detection.
    Returns (uint8 / 255 per invoke, invoke index of each detection)."""
    from pymicro_features import MicroFrontend
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model.read_bytes(), arena_size=arena)
    stride = int(interp.get_input_details(0)["shape"][1])
    frontend, data, pos, block, out = MicroFrontend(), samples.astype(np.int16).tobytes(), 0, [], []
    ring, ignore, detections = [0] * window, -74, []
    while pos + 320 <= len(data):
        res = frontend.process_samples(data[pos : pos + 320])
        pos += res.samples_read * 2
        if not res.features:
            continue
        ignore = min(ignore + 1, 0)
        v = np.round(np.asarray(res.features) * 25.6).astype(np.int64)
        block.append(np.clip((v * 256 + 333) // 666 - 128, -128, 127))
        if len(block) == stride:
            interp.set_input(np.asarray(block, dtype=np.int8)[None], 0)
            interp.invoke()
            out.append(int(np.asarray(interp.get_output(0)).reshape(-1)[0]))
            ring = ring[1:] + [out[-1]]
            block = []
        if ignore >= 0 and sum(ring) > int(cutoff * 255) * window:
            detections.append(len(out) - 1)
            ring, ignore = [0] * window, -74
    return np.asarray(out, dtype=np.float64) / 255.0, detections


def test_microwakeword_stream_matches_esphome_loop_and_fires() -> None:
    """Guards the stream path for streaming models: feature int8 conversion, 3 new frames per invoke, state kept
    across invokes (reset only per stream), uint8 output, and the detector (74-slice wait, uint8 window sum).
    Any of those wrong breaks the per-invoke or per-detection match with the independent loop, and the released
    model stops firing on a clearly spoken wake word."""
    path = ref_model("mww_v2_okay_nabu.tflite")
    rng = np.random.default_rng(0)
    word = say("okay nabu", "en-us").astype(np.float64)
    lead, tail = rng.normal(0, 30, 32000), rng.normal(0, 30, 32000)
    audio = np.clip(np.concatenate([lead, word + rng.normal(0, 30, len(word)), tail]), -32768, 32767).astype(np.int16)
    runner = make_runner("tflm", load_tflite(path), arena_size=40_000)
    times, probs = stream_probabilities(runner, audio)
    ref, ref_det = _esphome_loop(path, audio, 40_000, cutoff=0.97)
    assert len(probs) == len(ref) == (len(audio) - 320) // 160 // 3
    assert np.array_equal(np.round(probs * 255), np.round(ref * 255))
    det = detection_times(times, probs, DetectorConfig(), 0.97, stride=3, first_invoke=0)
    assert len(ref_det) >= 1, "okay_nabu should fire on espeak 'okay nabu' at 0.97"
    assert det.tolist() == times[ref_det].tolist()
    word_end = (len(lead) + len(word)) / 16000
    assert 2.0 <= det[0] <= word_end + 1.0
    # Noise alone does not fire (at a cutoff low enough that it would, were the loop scoring noise).
    assert len(detection_times(times[times < 1.9], probs[times < 1.9], DetectorConfig(), 0.1, 3, 0)) == 0
    _, again = stream_probabilities(runner, audio)  # a second stream on the same runner starts from fresh state
    assert np.array_equal(again, probs)
