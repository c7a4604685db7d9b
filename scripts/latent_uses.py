"""The latent space at work on real data: few-label probes, attribute transfer, anomaly scores, neighbours.

Prints every figure of the README's "Using the latent space" section, given trained run folders:

- probe (--yelp-vae): logistic regression on posterior means of N labelled yelp_short/train.jsonl
  sentences, accuracy on yelp_short/valid.jsonl, against TF-IDF on the same N sentences (N = 100, 1,000,
  all; 5 draws);
- transfer (--yelp-vae): the first 500 negative valid sentences moved by the negative -> positive vector
  (mean mu of positive train sentences - mean mu of negative ones) at each --strengths: the share an
  independent classifier (TF-IDF logistic regression trained on all of train.jsonl) calls positive, and
  BLEU (sacrebleu, tokenize none) of the output against its input; strength 0 is plain reconstruction;
- anomaly (--ptb-vae, --ptb-lm): AUROC of telling Yelp valid, and PTB valid with each sentence's words
  shuffled (seeded), from PTB valid by NLL per token (and the other scores);
- neighbours (--yelp-vae): five valid queries and their nearest train sentences, and the time of one query.

    python scripts/latent_uses.py --yelp-vae runs/yelp_vae --ptb-vae runs/ptb_vae --ptb-lm runs/ptb_lm

Posterior means of the training corpus are cached in the run folder (`encode_corpus_cached`).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from textvae.data.corpora import read_sentence_file
from textvae.evaluation.scoring import auroc
from textvae.evaluation.text import corpus_bleu
from textvae.latent.arithmetic import attribute_vector, nearest_neighbours
from textvae.latent.cache import encode_corpus_cached
from textvae.latent.probes import format_probe_table
from textvae.pipeline import TextVAEPipeline

SECTIONS = ("probe", "transfer", "anomaly", "neighbours")
SCORES = ("nll_per_token", "nll", "neg_elbo", "kl")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--yelp-vae", type=Path, help="a VAE trained on yelp_short/train.txt")
    parser.add_argument("--ptb-vae", type=Path, help="a VAE trained on PTB train")
    parser.add_argument("--ptb-lm", type=Path, help="a language model (latent_dim 0) trained on PTB train")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset to run")
    parser.add_argument("--num-labels", default="100,1000,all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strengths", default="1,1.5,2", help="transfer strengths (0 is always added)")
    parser.add_argument("--transfer-sentences", type=int, default=500)
    parser.add_argument("--iw-samples", type=int, default=50, help="K of the VAE's importance-weighted NLL")
    parser.add_argument("--anomaly-limit", type=int, default=None, help="score only the first N of each set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser.parse_args()


def labelled(data_dir: Path, split: str) -> tuple[list[str], list[str]]:
    texts, labels = read_sentence_file(data_dir / "yelp_short" / f"{split}.jsonl", label_column="label")
    return texts, [str(label) for label in labels]


def encoded(pipeline, data_dir: Path, split: str) -> torch.Tensor:
    """(N, Z) posterior means of a yelp split, cached in the run folder."""
    path = data_dir / "yelp_short" / f"{split}.jsonl"
    texts, _ = read_sentence_file(path)
    return encode_corpus_cached(pipeline, texts, path)


def run_probe(args, pipeline) -> dict:
    (train_texts, train_labels), (test_texts, test_labels) = (
        labelled(args.data_dir, split) for split in ("train", "valid")
    )
    counts = [None if part == "all" else int(part) for part in args.num_labels.split(",")]
    folder = args.data_dir / "yelp_short"
    results = pipeline.probe(
        train_texts,
        train_labels,
        test_texts,
        test_labels,
        num_labels=counts,
        repeats=args.repeats,
        seed=args.seed,
        train_path=folder / "train.jsonl",
        test_path=folder / "valid.jsonl",
    )
    print(f"## probe: sentiment of yelp valid ({len(test_texts)}), labels drawn from yelp train\n")
    print(format_probe_table(results))
    return results


def sentiment_classifier(train_texts, train_labels):
    """The independent judge of transfer: TF-IDF logistic regression on all training labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    classifier = make_pipeline(
        TfidfVectorizer(token_pattern=r"(?u)\b\w+\b"), LogisticRegression(max_iter=5000)
    )
    return classifier.fit(train_texts, train_labels)


