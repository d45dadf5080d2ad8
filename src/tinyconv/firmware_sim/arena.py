"""TFLite Micro tensor arena modelled for a 32-bit MCU target, from the host measurement.

Host: the smallest `arena_size` that allocates and invokes, plus the RecordingMicroAllocator
breakdown (`tinyconv.device.arena.measure_host_arena`, the number the exporter writes too).

Target (32-bit MCU, optimized kernels) = host arena
  + extra non-persistent memory: the optimized kernels' scratch buffers, planned together with
    the activations alive at their op (max over ops of live + scratch, minus the host peak),
  - the 32-bit shrink of the persistent interpreter structs: TfLiteEvalTensor (24 -> 12 B),
    TfLiteNode+registration (64 -> 32 B), persistent TfLiteTensor (64 -> 40 B) and its
    quantization record (16 -> 12 B per allocation), the uncategorised tail (pointer arrays,
    subgraph tables: halved), and the op-data part of 'Persistent buffer data' (structs that mix
    int32 and pointers: x0.75). Resource-variable state and per-channel multiplier/shift arrays
    are int8/int32 and do not shrink.
Scratch formulas follow the kernels' own `*_get_buffer_size` / `*_scratch_size` functions;
see docs/FIRMWARE_SIM.md for the sources and the residual error per model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tinyconv.device.arena import HostArena
from tinyconv.device.tflite_file import OpInfo, TfliteModel, live_bytes_per_op

ALIGN = 16  # TFLM MicroArenaBufferAlignment(), the same on 32- and 64-bit builds

# Bytes per struct, host (x86-64) vs 32-bit MCU, from the TFLM struct layouts.
_EVAL_TENSOR = (24, 12)  # {void* data; TfLiteIntArray* dims; TfLiteType type}
_NODE_AND_REG = (64, 32)  # TfLiteNode (6 pointers + int) + registration pointer
_PERSISTENT_TENSOR = (64, 40)
_QUANT_RECORD = (16, 12)
_OPDATA_32BIT_FACTOR = 0.75
_OTHER_TAIL_32BIT_FACTOR = 0.5


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---- optimized-kernel scratch buffers ------------------------------------------------------

def esp_nn_scratch(op: OpInfo) -> int:
    """ESP-NN (ESP32-S3) scratch: esp_nn_get_conv/depthwise_conv_scratch_size_esp32s3()."""
    p = op.params
    if op.name == "CONV_2D" and p:
        ic, oc = p["in_c"], p["out_c"]
        pointwise = p["k_h"] == 1 and p["k_w"] == 1 and p["stride_h"] == 1 and p["stride_w"] == 1
        if pointwise and not p["same_padding"]:
            ch8 = (ic + 7) & ~7
            transpose = 0 if p["in_h"] * p["in_w"] < 8 else 2 * 8 * ch8
            padded_input = p["in_h"] * p["in_w"] * ch8 if ic % 8 else 0
            return padded_input + ch8 * oc + transpose + 32
        ch16 = (ic + 15) & ~15
        pad_h = (p["k_h"] - 1) // 2 if p["same_padding"] else 0
        pad_w = (p["k_w"] - 1) // 2 if p["same_padding"] else 0
        padded_input = (p["in_w"] + 2 * pad_w) * (p["in_h"] + 2 * pad_h) * ic if (pad_h or pad_w) else 0
        return padded_input + p["k_h"] * p["k_w"] * ch16 * oc + 32 + oc * 4
    if op.name == "DEPTHWISE_CONV_2D" and p:
        ic, mult = p["in_c"], p["depth_multiplier"]
        filt = p["k_h"] * p["k_w"] * ic * mult
        if mult == 1 and ic % 8 == 0 and p["k_h"] == 3 and p["k_w"] == 3:
            if ic % 16 == 0:
                pad = 2 if p["same_padding"] else 0
                return filt + ((p["in_w"] + pad) * (p["in_h"] + pad) * ic if pad else 0) + 16
            return 2 * (filt + p["in_h"] * p["in_w"] * ic) + 16
        if mult % 4 == 0:
            return 2 * (filt + p["in_h"] * p["in_w"] * ic) + 16
        return 32
    return 0


def cmsis_nn_scratch(op: OpInfo) -> int:
    """CMSIS-NN scratch: arm_convolve_wrapper_s8 / arm_depthwise_conv_wrapper_s8 / arm_avgpool_s8
    `_get_buffer_size` (DSP builds: int16 im2col columns)."""
    p = op.params
    if op.name == "CONV_2D" and p:
        pointwise = p["k_h"] == 1 and p["k_w"] == 1 and p["stride_h"] == 1 and p["stride_w"] == 1
        if pointwise and not p["same_padding"]:
            return 0  # arm_convolve_1x1_s8_fast needs none
        return 2 * p["in_c"] * p["k_h"] * p["k_w"] * 2
    if op.name == "DEPTHWISE_CONV_2D" and p:
        if p["depth_multiplier"] != 1:
            return 0
        if p["k_h"] == 3 and p["k_w"] == 3:
            return 0  # arm_depthwise_conv_3x3_s8
        return p["in_c"] * p["k_h"] * p["k_w"] * 2
    if op.name == "AVERAGE_POOL_2D" and p:
        return p["in_c"] * 4
    return 0


SCRATCH_MODELS = {"esp-nn": esp_nn_scratch, "cmsis-nn": cmsis_nn_scratch, "reference": lambda op: 0}


@dataclass(frozen=True)
class TargetArena:
    kernels: str
    arena_bytes: int
    host_arena_bytes: int
    scratch_extra_bytes: int  # added non-persistent bytes (scratch planned with live tensors)
    struct_savings_bytes: int  # persistent bytes saved by 32-bit struct layouts
    largest_scratch: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _opdata_bytes(model: TfliteModel, host: HostArena) -> int:
    """'Persistent buffer data' minus the parts that keep their size on 32-bit."""
    used = host.categories.get("Persistent buffer data", {}).get("used", 0)
    state = sum(t.nbytes for g in model.tensors for t in g if t.is_variable)
    state += sum(model.tensor(op.inputs[1], op.subgraph).nbytes for op in model.ops
                 if op.name == "ASSIGN_VARIABLE" and op.subgraph > 0 and len(op.inputs) > 1)
    per_channel = sum(op.params.get("out_c", 0) * 8 for op in model.ops
                      if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"))
    return max(0, used - state - per_channel)


def target_arena(model: TfliteModel, host: HostArena, kernels: str) -> TargetArena:
    if kernels not in SCRATCH_MODELS:
        raise ValueError(f"unknown kernel family {kernels!r}; expected one of {sorted(SCRATCH_MODELS)}")
    scratch_fn = SCRATCH_MODELS[kernels]
    ops = model.main_ops
    live = live_bytes_per_op(model)
    scratch = [_align(scratch_fn(op)) if scratch_fn(op) else 0 for op in ops]
    peak_host = max(live, default=0)
    peak_target = max((a + b for a, b in zip(live, scratch, strict=True)), default=0)
    extra = max(0, peak_target - peak_host)
    cats = host.categories

    def used(name: str) -> int:
        return cats.get(name, {}).get("used", 0)

    def count(name: str) -> int:
        return cats.get(name, {}).get("count", 0)

    savings = (
        count("TfLiteEvalTensor data") * (_EVAL_TENSOR[0] - _EVAL_TENSOR[1])
        + count("NodeAndRegistration struct") * (_NODE_AND_REG[0] - _NODE_AND_REG[1])
        + count("Persistent TfLiteTensor data") * (_PERSISTENT_TENSOR[0] - _PERSISTENT_TENSOR[1])
        + count("Persistent TfLiteTensor quantization data") * (_QUANT_RECORD[0] - _QUANT_RECORD[1])
        + int(_opdata_bytes(model, host) * (1 - _OPDATA_32BIT_FACTOR))
    )
    other_tail = host.tail_bytes - sum(used(k) for k in cats)
    savings += int(max(0, other_tail) * (1 - _OTHER_TAIL_32BIT_FACTOR))
    k_max = max(range(len(ops)), key=lambda k: scratch[k], default=None)
    largest = ({"op_index": k_max, "op": ops[k_max].name, "bytes": scratch[k_max]}
               if k_max is not None and scratch[k_max] else {})
    arena = _align(host.arena_bytes + extra - savings)
    return TargetArena(kernels=kernels, arena_bytes=arena, host_arena_bytes=host.arena_bytes,
                       scratch_extra_bytes=extra, struct_savings_bytes=savings, largest_scratch=largest)


def arena_breakdown(model: TfliteModel, host: HostArena, top: int = 5) -> dict[str, Any]:
    """Persistent vs non-persistent, the largest activation tensors, and the live bytes per op."""
    live = live_bytes_per_op(model)
    acts = [t for t in model.tensors[0] if not t.is_const and t.dtype != "resource"]
    largest = sorted(acts, key=lambda t: -t.nbytes)[:top]
    return {
        "arena_bytes_host": host.arena_bytes,
        "persistent_bytes": host.tail_bytes,
        "non_persistent_bytes": host.head_bytes,
        "init_overhead_bytes": host.init_overhead_bytes,
        "categories": host.categories,
        "largest_tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "bytes": t.nbytes}
                            for t in largest],
        "live_bytes_per_op": [{"op_index": op.index, "op": op.name, "live_bytes": b}
                              for op, b in zip(model.main_ops, live, strict=True)],
    }
