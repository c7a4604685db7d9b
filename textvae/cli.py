"""The `textvae` command: parses arguments and calls the library; no logic of its own.

Every error a user can cause ends in one line on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from .architecture import ARCHITECTURE_OPTIONS
from .training_config import TrainConfig, read_config_file

logger = logging.getLogger("textvae")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_typed_option(group, name: str, annotation, default, help: str) -> None:
    """One flag for a config field, typed from its annotation; unset flags stay absent (SUPPRESS)."""
    text = str(annotation)
    if "(default:" not in help:  # some fields say what their default means ("no limit") themselves
        help = f"{help} (default: {default})"
    if "bool" in text:
        group.add_argument(
            _flag(name),
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=help,
        )
        return
    kind = int if "int" in text else float if "float" in text else str
    group.add_argument(
        _flag(name),
        type=kind,
        default=argparse.SUPPRESS,
        metavar=kind.__name__.upper(),
        help=help,
    )


def _add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a text VAE (or its language model) on a corpus",
        description="Train a text VAE. Options come from --config FILE (YAML or JSON), overridden by flags.",
    )
    parser.add_argument(
        "--config",
        help="YAML or JSON file of training options (a `model:` mapping holds architecture options)",
    )
    parser.add_argument("--output-dir", "-o", help="run folder to create (default: runs/textvae)")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from its last checkpoint (flags given override its saved options)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output-dir")
    training = parser.add_argument_group("training options")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name != "model":
            _add_typed_option(training, field.name, hints[field.name], field.default, field.metadata["help"])
    model = parser.add_argument_group("model options (saved in the model's config.json)")
    for name, option in ARCHITECTURE_OPTIONS.items():
        if name != "vocab_size":  # the tokenizer sets it
            _add_typed_option(model, name, option.type, option.default, option.help)


def _add_sentence_input(parser, required: bool = True) -> None:
    parser.add_argument("sentences", nargs="*", help="sentences (default: read --file, or standard input)")
    parser.add_argument("--file", "-f", help="file of sentences, one per line ('-' for standard input)")


def _add_decoding_options(parser, default_strategy: str) -> None:
    parser.add_argument(
        "--strategy",
        choices=("greedy", "beam", "sample"),
        default=default_strategy,
        help=f"decoding strategy (default: {default_strategy})",
    )
    parser.add_argument(
        "--beam-size", type=_positive_int, default=5, help="beams for --strategy beam (default: 5)"
    )
    parser.add_argument(
        "--max-length", type=_positive_int, default=100, help="longest output in tokens (default: 100)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for sampling")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="textvae",
        description="Variational autoencoders of text: train, sample, interpolate, reconstruct, encode, evaluate.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train_parser(commands)

    sample = commands.add_parser("sample", help="sample sentences from the prior")
    sample.add_argument("run", help="trained model folder")
    sample.add_argument(
        "-n", "--num-samples", type=_positive_int, default=10, help="number of sentences (default: 10)"
    )
    sample.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default: 1.0)")
    sample.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    sample.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: all)")
    sample.add_argument(
        "--greedy", action="store_true", help="decode each prior z greedily instead of sampling words"
    )
    sample.add_argument(
        "--max-length", type=_positive_int, default=100, help="longest output in tokens (default: 100)"
    )
    sample.add_argument("--seed", type=int, default=None, help="random seed")

    reconstruct = commands.add_parser("reconstruct", help="decode sentences from their posterior mean")
    reconstruct.add_argument("run", help="trained model folder")
    _add_sentence_input(reconstruct)
    _add_decoding_options(reconstruct, "greedy")

    interpolate = commands.add_parser("interpolate", help="decode points on the path between two sentences")
    interpolate.add_argument("run", help="trained model folder")
    interpolate.add_argument("start", help="first sentence")
    interpolate.add_argument("end", help="last sentence")
    interpolate.add_argument(
        "--steps", type=int, default=5, help="points on the path, endpoints included (default: 5)"
    )
    interpolate.add_argument(
        "--method",
        choices=("lerp", "slerp"),
        default="lerp",
        help="linear or spherical interpolation (default: lerp)",
    )
    _add_decoding_options(interpolate, "greedy")

    encode = commands.add_parser("encode", help="write the posterior of each sentence as vectors")
    encode.add_argument("run", help="trained model folder")
    _add_sentence_input(encode)
    encode.add_argument(
        "--output",
        "-o",
        required=True,
        help="OUT.npy (mu, shape N x latent_dim) or OUT.jsonl (sentence, mu, logvar per line)",
    )
    encode.add_argument("--force", action="store_true", help="replace --output if it exists")

    evaluate = commands.add_parser(
        "evaluate", help="measure rec, KL, -ELBO, NLL, PPL, MI, AU, BLEU and diversity as the papers do"
    )
    evaluate.add_argument("run", help="trained model folder")
    evaluate.add_argument(
        "--data", default="ptb", help="corpus: text file, folder, named corpus (ptb) or Hub id (default: ptb)"
    )
    evaluate.add_argument(
        "--data-dir", help="folder holding named corpora (default: $TEXTVAE_DATA, else data/)"
    )
    evaluate.add_argument(
        "--split",
        default="validation",
        choices=("train", "validation", "valid", "test"),
        help="split to evaluate (default: validation)",
    )
    evaluate.add_argument(
        "--iw-samples",
        type=_positive_int,
        default=500,
        help="importance samples K for the NLL (default: 500, as He et al. 2019)",
    )
    evaluate.add_argument(
        "--batch-size", type=_positive_int, default=32, help="sentences per batch (default: 32)"
    )
    evaluate.add_argument(
        "--au-threshold",
        type=float,
        default=0.01,
        help="variance threshold of an active unit (default: 0.01)",
    )
    evaluate.add_argument(
        "--diversity-samples",
        type=_positive_int,
        default=100,
        help="prior samples for self-BLEU and distinct-n (default: 100)",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, default=None, help="evaluate only the first N sentences"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for command in (sample, reconstruct, interpolate, encode):
        command.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser


def _read_sentences(args) -> list[str]:
    if args.sentences:
        return list(args.sentences)
    if args.file and args.file != "-":
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text") from None
    elif args.file == "-" or (sys.stdin is not None and not sys.stdin.isatty()):
        lines = sys.stdin.read().splitlines() if sys.stdin is not None else []
    else:
        lines = []
    blank = sum(1 for line in lines if not line.strip())
    if blank:
        logger.warning("skipped %d blank line(s)", blank)
    sentences = [line for line in lines if line.strip()]
    if not sentences:
        raise ValueError("no sentences given: pass them as arguments, with --file, or on standard input")
    return sentences


def _run_train(args) -> None:
    from .training import train

    given = vars(args)
    train_names = {field.name for field in dataclasses.fields(TrainConfig)}
    values = {name: given[name] for name in train_names if name in given}
    model_values = {name: given[name] for name in ARCHITECTURE_OPTIONS if name in given}
    if args.resume:
        if model_values:
            raise ValueError(
                f"--resume keeps the run's architecture; drop {', '.join(_flag(n) for n in model_values)}"
            )
        run = train(None, resume=args.resume, overrides=values)
    else:
        file_values = read_config_file(args.config) if args.config else {}
        merged = {**file_values, **values}
        merged["model"] = {**file_values.get("model", {}), **model_values}
        file_output_dir = merged.pop("output_dir", None)
        output_dir = args.output_dir or file_output_dir or "runs/textvae"
        run = train(TrainConfig.from_dict(merged), output_dir=output_dir, overwrite=args.overwrite)
    print(f"model saved in {run}")


def _pipeline(args):
    from .pipeline import TextVAEPipeline

    return TextVAEPipeline.from_pretrained(args.run, device=args.device)


def _run_encode(args) -> None:
    import numpy as np

    output = Path(args.output)
    if output.suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--output must end in .npy or .jsonl, got {output.name}")
    if output.exists() and not args.force:
        raise ValueError(f"{output} exists: pass --force to replace it")
    sentences = _read_sentences(args)
    mu, logvar = _pipeline(args).encode(sentences)
    if output.suffix == ".npy":
        np.save(output, mu.numpy())
    else:
        with open(output, "w", encoding="utf-8") as stream:
            for sentence, m, lv in zip(sentences, mu.tolist(), logvar.tolist(), strict=True):
                stream.write(json.dumps({"sentence": sentence, "mu": m, "logvar": lv}) + "\n")
    print(f"wrote {len(sentences)} vectors of size {mu.size(1)} to {output}")


def _run_evaluate(args) -> None:
    from .evaluation import evaluate_run, format_results

    results = evaluate_run(
        args.run,
        data=args.data,
        data_dir=args.data_dir,
        split=args.split,
        iw_samples=args.iw_samples,
        batch_size=args.batch_size,
        au_threshold=args.au_threshold,
        num_diversity_samples=args.diversity_samples,
        limit=args.limit,
        seed=args.seed,
        device=args.device,
    )
    print(json.dumps(results, indent=2) if args.json else format_results(results))


def _run(args) -> None:
    if args.command == "train":
        _run_train(args)
    elif args.command == "sample":
        strategy = "greedy" if args.greedy else "sample"
        for line in _pipeline(args).sample(
            args.num_samples, args.temperature, args.top_k, args.top_p, args.seed, strategy, args.max_length
        ):
            print(line)
    elif args.command == "reconstruct":
        sentences = _read_sentences(args)
        for line in _pipeline(args).reconstruct(
            sentences, args.strategy, args.beam_size, args.seed, args.max_length
        ):
            print(line)
    elif args.command == "interpolate":
        for line in _pipeline(args).interpolate(
            args.start, args.end, args.steps, args.method, args.strategy, args.beam_size, args.max_length
        ):
            print(line)
    elif args.command == "encode":
        _run_encode(args)
    elif args.command == "evaluate":
        _run_evaluate(args)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="textvae: %(message)s", stream=sys.stderr
    )
    for name in ("datasets", "transformers", "huggingface_hub", "filelock", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting sentences follow options too (`reconstruct RUN --strategy beam "a sentence"`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "sentences", None) is not None and not any(e.startswith("-") for e in extra):
        args.sentences = [*args.sentences, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _configure_logging(args.verbose)
    try:
        _run(args)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        print(f"textvae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"textvae {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
