"""ESPHome micro_wake_word's detector (tinyconv.device.esphome_detector) against a slice-by-slice
transcription of the firmware's loop (micro_wake_word.cpp update_model_probabilities_ /
detect_wake_words_, streaming_model.cpp perform_streaming_inference / determine_detected)."""

import numpy as np
import pytest

from tinyconv.device.esphome_detector import MIN_SLICES_BEFORE_DETECTION, count_detections, detect, quantized_cutoff


def _firmware_loop(probs_u8: np.ndarray, cutoff: float, window: int, stride: int = 3,
                   first_invoke: int = 0) -> list[int]:
    """One iteration per 10 ms feature slice, as the C++ does; returns the newest invoke index in the
    window at each detection. Invokes before `first_invoke` output 0."""
    cut = int(cutoff * 255)  # __init__.py: quantized_probability_cutoff = int(probability_cutoff * 255)
    ring = [0] * window
    last_n = 0
    ignore = -MIN_SLICES_BEFORE_DETECTION
    step = 0
    invoke = -1
    out = []
    for _ in range((first_invoke + len(probs_u8)) * stride):
        ignore = min(ignore + 1, 0)  # update_model_probabilities_: once per slice
        step += 1
        if step == stride:  # perform_streaming_inference: invoke once `stride` slices are in
            step = 0
            invoke += 1
            k = invoke - first_invoke
            last_n = (last_n + 1) % window
            ring[last_n] = int(probs_u8[k]) if k >= 0 else 0
        if ignore < 0:  # detect_wake_words_
            continue
        if sum(ring) > cut * window:  # determine_detected
            out.append(invoke - first_invoke)
            ignore = -MIN_SLICES_BEFORE_DETECTION  # reset_states_ after a detection
            ring = [0] * window
    return out


def _bursty(seed: int, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 60, n)
    for start in rng.integers(0, n - 50, 60):
        p[start : start + int(rng.integers(2, 40))] = rng.integers(120, 256)
    return p.astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_firmware_loop_slice_by_slice(seed: int) -> None:
    p = _bursty(seed)
    total = 0
    for cutoff in (0.5, 0.7, 0.9, 0.97):
        for window in (1, 3, 5):
            for first in (0, 7, 40):
                want = _firmware_loop(p, cutoff, window, first_invoke=first)
                got = detect(p, cutoff, window, first_invoke=first).tolist()
                assert got == want, (cutoff, window, first)
                total += len(want)
    assert total > 100  # the bursts do fire


def test_wait_is_74_slices_not_invokes() -> None:
    p = np.full(200, 255, np.uint8)
    det = detect(p, 0.9, 5)
    # Invoke 23 runs at slice 72; its window is still the newest at slice 74, when the wait ends.
    assert det[0] == 23
    # After a detection at slice 74: zeroed window, 74 more slices (to 148): invoke 48 (slice 147).
    assert det[1] == 48
    assert count_detections(p, 0.9, 5, stride=3) == len(det)


def test_cutoff_is_truncated_to_uint8_and_compared_strictly() -> None:
    assert quantized_cutoff(0.97) == 247 and quantized_cutoff(0.9) == 229 and quantized_cutoff(0.5) == 127
    assert detect(np.full(100, 230, np.uint8), 0.9, 5).tolist() == [23, 48, 73, 97]  # 230 * 5 > 229 * 5
    assert len(detect(np.full(100, 229, np.uint8), 0.9, 5)) == 0  # not strictly above


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8 outputs"):
        detect(np.zeros(10, np.float32), 0.5, 5)
    with pytest.raises(ValueError, match="cutoff must be in"):
        detect(np.zeros(10, np.uint8), 1.5, 5)
    with pytest.raises(ValueError, match="window and stride must be >= 1"):
        detect(np.zeros(10, np.uint8), 0.5, 0)
