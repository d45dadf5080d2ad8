"""Hostile and clumsy config input: every bad value is a one-line ConfigError naming its key.

Library-level checks call the config functions; CLI-level checks call `tinyconv.cli.main`
in-process (exit code + first stderr line) so they stay fast.
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from pathlib import Path

import pytest
import yaml

from tinyconv import config as C
from tinyconv.cli import main
from tinyconv.config import ConfigError, config_from_dict, load_config, yaml_load
from tinyconv.errors import TinyconvError

SECTIONS = {f.name: typing.get_type_hints(C.Config)[f.name] for f in dataclasses.fields(C.Config)}

# 342 bytes (the issue's was 343): nine levels of nine aliases expand to 9**9 (387 M) strings without the alias ban.
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and the first line of stderr of `tinyconv ARGS` (in-process)."""
    code = main(list(args))
    err = capsys.readouterr().err
    return code, (err.splitlines() or [""])[0]


def numeric_fields() -> list[tuple[str, str, type]]:
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                out.append((section, f.name, hints[f.name]))
    return out


def bool_fields() -> list[tuple[str, str]]:
    return [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if typing.get_type_hints(cls)[f.name] is bool]


# --- the values named in issue 13 -------------------------------------------------------------

@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.label_smoothing=5", r"^train\.label_smoothing must be in \[0, 1\), got 5\.0$"),
        ("train.label_smoothing=1.5", r"^train\.label_smoothing must be in \[0, 1\), got 1\.5$"),
        ("train.num_threads=-1", r"^train\.num_threads must be in \[0, 1024\], got -1$"),
        ("train.learning_rate=.inf", r"^train\.learning_rate must be a finite number, got inf$"),
        ("train.learning_rate=-.inf", r"^train\.learning_rate must be a finite number, got -inf$"),
        ("train.learning_rate=.nan", r"^train\.learning_rate must be a finite number, got nan$"),
        ("train.learning_rate=1e400", r"^train\.learning_rate must be a finite number"),
        ("train.learning_rate=5", r"^train\.learning_rate must be in \(0, 1\], got 5\.0$"),
        ("train.weight_decay=-1", r"^train\.weight_decay must be in \[0, 1\], got -1\.0$"),
        ("qat.learning_rate=-1", r"^qat\.learning_rate must be in \(0, 1\], got -1\.0$"),
        ("data.num_workers=-4", r"^data\.num_workers must be in \[0, 1024\], got -4$"),
        ("augment.num_room_impulse_responses=0",
         r"^augment\.num_room_impulse_responses must be in \[1, 1000\], got 0$"),
        ("data.silence_fraction=1", r"^data\.silence_fraction must be in \[0, 1\), got 1\.0$"),
        ("data.silence_fraction=-0.1", r"^data\.silence_fraction must be in \[0, 1\), got -0\.1$"),
        ("train.early_stopping_patience=-1", r"^train\.early_stopping_patience must be in \[1, 10000\], got -1$"),
        ("train.early_stopping_patience=0", r"^train\.early_stopping_patience must be in \[1, 10000\], got 0$"),
        ("train.spec_augment=0", r"^train\.spec_augment must be a boolean \(true/false\), got 0$"),
        ("train.epochs=2.0", r"^train\.epochs must be an integer, got 2\.0$"),
        ("train.epochs=true", r"^train\.epochs must be an integer, got True$"),
        ("train.seed=-1", r"^train\.seed must be in \[0, 2147483647\], got -1$"),
        ("data.speeds_wpm=[120, 9999]", r"^data\.speeds_wpm values must be in \[80, 450\]"),
        ("data.pitch_range=[-5, 50]", r"^data\.pitch_range values must be in \[0, 99\]"),
    ],
)
def test_issue_values_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_silence_plus_unknown_fraction_must_leave_room_for_keywords() -> None:
    with pytest.raises(ConfigError, match=r"data\.silence_fraction \+ data\.unknown_fraction must be below 1"):
        load_config(None, ["data.silence_fraction=0.5", "data.unknown_fraction=0.5"])
    assert load_config(None, ["data.silence_fraction=0.4", "data.unknown_fraction=0.5"]).data.silence_fraction == 0.4


