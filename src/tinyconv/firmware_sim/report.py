"""`simulate`: every number a firmware engineer needs about an exported model, in one report."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from tinyconv.device.arena import measure_host_arena
from tinyconv.device.errors import ModelError, RuntimeFailure
from tinyconv.device.runners import TFLITE_RUNTIMES, check_onnx, check_runtimes, host_latency_ms, make_runner
from tinyconv.device.tflite_file import TfliteModel, load_tflite
from tinyconv.device.tflm_log import explain_tflm_error
from tinyconv.firmware_sim.arena import arena_breakdown, target_arena
from tinyconv.firmware_sim.budgets import McuBudget, load_budget
from tinyconv.firmware_sim.costmodel import estimate_code_bytes, estimate_for_budget

SCHEMA_VERSION = 1
# Headroom TFLM needs over the bisected minimum is zero by definition; firmware should add its own.


@dataclass(frozen=True)
class ExportFiles:
    tflite: Path | None
    onnx_int8: Path | None
    onnx_float: Path | None
    manifest: dict[str, Any]
    root: Path


def resolve_target(target: str | Path) -> ExportFiles:
    """An export dir (manifest.json + model files) or a single .tflite / .onnx file."""
    p = Path(target)
    if not p.exists():
        raise FileNotFoundError(f"no such model file or export directory: {p}")
    if p.is_dir():
        manifest: dict[str, Any] = {}
        mpath = p / "manifest.json"
        if mpath.is_file():
            from tinyconv.firmware_sim.export_manifest import read_export_manifest

            manifest = read_export_manifest(mpath)  # structure, labels and every file's sha256
        files = {n: (p / n if (p / n).is_file() else None)
                 for n in ("model_int8.tflite", "model_int8.onnx", "model_float.onnx")}
        esphome = manifest.get("esphome")  # an ESPHome export: <name>.tflite is the streaming model
        if (files["model_int8.tflite"] is None and isinstance(esphome, dict)
                and (p / str(esphome.get("model"))).is_file()):
            files["model_int8.tflite"] = p / str(esphome["model"])
        if not any(files.values()):
            raise ModelError(f"{p}: no model_int8.tflite, model_int8.onnx or model_float.onnx "
                             f"(is this a `tinyconv export` directory?)")
        return ExportFiles(files["model_int8.tflite"], files["model_int8.onnx"], files["model_float.onnx"], manifest, p)
    if p.suffix == ".tflite":
        return ExportFiles(p, None, None, {}, p.parent)
    if p.suffix == ".onnx":
        return ExportFiles(None, p, None, {}, p.parent)
    raise ModelError(f"{p}: expected a .tflite or .onnx file or an export directory, got {p.suffix or 'no suffix'!r}")


def check_budget_compat(model: TfliteModel, budget: McuBudget) -> None:
    if budget.int8_only and not model.is_int8_only:
        names = ", ".join(f"{t.name or t.index} ({t.dtype})" for t in (model.float_tensors or model.inputs)[:3])
        raise ModelError(f"{Path(model.path).name} is not an int8-only model (float tensors: {names}) but budget "
                         f"{budget.name!r} links only int8 kernels; export with full-integer quantization "
                         f"or set int8_only: false in the profile")


def evaluate_budget(model: TfliteModel, budget: McuBudget, arena_target: int) -> dict[str, Any]:
    code = estimate_code_bytes(model, budget.kernels)
    latency = estimate_for_budget(model, budget)
    flash_needed = model.model_bytes + code["total_bytes"]

    def check(unit: str, need: float, have: float) -> dict[str, Any]:
        return {f"needed_{unit}": need, f"available_{unit}": have, "margin": have - need,
                "margin_pct": 100.0 * (have - need) / have, "pass": need <= have}

    checks = {
        "ram": check("bytes", arena_target, budget.ram_available_bytes),
        "flash": check("bytes", flash_needed, budget.flash_available_bytes),
    }
    if budget.max_latency_ms is not None:
        checks["latency"] = check("ms", latency["latency_ms"], budget.max_latency_ms)
    return {
        "name": budget.name, "core": budget.core, "clock_mhz": budget.clock_mhz, "kernels": budget.kernels,
        "arena_bytes_target": arena_target, "code_bytes_estimate": code, "flash_bytes_needed": flash_needed,
        "estimated_latency_ms": latency["latency_ms"], "latency": latency,
        "checks": checks, "pass": all(c["pass"] for c in checks.values()),
    }


def simulate(target: str | Path, budgets: list[str], *, out_dir: str | Path | None = None,
             dataset_dir: str | Path | None = None, max_clips: int | None = None, streaming: bool = False,
             latency_repeats: int = 50, workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    for key, value in (("latency_repeats", latency_repeats), ("max_clips", max_clips), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"simulate: {key} must be a positive integer, got {value!r}")
    files = resolve_target(target)
    loaded = [load_budget(b) for b in budgets]
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "target": str(target), "runtimes": {}}
    model: TfliteModel | None = None
    if files.tflite is not None:
        model = load_tflite(files.tflite)
        for b in loaded:
            check_budget_compat(model, b)
    for onnx_path in (files.onnx_int8, files.onnx_float):
        if onnx_path is not None:
            check_onnx(onnx_path)
    if model is not None:
        report["model_bytes"] = model.model_bytes
    else:
        onnx_file = files.onnx_int8 or files.onnx_float
        assert onnx_file is not None, "resolve_target returns at least one model file"
        report["model_bytes"] = onnx_file.stat().st_size
    report["macs"] = model.macs if model else None

    specs = []
    from tinyconv.firmware_sim.accuracy import RunnerSpec

    if model is not None:
        try:
            host = measure_host_arena(model)
        except RuntimeFailure as exc:
            raise ModelError(
                f"{model.path}: TFLite Micro cannot run this model: {explain_tflm_error(str(exc))}") from None
        status = check_runtimes(model, list(TFLITE_RUNTIMES), host.arena_bytes)
        if tflm_error := status.get("tflm"):
            raise ModelError(f"{model.path}: TFLite Micro cannot run this model: {explain_tflm_error(tflm_error)}")
        report.update({
            "model": {"path": model.path, "sha256": model.sha256, "ops": model.op_names,
                      "num_ops": len(model.main_ops), "weight_bytes": model.weight_bytes,
                      "int8_only": model.is_int8_only, "streaming": model.is_streaming,
                      "inputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in model.inputs],
                      "outputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in model.outputs]},
            "arena_bytes_host": host.arena_bytes,
            "arena": arena_breakdown(model, host),
        })
        for rt in TFLITE_RUNTIMES:
            if status.get(rt):
                report["runtimes"][rt] = {"ok": False, "error": status[rt]}
                continue
            runner = make_runner(rt, model, arena_size=host.arena_bytes)
            report["runtimes"][rt] = {"ok": True, "latency": host_latency_ms(runner, latency_repeats)}
            specs.append(RunnerSpec(rt, tflite_path=str(model.path), arena_size=host.arena_bytes))
        report["budgets"] = {}
        for b in loaded:
            tgt = target_arena(model, host, b.kernels)
            entry = evaluate_budget(model, b, tgt.arena_bytes)
            entry["arena_model"] = tgt.to_dict()
            report["budgets"][b.name] = entry
        if loaded:
            report["arena_bytes_target"] = report["budgets"][loaded[0].name]["arena_bytes_target"]
    elif loaded:
        raise ModelError(f"{target}: budgets need the INT8 .tflite (TFLite Micro is what runs on the MCU); "
                         f"only ONNX was given")

    quant_in, quant_out = _manifest_quant(files.manifest, model)
    for name, path in (("onnx_int8", files.onnx_int8), ("onnx_float", files.onnx_float)):
        if path is None:
            continue
        runner = make_runner(name, onnx_path=path, input_quant=quant_in, output_quant=quant_out)
        report["runtimes"][name] = {"ok": True, "latency": host_latency_ms(runner, latency_repeats)}
        specs.append(RunnerSpec(name, onnx_path=str(path), input_quant=quant_in, output_quant=quant_out))

    dataset = dataset_dir or files.manifest.get("dataset_dir")
    if dataset is not None and model is not None and model.is_streaming:
        # A stateful streaming model (ESPHome export) takes 3 new frames per invoke, not clips:
        # it is evaluated as the firmware runs it, on streams built from the test split.
        report["streaming"] = _streaming_from_dataset(model, host.arena_bytes, Path(dataset),
                                                      files.manifest.get("positive_label"),
                                                      _esphome_detector(files))
    elif dataset is not None:
        from tinyconv.firmware_sim.accuracy import evaluate_dataset

        acc = evaluate_dataset(specs, dataset, labels=files.manifest.get("labels"), workers=workers,
                               max_clips=max_clips, progress=progress)
        report["accuracy"] = acc
        for rt, res in acc["runtimes"].items():
            report["runtimes"].setdefault(rt, {})["accuracy"] = res["accuracy"]
            if "accuracy_drop" in res:
                report["runtimes"][rt]["accuracy_drop"] = res["accuracy_drop"]
        if streaming and model is not None:
            report["streaming"] = _streaming_from_dataset(model, host.arena_bytes, Path(dataset),
                                                          files.manifest.get("positive_label"))
    report["pass"] = all(b["pass"] for b in report.get("budgets", {}).values())
    if out_dir is not None:
        write_report(report, out_dir)
    return report


@dataclass(frozen=True)
class BudgetResult:
    """One MCU budget's verdict (the `budgets.NAME` entry of the report, its headline numbers)."""

    name: str
    passed: bool
    arena_bytes: int  # tensor arena modelled for the target's 32-bit build and kernels
    flash_bytes: int  # model + estimated code
    latency_ms: float  # estimated per inference at the budget's clock


