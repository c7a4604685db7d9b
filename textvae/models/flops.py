"""The matrix-product FLOPs a recurrent model does in training, for model FLOPs utilisation (MFU).

Counted from the model's own weight matrices, so any sizes, layers, directions and output layers: 2 FLOPs a
multiply-add, the backward twice the forward (Kaplan et al. 2020, Sec. 2.1), embeddings, gates, softmaxes,
batch norm and the optimiser not counted. The adaptive softmax (Grave et al. 2017) is credited with what it
computes: its head for every target token, and a cluster's two products only for the tokens in it.
"""

from __future__ import annotations

import torch

from .architecture import RNN_TYPES


def _multiply_adds(module) -> int:
    """Multiply-adds of one application of a module's weight matrices (0 for None)."""
    if module is None:
        return 0
    return sum(p.numel() for name, p in module.named_parameters() if "weight" in name and p.dim() == 2)


def output_multiply_adds(decoder, labels: torch.Tensor) -> int:
    """Forward multiply-adds of a decoder's output layer for the target tokens `labels` (N,)."""
    adaptive = getattr(decoder, "adaptive_output", None)
    if adaptive is None:
        if decoder.tie_embeddings:
            per_token = _multiply_adds(decoder.hidden_to_embedding) + decoder.embedding.weight.numel()
        else:
            per_token = _multiply_adds(decoder.output)
        return per_token * labels.numel()
    total = _multiply_adds(adaptive.head) * labels.numel()
    for index, cluster in enumerate(adaptive.tail):
        low, high = adaptive.cutoffs[index], adaptive.cutoffs[index + 1]
        total += _multiply_adds(cluster) * int(((labels >= low) & (labels < high)).sum())
    return total


def training_flops(model, labels: torch.Tensor, sentences: int) -> float:
    """Training FLOPs (forward + backward) of a recurrent textvae model on `sentences` sentences whose target
    tokens (words + EOS) are `labels` (N,): the encoder's RNN once a position it reads (BOS, words, EOS:
    tokens + sentences), the decoder's RNN once an input position (BOS, words: tokens), the output layer once
    a target token, and once a sentence the posterior, z -> initial state, z -> output and the
    bag-of-words MLP."""
    config = model.config
    if config.decoder_type not in RNN_TYPES or (config.has_latent and config.encoder_type not in RNN_TYPES):
        raise ValueError(
            f"training_flops counts recurrent models only, got encoder {config.encoder_type!r} and decoder "
            f"{config.decoder_type!r}"
        )
    tokens, decoder = labels.numel(), model.decoder
    once = [model.posterior, decoder.latent_to_state, decoder.latent_to_output, model.bag_of_words]
    forward = _multiply_adds(decoder.rnn) * tokens + output_multiply_adds(decoder, labels)
    forward += sum(map(_multiply_adds, once)) * sentences
    if model.encoder is not None:
        forward += _multiply_adds(model.encoder.rnn) * (tokens + sentences)
    return 3.0 * 2.0 * forward
