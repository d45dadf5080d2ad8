"""The shared test helpers: a missing reference model skips locally and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.helpers import SHARED_MODELS, reference_model


def test_missing_reference_model_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"reference model no_such_model\.tflite not present in "):
        reference_model("no_such_model.tflite")


def test_missing_reference_model_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_model\.tflite not present .*CI=true: a missing "
                                                    r"prerequisite fails instead of skipping"):
        reference_model("no_such_model.tflite")


def test_present_reference_model_is_returned() -> None:
    path = reference_model("mlperf_tiny_kws_dscnn_int8.tflite")
    assert path == SHARED_MODELS / "mlperf_tiny_kws_dscnn_int8.tflite" and path.stat().st_size > 1000
