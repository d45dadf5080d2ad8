"""The tensor arena `tinyconv export` writes is the host arena `tinyconv simulate` reports: both come
from `tinyconv.device.arena.measure_host_arena` (one bisection, one isolation mechanism)."""

from __future__ import annotations

import json

from tinyconv.firmware_sim import simulate


def test_manifest_arena_equals_simulate_host_arena(qat_export) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads(qat_export.files["manifest.json"].read_text())
    report = simulate(qat_export.files["model_int8.tflite"], [], latency_repeats=1)
    assert manifest["tensor_arena_bytes"] == qat_export.tensor_arena_bytes == report["arena_bytes_host"] > 0
    assert f"#define TINYCONV_TENSOR_ARENA_BYTES {report['arena_bytes_host']}\n" in \
        qat_export.files["model_data.h"].read_text()
