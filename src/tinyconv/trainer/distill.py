"""Dual-teacher distillation: cached teacher outputs, learnable projectors, soft-confidence weighting.

Objective per batch (weights from `DistillationConfig`):

    alpha_ce * CE(student, labels)
  + alpha_kd * mean_b sum_k w[b, k] * T^2 * KL(softmax(teacher_k / T) || softmax(student / T))
  + alpha_feature * mean_b sum_k w[b, k] * mean_{pairs of k} ||LN(student map) - LN(P(teacher layer))||^2

`w[b, k]` (soft-confidence weighting) is a softmax over teachers of minus each teacher's
normalised predictive entropy divided by `weighting_temperature`: the more confident teacher on
a clip gets the larger weight. Weights are computed from detached teacher logits, so no gradient
flows through them; gradients reach the student and the projectors only; teachers are frozen
(in fact they are not even run during student training: their outputs come from the cache).

Student feature maps are captured with forward hooks on the student's stem and blocks, so the
student is still called once as `model(x)` (this also works under DistributedDataParallel).
A QAT-prepared student is an exported graph without those modules: distillation then falls back
to logit-only (CE + KD) with a warning.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyconv.checkpoint import CheckpointError, atomic_save, load_checkpoint, model_from_checkpoint
from tinyconv.config import FEATURE_TEACHER_KINDS, Config
from tinyconv.data.dataset import FeatureSet
from tinyconv.errors import TinyconvError
from tinyconv.hashing import file_sha256
from tinyconv.trainer.loop import LAST, Trainer, TrainResult, load_training_state
from tinyconv.trainer.teachers import (
    Teacher,
    TeacherError,
    WaveSet,
    load_teacher,
    load_waveforms,
    resolve_layers,
    teacher_dir,
)

CACHE_FORMAT = 1


class DistillationError(TinyconvError, ValueError):
    """Distillation is configured in a way that cannot run."""


# --- building blocks ---------------------------------------------------------------------------

class Projector(nn.Module):
    """Maps a teacher layer [B, T_teacher, D_teacher] to the student's [B, T_student, D_student].

    Width: a linear map (or a two-layer MLP when `hidden_dim > 0`) applied per frame.
    Time: adaptive average pooling to the student's frame count (every teacher kind emits frames
    20 ms apart: 49 for 1 s from wav2vec2 / conformer / speech_embedding, 50 from whisper; the
    student's stem output is 20 ms apart too, block 1 onwards 40 ms: 49 -> 25 frames).
    """

    def __init__(self, teacher_dim: int, student_dim: int, hidden_dim: int = 0) -> None:
        super().__init__()
        self.teacher_dim, self.student_dim = teacher_dim, student_dim
        if hidden_dim > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(teacher_dim, hidden_dim), nn.GELU(),
                                                nn.Linear(hidden_dim, student_dim))
        else:
            self.net = nn.Linear(teacher_dim, student_dim)

    def forward(self, teacher_hidden: torch.Tensor, frames: int) -> torch.Tensor:
        if teacher_hidden.shape[-1] != self.teacher_dim:
            raise DistillationError(f"projector expects teacher width {self.teacher_dim}, "
                                    f"got {teacher_hidden.shape[-1]}")
        z = self.net(teacher_hidden)  # [B, T_t, D_s]
        return F.adaptive_avg_pool1d(z.transpose(1, 2), frames).transpose(1, 2)


def student_sequence(feature_map: torch.Tensor) -> torch.Tensor:
    """A student map [B, C, T', F'] -> a frame sequence [B, T', C] (mean over frequency)."""
    return feature_map.mean(dim=3).transpose(1, 2)


def feature_distance(student: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE between layer-normalised frame vectors, [B].

    Normalising both sides makes the loss scale-free (teacher activations can be 100x the
    student's) and stops the trivial solution where projector and student both shrink to zero.
    """
    c = student.shape[-1]
    return (F.layer_norm(student, (c,)) - F.layer_norm(projected, (c,))).pow(2).mean(dim=(1, 2))


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis divided by log(num_classes): in [0, 1]."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1) / math.log(logits.shape[-1])


def confidence_weights(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft-confidence weights [B, K] from teacher logits [K, B, C]; each row sums to one.

    w[b, k] = softmax_k(-H_k(b) / temperature) with H the normalised entropy. Detached: the
    weights steer the loss but are never trained (they would otherwise learn to pick whichever
    teacher is easier to imitate, not the more reliable one).
    """
    h = predictive_entropy(teacher_logits.detach())  # [K, B]
    return torch.softmax(-h / temperature, dim=0).transpose(0, 1)


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T) per sample, [B] (Hinton et al.; T^2 keeps the gradient scale)."""
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=-1) * temperature**2


def student_feature_modules(model: nn.Module) -> list[nn.Module] | None:
    """The modules whose outputs are `forward_features`' maps ([stem, block1, ...]), or None
    when the model has no such structure (a QAT-exported graph)."""
    stem, blocks = getattr(model, "stem", None), getattr(model, "blocks", None)
    if not hasattr(model, "forward_features") or not isinstance(stem, nn.Module) or blocks is None:
        return None
    return [stem, *blocks]


def resolve_student_layers(layers: Sequence[int], num_maps: int) -> tuple[int, ...]:
    out = []
    for i in layers:
        if not -num_maps <= i < num_maps:
            raise DistillationError(
                f"distill.student_alignment_layers: layer {i} is out of range for the student, which has "
                f"{num_maps} feature maps (0 = stem, 1.. = blocks): valid indices are 0..{num_maps - 1} "
                f"or -{num_maps}..-1"
            )
        out.append(i % num_maps)
    return tuple(out)


def pair_layers(teacher: str, teacher_layers: Sequence[int], student_layers: Sequence[int]) -> list[tuple[int, int]]:
    """(teacher layer, student layer) pairs: position by position, or one student layer for all."""
    if not teacher_layers:
        return []
    if len(student_layers) == 1:
        return [(t, student_layers[0]) for t in teacher_layers]
    if len(student_layers) != len(teacher_layers):
        raise DistillationError(
            f"distill.student_alignment_layers has {len(student_layers)} entries but teacher {teacher!r} "
            f"has {len(teacher_layers)} alignment layers; give one student layer, or one per teacher layer"
        )
    return list(zip(teacher_layers, student_layers, strict=True))


# --- teacher cache -----------------------------------------------------------------------------

@dataclass
class CachedOutputs:
    logits: torch.Tensor  # float32 [N, C]
    hidden: list[torch.Tensor]  # per selected layer, float16 [N, frames, width]
    computed: int  # clips the teacher had to run on (the rest were read from disk)


class TeacherCache:
    """Teacher logits and selected hidden states, one file per clip, written atomically.

    Folder: <root>/<kind>-<teacher digest>-L<layers>/<key[:2]>/<key>.pt, where the key is the
    sha256 of the clip's int16 samples. A retrained teacher (new weights), other layers, or an
    edited clip therefore never read stale entries; every augmentation copy is its own clip.
    Hidden states are stored as float16 to halve the disk and memory cost.
    """

    def __init__(self, root: str | Path, teacher: Teacher, layers: Sequence[int]) -> None:
        self.teacher = teacher
        self.layers = teacher.resolve_layers(layers)
        tag = "_".join(str(i) for i in self.layers) or "none"
        self.dir = Path(root) / f"{teacher.kind}-{teacher.identity()}-L{tag}"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    def outputs(self, waves: WaveSet, batch_size: int = 32) -> CachedOutputs:
        entries: dict[int, dict[str, torch.Tensor]] = {}
        missing: list[int] = []
        for i, key in enumerate(waves.keys):
            p = self.path(key)
            if p.is_file():
                try:
                    entry = torch.load(p, map_location="cpu", weights_only=True)
                    if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT:
                        entries[i] = entry
                        continue
                # A corrupt file, or one holding more than plain data (the weights-only unpickler
                # refuses it with UnpicklingError and runs nothing), is recomputed, not fatal.
                except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
                    pass
            missing.append(i)
        self.teacher.eval()
        with torch.no_grad():
            for s in range(0, len(missing), batch_size):
                chunk = missing[s : s + batch_size]
                out = self.teacher(torch.from_numpy(waves.x[chunk]), self.layers)
                for j, i in enumerate(chunk):
                    entry = {"format": torch.tensor(CACHE_FORMAT), "logits": out.logits[j].float().clone(),
                             "hidden": torch.stack([h[j] for h in out.hidden_states]).half().clone()
                             if out.hidden_states else torch.zeros(0)}
                    atomic_save(entry, self.path(waves.keys[i]))
                    entries[i] = entry
        n = len(waves)
        logits = torch.stack([entries[i]["logits"] for i in range(n)])
        hidden = []
        if self.layers:
            stacked = torch.stack([entries[i]["hidden"] for i in range(n)])  # [N, L, T, H]
            hidden = [stacked[:, j].contiguous() for j in range(len(self.layers))]
        return CachedOutputs(logits, hidden, len(missing))


def teacher_cache_root(config: Config) -> Path:
    dc = config.distill
    return Path(dc.teacher_cache_dir) if dc.teacher_cache_dir else Path(config.data.dataset_dir) / ".teacher_cache"


def load_configured_teachers(config: Config, labels: Sequence[str]) -> dict[str, Teacher]:
    """The fine-tuned speech teachers `tinyconv teacher train` saved, frozen (feature teachers:
    `load_feature_teachers`)."""
    root = teacher_dir(config)
    teachers = {}
    for kind in config.distill.teachers:
        if kind in FEATURE_TEACHER_KINDS:
            continue
        path = root / kind
        if not path.is_dir():
            raise DistillationError(f"teacher {kind!r} not found at {path}; fine-tune it first with "
                                    f"`tinyconv teacher train --config ...` (or set distill.teacher_dir)")
        teacher = load_teacher(path, kind=kind, labels=labels)
        for p in teacher.parameters():
            p.requires_grad_(False)
        teachers[kind] = teacher
    return teachers


def feature_teacher_path(config: Config, kind: str) -> Path:
    """The checkpoint of a feature teacher: distill.teacher_pretrained_dirs[kind] (a run folder or
    its checkpoint.pt), else the one `tinyconv teacher train` wrote under teacher_dir(config)."""
    named = config.distill.teacher_pretrained_dirs.get(kind, "")
    path = Path(named) if named else teacher_dir(config) / kind
    return path / "checkpoint.pt" if path.is_dir() or not named else path


def load_feature_teachers(config: Config, labels: Sequence[str]) -> dict[str, nn.Module]:
    """The trained tinyconv checkpoints configured as teachers, frozen, in eval mode.

    DistillationError when one is missing or was trained for other labels or other features."""
    teachers: dict[str, nn.Module] = {}
    for kind in config.distill.teachers:
        if kind not in FEATURE_TEACHER_KINDS:
            continue
        path = feature_teacher_path(config, kind)
        named = bool(config.distill.teacher_pretrained_dirs.get(kind))
        where = f"distill.teacher_pretrained_dirs.{kind} ({path})" if named else f"teacher {kind!r} ({path})"
        if not named and not path.is_file():
            raise DistillationError(f"{where} not found: train it first with `tinyconv teacher train --config ...`, "
                                    f"or name a trained run folder in distill.teacher_pretrained_dirs.{kind}")
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            raise DistillationError(f"{where}: {exc}") from None
        if list(ckpt.labels) != list(labels):
            raise DistillationError(f"{where} was trained for labels {ckpt.labels}, this dataset has {list(labels)}: "
                                    f"train the teacher on the same dataset")
        if ckpt.config.frontend != config.frontend:
            raise DistillationError(f"{where} was trained on other features (frontend settings differ): "
                                    f"train the teacher with this config's frontend")
        model = model_from_checkpoint(ckpt, form="float")
        for p in model.parameters():
            p.requires_grad_(False)
        teachers[kind] = model
    return teachers


# --- trainer -----------------------------------------------------------------------------------

class DistillationTrainer(Trainer):
    """`Trainer` whose objective is CE + KD + feature alignment against cached teacher outputs.

    Speech teachers (cached outputs per clip) and feature teachers (FEATURE_TEACHER_KINDS: a
    trained tinyconv checkpoint, run on every training window as the student sees it) mix freely.
    Pass `teachers` / `feature_teachers` to use in-memory teachers instead of those the config
    names (tests and benchmarks do). `waves` (aligned with `train`) skips re-reading the WAV files.
    """

    def __init__(self, config: Config, train: FeatureSet, val: FeatureSet, out_dir: str | Path, *,
                 teachers: dict[str, Teacher] | None = None, waves: WaveSet | None = None,
                 feature_teachers: dict[str, nn.Module] | None = None, **kwargs: Any) -> None:
        super().__init__(config, train, val, out_dir, **kwargs)
        dc = config.distill
        self.teacher_kinds = list(dc.teachers)
        self.speech_kinds = [k for k in self.teacher_kinds if k not in FEATURE_TEACHER_KINDS]
        feature_teachers = (feature_teachers if feature_teachers is not None
                            else load_feature_teachers(config, train.labels))
        self.feature_teachers = {k: m.to(self.device).eval() for k, m in feature_teachers.items()}
        teachers = (teachers if teachers is not None
                    else load_configured_teachers(config, train.labels) if self.speech_kinds else {})
        missing = [k for k in dc.teachers if k not in teachers and k not in self.feature_teachers]
        if missing:
            raise DistillationError(f"distill.teachers names {missing} but no such teacher was given")
        if self.speech_kinds and waves is None:
            if len(train.rows) != len(train):
                raise DistillationError("distillation needs the training FeatureSet's rows to find each clip's "
                                        "WAV (load it with tinyconv.data.dataset.load_features)")
            waves = load_waveforms(config.data.dataset_dir, train.rows, train.labels, train.positive_label,
                                   config.frontend.clip_samples, config.frontend.sample_rate_hz)
        if waves is not None and len(waves) != len(train):
            raise DistillationError(f"waves has {len(waves)} clips but the training set has {len(train)}")

        # Student side: which maps exist, and their widths (probed once in eval mode so that BN
        # running statistics are not touched).
        self._maps = student_feature_modules(self.module)
        self._captured: dict[int, torch.Tensor] = {}
        self._capture = False
        self.pairs: dict[str, list[tuple[int, int]]] = {}
        teacher_layers = {k: resolve_layers(k, dc.teacher_alignment_layers.get(k, ()), teachers[k].num_layers)
                          if k in teachers else () for k in self.teacher_kinds}
        wants_features = dc.alpha_feature > 0 and any(teacher_layers.values())
        self.features_enabled = wants_features and self._maps is not None
        if wants_features and self._maps is None:
            warnings.warn(f"{type(self.module).__name__} exposes no stem/blocks feature maps (e.g. a QAT-prepared "
                          f"student): distilling logits only (CE + KD), feature alignment is off", stacklevel=2)
        self.projectors = nn.ModuleDict()
        if self.features_enabled:
            assert self._maps is not None
            student_layers = resolve_student_layers(dc.student_alignment_layers, len(self._maps))
            for i, m in enumerate(self._maps):
                m.register_forward_hook(self._hook(i))
            widths = self._probe_widths()
            for k in self.speech_kinds:
                self.pairs[k] = pair_layers(k, teacher_layers[k], student_layers)
                for tl, sl in self.pairs[k]:
                    self.projectors[self._pkey(k, tl, sl)] = Projector(teachers[k].width, widths[sl],
                                                                      dc.projector_hidden_dim)
        else:
            teacher_layers = {k: () for k in self.teacher_kinds}
        self.projectors.to(self.device)
        if len(self.projectors):
            # Projectors train with the student: a second param group, then the schedule rebuilt
            # over both groups (LambdaLR keeps one lambda per group, fixed at construction).
            self.optimizer.add_param_group({"params": list(self.projectors.parameters()),
                                            "lr": self.learning_rate, "weight_decay": config.train.weight_decay})
            schedule = self.scheduler.lr_lambdas[0]
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, [schedule] * len(self.optimizer.param_groups))

        # Teacher side: outputs for every training clip, from the disk cache (computed once).
        root = teacher_cache_root(config)
        self.teacher_logits: dict[str, torch.Tensor] = {}  # kind -> [N, C], on CPU like the features
        self.hidden: dict[str, dict[int, torch.Tensor]] = {}
        self.cache_computed: dict[str, int] = {}
        for k in self.speech_kinds:
            assert waves is not None
            out = TeacherCache(root, teachers[k], teacher_layers[k]).outputs(waves)
            self.teacher_logits[k] = out.logits
            self.hidden[k] = dict(zip(teacher_layers[k], out.hidden, strict=True))
            self.cache_computed[k] = out.computed
        self.teacher_ids = {k: teachers[k].identity() for k in self.speech_kinds}
        for k in self.feature_teachers:  # the checkpoint file's digest identifies a feature teacher
            path = feature_teacher_path(config, k)
            self.teacher_ids[k] = file_sha256(path)[:16] if path.is_file() else "in-memory"
        self.extra = {**self.extra, "distill": {"teachers": self.teacher_ids, "pairs": self.pairs}}
        self.last_losses: dict[str, float] = {}

    @staticmethod
    def _pkey(kind: str, teacher_layer: int, student_layer: int) -> str:
        return f"{kind}_t{teacher_layer}_s{student_layer}"

    def _hook(self, index: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            if self._capture:
                self._captured[index] = output
        return hook

    def _probe_widths(self) -> list[int]:
        was_training = self.module.training
        self.module.eval()
        self._capture = True
        try:
            with torch.no_grad():
                fe = self.config.frontend
                self.module(torch.zeros(1, fe.num_frames, fe.num_channels, device=self.device))
            return [int(self._captured[i].shape[1]) for i in range(len(self._maps or []))]
        finally:
            self._capture = False
            self._captured.clear()
            self.module.train(was_training)

    def compute_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        dc = self.config.distill
        self._capture = self.features_enabled
        try:
            logits = model(x)
        finally:
            self._capture = False
        ce = F.cross_entropy(logits, y, weight=self.weights, label_smoothing=self.config.train.label_smoothing)
        t_logits = self._teacher_logits(x, idx)  # [K, B, C]
        w = confidence_weights(t_logits, dc.weighting_temperature)  # [B, K]
        kd = torch.stack([kd_per_sample(logits, t_logits[k], dc.temperature)
                          for k in range(len(self.teacher_kinds))], dim=1)
        kd = (w * kd).sum(dim=1).mean()
        feat = logits.new_zeros(())
        if self.features_enabled:
            per_teacher = []
            for kind in self.teacher_kinds:
                terms = []
                for tl, sl in self.pairs.get(kind, []):
                    s = student_sequence(self._captured[sl])
                    h = self.hidden[kind][tl][idx].to(self.device, torch.float32)
                    terms.append(feature_distance(s, self.projectors[self._pkey(kind, tl, sl)](h, s.shape[1])))
                per_teacher.append(torch.stack(terms).mean(0) if terms else logits.new_zeros(len(y)))
            feat = (w * torch.stack(per_teacher, dim=1)).sum(dim=1).mean()
        self._captured.clear()
        self.last_losses = {"ce": ce.item(), "kd": kd.item(), "feature": feat.item(),
                            "teacher_weights": w.mean(0).tolist()}
        return dc.alpha_ce * ce + dc.alpha_kd * kd + dc.alpha_feature * feat

    def _teacher_logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """[K, B, C] in distill.teachers order: cached logits of the batch's clips, or a feature
        teacher's logits on the very windows the student sees."""
        out = []
        for k in self.teacher_kinds:
            if k in self.feature_teachers:
                with torch.no_grad():
                    out.append(self.feature_teachers[k](x).float())
            else:
                out.append(self.teacher_logits[k][idx].to(self.device))
        return torch.stack(out)

    # Projectors are part of the training state: saved in last.pt so a resumed run is exact.
    def _state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super()._state(*args, **kwargs)
        state["projectors"] = self.projectors.state_dict()
        return state

    def fit(self, resume: bool = False) -> TrainResult:
        last = self.out_dir / LAST
        if resume and last.is_file():
            state = load_training_state(last, self.device)
            if "projectors" in state:
                self.projectors.load_state_dict(state["projectors"])
        return super().fit(resume=resume)


__all__ = [
    "CachedOutputs",
    "DistillationError",
    "DistillationTrainer",
    "Projector",
    "TeacherCache",
    "TeacherError",
    "confidence_weights",
    "feature_distance",
    "feature_teacher_path",
    "kd_per_sample",
    "load_configured_teachers",
    "load_feature_teachers",
    "pair_layers",
    "predictive_entropy",
    "resolve_student_layers",
    "student_sequence",
    "student_feature_modules",
    "teacher_cache_root",
]
