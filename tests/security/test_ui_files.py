"""Hostile input against the UI's files: uploads passed as checkpoints, the file route, YAML paths.

A real `tinyconv ui` is started from a fake home folder (with `.ssh/id_rsa` in it) and attacked over
HTTP the way anyone who reaches the port could: Gradio's upload route, the buttons' endpoints
called with any text, and `/gradio_api/file=`. Gradio's upload folder is put *inside* the runs
folder, so only the rule "never open uploads" can stop the uploaded pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import running_ui
from tinyconv.config import Config, replace
from tinyconv.ui.controller import MAX_MESSAGE_CHARS, UiController
from tinyconv.ui.jobs import JobManager
from tinyconv.ui.panel_config import config_to_values, panel_fields
from tinyconv.ui.paths import PathError, PathPolicy, gradio_upload_dirs

SECRET = "BEGIN-FAKE-PRIVATE-KEY-c0ffee"
# 258 bytes that a YAML 1.1 loader without alias limits expands to ~10^9 list items (39 MB of reply
# through the Validate button before the fix).
ALIAS_BOMB = ('{a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], '
              'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], '
              'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]}')


class _Marker:
    """Unpickling this creates `path`: proof that a pickle was loaded (and so could run code)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@dataclass
class Server:
    url: str
    home: Path
    runs: Path
    log: Path

    def call(self, endpoint: str, *data: object) -> list:
        """Call a button's endpoint over HTTP as any client could; the outputs it returned."""
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{self.url}/gradio_api/call/{endpoint}", json={"data": list(data)})
            assert r.status_code == 200, r.text
            reply = client.get(f"{self.url}/gradio_api/call/{endpoint}/{r.json()['event_id']}").text
        event, _, payload = reply.partition("\ndata: ")
        assert event.strip() == "event: complete", reply[:500]
        return json.loads(payload)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / ".bashrc").write_text(f"export TOKEN={SECRET}\n")
    (home / "notes.yaml").write_text(f"{SECRET}: [unclosed\n")  # YAML errors used to quote this line
    runs = home / "runs"
    runs.mkdir()
    (runs / "ok.txt").write_text("served")
    (runs / "link_to_key").symlink_to(home / ".ssh" / "id_rsa")
    (runs / "link.yaml").symlink_to(home / "notes.yaml")
    (runs / "outside").symlink_to(home, target_is_directory=True)
    log = home / "server.log"
    # Started from the home folder, as a user would: the working directory must not be served.
    env = dict(os.environ, HOME=str(home), GRADIO_TEMP_DIR=str(runs / "gradio_uploads"))
    with running_ui(["--runs", "runs"], cwd=home, log=log, env=env) as url:
        yield Server(url, home, runs, log)


def _export_jobs(runs: Path) -> list[Path]:
    return list((runs / "ui_jobs").glob("*-export-*"))


# -- uploads are never loaded -------------------------------------------------------------------

def test_uploaded_pickle_passed_to_export_is_refused_and_never_loaded(server: Server) -> None:
    marker = server.home / "PWNED"
    payload = pickle.dumps(_Marker(marker))
    r = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("checkpoint.pt", payload)}, timeout=30)
    assert r.status_code == 200, r.text
    uploaded = r.json()[0]
    assert Path(uploaded).is_relative_to(server.runs), "the test needs the upload folder inside the runs folder"

    _, status, _ = server.call("start_export", uploaded, ["tflite"], 10, "")
    assert status.startswith("**Error:** checkpoint ") and "is a file uploaded to the web server" in status
    # A copy outside the runs folder (the usual upload folder) is refused too.
    outside = server.home / "evil.pt"
    outside.write_bytes(payload)
    _, status, _ = server.call("start_export", str(outside), ["tflite"], 10, "")
    assert "is outside the folders the UI may use" in status and "--allow-path" in status
    assert _export_jobs(server.runs) == []
    time.sleep(2)  # a job that had started would be unpickling by now
    assert not marker.exists()