@dataclass(frozen=True)
class SimulationReport:
    """What `simulate_report` (`tinyconv.simulate`) returns: the headline numbers typed, and the
    whole report (the report.json / `tinyconv simulate --json` dict) from `to_dict()`."""

    target: str
    passed: bool  # every budget passed (True when no budget was asked for)
    model_bytes: int
    macs: int | None  # None for an ONNX-only target
    arena_bytes_host: int | None  # TFLite Micro arena measured on this host; None without a .tflite
    budgets: tuple[BudgetResult, ...]
    accuracy: Mapping[str, float]  # runtime -> accuracy on the test split (empty without a dataset)
    _json: str = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, report: dict[str, Any]) -> SimulationReport:
        budgets = tuple(BudgetResult(name=name, passed=bool(b["pass"]), arena_bytes=int(b["arena_bytes_target"]),
                                     flash_bytes=int(b["flash_bytes_needed"]),
                                     latency_ms=float(b["estimated_latency_ms"]))
                        for name, b in report.get("budgets", {}).items())
        accuracy = {rt: float(r["accuracy"]) for rt, r in report.get("runtimes", {}).items() if "accuracy" in r}
        host = report.get("arena_bytes_host")
        return cls(target=str(report["target"]), passed=bool(report["pass"]), model_bytes=int(report["model_bytes"]),
                   macs=None if report.get("macs") is None else int(report["macs"]),
                   arena_bytes_host=None if host is None else int(host), budgets=budgets,
                   accuracy=MappingProxyType(accuracy), _json=to_json(report))

    def budget(self, name: str) -> BudgetResult:
        for b in self.budgets:
            if b.name == name:
                return b
        raise KeyError(f"no budget {name!r} in this report (it has {[b.name for b in self.budgets]})")

    def to_dict(self) -> dict[str, Any]:
        """The full report as plain JSON data (a fresh copy each call)."""
        return json.loads(self._json)


