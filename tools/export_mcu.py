#!/usr/bin/env python3
"""Export a tinyconv checkpoint for firmware: model_int8.tflite, model_data.h/.cc, manifest.json.

Thin wrapper over `tinyconv.export` for firmware teams:

    python tools/export_mcu.py runs/quickstart/checkpoint.pt --out firmware/model
    python tools/export_mcu.py CKPT --out DIR --formats tflite,onnx,c

Exit codes: 0 ok, 2 bad input (message on stderr).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", required=True)
    parser.add_argument("--formats", default="tflite,c", help="default tflite,c (add onnx for the simulator)")
    parser.add_argument("--num-calibration", type=int, default=500)
    args = parser.parse_args(argv)

    from tinyconv.export.pipeline import export_checkpoint

    try:
        result = export_checkpoint(
            args.checkpoint, args.out, formats=args.formats, num_calibration=args.num_calibration
        )
    except (ValueError, OSError) as exc:
        print(f"export_mcu: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(sorted(result.files))} to {result.out_dir}")
    print(f"tensor arena: {result.tensor_arena_bytes} bytes (TFLite Micro, reference kernels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
