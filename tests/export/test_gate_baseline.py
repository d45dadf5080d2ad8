"""CI's size gate: the exported tiny test model against the committed baseline.

Regenerate (after an intended change in size): TINYCONV_REGEN_GOLDEN=1 .venv/bin/python -m pytest
tests/export/test_gate_baseline.py
"""

from __future__ import annotations

import os
from pathlib import Path

from tinyconv.cli import main
from tinyconv.firmware_sim.gate import measure, read_baseline, write_baseline

BASELINE = Path(__file__).resolve().parents[1] / "golden" / "gate_tinyconv_test.json"


def test_tiny_model_export_passes_the_committed_size_gate(qat_export) -> None:  # type: ignore[no-untyped-def]
    export_dir = Path(qat_export.out_dir)
    if os.environ.get("TINYCONV_REGEN_GOLDEN") == "1":
        metrics = measure(export_dir)
        metrics["accuracy"] = None  # trained on synthetic features: accuracy is not gated here
        write_baseline(metrics, BASELINE)
    baseline = read_baseline(BASELINE)
    assert baseline["metrics"]["model_bytes"] > 0
    assert main(["gate", str(export_dir), "--baseline", str(BASELINE)]) == 0
