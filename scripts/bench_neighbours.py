"""Exact nearest-neighbour search speed: `textvae.latent.arithmetic.nearest_neighbours` over a 100,000-vector corpus.

The corpus is random N(0, I) vectors of size 32 (the latent size of the PTB models), or, with `--model`
and `--corpus`, the posterior means of a corpus file encoded (and cached) by a trained run. Prints the
time per query in milliseconds for single queries and for batches of queries, both metrics.

    python scripts/bench_neighbours.py --threads 1
    python scripts/bench_neighbours.py --model runs/ptb --corpus ../shared/data/ptb/train.txt
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from textvae.latent.arithmetic import nearest_neighbours


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000, help="corpus vectors (random corpus)")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--model", help="a trained run folder, to search its encodings of --corpus")
    parser.add_argument("--corpus", help="a sentence file (.txt, .csv, .tsv, .jsonl) to encode with --model")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per setting (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def corpus_vectors(args: argparse.Namespace) -> torch.Tensor:
    if args.model:
        from textvae.data.corpora import read_sentence_file
        from textvae.latent.cache import encode_corpus_cached
        from textvae.pipeline import TextVAEPipeline

        pipeline = TextVAEPipeline.from_pretrained(args.model)
        sentences, _ = read_sentence_file(args.corpus)
        return encode_corpus_cached(pipeline, sentences, args.corpus)
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randn(args.size, args.latent_dim, generator=generator)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = corpus_vectors(args)
    generator = torch.Generator().manual_seed(args.seed + 1)
    print(
        f"corpus {tuple(corpus.shape)}, k={args.k}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), {platform.processor() or platform.machine()}"
    )
    for metric in ("cosine", "l2"):
        for batch in args.batch_sizes:
            queries = torch.randn(args.repeats + 1, batch, corpus.size(1), generator=generator)
            nearest_neighbours(queries[0], corpus, args.k, metric)  # warm-up
            times = []
            for query in queries[1:]:
                start = time.perf_counter()
                nearest_neighbours(query, corpus, args.k, metric)
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            print(
                f"{metric:6s} batch {batch:4d}: {1000 * median:8.2f} ms per call, "
                f"{1000 * median / batch:7.3f} ms per query (median of {args.repeats})"
            )


if __name__ == "__main__":
    main()
