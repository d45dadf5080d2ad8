"""A dataset's test split through every runtime: float vs INT8 accuracy, the drop, per class.

Work is split into chunks run by a process pool (spawn: ONNX Runtime threads and native
interpreters never share a forked address space). Each worker computes the device features
(TFLM frontend via pymicro-features) and runs every runtime on its chunk.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyconv.config import FrontendConfig
from tinyconv.data.workers import die_with_parent
from tinyconv.device.errors import ModelError
from tinyconv.device.runners import Runner, dequantize, make_runner
from tinyconv.features import clip_features, features_to_int8
from tinyconv.metrics import confusion_matrix, per_class, softmax


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a worker needs to build one runner (picklable)."""

    runtime: str
    tflite_path: str | None = None
    onnx_path: str | None = None
    arena_size: int = 0
    input_quant: tuple[float, int] = (1.0, 0)
    output_quant: tuple[float, int] = (1.0, 0)


def _build(spec: RunnerSpec) -> Runner:
    from tinyconv.device.tflite_file import load_tflite

    model = load_tflite(spec.tflite_path) if spec.tflite_path else None
    return make_runner(spec.runtime, model, arena_size=spec.arena_size, onnx_path=spec.onnx_path,
                       input_quant=spec.input_quant, output_quant=spec.output_quant)


def model_input(runner: Runner, features: np.ndarray) -> np.ndarray:
    """Float features [frames, 40] -> the runner's input (int8 via its own scale/zero point)."""
    size = int(np.prod(runner.input_shape))
    if features.size != size:
        raise ValueError(f"{runner.name}: model input has {size} elements ({list(runner.input_shape)}), "
                         f"features have {features.size} ({list(features.shape)}): frontend and model disagree")
    if runner.input_dtype.kind in "iu":
        q = features_to_int8(features, *runner.input_quant).astype(np.int16)
        if runner.input_dtype == np.uint8:
            q = q + 128
        return q.astype(runner.input_dtype).reshape(runner.input_shape)
    return features.astype(np.float32).reshape(runner.input_shape)


def _load_clip(path: str) -> np.ndarray:
    from tinyconv.data.audio import load_audio

    return load_audio(path, allow_silent=True).samples


def _work(job: tuple[list[RunnerSpec], list[str], FrontendConfig]) -> dict[str, Any]:
    specs, paths, fcfg = job
    runners = [_build(s) for s in specs]
    out: dict[str, list[np.ndarray]] = {r.name: [] for r in runners}
    errors: list[str] = []
    ok: list[int] = []
    for i, p in enumerate(paths):
        try:
            feats = clip_features(_load_clip(p), fcfg)
        except ValueError as exc:  # AudioError is a ValueError: count and skip that clip
            errors.append(str(exc))
            continue
        ok.append(i)
        for r in runners:
            out[r.name].append(dequantize(r.run(model_input(r, feats)).reshape(-1), r.output_quant))
    return {"ok": ok, "errors": errors, "logits": {k: np.array(v) for k, v in out.items()}}


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_clips(specs: list[RunnerSpec], paths: list[str], *, frontend: FrontendConfig | None = None,
              workers: int | None = None, chunk: int = 256, progress: bool = False) -> dict[str, Any]:
    """Run every runtime on every clip; returns kept clip indices, skipped errors, logits per runtime."""
    fcfg = frontend or FrontendConfig()
    workers = workers or default_workers()
    jobs = [(specs, c, fcfg) for c in _chunks(paths, max(1, min(chunk, -(-len(paths) // workers))))]
    results: list[dict[str, Any]] = []
    if workers == 1 or len(jobs) == 1:
        results = [_work(j) for j in jobs]
    else:
        ctx = mp.get_context("spawn")
        # Workers exit when the run dies (a SIGKILL would otherwise orphan the pool).
        with ctx.Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            it: Iterable[dict[str, Any]] = pool.imap(_work, jobs)
            if progress:
                from tqdm import tqdm

                it = tqdm(it, total=len(jobs), desc="clips", unit="chunk")
            results = list(it)
    kept: list[int] = []
    errors: list[str] = []
    logits: dict[str, list[np.ndarray]] = {}
    offset = 0
    for job, res in zip(jobs, results, strict=True):
        kept += [offset + i for i in res["ok"]]
        errors += res["errors"]
        for k, v in res["logits"].items():
            if len(v):
                logits.setdefault(k, []).append(v)
        offset += len(job[1])
    return {"kept": kept, "errors": errors,
            "logits": {k: np.concatenate(v) for k, v in logits.items()}}


def summarize(logits: dict[str, np.ndarray], y: np.ndarray, labels: list[str],
              float_runtime: str = "onnx_float") -> dict[str, Any]:
    """Accuracy and per-class recall per runtime; the drop of each INT8 runtime vs float."""
    out: dict[str, Any] = {}
    for name, lg in logits.items():
        if lg.ndim != 2 or lg.shape[1] != len(labels):
            raise ValueError(f"{name}: outputs have shape {list(lg.shape)}, expected [N, {len(labels)}] "
                             f"for labels {labels}")
        pred = softmax(lg).argmax(axis=1)
        cm = confusion_matrix(y, pred, len(labels))
        out[name] = {"accuracy": float((pred == y).mean()) if len(y) else 0.0,
                     "per_class": per_class(cm, labels), "confusion_matrix": cm.tolist()}
    if float_runtime in out:
        ref = out[float_runtime]
        for name, res in out.items():
            if name == float_runtime:
                continue
            res["accuracy_drop"] = ref["accuracy"] - res["accuracy"]
            res["per_class_recall_drop"] = {
                c: ref["per_class"][c]["recall"] - res["per_class"][c]["recall"] for c in labels}
    return out


def evaluate_dataset(specs: list[RunnerSpec], dataset_dir: str | Path, *, split: str = "test",
                     labels: list[str] | None = None, workers: int | None = None,
                     max_clips: int | None = None, progress: bool = False) -> dict[str, Any]:
    """The dataset's split through every runtime (tinyconv dataset folder: manifest.csv + labels.json)."""
    from tinyconv.data.manifest import read_manifest, resolve

    rows, info = read_manifest(dataset_dir)
    labels = labels or info.labels
    rows = [r for r in rows if r.split == split]
    if max_clips is not None:
        if max_clips < 1:
            raise ModelError(f"max_clips must be >= 1 (or None for every clip), got {max_clips}")
        rows = rows[:max_clips]
    if not rows:
        raise ModelError(f"{dataset_dir}: the {split!r} split is empty")
    unknown = sorted({r.label for r in rows} - set(labels))
    if unknown:
        raise ModelError(
            f"{dataset_dir}: labels {unknown[:5]} of the {split!r} split are not among the model's labels "
            f"{labels}; simulate the model on the dataset it was trained for")
    paths = [str(resolve(dataset_dir, r)) for r in rows]
    res = run_clips(specs, paths, workers=workers, progress=progress)
    y = np.array([labels.index(rows[i].label) for i in res["kept"]], dtype=np.int64)
    report = summarize(res["logits"], y, labels)
    return {"split": split, "num_clips": len(res["kept"]), "skipped": len(res["errors"]),
            "skipped_examples": res["errors"][:5], "labels": labels, "runtimes": report}
