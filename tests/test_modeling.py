"""The recurrent VAE: shapes, causality, KL, free bits, word dropout, save / load, the language model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

import textvae
from textvae import TextVAEConfig, TextVAEModel
from textvae.models.modeling import gaussian_kl

from .helpers import random_batch, tiny_model

ARCHITECTURES = [
    dict(
        encoder_type=cell,
        decoder_type=cell,
        encoder_num_layers=layers,
        decoder_num_layers=layers,
        bidirectional_encoder=bidirectional,
    )
    for cell in ("lstm", "gru")
    for layers in (1, 2)
    for bidirectional in (False, True)
]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_forward_shapes(architecture, batch_size):
    model = tiny_model(**architecture)
    input_ids, attention_mask = random_batch(batch_size)
    output = model(input_ids, attention_mask)
    assert output.loss.dim() == 0 and torch.isfinite(output.loss)
    assert output.rec_loss.shape == output.kl.shape == (batch_size,)
    assert (
        output.mu.shape == output.logvar.shape == output.z.shape == output.kl_per_dim.shape == (batch_size, 4)
    )
    assert output.logits.shape == (batch_size, input_ids.size(1) - 1, 20)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_decoder_is_causal(architecture):
    """Changing token t+1 leaves the logits up to t unchanged (z fixed, so the encoder is out of play)."""
    model = tiny_model(**architecture)
    input_ids, attention_mask = random_batch(1, length=8)
    z = torch.randn(1, 4)
    before = model(input_ids, attention_mask, z=z).logits
    changed = input_ids.clone()
    changed[0, 5] = 4 if changed[0, 5] != 4 else 5
    after = model(changed, attention_mask, z=z).logits
    # Decoder position t reads tokens 0..t, so positions 0..4 are unaffected, and position 5 changes.
    assert torch.equal(before[0, :5], after[0, :5])
    assert not torch.allclose(before[0, 5], after[0, 5])


def test_kl_matches_closed_form_and_monte_carlo():
    model = tiny_model()
    input_ids, attention_mask = random_batch(3)
    output = model(input_ids, attention_mask)
    mu, logvar = output.mu, output.logvar
    expected = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)
    assert torch.allclose(output.kl, expected, atol=1e-6)
    # Monte Carlo: E_q[log q(z) - log p(z)] over many samples agrees with the closed form.
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    samples = q.sample((20000,))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    estimate = (q.log_prob(samples) - p.log_prob(samples)).sum(-1).mean(0)
    assert torch.allclose(estimate, output.kl, atol=0.05)


def test_rec_loss_counts_words_plus_eos_never_bos():
    model = tiny_model()
    input_ids, attention_mask = random_batch(2)
    output = model(input_ids, attention_mask, z=torch.zeros(2, 4))
    log_probs = output.logits.log_softmax(-1)
    labels = input_ids[:, 1:]
    mask = attention_mask[:, 1:].bool()
    expected = -(log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask).sum(1)
    assert torch.allclose(output.rec_loss, expected, atol=1e-5)
    assert int(mask.sum()) == int(attention_mask.sum()) - 2  # every token but BOS is predicted, once


def test_free_bits_floor_kl_term():
    model = tiny_model(bag_of_words_loss=0.0)  # the loss is then rec + the KL term alone
    input_ids, attention_mask = random_batch(3)
    torch.manual_seed(0)
    plain = model(input_ids, attention_mask, kl_weight=1.0)
    torch.manual_seed(0)
    floored = model(input_ids, attention_mask, kl_weight=1.0, free_bits=100.0)
    # Every dimension is below 100 nats, so the KL term is exactly 100 per dimension.
    assert torch.allclose(floored.loss - floored.rec_loss.mean(), torch.tensor(400.0))
    assert torch.allclose(plain.loss, plain.rec_loss.mean() + plain.kl.mean())


def test_word_dropout_replaces_inputs_only_in_training():
    model = tiny_model()
    input_ids, attention_mask = random_batch(2)
    z = torch.zeros(2, 4)
    model.eval()
    assert torch.equal(
        model(input_ids, attention_mask, z=z, word_dropout=0.99).logits,
        model(input_ids, attention_mask, z=z).logits,
    )
    model.train()
    torch.manual_seed(0)
    dropped = model(input_ids, attention_mask, z=z, word_dropout=0.99).logits
    all_unk = input_ids.clone()
    all_unk[:, 1:] = torch.where(
        attention_mask[:, 1:].bool(), torch.full_like(input_ids[:, 1:], 3), input_ids[:, 1:]
    )
    assert not torch.allclose(dropped[:, 1:], model(input_ids, attention_mask, z=z).logits[:, 1:])
    torch.manual_seed(0)
    # With p close to 1 the decoder reads BOS then (almost surely) only unk; the first position is kept.
    assert torch.allclose(dropped[:, 0], model(all_unk, attention_mask, z=z).logits[:, 0])


def test_gaussian_kl_is_zero_at_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))


@pytest.mark.parametrize("architecture", ARCHITECTURES[:4])
def test_save_and_load_give_identical_outputs(tmp_path, architecture):
    model = tiny_model(**architecture, tie_embeddings=True)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    input_ids, attention_mask = random_batch(3)
    z = torch.randn(3, 4)
    for loaded in (TextVAEModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, TextVAEModel)
        loaded.eval()
        assert torch.equal(
            model(input_ids, attention_mask, z=z).logits, loaded(input_ids, attention_mask, z=z).logits
        )
        assert (
            loaded.config.to_dict() == model.config.to_dict()
            or loaded.config.encoder_type == architecture["encoder_type"]
        )


def test_language_model_has_no_latent():
    model = tiny_model(latent_dim=0)
    assert model.encoder is None
    input_ids, attention_mask = random_batch(3)
    output = model(input_ids, attention_mask)
    assert output.mu is None and output.z is None
    assert torch.equal(output.kl, torch.zeros(3))
    assert torch.allclose(output.loss, output.rec_loss.mean())
    with pytest.raises(ValueError, match="no latent"):
        model.encode(input_ids, attention_mask)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(encoder_type="cnn"), "encoder_type"),
        (dict(decoder_type="rnn"), "decoder_type"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(latent_dim=-1), "latent_dim"),
        (dict(decoder_input_dropout=1.5), "decoder_input_dropout"),
    ],
)
def test_bad_config_values_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TextVAEConfig(**bad)


def test_package_exports():
    assert textvae.TextVAEModel is TextVAEModel


def test_bn_vae_normalises_the_posterior_mean():
    """Zhu et al. (2020): in training, each dimension of mu has batch mean beta and variance gamma^2."""
    model = tiny_model(posterior_mean_batchnorm=0.6).train()
    with torch.no_grad():  # make raw mu vary well above BatchNorm's eps
        model.posterior.weight.mul_(100.0)
    input_ids, attention_mask = random_batch(3, seed=4)
    mu, _ = model.encode(input_ids, attention_mask)
    assert torch.allclose(mu.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(mu.var(0, unbiased=False), torch.full((4,), 0.36), atol=1e-2)
    assert model.encode(input_ids[:1], attention_mask[:1])[0].shape == (1, 4)  # a batch of one works
    assert model.mean_norm.beta.requires_grad and not any(
        p.requires_grad for p in model.mean_norm.norm.parameters()
    )


@pytest.mark.parametrize("tie", [False, True])
def test_fused_token_loss_matches_cross_entropy_in_value_and_gradient(tie):
    model = tiny_model(tie_embeddings=tie, embedding_size=6).train()
    hidden = torch.randn(9, 8, requires_grad=True)
    labels = torch.randint(0, 20, (9,))
    fused = model.decoder.token_loss(hidden, labels)
    fused_grads = torch.autograd.grad(fused.sum(), [hidden, *model.decoder.parameters()], allow_unused=True)
    plain = torch.nn.functional.cross_entropy(model.decoder.project(hidden), labels, reduction="none")
    plain_grads = torch.autograd.grad(plain.sum(), [hidden, *model.decoder.parameters()], allow_unused=True)
    assert torch.allclose(fused, plain, atol=1e-5)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 3000])
def test_token_loss_without_gradients_matches_cross_entropy(tie, rows, monkeypatch):
    """Evaluation scores rows in reused chunks: a chunk smaller than, equal to, or spanning the rows."""
    import textvae.models.recurrent

    monkeypatch.setattr(textvae.models.recurrent, "_SCORING_CHUNK_ROWS", 4)
    model = tiny_model(tie_embeddings=tie, embedding_size=6)
    hidden = torch.randn(rows, 8) * 3
    labels = torch.randint(0, 20, (rows,))
    with torch.no_grad():
        scored = model.decoder.token_loss(hidden, labels)
        expected = torch.nn.functional.cross_entropy(model.decoder.project(hidden), labels, reduction="none")
    assert torch.allclose(scored, expected, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_tied_embedding_starts_small_and_reset_draws_it_again(cell):
    """A tied embedding is also the output layer: U(-0.1, 0.1) rows, zero padding row and output bias."""
    model = tiny_model(encoder_type=cell, decoder_type=cell, tie_embeddings=True)
    decoder = model.decoder
    weight = decoder.embedding.weight
    assert weight.abs().max() <= 0.1 and weight.std() > 0.03  # U(-0.1, 0.1) has std 0.058
    assert torch.equal(weight[model.config.pad_token_id], torch.zeros_like(weight[0]))
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.fill_(1.0)
    encoder_before = [p.clone() for p in model.encoder.parameters()]
    decoder.reset_parameters()
    assert weight.abs().max() <= 0.1 and torch.equal(
        decoder.output_bias, torch.zeros_like(decoder.output_bias)
    )
    assert all((p != 1.0).any() for name, p in decoder.named_parameters() if name != "output_bias")
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters(), strict=True))


def test_untied_embedding_keeps_pytorch_default_initialisation():
    torch.manual_seed(0)
    weight = tiny_model(tie_embeddings=False, embedding_size=64).decoder.embedding.weight
    assert 0.8 < weight[1:].std() < 1.2  # N(0, 1), as the reference LSTM VAEs train with


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encoder_hidden_size_sets_the_recurrent_encoder_alone(tmp_path, architecture):
    """A narrower encoder than decoder (encoder_hidden_size) runs, encodes and saves / loads."""
    model = tiny_model(**architecture, hidden_size=8, encoder_hidden_size=5)
    directions = 2 if architecture["bidirectional_encoder"] else 1
    assert model.encoder.rnn.hidden_size == 5 and model.decoder.rnn.hidden_size == 8
    assert model.posterior.in_features == 5 * directions
    input_ids, attention_mask = random_batch(3)
    mu, logvar = model.encode(input_ids, attention_mask)
    assert mu.shape == logvar.shape == (3, 4)
    model.save_pretrained(tmp_path)
    loaded = TextVAEModel.from_pretrained(tmp_path).eval()
    assert loaded.config.encoder_hidden_size == 5
    assert torch.equal(loaded.encode(input_ids, attention_mask)[0], mu)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encoder_hidden_size": 0}, "encoder_hidden_size must be a positive integer"),
        ({"encoder_hidden_size": 2.5}, "encoder_hidden_size must be a positive integer"),
        ({"encoder_hidden_size": 8, "encoder_type": "transformer"}, "applies to lstm / gru encoders"),
    ],
)
def test_bad_encoder_hidden_size_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        TextVAEConfig(**options)


LM_INIT_ARCHITECTURES = [
    dict(decoder_type="lstm", decoder_num_layers=2, hidden_size=12, tie_embeddings=True),
    dict(decoder_type="gru"),
    dict(
        encoder_type="transformer",
        decoder_type="transformer",
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        transformer_dropout=0.0,
        z_to_memory=False,
    ),
]


@pytest.mark.parametrize("architecture", LM_INIT_ARCHITECTURES)
def test_decoder_initialised_from_a_language_model_predicts_what_it_does(architecture):
    lm = tiny_model(seed=1, latent_dim=0, **architecture)
    vae = tiny_model(seed=2, **architecture)
    input_ids, attention_mask = random_batch(3)
    lm_rec, _ = lm.reconstruction_loss(input_ids, attention_mask, None)
    z = 3.0 * torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(vae.reconstruction_loss(input_ids, attention_mask, z)[0], lm_rec, atol=1e-3)
    vae.init_decoder_from(lm)
    for latent in (z, torch.zeros(3, 4)):  # whatever z is, the VAE starts as the language model
        rec, _ = vae.reconstruction_loss(input_ids, attention_mask, latent)
        torch.testing.assert_close(rec, lm_rec, atol=1e-5, rtol=1e-5)
    # The weights that read z start at zero but do get gradients, so training can make z matter.
    vae.train()
    vae(input_ids, attention_mask).loss.backward()
    z_weights = [p for name, p in vae.decoder.named_parameters() if name.startswith("latent_to_")]
    assert z_weights and all(float(p.detach().abs().sum()) == 0.0 for p in z_weights)
    assert any(float(p.grad.abs().sum()) > 0.0 for p in z_weights)


def test_decoder_initialisation_copies_a_vae_decoder_whole():
    source = tiny_model(seed=1)
    target = tiny_model(seed=2)
    target.init_decoder_from(source)
    source_weights = source.decoder.state_dict()
    assert all(
        torch.equal(value, source_weights[name]) for name, value in target.decoder.state_dict().items()
    )
    assert not torch.equal(target.posterior.weight, source.posterior.weight)  # only the decoder is copied


@pytest.mark.parametrize(
    "source_options, message",
    [
        (dict(latent_dim=0, hidden_size=16), "decoders do not match: rnn.weight_ih_l0"),
        (dict(latent_dim=0, decoder_type="gru"), "lstm decoder from a gru decoder"),
        (dict(latent_dim=0, vocab_size=30), "vocabularies differ"),
        (dict(latent_dim=6), r"rnn.weight_ih_l0 is \(32, 12\) here but \(32, 14\) in the source"),
    ],
)
def test_decoder_initialisation_refuses_a_different_decoder(source_options, message):
    with pytest.raises(ValueError, match=message):
        tiny_model().init_decoder_from(tiny_model(**source_options))
