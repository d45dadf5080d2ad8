"""Teachers for distillation, each a speech encoder + a classification head trained on the
dataset's raw waveforms (`tinyconv teacher train`):

- `wav2vec2`, `conformer`: Wav2Vec2 / Wav2Vec2-Conformer from `transformers`, from a size preset
  (random init, fine-tuned end to end) or a local folder.
- `whisper`: Whisper's encoder on log-mel input (transformers' WhisperFeatureExtractor), from a
  preset or a folder written by `tinyconv teacher import --whisper tiny.en|base` (pretrained,
  frozen by default). One second gives 50 frames, 20 ms apart.
- `speech_embedding`: Google's speech_embedding (96 values per 76-frame mel window) behind
  openWakeWord's melspectrogram model, run frozen under ONNX Runtime or LiteRT from a folder
  written by `tinyconv teacher import --speech-embedding`; only its head trains.

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
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyconv.checkpoint import atomic_save, load_torch_file
from tinyconv.config import FEATURE_TEACHER_KINDS, FROZEN_TEACHER_KINDS, TEACHER_KINDS, TEACHER_SIZES, Config
from tinyconv.errors import TinyconvError

TEACHER_META = "tinyconv_teacher.json"
TEACHER_HEAD = "head.pt"
# speech_embedding folder: the two model files (either .onnx or .tflite) and a metadata file.
SPEECH_EMBEDDING_FILES = {"melspectrogram": "melspectrogram", "embedding": "embedding_model"}
SPEECH_EMBEDDING_KIND_FILE = "speech_embedding.json"

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
# Whisper encoder presets: "base" is Whisper base's encoder (512 wide, 6 layers, 8 heads).
WHISPER_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128),
    "small": dict(d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024),
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
}
WHISPER_HOP_SAMPLES = 160  # 10 ms mel hop at 16 kHz; the encoder's conv2 halves it to 20 ms frames


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
    if kind == "whisper":
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperConfig, WhisperEncoder
    if kind == "speech_embedding":
        raise TeacherError(_SPEECH_EMBEDDING_NEEDS_FOLDER)
    raise TeacherError(f"unknown teacher kind {kind!r}; choose from {', '.join(TEACHER_KINDS)}")


def backbone_config(kind: str, size: str) -> Any:
    """The `transformers` config of a preset (no weights)."""
    if size not in PRESETS:
        raise TeacherError(f"unknown teacher size {size!r}; choose from {', '.join(PRESETS)}")
    config_cls, _ = _hf_classes(kind)
    if kind == "whisper":
        # Decoder fields are unused (only the encoder is built) but kept small.
        return config_cls(num_mel_bins=80, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
                          decoder_ffn_dim=64, vocab_size=64, max_target_positions=16, pad_token_id=0,
                          bos_token_id=1, eos_token_id=1, decoder_start_token_id=2, **WHISPER_PRESETS[size])
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


_SPEECH_EMBEDDING_NEEDS_FOLDER = (
    "teacher 'speech_embedding' has no size presets (it is Google's pretrained model, run frozen): import it "
    "with `tinyconv teacher import --speech-embedding --out DIR` and set "
    "distill.teacher_pretrained_dirs.speech_embedding=DIR")


def whisper_positions(clip_samples: int) -> int:
    """Encoder frames for a clip: one per 20 ms (50 for 1 s at 16 kHz), rounded up."""
    return max(1, math.ceil(clip_samples / (2 * WHISPER_HOP_SAMPLES)))


def whisper_log_mel(waveform: torch.Tensor, num_mel_bins: int, positions: int) -> torch.Tensor:
    """int16-range audio [B, S] -> Whisper log-mel [B, mels, 2 x positions].

    transformers' WhisperFeatureExtractor (the features Whisper was trained on: 25 ms window,
    10 ms hop, log10, clamped to 8 below each clip's maximum, (x + 4) / 4), with each clip
    zero-padded to exactly 2 x positions hops instead of 30 s (see short_whisper_encoder).
    """
    from transformers import WhisperFeatureExtractor

    samples = 2 * positions * WHISPER_HOP_SAMPLES
    x = waveform.detach().float().cpu().numpy() / 32768.0
    fe = WhisperFeatureExtractor(feature_size=num_mel_bins)
    feats = fe(list(x), sampling_rate=16000, padding="max_length", max_length=samples, truncation=True,
               return_tensors="np")["input_features"]
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


class SpeechEmbedding:
    """Google's speech_embedding behind openWakeWord's melspectrogram model, frozen, run under
    ONNX Runtime (.onnx) or LiteRT (.tflite) from a folder `tinyconv teacher import` wrote.

    Audio (int16 range, as openWakeWord feeds it) -> 32-band mel frames every 10 ms
    (mel / 10 + 2, openWakeWord's scaling) -> one 96-value embedding per 76-frame (775 ms) window.
    Windows step 2 frames (20 ms, the student's stem rate; openWakeWord steps 8 = 80 ms) over the
    clip padded with 38 frames of silence on each side, so window k is centred on 20 ms frame k:
    1 s gives 50 embeddings.
    """

    width = 96
    window_frames = 76
    step_frames = 2
    pad_samples = 38 * 160

    def __init__(self, folder: str | Path, *, num_threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.paths: dict[str, Path] = {}
        for role, stem in SPEECH_EMBEDDING_FILES.items():
            found = [self.folder / f"{stem}{ext}" for ext in (".onnx", ".tflite")
                     if (self.folder / f"{stem}{ext}").is_file()]
            if not found:
                raise TeacherError(f"teacher 'speech_embedding': {self.folder} has no {stem}.onnx or {stem}.tflite; "
                                   f"import it with `tinyconv teacher import --speech-embedding --out DIR`")
            self.paths[role] = found[0]
        self.format = self.paths["embedding"].suffix.lstrip(".")
        threads = num_threads or max(1, torch.get_num_threads())
        try:
            self._runners = {role: _runner(path, threads) for role, path in self.paths.items()}
        except Exception as exc:  # a damaged file: the runtimes raise their own types
            raise TeacherError(f"teacher 'speech_embedding': cannot load the models in {self.folder} ({exc}); "
                               f"re-import with `tinyconv teacher import --speech-embedding --out DIR`") from exc

    def digest(self) -> str:
        h = hashlib.sha256()
        for role in sorted(self.paths):
            h.update(role.encode())
            h.update(self.paths[role].read_bytes())
        h.update(f"{self.step_frames}/{self.pad_samples}".encode())
        return h.hexdigest()

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """[B, S] int16-range audio -> [B, windows, 96] float32."""
        x = np.pad(np.asarray(waveform, np.float32), ((0, 0), (self.pad_samples, self.pad_samples)))
        mel = self._runners["melspectrogram"](x)  # [B, 1, frames, 32]
        mel = mel.reshape(len(x), -1, 32) / 10.0 + 2.0
        starts = range(0, mel.shape[1] - self.window_frames + 1, self.step_frames)
        if not len(starts):
            raise TeacherError(f"teacher 'speech_embedding': clip too short ({waveform.shape[1]} samples)")
        windows = np.stack([mel[:, s : s + self.window_frames] for s in starts], axis=1)  # [B, W, 76, 32]
        emb = self._runners["embedding"](np.ascontiguousarray(windows.reshape(-1, self.window_frames, 32, 1)))
        return emb.reshape(len(x), len(starts), self.width)


def _runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A one-input, one-output model as a numpy function (inputs of any batch and length)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    index = interp.get_input_details()[0]["index"]
    out_index = interp.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [()]

    def run(x: np.ndarray) -> np.ndarray:
        # Dynamic shapes (batch, and the audio length for the mel model): resize when they change.
        if shape[0] != x.shape:
            interp.resize_tensor_input(index, list(x.shape), strict=False)
            interp.allocate_tensors()
            shape[0] = x.shape
        interp.set_tensor(index, x)
        interp.invoke()
        return interp.get_tensor(out_index).copy()

    return run


class Teacher(nn.Module):
    """A speech encoder + mean-pooled linear classifier over its last layer.

    `train_encoder` False freezes the encoder: only the head trains (the default for pretrained
    encoders; speech_embedding is always frozen, it runs outside torch).
    """

    def __init__(self, kind: str, backbone: Any, num_classes: int, labels: Sequence[str] = (), *,
                 train_encoder: bool = True) -> None:
        super().__init__()
        if kind not in TEACHER_KINDS:
            raise TeacherError(f"unknown teacher kind {kind!r}; choose from {', '.join(TEACHER_KINDS)}")
        if train_encoder and kind in FROZEN_TEACHER_KINDS:
            raise TeacherError(f"teacher {kind!r} runs frozen outside torch and cannot be fine-tuned")
        self.kind = kind
        if isinstance(backbone, nn.Module):
            self.backbone = backbone
        else:
            self.runtime = backbone  # not a module: it has no torch parameters
        self.labels = list(labels)
        self.train_encoder = train_encoder
        if not train_encoder and isinstance(backbone, nn.Module):
            backbone.requires_grad_(False)
        self.head = nn.Linear(self.width, num_classes)

    @property
    def encoder(self) -> Any:
        return self.backbone if "backbone" in self._modules else self.runtime

    @property
    def width(self) -> int:
        if self.kind == "speech_embedding":
            return int(self.runtime.width)
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """Transformer layers; `hidden_states` has num_layers + 1 entries (0 = before layer 1).
        speech_embedding exposes one: its embedding (num_layers 0)."""
        if self.kind == "speech_embedding":
            return 0
        return int(self.backbone.config.num_hidden_layers)

    def train(self, mode: bool = True) -> Teacher:
        super().train(mode)
        if not self.train_encoder and "backbone" in self._modules:
            self.backbone.eval()  # a frozen encoder never runs dropout
        return self

    def resolve_layers(self, layers: Sequence[int]) -> tuple[int, ...]:
        return resolve_layers(self.kind, layers, self.num_layers)

    def encode(self, waveform: torch.Tensor,
               layers: Sequence[int] = ()) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """waveform [B, S] -> (last layer [B, frames, width], the hidden states at resolved `layers`)."""
        idx = tuple(layers)
        if self.kind == "speech_embedding":
            emb = torch.from_numpy(self.runtime(waveform.detach().cpu().numpy()))
            return emb, tuple(emb for _ in idx)
        if self.kind == "whisper":
            cfg = self.backbone.config
            inputs = whisper_log_mel(waveform, cfg.num_mel_bins, cfg.max_source_positions)
        else:
            inputs = normalize_waveform(waveform)
        device = next(self.backbone.parameters()).device
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_encoder):
            out = self.backbone(inputs.to(device), output_hidden_states=bool(idx))
        hidden = tuple(out.hidden_states[i] for i in idx) if idx else ()
        return out.last_hidden_state, hidden

    def forward(self, waveform: torch.Tensor, layers: Sequence[int] = ()) -> TeacherOutput:
        """waveform [B, S] (int16 range or float) -> logits and the hidden states at `layers`."""
        last, hidden = self.encode(waveform, self.resolve_layers(layers))
        return TeacherOutput(self.head(last.mean(dim=1).to(self.head.weight.device)), hidden)

    def identity(self) -> str:
        """A digest of kind, architecture and every weight: the teacher's part of the cache key."""
        h = hashlib.sha256()
        h.update(self.kind.encode())
        if self.kind == "speech_embedding":
            h.update(self.runtime.digest().encode())
        else:
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
        if not -n <= i < n and num_layers == 0:
            raise TeacherError(
                f"distill.teacher_alignment_layers: layer {i} is out of range for teacher {teacher!r}, "
                f"which exposes one layer (its embedding): valid indices are 0 or -1")
        if not -n <= i < n:
            raise TeacherError(
                f"distill.teacher_alignment_layers: layer {i} is out of range for teacher {teacher!r}, "
                f"which has {num_layers} transformer layers: valid indices are 0..{n - 1} "
                f"(0 = before the first layer) or -{n}..-1"
            )
        out.append(i % n)
    return tuple(out)


def build_teacher(kind: str, size: str, num_classes: int, labels: Sequence[str] = (), *,
                  pretrained_dir: str | Path | None = None, seed: int = 0, clip_samples: int = 16000,
                  train_encoder: bool | None = None) -> Teacher:
    """A teacher from a size preset (random init) or from a local folder.

    `train_encoder` None: fine-tune an encoder built from random weights, freeze a pretrained one.
    """
    if kind == "speech_embedding" and pretrained_dir is None:
        raise TeacherError(_SPEECH_EMBEDDING_NEEDS_FOLDER)
    if kind != "speech_embedding":
        _hf_classes(kind)  # an unknown kind fails before the seed is touched
    torch.manual_seed(seed)
    if pretrained_dir is not None:
        backbone = load_backbone(kind, pretrained_dir, clip_samples=clip_samples)
    else:
        _, model_cls = _hf_classes(kind)
        backbone = model_cls(backbone_config(kind, size))
        if kind == "whisper":
            from tinyconv.trainer.teacher_import import short_whisper_encoder

            backbone = short_whisper_encoder(backbone, whisper_positions(clip_samples))
    if train_encoder is None:
        train_encoder = pretrained_dir is None and kind not in FROZEN_TEACHER_KINDS
    return Teacher(kind, backbone, num_classes, labels, train_encoder=train_encoder)


def load_backbone(kind: str, local_dir: str | Path, *, clip_samples: int = 16000) -> Any:
    """`from_pretrained` on a local folder only (never the hub), with a clear error when absent.

    whisper: a folder from `tinyconv teacher import --whisper` (a WhisperModel: its encoder is
    taken) or a saved teacher (a WhisperEncoder), cut to `clip_samples`' frames.
    speech_embedding: the model files `tinyconv teacher import --speech-embedding` wrote.
    """
    path = Path(local_dir)
    if kind == "speech_embedding":
        if not path.is_dir():
            raise TeacherError(f"teacher 'speech_embedding': {path} is not a folder; "
                               f"import it with `tinyconv teacher import --speech-embedding --out DIR`")
        return SpeechEmbedding(path)
    _, model_cls = _hf_classes(kind)
    if not (path / "config.json").is_file():
        how = ("; import one with `tinyconv teacher import --whisper tiny.en --out DIR`" if kind == "whisper" else "")
        raise TeacherError(f"teacher {kind!r}: {path} is not a local transformers model folder "
                           f"(no config.json); downloads are disabled, so point to a folder saved with "
                           f"save_pretrained{how}")
    try:
        if kind != "whisper":
            return model_cls.from_pretrained(str(path), local_files_only=True)
        from transformers import WhisperModel

        from tinyconv.trainer.teacher_import import short_whisper_encoder

        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        if "WhisperEncoder" in architectures:
            encoder = model_cls.from_pretrained(str(path), local_files_only=True)
        else:
            encoder = WhisperModel.from_pretrained(str(path), local_files_only=True).encoder
        return short_whisper_encoder(encoder, whisper_positions(clip_samples))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise TeacherError(f"teacher {kind!r}: cannot load {path}: {exc}") from exc


def save_teacher(teacher: Teacher, out_dir: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Backbone via save_pretrained, head and metadata beside it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if teacher.kind == "speech_embedding":
        for name in [p.name for p in teacher.runtime.paths.values()] + ["LICENSE", SPEECH_EMBEDDING_KIND_FILE]:
            src = teacher.runtime.folder / name
            if src.is_file() and src.resolve() != (out / name).resolve():
                shutil.copy(src, out / name)
    else:
        teacher.backbone.save_pretrained(str(out))
    atomic_save(teacher.head.state_dict(), out / TEACHER_HEAD)
    meta = {"kind": teacher.kind, "labels": teacher.labels, "num_classes": teacher.head.out_features,
            "train_encoder": teacher.train_encoder, "metrics": metrics or {}}
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
    clip_samples = 16000
    if meta["kind"] == "whisper" and (path / "config.json").is_file():
        # Saved already cut to the clip's frames: keep exactly those.
        positions = int(json.loads((path / "config.json").read_text())["max_source_positions"])
        clip_samples = positions * 2 * WHISPER_HOP_SAMPLES
    backbone = load_backbone(meta["kind"], path, clip_samples=clip_samples)
    teacher = Teacher(meta["kind"], backbone, meta["num_classes"], meta["labels"],
                      train_encoder=meta.get("train_encoder", meta["kind"] not in FROZEN_TEACHER_KINDS))
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

    A frozen encoder (`teacher.train_encoder` False) runs once per clip: its mean-pooled last
    layer is computed up front and only the head trains on it (no time shifts then).
    Returns (best validation accuracy, history); the teacher ends with its best weights.
    """
    from tinyconv.trainer.loop import class_weights

    if not teacher.train_encoder:
        return _train_head(teacher, train, val, epochs=epochs, learning_rate=learning_rate,
                           batch_size=batch_size, seed=seed, log=log)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    weights = class_weights(train.y, len(train.labels))
    opt = torch.optim.AdamW(teacher.parameters(), lr=learning_rate, weight_decay=1e-2)
    steps = max(1, math.ceil(len(train) / batch_size)) * epochs
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
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


def pooled_features(teacher: Teacher, waves: np.ndarray, batch_size: int = 32) -> torch.Tensor:
    """The mean-pooled last layer [N, width] the head reads, computed in eval mode."""
    was_training = teacher.training
    teacher.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(waves), batch_size):
            last, _ = teacher.encode(torch.from_numpy(waves[i : i + batch_size]))
            out.append(last.mean(dim=1).float().cpu())
    teacher.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, teacher.width)


def _train_head(teacher: Teacher, train: WaveSet, val: WaveSet, *, epochs: int, learning_rate: float,
                batch_size: int, seed: int = 0,
                log: Callable[[str], None] | None = None) -> tuple[float, list[dict[str, float]]]:
    """The head alone on a frozen encoder's pooled features (same optimiser and schedule)."""
    from tinyconv.trainer.loop import class_weights

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    f_train, f_val = pooled_features(teacher, train.x, batch_size), pooled_features(teacher, val.x, batch_size)
    if log:
        log(f"{teacher.kind}: frozen encoder ran once on {len(train) + len(val)} clips "
            f"({time.perf_counter() - t0:.1f} s); training the head only")
    head = teacher.head.cpu()
    weights = class_weights(train.y, len(train.labels))
    opt = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=1e-2)
    steps = max(1, math.ceil(len(train) / batch_size)) * epochs
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    y_all = torch.from_numpy(train.y)
    best, best_state, history = -1.0, None, []
    for epoch in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(head(f_train[idx]), y_all[idx], weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            acc = float((head(f_val).argmax(1).numpy() == val.y).mean()) if len(val) else 0.0
        history.append({"epoch": epoch, "train_loss": total / max(1, len(train)), "val_accuracy": acc})
        if log:
            log(f"{teacher.kind} head epoch {epoch + 1}/{epochs}: train loss {total / max(1, len(train)):.4f}, "
                f"val acc {acc:.4f}")
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in head.state_dict().items()}
    if best_state is not None:
        head.load_state_dict(best_state)
    return best, history


# `teacher_size` -> the window TinyConv a "tinyconv" teacher is, when no trained checkpoint is
# named: V2 (depthwise-separable) over whole 1 s windows, 0.2-7 M MACs, affordable on a CPU. It
# helps only when it beats the student on streams (docs/EXPERT_DISTILLATION_GUIDE.md s5.2: the
# e2e window V2 did; a 12-epoch "small" one in the quickstart did not).
WINDOW_TEACHER_MODELS: dict[str, dict[str, Any]] = {
    "tiny": {"name": "tinyconv", "tiny_conv_use_depthwise": True, "width_multiplier": 0.5},
    "small": {"name": "tinyconv", "tiny_conv_use_depthwise": True, "width_multiplier": 1.0},
    "base": {"name": "tinyconv", "tiny_conv_use_depthwise": True, "width_multiplier": 1.0,
             "time_dilations": [1, 2, 4, 4]},
}


def train_window_teacher(config: Config, out_dir: Path, *, features: dict[str, Any] | None = None,
                         log: Callable[[str], None] | None = None) -> TeacherResult:
    """Train the "tinyconv" teacher: a window TinyConv (WINDOW_TEACHER_MODELS[distill.teacher_size])
    on the dataset's features with the student's training settings, for distill.teacher_epochs,
    into `out_dir` (a run folder; distillation reads its checkpoint.pt)."""
    from tinyconv.checkpoint import load_checkpoint, model_from_checkpoint
    from tinyconv.config import config_to_dict, replace
    from tinyconv.trainer.run import train

    dc = config.distill
    # Every model field at its default but the teacher's: nothing of the student's model carries over.
    model = {**config_to_dict(Config())["model"], **WINDOW_TEACHER_MODELS[dc.teacher_size]}
    tcfg = replace(config, model=model,
                   train={"out_dir": str(out_dir), "epochs": dc.teacher_epochs,
                          "early_stopping_patience": dc.teacher_epochs, "selection_metric": "wake_recall_at_far",
                          # A window model: none of the streaming student's window making.
                          "stream_positive_delay_ms": 0, "stream_negative_fraction": 0.0,
                          "hard_negative_fraction": 0.0, "context_positive_fraction": 0.0},
                   distill={"enabled": False}, qat={"enabled": False})
    if log is not None:
        log(f"tinyconv: training the window teacher ({dc.teacher_size}: {WINDOW_TEACHER_MODELS[dc.teacher_size]}) "
            f"for {dc.teacher_epochs} epochs into {out_dir}")
    t0 = time.perf_counter()
    result = train(tcfg, data=features, overwrite=True)
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model_from_checkpoint(load_checkpoint(result.checkpoint_path)).parameters())
    # Validation accuracy of the kept epoch, as the speech teachers report (the selection metric differs).
    acc = next((float(r["val_accuracy"]) for r in result.history if r["epoch"] == result.best_epoch),
               float(result.best_metric))
    return TeacherResult("tinyconv", Path(out_dir), acc, seconds, params, result.history)


def train_teachers(config: Config, *, out_dir: str | Path | None = None,
                   data: dict[str, WaveSet] | None = None, features: dict[str, Any] | None = None,
                   log: Callable[[str], None] | None = None) -> list[TeacherResult]:
    """Fine-tune every configured teacher and save it under `out_dir` (default
    `teacher_dir(config)`)/<kind>: speech teachers on the dataset's raw waveforms (`data`: WaveSets),
    a "tinyconv" teacher on its features (`features`: FeatureSets; skipped when
    distill.teacher_pretrained_dirs names a trained one). Returns each teacher's validation score."""
    dc = config.distill
    root = Path(out_dir) if out_dir is not None else teacher_dir(config)
    results = []
    for i, kind in enumerate(dc.teachers):
        if kind in FEATURE_TEACHER_KINDS:
            if dc.teacher_pretrained_dirs.get(kind):
                if log is not None:
                    log(f"{kind}: the trained checkpoint {dc.teacher_pretrained_dirs[kind]}, used as it is")
            else:
                results.append(train_window_teacher(config, root / kind, features=features, log=log))
            continue
        if data is None:
            data = {s: load_wave_split(config, s) for s in ("train", "val")}
        train, val = data["train"], data["val"]
        pretrained = dc.teacher_pretrained_dirs.get(kind)
        teacher = build_teacher(kind, dc.teacher_size, len(train.labels), train.labels,
                                pretrained_dir=pretrained, seed=config.train.seed + i,
                                clip_samples=config.frontend.clip_samples,
                                train_encoder=dc.teacher_train_encoder.get(kind))
        t0 = time.perf_counter()
        acc, history = fine_tune_teacher(teacher, train, val, epochs=dc.teacher_epochs,
                                         learning_rate=dc.teacher_learning_rate,
                                         batch_size=dc.teacher_batch_size, seed=config.train.seed + i, log=log)
        seconds = time.perf_counter() - t0
        path = save_teacher(teacher.eval(), root / kind, {"val_accuracy": acc, "train_seconds": seconds,
                                                          "size": dc.teacher_size, "pretrained_dir": pretrained,
                                                          "train_encoder": teacher.train_encoder})
        results.append(TeacherResult(kind, path, acc, seconds, sum(p.numel() for p in teacher.parameters()), history))
    return results
