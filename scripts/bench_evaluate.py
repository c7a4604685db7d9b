"""Evaluation speed on PTB valid: the full BENCHMARKS.md table, importance-weighted NLL with K = 500.

Evaluates a trained run folder (`--model`), or else a random PTB-sized model (LSTM, embedding 256, hidden
256, latent 32, as Li et al. 2019 and Fu et al. 2019 use on PTB; vocabulary from PTB train), times
`textvae.evaluation.evaluate` and prints sentences / s, tokens / s, the total time, an extrapolation to the
whole split by target tokens when `--limit` cuts it, and the metrics.

    python scripts/bench_evaluate.py --limit 100 --iw-samples 500 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from textvae import TextVAEConfig, TextVAEModel
from textvae.data.corpora import load_corpus
from textvae.data.storage import TokenizedSplit
from textvae.data.token_ids import tokenize_corpus
from textvae.data.tokenization import load_tokenizer, train_word_tokenizer
from textvae.evaluation.run import format_results
from textvae.evaluation.split import evaluate

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("TEXTVAE_DATA") or str(DEFAULT_DATA_DIR))
    parser.add_argument("--model", help="a trained run folder; default: a random PTB-sized LSTM VAE")
    parser.add_argument("--split", default="validation", help="validation or test")
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--iw-chunk-size", type=int, default=50, help="samples per sentence per decoder call")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="evaluate only the first N sentences of the split")
    parser.add_argument("--num-diversity-samples", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-generation", action="store_true", help="skip reconstructions and prior samples")
    parser.add_argument("--json", help="also write the figures and metrics to this file")
    return parser.parse_args()


def load_model_and_tokenizer(args: argparse.Namespace, corpus):
    if args.model:
        return TextVAEModel.from_pretrained(args.model), load_tokenizer(args.model)
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    torch.manual_seed(args.seed)
    config = TextVAEConfig(
        vocab_size=len(tokenizer), embedding_size=256, hidden_size=256, latent_dim=32,
        bidirectional_encoder=False, bag_of_words_loss=0.0, z_to_output=False,  # the model its figures are of
    )  # fmt: skip
    return TextVAEModel(config), tokenizer


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus("ptb", data_dir=args.data_dir)
    model, tokenizer = load_model_and_tokenizer(args, corpus)
    model.to(args.device)
    full = TokenizedSplit.from_dataset(tokenize_corpus(corpus, tokenizer)[args.split])
    split = TokenizedSplit(full.input_ids[: args.limit]) if args.limit else full
    start = time.perf_counter()
    results = evaluate(
        model,
        tokenizer,
        split,
        iw_samples=args.iw_samples,
        batch_size=args.batch_size,
        iw_chunk_size=args.iw_chunk_size,
        num_diversity_samples=0 if args.no_generation else args.num_diversity_samples,
        seed=args.seed,
        compute_bleu=not args.no_generation,
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    timing = {
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "sentences_per_second": len(split) / seconds,
        "tokens_per_second": split.num_target_tokens() / seconds,
        # What the decoder actually scores: every target token once per importance sample.
        "decoder_tokens_per_second": split.num_target_tokens() * args.iw_samples / seconds,
        # IW decoding dominates and scales with target tokens x K; MI grows with N^2 but stays small.
        "extrapolated_full_split_seconds": seconds * full.num_target_tokens() / split.num_target_tokens(),
        "full_split_sentences": len(full),
        "full_split_tokens": full.num_target_tokens(),
    }
    print(format_results(results))
    print(
        f"\n{len(split)} sentences, {split.num_target_tokens()} tokens, K={args.iw_samples} on {args.device} "
        f"({timing['threads']} threads): {seconds:.1f} s, {timing['sentences_per_second']:.2f} sentences/s, "
        f"{timing['tokens_per_second']:.1f} tokens/s ({timing['decoder_tokens_per_second']:.0f} decoder tokens/s)"
    )
    if args.limit and len(split) < len(full):
        print(
            f"extrapolated to all {len(full)} sentences ({full.num_target_tokens()} tokens): "
            f"{timing['extrapolated_full_split_seconds']:.0f} s (estimate, by target tokens)"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "timing": timing, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
