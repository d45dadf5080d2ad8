"""`tinyconv ui`: serve the Gradio app (bound to 127.0.0.1 unless --host says otherwise).

The UI runs jobs and serves the runs folder to whoever reaches the port, so a host other than
loopback needs a login (`--auth`, `--auth-file`) or an explicit `--insecure-open-server`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from tinyconv.config import load_config
from tinyconv.errors import TinyconvError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class UiUsageError(TinyconvError):
    """A bad `tinyconv ui` option: one line, exit code 2."""


def port_number(text: str) -> int:
    """argparse type for --port: an integer in 1..65535 (argparse exits 2 with the message)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1-65535, got {port}")
    return port


def is_loopback(host: str) -> bool:
    """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _credential(text: str, where: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise UiUsageError(f"{where}: expected USER:PASSWORD with a non-empty user and password")
    return user.strip(), password


def read_auth(pairs: list[str], auth_file: str | None) -> list[tuple[str, str]]:
    """(user, password) pairs from --auth USER:PASSWORD and --auth-file (one USER:PASSWORD a line;
    blank lines and # comments skipped). Messages never quote a password."""
    creds = [_credential(p, "--auth") for p in pairs]
    if auth_file:
        path = Path(auth_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UiUsageError(f"--auth-file {str(path)!r} cannot be read ({type(exc).__name__})") from None
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                creds.append(_credential(line.strip(), f"--auth-file {str(path)!r} line {n}"))
        if not creds:
            raise UiUsageError(f"--auth-file {str(path)!r} holds no USER:PASSWORD line")
    return creds


def check_exposure(host: str, auth: list[tuple[str, str]], insecure: bool) -> str | None:
    """The warning to print for a non-loopback host, or None; raises when such a host has neither
    a login nor --insecure-open-server."""
    if is_loopback(host):
        return None
    if not auth and not insecure:
        raise UiUsageError(f"--host {host} lets other machines start jobs and read the runs folder; give a login "
                           f"with --auth USER:PASSWORD or --auth-file FILE, or pass --insecure-open-server to "
                           f"accept an open server")
    if auth:
        return (f"warning: serving on {host} to other machines behind a login; the password travels unencrypted "
                f"(no HTTPS): use it on trusted networks or behind a TLS proxy")
    return (f"warning: serving on {host} with NO login (--insecure-open-server): anyone who reaches the port can "
            f"start jobs, and read and overwrite files under the runs folder")


def _ui(args: argparse.Namespace) -> int:
    auth = read_auth(args.auth, args.auth_file)
    warning = check_exposure(args.host, auth, args.insecure_open_server)
    if warning:
        print(warning, file=sys.stderr)
    from tinyconv.ui.app import launch

    config = load_config(args.config, args.overrides)
    launch(config, args.runs, host=args.host, port=args.port, allowed_paths=args.allow_path, auth=auth,
           config_source=args.config, overrides=tuple(args.overrides))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from tinyconv.data.cli import add_config_args

    p = sub.add_parser("ui", help="web UI: config panel, data synthesis, training, export, simulation")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port, 1-65535 (default 7860)")
    p.add_argument("--runs", default="runs", help="folder for UI job state and logs (default runs/; "
                                                  "jobs live in RUNS/ui_jobs)")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="extra folder the UI may read, write and serve (datasets, checkpoints or runs outside "
                        "--runs); repeatable")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="require this login (repeatable); needed for a --host other than 127.0.0.1 (prefer "
                        "--auth-file: a command line is visible to other users of the machine)")
    p.add_argument("--auth-file", metavar="FILE", help="logins, one USER:PASSWORD a line")
    p.add_argument("--insecure-open-server", action="store_true",
                   help="serve a non-loopback --host without a login (anyone who reaches the port can use it)")
    add_config_args(p)
    p.set_defaults(func=_ui)