def test_upload_route_refuses_large_files(server: Server) -> None:
    from tinyconv.ui.app import MAX_UPLOAD_BYTES

    big = b"\0" * (MAX_UPLOAD_BYTES + 1)
    r = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("fill.bin", big)}, timeout=30)
    assert r.status_code >= 400, "an anonymous client could fill the disk through the upload route"
    small = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("ok.bin", b"x")}, timeout=30)
    assert small.status_code == 200


# -- the file route ----------------------------------------------------------------------------

def test_file_route_serves_the_runs_folder_only(server: Server) -> None:
    ok = httpx.get(f"{server.url}/gradio_api/file={server.runs / 'ok.txt'}")
    assert ok.status_code == 200 and ok.text == "served"  # the route itself works
    for path in [".ssh/id_rsa", ".bashrc", str(server.home / ".ssh" / "id_rsa"), "runs/../.ssh/id_rsa",
                 "runs/%2e%2e/.ssh/id_rsa", "runs/link_to_key", "runs/outside/.ssh/id_rsa", "/etc/passwd"]:
        r = httpx.get(f"{server.url}/gradio_api/file={path}")
        assert r.status_code != 200, path
        assert SECRET not in r.text and "root:" not in r.text, path


# -- YAML load and save ------------------------------------------------------------------------

def test_load_yaml_outside_the_runs_and_configs_folders_is_refused_without_content(server: Server) -> None:
    cases = {
        str(server.home / "notes.yaml"): "is outside the folders the UI may use",
        "notes.yaml": "is outside the folders the UI may use",
        "runs/link.yaml": "is outside the folders the UI may use",  # a symlink out is resolved first
        "runs/../notes.yaml": "contains '..'",
        ".ssh/id_rsa": "a config is a .yaml file",
    }
    for path, message in cases.items():
        out = server.call("load_yaml", path)
        assert out[0].startswith("**Error:**") and message in out[0], (path, out[0])
        assert SECRET not in json.dumps(out), path


def test_save_yaml_outside_the_runs_and_configs_folders_is_refused(server: Server) -> None:
    values = config_to_values(Config())
    for path, message in {str(server.home / "evil.yaml"): "is outside the folders the UI may use",
                          "runs/outside/evil.yaml": "is outside the folders the UI may use",
                          "runs/../evil.yaml": "contains '..'",
                          "/tmp/evil.yaml": "is outside the folders the UI may use"}.items():
        status = server.call("save_yaml", path, *values)[0]
        assert status.startswith("**Error:**") and message in status, (path, status)
    assert not (server.home / "evil.yaml").exists() and not Path("/tmp/evil.yaml").exists()
    status = server.call("save_yaml", "runs/configs/mine.yaml", *values)[0]
    assert status.startswith("Saved") and (server.runs / "configs" / "mine.yaml").is_file()


# -- message size ------------------------------------------------------------------------------

def test_validate_reply_stays_small_for_huge_or_explosive_values(server: Server) -> None:
    yaml_field = next(i for i, spec in enumerate(panel_fields()) if spec.kind == "yaml")
    for value in ("[" + "x" * 300_000, ALIAS_BOMB):
        values = config_to_values(Config())
        values[yaml_field] = value
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{server.url}/gradio_api/call/validate", json={"data": values})
            reply = client.get(f"{server.url}/gradio_api/call/validate/{r.json()['event_id']}").text
        assert "**Error:**" in reply and len(reply) < MAX_MESSAGE_CHARS + 500, len(reply)


# -- the controller: the same checks without a server ------------------------------------------

@pytest.fixture()
def ctl(tmp_path: Path) -> UiController:
    runs = tmp_path / "runs"
    policy = PathPolicy.for_app(runs, Config(), refused=[runs / "uploads"])
    return UiController(JobManager(runs / "ui_jobs"), policy)


def _train_values(tmp_path: Path, **sections: dict) -> list:
    runs = tmp_path / "runs"
    config = replace(Config(), data={"dataset_dir": str(runs / "data")}, train={"out_dir": str(runs / "run")},
                     **sections)
    return config_to_values(config)


