from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tinyconv.config import Config

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyconv.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_unknown_config_key_is_a_usage_error() -> None:
    p = run("train", "--set", "model.widht_multiplier=2")
    assert p.returncode == 2
    assert "unknown key model.widht_multiplier (did you mean 'width_multiplier'?)" in p.stderr
    assert "Traceback" not in p.stderr


def test_eval_missing_checkpoint_is_a_usage_error(tmp_path: Path) -> None:
    p = run("eval", str(tmp_path / "none.pt"))
    assert p.returncode == 2 and "checkpoint not found" in p.stderr


def test_train_and_eval_from_the_command_line(tiny_cfg: Config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = run("train", "--set", f"data.dataset_dir={tiny_cfg.data.dataset_dir}", "--set", "model.name=tinyconv_test",
            "--set", "train.epochs=1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "checkpoint" in p.stdout
    p = run("eval", str(out / "checkpoint.pt"), "--json")
    assert p.returncode == 0, p.stderr
    assert '"accuracy"' in p.stdout


def test_a_reader_that_goes_away_is_not_an_error() -> None:
    """`tinyconv recipes list | head -0`: the pipe closes before tinyconv writes; exit 0, no message."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tinyconv.cli", "recipes", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the interpreter has started and written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "error" not in err
