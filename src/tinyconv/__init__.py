"""tinyconv: wake-word and keyword-spotting models for microcontrollers, with proof they fit.

The public API, one function per stage (the CLI's commands call the same functions)::

    load_config(path_or_recipe, overrides)   -> Config       ("quickstart" names a packaged recipe)
    synthesize_dataset(config, out_dir)      -> dataset folder
    train(config)                            -> TrainResult  (.checkpoint_path)
    evaluate(checkpoint)                     -> EvalResult   (.report)
    quickstart(config)                       -> synthesize + train + evaluate
    export_checkpoint(checkpoint, out_dir)   -> ExportResult (.out_dir, .manifest)
    simulate(export_dir, budgets)            -> SimulationReport (.passed, .budgets, .to_dict())
    create_model(name, ...), list_models()   the model registry

Attributes load on first use: `import tinyconv` imports no torch (a firmware engineer who only
simulates exported files never loads it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "load_config": ("tinyconv.config", "load_config"),
    "synthesize_dataset": ("tinyconv.data.synth", "synthesize_dataset"),
    "create_model": ("tinyconv.models", "create_model"),
    "list_models": ("tinyconv.models", "list_models"),
    "train": ("tinyconv.trainer.run", "train"),
    "evaluate": ("tinyconv.trainer.run", "evaluate_checkpoint"),
    "quickstart": ("tinyconv.trainer.run", "quickstart"),
    "export_checkpoint": ("tinyconv.export.pipeline", "export_checkpoint"),
    "simulate": ("tinyconv.firmware_sim.report", "simulate_report"),
    "SimulationReport": ("tinyconv.firmware_sim.report", "SimulationReport"),
}

# Spelled out (not computed from _API) so linters and type checkers see the re-exports;
# tests/test_public_api.py checks that the two agree.
__all__ = [
    "SimulationReport",
    "__version__",
    "create_model",
    "evaluate",
    "export_checkpoint",
    "list_models",
    "load_config",
    "quickstart",
    "simulate",
    "synthesize_dataset",
    "train",
]

if TYPE_CHECKING:
    from tinyconv.config import load_config
    from tinyconv.data.synth import synthesize_dataset
    from tinyconv.export.pipeline import export_checkpoint
    from tinyconv.firmware_sim.report import SimulationReport
    from tinyconv.firmware_sim.report import simulate_report as simulate
    from tinyconv.models import create_model, list_models
    from tinyconv.trainer.run import evaluate_checkpoint as evaluate
    from tinyconv.trainer.run import quickstart, train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'tinyconv' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
