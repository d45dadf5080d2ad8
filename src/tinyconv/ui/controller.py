"""The UI's actions as plain functions: start, poll and cancel jobs; load and save configs.

Gradio-free so tests call exactly what the buttons call. Every action returns a Markdown status
line; failures become `**Error:** message` with the library's own message (ConfigError names the
key and suggests the closest one), never a stack trace. Unexpected exceptions are logged with
their traceback on the server for the developer.

Every path typed into the UI goes through the controller's `PathPolicy` (see `tinyconv.ui.paths`)
before a job or a config load may open it, and every message is cut to `MAX_MESSAGE_CHARS`: a few
hundred bytes of hostile input must not become megabytes of reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyconv.config import Config, ConfigError, save_config
from tinyconv.errors import TinyconvError
from tinyconv.ui import panel_config, views
from tinyconv.ui.jobs import CANCELLED, FAILED, LOST, RUNNING, SUCCEEDED, Job, JobError, JobManager, cli_argv, tail
from tinyconv.ui.paths import PathPolicy

log = logging.getLogger(__name__)

# Errors whose message is written for the user (config, datasets, checkpoints, budgets, files).
USER_ERRORS: tuple[type[BaseException], ...] = (TinyconvError, ValueError, OSError, KeyError)

# Longest message a status line shows; the rest is cut with a note of how much was cut.
MAX_MESSAGE_CHARS = 2000

JOB_KINDS = ("synth", "train", "export", "simulate")


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters not shown)"


def error_md(message: str) -> str:
    return f"**Error:** {shorten(message)}"


def user_message(exc: BaseException) -> str:
    """The text to show for an exception: its message, without the traceback."""
    if isinstance(exc, KeyError) and exc.args:
        return f"missing {exc.args[0]}"
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def failure_md(exc: Exception) -> str:
    """The UI's error line; unexpected exceptions also go to the server log with the traceback."""
    if not isinstance(exc, USER_ERRORS):
        log.error("unexpected error in a UI action", exc_info=exc)
    return error_md(user_message(exc))


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def job_status_md(job: Job | None, progress: str = "") -> str:
    """One line: which job, its state, how long, progress or the readable error."""
    if job is None:
        return "No job yet."
    head = f"`{job.kind}` job `{job.id}`"
    if job.status == RUNNING:
        return f"{head}: **running** for {_fmt_s(job.elapsed_s)}" + (f" · {progress}" if progress else "")
    if job.status == SUCCEEDED:
        note = " (a budget check failed: see the table)" if job.returncode == 1 and job.kind == "simulate" else ""
        return f"{head}: **finished** in {_fmt_s(job.elapsed_s)}{note}" + (f" · {progress}" if progress else "")
    if job.status == CANCELLED:
        return f"{head}: **cancelled** after {_fmt_s(job.elapsed_s)}"
    if job.status in (FAILED, LOST):
        return f"{head}: **failed** after {_fmt_s(job.elapsed_s)}\n\n{error_md(job.error or 'unknown error')}"
    return f"{head}: {job.status}"


