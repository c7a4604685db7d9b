"""`textvae score` (per-sentence likelihoods, AUROC against another file) and `textvae probe` (few-label
classifiers on the posterior means against TF-IDF)."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from .common import (
    add_device_option,
    add_json_option,
    add_run_argument,
    add_seed_option,
    add_sentence_input,
    load_pipeline,
    positive_int,
    read_file,
    read_labelled_file,
    read_sentences,
    sentence_file,
)

SCORE_COLUMNS = ("nll", "neg_elbo", "rec", "kl", "tokens", "nll_per_token")
# The scores an AUROC is reported for: higher means more unusual for each.
AUROC_SCORES = ("nll_per_token", "nll", "neg_elbo", "kl")


def label_counts(text: str) -> tuple[int | None, ...]:
    """`100,1000,all` -> (100, 1000, None): numbers of labelled training examples, `all` for every one."""
    counts = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            counts.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"expected positive integers or 'all' separated by commas, got {text!r}"
            )
        counts.append(value)
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"a number of labels is repeated in {text!r}")
    return tuple(counts)


def add_parsers(commands) -> None:
    _add_score_parser(commands)
    _add_probe_parser(commands)


def _add_score_parser(commands) -> None:
    score = commands.add_parser(
        "score",
        help="per-sentence NLL, -ELBO and KL (anomaly scores), with the AUROC against another file",
        description="Score every sentence, in input order: importance-weighted NLL (exact for a language "
        "model), -ELBO, rec, KL, tokens (words + EOS) and NLL per token, in nats. With --against, the "
        "sentences of that file are scored too and the AUROC of telling them from the first file by each "
        "score is printed on standard error (1.0: separated, 0.5: chance).",
    )
    add_run_argument(score)
    add_sentence_input(score)
    score.add_argument(
        "--iw-samples",
        metavar="K",
        type=positive_int,
        default=500,
        help="importance samples K for the NLL (default: 500, as evaluate; fewer are faster)",
    )
    score.add_argument(
        "--format", choices=("jsonl", "tsv"), default="jsonl", help="output format (default: jsonl)"
    )
    score.add_argument(
        "--against",
        type=sentence_file,
        metavar="FILE",
        help="a second file (e.g. out-of-domain sentences): its rows follow, each row names its file, and "
        "the AUROC of telling it from the first by each score is reported",
    )
    add_seed_option(score, 0, "of the z samples")
    add_device_option(score)
    score.set_defaults(handler=run_score)


def _add_probe_parser(commands) -> None:
    probe = commands.add_parser(
        "probe",
        help="few-label classification: logistic regression on posterior means against TF-IDF",
        description="Fit a logistic regression on the posterior means of N labelled training sentences and "
        "one on their TF-IDF vectors (the same N sentences), and report test accuracy, averaged over "
        "--repeats draws of N (all labels: one fit).",
    )
    add_run_argument(probe)
    probe.add_argument(
        "--train", required=True, type=sentence_file, metavar="FILE", help="labelled CSV / TSV / JSONL file"
    )
    probe.add_argument(
        "--test", required=True, type=sentence_file, metavar="FILE", help="labelled CSV / TSV / JSONL file"
    )
    probe.add_argument(
        "--text-column", metavar="NAME", default=None, help="column that holds the text (default: text)"
    )
    probe.add_argument(
        "--label-column", metavar="NAME", default="label", help="column that holds the label (default: label)"
    )
    probe.add_argument(
        "--num-labels",
        type=label_counts,
        metavar="N,N,...",
        default=(100, 1000, None),
        help="numbers of labelled training sentences, comma-separated, 'all' for every one "
        "(default: 100,1000,all)",
    )
    probe.add_argument(
        "--repeats",
        type=positive_int,
        metavar="R",
        default=5,
        help="draws of each number of labels (default: 5)",
    )
    add_seed_option(probe, 0, "of the draws")
    add_json_option(probe, "print JSON instead of a table")
    add_device_option(probe)
    probe.set_defaults(handler=run_probe)


def _write_scores(rows: list[dict], output_format: str, with_file: bool) -> None:
    columns = (("file",) if with_file else ()) + SCORE_COLUMNS + ("sentence",)
    if output_format == "jsonl":
        for row in rows:
            print(json.dumps({name: row[name] for name in columns}))
        return
    # csv quotes a sentence that holds a tab or a quote, so the file reads back with any TSV reader.
    writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [f"{row[name]:.4f}" if isinstance(row[name], float) else row[name] for name in columns]
        )


def run_score(args) -> None:
    sentences = read_sentences(args)
    against = None
    if args.against is not None:
        against, _ = read_file(args.against, text_column=args.text_column)
    pipeline = load_pipeline(args)
    rows = pipeline.score(sentences, iw_samples=args.iw_samples, seed=args.seed)
    if against is None:
        _write_scores(rows, args.format, with_file=False)
        return
    from ..evaluation.scoring import auroc

    first = args.file if args.file not in (None, "-") else "<input>"
    other_rows = pipeline.score(against, iw_samples=args.iw_samples, seed=args.seed)
    for row in rows:
        row["file"] = first
    for row in other_rows:
        row["file"] = args.against
    _write_scores(rows + other_rows, args.format, with_file=True)
    # The summary goes to standard error, so that standard output stays one table.
    print(f"AUROC of telling {args.against} ({len(other_rows)}) from {first} ({len(rows)}):", file=sys.stderr)
    for name in AUROC_SCORES:
        value = auroc([row[name] for row in rows], [row[name] for row in other_rows])
        print(f"  {name:<14} {value:.4f}", file=sys.stderr)


def run_probe(args) -> None:
    train_texts, train_labels = read_labelled_file(args.train, args.text_column, args.label_column)
    test_texts, test_labels = read_labelled_file(args.test, args.text_column, args.label_column)
    results = load_pipeline(args).probe(
        train_texts,
        train_labels,
        test_texts,
        test_labels,
        num_labels=args.num_labels,
        repeats=args.repeats,
        seed=args.seed,
        train_path=args.train,
        test_path=args.test,
        text_column=args.text_column,
    )
    if args.json:
        print(json.dumps({"train": args.train, "test": args.test, **results}, indent=2))
    else:
        from ..latent.probes import format_probe_table

        print(format_probe_table(results))
