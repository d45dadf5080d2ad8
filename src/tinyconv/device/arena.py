"""The TFLite Micro tensor arena of a model, measured on this host: the one measurement that
`tinyconv export` writes into its manifests and `tinyconv simulate` reports as `arena_bytes_host`.

There is no Python getter for the arena a model needs, so it is bisected: the smallest
`arena_size` (1-byte resolution) with which TFLM (reference kernels) allocates and invokes the
model on zero inputs. Every probe runs in a forked child of an isolated worker (isolate.py): TFLM
segfaults or aborts on some too-small arenas, which counts as "does not fit", and a model it has
no kernel for becomes a `RuntimeFailure` naming the op. The RecordingMicroAllocator breakdown
(`print_allocations()`) of the smallest arena comes with it. The 32-bit MCU target model built
on this number is the simulator's (firmware_sim/arena.py).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tinyconv.device.isolate import run_isolated
from tinyconv.device.tflite_file import TfliteModel, parse_tflite
from tinyconv.device.tflm_log import parse_allocations


@dataclass(frozen=True)
class HostArena:
    arena_bytes: int  # smallest arena_size that works (bisection)
    total_recorded: int
    head_bytes: int  # non-persistent: activations + scratch (memory planner)
    tail_bytes: int  # persistent: interpreter structs, op data, variables
    categories: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def init_overhead_bytes(self) -> int:
        """Temporary allocations during AllocateTensors beyond the final layout."""
        return self.arena_bytes - self.total_recorded


def measure_host_arena(model: TfliteModel | bytes) -> HostArena:
    """Bisect the TFLM arena of a parsed model (or of .tflite bytes) in an isolated worker.

    Raises `ModelError` for bytes that are no sound TFLite model, `RuntimeFailure` when TFLM
    cannot run it (the message names the op it has no kernel for).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        with tempfile.TemporaryDirectory(prefix="tinyconv-arena-") as tmp:
            path = Path(tmp) / "model.tflite"
            path.write_bytes(bytes(model))
            return measure_host_arena(parse_tflite(bytes(model), str(path)))
    value = run_isolated({"job": "arena", "path": model.path, "num_inputs": len(model.input_indices)})
    parsed = parse_allocations(value["allocations_log"])
    return HostArena(arena_bytes=int(value["arena_bytes"]), total_recorded=parsed["total"],
                     head_bytes=parsed["head"], tail_bytes=parsed["tail"], categories=parsed["categories"])
