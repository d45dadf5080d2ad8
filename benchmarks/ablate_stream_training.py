#!/usr/bin/env python3
"""Which streaming-training setting moves the FRR: retrain only e2e's streaming model on an
existing `benchmarks/e2e.py` work folder (its dataset and window teacher), once per variant, export
it for ESPHome and score it under TFLite Micro on that run's held-out test streams.

    .venv/bin/python benchmarks/ablate_stream_training.py --word-dir runs/e2e_large_s1t/okay_nabu \\
        --seed 1 --variant "context=train.context_positive_fraction=1.0" \\
        --variant "context_hard=train.context_positive_fraction=1.0,train.hard_negative_fraction=0.8" \\
        [--scale large] [--out benchmarks/results/ablate_stream_training.json]

The word folder comes from `benchmarks/e2e.py --scale S --seed N --work-dir DIR --wake-words W`
(DIR/<word>: data/, v2_float/). Each variant starts from e2e's streaming config with its teacher
(`e2e.stream_config`, STREAM_TEACHER_TRAIN included) and applies its `--set`-style overrides; an
empty override list is e2e's model itself. The held-out streams are rebuilt exactly as e2e builds
them (same seed) and cached in the word folder. About 4 min per variant at `large` on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _results import write_results  # noqa: E402


def held_out_streams(root: Path, cfg: Any, preset: dict[str, Any], seed: int) -> list[Any]:
    """e2e's test streams for this word folder (test positives in test background + held-out hours)."""
    import e2e
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import read_manifest, resolve
    from tinyconv.firmware_sim.streaming import Stream, build_streams

    cache = root / "heldout_streams.npz"  # arrays only (allow_pickle=False): no code runs from it
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            n = int(z["count"])
            return [Stream(z[f"samples_{i}"], [tuple(p) for p in z[f"positives_{i}"].tolist()]) for i in range(n)]
    ds = root / "data"
    rows, info = read_manifest(ds)
    test = [r for r in rows if r.split == "test"]
    pos = [load_audio(resolve(ds, r), allow_silent=True).samples for r in test if r.label == info.positive_label]
    neg = [load_audio(resolve(ds, r), allow_silent=True).samples for r in test
           if r.label != info.positive_label and r.kind != "confusable"]
    cap = preset.get("stream_positives")
    if cap is not None and len(pos) > cap:
        pick = np.random.default_rng(seed).choice(len(pos), cap, replace=False)
        pos = [pos[i] for i in sorted(pick)]
    streams = build_streams(pos, neg, seed=seed, positive_stream_s=max(30.0, 7.0 * len(pos)),
                            negative_stream_s=preset["negative_stream_s"])
    extra, _ = e2e.heldout_negative_streams(cfg, ds, preset["negative_hours"], seed)
    streams = streams + extra
    arrays: dict[str, np.ndarray] = {"count": np.array(len(streams))}
    for i, st in enumerate(streams):
        arrays[f"samples_{i}"] = st.samples
        arrays[f"positives_{i}"] = np.array(st.positives, dtype=np.float64).reshape(-1, 2)
    np.savez(cache, **arrays)
    return streams


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--word-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="large")
    parser.add_argument("--variant", action="append", required=True, help="NAME=key=value,key=value (or NAME=)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ablate_stream_training.json")
    args = parser.parse_args()

    import e2e
    from tinyconv.config import apply_overrides, load_config
    from tinyconv.device.runners import make_runner
    from tinyconv.device.tflite_file import load_tflite
    from tinyconv.export import export_checkpoint
    from tinyconv.firmware_sim.report import simulate
    from tinyconv.firmware_sim.streaming import DetectorConfig, evaluate_streams
    from tinyconv.trainer.run import load_splits, train

    root = args.word_dir.resolve()
    if not (root / "data" / "config.yaml").is_file() or not (root / "v2_float" / "checkpoint.pt").is_file():
        parser.error(f"{root} is not an e2e word folder (data/config.yaml and v2_float/checkpoint.pt)")
    preset = e2e.SCALES[args.scale]
    word = load_config(root / "data" / "config.yaml").data.wake_word
    cfg = e2e.base_config(word, root / "data", root / "v2_float", preset, args.seed)
    streams = held_out_streams(root, cfg, preset, args.seed)
    rows = []
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        overrides = [s for s in sets.split(",") if s]
        out = root / "ablation" / name
        shutil.rmtree(out, ignore_errors=True)
        scfg = apply_overrides(e2e.stream_config(cfg, preset, out / "stream", root / "v2_float" / "checkpoint.pt"),
                               overrides)
        t0 = time.perf_counter()
        result = train(scfg, data=load_splits(scfg))
        train_s = time.perf_counter() - t0
        exp = export_checkpoint(result.checkpoint_path, out / "export", formats="esphome")
        sim = simulate(out / "export", ["esp32s3"], latency_repeats=1)
        micro = exp.esphome_manifest["micro"]
        runner = make_runner("tflm", load_tflite(exp.files[exp.esphome_manifest["model"]]),
                             arena_size=sim["arena_bytes_host"])
        det = DetectorConfig(window=int(micro["sliding_window_size"]), cutoff=float(micro["probability_cutoff"]))
        res = e2e.stream_summary(evaluate_streams(runner, streams, det, target_fa_per_hour=e2e.TARGET_FA_PER_HOUR))
        rows.append({"name": name, "overrides": overrides, "train_seconds": round(train_s, 1),
                     "best_epoch": result.best_epoch, "frr_at_target": res["frr_at_target"],
                     "cutoff_at_target": res["cutoff_at_target"], "manifest_cutoff": micro["probability_cutoff"],
                     "at_manifest_cutoff": res["at_default_cutoff"]})
        print(f"{name}: FRR at <= 0.5 FA/h {res['frr_at_target']} (cutoff {res['cutoff_at_target']})", flush=True)
    report = {"benchmark": "ablate_stream_training", "command": " ".join(sys.argv[1:]), "word": word,
              "seed": args.seed, "scale": args.scale, "hours": sum(s.duration_s for s in streams) / 3600.0,
              "rows": rows}
    write_results(args.out, report, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
