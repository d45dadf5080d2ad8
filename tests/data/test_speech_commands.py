from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyconv.config import load_config
from tinyconv.data.audio import write_wav
from tinyconv.data.dataset import load_features
from tinyconv.data.manifest import DatasetError, read_manifest
from tinyconv.data.speech_commands import prepare_speech_commands
from tinyconv.data.tts import Voice, synthesize


@pytest.fixture(scope="module")
def gsc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small folder in the Speech Commands layout, spoken by espeak-ng voices."""
    root = tmp_path_factory.mktemp("gsc")
    variants = ["m1", "m2", "f1", "f2", "m3", "f3"]
    val, test = [], []
    for word in ("yes", "no", "cat", "dog", "bird"):
        for i, variant in enumerate(variants):
            audio = synthesize(word, Voice("espeak-ng", "en-us", variant), speed_wpm=150, pitch=50)
            rel = f"{word}/spk{i}_nohash_0.wav"
            write_wav(root / rel, audio)
            (val if i == 4 else test if i == 5 else []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    rng = np.random.default_rng(0)
    write_wav(root / "_background_noise_" / "white.wav", (rng.standard_normal(48000) * 500).astype(np.int16))
    return root


def test_standard_layout_gives_keyword_unknown_and_silence_classes(gsc: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["data.keywords=[yes, no]", "data.unknown_fraction=0.2", "data.silence_fraction=0.1"])
    out = prepare_speech_commands(gsc, tmp_path / "ds", cfg)
    rows, info = read_manifest(out)
    assert info.labels == ["_silence_", "_unknown_", "yes", "no"] and info.positive_label is None
    by = {(r.label, r.split) for r in rows}
    assert ("yes", "val") in by and ("no", "test") in by and ("_silence_", "train") in by
    assert any(r.label == "_unknown_" for r in rows)
    # split lists are honoured
    assert all(r.split == "val" for r in rows if r.path.endswith("spk4_nohash_0.wav"))
    fs = load_features(out, "train")
    assert fs.x.shape[1:] == (98, 40) and set(np.unique(fs.y)) <= {0, 1, 2, 3}


def test_missing_keyword_folder_is_named(gsc: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["data.keywords=[yes, maybe]"])
    with pytest.raises(DatasetError, match=r"keywords \['maybe'\] have no folder"):
        prepare_speech_commands(gsc, tmp_path / "ds", cfg)
    with pytest.raises(DatasetError, match="Speech Commands folder not found"):
        prepare_speech_commands(tmp_path / "none", tmp_path / "ds", cfg)
