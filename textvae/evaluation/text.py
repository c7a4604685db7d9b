"""Text-quality metrics: corpus BLEU (sacrebleu), sentence BLEU-1, exact match, self-BLEU, distinct-n; edit
similarity and interpolation."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import BLEU


def bleu_tokenization(tokenizer) -> str:
    """sacrebleu's `tokenize` for a tokenizer's text: "none" for word-level (the corpus is already
    tokenized, as PTB is, and re-tokenizing would split `<unk>`), else sacrebleu's default "13a"."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    return "none" if type(model).__name__ == "WordLevel" else "13a"


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "none"
) -> tuple[float, str]:
    """sacrebleu corpus BLEU (0-100) of hypotheses against one reference each, and its signature."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"need as many hypotheses as references, at least one: got {len(hypotheses)} and {len(references)}"
        )
    bleu = BLEU(tokenize=tokenize)
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(bleu.get_signature())


# The end-of-sentence token both sides of a sentence-level BLEU-1 carry, as SentenceMIM-demo's targets
# (`words + ['<eos>']`) and decodings (up to and including EOS) do.
_END = "</s>"


def sentence_bleu1(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Sentence-level BLEU-1 (0-1) of one token list against one reference, as nltk's
    `sentence_bleu([reference], hypothesis, weights=(1,))` computes it: the clipped unigram precision
    times the brevity penalty `exp(1 - r / c)` when the hypothesis (c tokens) is not longer than the
    reference (r); 0 for an empty hypothesis or no match (nltk's value, without smoothing)."""
    if not hypothesis:
        return 0.0
    reference_counts = Counter(reference)
    matches = sum(min(count, reference_counts[token]) for token, count in Counter(hypothesis).items())
    if matches == 0:
        return 0.0
    length, reference_length = len(hypothesis), len(reference)
    penalty = 1.0 if length > reference_length else math.exp(1 - reference_length / length)
    return penalty * matches / length


def reconstruction_scores(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "none"
) -> dict:
    """What reconstruction keeps of each sentence: `recon_bleu` (corpus BLEU-4, sacrebleu, 0-100),
    `recon_bleu1` (sentence-level BLEU-1 averaged over sentences, 0-100: SentenceMIM-demo's test.py
    figure, each side with an end-of-sentence token) and `recon_exact` (the share of sentences rebuilt
    word for word), and `bleu_signature`."""
    bleu, signature = corpus_bleu(hypotheses, references, tokenize)
    pairs = [
        (hypothesis.split(), reference.split())
        for hypothesis, reference in zip(hypotheses, references, strict=True)
    ]
    bleu1 = sum(sentence_bleu1(h + [_END], r + [_END]) for h, r in pairs) / len(pairs)
    exact = sum(h == r for h, r in pairs) / len(pairs)
    return {"recon_bleu": bleu, "recon_bleu1": 100 * bleu1, "recon_exact": exact, "bleu_signature": signature}


def self_bleu(samples: Sequence[str], tokenize: str = "none") -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen), 0-100: the mean sentence BLEU of each sample against all
    the others as references; lower means more diverse. sacrebleu sentence BLEU (effective order, exp
    smoothing), not NLTK's, so the zero-match edge cases differ slightly from Texygen's."""
    if len(samples) < 2:
        raise ValueError(f"self-BLEU needs at least 2 samples, got {len(samples)}")
    samples = list(samples)
    bleu = BLEU(tokenize=tokenize, effective_order=True)
    scores = [
        bleu.sentence_score(sample, samples[:i] + samples[i + 1 :]).score for i, sample in enumerate(samples)
    ]
    return float(sum(scores) / len(scores))


def distinct_n(samples: Sequence[str], n: int) -> float:
    """distinct-n (Li et al. 2016): distinct n-grams / all n-grams over the whitespace-split samples.

    0.0 when the samples hold no n-gram at all.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    ngrams = []
    for sample in samples:
        words = sample.split()
        ngrams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def token_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences: insertions, deletions, substitutions, cost 1."""
    previous = list(range(len(b) + 1))
    for i, token_a in enumerate(a, start=1):
        current = [i]
        for j, token_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (token_a != token_b)))
        previous = current
    return previous[-1]


def token_similarity(a: str, b: str) -> float:
    """1 - token edit distance / the longer length, over whitespace tokens: 1.0 for the same tokens (and
    for two empty sentences), 0.0 when every position of the longer one must be edited."""
    tokens_a, tokens_b = a.split(), b.split()
    longest = max(len(tokens_a), len(tokens_b))
    return 1.0 - token_edit_distance(tokens_a, tokens_b) / longest if longest else 1.0


def interpolation_metrics(
    paths: Sequence[Sequence[str]], starts: Sequence[str], ends: Sequence[str], tokenize: str = "none"
) -> dict:
    """Measures of decoded interpolation paths (each S sentences, from the decoding of `starts[i]`'s
    latent to that of `ends[i]`), as defined in docs/evaluation.md:

    - `interp_endpoint_bleu`: corpus BLEU (sacrebleu, `tokenize`) of every path's first and last
      sentences against its start and end inputs: do the ends come back?
    - `interp_monotonicity`: the share of consecutive step pairs, over all paths, where the similarity
      (`token_similarity`) to the end input does not fall and that to the start input does not rise.
    - `interp_distinct`: the mean over paths of distinct sentences / S (1/S for a path stuck on one
      sentence, 1.0 when every step differs).
    - `num_paths`, `steps` (S).
    """
    if not paths:
        raise ValueError("no interpolation paths given")
    if len(paths) != len(starts) or len(paths) != len(ends):
        raise ValueError(
            f"need one start and one end per path: got {len(paths)} paths, {len(starts)} starts "
            f"and {len(ends)} ends"
        )
    if isinstance(paths[0], str):
        raise ValueError("paths must be sequences of sentences, got a string for path 1")
    steps = len(paths[0])
    if steps < 2:
        raise ValueError(f"a path needs at least 2 steps (its two ends), got {steps}")
    for index, path in enumerate(paths):
        if isinstance(path, str) or len(path) != steps:
            raise ValueError(
                f"every path needs the same number of steps: path 1 has {steps}, path {index + 1} has "
                f"{'a string' if isinstance(path, str) else len(path)}"
            )
    hypotheses = [sentence for path in paths for sentence in (path[0], path[-1])]
    references = [sentence for pair in zip(starts, ends, strict=True) for sentence in pair]
    bleu, _ = corpus_bleu(hypotheses, references, tokenize)
    monotone, distinct = 0, 0.0
    for path, start, end in zip(paths, starts, ends, strict=True):
        to_start = [token_similarity(sentence, start) for sentence in path]
        to_end = [token_similarity(sentence, end) for sentence in path]
        monotone += sum(
            to_end[t + 1] >= to_end[t] and to_start[t + 1] <= to_start[t] for t in range(steps - 1)
        )
        distinct += len(set(path)) / steps
    return {
        "interp_endpoint_bleu": bleu,
        "interp_monotonicity": monotone / (len(paths) * (steps - 1)),
        "interp_distinct": distinct / len(paths),
        "num_paths": len(paths),
        "steps": steps,
    }
