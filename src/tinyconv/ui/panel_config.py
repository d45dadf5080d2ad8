"""The config panel: one widget per field of every config section, validated by the typed config.

The widgets are generated from the dataclasses (`dataclasses.fields` + type hints), not listed by
hand, so a field added to a section (QAT and distillation grow often) appears without touching
the UI. Values go back through `config_from_dict`, the same validation the CLI's YAML and
`--set` go through, so the panel cannot build a config the CLI would reject, and its ConfigError
messages (key name, did-you-mean) are what the user sees.

The pure functions (`panel_fields`, `config_to_values`, `values_to_config`) hold the logic and
are tested without a browser; `build_panel` only lays out Gradio widgets.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tinyconv.config import (
    Config,
    ConfigError,
    check_model_fields,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    yaml_load,
)

# Panel order: what a user edits most comes first. A section added to Config later is appended.
SECTION_ORDER = ("model", "train", "qat", "distill", "data", "augment", "frontend")
SECTION_TITLES = {
    "model": "Model",
    "train": "Training",
    "qat": "Quantization-aware training (QAT)",
    "distill": "Distillation (dual teacher)",
    "data": "Data",
    "augment": "Augmentation",
    "frontend": "Audio frontend (fixed by the TFLM micro frontend)",
}
OPEN_SECTIONS = ("model", "train")


@dataclass(frozen=True)
class FieldSpec:
    """One config field as the panel shows it."""

    section: str
    name: str
    hint: Any
    default: Any
    doc: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def elem_id(self) -> str:
        return f"cfg-{self.section}-{self.name}"

    @property
    def kind(self) -> str:
        """Widget kind: bool, int, float, str, or yaml for lists, mappings and unions."""
        if self.hint in (bool, int, float, str):
            return self.hint.__name__
        return "yaml"


def _sections() -> list[tuple[str, type]]:
    hints = typing.get_type_hints(Config)
    names = [f.name for f in dataclasses.fields(Config)]
    ordered = [n for n in SECTION_ORDER if n in names] + [n for n in names if n not in SECTION_ORDER]
    return [(n, hints[n]) for n in ordered]


def panel_fields() -> list[FieldSpec]:
    """Every field of every section, introspected from the dataclasses."""
    defaults = config_to_dict(Config())
    specs = []
    for section, cls in _sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            specs.append(FieldSpec(section, f.name, hints[f.name], defaults[section][f.name]))
    return specs


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """A plain config value (as in `config_to_dict`) as its widget shows it."""
    if spec.kind == "yaml":
        # Flow style keeps lists and mappings on one line: `[120, 140]`, `{wav2vec2: [-1]}`.
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip().removesuffix("...").strip()
    return value


def from_widget(spec: FieldSpec, raw: Any) -> Any:
    """A widget value as plain config data; type checks are left to `config_from_dict`."""
    if spec.kind == "yaml":
        text = "" if raw is None else str(raw)
        try:
            return yaml_load(text)
        except yaml.YAMLError as exc:
            shown = repr(text) if len(text) <= 80 else f"{text[:77]!r}... ({len(text)} characters)"
            raise ConfigError(f"{spec.key}: {shown} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None or (isinstance(raw, str) and spec.kind != "str" and not raw.strip()):
        raise ConfigError(f"{spec.key} must not be empty")
    if spec.kind == "int" and isinstance(raw, float) and raw.is_integer():
        return int(raw)  # number widgets may hand back 3.0 for 3
    return raw


def config_to_values(config: Config, specs: Sequence[FieldSpec] | None = None) -> list[Any]:
    """Widget values for `config`, in `panel_fields()` order. Model fields show what the model
    builds: the values a variant fixes (`tinyconv_v2_075`: width 0.75), since every panel field is
    checked as written (`values_to_config`)."""
    from tinyconv.models.registry import resolved_model_config

    raw = config_to_dict(dataclasses.replace(config, model=resolved_model_config(config.model)))
    return [to_widget(s, raw[s.section][s.name]) for s in specs or panel_fields()]


def values_to_config(values: Sequence[Any], specs: Sequence[FieldSpec] | None = None) -> Config:
    """Validate widget values into a Config; raises ConfigError with the CLI's message."""
    specs = list(specs or panel_fields())
    if len(values) != len(specs):
        raise ConfigError(f"the panel sent {len(values)} values for {len(specs)} fields; reload the page")
    raw: dict[str, dict[str, Any]] = {}
    for spec, value in zip(specs, values, strict=True):
        raw.setdefault(spec.section, {})[spec.name] = from_widget(spec, value)
    config = config_from_dict(raw)
    check_model_fields(config, raw.get("model", {}))  # every model field on the panel is written
    return config


