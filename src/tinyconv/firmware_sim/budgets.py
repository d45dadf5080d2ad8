"""MCU budget profiles (tinyconv/firmware_sim/mcu_budgets/*.yaml, shipped in the wheel): typed,
validated, with did-you-mean errors."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tinyconv.config import yaml_load
from tinyconv.errors import TinyconvError
from tinyconv.firmware_sim.costmodel import CORES, KERNEL_FAMILIES

# Package data (pyproject [tool.setuptools.package-data]): found the same way from a wheel or an
# editable install. The wheel installs as files, so the resource is a real folder.
BUDGET_DIR = Path(str(importlib.resources.files("tinyconv.firmware_sim").joinpath("mcu_budgets")))


class BudgetError(TinyconvError, ValueError):
    """A budget profile is unknown, malformed or invalid."""


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True, kw_only=True)
class McuBudget:
    """One microcontroller: what the model may use of it, and how fast its kernels run."""

    name: str
    core: str  # a key of costmodel.CORES
    clock_mhz: float
    sram_bytes: int
    flash_bytes: int
    app_reserved_fraction: float = 0.2  # share of SRAM and flash kept for the application
    kernels: str = "reference"  # reference | cmsis-nn | esp-nn
    int8_only: bool = True  # the firmware links only int8 kernels
    max_latency_ms: float | None = None  # optional per-inference deadline
    description: str = ""

    def __post_init__(self) -> None:
        if self.core not in CORES:
            raise BudgetError(f"budget {self.name!r}: core {self.core!r} is unknown{_suggest(self.core, list(CORES))}; "
                              f"known: {sorted(CORES)}")
        if self.kernels not in KERNEL_FAMILIES:
            raise BudgetError(f"budget {self.name!r}: kernels {self.kernels!r} is unknown"
                              f"{_suggest(self.kernels, list(KERNEL_FAMILIES))}; known: {sorted(KERNEL_FAMILIES)}")
        # NaN compares false against every bound and inf divides latencies to 0 (and NaN/inf are not
        # JSON): each number must be finite, and each is named on its own.
        for key in ("clock_mhz", "sram_bytes", "flash_bytes", "app_reserved_fraction", "max_latency_ms"):
            value = getattr(self, key)
            if isinstance(value, float) and not math.isfinite(value):
                raise BudgetError(f"budget {self.name!r}: {key} must be a finite number, got {value}")
        for key in ("clock_mhz", "sram_bytes", "flash_bytes"):
            if getattr(self, key) <= 0:
                raise BudgetError(f"budget {self.name!r}: {key} must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.app_reserved_fraction < 1.0:
            raise BudgetError(f"budget {self.name!r}: app_reserved_fraction must be in [0, 1), "
                              f"got {self.app_reserved_fraction}")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise BudgetError(f"budget {self.name!r}: max_latency_ms must be positive, got {self.max_latency_ms}")

    @property
    def ram_available_bytes(self) -> int:
        return int(self.sram_bytes * (1.0 - self.app_reserved_fraction))

    @property
    def flash_available_bytes(self) -> int:
        return int(self.flash_bytes * (1.0 - self.app_reserved_fraction))


_FIELDS = {f.name: f for f in dataclasses.fields(McuBudget)}
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "core": (str,), "clock_mhz": (int, float), "sram_bytes": (int,), "flash_bytes": (int,),
    "app_reserved_fraction": (int, float), "kernels": (str,), "int8_only": (bool,),
    "max_latency_ms": (int, float, type(None)), "description": (str,),
}


def budget_from_dict(raw: dict[str, Any], source: str) -> McuBudget:
    if not isinstance(raw, dict):
        raise BudgetError(f"{source}: a budget profile must be a YAML mapping")
    for key, value in raw.items():
        if key not in _FIELDS:
            raise BudgetError(f"{source}: unknown key {key!r}{_suggest(str(key), list(_FIELDS))}")
        ok = _TYPES[key]
        # bool is an int subclass: reject True for a byte count, and 1 for a flag.
        if (isinstance(value, bool) and bool not in ok) or not isinstance(value, ok):
            raise BudgetError(f"{source}: {key} must be {'/'.join(t.__name__ for t in ok)}, got {value!r}")
    missing = [k for k in ("core", "clock_mhz", "sram_bytes", "flash_bytes") if k not in raw]
    if missing:
        raise BudgetError(f"{source}: missing required keys {missing}")
    raw = {"name": Path(source).stem, **raw}
    return McuBudget(**raw)


def list_budgets(directory: Path = BUDGET_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_budget(name_or_path: str | Path, directory: Path = BUDGET_DIR) -> McuBudget:
    """A budget by name (a packaged profile, BUDGET_DIR/NAME.yaml) or by path to a YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = directory / f"{text}.yaml"
        if not path.is_file():
            names = list_budgets(directory)
            raise BudgetError(f"unknown MCU budget {text!r}{_suggest(text, names)}; known: {names} "
                              f"(or pass a path to a YAML profile)")
    if not path.is_file():
        raise BudgetError(f"budget file not found: {path}")
    try:
        raw = yaml_load(path.read_text())  # YAML 1.2 booleans, like every other config
    except yaml.YAMLError as exc:
        raise BudgetError(f"{path}: invalid YAML ({exc})") from None
    return budget_from_dict(raw, str(path))
