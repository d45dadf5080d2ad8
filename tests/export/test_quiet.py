"""Quiet by default: `tinyconv export` prints its own lines, not the libraries' noise; --verbose shows it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyconv import _quiet

# What used to precede export's own output (torchao's CUDA-only kernels, absl/oneDNN C++ lines from
# the converter's native libraries, torch's pytree log and FutureWarnings, ONNX registration logs).
NOISE = re.compile(r"torchao|absl|FutureWarning|WARNING:|oneDNN|^[IWE]\d{4} ", re.M)


def _env() -> dict[str, str]:
    # An earlier in-process `main()` may have set these in this process: start the child clean.
    return {k: v for k, v in os.environ.items() if k not in ("TORCH_LOGS", "TF_CPP_MIN_LOG_LEVEL")}


def _tinyconv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyconv.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=600)


@pytest.mark.slow  # a full export in a subprocess (~60 s); the simulate pair covers quiet/--verbose by default
def test_export_prints_only_its_own_lines(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = _tinyconv("export", str(trained.qat_path), "--formats", "tflite,onnx", "--out", str(tmp_path / "exp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("exported qat checkpoint (qat) to ")
    assert not NOISE.search(proc.stderr), proc.stderr[:3000]
    assert proc.stderr == ""


@pytest.mark.slow  # 30 s; the simulate pair below checks --verbose by default
def test_verbose_shows_the_library_output(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Also proves the test above is not vacuous: this environment's libraries do print noise.
    proc = _tinyconv("export", str(trained.qat_path), "--formats", "tflite", "--out", str(tmp_path / "exp"),
                     "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("exported qat checkpoint (qat) to ")
    assert NOISE.search(proc.stderr), proc.stderr[:3000]


def test_simulate_hides_litert_info_unless_verbose(tmp_path: Path) -> None:
    from tinyconv.firmware_sim.synthetic import write_tiny_model

    model = write_tiny_model(tmp_path / "model_int8.tflite", seed=0)
    args = ["simulate", str(model), "--budget", "esp32s3", "--repeats", "2", "--out", str(tmp_path / "sim")]
    quiet, verbose = _tinyconv(*args), _tinyconv(*args, "--verbose")
    assert (quiet.returncode, verbose.returncode) == (0, 0), quiet.stderr + verbose.stderr
    assert quiet.stderr == ""
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in verbose.stderr
    assert quiet.stdout.splitlines()[-3:] == verbose.stdout.splitlines()[-3:]


def test_captured_native_stderr_is_dropped_on_success_and_shown_on_failure(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_quiet, "_quiet", True)
    with _quiet.native_stderr_captured():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError, match="converter failed"), _quiet.native_stderr_captured():
        os.write(2, b"E0000 converter.cc:1] the reason\n")
        raise RuntimeError("converter failed")
    assert capfd.readouterr().err == "E0000 converter.cc:1] the reason\n"


def test_library_use_leaves_stderr_alone(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_quiet, "_quiet", False)  # what a program importing tinyconv gets
    with _quiet.native_stderr_captured():
        os.write(2, b"native line\n")
    assert capfd.readouterr().err == "native line\n"
