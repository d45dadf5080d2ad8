"""`tinyconv data synth|speech-commands|check`."""

from __future__ import annotations

import argparse
import time

from tinyconv.config import load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file, or a packaged recipe name such as quickstart (`tinyconv "
                                    "recipes`); the library defaults when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable)")


def _synth(args: argparse.Namespace) -> int:
    from tinyconv.config import replace
    from tinyconv.data.manifest import read_manifest
    from tinyconv.data.synth import phrase_fit_counts, split_counts, synthesize_dataset

    config = load_config(args.config, args.overrides)
    changes = {"dataset_dir": args.out}
    if args.wake_word is not None:  # `--wake-word ''` must reach the config check, not fall back to the default
        changes["wake_word"] = args.wake_word
    if args.strict:
        changes["strict"] = True
    if args.intelligibility_gate is not None:
        changes["intelligibility_gate"] = args.intelligibility_gate
    config = replace(config, data=changes)
    t0 = time.perf_counter()
    out = synthesize_dataset(config, args.out)
    rows, info = read_manifest(out)
    print(f"wrote {len(rows)} clips to {out} in {time.perf_counter() - t0:.1f} s; labels {info.labels}")
    for split, counts in split_counts(rows).items():
        print(f"  {split:5s} " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    engines: dict[str, int] = {}
    for engine in (r.voice.split(":", 1)[0] for r in rows if r.voice):
        engines[engine] = engines.get(engine, 0) + 1
    if set(engines) - {"espeak-ng", "flite"}:  # natural voices or recordings (tinyconv.data.natural_tts)
        print("  clips by voice source: " + ", ".join(f"{k}: {v}" for k, v in sorted(engines.items())))
    fit = phrase_fit_counts(rows)
    if fit["faster"] or fit["too_long"]:
        print(f"  {fit['faster']} wake-word / near-miss clips spoken faster to fit the window"
              + (f", {fit['too_long']} still too long (cropped)" if fit["too_long"] else ""))
    if info.intelligibility_gate is not None:
        print("  " + gate_summary(info.intelligibility_gate))
    return 0


def gate_summary(gate: dict) -> str:
    """One line from labels.json's intelligibility_gate entry (tinyconv.data.natural_tts.GateReport)."""
    checked, rejected = gate.get("checked", {}), gate.get("rejected", {})
    if not checked:
        return "intelligibility gate: no natural-voice wake words or near misses to check"
    parts = ", ".join(f"{kind} {rejected.get(kind, 0)}/{n}" for kind, n in checked.items())
    variant = gate.get("variant") if gate.get("variant") not in (None, "?") else ""
    model = f"Whisper {variant}".strip() if "whisper" in gate else "custom gate"
    return (f"intelligibility gate ({model}, {gate.get('seconds', 0):.0f} s): rejected {sum(rejected.values())} of "
            f"{sum(checked.values())} natural-voice clips ({parts}); listed in labels.json")


def _speech_commands(args: argparse.Namespace) -> int:
    from tinyconv.config import replace
    from tinyconv.data.manifest import read_manifest
    from tinyconv.data.speech_commands import prepare_speech_commands
    from tinyconv.data.synth import split_counts

    config = load_config(args.config, args.overrides)
    if args.keywords:
        config = replace(config, data={"keywords": [k.strip() for k in args.keywords.split(",") if k.strip()]})
    out = prepare_speech_commands(args.src, args.out, config)
    rows, info = read_manifest(out)
    print(f"wrote manifest for {len(rows)} clips to {out}; labels {info.labels}")
    for split, counts in split_counts(rows).items():
        print(f"  {split:5s} {sum(counts.values())} clips")
    return 0


def _check(args: argparse.Namespace) -> int:
    from tinyconv.data.dataset import load_features
    from tinyconv.data.manifest import read_manifest

    config = load_config(args.config, args.overrides)
    unhashed = sum(not r.sha256 for r in read_manifest(args.dataset)[0])
    if unhashed:
        print(f"note: {unhashed} clips have no sha256 in the manifest (written by an older tinyconv): their content "
              f"is not verified; re-create the dataset to add it")
    bad = 0
    for split in ("train", "val", "test"):
        fs = load_features(args.dataset, split, config.frontend, strict=args.strict)
        bad += sum(fs.summary.skipped.values())
        print(f"{split:5s} {len(fs)} usable clips; {fs.summary}")
        for msg in fs.summary.messages[:20]:
            print(f"  skipped {msg}")
    return 1 if bad and args.strict else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build or check a dataset")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    p = dsub.add_parser("synth", help="synthesize a wake-word dataset offline (espeak-ng, flite)")
    p.add_argument("--wake-word", help="the wake word, e.g. 'hey tiny'")
    p.add_argument("--out", required=True, help="dataset folder to write")
    p.add_argument("--strict", action="store_true", help="fail on the first bad clip instead of skipping, on a "
                                                         "requested natural voice that is not installed, and on a "
                                                         "clip the intelligibility gate rejects")
    p.add_argument("--intelligibility-gate", metavar="WHISPER_DIR",
                   help="Whisper folder from `tinyconv teacher import --whisper tiny.en`: drop natural-voice wake "
                        "words it does not hear as the wake word and near misses it does (data.intelligibility_gate)")
    add_config_args(p)
    p.set_defaults(func=_synth)
    p = dsub.add_parser("speech-commands", help="index a folder laid out like Google Speech Commands")
    p.add_argument("src", help="folder with one subfolder per word")
    p.add_argument("--out", required=True, help="dataset folder to write (manifest + silence clips)")
    p.add_argument("--keywords", help="comma-separated keywords (default: the standard 10)")
    add_config_args(p)
    p.set_defaults(func=_speech_commands)
    p = dsub.add_parser("check", help="load every clip, report bad ones and a summary")
    p.add_argument("dataset")
    p.add_argument("--strict", action="store_true")
    add_config_args(p)
    p.set_defaults(func=_check)
