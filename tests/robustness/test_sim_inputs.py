"""Clumsy and hostile input to `simulate` and `bench`: numbers, budget YAMLs, export manifests, huge
ONNX inputs, and reports that must never be left half-written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyconv.cli import main
from tinyconv.device.errors import ModelError
from tinyconv.device.runners import OrtRunner, check_onnx, host_latency_ms, make_runner
from tinyconv.device.tflite_file import load_tflite
from tinyconv.firmware_sim.bench import bench_tflm_clips
from tinyconv.firmware_sim.budgets import BudgetError, load_budget
from tinyconv.firmware_sim.report import resolve_target, simulate, to_json, write_report
from tinyconv.firmware_sim.synthetic import write_tiny_model

GOOD_BUDGET = "core: cortex-m4\nclock_mhz: 64\nsram_bytes: 262144\nflash_bytes: 1048576\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model_int8.tflite", seed=0)


def _export(folder: Path, tiny: Path, **manifest: object) -> Path:
    """An export folder with the tiny model and a manifest whose files section hashes it."""
    folder.mkdir(parents=True, exist_ok=True)
    data = tiny.read_bytes()
    (folder / "model_int8.tflite").write_bytes(data)
    base = {"format_version": 1, "labels": ["_negative_", "hey_tiny"], "positive_label": "hey_tiny",
            "input": {"shape": [1, 98, 40], "dtype": "int8", "scale": 0.1, "zero_point": -128},
            "files": {"model_int8.tflite": {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}}
    (folder / "manifest.json").write_text(json.dumps({**base, **manifest}))
    return folder


# ---- numbers on the command line -----------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--clips", "0"], "--clips: must be a positive integer"),
    (["bench", "--clips", "-5"], "--clips: must be a positive integer"),
    (["bench", "--workers", "0"], "--workers: must be a positive integer"),
    (["simulate", "x.tflite", "--repeats", "0"], "--repeats: must be a positive integer"),
    (["simulate", "x.tflite", "--max-clips", "0"], "--max-clips: must be a positive integer"),
    (["simulate", "x.tflite", "--repeats", "many"], "--repeats: expected a positive integer, got 'many'"),
    (["gate", "x", "--baseline", "b.json", "--max-clips", "-1"], "--max-clips: must be a positive integer"),
])
def test_zero_or_negative_counts_are_usage_errors(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_library_refuses_zero_counts(tiny: Path) -> None:
    with pytest.raises(ValueError, match="bench: clips must be a positive integer, got 0"):
        bench_tflm_clips(clips=0)
    with pytest.raises(ValueError, match="simulate: latency_repeats must be a positive integer, got 0"):
        simulate(tiny, [], latency_repeats=0)
    with pytest.raises(ValueError, match="latency repeats must be a positive integer, got 0"):
        host_latency_ms(make_runner("litert_ref", load_tflite(tiny)), repeats=0)


# ---- budget YAMLs ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "message"), [
    ("clock_mhz: .nan", "clock_mhz must be a finite number, got nan"),
    ("clock_mhz: .inf", "clock_mhz must be a finite number, got inf"),
    ("clock_mhz: -.inf", "clock_mhz must be a finite number, got -inf"),
    ("clock_mhz: 0", "clock_mhz must be positive, got 0"),
    ("clock_mhz: -80", "clock_mhz must be positive, got -80"),
    ("sram_bytes: 0", "sram_bytes must be positive, got 0"),
    ("flash_bytes: -1", "flash_bytes must be positive, got -1"),
    ("max_latency_ms: .nan", "max_latency_ms must be a finite number, got nan"),
    ("max_latency_ms: .inf", "max_latency_ms must be a finite number, got inf"),
    ("app_reserved_fraction: .nan", "app_reserved_fraction must be a finite number, got nan"),
])
def test_budget_numbers_must_be_finite_and_positive(tmp_path: Path, line: str, message: str) -> None:
    key = line.split(":")[0]
    text = "\n".join(ln for ln in GOOD_BUDGET.splitlines() if not ln.startswith(key + ":")) + f"\n{line}\n"
    path = tmp_path / "mcu.yaml"
    path.write_text(text)
    with pytest.raises(BudgetError, match=message):
        load_budget(path)


def test_nan_clock_is_refused_by_simulate_before_any_report(tiny: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text(GOOD_BUDGET.replace("clock_mhz: 64", "clock_mhz: .nan"))
    out = tmp_path / "sim"
    assert main(["simulate", str(tiny), "--budget", str(path), "--out", str(out), "--repeats", "2"]) == 2
    assert "budget 'nan': clock_mhz must be a finite number, got nan" in capsys.readouterr().err
    assert not out.exists()


def test_reports_refuse_non_finite_numbers(tmp_path: Path) -> None:
    report = {"target": "x", "model_bytes": 1, "macs": 1, "runtimes": {}, "pass": True,
              "budgets": {"m": {"estimated_latency_ms": float("nan")}}}
    with pytest.raises(ValueError, match=r"report\.budgets\.m\.estimated_latency_ms is nan; refusing to write"):
        to_json(report)
    with pytest.raises(ValueError, match="is nan"):
        write_report(report, tmp_path / "sim")
    assert list((tmp_path / "sim").iterdir()) == []  # nothing written, not even report.md


def test_a_real_report_is_strict_json(tiny: Path, tmp_path: Path) -> None:
    report = simulate(tiny, ["esp32s3"], out_dir=tmp_path / "sim", latency_repeats=2)
    text = (tmp_path / "sim" / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"report.json holds {c}"))
    assert report["pass"] is True
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["arena.png", "report.json", "report.md"]


# ---- reports are written atomically ----------------------------------------------------------------

_FULL_DISK = """
import resource, signal, sys
from tinyconv.firmware_sim.report import write_report
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
report = {"target": "big", "model_bytes": 2, "macs": 2, "runtimes": {}, "pass": False, "padding": "x" * 20000}
try:
    write_report(report, sys.argv[1])
