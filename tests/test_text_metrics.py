"""Tests of textvae.text_metrics: corpus BLEU, self-BLEU, distinct-n, edit similarity and interpolation
measures against hand computations."""

from __future__ import annotations

import math

import pytest

from textvae.evaluation.text import (
    corpus_bleu,
    distinct_n,
    interpolation_metrics,
    reconstruction_scores,
    self_bleu,
    sentence_bleu1,
    token_edit_distance,
    token_similarity,
)


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


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("a b c", "", 3),
        ("", "a b", 2),
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),  # substitution
        ("a b c", "a c", 1),  # deletion
        ("a c", "a b c", 1),  # insertion
        ("kitten sat", "sitting sat down", 2),  # tokens, not characters
        ("a b c d", "b c d a", 2),
        ("a b", "b a", 2),
    ],
)
def test_token_edit_distance_hand_computed(a, b, expected):
    assert token_edit_distance(a.split(), b.split()) == expected
    assert token_edit_distance(b.split(), a.split()) == expected


def test_token_similarity():
    assert token_similarity("", "") == 1.0
    assert token_similarity("the cat sat", "the cat sat") == 1.0
    assert token_similarity("the cat sat", "the dog sat") == pytest.approx(2 / 3)
    assert token_similarity("the cat", "the cat sat down") == pytest.approx(1 / 2)
    assert token_similarity("a b", "c d e") == 0.0
    assert token_similarity("a  b ", "a b") == 1.0  # whitespace tokens


def edit_path(start: str, end: str) -> list[str]:
    """start, then one token-level edit at a time (substitute, then insert or delete) until end."""
    a, b = start.split(), end.split()
    path, current = [start], list(a)
    for i in range(max(len(a), len(b))):
        if i < len(b):
            current = current[:i] + [b[i]] + current[i + 1 :] if i < len(current) else current + [b[i]]
        else:
            current = current[: len(b)]
        path.append(" ".join(current))
    return path


def test_a_straight_path_is_monotone_and_a_stuck_one_is_not_distinct():
    starts = ["the cat sat on the mat", "a dog ran"]
    ends = ["a big dog ran under my rug today", "the red cat sat on my mat"]  # no token shared
    paths = [edit_path(s, e) for s, e in zip(starts, ends, strict=True)]
    steps = len(paths[0])
    paths[1] = paths[1][:steps] + [paths[1][-1]] * (steps - len(paths[1]))  # same S for both
    assert all(path[0] == s and path[-1] == e for path, s, e in zip(paths, starts, ends, strict=True))
    metrics = interpolation_metrics(paths, starts, ends)
    assert metrics["interp_monotonicity"] == 1.0
    assert metrics["interp_endpoint_bleu"] == pytest.approx(100.0)
    assert metrics["num_paths"] == 2 and metrics["steps"] == steps

    stuck = interpolation_metrics([[starts[0]] * 5], starts[:1], ends[:1])
    assert stuck["interp_distinct"] == pytest.approx(1 / 5)
    assert stuck["interp_monotonicity"] == 1.0  # nothing falls and nothing rises
    assert stuck["interp_endpoint_bleu"] < 100.0  # the end never comes back


def test_interpolation_metrics_by_hand():
    start, end = "a b c d", "w x y z"  # four tokens: BLEU needs a 4-gram
    # Similarity to the start 1, 3/4, 1, 1/4, 0; to the end 0, 1/4, 0, 3/4, 1: the second step goes back.
    back = ["a b c d", "w b c d", "a b c d", "w x y d", "w x y z"]
    jump = [start, start, end, end, end]  # monotone: ties count
    metrics = interpolation_metrics([back, jump], [start, start], [end, end])
    assert metrics["interp_monotonicity"] == pytest.approx(7 / 8)
    assert metrics["interp_distinct"] == pytest.approx((4 / 5 + 2 / 5) / 2)
    assert metrics["interp_endpoint_bleu"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("paths", "starts", "ends", "message"),
    [
        ([], [], [], "no interpolation paths"),
        ([["a", "b"]], ["a", "c"], ["b"], "one start and one end"),
        ([["a", "b"]], ["a"], [], "one start and one end"),
        ([["a"]], ["a"], ["b"], "at least 2"),
        ([["a", "b"], ["a", "b", "c"]], ["a", "a"], ["b", "c"], "same number of steps"),
        (["a b"], ["a"], ["b"], "string"),
    ],
)
def test_bad_interpolation_inputs(paths, starts, ends, message):
    with pytest.raises(ValueError, match=message):
        interpolation_metrics(paths, starts, ends)


# nltk's sentence_bleu([reference], hypothesis, weights=(1,)), computed with nltk 3.9 on these examples.
NLTK_HYPOTHESIS = (
    "It is a guide to action which ensures that the military always obeys the commands of the party"
)
NLTK_REFERENCE = "It is a guide to action that ensures that the military will forever heed Party commands"


@pytest.mark.parametrize(
    "hypothesis, reference, expected",
    [
        (NLTK_HYPOTHESIS.split(), NLTK_REFERENCE.split(), 0.6111111111111112),  # 11 of 18, no penalty
        ("the cat sat </s>".split(), "the cat sat on the mat </s>".split(), 0.4723665527410147),  # exp(-3/4)
        (["c"], ["a", "b"], 0.0),  # no match
        ("the the the the".split(), "the the cat".split(), 0.5),  # clipped at 2 of 4
        ([], ["a"], 0.0),
        ("a b".split(), "a b".split(), 1.0),
    ],
)
def test_sentence_bleu1_equals_nltk(hypothesis, reference, expected):
    assert sentence_bleu1(hypothesis, reference) == pytest.approx(expected)


def test_reconstruction_scores_by_hand():
    hypotheses = ["the cat sat", "a dog ran", "x"]
    references = ["the cat sat on the mat", "a dog ran", "y z"]
    scores = reconstruction_scores(hypotheses, references)
    # BLEU-1 with an end token on each side: exp(-3/4) for the first, 1 for the second, 1/2 * exp(-1/2)
    # for the third ("x </s>" against "y z </s>": one match of two, brevity 2 against 3).
    expected = (0.4723665527410147 + 1.0 + 0.5 * math.exp(1 - 3 / 2)) / 3
    assert scores["recon_bleu1"] == pytest.approx(100 * expected)
    assert scores["recon_exact"] == pytest.approx(1 / 3)
    assert scores["recon_bleu"] == pytest.approx(corpus_bleu(hypotheses, references)[0])
    assert reconstruction_scores(references, references)["recon_exact"] == 1.0