def describe_source(config_source: str | None, overrides: Sequence[str] = ()) -> str:
    """The line above the panel saying where its starting values come from, so a path box never
    sits over values that are not that file's."""
    from tinyconv.recipes import list_recipes

    if not config_source:
        return ("Showing the **library defaults** (`tinyconv ui` was started without `--config`). Type a YAML "
                f"path or a packaged recipe name ({', '.join(list_recipes())}) and press **Load YAML**.")
    shown = str(config_source) if len(str(config_source)) <= 200 else str(config_source)[:197] + "..."
    extra = f" with {len(overrides)} `--set` override{'s' if len(overrides) != 1 else ''}" if overrides else ""
    return f"Showing `{shown}`{extra}."


def load_values(path: str | Path) -> list[Any]:
    """Widget values from a YAML config file (the same files `tinyconv --config` reads)."""
    if not str(path).strip():
        raise ConfigError("enter the path of a YAML config to load")
    return config_to_values(load_config(Path(str(path).strip())))


def save_values(values: Sequence[Any], path: str | Path) -> Path:
    """Validate and write the panel as YAML that `tinyconv --config` reads unchanged."""
    if not str(path).strip():
        raise ConfigError("enter a path to save the YAML config to")
    config = values_to_config(values)
    out = Path(str(path).strip())
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"save the config as a .yaml file, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_config(config, out)
    return out


def _widget(gr: Any, spec: FieldSpec, value: Any) -> Any:
    common: dict[str, Any] = dict(label=spec.key, value=value, elem_id=spec.elem_id, min_width=220)
    if spec.kind == "bool":
        return gr.Checkbox(**common)
    if spec.kind == "int":
        return gr.Number(precision=0, **common)
    if spec.kind == "float":
        return gr.Number(**common)
    if spec.kind == "str":
        return gr.Textbox(**common)
    return gr.Textbox(info="YAML, e.g. [1, 2] or {key: value}", **common)


@dataclass
class ConfigPanel:
    """The laid-out widgets, in `specs` order (the order every handler's values arrive in)."""

    specs: list[FieldSpec]
    components: list[Any]

    def component(self, key: str) -> Any:
        for spec, comp in zip(self.specs, self.components, strict=True):
            if spec.key == key:
                return comp
        raise KeyError(key)


def build_panel(config: Config) -> ConfigPanel:
    """Lay out one accordion per section inside the current Gradio Blocks context."""
    import gradio as gr

    specs = panel_fields()
    values = dict(zip((s.key for s in specs), config_to_values(config, specs), strict=True))
    components: list[Any] = [None] * len(specs)
    by_section: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_section.setdefault(spec.section, []).append(i)
    for section, indices in by_section.items():
        with gr.Accordion(SECTION_TITLES.get(section, section), open=section in OPEN_SECTIONS):
            # Checkboxes get a row of their own: squeezed between text fields their labels get cut off.
            toggles = [i for i in indices if specs[i].kind == "bool"]
            others = [i for i in indices if specs[i].kind != "bool"]
            for group in (toggles, others):
                if not group:
                    continue
                with gr.Row(equal_height=False):
                    for i in group:
                        components[i] = _widget(gr, specs[i], values[specs[i].key])
    return ConfigPanel(specs, components)
