"""Subprocess helper: can TFLite Micro allocate MODEL with ARENA bytes?  (exit 0 yes, 3 no)

Run as `python -m tinyconv.export._tflm_probe MODEL ARENA [--report]`; with --report it also
prints TFLM's allocation report (to C++ stderr), whose total is the arena actually used. It is a separate process because
the tflite-micro Python interpreter (0.dev20261023182759) crashes the process on the next
allocation after one that failed, and its error details go to C++ stderr, not the exception.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from tflite_micro import runtime

    data = Path(sys.argv[1]).read_bytes()
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
    except RuntimeError:
        return 3
    if "--report" in sys.argv[3:]:
        sys.stdout.flush()
        interpreter.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main())
