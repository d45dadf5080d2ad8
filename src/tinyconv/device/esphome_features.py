"""ESPHome `micro_wake_word`'s feature quantization: frontend uint16 value -> int8 model input.

The one Python definition, used by the exporter (its self-check and cutoff streams,
export/esphome.py), the simulator (firmware_sim/streaming.py) and the generated C header of a
streaming export (export/c_array.py writes these constants into `tinyconv_feature_to_int8`).

ESPHome (esphome/components/micro_wake_word/streaming_model.cpp) computes, in integer arithmetic,

    q = (v * 256 + 333) // 666 - 128,  clamped to [-128, 127]

with v the frontend's uint16 output (pymicro-features hands out v * 0.0390625 = v / 25.6): the
integer form of v / 25.6 / 26 * 256 - 128, i.e. the input quantization every microWakeWord model
declares (scale 26/255, zero point -128) to within 1 LSB. 666 = round(25.6 * 26); 333 = 666 // 2
rounds to nearest. Torch-free.
"""

from __future__ import annotations

import numpy as np

ESPHOME_VALUE_SCALE = 256
ESPHOME_VALUE_DIV = 666  # round(25.6 * 26.0)
ESPHOME_VALUE_ROUND = ESPHOME_VALUE_DIV // 2  # 333
ESPHOME_ZERO_POINT = -128
# The input quantization the formula implements (and every microWakeWord model declares).
ESPHOME_INPUT_SCALE = 26.0 / 255.0
ESPHOME_INPUT_ZERO_POINT = ESPHOME_ZERO_POINT
ESPHOME_FEATURE_MAX = 26.0  # the top of the int8 range, in features (v / 25.6)


def esphome_feature_to_int8(values: np.ndarray | int) -> np.ndarray:
    """Frontend uint16 values (any integer array, 0..65535) -> int8, exactly as ESPHome computes it."""
    v = np.asarray(values, dtype=np.int64)
    q = (v * ESPHOME_VALUE_SCALE + ESPHOME_VALUE_ROUND) // ESPHOME_VALUE_DIV + ESPHOME_ZERO_POINT
    return np.clip(q, -128, 127).astype(np.int8)


def esphome_features_int8(features: np.ndarray, feature_scale: float = 1.0 / 25.6) -> np.ndarray:
    """Float frontend features (uint16 value x feature_scale) -> int8 model input, as ESPHome computes it."""
    v = np.round(np.asarray(features, dtype=np.float64) / feature_scale).astype(np.int64)  # the exact uint16
    return esphome_feature_to_int8(v)
