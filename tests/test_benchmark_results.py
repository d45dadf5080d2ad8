"""Committed benchmark results hold no machine's absolute paths (benchmarks/_results.py writes them)."""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# benchmarks/ is a folder of scripts, not a package: load its helper from the file.
_spec = importlib.util.spec_from_file_location("benchmark_results_io", REPO / "benchmarks" / "_results.py")
assert _spec is not None and _spec.loader is not None
_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_results)
portable, portable_text, resolve_path, write_results = (
    _results.portable, _results.portable_text, _results.resolve_path, _results.write_results)

# An absolute POSIX path (or a home-relative one) at the start of a string or after a separator:
# "/work/main/runs", "see /tmp/x", "~/data"; not "1/25.6", "ms/clip" or "N/A".
ABSOLUTE = re.compile(r"(?:^|[\s'\"(=:,\[])(?:/[\w.\-]+(?:/|$)|~/)")


def _strings(obj: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k, f"{where}.{k}")
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


def test_committed_results_hold_no_absolute_paths() -> None:
    files = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    assert files, "no benchmarks/results/*.json"
    found = [f"{p.name}{where}: {text[:120]!r}" for p in files for where, text in _strings(json.loads(p.read_text()))
             if ABSOLUTE.search(text)]
    assert not found, ("absolute paths in committed results (write them with benchmarks/_results.py "
                       "write_results):\n" + "\n".join(found[:20]))


def test_the_scan_finds_absolute_paths() -> None:
    hits = [t for t in ["/work/main/runs/x", "see /tmp/a/b", "~/data", "dir=/home/u"] if ABSOLUTE.search(t)]
    assert len(hits) == 4
    assert not [t for t in ["runs/x", "1/25.6 steps", "ms/clip", "N/A", "$TMPDIR/x", "../shared/m.tflite"]
                if ABSOLUTE.search(t)]


def test_paths_are_written_relative_to_the_repository_and_read_back(tmp_path: Path) -> None:
    tmp = Path(tempfile.gettempdir()).resolve()
    report = {
        "config": str(REPO / "src" / "tinyconv" / "recipes" / "quickstart.yaml"),
        "work_dir": REPO / "runs" / "e2e_tiny",
        "models": [str(REPO.parent / "shared" / "reference_models" / "m.tflite"), str(REPO)],
        "dataset": str(tmp / "bench" / "data"),
        "error": f"FileNotFoundError: {REPO}/runs/x/checkpoint.pt",
        "other": "/opt/data",  # neither in nor beside the repository nor temporary: left as it is
        "similar": f"{REPO}line/x",  # a longer folder name is not the repository
    }
    written = write_results(tmp_path / "r.json", report)
    assert json.loads((tmp_path / "r.json").read_text()) == written == {
        "config": "src/tinyconv/recipes/quickstart.yaml",
        "work_dir": "runs/e2e_tiny",
        "models": ["../shared/reference_models/m.tflite", "."],
        "dataset": "$TMPDIR/bench/data",
        "error": "FileNotFoundError: runs/x/checkpoint.pt",
        "other": "/opt/data",
        "similar": portable_text(f"{REPO}line/x"),
    }
    assert written["similar"] != "line/x"
    assert resolve_path(written["work_dir"]) == REPO / "runs" / "e2e_tiny"
    assert resolve_path(written["dataset"]) == tmp / "bench" / "data"
    shared_model = REPO.parent / "shared" / "reference_models" / "m.tflite"
    assert resolve_path(written["models"][0]).resolve() == shared_model.resolve()
    assert portable({"k": 1.5, "n": None}) == {"k": 1.5, "n": None}
