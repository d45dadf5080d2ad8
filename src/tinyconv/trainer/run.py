"""Top-level jobs: train, evaluate a checkpoint, quickstart. The CLI and UI call these."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tinyconv.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from tinyconv.config import Config, config_to_dict, replace
from tinyconv.data.dataset import FeatureSet, load_features
from tinyconv.metrics import classification_report
from tinyconv.trainer.loop import Trainer, TrainResult, describe_model_difference, run_folder


def load_splits(config: Config, splits: tuple[str, ...] = ("train", "val")) -> dict[str, FeatureSet]:
    d, tc = config.data, config.train
    # Positives heard in the long audio: trained on (train.context_positive_fraction), and placed
    # in the other splits' streams when the epoch is selected on streams.
    context = {s: tc.context_positive_fraction > 0 if s == "train" else tc.selection_metric == "stream_recall_at_fa"
               for s in splits}
    return {s: load_features(d.dataset_dir, s, config.frontend, strict=d.strict, workers=d.num_workers,
                             with_streams=True, with_context=context[s]) for s in splits}


def train(config: Config, *, resume: bool = False, init_checkpoint: str | Path | None = None,
          data: dict[str, FeatureSet] | None = None, overwrite: bool = False) -> TrainResult:
    """Float training, or QAT fine-tuning when `config.qat.enabled` (from `init_checkpoint` if given),
    or distillation when `config.distill.enabled`.

    `train.out_dir` is locked for the run; one that already holds a run is refused unless `resume`
    (continue from its last.pt) or `overwrite` (replace it): see `loop.run_folder`.
    """
    with run_folder(config.train.out_dir, resume=resume, overwrite=overwrite):
        return _train(config, resume=resume, init_checkpoint=init_checkpoint, data=data)


def init_model(config: Config, init_checkpoint: str | Path, labels: list[str]) -> nn.Module:
    """This run's model holding the weights of `init_checkpoint` (a float checkpoint of the same
    architecture trained on the same labels); anything else is refused here, not at export."""
    init = load_checkpoint(init_checkpoint)
    if init.labels != labels:
        raise CheckpointError(f"--init {init_checkpoint} was trained on labels {init.labels}, "
                              f"the dataset has {labels}")
    if init.kind != "float":
        raise CheckpointError(f"--init {init_checkpoint} is a {init.kind} checkpoint; start from a float checkpoint")
    from tinyconv.models import build_model

    model = build_model(config.model, len(labels), config.frontend)
    try:
        model.load_state_dict(init.state_dict)
    except RuntimeError:
        was = describe_model_difference(config_to_dict(init.config)["model"], config.model)
        raise CheckpointError(
            f"--init {init_checkpoint} holds weights for {was}, which do not fit this run's model "
            f"{config.model.name!r}: set the same model.* values as that checkpoint, or drop --init"
        ) from None
    return model


def _train(config: Config, *, resume: bool, init_checkpoint: str | Path | None,
           data: dict[str, FeatureSet] | None) -> TrainResult:
    # Refuse a model.* value the model would not use, and a bad --init, before minutes of feature loading.
    from tinyconv.models.registry import check_model_config

    check_model_config(config.model)
    if init_checkpoint is not None:
        load_checkpoint(init_checkpoint)
    data = data or load_splits(config)
    out = Path(config.train.out_dir)
    model = None
    kwargs: dict[str, Any] = {}
    if init_checkpoint is not None:
        model = init_model(config, init_checkpoint, data["train"].labels)
    if config.qat.enabled:
        from tinyconv.trainer.qat import prepare_model_for_qat, qat_epoch_hook, qat_state_for_checkpoint

        if model is None:
            torch.manual_seed(config.train.seed)
            from tinyconv.models import build_model

            model = build_model(config.model, len(data["train"].labels), config.frontend)
        model = prepare_model_for_qat(model, config)
        kwargs = dict(kind="qat", epochs=config.qat.epochs, learning_rate=config.qat.learning_rate,
                      epoch_hook=lambda m, e: qat_epoch_hook(m, e, config.qat), state_fn=qat_state_for_checkpoint)
    trainer_cls: type[Trainer] = Trainer
    if config.distill.enabled:
        from tinyconv.trainer.distill import DistillationTrainer

        trainer_cls = DistillationTrainer
    trainer = trainer_cls(config, data["train"], data["val"], out, model=model, **kwargs)
    return trainer.fit(resume=resume)


@dataclass
class EvalResult:
    report: dict[str, Any]
    files: dict[str, Path]


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[i : i + batch_size])).numpy())
    return np.concatenate(out)


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", threshold: float | None = None,
                        out_dir: str | Path | None = None, dataset_dir: str | None = None) -> EvalResult:
    """Accuracy, per-class precision/recall, wake-word FRR/FAR; writes eval.json, eval.md and PNGs."""
    from tinyconv.reports import plot_confusion, plot_det, wake_markdown

    ckpt = load_checkpoint(checkpoint)
    config = ckpt.config if dataset_dir is None else replace(ckpt.config, data={"dataset_dir": dataset_dir})
    fs = load_features(config.data.dataset_dir, split, config.frontend, workers=config.data.num_workers)
    if fs.labels != ckpt.labels:
        raise CheckpointError(f"checkpoint labels {ckpt.labels} differ from the dataset's {fs.labels}")
    model = model_from_checkpoint(ckpt)
    logits = predict(model, fs.x)
    thr = threshold if threshold is not None else 0.5
    report = classification_report(logits, fs.y, fs.labels, fs.positive_label, threshold=thr,
                                   target_far=config.train.target_far)
    report.update(checkpoint=str(checkpoint), split=split, kind=ckpt.kind, model=ckpt.model_name)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "eval.json", "markdown": out / "eval.md", "confusion": out / "confusion.png"}
    plot_confusion(np.array(report["confusion_matrix"]), fs.labels, files["confusion"])
    if "wake_word" in report:
        files["det"] = out / "det.png"
        plot_det(report["wake_word"]["curve"], files["det"], title=f"{ckpt.model_name} ({split})")
    files["json"].write_text(json.dumps(report, indent=1))
    files["markdown"].write_text(wake_markdown(report))
    return EvalResult(report, files)


@dataclass
class QuickstartResult:
    dataset_dir: Path
    checkpoint: Path
    eval: EvalResult
    seconds: dict[str, float]
    train: TrainResult
    # Streaming models only: the files ESPHome / firmware need, copied into the run folder
    # ("tflite", "json", "c_source", "c_header", "export_dir"), the ESPHome manifest, and the
    # test split's feature streams scored with ESPHome's detector (trainer/streams.py).
    esphome: dict[str, Path] | None = None
    esphome_manifest: dict[str, Any] | None = None
    streaming: dict[str, Any] | None = None


def export_for_esphome(checkpoint: str | Path, run_dir: str | Path,
                       val: FeatureSet | None = None) -> tuple[dict[str, Path], dict[str, Any]]:
    """Export a streaming checkpoint for ESPHome into RUN/export (with its manifest.json and sha256s)
    and copy the pair ESPHome loads (<name>.tflite + <name>.json) and the C array into RUN.

    `val`: the validation split; its everyday negatives (`FeatureSet.negative_stream`: clips other
    than near misses, then its long negative streams) set the manifest's probability_cutoff, as
    they set the stream selection (trainer/streams.py)."""
    import shutil

    from tinyconv.export.esphome import export_esphome

    run = Path(run_dir)
    negatives = val.negative_stream() if val is not None and val.positive_index is not None else None
    exp = export_esphome(checkpoint, run / "export", with_c=True, negatives=negatives)
    names = {"tflite": exp.esphome_manifest["model"], "json": Path(exp.esphome_manifest["model"]).stem + ".json",
             "c_source": "model_data.cc", "c_header": "model_data.h"}
    files: dict[str, Path] = {}
    for key, name in names.items():
        shutil.copyfile(exp.out_dir / name, run / name)
        files[key] = run / name
    files["export_dir"] = exp.out_dir
    return files, exp.esphome_manifest


def streaming_test_report(checkpoint: str | Path, fs: FeatureSet, *, cutoff: float | None = None) -> dict[str, Any]:
    """A streaming checkpoint on `fs` as feature streams with ESPHome's detector: recall at the
    checkpoint's train.target_fa_per_hour, and recall and FA/h at `cutoff` (the exported one)."""
    from tinyconv.trainer.streams import build_feature_streams, stream_report

    ckpt = load_checkpoint(checkpoint)
    if fs.positive_index is None:
        raise CheckpointError("a streaming report needs a wake-word split (a positive label)")
    streams = build_feature_streams(fs, seed=ckpt.config.train.seed + 1, step_ms=ckpt.config.frontend.step_ms)
    rep = stream_report(model_from_checkpoint(ckpt), streams, fs.positive_index,
                        target_fa_per_hour=ckpt.config.train.target_fa_per_hour)
    if cutoff is not None:
        row = min(rep["curve"], key=lambda r: abs(r["cutoff"] - cutoff))
        rep["at_cutoff"] = {k: row[k] for k in ("cutoff", "recall", "false_accepts", "fa_per_hour")}
    rep.pop("curve")
    return rep


