"""`tinyconv ui`: serve the Gradio app (bound to 127.0.0.1 unless --host says otherwise)."""

from __future__ import annotations

import argparse

from tinyconv.config import load_config


def _ui(args: argparse.Namespace) -> int:
    from tinyconv.ui.app import launch

    config = load_config(args.config, args.overrides)
    launch(config, args.runs, host=args.host, port=args.port, allowed_paths=args.allow_path)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from tinyconv.data.cli import add_config_args

    p = sub.add_parser("ui", help="web UI: config panel, data synthesis, training, export, simulation")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--runs", default="runs", help="folder for UI job state and logs (default runs/; "
                                                  "jobs live in RUNS/ui_jobs)")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="extra folder the app may serve files from (datasets or runs outside --runs)")
    add_config_args(p)
    p.set_defaults(func=_ui)