except OSError as exc:
    print("failed:", exc.strerror)
"""


def test_a_failed_write_leaves_the_previous_report_intact(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    old = {"target": "old", "model_bytes": 1, "macs": 1, "runtimes": {}, "pass": True}
    write_report(old, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "failed: File too large" in proc.stdout
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # the old report.json/report.md, complete; no temp file left behind
    assert json.loads(after["report.json"])["target"] == "old"


# ---- the export manifest -----------------------------------------------------------------------------

def test_a_sound_manifest_is_read(tiny: Path, tmp_path: Path) -> None:
    files = resolve_target(_export(tmp_path / "export", tiny))
    assert files.manifest["labels"] == ["_negative_", "hey_tiny"] and files.tflite is not None


@pytest.mark.parametrize(("manifest", "message"), [
    ({"labels": ["yes", "no", "yes"]}, r"labels must be unique; repeated: \['yes'\]"),
    ({"labels": "yes,no"}, "labels must be a non-empty list of non-empty strings, got 'yes,no'"),
    ({"labels": ["yes", 2]}, "labels must be a non-empty list of non-empty strings"),
    ({"labels": []}, "labels must be a non-empty list"),
    ({"labels": ["yes", ""]}, "labels must be a non-empty list of non-empty strings"),
    ({"positive_label": "hey_jarvis"}, "positive_label 'hey_jarvis' is not one of the labels"),
    ({"positive_label": ["hey_tiny"]}, "positive_label must be a string"),
    ({"input": [1, 98, 40]}, "input must be an object"),
    ({"input": {"scale": "0.1", "zero_point": 0}}, "input.scale must be a positive finite number, got '0.1'"),
    ({"input": {"scale": 0.1, "zero_point": 1.5}}, "input.zero_point must be an integer, got 1.5"),
    ({"output": {"scale": -1, "zero_point": 0}}, "output.scale must be a positive finite number, got -1"),
    ({"dataset_dir": ["data"]}, "dataset_dir must be a path string"),
    ({"format_version": "1"}, "format_version must be an integer"),
    ({"files": ["model_int8.tflite"]}, "files must be an object of file name"),
    ({"files": {"model_int8.tflite": {"sha256": "abc"}}}, "files.model_int8.tflite must hold a 64-digit"),
    ({"files": {"../secret.bin": {"sha256": "0" * 64}}}, "files lists '../secret.bin', which is not a file name"),
    ({"files": {"model_data.cc": {"sha256": "0" * 64, "bytes": 10}}},
     r"the manifest lists model_data.cc but .*model_data.cc is missing; re-run `tinyconv export`"),
])
def test_malformed_manifests(tiny: Path, tmp_path: Path, manifest: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_target(_export(tmp_path / "export", tiny, **manifest))


@pytest.mark.parametrize(("text", "message"), [
    ('["model_int8.tflite"]', "an export manifest must be a JSON object, got a list"),
    ('"labels"', "an export manifest must be a JSON object, got a str"),
    ("{", "invalid JSON"),
])
def test_manifest_of_the_wrong_shape_exits_2(tiny: Path, tmp_path: Path, text: str, message: str,
                                             capsys: pytest.CaptureFixture) -> None:
    folder = _export(tmp_path / "export", tiny)
    (folder / "manifest.json").write_text(text)
    assert main(["simulate", str(folder), "--repeats", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_model_changed_after_export_is_named(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _export(tmp_path / "export", tiny)
    model = folder / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    model.write_bytes(bytes(data))
    assert main(["simulate", str(folder), "--repeats", "2"]) == 2
    assert (f"{model}: sha256 " in (err := capsys.readouterr().err)
            and "does not match the export manifest" in err and "changed after export" in err)
    model.write_bytes(bytes(data) + b"\0")
    with pytest.raises(ModelError, match=r"model_int8.tflite: \d+ bytes, but the export manifest records \d+"):
        resolve_target(folder)


# ---- ONNX inputs the host would have to allocate -----------------------------------------------------

def _identity_onnx(path: Path, shape: list[int | str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_huge_onnx_input_is_refused_before_allocation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _identity_onnx(tmp_path / "huge.onnx", [1, 1_000_000, 1_000_000, 1000])  # 4 EB of float32
    message = r"input 'x' has shape \[1, 1000000, 1000000, 1000\] \(1,000,000,000,000,000 elements\), more than"
    with pytest.raises(ModelError, match=message):
        check_onnx(path)
    with pytest.raises(ModelError, match=message):
        OrtRunner(path, "onnx_float")
    assert main(["simulate", str(path), "--repeats", "2", "--out", str(tmp_path / "sim")]) == 2
    assert "1,000,000,000,000,000 elements" in capsys.readouterr().err


def test_symbolic_onnx_dimensions_run_with_1(tmp_path: Path) -> None:
    path = _identity_onnx(tmp_path / "dyn.onnx", ["batch", 98, 40])
    check_onnx(path)
    runner = OrtRunner(path, "onnx_float")
    assert runner.input_shape == (1, 98, 40)
    assert runner.run(np.ones((1, 98, 40), np.float32)).shape == (1, 98, 40)
