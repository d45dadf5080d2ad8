"""`tinyconv simulate`, `tinyconv bench`, `tinyconv gate`: thin handlers over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if result["pass"] else 1


def _gate(args: argparse.Namespace) -> int:
    from tinyconv.firmware_sim.gate import compare, measure, read_baseline, write_baseline

    current = measure(args.export_dir, dataset_dir=args.dataset, max_clips=args.max_clips)
    if args.write_baseline:
        path = write_baseline(current, args.baseline)
        print(f"baseline written to {path}: {json.dumps(current)}")
        return 0
    verdict = compare(current, read_baseline(args.baseline))
    for key, c in verdict["checks"].items():
        state = "ok  " if c["pass"] else "FAIL"
        change = f"{c['change_pct']:+.2f}% (tolerance {c['tolerance_pct']}%)" if "change_pct" in c else \
            f"drop {c['drop']:+.4f} (tolerance {c['tolerance']})"
        print(f"{state} {key}: {c['baseline']} -> {c['current']} {change}")
    print("gate:", "PASS" if verdict["pass"] else "FAIL")
    return 0 if verdict["pass"] else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run an exported model under ONNX Runtime, LiteRT and TFLite Micro; "
                                        "arena, flash, latency and accuracy against MCU budgets")
    p.add_argument("target", help="export directory, or a .tflite / .onnx file")
    p.add_argument("--budget", action="append", default=[], metavar="NAME",
                   help="MCU profile name (configs/mcu/NAME.yaml) or a path to a YAML profile; repeatable")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", type=Path, help="report folder (default: EXPORT_DIR/sim)")
    p.add_argument("--dataset", help="dataset folder for accuracy (default: the export manifest's dataset_dir)")
    p.add_argument("--max-clips", type=int, help="limit the test split (quick runs)")
    p.add_argument("--streaming", action="store_true", help="also run the streaming wake-word evaluation")
    p.add_argument("--repeats", type=int, default=50, help="invokes per runtime for host latency percentiles")
    p.add_argument("--workers", type=int, help="processes for accuracy (default: all cores)")
    p.set_defaults(func=_simulate)

    b = sub.add_parser("bench", help="throughput: 10,000 one-second clips through TFLite Micro")
    b.add_argument("--clips", type=int, default=10_000)
    b.add_argument("--model", help=".tflite to benchmark (default: a synthetic tiny TinyConv-shaped model)")
    b.add_argument("--workers", type=int)
    b.add_argument("--out", help="write the JSON result here")
    b.set_defaults(func=_bench)

    g = sub.add_parser("gate", help="fail when model size, arena or MACs grow or accuracy drops vs a baseline")
    g.add_argument("export_dir", help="export directory or .tflite")
    g.add_argument("--baseline", required=True, help="baseline JSON (committed)")
    g.add_argument("--write-baseline", action="store_true", help="measure and (over)write the baseline")
    g.add_argument("--dataset", help="dataset folder for the accuracy gate (default: manifest dataset_dir)")
    g.add_argument("--max-clips", type=int)
    g.set_defaults(func=_gate)
