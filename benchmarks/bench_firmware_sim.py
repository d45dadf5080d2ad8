"""Firmware-simulator benchmarks -> benchmarks/results/firmware_sim.json.

1. Throughput: 10,000 one-second clips (audio -> TFLM frontend features -> TFLite Micro) on all
   cores; the issue's bar is <= 120 s on 2 cores.
2. Arena: the ESP32-S3 target model vs the microWakeWord manifests' tensor_arena_size.
3. Latency: the cost model vs MLPerf Tiny DS-CNN on STM32L4R5.
Reference models are read from ../shared/reference_models and skipped when absent.

Run: .venv/bin/python benchmarks/bench_firmware_sim.py [--clips N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.tflite_file import load_tflite
from tinyconv.firmware_sim.arena import target_arena
from tinyconv.firmware_sim.bench import bench_tflm_clips
from tinyconv.firmware_sim.costmodel import calibrate_dscnn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_results  # noqa: E402  (paths relative to the repository)

REF = ROOT.parent / "shared" / "reference_models"
MANIFEST_ARENA = {"okay_nabu": 26080, "alexa": 22348, "hey_jarvis": 22860, "vad": 16772}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "firmware_sim.json")
    args = ap.parse_args()
    result: dict = {"host": platform.platform(), "throughput": bench_tflm_clips(clips=args.clips, progress=True)}
    arena = {}
    for name, published in MANIFEST_ARENA.items():
        path = REF / f"mww_v2_{name}.tflite"
        if not path.is_file():
            continue
        model = load_tflite(path)
        host = measure_host_arena(model)
        tgt = target_arena(model, host, "esp-nn")
        arena[name] = {"manifest": published, "host": host.arena_bytes, "target_esp32s3": tgt.arena_bytes,
                       "host_error_pct": 100 * (host.arena_bytes - published) / published,
                       "target_error_pct": 100 * (tgt.arena_bytes - published) / published}
    result["arena_vs_microwakeword_manifests"] = arena
    dscnn = REF / "mlperf_tiny_kws_dscnn_int8.tflite"
    if dscnn.is_file():
        result["latency_calibration_stm32l4r5"] = [
            {"kernels": c.model, "published_ms": c.published_ms, "estimated_ms": round(c.estimated_ms, 2),
             "error_pct": round(c.error_pct, 1)} for c in calibrate_dscnn(load_tflite(dscnn))]
    print(json.dumps(write_results(args.out, result, indent=2), indent=2))


if __name__ == "__main__":
    main()
