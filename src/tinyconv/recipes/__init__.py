"""Config recipes shipped inside the package (`tinyconv/recipes/*.yaml`).

`--config quickstart` (CLI) and `load_config("quickstart")` (Python) read the packaged recipe of
that name, from any working directory and from a wheel. A path to a YAML file is read as given;
an existing file wins over a recipe of the same name. `tinyconv recipes` lists, prints and copies
them (copy one to edit it).
"""

from __future__ import annotations

import difflib
import importlib.resources
import shutil
from pathlib import Path

from tinyconv.config import ConfigError

# Package data (pyproject [tool.setuptools.package-data]); a wheel installs it as files.
RECIPE_DIR = Path(str(importlib.resources.files(__name__)))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def is_recipe_name(text: str) -> bool:
    """A bare name (`quickstart`): no folder, no suffix. Anything else is a path."""
    return bool(text) and "/" not in text and "\\" not in text and not Path(text).suffix and text not in (".", "..")


def recipe_path(name: str) -> Path:
    """The packaged YAML file of recipe `name`; ConfigError naming the known recipes otherwise."""
    names = list_recipes()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"no config file or packaged recipe named {name[:80]!r}{hint}; packaged recipes: "
                          f"{', '.join(names)} (or pass a path to a YAML file)")
    return RECIPE_DIR / f"{name}.yaml"


def resolve_config_path(path: str | Path) -> Path:
    """`path` as given, or the packaged recipe a bare name that is not an existing file stands for."""
    text = str(path)
    if Path(text).exists() or not is_recipe_name(text):
        return Path(text)
    return recipe_path(text)


def copy_recipe(name: str, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Copy recipe `name` to `dest` (a .yaml file, or a folder to put NAME.yaml in) to edit it."""
    src = recipe_path(name)
    out = Path(dest)
    if out.is_dir():
        out = out / src.name
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"copy the recipe to a .yaml file or an existing folder, got {str(dest)[:200]!r}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    return out
