"""The one file-hash helper (dataset clips, checkpoints, export files, teacher packages).

Torch-free and dependency-free so that firmware_sim can use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, streamed (hashlib.file_digest), never read whole."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
