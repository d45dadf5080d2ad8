"""README.md's Python API example runs as written (config -> data -> train -> export -> simulate)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import skip_unless_ci

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme-api-example"


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    if MARKER not in text:
        raise AssertionError(f"README.md lost its {MARKER} marker (this test runs the block after it)")
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None, f"no ```python block after {MARKER} in README.md"
    return block.group(1)


@pytest.mark.slow  # synthesizes, trains and exports the README example (~90 s)
def test_readme_example_runs(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")
    code = readme_example()
    assert "tinyconv.simulate(" in code and "tinyconv.train(" in code  # the block is the one meant
    # Run as a user would: saved to a file (worker processes import it, so its guard matters).
    (tmp_path / "example.py").write_text(code)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert re.search(r"^test accuracy [0-9.]+$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^esp32s3: (PASS|FAIL), arena \d+ B, [0-9.]+ ms per inference$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^fits every budget: (True|False) - report sections: .*\bbudgets\b", proc.stdout, re.M)
    assert (tmp_path / "runs" / "api_demo" / "export" / "manifest.json").is_file()
