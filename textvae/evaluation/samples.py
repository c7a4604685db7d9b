"""Measures of what a model generates: forward PPL under a reference language model, and interpolation paths.

Forward PPL (Zhao et al. 2018): the perplexity that a separate language model, trained on the real
corpus, gives the generated sentences; a fluent generator scores close to that language model's own
perplexity. Here it measures prior samples (is a `z` from the prior decodable into a sentence?) and the
inner steps of interpolations. Interpolation paths follow docs/evaluation.md (`text.interpolation_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..data.storage import pad_batch
from ..data.tokenization import decode_ids
from ..generation import generate, interpolate_latents
from .text import interpolation_metrics


def load_reference_lm(path, tokenizer, device: str | torch.device = "cpu"):
    """(model, tokenizer) of a textvae language model (`--latent-dim 0`) whose vocabulary is `tokenizer`'s.

    Raises `ValueError` for a run that has a latent, or whose tokenizer differs from the evaluated model's
    (the sentences are scored word by word, so both must share one vocabulary).
    """
    from ..checkpointing import load_run

    model, reference_tokenizer, _ = load_run(path, device)
    if model.config.has_latent:
        raise ValueError(
            f"the reference model {path} is not a language model (latent_dim {model.config.latent_dim}): "
            "give a run trained with --latent-dim 0"
        )
    if reference_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"the tokenizer of the reference language model {path} differs from the evaluated model's: "
            "train the reference on the same corpus with the same tokenizer options"
        )
    return model.eval(), reference_tokenizer


@torch.no_grad()
def forward_ppl(
    reference_model, reference_tokenizer, sentences: Sequence[str], batch_size: int = 64
) -> float:
    """`exp(sum NLL / sum (words + EOS))` of `sentences` under the reference language model (exact NLL).

    An empty sentence counts as its EOS alone, so a generator that often stops at once is not rewarded.
    """
    if not sentences:
        raise ValueError("forward PPL needs at least one sentence")
    device = next(reference_model.parameters()).device
    ids = reference_tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    bos, eos = reference_tokenizer.bos_token_id, reference_tokenizer.eos_token_id
    rows = [[bos, *row, eos] for row in ids]
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        input_ids, mask = pad_batch(rows[start : start + batch_size], reference_model.config.pad_token_id)
        rec, _ = reference_model.reconstruction_loss(input_ids.to(device), mask.to(device), None)
        total_nll += float(rec.double().sum())
        total_tokens += int(mask[:, 1:].sum())
    return math.exp(total_nll / total_tokens)


@torch.no_grad()
def decode_prior_samples(
    model,
    tokenizer,
    prior,
    count: int,
    generator: torch.Generator,
    batch_size: int = 64,
    max_length: int = 100,
) -> list[str]:
    """`count` sentences, each the greedy decoding of one `z` drawn from `prior` (`textvae.priors`)."""
    device = next(model.parameters()).device
    z = prior.sample(count, generator)  # (count, Z)
    sentences = []
    for start in range(0, count, batch_size):
        ids = generate(model, z=z[start : start + batch_size].to(device), max_length=max_length)
        sentences += [decode_ids(tokenizer, row) for row in ids.tolist()]
    return sentences


@torch.no_grad()
def interpolation_results(
    model,
    tokenizer,
    texts: Sequence[str],
    mu: torch.Tensor,
    pairs: int,
    steps: int,
    generator: torch.Generator,
    tokenize: str = "none",
    reference=None,
    max_length: int = 100,
) -> dict:
    """Interpolation metrics over `pairs` random pairs of a split's sentences (drawn with `generator`).

    texts: the N sentences, as the tokenizer decodes them; mu: (N, Z) their posterior means. Each path
    runs linearly from one mean to the other in `steps` points, ends included, each decoded greedily.
    Returns `interpolation_metrics`' keys, `interp_forward_ppl` (the inner steps under `reference`, a
    (model, tokenizer) pair, or None) and the settings.
    """
    if pairs < 1:
        raise ValueError(f"interpolation pairs must be at least 1, got {pairs}")
    if steps < 3:
        raise ValueError(f"interpolation steps must be at least 3 (two ends and a step between), got {steps}")
    if len(texts) < 2:
        raise ValueError("interpolation needs at least 2 sentences")
    device = next(model.parameters()).device
    first = torch.randint(0, len(texts), (pairs,), generator=generator)
    second = (first + torch.randint(1, len(texts), (pairs,), generator=generator)) % len(
        texts
    )  # never itself
    z = torch.cat([interpolate_latents(mu[i], mu[j], steps) for i, j in zip(first, second, strict=True)])
    decoded = []
    for start in range(0, z.size(0), 256):
        ids = generate(model, z=z[start : start + 256].to(device), max_length=max_length)
        decoded += [decode_ids(tokenizer, row) for row in ids.tolist()]
    paths = [decoded[index * steps : (index + 1) * steps] for index in range(pairs)]
    results = interpolation_metrics(paths, [texts[i] for i in first], [texts[j] for j in second], tokenize)
    inner = [sentence for path in paths for sentence in path[1:-1]]
    results["interp_forward_ppl"] = forward_ppl(*reference, inner) if reference is not None else None
    results.update(interpolation_pairs=pairs, interpolation_steps=steps)
    results.pop("num_paths")
    results.pop("steps")
    return results
