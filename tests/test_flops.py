"""`textvae.models.flops.training_flops`: the matrix products a model does, by hand."""

from __future__ import annotations

import pytest
import torch

from textvae.models.flops import output_multiply_adds, training_flops

from .helpers import tiny_model


def test_a_full_output_layer_costs_hidden_times_vocabulary_a_token():
    model = tiny_model(vocab_size=20, hidden_size=8, z_to_output=False, bag_of_words_loss=0.0)
    assert output_multiply_adds(model.decoder, torch.tensor([4, 5, 19])) == 3 * 8 * 20


def test_the_adaptive_layer_counts_its_head_for_all_and_a_cluster_for_its_tokens():
    model = tiny_model(vocab_size=20, hidden_size=8, output_layer="adaptive", adaptive_cutoffs=[6, 12])
    softmax = model.decoder.adaptive_output
    head = 8 * (6 + 2)  # the shortlist and one entry per cluster
    first = sum(m.weight.numel() for m in softmax.tail[0])  # 8 -> 2 -> 6
    second = sum(m.weight.numel() for m in softmax.tail[1])  # 8 -> 1 -> 8 (0 dimensions become 1)
    labels = torch.tensor([1, 5, 6, 11, 12, 19, 19])  # 2 head, 2 first cluster, 3 second
    assert output_multiply_adds(model.decoder, labels) == 7 * head + 2 * first + 3 * second
    full = tiny_model(vocab_size=20, hidden_size=8)
    assert training_flops(model, labels, 2) < training_flops(full, labels, 2)


def test_training_flops_are_six_times_the_forward_multiply_adds():
    model = tiny_model(vocab_size=20, embedding_size=4, hidden_size=8, latent_dim=3)
    labels = torch.tensor([4, 5, 6, 2, 7, 2])  # two sentences, 6 targets
    decoder, encoder = model.decoder, model.encoder
    rnn = sum(p.numel() for n, p in decoder.rnn.named_parameters() if "weight" in n)
    encoder_rnn = sum(p.numel() for n, p in encoder.rnn.named_parameters() if "weight" in n)
    once = sum(
        p.numel()
        for module in (model.posterior, decoder.latent_to_state, decoder.latent_to_output, model.bag_of_words)
        for n, p in module.named_parameters()
        if "weight" in n and p.dim() == 2
    )
    forward = rnn * 6 + 6 * 8 * 20 + once * 2 + encoder_rnn * (6 + 2)
    assert training_flops(model, labels, 2) == 6.0 * forward
    with pytest.raises(ValueError, match="recurrent models only"):
        training_flops(tiny_model(decoder_type="transformer", num_attention_heads=2), labels, 2)
