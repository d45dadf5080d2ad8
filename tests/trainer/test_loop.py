from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyconv.checkpoint import CheckpointError, load_checkpoint
from tinyconv.config import Config, replace
from tinyconv.trainer.loop import LAST, class_weights, spec_augment
from tinyconv.trainer.run import evaluate_checkpoint, train

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "tinyconv.cli", *args]


def _overrides(cfg: Config) -> list[str]:
    out = []
    for section in ("data", "model", "train"):
        for key, value in {
            "data": {"dataset_dir": cfg.data.dataset_dir},
            "model": {"name": cfg.model.name},
            "train": {"batch_size": cfg.train.batch_size, "early_stopping_patience": 100},
        }[section].items():
            out += ["--set", f"{section}.{key}={value}"]
    return out


def test_train_writes_best_checkpoint_history_and_config(tiny_cfg: Config) -> None:
    result = train(tiny_cfg)
    ckpt = load_checkpoint(result.checkpoint_path)
    assert ckpt.labels == ["_negative_", "hey_tiny"] and ckpt.kind == "float"
    assert "val_accuracy" in ckpt.metrics
    out = Path(tiny_cfg.train.out_dir)
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert (out / "config.yaml").is_file() and (out / LAST).is_file()
    ev = evaluate_checkpoint(result.checkpoint_path)
    assert set(ev.report) >= {"accuracy", "per_class", "confusion_matrix", "wake_word"}
    assert ev.files["confusion"].stat().st_size > 1000 and ev.files["det"].is_file()
    assert "recall at false-accept rate" in ev.files["markdown"].read_text()


def test_early_stopping(tiny_cfg: Config) -> None:
    cfg = replace(tiny_cfg, train={"epochs": 6, "early_stopping_patience": 1, "learning_rate": 1e-9,
                                   "selection_metric": "accuracy"})
    result = train(cfg)
    history = json.loads((Path(cfg.train.out_dir) / "history.json").read_text())
    # Stopped exactly `patience` epochs after the best one, and says how many epochs really ran.
    assert result.epochs_run == len(result.history) == len(history) == result.best_epoch + 1 + 1 < 6
    assert [row["epoch"] for row in history] == list(range(result.epochs_run))


