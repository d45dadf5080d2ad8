"""Throughput benchmark: N one-second clips (audio -> device features -> TFLM) on all cores."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.tflite_file import load_tflite
from tinyconv.firmware_sim.accuracy import RunnerSpec, default_workers, run_clips
from tinyconv.firmware_sim.synthetic import write_tiny_model


def _write_clips(folder: Path, count: int, seed: int) -> list[str]:
    """`count` paths over a few distinct seeded noise+tone clips (the content does not change the cost)."""
    from tinyconv.data.audio import write_wav

    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000.0
    distinct = []
    for k in range(16):
        audio = 3000 * np.sin(2 * np.pi * (200 + 50 * k) * t) + rng.normal(0, 800, 16000)
        p = folder / f"clip_{k:02d}.wav"
        write_wav(p, np.clip(audio, -32768, 32767).astype(np.int16))
        distinct.append(str(p))
    return [distinct[i % len(distinct)] for i in range(count)]


def bench_tflm_clips(*, clips: int = 10_000, model_path: str | Path | None = None, workers: int | None = None,
                     seed: int = 0, progress: bool = False) -> dict[str, Any]:
    for key, value in (("clips", clips), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"bench: {key} must be a positive integer, got {value!r}")
    workers = workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="tinyconv-bench-") as tmp:
        path = Path(model_path) if model_path else write_tiny_model(Path(tmp) / "tiny.tflite", seed=seed)
        model = load_tflite(path)
        arena = measure_host_arena(model).arena_bytes
        paths = _write_clips(Path(tmp), clips, seed)
        t0 = time.perf_counter()
        res = run_clips([RunnerSpec("tflm", tflite_path=str(path), arena_size=arena)], paths, workers=workers,
                        chunk=250, progress=progress)
        seconds = time.perf_counter() - t0
    done = len(res["kept"])
    return {"benchmark": "tflm_clips", "clips": clips, "processed": done, "workers": workers,
            "cpu_count": os.cpu_count(), "seconds": seconds, "clips_per_second": done / seconds,
            "model": str(model_path) if model_path else "synthetic tiny model (98x40 int8, CONV_2D + FC)",
            "model_bytes": model.model_bytes, "macs": model.macs, "limit_seconds": 120.0,
            "pass": seconds <= 120.0 and done == clips}