def simulate_report(target: str | Path, budgets: Sequence[str] = (), *, out_dir: str | Path | None = None,
                    dataset_dir: str | Path | None = None, max_clips: int | None = None, streaming: bool = False,
                    latency_repeats: int = 50, workers: int | None = None) -> SimulationReport:
    """`simulate` with a typed result: an export folder (or a .tflite / .onnx file) against MCU
    budgets (packaged names such as "esp32s3", or paths to YAML profiles)."""
    names = [budgets] if isinstance(budgets, str) else list(budgets)
    return SimulationReport.from_dict(simulate(target, names, out_dir=out_dir, dataset_dir=dataset_dir,
                                               max_clips=max_clips, streaming=streaming,
                                               latency_repeats=latency_repeats, workers=workers))


def _manifest_quant(manifest: dict[str, Any], model: TfliteModel | None) -> tuple[tuple[float, int], tuple[float, int]]:
    """Input/output quantization for the QDQ ONNX model (its int8 I/O uses the export's params)."""
    def pair(section: str) -> tuple[float, int]:
        q = manifest.get(section) or {}
        return (float(q.get("scale", 1.0)), int(q.get("zero_point", 0)))

    return pair("input"), pair("output")


def _esphome_detector(files: ExportFiles) -> Any:
    """The detector as the device will run it: the ESPHome manifest's cutoff and sliding window
    (an ESPHome export), else the simulator's defaults."""
    import json

    from tinyconv.firmware_sim.streaming import DetectorConfig

    esphome = files.manifest.get("esphome")
    if not isinstance(esphome, dict) or not isinstance(esphome.get("manifest"), str):
        return None
    name = esphome["manifest"]
    if name not in files.manifest.get("files", {}):
        raise ModelError(f"{files.root / 'manifest.json'}: esphome.manifest {name[:80]!r} is not one of the export's "
                         f"files; re-run `tinyconv export`")
    # read_export_manifest has checked this file's sha256 against manifest.json: it is the
    # exporter's own micro_wake_word manifest.
    micro = json.loads((files.root / name).read_text())["micro"]
    return DetectorConfig(cutoff=float(micro["probability_cutoff"]), window=int(micro["sliding_window_size"]))


