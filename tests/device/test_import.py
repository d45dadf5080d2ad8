"""tinyconv.device is the torch-free layer under export and firmware_sim: each module imports
without torch, and without the packages built on it (the import graph is one-way)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tinyconv.device

MODULES = sorted(p.stem for p in Path(tinyconv.device.__file__).parent.glob("*.py") if p.stem != "__init__")


def test_the_runtime_layer_is_here() -> None:
    assert {"arena", "errors", "isolate", "runners", "tflite_checks", "tflite_file", "tflm_log"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_device_module_imports_without_torch(module: str) -> None:
    code = (f"import sys, tinyconv.device.{module}; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "above = sorted(m for m in sys.modules if m.startswith(('tinyconv.export', 'tinyconv.firmware_sim'))); "
            "assert not above, above")
    subprocess.run([sys.executable, "-c", code], check=True)