def test_train_start_checkpoint_from_uploads_or_outside_is_refused(ctl: UiController, tmp_path: Path) -> None:
    upload = tmp_path / "runs" / "uploads" / "abc" / "checkpoint.pt"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    job_id, status = ctl.start_train(_train_values(tmp_path), str(upload))
    assert job_id is None and "is a file uploaded to the web server" in status
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"x")
    job_id, status = ctl.start_train(_train_values(tmp_path), str(elsewhere))
    assert job_id is None and "initial checkpoint" in status and "is outside the folders" in status
    assert ctl.jobs.list() == []


def test_jobs_may_not_write_or_read_config_folders_outside_the_roots(ctl: UiController, tmp_path: Path) -> None:
    values = config_to_values(replace(Config(), train={"out_dir": str(tmp_path / "elsewhere")}))
    job_id, status = ctl.start_train(values)
    assert job_id is None and status.startswith("**Error:** train.out_dir ") and "is outside" in status
    job_id, status = ctl.start_synth(_train_values(tmp_path, distill={"teacher_cache_dir": "/etc"}))
    assert job_id is None and status.startswith("**Error:** distill.teacher_cache_dir '/etc' is outside")
    export = tmp_path / "runs" / "export"
    export.mkdir(parents=True)
    _, status = ctl.start_simulate(str(export), [str(tmp_path / "evil.yaml")], True, 10, 5)
    assert status.startswith("**Error:** unknown MCU budget")
    _, status = ctl.start_simulate(str(export), ["esp32s3"], True, 10, 5, dataset_dir="/etc")
    roots = ", ".join(str(r) for r in ctl.policy.roots)
    assert status == (f"**Error:** dataset folder '/etc' is outside the folders the UI may use ({roots}); "
                      "start `tinyconv ui` with `--allow-path DIR` to add one")
    _, status = ctl.start_export(str(tmp_path / "runs" / "x.pt"), ["tflite"], 10, str(tmp_path / "out"))
    assert "checkpoint not found" in status  # the checkpoint is checked first
    ckpt = tmp_path / "runs" / "x.pt"
    ckpt.write_bytes(b"x")
    _, status = ctl.start_export(str(ckpt), ["tflite"], 10, str(tmp_path / "out"))
    assert status.startswith("**Error:** output folder ") and "is outside" in status
    assert ctl.jobs.list() == []


def test_messages_are_cut_to_a_sane_length(ctl: UiController, tmp_path: Path) -> None:
    huge = "x" * 100_000
    _, status = ctl.load(str(tmp_path / "runs" / f"{huge}.yaml"))
    assert status.startswith("**Error:**") and len(status) <= MAX_MESSAGE_CHARS + 100
    _, status = ctl.start_export(str(tmp_path / "runs" / huge), ["tflite"], 10)
    assert status.startswith("**Error:**") and "more characters not shown" in status
    assert len(status) <= MAX_MESSAGE_CHARS + 100


def test_policy_refuses_roots_that_expose_home_or_the_disk(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"--runs '/' would let the UI read and serve /, which holds your home"):
        PathPolicy.for_app("/")
    with pytest.raises(PathError, match=r"--allow-path .* which holds your home folder"):
        PathPolicy.for_app(tmp_path / "runs", allow_paths=[Path.home()])
    policy = PathPolicy.for_app(tmp_path / "runs")
    with pytest.raises(PathError, match=r"^enter a checkpoint$"):
        policy.check("  ", "checkpoint")
    with pytest.raises(PathError, match=r"contains a NUL character"):
        policy.check("runs/\x00x", "checkpoint")


def test_upload_folder_mirror_matches_gradio() -> None:
    from gradio import utils

    upload, cache = gradio_upload_dirs()
    assert upload == Path(utils.get_upload_folder()).resolve()
    assert cache == Path(os.path.abspath(utils.get_cache_folder())).resolve()
