"""`tinyconv ui` options: a bad port, a host other machines reach without a login, the login itself."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.helpers import running_ui
from tinyconv.cli import main
from tinyconv.ui.cli import check_exposure, is_loopback


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stderr of `tinyconv ui ARGV` (argparse's own errors exit through SystemExit)."""
    try:
        code = main(["ui", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("port, message", [
    ("99999", "argument --port: port must be in 1-65535, got 99999"),
    ("0", "argument --port: port must be in 1-65535, got 0"),
    ("http", "argument --port: 'http' is not a port number"),
])
def test_bad_port_exits_2_without_a_traceback(capsys: pytest.CaptureFixture[str], port: str, message: str) -> None:
    code, err = _run(capsys, "--port", port)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "my-laptop.example"])
def test_non_loopback_host_without_a_login_exits_2(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, err = _run(capsys, "--host", host)
    assert code == 2
    assert err.strip() == (f"tinyconv ui: error: --host {host} lets other machines start jobs and read the runs "
                           f"folder; give a login with --auth USER:PASSWORD or --auth-file FILE, or pass "
                           f"--insecure-open-server to accept an open server")


def test_bad_logins_exit_2_without_quoting_the_password(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run(capsys, "--host", "0.0.0.0", "--auth", "s3cretpassword")
    assert code == 2 and "--auth: expected USER:PASSWORD" in err and "s3cret" not in err
    code, err = _run(capsys, "--auth-file", str(tmp_path / "missing.txt"))
    assert code == 2 and "missing.txt' cannot be read (FileNotFoundError)" in err
    (tmp_path / "logins.txt").write_text("# users\nalice:ok\nbob-s3cret\n")
    code, err = _run(capsys, "--auth-file", str(tmp_path / "logins.txt"))
    assert code == 2 and "logins.txt' line 3: expected USER:PASSWORD" in err and "s3cret" not in err
    (tmp_path / "empty.txt").write_text("# nobody\n")
    code, err = _run(capsys, "--auth-file", str(tmp_path / "empty.txt"))
    assert code == 2 and "holds no USER:PASSWORD line" in err


def test_loopback_and_warnings() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.2", "example.com"))
    assert check_exposure("127.0.0.1", [], False) is None
    assert "behind a login" in (check_exposure("0.0.0.0", [("u", "p")], False) or "")
    assert "with NO login (--insecure-open-server)" in (check_exposure("0.0.0.0", [], True) or "")


def test_auth_file_puts_a_login_in_front_of_files_and_endpoints(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "ok.txt").write_text("served")
    (tmp_path / "logins.txt").write_text("alice:correct horse\n")
    with running_ui(["--runs", str(runs), "--auth-file", str(tmp_path / "logins.txt")], cwd=tmp_path,
                    log=tmp_path / "server.log", env=dict(os.environ, HOME=str(tmp_path))) as url:
        file_url = f"{url}/gradio_api/file={runs / 'ok.txt'}"
        anonymous = httpx.get(file_url)
        assert anonymous.status_code == 401 and "served" not in anonymous.text
        assert httpx.post(f"{url}/gradio_api/call/validate", json={"data": []}).status_code == 401
        with httpx.Client() as client:
            bad = client.post(f"{url}/login", data={"username": "alice", "password": "wrong"})
            assert bad.status_code == 400
            assert client.get(file_url).status_code == 401
            good = client.post(f"{url}/login", data={"username": "alice", "password": "correct horse"})
            assert good.status_code == 200, good.text
            r = client.get(file_url)
            assert r.status_code == 200 and r.text == "served"
