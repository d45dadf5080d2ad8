"""The training loop: AdamW + warmup/cosine, class weights, SpecAugment, best-by-validation,
early stopping, atomic checkpoints with exact resume, and DistributedDataParallel via torchrun.

Exact resume: every random draw of an epoch (shuffle, masks, dropout) comes from a seed derived
from (seed, epoch), so a run resumed after a kill ends with the same weights as one that was not.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from tinyconv.checkpoint import Checkpoint, CheckpointError, atomic_save, load_torch_file, save_checkpoint
from tinyconv.config import Config, ModelConfig, config_to_dict, save_config
from tinyconv.data.dataset import FeatureSet
from tinyconv.errors import TinyconvError
from tinyconv.metrics import classification_report
from tinyconv.models import build_model
from tinyconv.models.registry import resolved_model_config

BEST = "checkpoint.pt"
LAST = "last.pt"
CONFIG = "config.yaml"
# A folder holding any of these holds a training run: `train` refuses it without --resume/--overwrite.
RUN_FILES = (BEST, LAST, CONFIG)
# Held (flock) by the training process for the whole run; a second `train` into the folder fails.
LOCK = ".train.lock"
# train.hard_negative_fraction: the share of the training stream's steps, highest-scoring first,
# that hard long-negative windows end at. 1 % of 3 h is 3,600 steps: a few hundred places where
# the model fires or nearly does (a trigger spans several steps), not one region repeated.
HARD_NEGATIVE_POOL = 0.01

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunFolderError(TinyconvError):
    """The run folder is taken: an earlier run, a run in progress, or a run of another model."""


class TrainingDivergedError(TinyconvError):
    """The training or validation loss became NaN or infinite."""


@contextlib.contextmanager
def run_folder(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Claim `out_dir` for one training run, for the duration of the `with` block.

    Locks `out_dir/.train.lock` (another process training into the folder makes this raise), then
    refuses a folder that already holds a run (checkpoint.pt, last.pt or config.yaml) unless
    `resume` (continue it from last.pt) or `overwrite` (its run files are deleted now). Only rank 0
    of a distributed run claims the folder (it is the one that writes there).
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: choose one")
    if int(os.environ.get("RANK", "0")) != 0:
        yield out
        return
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"run folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+", encoding="utf-8") as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                pid = lock.read().strip()[:20]
                raise RunFolderError(f"another tinyconv process{f' (pid {pid})' if pid else ''} is training into "
                                     f"{out} (it holds {out / LOCK}); wait for it or choose another --out") from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found and not resume:
            if not overwrite:
                raise RunFolderError(f"{out} already holds a training run ({', '.join(found)}): pass --resume to "
                                     f"continue it, --overwrite to replace it, or choose another --out")
            for name in (*RUN_FILES, "history.json"):
                (out / name).unlink(missing_ok=True)
        yield out  # the lock is released when the file closes


def describe_model_difference(saved: Any, current: ModelConfig) -> str:
    """'model X (width_multiplier 1.0, ...)' for a saved `model` config section (plain dict), naming
    the values that differ from `current`; '' when the saved section is unknown."""
    if not isinstance(saved, dict):
        return ""
    now = config_to_dict(Config(model=current))["model"]
    diffs = [f"{k} {saved[k]!r} (this run: {now[k]!r})" for k in now if k in saved and saved[k] != now[k]
             and k != "name"]
    name = saved.get("name", "?")
    return f"model {name!r}" + (f" with {', '.join(diffs)}" if diffs else "")


@dataclass
class TrainResult:
    checkpoint_path: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)
    clips_per_second: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def spec_augment(x: torch.Tensor, g: torch.Generator, time_mask: int, freq_mask: int) -> torch.Tensor:
    """One time mask and one frequency mask per clip (SpecAugment), set to the clip's mean."""
    b, t, f = x.shape
    out = x.clone()
    tw = torch.randint(0, time_mask + 1, (b,), generator=g)
    t0 = (torch.rand(b, generator=g) * (t - tw).clamp(min=1)).long()
    fw = torch.randint(0, freq_mask + 1, (b,), generator=g)
    f0 = (torch.rand(b, generator=g) * (f - fw).clamp(min=1)).long()
    ti = torch.arange(t).view(1, t)
    fi = torch.arange(f).view(1, f)
    tmask = (ti >= t0.view(b, 1)) & (ti < (t0 + tw).view(b, 1))
    fmask = (fi >= f0.view(b, 1)) & (fi < (f0 + fw).view(b, 1))
    mask = tmask.unsqueeze(2) | fmask.unsqueeze(1)
    fill = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
    return torch.where(mask.to(x.device), fill, out)


