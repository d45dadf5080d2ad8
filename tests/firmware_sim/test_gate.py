import json
from pathlib import Path

import pytest

from tinyconv.cli import main
from tinyconv.firmware_sim.gate import read_baseline


def test_gate_round_trip_and_failures(tiny_tflite: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "baseline.json"
    assert main(["gate", str(tiny_tflite), "--baseline", str(base), "--write-baseline"]) == 0
    assert main(["gate", str(tiny_tflite), "--baseline", str(base)]) == 0
    raw = json.loads(base.read_text())
    raw["metrics"]["model_bytes"] = int(raw["metrics"]["model_bytes"] * 0.9)  # the model "grew" 11 %
    raw["metrics"]["accuracy"] = 1.0
    base.write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["gate", str(tiny_tflite), "--baseline", str(base)]) == 1
    assert "FAIL model_bytes" in capsys.readouterr().out


def test_gate_accuracy_drop(export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = tmp_path / "b.json"
    assert main(["gate", str(export_dir), "--baseline", str(base), "--write-baseline"]) == 0
    raw = json.loads(base.read_text())
    assert raw["metrics"]["accuracy"] is not None
    raw["metrics"]["accuracy"] += 0.2
    base.write_text(json.dumps(raw))
    assert main(["gate", str(export_dir), "--baseline", str(base)]) == 1
    assert "FAIL accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "message"), [
    ("{", "baseline is not valid JSON"),
    ('{"metrics": {}}', "not a tinyconv gate baseline"),
    ('{"baseline_version": 1, "metrics": {}, "tolerance": {"size": 1}}', "unknown tolerance keys \\['size'\\]"),
])
def test_bad_baselines(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "b.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_baseline(p)


def test_missing_baseline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="baseline not found.*--write-baseline"):
        read_baseline(tmp_path / "none.json")
