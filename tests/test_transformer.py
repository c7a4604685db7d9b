"""Tests of `textvae.transformer`, run through `TextVAEModel` for every encoder / decoder pair.

Every pair of {lstm, gru, transformer} x {lstm, gru, transformer} at batch sizes 1 and 3: shapes, decoder
causality, closed-form KL, save / load identity, cached == uncached decoding, beam search, and training.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import transformers

import textvae  # noqa: F401  (registers TextVAEModel with AutoModel)
from textvae import TextVAEConfig, TextVAEModel
from textvae.generation import beam_search, generate
from textvae.models.transformer import KeyValueCache, TransformerDecoder, sinusoidal_positions

from .helpers import TINY_TRANSFORMER

ARCHITECTURES = ("lstm", "gru", "transformer")
PAIRS = list(itertools.product(ARCHITECTURES, ARCHITECTURES))
BATCH_SIZES = (1, 3)
VOCAB_SIZE, LATENT_DIM = 23, 4
PAD, BOS, EOS = 0, 1, 2


def tiny_config(
    encoder_type: str = "transformer", decoder_type: str = "transformer", **overrides
) -> TextVAEConfig:
    """A model small enough to run in milliseconds; embedding != hidden size exercises the projections."""
    values = dict(
        vocab_size=VOCAB_SIZE,
        embedding_size=12,
        hidden_size=16,
        latent_dim=LATENT_DIM,
        encoder_type=encoder_type,
        decoder_type=decoder_type,
        encoder_num_layers=2,
        decoder_num_layers=2,
        **TINY_TRANSFORMER,
    )
    values.update(overrides)
    return TextVAEConfig(**values)


def tiny_model(
    encoder_type: str = "transformer", decoder_type: str = "transformer", seed: int = 0, **overrides
):
    torch.manual_seed(seed)
    return TextVAEModel(tiny_config(encoder_type, decoder_type, **overrides)).eval()


def make_batch(batch_size: int, seed: int = 0, max_words: int = 6, padded: bool = True):
    """(B, T) `[BOS] words [EOS]` right-padded ids and mask; with `padded`, row lengths differ."""
    generator = torch.Generator().manual_seed(seed)
    if padded:
        lengths = [max_words - (row % 3) * 2 for row in range(batch_size)]
    else:
        lengths = [max_words] * batch_size
    input_ids = torch.full((batch_size, max_words + 2), PAD)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        words = torch.randint(4, VOCAB_SIZE, (length,), generator=generator)
        input_ids[row, : length + 2] = torch.cat([torch.tensor([BOS]), words, torch.tensor([EOS])])
        attention_mask[row, : length + 2] = 1
    return input_ids, attention_mask


def fixed_z(batch_size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, LATENT_DIM, generator=torch.Generator().manual_seed(seed))


def config_values(model: TextVAEModel) -> dict:
    """The architecture a model was built with (the config minus where it was loaded from)."""
    values = model.config.to_dict()
    values.pop("_name_or_path", None)
    return values


def boost_eos(model: TextVAEModel, amount: float = 3.0) -> None:
    """Make EOS likely, so that decoding from a random model ends well before `max_length`."""
    decoder = model.decoder
    bias = decoder.output_bias if getattr(decoder, "tie_embeddings", False) else decoder.output.bias
    with torch.no_grad():
        bias[EOS] += amount


def assert_rows_end_with_eos(ids: torch.Tensor) -> None:
    for row in ids.tolist():
        assert EOS in row, f"row never ends: {row}"
        tail = row[row.index(EOS) + 1 :]
        assert all(token == PAD for token in tail), f"tokens after EOS: {row}"


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_forward_shapes(encoder_type, decoder_type, batch_size):
    model = tiny_model(encoder_type, decoder_type)
    input_ids, attention_mask = make_batch(batch_size)
    output = model(input_ids, attention_mask)
    assert output.loss.shape == ()
    assert output.rec_loss.shape == output.kl.shape == (batch_size,)
    assert output.mu.shape == output.logvar.shape == output.z.shape == (batch_size, LATENT_DIM)
    assert output.logits.shape == (batch_size, input_ids.size(1) - 1, VOCAB_SIZE)
    assert torch.isfinite(output.loss)
    # Logits are zero exactly at padding (labels there are never scored).
    padding = ~attention_mask[:, 1:].bool()
    assert (output.logits[padding] == 0).all()


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_decoder_cannot_see_future_tokens(encoder_type, decoder_type, batch_size):
    model = tiny_model(encoder_type, decoder_type)
    input_ids, attention_mask = make_batch(batch_size, padded=False)
    z = fixed_z(batch_size)
    logits = model(input_ids, attention_mask, z=z).logits  # (B, T - 1, V)
    for position in range(1, input_ids.size(1) - 1):
        changed = input_ids.clone()
        changed[:, position] = (changed[:, position] - 4 + 1) % (VOCAB_SIZE - 4) + 4  # another word
        changed_logits = model(changed, attention_mask, z=z).logits
        # Decoder input `position` is read at logits index `position` and later, never before.
        torch.testing.assert_close(changed_logits[:, :position], logits[:, :position], rtol=0, atol=1e-6)
        assert not torch.allclose(changed_logits[:, position], logits[:, position])


@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_kl_matches_closed_form(encoder_type, decoder_type):
    model = tiny_model(encoder_type, decoder_type)
    input_ids, attention_mask = make_batch(3)
    output = model(input_ids, attention_mask)
    posterior = torch.distributions.Normal(output.mu, torch.exp(0.5 * output.logvar))
    prior = torch.distributions.Normal(torch.zeros_like(output.mu), torch.ones_like(output.mu))
    expected = torch.distributions.kl_divergence(posterior, prior)  # (B, Z)
    torch.testing.assert_close(output.kl_per_dim, expected)
    torch.testing.assert_close(output.kl, expected.sum(dim=1))
    # The default bag-of-words loss (Zhao et al. 2017) is part of the training loss, never of rec or KL.
    bow = model.config.bag_of_words_loss * output.bow_loss.mean()
    torch.testing.assert_close(output.loss, output.rec_loss.mean() + output.kl.mean() + bow)


@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_save_and_reload_give_identical_outputs(encoder_type, decoder_type, tmp_path):
    model = tiny_model(encoder_type, decoder_type, tie_embeddings=decoder_type == "transformer")
    input_ids, attention_mask = make_batch(3)
    expected = model(input_ids, attention_mask, sample_latent=False)
    model.save_pretrained(tmp_path)
    reloaded, info = TextVAEModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    for loaded in (reloaded, transformers.AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, TextVAEModel)
        assert config_values(loaded) == config_values(model)
        reloaded_state = loaded.state_dict()
        assert all(torch.equal(reloaded_state[name], value) for name, value in model.state_dict().items())
        output = loaded.eval()(input_ids, attention_mask, sample_latent=False)
        # Equal weights; the last bits can differ only through memory alignment of the loaded tensors.
        torch.testing.assert_close(output.mu, expected.mu, rtol=0, atol=1e-6)
        torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_cached_generation_matches_uncached(encoder_type, decoder_type, batch_size):
    model = tiny_model(encoder_type, decoder_type)
    z = fixed_z(batch_size)
    cached = generate(model, z, max_length=12, use_cache=True)
    uncached = generate(model, z, max_length=12, use_cache=False)
    assert torch.equal(cached, uncached)
    sampled = [
        generate(
            model,
            z,
            max_length=12,
            do_sample=True,
            top_k=5,
            generator=torch.Generator().manual_seed(3),
            use_cache=cache,
        )
        for cache in (True, False)
    ]
    assert torch.equal(sampled[0], sampled[1])


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_beam_search_returns_eos_terminated_rows(encoder_type, decoder_type, batch_size):
    model = tiny_model(encoder_type, decoder_type)
    boost_eos(model)
    z = fixed_z(batch_size)
    beams = beam_search(model, z, beam_size=3, max_length=20)
    assert beams.size(0) == batch_size and beams.size(1) <= 20
    assert_rows_end_with_eos(beams)
    # One beam is greedy decoding.
    assert torch.equal(beam_search(model, z, beam_size=1, max_length=20), generate(model, z, max_length=20))


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("encoder_type,decoder_type", PAIRS)
def test_adam_steps_lower_the_loss(encoder_type, decoder_type, batch_size):
    model = tiny_model(encoder_type, decoder_type).train()
    input_ids, attention_mask = make_batch(batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    with torch.no_grad():
        before = model(input_ids, attention_mask, sample_latent=False).loss
    for _ in range(8):
        optimizer.zero_grad()
        model(input_ids, attention_mask, return_logits=False).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(input_ids, attention_mask, sample_latent=False).loss
    assert after < before - 1.0


@pytest.mark.parametrize("encoder_type", ARCHITECTURES)
@pytest.mark.parametrize("pooling", ("mean", "summary"))
def test_padding_changes_no_real_output(encoder_type, pooling):
    """A sentence scores the same alone as in a padded batch: padding is masked everywhere."""
    model = tiny_model(encoder_type, "transformer", encoder_pooling=pooling)
    input_ids, attention_mask = make_batch(3)
    z = fixed_z(3)
    batched = model(input_ids, attention_mask, z=z, sample_latent=False)
    for row in range(3):
        length = int(attention_mask[row].sum())
        alone = model(input_ids[row : row + 1, :length], z=z[row : row + 1], sample_latent=False)
        torch.testing.assert_close(alone.mu[0], batched.mu[row], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone.rec_loss[0], batched.rec_loss[row], rtol=0, atol=1e-4)


@pytest.mark.parametrize("position_embedding_type", ("learned", "sinusoidal"))
@pytest.mark.parametrize("tie_embeddings", (False, True))
@pytest.mark.parametrize("z_to_inputs,z_to_memory", [(True, True), (True, False), (False, True)])
def test_cached_steps_match_one_pass(position_embedding_type, tie_embeddings, z_to_inputs, z_to_memory):
    """Feeding tokens one by one, or in chunks, with the cache gives the one-pass hidden states."""
    model = tiny_model(
        position_embedding_type=position_embedding_type,
        tie_embeddings=tie_embeddings,
        z_to_inputs=z_to_inputs,
        z_to_memory=z_to_memory,
    )
    input_ids, _ = make_batch(3, padded=False)
    z = fixed_z(3)
    decoder = model.decoder
    full, state = decoder(input_ids, z)
    assert isinstance(state, KeyValueCache) and state.length == input_ids.size(1)
    steps, state = [], None
    for position in range(input_ids.size(1)):
        hidden, state = decoder(input_ids[:, position : position + 1], z, state)
        steps.append(hidden)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    first, state = decoder(input_ids[:, :3], z)
    rest, _ = decoder(input_ids[:, 3:], z, state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        decoder.project(full[:, -1]), decoder.project(steps[-1][:, 0]), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("tie_embeddings", (False, True))
def test_fused_token_loss_matches_projection(tie_embeddings):
    decoder = tiny_model(tie_embeddings=tie_embeddings).decoder
    hidden = torch.randn(5, 16, requires_grad=True)
    labels = torch.tensor([0, 3, 7, 22, 5])
    fused = decoder.token_loss(hidden, labels)
    expected = torch.nn.functional.cross_entropy(decoder.project(hidden), labels, reduction="none")
    torch.testing.assert_close(fused, expected)
    (fused_grad,) = torch.autograd.grad(fused.sum(), hidden)
    (expected_grad,) = torch.autograd.grad(expected.sum(), hidden)
    torch.testing.assert_close(fused_grad, expected_grad)


@pytest.mark.parametrize("decoder_type", ARCHITECTURES)
def test_reorder_state_selects_batch_rows(decoder_type):
    """Continuing a reordered state equals decoding the reordered batch from the start."""
    model = tiny_model("lstm", decoder_type)
    input_ids, _ = make_batch(3, padded=False)
    z = fixed_z(3)
    index = torch.tensor([2, 0, 0, 1])
    _, state = model.decoder(input_ids[:, :4], z)
    state = model.decoder.reorder_state(state, index)
    continued, _ = model.decoder(input_ids[index, 4:], z[index], state)
    from_start, _ = model.decoder(input_ids[index], z[index])
    torch.testing.assert_close(continued, from_start[:, 4:], rtol=0, atol=1e-5)
    assert model.decoder.reorder_state(None, index) is None


@pytest.mark.parametrize("z_to_inputs,z_to_memory", [(True, True), (True, False), (False, True)])
def test_transformer_decoder_reads_z(z_to_inputs, z_to_memory):
    model = tiny_model(z_to_inputs=z_to_inputs, z_to_memory=z_to_memory)
    input_ids, attention_mask = make_batch(3, padded=False)
    first = model(input_ids, attention_mask, z=fixed_z(3, seed=1)).logits
    second = model(input_ids, attention_mask, z=fixed_z(3, seed=2)).logits
    assert not torch.allclose(first[:, 0], second[:, 0])  # z reaches even the first prediction


def test_transformer_language_model_without_latent():
    model = tiny_model(latent_dim=0)
    assert model.encoder is None
    input_ids, attention_mask = make_batch(3)
    output = model(input_ids, attention_mask)
    assert output.z is None and torch.equal(output.kl, torch.zeros(3))
    cached = generate(model, num_sequences=3, max_length=10, use_cache=True)
    assert torch.equal(cached, generate(model, num_sequences=3, max_length=10, use_cache=False))


def test_conditioned_decoder_refuses_missing_z():
    decoder = tiny_model().decoder
    with pytest.raises(ValueError, match="conditioned on z"):
        decoder(torch.tensor([[BOS, 5]]), None)


def test_too_long_sequence_names_max_position_embeddings():
    model = tiny_model()
    input_ids = torch.full((1, 40), 5)
    with pytest.raises(ValueError, match="40 tokens exceeds max_position_embeddings"):
        model.decoder(input_ids, fixed_z(1))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.encoder(input_ids, torch.ones_like(input_ids))
    # Sinusoidal positions have no table to run out of.
    hidden, _ = tiny_model(position_embedding_type="sinusoidal").decoder(input_ids, fixed_z(1))
    assert hidden.shape == (1, 40, 16)


def test_sinusoidal_positions_follow_vaswani():
    encodings = sinusoidal_positions(torch.arange(5), 8)
    assert encodings.shape == (5, 8)
    torch.testing.assert_close(encodings[:, 0], torch.sin(torch.arange(5.0)))  # frequency 1
    torch.testing.assert_close(encodings[:, 4], torch.cos(torch.arange(5.0)))
    assert sinusoidal_positions(torch.arange(3), 7).shape == (3, 7)


@pytest.mark.parametrize(
    "overrides,name",
    [
        ({"position_embedding_type": "rotary"}, "position_embedding_type"),
        ({"transformer_dropout": 1.5}, "transformer_dropout"),
        ({"hidden_size": 15}, "hidden_size"),
        ({"encoder_pooling": "max"}, "encoder_pooling"),
    ],
)
def test_config_rejects_bad_transformer_options(overrides, name):
    with pytest.raises(ValueError, match=name):
        tiny_config(**overrides)


def test_decoder_uses_dropout_only_in_training():
    model = tiny_model(decoder_input_dropout=0.5, decoder_output_dropout=0.5, transformer_dropout=0.3)
    assert isinstance(model.decoder, TransformerDecoder)
    input_ids, attention_mask = make_batch(3)
    z = fixed_z(3)
    assert torch.equal(
        model(input_ids, attention_mask, z=z).logits, model(input_ids, attention_mask, z=z).logits
    )
    model.train()
    assert not torch.equal(
        model(input_ids, attention_mask, z=z).logits, model(input_ids, attention_mask, z=z).logits
    )


def write_corpus(folder) -> str:
    """A small word-level corpus file: 40 sentences over 12 words."""
    words = "the cat sat on a mat dog ran in park we like".split()
    generator = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(40):
        length = int(torch.randint(3, 8, (1,), generator=generator))
        lines.append(
            " ".join(words[int(i)] for i in torch.randint(0, len(words), (length,), generator=generator))
        )
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_cli_trains_and_samples_a_tiny_transformer(tmp_path, capsys):
    from textvae.cli import main

    run = tmp_path / "run"
    tiny = (
        "--embedding-size 16 --hidden-size 16 --latent-dim 4 --num-attention-heads 2 --intermediate-size 32"
    )
    corpus = write_corpus(tmp_path)
    train_args = f"train --data {corpus} -o {run} --epochs 1 --batch-size 8 --no-progress --device cpu"
    architecture = (
        "--encoder-type transformer --decoder-type transformer --position-embedding-type sinusoidal"
    )
    assert main([*train_args.split(), *tiny.split(), *architecture.split()]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "3", "--seed", "0", "--max-length", "10", "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["reconstruct", str(run), "the cat sat", "--strategy", "beam", "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert (
        main(["interpolate", str(run), "the cat sat", "a dog ran", "--steps", "3", "--max-length", "10"]) == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 2 + 3  # the two inputs, then one line per point
    evaluate = [
        "evaluate",
        str(run),
        "--data",
        corpus,
        "--split",
        "train",
        "--iw-samples",
        "4",
        "--limit",
        "5",
    ]
    assert main([*evaluate, "--diversity-samples", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["num_sentences"] == 5 and results["nll"] <= results["neg_elbo"] + 1.0
    config = TextVAEModel.from_pretrained(run).config
    assert (config.encoder_type, config.decoder_type, config.position_embedding_type) == (
        "transformer",
        "transformer",
        "sinusoidal",
    )


@pytest.mark.parametrize("tie", [False, True])
def test_decoder_reset_draws_the_gpt2_initialisation_again(tie):
    """The decoder reset after autoencoder pretraining (Li et al. 2019) re-initialises as GPT-2 does."""
    decoder = tiny_model(tie_embeddings=tie).decoder
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.fill_(1.0)
    decoder.reset_parameters()
    for name, module in decoder.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
        elif isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            assert module.weight.abs().max() < 0.2, name  # N(0, 0.02): never near the filled 1.0
            if getattr(module, "bias", None) is not None:
                assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
    if tie:
        assert torch.equal(decoder.output_bias, torch.zeros_like(decoder.output_bias))
