"""Running native interpreters where a bad model cannot take the caller down.

TFLite Micro and LiteRT are C++; a malformed flatbuffer can make them abort() (TFLM's
"All temp buffers must be freed" check does, on some arena sizes) or segfault. The caller
therefore never loads an untrusted model in its own process: `run_isolated` starts one
worker process (`python -m tinyconv.device.isolate`), and the worker forks a child per
probe, so a crash costs one fork (milliseconds), not a Python start-up (half a second).
The child's C++ stderr is captured at file-descriptor level and returned with the result
(the tflite-micro Python interpreter also crashes the process on the allocation after a failed
one, and prints why it failed only there). The exporter and the simulator both use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyconv.device.errors import RuntimeFailure
from tinyconv.device.tflm_log import missing_ops, missing_ops_message

PROBE_TIMEOUT_S = 60


def fork_call(fn: Callable[..., Any], *args: Any, timeout_s: int = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run fn(*args) in a forked child; return {"ok", "value"|"error", "stderr"}.

    Only call this from a single-threaded process (the worker), never from a process that
    runs ONNX Runtime thread pools.
    """
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as err_file:
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(read_fd)
                os.dup2(err_file.fileno(), 2)  # C++ stderr (MicroPrintf, print_allocations)
                signal.alarm(timeout_s)  # a hung kernel ends the child, not the run
                try:
                    payload = {"ok": True, "value": fn(*args)}
                except Exception as exc:  # noqa: BLE001 (reported to the parent as a clean error)
                    payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                sys.stderr.flush()
                with os.fdopen(write_fd, "w") as fh:
                    json.dump(payload, fh)
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as fh:
            raw = fh.read()
        _, status = os.waitpid(pid, 0)
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace")
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        why = "timed out" if sig == "SIGALRM" else f"crashed ({sig})"
        return {"ok": False, "error": f"native interpreter {why}", "stderr": stderr[-2000:]}
    try:
        result = json.loads(raw)
    except json.JSONDecodeError:
        return {"ok": False, "error": "native interpreter exited without a result", "stderr": stderr[-2000:]}
    result["stderr"] = stderr
    return result


def _native_message(result: dict[str, Any]) -> str:
    """The error plus the last meaningful C++ log lines (TFLM says why it failed there)."""
    lines = [ln.strip() for ln in result.get("stderr", "").splitlines() if ln.strip()]
    tail = "; ".join(lines[-3:])
    return f"{result['error']}" + (f" [{tail}]" if tail else "")


def _tflm_message(result: dict[str, Any]) -> str:
    """A failed TFLM probe: the ops it has no kernel for, named, when its log says so."""
    ops = missing_ops(result.get("stderr", ""))
    return missing_ops_message(ops) if ops else _native_message(result)


def run_isolated(job: dict[str, Any], timeout_s: int = 600) -> Any:
    """Run one job in a fresh worker process; raise RuntimeFailure with the native message."""
    proc = subprocess.run(
        [sys.executable, "-m", "tinyconv.device.isolate"],
        input=json.dumps(job), capture_output=True, text=True, timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeFailure(f"isolated runtime worker failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise RuntimeFailure(f"isolated runtime worker returned no result: {proc.stderr[-1500:]}") from None
    if not result.get("ok"):
        raise RuntimeFailure(result.get("error", "unknown error"))
    return result["value"]


# ---- jobs (run inside the worker process) ----------------------------------------------------

def _zeros_for(details: dict[str, Any]) -> Any:
    import numpy as np

    return np.zeros([int(d) for d in details["shape"]], dtype=details["dtype"])


def _tflm_invoke(data: bytes, arena_size: int, num_inputs: int, allocations: bool = False) -> bool:
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(data, arena_size=arena_size)
    for i in range(num_inputs):
        interp.set_input(_zeros_for(interp.get_input_details(i)), i)
    interp.invoke()
    if allocations:
        sys.stderr.flush()
        interp.print_allocations()
    return True


def _litert_invoke(data: bytes, reference: bool) -> bool:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interp = Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=1)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _zeros_for(d))
    interp.invoke()
    return True


MAX_ARENA = 16 << 20


def _job_arena(path: str, num_inputs: int) -> dict[str, Any]:
    """Smallest arena_size (1-byte resolution) that allocates and invokes, plus the allocation record.

    A probe that crashes (TFLM segfaults or aborts on some too-small arenas, e.g. "Failed to
    allocate tail memory" on microWakeWord's alexa) counts as "does not fit".
    """
    from tflite_micro import runtime  # noqa: F401  (imported once here, not in every forked probe)

    data = Path(path).read_bytes()
    hi = 1 << 16
    while True:  # grow until it fits
        res = fork_call(_tflm_invoke, data, hi, num_inputs)
        if res["ok"]:
            break
        if hi >= MAX_ARENA:
            if missing_ops(res.get("stderr", "")):
                return {"ok": False, "error": _tflm_message(res)}
            return {"ok": False, "error": f"TFLite Micro: no arena up to {MAX_ARENA:,} bytes works "
                                          f"({_native_message(res)})"}
        hi *= 4
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fork_call(_tflm_invoke, data, mid, num_inputs)["ok"]:
            hi = mid
        else:
            lo = mid
    rec = fork_call(_tflm_invoke, data, hi, num_inputs, True)
    return {"ok": True, "value": {"arena_bytes": hi, "allocations_log": rec.get("stderr", "")}}


def _job_probe(path: str, runtimes: list[str], num_inputs: int, arena_size: int) -> dict[str, Any]:
    data = Path(path).read_bytes()
    out: dict[str, Any] = {}
    for rt in runtimes:
        if rt == "tflm":
            res = fork_call(_tflm_invoke, data, arena_size, num_inputs)
            message = _tflm_message
        else:
            res = fork_call(_litert_invoke, data, rt == "litert_ref")
            message = _native_message
        out[rt] = {"ok": res["ok"], "error": None if res["ok"] else message(res)}
    return {"ok": True, "value": out}


def _job_probe_many(paths: list[str], runtimes: list[str], arena_size: int) -> dict[str, Any]:
    """Parse each file, then probe the native runtimes on the ones that parse (fuzzing)."""
    from tinyconv.device.errors import ModelError
    from tinyconv.device.tflite_file import load_tflite

    results = []
    for p in paths:
        try:
            model = load_tflite(p)
        except ModelError as exc:
            results.append({"path": p, "parsed": False, "error": str(exc)})
            continue
        probe = _job_probe(p, runtimes, len(model.input_indices), arena_size)["value"]
        results.append({"path": p, "parsed": True, "runtimes": probe})
    return {"ok": True, "value": results}


def _main() -> int:
    job = json.loads(sys.stdin.read())
    kind = job.pop("job")
    try:
        if kind == "arena":
            result = _job_arena(**job)
        elif kind == "probe":
            result = _job_probe(**job)
        elif kind == "probe_many":
            result = _job_probe_many(**job)
        else:
            result = {"ok": False, "error": f"unknown job {kind!r}"}
    except Exception:  # noqa: BLE001 (any failure goes back to the parent as the job's error)
        result = {"ok": False, "error": traceback.format_exc(limit=3)}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
