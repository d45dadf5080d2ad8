"""The job manager: background subprocesses whose state persists in a folder; cancel really stops them."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tinyconv.ui.jobs import CANCELLED, FAILED, LOST, RUNNING, SUCCEEDED, JobError, JobManager, readable_error


def _wait_done(jobs: JobManager, job_id: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job.done:
            return job.status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_job_output_and_state_persist_for_a_new_manager(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    job = jobs.start("train", [sys.executable, "-c", "print('hello from the job')"], outputs={"run_dir": "x"})
    assert _wait_done(jobs, job.id) == SUCCEEDED
    # A page refresh or a restarted server finds the job again through its folder.
    again = JobManager(tmp_path)
    found = again.get(job.id)
    assert found.status == SUCCEEDED and found.returncode == 0 and found.outputs == {"run_dir": "x"}
    assert again.latest("train").id == job.id
    assert "hello from the job" in found.log_path.read_text()


def test_failed_job_gets_a_readable_error_not_a_traceback(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    job = jobs.start("export", [sys.executable, "-c", "raise ValueError('checkpoint is from the future')"])
    assert _wait_done(jobs, job.id) == FAILED
    assert jobs.get(job.id).error == "ValueError: checkpoint is from the future"


def test_ok_returncodes_count_as_success(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    job = jobs.start("simulate", [sys.executable, "-c", "raise SystemExit(1)"], ok_returncodes=(0, 1))
    assert _wait_done(jobs, job.id) == SUCCEEDED and jobs.get(job.id).returncode == 1


def test_cancel_stops_the_job_and_its_children(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n")
    job = jobs.start("synth", [sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not job.log_path.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(job.log_path.read_text().split()[0])
    t0 = time.monotonic()
    assert jobs.cancel(job.id).status == CANCELLED
    assert time.monotonic() - t0 < 10
    assert not _alive(job.pid) and not _alive(child)
    assert _wait_done(jobs, job.id) == CANCELLED  # the waiter thread must not overwrite it as failed


def test_one_running_job_per_kind(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    job = jobs.start("train", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(JobError, match="a train job is already running"):
            jobs.start("train", [sys.executable, "-c", "pass"])
    finally:
        jobs.cancel(job.id)


def test_job_of_a_vanished_server_is_reported_lost(tmp_path: Path) -> None:
    jobs = JobManager(tmp_path)
    job = jobs.start("train", [sys.executable, "-c", "pass"])
    _wait_done(jobs, job.id)
    path = Path(job.folder) / "job.json"
    raw = json.loads(path.read_text()) | {"status": RUNNING, "pid": 2**22 + 12345}  # above pid_max: dead
    path.write_text(json.dumps(raw))
    lost = JobManager(tmp_path).get(job.id)
    assert lost.status == LOST and "server restarted" in (lost.error or "")


def test_unknown_job_id_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="no job 'nope'"):
        JobManager(tmp_path).get("nope")
    with pytest.raises(JobError, match="invalid job id"):
        JobManager(tmp_path).get("../etc")


@pytest.mark.parametrize(("log", "expected"), [
    ("loading\ntinyconv train: error: unknown key model.dropuot (did you mean 'dropout'?)\n",
     "unknown key model.dropuot (did you mean 'dropout'?)"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
     "tinyconv.export.errors.ExportError: the model has no INT8 path\n", "ExportError: the model has no INT8 path"),
    ("", "the job failed without output"),
])
def test_readable_error(log: str, expected: str) -> None:
    assert readable_error(log) == expected
