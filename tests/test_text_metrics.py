"""Tests of textvae.text_metrics: corpus BLEU, self-BLEU and distinct-n against hand computations."""

from __future__ import annotations

import pytest

from textvae.text_metrics import corpus_bleu, distinct_n, self_bleu


def test_bleu_is_100_on_identical_texts():
    texts = ["the cat sat on the mat", "a dog ran <unk> away"]
    score, signature = corpus_bleu(texts, texts)
    assert score == pytest.approx(100.0)
    assert "tok:none" in signature


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (["a b c d e", "a b c d e", "a b c d e"], 100.0),
        # precisions 4/5, 3/4, 2/3, 1/2 both ways, no brevity penalty
        (["a b c d e", "a b c d f"], 100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25),
        (["a b c d", "e f g h"], 0.0),
    ],
)
def test_self_bleu_hand_computed(samples, expected):
    assert self_bleu(samples) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("samples", "n", "expected"),
    [
        (["a b a", "a c"], 1, 3 / 5),
        (["a b a", "a c"], 2, 3 / 3),
        (["a a a a"], 2, 1 / 3),
        (["a b", "a b"], 2, 1 / 2),
        (["a"], 2, 0.0),
    ],
)
def test_distinct_n_hand_computed(samples, n, expected):
    assert distinct_n(samples, n) == pytest.approx(expected)