@pytest.mark.slow  # ~45 s; tests/security/test_checkpoint_pickle.py resumes from last.pt by default
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_cfg: Config, tmp_path: Path) -> None:
    """Kill a run with SIGKILL after its first epoch checkpoint, resume it, compare final weights."""
    epochs = "train.epochs=5"
    full, killed = tmp_path / "full", tmp_path / "killed"
    # With the weight average and confusable weighting on, so their state resumes exactly too.
    base = ["train", *_overrides(tiny_cfg), "--set", epochs, "--set", "train.ema_decay=0.9",
            "--set", "train.confusable_weight=2"]
    subprocess.run(_cli(*base, "--out", str(full)), check=True, capture_output=True, cwd=REPO)
    proc = subprocess.Popen(_cli(*base, "--out", str(killed)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO)
    deadline = time.time() + 120
    while not (killed / LAST).is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(killed / LAST, weights_only=False)
    assert state["epoch"] < 4, "the run finished before it could be killed; make it longer"
    subprocess.run(_cli(*base, "--out", str(killed), "--resume"), check=True, capture_output=True, cwd=REPO)
    a = torch.load(full / LAST, weights_only=False)
    b = torch.load(killed / LAST, weights_only=False)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"]["shadow"][key], b["ema"]["shadow"][key]), key
    assert a["ema"]["updates"] == b["ema"]["updates"] > 0
    assert a["history"] == b["history"]


def test_distributed_two_cpu_processes(tiny_cfg: Config, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tinyconv.cli",
           "train", *_overrides(tiny_cfg), "--set", "train.epochs=2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.kind == "float" and len(json.loads((out / "history.json").read_text())) == 2


def test_class_weights_balance_rare_classes() -> None:
    w = class_weights(np.array([0] * 90 + [1] * 10), 2)
    assert w[1] / w[0] == pytest.approx(9.0)


def test_spec_augment_masks_and_is_seeded() -> None:
    x = torch.rand(4, 98, 40)
    a = spec_augment(x, torch.Generator().manual_seed(0), 10, 6)
    b = spec_augment(x, torch.Generator().manual_seed(0), 10, 6)
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_resume_refuses_a_run_of_another_kind(tiny_cfg: Config) -> None:
    train(tiny_cfg)
    state = torch.load(Path(tiny_cfg.train.out_dir) / LAST, weights_only=False)
    state["kind"] = "qat"
    torch.save(state, Path(tiny_cfg.train.out_dir) / LAST)
    with pytest.raises(ValueError, match="is a qat run; cannot resume it as float"):
        train(tiny_cfg, resume=True)


def test_resume_refuses_to_add_ema_to_a_run_without_it(tiny_cfg: Config) -> None:
    train(replace(tiny_cfg, train={"ema_decay": 0.0}))
    with pytest.raises(ValueError, match="was trained without train.ema_decay; cannot resume it with EMA on"):
        train(replace(tiny_cfg, train={"ema_decay": 0.9}), resume=True)


def test_corrupt_and_foreign_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a tinyconv checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_freq_shift_moves_channels_with_edge_padding() -> None:
    from tinyconv.trainer.loop import freq_shift

    x = torch.arange(5, dtype=torch.float32).view(1, 1, 5).repeat(64, 3, 1)
    y = freq_shift(x, torch.Generator().manual_seed(0), 2)
    assert y.shape == x.shape and not torch.equal(x, y)
    for row in y[:, 0]:
        s = int(row[2] - 2)  # the shift applied to this clip
        assert -2 <= s <= 2 and torch.equal(row, (torch.arange(5) + s).clamp(0, 4).float())
    assert torch.equal(freq_shift(x, torch.Generator(), 0), x)


def test_weight_ema_warms_up_then_averages() -> None:
    from tinyconv.trainer.loop import WeightEMA

    module = torch.nn.BatchNorm1d(2)
    ema = WeightEMA(module, decay=0.9)
    with torch.no_grad():
        module.weight.fill_(3.0)
    ema.update(module)  # first update: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], torch.full((2,), 0.1 * 1.0 + 0.9 * 3.0))
    ema.updates = 10_000  # warm-up long over: decay 0.9
    before = ema.shadow["weight"].clone()
    ema.update(module)
    assert torch.allclose(ema.shadow["weight"], 0.9 * before + 0.1 * 3.0)
    assert ema.shadow["num_batches_tracked"].dtype == torch.int64  # integer buffers copied, not averaged
    averaged = ema.averaged()
    assert not averaged.training and torch.equal(averaged.weight.detach(), ema.shadow["weight"])
    assert torch.equal(module.weight.detach(), torch.full((2,), 3.0))  # the trained module is untouched


def test_confusable_weight_reweights_the_loss(tiny_cfg: Config) -> None:
    import torch.nn.functional as F

    from tinyconv.trainer.loop import Trainer
    from tinyconv.trainer.run import load_splits

    data = load_splits(tiny_cfg)
    idx = torch.arange(len(data["train"]))
    x, y = torch.from_numpy(data["train"].x), torch.from_numpy(data["train"].y)
    plain = Trainer(tiny_cfg, data["train"], data["val"], tiny_cfg.train.out_dir)
    heavy = Trainer(replace(tiny_cfg, train={"confusable_weight": 4.0}), data["train"], data["val"],
                    tiny_cfg.train.out_dir, model=plain.module)
    plain.module.eval()
    with torch.no_grad():
        base = plain.compute_loss(plain.module, x, y, idx)
        weighted = heavy.compute_loss(plain.module, x, y, idx)
        per = F.cross_entropy(plain.module(x), y, weight=plain.weights, reduction="none",
                              label_smoothing=tiny_cfg.train.label_smoothing)
    conf = torch.tensor([r.kind == "confusable" for r in data["train"].rows])
    assert conf.any() and heavy.sample_weights is not None
    w = torch.where(conf, 4.0, 1.0)
    assert torch.allclose(weighted, (per * w).sum() / (plain.weights[y] * w).sum(), atol=1e-6)
    assert not torch.allclose(weighted, base)
