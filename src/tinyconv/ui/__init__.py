"""Gradio UI over the same typed config as the CLI: config panel, data, train, export, simulate.

`tinyconv ui` serves it; `tinyconv.ui.app.build_app` builds it. Gradio is imported only by
`tinyconv.ui.app`, so the panel logic, job manager and views import without it.
"""
