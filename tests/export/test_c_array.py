"""C arrays: compile for the host and for Cortex-M4, read back byte for byte, flash size."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyconv.config import FrontendConfig

READBACK = r"""
#include <stdio.h>
#include "model_data.h"
int main(int argc, char** argv) {
  FILE* f = fopen(argv[1], "rb");
  if (!f) return 3;
  unsigned int n = 0; int c;
  while ((c = fgetc(f)) != EOF) {
    if (n >= g_tinyconv_model_data_len || g_tinyconv_model_data[n] != (unsigned char)c) {
      printf("differs at %u\n", n);
      return 1;
    }
    n++;
  }
  fclose(f);
  if (n != g_tinyconv_model_data_len) { printf("length %u vs %u\n", n, g_tinyconv_model_data_len); return 1; }
  if (((unsigned long)g_tinyconv_model_data) % 16 != 0) { printf("not 16-byte aligned\n"); return 2; }
  const int shape[] = TINYCONV_INPUT_SHAPE;
  printf("ok %u %d %d %d %s %d %d\n", n, shape[1], shape[2], TINYCONV_NUM_LABELS,
         g_tinyconv_labels[TINYCONV_POSITIVE_LABEL_INDEX], tinyconv_feature_to_int8(0), TINYCONV_TENSOR_ARENA_BYTES);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="host gcc missing")
def test_host_compile_reads_back_tflite(qat_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = qat_export.out_dir
    (tmp_path / "main.c").write_text(READBACK)
    exe = tmp_path / "readback"
    # The .cc as C++ (TFLM projects) and again as C, both linked with a C main.
    for lang in ("c++", "c"):
        subprocess.run(["gcc", "-std=c11" if lang == "c" else "-std=c++17", "-x", lang, "-Wall", "-Werror", "-c",
                        str(out / "model_data.cc"), "-I", str(out), "-o", str(tmp_path / "model_data.o")], check=True)
        subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", str(tmp_path / "main.c"), str(tmp_path / "model_data.o"),
                        "-I", str(out), "-o", str(exe)], check=True)
        run = subprocess.run([str(exe), str(qat_export.files["model_int8.tflite"])], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout
        m = qat_export.manifest
        n, frames, channels, labels, positive, zero_q, arena = run.stdout.split()[1:]
        assert int(n) == m["files"]["model_int8.tflite"]["bytes"]
        assert (int(frames), int(channels), int(labels)) == (98, 40, 3) and positive == "hey_tiny"
        assert int(zero_q) == m["input"]["zero_point"] and int(arena) == m["tensor_arena_bytes"]


ALL_FRONTEND_VALUES = r"""
#include <stdio.h>
#include "model_data.h"
int main(void) {
  for (unsigned v = 0; v < 1024; v++) printf("%d\n", tinyconv_feature_to_int8((uint16_t)v));
  return 0;
}
"""


def _c_feature_to_int8(header_dir: Path, tmp_path: Path) -> np.ndarray:
    """tinyconv_feature_to_int8(v) of the generated header, compiled with gcc, for v = 0..1023."""
    (tmp_path / "quant.c").write_text(ALL_FRONTEND_VALUES)
    exe = tmp_path / "quant"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", str(tmp_path / "quant.c"), "-I", str(header_dir),
                    "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    return np.array([int(v) for v in out])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc missing")
def test_c_feature_quantization_matches_python_for_every_frontend_value(qat_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The firmware helper and the Python quantization the simulator and the export's self-check use
    agree on every frontend output 0..1023 (features up to 40), not only at 0."""
    from tinyconv.features import features_to_int8

    m = qat_export.manifest
    values = np.arange(1024)
    features = values * m["frontend"]["feature_scale"]
    c = _c_feature_to_int8(qat_export.out_dir, tmp_path)
    python = features_to_int8(features, m["input"]["scale"], m["input"]["zero_point"])
    differ = np.nonzero(c != python.astype(int))[0]
    assert differ.size == 0, [(int(v), int(c[v]), int(python[v])) for v in differ[:10]]
    assert c.min() == -128 and c.max() == 127  # the sweep reaches both ends of the int8 range


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc missing")
def test_c_feature_quantization_rounds_ties_like_python(qat_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An input scale of exactly 2 x feature_scale puts every odd frontend value on a .5 tie: both
    round them away from zero (TFLite's QUANTIZE rounding)."""
    import dataclasses

    from tinyconv.export.c_array import CArrayInputs, render_header
    from tinyconv.export.tflite import inspect_tflite
    from tinyconv.features import features_to_int8

    fe = FrontendConfig()
    info = inspect_tflite(qat_export.files["model_int8.tflite"].read_bytes())
    info = dataclasses.replace(info, input=dataclasses.replace(info.input, scale=2 * fe.feature_scale,
                                                               zero_point=-128))
    header_dir = tmp_path / "h"
    header_dir.mkdir()
    (header_dir / "model_data.h").write_text(render_header(CArrayInputs(
        tflite=b"", info=info, labels=["_negative_", "hey_tiny"], positive_label="hey_tiny", frontend=fe,
        tensor_arena_bytes=0, source_description="ties")))
    c = _c_feature_to_int8(header_dir, tmp_path)
    python = features_to_int8(np.arange(1024) * fe.feature_scale, 2 * fe.feature_scale, -128).astype(int)
    assert python[1] == -127 and python[3] == -126  # 0.5 -> 1, 1.5 -> 2: away from zero, not to even
    assert np.array_equal(c, python), f"{int((c != python).sum())} values differ (max {int(abs(c - python).max())} LSB)"


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="gcc-arm-none-eabi not installed")
def test_cortex_m4_compile_and_flash_size(qat_export, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = qat_export.out_dir
    obj = tmp_path / "model_data.o"
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                    "-Os", "-Wall", "-Werror", "-c", str(out / "model_data.cc"), "-I", str(out), "-o", str(obj)],
                   check=True)
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True).stdout
    text, data = (int(v) for v in re.split(r"\s+", size.splitlines()[1].strip())[:2])
    flash = text + data
    tflite_bytes = qat_export.manifest["files"]["model_int8.tflite"]["bytes"]
    print(f"Cortex-M4 flash for model_data.o: {flash} bytes (tflite {tflite_bytes} bytes)")
    assert tflite_bytes <= flash <= tflite_bytes + 512  # the array, the labels and a little padding


def test_header_constants_come_from_the_export(qat_export) -> None:  # type: ignore[no-untyped-def]
    header = qat_export.files["model_data.h"].read_text()
    m = qat_export.manifest
    assert f"#define TINYCONV_INPUT_ZERO_POINT {m['input']['zero_point']}" in header
    assert f"#define TINYCONV_OUTPUT_ZERO_POINT {m['output']['zero_point']}" in header
    assert "#define TINYCONV_SAMPLE_RATE_HZ 16000" in header and "#define TINYCONV_NUM_FRAMES 98" in header
    assert f"#define TINYCONV_TENSOR_ARENA_BYTES {m['tensor_arena_bytes']}" in header
    assert f"{m['input']['scale']!r}f" in header
