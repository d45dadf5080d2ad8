"""The config panel: every field present, validated by the typed config, YAML the CLI reads."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from tinyconv.config import Config, ConfigError, load_config, replace
from tinyconv.models.registry import resolved_model_config
from tinyconv.ui.panel_config import (
    config_to_values,
    describe_source,
    load_values,
    panel_fields,
    save_values,
    values_to_config,
)

REPO = Path(__file__).resolve().parents[2]


def _set(values: list, key: str, value: object) -> list:
    keys = [s.key for s in panel_fields()]
    out = list(values)
    out[keys.index(key)] = value
    return out


def test_panel_has_every_field_of_every_section() -> None:
    keys = {s.key for s in panel_fields()}
    hints = typing.get_type_hints(Config)
    expected = {f"{sec.name}.{f.name}"
                for sec in dataclasses.fields(Config) for f in dataclasses.fields(hints[sec.name])}
    assert keys == expected
    assert {"model.tiny_conv_use_depthwise", "qat.enabled", "distill.alpha_kd", "train.learning_rate"} <= keys
    kinds = {s.key: s.kind for s in panel_fields()}
    assert kinds["model.tiny_conv_use_depthwise"] == "bool" and kinds["train.epochs"] == "int"
    assert kinds["distill.teachers"] == "yaml" and kinds["distill.teacher_alignment_layers"] == "yaml"


def test_values_round_trip_through_the_typed_config() -> None:
    config = replace(Config(), model={"tiny_conv_use_depthwise": False, "name": "tinyconv_test"},
                     qat={"enabled": True}, distill={"teachers": ["wav2vec2"]}, data={"speeds_wpm": [100, 150]})
    # The panel shows (and gives back) what the model builds: the variant's fixed width 0.125.
    shown = values_to_config(config_to_values(config))
    assert shown == dataclasses.replace(config, model=resolved_model_config(config.model))
    assert shown.model.width_multiplier == 0.125 != config.model.width_multiplier
    assert values_to_config(config_to_values(shown)) == shown
    assert values_to_config(config_to_values(Config())) == Config()


def test_depthwise_toggle_reaches_the_config() -> None:
    values = _set(config_to_values(Config()), "model.tiny_conv_use_depthwise", False)
    assert values_to_config(values).model.tiny_conv_use_depthwise is False


def test_number_widgets_may_send_floats_for_ints() -> None:
    values = _set(config_to_values(Config()), "train.epochs", 3.0)
    assert values_to_config(values).train.epochs == 3


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.dropout", 1.5, r"model\.dropout must be in \[0, 1\), got 1\.5"),
    ("train.epochs", 2.5, r"train\.epochs must be an integer, got 2\.5"),
    ("train.epochs", None, r"train\.epochs must not be empty"),
    ("train.selection_metric", "acc", r"train\.selection_metric must be accuracy"),
    ("data.speeds_wpm", "[fast, slow]", r"data\.speeds_wpm\[0\] must be an integer"),
    ("distill.teachers", "[wav2vec2", r"distill\.teachers: .* is not valid YAML"),
])
def test_bad_values_raise_the_cli_config_error(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        values_to_config(_set(config_to_values(Config()), key, value))


def test_saved_yaml_is_read_unchanged_by_the_cli_loader(tmp_path: Path) -> None:
    values = _set(config_to_values(Config()), "model.tiny_conv_use_depthwise", False)
    values = _set(values, "qat.enabled", True)
    path = save_values(values, tmp_path / "sub" / "ui.yaml")
    assert load_config(path) == values_to_config(values)
    assert load_values(path) == values


def test_load_reads_the_quickstart_config() -> None:
    from tinyconv.recipes import recipe_path

    assert values_to_config(load_values(recipe_path("quickstart"))) == load_config("quickstart")
    assert load_values("quickstart") == load_values(recipe_path("quickstart"))


def test_source_line_says_where_the_values_come_from() -> None:
    assert describe_source(None).startswith("Showing the **library defaults** (`tinyconv ui` was started without "
                                            "`--config`)")
    assert "quickstart" in describe_source(None)
    assert describe_source("runs/my.yaml") == "Showing `runs/my.yaml`."
    assert describe_source("quickstart", ["train.epochs=3"]) == "Showing `quickstart` with 1 `--set` override."


def _app_values(config: Config, tmp_path: Path, **kwargs: object) -> dict[str, object]:
    """Starting values of the built app's components, by elem_id (no server, no browser)."""
    from tinyconv.ui.app import build_app

    demo = build_app(config, tmp_path / "runs", **kwargs)
    return {b.elem_id: b.value for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_app_shows_the_named_file_under_its_path_not_the_defaults(tmp_path: Path) -> None:
    # The bug: the path box read configs/quickstart.yaml (width 1.0, dilated, 35 epochs) over the
    # library defaults (width 0.5, no dilations, 30 epochs).
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  width_multiplier: 0.75\n  time_dilations: [1, 2, 2, 2]\ntrain:\n  epochs: 7\n")
    shown = _app_values(load_config(path), tmp_path, config_source=str(path))
    assert shown["cfg-path"] == str(path)
    assert shown["cfg-status"] == f"Showing `{path}`."
    assert (shown["cfg-model-width_multiplier"], shown["cfg-train-epochs"]) == (0.75, 7)
    assert shown["cfg-model-time_dilations"] == "[1, 2, 2, 2]"
    assert Config().model.width_multiplier != 0.75 and Config().train.epochs != 7


def test_app_started_without_a_config_labels_the_defaults(tmp_path: Path) -> None:
    shown = _app_values(Config(), tmp_path)
    assert shown["cfg-path"] == ""
    assert "library defaults" in str(shown["cfg-status"])
    assert shown["cfg-train-epochs"] == Config().train.epochs


def test_load_and_save_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_values(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  name: x\n")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_values(bad)
    with pytest.raises(ConfigError, match=r"save the config as a \.yaml file"):
        save_values(config_to_values(Config()), tmp_path / "cfg.txt")
