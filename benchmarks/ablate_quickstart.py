"""Quickstart ablations: train variants of the quickstart recipe on one existing dataset and
compare test recall at 1 % FAR (all negatives / without near misses / near misses only).

    .venv/bin/python benchmarks/ablate_quickstart.py --dataset runs/bench_quickstart/data \
        --variant base: --variant nodil:model.time_dilations=[1,1,1,1] [--parallel 2]

Each variant is `name:key=value,key=value` (config overrides on top of --config). Runs go to
runs/ablate/NAME (`--evaluate-only` evaluates those again without training); with --parallel N,
N trainings run at once on one thread each. Writes
benchmarks/results/ablate_quickstart.json (one row per variant, merged with earlier rows).
These are single runs: on the 1,489-clip test split, differences of ~3-5 points are noise
(the 1 % FAR threshold is set by the 10th highest of ~940 negatives).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: expected NAME:key=value,... (NAME may have no overrides)")
    return name, [o for o in overrides.split(",") if o]


def train(name: str, overrides: list[str], args: argparse.Namespace) -> dict[str, object]:
    out = REPO / "runs" / "ablate" / name
    sets = [f"data.dataset_dir={args.dataset}", f"train.out_dir={out}", *overrides]
    if args.parallel > 1:
        sets.append("train.num_threads=1")
    # --overwrite: runs/ablate/NAME belongs to this script; a re-run replaces the variant's run.
    cmd = [sys.executable, "-m", "tinyconv.cli", "train", "--config", args.config, "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(f"{out}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return {"overrides": overrides, "train_seconds": round(time.perf_counter() - t0, 1), "out": str(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quickstart", help="YAML file or packaged recipe name")
    ap.add_argument("--dataset", help="an existing dataset folder (e.g. from bench_quickstart); "
                                       "not needed with --evaluate-only")
    ap.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "ablate_quickstart.json"))
    ap.add_argument("--evaluate-only", action="store_true",
                    help="do not train: evaluate the variants' existing runs/ablate/NAME checkpoints again")
    args = ap.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)

    import torch

    from _results import resolve_path, write_results
    from bench_quickstart import recall_by_negative_kind
    from tinyconv.config import load_config

    path = Path(args.results)
    rows = json.loads(path.read_text()) if path.exists() else {}
    if args.evaluate_only:
        missing = [n for n in variants
                   if n not in rows or not (REPO / "runs" / "ablate" / n / "checkpoint.pt").is_file()]
        if missing:
            raise SystemExit(f"--evaluate-only: no earlier row or checkpoint for {', '.join(missing)}")
        runs = {n: rows[n] for n in variants}
    else:
        if not args.dataset:
            raise SystemExit("--dataset is required to train")
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            runs = dict(zip(variants, pool.map(lambda kv: train(kv[0], kv[1], args), variants.items()), strict=True))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name, run in runs.items():
        out = resolve_path(run["out"])  # recorded relative to the repository
        config = load_config(str(out / "config.yaml"))
        history = json.loads((out / "history.json").read_text())
        run["best_val_recall_at_far"] = max(h["val_metric"] for h in history)
        run["epochs_run"] = len(history)
        run["test_recall_at_1pct_far"] = recall_by_negative_kind(out / "checkpoint.pt", config, 0.01)
        run["val_missed_by_timbre"] = recall_by_negative_kind(out / "checkpoint.pt", config, 0.01,
                                                              split="val")["missed_by_timbre"]
        run["dataset"] = config.data.dataset_dir
        rows[name] = run
    written = write_results(path, rows)
    print(json.dumps({k: written[k] for k in runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
