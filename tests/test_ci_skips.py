"""Under CI=true a skipped test fails (tests/conftest.py): checked in a child pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    # The probe lives outside tests/ (so no other run collects it); -p loads the repo's conftest.
    test = tmp_path / "test_probe.py"
    test.write_text("import pytest\n\n@pytest.mark.skipif(True, reason='probe prerequisite missing')\n"
                    "def test_probe():\n    pass\n")
    env = dict(os.environ, CI=ci)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "-q", "--rootdir", str(tmp_path), str(test)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_skips_fail_under_ci_and_skip_elsewhere(tmp_path: Path) -> None:
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1 and "skipped under CI=true" in ci.stdout and "probe prerequisite missing" in ci.stdout
    local = _run(tmp_path, "")
    assert local.returncode == 0 and "1 skipped" in local.stdout
