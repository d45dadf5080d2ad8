"""Writing benchmark results (benchmarks/results/*.json) without machine-specific absolute paths.

Results are committed: a path is recorded relative to the repository root (`runs/bench_quickstart`,
`../shared/reference_models/m.tflite` beside it), or under the temporary folder as
`$TMPDIR/...`; `resolve_path` turns such a string back into a path on this machine. Every
benchmark script writes through `write_results`; tests/test_benchmark_results.py checks the
committed files.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TMP_MARK = "$TMPDIR"


def _prefixes() -> list[tuple[re.Pattern[str], str]]:
    """(absolute folder, replacement) from the most specific folder to the least."""
    folders = [(REPO, ""), (REPO.parent, "../"), (Path(tempfile.gettempdir()).resolve(), TMP_MARK + "/")]
    out = []
    for folder, short in sorted(folders, key=lambda fs: -len(str(fs[0]))):
        if str(folder) == "/":
            continue
        # The folder at the start of a path: not inside a longer name ("/work/mainline").
        start = rf"(?<![\w.\-/]){re.escape(str(folder))}"
        out.append((re.compile(start + r"/"), short))
        out.append((re.compile(start + r"(?![\w.\-/])"), short.rstrip("/") or "."))
    return out


def portable_text(text: str) -> str:
    """`text` with absolute paths under the repository, beside it or in the temp folder shortened."""
    for pattern, short in _prefixes():
        text = pattern.sub(lambda _m, s=short: s, text)
    return text


def portable(obj: Any) -> Any:
    """A JSON-able structure with every string (keys too) passed through `portable_text`."""
    if isinstance(obj, dict):
        return {portable(k) if isinstance(k, str) else k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, Path):
        return portable_text(str(obj))
    if isinstance(obj, str):
        return portable_text(obj)
    return obj


def resolve_path(text: str | Path) -> Path:
    """A path read back from a results file, on this machine (the inverse of `portable_text`)."""
    s = str(text)
    if s == TMP_MARK or s.startswith(TMP_MARK + "/"):
        return Path(tempfile.gettempdir()) / s[len(TMP_MARK) + 1:]
    return REPO / s  # an absolute path (older files) stays as it is


def write_results(path: str | Path, obj: Any, *, indent: int = 1, default: Any = None,
                  trailing_newline: bool = True) -> Any:
    """Write `obj` as JSON with portable paths; returns what was written (for printing)."""
    data = portable(json.loads(json.dumps(portable(obj), default=default)))  # again: `default` may add text
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=indent) + ("\n" if trailing_newline else ""))
    return data
