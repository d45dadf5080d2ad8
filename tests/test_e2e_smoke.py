"""Smoke test: benchmarks/e2e.py end to end at its tiniest scale (one wake word, scale study 1x/2x).

Slow (a few minutes on 2 cores): `pytest -m slow tests/test_e2e_smoke.py`. Writes only to tmp_path.
The exit code must agree with the targets recorded in the JSON (0 = all met, 1 = one failed);
the tiny scale is too small for the accuracy target to be meaningful, so either is accepted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_e2e_tiny(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (the set-up installs it)")
    out, md = tmp_path / "e2e.json", tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "e2e.py"), "--scale", "tiny", "--wake-words", "hey jarvis",
         "--scale-factors", "1,2", "--work-dir", str(tmp_path / "work"), "--out", str(out),
         "--results-md", str(md), "--latency-repeats", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["scale"] == "tiny"
    (word,) = report["words"]
    assert "error" not in word, word.get("error")
    assert set(word["models"]) == {"v1_float", "v2_float", "v2_distilled", "v2_qat", "stream"}
    stream = word["stream"]  # the quickstart recipe's streaming model, exported for ESPHome
    assert stream["macs_per_invoke"] > 0 and {"hey_jarvis.tflite", "hey_jarvis.json"} <= set(stream["files"])
    assert "frr_at_target" in stream["streaming"] and word["streams"]["heldout_negatives"]["hours"] > 0
    assert {"stream_macs_le_25k", "stream_frr_le_window"} <= set(word["targets"])
    assert set(word["teachers"]) == {"wav2vec2", "conformer"}
    assert word["export"]["quantization"] == "qat"
    assert {"model_int8.tflite", "model_int8.onnx", "model_data.h", "model_data.cc"} <= set(word["export"]["files"])
    ours = word["ours"]
    assert ours["model_bytes"] > 0 and ours["macs_per_invoke"] > 0 and ours["arena_bytes_host"] > 0
    for budget in ("nrf52840", "esp32s3"):
        assert ours["budgets"][budget]["estimated_latency_ms"] > 0
    assert "frr_at_target" in ours["streaming"]
    q = word["quantization"]
    assert q["drop_points"] == pytest.approx(100 * (q["float_test_accuracy"] - q["int8_tflm_test_accuracy"]))
    assert word["targets"]["int8_drop_le_0p5"] == (q["drop_points"] <= 0.5)
    if "skipped" not in word["mww"]:
        assert word["mww"]["macs_per_second_audio"] > 0
    assert [r["factor"] for r in report["scale_study"]] == [1, 2]
    assert (proc.returncode == 0) == report["pass"]
    text = md.read_text()
    assert "scale `tiny`" in text and "| wake word |" in text and "torchrun" in text
