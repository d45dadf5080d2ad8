"""Mutated .tflite and .onnx files: a clear error or a result, never a crash of the calling process."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tinyconv.device.errors import ModelError
from tinyconv.device.runners import check_onnx

from .conftest import tiny_onnx

NUM_TFLITE, NUM_ONNX, BATCHES = 500, 100, 4


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # truncation
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    if kind == 1:  # random byte flips
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
            buf[pos] = int(rng.integers(256))
    elif kind == 2:  # a 32-bit offset/length overwritten (flatbuffer and protobuf fields)
        pos = int(rng.integers(0, len(buf) - 4))
        buf[pos : pos + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
    else:  # flips in the header/vtable region, where offsets live
        for pos in rng.integers(0, min(512, len(buf)), size=int(rng.integers(1, 6))):
            buf[pos] ^= 1 << int(rng.integers(8))
    return bytes(buf)


@pytest.mark.slow  # 500 mutated files through both runtimes (~35 s); the structured fuzz in tests/robustness is default
def test_mutated_tflite_files_never_crash_the_caller(tiny_tflite: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1234)
    seed = tiny_tflite.read_bytes()
    paths = []
    for i in range(NUM_TFLITE):
        p = tmp_path / f"m{i:04d}.tflite"
        p.write_bytes(_mutate(seed, rng))
        paths.append(str(p))
    batches = [paths[i::BATCHES] for i in range(BATCHES)]

    def run(batch: list[str]) -> list[dict]:
        job = {"job": "probe_many", "paths": batch, "runtimes": ["tflm", "litert_ref"], "arena_size": 65536}
        proc = subprocess.run([sys.executable, "-m", "tinyconv.device.isolate"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["ok"], result
        return result["value"]

    with ThreadPoolExecutor(2) as pool:
        results = [r for rs in pool.map(run, batches) for r in rs]
    assert len(results) == NUM_TFLITE
    parsed = [r for r in results if r["parsed"]]
    rejected = [r for r in results if not r["parsed"]]
    assert all(r["error"] for r in rejected)
    for r in parsed:  # every runtime verdict is ok or a message, never a missing entry
        for verdict in r["runtimes"].values():
            assert verdict["ok"] or verdict["error"]
    assert rejected and parsed  # the mutations exercise both the parser and the native runtimes


def test_mutated_onnx_files_give_clear_errors(tmp_path: Path) -> None:
    seed = tiny_onnx(tmp_path / "seed.onnx", int8_input=True).read_bytes()
    rng = np.random.default_rng(99)
    errors = ok = 0
    for i in range(NUM_ONNX):
        p = tmp_path / f"m{i:03d}.onnx"
        p.write_bytes(_mutate(seed, rng))
        try:
            check_onnx(p)
            ok += 1
        except ModelError as exc:
            assert "malformed or invalid ONNX model" in str(exc)
            errors += 1
    assert errors + ok == NUM_ONNX and errors > 0
