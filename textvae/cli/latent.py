"""`textvae neighbours`, `transfer` and `analogy`: latent arithmetic and search over posterior means."""

from __future__ import annotations

import json

from ..decoding import decoding_defaults
from .common import (
    add_decoding_options,
    add_device_option,
    add_json_option,
    add_repetition_options,
    add_run_argument,
    add_sentence_input,
    decoding_options,
    finite_float,
    load_pipeline,
    positive_int,
    read_file,
    read_labelled_file,
    read_sentences,
    repetition_options,
    sentence_file,
)


def _add_decoding_options(parser) -> None:
    add_decoding_options(parser, None, "for --strategy sample", metavar="N")
    add_repetition_options(parser, decoding_defaults("reconstruct").no_repeat_ngram_size)
    add_device_option(parser)


def add_parsers(commands) -> None:
    _add_neighbours_parser(commands)
    _add_transfer_parser(commands)
    _add_analogy_parser(commands)


def _add_neighbours_parser(commands) -> None:
    neighbours = commands.add_parser(
        "neighbours",
        help="the corpus sentences whose posterior means are nearest each query's",
        description="Encode the corpus once (cached in the run folder, rebuilt when the model or the file "
        "changes) and print, for each query, its k nearest corpus sentences with their scores. --text-column "
        "names the text column of every CSV / TSV / JSONL file given.",
    )
    add_run_argument(neighbours)
    add_sentence_input(neighbours)
    neighbours.add_argument(
        "--corpus",
        required=True,
        type=sentence_file,
        metavar="FILE",
        help="file of sentences to search (text, CSV, TSV, JSONL)",
    )
    neighbours.add_argument(
        "-k", type=positive_int, metavar="K", default=5, help="neighbours per query (default: 5)"
    )
    neighbours.add_argument(
        "--metric",
        choices=("cosine", "l2"),
        default="cosine",
        help="cosine similarity (higher is nearer) or Euclidean distance (lower is nearer) (default: cosine)",
    )
    add_json_option(neighbours)
    add_device_option(neighbours)
    neighbours.set_defaults(handler=run_neighbours)


def _add_transfer_parser(commands) -> None:
    transfer = commands.add_parser(
        "transfer",
        help="move sentences along an attribute vector (e.g. negative to positive) and decode them",
        description="Decode each sentence from mu + strength * (mean mu(target) - mean mu(source)). The two "
        "groups come from --source and --target files, or from one labelled file: --labels FILE --from A "
        "--to B.",
    )
    add_run_argument(transfer)
    add_sentence_input(transfer)
    transfer.add_argument(
        "--source", type=sentence_file, metavar="FILE", help="sentences that have the attribute to leave"
    )
    transfer.add_argument(
        "--target", type=sentence_file, metavar="FILE", help="sentences that have the attribute to reach"
    )
    transfer.add_argument(
        "--labels",
        type=sentence_file,
        metavar="FILE",
        help="a labelled CSV / TSV / JSONL file holding both groups",
    )
    transfer.add_argument(
        "--from", dest="from_label", metavar="LABEL", help="with --labels: the label of the source group"
    )
    transfer.add_argument(
        "--to", dest="to_label", metavar="LABEL", help="with --labels: the label of the target group"
    )
    transfer.add_argument(
        "--label-column",
        metavar="NAME",
        default="label",
        help="column of --labels that holds the label (default: label)",
    )
    transfer.add_argument(
        "--strength",
        type=finite_float,
        metavar="A",
        default=1.0,
        help="multiple of the attribute vector to add; 0 reconstructs (default: 1.0)",
    )
    add_json_option(transfer, "print each input with its output as JSON")
    _add_decoding_options(transfer)
    transfer.set_defaults(handler=run_transfer)


def _add_analogy_parser(commands) -> None:
    analogy = commands.add_parser(
        "analogy",
        help='"A is to B as C is to ?": decode mu(C) + mu(B) - mu(A)',
    )
    add_run_argument(analogy)
    analogy.add_argument("a", help="sentence A")
    analogy.add_argument("b", help="sentence B")
    analogy.add_argument("c", help="sentence C")
    add_json_option(analogy, "print the three inputs and the answer as JSON")
    _add_decoding_options(analogy)
    analogy.set_defaults(handler=run_analogy)


def run_neighbours(args) -> None:
    queries = read_sentences(args)
    corpus, _ = read_file(args.corpus, text_column=args.text_column)
    results = load_pipeline(args).neighbours(
        queries, corpus, args.k, args.metric, corpus_path=args.corpus, text_column=args.text_column
    )
    if args.json:
        rows = [{"query": query, "neighbours": found} for query, found in zip(queries, results, strict=True)]
        print(json.dumps(rows, indent=2))
        return
    what = "cosine" if args.metric == "cosine" else "distance"
    for number, (query, found) in enumerate(zip(queries, results, strict=True)):
        if number:
            print()
        print(f"query: {query}")
        for rank, neighbour in enumerate(found, 1):
            print(f"  {rank}. {what} {neighbour['score']:.3f}  {neighbour['sentence']}")


def _check_transfer_groups(args) -> None:
    """One way of giving the two groups, complete (checked before anything heavy is imported)."""
    files = args.source is not None or args.target is not None
    labels = args.labels is not None or args.from_label is not None or args.to_label is not None
    if files and labels:
        raise ValueError("give either --source and --target, or --labels with --from and --to, not both")
    if files and (args.source is None or args.target is None):
        raise ValueError("--source and --target go together: give both")
    if labels and None in (args.labels, args.from_label, args.to_label):
        raise ValueError("--labels needs --from and --to (the labels of the source and target groups)")
    if not files and not labels:
        raise ValueError("give the two groups: --source FILE --target FILE, or --labels FILE --from A --to B")
    if labels and args.from_label == args.to_label:
        raise ValueError(f"--from and --to must differ, both are {args.from_label!r}")


def _transfer_groups(args) -> tuple[list[str], list[str]]:
    if args.labels is None:
        source, _ = read_file(args.source, text_column=args.text_column)
        target, _ = read_file(args.target, text_column=args.text_column)
        return source, target
    texts, labels = read_labelled_file(args.labels, args.text_column, args.label_column)
    groups = []
    for name, wanted in (("--from", args.from_label), ("--to", args.to_label)):
        group = [text for text, label in zip(texts, labels, strict=True) if label == wanted]
        if not group:
            found = ", ".join(sorted(set(labels))[:10])
            raise ValueError(
                f"{name} {wanted!r}: no sentence of {args.labels} has that label (labels: {found})"
            )
        groups.append(group)
    return groups[0], groups[1]


def run_transfer(args) -> None:
    _check_transfer_groups(args)
    sentences = read_sentences(args)
    source, target = _transfer_groups(args)
    outputs = load_pipeline(args).transfer(
        sentences,
        source,
        target,
        strength=args.strength,
        seed=args.seed,
        **decoding_options(args),
        **repetition_options(args),
    )
    if args.json:
        rows = [
            {"sentence": sentence, "transferred": output, "strength": args.strength}
            for sentence, output in zip(sentences, outputs, strict=True)
        ]
        print(json.dumps(rows, indent=2))
        return
    for output in outputs:
        print(output)


def run_analogy(args) -> None:
    options = {**decoding_options(args), **repetition_options(args)}
    answer = load_pipeline(args).analogy(args.a, args.b, args.c, seed=args.seed, **options)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "c": args.c, "answer": answer}, indent=2))
    else:
        print(answer)