def run_transfer(args, pipeline) -> dict:
    train_texts, train_labels = labelled(args.data_dir, "train")
    valid_texts, valid_labels = labelled(args.data_dir, "valid")
    classifier = sentiment_classifier(train_texts, train_labels)
    judge_accuracy = float((classifier.predict(valid_texts) == np.array(valid_labels)).mean())
    train_mu = encoded(pipeline, args.data_dir, "train")
    negative = torch.tensor([label == "0" for label in train_labels])
    vector = attribute_vector(train_mu[negative], train_mu[~negative])  # (Z,)
    inputs = [text for text, label in zip(valid_texts, valid_labels, strict=True) if label == "0"]
    inputs = inputs[: args.transfer_sentences]
    print(
        f"\n## transfer: {len(inputs)} negative valid sentences -> positive (|vector| = {vector.norm():.2f})"
    )
    print(
        f"judge: TF-IDF logistic regression on all {len(train_texts)} train labels, valid accuracy {judge_accuracy:.3f}"
    )
    print(f"judge calls {float((classifier.predict(inputs) == '1').mean()):.3f} of the inputs positive\n")
    print(f"{'strength':<10}{'positive':<10}BLEU vs input")
    rows, examples = [], {}
    for strength in [0.0, *(float(s) for s in args.strengths.split(","))]:
        outputs = pipeline.transfer(inputs, vector=vector, strength=strength)
        positive = float((classifier.predict(outputs) == "1").mean())
        bleu, signature = corpus_bleu(outputs, inputs, tokenize="none")
        rows.append({"strength": strength, "positive": positive, "bleu": bleu})
        examples[strength] = outputs[:5]
        print(f"{strength:<10g}{positive:<10.3f}{bleu:.2f}")
    print(f"(BLEU: {signature})")
    for index in range(min(5, len(inputs))):
        print(f"\n  input: {inputs[index]}")
        for strength, outputs in examples.items():
            print(f"  {strength:>5g}: {outputs[index]}")
    return {"judge_valid_accuracy": judge_accuracy, "vector_norm": float(vector.norm()), "rows": rows}