def _streaming_from_dataset(model: TfliteModel, arena: int, dataset: Path, positive_label: str | None,
                            detector: Any = None) -> dict[str, Any]:
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import read_manifest, resolve
    from tinyconv.data.negative_streams import read_negative_streams, stream_entries
    from tinyconv.firmware_sim.streaming import Stream, build_streams, evaluate_streams

    rows, info = read_manifest(dataset)
    label = positive_label or info.positive_label
    if label is None:
        raise ValueError(f"{dataset}: streaming evaluation needs a positive label (wake word) in labels.json")
    test = [r for r in rows if r.split == "test"]
    pos = [load_audio(resolve(dataset, r), allow_silent=True).samples for r in test if r.label == label]
    neg = [load_audio(resolve(dataset, r), allow_silent=True).samples for r in test if r.label != label]
    streams = build_streams(pos, neg, positive_stream_s=max(30.0, 4.5 * len(pos)),
                            negative_stream_s=max(60.0, 1.0 * len(neg)))
    # The test split's long negative audio (data.negative_stream_minutes), as negative-only streams.
    streams += [Stream(a) for a in read_negative_streams(dataset, stream_entries(info, "test"))]
    runner = make_runner("tflm", model, arena_size=arena)
    return evaluate_streams(runner, streams, detector, positive_index=info.labels.index(label))


# ---- writing ---------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def _check_finite(obj: Any, where: str = "report") -> None:
    """NaN/inf are not JSON: name the value instead of writing a file other tools cannot read."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{where} is {obj}; refusing to write a report that is not valid JSON")


def to_json(report: dict[str, Any]) -> str:
    data = _jsonable(report)
    _check_finite(data)
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False)


def _temp_sibling(path: Path) -> Path:
    # Same folder (os.replace is atomic only within one filesystem); same suffix (matplotlib picks the
    # format from it); a dot name so a leftover after a hard kill is hidden and clearly not a report.
    return path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _write_synced(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write through a temp file + os.replace: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        _write_synced(tmp, text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """report.json, report.md and plots, all staged as temp files and renamed only when every one is
    complete: a failure (a full disk, a plot error) leaves the previous report intact and no partial file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, markdown = to_json(report) + "\n", render_markdown(report)  # validated before anything is written
    jobs: list[tuple[Path, Callable[[Path], Any]]] = [
        (out / "report.json", lambda p: _write_synced(p, text)),
        (out / "report.md", lambda p: _write_synced(p, markdown)),
    ]
    if "arena" in report:
        jobs.append((out / "arena.png", lambda p: plot_arena(report, p)))
    if "streaming" in report:
        jobs.append((out / "det.png", lambda p: plot_det(report["streaming"], p)))
    staged: list[tuple[Path, Path]] = []
    try:
        for final, write in jobs:
            staged.append((_temp_sibling(final), final))
            write(staged[-1][0])
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [final for final, _ in jobs]


