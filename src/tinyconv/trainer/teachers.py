"""Teachers for distillation: Wav2Vec2 and Wav2Vec2-Conformer from `transformers` with a
classification head, built from a size preset or loaded from a local folder, and fine-tuned on
the dataset's raw waveforms (`tinyconv teacher train`).

No pretrained speech weights can be downloaded on the machines this was built on, so every
teacher can start from random initialisation and be fine-tuned here; a user who has a
Hugging Face folder (e.g. wav2vec2-base) names it in `distill.teacher_pretrained_dirs`.
Loading never touches the network (`local_files_only=True`, as with HF_HUB_OFFLINE=1).

A saved teacher folder holds the backbone (`save_pretrained`) plus `tinyconv_teacher.json`
(kind, labels) and `head.pt` (the classifier).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyconv.config import TEACHER_KINDS, TEACHER_SIZES, Config
from tinyconv.checkpoint import atomic_save, load_torch_file

TEACHER_META = "tinyconv_teacher.json"
TEACHER_HEAD = "head.pt"

# Sizes: "base" is the published wav2vec2-base / conformer-base shape (~95 M parameters);
# "tiny" and "small" shrink the convolutional feature encoder too, since at 512 channels it
# dominates the cost of short clips. The conv strides are kept, so every preset emits one frame
# per 20 ms (49 frames for 1 s), the same rate as the student's stem output.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                 conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 conv_depthwise_kernel_size=15),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(128,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
                  conv_depthwise_kernel_size=15),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                 conv_depthwise_kernel_size=31),
}
assert set(PRESETS) == set(TEACHER_SIZES)

from tinyconv.errors import TinyconvError


class TeacherError(TinyconvError, ValueError):
    """A teacher cannot be built, loaded or queried as configured."""


def _hf_classes(kind: str) -> tuple[type, type]:
    # Imported lazily: `transformers` takes seconds to import and plain training never needs it.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard save/load bars would drown the training log
    if kind == "wav2vec2":
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        return Wav2Vec2Config, Wav2Vec2Model
    if kind == "conformer":
        from transformers import Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel

        return Wav2Vec2ConformerConfig, Wav2Vec2ConformerModel
    raise TeacherError(f"unknown teacher kind {kind!r}; choose from {', '.join(TEACHER_KINDS)}")


def backbone_config(kind: str, size: str) -> Any:
    """The `transformers` config of a preset (no weights)."""
    if size not in PRESETS:
        raise TeacherError(f"unknown teacher size {size!r}; choose from {', '.join(PRESETS)}")
    config_cls, _ = _hf_classes(kind)
    kwargs = dict(PRESETS[size])
    if kind == "wav2vec2":
        kwargs.pop("conv_depthwise_kernel_size")
    # No layer drop: with 2-4 layers and little data it only adds noise to fine-tuning, and the
    # hidden states the cache stores must come from every layer.
    return config_cls(layerdrop=0.0, **kwargs)


@dataclass
class TeacherOutput:
    logits: torch.Tensor  # [B, num_classes]
    hidden_states: tuple[torch.Tensor, ...]  # the selected layers, each [B, frames, width]


def normalize_waveform(samples: torch.Tensor) -> torch.Tensor:
    """int16-range or float audio [B, S] -> zero mean, unit variance per clip (what
    Wav2Vec2FeatureExtractor(do_normalize=True) feeds pretrained wav2vec2 models)."""
    x = samples.float()
    x = x - x.mean(dim=1, keepdim=True)
    return x / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-7)


class Teacher(nn.Module):
    """A `transformers` speech backbone + mean-pooled linear classifier over the last layer."""

    def __init__(self, kind: str, backbone: nn.Module, num_classes: int, labels: Sequence[str] = ()) -> None:
        super().__init__()
        if kind not in TEACHER_KINDS:
            raise TeacherError(f"unknown teacher kind {kind!r}; choose from {', '.join(TEACHER_KINDS)}")
        self.kind = kind
        self.backbone = backbone
        self.labels = list(labels)
        self.head = nn.Linear(self.width, num_classes)

    @property
    def width(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Transformer layers; `hidden_states` has num_layers + 1 entries (0 = before layer 1)."""
        return int(self.backbone.config.num_hidden_layers)

    def resolve_layers(self, layers: Sequence[int]) -> tuple[int, ...]:
        return resolve_layers(self.kind, layers, self.num_layers)

    def forward(self, waveform: torch.Tensor, layers: Sequence[int] = ()) -> TeacherOutput:
        """waveform [B, S] (int16 range or float) -> logits and the hidden states at `layers`."""
        idx = self.resolve_layers(layers)
        out = self.backbone(normalize_waveform(waveform), output_hidden_states=bool(idx))
        logits = self.head(out.last_hidden_state.mean(dim=1))
        hidden = tuple(out.hidden_states[i] for i in idx) if idx else ()
        return TeacherOutput(logits, hidden)

    def identity(self) -> str:
        """A digest of kind, architecture and every weight: the teacher's part of the cache key."""
        h = hashlib.sha256()
        h.update(self.kind.encode())
        h.update(self.backbone.config.to_json_string(use_diff=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def resolve_layers(teacher: str, layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Layer indices (negative from the end) -> non-negative `hidden_states` indices.

    Raises TeacherError naming the teacher and its valid range for an index out of range.
    """
    n = num_layers + 1
    out = []
    for i in layers:
        if not -n <= i < n:
            raise TeacherError(
                f"distill.teacher_alignment_layers: layer {i} is out of range for teacher {teacher!r}, "
                f"which has {num_layers} transformer layers: valid indices are 0..{n - 1} "
                f"(0 = before the first layer) or -{n}..-1"
            )
        out.append(i % n)
    return tuple(out)


def build_teacher(kind: str, size: str, num_classes: int, labels: Sequence[str] = (), *,
                  pretrained_dir: str | Path | None = None, seed: int = 0) -> Teacher:
    """A teacher from a size preset (random init) or from a local `transformers` folder."""
    _, model_cls = _hf_classes(kind)
    torch.manual_seed(seed)
    if pretrained_dir is not None:
        backbone = load_backbone(kind, pretrained_dir)
    else:
        backbone = model_cls(backbone_config(kind, size))
    return Teacher(kind, backbone, num_classes, labels)


def load_backbone(kind: str, local_dir: str | Path) -> nn.Module:
    """`from_pretrained` on a local folder only (never the hub), with a clear error when absent."""
    _, model_cls = _hf_classes(kind)
    path = Path(local_dir)
    if not (path / "config.json").is_file():
        raise TeacherError(f"teacher {kind!r}: {path} is not a local transformers model folder "
                           f"(no config.json); downloads are disabled, so point to a folder saved with "
                           f"save_pretrained")
    try:
        return model_cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TeacherError(f"teacher {kind!r}: cannot load {path}: {exc}") from exc


def save_teacher(teacher: Teacher, out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Backbone via save_pretrained, head and metadata beside it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher.backbone.save_pretrained(str(out))
    atomic_save(teacher.head.state_dict(), out / TEACHER_HEAD)
    meta = {"kind": teacher.kind, "labels": teacher.labels, "num_classes": teacher.head.out_features,
            "metrics": metrics or {}}
    (out / TEACHER_META).write_text(json.dumps(meta, indent=1))
    return out


def load_teacher(local_dir: str | Path, *, kind: str | None = None, labels: Sequence[str] | None = None) -> Teacher:
    """A teacher saved by `save_teacher` (eval mode). Checks kind and labels when given."""
    path = Path(local_dir)
    meta_path = path / TEACHER_META
    if not meta_path.is_file():
        raise TeacherError(f"no fine-tuned teacher at {path} (missing {TEACHER_META}); "
                           f"run `tinyconv teacher train` first")
    meta = json.loads(meta_path.read_text())
    if kind is not None and meta["kind"] != kind:
        raise TeacherError(f"{path} holds a {meta['kind']!r} teacher, expected {kind!r}")
    if labels is not None and list(labels) != meta["labels"]:
        raise TeacherError(f"teacher at {path} was trained on labels {meta['labels']}, "
                           f"the dataset has {list(labels)}; retrain it with `tinyconv teacher train`")
    teacher = Teacher(meta["kind"], load_backbone(meta["kind"], path), meta["num_classes"], meta["labels"])
    teacher.head.load_state_dict(load_torch_file(path / TEACHER_HEAD, what="teacher head"))
    return teacher.eval()


def teacher_dir(config: Config) -> Path:
    """Where fine-tuned teachers live: distill.teacher_dir, else <train.out_dir>/teachers."""
    return Path(config.distill.teacher_dir) if config.distill.teacher_dir else Path(config.train.out_dir) / "teachers"


# --- raw waveforms -----------------------------------------------------------------------------

@dataclass
class WaveSet:
    """Raw int16 clips of one split, fixed to the clip length, aligned with a FeatureSet's rows."""

    x: np.ndarray  # int16 [N, samples]
    y: np.ndarray  # int64 [N]
    labels: list[str]
    positive_label: str | None
    keys: list[str] = field(default_factory=list)  # sha256 of each clip's samples (cache key)

    def __len__(self) -> int:
        return len(self.y)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad to `length` samples (the feature loader does the same to its window)."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def clip_key(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.int16).tobytes()).hexdigest()


def load_waveforms(dataset_dir: str | Path, rows: Sequence[Any], labels: list[str], positive_label: str | None,
                   clip_samples: int = 16000, sample_rate_hz: int = 16000) -> WaveSet:
    """The WAVs behind `rows` (e.g. FeatureSet.rows, so indices match the student's features)."""
    from tinyconv.data.audio import load_audio
    from tinyconv.data.manifest import resolve

    xs = []
    for row in rows:
        loaded = load_audio(resolve(str(dataset_dir), row), sample_rate_hz,
                            allow_silent=row.kind in ("background", "silence"))
        xs.append(fit_length(loaded.samples, clip_samples))
    x = np.stack(xs).astype(np.int16) if xs else np.zeros((0, clip_samples), np.int16)
    y = np.array([labels.index(r.label) for r in rows], dtype=np.int64)
    return WaveSet(x, y, list(labels), positive_label, [clip_key(c) for c in x])


def load_wave_split(config: Config, split: str) -> WaveSet:
    """Raw waveforms of the clips `load_features` keeps for `split` (same order, same skips)."""
    from tinyconv.data.dataset import load_features

    fs = load_features(config.data.dataset_dir, split, config.frontend, strict=config.data.strict,
                       workers=config.data.num_workers)
    return load_waveforms(config.data.dataset_dir, fs.rows, fs.labels, fs.positive_label,
                          config.frontend.clip_samples, config.frontend.sample_rate_hz)


# --- fine-tuning -------------------------------------------------------------------------------

@dataclass
class TeacherResult:
    kind: str
    path: Path
    val_accuracy: float
    train_seconds: float
    num_parameters: int
    history: list[dict[str, float]] = field(default_factory=list)


def predict_teacher(teacher: Teacher, waves: np.ndarray, batch_size: int = 32) -> np.ndarray:
    teacher.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(waves), batch_size):
            out.append(teacher(torch.from_numpy(waves[i : i + batch_size])).logits)
    return torch.cat(out).numpy() if out else np.zeros((0, teacher.head.out_features), np.float32)


def fine_tune_teacher(teacher: Teacher, train: WaveSet, val: WaveSet, *, epochs: int, learning_rate: float,
                      batch_size: int, seed: int = 0, max_shift_samples: int = 1600,
                      log: Callable[[str], None] | None = None) -> tuple[float, list[dict[str, float]]]:
    """AdamW with warmup + cosine, class-balanced cross-entropy, random circular time shifts.

    Returns (best validation accuracy, history); the teacher ends with its best weights.
    """
    from tinyconv.trainer.loop import class_weights

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    weights = class_weights(train.y, len(train.labels))
    opt = torch.optim.AdamW(teacher.parameters(), lr=learning_rate, weight_decay=1e-2)
    steps = max(1, math.ceil(len(train) / batch_size)) * epochs
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    best, best_state, history = -1.0, None, []
    for epoch in range(epochs):
        teacher.train()
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            x = x_all[idx].float()
            # A random shift (the synthesized clips also place words at random offsets).
            shift = int(torch.randint(-max_shift_samples, max_shift_samples + 1, (1,), generator=g))
            x = torch.roll(x, shift, dims=1)
            loss = F.cross_entropy(teacher(x).logits, y_all[idx], weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), 5.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = float((predict_teacher(teacher, val.x).argmax(1) == val.y).mean())
        history.append({"epoch": epoch, "train_loss": total / len(train), "val_accuracy": acc})
        if log:
            log(f"{teacher.kind} epoch {epoch + 1}/{epochs}: train loss {total / len(train):.4f}, val acc {acc:.4f}")
        if acc > best:
            best = acc
            best_state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    if best_state is not None:
        teacher.load_state_dict(best_state)
    return best, history


def train_teachers(config: Config, *, out_dir: str | Path | None = None,
                   data: dict[str, WaveSet] | None = None,
                   log: Callable[[str], None] | None = None) -> list[TeacherResult]:
    """Fine-tune every configured teacher on the dataset's raw waveforms and save it under
    `out_dir` (default `teacher_dir(config)`)/<kind>. Returns each teacher's validation accuracy."""
    dc = config.distill
    root = Path(out_dir) if out_dir is not None else teacher_dir(config)
    data = data or {s: load_wave_split(config, s) for s in ("train", "val")}
    train, val = data["train"], data["val"]
    results = []
    for i, kind in enumerate(dc.teachers):
        pretrained = dc.teacher_pretrained_dirs.get(kind)
        teacher = build_teacher(kind, dc.teacher_size, len(train.labels), train.labels,
                                pretrained_dir=pretrained, seed=config.train.seed + i)
        t0 = time.perf_counter()
        acc, history = fine_tune_teacher(teacher, train, val, epochs=dc.teacher_epochs,
                                         learning_rate=dc.teacher_learning_rate,
                                         batch_size=dc.teacher_batch_size, seed=config.train.seed + i, log=log)
        seconds = time.perf_counter() - t0
        path = save_teacher(teacher.eval(), root / kind, {"val_accuracy": acc, "train_seconds": seconds,
                                                          "size": dc.teacher_size, "pretrained_dir": pretrained})
        results.append(TeacherResult(kind, path, acc, seconds, sum(p.numel() for p in teacher.parameters()), history))
    return results
