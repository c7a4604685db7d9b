"""`textvae sample`, `reconstruct`, `interpolate` and `encode`: sentences in and out of the latent space."""

from __future__ import annotations

import io
import json

from ..decoding import decoding_defaults
from ..run_files import write_text_atomically
from .common import (
    add_decoding_options,
    add_device_option,
    add_json_option,
    add_max_length_option,
    add_repetition_options,
    add_run_argument,
    add_seed_option,
    add_sentence_input,
    check_output_file,
    decoding_options,
    load_pipeline,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    read_sentences,
    repetition_options,
)


def _add_decoding_options(parser) -> None:
    add_decoding_options(parser, None, "for sampling")
    add_repetition_options(parser, decoding_defaults("reconstruct").no_repeat_ngram_size)
    add_device_option(parser)


def add_parsers(commands) -> None:
    _add_sample_parser(commands)
    reconstruct = commands.add_parser("reconstruct", help="decode sentences from their posterior mean")
    add_run_argument(reconstruct)
    add_sentence_input(reconstruct)
    _add_decoding_options(reconstruct)
    reconstruct.add_argument(
        "--show-input",
        action="store_true",
        help="print each input sentence, then its reconstruction indented after '->' (default: only the "
        "reconstructions, one line each)",
    )
    reconstruct.set_defaults(handler=run_reconstruct)
    _add_interpolate_parser(commands)
    _add_encode_parser(commands)


def _add_sample_parser(commands) -> None:
    sample = commands.add_parser("sample", help="sample sentences from the prior")
    add_run_argument(sample)
    sample.add_argument(
        "-n", "--num-samples", type=positive_int, default=10, help="number of sentences (default: 10)"
    )
    sample.add_argument(
        "--prior",
        choices=("standard", "aggregate"),
        default="standard",
        help="standard: z ~ N(0, I); aggregate: the mixture fitted to the training set's posterior means "
        "(textvae fit-prior), fluent when the model keeps many nats in z (default: standard)",
    )
    sample.add_argument(
        "--temperature", type=positive_float, default=1.0, help="softmax temperature (default: 1.0)"
    )
    sample.add_argument(
        "--top-k", type=non_negative_int, default=0, help="keep the k most likely tokens (0: all)"
    )
    sample.add_argument("--top-p", type=probability, default=1.0, help="nucleus sampling mass (1.0: all)")
    sample.add_argument(
        "--greedy", action="store_true", help="decode each prior z greedily instead of sampling words"
    )
    add_max_length_option(sample)
    add_seed_option(sample, None)
    add_repetition_options(sample, 0)
    add_device_option(sample)
    sample.set_defaults(handler=run_sample)


def _add_interpolate_parser(commands) -> None:
    interpolate = commands.add_parser("interpolate", help="decode points on the path between two sentences")
    add_run_argument(interpolate)
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
    add_json_option(interpolate, "print the path as JSON (each step with t and its similarity to the ends)")
    _add_decoding_options(interpolate)
    interpolate.set_defaults(handler=run_interpolate)


def _add_encode_parser(commands) -> None:
    encode = commands.add_parser("encode", help="write the posterior of each sentence as vectors")
    add_run_argument(encode)
    add_sentence_input(encode)
    encode.add_argument(
        "--output",
        "-o",
        required=True,
        help="OUT.npy (mu, shape N x latent_dim) or OUT.jsonl (sentence, mu, logvar)",
    )
    encode.add_argument("--force", action="store_true", help="replace --output if it exists")
    add_device_option(encode)
    encode.set_defaults(handler=run_encode)


def run_sample(args) -> None:
    pipeline = load_pipeline(args)
    decoding = {
        "strategy": "greedy" if args.greedy else "sample",
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_length": args.max_length,
        **repetition_options(args),
    }
    for line in pipeline.sample(args.num_samples, decoding, seed=args.seed, prior=args.prior):
        print(line)


def _decoding(args) -> dict:
    return {**decoding_options(args), **repetition_options(args)}


def run_reconstruct(args) -> None:
    sentences = read_sentences(args)
    reconstructions = load_pipeline(args).reconstruct(sentences, seed=args.seed, **_decoding(args))
    for sentence, line in zip(sentences, reconstructions, strict=True):
        print(f"{sentence}\n  -> {line}" if args.show_input else line)


def run_interpolate(args) -> None:
    path = load_pipeline(args).interpolation_path(
        args.start, args.end, args.steps, args.method, **_decoding(args)
    )
    if args.json:
        print(json.dumps(path, indent=2))
        return
    print(f"start: {path['start']}")
    print(f"end:   {path['end']}")
    count = len(path["path"])
    for point in path["path"]:
        where = {1: ", start", count: ", end"}.get(point["step"], "")
        print(f"  step {point['step']}/{count} (t={point['t']:.2f}{where}): {point['sentence']}")


def run_encode(args) -> None:
    import numpy as np

    output = check_output_file(args.output, (".npy", ".jsonl"), args.force)
    sentences = read_sentences(args)
    mu, logvar = load_pipeline(args).encode(sentences)
    if output.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, mu.numpy())
        write_text_atomically(output, buffer.getvalue())
    else:
        # A deterministic autoencoder's codes are points: logvar null.
        logvars = logvar.tolist() if logvar is not None else [None] * len(sentences)
        rows = zip(sentences, mu.tolist(), logvars, strict=True)
        write_text_atomically(
            output, "".join(json.dumps({"sentence": s, "mu": m, "logvar": lv}) + "\n" for s, m, lv in rows)
        )
    print(f"wrote {len(sentences)} vectors of size {mu.size(1)} to {output}")
