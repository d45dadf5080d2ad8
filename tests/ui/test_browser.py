"""End to end in a real browser: Debian's chromium, headless, driven by Playwright.

Opens the app (served by `tinyconv ui` in a subprocess on a free port), shows a bad config value's
error, switches the depthwise toggle, synthesizes a tiny dataset, trains a tiny model for two
epochs (reloading the page mid-run to check the job survives), exports it, downloads a file and
simulates it against MCU budgets. Screenshots land in the pytest tmp dir. About a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import running_ui

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline; the system browser is launched instead.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,  # a real Chromium session over a tiny run (~1-2 min); CI runs it in the -m slow step
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; the set-up installs it)"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (the set-up installs it)"),
]


def _kill_jobs(runs: Path) -> None:
    """Jobs run in their own sessions (they outlive a page, by design): stop any the test left."""
    for path in runs.glob("ui_jobs/*/job.json"):
        job = json.loads(path.read_text())
        if job.get("status") == "running":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job["pid"], signal.SIGKILL)


@pytest.fixture()
def app_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    runs = tmp_path / "runs"
    config = {
        "data": {"dataset_dir": str(runs / "data"), "num_positive": 24, "num_confusable": 12,
                 "num_other_speech": 12, "num_background": 6},
        "augment": {"num_room_impulse_responses": 2},
        "model": {"name": "tinyconv_test"},
        "train": {"out_dir": str(runs / "run"), "epochs": 2, "batch_size": 32, "early_stopping_patience": 100},
    }
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(config))
    try:
        with running_ui(["--config", str(cfg), "--runs", str(runs)], cwd=REPO, log=tmp_path / "server.log",
                        timeout_s=90) as url:
            yield url + "/", tmp_path
    finally:
        _kill_jobs(runs)


def test_tiny_run_in_the_browser(app_url: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, tmp = app_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)

            # Config panel: a bad value shows the typed config's message, not a stack trace.
            dropout = page.locator("#cfg-model-dropout input")
            dropout.fill("1.5")
            page.locator("#cfg-validate").click()
            expect(page.locator("#cfg-status")).to_have_text("Error: model.dropout must be in [0, 1), got 1.5")
            dropout.fill("0.1")
            toggle = page.locator("#cfg-model-tiny_conv_use_depthwise input[type=checkbox]")
            expect(toggle).to_be_checked()
            toggle.uncheck()  # TinyConv V1: standard convolutions
            page.locator("#cfg-validate").click()
            expect(page.locator("#cfg-status")).to_contain_text("depthwise=False")
            page.screenshot(path=str(tmp / "1_config.png"))

            page.get_by_role("tab", name="Data").click()
            page.locator("#synth-start").click()
            expect(page.locator("#synth-status")).to_contain_text("finished", timeout=60_000)
            # A sample clip to play: the player got a WAV the server serves.
            expect(page.locator("#synth-clips input")).to_have_value(re.compile(r"^positive "))
            wav = page.locator("#synth-audio a[download$='.wav']")
            expect(wav).to_have_count(1)
            clip = page.request.get(wav.get_attribute("href") or "")
            assert clip.status == 200 and clip.body()[:4] == b"RIFF"
            page.screenshot(path=str(tmp / "2_data.png"), full_page=True)

            page.get_by_role("tab", name="Train").click()
            page.locator("#train-start").click()
            expect(page.locator("#train-status")).to_contain_text("running", timeout=10_000)
            # The job lives on the server: a refreshed page reattaches to it.
            page.reload()
            page.get_by_role("tab", name="Train").click()
            expect(page.locator("#train-status")).to_contain_text("finished", timeout=90_000)
            expect(page.locator("#train-status")).to_contain_text("epoch 2/2 done")
            expect(page.locator("#train-loss")).to_contain_text("train_loss")  # the plot's legend
            page.screenshot(path=str(tmp / "3_train.png"), full_page=True)

            job_configs = list((tmp / "runs" / "ui_jobs").glob("*-train-*/config.yaml"))
            assert len(job_configs) == 1
            assert yaml.safe_load(job_configs[0].read_text())["model"]["tiny_conv_use_depthwise"] is False

            page.get_by_role("tab", name="Export").click()
            expect(page.locator("#export-ckpt textarea")).to_have_value(str(tmp / "runs" / "run" / "checkpoint.pt"))
            page.locator("#export-start").click()
            expect(page.locator("#export-status")).to_contain_text("finished", timeout=90_000)
            link = page.locator("#export-files a[href$='model_int8.tflite']")
            expect(link).to_have_count(1)
            download = page.request.get(link.get_attribute("href") or "")
            assert download.status == 200 and download.body()[4:8] == b"TFL3"
            page.screenshot(path=str(tmp / "4_export.png"), full_page=True)

            page.get_by_role("tab", name="Simulate").click()
            expect(page.locator("#sim-target textarea")).to_have_value(str(tmp / "runs" / "run" / "export"))
            page.locator("#sim-start").click()
            expect(page.locator("#sim-status")).to_contain_text("finished", timeout=90_000)
            expect(page.locator("#sim-table")).to_contain_text("esp32s3")
            expect(page.locator("#sim-verdict")).to_contain_text("every budget fits")
            page.screenshot(path=str(tmp / "5_simulate.png"), full_page=True)
        finally:
            browser.close()
