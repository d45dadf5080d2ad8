"""A dataset from a folder laid out like Google Speech Commands.

SRC/<word>/*.wav, SRC/validation_list.txt and SRC/testing_list.txt (paths relative to SRC),
SRC/_background_noise_/*.wav. Keywords become classes; other words become `_unknown_`
(subsampled to `unknown_fraction` of the data, as the TensorFlow speech_commands recipe does);
`_silence_` clips are cut from the background noise recordings and written to the output folder.
The manifest points at the original WAVs, so nothing is copied; it records each one's sha256,
so `tinyconv data check` notices a file changed since. The output folder is written whole and
swapped in (tinyconv.data.writing), so it must not be SRC itself or contain it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from tinyconv.config import Config
from tinyconv.data.audio import AudioError, AudioStream, write_wav
from tinyconv.data.manifest import DatasetError, DatasetInfo, Row, write_manifest
from tinyconv.data.writing import dataset_writer
from tinyconv.hashing import file_sha256

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
BACKGROUND = "_background_noise_"


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()} if path.is_file() else set()


def _hash_split(rel: str, val_fraction: float, test_fraction: float) -> str:
    """Split by speaker hash (the part before `_nohash_`), like the dataset's own recipe."""
    speaker = Path(rel).name.split("_nohash_")[0]
    bucket = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 10_000 / 10_000
    return "val" if bucket < val_fraction else "test" if bucket < val_fraction + test_fraction else "train"


def prepare_speech_commands(src_dir: str | Path, out_dir: str | Path, config: Config) -> Path:
    """Write manifest.csv/labels.json (and silence WAVs) for a Speech-Commands-style folder."""
    src, out = Path(src_dir), Path(out_dir)
    d = config.data
    # Also checked by the config; repeated here because a fraction of 1 asks for n / (1 - 1)
    # silence clips: the run would write silence until the disk is full.
    sil, unk = d.silence_fraction, d.unknown_fraction
    if not (0 <= sil < 1 and 0 <= unk < 1 and sil + unk < 1):
        raise DatasetError(f"data.silence_fraction ({sil}) and data.unknown_fraction ({unk}) must each be in "
                           f"[0, 1) and sum to less than 1 (the rest are keywords)")
    if not src.is_dir():
        raise DatasetError(f"Speech Commands folder not found: {src}")
    src_real, out_real = Path(os.path.realpath(src)), Path(os.path.realpath(out))
    if out_real == src_real or out_real in src_real.parents:
        raise DatasetError(f"--out {out} is the Speech Commands folder {src} or contains it: the output folder is "
                           f"replaced as a whole, so choose a separate folder")
    words = sorted(p.name for p in src.iterdir() if p.is_dir() and p.name != BACKGROUND and not p.name.startswith("."))
    missing = [k for k in d.keywords if k not in words]
    if missing:
        raise DatasetError(f"keywords {missing} have no folder in {src} (words found: {', '.join(words) or 'none'})")
    val_list, test_list = _read_list(src / "validation_list.txt"), _read_list(src / "testing_list.txt")
    rng = np.random.default_rng(d.seed)
    labels = [SILENCE, UNKNOWN, *d.keywords]
    rows: list[Row] = []
    unknown: dict[str, list[Row]] = {"train": [], "val": [], "test": []}
    unusable: list[str] = []
    for word in words:
        for wav in sorted((src / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            try:
                os.stat(wav)  # a symlink loop or a broken link fails here (resolve() raises RuntimeError on 3.11)
            except OSError as exc:
                unusable.append(f"{wav}: {exc.strerror or exc}")
                continue
            path = str(wav.resolve())
            split = ("val" if rel in val_list else "test" if rel in test_list else "train") if (
                val_list or test_list) else _hash_split(rel, d.val_fraction, d.test_fraction)
            speaker = wav.name.split("_nohash_")[0]
            if word in d.keywords:
                rows.append(Row(path, word, split, speaker, word, "keyword", speaker=speaker))
            else:
                unknown[split].append(Row(path, UNKNOWN, split, speaker, word, "unknown", speaker=speaker))
    for split in unknown:
        n_known = sum(1 for r in rows if r.split == split)
        want = int(round(n_known * d.unknown_fraction / max(1e-9, 1 - d.unknown_fraction - d.silence_fraction)))
        pool = unknown[split]
        picks = rng.permutation(len(pool))[: min(want, len(pool))]
        rows += [pool[i] for i in sorted(picks)]
    hashed = []
    for row in rows:
        try:
            hashed.append(replace(row, sha256=file_sha256(row.path)))
        except OSError as exc:
            unusable.append(f"{row.path}: {exc.strerror or exc}")
    if unusable:
        warnings.warn(f"skipped {len(unusable)} files that cannot be read (symlink loops, broken links, no "
                      f"permission); first: {unusable[0]}", stacklevel=2)
    with dataset_writer(out) as tmp:
        hashed += _silence_rows(src / BACKGROUND, tmp, hashed, config, rng)
        write_manifest(tmp, hashed, DatasetInfo(labels=labels, positive_label=None))
    return out


def _silence_rows(bg_dir: Path, out: Path, rows: list[Row], config: Config, rng: np.random.Generator) -> list[Row]:
    """Cut 1 s silence/noise clips from the background recordings (some scaled near zero).

    Recordings are read a segment at a time (AudioStream): a 2-hour file is never held whole.
    """
    d, fe = config.data, config.frontend
    sources: list[AudioStream] = []
    for wav in sorted(bg_dir.glob("*.wav")) if bg_dir.is_dir() else []:
        try:
            sources.append(AudioStream(wav, fe.sample_rate_hz))
        except AudioError:
            continue  # an unusable noise file only means fewer silence sources
    sources = [s for s in sources if s.num_samples >= fe.clip_samples]
    new: list[Row] = []
    for split in ("train", "val", "test"):
        n_known = sum(1 for r in rows if r.split == split)
        count = int(round(n_known * d.silence_fraction / max(1e-9, 1 - d.silence_fraction)))
        for i in range(count):
            clip = None
            while clip is None and sources:
                k = int(rng.integers(len(sources)))
                start = int(rng.integers(0, sources[k].num_samples - fe.clip_samples + 1))
                try:
                    segment = sources[k].segment(start, fe.clip_samples)
                except AudioError:
                    del sources[k]  # unreadable past its header: fewer silence sources
                    continue
                clip = (segment * rng.uniform(0.0, 1.0)).astype(np.int16)
            if clip is None:
                clip = rng.normal(0, 2.0, fe.clip_samples).astype(np.int16)
            rel = f"{SILENCE}/{split}_{i:05d}.wav"
            sha = write_wav(out / rel, clip, fe.sample_rate_hz)
            new.append(Row(rel, SILENCE, split, "", "", "silence", sha256=sha))
    return new
