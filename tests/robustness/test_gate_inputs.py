"""`tinyconv gate` never passes vacuously: bad baselines are input errors (exit 2), a gate with nothing
to compare fails (exit 1), and an accuracy check that cannot run is a failed check, not a silent skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyconv.cli import main
from tinyconv.firmware_sim.gate import BaselineError, compare, read_baseline
from tinyconv.firmware_sim.synthetic import write_tiny_model

METRICS = {"model_bytes": 13912, "arena_bytes": 11488, "macs": 120_000, "accuracy": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model_int8.tflite", seed=0)


def _baseline(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def _good(**metrics: object) -> dict:
    return {"baseline_version": 1, "metrics": {**METRICS, **metrics}}


@pytest.mark.parametrize(("payload", "message"), [
    ("[1, 2]", r"not a tinyconv gate baseline \(a JSON list"),
    ('"metrics"', r"not a tinyconv gate baseline \(a JSON str"),
    ("{}", r"not a tinyconv gate baseline \(baseline_version 1\)"),
    ({"baseline_version": 1, "metric": METRICS}, r"unknown baseline key 'metric' \(did you mean 'metrics'\?\)"),
    ({"baseline_version": 1, "metrics": [1, 2]}, "metrics must be a JSON object, got list"),
    ({**_good(), "tolerance": [2.0]}, "tolerance must be a JSON object, got list"),
    (_good(model_byte=1), r"unknown metric 'model_byte' \(did you mean 'model_bytes'\?\)"),
    (_good(model_bytes=[13912]), r"metrics.model_bytes must be a positive integer or null, got \[13912\]"),
    (_good(model_bytes="13912"), "metrics.model_bytes must be a positive integer or null, got '13912'"),
    (_good(model_bytes=True), "metrics.model_bytes must be a positive integer or null, got True"),
    (_good(model_bytes=0), "metrics.model_bytes must be a positive integer or null, got 0"),
    (_good(arena_bytes=-5), "metrics.arena_bytes must be a positive integer or null, got -5"),
    (_good(arena_bytes=100.5), "metrics.arena_bytes must be a positive integer or null, got 100.5"),
    (_good(macs=-1), "metrics.macs must be an integer >= 0 or null, got -1"),
    (_good(accuracy="0.9"), r"metrics.accuracy must be a number in \[0, 1\] or null, got '0.9'"),
    (_good(accuracy=1.5), r"metrics.accuracy must be a number in \[0, 1\] or null, got 1.5"),
    ('{"baseline_version": 1, "metrics": {"model_bytes": NaN}}', "metrics.model_bytes must be a positive integer"),
    ('{"baseline_version": 1, "metrics": {"accuracy": NaN}}', r"metrics.accuracy must be a number in \[0, 1\]"),
    ({**_good(), "tolerance": {"model_bytes_pct": "2"}}, "tolerance.model_bytes_pct must be a finite number >= 0"),
    ({**_good(), "tolerance": {"macs_pct": -1}}, "tolerance.macs_pct must be a finite number >= 0, got -1"),
    ({**_good(), "tolerance": {"model_byte_pct": 2}},
     r"unknown tolerance keys \['model_byte_pct'\] \(did you mean 'model_bytes_pct'\?\)"),
])
def test_bad_baselines_are_input_errors(tmp_path: Path, payload: object, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        read_baseline(_baseline(tmp_path, payload))


def test_bad_baseline_exits_2_from_the_cli_without_a_traceback(tiny: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    path = _baseline(tmp_path, _good(macs=["120000"]))
    assert main(["gate", str(tiny), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert "metrics.macs must be an integer >= 0 or null" in err and "Traceback" not in err


@pytest.mark.parametrize("metrics", [{}, {"model_bytes": None, "arena_bytes": None, "macs": None, "accuracy": None}])
def test_a_gate_with_nothing_to_compare_fails(tiny: Path, tmp_path: Path, metrics: dict,
                                              capsys: pytest.CaptureFixture) -> None:
    path = _baseline(tmp_path, {"baseline_version": 1, "metrics": metrics})
    assert main(["gate", str(tiny), "--baseline", str(path)]) == 1
    out = capsys.readouterr().out
    assert "nothing to compare: the baseline gates no metric" in out and "gate: FAIL" in out


def test_growth_from_a_zero_baseline_fails() -> None:
    verdict = compare({"model_bytes": 100, "arena_bytes": 100, "macs": 5, "accuracy": None},
                      {"metrics": {"model_bytes": 100, "arena_bytes": 100, "macs": 0}})
    assert verdict["checks"]["macs"]["pass"] is False and verdict["pass"] is False
    same = compare({"model_bytes": 100, "arena_bytes": 100, "macs": 0, "accuracy": None},
                   {"metrics": {"model_bytes": 100, "arena_bytes": 100, "macs": 0}})
    assert same["pass"] is True


def _export_with_gone_dataset(folder: Path, tiny: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_int8.tflite").write_bytes(tiny.read_bytes())
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": 1, "labels": ["_negative_", "hey_tiny"], "dataset_dir": str(folder / "moved_dataset")}))
    return folder


def test_accuracy_gate_fails_when_the_dataset_has_moved(tiny: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    export = _export_with_gone_dataset(tmp_path / "export", tiny)
    base = tmp_path / "baseline.json"
    assert main(["gate", str(export), "--baseline", str(base), "--write-baseline"]) == 0
    captured = capsys.readouterr()
    assert "note: the baseline does not gate accuracy" in captured.err
    assert "moved_dataset does not exist" in captured.err
    raw = json.loads(base.read_text())
    assert set(raw["metrics"]) == {"model_bytes", "arena_bytes", "macs", "accuracy"}
    assert main(["gate", str(export), "--baseline", str(base)]) == 0  # the three size checks, all ok
    raw["metrics"]["accuracy"] = 0.9  # a baseline that gates accuracy, from a machine that had the data
    base.write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["gate", str(export), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "FAIL accuracy: 0.9 -> None accuracy not measured: the export's dataset_dir" in out
    assert "moved_dataset does not exist; pass --dataset DIR" in out and "gate: FAIL" in out


def test_accuracy_gate_fails_for_a_bare_model_without_a_dataset(tiny: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    path = _baseline(tmp_path, _good(model_bytes=None, arena_bytes=None, macs=None, accuracy=0.9))
    assert main(["gate", str(tiny), "--baseline", str(path)]) == 1
    assert "FAIL accuracy: 0.9 -> None accuracy not measured: no dataset" in capsys.readouterr().out
