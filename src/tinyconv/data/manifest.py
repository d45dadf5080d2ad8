"""The dataset manifest: one CSV row per clip, plus labels.json. Torch-free."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tinyconv.errors import TinyconvError

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.csv"
LABELS = "labels.json"


class DatasetError(ValueError, TinyconvError):
    """A dataset folder is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Row:
    path: str  # relative to the dataset folder, or absolute
    label: str
    split: str
    voice: str = ""
    text: str = ""
    # positive, confusable, speech, background, other_wake_word, long_speech, recorded (synthesis);
    # keyword, unknown, silence (Speech Commands)
    kind: str = ""
    aug: str = ""
    # sha256 of the clip's file bytes when the manifest was written ("" in manifests from before
    # this column existed): `tinyconv data check` and feature loading verify it, so a manifest
    # can never silently label other audio.
    sha256: str = ""
    # What must not be shared across splits (tinyconv.data.tts.Voice.speaker): an espeak-ng
    # timbre, a flite voice, a Kokoro voice's base voices ("kokoro:jf_alpha&jm_kumo"), a klettres
    # language. "" where unknown (older manifests, loaded datasets).
    speaker: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    labels: list[str]
    positive_label: str | None
    # What the intelligibility gate did to a synthesized dataset (natural_tts.GateReport.metadata:
    # the Whisper folder, clips checked and rejected per kind, every rejected clip); None: no gate.
    intelligibility_gate: dict[str, Any] | None = None
    # Long negative audio stored with a split (tinyconv.data.negative_streams, data.negative_stream_minutes):
    # split -> {"files": [{"path", "sha256", "seconds"}], "hours", ...}; None: clips only.
    negative_streams: dict[str, Any] | None = None


def write_manifest(dataset_dir: str | Path, rows: list[Row], info: DatasetInfo) -> None:
    root = Path(dataset_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Row)]
    tmp = root / f".{MANIFEST}.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    tmp.replace(root / MANIFEST)
    data = asdict(info)
    if data["intelligibility_gate"] is None:
        del data["intelligibility_gate"]  # labels.json stays as it was for datasets without a gate
    if data["negative_streams"] is None:
        del data["negative_streams"]
    (root / LABELS).write_text(json.dumps(data, indent=2) + "\n")


def read_manifest(dataset_dir: str | Path) -> tuple[list[Row], DatasetInfo]:
    root = Path(dataset_dir)
    mpath, lpath = root / MANIFEST, root / LABELS
    if not mpath.is_file() or not lpath.is_file():
        # Where renameat2 is missing, a run killed between its two renames leaves the previous
        # dataset beside the folder (tinyconv.data.writing); say where.
        moved = sorted(root.absolute().parent.glob(f".{root.absolute().name}.old-*"))
        hint = (f"; a killed run left the previous dataset in {moved[-1]}: the next `tinyconv data` run into "
                f"{root} puts it back (or rename it yourself)") if moved and not root.exists() else ""
        raise DatasetError(
            f"{root} is not a tinyconv dataset (needs {MANIFEST} and {LABELS}); create one with "
            f"`tinyconv data synth` or `tinyconv data speech-commands`{hint}"
        )
    try:
        raw = json.loads(lpath.read_text())
        info = DatasetInfo(labels=list(raw["labels"]), positive_label=raw.get("positive_label"),
                           intelligibility_gate=raw.get("intelligibility_gate"),
                           negative_streams=raw.get("negative_streams"))
        if info.intelligibility_gate is not None and not isinstance(info.intelligibility_gate, dict):
            raise TypeError("intelligibility_gate is not a mapping")
        _check_negative_streams(info.negative_streams)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{lpath} is malformed: {exc}") from exc
    rows: list[Row] = []
    names = {f.name for f in fields(Row)}
    with open(mpath, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{mpath} lacks columns {sorted(missing)}")
        for i, rec in enumerate(reader, start=2):
            row = Row(**{k: v for k, v in rec.items() if k in names})
            if row.split not in SPLITS:
                raise DatasetError(f"{mpath}:{i}: split {row.split!r} is not one of {SPLITS}")
            if row.label not in info.labels:
                raise DatasetError(f"{mpath}:{i}: label {row.label!r} is not in {LABELS} {info.labels}")
            rows.append(row)
    return rows, info


def _check_negative_streams(streams: Any) -> None:
    """labels.json's `negative_streams` must name files inside the dataset, per split."""
    if streams is None:
        return
    if not isinstance(streams, dict):
        raise TypeError("negative_streams is not a mapping")
    for split, entry in streams.items():
        if split not in SPLITS or not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
            raise TypeError(f"negative_streams[{split!r}] is not a split with a list of files")
        for f in entry["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("sha256"), str):
                raise TypeError(f"negative_streams[{split!r}] holds an entry without path and sha256: {f!r}")
            p = Path(f["path"])
            if p.is_absolute() or ".." in p.parts:
                raise TypeError(f"negative_streams[{split!r}] names {f['path']!r}, outside the dataset folder")


def resolve(dataset_dir: str | Path, row: Row) -> Path:
    p = Path(row.path)
    return p if p.is_absolute() else Path(dataset_dir) / p
