"""A dataset folder is replaced whole or not at all, one writer at a time, and verified per clip."""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_OVERRIDES, tiny_config
from tinyconv.cli import main
from tinyconv.config import Config, load_config
from tinyconv.data import audio
from tinyconv.data.audio import write_wav
from tinyconv.data.manifest import DatasetError, read_manifest, resolve
from tinyconv.data.speech_commands import prepare_speech_commands
from tinyconv.data.synth import synthesize_dataset
from tinyconv.data.writing import dataset_writer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

SMALL = ("data.num_positive=6", "data.num_confusable=3", "data.num_other_speech=3", "data.num_background=2",
         "data.num_workers=1")


def _small(tmp: Path, *extra: str) -> Config:
    return tiny_config(tmp, *SMALL, *extra)


def _snapshot(ds: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file in the dataset (caches aside)."""
    return {str(p.relative_to(ds)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ds.rglob("*")) if p.is_file() and ".feature_cache" not in p.parts}


def _cli_args(*overrides: str) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


@pytest.fixture()
def small_ds(tmp_path: Path) -> Path:
    return synthesize_dataset(_small(tmp_path, "data.seed=1"), tmp_path / "ds")


def test_a_killed_resynthesis_leaves_the_previous_dataset_intact(small_ds: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(small_ds)
    cmd = [sys.executable, "-m", "tinyconv.cli", "data", "synth", "--out", str(small_ds),
           *_cli_args(*TINY_OVERRIDES, "data.seed=2", "data.num_positive=300", "data.num_workers=1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Kill once the new run has written clips: before the fix they landed in the old folder.
        while not any(p.suffix == ".wav" for t in tmp_path.glob(".ds.tmp-*") for p in t.rglob("*.wav")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the new run wrote no clip"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert _snapshot(small_ds) == before
    rows, _ = read_manifest(small_ds)
    assert {r.path for r in rows} == {k for k in before if k.endswith(".wav")}  # no stray new clip
    assert main(["data", "check", str(small_ds), "--strict"]) == 0
    assert "no sha256" not in capsys.readouterr().out
    # The next run into the folder clears what the killed one left and replaces the dataset.
    assert list(tmp_path.glob(".ds.tmp-*"))
    synthesize_dataset(_small(tmp_path, "data.seed=3"), small_ds)
    assert not list(tmp_path.glob(".ds.tmp-*")) and _snapshot(small_ds) != before
    assert main(["data", "check", str(small_ds), "--strict"]) == 0


def test_a_second_writer_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with dataset_writer(out):  # this process is writing the folder...
        cmd = [sys.executable, "-m", "tinyconv.cli", "data", "synth", "--out", str(out), *_cli_args(*SMALL)]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"{out} is being written by another tinyconv run (pid {os.getpid()})" in second.stderr
        with pytest.raises(DatasetError, match="is being written by another tinyconv run"):
            synthesize_dataset(_small(tmp_path), out)  # ...and so is a second writer in the same process
    assert out.is_dir() and not any(out.iterdir())  # the refused writers left nothing in it


def test_without_an_atomic_exchange_a_kill_between_the_two_renames_is_recovered(
        small_ds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyconv.data import writing

    before = _snapshot(small_ds)
    # A file system without renameat2(RENAME_EXCHANGE): the swap takes two renames, and a kill
    # between them leaves the previous dataset moved aside and the folder missing.
    monkeypatch.setattr(writing, "_exchange", lambda a, b: False)
    os.replace(small_ds, tmp_path / ".ds.old-99999")
    with pytest.raises(DatasetError, match=r"a killed run left the previous dataset in .*/\.ds\.old-99999"):
        read_manifest(small_ds)
    with dataset_writer(small_ds) as tmp:
        assert _snapshot(small_ds) == before  # put back before anything else
        (tmp / "manifest.csv").write_text("new")
    assert (small_ds / "manifest.csv").read_text() == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.") and not p.name.endswith(".lock")]


def test_data_check_reports_a_clip_whose_audio_was_swapped(small_ds: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows, _ = read_manifest(small_ds)
    pos = next(r for r in rows if r.kind == "positive" and r.split == "train")
    neg = next(r for r in rows if r.kind == "speech" and r.split == "train")
    a, b = resolve(small_ds, pos), resolve(small_ds, neg)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # a wake-word label now sits on other speech, and vice versa
    with pytest.warns(UserWarning, match="train: skipped 2 bad clips"):
        assert main(["data", "check", str(small_ds)]) == 0
    out = capsys.readouterr().out
    assert "changed: 2" in out and f"{a}: content changed since the manifest was written" in out
    assert main(["data", "check", str(small_ds), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "error: bad clip (strict mode)" in err and "content changed since the manifest was written" in err


def test_a_manifest_without_the_sha256_column_still_loads_with_a_note(small_ds: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    mpath = small_ds / "manifest.csv"
    with open(mpath, newline="") as fh:
        recs = list(csv.DictReader(fh))
    with open(mpath, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in recs[0] if k != "sha256"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(recs)
    rows, _ = read_manifest(small_ds)
    assert rows and all(r.sha256 == "" for r in rows)
    assert main(["data", "check", str(small_ds), "--strict"]) == 0
    assert f"note: {len(rows)} clips have no sha256 in the manifest" in capsys.readouterr().out


def test_a_full_disk_is_a_clear_error_and_leaves_the_previous_dataset(small_ds: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(small_ds)
    writes = []

    def full_disk(path: Path, data: bytes) -> None:  # what write(2) does on a full file system
        writes.append(path)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        path.write_bytes(data)

    monkeypatch.setattr(audio, "_write_bytes", full_disk)
    with pytest.raises(DatasetError, match=f"no space left on the device holding {tmp_path} while writing the "
                                           f"dataset {small_ds}: free some space"):
        synthesize_dataset(_small(tmp_path, "data.seed=5"), small_ds)
    assert _snapshot(small_ds) == before and not list(tmp_path.glob(".ds.tmp-*"))
    writes.clear()
    assert main(["data", "synth", "--out", str(small_ds), *_cli_args(*SMALL, "data.seed=5")]) == 2
    assert "error: no space left on the device" in capsys.readouterr().err
    assert _snapshot(small_ds) == before


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(DatasetError, match="is not empty and is not a tinyconv dataset .*refusing to replace it"):
        synthesize_dataset(_small(tmp_path), home)
    assert (home / "thesis.tex").read_text() == "years of work"


# --- Speech Commands indexer -------------------------------------------------------------------


@pytest.fixture()
def gsc(tmp_path: Path) -> Path:
    """A minimal Speech Commands layout (tones are enough: indexing reads headers only)."""
    root = tmp_path / "gsc"
    rng = np.random.default_rng(0)
    for word in ("yes", "no", "cat"):
        for i in range(3):
            write_wav(root / word / f"spk{i}_nohash_0.wav", (rng.standard_normal(16000) * 1000).astype(np.int16))
    write_wav(root / "_background_noise_" / "white.wav", (rng.standard_normal(48000) * 500).astype(np.int16))
    return root


def _sc_config(*extra: str) -> Config:
    return load_config(None, ["data.keywords=[yes, no]", *extra])


def test_speech_commands_output_is_hashed_and_written_whole(gsc: Path, tmp_path: Path) -> None:
    out = prepare_speech_commands(gsc, tmp_path / "ds", _sc_config("data.silence_fraction=0.5"))
    rows, _ = read_manifest(out)
    assert rows and all(len(r.sha256) == 64 for r in rows)
    assert {r.kind for r in rows} >= {"keyword", "silence"}
    assert not list(tmp_path.glob(".ds.tmp-*"))
    write_wav(gsc / "yes" / "spk0_nohash_0.wav", np.ones(16000, dtype=np.int16))  # the source changed since
    with pytest.raises(DatasetError, match="spk0_nohash_0.wav: content changed since the manifest was written"):
        main_features(out)
    with pytest.raises(DatasetError, match="is the Speech Commands folder .* or contains it"):
        prepare_speech_commands(gsc, gsc, _sc_config())
    with pytest.raises(DatasetError, match="is the Speech Commands folder .* or contains it"):
        prepare_speech_commands(gsc, tmp_path, _sc_config())


def main_features(ds: Path) -> None:
    from tinyconv.data.dataset import load_features

    for split in ("train", "val", "test"):
        try:
            load_features(ds, split, strict=True)
        except DatasetError as err:
            if "has no clips in split" not in str(err):
                raise


def test_symlink_loops_in_a_speech_commands_folder_are_skipped_with_a_message(
        gsc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (gsc / "yes" / "loop_nohash_0.wav").symlink_to("loop_nohash_0.wav")  # points at itself
    (gsc / "no" / "a_nohash_0.wav").symlink_to("b_nohash_0.wav")
    (gsc / "no" / "b_nohash_0.wav").symlink_to("a_nohash_0.wav")
    (gsc / "_background_noise_" / "loop.wav").symlink_to("loop.wav")
    (gsc / "cat" / "up").symlink_to("..")  # a folder loop
    (gsc / "dog").symlink_to("dog")  # a word folder that is a loop
    with pytest.warns(UserWarning, match=r"skipped 3 files that cannot be read .*first: .*"
                                         r"(loop|a|b)_nohash_0.wav: Too many levels of symbolic links"):
        out = prepare_speech_commands(gsc, tmp_path / "ds", _sc_config())
    rows, _ = read_manifest(out)
    assert not {Path(r.path).name for r in rows} & {"loop_nohash_0.wav", "a_nohash_0.wav", "b_nohash_0.wav"}
    assert sum(r.label == "yes" for r in rows) == 3
    with pytest.warns(UserWarning, match="skipped 3 files that cannot be read"):
        assert main(["data", "speech-commands", str(gsc), "--out", str(tmp_path / "ds2"), "--keywords", "yes,no"]) == 0
    assert "wrote manifest for" in capsys.readouterr().out


def test_a_silence_fraction_of_one_is_refused_before_writing(gsc: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The config refuses it when loaded; the indexer refuses it too (a config built another way).
    assert main(["data", "speech-commands", str(gsc), "--out", str(tmp_path / "a"), "--set",
                 "data.silence_fraction=1"]) == 2
    assert "silence_fraction" in capsys.readouterr().err
    cfg = _sc_config()
    object.__setattr__(cfg.data, "silence_fraction", 1.0)  # bypass the config's own check
    with pytest.raises(DatasetError, match=r"data.silence_fraction \(1.0\) and data.unknown_fraction \(0.1\) must "
                                           r"each be in \[0, 1\) and sum to less than 1"):
        prepare_speech_commands(gsc, tmp_path / "b", cfg)
    assert not (tmp_path / "b").exists()