def shuffled(sentences: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for sentence in sentences:
        words = sentence.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def run_anomaly(args) -> dict:
    ptb, _ = read_sentence_file(args.data_dir / "ptb" / "valid.txt")
    yelp, _ = read_sentence_file(args.data_dir / "yelp_short" / "valid.txt")
    sets = {"ptb valid": ptb, "yelp valid": yelp, "ptb valid shuffled": shuffled(ptb, args.seed)}
    sets = {name: sentences[: args.anomaly_limit] for name, sentences in sets.items()}
    results = {}
    print(f"\n## anomaly: AUROC of telling each set from PTB valid ({len(sets['ptb valid'])} sentences)")
    for name, run in (("vae", args.ptb_vae), ("lm", args.ptb_lm)):
        if run is None:
            continue
        pipeline = TextVAEPipeline.from_pretrained(run, device=args.device)
        started = time.perf_counter()
        scores = {key: pipeline.score(texts, args.iw_samples, args.seed) for key, texts in sets.items()}
        seconds = time.perf_counter() - started
        results[name] = {"run": str(run), "seconds": seconds, "mean_nll_per_token": {}, "auroc": {}}
        k = args.iw_samples if pipeline.model.config.has_latent else "exact"
        print(f"\n{name} ({run}, NLL K={k}, {seconds:.0f} s):")
        for key, rows in scores.items():
            results[name]["mean_nll_per_token"][key] = sum(r["nll"] for r in rows) / sum(
                r["tokens"] for r in rows
            )
        # A language model's -ELBO is its NLL and its KL is 0: only the NLLs tell anything there.
        names = SCORES if pipeline.model.config.has_latent else SCORES[:2]
        for key in ("yelp valid", "ptb valid shuffled"):
            values = {
                score: auroc([r[score] for r in scores["ptb valid"]], [r[score] for r in scores[key]])
                for score in names
            }
            results[name]["auroc"][key] = values
            print(f"  {key:<20}" + "  ".join(f"{score} {value:.3f}" for score, value in values.items()))
        means = results[name]["mean_nll_per_token"]
        print("  NLL per token: " + ", ".join(f"{key} {value:.2f}" for key, value in means.items()))
        # Words out of the model's vocabulary are read as <unk>, a frequent PTB token that the model
        # predicts easily: the share of them explains a likelihood that finds Yelp "usual".
        unknown = {key: unknown_share(pipeline.tokenizer, texts) for key, texts in sets.items()}
        results[name]["unknown_word_share"] = unknown
        print("  words read as unk: " + ", ".join(f"{key} {value:.1%}" for key, value in unknown.items()))
    return results


def unknown_share(tokenizer, sentences: list[str]) -> float:
    """Share of the words of `sentences` that `tokenizer` maps to its unk id (PTB's own <unk> included)."""
    ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    return sum(token == tokenizer.unk_token_id for row in ids for token in row) / sum(len(row) for row in ids)


def run_neighbours(args, pipeline) -> dict:
    train_texts, _ = read_sentence_file(args.data_dir / "yelp_short" / "train.jsonl")
    valid_texts, _ = read_sentence_file(args.data_dir / "yelp_short" / "valid.jsonl")
    train_mu = encoded(pipeline, args.data_dir, "train")
    queries = random.Random(args.seed).sample(valid_texts, 5)
    found = pipeline.neighbours(
        queries, train_texts, k=3, corpus_path=args.data_dir / "yelp_short" / "train.jsonl"
    )
    print(f"\n## neighbours: five yelp valid queries, nearest of {len(train_texts)} train sentences (cosine)")
    for query, hits in zip(queries, found, strict=True):
        print(f"\n  query: {query}")
        for hit in hits:
            print(f"    {hit['score']:.3f}  {hit['sentence']}")
    # One query against 100,000 vectors: the train means, repeated to that size.
    corpus = train_mu.repeat((100_000 + len(train_mu) - 1) // len(train_mu), 1)[:100_000]
    query = pipeline.encode(queries[:1])[0]
    nearest_neighbours(query, corpus, 5)  # warm-up
    times = []
    for _ in range(20):
        started = time.perf_counter()
        nearest_neighbours(query, corpus, 5)
        times.append(time.perf_counter() - started)
    milliseconds = 1000 * sorted(times)[len(times) // 2]
    print(
        f"\n  one query, k=5, over {len(corpus):,} vectors: {milliseconds:.1f} ms (median of 20, {torch.get_num_threads()} threads)"
    )
    return {
        "queries": [{"query": q, "neighbours": h} for q, h in zip(queries, found, strict=True)],
        "query_ms": milliseconds,
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    datasets.disable_progress_bars()  # reading the .jsonl files would draw one on standard error
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # its "forgot to detokenize?" hint: we did not
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(unknown)}")
    figures = {}
    if args.yelp_vae is not None:
        pipeline = TextVAEPipeline.from_pretrained(args.yelp_vae, device=args.device)
        print(f"# yelp VAE: {args.yelp_vae}")
        if "probe" in sections:
            figures["probe"] = run_probe(args, pipeline)
        if "transfer" in sections:
            figures["transfer"] = run_transfer(args, pipeline)
        if "neighbours" in sections:
            figures["neighbours"] = run_neighbours(args, pipeline)
    if "anomaly" in sections and (args.ptb_vae or args.ptb_lm):
        figures["anomaly"] = run_anomaly(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
