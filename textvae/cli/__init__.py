"""The `textvae` command: parses and checks arguments, then calls the library; no logic of its own.

Each command lives in a module of this package that adds its parser (`add_parsers`) and a handler.
Arguments are parsed and checked before torch, transformers or datasets are imported, so `--help` and
argument errors answer at once. Every error a user can cause ends in one line on standard error and exit
status 2; Ctrl-C ends in one line and exit status 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import evaluate, explore, generate, latent, scores, train
from .common import Parser, is_main_process

COMMAND_MODULES = (train, generate, evaluate, latent, scores, explore)
# Errors that mean "the input was wrong", whatever part of the library raised them.
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="textvae",
        description="Variational autoencoders of text: train, sample, interpolate, reconstruct, encode, evaluate; "
        "neighbours, transfer, analogy, score and probe put the latent space to work; plot and serve show it.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for module in COMMAND_MODULES:
        module.add_parsers(commands)
    return parser


def _configure_logging(verbose: bool) -> None:
    # Under torchrun the other processes log what the main one logs: they only say what went wrong.
    level = (logging.DEBUG if verbose else logging.INFO) if is_main_process() else logging.ERROR
    logging.basicConfig(level=level, format="textvae: %(message)s", stream=sys.stderr)
    for name in ("datasets", "transformers", "huggingface_hub", "filelock", "urllib3", "httpx", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # torch logs its own info lines at exit ("FakeTensor cache stats" after a Ctrl-C during start-up): under
    # the root handler they would follow the one line that says what happened.
    logging.getLogger("torch").setLevel(logging.WARNING)


def _pace_progress_bars() -> None:
    """Off a terminal (a log file, CI) every redraw of a progress bar stays in the file: redraw at most once
    a minute there instead of ten times a second. TQDM_MININTERVAL is tqdm's own way to change its
    default; a value the user set is kept."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "60")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting sentences follow options too (`reconstruct RUN --strategy beam "a sentence"`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "sentences", None) is not None and not any(e.startswith("-") for e in extra):
        args.sentences = [*args.sentences, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _interrupted(args: argparse.Namespace | None) -> str:
    command = f"textvae {args.command}" if args is not None else "textvae"
    hint = train.interrupted_hint(args) if args is not None and args.command == "train" else ""
    return f"{command}: interrupted{hint}"


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parse(argv)
        _configure_logging(args.verbose)
        _pace_progress_bars()
        args.handler(args)
    except USER_ERRORS as error:
        # Under torchrun every process meets the error (training shares one process's with the others).
        if is_main_process():
            print(f"textvae {args.command if args else ''}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # also during start-up, while torch and transformers are imported
        if is_main_process():
            print(_interrupted(args), file=sys.stderr)
        return 130
    return 0
