"""Background jobs for the UI: each job is a `tinyconv` CLI subprocess with a folder on disk.

Why a subprocess and not a thread: cancelling must really stop the work (training loops, fork
pools of the synthesizer) and a Python thread cannot be killed. Each job runs in its own
process group, so cancel signals every child process too.

Why a folder per job (`ROOT/<job id>/job.json`, `log.txt`, `config.yaml`): the state lives on
the server, not in the browser, so a page refresh (or a second tab) finds the running job again
by its id. The config a job runs with is written as YAML that the CLI reads unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinyconv.data.workers import pid_alive
from tinyconv.errors import TinyconvError

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
LOST = "lost"  # the UI server restarted while the job ran, and the process is gone
FINAL = (SUCCEEDED, FAILED, CANCELLED, LOST)

JOB_FILE = "job.json"
LOG_FILE = "log.txt"


class JobError(TinyconvError, ValueError):
    """A job cannot be started, found or cancelled."""


@dataclass
class Job:
    """One background job as persisted in its `job.json`."""

    id: str
    kind: str
    argv: list[str]
    status: str
    pid: int
    started: float
    folder: str
    finished: float | None = None
    returncode: int | None = None
    # Exit codes that count as success: `tinyconv simulate` exits 1 when a budget fails, which is a
    # result to show in the report, not a crashed job.
    ok_returncodes: list[int] = field(default_factory=lambda: [0])
    outputs: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def log_path(self) -> Path:
        return Path(self.folder) / LOG_FILE

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.time()) - self.started

    @property
    def done(self) -> bool:
        return self.status in FINAL


def cli_argv(*args: str) -> list[str]:
    """The `tinyconv` CLI with this interpreter (the console script may not be on PATH)."""
    return [sys.executable, "-m", "tinyconv.cli", *args]


_CLI_ERROR = re.compile(r"^tinyconv(?: [\w-]+)*: error: (.*)$")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failure|Interrupt)): (.*)$")


def readable_error(log_text: str) -> str:
    """One line for the user from a failed job's output, not the stack trace.

    The CLI prints `tinyconv CMD: error: MESSAGE` for input errors (ConfigError and friends);
    anything else ends in a traceback whose last `SomeError: message` line says what went wrong.
    """
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        m = _CLI_ERROR.match(line)
        if m:
            return m.group(1)
    for line in reversed(lines):
        m = _EXCEPTION.match(line)
        if m:
            return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"
    return lines[-1] if lines else "the job failed without output"


def tail(path: Path, max_lines: int = 15, max_bytes: int = 16_384) -> str:
    """The last lines of a log without reading all of it."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    # tqdm progress bars redraw with carriage returns; keep the latest state of each line.
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(lines[-max_lines:])


class JobManager:
    """Starts, tracks and cancels jobs under `root`; safe to call from Gradio's worker threads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- persistence -------------------------------------------------------------------------
    def _write(self, job: Job) -> None:
        path = Path(job.folder) / JOB_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(job), indent=1))
        tmp.replace(path)  # atomic: a poll never reads half a file

    def _read(self, job_id: str) -> Job:
        if not re.fullmatch(r"\w[\w.-]*", job_id or ""):  # no "..", no path separators
            raise JobError(f"invalid job id {job_id!r}")
        path = self.root / job_id / JOB_FILE
        try:
            return Job(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise JobError(f"no job {job_id!r} under {self.root}") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise JobError(f"{path} is unreadable: {exc}") from None

    # -- lifecycle ---------------------------------------------------------------------------
    def new_folder(self, kind: str) -> tuple[str, Path]:
        """A fresh job id and its folder, for writing inputs (config.yaml) before `start`."""
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
        folder = self.root / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def start(self, kind: str, argv: list[str], *, job_id: str | None = None, outputs: dict[str, str] | None = None,
              meta: dict[str, Any] | None = None, ok_returncodes: tuple[int, ...] = (0,)) -> Job:
        """Run `argv` in the background; one job of each kind at a time (2 cores are shared)."""
        with self._lock:
            running = self.latest(kind)
            if running is not None and running.status == RUNNING:
                raise JobError(f"a {kind} job is already running ({running.id}); wait for it or cancel it first")
            if job_id is None:
                job_id, folder = self.new_folder(kind)
            else:
                folder = self.root / job_id
                folder.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(folder / LOG_FILE, "wb") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
            job = Job(id=job_id, kind=kind, argv=list(argv), status=RUNNING, pid=proc.pid, started=time.time(),
                      folder=str(folder), ok_returncodes=list(ok_returncodes), outputs=dict(outputs or {}),
                      meta=dict(meta or {}))
            self._procs[job_id] = proc
            self._write(job)
        threading.Thread(target=self._wait, args=(job_id, proc), daemon=True, name=f"job-{job_id}").start()
        return job

    def _wait(self, job_id: str, proc: subprocess.Popen[bytes]) -> None:
        rc = proc.wait()
        with self._lock:
            job = self._read(job_id)
            job.returncode = rc
            job.finished = time.time()
            if job.status == RUNNING:  # not cancelled meanwhile
                job.status = SUCCEEDED if rc in job.ok_returncodes else FAILED
                if job.status == FAILED:
                    job.error = readable_error(tail(job.log_path, max_lines=200, max_bytes=65_536))
            self._procs.pop(job_id, None)
            self._write(job)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._read(job_id)
            if job.status == RUNNING and job_id not in self._procs and not pid_alive(job.pid):
                # Started by an earlier server process whose waiter thread is gone.
                job.status, job.finished = LOST, time.time()
                job.error = "the UI server restarted while this job ran; its outcome is unknown (see the log)"
                self._write(job)
            return job

    def list(self, kind: str | None = None) -> list[Job]:
        """Jobs, newest first."""
        jobs = []
        for path in sorted(self.root.glob(f"*/{JOB_FILE}"), reverse=True):
            try:
                job = self.get(path.parent.name)
            except JobError:
                continue  # a half-created folder; not worth failing the whole list
            if kind is None or job.kind == kind:
                jobs.append(job)
        jobs.sort(key=lambda j: j.started, reverse=True)
        return jobs

    def latest(self, kind: str) -> Job | None:
        jobs = self.list(kind)
        return jobs[0] if jobs else None

    def cancel(self, job_id: str, grace_s: float = 5.0) -> Job:
        """Stop the job's whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        with self._lock:
            job = self.get(job_id)
            if job.done:
                return job
            job.status = CANCELLED
            self._write(job)  # first, so the waiter thread does not record a failure
            proc = self._procs.get(job_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc is not None else not pid_alive(job.pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(timeout=5)
        if proc is not None:
            proc.wait(timeout=5)
        # The process group may still hold children (pool workers) for a moment; SIGKILL them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)
        with self._lock:
            job = self._read(job_id)
            job.finished = job.finished or time.time()
            self._write(job)
        return job
