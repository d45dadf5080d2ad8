"""`tinyconv export CHECKPOINT --formats tflite,onnx,c --out DIR`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to INT8 TFLite, ONNX and C arrays with a manifest",
        description="Export a float (post-training quantized) or QAT checkpoint for microcontrollers.",
    )
    parser.add_argument("checkpoint", help="checkpoint file written by `tinyconv train`")
    parser.add_argument(
        "--formats",
        default=None,
        help="comma-separated: tflite,onnx,c,esphome (default: tflite,onnx,c; esphome,c for a streaming "
        "checkpoint: <name>.tflite + <name>.json for ESPHome micro_wake_word)",
    )
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument(
        "--num-calibration",
        type=int,
        default=500,
        help="training examples used to calibrate a float checkpoint (PTQ); default 500",
    )
    parser.add_argument(
        "--probability-cutoff",
        type=float,
        default=None,
        help="esphome: the manifest's probability_cutoff (0-1); default: the lowest cutoff meeting "
        "train.target_fa_per_hour on the validation split's everyday negatives",
    )
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from tinyconv.export.pipeline import export_checkpoint

    if args.num_calibration < 1:
        raise ValueError("--num-calibration must be >= 1")
    if args.probability_cutoff is not None and not 0.0 < args.probability_cutoff < 1.0:
        raise ValueError(f"--probability-cutoff must be in (0, 1), got {args.probability_cutoff}")
    result = export_checkpoint(
        args.checkpoint, args.out, formats=args.formats, num_calibration=args.num_calibration,
        probability_cutoff=args.probability_cutoff,
    )
    m = result.manifest
    print(f"exported {m['source_checkpoint']['kind']} checkpoint ({result.quantization}) to {result.out_dir}")
    for name, meta in m["files"].items():
        print(f"  {name:20s} {meta['bytes']:>9d} bytes")
    print(
        f"  input {m['input']['shape']} int8 scale {m['input']['scale']:.6g} zp {m['input']['zero_point']}; "
        f"tensor arena {result.tensor_arena_bytes} bytes"
    )
    return 0