def test_unknown_model_name_is_refused_at_load_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"^model\.name: unknown model 'tinyconv_tets' \(did you mean "
                                          r"'tinyconv_test'\?\); registered: .*tinyconv_v2_075"):
        load_config(None, ["model.name=tinyconv_tets"])


def test_non_finite_floats_are_refused_in_files_too(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("distill:\n  temperature: .nan\n")
    with pytest.raises(ConfigError, match=r"^distill\.temperature must be a finite number, got nan$"):
        load_config(path)


# --- every numeric field has a range -----------------------------------------------------------

@pytest.mark.parametrize(("section", "name", "kind"), numeric_fields(), ids=lambda v: str(getattr(v, "__name__", v)))
@pytest.mark.parametrize("sign", [1, -1])
def test_every_numeric_field_has_a_sane_range(section: str, name: str, kind: type, sign: int) -> None:
    huge = sign * (10**12 if kind is int else 1e12)
    with pytest.raises(ConfigError, match=rf"{section}\.{name}\b"):
        config_from_dict({section: {name: huge}})


@pytest.mark.parametrize(("section", "name", "kind"), [f for f in numeric_fields() if f[2] is float],
                         ids=lambda v: str(getattr(v, "__name__", v)))
def test_nan_is_refused_even_when_a_dataclass_is_built_directly(section: str, name: str, kind: type) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{name}\b"):
        SECTIONS[section](**{name: math.nan})
    with pytest.raises(ConfigError, match=rf"^{section}\.{name} must be a finite number, got nan$"):
        config_from_dict({section: {name: math.nan}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"speeds_wpm": [10**12]}}, r"data\.speeds_wpm"),
        ({"data": {"pitch_range": [0, 10**12]}}, r"data\.pitch_range"),
        ({"model": {"time_dilations": [1, 1, 1, 10**12]}}, r"model\.time_dilations"),
        ({"distill": {"student_alignment_layers": [10**12]}}, r"distill\.student_alignment_layers"),
        ({"distill": {"teacher_alignment_layers": {"wav2vec2": [-(10**12)]}}},
         r"distill\.teacher_alignment_layers\['wav2vec2'\]"),
    ],
)
def test_numbers_inside_lists_have_ranges(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


@pytest.mark.parametrize(("section", "name"), bool_fields())
def test_booleans_must_be_real_booleans(section: str, name: str) -> None:
    for value in (0, 1, "true", "yes"):
        with pytest.raises(ConfigError, match=rf"^{section}\.{name} must be a boolean"):
            config_from_dict({section: {name: value}})


@pytest.mark.parametrize(("section", "name"), [(s, n) for s, n, k in numeric_fields() if k is int])
def test_integers_must_be_real_integers(section: str, name: str) -> None:
    for value in (True, 2.0, "3"):
        with pytest.raises(ConfigError, match=rf"^{section}\.{name} must be an integer"):
            config_from_dict({section: {name: value}})


def test_config_error_is_a_tinyconv_error() -> None:
    assert issubclass(ConfigError, TinyconvError) and issubclass(ConfigError, ValueError)


# --- YAML: aliases, size, depth, long values ---------------------------------------------------

def test_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB.encode()) < 400
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"is not valid YAML: YAML aliases \(\*name\) are not allowed") as info:
        load_config(path)
    assert time.perf_counter() - t0 < 1.0
    assert len(str(info.value)) < 300


def test_aliases_are_refused_by_the_shared_loader_as_yaml_errors() -> None:
    # Budget profiles and UI fields use yaml_load and catch yaml.YAMLError to name their source.
    with pytest.raises(yaml.YAMLError, match="YAML aliases"):
        yaml_load("a: &x 1\nb: *x\n")
    with pytest.raises(yaml.YAMLError, match="YAML aliases"):
        yaml_load("base: &b {x: 1}\nother:\n  <<: *b\n")
    assert yaml_load("a: &x 1\n") == {"a": 1}  # an anchor alone expands nothing


