"""Do natural-voice data and distillation from real pretrained teachers help the window student?

    .venv/bin/python benchmarks/bench_natural.py --scale medium --seeds 0 1 2

One dataset is synthesized with natural voices (`data.natural_voices: [kokoro, hibari]`); the
window student (`model.name: tinyconv`, V2) is trained N times (seeds) in four variants:

  a  espeak-ng/flite clips only: the natural-voice clips are dropped from train and val;
  b  the whole dataset (natural voices in training), labels only;
  c  b + distillation from Whisper tiny.en and speech_embedding (imported with `tinyconv teacher
     import`, encoders frozen, linear heads trained on the dataset: guide s1, s5.1);
  d  b + distillation from the random-init tiny wav2vec2 + conformer (fine-tuned end to end).

All four are scored on the same test split, which holds the Kokoro test voice(s)
(`data.kokoro_test_voices`, with their blends; hibari lives in training only): clip recall of the
wake word at 1 % false accepts on the whole split, on its natural-voice positives only and on its
espeak-ng/flite positives only (negatives: every test negative each time, so the threshold is the
same). Checks written into the JSON (exit 1 when one fails): `c_vs_b_frr_relative_cut`
(1 - FRR_c / FRR_b >= 0.20 and mean_c + std_c < mean_b - std_b) and `c_natural_at_least_robotic`.

`--student stream` trains the quickstart's streaming V1 instead (its model and training section:
streaming windows, epoch selection on validation streams) and also scores it as test feature
streams through ESPHome's detector: the false-reject rate at <= 0.5 false accepts per hour on the
test split's everyday negatives plus `--stream-minutes` (data.negative_stream_minutes) of long
negative audio, with its own check `c_vs_b_stream_frr_relative_cut`. The window student has no
streaming form (`benchmarks/e2e.py` streams it only as an exported TFLite over audio).

Caveats: variant a trains on fewer clips (natural voices took a share of the utterances rather
than adding to them), and its espeak-ng/flite clips may carry natural speech in their babble
noise (babble mixes the split's speech). The Kokoro voices are Japanese voices speaking English:
without `--gate` (Whisper's intelligibility gate, README "Data") some natural positives may not be
heard as the wake word. Stage times are wall seconds on "host".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _results import write_results  # noqa: E402  (paths relative to the repository)

NATURAL = ("kokoro", "hibari")  # engines of Row.voice ("kokoro:jf_alpha+us") that count as natural
ROBOTIC = ("espeak-ng", "flite")
VARIANTS = ("a", "b", "c", "d")
# (positives, confusables, other speech, background, rooms, seconds of natural long speech, epochs).
# Long speech comes in stretches of 3-6 sentences (~18 s), at least one per split, so "smoke" still
# gets about a minute of it.
SCALES: dict[str, tuple[int, int, int, int, int, float, int]] = {
    "smoke": (30, 20, 20, 8, 3, 10.0, 2),
    "small": (300, 200, 200, 60, 8, 60.0, 15),
    "medium": (800, 500, 500, 150, 16, 60.0, 20),
}
# A quarter of the utterances by Kokoro (library default 0.15): the natural test positives are
# kokoro_fraction x test_fraction of the positives, and a dozen of them would be 8 points each.
NATURAL_DATA = ["data.natural_voices=[kokoro, hibari]", "data.kokoro_fraction=0.25", "data.hibari_fraction=0.05",
                "data.kokoro_blends=16"]
# Guide s5.1: frozen pretrained encoders, linear heads, 60 epochs at 0.01.
PRETRAINED = ["distill.teachers=[whisper, speech_embedding]", "distill.teacher_epochs=60",
              "distill.teacher_learning_rate=0.01"]
# bench_distillation.py's defaults: tiny random-init teachers fine-tuned 8 epochs at 1e-3.
RANDOM_INIT = ["distill.teachers=[wav2vec2, conformer]", "distill.teacher_size=tiny", "distill.teacher_epochs=8",
               "distill.teacher_learning_rate=0.001"]
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[natural {time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.0f}s] {msg}", flush=True)


def engine(row: Any) -> str:
    return str(row.voice).partition(":")[0]


def subset(fs: Any, keep: np.ndarray) -> Any:
    from tinyconv.data.dataset import FeatureSet

    return FeatureSet(fs.x[keep], fs.y[keep], fs.labels, fs.positive_label,
                      [r for r, k in zip(fs.rows, keep, strict=True) if k], fs.summary, fs.negative_streams)


def score(logits: np.ndarray, test: Any, target_far: float) -> dict[str, Any]:
    """Recall at `target_far` on all test positives, the natural ones and the robotic ones (each
    against every test negative: the threshold depends on the negatives only)."""
    from tinyconv.metrics import classification_report

    pos = test.y == test.positive_index
    kinds = np.array([engine(r) for r in test.rows])
    out: dict[str, Any] = {}
    for name, mask in (("all", pos), ("natural", pos & np.isin(kinds, NATURAL)),
                       ("robotic", pos & np.isin(kinds, ROBOTIC))):
        keep = mask | ~pos
        rep = classification_report(logits[keep], test.y[keep], test.labels, test.positive_label,
                                    target_far=target_far)
        out[f"recall_{name}"] = rep["wake_word"]["recall_at_target_far"] if mask.any() else None
        out[f"positives_{name}"] = int(mask.sum())
        if name == "all":
            out["accuracy"] = rep["accuracy"]
    out["frr_at_far"] = 1.0 - out["recall_all"]
    return out


def stream_scores(checkpoint: Path, test: Any) -> dict[str, Any]:
    """A streaming student on the test split as feature streams through ESPHome's detector: the
    false-reject rate at the lowest cutoff with <= train.target_fa_per_hour on the test split's
    everyday negatives and long negative audio (1.0 when no cutoff meets it)."""
    from tinyconv.trainer.run import streaming_test_report

    rep = streaming_test_report(checkpoint, test)
    return {"stream_frr": 1.0 - rep["recall"] if rep["met"] else 1.0, "stream_cutoff": rep["cutoff"],
            "stream_fa_per_hour": rep["fa_per_hour"], "stream_met": rep["met"],
            "stream_negative_hours": rep["negative_hours"], "stream_positives": rep["positives"]}


def stats(values: list[float | None]) -> dict[str, float] | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "min": min(v), "max": max(v)}


def synthesize(config: Any, reuse: bool) -> tuple[float | None, bool]:
    """(seconds, reused): --reuse-data keeps a dataset synthesized with the same data/augment settings."""
    from tinyconv.config import config_to_dict, load_config
    from tinyconv.data.synth import synthesize_dataset

    ds = Path(config.data.dataset_dir)

    def settings(c: Any) -> dict[str, Any]:
        d = config_to_dict(c)
        for k in ("dataset_dir", "num_workers"):  # where and how fast, not what
            d["data"].pop(k)
        return {s: d[s] for s in ("data", "augment", "frontend")}

    if reuse and (ds / "manifest.csv").is_file() and (ds / "config.yaml").is_file():
        if settings(load_config(ds / "config.yaml")) == settings(config):
            log(f"reusing the dataset in {ds}")
            return None, True
        log(f"{ds} was synthesized with other settings: synthesizing again")
    log(f"synthesizing {ds}")
    t = time.perf_counter()
    synthesize_dataset(config, ds)
    return time.perf_counter() - t, False


def import_teachers(dirs: dict[str, Path], reuse: bool) -> dict[str, float | None]:
    """`tinyconv teacher import` of both pretrained encoders (seconds each; None: reused)."""
    from tinyconv.trainer.teacher_import import IMPORT_META, import_speech_embedding, import_whisper
    from tinyconv.trainer.teachers import SPEECH_EMBEDDING_KIND_FILE

    marks = {"whisper": IMPORT_META, "speech_embedding": SPEECH_EMBEDDING_KIND_FILE}
    seconds: dict[str, float | None] = {}
    for kind, folder in dirs.items():
        if reuse and (folder / marks[kind]).is_file():  # same package, same bytes: same teacher digest
            seconds[kind] = None
            continue
        log(f"teacher import {kind} -> {folder}")
        t = time.perf_counter()
        if kind == "whisper":
            import_whisper("tiny.en", folder, verify=True)
        else:
            import_speech_embedding(folder)
        seconds[kind] = time.perf_counter() - t
    return seconds


def prepare_teachers(cfg: Any, data: dict[str, Any], waves: dict[str, Any], reuse: bool,
                     target_far: float) -> dict[str, Any]:
    """Train the pair's heads (or whole random-init teachers), warm the distillation cache, score them."""
    from tinyconv.config import config_to_dict
    from tinyconv.trainer.distill import DistillationTrainer, load_configured_teachers
    from tinyconv.trainer.teachers import predict_teacher, teacher_dir, train_teachers

    root = teacher_dir(cfg)
    out: dict[str, Any] = {"dir": str(root), "teacher_train_seconds": None}
    # Teachers are reused only with the dataset they were trained on and the same distill.* settings.
    settings = json.dumps(config_to_dict(cfg)["distill"], sort_keys=True)
    mark = root / "bench_natural_settings.json"
    if not (reuse and mark.is_file() and mark.read_text() == settings):
        log(f"teacher train {list(cfg.distill.teachers)} -> {root}")
        t = time.perf_counter()
        epochs = cfg.distill.teacher_epochs

        def quiet(m: str) -> None:  # one line per teacher, not one per epoch
            if " epoch " not in m or f" {epochs}/{epochs}:" in m:
                log(f"  {m}")

        mark.unlink(missing_ok=True)
        train_teachers(cfg, data={"train": waves["train"], "val": waves["val"]}, log=quiet)
        out["teacher_train_seconds"] = time.perf_counter() - t
        mark.write_text(settings)
    teachers = load_configured_teachers(cfg, data["train"].labels)
    # The first distillation run computes every training clip's teacher outputs once; doing it here
    # times it apart from the students, which then read the cache.
    log(f"teacher cache for {list(teachers)}")
    t = time.perf_counter()
    warm = DistillationTrainer(cfg, data["train"], data["val"], Path(cfg.train.out_dir) / "cache_build",
                               teachers=teachers, waves=waves["train"])
    out["cache_build_seconds"] = time.perf_counter() - t
    out["cache_clips_computed"] = dict(warm.cache_computed)
    del warm
    out["teachers"] = {}
    for kind, teacher in teachers.items():
        t = time.perf_counter()
        row = score(predict_teacher(teacher, waves["test"].x), data["test"], target_far)
        row["test_seconds"] = time.perf_counter() - t
        metrics = json.loads((root / kind / "tinyconv_teacher.json").read_text())["metrics"]
        row.update(val_accuracy=metrics.get("val_accuracy"), train_seconds=metrics.get("train_seconds"),
                   parameters=sum(p.numel() for p in teacher.parameters()))
        out["teachers"][kind] = row
        log(f"  teacher {kind} on test: {fmt(row)}")
    return out


