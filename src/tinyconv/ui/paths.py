"""Which files the UI may read, write and serve: the security model of `tinyconv ui`.

Anyone who reaches the port can call every button's endpoint with any text, and can POST files to
Gradio's upload route (no upload widget needed) and learn their server path. So every path that
arrives from the browser is checked here before anything opens it:

- checkpoints, exports, datasets, job outputs and the config's folders must lie under a *root*:
  the runs folder, the folders of the starting config (`data.dataset_dir`, `train.out_dir`,
  distillation folders) and each `--allow-path DIR`;
- YAML configs are loaded and saved only under a root or the `configs/` folder;
- files in Gradio's upload folder are refused everywhere, even under a root: the app has no
  upload widget, so an uploaded file is one it never asked for (a checkpoint is a pickle, and
  loading a pickle runs code);
- `..` is refused, and symlinks are resolved before the check, so a link cannot lead out.

The same roots are the only folders Gradio serves (`allowed_paths`); the working directory is not
served. Gradio-free so the controller tests check exactly what the buttons check.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tinyconv.config import Config
from tinyconv.errors import TinyconvError

# User paths quoted in messages are cut to this many characters.
MAX_PATH_SHOWN = 200


class PathError(TinyconvError, ValueError):
    """A path from the UI lies outside the folders the UI may use."""


def _show(path: object) -> str:
    text = repr(str(path))
    return text if len(text) <= MAX_PATH_SHOWN else text[: MAX_PATH_SHOWN - 3] + "...'"


def gradio_upload_dirs() -> tuple[Path, ...]:
    """Where Gradio keeps uploads and its file cache; mirrors `gradio.utils.get_upload_folder` and
    `get_cache_folder` (a test checks they agree) so this module stays Gradio-free."""
    upload = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    cache = os.environ.get("GRADIO_EXAMPLES_CACHE", ".gradio/cached_examples")
    return tuple(Path(os.path.abspath(p)).resolve() for p in (upload, cache))


def config_folders(config: Config) -> list[tuple[str, str]]:
    """(key, folder) for every config field that names a folder a job reads or writes."""
    d = config.distill
    pairs = [("data.dataset_dir", config.data.dataset_dir), ("train.out_dir", config.train.out_dir),
             ("distill.teacher_dir", d.teacher_dir), ("distill.teacher_cache_dir", d.teacher_cache_dir)]
    pairs += [(f"distill.teacher_pretrained_dirs.{k}", v) for k, v in d.teacher_pretrained_dirs.items()]
    return [(k, v) for k, v in pairs if str(v).strip()]


def _resolve(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path))).resolve()


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


@dataclass(frozen=True)
class PathPolicy:
    """`roots`: folders for data, runs and exports; `config_roots`: folders for YAML configs;
    `refused`: folders never read from (Gradio's uploads), even inside a root. All resolved."""

    roots: tuple[Path, ...]
    config_roots: tuple[Path, ...]
    refused: tuple[Path, ...]

    @classmethod
    def for_app(cls, runs_dir: str | Path, config: Config | None = None, allow_paths: Iterable[str | Path] = (),
                refused: Iterable[str | Path] | None = None) -> PathPolicy:
        """The policy of a UI started on `runs_dir` with `config` and `--allow-path`s. Raises
        PathError for a root that would expose the whole disk or the home folder."""
        named = [("--runs", runs_dir)] + [("--allow-path", p) for p in allow_paths]
        named += [(f"config {k}", v) for k, v in (config_folders(config) if config is not None else [])]
        roots: list[Path] = []
        home = Path.home().resolve()
        for what, raw in named:
            root = _resolve(raw)
            if home.is_relative_to(root):  # also true for the filesystem root
                raise PathError(f"{what} {_show(raw)} would let the UI read and serve {root}, which holds your "
                                f"home folder or the whole disk; use a folder for runs inside it")
            if root not in roots:
                roots.append(root)
        configs = _resolve("configs")
        config_roots = tuple(roots) + (() if configs in roots else (configs,))
        bad = gradio_upload_dirs() if refused is None else tuple(_resolve(p) for p in refused)
        return cls(tuple(roots), config_roots, bad)

    def allows(self, path: str | Path) -> bool:
        try:
            self.check(path)
        except PathError:
            return False
        return True

    def check(self, path: str | Path, what: str = "path", *, configs: bool = False) -> Path:
        """The resolved `path` if the UI may use it; else PathError saying which folders it may use."""
        text = str(path).strip()
        if not text:
            raise PathError(f"enter a {what}")
        if "\x00" in text:
            raise PathError(f"{what} {_show(text)} contains a NUL character")
        if ".." in Path(text).parts:
            raise PathError(f"{what} {_show(text)} contains '..'; enter a path without it")
        resolved = _resolve(text)
        if _inside(resolved, self.refused):
            raise PathError(f"{what} {_show(text)} is a file uploaded to the web server; the UI never opens "
                            f"uploads, only files under {self._list(configs)}")
        if not _inside(resolved, self.config_roots if configs else self.roots):
            raise PathError(f"{what} {_show(text)} is outside the folders the UI may use "
                            f"({self._list(configs)}); start `tinyconv ui` with `--allow-path DIR` to add one")
        return resolved

    def check_config(self, config: Config) -> None:
        """Every folder a job started with `config` reads or writes must be allowed."""
        for key, folder in config_folders(config):
            self.check(folder, key)

    def _list(self, configs: bool) -> str:
        return ", ".join(str(r) for r in (self.config_roots if configs else self.roots))
