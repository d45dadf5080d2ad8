"""Package data: config recipes and MCU budget profiles live inside the package, found from any folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import tinyconv
from tinyconv.cli import main
from tinyconv.config import ConfigError, config_to_dict, load_config
from tinyconv.firmware_sim.budgets import BUDGET_DIR, list_budgets, load_budget
from tinyconv.recipes import RECIPE_DIR, copy_recipe, recipe_path

PACKAGE = Path(tinyconv.__file__).resolve().parent


def test_recipes_and_budgets_are_package_data() -> None:
    assert RECIPE_DIR.resolve().is_relative_to(PACKAGE) and BUDGET_DIR.resolve().is_relative_to(PACKAGE)
    assert {"esp32s3", "nrf52840", "rp2040", "stm32f746", "stm32g0b1", "stm32l4r5"} <= set(list_budgets())
    assert load_budget("esp32s3").name == "esp32s3"


def test_quickstart_uses_its_recipe_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the recipe must come from the package
    assert main(["quickstart", "--print-config", "--set", "train.epochs=3", "--wake-word", "hey there"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    recipe = yaml.safe_load(recipe_path("quickstart").read_text())
    assert printed["model"] == {**printed["model"], **recipe["model"]}  # the recipe's model, not the defaults
    assert printed["model"] != config_to_dict(load_config(None))["model"]
    assert printed["train"]["epochs"] == 3 and printed["data"]["wake_word"] == "hey there"
    assert printed["data"]["num_positive"] == recipe["data"]["num_positive"]
    assert not list(tmp_path.iterdir())  # printing the config wrote nothing


def test_recipes_list_show_and_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    assert any(line.startswith("quickstart ") for line in capsys.readouterr().out.splitlines())
    assert main(["recipes", "show", "quickstart"]) == 0
    assert capsys.readouterr().out == recipe_path("quickstart").read_text()
    mine = tmp_path / "mine.yaml"
    assert main(["recipes", "copy", "quickstart", str(mine)]) == 0
    assert load_config(mine) == load_config("quickstart")
    assert main(["recipes", "copy", "quickstart", str(tmp_path)]) == 0  # into a folder
    assert (tmp_path / "quickstart.yaml").read_text() == mine.read_text()
    mine.write_text("train:\n  epochs: 2\n")
    assert main(["recipes", "copy", "quickstart", str(mine), "--force"]) == 0
    assert load_config(mine) == load_config("quickstart")


def test_copy_errors(tmp_path: Path) -> None:
    (tmp_path / "exists.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"exists\.yaml exists; pass --force to replace it"):
        copy_recipe("quickstart", tmp_path / "exists.yaml")
    with pytest.raises(ConfigError, match=r"copy the recipe to a \.yaml file or an existing folder, got '.*out\.txt'"):
        copy_recipe("quickstart", tmp_path / "out.txt")
    with pytest.raises(ConfigError, match=r"no config file or packaged recipe named 'quikstart' \(did you mean "
                                          r"'quickstart'\?\); packaged recipes: (\w+, )*quickstart\b"):
        copy_recipe("quikstart", tmp_path / "new.yaml")
    assert (tmp_path / "exists.yaml").read_text() == "{}\n" and not (tmp_path / "new.yaml").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["recipes", "show", "quikstart"], r"^tinyconv recipes: error: no config file or packaged recipe named "
                                       r"'quikstart' \(did you mean 'quickstart'\?\)"),
    (["train", "--config", "nope"], r"^tinyconv train: error: no config file or packaged recipe named 'nope'"),
    (["recipes", "copy", "quickstart", "{tmp}/exists.yaml"], r"^tinyconv recipes: error: .*exists\.yaml exists"),
])
def test_cli_recipe_errors_are_one_line_exit_2(argv: list[str], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exists.yaml").write_text("{}\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
