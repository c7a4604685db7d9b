"""Decoding: greedy determinism, EOS stops, sampling filters, beam search, cache, repetition controls,
lerp / slerp."""

from __future__ import annotations

import pytest
import torch
from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from textvae.decoding import DecodingConfig
from textvae.generation import (
    apply_repetition_controls_,
    ban_repeated_ngrams_,
    beam_search,
    filter_logits,
    generate,
    interpolate_latents,
    penalize_repetition_,
)

from .helpers import TINY_TRANSFORMER, tiny_model

EOS, PAD, BOS = 2, 0, 1


def eos_terminated(ids: torch.Tensor) -> bool:
    """Every row: no padding before its EOS, only padding after it."""
    for row in ids.tolist():
        if EOS in row:
            cut = row.index(EOS)
            if PAD in row[:cut] or any(token != PAD for token in row[cut + 1 :]):
                return False
        elif PAD in row:
            return False
    return True


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_is_deterministic_and_stops_at_eos(cell, batch_size):
    model = tiny_model(encoder_type=cell, decoder_type=cell, decoder_num_layers=2)
    z = torch.randn(batch_size, 4)
    first = generate(model, z, max_length=30)
    assert torch.equal(first, generate(model, z, max_length=30))
    assert first.size(0) == batch_size and first.size(1) <= 30
    assert eos_terminated(first)
    assert not ((first == 1).any())  # BOS is never generated


def test_bias_towards_eos_stops_every_row_at_once():
    model = tiny_model()
    with torch.no_grad():
        model.decoder.output.bias[EOS] = 100.0
    ids = generate(model, torch.randn(3, 4), max_length=20)
    assert ids.shape == (3, 1) and torch.equal(ids[:, 0], torch.full((3,), EOS))


def test_cached_equals_uncached():
    model = tiny_model(decoder_num_layers=2)
    z = torch.randn(3, 4)
    assert torch.equal(
        generate(model, z, max_length=15, use_cache=True), generate(model, z, max_length=15, use_cache=False)
    )


def test_sampling_repeats_with_a_seed():
    model = tiny_model()
    z = torch.randn(4, 4)

    def draw(seed):
        return generate(
            model, z, max_length=15, do_sample=True, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(draw(3), draw(3))
    assert eos_terminated(draw(4))


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert not torch.isinf(filter_logits(logits)).any()


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(max_length=0)])
def test_bad_decoding_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate(tiny_model(), torch.randn(1, 4), **{"max_length": 5, **bad})


def test_beam_search_with_one_beam_is_greedy():
    model = tiny_model(decoder_num_layers=2)
    z = torch.randn(3, 4)
    greedy = generate(model, z, max_length=12)
    beam = beam_search(model, z, beam_size=1, max_length=12, length_penalty=0.0)
    assert torch.equal(beam[:, : greedy.size(1)], greedy)


def test_beam_search_finds_a_likelier_sequence_than_greedy():
    model = tiny_model(seed=3)
    z = torch.randn(4, 4)

    def log_prob(ids):
        full = torch.cat([torch.ones(ids.size(0), 1, dtype=torch.long), ids], dim=1)
        mask = torch.cat([torch.ones(ids.size(0), 1, dtype=torch.long), (ids != PAD).long()], dim=1)
        return -model.reconstruction_loss(full, mask, z)[0]

    greedy = generate(model, z, max_length=10)
    beam = beam_search(model, z, beam_size=8, max_length=10, length_penalty=0.0)
    finished = (greedy == EOS).any(1) & (beam == EOS).any(1)
    assert eos_terminated(beam)
    assert (log_prob(beam)[finished] >= log_prob(greedy)[finished] - 1e-4).all()


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_includes_endpoints(method):
    a, b = torch.randn(8), torch.randn(8)
    path = interpolate_latents(a, b, 5, method)
    assert path.shape == (5, 8)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)


def test_slerp_keeps_the_norm_between_equal_norm_points():
    a = torch.tensor([3.0, 0.0])
    b = torch.tensor([0.0, 3.0])
    assert torch.allclose(interpolate_latents(a, b, 7, "slerp").norm(dim=1), torch.full((7,), 3.0), atol=1e-5)
    assert interpolate_latents(a, b, 3, "lerp")[1].norm() < 3.0


@pytest.mark.parametrize("steps, method", [(1, "lerp"), (5, "cubic")])
def test_bad_interpolation_options(steps, method):
    with pytest.raises(ValueError):
        interpolate_latents(torch.zeros(2), torch.ones(2), steps, method)


def test_a_vae_needs_z_to_decode():
    with pytest.raises(ValueError, match="give z"):
        generate(tiny_model(), None, num_sequences=2)


# Repetition controls: the meaning of transformers' no_repeat_ngram_size and repetition_penalty.

MODELS = {
    "lstm": dict(decoder_num_layers=2),
    "gru": dict(encoder_type="gru", decoder_type="gru"),
    "transformer": dict(decoder_type="transformer", **TINY_TRANSFORMER),
}


def repeated_ngram(row: list[int], n: int) -> bool:
    """Whether `[BOS] + row`, cut after its EOS, holds some n-gram twice."""
    tokens = [BOS, *row]
    if EOS in row:
        tokens = tokens[: tokens.index(EOS) + 1]
    ngrams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def test_controls_match_transformers_logits_processors():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 11, generator=generator) * 3  # (B, V), both signs
    prefix = torch.randint(0, 6, (16, 9), generator=generator)  # few ids: many repeats
    expected = RepetitionPenaltyLogitsProcessor(1.7)(prefix, scores.clone())
    assert torch.equal(penalize_repetition_(scores.clone(), prefix, 1.7), expected)
    for n in (1, 2, 3, 4, 9, 10):
        expected = NoRepeatNGramLogitsProcessor(n)(prefix, scores.clone())
        assert torch.equal(ban_repeated_ngrams_(scores.clone(), prefix, n), expected), n


