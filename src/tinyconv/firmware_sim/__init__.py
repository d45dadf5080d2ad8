"""Firmware simulator: exported models under ONNX Runtime, LiteRT and TFLite Micro, against MCU budgets.

Reads exported files only and imports no torch (firmware engineers run it on exports).
"""

from tinyconv.device.arena import HostArena, measure_host_arena
from tinyconv.device.errors import ModelError, RuntimeFailure
from tinyconv.device.tflite_file import TfliteModel, load_tflite, parse_tflite
from tinyconv.firmware_sim.arena import TargetArena, target_arena
from tinyconv.firmware_sim.budgets import BudgetError, McuBudget, list_budgets, load_budget
from tinyconv.firmware_sim.costmodel import calibrate_dscnn, estimate_code_bytes, estimate_latency_ms
from tinyconv.firmware_sim.report import SCHEMA_VERSION, simulate, write_report
from tinyconv.firmware_sim.streaming import DetectorConfig, Stream, build_streams, evaluate_streams

__all__ = [
    "BudgetError", "DetectorConfig", "HostArena", "McuBudget", "ModelError", "RuntimeFailure", "SCHEMA_VERSION",
    "Stream", "TargetArena", "TfliteModel", "build_streams", "calibrate_dscnn", "estimate_code_bytes",
    "estimate_latency_ms", "evaluate_streams", "list_budgets", "load_budget", "load_tflite", "measure_host_arena",
    "parse_tflite", "simulate", "target_arena", "write_report",
]
