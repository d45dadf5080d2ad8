"""The config panel: every field present, validated by the typed config, YAML the CLI reads."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from tinyconv.config import Config, ConfigError, load_config, replace
from tinyconv.ui.panel_config import (
    config_to_values,
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
    expected = {f"{sec.name}.{f.name}" for sec in dataclasses.fields(Config) for f in dataclasses.fields(hints[sec.name])}
    assert keys == expected
    assert {"model.tiny_conv_use_depthwise", "qat.enabled", "distill.alpha_kd", "train.learning_rate"} <= keys
    kinds = {s.key: s.kind for s in panel_fields()}
    assert kinds["model.tiny_conv_use_depthwise"] == "bool" and kinds["train.epochs"] == "int"
    assert kinds["distill.teachers"] == "yaml" and kinds["distill.teacher_alignment_layers"] == "yaml"


def test_values_round_trip_through_the_typed_config() -> None:
    config = replace(Config(), model={"tiny_conv_use_depthwise": False, "name": "tinyconv_test"},
                     qat={"enabled": True}, distill={"teachers": ["wav2vec2"]}, data={"speeds_wpm": [100, 150]})
    assert values_to_config(config_to_values(config)) == config
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
    assert values_to_config(load_values(REPO / "configs" / "quickstart.yaml")) == load_config(
        REPO / "configs" / "quickstart.yaml")


def test_load_and_save_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_values(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  name: x\n")
    with pytest.raises(ConfigError, match="did you mean 'model'"):
        load_values(bad)
    with pytest.raises(ConfigError, match=r"save the config as a \.yaml file"):
        save_values(config_to_values(Config()), tmp_path / "cfg.txt")
