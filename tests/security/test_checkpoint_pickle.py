"""A .pt file is a pickle: loading one must never run code it names (weights_only=True).

Every hostile file here carries a payload that creates a marker file when unpickled; the
first test proves the payload really fires under a full unpickle, so the others can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import TINY_OVERRIDES
from tinyconv.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, load_torch_file
from tinyconv.cli import main
from tinyconv.config import Config, config_to_dict, load_config
from tinyconv.data.dataset import FeatureSet
from tinyconv.trainer.loop import LAST
from tinyconv.trainer.run import train

HOSTILE = "not a plain tinyconv checkpoint"


class _Payload:
    """Unpickles as open(marker, "w"): creates the marker file (harmless stand-in for os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _hostile_checkpoint(path: Path, marker: Path, config: Config) -> Path:
    # Looks like a real checkpoint (every key load_checkpoint checks), plus the payload.
    torch.save({"format_version": FORMAT_VERSION, "config": config_to_dict(config), "model_name": config.model.name,
                "labels": ["_negative_", "hey_tiny"], "state_dict": {}, "kind": "float",
                "metrics": {"x": _Payload(marker)}}, path)
    return path


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    return load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tmp_path / 'data'}",
                              f"train.out_dir={tmp_path / 'run'}", "train.ema_decay=0.9"])


def _features(cfg: Config, n: int, seed: int) -> FeatureSet:
    # Seeded random features: enough to run the training loop in about a second, no TTS.
    fe = cfg.frontend
    x = np.random.default_rng(seed).random((n, fe.num_frames, fe.num_channels), dtype=np.float32)
    return FeatureSet(x, np.arange(n) % 2, ["_negative_", "hey_tiny"], "hey_tiny")


@pytest.fixture()
def data(cfg: Config) -> dict[str, FeatureSet]:
    return {"train": _features(cfg, 64, 0), "val": _features(cfg, 16, 1)}


def test_payload_fires_under_a_full_unpickle(tmp_path: Path, cfg: Config) -> None:
    marker = tmp_path / "marker"
    path = _hostile_checkpoint(tmp_path / "evil.pt", marker, cfg)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_a_hostile_pickle(tmp_path: Path, cfg: Config) -> None:
    marker = tmp_path / "marker"
    path = _hostile_checkpoint(tmp_path / "evil.pt", marker, cfg)
    with pytest.raises(CheckpointError, match=rf"evil.pt is {HOSTILE}: .*\((io|builtins).open\).*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["export", "eval"])
def test_cli_refuses_a_hostile_checkpoint(command: str, tmp_path: Path, cfg: Config,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "marker"
    path = _hostile_checkpoint(tmp_path / "evil.pt", marker, cfg)
    argv = [command, str(path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tinyconv {command}: error: ") and HOSTILE in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_resume_refuses_a_hostile_last_pt(tmp_path: Path, cfg: Config, data: dict[str, FeatureSet]) -> None:
    marker = tmp_path / "marker"
    run = Path(cfg.train.out_dir)
    run.mkdir(parents=True)
    torch.save({"epoch": 0, "model": {}, "optimizer": {}, "scheduler": {}, "rng": _Payload(marker)}, run / LAST)
    with pytest.raises(CheckpointError, match=r"last.pt is not a plain tinyconv training state"):
        train(cfg, data=data, resume=True)
    assert not marker.exists()


def test_resume_refuses_a_last_pt_that_is_no_training_state(cfg: Config, data: dict[str, FeatureSet]) -> None:
    run = Path(cfg.train.out_dir)
    run.mkdir(parents=True)
    torch.save({"weights": torch.zeros(1)}, run / LAST)
    with pytest.raises(CheckpointError, match=r"last.pt is not a tinyconv training state"):
        train(cfg, data=data, resume=True)


def test_what_tinyconv_saves_loads_weights_only_and_resumes(cfg: Config, data: dict[str, FeatureSet]) -> None:
    # EMA on, so last.pt carries optimizer, scheduler and EMA state; all must be plain data.
    result = train(cfg, data=data)
    run = Path(cfg.train.out_dir)
    for name in ("checkpoint.pt", LAST):
        torch.load(run / name, weights_only=True)  # raises if anything but plain data was saved
    assert load_checkpoint(result.checkpoint_path).metrics["epoch"] >= 0
    longer = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={cfg.data.dataset_dir}",
                                f"train.out_dir={run}", "train.ema_decay=0.9", "train.epochs=3"])
    resumed = train(longer, data=data, resume=True)
    assert resumed.epochs_run == 3 and len(resumed.history) == 3  # two epochs from last.pt, one new


def test_numpy_metrics_are_saved_as_plain_numbers(tmp_path: Path, cfg: Config) -> None:
    from tinyconv.checkpoint import Checkpoint, save_checkpoint

    ckpt = Checkpoint(config=cfg, labels=["a", "b"], state_dict={"w": torch.zeros(2)},
                      metrics={"acc": np.float64(0.5), "n": [np.int64(3)]}, extra={"t": (np.float32(1.0),)})
    save_checkpoint(ckpt, tmp_path / "c.pt")
    back = load_checkpoint(tmp_path / "c.pt")
    assert back.metrics == {"acc": 0.5, "n": [3]} and type(back.metrics["acc"]) is float
    assert back.extra == {"t": (1.0,)}


def test_garbage_is_reported_as_corrupt_without_torch_advice(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"bad.pt is corrupt or not a torch file") as info:
        load_torch_file(bad)
    assert "weights_only" not in str(info.value)  # torch's text suggests weights_only=False


def test_distillation_last_pt_loads_weights_only_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    # Distillation adds projector weights to last.pt; a resume must read them weights-only too.
    from tinyconv.config import replace
    from tinyconv.data.dataset import load_features
    from tinyconv.trainer.teachers import build_teacher, save_teacher

    labels = ["_negative_", "hey_tiny"]
    base = load_config(None, [*TINY_OVERRIDES, f"data.dataset_dir={tiny_dataset}", f"train.out_dir={tmp_path / 'run'}"])
    cfg = replace(base, distill={"enabled": True, "teacher_cache_dir": str(tmp_path / "cache"),
                                 "teacher_dir": str(tmp_path / "teachers")}, train={"batch_size": 8, "epochs": 1})
    for i, kind in enumerate(("wav2vec2", "conformer")):
        save_teacher(build_teacher(kind, "tiny", 2, labels, seed=i).eval(), tmp_path / "teachers" / kind)

    def few(split: str, per_class: int) -> FeatureSet:
        # A few clips per class keep the teachers' forward pass to about a second.
        fs = load_features(tiny_dataset, split)
        idx = np.concatenate([np.flatnonzero(fs.y == c)[:per_class] for c in np.unique(fs.y)])
        return FeatureSet(fs.x[idx], fs.y[idx], fs.labels, fs.positive_label, [fs.rows[i] for i in idx])

    data = {"train": few("train", 8), "val": few("val", 4)}
    train(cfg, data=data)
    state = torch.load(tmp_path / "run" / LAST, weights_only=True)
    assert state["projectors"]
    resumed = train(replace(cfg, train={"epochs": 2}), data=data, resume=True)
    assert resumed.epochs_run == 2 and len(resumed.history) == 2
