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


def _int_at_least(text: str, minimum: int, expected: str) -> int:
    """`text` as an integer of at least `minimum`; the error says it `expected` one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


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


def add_seed_option(parser, default: int | None, purpose: str = "") -> None:
    """--seed, "random seed [purpose] [(default: N)]"."""
    text = f"random seed {purpose}".rstrip() + (f" (default: {default})" if default is not None else "")
    parser.add_argument("--seed", type=int, default=default, help=text)


def add_json_option(parser, help: str = "print JSON instead of text") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_text_column_option(parser) -> None:
    parser.add_argument(
        "--text-column",
        default=None,
        help="column of a CSV / TSV / JSONL file that holds the text (default: text)",
    )


def add_sentence_input(parser) -> None:
    parser.add_argument("sentences", nargs="*", help="sentences (default: read --file, or standard input)")
    parser.add_argument(
        "--file",
        "-f",
        help="file of sentences: text (one per line), CSV, TSV or JSONL ('-' for standard input)",
    )
    add_text_column_option(parser)


def add_max_length_option(parser, metavar: str | None = None) -> None:
    parser.add_argument(
        "--max-length",
        type=positive_int,
        metavar=metavar,
        default=100,
        help="longest output in tokens (default: 100)",
    )


def add_decoding_options(
    parser, default_strategy: str | None, seed_purpose: str, metavar: str | None = None
) -> None:
    """--strategy, --beam-size, --max-length and --seed: how `TextVAEPipeline.decode` decodes z."""
    parser.add_argument(
        "--strategy",
        choices=("greedy", "beam", "sample"),
        default=default_strategy,
        help="decoding strategy (default: "
        + (default_strategy or "beam, with no repeated 3-gram unless --no-repeat-ngram-size says otherwise")
        + ")",
    )
    parser.add_argument(
        "--beam-size",
        type=positive_int,
        metavar=metavar,
        default=5,
        help="beams for --strategy beam (default: 5)",
    )
    add_max_length_option(parser, metavar)
    add_seed_option(parser, None, seed_purpose)


def add_repetition_options(parser, no_repeat_default: int) -> None:
    """--no-repeat-ngram-size and --repetition-penalty, with the meaning they have in transformers.

    Left unset they leave the pipeline's defaults, which `no_repeat_default` states in the help.
    """
    parser.add_argument(
        "--no-repeat-ngram-size",
        type=non_negative_int,
        default=None,
        help="never repeat an n-gram of this size in one sentence, as in transformers' generate (0: off; "
        f"default: {no_repeat_default})",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=None,
        help="divide the logit of every token already in the sentence by this (CTRL; default: 1.0, off)",
    )


def repetition_options(args) -> dict:
    """The repetition options the user gave (the pipeline's defaults stand for the others)."""
    options = {
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "repetition_penalty": args.repetition_penalty,
    }
    return {name: value for name, value in options.items() if value is not None}


def decoding_options(args) -> dict:
    """The options of `add_decoding_options` but the seed, as the pipeline's keyword arguments (a
    --strategy left unset leaves the pipeline's default)."""
    options = {"beam_size": args.beam_size, "max_length": args.max_length}
    if args.strategy is not None:
        options["strategy"] = args.strategy
    return options


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
    from ..data.corpora import read_sentence_file

    return read_sentence_file(path, text_column, label_column)


def read_labelled_file(path: str, text_column: str | None, label_column: str) -> tuple[list[str], list[str]]:
    """The sentences and labels of a labelled file, the labels as written: a JSON 1 and a CSV "1" are one
    class."""
    texts, labels = read_file(path, text_column, label_column)
    return texts, [str(label) for label in labels]


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
