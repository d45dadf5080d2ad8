"""A dataset from a folder laid out like Google Speech Commands.

SRC/<word>/*.wav, SRC/validation_list.txt and SRC/testing_list.txt (paths relative to SRC),
SRC/_background_noise_/*.wav. Keywords become classes; other words become `_unknown_`
(subsampled to `unknown_fraction` of the data, as the TensorFlow speech_commands recipe does);
`_silence_` clips are cut from the background noise recordings and written to the output folder.
The manifest points at the original WAVs, so nothing is copied.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tinyconv.config import Config
from tinyconv.data.audio import AudioError, load_audio, write_wav
from tinyconv.data.manifest import DatasetError, DatasetInfo, Row, write_manifest

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
    if not src.is_dir():
        raise DatasetError(f"Speech Commands folder not found: {src}")
    words = sorted(p.name for p in src.iterdir() if p.is_dir() and p.name != BACKGROUND and not p.name.startswith("."))
    missing = [k for k in d.keywords if k not in words]
    if missing:
        raise DatasetError(f"keywords {missing} have no folder in {src} (words found: {', '.join(words) or 'none'})")
    val_list, test_list = _read_list(src / "validation_list.txt"), _read_list(src / "testing_list.txt")
    rng = np.random.default_rng(d.seed)
    labels = [SILENCE, UNKNOWN, *d.keywords]
    rows: list[Row] = []
    unknown: dict[str, list[Row]] = {"train": [], "val": [], "test": []}
    for word in words:
        for wav in sorted((src / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            split = ("val" if rel in val_list else "test" if rel in test_list else "train") if (
                val_list or test_list) else _hash_split(rel, d.val_fraction, d.test_fraction)
            speaker = wav.name.split("_nohash_")[0]
            if word in d.keywords:
                rows.append(Row(str(wav.resolve()), word, split, speaker, word, "keyword"))
            else:
                unknown[split].append(Row(str(wav.resolve()), UNKNOWN, split, speaker, word, "unknown"))
    for split in unknown:
        n_known = sum(1 for r in rows if r.split == split)
        want = int(round(n_known * d.unknown_fraction / max(1e-9, 1 - d.unknown_fraction - d.silence_fraction)))
        pool = unknown[split]
        picks = rng.permutation(len(pool))[: min(want, len(pool))]
        rows += [pool[i] for i in sorted(picks)]
    rows += _silence_rows(src / BACKGROUND, out, rows, config, rng)
    write_manifest(out, rows, DatasetInfo(labels=labels, positive_label=None))
    return out


def _silence_rows(bg_dir: Path, out: Path, rows: list[Row], config: Config, rng: np.random.Generator) -> list[Row]:
    """Cut 1 s silence/noise clips from the background recordings (some scaled near zero)."""
    d, fe = config.data, config.frontend
    sources: list[np.ndarray] = []
    for wav in sorted(bg_dir.glob("*.wav")) if bg_dir.is_dir() else []:
        try:
            sources.append(load_audio(wav, fe.sample_rate_hz).samples)
        except AudioError:
            continue  # an unusable noise file only means fewer silence sources
    sources = [s for s in sources if len(s) >= fe.clip_samples]
    new: list[Row] = []
    for split in ("train", "val", "test"):
        n_known = sum(1 for r in rows if r.split == split)
        count = int(round(n_known * d.silence_fraction / max(1e-9, 1 - d.silence_fraction)))
        for i in range(count):
            if sources:
                src = sources[int(rng.integers(len(sources)))]
                start = int(rng.integers(0, len(src) - fe.clip_samples + 1))
                clip = (src[start : start + fe.clip_samples] * rng.uniform(0.0, 1.0)).astype(np.int16)
            else:
                clip = rng.normal(0, 2.0, fe.clip_samples).astype(np.int16)
            rel = f"{SILENCE}/{split}_{i:05d}.wav"
            write_wav(out / rel, clip, fe.sample_rate_hz)
            new.append(Row(rel, SILENCE, split, "", "", "silence"))
    return new
