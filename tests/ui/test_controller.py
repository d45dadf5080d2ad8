"""What the buttons do, without a browser: readable errors, jobs started with YAML the CLI reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tinyconv.config import Config, load_config, replace
from tinyconv.ui import views
from tinyconv.ui.controller import UiController
from tinyconv.ui.jobs import FAILED, JobManager
from tinyconv.ui.panel_config import config_to_values, panel_fields


def _values(config: Config, **changes: object) -> list:
    keys = [s.key for s in panel_fields()]
    values = config_to_values(config)
    for key, value in changes.items():
        values[keys.index(key.replace("__", "."))] = value
    return values


@pytest.fixture()
def ctl(tmp_path: Path) -> UiController:
    return UiController(JobManager(tmp_path / "ui_jobs"))


def test_bad_config_value_shows_the_config_error_and_starts_nothing(ctl: UiController) -> None:
    job_id, status = ctl.start_train(_values(Config(), model__dropout=1.5))
    assert job_id is None
    assert status == "**Error:** model.dropout must be in [0, 1), got 1.5"
    assert "Traceback" not in status and ctl.jobs.list() == []
    assert ctl.validate(_values(Config(), train__selection_metric="acc")).startswith(
        "**Error:** train.selection_metric must be accuracy")


def test_failing_job_shows_the_cli_message_not_a_traceback(ctl: UiController, tmp_path: Path) -> None:
    config = replace(Config(), data={"dataset_dir": str(tmp_path / "no_data")},
                     train={"out_dir": str(tmp_path / "run")}, model={"tiny_conv_use_depthwise": False})
    job_id, status = ctl.start_train(_values(config))
    assert job_id is not None and "running" in status
    job = ctl.job(job_id)
    # The job runs the CLI on a YAML file it reads unchanged.
    assert load_config(Path(job.folder) / "config.yaml") == config
    deadline = time.monotonic() + 90
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.2)
        job = ctl.job(job_id)
    assert job.status == FAILED
    assert "is not a tinyconv dataset" in job.error and "Traceback" not in job.error
    from tinyconv.ui.controller import job_status_md

    assert "**Error:**" in job_status_md(job)


def test_export_and_simulate_check_their_inputs(ctl: UiController, tmp_path: Path) -> None:
    assert ctl.start_export("", ["tflite"], 10) == (None, "**Error:** checkpoint not found: '' (train a model "
                                                          "first, or enter the path of a checkpoint.pt)")
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"")
    assert ctl.start_export(str(ckpt), [], 10)[1] == "**Error:** choose at least one export format"
    assert ctl.start_simulate(str(tmp_path), [], True, 10, 5)[1] == "**Error:** choose at least one MCU budget"
    assert ctl.start_simulate(str(tmp_path / "nope"), ["esp32s3"], True, 10, 5)[1].startswith(
        "**Error:** export not found")


def test_load_and_save_report_errors(ctl: UiController, tmp_path: Path) -> None:
    values, status = ctl.load(str(tmp_path / "missing.yaml"))
    assert values is None and status.startswith("**Error:** config file not found")
    saved, status = ctl.save(_values(Config()), str(tmp_path / "a.yaml"))
    assert saved == str(tmp_path / "a.yaml") and load_config(saved) == Config()


def test_load_takes_a_packaged_recipe_name(ctl: UiController) -> None:
    values, status = ctl.load("quickstart")
    assert status == "Loaded the packaged recipe `quickstart`."
    assert values == config_to_values(load_config("quickstart"))
    values, status = ctl.load("quikstart")  # not a recipe: a path, and a config path must be a .yaml file
    assert values is None and status == "**Error:** a config is a .yaml file, got 'quikstart'"


def test_views_read_stage_outputs(tmp_path: Path) -> None:
    (tmp_path / "history.json").write_text(json.dumps([
        {"epoch": 0, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.5, "val_recall_at_far": 0.1},
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "val_accuracy": 0.75},
    ]))
    loss, acc, done = views.history_frames(tmp_path)
    assert done == 2 and len(loss) == 4 and set(loss.series) == {"train_loss", "val_loss"}
    assert list(acc[acc.series == "val_accuracy"].value) == [0.5, 0.75]
    (tmp_path / "history.json").write_text("[{\"epoch\": 0, ")  # caught mid-write
    assert views.history_frames(tmp_path)[2] == 0
    report = {"pass": False, "budgets": {"tiny_mcu": {
        "kernels": "reference", "arena_bytes_target": 9000, "flash_bytes_needed": 70000, "estimated_latency_ms": 3.21,
        "checks": {"ram": {"available_bytes": 8192, "pass": False}, "flash": {"available_bytes": 65536, "pass": False}},
        "pass": False}}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    view = views.simulation_view(tmp_path)
    row = view["budgets"].iloc[0]
    assert row["result"] == "FAIL" and row["failed checks"] == "ram, flash"
    assert view["verdict"].startswith("FAIL") and view["det"] is None
