"""`textvae evaluate`: the papers' metrics over a split of a corpus, or over a whole file."""

from __future__ import annotations

import json

from .common import (
    add_device_option,
    add_json_option,
    add_run_argument,
    add_seed_option,
    add_text_column_option,
    finite_float,
    is_main_process,
    non_negative_int,
    positive_int,
    quiet_libraries,
)


def add_parsers(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure rec, KL, -ELBO, NLL, PPL, MI, AU, BLEU and diversity as the papers do",
        description="Measure the papers' metrics on a split or a file. Run by torchrun (torchrun "
        "--nproc_per_node N -m textvae.cli evaluate RUN ...), N processes share the scoring; the figures equal "
        "one process's.",
    )
    add_run_argument(evaluate)
    evaluate.add_argument(
        "--data",
        default="ptb",
        help="a named corpus (ptb) or folder, read by --split; or a file (text, CSV, TSV, JSONL), evaluated "
        "whole; or a Hub id (default: ptb)",
    )
    evaluate.add_argument(
        "--data-dir", help="folder holding named corpora (default: $TEXTVAE_DATA, else data/)"
    )
    add_text_column_option(evaluate)
    evaluate.add_argument(
        "--split",
        default="validation",
        choices=("train", "validation", "valid", "test"),
        help="split of a corpus or folder to evaluate (default: validation; a file is evaluated whole)",
    )
    evaluate.add_argument(
        "--iw-samples",
        type=positive_int,
        default=500,
        help="importance samples K for the NLL (default: 500, as He et al. 2019)",
    )
    evaluate.add_argument(
        "--batch-size", type=positive_int, default=32, help="sentences per batch (default: 32)"
    )
    evaluate.add_argument(
        "--au-threshold",
        type=finite_float,
        default=0.01,
        help="variance threshold of an active unit (default: 0.01)",
    )
    evaluate.add_argument(
        "--diversity-samples",
        type=positive_int,
        default=100,
        help="prior samples for self-BLEU and distinct-n (default: 100)",
    )
    evaluate.add_argument(
        "--limit", type=positive_int, default=None, help="evaluate only the first N sentences"
    )
    evaluate.add_argument(
        "--train-sample",
        type=positive_int,
        default=1000,
        metavar="N",
        help="also reconstruct N sentences drawn from the training split the run was trained on, beside "
        "the evaluated ones: the generalisation gap (default: 1000)",
    )
    evaluate.add_argument(
        "--reference-lm",
        metavar="RUN",
        default=None,
        help="a textvae language model (--latent-dim 0) of the same tokenizer: forward PPL of prior samples "
        "(each prior) and of interpolation steps under it (Zhao et al. 2018)",
    )
    evaluate.add_argument(
        "--forward-samples",
        type=positive_int,
        default=1000,
        help="prior samples for the forward PPL (default: 1000)",
    )
    evaluate.add_argument(
        "--interpolation-pairs",
        type=non_negative_int,
        default=100,
        help="random pairs of sentences to interpolate between (0: none; default: 100)",
    )
    evaluate.add_argument(
        "--steps",
        type=int,
        default=5,
        help="points on each interpolation path, ends included, >= 3 (default: 5)",
    )
    add_seed_option(evaluate, 0)
    add_device_option(evaluate)
    add_json_option(evaluate, "print JSON instead of a table")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> None:
    if args.interpolation_pairs and args.steps < 3:
        raise ValueError(f"--steps must be at least 3 (two ends and a point between), got {args.steps}")
    quiet_libraries()
    from ..evaluation.run import evaluate_run, format_results

    results = evaluate_run(
        args.run,
        data=args.data,
        data_dir=args.data_dir,
        split=args.split,
        text_column=args.text_column,
        iw_samples=args.iw_samples,
        batch_size=args.batch_size,
        au_threshold=args.au_threshold,
        num_diversity_samples=args.diversity_samples,
        reference_lm=args.reference_lm,
        num_forward_samples=args.forward_samples,
        interpolation_pairs=args.interpolation_pairs,
        interpolation_steps=args.steps,
        limit=args.limit,
        train_sample=args.train_sample,
        seed=args.seed,
        device=args.device,
    )
    if is_main_process():  # under torchrun, every process returns the same results
        print(json.dumps(results, indent=2) if args.json else format_results(results))
