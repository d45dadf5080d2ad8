from pathlib import Path

import pytest

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.tflite_file import load_tflite
from tinyconv.device.tflm_log import parse_allocations
from tinyconv.firmware_sim.arena import target_arena

from .conftest import MWW_MANIFEST_ARENA, ref_model


def test_host_arena_is_the_smallest_that_works(tiny_tflite: Path) -> None:
    from tinyconv.device.runners import check_runtimes

    model = load_tflite(tiny_tflite)
    host = measure_host_arena(model)
    assert host.head_bytes >= 98 * 40 and host.tail_bytes > 0
    assert check_runtimes(model, ["tflm"], host.arena_bytes) == {"tflm": None}
    assert check_runtimes(model, ["tflm"], host.arena_bytes - 1)["tflm"] is not None


@pytest.mark.parametrize("name", sorted(MWW_MANIFEST_ARENA))
def test_esp32s3_target_arena_within_10_percent_of_manifest(name: str) -> None:
    model = load_tflite(ref_model(f"mww_v2_{name}.tflite"))
    host = measure_host_arena(model)
    tgt = target_arena(model, host, "esp-nn")
    published = MWW_MANIFEST_ARENA[name]
    assert abs(tgt.arena_bytes - published) / published < 0.10, (tgt, published)


def test_unknown_kernel_family(tiny_tflite: Path) -> None:
    model = load_tflite(tiny_tflite)
    with pytest.raises(ValueError, match="unknown kernel family 'cmsis'"):
        target_arena(model, measure_host_arena(model), "cmsis")


def test_parse_allocations() -> None:
    log = ("[RecordingMicroAllocator] Arena allocation total 100 bytes\n"
           "[RecordingMicroAllocator] Arena allocation head 40 bytes\n"
           "[RecordingMicroAllocator] Arena allocation tail 60 bytes\n"
           "[RecordingMicroAllocator] 'TfLiteEvalTensor data' used 48 bytes with alignment overhead "
           "(requested 48 bytes for 2 allocations)\n")
    parsed = parse_allocations(log)
    assert parsed["total"] == 100 and parsed["categories"]["TfLiteEvalTensor data"]["count"] == 2
