"""Run folders are not overwritten by accident, resumes and --init refuse other models in one line,
and a run whose loss goes non-finite stops without touching the last good checkpoint."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tinyconv.checkpoint import CheckpointError, load_checkpoint
from tinyconv.cli import main
from tinyconv.config import Config, load_config, replace
from tinyconv.trainer.loop import LAST, LOCK, RunFolderError, Trainer, TrainingDivergedError, run_folder
from tinyconv.trainer.run import load_splits, train


@pytest.fixture(scope="module")
def splits(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tests.helpers import TINY_OVERRIDES

    cfg = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}"])
    return load_splits(cfg)


def one_epoch(cfg: Config, out: Path, *extra: str) -> Config:
    from tinyconv.config import apply_overrides

    return apply_overrides(cfg, ["train.epochs=1", f"train.out_dir={out}", *extra])


def cli_args(cfg: Config, out: Path, *extra: str) -> list[str]:
    return ["train", "--set", f"data.dataset_dir={cfg.data.dataset_dir}", "--set", f"model.name={cfg.model.name}",
            "--set", "train.epochs=1", "--set", "train.batch_size=32", "--out", str(out), *extra]


def first_err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return (err.splitlines() or [""])[0]


def test_second_train_into_a_run_folder_is_refused(tiny_cfg: Config, tmp_path: Path, splits: dict,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = one_epoch(tiny_cfg, out)
    train(cfg, data=splits)
    before = (out / "checkpoint.pt").read_bytes(), (out / "config.yaml").read_bytes()
    with pytest.raises(RunFolderError, match=rf"^{out} already holds a training run \(checkpoint\.pt, last\.pt, "
                                             r"config\.yaml\): pass --resume to continue it, --overwrite to replace "
                                             r"it, or choose another --out$"):
        train(replace(cfg, train={"seed": 1}), data=splits)
    assert ((out / "checkpoint.pt").read_bytes(), (out / "config.yaml").read_bytes()) == before
    # The command line: exit 2, one line; then --overwrite replaces the run.
    assert main(cli_args(cfg, out)) == 2
    assert first_err_line(capsys) == (f"tinyconv train: error: {out} already holds a training run (checkpoint.pt, "
                                      f"last.pt, config.yaml): pass --resume to continue it, --overwrite to replace "
                                      f"it, or choose another --out")
    assert (out / "checkpoint.pt").read_bytes() == before[0]
    assert main(cli_args(cfg, out, "--set", "train.seed=3", "--overwrite")) == 0
    assert load_checkpoint(out / "checkpoint.pt").config.train.seed == 3
    # A finished run resumed is fine (nothing left to do); --resume with --overwrite is a contradiction.
    assert main(cli_args(cfg, out, "--set", "train.seed=3", "--resume")) == 0
    assert main(cli_args(cfg, out, "--resume", "--overwrite")) == 2
    assert first_err_line(capsys).endswith("--resume and --overwrite contradict each other: choose one")


def test_a_folder_with_only_a_config_yaml_is_a_run_folder(tiny_cfg: Config, tmp_path: Path, splits: dict) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"already holds a training run \(config\.yaml\)"):
        train(one_epoch(tiny_cfg, out), data=splits)
    train(one_epoch(tiny_cfg, out), data=splits, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint.pt").is_file()


def test_a_locked_run_folder_is_refused(tiny_cfg: Config, tmp_path: Path, splits: dict,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    with run_folder(out):  # as a concurrent `tinyconv train` holds it
        with pytest.raises(RunFolderError, match=rf"^another tinyconv process \(pid {os.getpid()}\) is training "
                                                 rf"into {out} \(it holds {out / LOCK}\); wait for it or choose "
                                                 r"another --out$"):
            train(one_epoch(tiny_cfg, out), data=splits, overwrite=True)
        assert main(cli_args(tiny_cfg, out)) == 2
        assert first_err_line(capsys).startswith(f"tinyconv train: error: another tinyconv process (pid {os.getpid()})")
    assert not (out / "config.yaml").exists()
    train(one_epoch(tiny_cfg, out), data=splits)  # released: the folder is usable again


def test_resume_into_another_models_folder_is_one_line_and_keeps_config_yaml(
        tiny_cfg: Config, tmp_path: Path, splits: dict) -> None:
    out = tmp_path / "run"
    cfg = one_epoch(tiny_cfg, out)
    train(cfg, data=splits)
    saved = (out / "config.yaml").read_bytes()
    other = replace(cfg, model={"name": "tinyconv", "width_multiplier": 0.25})
    with pytest.raises(RunFolderError, match=rf"^cannot resume {out / LAST}: it was written for model "
                                             r"'tinyconv_test' with width_multiplier 0\.125 \(this run: 0\.25\), "
                                             r"and its weights do not fit this run's model 'tinyconv'; resume with "
                                             rf"the run's own config \(--config {out / 'config.yaml'}\)") as info:
        train(other, data=splits, resume=True)
    assert "\n" not in str(info.value) and len(str(info.value)) < 500
    assert (out / "config.yaml").read_bytes() == saved  # a refused resume leaves the run as it was
    # The same through the command line: exit 2, one line.
    args = cli_args(cfg, out, "--set", "model.name=tinyconv_v1", "--resume")
    assert main(args) == 2
    assert (out / "config.yaml").read_bytes() == saved


def test_failed_resume_validation_keeps_config_yaml(tiny_cfg: Config, tmp_path: Path, splits: dict) -> None:
    out = tmp_path / "run"
    cfg = one_epoch(tiny_cfg, out)
    train(cfg, data=splits)
    saved = (out / "config.yaml").read_bytes()
    state = torch.load(out / LAST, weights_only=True)
    state["ema"] = None  # as if trained with train.ema_decay=0
    torch.save(state, out / LAST)
    with pytest.raises(ValueError, match="was trained without train.ema_decay; cannot resume it with EMA on"):
        train(replace(cfg, train={"epochs": 2}), data=splits, resume=True)
    assert (out / "config.yaml").read_bytes() == saved


def test_init_from_another_architecture_is_refused(tiny_cfg: Config, tmp_path: Path, splits: dict,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source"
    train(one_epoch(tiny_cfg, source), data=splits)
    ckpt = source / "checkpoint.pt"
    out = tmp_path / "run"
    other = replace(one_epoch(tiny_cfg, out), model={"name": "tinyconv_v1"})
    # The checkpoint records the width its variant fixes (0.125), not the config field's 0.5.
    with pytest.raises(CheckpointError, match=rf"^--init {ckpt} holds weights for model 'tinyconv_test' with "
                                              r"width_multiplier 0\.125 \(this run: 0\.5\), which do not "
                                              r"fit this run's model 'tinyconv_v1': set the same model\.\* values as "
                                              r"that checkpoint, or drop --init$"):
        train(other, init_checkpoint=ckpt, data=splits)
    assert not (out / "config.yaml").exists() and not (out / "checkpoint.pt").exists()
    assert main([*cli_args(tiny_cfg, out, "--init", str(ckpt)), "--set", "model.name=tinyconv_v2_050"]) == 2
    assert first_err_line(capsys) == (f"tinyconv train: error: --init {ckpt} holds weights for model 'tinyconv_test' "
                                      f"with width_multiplier 0.125 (this run: 0.5), "
                                      f"which do not fit this run's model 'tinyconv_v2_050': set the same model.* "
                                      f"values as that checkpoint, or drop --init")
    # The same architecture starts from the checkpoint's weights.
    result = train(one_epoch(tiny_cfg, out), init_checkpoint=ckpt, data=splits)
    assert load_checkpoint(result.checkpoint_path).model_name == "tinyconv_test"


class _NaNAtEpoch2(Trainer):
    """Trainer whose loss is NaN from the first batch of the second epoch on."""

    calls = 0
    snapshot: bytes = b""

    def compute_loss(self, model, x, y, idx):  # type: ignore[no-untyped-def]
        loss = super().compute_loss(model, x, y, idx)
        type(self).calls += 1
        if type(self).calls > self.steps_per_epoch:
            type(self).snapshot = (self.out_dir / "checkpoint.pt").read_bytes()
            return loss * math.nan
        return loss


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tiny_cfg: Config, tmp_path: Path, splits: dict, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import tinyconv.trainer.run as run_module

    monkeypatch.setattr(run_module, "Trainer", _NaNAtEpoch2)
    out = tmp_path / "run"
    cfg = replace(one_epoch(tiny_cfg, out), train={"epochs": 3, "ema_decay": 0.0})
    with pytest.raises(TrainingDivergedError, match=r"^training loss is nan at epoch 2, batch 1 of \d+: training "
                                                    r"diverged; lower train\.learning_rate \(now 0\.003\); the last "
                                                    rf"good checkpoint {out / 'checkpoint.pt'} and last\.pt are kept$"):
        train(cfg, data=splits)
    assert (out / "checkpoint.pt").read_bytes() == _NaNAtEpoch2.snapshot != b""
    assert torch.load(out / LAST, weights_only=True)["epoch"] == 0
    # The command line: exit 2, one line.
    _NaNAtEpoch2.calls = 0
    assert main([*cli_args(tiny_cfg, tmp_path / "cli"), "--set", "train.epochs=2"]) == 2
    assert first_err_line(capsys).startswith("tinyconv train: error: training loss is nan at epoch 2, batch 1 of ")


def test_non_finite_loss_in_the_first_epoch_says_no_checkpoint_was_written(
        tiny_cfg: Config, tmp_path: Path, splits: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import tinyconv.trainer.run as run_module

    class InfAtOnce(Trainer):
        def compute_loss(self, model, x, y, idx):  # type: ignore[no-untyped-def]
            return super().compute_loss(model, x, y, idx) * math.inf

    monkeypatch.setattr(run_module, "Trainer", InfAtOnce)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"^training loss is inf at epoch 1, batch 1 of \d+: .*"
                                                    r"; no checkpoint was written$"):
        train(one_epoch(tiny_cfg, out), data=splits)
    assert not (out / "checkpoint.pt").exists()


def test_quickstart_reruns_replace_its_own_run(tiny_cfg: Config, tiny_dataset: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's main command works when run twice (its run folder is its own)."""
    import tinyconv.data.synth as synth
    from tinyconv.trainer.run import quickstart

    monkeypatch.setattr(synth, "synthesize_dataset", lambda config, out: Path(out))  # the tiny set is built
    cfg = one_epoch(tiny_cfg, tmp_path / "quick")
    first = quickstart(cfg)
    second = quickstart(replace(cfg, train={"seed": 5}))
    assert first.checkpoint == second.checkpoint and load_checkpoint(second.checkpoint).config.train.seed == 5
