from __future__ import annotations

from pathlib import Path

import pytest

from tinyconv.config import (
    Config,
    ConfigError,
    FrontendConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)


def test_defaults_and_derived_values() -> None:
    fe = FrontendConfig()
    assert (fe.clip_samples, fe.window_samples, fe.step_samples, fe.num_frames) == (16000, 480, 160, 98)
    assert Config().model.tiny_conv_use_depthwise is True


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError,
                       match=r"unknown key model\.tiny_conv_use_depthwis .*did you mean 'tiny_conv_use_depthwise'"):
        config_from_dict({"model": {"tiny_conv_use_depthwis": False}})


def test_unknown_section_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'.*'train'"):
        config_from_dict({"trian": {}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"tiny_conv_use_depthwise": 1}}, r"model\.tiny_conv_use_depthwise must be a boolean"),
        ({"train": {"epochs": "ten"}}, r"train\.epochs must be an integer"),
        ({"data": {"speeds_wpm": "120,140"}}, r"data\.speeds_wpm must be a list"),
        ({"train": {"epochs": 0}}, r"train\.epochs must be >= 1"),
        ({"train": {"ema_decay": 1.0}}, r"train\.ema_decay must be in \[0, 1\), got 1\.0"),
        ({"train": {"confusable_weight": 0}}, r"train\.confusable_weight must be > 0, got 0"),
        ({"model": {"strided_blocks": 5}}, r"model\.strided_blocks must be in \[0, 4\], got 5"),
        ({"model": {"time_dilations": [1, 2, 4]}}, r"model\.time_dilations must be 4 integers >= 1 .*got \[1, 2, 4\]"),
        ({"model": {"time_dilations": [1, 0, 1, 1]}}, r"model\.time_dilations must be 4 integers >= 1"),
        ({"data": {"random_voices": -1}}, r"data\.random_voices must be in \[0, 100000\], got -1"),
        ({"frontend": {"window_ms": 25}}, r"frontend\.window_ms=25 is not supported"),
        ({"data": {"source": "librispeech"}}, r"data\.source must be"),
    ],
)
def test_wrong_types_and_values(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["model.tiny_conv_use_depthwise=false", "data.speeds_wpm=[100, 200]",
                                     "train.learning_rate=1e-2"])
    assert cfg.model.tiny_conv_use_depthwise is False and cfg.data.speeds_wpm == (100, 200)
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_bad_override_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides(Config(), ["model.name"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_packaged_recipes_load_by_name_and_by_path() -> None:
    import yaml

    from tinyconv.config import config_to_dict
    from tinyconv.recipes import list_recipes, recipe_path

    assert "quickstart" in list_recipes()
    for name in list_recipes():
        assert load_config(name) == load_config(recipe_path(name))
    raw = yaml.safe_load(recipe_path("quickstart").read_text())
    quick = config_to_dict(load_config("quickstart"))
    assert all(quick[section][key] == value for section, values in raw.items() for key, value in values.items())
    assert quick != config_to_dict(load_config(None))  # the recipe is not the library defaults


def test_a_file_in_the_working_directory_wins_over_a_recipe_of_the_same_name(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quickstart").write_text("train:\n  epochs: 3\n")
    monkeypatch.chdir(tmp_path)
    assert load_config("quickstart").train.epochs == 3


def test_unknown_recipe_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"no config file or packaged recipe named 'quikstart' \(did you mean "
                                          r"'quickstart'\?\); packaged recipes: (\w+, )*quickstart\b"):
        load_config("quikstart")


def test_yaml_words_yes_no_on_off_stay_strings(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), ["data.keywords=[yes, no, on, off]", "model.tiny_conv_use_depthwise=false"])
    assert cfg.data.keywords == ("yes", "no", "on", "off") and cfg.model.tiny_conv_use_depthwise is False
    (tmp_path / "k.yaml").write_text("data:\n  keywords: [yes, no]\n")
    assert load_config(tmp_path / "k.yaml").data.keywords == ("yes", "no")
