#!/usr/bin/env python3
"""Float -> INT8 accuracy drop under TFLite Micro: PTQ vs QAT, TinyConv V1 and V2.

    python benchmarks/bench_quantization.py DATASET_DIR [--float-epochs 30] [--qat-epochs 8]
        [--width 0.5] [--out benchmarks/results/quantization.json]

For each variant: train a float model (plain AdamW loop, seeded), export it with PTQ
(calibrated on the training split), QAT-fine-tune it (tinyconv.trainer.qat.qat_finetune) and
export that, then measure test-split accuracy of the float model (PyTorch) and of both INT8
.tflite files under the TFLite Micro interpreter. The issue's target: QAT drop <= 0.5 points.
Writes one JSON file; prints a short table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn


def _train_float(config: Any, labels: list[str], positive: str | None, x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    from tinyconv.models import build_model
    from tinyconv.checkpoint import Checkpoint

    torch.manual_seed(config.train.seed)
    model = build_model(config.model, len(labels), config.frontend)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.train.learning_rate, total_steps=epochs * max(1, -(-len(x) // config.train.batch_size))
    )
    rng = np.random.default_rng(config.train.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(order), config.train.batch_size):
            idx = order[start : start + config.train.batch_size]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=config.train.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return Checkpoint(
        config=config,
        labels=labels,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        positive_label=positive,
        kind="float",
    )


def _float_accuracy(ckpt: Any, x: np.ndarray, y: np.ndarray) -> float:
    model = ckpt.build_model().eval()
    with torch.no_grad():
        pred = np.concatenate([model(torch.from_numpy(x[i : i + 256])).argmax(1).numpy() for i in range(0, len(x), 256)])
    return float(np.mean(pred == y))


def _tflm_accuracy(result: Any, x: np.ndarray, y: np.ndarray) -> float:
    from tinyconv.export.pipeline import quantize_features
    from tinyconv.export.tflm import run_tflm

    m = result.manifest
    x_int8 = quantize_features(x, m["input"]["scale"], m["input"]["zero_point"])
    out = run_tflm(result.files["model_int8.tflite"].read_bytes(), x_int8, result.tensor_arena_bytes)
    return float(np.mean(out.argmax(1) == y))


def run_variant(name: str, use_depthwise: bool, args: argparse.Namespace, data: dict[str, Any], work: Path) -> dict[str, Any]:
    from tinyconv.config import Config, DataConfig, ModelConfig, QATConfig, TrainConfig
    from tinyconv.export import export_checkpoint
    from tinyconv.checkpoint import save_checkpoint
    from tinyconv.trainer.qat import qat_finetune

    config = Config(
        data=DataConfig(dataset_dir=str(args.dataset_dir)),
        model=ModelConfig(name="tinyconv", tiny_conv_use_depthwise=use_depthwise, width_multiplier=args.width),
        train=TrainConfig(epochs=args.float_epochs, batch_size=128, learning_rate=3e-3, seed=args.seed),
        qat=QATConfig(
            enabled=True,
            epochs=args.qat_epochs,
            learning_rate=args.qat_lr,
            freeze_bn_epoch=max(0, args.qat_epochs - 3),
            freeze_observers_epoch=max(0, args.qat_epochs - 2),
        ),
    )
    tr, va, te = data["train"], data["val"], data["test"]
    t0 = time.time()
    float_ckpt = _train_float(config, data["labels"], data["positive_label"], tr.x, tr.y, args.float_epochs)
    t_float = time.time() - t0
    save_checkpoint(float_ckpt, work / f"{name}_float.pt")
    t0 = time.time()
    ptq = export_checkpoint(work / f"{name}_float.pt", work / f"{name}_ptq", formats="tflite", representative=tr.x)
    t_ptq_export = time.time() - t0
    t0 = time.time()
    qat_ckpt = qat_finetune(float_ckpt, tr.x, tr.y, va.x, va.y, config)
    t_qat = time.time() - t0
    save_checkpoint(qat_ckpt, work / f"{name}_qat.pt")
    t0 = time.time()
    qat = export_checkpoint(work / f"{name}_qat.pt", work / f"{name}_qat", formats="tflite")
    t_qat_export = time.time() - t0
    acc_float = _float_accuracy(float_ckpt, te.x, te.y)
    acc_ptq = _tflm_accuracy(ptq, te.x, te.y)
    acc_qat = _tflm_accuracy(qat, te.x, te.y)
    return {
        "variant": name,
        "use_depthwise": use_depthwise,
        "width_multiplier": args.width,
        "params": int(sum(v.numel() for k, v in float_ckpt.state_dict.items() if "running" not in k and "num_batches" not in k)),
        "test_accuracy": {"float": acc_float, "ptq_int8_tflm": acc_ptq, "qat_int8_tflm": acc_qat},
        "drop_points": {"ptq": 100 * (acc_float - acc_ptq), "qat": 100 * (acc_float - acc_qat)},
        "qat_target_met": 100 * (acc_float - acc_qat) <= 0.5,
        "tflite_bytes": {"ptq": ptq.manifest["files"]["model_int8.tflite"]["bytes"],
                         "qat": qat.manifest["files"]["model_int8.tflite"]["bytes"]},
        "tensor_arena_bytes": {"ptq": ptq.tensor_arena_bytes, "qat": qat.tensor_arena_bytes},
        "seconds": {"float_train": t_float, "ptq_export": t_ptq_export, "qat_finetune": t_qat, "qat_export": t_qat_export},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--float-epochs", type=int, default=30)
    parser.add_argument("--qat-epochs", type=int, default=8)
    parser.add_argument("--qat-lr", type=float, default=5e-4)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="v1,v2", help="comma-separated: v1, v2")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quantization.json")
    args = parser.parse_args(argv)

    from tinyconv.config import FrontendConfig
    from tinyconv.data.dataset import load_features

    if not args.dataset_dir.is_dir():
        print(f"bench_quantization: error: dataset folder not found: {args.dataset_dir}", file=sys.stderr)
        return 2
    splits = {s: load_features(args.dataset_dir, s, FrontendConfig()) for s in ("train", "val", "test")}
    data: dict[str, Any] = {**splits, "labels": list(splits["train"].labels), "positive_label": splits["train"].positive_label}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            if variant not in ("v1", "v2"):
                print(f"bench_quantization: error: unknown variant {variant!r} (v1, v2)", file=sys.stderr)
                return 2
            results.append(run_variant(variant, variant == "v2", args, data, Path(tmp)))
    report = {
        "benchmark": "quantization_drop",
        "dataset_dir": str(args.dataset_dir.resolve()),
        "settings": {"float_epochs": args.float_epochs, "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                     "width_multiplier": args.width, "seed": args.seed},
        "host": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'variant':8s} {'float':>7s} {'PTQ':>7s} {'QAT':>7s} {'PTQ drop':>9s} {'QAT drop':>9s}")
    for r in results:
        a, d = r["test_accuracy"], r["drop_points"]
        print(f"{r['variant']:8s} {a['float']:7.2%} {a['ptq_int8_tflm']:7.2%} {a['qat_int8_tflm']:7.2%} "
              f"{d['ptq']:8.2f}p {d['qat']:8.2f}p")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
