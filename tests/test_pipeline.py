"""The pipeline: strings in, strings out, on a tiny trained run."""

from __future__ import annotations

import pytest
import torch

from textvae.pipeline import TextVAEPipeline


@pytest.fixture(scope="module")
def pipeline(trained_run):
    return TextVAEPipeline.from_pretrained(trained_run, device="cpu")


def test_sample_is_repeatable_with_a_seed(pipeline):
    first = pipeline.sample(4, seed=7)
    assert len(first) == 4 and all(isinstance(s, str) for s in first)
    assert first == pipeline.sample(4, seed=7)
    assert pipeline.sample(4, seed=7, strategy="greedy") == pipeline.sample(4, seed=7, strategy="greedy")


@pytest.mark.parametrize("n", [0, -3])
def test_sample_needs_a_positive_count(pipeline, n):
    with pytest.raises(ValueError, match="positive"):
        pipeline.sample(n)


def test_encode_shapes_and_determinism(pipeline):
    mu, logvar = pipeline.encode(["the cat sat", "a dog ran on the mat"])
    assert mu.shape == logvar.shape == (2, 4)
    assert torch.equal(mu, pipeline.encode(["the cat sat", "a dog ran on the mat"])[0])
    # Batching does not change a sentence's encoding (padding is masked).
    assert torch.allclose(pipeline.encode(["the cat sat"])[0][0], mu[0], atol=1e-6)


def test_decode_matches_reconstruct_from_the_mean(pipeline):
    sentences = ["the cat sat on the mat", "a big dog"]
    mu, _ = pipeline.encode(sentences)
    assert pipeline.reconstruct(sentences, strategy="greedy", no_repeat_ngram_size=0) == pipeline.decode(mu)
    assert len(pipeline.reconstruct(sentences, strategy="beam", beam_size=3)) == 2
    assert pipeline.reconstruct(sentences, strategy="sample", seed=1) == pipeline.reconstruct(
        sentences, strategy="sample", seed=1
    )


def test_interpolation_endpoints_are_the_reconstructions(pipeline):
    a, b = "the cat sat on the mat", "a big dog ran under the rug"
    path = pipeline.interpolate(a, b, steps=6, method="slerp")
    assert len(path) == 6
    assert path[0] == pipeline.reconstruct([a])[0] and path[-1] == pipeline.reconstruct([b])[0]


@pytest.mark.parametrize("sentences", [[""], ["   "], ["fine", ""], []])
def test_empty_sentences_are_refused(pipeline, sentences):
    with pytest.raises(ValueError, match="empty|no sentences"):
        pipeline.reconstruct(sentences)


def test_unknown_words_are_read_as_unk_with_a_warning(pipeline, caplog):
    with caplog.at_level("WARNING"):
        pipeline.encode(["the zebra sat"])
    assert "1 word(s) are not in the vocabulary" in caplog.text


def test_bad_strategy_is_named(pipeline):
    with pytest.raises(ValueError, match="strategy"):
        pipeline.reconstruct(["the cat"], strategy="nucleus")


def test_unseeded_sampling_leaves_the_global_rng_alone(pipeline):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    pipeline.sample(2)
    pipeline.reconstruct(["the cat sat"], strategy="sample")
    assert torch.equal(torch.get_rng_state(), state)


def has_repeated_word(sentence: str) -> bool:
    words = sentence.split()
    return len(words) != len(set(words))


@pytest.mark.parametrize("strategy", ["sample", "greedy", "beam"])
def test_no_repeat_ngram_reaches_every_strategy(pipeline, strategy):
    plain = pipeline.sample(30, seed=0, strategy=strategy)
    banned = pipeline.sample(30, seed=0, strategy=strategy, no_repeat_ngram_size=1)
    assert any(has_repeated_word(s) for s in plain)  # a word-level vocabulary: a token is a word
    assert not any(has_repeated_word(s) for s in banned)
    sentences = ["the cat sat on the mat", "a big dog ran under the rug"]
    assert not any(
        has_repeated_word(s)
        for s in pipeline.reconstruct(sentences, strategy=strategy, seed=0, no_repeat_ngram_size=1)
    )


def test_repetition_controls_off_change_nothing(pipeline):
    off = dict(no_repeat_ngram_size=0, repetition_penalty=1.0)
    sentences = ["the cat sat on the mat", "a big dog ran under the rug"]
    assert pipeline.sample(6, seed=2, **off) == pipeline.sample(6, seed=2)
    # reconstruct and interpolate default to a no-repeat size of 3: off, they decode as plain beam search.
    mu, _ = pipeline.encode(sentences)
    assert pipeline.reconstruct(sentences, **off) == pipeline.decode(mu, strategy="beam")
    ends = pipeline.interpolate(*sentences, steps=4, strategy="greedy", **off)
    assert [ends[0], ends[-1]] == pipeline.decode(mu, {"strategy": "greedy"})
    penalized = pipeline.interpolate(*sentences, steps=4, strategy="beam", repetition_penalty=1.5)
    assert len(penalized) == 4


@pytest.mark.parametrize("bad", [dict(no_repeat_ngram_size=-2), dict(repetition_penalty=0.0)])
def test_bad_repetition_controls_are_named(pipeline, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        pipeline.sample(2, **bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        pipeline.decode(torch.zeros(1, 4), **bad)


def test_reconstruct_and_interpolate_default_to_what_measured_best(trained_run):
    from textvae import decoding, pipeline

    vae = pipeline.TextVAEPipeline.from_pretrained(trained_run)
    sentences = ["the cat sat on the mat", "a dog ran under the rug"]
    measured_best = dict(strategy="beam", beam_size=5, no_repeat_ngram_size=3)
    assert vae.reconstruct(sentences) == vae.reconstruct(sentences, **measured_best)
    assert vae.interpolate(*sentences, steps=4) == vae.interpolate(*sentences, steps=4, **measured_best)
    assert vae.interpolation_path(*sentences)["strategy"] == "beam"
    best = decoding.decoding_defaults("reconstruct")
    assert (best.strategy, best.beam_size, best.no_repeat_ngram_size) == ("beam", 5, 3)
    assert decoding.decoding_defaults("decode").strategy == "greedy"
    assert decoding.decoding_defaults("sample").strategy == "sample"
