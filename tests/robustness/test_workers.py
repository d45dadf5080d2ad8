"""A SIGKILLed run leaves no worker process behind (synthesis and feature extraction pools)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import TINY_OVERRIDES

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[1], []).append(int(entry))
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            st = _stat(child)
            if st is not None and child not in out:
                out[child] = st[2]
                todo.append(child)
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[0] != "Z"  # same process, not a zombie


def _kill_when_workers_run(cmd: list[str], min_workers: int, timeout_s: float = 120.0) -> dict[int, int]:
    """Start `cmd`, SIGKILL it once it has `min_workers` pool workers; return its descendants then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            kids = _descendants(proc.pid)
            # workers are children of the forkserver, itself a child of the run
            workers = [p for p in kids if (st := _stat(p)) is not None and st[1] in kids]
            if len(workers) >= min_workers:
                break
            assert proc.poll() is None, f"the run ended before its workers were seen: {proc.stderr.read()[-2000:]!r}"
            assert time.monotonic() < deadline, "no pool workers appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return kids


def _assert_all_exit(kids: dict[int, int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := [p for p, start in kids.items() if _alive(p, start)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # clean up before failing, so a regression does not leak processes
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes still running {within_s} s after their run was killed: {left}"


def test_killing_a_synthesis_run_ends_its_worker_processes(tmp_path: Path) -> None:
    sets = [*TINY_OVERRIDES, "data.num_positive=400", "data.num_workers=2"]
    cmd = [sys.executable, "-m", "tinyconv.cli", "data", "synth", "--out", str(tmp_path / "ds"),
           *[a for s in sets for a in ("--set", s)]]
    kids = _kill_when_workers_run(cmd, min_workers=2)
    assert len(kids) >= 3  # the fork server and two workers, at least
    _assert_all_exit(kids)


def test_killing_a_run_mid_feature_extraction_ends_its_workers() -> None:
    # Feature extraction (`data check`, train, export) maps over the same parallel_map pool;
    # workers sleeping in a task are the hardest case: they never read their queue again.
    code = ("import time; from tinyconv.data.synth import parallel_map; "
            "list(parallel_map(time.sleep, [30.0] * 16, 2, 'features'))")
    kids = _kill_when_workers_run([sys.executable, "-c", code], min_workers=2)
    _assert_all_exit(kids)
