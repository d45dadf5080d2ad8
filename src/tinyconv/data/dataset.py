"""Load a dataset split as device features (cached), skipping bad clips with a summary. Torch-free."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyconv.config import FrontendConfig
from tinyconv.data.audio import AudioError, LoadSummary, load_audio
from tinyconv.data.manifest import DatasetError, Row, read_manifest, resolve
from tinyconv.data.synth import parallel_map
from tinyconv.features import FeatureCache
from tinyconv.hashing import file_sha256

CACHE_DIR = ".feature_cache"


@dataclass
class FeatureSet:
    x: np.ndarray  # float32 [N, frames, channels]
    y: np.ndarray  # int64 [N]
    labels: list[str]
    positive_label: str | None
    rows: list[Row] = field(default_factory=list)
    summary: LoadSummary = field(default_factory=LoadSummary)
    # Device features [T, F] of the split's long negative audio (data.negative_stream_minutes).
    negative_streams: list[np.ndarray] = field(default_factory=list)
    # The positive clips (in row order) heard in that audio: [P, frames + post, F], the first
    # `frames` ending where the clip ends (tinyconv.data.negative_streams.context_positives).
    context_positives: np.ndarray | None = None

    @property
    def positive_index(self) -> int | None:
        return self.labels.index(self.positive_label) if self.positive_label in self.labels else None

    def __len__(self) -> int:
        return len(self.y)

    def everyday_negatives(self) -> np.ndarray:
        """Mask of the negatives false accepts per hour are measured on: every negative but the
        near misses (kind "confusable", e.g. "okay nabo"), which stay the clip-level metric's job
        (thousands of them an hour would be no one's everyday audio). The one rule for the
        trainer's validation streams, the exporter's cutoff and the quickstart's test streams."""
        neg = self.y != self.positive_index if self.positive_index is not None else np.ones(len(self.y), bool)
        if len(self.rows) != len(self.y):  # rows unknown: every negative
            return neg
        return neg & np.array([r.kind != "confusable" for r in self.rows], dtype=bool)

    def negative_stream(self, order: np.ndarray | None = None) -> np.ndarray | None:
        """Everyday audio to count false accepts per hour on, as one [T, F] stream: every everyday
        negative clip back to back (in `order`, indices into them, if given), then the split's long
        negative streams. None when there is neither."""
        clips = self.x[self.everyday_negatives()]
        if order is not None:
            clips = clips[order]
        parts = [*clips, *self.negative_streams]
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False) if parts else None


_STATE: dict[str, object] = {}


def _features_for(row: Row) -> tuple[np.ndarray | None, AudioError | None, list[str]]:
    root, frontend, cache = _STATE["root"], _STATE["frontend"], _STATE["cache"]
    assert isinstance(frontend, FrontendConfig) and isinstance(cache, FeatureCache)
    path = resolve(str(root), row)
    try:
        # Silence-class clips are legitimately near-silent; everything else must carry signal.
        loaded = load_audio(path, frontend.sample_rate_hz, allow_silent=row.kind in ("background", "silence"))
        if row.sha256:
            _verify(path, row.sha256)
    except AudioError as err:
        return None, err, []
    notes = list(loaded.notes)
    if len(loaded.samples) != frontend.clip_samples:
        notes.append(f"{'cropped' if len(loaded.samples) > frontend.clip_samples else 'padded'} to window")
    return cache.features(loaded.samples), None, notes


def _verify(path: Path, expected: str) -> None:
    """The clip must be the file the manifest was written for (its label may not fit other audio)."""
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise AudioError(path, f"unreadable ({exc.strerror or exc})", "unreadable") from None
    if actual != expected.lower():
        raise AudioError(path, f"content changed since the manifest was written (sha256 {actual[:12]}..., manifest "
                               f"says {expected[:12]}...): its label may not fit; re-create the dataset", "changed")


def load_features(
    dataset_dir: str | Path,
    split: str,
    frontend: FrontendConfig | None = None,
    *,
    strict: bool = False,
    workers: int = 0,
    limit: int | None = None,
    with_streams: bool = False,
    with_context: bool = False,
) -> FeatureSet:
    """Features for every clip of `split`. Bad clips are skipped with a warning (raise if strict).

    `with_streams`: also the split's long negative audio (`FeatureSet.negative_streams`, hours of
    it: read and featurized only by those that count false accepts per hour or train on it).
    `with_context` (with `with_streams`): also its positives heard in that audio
    (`FeatureSet.context_positives`, about 3 ms a clip: only for those that use them)."""
    frontend = frontend or FrontendConfig()
    rows, info = read_manifest(dataset_dir)
    rows = [r for r in rows if r.split == split][:limit]
    if not rows:
        raise DatasetError(f"{dataset_dir} has no clips in split {split!r}")
    cache = FeatureCache(Path(dataset_dir) / CACHE_DIR, frontend)
    state = dict(root=str(dataset_dir), frontend=frontend, cache=cache)
    from tinyconv.data.synth import num_workers

    summary = LoadSummary()
    xs: list[np.ndarray] = []
    kept: list[Row] = []
    try:
        for row, (feats, err, notes) in zip(
            rows, parallel_map(_features_for, rows, num_workers(workers), f"features:{split}", state,
                                   f"{__name__}:_STATE"),
            strict=True,
        ):
            if err is not None:
                if strict:
                    raise DatasetError(f"bad clip (strict mode): {err}")
                summary.add_error(err)
                continue
            summary.add_notes(notes)
            xs.append(feats)
            kept.append(row)
    finally:
        _STATE.clear()
    if summary.skipped:
        warnings.warn(f"{split}: skipped {sum(summary.skipped.values())} bad clips ({summary}); "
                      f"first: {summary.messages[0]}", stacklevel=2)
    if not xs:
        raise DatasetError(f"no usable clips in split {split!r} of {dataset_dir} ({summary})")
    y = np.array([info.labels.index(r.label) for r in kept], dtype=np.int64)
    from tinyconv.data.negative_streams import load_negative_streams

    streams: list[np.ndarray] = []
    context = None
    if with_streams:
        positives = [r for r in kept if r.label == info.positive_label] if with_context else []
        streams, context = load_negative_streams(dataset_dir, info, split, positives, frontend)
    return FeatureSet(np.stack(xs).astype(np.float32), y, info.labels, info.positive_label, kept, summary, streams,
                      context)
