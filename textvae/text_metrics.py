"""Text-quality metrics: corpus BLEU (sacrebleu), self-BLEU and distinct-n of generated sentences."""

from __future__ import annotations

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
