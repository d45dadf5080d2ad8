"""The Gradio app: config panel and one tab per stage (data, train, export, simulate).

Layout only; the actions live in `UiController` and the views in `views`. Job state lives on
the server under the runs folder: on page load each tab reattaches to the newest job of its
kind, and one timer polls the jobs. A poll re-renders a tab only when its job changed
(`UiController.signature`), so an idle page costs a few file stats per second.

Security (see `tinyconv.ui.paths` and docs/UI.md): Gradio serves only the policy's roots (the runs
folder, the starting config's folders, `--allow-path`s), never the working directory; every path
typed in the UI is checked by the same policy before a job may open it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tinyconv.config import Config
from tinyconv.ui import panel_config, views
from tinyconv.ui.controller import UiController, job_status_md
from tinyconv.ui.jobs import SUCCEEDED, JobManager
from tinyconv.ui.paths import PathPolicy

# Gradio phones home for analytics unless told not to; the app must work offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # after the environment switch above

POLL_S = 1.0
MAX_UPLOAD_BYTES = 1024 * 1024  # the app asks for no uploads; see launch()
EXPORT_FORMATS = ["tflite", "onnx", "c"]


def _budget_names() -> list[str]:
    from tinyconv.firmware_sim.budgets import list_budgets  # torch-free

    return list_budgets()


def build_app(config: Config, runs_dir: str | Path, policy: PathPolicy | None = None, *,
              config_source: str | None = None, overrides: tuple[str, ...] = ()) -> gr.Blocks:
    """The whole UI; jobs and their state are kept under `runs_dir/ui_jobs`; `policy` (default: the
    runs folder and the folders of `config`) says which paths the buttons may use. `config` was read
    from `config_source` (a YAML path or recipe name; None: the library defaults) with `overrides`:
    the path box shows that source and a line says so."""
    policy = policy if policy is not None else PathPolicy.for_app(runs_dir, config)
    ctl = UiController(JobManager(Path(runs_dir) / "ui_jobs"), policy)
    skip = gr.skip

    with gr.Blocks(title="tinyconv", analytics_enabled=False) as demo:
        gr.Markdown("# tinyconv: wake-word models for microcontrollers\n"
                    "Edit the config, then synthesize data, train, export and simulate. Jobs run in the "
                    "background on the server: refreshing the page reattaches to them.")
        timer = gr.Timer(POLL_S)
        job_ids = {k: gr.State(None) for k in ("synth", "train", "export", "simulate")}
        sigs = {k: gr.State("") for k in job_ids}

        with gr.Tabs():
            # -- config ------------------------------------------------------------------------
            with gr.Tab("Config", id="config"):
                with gr.Row():
                    cfg_path = gr.Textbox(label="YAML config path or recipe name", value=config_source or "",
                                          placeholder="my_config.yaml, or a recipe: quickstart", scale=3,
                                          elem_id="cfg-path")
                    load_btn = gr.Button("Load YAML", elem_id="cfg-load")
                    save_btn = gr.Button("Save YAML", elem_id="cfg-save")
                    validate_btn = gr.Button("Validate", variant="primary", elem_id="cfg-validate")
                cfg_status = gr.Markdown(panel_config.describe_source(config_source, overrides),
                                         elem_id="cfg-status")
                cfg_file = gr.File(label="Saved config", visible=False, interactive=False)
                panel = panel_config.build_panel(config)

            # -- data --------------------------------------------------------------------------
            with gr.Tab("Data", id="data"):
                gr.Markdown("Synthesize a dataset for `data.wake_word` into `data.dataset_dir` (sizes and voices "
                            "come from the Data and Augmentation sections of the config).")
                with gr.Row():
                    synth_btn = gr.Button("Synthesize dataset", variant="primary", elem_id="synth-start")
                    synth_cancel = gr.Button("Cancel", variant="stop", elem_id="synth-cancel")
                synth_status = gr.Markdown("No job yet.", elem_id="synth-status")
                with gr.Row():
                    with gr.Column():
                        clip_pick = gr.Dropdown(label="Sample clips", choices=[], elem_id="synth-clips")
                        clip_audio = gr.Audio(label="Play", type="filepath", interactive=False,
                                              elem_id="synth-audio")
                    synth_table = gr.Dataframe(label="Clips per split and label", interactive=False)
                synth_log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, autoscroll=True)

            # -- train -------------------------------------------------------------------------
            with gr.Tab("Train", id="train"):
                gr.Markdown("Train the student described by the config (QAT when `qat.enabled`, distillation when "
                            "`distill.enabled`) into `train.out_dir`.")
                with gr.Row():
                    init_ckpt = gr.Textbox(label="Start from checkpoint (optional, e.g. float model before QAT)",
                                           scale=3)
                    train_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
                    train_cancel = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
                train_status = gr.Markdown("No job yet.", elem_id="train-status")
                with gr.Row():
                    loss_plot = gr.LinePlot(x="epoch", y="value", color="series", title="Loss", x_title="epoch",
                                            y_title="loss", elem_id="train-loss")
                    acc_plot = gr.LinePlot(x="epoch", y="value", color="series", title="Validation accuracy",
                                           x_title="epoch", y_title="", y_lim=[0, 1], elem_id="train-acc")
                train_log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, autoscroll=True)

            # -- export ------------------------------------------------------------------------
            with gr.Tab("Export", id="export"):
                with gr.Row():
                    export_ckpt = gr.Textbox(label="Checkpoint", scale=3, elem_id="export-ckpt")
                    export_formats = gr.CheckboxGroup(EXPORT_FORMATS, value=EXPORT_FORMATS, label="Formats")
                    export_ncal = gr.Number(500, precision=0, label="Calibration examples (float checkpoints)")
                export_out = gr.Textbox(label="Output folder (default: next to the checkpoint, export/)")
                with gr.Row():
                    export_btn = gr.Button("Export", variant="primary", elem_id="export-start")
                    export_cancel = gr.Button("Cancel", variant="stop", elem_id="export-cancel")
                export_status = gr.Markdown("No job yet.", elem_id="export-status")
                with gr.Row():
                    export_files = gr.File(label="Download", file_count="multiple", interactive=False,
                                           elem_id="export-files")
                    export_md = gr.Markdown()
                export_log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, autoscroll=True)

            # -- simulate ----------------------------------------------------------------------
            with gr.Tab("Simulate", id="simulate"):
                budgets = _budget_names()
                with gr.Row():
                    sim_target = gr.Textbox(label="Export folder or .tflite", scale=3, elem_id="sim-target")
                    sim_budgets = gr.CheckboxGroup(budgets, value=budgets, label="MCU budgets",
                                                   elem_id="sim-budgets", scale=3)
                with gr.Row():
                    sim_streaming = gr.Checkbox(True, label="Streaming wake-word evaluation (DET curve)")
                    sim_max = gr.Number(200, precision=0, label="Max test clips (0 = all)")
                    sim_repeats = gr.Number(20, precision=0, label="Latency repeats per runtime")
                    sim_dataset = gr.Textbox(label="Dataset (default: the export's)")
                with gr.Row():
                    sim_btn = gr.Button("Simulate", variant="primary", elem_id="sim-start")
                    sim_cancel = gr.Button("Cancel", variant="stop", elem_id="sim-cancel")
                sim_status = gr.Markdown("No job yet.", elem_id="sim-status")
                sim_verdict = gr.Markdown(elem_id="sim-verdict")
                sim_table = gr.Dataframe(label="MCU budgets: pass/fail", interactive=False, elem_id="sim-table")
                with gr.Row():
                    sim_det = gr.Image(label="DET curve (streaming)", type="filepath", interactive=False)
                    sim_mem = gr.Image(label="Memory (arena)", type="filepath", interactive=False)
                sim_runtimes = gr.Dataframe(label="Runtimes (host)", interactive=False)
                with gr.Accordion("Full report (report.md)", open=False):
                    sim_md = gr.Markdown()
                sim_log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, autoscroll=True)

        comps = panel.components

        # -- config actions ----------------------------------------------------------------------
        def on_load(path: str) -> list[Any]:
            values, status = ctl.load(path)
            return [status, *(values if values is not None else [skip()] * len(comps))]

        def on_save(path: str, *values: Any) -> list[Any]:
            saved, status = ctl.save(values, path)
            return [status, gr.File(value=saved, visible=saved is not None)]

        # Named endpoints: hiding them would not help (the page calls them too), naming keeps the
        # security tests' HTTP calls stable.
        load_btn.click(on_load, [cfg_path], [cfg_status, *comps], api_name="load_yaml")
        save_btn.click(on_save, [cfg_path, *comps], [cfg_status, cfg_file], api_name="save_yaml")
        validate_btn.click(lambda *v: ctl.validate(v), comps, cfg_status, api_name="validate")

        # -- start / cancel ----------------------------------------------------------------------
        # A start returns the new job id (or keeps the old one when it failed) and resets the
        # tab's signature so the next poll renders it.
        def started(result: tuple[str | None, str], old: str | None) -> tuple[Any, str, str]:
            job_id, status = result
            return (job_id or old), status, ""

        synth_btn.click(lambda old, *v: started(ctl.start_synth(v), old), [job_ids["synth"], *comps],
                        [job_ids["synth"], synth_status, sigs["synth"]], api_name="start_synth")
        train_btn.click(lambda old, init, *v: started(ctl.start_train(v, init), old),
                        [job_ids["train"], init_ckpt, *comps], [job_ids["train"], train_status, sigs["train"]],
                        api_name="start_train")
        export_btn.click(lambda old, *a: started(ctl.start_export(*a), old),
                         [job_ids["export"], export_ckpt, export_formats, export_ncal, export_out],
                         [job_ids["export"], export_status, sigs["export"]], api_name="start_export")
        sim_btn.click(lambda old, *a: started(ctl.start_simulate(*a), old),
                      [job_ids["simulate"], sim_target, sim_budgets, sim_streaming, sim_max, sim_repeats,
                       sim_dataset], [job_ids["simulate"], sim_status, sigs["simulate"]], api_name="start_simulate")
        for kind, btn, status in (("synth", synth_cancel, synth_status), ("train", train_cancel, train_status),
                                  ("export", export_cancel, export_status), ("simulate", sim_cancel, sim_status)):
            btn.click(ctl.cancel, [job_ids[kind]], [status])
        # Gradio copies a returned file into its cache and serves it: only files under the roots.
        clip_pick.change(lambda p: p if p and policy.allows(p) else None, [clip_pick], [clip_audio])

        # -- polling -----------------------------------------------------------------------------
        def changed(job_id: str | None, last: str) -> tuple[bool, str]:
            sig = ctl.signature(job_id)
            return sig != last and bool(sig), sig

        def poll_synth(job_id: str | None, last: str) -> list[Any]:
            ok, sig = changed(job_id, last)
            if not ok:
                return [skip()] * 6
            job = ctl.job(job_id)
            status = job_status_md(job)
            if job is None or job.status != SUCCEEDED:
                return [status, ctl.log_tail(job_id), skip(), skip(), skip(), sig]
            # A manifest may name files anywhere (../../, absolute): offer only those under the roots.
            clips = [c for c in views.sample_clips(job.outputs["dataset_dir"]) if policy.allows(c[1])]
            first = clips[0][1] if clips else None
            return [status, ctl.log_tail(job_id), gr.Dropdown(choices=clips, value=first), first,
                    views.dataset_summary(job.outputs["dataset_dir"]), sig]

        def poll_train(job_id: str | None, last: str) -> list[Any]:
            ok, sig = changed(job_id, last)
            if not ok:
                return [skip()] * 6
            job = ctl.job(job_id)
            loss, acc, _ = views.history_frames(job.outputs.get("run_dir", "")) if job else (None, None, 0)
            ckpt = job.outputs.get("checkpoint") if job is not None and job.status == SUCCEEDED else None
            return [job_status_md(job, ctl.train_progress(job)), loss, acc, ctl.log_tail(job_id),
                    ckpt if ckpt else skip(), sig]

        def poll_export(job_id: str | None, last: str) -> list[Any]:
            ok, sig = changed(job_id, last)
            if not ok:
                return [skip()] * 5
            job = ctl.job(job_id)
            if job is None or job.status != SUCCEEDED:
                return [job_status_md(job), ctl.log_tail(job_id), skip(), skip(), sig]
            out = job.outputs["export_dir"]
            return [job_status_md(job), ctl.log_tail(job_id), views.export_files(out), views.export_summary(out),
                    sig]

        def poll_sim(job_id: str | None, last: str) -> list[Any]:
            ok, sig = changed(job_id, last)
            if not ok:
                return [skip()] * 9
            job = ctl.job(job_id)
            if job is None or job.status != SUCCEEDED:
                return [job_status_md(job), ctl.log_tail(job_id), *[skip()] * 6, sig]
            v = views.simulation_view(job.outputs["sim_dir"])
            return [job_status_md(job), ctl.log_tail(job_id), f"### {v['verdict']}", v["budgets"], v["det"],
                    v["memory"], v["runtimes"], v["markdown"], sig]

        # After an export finishes, the simulate tab's target follows it (like the checkpoint does
        # for the export tab), so a user can click through the stages in order.
        def export_target(job_id: str | None) -> Any:
            job = ctl.job(job_id)
            return job.outputs["export_dir"] if job is not None and job.status == SUCCEEDED else skip()

        poll = dict(show_progress="hidden", queue=True)
        timer.tick(poll_synth, [job_ids["synth"], sigs["synth"]],
                   [synth_status, synth_log, clip_pick, clip_audio, synth_table, sigs["synth"]], **poll)
        timer.tick(poll_train, [job_ids["train"], sigs["train"]],
                   [train_status, loss_plot, acc_plot, train_log, export_ckpt, sigs["train"]], **poll)
        timer.tick(poll_export, [job_ids["export"], sigs["export"]],
                   [export_status, export_log, export_files, export_md, sigs["export"]], **poll)
        timer.tick(poll_sim, [job_ids["simulate"], sigs["simulate"]],
                   [sim_status, sim_log, sim_verdict, sim_table, sim_det, sim_mem, sim_runtimes, sim_md,
                    sigs["simulate"]], **poll)
        export_status.change(export_target, [job_ids["export"]], [sim_target], show_progress="hidden")

        # A page (re)load reattaches every tab to the newest job of its kind on the server.
        def reattach() -> list[Any]:
            ids = ctl.latest_ids()
            return [*(ids[k] for k in job_ids), *([""] * len(sigs))]

        demo.load(reattach, None, [*job_ids.values(), *sigs.values()])
    return demo


def launch(config: Config, runs_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
           allowed_paths: list[str] | None = None, auth: list[tuple[str, str]] | None = None,
           block: bool = True, config_source: str | None = None, overrides: tuple[str, ...] = ()) -> gr.Blocks:
    """Build and serve the app. Gradio serves files only from the policy's roots (the runs folder,
    the starting config's folders, `allowed_paths`), not from the working directory; `auth`
    (user, password) pairs put a login page in front of every route."""
    policy = PathPolicy.for_app(runs_dir, config, allowed_paths or ())
    demo = build_app(config, runs_dir, policy, config_source=config_source, overrides=overrides)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                allowed_paths=[str(r) for r in policy.roots], auth=auth or None, ssr_mode=False, quiet=True,
                # Uploads are never loaded (PathPolicy refuses them), but cap them so an anonymous
                # client cannot fill the disk through the upload route.
                max_file_size=MAX_UPLOAD_BYTES,
                footer_links=[])
    return demo