def fmt(row: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"
    return (f"recall@FAR all {f(row['recall_all'])} natural {f(row['recall_natural'])} "
            f"({row['positives_natural']}) robotic {f(row['recall_robotic'])} ({row['positives_robotic']})")


def _frr_cut(summary: dict[str, Any], key: str) -> dict[str, Any]:
    """(c) against (b) on one false-reject rate: >= 20 % relative cut and beyond the seed spread."""
    fb, fc = summary["b"][key], summary["c"][key]
    cut = 1.0 - fc["mean"] / fb["mean"] if fb["mean"] > 0 else None
    beyond = fc["mean"] + fc["std"] < fb["mean"] - fb["std"]
    return {"value": cut, "target": 0.20, "beyond_seed_spread": beyond, "frr_b": fb, "frr_c": fc,
            "passed": cut is not None and cut >= 0.20 and beyond}


def checks(summary: dict[str, Any]) -> dict[str, Any]:
    nat, rob = summary["c"]["recall_natural"], summary["c"]["recall_robotic"]
    out = {"c_vs_b_frr_relative_cut": _frr_cut(summary, "frr_at_far")}
    if summary["b"].get("stream_frr"):  # streaming students: FRR at <= 0.5 FA/h on the test streams
        out["c_vs_b_stream_frr_relative_cut"] = _frr_cut(summary, "stream_frr")
    out["c_natural_at_least_robotic"] = {"natural": nat and nat["mean"], "robotic": rob and rob["mean"],
                                         "passed": bool(nat and rob and nat["mean"] >= rob["mean"])}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
    from tinyconv.config import load_config, replace
    from tinyconv.trainer.run import load_splits, predict, train
    from tinyconv.trainer.teachers import load_waveforms

    work = Path(args.work_dir)
    pos, conf, other, bg, rooms, natural_s, scale_epochs = SCALES[args.scale]
    sizes = [args.positives or pos, args.confusables or conf, args.other_speech or other,
             bg if args.background is None else args.background]
    epochs = args.epochs or scale_epochs
    result: dict[str, Any] = {
        "host": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
                 "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "nice": os.nice(0),
                 "cuda": torch.cuda.is_available(), "load_start": os.getloadavg()[0]},
        "args": vars(args), "seeds": args.seeds, "epochs": epochs, "target_far": args.target_far, "seconds": {}}
    secs = result["seconds"]
    imported = {"whisper": work / "teachers" / "import" / "whisper-tiny.en",
                "speech_embedding": work / "teachers" / "import" / "speech_embedding"}
    # The student: the window TinyConv V2, or the quickstart's streaming V1 with its whole training
    # section (streaming windows, selection on validation streams), trained for the same epochs.
    if args.student == "stream":
        from tinyconv.config import config_to_dict

        recipe = config_to_dict(load_config("quickstart"))
        student = [f"model.{k}={json.dumps(v)}" for k, v in recipe["model"].items()]
        student += [f"train.{k}={json.dumps(v)}" for k, v in recipe["train"].items()
                    if k not in ("out_dir", "epochs", "seed", "device", "early_stopping_patience")]
    else:
        student = ["model.name=tinyconv", "model.tiny_conv_use_depthwise=true"]
    common = [f"data.wake_word={args.wake_word}", f"data.dataset_dir={work / 'data'}",
              f"data.num_positive={sizes[0]}", f"data.num_confusable={sizes[1]}",
              f"data.num_other_speech={sizes[2]}", f"data.num_background={sizes[3]}",
              f"augment.num_room_impulse_responses={rooms}", f"data.natural_negative_seconds={natural_s}",
              *NATURAL_DATA, *([f"data.intelligibility_gate={imported['whisper']}"] if args.gate else []),
              f"data.negative_stream_minutes={args.stream_minutes}", *student, f"train.epochs={epochs}",
              f"train.early_stopping_patience={epochs}",  # same epochs for every variant and seed
              f"train.target_far={args.target_far}", f"train.out_dir={work / 'runs'}"]
    dirs = json.dumps({k: str(v) for k, v in imported.items()})  # JSON is YAML, with the paths quoted
    pretrained = [*PRETRAINED, f"distill.teacher_dir={work / 'teachers' / 'pretrained'}",
                  f"distill.teacher_pretrained_dirs={dirs}"]
    random_init = [*RANDOM_INIT, f"distill.teacher_dir={work / 'teachers' / 'random'}"]
    # The user's --set comes last, so it wins over every setting above.
    # --teacher-set reaches variant c only (its teachers and loss weights), after --set.
    configs = {v: load_config(args.config, [*common, *extra, *args.overrides, *(args.teacher_set if v == "c" else [])])
               for v, extra in (("a", []), ("b", []), ("c", pretrained), ("d", random_init))}
    # Configs are checked (a bad --set is exit 2) before any work; the import precedes synthesis
    # because --gate listens with the imported Whisper.
    secs["teacher_import"] = import_teachers(imported, args.reuse_data)
    secs["synthesis"], reused = synthesize(configs["b"], args.reuse_data)

    t = time.perf_counter()
    data = load_splits(configs["b"], ("train", "val", "test"))
    fe = configs["b"].frontend
    waves = {s: load_waveforms(configs["b"].data.dataset_dir, fs.rows, fs.labels, fs.positive_label,
                               fe.clip_samples, fe.sample_rate_hz) for s, fs in data.items()}
    secs["load_features_and_waves"] = time.perf_counter() - t
    # Variant a: train and val without the natural-voice clips; test stays whole for every variant.
    espeak_only = {s: subset(data[s], np.array([engine(r) not in NATURAL for r in data[s].rows]))
                   for s in ("train", "val")}
    result["clips"] = {s: {"all": len(fs), "natural": sum(engine(r) in NATURAL for r in fs.rows),
                           "positives": int((fs.y == fs.positive_index).sum())} for s, fs in data.items()}
    result["clips"]["train_a"] = len(espeak_only["train"])
    log(f"clips: {result['clips']}")

    result["teacher_pairs"] = {v: prepare_teachers(configs[v], data, waves, reused, args.target_far)
                               for v in "cd" if v in args.variants}
    for v, pair in result["teacher_pairs"].items():  # the stage times in one place (None: reused)
        secs[f"teacher_train_{v}"] = pair["teacher_train_seconds"]
        secs[f"teacher_cache_{v}"] = pair["cache_build_seconds"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for v in args.variants:
            cfg = replace(configs[v], train={"seed": seed, "out_dir": str(work / "runs" / f"{v}_seed{seed}")},
                          distill={"enabled": v in "cd"})
            split = espeak_only if v == "a" else data
            log(f"student {v} seed {seed}: training on {len(split['train'])} clips")
            t = time.perf_counter()
            fit = train(cfg, data={"train": split["train"], "val": split["val"]}, overwrite=True)
            seconds = time.perf_counter() - t
            model = model_from_checkpoint(load_checkpoint(fit.checkpoint_path))
            row = {"seed": seed, **score(predict(model, data["test"].x), data["test"], args.target_far),
                   "train_seconds": seconds, "best_epoch": fit.best_epoch,
                   "train_clips_per_second": fit.clips_per_second}
            if args.student == "stream":
                row.update(stream_scores(fit.checkpoint_path, data["test"]))
            log(f"student {v} seed {seed}: {fmt(row)}, {seconds:.0f} s")
            runs[v].append(row)
    result["runs"] = runs
    secs["students"] = sum(r["train_seconds"] for rows in runs.values() for r in rows)
    result["summary"] = {v: {k: stats([r[k] for r in rows]) for k in
                             ("recall_all", "recall_natural", "recall_robotic", "frr_at_far", "accuracy",
                              "train_seconds", "stream_frr", "stream_fa_per_hour") if k in rows[0]}
                         for v, rows in runs.items()}
    result["checks"] = checks(result["summary"])
    result["host"]["load_end"] = os.getloadavg()[0]
    secs["total"] = time.perf_counter() - T0
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--work-dir", default="runs/bench_natural", help="dataset, teachers and runs go here")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", choices=list(SCALES), default="medium", help="data sizes and epochs (see SCALES)")
    ap.add_argument("--epochs", type=int, help="student epochs (default: the scale's)")
    ap.add_argument("--positives", type=int, help="data.num_positive (default: the scale's)")
    ap.add_argument("--confusables", type=int, help="data.num_confusable")
    ap.add_argument("--other-speech", type=int, help="data.num_other_speech")
    ap.add_argument("--background", type=int, help="data.num_background")
    ap.add_argument("--wake-word", default="hey jarvis")
    ap.add_argument("--target-far", type=float, default=0.01)
    ap.add_argument("--student", choices=("window", "stream"), default="window",
                    help="window: TinyConv V2 on 1 s clips; stream: the quickstart's streaming V1, also scored "
                         "as test streams (FRR at <= 0.5 false accepts per hour)")
    ap.add_argument("--stream-minutes", type=float, default=60.0,
                    help="data.negative_stream_minutes: long negative audio for the val and test splits")
    ap.add_argument("--gate", action="store_true", help="Whisper intelligibility gate on the natural clips")
    ap.add_argument("--config", help="base YAML config or recipe (default: the package defaults)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value (last wins)")
    ap.add_argument("--teacher-set", action="append", default=[],
                    help="section.key=value for variant c only (after --set), e.g. distill.teachers=[whisper]")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="which variants to train (b and c are needed for the checks)")
    ap.add_argument("--reuse-data", action="store_true",
                    help="keep a dataset with the same settings (and its teachers and teacher cache)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "natural.json"))
    args = ap.parse_args(argv)
    if not {"b", "c"} <= set(args.variants):
        ap.error("--variants must include b and c (the checks compare them)")
    args.variants = [v for v in VARIANTS if v in args.variants]
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        ap.error("--seeds must be distinct non-negative integers")
    for name in ("epochs", "positives", "confusables", "other_speech"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.background is not None and args.background < 0:
        ap.error("--background must be >= 0")
    from tinyconv.errors import TinyconvError

    try:
        result = run(args)
    except TinyconvError as exc:
        print(f"bench_natural: error: {exc}", file=sys.stderr)
        return 2
    write_results(args.out, result, default=str)
    for v in args.variants:
        s = result["summary"][v]
        print(f"{v}: " + ", ".join(f"{k} {s[k]['mean']:.3f} +- {s[k]['std']:.3f}" for k in
                                   ("recall_all", "recall_natural", "recall_robotic", "stream_frr") if s.get(k)))
    ok = all(c["passed"] for c in result["checks"].values())
    print("checks: " + ", ".join(f"{k} {'PASS' if c['passed'] else 'FAIL'}" for k, c in result["checks"].items())
          + f"; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":  # needed: synthesis and feature loading start worker processes
    sys.exit(main())
