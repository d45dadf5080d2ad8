"""Does dual-teacher distillation help? Student with vs without it, same data, several seeds.

    .venv/bin/python benchmarks/bench_distillation.py --dataset runs/bench_distill/data --synth \
        --epochs 15 --seeds 0 1 2 --teacher-size tiny --teacher-epochs 8

Reports test accuracy and wake-word false-reject rate at a fixed false-accept rate (mean and
standard deviation over seeds), each teacher's test accuracy, and the cost: teacher fine-tuning
time, first (cache-building) and cached distillation set-up time, and the training throughput of a
plain student epoch against a cached distillation epoch (the issue's budget: <= 1.5x).
Writes benchmarks/results/distillation.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
from tinyconv.config import Config, load_config, replace
from tinyconv.metrics import classification_report
from tinyconv.trainer.run import load_splits, predict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _results import write_results  # noqa: E402  (paths relative to the repository)

SYNTH_SIZES = ["data.num_positive=150", "data.num_confusable=100", "data.num_other_speech=100",
               "data.num_background=40", "augment.num_room_impulse_responses=6"]


def _test_metrics(checkpoint: Path, test: Any, target_far: float) -> dict[str, float]:
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    report = classification_report(predict(model, test.x), test.y, test.labels, test.positive_label,
                                   target_far=target_far)
    out = {"accuracy": report["accuracy"]}
    if "wake_word" in report:
        out["frr_at_far"] = 1.0 - report["wake_word"]["recall_at_target_far"]
    return out


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def run(config: Config, seeds: list[int], target_far: float, out_root: Path) -> dict[str, Any]:
    from tinyconv.trainer.distill import DistillationTrainer
    from tinyconv.trainer.loop import Trainer
    from tinyconv.trainer.teachers import load_waveforms, predict_teacher, teacher_dir, train_teachers

    data = load_splits(config, ("train", "val", "test"))
    train, val, test = data["train"], data["val"], data["test"]
    fe = config.frontend
    waves = {s: load_waveforms(config.data.dataset_dir, fs.rows, fs.labels, fs.positive_label,
                               fe.clip_samples, fe.sample_rate_hz) for s, fs in data.items()}
    result: dict[str, Any] = {"dataset": config.data.dataset_dir, "clips": {s: len(fs) for s, fs in data.items()},
                              "labels": train.labels, "target_far": target_far, "seeds": seeds,
                              "epochs": config.train.epochs, "model": config.model.name,
                              "distill": {k: v for k, v in vars(config.distill).items()},
                              "host": {"python": platform.python_version(), "torch": torch.__version__,
                                       "threads": torch.get_num_threads()}}

    # Teachers: fine-tuned once from raw waveforms (reused across seeds, like a user would).
    t0 = time.perf_counter()
    teachers_out = teacher_dir(config)
    reuse = all((teachers_out / k / "tinyconv_teacher.json").is_file() for k in config.distill.teachers)
    if not reuse:
        train_teachers(config, data={"train": waves["train"], "val": waves["val"]}, log=print)
    from tinyconv.trainer.distill import load_configured_teachers

    teachers = load_configured_teachers(config, train.labels)
    result["teachers"] = {}
    for kind, teacher in teachers.items():
        meta = json.loads((teachers_out / kind / "tinyconv_teacher.json").read_text())
        acc = float((predict_teacher(teacher, waves["test"].x).argmax(1) == waves["test"].y).mean())
        result["teachers"][kind] = {"test_accuracy": acc, "val_accuracy": meta["metrics"]["val_accuracy"],
                                    "fine_tune_seconds": meta["metrics"]["train_seconds"],
                                    "parameters": sum(p.numel() for p in teacher.parameters()),
                                    "width": teacher.width, "layers": teacher.num_layers}
    result["teacher_stage_seconds"] = time.perf_counter() - t0 if not reuse else None

    runs: dict[str, list[dict[str, float]]] = {"plain": [], "distill": []}
    for seed in seeds:
        for name in ("plain", "distill"):
            cfg = replace(config, train={"seed": seed, "out_dir": str(out_root / f"{name}_seed{seed}")},
                          distill={"enabled": name == "distill"})
            t0 = time.perf_counter()
            if name == "distill":
                trainer: Trainer = DistillationTrainer(cfg, train, val, cfg.train.out_dir, teachers=teachers,
                                                       waves=waves["train"])
                setup = time.perf_counter() - t0
            else:
                trainer = Trainer(cfg, train, val, cfg.train.out_dir)
                setup = time.perf_counter() - t0
            fit = trainer.fit()
            row = _test_metrics(fit.checkpoint_path, test, target_far)
            row.update(seed=seed, setup_seconds=setup, train_clips_per_second=fit.clips_per_second,
                       best_epoch=fit.best_epoch, total_seconds=time.perf_counter() - t0)
            if name == "distill":
                row["cache_clips_computed"] = sum(trainer.cache_computed.values())  # type: ignore[attr-defined]
            print(f"{name} seed {seed}: {row}", flush=True)
            runs[name].append(row)
    result["runs"] = runs
    result["summary"] = {
        name: {key: _summary([r[key] for r in rows]) for key in ("accuracy", "frr_at_far", "train_clips_per_second",
                                                                 "setup_seconds") if key in rows[0]}
        for name, rows in runs.items()
    }
    plain_cps = result["summary"]["plain"]["train_clips_per_second"]["mean"]
    dist_cps = result["summary"]["distill"]["train_clips_per_second"]["mean"]
    result["cached_distill_epoch_over_plain_epoch"] = plain_cps / dist_cps
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="dataset folder (created with --synth if missing)")
    ap.add_argument("--synth", action="store_true", help="synthesize a small wake-word dataset there first")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher-size", default="tiny", choices=["tiny", "small", "base"])
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--teacher-dir", help="reuse/write teachers here (default <work>/teachers)")
    ap.add_argument("--target-far", type=float, default=0.05, help="fixed false-accept rate for the FRR")
    ap.add_argument("--work", default="runs/bench_distill", help="folder for runs")
    ap.add_argument("--config", help="base YAML config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distillation.json"))
    args = ap.parse_args(argv)
    if len(args.seeds) < 1:
        ap.error("--seeds needs at least one seed")
    work = Path(args.work)
    overrides = [*(SYNTH_SIZES if args.synth else []), f"data.dataset_dir={args.dataset}",
                 f"train.epochs={args.epochs}", f"train.target_far={args.target_far}",
                 "train.early_stopping_patience=1000", f"distill.teacher_size={args.teacher_size}",
                 f"distill.teacher_epochs={args.teacher_epochs}",
                 f"distill.teacher_dir={args.teacher_dir or work / 'teachers'}", *args.overrides]
    config = load_config(args.config, overrides)
    if args.synth and not (Path(args.dataset) / "manifest.csv").is_file():
        from tinyconv.data.synth import synthesize_dataset

        synthesize_dataset(config, args.dataset)
    result = run(config, args.seeds, args.target_far, work)
    write_results(args.out, result, default=str, trailing_newline=False)
    s = result["summary"]
    for name in ("plain", "distill"):
        acc, frr = s[name]["accuracy"], s[name].get("frr_at_far")
        print(f"{name:8s} accuracy {acc['mean']:.4f} +- {acc['std']:.4f}"
              + (f", FRR@FAR{args.target_far} {frr['mean']:.4f} +- {frr['std']:.4f}" if frr else ""))
    print(f"cached distillation epoch / plain epoch: {result['cached_distill_epoch_over_plain_epoch']:.2f}x; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
