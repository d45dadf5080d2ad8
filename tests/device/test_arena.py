"""The one host-arena measurement (tinyconv.device.arena) and the one missing-op detection
(tinyconv.device.tflm_log), which the exporter and the simulator both use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import reference_model
from tinyconv.device.arena import measure_host_arena
from tinyconv.device.errors import RuntimeFailure
from tinyconv.device.tflite_file import load_tflite
from tinyconv.device.tflm_log import explain_tflm_error, missing_ops
from tinyconv.firmware_sim.synthetic import write_tiny_model

# Smallest arena_size with which TFLite Micro (reference kernels, this host) allocates and invokes.
MWW_HOST_ARENA = {"alexa": 20_720, "okay_nabu": 24_512}


@pytest.mark.parametrize("name", sorted(MWW_HOST_ARENA))
def test_reference_models_host_arena(name: str) -> None:
    """On alexa TFLM segfaults ("Failed to allocate tail memory") for some arenas below the minimum:
    a crashing probe counts as "does not fit", so the bisection still ends at the minimum. The bytes
    form (what the exporter passes) measures the same as the parsed file (what simulate passes)."""
    path = reference_model(f"mww_v2_{name}.tflite")
    host = measure_host_arena(load_tflite(path))
    assert host.arena_bytes == MWW_HOST_ARENA[name]
    assert host.head_bytes > 0 and host.tail_bytes > 0 and host.total_recorded <= host.arena_bytes
    assert measure_host_arena(path.read_bytes()).arena_bytes == MWW_HOST_ARENA[name]


def test_missing_custom_op_is_named(tmp_path: Path) -> None:
    path = write_tiny_model(tmp_path / "custom.tflite", missing_op=True)
    with pytest.raises(RuntimeFailure, match=r"TFLite Micro cannot run op CUSTOM: no kernel registered for it"):
        measure_host_arena(load_tflite(path))


def test_missing_ops_from_the_tflm_log() -> None:
    log = "Didn't find op for builtin opcode 'SKIP_GRAM'\r\nFailed to get registration from op code SKIP_GRAM\n \r\n"
    assert missing_ops(log) == ["SKIP_GRAM"]
    assert missing_ops("Failed to get registration from op code CUSTOM\n") == ["CUSTOM"]
    assert missing_ops("Arena allocation total 100 bytes") == []
    assert explain_tflm_error(log).startswith("TFLite Micro cannot run op SKIP_GRAM: no kernel registered for it")
    assert explain_tflm_error("native interpreter crashed (SIGSEGV)") == "native interpreter crashed (SIGSEGV)"
