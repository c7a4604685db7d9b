"""What every `textvae` command shares: the one-line-error parser, argument types, sentence input, and
loading a pipeline. Nothing here imports torch; commands import the library only once their arguments
are parsed and checked, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

logger = logging.getLogger("textvae")


def is_main_process() -> bool:
    """False in the processes torchrun starts besides rank 0 (read from the environment, without torch).

    Every process of a torchrun job parses the same arguments and meets the same errors; only the main
    one prints them, and the results.
    """
    return os.environ.get("RANK", "0") == "0"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), printed by the main process only."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n" if is_main_process() else None)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text}")
    return value


# The files `corpora.read_sentence_file` reads (kept here too, so that arguments are checked without torch).
SENTENCE_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".json")


def sentence_file(text: str) -> str:
    """An existing file that `read_sentence_file` can read (text, CSV, TSV, JSONL, JSON)."""
    path = Path(text)
    if path.suffix.lower() not in SENTENCE_FILE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"expected a {', '.join(SENTENCE_FILE_SUFFIXES[:-1])} or {SENTENCE_FILE_SUFFIXES[-1]} file, "
            f"got {text!r}"
        )
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return text


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_run_argument(parser) -> None:
    parser.add_argument("run", help="trained model folder")


def add_device_option(parser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def add_sentence_input(parser) -> None:
    parser.add_argument("sentences", nargs="*", help="sentences (default: read --file, or standard input)")
    parser.add_argument(
        "--file",
        "-f",
        help="file of sentences: text (one per line), CSV, TSV or JSONL ('-' for standard input)",
    )
    parser.add_argument(
        "--text-column",
        default=None,
        help="column of a CSV / TSV / JSONL file that holds the text (default: text)",
    )


def read_sentences(args) -> list[str]:
    """Sentences from the arguments, `--file` (text, CSV, TSV, JSONL) or standard input.

    Blank lines of a file or of standard input are skipped with a warning; an empty sentence given as an
    argument is an error (of the pipeline), since the user typed it.
    """
    if args.sentences:
        return list(args.sentences)
    if args.file and args.file != "-":
        return read_file(args.file, text_column=getattr(args, "text_column", None))[0]
    lines = []
    if args.file == "-" or (sys.stdin is not None and not sys.stdin.isatty()):
        lines = sys.stdin.read().splitlines()
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")  # a byte-order mark is no part of the first word
    blank = sum(1 for line in lines if not line.strip())
    if blank:
        logger.warning("skipped %d blank line(s)", blank)
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        raise ValueError("no sentences given: pass them as arguments, with --file, or on standard input")
    return sentences


def read_file(path: str, text_column: str | None = None, label_column: str | None = None):
    """`corpora.read_sentence_file`, without the progress bar `datasets` draws while it reads a table."""
    quiet_libraries()
    from ..corpora import read_sentence_file

    return read_sentence_file(path, text_column, label_column)


def check_output_file(path: str, suffixes: tuple[str, ...], force: bool) -> Path:
    """`ValueError` for an output path with another suffix, or one that exists without --force."""
    output = Path(path)
    if output.suffix not in suffixes:
        raise ValueError(f"--output must end in {' or '.join(suffixes)}, got {output.name}")
    if output.exists() and not force:
        raise ValueError(f"{output} exists: pass --force to replace it")
    return output


def quiet_libraries() -> None:
    """Silence the progress bars and info lines of datasets and transformers (imports both)."""
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(args):
    """The `TextVAEPipeline` of `args.run` on `args.device`."""
    quiet_libraries()
    from ..pipeline import TextVAEPipeline

    return TextVAEPipeline.from_pretrained(args.run, device=args.device)
