"""Size and quality gates: compare an export against a committed baseline JSON."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.errors import ModelError
from tinyconv.device.tflite_file import load_tflite
from tinyconv.errors import TinyconvError
from tinyconv.firmware_sim.report import resolve_target

BASELINE_VERSION = 1
DEFAULT_TOLERANCE = {"model_bytes_pct": 2.0, "arena_bytes_pct": 2.0, "macs_pct": 0.0, "accuracy_drop": 0.01}
REGENERATE = "regenerate with `tinyconv gate EXPORT_DIR --baseline FILE --write-baseline`"
METRIC_KEYS = ("model_bytes", "arena_bytes", "macs", "accuracy")
_TOP_KEYS = ("baseline_version", "note", "metrics", "tolerance")


class BaselineError(TinyconvError, ValueError):
    """A gate baseline file is unreadable, of the wrong shape, or holds values that cannot gate anything."""


def _suggest(key: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(value: Any) -> bool:
    # bool is an int subclass, and NaN/inf compare false against every tolerance: neither gates anything.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def measure(target: str | Path, *, dataset_dir: str | Path | None = None,
            max_clips: int | None = None) -> dict[str, Any]:
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
        if dataset is None:  # said out loud: a baseline that gates accuracy then fails instead of passing
            out["accuracy_unavailable"] = (f"the export's dataset_dir {files.manifest['dataset_dir']} does not "
                                           f"exist; pass --dataset DIR")
    elif dataset is None:
        out["accuracy_unavailable"] = "no dataset (none given, and no export manifest names one); pass --dataset DIR"
    if dataset is not None:
        from tinyconv.firmware_sim.accuracy import RunnerSpec, evaluate_dataset

        acc = evaluate_dataset([RunnerSpec("tflm", tflite_path=str(model.path), arena_size=out["arena_bytes"])],
                               dataset, labels=files.manifest.get("labels"), max_clips=max_clips)
        out["accuracy"] = acc["runtimes"]["tflm"]["accuracy"]
    return out


def write_baseline(metrics: dict[str, Any], path: str | Path, tolerance: dict[str, float] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"baseline_version": BASELINE_VERSION, "note": REGENERATE,
               "metrics": {k: metrics.get(k) for k in METRIC_KEYS},
               "tolerance": {**DEFAULT_TOLERANCE, **(tolerance or {})}}
    from tinyconv.firmware_sim.report import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def read_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"baseline not found: {path} ({REGENERATE})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: baseline is not valid JSON ({exc}); {REGENERATE}") from None
    if not isinstance(raw, dict):
        raise BaselineError(f"{path}: not a tinyconv gate baseline (a JSON {type(raw).__name__}, expected an object "
                            f"with baseline_version {BASELINE_VERSION}); {REGENERATE}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise BaselineError(f"{path}: unknown baseline key {key!r}{_suggest(str(key), _TOP_KEYS)}; "
                                f"known: {list(_TOP_KEYS)}")
    if raw.get("baseline_version") != BASELINE_VERSION or "metrics" not in raw:
        raise BaselineError(f"{path}: not a tinyconv gate baseline (baseline_version {BASELINE_VERSION}); {REGENERATE}")
    metrics, tolerance = raw["metrics"], raw.get("tolerance", {})
    for section, value in (("metrics", metrics), ("tolerance", tolerance)):
        if not isinstance(value, dict):
            raise BaselineError(f"{path}: {section} must be a JSON object, got {type(value).__name__} {value!r:.60}")
    unknown = sorted(set(tolerance) - set(DEFAULT_TOLERANCE))
    if unknown:
        raise BaselineError(f"{path}: unknown tolerance keys {unknown}{_suggest(unknown[0], list(DEFAULT_TOLERANCE))}; "
                            f"known: {sorted(DEFAULT_TOLERANCE)}")
    for key, value in tolerance.items():
        if not _number(value) or value < 0:
            raise BaselineError(f"{path}: tolerance.{key} must be a finite number >= 0, got {value!r:.60}")
    for key, value in metrics.items():
        if key not in METRIC_KEYS:
            raise BaselineError(f"{path}: unknown metric {key!r}{_suggest(str(key), METRIC_KEYS)}; "
                                f"known: {list(METRIC_KEYS)}")
        if value is None:  # an explicit null: this metric is not gated
            continue
        if key == "accuracy":
            if not _number(value) or not 0.0 <= value <= 1.0:
                raise BaselineError(f"{path}: metrics.accuracy must be a number in [0, 1] or null, got {value!r:.60}")
        elif not (_number(value) and float(value).is_integer()) or value < (0 if key == "macs" else 1):
            need = "an integer >= 0" if key == "macs" else "a positive integer"
            raise BaselineError(f"{path}: metrics.{key} must be {need} or null, got {value!r:.60}; {REGENERATE}")
    return raw


def compare(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Per-metric verdicts; size/arena/MACs fail when they grow beyond tolerance, accuracy when it drops.

    A gate never passes vacuously: no metric to compare is a failure with a `reason`, and an
    accuracy the baseline gates but this run could not measure is a failed check.
    """
    base, tol = baseline["metrics"], {**DEFAULT_TOLERANCE, **baseline.get("tolerance", {})}
    checks: dict[str, Any] = {}
    for key, tkey in (("model_bytes", "model_bytes_pct"), ("arena_bytes", "arena_bytes_pct"), ("macs", "macs_pct")):
        b, c = base.get(key), current.get(key)
        if b is None or c is None:
            continue
        growth = 100.0 * (c - b) / b if b else (0.0 if c == b else math.inf)  # from 0 MACs any growth fails
        checks[key] = {"baseline": b, "current": c, "change_pct": growth, "tolerance_pct": tol[tkey],
                       "pass": growth <= tol[tkey]}
    b, c = base.get("accuracy"), current.get("accuracy")
    if b is not None and c is not None:
        checks["accuracy"] = {"baseline": b, "current": c, "drop": b - c, "tolerance": tol["accuracy_drop"],
                              "pass": b - c <= tol["accuracy_drop"]}
    elif b is not None:
        checks["accuracy"] = {"baseline": b, "current": None, "tolerance": tol["accuracy_drop"], "pass": False,
                              "reason": "accuracy not measured: " + current.get("accuracy_unavailable",
                                                                                 "no dataset; pass --dataset DIR")}
    if not checks:
        return {"checks": checks, "pass": False,
                "reason": f"nothing to compare: the baseline gates no metric (all missing or null); {REGENERATE}"}
    return {"checks": checks, "pass": all(v["pass"] for v in checks.values())}
