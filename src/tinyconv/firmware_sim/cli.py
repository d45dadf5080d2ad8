"""`tinyconv simulate`, `tinyconv bench`, `tinyconv gate`: thin handlers over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    """argparse type: 0 clips, 0 repeats or 0 workers is a usage error (exit 2), not an empty run."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def _simulate(args: argparse.Namespace) -> int:
    from tinyconv.firmware_sim.report import render_markdown, simulate, to_json

    target = Path(args.target)
    out = args.out or (target / "sim" if target.is_dir() else target.parent / f"{target.stem}_sim")
    report = simulate(target, args.budget, out_dir=out, dataset_dir=args.dataset, max_clips=args.max_clips,
                      streaming=args.streaming, latency_repeats=args.repeats, workers=args.workers,
                      progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(to_json(report))
    else:
        print(render_markdown(report))
        print(f"report written to {out}/report.json, report.md")
    return 0 if report["pass"] else 1


def _bench(args: argparse.Namespace) -> int:
    from tinyconv.firmware_sim.bench import bench_tflm_clips

    result = bench_tflm_clips(clips=args.clips, model_path=args.model, workers=args.workers,
                              progress=sys.stderr.isatty())
    from tinyconv.firmware_sim.report import atomic_write_text, to_json

    text = to_json(result)  # NaN/inf refused, never written as invalid JSON
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0 if result["pass"] else 1


def _gate(args: argparse.Namespace) -> int:
    from tinyconv.firmware_sim.gate import METRIC_KEYS, compare, measure, read_baseline, write_baseline

    baseline: dict = {}
    if not args.write_baseline:
        baseline = read_baseline(args.baseline)  # a bad baseline fails before the (slow) measurement
    current = measure(args.export_dir, dataset_dir=args.dataset, max_clips=args.max_clips)
    if args.write_baseline:
        path = write_baseline(current, args.baseline)
        print(f"baseline written to {path}: {json.dumps({k: current[k] for k in METRIC_KEYS})}")
        if "accuracy_unavailable" in current:
            print(f"note: the baseline does not gate accuracy ({current['accuracy_unavailable']})", file=sys.stderr)
        return 0
    verdict = compare(current, baseline)
    for key, c in verdict["checks"].items():
        state = "ok  " if c["pass"] else "FAIL"
        if "reason" in c:
            change = c["reason"]
        elif "change_pct" in c:
            change = f"{c['change_pct']:+.2f}% (tolerance {c['tolerance_pct']}%)"
        else:
            change = f"drop {c['drop']:+.4f} (tolerance {c['tolerance']})"
        print(f"{state} {key}: {c['baseline']} -> {c['current']} {change}")
    if "reason" in verdict:
        print(verdict["reason"])
    print("gate:", "PASS" if verdict["pass"] else "FAIL")
    return 0 if verdict["pass"] else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from tinyconv.firmware_sim.budgets import list_budgets  # torch-free, reads the packaged profiles

    p = sub.add_parser("simulate", help="run an exported model under ONNX Runtime, LiteRT and TFLite Micro; "
                                        "arena, flash, latency and accuracy against MCU budgets")
    p.add_argument("target", help="export directory, or a .tflite / .onnx file")
    p.add_argument("--budget", action="append", default=[], metavar="NAME",
                   help="MCU profile name (packaged: " + ", ".join(list_budgets()) + ") or a path to a YAML profile; "
                        "repeatable")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", type=Path, help="report folder (default: EXPORT_DIR/sim)")
    p.add_argument("--dataset", help="dataset folder for accuracy (default: the export manifest's dataset_dir)")
    p.add_argument("--max-clips", type=_positive_int, help="limit the test split (quick runs)")
    p.add_argument("--streaming", action="store_true", help="also run the streaming wake-word evaluation")
    p.add_argument("--repeats", type=_positive_int, default=50, help="invokes per runtime for host latency percentiles")
    p.add_argument("--workers", type=_positive_int, help="processes for accuracy (default: all cores)")
    p.set_defaults(func=_simulate)

    b = sub.add_parser("bench", help="throughput: 10,000 one-second clips through TFLite Micro")
    b.add_argument("--clips", type=_positive_int, default=10_000)
    b.add_argument("--model", help=".tflite to benchmark (default: a synthetic tiny TinyConv-shaped model)")
    b.add_argument("--workers", type=_positive_int)
    b.add_argument("--out", help="write the JSON result here")
    b.set_defaults(func=_bench)

    g = sub.add_parser("gate", help="fail when model size, arena or MACs grow or accuracy drops vs a baseline")
    g.add_argument("export_dir", help="export directory or .tflite")
    g.add_argument("--baseline", required=True, help="baseline JSON (committed)")
    g.add_argument("--write-baseline", action="store_true", help="measure and (over)write the baseline")
    g.add_argument("--dataset", help="dataset folder for the accuracy gate (default: manifest dataset_dir)")
    g.add_argument("--max-clips", type=_positive_int)
    g.set_defaults(func=_gate)