class UiController:
    """Actions behind the buttons; `jobs` owns the run folder where job state persists; `policy`
    says which paths the buttons may use (default: only the folder that holds `jobs.root`)."""

    def __init__(self, jobs: JobManager, policy: PathPolicy | None = None) -> None:
        self.jobs = jobs
        self.policy = policy if policy is not None else PathPolicy.for_app(jobs.root.parent)

    # -- config panel ------------------------------------------------------------------------
    def validate(self, values: Sequence[Any]) -> str:
        try:
            config = panel_config.values_to_config(values)
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return failure_md(exc)
        m = config.model
        return shorten(f"Config is valid: model `{m.name}` (depthwise={m.tiny_conv_use_depthwise}, width "
                       f"{m.width_multiplier}), {config.train.epochs} epochs, QAT "
                       f"{'on' if config.qat.enabled else 'off'}, distillation "
                       f"{'on' if config.distill.enabled else 'off'}.")

    def _yaml_path(self, path: str) -> str:
        """`path` if the UI may load or save a config there (a .yaml file under the runs or configs
        folders, symlinks resolved); checked before the file is opened, so a refused file's content
        never reaches a message. Empty stays empty for panel_config's own message."""
        text = str(path or "").strip()
        if not text:
            return text
        if Path(text).suffix not in (".yaml", ".yml"):
            raise ConfigError(f"a config is a .yaml file, got {shorten(Path(text).name, 200)!r}")
        self.policy.check(text, "config path", configs=True)
        return text

    def load(self, path: str) -> tuple[list[Any] | None, str]:
        """(widget values or None, status) from a YAML config file."""
        try:
            from tinyconv.recipes import list_recipes, recipe_path

            name = str(path or "").strip()
            if name in list_recipes():  # a packaged recipe: read-only package data, no user path to check
                return panel_config.load_values(recipe_path(name)), f"Loaded the packaged recipe `{name}`."
            text = self._yaml_path(path)
            return panel_config.load_values(text), f"Loaded `{shorten(text, 200)}`."
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return None, failure_md(exc)

    def save(self, values: Sequence[Any], path: str) -> tuple[str | None, str]:
        """(saved path or None, status)."""
        try:
            out = panel_config.save_values(values, self._yaml_path(path))
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return None, failure_md(exc)
        return str(out), shorten(f"Saved `{out}`; use it with `tinyconv train --config {out}`.")

    # -- starting jobs -----------------------------------------------------------------------
    def _start_with_config(self, kind: str, values: Sequence[Any],
                           build: Callable[[Config, Path], tuple[list[str], dict[str, str], dict[str, Any]]]
                           ) -> tuple[str | None, str]:
        try:
            config = panel_config.values_to_config(values)
            self.policy.check_config(config)
            running = self.jobs.latest(kind)
            if running is not None and running.status == RUNNING:
                raise JobError(f"a {kind} job is already running ({running.id}); wait for it or cancel it first")
            job_id, folder = self.jobs.new_folder(kind)
            # The job reads its config from a YAML file, exactly as a user would run the CLI.
            save_config(config, folder / "config.yaml")
            args, outputs, meta = build(config, folder / "config.yaml")
            job = self.jobs.start(kind, cli_argv(*args), job_id=job_id, outputs=outputs, meta=meta)
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return None, failure_md(exc)
        return job.id, job_status_md(job)

    def start_synth(self, values: Sequence[Any]) -> tuple[str | None, str]:
        def build(config: Config, cfg: Path) -> tuple[list[str], dict[str, str], dict[str, Any]]:
            out = Path(config.data.dataset_dir).resolve()
            return (["data", "synth", "--config", str(cfg), "--out", str(out)], {"dataset_dir": str(out)},
                    {"wake_word": config.data.wake_word})

        return self._start_with_config("synth", values, build)

    def start_train(self, values: Sequence[Any], init_checkpoint: str = "") -> tuple[str | None, str]:
        def build(config: Config, cfg: Path) -> tuple[list[str], dict[str, str], dict[str, Any]]:
            run_dir = Path(config.train.out_dir).resolve()
            args = ["train", "--config", str(cfg), "--out", str(run_dir)]
            if init_checkpoint.strip():
                init = self.policy.check(init_checkpoint, "initial checkpoint")
                if not init.is_file():
                    raise FileNotFoundError(f"initial checkpoint not found: {init}")
                args += ["--init", str(init.resolve())]
            epochs = config.qat.epochs if config.qat.enabled else config.train.epochs
            m = config.model
            return (args, {"run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoint.pt")},
                    {"epochs": epochs, "model": m.name, "depthwise": m.tiny_conv_use_depthwise})

        return self._start_with_config("train", values, build)

    def start_export(self, checkpoint: str, formats: Sequence[str], num_calibration: float | None,
                     out_dir: str = "") -> tuple[str | None, str]:
        try:
            # Checked before the file is touched: an upload posted to Gradio's route is refused here.
            ckpt = self.policy.check(checkpoint, "checkpoint") if (checkpoint or "").strip() else None
            if ckpt is None or not ckpt.is_file():
                raise FileNotFoundError(f"checkpoint not found: {checkpoint!r} (train a model first, or enter "
                                        f"the path of a checkpoint.pt)")
            if not formats:
                raise ValueError("choose at least one export format")
            n = int(num_calibration or 0)
            if n < 1:
                raise ValueError("calibration examples must be >= 1")
            out = self.policy.check(out_dir, "output folder") if out_dir.strip() else ckpt.parent / "export"
            args = ["export", str(ckpt.resolve()), "--formats", ",".join(formats), "--out", str(out),
                    "--num-calibration", str(n)]
            job = self.jobs.start("export", cli_argv(*args), outputs={"export_dir": str(out)})
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return None, failure_md(exc)
        return job.id, job_status_md(job)

    def start_simulate(self, target: str, budgets: Sequence[str], streaming: bool, max_clips: float | None,
                       repeats: float | None, dataset_dir: str = "") -> tuple[str | None, str]:
        try:
            tgt = self.policy.check(target, "export") if (target or "").strip() else None
            if tgt is None or not tgt.exists():
                raise FileNotFoundError(f"export not found: {target!r} (export a checkpoint first, or enter an "
                                        f"export folder or .tflite file)")
            if not budgets:
                raise ValueError("choose at least one MCU budget")
            from tinyconv.firmware_sim.budgets import list_budgets  # torch-free

            # The CLI also takes a budget as a YAML path: from the UI only the listed names go through.
            unknown = [b for b in budgets if b not in list_budgets()]
            if unknown:
                raise ValueError(f"unknown MCU budget {shorten(str(unknown[0]), 200)!r}; choose from "
                                 f"{', '.join(list_budgets())}")
            tgt = tgt.resolve()
            out = tgt / "sim" if tgt.is_dir() else tgt.parent / f"{tgt.stem}_sim"
            args = ["simulate", str(tgt), "--out", str(out), "--repeats", str(max(1, int(repeats or 1)))]
            for b in budgets:
                args += ["--budget", b]
            if streaming:
                args.append("--streaming")
            if max_clips:
                args += ["--max-clips", str(int(max_clips))]
            if dataset_dir.strip():
                args += ["--dataset", str(self.policy.check(dataset_dir, "dataset folder"))]
            # Exit code 1 = a budget failed: a result for the table, not a crashed job.
            job = self.jobs.start("simulate", cli_argv(*args), outputs={"sim_dir": str(out)}, ok_returncodes=(0, 1))
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return None, failure_md(exc)
        return job.id, job_status_md(job)

    # -- polling and cancelling --------------------------------------------------------------
    def job(self, job_id: str | None) -> Job | None:
        if not job_id:
            return None
        try:
            return self.jobs.get(job_id)
        except JobError:
            return None

    def latest_ids(self) -> dict[str, str | None]:
        """The newest job of each kind: what a refreshed page reattaches to."""
        out: dict[str, str | None] = {}
        for kind in JOB_KINDS:
            job = self.jobs.latest(kind)
            out[kind] = job.id if job else None
        return out

    def cancel(self, job_id: str | None) -> str:
        job = self.job(job_id)
        if job is None:
            return "No job to cancel."
        try:
            job = self.jobs.cancel(job.id)
        except Exception as exc:  # noqa: BLE001 (shown to the user; unexpected ones logged too)
            return failure_md(exc)
        return job_status_md(job)

    def log_tail(self, job_id: str | None) -> str:
        job = self.job(job_id)
        return tail(job.log_path) if job else ""

    def signature(self, job_id: str | None) -> str:
        """Changes when anything a tab shows may have changed; unchanged polls skip re-rendering."""
        job = self.job(job_id)
        if job is None:
            return ""
        stamps = [job.status, str(int(job.elapsed_s)) if job.status == RUNNING else ""]
        for p in [job.log_path, *(Path(v) / "history.json" for k, v in job.outputs.items() if k == "run_dir")]:
            try:
                stamps.append(str(p.stat().st_mtime_ns))
            except FileNotFoundError:
                stamps.append("-")
        return f"{job.id}|" + "|".join(stamps)

    def train_progress(self, job: Job | None) -> str:
        if job is None:
            return ""
        _, acc, epochs_done = views.history_frames(job.outputs.get("run_dir", ""))
        total = job.meta.get("epochs", "?")
        text = f"epoch {epochs_done}/{total} done"
        if job.status == SUCCEEDED and not acc.empty:
            best = acc[acc.series == "val_accuracy"].value.max()
            text += f" · best val accuracy {best:.3f} · checkpoint `{job.outputs.get('checkpoint')}`"
        return text

