"""model_data.h of a streaming export: compiled for the host and Cortex-M4; its feature helper is
ESPHome's formula (tinyconv.device.esphome_features) and its macros are the manifest's values."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyconv.device.esphome_detector import MIN_SLICES_BEFORE_DETECTION
from tinyconv.device.esphome_features import esphome_feature_to_int8, esphome_features_int8
from tinyconv.export.errors import ExportError

# Every uint16 up to 1023 (features up to 40) and large ones up to the top of the range.
LARGE_VALUES = (1024, 1700, 2047, 4096, 10000, 32767, 32768, 40000, 65000, 65534, 65535)

PROGRAM = r"""
#include <stdio.h>
#include "model_data.h"
static const unsigned large[] = {%(large)s};
int main(int argc, char** argv) {
  (void)argc;
  FILE* f = fopen(argv[1], "rb");
  if (!f) return 3;
  unsigned int n = 0; int c;
  while ((c = fgetc(f)) != EOF) {
    if (n >= g_tinyconv_model_data_len || g_tinyconv_model_data[n] != (unsigned char)c) {
      printf("differs at %%u\n", n);
      return 1;
    }
    n++;
  }
  fclose(f);
  if (n != g_tinyconv_model_data_len || ((unsigned long)g_tinyconv_model_data) %% 16 != 0) return 2;
  const int in_shape[] = TINYCONV_INPUT_SHAPE;
  const int out_shape[] = TINYCONV_OUTPUT_SHAPE;
  printf("bytes %%u\n", n);
  printf("stride %%d\nstep_ms %%d\ninvoke_ms %%d\n", TINYCONV_STRIDE_FRAMES, TINYCONV_STEP_MS,
         TINYCONV_INVOKE_PERIOD_MS);
  printf("input %%d %%d %%d %%d %%d\n", in_shape[0], in_shape[1], in_shape[2], TINYCONV_INPUT_ELEMENTS,
         TINYCONV_INPUT_RANK);
  printf("output %%d %%d\n", out_shape[0], out_shape[1]);
  printf("input_signed %%d %%d\n", (int)((tinyconv_input_t)-1 < 0), (int)sizeof(tinyconv_input_t));
  printf("output_signed %%d %%d\n", (int)((tinyconv_output_t)-1 < 0), (int)sizeof(tinyconv_output_t));
  printf("input_quant %%.9g %%d\n", (double)TINYCONV_INPUT_SCALE, TINYCONV_INPUT_ZERO_POINT);
  printf("output_quant %%.9g %%d\n", (double)TINYCONV_OUTPUT_SCALE, TINYCONV_OUTPUT_ZERO_POINT);
  printf("probability %%.9g %%.9g\n", (double)tinyconv_probability(255), (double)tinyconv_probability(51));
  printf("arena %%d %%d\n", TINYCONV_TENSOR_ARENA_BYTES, TINYCONV_HOST_TENSOR_ARENA_BYTES);
  printf("state %%d %%d\n", TINYCONV_NUM_STATE_VARIABLES, TINYCONV_STATE_BYTES);
  printf("cutoff %%.9g %%d\n", (double)TINYCONV_PROBABILITY_CUTOFF, TINYCONV_PROBABILITY_CUTOFF_U8);
  printf("window %%d\nwait %%d\n", TINYCONV_SLIDING_WINDOW_SIZE, TINYCONV_MIN_SLICES_BEFORE_DETECTION);
  printf("positive %%s\n", g_tinyconv_labels[TINYCONV_POSITIVE_LABEL_INDEX]);
  printf("features");
  for (unsigned v = 0; v < 1024; v++) printf(" %%d", tinyconv_feature_to_int8((uint16_t)v));
  for (unsigned i = 0; i < sizeof(large) / sizeof(large[0]); i++)
    printf(" %%d", tinyconv_feature_to_int8((uint16_t)large[i]));
  printf("\n");
  return 0;
}
"""


def _program() -> str:
    return PROGRAM % {"large": ", ".join(str(v) for v in LARGE_VALUES)}


def _values() -> np.ndarray:
    return np.concatenate([np.arange(1024), np.array(LARGE_VALUES)])


def _manifests(export) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    """manifest.json and the ESPHome <wake_word>.json, as written."""
    manifest = json.loads((export.out_dir / "manifest.json").read_text())
    esphome = json.loads((export.out_dir / manifest["esphome"]["manifest"]).read_text())
    return manifest, esphome


def test_python_esphome_formula_is_the_integer_formula() -> None:
    """The one Python definition is ESPHome's integer formula for every uint16, and the float-feature
    entry point recovers the exact uint16 from features on the 1/25.6 grid."""
    v = np.arange(65536)
    expected = [max(-128, min(127, (int(x) * 256 + 333) // 666 - 128)) for x in v]
    assert esphome_feature_to_int8(v).astype(int).tolist() == expected
    assert esphome_features_int8(v * 0.0390625).astype(int).tolist() == expected
    assert esphome_feature_to_int8(np.array([0, 1, 333, 334, 500, 664, 666])).tolist() == [
        -128, -128, 0, 0, 64, 127, 127]


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="host gcc missing")
def test_streaming_header_compiles_on_the_host_and_matches_the_manifest(esphome_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = esphome_export.out_dir
    manifest, esphome = _manifests(esphome_export)
    micro, info = esphome["micro"], esphome_export.model_info
    tflite = out / esphome["model"]
    (tmp_path / "main.c").write_text(_program())
    exe = tmp_path / "prog"
    for lang, std in (("c++", "-std=c++17"), ("c", "-std=c11")):  # the .cc as C++ (TFLM projects) and as C
        subprocess.run(["gcc", std, "-x", lang, "-Wall", "-Wextra", "-Werror", "-c", str(out / "model_data.cc"),
                        "-I", str(out), "-o", str(tmp_path / "model_data.o")], check=True)
        subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", str(tmp_path / "main.c"),
                        str(tmp_path / "model_data.o"), "-I", str(out), "-o", str(exe)], check=True)
        run = subprocess.run([str(exe), str(tflite)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout
        got = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()}
        assert int(got["bytes"][0]) == tflite.stat().st_size == manifest["files"][esphome["model"]]["bytes"]
        # Stride and step: from the .tflite's input and the manifest, 3 x 10 ms = 30 ms per invoke.
        assert [int(v) for v in got["stride"] + got["step_ms"] + got["invoke_ms"]] == [
            manifest["input"]["shape"][1], micro["feature_step_size"],
            manifest["input"]["shape"][1] * micro["feature_step_size"]] == [3, 10, 30]
        assert [int(v) for v in got["input"]] == [*manifest["input"]["shape"], 120, 3] == [1, 3, 40, 120, 3]
        assert [int(v) for v in got["output"]] == manifest["output"]["shape"] == [1, 1]
        assert manifest["input"]["dtype"] == "int8" and got["input_signed"] == ["1", "1"]
        assert manifest["output"]["dtype"] == "uint8" and got["output_signed"] == ["0", "1"]
        assert float(got["input_quant"][0]) == pytest.approx(manifest["input"]["scale"], rel=1e-7)
        assert int(got["input_quant"][1]) == manifest["input"]["zero_point"] == -128
        assert float(got["output_quant"][0]) == pytest.approx(manifest["output"]["scale"], rel=1e-7)
        assert int(got["output_quant"][1]) == manifest["output"]["zero_point"]
        assert [float(v) for v in got["probability"]] == pytest.approx([1.0, 0.2], abs=1e-7)  # value / 255
        # The arena is the ESPHome manifest's, ESP-NN margin included, not the host measurement.
        assert int(got["arena"][0]) == micro["tensor_arena_size"] == manifest["esphome"]["tensor_arena_size"]
        assert int(got["arena"][1]) == manifest["tensor_arena_bytes"] < micro["tensor_arena_size"]
        assert [int(v) for v in got["state"]] == [info.num_variables, info.state_bytes] == [
            manifest["esphome"]["num_state_variables"], manifest["esphome"]["state_bytes"]]
        assert float(got["cutoff"][0]) == pytest.approx(micro["probability_cutoff"], abs=1e-7)
        assert int(got["cutoff"][1]) == int(micro["probability_cutoff"] * 255)
        assert int(got["window"][0]) == micro["sliding_window_size"]
        assert int(got["wait"][0]) == MIN_SLICES_BEFORE_DETECTION == 74
        assert got["positive"] == [manifest["positive_label"]]
        c = np.array([int(v) for v in got["features"]])
        python = esphome_feature_to_int8(_values()).astype(int)
        differ = np.nonzero(c != python)[0]
        assert differ.size == 0, [(int(_values()[i]), int(c[i]), int(python[i])) for i in differ[:10]]
        assert c.min() == -128 and c.max() == 127


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="gcc-arm-none-eabi not installed")
def test_streaming_header_compiles_for_cortex_m4(esphome_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = esphome_export.out_dir
    (tmp_path / "use.c").write_text(
        '#include "model_data.h"\n'
        "int8_t q(uint16_t v) { return tinyconv_feature_to_int8(v); }\n"
        "float p(tinyconv_output_t v) { return tinyconv_probability(v); }\n"
        "int arena(void) { return TINYCONV_TENSOR_ARENA_BYTES + TINYCONV_STRIDE_FRAMES; }\n")
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os", "-Wall", "-Wextra",
             "-Werror"]
    for src, lang in ((out / "model_data.cc", ["-x", "c++", "-std=c++17"]),
                      (out / "model_data.cc", ["-x", "c", "-std=c11"]),
                      (tmp_path / "use.c", ["-std=c11"])):
        subprocess.run(["arm-none-eabi-gcc", *flags, *lang, "-c", str(src), "-I", str(out),
                        "-o", str(tmp_path / "o.o")], check=True)


def test_streaming_header_text_comes_from_the_manifest(esphome_export) -> None:  # type: ignore[no-untyped-def]
    header = esphome_export.files["model_data.h"].read_text()
    manifest, esphome = _manifests(esphome_export)
    micro = esphome["micro"]
    for line in (f"#define TINYCONV_STRIDE_FRAMES {manifest['input']['shape'][1]}",
                 f"#define TINYCONV_TENSOR_ARENA_BYTES {micro['tensor_arena_size']}",
                 f"#define TINYCONV_SLIDING_WINDOW_SIZE {micro['sliding_window_size']}",
                 f"#define TINYCONV_PROBABILITY_CUTOFF {float(micro['probability_cutoff'])!r}f",
                 "#define TINYCONV_MIN_SLICES_BEFORE_DETECTION 74", "#define TINYCONV_FEATURE_VALUE_DIV 666",
                 "typedef int8_t tinyconv_input_t;", "typedef uint8_t tinyconv_output_t;"):
        assert line in header, line
    assert "TINYCONV_FEATURE_SCALE" not in header  # the window models' float formula is not offered


def _render(esphome_export, **changes):  # type: ignore[no-untyped-def]
    from tinyconv.config import FrontendConfig
    from tinyconv.export.c_array import CArrayInputs, StreamingFacts, render_streaming_header
    from tinyconv.export.tflite import TensorQuant, TFLiteInfo

    info = esphome_export.model_info
    tinfo = TFLiteInfo(ops=(), tensor_types=(), weight_quant=(), bias_types=(),
                       input=TensorQuant(changes.pop("input_shape", info.input_shape), info.input_dtype,
                                         *info.input_quant),
                       output=TensorQuant(info.output_shape, info.output_dtype, *info.output_quant))
    fe = changes.pop("frontend", FrontendConfig())
    facts = StreamingFacts.from_manifest(esphome_export.esphome_manifest["micro"], stride_frames=3,
                                         host_arena_bytes=1000, esp_nn_arena_factor=1.4, num_state_variables=6,
                                         state_bytes=100)
    facts = dataclasses.replace(facts, **changes)
    return render_streaming_header(CArrayInputs(tflite=b"", info=tinfo, labels=["_negative_", "hey_tiny"],
                                                positive_label="hey_tiny", frontend=fe, tensor_arena_bytes=0,
                                                source_description="t"), facts)


def test_streaming_header_refuses_inconsistent_facts(esphome_export) -> None:  # type: ignore[no-untyped-def]
    assert "#define TINYCONV_STRIDE_FRAMES 3" in _render(esphome_export)
    with pytest.raises(ExportError, match=r"input shape \[1, 3, 40\] is not \[1, 4, 40\]"):
        _render(esphome_export, stride_frames=4)
    with pytest.raises(ExportError, match=r"input shape \[1, 98, 40\] is not \[1, 3, 40\]"):
        _render(esphome_export, input_shape=(1, 98, 40))
    with pytest.raises(ExportError, match="feature_step_size 20 ms differs from the frontend step 10 ms"):
        _render(esphome_export, feature_step_ms=20)
