"""`textvae serve` (the latent-space explorer in a browser) and `textvae plot` (a run's figures as PNGs)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import threading

from .common import add_device_option, add_run_argument, positive_int, quiet_libraries


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1..65535, got {value}")
    return value


def _add_corpus_options(parser, purpose: str) -> None:
    parser.add_argument("--corpus", help=f"file of sentences (text, CSV, TSV, JSONL) {purpose}")
    parser.add_argument(
        "--text-column", default=None, help="column of a CSV / TSV / JSONL corpus that holds the text"
    )
    parser.add_argument(
        "--label-column", default=None, help="column of a CSV / TSV / JSONL corpus that holds a label"
    )


def add_parsers(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="explore a model in the browser: sample, reconstruct, interpolate, transfer, neighbours, a "
        "latent map, the training curves (needs textvae[app])",
    )
    add_run_argument(serve)
    _add_corpus_options(serve, "for neighbours, label transfer and the latent map")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=7860, help="port to listen on (default: 7860)")
    serve.add_argument(
        "--max-corpus",
        type=positive_int,
        default=20000,
        help="read at most this many corpus sentences (default: 20000)",
    )
    serve.add_argument(
        "--max-map-points",
        type=positive_int,
        default=2000,
        help="draw at most this many corpus sentences on the latent map (default: 2000)",
    )
    add_device_option(serve)
    serve.set_defaults(handler=run_serve)

    plot = commands.add_parser(
        "plot", help="write a run's figures as PNGs: curves, KL per dimension, active units, a latent map"
    )
    add_run_argument(plot)
    plot.add_argument("--output-dir", "-o", help="folder for the PNGs (default: the run folder)")
    _add_corpus_options(plot, "for a latent map (coloured by --label-column, else by length)")
    plot.add_argument(
        "--max-sentences",
        type=positive_int,
        default=5000,
        help="draw at most this many corpus sentences on the latent map (default: 5000)",
    )
    add_device_option(plot)
    plot.set_defaults(handler=run_plot)


def _check_columns(args) -> None:
    if args.corpus is None and (args.text_column or args.label_column):
        raise ValueError("--text-column and --label-column describe --corpus: give --corpus FILE")


def run_serve(args) -> None:
    _check_columns(args)
    if importlib.util.find_spec("gradio") is None:  # before the model is loaded
        raise ValueError("textvae serve needs gradio: pip install 'textvae[app]'")
    quiet_libraries()
    from ..app.explorer import AppLimits
    from ..app.page import build_app, launch_app

    limits = AppLimits(max_corpus=args.max_corpus, max_map_points=args.max_map_points)
    app = build_app(args.run, args.corpus, args.label_column, args.text_column, limits, args.device)
    try:
        _, url, _ = launch_app(app, args.host, args.port, block=False, quiet=True)
    except OSError as error:  # the port is taken, or the address is not this machine's
        reason = str(error).split(". ")[0]  # gradio's next sentence names its own options, not ours
        raise ValueError(
            f"cannot listen on {args.host}:{args.port} ({reason}): choose another --port"
        ) from None
    print(f"textvae serve: the explorer of {args.run} is at {url} (Ctrl-C stops it)", flush=True)
    try:
        wait_for_interrupt()
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # gradio's "Closing server ..." line
            app.close()


def wait_for_interrupt() -> None:
    """Sleep until Ctrl-C (KeyboardInterrupt) while the server answers in its own threads."""
    threading.Event().wait()


def run_plot(args) -> None:
    _check_columns(args)
    quiet_libraries()
    from ..plotting import plot_run, read_run_records

    read_run_records(args.run)  # a run with no validation history fails before the corpus is encoded
    latent_map = None
    if args.corpus is not None:
        latent_map = _latent_map(args)
    for path in plot_run(args.run, args.output_dir, latent_map=latent_map):
        print(path)


def _latent_map(args) -> tuple:
    """`(mu, colour values, colour label, categorical)` of the first --max-sentences corpus sentences."""
    from ..data.corpora import read_sentence_file
    from ..pipeline import TextVAEPipeline
    from ..plotting import sentence_lengths

    sentences, labels = read_sentence_file(args.corpus, args.text_column, args.label_column)
    sentences = sentences[: args.max_sentences]
    mu, _ = TextVAEPipeline.from_pretrained(args.run, device=args.device).encode(sentences)
    if labels is not None:
        return mu, labels[: len(sentences)], args.label_column, True
    return mu, sentence_lengths(sentences), "length (words)", False