def plot_arena(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_op = report["arena"]["live_bytes_per_op"]
    fig, ax = plt.subplots(figsize=(max(6, len(per_op) * 0.18), 3.5))
    ax.bar(range(len(per_op)), [p["live_bytes"] for p in per_op], color="tab:blue", label="live activations")
    ax.axhline(report["arena"]["non_persistent_bytes"], color="tab:orange", ls="--", label="planned non-persistent")
    ax.set_xlabel("op index")
    ax.set_ylabel("bytes")
    ax.set_title(f"TFLM arena: {report['arena_bytes_host']} B host "
                 f"({report['arena']['persistent_bytes']} B persistent)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_det(streaming: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = streaming["det_curve"]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([c["fa_per_hour"] for c in curve], [c["frr"] for c in curve], marker=".")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false-reject rate")
    ax.set_title("DET (cutoffs 0..1)")
    ax.axvline(streaming["target_fa_per_hour"], color="grey", ls=":")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Firmware simulation: {report['target']}", "",
             f"- model bytes: {report['model_bytes']:,}",
             f"- MACs: {report['macs']:,}" if report.get("macs") else "- MACs: n/a"]
    if "arena_bytes_host" in report:
        a = report["arena"]
        lines += [f"- TFLM arena (host, 64-bit, measured): {report['arena_bytes_host']:,} B "
                  f"({a['persistent_bytes']:,} persistent, {a['non_persistent_bytes']:,} non-persistent)"]
    lines += ["", "## Runtimes (host)", "", "| runtime | p50 ms | p95 ms | accuracy | drop vs float |",
              "|---|---|---|---|---|"]
    for name, r in report["runtimes"].items():
        if not r.get("ok", True):
            lines.append(f"| {name} | error: {r['error'][:80]} | | | |")
            continue
        lat = r.get("latency", {})
        acc = r.get("accuracy")
        drop = r.get("accuracy_drop")
        lines.append(f"| {name} | {lat.get('p50_ms', float('nan')):.3f} | {lat.get('p95_ms', float('nan')):.3f} | "
                     f"{'' if acc is None else f'{acc:.4f}'} | {'' if drop is None else f'{drop:+.4f}'} |")
    if report.get("budgets"):
        lines += ["", "## MCU budgets", "",
                  "| budget | kernels | arena B | RAM avail | flash B | flash avail | est. latency ms | result |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, b in report["budgets"].items():
            c = b["checks"]
            lines.append(f"| {name} | {b['kernels']} | {b['arena_bytes_target']:,} | {c['ram']['available_bytes']:,} | "
                         f"{b['flash_bytes_needed']:,} | {c['flash']['available_bytes']:,} | "
                         f"{b['estimated_latency_ms']:.2f} | {'PASS' if b['pass'] else 'FAIL'} |")
    if "streaming" in report:
        s = report["streaming"]["at_cutoff"]
        best = report["streaming"]["cutoff_for_target"]
        lines += ["", "## Streaming wake word", "",
                  f"- at cutoff {report['streaming']['detector']['cutoff']}: FRR {s['frr']:.3f}, "
                  f"{s['fa_per_hour']:.2f} false accepts/hour over {s['hours']:.3f} h",
                  f"- cutoff for <= {report['streaming']['target_fa_per_hour']} FA/h: "
                  + (f"{best['cutoff']} (FRR {best['frr']:.3f})" if best else "none")]
    lines += ["", f"Overall: {'PASS' if report.get('pass', True) else 'FAIL'}", ""]
    return "\n".join(lines)
