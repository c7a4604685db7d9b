"""Which decoding serves reconstruction and interpolation best: a measurement, not a guess.

For one trained run and a file of held-out sentences, decodes the posterior means of the first --sentences
sentences (reconstruction) and --pairs interpolation paths between random pairs of them (--steps points,
ends included) with each decoding setting, and prints for each:

- recon BLEU (sacrebleu corpus BLEU of the reconstructions against their inputs),
- interp_endpoint_bleu, interp_monotonicity, interp_distinct (BENCHMARKS.md's definitions),
- the share of outputs that repeat some 3-gram (the "<unk> of the <unk> of the" loops),
- seconds per sentence decoded.

    python scripts/bench_decoding.py runs/ptb_table/rate_30 --file ../shared/data/ptb/valid.txt --json out.json

The settings: greedy and beam search (5 beams), each plain, with --no-repeat-ngram-size 3 and with
--repetition-penalty 1.2; and greedy with --no-repeat-ngram-size 2. The pipeline's defaults for `reconstruct` and `interpolate` are chosen from
this table (README, "Decoding").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from textvae.cli import USER_ERRORS
from textvae.cli.common import non_negative_int, positive_int
from textvae.data.corpora import read_sentence_file
from textvae.data.tokenization import decode_ids
from textvae.evaluation.text import bleu_tokenization, corpus_bleu, interpolation_metrics
from textvae.generation import interpolate_latents
from textvae.pipeline import TextVAEPipeline

SETTINGS = {
    "greedy": dict(strategy="greedy"),
    "greedy no-repeat-2": dict(strategy="greedy", no_repeat_ngram_size=2),
    "greedy no-repeat-3": dict(strategy="greedy", no_repeat_ngram_size=3),
    "greedy penalty-1.2": dict(strategy="greedy", repetition_penalty=1.2),
    "beam-5": dict(strategy="beam", beam_size=5),
    "beam-5 no-repeat-3": dict(strategy="beam", beam_size=5, no_repeat_ngram_size=3),
    "beam-5 penalty-1.2": dict(strategy="beam", beam_size=5, repetition_penalty=1.2),
}


def repeats_trigram(sentence: str) -> bool:
    words = sentence.split()
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(trigrams) != len(set(trigrams))


def measure(pipeline, sentences, mu, pairs, steps, setting, tokenize) -> dict:
    started = time.perf_counter()
    reconstructions = pipeline.decode(mu, **setting)
    first = torch.arange(pairs) % len(sentences)
    second = (first + 1 + torch.arange(pairs) * 7) % len(sentences)
    latents = torch.cat(
        [interpolate_latents(mu[i], mu[j], steps) for i, j in zip(first, second, strict=True)]
    )
    decoded = pipeline.decode(latents, **setting)
    seconds = time.perf_counter() - started
    paths = [decoded[k * steps : (k + 1) * steps] for k in range(pairs)]
    results = interpolation_metrics(
        paths, [sentences[i] for i in first], [sentences[j] for j in second], tokenize
    )
    outputs = reconstructions + decoded
    return {
        "recon_bleu": corpus_bleu(reconstructions, sentences, tokenize)[0],
        "interp_endpoint_bleu": results["interp_endpoint_bleu"],
        "interp_monotonicity": results["interp_monotonicity"],
        "interp_distinct": results["interp_distinct"],
        "repeated_trigram_share": sum(map(repeats_trigram, outputs)) / len(outputs),
        "seconds_per_sentence": seconds / len(outputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--file", type=Path, required=True, help="held-out sentences (valid, never test)")
    parser.add_argument("--sentences", type=positive_int, default=500)
    parser.add_argument("--pairs", type=non_negative_int, default=50)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    unknown = [name for name in args.settings.split(",") if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; settings: {', '.join(SETTINGS)}")
    if args.steps < 3:
        parser.error(f"--steps must be at least 3, got {args.steps}")
    try:
        figures = bench(args)
    except USER_ERRORS as error:  # a run that is not a model, a missing or unreadable file: one line
        parser.error(str(error))
    if args.json:
        args.json.write_text(
            json.dumps({"run": str(args.run), "file": str(args.file), "figures": figures}, indent=2)
        )


def bench(args: argparse.Namespace) -> dict:
    """Print and return the figures of every setting of `args.settings`."""
    pipeline = TextVAEPipeline.from_pretrained(args.run, device="cpu")
    sentences, _ = read_sentence_file(args.file)
    sentences = sentences[: args.sentences]
    # The references are the sentences as the model reads them (unknown words as <unk>), as in evaluate.
    ids = pipeline.tokenizer(sentences, add_special_tokens=False)["input_ids"]
    sentences = [decode_ids(pipeline.tokenizer, row) for row in ids]
    mu, _ = pipeline.encode(sentences)
    tokenize = bleu_tokenization(pipeline.tokenizer)
    print(f"{args.run}: {len(sentences)} sentences of {args.file}, {args.pairs} paths of {args.steps} steps")
    print(
        f"{'setting':<24} {'recon BLEU':>10} {'end BLEU':>9} {'monot.':>7} {'distinct':>9} {'3-gram rep':>10} {'s/sent':>7}"
    )
    figures = {}
    for name in args.settings.split(","):
        figures[name] = row = measure(
            pipeline, sentences, mu, args.pairs, args.steps, SETTINGS[name], tokenize
        )
        print(
            f"{name:<24} {row['recon_bleu']:>10.2f} {row['interp_endpoint_bleu']:>9.2f} "
            f"{row['interp_monotonicity']:>7.3f} {row['interp_distinct']:>9.3f} "
            f"{row['repeated_trigram_share']:>10.3f} {row['seconds_per_sentence']:>7.3f}",
            flush=True,
        )
    return figures


if __name__ == "__main__":
    main()