def test_alias_bomb_on_the_command_line_is_one_short_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    code, first = cli(capsys, "train", "--config", str(tmp_path / "bomb.yaml"))
    assert code == 2
    assert first.startswith(f"tinyconv train: error: config file {tmp_path / 'bomb.yaml'} is not valid YAML: "
                            "YAML aliases")


def test_oversized_config_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * 1_100_000 + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml is 1100003 bytes; a config is at most 1000000 bytes"):
        load_config(path)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("train:\n  epochs: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ConfigError, match="YAML nested deeper than 32 levels"):
        load_config(path)


def test_integer_with_thousands_of_digits_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "digits.yaml"
    path.write_text("train:\n  epochs: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: unreadable YAML value"):
        load_config(path)


def test_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\xfe\x00\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml is not UTF-8 text"):
        load_config(path)


def test_long_values_are_cut_in_error_messages() -> None:
    long = "x" * 500_000
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": {"source": long}})
    msg = str(info.value)
    assert msg.startswith("data.source must be 'synth' or 'speech_commands', got 'xxx")
    assert msg.endswith("... (500002 characters)") and len(msg) < 200
    with pytest.raises(ConfigError) as info:
        config_from_dict({"train": {"epochs": [long]}})
    assert len(str(info.value)) < 200
    with pytest.raises(ConfigError, match=r"^unknown key train\.'yyy") as info:
        config_from_dict({"train": {"y" * 10_000: 1}})
    assert len(str(info.value)) < 200


# --- the command line: one line, exit 2, no traceback ------------------------------------------

@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["--set", "train.epochs=[unclosed"],
         "tinyconv train: error: --set 'train.epochs': value '[unclosed' is not valid YAML ("),
        (["--set", "train.epochs: 3"],
         "tinyconv train: error: override 'train.epochs: 3' must look like section.key=value"),
        (["--set", "train.label_smoothing=5"],
         "tinyconv train: error: train.label_smoothing must be in [0, 1), got 5.0"),
        (["--set", "train.learning_rate=.inf"],
         "tinyconv train: error: train.learning_rate must be a finite number, got inf"),
        (["--set", "train.early_stopping_patience=-1"],
         "tinyconv train: error: train.early_stopping_patience must be in [1, 10000], got -1"),
        (["--set", "model.name=resnet50"], "tinyconv train: error: model.name: unknown model 'resnet50'"),
    ],
)
def test_cli_config_errors_are_one_line_exit_2(args: list[str], first_line: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", *args, "--set", f"data.dataset_dir={tmp_path / 'data'}", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[0].startswith(first_line), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_unknown_model_fails_before_any_data_is_synthesized(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, first = cli(capsys, "data", "synth", "--out", str(tmp_path / "data"), "--set", "model.name=tinyconv_v9")
    assert code == 2 and first.startswith("tinyconv data: error: model.name: unknown model 'tinyconv_v9'")
    assert not (tmp_path / "data").exists()


# --- unexpected exceptions are bugs: traceback, exit 3 -----------------------------------------

def test_unexpected_exception_prints_traceback_and_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import tinyconv.trainer.cli as trainer_cli

    def boom(args: object) -> int:
        raise KeyError("surprise")

    monkeypatch.setattr(trainer_cli, "_train", boom)
    code = main(["train"])
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback (most recent call last)" in err and "KeyError: 'surprise'" in err
    assert err.splitlines()[-1].startswith("tinyconv train: internal error (KeyError); this is a bug")


def test_tinyconv_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import tinyconv.trainer.cli as trainer_cli

    def missing_tool(args: object) -> int:
        raise TinyconvError("espeak-ng is not installed")

    monkeypatch.setattr(trainer_cli, "_train", missing_tool)
    assert cli(capsys, "train") == (2, "tinyconv train: error: espeak-ng is not installed")


def test_a_broken_subcommand_import_is_not_swallowed(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import tinyconv.cli as cli_module

    monkeypatch.setitem(cli_module._COMMAND_MODULES, "ghost", "tinyconv.no_such_module")
    with pytest.raises(ModuleNotFoundError, match="tinyconv.no_such_module"):
        cli_module.build_parser("ghost")
    code = main(["ghost"])
    err = capsys.readouterr().err
    assert code == 3 and "ModuleNotFoundError" in err and "internal error" in err
