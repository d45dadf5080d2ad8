"""Write a dataset folder all at once: a locked temporary sibling, swapped in when complete.

Regenerating into a folder in place meant a killed run left the old manifest.csv labelling new
audio, and two runs into one folder mixed their clips. So, like the export:
- a lock file next to the folder (`.NAME.lock`, fcntl.flock) admits one writer; a second is
  refused with a clear error;
- everything is written into a hidden sibling `.NAME.tmp-XXXX`, synced, then exchanged with the
  target in one atomic `renameat2(RENAME_EXCHANGE)` (two renames where the filesystem lacks it);
  a kill at any moment leaves either the old dataset or the new one, never a mix;
- what a killed run left behind (its temporary folder, or an old folder between the two
  fallback renames) is cleaned up or put back by the next run into that folder;
- a full disk becomes a DatasetError naming the folder, and nothing half-written stays.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinyconv.data.manifest import LABELS, MANIFEST, DatasetError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock; the temporary folder and the swap still apply
    fcntl = None  # type: ignore[assignment]

# Content-addressed caches (keyed by the audio's hash), still valid for a regenerated dataset.
_CARRIED_CACHES = (".feature_cache", ".teacher_cache")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _sync_filesystem(folder: Path) -> None:
    """Flush the new files before the swap makes them visible (survives a power cut too)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _check_target(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DatasetError(f"{out} exists and is not a folder: choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / MANIFEST).is_file() and (out / LABELS).is_file()):
        raise DatasetError(
            f"{out} exists, is not empty and is not a tinyconv dataset (no {MANIFEST}/{LABELS}): refusing to "
            f"replace it; choose a new or empty folder (or delete it if it is a dataset a killed run left)"
        )


def _recover(out: Path) -> None:
    """Put back a dataset a killed run moved aside; remove killed runs' temporary folders."""
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not out.exists():
        os.replace(olds.pop(), out)
    for stale in [*olds, *out.parent.glob(f".{out.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def dataset_writer(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder to write a dataset into; on success it replaces `out_dir`.

    On any exception the temporary folder is removed and `out_dir` is left as it was.
    """
    out = Path(os.path.abspath(out_dir))
    if not out.name:
        raise DatasetError(f"cannot write a dataset to {out_dir!r}: name a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(out.parent / f".{out.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DatasetError(f"cannot write a dataset to {out}: {exc.strerror or exc}") from None
    try:
        try:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock, 32, 0).decode(errors="replace").strip() or "?"
            raise DatasetError(
                f"{out} is being written by another tinyconv run (pid {holder}): wait for it to finish or "
                f"choose another output folder"
            ) from None
        os.ftruncate(lock, 0)
        os.write(lock, f"{os.getpid()}\n".encode())  # named in a refused run's message
        _recover(out)
        _check_target(out)
        with _no_space_is_a_dataset_error(out):
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            with _no_space_is_a_dataset_error(out):
                yield tmp
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
                for name in _CARRIED_CACHES:
                    if (out / name).is_dir() and not (tmp / name).exists():
                        os.replace(out / name, tmp / name)
                _sync_filesystem(tmp)
                _swap_in(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the new dataset's leftovers, or the old dataset
    finally:
        os.close(lock)  # releases the lock; the file stays (unlinking it would race a waiting run)


def _swap_in(tmp: Path, out: Path) -> None:
    """Make `tmp` the folder `out`; the previous `out` (if any) ends up at `tmp`."""
    if not out.exists():
        os.replace(tmp, out)
    elif not _exchange(tmp, out):
        # Two renames: a kill between them leaves `out` missing and `.NAME.old-PID` holding the
        # previous dataset, which the next run puts back (_recover).
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        os.replace(old, tmp)


@contextmanager
def _no_space_is_a_dataset_error(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if not _no_space(exc):
            raise
        raise DatasetError(
            f"no space left on the device holding {out.parent} while writing the dataset {out}: free some space "
            f"or choose another output folder ({out} was left as it was)"
        ) from None
