"""Op-level cost model: latency per MCU, and flash for the interpreter + kernels.

cycles(op) = MACs x cycles_per_MAC[kernel family][op class] x core factor
           + bytes moved x cycles_per_byte[kernel family] x core factor   (memory-bound ops)
           + per-op interpreter overhead

The Cortex-M4 constants are calibrated on the MLPerf Tiny KWS DS-CNN on STM32L4R5 @ 120 MHz
(181.9 ms with TFLM reference kernels; optimized stacks 47.8 and 62.9 ms). The relative costs
between op classes and the core factors are priors from the kernels' inner loops (see
docs/FIRMWARE_SIM.md); only the M4 points are measured, the other cores are extrapolations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tinyconv.device.tflite_file import OpInfo, TfliteModel

# The kernel families and cores this model has constants for; budgets.py validates profiles
# against them (budgets imports costmodel, never the reverse).
KERNEL_FAMILIES = ("reference", "cmsis-nn", "esp-nn")

# Cycles per MAC on a Cortex-M4 (the calibrated baseline).
# reference: TFLM's portable C++ loops, ~8 cycles per MAC on conv (offset adds, index math,
#   requantization per output); depthwise pays more index math per MAC.
# cmsis-nn: SMLAD does 2 MACs/cycle on int16-widened data; im2col/widening overhead brings it to
#   ~2 cycles/MAC for pointwise conv, more for depthwise (no reuse across channels).
# esp-nn: cycles/MAC on the Cortex-M4 scale are not meaningful; it is only used with the LX7
#   core factor below.
CYCLES_PER_MAC: dict[str, dict[str, float]] = {
    "reference": {"conv": 7.85, "depthwise": 9.8, "fully_connected": 6.3, "pool": 3.9, "other": 4.0},
    "cmsis-nn": {"conv": 2.0, "depthwise": 3.3, "fully_connected": 1.6, "pool": 2.0, "other": 2.5},
    "esp-nn": {"conv": 2.0, "depthwise": 3.3, "fully_connected": 1.6, "pool": 2.0, "other": 2.5},
}
# Element-wise and data-movement ops (RESHAPE, CONCATENATION, STRIDED_SLICE, ...): cycles per byte.
CYCLES_PER_BYTE = {"reference": 3.0, "cmsis-nn": 1.5, "esp-nn": 1.5}
OP_OVERHEAD_CYCLES = 1500  # TFLM per-op dispatch (MicroGraph::InvokeSubgraph, eval-tensor lookups)

# Core factor: cycles relative to a Cortex-M4 for the same kernel family.
#   cortex-m7: dual issue + caches; CMSIS-NN publishes ~1.5x per-MHz over M4.
#   cortex-m0plus: no DSP/SIMD; CMSIS-NN falls back to plain C, reference code is Thumb-1 heavy.
#   xtensa-lx7: ESP32-S3 PIE 128-bit SIMD; Espressif reports ESP-NN conv ~5-10x over the ANSI C.
CORES: dict[str, dict[str, float]] = {
    "cortex-m4": {"reference": 1.0, "cmsis-nn": 1.0, "esp-nn": 1.0},
    "cortex-m7": {"reference": 0.75, "cmsis-nn": 0.65, "esp-nn": 0.65},
    "cortex-m33": {"reference": 0.95, "cmsis-nn": 0.95, "esp-nn": 0.95},
    "cortex-m0plus": {"reference": 1.6, "cmsis-nn": 3.0, "esp-nn": 3.0},
    "xtensa-lx7": {"reference": 1.0, "cmsis-nn": 1.0, "esp-nn": 0.22},
}

_MAC_CLASS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "fully_connected",
              "AVERAGE_POOL_2D": "pool", "MAX_POOL_2D": "pool", "MEAN": "other", "SUM": "other"}
# Ops that do no work on a device (handles, shape-only views) beyond dispatch.
_FREE_OPS = {"VAR_HANDLE", "CALL_ONCE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def op_cycles(op: OpInfo, kernels: str, core: str) -> float:
    factor = CORES[core][kernels]
    cycles = float(OP_OVERHEAD_CYCLES)
    cls = _MAC_CLASS.get(op.name)
    if cls is not None and op.macs:
        cycles += op.macs * CYCLES_PER_MAC[kernels][cls] * factor
    elif op.name not in _FREE_OPS:
        cycles += (op.bytes_read + op.bytes_written) * CYCLES_PER_BYTE[kernels] * factor
    return cycles


def _invoked_ops(model: TfliteModel) -> list[OpInfo]:
    # Subgraphs other than 0 run once (CALL_ONCE initialisers) or via control flow; per-invoke
    # latency counts the main subgraph.
    return model.main_ops


def estimate_latency_ms(model: TfliteModel, kernels: str, core: str, clock_mhz: float) -> float:
    cycles = sum(op_cycles(op, kernels, core) for op in _invoked_ops(model))
    return cycles / (clock_mhz * 1e3)


class CostTarget(Protocol):
    """What the latency estimate reads of a budget (budgets.McuBudget is one)."""

    @property
    def kernels(self) -> str: ...

    @property
    def core(self) -> str: ...

    @property
    def clock_mhz(self) -> float: ...


def estimate_for_budget(model: TfliteModel, budget: CostTarget) -> dict[str, Any]:
    per_op = [(op.name, op_cycles(op, budget.kernels, budget.core)) for op in _invoked_ops(model)]
    total = sum(c for _, c in per_op)
    by_op: dict[str, float] = {}
    for name, c in per_op:
        by_op[name] = by_op.get(name, 0.0) + c
    return {
        "kernels": budget.kernels, "core": budget.core, "clock_mhz": budget.clock_mhz,
        "cycles": int(total), "latency_ms": total / (budget.clock_mhz * 1e3),
        "reference_latency_ms": estimate_latency_ms(model, "reference", budget.core, budget.clock_mhz),
        "cycles_by_op": {k: int(v) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
    }


# ---- flash -----------------------------------------------------------------------------------
# Code bytes (Thumb-2, -Os) of the TFLM core and of each kernel, by family. Estimates from
# link maps of TFLM example builds (micro_speech / person_detection for Cortex-M, size
# reports of the ESP-NN enabled esp-tflite-micro component). Stated accuracy: +-30 %.
FRAMEWORK_CODE_BYTES = 24_000  # MicroInterpreter, allocator, planner, flatbuffer reader, resolver
KERNEL_CODE_BYTES: dict[str, int] = {
    "CONV_2D": 5_500, "DEPTHWISE_CONV_2D": 6_000, "FULLY_CONNECTED": 3_000, "AVERAGE_POOL_2D": 2_500,
    "MAX_POOL_2D": 2_500, "SOFTMAX": 3_500, "LOGISTIC": 2_500, "RESHAPE": 800, "QUANTIZE": 2_500,
    "DEQUANTIZE": 2_000, "CONCATENATION": 2_000, "STRIDED_SLICE": 2_500, "SPLIT_V": 1_500,
    "VAR_HANDLE": 600, "READ_VARIABLE": 600, "ASSIGN_VARIABLE": 700, "CALL_ONCE": 600, "MEAN": 3_500,
    "ADD": 3_000, "MUL": 2_500, "PAD": 2_000, "RELU": 1_200, "TANH": 2_000, "SQUEEZE": 600,
    "EXPAND_DIMS": 600, "TRANSPOSE": 2_000,
}
OPTIMIZED_EXTRA_CODE_BYTES = {"reference": 0, "cmsis-nn": 3_000, "esp-nn": 4_000}  # per MAC op kind
DEFAULT_KERNEL_CODE_BYTES = 3_000


def estimate_code_bytes(model: TfliteModel, kernels: str) -> dict[str, Any]:
    per_op = {name: KERNEL_CODE_BYTES.get(name, DEFAULT_KERNEL_CODE_BYTES) for name in model.op_names}
    for name in per_op:
        if name in _MAC_CLASS:
            per_op[name] += OPTIMIZED_EXTRA_CODE_BYTES[kernels]
    return {"framework_bytes": FRAMEWORK_CODE_BYTES, "kernel_bytes": per_op,
            "total_bytes": FRAMEWORK_CODE_BYTES + sum(per_op.values())}


@dataclass(frozen=True)
class Calibration:
    model: str
    published_ms: float
    estimated_ms: float

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.estimated_ms - self.published_ms) / self.published_ms


# MLPerf Tiny v0.5 KWS (DS-CNN) on STM32L4R5 @ 120 MHz: reference kernels, and the optimized ones.
MLPERF_DSCNN_STM32L4R5_REFERENCE_MS = 181.9
MLPERF_DSCNN_STM32L4R5_OPTIMIZED_MS = (47.8, 62.9)


def calibrate_dscnn(model: TfliteModel) -> list[Calibration]:
    """Estimates vs the published MLPerf Tiny numbers (the DS-CNN reference model)."""
    ref = estimate_latency_ms(model, "reference", "cortex-m4", 120)
    opt = estimate_latency_ms(model, "cmsis-nn", "cortex-m4", 120)
    out = [Calibration("reference kernels", MLPERF_DSCNN_STM32L4R5_REFERENCE_MS, ref)]
    out += [Calibration("optimized kernels", ms, opt) for ms in MLPERF_DSCNN_STM32L4R5_OPTIMIZED_MS]
    return out
