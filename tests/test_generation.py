"""Decoding: greedy determinism, EOS stops, sampling filters, beam search, cache, lerp / slerp."""

from __future__ import annotations

import pytest
import torch

from textvae.generation import beam_search, filter_logits, generate, interpolate_latents

from .helpers import tiny_model

EOS, PAD = 2, 0


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
