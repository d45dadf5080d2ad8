"""TFLite Micro checks: can it run the model (which op not), the tensor-arena size, inference.

There is no Python getter for arena use, so the arena is bisected: the smallest `arena_size`
(a multiple of 16 bytes) for which `Interpreter.from_bytes` allocates. Each probe runs in a
subprocess (see `_tflm_probe`), which also lets us read the C++ error that names a missing op.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyconv.export.errors import ExportError

ARENA_ALIGNMENT = 16
_MAX_ARENA = 64 << 20
_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")


_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


def _probe(model_path: Path, arena_bytes: int, report: bool = False, crash_fails: bool = False) -> tuple[bool, str]:
    """(allocates?, C++ stderr). `crash_fails`: a crash counts as "does not fit" (bisection: TFLM
    segfaults or aborts on some too-small arenas, e.g. "Failed to allocate tail memory" on
    microWakeWord's alexa); otherwise a crash is an ExportError. Either way the caller survives."""
    proc = subprocess.run(
        [sys.executable, "-m", "tinyconv.export._tflm_probe", str(model_path), str(arena_bytes)]
        + (["--report"] if report else []),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode < 0 and crash_fails:
        return False, proc.stderr
    if proc.returncode not in (0, 3):
        raise ExportError(
            f"TFLite Micro crashed loading {model_path} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc.returncode == 0, proc.stderr


def _with_model_file(data: bytes) -> tuple[Path, tempfile.TemporaryDirectory[str]]:
    tmp = tempfile.TemporaryDirectory(prefix="tinyconv-tflm-")
    path = Path(tmp.name) / "model.tflite"
    path.write_bytes(data)
    return path, tmp


def check_tflm_can_run(data: bytes) -> int | None:
    """Raise ExportError naming every op TFLite Micro has no kernel for.

    Returns the arena TFLM reports using (a hint for `measure_arena_bytes`), if it says.
    """
    path, tmp = _with_model_file(data)
    with tmp:
        ok, stderr = _probe(path, _MAX_ARENA, report=True)
    if ok:
        match = _ARENA_TOTAL.search(stderr)
        return int(match.group(1)) if match else None
    missing = sorted(set(_MISSING_OP.findall(stderr)))
    if missing:
        raise ExportError(f"TFLite Micro cannot run op {', '.join(missing)}: no kernel registered for it")
    raise ExportError(f"TFLite Micro cannot load the model even with a {_MAX_ARENA}-byte arena: {stderr.strip()[-500:]}")


def measure_arena_bytes(data: bytes) -> int:
    """Smallest tensor arena (bytes, multiple of 16) with which TFLite Micro allocates the model.

    TFLM's allocation report gives a candidate; it is accepted only if that size allocates and
    16 bytes less does not. Otherwise (report format changed) the size is bisected.
    """
    hint = check_tflm_can_run(data)
    path, tmp = _with_model_file(data)
    with tmp:
        if hint is not None and hint % ARENA_ALIGNMENT == 0:
            if _probe(path, hint)[0] and not _probe(path, hint - ARENA_ALIGNMENT, crash_fails=True)[0]:
                return hint
        hi = 4096
        while not _probe(path, hi, crash_fails=True)[0]:
            hi *= 2
            if hi > _MAX_ARENA:
                raise ExportError(f"TFLite Micro needs more than {_MAX_ARENA} arena bytes")
        lo = hi // 2 if hi > 4096 else 0  # lo fails (or is 0), hi succeeds
        while hi - lo > ARENA_ALIGNMENT:
            mid = (lo + hi) // 2 // ARENA_ALIGNMENT * ARENA_ALIGNMENT
            if mid <= lo:
                break
            if _probe(path, mid, crash_fails=True)[0]:
                hi = mid
            else:
                lo = mid
    return hi


def run_tflm(data: bytes, x_int8: np.ndarray, arena_bytes: int) -> np.ndarray:
    """Run int8 inputs [N, ...] through TFLite Micro one at a time; int8 outputs [N, ...].

    In-process: call only with an arena known to allocate (a failed allocation here would
    leave the interpreter library in a state that crashes the next one).
    """
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(data), arena_size=int(arena_bytes))
    outputs = []
    for row in x_int8:
        interp.set_input(np.ascontiguousarray(row[None], dtype=np.int8), 0)
        interp.invoke()
        outputs.append(np.array(interp.get_output(0))[0].copy())
    return np.stack(outputs)


