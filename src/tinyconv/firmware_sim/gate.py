"""Size and quality gates: compare an export against a committed baseline JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyconv.firmware_sim.arena import measure_host_arena
from tinyconv.firmware_sim.errors import ModelError
from tinyconv.firmware_sim.model import load_tflite
from tinyconv.firmware_sim.report import resolve_target

BASELINE_VERSION = 1
DEFAULT_TOLERANCE = {"model_bytes_pct": 2.0, "arena_bytes_pct": 2.0, "macs_pct": 0.0, "accuracy_drop": 0.01}
REGENERATE = "regenerate with `tinyconv gate EXPORT_DIR --baseline FILE --write-baseline`"


def measure(target: str | Path, *, dataset_dir: str | Path | None = None, max_clips: int | None = None) -> dict[str, Any]:
    """The gated numbers of an export: model bytes, host arena, MACs, TFLM accuracy (if a dataset)."""
    files = resolve_target(target)
    if files.tflite is None:
        raise ModelError(f"{target}: the gate needs model_int8.tflite")
    model = load_tflite(files.tflite)
    out: dict[str, Any] = {"model_bytes": model.model_bytes, "arena_bytes": measure_host_arena(model).arena_bytes,
                           "macs": model.macs, "accuracy": None}
    dataset = dataset_dir
    if dataset is None and files.manifest.get("dataset_dir"):
        # The export's own dataset is used only where it still exists (exports travel, data stays).
        dataset = files.manifest["dataset_dir"] if Path(files.manifest["dataset_dir"]).is_dir() else None
    if dataset is not None:
        from tinyconv.firmware_sim.accuracy import RunnerSpec, evaluate_dataset

        acc = evaluate_dataset([RunnerSpec("tflm", tflite_path=str(model.path), arena_size=out["arena_bytes"])],
                               dataset, labels=files.manifest.get("labels"), max_clips=max_clips)
        out["accuracy"] = acc["runtimes"]["tflm"]["accuracy"]
    return out


def write_baseline(metrics: dict[str, Any], path: str | Path, tolerance: dict[str, float] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"baseline_version": BASELINE_VERSION, "note": REGENERATE, "metrics": metrics,
               "tolerance": {**DEFAULT_TOLERANCE, **(tolerance or {})}}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def read_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"baseline not found: {path} ({REGENERATE})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: baseline is not valid JSON ({exc}); {REGENERATE}") from None
    if not isinstance(raw, dict) or raw.get("baseline_version") != BASELINE_VERSION or "metrics" not in raw:
        raise ValueError(f"{path}: not a tinyconv gate baseline (baseline_version {BASELINE_VERSION}); {REGENERATE}")
    unknown = set(raw.get("tolerance", {})) - set(DEFAULT_TOLERANCE)
    if unknown:
        raise ValueError(f"{path}: unknown tolerance keys {sorted(unknown)}; known: {sorted(DEFAULT_TOLERANCE)}")
    return raw


def compare(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Per-metric verdicts; size/arena/MACs fail when they grow beyond tolerance, accuracy when it drops."""
    base, tol = baseline["metrics"], {**DEFAULT_TOLERANCE, **baseline.get("tolerance", {})}
    checks: dict[str, Any] = {}
    for key, tkey in (("model_bytes", "model_bytes_pct"), ("arena_bytes", "arena_bytes_pct"), ("macs", "macs_pct")):
        b, c = base.get(key), current.get(key)
        if b is None or c is None:
            continue
        growth = 100.0 * (c - b) / b if b else 0.0
        checks[key] = {"baseline": b, "current": c, "change_pct": growth, "tolerance_pct": tol[tkey],
                       "pass": growth <= tol[tkey]}
    b, c = base.get("accuracy"), current.get("accuracy")
    if b is not None and c is not None:
        checks["accuracy"] = {"baseline": b, "current": c, "drop": b - c, "tolerance": tol["accuracy_drop"],
                              "pass": b - c <= tol["accuracy_drop"]}
    return {"checks": checks, "pass": all(v["pass"] for v in checks.values())}
