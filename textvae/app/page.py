"""The explorer's page: a Gradio app over a run's `Explorer` (explorer.py), served by `textvae serve`.

`build_app` lays out the tabs and wires each to one `Explorer` method; `launch_app` serves it. A Hugging
Face Space runs the same two calls. gradio is optional (`pip install 'textvae[app]'`) and imported inside
these functions. The page needs no network: analytics and gradio's update check are off, fonts are the
system's (no web fonts), server-side rendering (a Node server) and the share tunnel are off, and it
listens on 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations`: gradio reads the `gr.SelectData` hints of the selection
# handlers at run time, and a string annotation would name `gr`, which is not a module global here.

import functools
import os
from pathlib import Path

from ..decoding import decoding_defaults
from .explorer import (
    NEIGHBOUR_HEADERS,
    PATH_HEADERS,
    POINT_HEADERS,
    RECONSTRUCT_HEADERS,
    SAMPLE_HEADERS,
    TRANSFER_HEADERS,
    AppLimits,
    Explorer,
)

__all__ = ["AppLimits", "Explorer", "build_app", "import_gradio", "launch_app", "shown_in_page"]

# Read by gradio (analytics, update check) and huggingface_hub (telemetry) when the app is built.
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "monospace"]
QUEUE_SIZE = 64  # requests waiting at once; past it the page says the server is busy
MAX_UPLOAD = "1mb"  # the page uploads nothing; this bounds gradio's upload route all the same


def import_gradio():
    """gradio, with analytics and telemetry off; `ValueError` with the install line when it is missing."""
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import gradio
    except ImportError:
        raise ValueError("the explorer needs gradio: pip install 'textvae[app]'") from None
    return gradio


def shown_in_page(function):
    """`function` with its `ValueError`s raised as `gr.Error`: the page shows the message, not a traceback."""
    gr = import_gradio()

    @functools.wraps(function)
    def handler(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as error:  # the user's mistake: a message, and no traceback on the console either
            raise gr.Error(str(error), print_exception=False) from None

    return handler


def _table(gr, headers: list[str], elem_id: str, **options):
    return gr.Dataframe(headers=headers, elem_id=elem_id, interactive=False, wrap=True, **options)


def _point_rows(points: list[dict]) -> list[list]:
    return [[p[h] if h not in ("x", "y") else round(p[h], 3) for h in POINT_HEADERS] for p in points]


def _header(explorer: Explorer) -> str:
    pipeline = explorer.pipeline
    name = Path(pipeline.run_dir).name if pipeline.run_dir is not None else "a model in memory"
    config = pipeline.model.config
    corpus = f", corpus of {len(explorer.corpus)} sentences" if explorer.corpus else ""
    return f"# textvae explorer: `{name}`\nlatent_dim {config.latent_dim}, vocabulary {config.vocab_size}{corpus}"


def _sample_tab(gr, explorer: Explorer) -> None:
    limits = explorer.limits
    with gr.Row():
        n = gr.Slider(1, limits.max_samples, value=10, step=1, label="number")
        temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="temperature")
        top_k = gr.Slider(0, 200, value=0, step=1, label="top-k (0: all tokens)")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p (1: all the mass)")
    with gr.Row():
        prior = gr.Radio(explorer.priors, value="standard", label="prior")
        seed = gr.Number(0, precision=0, label="seed (empty: a new draw each time)", elem_id="sample-seed")
    button = gr.Button("Sample", variant="primary", elem_id="sample-run")
    table = _table(gr, SAMPLE_HEADERS, "sample-output", column_widths=["8%", "92%"])
    inputs = [n, temperature, top_k, top_p, prior, seed]
    button.click(shown_in_page(explorer.sample), inputs, table, api_name="sample")


def _reconstruct_tab(gr, explorer: Explorer) -> None:
    text = gr.Textbox(lines=4, label="sentences, one per line", elem_id="reconstruct-input")
    with gr.Row():
        strategy = gr.Radio(
            ["greedy", "beam", "sample"], value=decoding_defaults("reconstruct").strategy, label="decoding"
        )
        beam_size = gr.Slider(1, explorer.limits.max_beam_size, value=5, step=1, label="beam size")
        seed = gr.Number(0, precision=0, label="seed (sampling)")
    button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-run")
    table = _table(gr, RECONSTRUCT_HEADERS, "reconstruct-output")
    inputs = [text, strategy, beam_size, seed]
    button.click(shown_in_page(explorer.reconstruct), inputs, table, api_name="reconstruct")


def _interpolate_tab(gr, explorer: Explorer) -> None:
    with gr.Row():
        start = gr.Textbox(label="first sentence", elem_id="interpolate-start")
        end = gr.Textbox(label="last sentence", elem_id="interpolate-end")
    with gr.Row():
        steps = gr.Slider(2, explorer.limits.max_steps, value=8, step=1, label="steps (ends included)")
        method = gr.Radio(["lerp", "slerp"], value="lerp", label="path")
    button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-run")
    table = _table(gr, PATH_HEADERS, "interpolate-path", column_widths=["8%", "8%", "54%", "15%", "15%"])
    inputs = [start, end, steps, method]
    button.click(shown_in_page(explorer.interpolate), inputs, table, api_name="interpolate")


def _transfer_tab(gr, explorer: Explorer) -> None:
    limits = explorer.limits
    gr.Markdown("Move sentences along an attribute vector: the mean latent of one set minus the other's.")
    text = gr.Textbox(lines=3, label="sentences, one per line", elem_id="transfer-input")
    labels = sorted(set(explorer.labels)) if explorer.labels and explorer.corpus_mu is not None else []
    with gr.Row(visible=bool(labels)):
        source = gr.Dropdown(labels, value=labels[0] if labels else None, label="from corpus label")
        target = gr.Dropdown(labels, value=labels[-1] if labels else None, label="to corpus label")
    with gr.Accordion("or: example sentences of each side (used when typed)", open=not labels):
        with gr.Row():
            source_text = gr.Textbox(lines=4, label="from: examples, one per line")
            target_text = gr.Textbox(lines=4, label="to: examples, one per line")
    strength = gr.Slider(-limits.max_strength, limits.max_strength, value=1.0, step=0.1, label="strength")
    button = gr.Button("Transfer", variant="primary", elem_id="transfer-run")
    table = _table(gr, TRANSFER_HEADERS, "transfer-output")
    inputs = [text, source, target, source_text, target_text, strength]
    button.click(shown_in_page(explorer.transfer), inputs, table, api_name="transfer")
    gr.Markdown("### Analogy: a is to b as c is to ?")
    with gr.Row():
        boxes = [gr.Textbox(label=name, elem_id=f"analogy-{name}") for name in "abc"]
    button = gr.Button("Complete the analogy", elem_id="analogy-run")
    answer = gr.Textbox(label="?: decoded from z(c) + z(b) - z(a)", elem_id="analogy-output")
    button.click(shown_in_page(explorer.analogy), boxes, answer, api_name="analogy")


def _neighbours_tab(gr, explorer: Explorer) -> None:
    if explorer.corpus_mu is None:
        gr.Markdown("Start the explorer with `--corpus FILE` to search a corpus for a sentence's neighbours.")
        return
    query = gr.Textbox(label="sentence", elem_id="neighbours-query")
    k = gr.Slider(1, min(explorer.limits.max_neighbours, len(explorer.corpus)), value=5, step=1, label="k")
    button = gr.Button("Find neighbours", variant="primary", elem_id="neighbours-run")
    table = _table(gr, NEIGHBOUR_HEADERS, "neighbours-output", column_widths=["8%", "62%", "15%", "15%"])
    button.click(shown_in_page(explorer.neighbours), [query, k], table, api_name="neighbours")


def _map_tab(gr, explorer: Explorer) -> None:
    import pandas as pd

    if not explorer.points:
        gr.Markdown("Start the explorer with `--corpus FILE` (two sentences or more) to draw its latent map.")
        return
    points = explorer.map_points()
    frame = pd.DataFrame(points).round({"x": 3, "y": 3})
    ratios = [*explorer.map_variance, 0.0]
    shown = (
        f"the first {len(points)} of {len(explorer.corpus)}" if len(points) < len(explorer.corpus) else "all"
    )
    gr.Markdown(
        f"Posterior means of {shown} corpus sentences on their first two principal components. Hover a "
        "point to read its sentence; drag across the map to list the points in that band, double-click "
        "to list them all; select a row to decode its point."
    )
    colours = ["label", "length"] if explorer.labels else ["length"]
    colour = gr.Radio(colours, value=colours[0], label="colour by")
    plot = gr.ScatterPlot(
        frame,
        x="x",
        y="y",
        color=colours[0],
        tooltip=["sentence", colours[0]],
        x_title=f"PC1 ({100 * ratios[0]:.0f}% of the variance)",
        y_title=f"PC2 ({100 * ratios[1]:.0f}% of the variance)",
        height=480,
        elem_id="map-plot",
    )
    widths = ["8%", "56%", "8%", "12%", "8%", "8%"]
    table = _table(
        gr, POINT_HEADERS, "map-points", value=_point_rows(points), max_height=300, column_widths=widths
    )
    with gr.Row():
        sentence = gr.Textbox(label="selected sentence", elem_id="map-sentence")
        reconstruction = gr.Textbox(label="its reconstruction (from the posterior mean)")

    def recolour(by):
        return gr.ScatterPlot(color=by, tooltip=["sentence", by])

    def select_band(evt: gr.SelectData):
        return _point_rows(explorer.map_points(evt.index))

    def select_point(evt: gr.SelectData):
        return explorer.map_point(evt.row_value[0])

    def decode_point(point: int) -> tuple[str, str]:
        return explorer.map_point(point)

    colour.change(recolour, colour, plot, api_name=False)
    plot.select(shown_in_page(select_band), None, table, api_name=False)
    plot.double_click(lambda: _point_rows(explorer.map_points()), None, table, api_name=False)
    table.select(shown_in_page(select_point), None, [sentence, reconstruction], api_name=False)
    gr.api(shown_in_page(decode_point), api_name="map_point")  # the same, by point number, for API clients


def _training_tab(gr, explorer: Explorer) -> None:
    figures, configs = explorer.training()
    if not figures:
        gr.Markdown("This run has no validation history yet: its curves appear after the first epoch.")
    for name, figure in figures.items():
        gr.Plot(figure, format="png", label=name, show_label=True, elem_id=f"training-{Path(name).stem}")
    gr.JSON(configs, label="configuration (config.json, train_config.json)", open=True)


def build_app(
    run,
    corpus: str | Path | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    limits: AppLimits | None = None,
    device: str | None = None,
):
    """The explorer of a run folder (or of an `Explorer`), as a `gr.Blocks` to `launch_app` or to test.

    corpus: a file (text, CSV, TSV, JSONL; `text_column`, `label_column`) for the neighbours, the labels'
    transfer and the latent map, encoded once here. Tabs: Sample, Reconstruct, Interpolate, Transfer and
    analogy, Neighbours, Latent map, Training.
    """
    gr = import_gradio()
    explorer = (
        run
        if isinstance(run, Explorer)
        else Explorer.from_run(run, corpus, label_column, text_column, limits, device)
    )
    with gr.Blocks(title="textvae explorer", analytics_enabled=False) as app:
        gr.Markdown(_header(explorer))
        tabs = [
            ("Sample", _sample_tab),
            ("Reconstruct", _reconstruct_tab),
            ("Interpolate", _interpolate_tab),
            ("Transfer and analogy", _transfer_tab),
            ("Neighbours", _neighbours_tab),
            ("Latent map", _map_tab),
            ("Training", _training_tab),
        ]
        for label, lay_out in tabs:
            key = label.split()[0].lower()
            with gr.Tab(label, id=key, elem_id=f"tab-{key}"):
                lay_out(gr, explorer)
    app.explorer = explorer  # for tests and scripts: the plain functions behind the page
    return app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)


def launch_app(app, host: str | None = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet=False):
    """Serve `app` at http://host:port/ with nothing loaded from the network; returns gradio's
    `(server app, local url, share url)`. host / port None: gradio's own defaults (GRADIO_SERVER_NAME,
    GRADIO_SERVER_PORT), as a Space sets them. `block=False` returns at once (tests); `app.close()` stops it.
    """
    import inspect

    gr = import_gradio()
    options = dict(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,  # server-side rendering would start a Node server
        mcp_server=False,
        pwa=False,
        run_history=False,  # its page offers to save runs to the Hub
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS),
        max_file_size=MAX_UPLOAD,
        show_error=False,
        prevent_thread_lock=not block,
        quiet=quiet,
    )
    accepted = inspect.signature(app.launch).parameters  # an older gradio lacks some of them
    return app.launch(**{name: value for name, value in options.items() if name in accepted})
