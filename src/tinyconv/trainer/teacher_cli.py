"""`tinyconv teacher train`: fine-tune the distillation teachers on the dataset's raw waveforms."""

from __future__ import annotations

import argparse
import time

from tinyconv.config import load_config, replace
from tinyconv.data.cli import add_config_args


def _train(args: argparse.Namespace) -> int:
    from tinyconv.trainer.teachers import teacher_dir, train_teachers

    config = load_config(args.config, args.overrides)
    if args.out:
        config = replace(config, distill={"teacher_dir": args.out})
    t0 = time.perf_counter()
    results = train_teachers(config, log=print)
    for r in results:
        print(f"{r.kind} ({config.distill.teacher_size}, {r.num_parameters / 1e6:.2f} M params): "
              f"val accuracy {r.val_accuracy:.4f} after {config.distill.teacher_epochs} epochs "
              f"in {r.train_seconds:.0f} s; saved {r.path}")
    print(f"teachers in {teacher_dir(config)} ({time.perf_counter() - t0:.0f} s); distillation reads them "
          f"from distill.teacher_dir")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    teacher = sub.add_parser("teacher", help="distillation teachers (Wav2Vec2, Conformer)")
    tsub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION")
    tsub.required = True
    p = tsub.add_parser("train", help="fine-tune each configured teacher on the dataset's raw waveforms")
    p.add_argument("--out", help="folder for the teachers (default: distill.teacher_dir, "
                                 "else <train.out_dir>/teachers)")
    add_config_args(p)
    p.set_defaults(func=_train)
