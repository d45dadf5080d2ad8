"""What TFLite Micro prints to C++ stderr: the op it has no kernel for, and its allocation record.

The Python interpreter's exceptions only say "TFLM failed to allocate tensors"; the reason is in
the MicroPrintf lines, which `isolate.fork_call` captures at file-descriptor level. The one
missing-op detection of the project is here (the exporter and the simulator both use it).
"""

from __future__ import annotations

import re
from typing import Any

# "Didn't find op for builtin opcode 'SKIP_GRAM'" names builtins; a custom op only shows up as
# "Failed to get registration from op code CUSTOM" (TFLM does not print its custom code).
_MISSING_OP = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_NO_REGISTRATION = re.compile(r"Failed to get registration from op code ([A-Za-z0-9_]+)")


def missing_ops(log: str) -> list[str]:
    """Ops TFLite Micro has no kernel for, as its log names them (sorted, each once)."""
    return sorted(set(_MISSING_OP.findall(log)) | set(_NO_REGISTRATION.findall(log)))


def missing_ops_message(ops: list[str]) -> str:
    return (f"TFLite Micro cannot run op {', '.join(ops)}: no kernel registered for it "
            "(replace it in the model or register a custom op)")


def explain_tflm_error(message: str) -> str:
    """Turn TFLM's log into a sentence a firmware engineer can act on."""
    ops = missing_ops(message)
    if ops:
        return missing_ops_message(ops)
    if "Failed to get registration" in message or "Skipping op for opcode_index" in message:
        return f"TFLite Micro cannot resolve an op in this model ({message})"
    return message


def parse_allocations(log: str) -> dict[str, Any]:
    """Parse TFLM's RecordingMicroAllocator lines (print_allocations stderr)."""
    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0

    cats: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)", log):
        cats[m.group(1)] = {"used": int(m.group(2)), "requested": int(m.group(3)), "count": int(m.group(4))}
    return {"total": grab(r"allocation total (\d+)"), "head": grab(r"allocation head (\d+)"),
            "tail": grab(r"allocation tail (\d+)"), "categories": cats}
