#!/usr/bin/env python3
"""End-to-end benchmark: synthesize -> V1/V2 -> dual distillation -> QAT+fusion -> INT8 -> MCU simulation.

    .venv/bin/python benchmarks/e2e.py --scale tiny|small|medium|full [--wake-words "hey jarvis,okay nabu"]
        [--work-dir runs/e2e_<scale>] [--out benchmarks/results/e2e_<scale>.json]
        [--results-md docs/RESULTS.md] [--scale-factors 1,4,16] [--no-scale-study] [--reuse-data]

For each wake word: synthesize a dataset (speaker-disjoint splits), train float TinyConv V1 and V2,
fine-tune the two tiny teachers (Wav2Vec2, Conformer) and distil V2 from both, pick the better V2 by
its validation metric, QAT-fine-tune it (Conv+BN+ReLU fused), export INT8 TFLite + ONNX + C, and
simulate the export against the nRF52840 and ESP32-S3 budgets. Then, on streams built from the test
split only (voices, rooms and babble that training never saw), compare with microWakeWord's released
v2 model for the same word (../shared/reference_models/; skipped with a note when absent).
Finally a scale study: synthesis, training and simulation time at 1x/4x/16x of a base dataset size.

Targets checked (exit 1 if any fails, 0 if all pass, 2 on bad usage):
- INT8 accuracy drop <= 0.5 points: test-split accuracy of the float V2 the QAT started from
  (PyTorch) minus that of the exported .tflite under TFLite Micro, on the same features;
- the INT8 model fits both MCU budgets (arena, flash).
Writes JSON (benchmarks/results/e2e_<scale>.json) and the Markdown report (docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _results import resolve_path, write_results  # noqa: E402  (paths relative to the repository)

REFERENCE_DIR = REPO.parent / "shared" / "reference_models"
BUDGETS = ("nrf52840", "esp32s3")
MAX_DROP_POINTS = 0.5
TARGET_FA_PER_HOUR = 0.5

# Per scale: dataset sizes (clean utterances: positive, confusable, other speech, background),
# training lengths, student width, stream lengths and the scale study's base size.
SCALES: dict[str, dict[str, Any]] = {
    "tiny": dict(sizes=(48, 24, 24, 12), rirs=3, copies=1, width=0.25, epochs=3, batch=32, patience=100,
                 teacher_size="tiny", teacher_epochs=1, qat_epochs=2, negative_stream_s=60.0,
                 stream_epochs=2, negative_hours=0.05,
                 scale_base=(8, 4, 4, 2), scale_epochs=2, scale_factors=(1, 4, 16)),
    "small": dict(sizes=(240, 160, 160, 60), rirs=6, copies=1, width=0.5, epochs=12, batch=64, patience=100,
                  teacher_size="tiny", teacher_epochs=3, qat_epochs=4, negative_stream_s=600.0,
                  stream_epochs=12, negative_hours=1.0,
                  scale_base=(16, 10, 10, 4), scale_epochs=3, scale_factors=(1, 4, 16)),
    # The quickstart's recipe (EMA, confusable weighting, width 1.0, dilated blocks, 200 generated
    # training voices) on less data per word, tiny teachers, 20 min of negative stream.
    "medium": dict(sizes=(1200, 900, 900, 300), rirs=24, copies=1, width=1.0, epochs=30, batch=128, patience=8,
                   dilations=(1, 2, 4, 4), random_voices=200,
                   teacher_size="tiny", teacher_epochs=1, qat_epochs=4, negative_stream_s=1200.0,
                   stream_epochs=60, negative_hours=5.0,
                   stream_positives=100, stream_runtime="litert",
                   scale_base=(40, 30, 30, 10), scale_epochs=3, scale_factors=(1, 4, 16)),
    # medium's recipe on 2.5x its data per word (500 generated voices), an hour of negative stream;
    # 40 streaming epochs over 2.5x the windows are ~1.7x medium's streaming steps.
    "large": dict(sizes=(3000, 2250, 2250, 750), rirs=24, copies=1, width=1.0, epochs=30, batch=128, patience=8,
                  dilations=(1, 2, 4, 4), random_voices=500,
                  teacher_size="tiny", teacher_epochs=1, qat_epochs=4, negative_stream_s=3600.0,
                  stream_epochs=40, negative_hours=5.0, negative_stream_minutes=120.0,
                  train_negative_stream_minutes=180.0,
                  stream_positives=100, stream_runtime="litert",
                  scale_base=(40, 30, 30, 10), scale_epochs=3, scale_factors=(1, 4, 16)),
    "full": dict(sizes=(1200, 900, 900, 300), rirs=24, copies=2, width=1.0, epochs=40, batch=128, patience=10,
                 dilations=(1, 2, 4, 4), random_voices=200,
                 teacher_size="small", teacher_epochs=10, qat_epochs=8, negative_stream_s=3600.0,
                 stream_epochs=60, negative_hours=5.0,
                 scale_base=(150, 110, 110, 40), scale_epochs=5, scale_factors=(1, 4, 16)),
}

MWW_FILES = {"hey jarvis": "mww_v2_hey_jarvis", "okay nabu": "mww_v2_okay_nabu", "alexa": "mww_v2_alexa"}


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.t0, 3)


def slug(word: str) -> str:
    return "_".join(word.lower().split())


# ---- configuration -----------------------------------------------------------------------------

def base_config(word: str, dataset_dir: Path, out_dir: Path, preset: dict[str, Any], seed: int,
                sizes: tuple[int, int, int, int] | None = None) -> Any:
    from tinyconv.config import load_config

    pos, conf, other, bg = sizes or preset["sizes"]
    return load_config(None, [
        f"data.wake_word={word}", f"data.dataset_dir={dataset_dir}", f"data.seed={seed}",
        f"data.num_positive={pos}", f"data.num_confusable={conf}", f"data.num_other_speech={other}",
        f"data.num_background={bg}",
        f"augment.num_room_impulse_responses={preset['rirs']}", f"augment.copies_per_clip={preset['copies']}",
        "model.name=tinyconv", f"model.width_multiplier={preset['width']}",
        f"train.out_dir={out_dir}", f"train.epochs={preset['epochs']}", f"train.batch_size={preset['batch']}",
        f"train.early_stopping_patience={preset['patience']}", f"train.seed={seed}", "train.device=cpu",
        f"model.time_dilations={list(preset.get('dilations', (1, 1, 1, 1)))}",
        f"data.random_voices={preset.get('random_voices', 0)}",
        # Hours of validation negatives select the streaming epoch and set its manifest cutoff.
        f"data.negative_stream_minutes={preset.get('negative_stream_minutes', 0.0)}",
        # ... and hours of training negatives replace a share of each batch's negative clips.
        f"data.train_negative_stream_minutes={preset.get('train_negative_stream_minutes', 0.0)}",
    ])


def synthesize(config: Any, reuse: bool) -> tuple[Path, float, bool]:
    from tinyconv.config import config_to_dict, load_config
    from tinyconv.data.synth import synthesize_dataset

    ds = Path(config.data.dataset_dir)
    if reuse and (ds / "manifest.csv").is_file() and (ds / "config.yaml").is_file():
        old = load_config(ds / "config.yaml")
        if config_to_dict(old)["data"] == config_to_dict(config)["data"] and old.augment == config.augment:
            return ds, 0.0, True
    if ds.exists():
        shutil.rmtree(ds)
    t = Timer()
    synthesize_dataset(config, ds)
    return ds, t(), False


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


# ---- accuracy helpers --------------------------------------------------------------------------

def torch_accuracy(checkpoint: Path, x: np.ndarray, y: np.ndarray) -> float:
    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
    from tinyconv.trainer.run import predict

    logits = predict(model_from_checkpoint(load_checkpoint(checkpoint)), x)
    return float(np.mean(logits.argmax(1) == y))


def tflm_accuracy(tflite: Path, manifest: dict[str, Any], arena: int, x: np.ndarray, y: np.ndarray) -> float:
    from tinyconv.device.runners import run_tflm
    from tinyconv.features import features_to_int8

    x_int8 = features_to_int8(x, manifest["input"]["scale"], manifest["input"]["zero_point"])
    out = run_tflm(tflite.read_bytes(), x_int8, arena)
    return float(np.mean(out.reshape(len(x), -1).argmax(1) == y))


def frames_per_invoke(sim: dict[str, Any], stride_frames: int = 3) -> int:
    """Window models (98 frames in) are invoked every `stride_frames`; streaming models eat their input."""
    shape = sim["model"]["inputs"][0]["shape"]
    frames = int(np.prod(shape)) // 40
    return frames if frames < 98 else stride_frames


def macs_per_second(sim: dict[str, Any]) -> float:
    return sim["macs"] * 1000.0 / (10.0 * frames_per_invoke(sim))


def summarize_sim(sim: dict[str, Any]) -> dict[str, Any]:
    out = {
        "model_bytes": sim["model_bytes"], "macs_per_invoke": sim["macs"],
        "frames_per_invoke": frames_per_invoke(sim), "macs_per_second_audio": macs_per_second(sim),
        "arena_bytes_host": sim.get("arena_bytes_host"), "ops": sim.get("model", {}).get("ops"),
        "budgets": {}, "runtimes": {},
    }
    for name, b in sim.get("budgets", {}).items():
        out["budgets"][name] = {
            "arena_bytes_target": b["arena_bytes_target"], "flash_bytes_needed": b["flash_bytes_needed"],
            "estimated_latency_ms": b["estimated_latency_ms"], "pass": b["pass"],
            "checks": {k: {kk: vv for kk, vv in v.items() if kk in ("pass", "margin", "margin_pct", "limit", "needed")}
                       for k, v in b["checks"].items()},
            "clock_mhz": b["clock_mhz"], "kernels": b["kernels"], "core": b["core"],
        }
    for rt, r in sim.get("runtimes", {}).items():
        out["runtimes"][rt] = {k: r[k] for k in ("ok", "accuracy", "accuracy_drop", "latency", "error") if k in r}
    return out


def stream_summary(res: dict[str, Any]) -> dict[str, Any]:
    best = res["cutoff_for_target"]
    return {
        "target_fa_per_hour": res["target_fa_per_hour"],
        "frr_at_target": None if best is None else best["frr"],
        "cutoff_at_target": None if best is None else best["cutoff"],
        "fa_per_hour_at_target": None if best is None else best["fa_per_hour"],
        "at_default_cutoff": res["at_cutoff"], "detector": res["detector"],
        "det_curve": res["det_curve"],
    }


# ---- the streaming model and held-out negative audio --------------------------------------------

# Targets of the streaming model (issue 14): per 30 ms step, on the simulator's ESP32-S3 arena
# model and nRF52840 cost model; FRR at <= TARGET_FA_PER_HOUR no worse than the window model's and
# microWakeWord's on the same streams.
STREAM_MAX_MACS = 25_000
STREAM_MAX_ARENA_ESP32S3 = 26 * 1024
STREAM_MAX_MODEL_BYTES = 60 * 1024
STREAM_MAX_NRF_LATENCY_MS = 10.0


# The streaming student learns from the window model of the same run (distill.teachers: [tinyconv]):
# mostly the window model's predictions on every shifted, augmented training window, a little of
# the labels. On okay nabu's held-out streams (float, 5.5 h) this weighting cut the FRR at
# <= 0.5 FA/h from 0.88-1.00 (labels only, 3 seeds) to 0.64 (0.70 and 0.77 with 0.5/0.5, T=2).
STREAM_DISTILL = {"enabled": True, "teachers": ["tinyconv"], "alpha_ce": 0.1, "alpha_kd": 0.9,
                  "alpha_feature": 0.0, "temperature": 1.0}
# With that teacher, the student also hears every positive in the training streams and mines its
# long negatives (README, Training): okay nabu seed 1 went from 78 % to 37 % FRR at <= 0.5 FA/h.
# Only with the teacher: without one (the quickstart) the same settings made the model worse.
STREAM_TEACHER_TRAIN = {"context_positive_fraction": 1.0, "hard_negative_fraction": 0.8}


def stream_config(cfg: Any, preset: dict[str, Any], out_dir: Path, teacher: Path | None = None) -> Any:
    """`cfg` with the quickstart recipe's streaming model and streaming training (the default path);
    with `teacher` (a window checkpoint), distilled from it, with STREAM_TEACHER_TRAIN."""
    from tinyconv.config import config_to_dict, load_config, replace

    recipe = config_to_dict(load_config("quickstart"))
    # The recipe's whole training section (streaming windows, stream selection, no label
    # smoothing, no early stop), with this preset's epochs and folder; the data stays the preset's.
    train = {k: v for k, v in recipe["train"].items() if k not in ("out_dir", "epochs", "seed", "device")}
    out = replace(cfg, model=recipe["model"],
                  train={**train, "out_dir": str(out_dir), "epochs": preset["stream_epochs"],
                         "early_stopping_patience": preset["stream_epochs"]})
    if teacher is None:
        return out
    return replace(out, train=STREAM_TEACHER_TRAIN,
                   distill={**STREAM_DISTILL, "teacher_pretrained_dirs": {"tinyconv": str(teacher)}})


def heldout_negative_streams(cfg: Any, ds: Path, hours: float, seed: int,
                             stream_s: float = 600.0) -> tuple[list[Any], dict[str, Any]]:
    """`hours` of negative audio that training never used, as `stream_s` streams: the library's
    generator (tinyconv.data.negative_streams) with the test split's voices (speaker-disjoint from
    training) in 4 newly simulated rooms, seeded apart from the dataset's own validation and test
    streams."""
    from tinyconv.data.augment import simulate_rirs
    from tinyconv.data.manifest import read_manifest
    from tinyconv.data.negative_streams import negative_stream_audio
    from tinyconv.data.tts import available_voices
    from tinyconv.firmware_sim.streaming import Stream

    rows, _ = read_manifest(ds)
    test_ids = {r.voice for r in rows if r.split == "test" and r.voice}
    voices = [v for v in available_voices() if v.id in test_ids]
    rirs = simulate_rirs(4, 16000, seed=seed * 10 + 777)  # rooms no split has used
    pieces, info = negative_stream_audio(cfg.data.wake_word, voices, hours * 3600.0, rirs, seed=seed,
                                         speeds_wpm=cfg.data.speeds_wpm, workers=cfg.data.num_workers,
                                         stream_s=stream_s)
    info = {**info, "test_voices": info.pop("voices"),
            "source": "new sentences and other assistants' wake words by the test split's voices (alone, over "
                      "noise or procedural music, babble), procedural music, coloured noise; 4 newly simulated rooms"}
    return [Stream(p) for p in pieces], info


def stream_targets(stream: dict[str, Any], ours: dict[str, Any], mww: dict[str, Any]) -> dict[str, bool]:
    """The streaming model's targets (issue 14) from its simulation and the three stream results."""
    esp, nrf = stream["budgets"].get("esp32s3", {}), stream["budgets"].get("nrf52840", {})
    frr = stream["streaming"]["frr_at_target"]

    def no_worse(other: dict[str, Any]) -> bool:
        o = other.get("streaming", {}).get("frr_at_target") if "skipped" not in other else None
        return frr is not None and (o is None or frr <= o)

    out = {
        "stream_macs_le_25k": (stream["macs_per_invoke"] or 0) <= STREAM_MAX_MACS,
        "stream_arena_esp32s3_le_26k": (esp.get("arena_bytes_target") or 1e12) <= STREAM_MAX_ARENA_ESP32S3,
        "stream_model_le_60k": stream["model_bytes"] <= STREAM_MAX_MODEL_BYTES,
        "stream_nrf52840_latency_le_10ms": (nrf.get("estimated_latency_ms") or 1e12) <= STREAM_MAX_NRF_LATENCY_MS,
        "stream_frr_le_window": no_worse(ours),
    }
    if "skipped" not in mww:
        out["stream_frr_le_mww"] = no_worse(mww)
    return out


