"""The public API: `import tinyconv` exposes one function per stage, lazily (no torch on import)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tinyconv

API = ["load_config", "synthesize_dataset", "create_model", "list_models", "train", "evaluate", "quickstart",
       "export_checkpoint", "simulate", "SimulationReport"]


def test_import_tinyconv_loads_no_torch_and_simulate_stays_torch_free() -> None:
    code = (
        "import sys, tinyconv\n"
        "heavy = ('torch', 'tensorflow', 'litert_torch', 'torchao', 'gradio', 'transformers')\n"
        "def loaded(): return sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "print(loaded())\n"
        "tinyconv.simulate, tinyconv.SimulationReport, tinyconv.load_config\n"  # the firmware path: still no torch
        "print(loaded())\n"
        "tinyconv.train\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:3] == ["[]", "[]", "['torch']"]


def test_public_names_are_the_library_functions() -> None:
    from tinyconv.config import load_config
    from tinyconv.export.pipeline import export_checkpoint
    from tinyconv.firmware_sim.report import simulate_report
    from tinyconv.models import create_model, list_models
    from tinyconv.trainer.run import evaluate_checkpoint, quickstart, train

    assert set(API) <= set(tinyconv.__all__) and set(API) <= set(dir(tinyconv))
    assert set(tinyconv.__all__) == {"__version__", *tinyconv._API}  # __all__ is spelled out by hand
    assert (tinyconv.load_config, tinyconv.export_checkpoint, tinyconv.simulate, tinyconv.create_model,
            tinyconv.list_models, tinyconv.evaluate, tinyconv.quickstart, tinyconv.train) == (
        load_config, export_checkpoint, simulate_report, create_model, list_models, evaluate_checkpoint,
        quickstart, train)
    assert "tinyconv_test" in tinyconv.list_models()


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'tinyconv' has no attribute 'simulat'"):
        tinyconv.simulat  # noqa: B018


def test_simulate_returns_a_typed_report(tmp_path: Path) -> None:
    from tinyconv.firmware_sim.synthetic import write_tiny_model

    model = write_tiny_model(tmp_path / "model_int8.tflite", seed=0)
    report = tinyconv.simulate(model, "esp32s3", latency_repeats=2, out_dir=tmp_path / "sim")
    assert isinstance(report, tinyconv.SimulationReport)
    raw = report.to_dict()
    assert raw == json.loads((tmp_path / "sim" / "report.json").read_text())
    assert (report.passed, report.model_bytes, report.macs, report.arena_bytes_host) == (
        raw["pass"], raw["model_bytes"], raw["macs"], raw["arena_bytes_host"])
    (budget,) = report.budgets
    entry = raw["budgets"]["esp32s3"]
    assert budget == report.budget("esp32s3")
    assert (budget.name, budget.passed, budget.arena_bytes, budget.flash_bytes, budget.latency_ms) == (
        "esp32s3", entry["pass"], entry["arena_bytes_target"], entry["flash_bytes_needed"],
        entry["estimated_latency_ms"])
    assert dict(report.accuracy) == {}  # no dataset: nothing measured
    raw["pass"] = "changed"
    assert report.to_dict()["pass"] == report.passed  # to_dict hands out a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.passed = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.accuracy["tflm"] = 1.0  # type: ignore[index]
    with pytest.raises(KeyError, match=r"no budget 'nrf52840' in this report \(it has \['esp32s3'\]\)"):
        report.budget("nrf52840")
