"""Quiet by default: hide library noise the user cannot act on; `tinyconv --verbose` shows it.

`tinyconv export` used to print a page before its own lines: torchao failing to load its
CUDA-only kernels, torch's pytree and ONNX-registration log lines, FutureWarnings from torch's
pytree, and C++ absl/oneDNN lines written straight to file descriptor 2 when litert-torch's MLIR
converter (and TensorFlow, for ESPHome exports) load their shared libraries. Everything that
hides them lives here, and only the CLI turns it on (`configure(verbose=False)`): a program that
imports tinyconv as a library keeps its own logging, warnings and stderr.

- Python warnings: filters matched on the message, never a blanket category filter.
- Python logging: levels of the named libraries' loggers; torch's own loggers through
  `TORCH_LOGS` (torch resets its logger levels when it is imported, so the variable must be set
  first).
- C++ logging: `TF_CPP_MIN_LOG_LEVEL` (honoured by the converter's flatbuffer export), and for
  the lines printed while a native library loads (absl prints them before any flag is read) file
  descriptor 2 is redirected while those packages import; what they printed is shown if the
  import fails. `native_stderr_captured()` does the same around a converter call.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

# Packages whose native libraries print absl/oneDNN log lines to fd 2 while they load.
NATIVE_NOISY_PACKAGES = ("litert_converter", "tensorflow")

# Python loggers of libraries that log at WARNING about things only their developers can act on
# (torchao: "Failed to load .../_C_mxfp8...so", its CUDA-only kernels on a CPU machine).
NOISY_LOGGERS = ("torchao", "absl", "tensorflow", "litert_torch", "ai_edge_litert", "onnxscript")

# Messages of warnings the user cannot act on (regular expressions matched at the message start).
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch's pytree, raised inside torch.export while litert-torch converts (torch 2.13).
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)

_quiet = False


def is_quiet() -> bool:
    return _quiet


def configure(*, verbose: bool) -> None:
    """Called once by the CLI before a command runs. `verbose=True` leaves everything as is."""
    global _quiet
    if verbose:
        return
    _quiet = True
    # Set before the libraries are imported (they read them once). setdefault: a user's own
    # setting wins. TORCH_LOGS must never be empty (torch 2.13 fails to import with TORCH_LOGS="").
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not os.environ.get("TORCH_LOGS"):
        os.environ["TORCH_LOGS"] = "-all"  # torch's loggers at ERROR
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not any(isinstance(f, _NativeNoiseFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _NativeNoiseFinder())


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """While quiet: send file descriptor 2 (C++ logging, and Python's stderr) to a temporary file;
    show what was written there only if the block raises. A no-op when verbose or when used as a
    library."""
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                captured.seek(0)
                text = captured.read().decode("utf-8", "replace")
                if text.strip():
                    sys.stderr.write(text if text.endswith("\n") else text + "\n")
                    sys.stderr.flush()


class _CapturedLoader(importlib.abc.Loader):
    """Runs the wrapped loader's `exec_module` with fd 2 captured; delegates everything else."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with native_stderr_captured():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_code, ...
        return getattr(self._loader, name)


class _NativeNoiseFinder(importlib.abc.MetaPathFinder):
    """Finds NATIVE_NOISY_PACKAGES and their submodules through the other finders and wraps their
    loaders in `_CapturedLoader`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".", 1)[0] not in NATIVE_NOISY_PACKAGES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CapturedLoader(spec.loader)
                return spec
        return None
