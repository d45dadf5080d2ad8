"""A content-addressed cache of synthesized speech, shared by datasets, runs and worker processes.

Kokoro takes about a second of compute per second of audio on two cores, so a dataset with
natural voices would spend most of its time re-speaking the same (engine, voice, text, rate,
pitch) it spoke in the previous run. Each clip is stored under the sha256 of everything that
determines its samples (`cache_key`), including the engine's package versions: a new model
gets new keys instead of stale audio.

Files are int16 `.npy` arrays, written to a temporary file in the same folder and renamed into
place (`os.replace`), so a reader never sees half a file and two workers (or two runs) writing
the same key both leave one complete file. Nothing is ever evicted: delete the folder to reclaim
the space (a 1 s clip is 32 KB).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Bump when what a key means changes (trimming, loudness, resampling of cached clips).
CACHE_FORMAT = 1


def cache_key(**parts: Any) -> str:
    """sha256 of the JSON of `parts` (sorted keys) and CACHE_FORMAT."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AudioCache:
    """int16 clips by key under `root` (None: a cache that holds nothing)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(os.path.expanduser(str(root))) if root else None

    def path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            audio = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # unreadable (a disk error, or a file from something else): synthesize again
        return audio if audio.dtype == np.int16 and audio.ndim == 1 else None

    def put(self, key: str, audio: np.ndarray) -> None:
        """Store `audio` (int16 mono); a cache that cannot be written is skipped, never fatal."""
        path = self.path(key)
        if path is None:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(audio, dtype=np.int16), allow_pickle=False)
        store_entry(path, buf.getvalue())


def store_entry(path: Path, data: bytes) -> None:
    """Write one cache entry atomically (temp file + rename, so a reader never sees half of it);
    a cache that cannot be written (read-only or full disk) is skipped: only the reuse is lost."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