def freq_shift(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Roll each clip along the channel axis by a random -max_shift..max_shift, repeating the edge."""
    if max_shift <= 0:
        return x
    b, _, f = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=g)
    idx = (torch.arange(f).view(1, f) - shifts.view(b, 1)).clamp(0, f - 1)
    return torch.gather(x, 2, idx.unsqueeze(1).expand(-1, x.shape[1], -1))


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (a rare wake word counts as much as the rest)."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32)


class WeightEMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    Hand-written rather than `torch.optim.swa_utils.AveragedModel` because the average must be
    a plain state dict: it is saved in `last.pt` for exact resume and becomes the checkpoint.
    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
    ExponentialMovingAverage with num_updates), so early epochs are not dominated by the random
    initialization. Integer buffers (BatchNorm's `num_batches_tracked`) are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.model = copy.deepcopy(module).eval()

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow, self.updates = state["shadow"], int(state["updates"])

    def averaged(self) -> nn.Module:
        """An eval-mode copy of the module holding the averaged weights."""
        self.model.load_state_dict(self.shadow)
        return self.model.eval()


def load_training_state(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """`last.pt` loaded weights-only (no code runs from a crafted file), checked to be a training state."""
    state = load_torch_file(path, what="training state", map_location=device)
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "epoch"} <= state.keys():
        raise CheckpointError(f"{path} is not a tinyconv training state (last.pt); delete it or train without --resume")
    return state


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


class Trainer:
    """Float (and QAT) training of a student on in-memory features. Subclass `compute_loss`
    to change the objective (distillation does)."""

    def __init__(
        self,
        config: Config,
        train: FeatureSet,
        val: FeatureSet,
        out_dir: str | Path,
        *,
        model: nn.Module | None = None,
        kind: str = "float",
        epochs: int | None = None,
        learning_rate: float | None = None,
        epoch_hook: Callable[[nn.Module, int], None] | None = None,
        state_fn: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        # What the checkpoint and the run's config.yaml record: the variant's fixed values included.
        self.config = config = dataclasses.replace(config, model=resolved_model_config(config.model))
        self.train_set, self.val_set = train, val
        self.out_dir = Path(out_dir)
        self.kind = kind
        tc = config.train
        self.epochs = epochs or tc.epochs
        self.learning_rate = learning_rate or tc.learning_rate
        self.epoch_hook = epoch_hook
        self.state_fn = state_fn or (lambda m: m.state_dict())
        self.extra = extra or {}
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(tc.device)
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        torch.manual_seed(tc.seed)
        self.model = (model or build_model(config.model, len(train.labels), config.frontend)).to(self.device)
        if self.device.type == "cpu":
            # oneDNN's depthwise and dilated convolutions run 1.3-1.5x faster per training step in
            # NHWC (benchmarks/bench_quickstart.py measures it); the math and the saved weights'
            # values are the same, and checkpoints load into contiguous models as before.
            self.model = self.model.to(memory_format=torch.channels_last)
        self.module = self.model  # unwrapped; self.model may become DDP
        if self.world > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.model = nn.parallel.DistributedDataParallel(self.module)
        self.x = torch.from_numpy(train.x)
        self.y = torch.from_numpy(train.y)
        self.weights = (class_weights(train.y, len(train.labels)) if tc.class_weighting
                        else torch.ones(len(train.labels))).to(self.device)
        # Per-clip loss weights, only when the set has confusables to weight (None: plain loss).
        confusable = torch.tensor([r.kind == "confusable" for r in train.rows], dtype=torch.bool)
        self.sample_weights: torch.Tensor | None = None
        if tc.confusable_weight != 1.0 and len(confusable) == len(train.y) and bool(confusable.any()):
            self.sample_weights = torch.where(confusable, tc.confusable_weight, 1.0).to(self.device)
        self._init_streaming(train, val)
        self.per_rank_batch = max(1, tc.batch_size // self.world)
        self.steps_per_epoch = max(1, (len(self.y) // self.world) // self.per_rank_batch)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=self.learning_rate,
                                           weight_decay=tc.weight_decay)
        total = self.epochs * self.steps_per_epoch
        warm = min(total - 1, tc.warmup_epochs * self.steps_per_epoch) if total > 1 else 0

        def lr_lambda(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total - warm)
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.ema = WeightEMA(self.module, tc.ema_decay) if tc.ema_decay > 0 and kind == "float" else None

    def _init_streaming(self, train: FeatureSet, val: FeatureSet) -> None:
        """Training for streaming use and selection on validation streams (trainer/streams.py)."""
        from tinyconv.trainer.streams import StreamSelectionError, build_feature_streams

        tc = self.config.train
        pos = train.positive_index
        self.stream_delay_frames = tc.stream_positive_delay_ms // self.config.frontend.step_ms
        self.negative_pool: torch.Tensor | None = None
        if (self.stream_delay_frames > 0 or tc.stream_negative_fraction > 0) and pos is not None:
            neg = torch.nonzero(self.y != pos).flatten()
            self.negative_pool = neg if len(neg) else None
        # The training split's long negative audio as one [T, F] tensor (data.train_negative_stream_minutes).
        self.long_negatives: torch.Tensor | None = None
        if train.negative_streams and tc.long_negative_fraction > 0:
            self.long_negatives = torch.from_numpy(np.concatenate(train.negative_streams, axis=0).astype(np.float32))
            if self.long_negatives.shape[0] < train.x.shape[1]:
                self.long_negatives = None  # shorter than one window: nothing to draw
        # Positive clips heard in the training streams, and each training row's index into them.
        self.context_positives: torch.Tensor | None = None
        self.context_row = torch.full((len(self.y),), -1, dtype=torch.long)
        if tc.context_positive_fraction > 0 and train.negative_streams and pos is not None:
            if train.context_positives is None:
                raise StreamSelectionError("train.context_positive_fraction needs the training split loaded with its "
                                           "context positives (load_features(..., with_streams=True, "
                                           "with_context=True); trainer.run.load_splits does it)")
            self.context_positives = torch.from_numpy(train.context_positives)
            where = torch.nonzero(self.y == pos).flatten()
            self.context_row[where] = torch.arange(len(where))
        # Start frames of the hardest windows of long_negatives, re-mined before each epoch.
        self.hard_starts: torch.Tensor | None = None
        if tc.hard_negative_fraction > 0 and self.long_negatives is not None and not callable(
                getattr(self.module, "forward_steps", None)):
            raise StreamSelectionError(
                f"train.hard_negative_fraction mines the training streams step by step and needs a float streaming "
                f"model (model.name stream_tinyconv*, not QAT), got {self.config.model.name!r}"
                f"{' (QAT)' if self.kind == 'qat' else ''}; set train.hard_negative_fraction=0")
        self.val_streams = None
        if tc.selection_metric == "stream_recall_at_fa":
            if pos is None or val.positive_index is None:
                raise StreamSelectionError("train.selection_metric=stream_recall_at_fa needs a wake-word dataset "
                                           "(a positive label); use wake_recall_at_far or accuracy")
            if not callable(getattr(self.module, "forward_steps", None)):
                raise StreamSelectionError(
                    f"train.selection_metric=stream_recall_at_fa needs a streaming model (model.name "
                    f"stream_tinyconv*), got {self.config.model.name!r}; use wake_recall_at_far")
            self.val_streams = build_feature_streams(val, seed=tc.seed, step_ms=self.config.frontend.step_ms)

    def _long_negative_windows(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A train.long_negative_fraction of this batch's negatives replaced by windows at random
        positions of the training split's long negative audio (drawn from `g`: exact resume). The
        label stays negative; a distillation teacher that runs on the window (tinyconv) sees it."""
        assert self.long_negatives is not None
        pos = self.train_set.positive_index
        take = torch.rand(len(y), generator=g) < self.config.train.long_negative_fraction
        if pos is not None:
            take &= y != pos
        t = x.shape[1]
        starts = torch.randint(0, self.long_negatives.shape[0] - t + 1, (len(y),), generator=g)
        if self.hard_starts is not None:
            hard = torch.rand(len(y), generator=g) < self.config.train.hard_negative_fraction
            pick = self.hard_starts[torch.randint(0, len(self.hard_starts), (len(y),), generator=g)]
            starts = torch.where(hard, pick, starts)
        if not bool(take.any()):
            return x
        windows = self.long_negatives[starts[take].unsqueeze(1) + torch.arange(t)]
        x = x.clone()
        x[take] = windows
        return x

    def mine_hard_negatives(self) -> torch.Tensor:
        """Start frames of the training-stream windows the model (as validated) scores highest:
        the top HARD_NEGATIVE_POOL of its steps over the whole stream (train.hard_negative_fraction).
        Deterministic in the weights, so a resumed run mines what the uninterrupted one did."""
        from tinyconv.trainer.streams import step_probabilities

        assert self.long_negatives is not None and self.train_set.positive_index is not None
        module = self.eval_module
        was_training = module.training
        ends, probs = step_probabilities(module, self.long_negatives.numpy(), self.train_set.positive_index,
                                         self.device)
        module.train(was_training)
        t = self.train_set.x.shape[1]
        keep = ends >= t  # the window [end - T, end) lies inside the stream
        ends, probs = ends[keep], probs[keep]
        k = max(1, int(round(HARD_NEGATIVE_POOL * len(probs))))
        top = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
        return torch.from_numpy((ends[top] - t).astype(np.int64))

    def _context_positive_windows(self, x: torch.Tensor, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A train.context_positive_fraction of this batch's positives replaced by the same clip heard
        in the training streams, as the window ending 0..train.stream_positive_delay_ms after it
        (at most the CONTEXT_POST_MS computed; drawn from `g`: exact resume)."""
        assert self.context_positives is not None
        t = x.shape[1]
        rows = self.context_row[idx]
        take = (torch.rand(len(idx), generator=g) < self.config.train.context_positive_fraction) & (rows >= 0)
        most = min(self.stream_delay_frames, self.context_positives.shape[1] - t)
        delay = torch.randint(0, most + 1, (len(idx),), generator=g)
        if not bool(take.any()):
            return x
        windows = self.context_positives[rows[take].unsqueeze(1), delay[take].unsqueeze(1) + torch.arange(t)]
        x = x.clone()
        x[take] = windows
        return x

    def _stream_windows(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Shifted positive windows and junction negatives for this batch (drawn from `g`: exact resume)."""
        from tinyconv.trainer.streams import shift_windows, streaming_shifts

        assert self.negative_pool is not None
        tc = self.config.train
        partner = self.x[self.negative_pool[torch.randint(0, len(self.negative_pool), (len(y),), generator=g)]]
        shifts = streaming_shifts(y, g, positive_index=int(self.train_set.positive_index or 0),
                                  max_delay_frames=self.stream_delay_frames,
                                  negative_fraction=tc.stream_negative_fraction, num_frames=x.shape[1])
        return shift_windows(x, partner, shifts)

    def stream_report(self) -> dict[str, Any]:
        """The validation-stream report of the module being validated (needs stream selection on)."""
        from tinyconv.trainer.streams import stream_report

        assert self.val_streams is not None and self.val_set.positive_index is not None
        return stream_report(self.eval_module, self.val_streams, self.val_set.positive_index,
                             target_fa_per_hour=self.config.train.target_fa_per_hour, device=self.device)

    @property
    def eval_module(self) -> nn.Module:
        """What is validated and saved as best: the weight average when EMA is on."""
        return self.ema.averaged() if self.ema is not None else self.module

    # The objective; DistillationTrainer overrides this. `idx` indexes the training set.
    def compute_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        smoothing = self.config.train.label_smoothing
        if self.sample_weights is None:
            return F.cross_entropy(logits, y, weight=self.weights, label_smoothing=smoothing)
        # Same weighted mean as above, with each clip's class weight times its sample weight.
        per_clip = F.cross_entropy(logits, y, weight=self.weights, label_smoothing=smoothing, reduction="none")
        w = self.sample_weights[idx.to(self.device)]
        return (per_clip * w).sum() / (self.weights[y] * w).sum()

    def evaluate(self, fs: FeatureSet, batch_size: int = 512) -> dict[str, Any]:
        module = self.eval_module
        module.eval()
        logits = []
        with torch.no_grad():
            for i in range(0, len(fs), batch_size):
                logits.append(module(torch.from_numpy(fs.x[i : i + batch_size]).to(self.device)).cpu())
        out = torch.cat(logits)
        loss = F.cross_entropy(out, torch.from_numpy(fs.y)).item()
        report = classification_report(out.numpy(), fs.y, fs.labels, fs.positive_label,
                                       target_far=self.config.train.target_far)
        report["loss"] = loss
        return report

    def _metric(self, report: dict[str, Any]) -> float:
        name = self.config.train.selection_metric
        if name == "wake_recall_at_far" and "wake_word" in report:
            # Ties (common once recall saturates) are broken by accuracy.
            return report["wake_word"]["recall_at_target_far"] + 1e-3 * report["accuracy"]
        if name == "neg_loss":
            return -report["loss"]
        if name == "stream_recall_at_fa" and "stream" in report:
            # A model that meets the FA/h target beats any that does not; ties (recall moves in
            # steps of one positive) are broken by clip recall at train.target_far.
            st = report["stream"]
            clip = report.get("wake_word", {}).get("recall_at_target_far", 0.0)
            return st["recall"] - (0.0 if st["met"] else 1.0) + 1e-3 * clip
        return report["accuracy"]

    def _state(self, epoch: int, best: float, best_epoch: int, bad_epochs: int,
               history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "epoch": epoch, "best": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "history": history, "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "kind": self.kind,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            # Which model and settings wrote this state: a resume with another model names them.
            "config": config_to_dict(self.config),
        }

    def fit(self, resume: bool = False) -> TrainResult:
        tc = self.config.train
        main = self.rank == 0
        start, best, best_epoch, bad_epochs, history = 0, -math.inf, -1, 0, []
        last = self.out_dir / LAST
        if resume and last.is_file():
            state = load_training_state(last, self.device)
            if state.get("kind") != self.kind:
                raise ValueError(f"{last} is a {state.get('kind')} run; cannot resume it as {self.kind}")
            self._load_resumed_model(last, state)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                if state.get("ema") is None:
                    raise ValueError(f"{last} was trained without train.ema_decay; cannot resume it with EMA on")
                self.ema.load_state_dict(state["ema"])
            start, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            bad_epochs, history = state["bad_epochs"], state["history"]
        if main:  # only now: a refused --resume leaves the run's config.yaml as it was
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.out_dir / CONFIG)
        seen, t_train = 0, 0.0
        epochs_run = start  # epochs done, counting those of a resumed run
        for epoch in range(start, self.epochs):
            if bad_epochs >= tc.early_stopping_patience:  # a resumed run that had already stopped
                break
            seed = _epoch_seed(tc.seed, epoch)
            torch.manual_seed(seed)  # dropout
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(len(self.y), generator=g)
            perm = perm[self.rank :: self.world][: self.steps_per_epoch * self.per_rank_batch]
            if self.epoch_hook is not None:
                self.epoch_hook(self.module, epoch)
            if self.config.train.hard_negative_fraction > 0 and self.long_negatives is not None and epoch > 0:
                # Epoch 0 draws at random: an untrained model's highest scores mark nothing.
                self.hard_starts = self.mine_hard_negatives()
            self.model.train()
            t0 = time.perf_counter()
            total_loss = 0.0
            bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                       disable=None if main else True)
            for step in bar:
                idx = perm[step * self.per_rank_batch : (step + 1) * self.per_rank_batch]
                x = self.x[idx]
                if self.negative_pool is not None:
                    x = self._stream_windows(x, self.y[idx], g)
                if self.context_positives is not None:
                    x = self._context_positive_windows(x, idx, g)
                if self.long_negatives is not None:
                    x = self._long_negative_windows(x, self.y[idx], g)
                x = freq_shift(x, g, tc.freq_shift_channels)
                if tc.spec_augment:
                    x = spec_augment(x, g, tc.time_mask_frames, tc.freq_mask_channels)
                x, y = x.to(self.device), self.y[idx].to(self.device)
                loss = self.compute_loss(self.model, x, y, idx)
                loss_value = loss.item()
                if not math.isfinite(loss_value):  # stop before the step spreads it to the weights
                    raise self._diverged(f"training loss is {loss_value} at epoch {epoch + 1}, "
                                         f"batch {step + 1} of {self.steps_per_epoch}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.module)
                total_loss += loss_value
                bar.set_postfix(loss=f"{loss_value:.3f}")
            t_train += time.perf_counter() - t0
            seen += len(perm) * self.world
            report = self.evaluate(self.val_set)
            if self.val_streams is not None:
                report["stream"] = self.stream_report()
            if not math.isfinite(report["loss"]):
                raise self._diverged(f"validation loss is {report['loss']} after epoch {epoch + 1}")
            metric = self._metric(report)
            row = {"epoch": epoch, "train_loss": total_loss / self.steps_per_epoch, "val_loss": report["loss"],
                   "val_accuracy": report["accuracy"], "val_metric": metric,
                   "lr": self.scheduler.get_last_lr()[0]}
            if "wake_word" in report:
                row["val_recall_at_far"] = report["wake_word"]["recall_at_target_far"]
            if "stream" in report:
                row.update(_stream_metrics(report["stream"]))
            history.append(row)
            if metric > best:
                best, best_epoch, bad_epochs = metric, epoch, 0
                if main:
                    self._save_best(report, epoch)
            else:
                bad_epochs += 1
            if main:
                atomic_save(self._state(epoch, best, best_epoch, bad_epochs, history), last)
                (self.out_dir / "history.json").write_text(json.dumps(history, indent=1))
                tqdm.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {report['loss']:.4f}, "
                           f"val acc {report['accuracy']:.4f}, {tc.selection_metric} {metric:.4f}"
                           + (" *" if best_epoch == epoch else ""))
            epochs_run = epoch + 1
            if bad_epochs >= tc.early_stopping_patience:  # stop now: the next epoch would not run
                break
        if main and not (self.out_dir / BEST).is_file():
            raise TrainingDivergedError(f"no epoch produced a usable model, so {self.out_dir / BEST} was not written "
                                        f"(validation {tc.selection_metric}: "
                                        f"{[round(r['val_metric'], 4) for r in history]})")
        return TrainResult(self.out_dir / BEST, best, best_epoch, epochs_run, history,
                           clips_per_second=seen / t_train if t_train else 0.0)

    def _diverged(self, what: str) -> TrainingDivergedError:
        key = "qat.learning_rate" if self.kind == "qat" else "train.learning_rate"
        kept = (f"the last good checkpoint {self.out_dir / BEST} and {LAST} are kept"
                if (self.out_dir / BEST).is_file() else "no checkpoint was written")
        return TrainingDivergedError(f"{what}: training diverged; lower {key} (now {self.learning_rate:g}); {kept}")

    def _load_resumed_model(self, last: Path, state: dict[str, Any]) -> None:
        """Load last.pt's weights; a run of another model is one clear line, not a page of shapes."""
        try:
            self.module.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as exc:
            saved = state.get("config") if isinstance(state.get("config"), dict) else None
            if saved is None and (self.out_dir / CONFIG).is_file():  # last.pt from before it held its config
                from tinyconv.config import yaml_load

                with contextlib.suppress(Exception):
                    saved = yaml_load((self.out_dir / CONFIG).read_text())
            was = describe_model_difference((saved or {}).get("model") if isinstance(saved, dict) else None,
                                            self.config.model)
            raise RunFolderError(
                f"cannot resume {last}: it was written for {was or 'another model'}, and its weights do not fit "
                f"this run's model {self.config.model.name!r}; resume with the run's own config "
                f"(--config {self.out_dir / CONFIG}) or train into another --out"
            ) from exc

    def _save_best(self, report: dict[str, Any], epoch: int) -> None:
        metrics = {"epoch": epoch, "val_accuracy": report["accuracy"], "val_loss": report["loss"]}
        if "wake_word" in report:
            metrics["val_recall_at_far"] = report["wake_word"]["recall_at_target_far"]
            metrics["val_threshold_at_far"] = report["wake_word"]["threshold_at_target_far"]
        if "stream" in report:
            metrics.update(_stream_metrics(report["stream"]))
        ckpt = Checkpoint(config=self.config, labels=self.train_set.labels, state_dict=self.state_fn(self.eval_module),
                          positive_label=self.train_set.positive_label, metrics=metrics, kind=self.kind,
                          extra=self.extra)
        save_checkpoint(ckpt, self.out_dir / BEST)


def _stream_metrics(st: dict[str, Any]) -> dict[str, Any]:
    """The validation-stream numbers a history row and a checkpoint keep (trainer/streams.py)."""
    return {"val_stream_recall": st["recall"], "val_stream_cutoff": st["cutoff"],
            "val_stream_fa_per_hour": st["fa_per_hour"], "val_stream_met": st["met"],
            "val_negative_hours": st["negative_hours"]}