def test_repetition_penalty_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, -0.5, 0.0]])
    prefix = torch.tensor([[1, 1, 0, 4]])  # tokens 0, 1 and 4 seen; 1 twice, penalised once
    penalized = penalize_repetition_(logits.clone(), prefix, 2.0)
    assert penalized.tolist() == [[1.0, -2.0, 0.5, -0.5, 0.0]]
    before, after = logits.softmax(-1)[0], penalized.softmax(-1)[0]
    assert after[0] < before[0] and after[1] < before[1]
    assert after[2] > before[2] and after[3] > before[3]


def test_a_row_with_every_token_banned_ends():
    scores = torch.tensor([[float("-inf"), -1.0, -2.0, float("-inf"), -0.5]])
    prefix = torch.tensor([[1, 2, 4]])  # with n = 1, every allowed token is banned
    controlled = apply_repetition_controls_(scores, prefix, 1, 1.0, eos_token_id=EOS)
    assert controlled[0, EOS] == -2.0 and torch.isneginf(controlled[0, [0, 1, 3, 4]]).all()


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_never_repeats_when_sampling(name, n):
    model = tiny_model(**MODELS[name])
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))

    def draw(seed, **controls):
        generator = torch.Generator().manual_seed(seed)
        return generate(
            model, z, max_length=30, do_sample=True, temperature=1.5, generator=generator, **controls
        )

    plain_repeats = 0
    for seed in range(4):
        ids = draw(seed, no_repeat_ngram_size=n)
        assert eos_terminated(ids)
        assert not any(repeated_ngram(row, n) for row in ids.tolist())
        plain_repeats += sum(repeated_ngram(row, n) for row in draw(seed).tolist())
    assert plain_repeats > 0  # the ban has something to do


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_in_greedy_and_beam(n):
    model = tiny_model(seed=2)
    with torch.no_grad():
        model.decoder.output.bias[EOS] = -5.0  # long outputs, where greedy loops
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert any(repeated_ngram(row, n) for row in generate(model, z, max_length=30).tolist())
    greedy = generate(model, z, max_length=30, no_repeat_ngram_size=n)
    beam = beam_search(model, z, beam_size=3, max_length=30, no_repeat_ngram_size=n)
    for ids in (greedy, beam):
        assert eos_terminated(ids)
        assert not any(repeated_ngram(row, n) for row in ids.tolist())
    # A ban is the same on logits and log-probs: one beam is greedy decoding with the ban.
    one_beam = beam_search(model, z, beam_size=1, max_length=30, length_penalty=0.0, no_repeat_ngram_size=n)
    assert torch.equal(one_beam[:, : greedy.size(1)], greedy)


def test_repetition_penalty_lowers_repeats():
    model = tiny_model(seed=2)
    with torch.no_grad():
        model.decoder.output.bias[EOS] = -5.0
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))

    def repeats(ids):
        return sum(len(row) - len(set(row)) for row in ids.tolist())

    plain = generate(model, z, max_length=20)
    assert repeats(generate(model, z, max_length=20, repetition_penalty=3.0)) < repeats(plain)
    plain = beam_search(model, z, beam_size=3, max_length=20)
    assert repeats(beam_search(model, z, beam_size=3, max_length=20, repetition_penalty=3.0)) < repeats(plain)


def test_controls_off_give_plain_decoding():
    model = tiny_model(decoder_num_layers=2)
    z = torch.randn(6, 4)
    off = dict(no_repeat_ngram_size=0, repetition_penalty=1.0)
    assert torch.equal(generate(model, z, max_length=20, **off), generate(model, z, max_length=20))
    sampled = [
        generate(
            model, z, max_length=20, do_sample=True, generator=torch.Generator().manual_seed(5), **controls
        )
        for controls in (off, {})
    ]
    assert torch.equal(*sampled)
    assert torch.equal(beam_search(model, z, max_length=20, **off), beam_search(model, z, max_length=20))
    # An n-gram longer than any sequence never matches: the tokens stay those of plain decoding.
    assert torch.equal(
        generate(model, z, max_length=20, no_repeat_ngram_size=22), generate(model, z, max_length=20)
    )


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("do_sample", [False, True])
def test_controls_cached_equals_uncached(name, do_sample):
    model = tiny_model(**MODELS[name])
    z = torch.randn(5, 4)

    def run(use_cache):
        generator = torch.Generator().manual_seed(2)
        controls = dict(no_repeat_ngram_size=2, repetition_penalty=1.3)
        return generate(
            model, z, max_length=25, do_sample=do_sample, generator=generator, use_cache=use_cache, **controls
        )

    assert torch.equal(run(True), run(False))


@pytest.mark.parametrize(
    "bad",
    [
        dict(no_repeat_ngram_size=-1),
        dict(no_repeat_ngram_size=1.5),
        dict(no_repeat_ngram_size=True),
        dict(repetition_penalty=0.0),
        dict(repetition_penalty=-1.2),
        dict(repetition_penalty=float("inf")),
        dict(repetition_penalty=float("nan")),
        dict(repetition_penalty="1.2"),
    ],
)
def test_bad_repetition_controls(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        generate(tiny_model(), torch.randn(1, 4), max_length=5, **bad)
    with pytest.raises(ValueError, match=name):
        beam_search(tiny_model(), torch.randn(1, 4), max_length=5, **bad)
    with pytest.raises(ValueError, match=name):
        DecodingConfig(**bad)