# ---- one wake word -----------------------------------------------------------------------------

def run_word(word: str, preset: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tinyconv.config import replace
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import read_manifest, resolve
    from tinyconv.device.runners import make_runner
    from tinyconv.device.tflite_file import load_tflite
    from tinyconv.export import export_checkpoint
    from tinyconv.firmware_sim.report import simulate
    from tinyconv.firmware_sim.streaming import DetectorConfig, build_streams, evaluate_streams
    from tinyconv.trainer.run import load_splits, train
    from tinyconv.trainer.teachers import train_teachers

    root = work / slug(word)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    res: dict[str, Any] = {"wake_word": word, "seconds": seconds}
    cfg = base_config(word, root / "data", root / "v2_float", preset, args.seed)

    log(f"{word}: synthesize")
    ds, seconds["synthesize"], res["data_reused"] = synthesize(cfg, args.reuse_data)
    t = Timer()
    data = load_splits(cfg, ("train", "val", "test"))
    seconds["features"] = t()
    test = data["test"]
    res["clips"] = {s: len(fs) for s, fs in data.items()}
    res["positives"] = {s: int(np.sum(fs.y == fs.positive_index)) for s, fs in data.items()}
    res["labels"] = test.labels
    tv = {"train": data["train"], "val": data["val"]}

    models: dict[str, Any] = {}

    def fit(name: str, config: Any, **kw: Any) -> Path:
        fresh(Path(config.train.out_dir))
        log(f"{word}: train {name}")
        t = Timer()
        r = train(config, data=tv, **kw)
        seconds[f"train_{name}"] = t()
        models[name] = {"checkpoint": str(r.checkpoint_path), "val_metric": r.best_metric,
                        "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                        "clips_per_second": r.clips_per_second,
                        "test_accuracy_float": torch_accuracy(r.checkpoint_path, test.x, test.y)}
        return r.checkpoint_path

    fit("v1_float", replace(cfg, model={"tiny_conv_use_depthwise": False}, train={"out_dir": str(root / "v1_float")}))
    v2_float = fit("v2_float", cfg)

    # Dual-teacher distillation (tiny teachers fine-tuned on this dataset's waveforms).
    dcfg = replace(cfg, train={"out_dir": str(root / "v2_distilled")},
                   distill={"enabled": True, "teachers": ["wav2vec2", "conformer"],
                            "teacher_size": preset["teacher_size"], "teacher_epochs": preset["teacher_epochs"],
                            "teacher_dir": str(root / "teachers"),
                            "teacher_cache_dir": str(root / "teacher_cache")})
    if not args.skip_distillation:
        fresh(root / "teachers")
        fresh(root / "teacher_cache")
        log(f"{word}: fine-tune teachers")
        t = Timer()
        teachers = train_teachers(dcfg)
        seconds["teachers"] = t()
        res["teachers"] = {r.kind: {"val_accuracy": r.val_accuracy, "train_seconds": r.train_seconds,
                                    "parameters": r.num_parameters} for r in teachers}
        fit("v2_distilled", dcfg)

    # The better V2 by validation metric (never by test) seeds QAT.
    best_name = max((n for n in ("v2_float", "v2_distilled") if n in models),
                    key=lambda n: (models[n]["val_metric"], n == "v2_float"))
    best_ckpt = v2_float if best_name == "v2_float" else Path(models[best_name]["checkpoint"])
    res["qat_init"] = best_name
    f = preset["qat_epochs"]
    qcfg = replace(cfg, train={"out_dir": str(root / "v2_qat")},
                   qat={"enabled": True, "epochs": f, "freeze_bn_epoch": max(1, f - 2),
                        "freeze_observers_epoch": max(1, f - 1)})
    qat_ckpt = fit("v2_qat", qcfg, init_checkpoint=best_ckpt)

    log(f"{word}: export INT8 TFLite/ONNX/C")
    export_dir = root / "export"
    if export_dir.exists() and not (export_dir / "manifest.json").exists():
        shutil.rmtree(export_dir)
    t = Timer()
    exp = export_checkpoint(qat_ckpt, export_dir, formats="tflite,onnx,c")
    seconds["export"] = t()
    res["export"] = {"dir": str(export_dir), "quantization": exp.quantization,
                     "files": {k: v["bytes"] for k, v in exp.manifest["files"].items()},
                     "tensor_arena_bytes": exp.tensor_arena_bytes, "self_check": exp.self_check}

    # Gate 1: INT8 (TFLM) vs float (the V2 that QAT started from), same test features.
    float_acc = models[best_name]["test_accuracy_float"]
    int8_acc = tflm_accuracy(exp.files["model_int8.tflite"], exp.manifest, exp.tensor_arena_bytes, test.x, test.y)
    drop = 100.0 * (float_acc - int8_acc)
    res["quantization"] = {"float_model": best_name, "float_test_accuracy": float_acc,
                           "int8_tflm_test_accuracy": int8_acc, "drop_points": drop,
                           "test_clips": len(test), "one_clip_points": 100.0 / len(test)}

    log(f"{word}: simulate ({', '.join(BUDGETS)})")
    t = Timer()
    sim = simulate(export_dir, list(BUDGETS), out_dir=root / "simulate", dataset_dir=ds,
                   latency_repeats=args.latency_repeats, workers=args.workers)
    seconds["simulate"] = t()
    res["ours"] = summarize_sim(sim)

    # The streaming model of the default path (quickstart recipe), exported for ESPHome.
    # Its teacher: the window V2 that seeded QAT (float; chosen by validation metric).
    res["stream_teacher"] = None if args.no_stream_teacher else best_name
    stream_ckpt = fit("stream", stream_config(cfg, preset, root / "stream",
                                              None if args.no_stream_teacher else best_ckpt))
    log(f"{word}: export the streaming model for ESPHome")
    stream_dir = root / "export_stream"
    if stream_dir.exists() and not (stream_dir / "manifest.json").exists():
        shutil.rmtree(stream_dir)
    t = Timer()
    sexp = export_checkpoint(stream_ckpt, stream_dir, formats="esphome,c")
    seconds["export_stream"] = t()
    ssim = simulate(stream_dir, list(BUDGETS), latency_repeats=args.latency_repeats)
    res["stream"] = summarize_sim(ssim)
    res["stream"]["manifest"] = sexp.esphome_manifest["micro"]
    res["stream"]["files"] = {k: v["bytes"] for k, v in sexp.manifest["files"].items()}
    res["stream"]["cutoff_choice"] = sexp.manifest["esphome"]["probability_cutoff"]

    # Streams from the test split only: test voices, test rooms/babble, test negatives.
    rows, info = read_manifest(ds)
    trows = [r for r in rows if r.split == "test"]
    label = info.positive_label
    pos = [load_audio(resolve(ds, r), allow_silent=True).samples for r in trows if r.label == label]
    # False accepts per hour are measured on general audio (other speech, noise), as the field
    # measures them; near-homophones of the wake word ("hey jervis") are the confusable test
    # clips' job (clip-level FAR in the accuracy tables): any detector, microWakeWord's
    # included, fires on some of them, and a 64-clip background repeats each one many times.
    neg = [load_audio(resolve(ds, r), allow_silent=True).samples for r in trows
           if r.label != label and r.kind != "confusable"]
    cap = preset.get("stream_positives")
    if cap is not None and len(pos) > cap:  # a seeded subset keeps the stream length in check
        pick = np.random.default_rng(args.seed).choice(len(pos), cap, replace=False)
        pos = [pos[i] for i in sorted(pick)]
    streams = build_streams(pos, neg, seed=args.seed, positive_stream_s=max(30.0, 7.0 * len(pos)),
                            negative_stream_s=preset["negative_stream_s"])
    heldout: dict[str, Any] = {}
    if preset.get("negative_hours"):
        log(f"{word}: {preset['negative_hours']} h of held-out negative audio")
        t = Timer()
        neg_streams, heldout = heldout_negative_streams(cfg, ds, preset["negative_hours"], args.seed)
        streams = streams + neg_streams
        seconds["heldout_negatives"] = t()
    hours = sum(s.duration_s for s in streams) / 3600.0
    res["streams"] = {"positives_placed": sum(len(s.positives) for s in streams), "test_positive_clips": len(pos),
                      "test_negative_clips": len(neg), "hours": hours, "fa_per_hour_resolution": 1.0 / hours,
                      "heldout_negatives": heldout,
                      "source": "test split only (speaker-disjoint voices, per-split rooms and babble); "
                                "background = other speech and noise, no confusables"
                                + ("; plus held-out negative streams (speech by test voices, music, noise)"
                                   if heldout else "")}
    log(f"{word}: streaming, ours ({hours * 60:.1f} min of audio)")
    t = Timer()
    model = load_tflite(exp.files["model_int8.tflite"])
    # TFLite Micro's reference kernels take ~15 ms per invoke of a 7 M MAC window model on this
    # host; an hour of stream is 120k invokes. Presets with long streams run ours under LiteRT
    # (same .tflite, int8 XNNPACK kernels; the simulator's accuracy table compares it with TFLM).
    stream_runtime = preset.get("stream_runtime", "tflm")
    res["streams"]["runtime_ours"] = stream_runtime
    runner = make_runner(stream_runtime, model, arena_size=sim["arena_bytes_host"])
    res["ours"]["streaming"] = stream_summary(
        evaluate_streams(runner, streams, positive_index=info.labels.index(label),
                         target_fa_per_hour=TARGET_FA_PER_HOUR))
    seconds["streaming_ours"] = t()

    log(f"{word}: streaming, our streaming model (ESPHome detector: its manifest's window and cutoff)")
    t = Timer()
    micro = res["stream"]["manifest"]
    srunner = make_runner("tflm", load_tflite(sexp.files[sexp.esphome_manifest["model"]]),
                          arena_size=ssim["arena_bytes_host"])
    sdet = DetectorConfig(window=int(micro["sliding_window_size"]), cutoff=float(micro["probability_cutoff"]))
    res["stream"]["streaming"] = stream_summary(
        evaluate_streams(srunner, streams, sdet, target_fa_per_hour=TARGET_FA_PER_HOUR))
    seconds["streaming_stream"] = t()

    # microWakeWord's released v2 model for the same word, same streams.
    ref_name = MWW_FILES.get(word.lower().strip())
    ref_dir = Path(args.reference_dir)
    if ref_name is None:
        res["mww"] = {"skipped": f"no released microWakeWord v2 model for {word!r}"}
    elif not (ref_dir / f"{ref_name}.tflite").is_file():
        res["mww"] = {"skipped": f"{ref_dir / (ref_name + '.tflite')} not found"}
    else:
        log(f"{word}: streaming, microWakeWord {ref_name}")
        t = Timer()
        path = ref_dir / f"{ref_name}.tflite"
        meta_path = ref_dir / f"{ref_name}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        micro = meta.get("micro", {})
        msim = simulate(path, list(BUDGETS), latency_repeats=args.latency_repeats)
        mww = summarize_sim(msim)
        mww["file"] = str(path)
        mww["manifest"] = micro
        det = DetectorConfig(window=int(micro.get("sliding_window_size", 5)),
                             cutoff=float(micro.get("probability_cutoff", 0.9)))
        mrunner = make_runner("tflm", load_tflite(path), arena_size=msim["arena_bytes_host"])
        mww["streaming"] = stream_summary(
            evaluate_streams(mrunner, streams, det, target_fa_per_hour=TARGET_FA_PER_HOUR))
        seconds["streaming_mww"] = t()
        res["mww"] = mww

    res["models"] = models
    res["targets"] = {
        "int8_drop_le_0p5": drop <= MAX_DROP_POINTS,
        **{f"fits_{b}": bool(res["ours"]["budgets"].get(b, {}).get("pass", False)) for b in BUDGETS},
    }
    res["targets"].update(stream_targets(res["stream"], res["ours"], res["mww"]))
    res["export_dir"] = str(export_dir)
    res["export_stream_dir"] = str(stream_dir)
    return res


# ---- scale study -------------------------------------------------------------------------------

def scale_study(word: str, preset: dict[str, Any], work: Path, export_dir: Path | None,
                factors: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    from tinyconv.config import replace
    from tinyconv.firmware_sim.report import simulate
    from tinyconv.trainer.run import load_splits, train

    rows = []
    for f in factors:
        sizes = tuple(max(1, n * f) for n in preset["scale_base"])
        root = work / "scale" / f"x{f}"
        root.mkdir(parents=True, exist_ok=True)
        cfg = base_config(word, root / "data", root / "run", preset, args.seed, sizes=sizes)  # type: ignore[arg-type]
        cfg = replace(cfg, train={"epochs": preset["scale_epochs"], "early_stopping_patience": 1000},
                      model={"tiny_conv_use_depthwise": True})
        log(f"scale x{f}: synthesize {sizes}")
        ds, synth_s, reused = synthesize(cfg, args.reuse_data)
        t = Timer()
        data = load_splits(cfg, ("train", "val"))
        feat_s = t()
        fresh(root / "run")
        log(f"scale x{f}: train V2 {preset['scale_epochs']} epochs on {len(data['train'])} clips")
        t = Timer()
        r = train(cfg, data=data)
        train_s = t()
        sim_s = None
        test_clips = None
        if export_dir is not None:
            log(f"scale x{f}: simulate (test split, all runtimes, streaming)")
            t = Timer()
            rep = simulate(export_dir, list(BUDGETS), dataset_dir=ds, streaming=True,
                           latency_repeats=args.latency_repeats, workers=args.workers)
            sim_s = t()
            test_clips = rep.get("accuracy", {}).get("num_clips")
        rows.append({"factor": f, "sizes": list(sizes), "clips_train": len(data["train"]),
                     "clips_val": len(data["val"]), "clips_test": test_clips, "synthesize_s": synth_s,
                     "synth_reused": reused, "features_s": feat_s, "train_s": train_s, "train_epochs": r.epochs_run,
                     "train_clips_per_s": r.clips_per_second, "simulate_s": sim_s})
    base = rows[0] if rows else None
    for r in rows:
        for key in ("synthesize_s", "train_s", "simulate_s"):
            if base and base[key] and r[key] is not None:
                r[key.replace("_s", "_x")] = r[key] / base[key]
    return rows


# ---- report ------------------------------------------------------------------------------------

def majority_rate(w: dict[str, Any]) -> float:
    n, p = w["clips"]["test"], w["positives"]["test"]
    return max(p, n - p) / n if n else 0.0


def fmt_int(v: Any) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def fmt_pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def verdict(ours: dict[str, Any], mww: dict[str, Any]) -> dict[str, str]:
    out = {}
    so, sm = ours["streaming"]["frr_at_target"], mww["streaming"]["frr_at_target"]
    if so is None or sm is None:
        out["frr"] = "n/a (no cutoff reached the FA/h target)"
    else:
        out["frr"] = "win" if so < sm else ("tie" if so == sm else "lose")
    for key, name in (("model_bytes", "model_bytes"), ("arena_bytes_host", "arena"),
                      ("macs_per_second_audio", "macs_s")):
        a, b = ours.get(key), mww.get(key)
        out[name] = "n/a" if a is None or b is None else ("win" if a < b else ("tie" if a == b else "lose"))
    ea = ours["budgets"].get("esp32s3", {}).get("arena_bytes_target")
    eb = mww["budgets"].get("esp32s3", {}).get("arena_bytes_target")
    out["arena_esp32s3"] = "n/a" if ea is None or eb is None else ("win" if ea < eb else "lose")
    return out


def render_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    L: list[str] = []
    L.append("# Results: end-to-end benchmark (`benchmarks/e2e.py`)")
    L.append("")
    L.append(f"> Generated by `{report['command']}` on {report['finished_utc']} "
             f"(**scale `{s['scale']}`**). JSON: `{report['json']}`.")
    if s["scale"] != "full":
        what = ("the quickstart recipe (dilated blocks, 200 generated training voices) on a fifth of its data "
                "per word, 30 epochs, tiny teachers and half an hour of stream audio per word"
                if s["scale"] == "medium" else
                "the quickstart recipe (dilated blocks, 500 generated training voices) on ~40 % of its data per "
                "word, 30 epochs (40 streaming), tiny teachers and an hour of training negative stream per word"
                if s["scale"] == "large" else
                "small synthetic datasets, short training and minutes of stream audio")
        L.append(f"> This table is from the `{s['scale']}` scale: {what}. It is **not** the production "
                 f"measurement (`--scale full`: two augmented copies per utterance, 40 epochs, small teachers, "
                 f"an hour of negative stream).")
    L.append("")
    L.append(f"Host: {report['host']['machine']}, {report['host']['cpus']} CPUs shared with other work "
             f"(load average {report['host']['load_start']} at start, {report['host']['load_end']} at end), "
             f"run under `nice -n {report['host'].get('nice', 0)}`; torch {report['host']['torch']}, "
             f"Python {report['host']['python']}. "
             f"Total wall time {report['total_seconds'] / 60:.1f} min.")
    L.append("")
    L.append("## Targets (checked by the script; exit 1 when one fails)")
    L.append("")
    L.append(f"| wake word | float V2 test acc (PyTorch) | INT8 test acc (TFLite Micro) "
             f"| drop (target <= {MAX_DROP_POINTS} pt) | test clips (1 clip =) | majority-class acc | fits nRF52840 "
             f"| fits ESP32-S3 | all |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    degenerate = []
    for w in report["words"]:
        if "error" in w:
            L.append(f"| {w['wake_word']} | error: {w['error'][:80]} | | | | | | FAIL |")
            continue
        q, t = w["quantization"], w["targets"]
        ok = all(t.values())
        majority = majority_rate(w)
        if q["float_test_accuracy"] <= majority + 1e-9:
            degenerate.append(w["wake_word"])
        L.append(f"| {w['wake_word']} | {fmt_pct(q['float_test_accuracy'])} ({q['float_model']}) | "
                 f"{fmt_pct(q['int8_tflm_test_accuracy'])} | {q['drop_points']:+.2f} pt "
                 f"{'PASS' if t['int8_drop_le_0p5'] else 'FAIL'} | {q['test_clips']} ({q['one_clip_points']:.2f} pt) | "
                 f"{fmt_pct(majority)} | "
                 f"{'PASS' if t['fits_nrf52840'] else 'FAIL'} | {'PASS' if t['fits_esp32s3'] else 'FAIL'} | "
                 f"{'PASS' if ok else 'FAIL'} |")
    L.append("")
    L.append(f"Overall: **{'all targets met' if report['pass'] else 'at least one target failed'}** "
             f"(exit code {0 if report['pass'] else 1}).")
    L.append("")
    if degenerate:
        L.append(f"**Caution:** for {', '.join(degenerate)} the float model is no better than always predicting the "
                 f"majority class on the test split, so the INT8 drop target is met trivially here: at this scale "
                 f"the models have not learned the wake word. Only a larger scale says whether QAT keeps a *useful* "
                 f"model within {MAX_DROP_POINTS} points.")
        L.append("")
    L.append("## Models per wake word (test split, speaker-disjoint)")
    L.append("")
    L.append("| wake word | model | val metric | test acc | train s | note |")
    L.append("|---|---|---|---|---|---|")
    for w in report["words"]:
        if "error" in w:
            continue
        for name, m in w["models"].items():
            note = ""
            if name == w["qat_init"]:
                note = "best V2 by val: QAT init"
            if name == "v2_qat":
                note = ("QAT+fusion, test acc = fake-quant PyTorch; "
                        f"TFLM INT8 {fmt_pct(w['quantization']['int8_tflm_test_accuracy'])}")
            L.append(f"| {w['wake_word']} | {name} | {m['val_metric']:.3f} | {fmt_pct(m['test_accuracy_float'])} | "
                     f"{w['seconds'].get('train_' + name, 0):.0f} | {note} |")
        if "teachers" in w:
            tch = ", ".join(f"{k} {fmt_pct(v['val_accuracy'])}" for k, v in w["teachers"].items())
            L.append(f"| {w['wake_word']} | teachers ({s['teacher_size']}, val acc) | | | "
                     f"{w['seconds']['teachers']:.0f} | {tch} |")
    L.append("")
    L.append("Val metric: `train.selection_metric` (wake-word recall at 1 % false accepts on the validation split).")
    L.append("")
    L.append("## Deployment: exported INT8 model on the MCU budgets")
    L.append("")
    L.append("| wake word | model bytes | MACs / inference | arena host | MCU | arena target | flash needed | "
             "est. latency | fits |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for w in report["words"]:
        if "error" in w:
            continue
        o = w["ours"]
        for b, e in o["budgets"].items():
            L.append(f"| {w['wake_word']} | {fmt_int(o['model_bytes'])} | {fmt_int(o['macs_per_invoke'])} | "
                     f"{fmt_int(o['arena_bytes_host'])} | {b} ({e['core']} @ {e['clock_mhz']:g} MHz, {e['kernels']}) | "
                     f"{fmt_int(e['arena_bytes_target'])} | {fmt_int(e['flash_bytes_needed'])} | "
                     f"{e['estimated_latency_ms']:.2f} ms | {'yes' if e['pass'] else 'NO'} |")
    L.append("")
    L.append("Latency is the simulator's cost model (calibrated on one Cortex-M4 model; cross-core estimates "
             "+-50 %), not a board measurement. Arena target: the 32-bit model of docs/FIRMWARE_SIM.md.")
    L.append("")
    L.append("## Side by side with microWakeWord (same test streams)")
    L.append("")
    runtimes = {w["streams"].get("runtime_ours", "tflm") for w in report["words"] if "streams" in w}
    where = ("Both models run under TFLite Micro" if runtimes <= {"tflm"} else
             "microWakeWord runs under TFLite Micro and ours under LiteRT (the same INT8 .tflite; TFLite Micro's "
             "reference kernels would need ~15 ms per window here, and the simulator's accuracy table above "
             "compares the two runtimes on the test clips)")
    L.append(f"{where} on the same streams, built only from the test split "
             f"(voices, rooms and babble training never saw): test positives inside a background of test "
             f"negatives (other speech and noise; confusable near-homophones are left to the clip-level tables), plus "
             f"a negative-only stream. FRR is at the lowest-FRR cutoff whose false accepts per "
             f"hour are <= {TARGET_FA_PER_HOUR} (`cutoff_for_target`), i.e. at equal FA/h. microWakeWord's models "
             f"are streaming (3 new frames per invoke, state in resource variables); ours sees a 98-frame window "
             f"every 30 ms. MACs per second of audio = MACs per invoke x invokes per second.")
    L.append("")
    L.append("| wake word | model | FRR @ <= 0.5 FA/h (cutoff) | FRR / FA/h at own cutoff | model bytes | arena host | "
             "arena ESP32-S3 (target) | MACs / s audio | stream audio |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for w in report["words"]:
        if "error" in w:
            continue
        st = w["streams"]
        rows = [("tinyconv V2 (ours, QAT INT8)", w["ours"])]
        if "stream" in w:
            rows.insert(0, ("stream_tinyconv (ours, INT8, ESPHome pair)", w["stream"]))
        if "skipped" not in w["mww"]:
            rows.append(("microWakeWord v2 (released)", w["mww"]))
        for name, m in rows:
            sm = m["streaming"]
            at = sm["at_default_cutoff"]
            frr = ("n/a" if sm["frr_at_target"] is None
                   else f"{fmt_pct(sm['frr_at_target'])} ({sm['cutoff_at_target']:.2f})")
            L.append(f"| {w['wake_word']} | {name} | {frr} | {fmt_pct(at['frr'])} / {at['fa_per_hour']:.1f} "
                     f"(cutoff {sm['detector']['cutoff']:.2f}) | {fmt_int(m['model_bytes'])} | "
                     f"{fmt_int(m['arena_bytes_host'])} | "
                     f"{fmt_int(m['budgets'].get('esp32s3', {}).get('arena_bytes_target'))} | "
                     f"{fmt_int(m['macs_per_second_audio'])} | {st['hours'] * 60:.1f} min, "
                     f"{st['positives_placed']} positives |")
        if "skipped" in w["mww"]:
            L.append(f"| {w['wake_word']} | microWakeWord | skipped: {w['mww']['skipped']} | | | | | | |")
        else:
            verdicts.append((w["wake_word"], verdict(w["ours"], w["mww"]), w))
    L.append("")
    if verdicts:
        L.append("### Win or lose")
        L.append("")
        for word, v, w in verdicts:
            L.append(f"- **{word}**: FRR at equal FA/h: **{v['frr']}**; model bytes: **{v['model_bytes']}**; "
                     f"arena (host): **{v['arena']}**, arena (ESP32-S3 target): **{v['arena_esp32s3']}**; "
                     f"MACs per second of audio: **{v['macs_s']}** "
                     f"(ours {fmt_int(w['ours']['macs_per_second_audio'])}, microWakeWord "
                     f"{fmt_int(w['mww']['macs_per_second_audio'])}).")
            fo, fm = w["ours"]["streaming"]["frr_at_target"], w["mww"]["streaming"]["frr_at_target"]
            npos = w["streams"]["positives_placed"]
            if fo is not None and fm is not None and not (fo == 1.0 and fm == 1.0) and abs(fo - fm) * npos <= 2.5:
                L.append(f"  The FRR difference is {abs(fo - fm) * npos:.0f} of {npos} positives: not significant.")
            if fo == 1.0 and fm == 1.0:
                L.append(f"  Neither model detects any positive at <= {TARGET_FA_PER_HOUR} FA/h on these streams: the "
                         f"FRR comparison says nothing at this scale.")
        L.append("")
        res_fa = max(w["streams"]["fa_per_hour_resolution"] for _, _, w in verdicts)
        L.append(f"Resolution: with these stream lengths one false accept is up to {res_fa:.1f} FA/h, so "
                 f"\"<= {TARGET_FA_PER_HOUR} FA/h\" here means *no* false accept on the streams; FRR is over "
                 f"{'/'.join(str(w['streams']['positives_placed']) for _, _, w in verdicts)} positives "
                 f"({', '.join(word for word, _, _ in verdicts)}), one positive = "
                 f"{100.0 / min(w['streams']['positives_placed'] for _, _, w in verdicts):.0f} points. The streams are "
                 f"synthetic TTS (espeak-ng/flite) voices: microWakeWord was trained on other (Piper TTS and real) "
                 f"audio, so these streams are out of its training distribution and in ours; that favours us on FRR. "
                 f"The stream path for microWakeWord's models was cross-checked against an independent detector "
                 f"(pymicro-wakeword 2.5.0, its own features and the TFLite C library) on the same streams: per-invoke "
                 f"probabilities agree to a few uint8 steps and every DET point is identical, and the released "
                 f"okay_nabu model fires on clean espeak-ng \"okay nabu\" (smoothed max 0.98-0.996 for most voices), "
                 f"so its low scores here are the data, not the harness. The hey_jarvis model responds weakly to "
                 f"espeak-ng voices even when clean (it fired on 2 of 24 voice/rate variants at 0.97). "
                 + ("The stream backgrounds hold no confusables: when they did (earlier runs), every microWakeWord "
                    "false accept was a near-homophone of the wake word (\"wokay nabu\", \"key jarvis\", \"hey "
                    "jervis\"), which a released model is expected to fire on (docs/FIRMWARE_SIM.md)."
                    if all("no confusables" in w["streams"].get("source", "") for _, _, w in verdicts) else
                    "Its false accepts on these streams come from the test split's confusables, which include "
                    "near-homophones of the wake word (\"wokay nabu\", \"key jarvis\", \"hey jervis\"): a released "
                    "model is expected to fire on those (docs/FIRMWARE_SIM.md)."))
        L.append("")
        L.append("What would close the gap where we lose:")
        L.append("")
        L.append("- **MACs per second**: our model recomputes a whole 98-frame window every 30 ms; microWakeWord's "
                 "streaming layers keep ring buffers and compute only the 3 new frames. A streaming export of TinyConv "
                 "(causal convolutions with state in resource variables, as microWakeWord does) would cut MACs per "
                 "second by roughly the window/stride ratio (~30x) at the same accuracy.")
        L.append("- **FRR at low FA/h**: far more and more varied data (thousands of TTS voices, e.g. Piper, plus real "
                 "speech; hours of real negative audio, music and TV for the false-accept side), longer training at "
                 "`--scale full` with width 1.0, and hours-long negative streams so the cutoff is set on real false "
                 "accepts instead of on zero events; teachers with pretrained speech weights "
                 "(`distill.teacher_pretrained_dirs`) for distillation to help (docs/EXPERT_DISTILLATION_GUIDE.md).")
        L.append("- **Model bytes / arena**: a narrower V2 (`tinyconv_v2_075`, `_050`) trades accuracy for flash "
                 "and RAM; the arena is dominated by the first activations (98x40 input, stride-2 stem), which a "
                 "streaming model also shrinks.")
        L.append("")
    stream_words = [w for w in report["words"] if "stream" in w]
    if stream_words:
        L.append("## The streaming model's targets")
        L.append("")
        L.append(f"`stream_tinyconv` from the quickstart recipe (streaming training, selection on validation streams), "
                 f"exported with `--formats esphome` and run as ESPHome feeds it (TFLite Micro, its manifest's sliding "
                 f"window and cutoff). Targets: <= {STREAM_MAX_MACS:,} MACs per 30 ms step, arena <= "
                 f"{STREAM_MAX_ARENA_ESP32S3:,} B on the simulator's ESP32-S3 model, "
                 f"model <= {STREAM_MAX_MODEL_BYTES:,} B, "
                 f"nRF52840 step latency <= {STREAM_MAX_NRF_LATENCY_MS:g} ms (cost model), FRR at <= "
                 f"{TARGET_FA_PER_HOUR} FA/h no worse than our window model's and microWakeWord's on the same "
                 f"streams.")
        L.append("")
        L.append("| wake word | MACs / step | model bytes | arena ESP32-S3 (target) | manifest tensor_arena_size | "
                 "nRF52840 latency | cutoff (manifest) | FRR @ <= 0.5 FA/h: stream / window / microWakeWord "
                 "| targets |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for w in stream_words:
            st, t = w["stream"], w["targets"]
            frr = " / ".join("n/a" if m is None or "streaming" not in m else fmt_pct(m["streaming"]["frr_at_target"])
                             for m in (st, w["ours"], w.get("mww")))
            failed = [k for k, v in t.items() if k.startswith("stream_") and not v]
            L.append(f"| {w['wake_word']} | {fmt_int(st['macs_per_invoke'])} | {fmt_int(st['model_bytes'])} | "
                     f"{fmt_int(st['budgets'].get('esp32s3', {}).get('arena_bytes_target'))} | "
                     f"{fmt_int(st['manifest']['tensor_arena_size'])} | "
                     f"{st['budgets'].get('nrf52840', {}).get('estimated_latency_ms', float('nan')):.2f} ms | "
                     f"{st['manifest']['probability_cutoff']} | {frr} | "
                     f"{'all met' if not failed else 'FAIL: ' + ', '.join(failed)} |")
        L.append("")
        h = stream_words[0]["streams"].get("heldout_negatives") or {}
        if h:
            L.append(f"Negative audio: {h['hours']:.1f} h per word of {h['source']} "
                     f"({h['speech_utterances']} utterances by {h['test_voices']} test voices; seconds by kind "
                     f"{h['seconds_by_kind']}), plus the test split's positive stream.")
            L.append("")
    sc = report.get("scale_study")
    L.append("## Scale: time vs dataset size")
    L.append("")
    if sc:
        L.append(f"Wake word `{report['scale_word']}`, base size {sc[0]['sizes']} (positive, confusable, other speech, "
                 f"background clean utterances), V2 trained {s['scale_epochs']} epochs at each size; simulation = "
                 f"`simulate()` of the exported model over the test split on every runtime plus streaming. "
                 f"Same shared, niced host: treat ratios as rough.")
        L.append("")
        L.append("| size | clips train/val/test | synthesis s (x) | features s | training s (x) | train clips/s "
                 "| simulation s (x) |")
        L.append("|---|---|---|---|---|---|---|")

        def cell(row: dict[str, Any], key: str) -> str:
            v = row.get(key + "_s")
            x = row.get(key + "_x")
            return "n/a" if v is None else f"{v:.1f} ({x:.1f}x)" if x is not None else f"{v:.1f}"

        for r in sc:
            synth = "reused" if r["synth_reused"] else cell(r, "synthesize")
            L.append(f"| {r['factor']}x | {r['clips_train']}/{r['clips_val']}/{r['clips_test'] or 'n/a'} | {synth} | "
                     f"{r['features_s']:.1f} | {cell(r, 'train')} | {r['train_clips_per_s']:.0f} | "
                     f"{cell(r, 'simulate')} |")
        L.append("")
        L.append(f"Load average went from {report['host']['load_start']} to {report['host']['load_end']} during the "
                 f"run (other jobs on the same 2 cores): single timings of a few seconds are noise.")
        L.append("")
        L.append("Synthesis and feature extraction are per clip (linear in clips, parallel over cores); training is "
                 "linear in clips x epochs; simulation is linear in test clips x runtimes plus stream length, on "
                 "top of a fixed cost (arena bisection, runtime probes) that dominates at small sizes.")
    else:
        L.append("Not run (`--no-scale-study`).")
    L.append("")
    L.append("### Several processes, GPUs or machines: `torchrun`")
    L.append("")
    L.append("Training uses DistributedDataParallel under `torchrun` (gloo on CPU, NCCL on GPUs): each rank trains "
             "on its shard of the training split, rank 0 writes the checkpoints (README, \"Training\"):")
    L.append("")
    L.append("```bash")
    L.append("# one machine, N processes (or N GPUs with train.device=cuda)")
    L.append(".venv/bin/torchrun --standalone --nproc_per_node=2 -m tinyconv.cli train --config my.yaml")
    L.append("# several machines: on each machine K = 0..N-1")
    L.append(".venv/bin/torchrun --nnodes=N --node_rank=K --nproc_per_node=G --rdzv_endpoint=HOST:PORT \\")
    L.append("    -m tinyconv.cli train --config my.yaml")
    L.append("```")
    L.append("")
    L.append("Synthesize the dataset once (`tinyconv data synth`) onto storage every node can read, and point "
             "`data.dataset_dir` at it. The feature cache lives in the dataset folder. Synthesis and simulation are "
             "process-parallel on one machine (`data.num_workers`, `simulate --workers`), not distributed.")
    L.append("")
    L.append("## Reproduce")
    L.append("")
    L.append("```bash")
    L.append("nice -n 15 .venv/bin/python benchmarks/e2e.py --scale tiny    # minutes: pipeline sanity")
    L.append("nice -n 15 .venv/bin/python benchmarks/e2e.py --scale small   # tens of minutes")
    L.append("nice -n 15 .venv/bin/python benchmarks/e2e.py --scale medium  # ~12-16 min: the quickstart recipe "
             "on a fifth of its data")
    L.append("nice -n 15 .venv/bin/python benchmarks/e2e.py --scale full    # hours on a CPU host")
    L.append("```")
    L.append("")
    return "\n".join(L)


# ---- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--wake-words", default="hey jarvis,okay nabu", help="comma-separated wake words")
    parser.add_argument("--work-dir", type=Path, default=None, help="default runs/e2e_<scale>")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/e2e_<scale>.json")
    parser.add_argument("--results-md", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--reference-dir", type=Path, default=REFERENCE_DIR)
    parser.add_argument("--scale-factors", default=None,
                        help="comma-separated multiples of the base size (default 1,4,16)")
    parser.add_argument("--no-scale-study", action="store_true")
    parser.add_argument("--reuse-data", action="store_true", help="keep a synthesized dataset whose config matches")
    parser.add_argument("--skip-distillation", action="store_true",
                        help="no teachers and no distilled V2 (QAT starts from the float V2)")
    parser.add_argument("--no-stream-teacher", action="store_true",
                        help="train the streaming model without distilling it from the window model")
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="simulator worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render-only", type=Path, default=None, metavar="JSON",
                        help="only rewrite --results-md from an existing e2e JSON")
    parser.add_argument("--add-scale-study", type=Path, default=None, metavar="JSON",
                        help="run only the scale study (at --scale) and add it to an existing e2e JSON")
    args = parser.parse_args(argv)
    if args.add_scale_study is not None:
        if not args.add_scale_study.is_file():
            parser.error(f"--add-scale-study: {args.add_scale_study} not found")
        report = json.loads(args.add_scale_study.read_text())
        preset = SCALES[report["settings"]["scale"]]
        first = report["words"][0]
        export_dir = resolve_path(first["export_dir"]) if "export_dir" in first else None
        factors = list(preset["scale_factors"])
        report["settings"]["scale_factors"] = factors
        report["scale_word"] = first["wake_word"]
        report["scale_study"] = scale_study(first["wake_word"], preset, resolve_path(report["work_dir"]), export_dir,
                                            factors, args)
        report["command"] += "`, then `benchmarks/e2e.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_results(args.add_scale_study, report, default=str)
        args.results_md.write_text(render_markdown(report))
        log(f"added the scale study to {args.add_scale_study} and wrote {args.results_md}")
        return 0 if report.get("pass") else 1
    if args.render_only is not None:
        if not args.render_only.is_file():
            parser.error(f"--render-only: {args.render_only} not found")
        report = json.loads(args.render_only.read_text())
        args.results_md.write_text(render_markdown(report))
        log(f"wrote {args.results_md} from {args.render_only}")
        return 0 if report.get("pass") else 1

    words = [w.strip() for w in args.wake_words.split(",") if w.strip()]
    if not words:
        parser.error("--wake-words is empty")
    try:
        factors = ([int(f) for f in args.scale_factors.split(",") if f.strip()] if args.scale_factors
                   else list(SCALES[args.scale]["scale_factors"]))
    except ValueError:
        parser.error(f"--scale-factors must be integers, got {args.scale_factors!r}")
    if any(f < 1 for f in factors):
        parser.error("--scale-factors must be >= 1")
    if shutil.which("espeak-ng") is None:
        print("e2e: error: espeak-ng is not installed (bash scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    preset = SCALES[args.scale]
    work = (args.work_dir or REPO / "runs" / f"e2e_{args.scale}").resolve()
    out = args.out or REPO / "benchmarks" / "results" / f"e2e_{args.scale}.json"
    work.mkdir(parents=True, exist_ok=True)

    import torch

    total = Timer()
    report: dict[str, Any] = {
        "benchmark": "e2e", "schema_version": 1,
        "command": "benchmarks/e2e.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"scale": args.scale, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.items()},
                     "wake_words": words, "seed": args.seed, "scale_factors": factors,
                     "max_drop_points": MAX_DROP_POINTS, "target_fa_per_hour": TARGET_FA_PER_HOUR,
                     "budgets": list(BUDGETS)},
        "host": {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
                 "cpus": os.cpu_count(), "load_start": round(os.getloadavg()[0], 2), "nice": os.nice(0),
                 "torch_threads": torch.get_num_threads()},
        "work_dir": str(work), "words": [],
    }
    for word in words:
        try:
            report["words"].append(run_word(word, preset, work, args))
        except Exception as exc:  # noqa: BLE001 (record and keep going: the report says what failed)
            traceback.print_exc()
            report["words"].append({"wake_word": word, "error": f"{type(exc).__name__}: {exc}"})
    report["scale_word"] = words[0]
    if not args.no_scale_study:
        first = report["words"][0]
        export_dir = Path(first["export_dir"]) if "export_dir" in first else None
        try:
            report["scale_study"] = scale_study(words[0], preset, work, export_dir, factors, args)
        except Exception as exc:  # noqa: BLE001 (recorded as scale_study_error, which fails the report)
            traceback.print_exc()
            report["scale_study_error"] = f"{type(exc).__name__}: {exc}"
    report["targets"] = {w["wake_word"]: w.get("targets", {"ran": False}) for w in report["words"]}
    report["pass"] = all(all(t.values()) for t in report["targets"].values()) and "scale_study_error" not in report
    report["total_seconds"] = total()
    report["host"]["load_end"] = round(os.getloadavg()[0], 2)
    report["finished_utc"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        report["json"] = str(out.resolve().relative_to(REPO))
    except ValueError:
        report["json"] = str(out)
    report = write_results(out, report, default=str)  # the markdown shows the same (portable) paths
    args.results_md.parent.mkdir(parents=True, exist_ok=True)
    args.results_md.write_text(render_markdown(report))
    log(f"wrote {out} and {args.results_md}")
    for w, t in report["targets"].items():
        log(f"{w}: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in t.items()))
    log("all targets met" if report["pass"] else "a target FAILED (exit 1)")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
