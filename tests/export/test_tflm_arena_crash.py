"""The export's TFLM arena bisection survives TFLite Micro crashing on a too-small arena.

On microWakeWord's alexa model, TFLM segfaults ("Failed to allocate tail memory") for some arena
sizes below the minimum; the probe runs in a subprocess, and such a crash counts as "does not
fit" instead of failing the export. The result equals the simulator's own measurement."""

from tinyconv.export.tflm import measure_arena_bytes
from tinyconv.firmware_sim.arena import measure_host_arena
from tinyconv.firmware_sim.model import load_tflite

from tests.helpers import reference_model


def test_arena_bisection_survives_tflm_crash_and_matches_simulate() -> None:
    alexa = reference_model("mww_v2_alexa.tflite")
    exported = measure_arena_bytes(alexa.read_bytes())
    assert exported == measure_host_arena(load_tflite(str(alexa))).arena_bytes == 20_720
