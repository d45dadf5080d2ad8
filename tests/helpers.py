"""Helpers shared by the whole suite: `from tests.helpers import ...` (tests/ is a package; no test
puts folders on sys.path).

- `tiny_config`: the one small config of the tests that synthesize or read a spoken dataset
  (`TINY_OVERRIDES` as `--set` strings for CLI tests). Tests that train on seeded synthetic
  features use `tests.export.synthetic.synthetic_config` instead (no dataset folder at all).
- `reference_model`: a released .tflite from ../shared/reference_models. Outside CI a clone without
  that folder skips those tests; under CI=true (.ci/run) a missing model fails them, so a CI
  run cannot pass by skipping its third-party checks.
- `running_ui`: a real `tinyconv ui` server on a free port, stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyconv.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "reference_models"

TINY_OVERRIDES = [
    "data.num_positive=48",
    "data.num_confusable=24",
    "data.num_other_speech=24",
    "data.num_background=12",
    "augment.num_room_impulse_responses=3",
    "model.name=tinyconv_test",
    "train.epochs=2",
    "train.batch_size=32",
    "train.early_stopping_patience=100",
]


def tiny_config(tmp: Path, *extra: str) -> Config:
    """The tiny dataset config with its dataset and run folders under `tmp`; `extra` are more overrides."""
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tmp / 'data'}", f"train.out_dir={tmp / 'run'}",
                              *extra])


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def skip_unless_ci(reason: str) -> None:
    """Skip the test here; fail it under CI=true, where everything it needs must be installed."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails instead of skipping)")
    pytest.skip(reason)


def reference_model(name: str) -> Path:
    """The path of reference model `name` (skip when absent; fail under CI=true)."""
    path = SHARED_MODELS / name
    if not path.is_file():
        skip_unless_ci(f"reference model {name} not present in {SHARED_MODELS}")
    return path


@contextlib.contextmanager
def running_ui(args: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None,
               timeout_s: float = 120.0) -> Iterator[str]:
    """Start a real `tinyconv ui` on a free loopback port with `args`; yield its base URL (no
    trailing slash) once it answers, and stop it afterwards. The log names why a start failed."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tinyconv.cli", "ui", "--port", str(port), *args],
                                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:  # the app, or its login page
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`tinyconv ui` did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
