"""`tinyconv train | eval | quickstart`."""

from __future__ import annotations

import argparse
import json
import time

from tinyconv.config import load_config, replace
from tinyconv.data.cli import add_config_args


def _train(args: argparse.Namespace) -> int:
    from tinyconv.trainer.run import train

    config = load_config(args.config, args.overrides)
    if args.out:
        config = replace(config, train={"out_dir": args.out})
    if args.qat:
        config = replace(config, qat={"enabled": True})
    t0 = time.perf_counter()
    result = train(config, resume=args.resume, init_checkpoint=args.init, overwrite=args.overwrite)
    print(f"best {config.train.selection_metric} {result.best_metric:.4f} at epoch {result.best_epoch + 1}; "
          f"{result.epochs_run} epochs in {time.perf_counter() - t0:.0f} s "
          f"({result.clips_per_second:.0f} clips/s); checkpoint {result.checkpoint_path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from tinyconv.trainer.run import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, threshold=args.threshold, out_dir=args.out,
                                 dataset_dir=args.dataset)
    r = result.report
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "wake_word"} | (
            {"wake_word": {k: v for k, v in r["wake_word"].items() if k != "curve"}} if "wake_word" in r else {}),
            indent=1))
    else:
        print(f"{r['split']}: {r['num_clips']} clips, accuracy {r['accuracy']:.4f}")
        if "wake_word" in r:
            w = r["wake_word"]
            print(f"wake word: FRR {w['frr']:.4f}, FAR {w['far']:.4f} at threshold {w['threshold']:.2f}; "
                  f"recall {w['recall_at_target_far']:.4f} at FAR <= {w['target_far']}")
        print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from tinyconv.trainer.run import quickstart

    # Without --config: the packaged recipe (tinyconv/recipes/quickstart.yaml), from any directory.
    config = load_config(args.config or "quickstart", args.overrides)
    if args.wake_word is not None:  # `--wake-word ''` must reach the config check, not fall back to the default
        config = replace(config, data={"wake_word": args.wake_word})
    if args.print_config:
        import yaml

        from tinyconv.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    t0 = time.perf_counter()
    result = quickstart(config)
    r = result.eval.report
    total = time.perf_counter() - t0
    print()
    print(f"quickstart: wake word {config.data.wake_word!r}, model {config.model.name} "
          f"(depthwise={config.model.tiny_conv_use_depthwise}, width {config.model.width_multiplier})")
    print("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()) + f"; total {total:.0f} s")
    print(f"  test split (voices never seen in training): {r['num_clips']} clips, accuracy {r['accuracy']:.4f}")
    if "wake_word" in r:
        w = r["wake_word"]
        print(f"  wake-word recall {w['recall_at_target_far']:.4f} at false-accept rate <= {w['target_far']:.2%} "
              f"of negative clips (threshold {w['threshold_at_target_far']:.3f})")
    if result.streaming is not None:
        s = result.streaming
        print(f"  streaming (test split as streams, {s['negative_hours'] * 60:.0f} min of negatives, ESPHome's "
              f"detector): recall {s['recall']:.4f} at <= {s['target_fa_per_hour']} false accepts per hour "
              f"(cutoff {s['cutoff']:.2f}, {s['false_accepts']} false accepts)"
              + (" [not met at any cutoff]" if not s["met"] else ""))
        if "at_cutoff" in s:
            a = s["at_cutoff"]
            print(f"  at the exported cutoff {a['cutoff']:.2f}: recall {a['recall']:.4f}, "
                  f"{a['fa_per_hour']:.2f} false accepts per hour")
    print(f"  dataset:    {result.dataset_dir}")
    print(f"  checkpoint: {result.checkpoint}")
    print("  reports:    " + ", ".join(str(p) for p in result.eval.files.values()))
    if result.esphome is not None and result.esphome_manifest is not None:
        m = result.esphome_manifest["micro"]
        print(f"  ESPHome:    {result.esphome['json']} + {result.esphome['tflite'].name} (probability_cutoff "
              f"{m['probability_cutoff']}, tensor_arena_size {m['tensor_arena_size']} B); C array: "
              f"{result.esphome['c_source']}, {result.esphome['c_header'].name}")
        print(f"next: in your ESPHome YAML, micro_wake_word: models: - model: {result.esphome['json']} "
              f"(README: ESPHome and Home Assistant)")
        return 0
    print(f"next: tinyconv export {result.checkpoint} --out {result.checkpoint.parent / 'export'}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a student (float, QAT with --qat, distillation via config)")
    add_config_args(p)
    p.add_argument("--out", help="run folder (train.out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt after an interruption")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUT (checkpoint.pt, last.pt, config.yaml); without it, or "
                        "--resume, a folder holding a run is refused")
    p.add_argument("--init", help="start from this checkpoint's weights (e.g. a float model before QAT)")
    p.add_argument("--qat", action="store_true", help="quantization-aware training (sets qat.enabled)")
    p.set_defaults(func=_train)
    p = sub.add_parser("eval", help="evaluate a checkpoint on a split")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--threshold", type=float, help="wake-word probability threshold (default 0.5)")
    p.add_argument("--dataset", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--out", help="report folder (default: next to the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_eval)
    p = sub.add_parser("quickstart", help="synthesize data, train TinyConv V2, evaluate (the main job); "
                                          "a re-run replaces the model in its run folder (train.out_dir)")
    p.add_argument("--wake-word", help="wake word (default from the quickstart recipe)")
    add_config_args(p)
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (recipe, --config, --set, --wake-word) as YAML and exit")
    p.set_defaults(func=_quickstart)
    from tinyconv.trainer.teacher_cli import add_parsers as add_teacher_parsers

    add_teacher_parsers(sub)
