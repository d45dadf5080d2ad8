"""Shared fixtures: a tiny synthesized dataset (seeded, built once per session in a temp dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES, in_ci, skip_unless_ci, tiny_config
from tinyconv.config import Config, load_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` the workers share the cores: one compute thread each (torch here, and
    # torch/TF/ONNX Runtime in the subprocesses tests start) instead of N threads fighting per core.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")
    from tinyconv.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("tiny")
    return synthesize_dataset(tiny_config(root), root / "data")


# Seconds of long negative audio the `streamed_dataset` gives each of val and test.
STREAM_SECONDS = 40.0


@pytest.fixture(scope="session")
def streamed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset plus STREAM_SECONDS of negative-stream audio for each of train, val and test."""
    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")
    from tinyconv.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("streamed")
    minutes = STREAM_SECONDS / 60
    cfg = tiny_config(root, f"data.negative_stream_minutes={minutes}", f"data.train_negative_stream_minutes={minutes}")
    return synthesize_dataset(cfg, root / "data")


@pytest.fixture()
def tiny_cfg(tiny_dataset: Path, tmp_path: Path) -> Config:
    """A config pointing at the shared tiny dataset, with a fresh run folder."""
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}", f"train.out_dir={tmp_path / 'run'}"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true (.ci/run) every skip is a failure: CI installs everything the tests need, so a
    skip there means a prerequisite went missing and the test silently stopped testing. This covers
    skipif marks and importorskip in one place; `skip_unless_ci` says the same at the call site."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where nothing may be missing: {reason}"