def quickstart(config: Config) -> QuickstartResult:
    """Synthesize data for the wake word, train the V2 student, evaluate on the held-out voices.

    The quickstart owns `train.out_dir`: a re-run replaces the model trained there by the last one
    (the folder stays locked while it runs, so two quickstarts cannot interleave).
    """
    with run_folder(config.train.out_dir, overwrite=True):
        return _quickstart(config)


def _quickstart(config: Config) -> QuickstartResult:
    from tinyconv.data.synth import synthesize_dataset

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = synthesize_dataset(config, config.data.dataset_dir)
    seconds["synthesize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = load_splits(config)
    seconds["features"] = time.perf_counter() - t0
    if config.distill.enabled:  # the recipe's teachers first (a window "tinyconv" teacher trains on `data`)
        from tinyconv.trainer.teachers import train_teachers

        t0 = time.perf_counter()
        train_teachers(config, features=data, log=print)
        seconds["teachers"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = _train(config, resume=False, init_checkpoint=None, data=data)
    seconds["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(result.checkpoint_path, split="test")
    seconds["evaluate"] = time.perf_counter() - t0
    out = QuickstartResult(ds, result.checkpoint_path, ev, seconds, result)
    from tinyconv.models.streaming import is_streamable

    if is_streamable(model_from_checkpoint(load_checkpoint(result.checkpoint_path))):
        # The model ESPHome runs: the pair and the C array land in the run folder.
        t0 = time.perf_counter()
        out.esphome, out.esphome_manifest = export_for_esphome(result.checkpoint_path, config.train.out_dir,
                                                               val=data["val"])
        seconds["export"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        test = load_features(config.data.dataset_dir, "test", config.frontend, workers=config.data.num_workers,
                             with_streams=True, with_context=True)
        out.streaming = streaming_test_report(result.checkpoint_path, test,
                                              cutoff=out.esphome_manifest["micro"]["probability_cutoff"])
        seconds["streams"] = time.perf_counter() - t0
    return out
