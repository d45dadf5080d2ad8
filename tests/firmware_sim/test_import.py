import subprocess
import sys


def test_firmware_sim_imports_without_torch() -> None:
    code = ("import sys, tinyconv.firmware_sim, tinyconv.firmware_sim.cli, tinyconv.firmware_sim.accuracy, "
            "tinyconv.firmware_sim.gate, tinyconv.firmware_sim.bench; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
