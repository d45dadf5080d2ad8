"""What the tabs show, computed from the files each stage writes (torch-free, browser-free).

Every function reads a stage's output file (history.json, manifest.csv, export manifest.json,
report.json) and returns plain data or a pandas DataFrame for a Gradio widget. Missing or
half-written files give empty results: a poll may land while a stage is still writing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tinyconv.data.manifest import DatasetError, read_manifest, resolve

LOSS_SERIES = ("train_loss", "val_loss")
ACCURACY_SERIES = ("val_accuracy", "val_recall_at_far")


def read_json(path: str | Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, IsADirectoryError):
        return None  # not written yet, or caught mid-write (history.json is not written atomically)


def history_frames(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(loss curves, accuracy curves, epochs done) in long form for gr.LinePlot."""
    history = read_json(Path(run_dir) / "history.json")
    rows = history if isinstance(history, list) else []

    def long(series: tuple[str, ...]) -> pd.DataFrame:
        data = [{"epoch": int(r["epoch"]) + 1, "value": float(r[s]), "series": s}
                for r in rows for s in series if s in r]
        return pd.DataFrame(data, columns=["epoch", "value", "series"])

    return long(LOSS_SERIES), long(ACCURACY_SERIES), len(rows)


def sample_clips(dataset_dir: str | Path, per_kind: int = 3) -> list[tuple[str, str]]:
    """A few clips of each kind (positive, confusable, speech, background) as (label, path)."""
    try:
        rows, _ = read_manifest(dataset_dir)
    except DatasetError:
        return []
    picked: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        kind = row.kind or row.label
        bucket = picked.setdefault(kind, [])
        if len(bucket) < per_kind:
            name = f"{kind} [{row.split}] {row.text or Path(row.path).stem}"
            bucket.append((name, str(resolve(dataset_dir, row))))
    return [clip for bucket in picked.values() for clip in bucket]


def dataset_summary(dataset_dir: str | Path) -> pd.DataFrame:
    """Clips per split and label."""
    try:
        rows, info = read_manifest(dataset_dir)
    except DatasetError:
        return pd.DataFrame(columns=["split", "label", "clips"])
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[(row.split, row.label)] = counts.get((row.split, row.label), 0) + 1
    return pd.DataFrame([{"split": s, "label": lbl, "clips": n} for (s, lbl), n in sorted(counts.items())],
                        columns=["split", "label", "clips"])


def export_files(export_dir: str | Path) -> list[str]:
    """The exported files to offer for download (manifest first)."""
    root = Path(export_dir)
    if not root.is_dir():
        return []
    files = sorted((p for p in root.iterdir() if p.is_file()), key=lambda p: (p.name != "manifest.json", p.name))
    return [str(p) for p in files]


def export_summary(export_dir: str | Path) -> str:
    """Markdown: files, sizes and quantization from the export manifest."""
    manifest = read_json(Path(export_dir) / "manifest.json")
    if not isinstance(manifest, dict):
        return ""
    lines = ["| file | bytes |", "|---|---|"]
    for name, meta in manifest.get("files", {}).items():
        lines.append(f"| `{name}` | {meta.get('bytes', '')} |")
    inp = manifest.get("input", {})
    if inp:
        lines += ["", f"Input {inp.get('shape')} int8, scale {inp.get('scale')}, zero point {inp.get('zero_point')}."]
    labels = manifest.get("labels")
    if labels:
        lines.append("Labels: " + ", ".join(f"`{label}`" for label in labels) + ".")
    return "\n".join(lines)


def budget_table(report: dict[str, Any]) -> pd.DataFrame:
    """The pass/fail table: one row per MCU budget, failing checks named."""
    columns = ["budget", "kernels", "arena B", "RAM available B", "flash needed B", "flash available B",
               "est. latency ms", "failed checks", "result"]
    rows = []
    for name, b in (report.get("budgets") or {}).items():
        checks = b.get("checks", {})
        rows.append({
            "budget": name, "kernels": b.get("kernels"), "arena B": b.get("arena_bytes_target"),
            "RAM available B": checks.get("ram", {}).get("available_bytes"),
            "flash needed B": b.get("flash_bytes_needed"),
            "flash available B": checks.get("flash", {}).get("available_bytes"),
            "est. latency ms": round(float(b.get("estimated_latency_ms", float("nan"))), 2),
            "failed checks": ", ".join(k for k, c in checks.items() if not c.get("pass", True)),
            "result": "PASS" if b.get("pass") else "FAIL",
        })
    return pd.DataFrame(rows, columns=columns)


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def runtime_table(report: dict[str, Any]) -> pd.DataFrame:
    columns = ["runtime", "p50 ms", "accuracy", "drop vs float", "error"]
    rows = []
    for name, r in (report.get("runtimes") or {}).items():
        lat = r.get("latency") or {}
        rows.append({"runtime": name, "p50 ms": _round(lat.get("p50_ms"), 3), "accuracy": _round(r.get("accuracy"), 4),
                     "drop vs float": _round(r.get("accuracy_drop"), 4), "error": r.get("error", "")})
    return pd.DataFrame(rows, columns=columns)


def simulation_view(sim_dir: str | Path) -> dict[str, Any]:
    """Everything the simulate tab shows, from report.json and the plots next to it."""
    root = Path(sim_dir)
    report = read_json(root / "report.json")
    if not isinstance(report, dict):
        return {"verdict": "", "budgets": budget_table({}), "runtimes": runtime_table({}), "det": None,
                "memory": None, "markdown": ""}
    verdict = "PASS: every budget fits" if report.get("pass", True) else "FAIL: a budget is exceeded"
    md = root / "report.md"
    return {
        "verdict": verdict,
        "budgets": budget_table(report),
        "runtimes": runtime_table(report),
        "det": str(root / "det.png") if (root / "det.png").is_file() else None,
        "memory": str(root / "arena.png") if (root / "arena.png").is_file() else None,
        "markdown": md.read_text() if md.is_file() else "",
    }
