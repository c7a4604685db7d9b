"""Decoding from `z`: greedy, temperature / top-k / top-p sampling, beam search, repetition controls;
lerp and slerp.

Decoding is batched: every row stops at its own EOS (padding follows it) and all stop at `max_length`.
With `use_cache=True` each step feeds only the newest token and carries the decoder state (the RNN
state, or a transformer's key/value cache); `use_cache=False` re-reads the whole prefix every step, and
gives the same tokens.

The repetition controls mean what they mean in Hugging Face transformers' `generate`
(`RepetitionPenaltyLogitsProcessor`, `NoRepeatNGramLogitsProcessor`): both read the whole sequence so
far, BOS included, and act on the scores before temperature / top-k / top-p (on the log-probabilities,
per beam, in beam search).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .decoding import DecodingConfig

INTERPOLATION_METHODS = ("lerp", "slerp")


def _banned_token_mask(model, vocab_size: int, device) -> torch.Tensor:
    """(V,) True for tokens never generated: padding and BOS (unless one of them is also EOS, as in GPT-2)."""
    banned = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    for token_id in (model.config.pad_token_id, model.config.bos_token_id):
        if token_id is not None and token_id != model.config.eos_token_id and 0 <= token_id < vocab_size:
            banned[token_id] = True
    return banned


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(B, V) logits with all but the top-k tokens and outside the top-p nucleus set to -inf."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already cover top_p (the first token always stays).
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def penalize_repetition_(scores: torch.Tensor, prefix: torch.Tensor, penalty: float) -> torch.Tensor:
    """In place: (B, V) scores with every token present in `prefix` (B, T) penalised once (CTRL, Keskar et
    al. 2019). Returns `scores`.

    A positive score is divided by `penalty`, a negative one multiplied by it, so `penalty > 1` always
    makes a seen token less likely whatever the sign of its logit (as transformers does).
    """
    # Only the (B, T) seen positions are touched: a token seen twice is written twice with the same value.
    seen = scores.gather(1, prefix)  # (B, T)
    return scores.scatter_(1, prefix, torch.where(seen < 0, seen * penalty, seen / penalty))


def ban_repeated_ngrams_(scores: torch.Tensor, prefix: torch.Tensor, ngram_size: int) -> torch.Tensor:
    """In place: -inf on every token of the (B, V) scores that would complete an n-gram already in
    `prefix` (B, T). Returns `scores`.

    Vectorised as in transformers: the last n-1 tokens are matched against the first n-1 tokens of every
    complete n-gram window, and a matching window bans its own last token.
    """
    length = prefix.size(1)
    if length < ngram_size:
        return scores
    suffix = prefix[:, length + 1 - ngram_size :]  # (B, n - 1)
    windows = prefix.unfold(1, ngram_size, 1)  # (B, T - n + 1, n)
    matches = (windows[..., :-1] == suffix[:, None]).all(dim=-1)  # (B, T - n + 1)
    rows, starts = matches.nonzero(as_tuple=True)
    return scores.index_put_((rows, windows[rows, starts, -1]), scores.new_tensor(float("-inf")))


def apply_repetition_controls_(
    scores: torch.Tensor,
    prefix: torch.Tensor,
    no_repeat_ngram_size: int,
    repetition_penalty: float,
    eos_token_id: int,
) -> torch.Tensor:
    """In place: the (B, V) scores for the token after `prefix` (B, T), after the repetition penalty
    (1.0: off), then the n-gram ban (0: off). Returns `scores`.

    In place because copying the (B, V) scores cost over ten times the controls themselves at B = 1024,
    V = 10k; the callers own their scores. A row left with every token banned (possible only when its sequence is
    about as long as the vocabulary) ends: EOS gets back the score it had before the controls, where
    transformers would sample from an all -inf row.
    """
    if no_repeat_ngram_size == 0 and repetition_penalty == 1.0:
        return scores
    eos_before = scores[:, eos_token_id].clone()  # (B,)
    if repetition_penalty != 1.0:
        penalize_repetition_(scores, prefix, repetition_penalty)
    if no_repeat_ngram_size > 0:
        ban_repeated_ngrams_(scores, prefix, no_repeat_ngram_size)
        dead = scores.amax(dim=-1) == float("-inf")  # (B,); only the ban can empty a row
        scores[:, eos_token_id] = torch.where(dead, eos_before, scores[:, eos_token_id])
    return scores


def cap_max_length(model, max_length: int) -> int:
    """`max_length`, lowered so BOS plus the output fit a decoder with a fixed number of positions."""
    positions = getattr(model.decoder, "max_positions", None)
    return min(max_length, positions - 1) if positions else max_length


def _start(model, z: torch.Tensor | None, num_sequences: int | None):
    device = next(model.parameters()).device
    if z is None and model.config.has_latent:
        raise ValueError("this model has a latent: give z (B, latent_dim) to decode from")
    if z is not None:
        num_sequences = z.size(0)
        z = z.to(device)
    if not num_sequences or num_sequences < 1:
        raise ValueError("give z or a positive num_sequences")
    bos = torch.full((num_sequences, 1), model.config.bos_token_id, dtype=torch.long, device=device)
    return z, bos, device


def _step(model, prefix: torch.Tensor, z, state, use_cache: bool):
    """Logits (B, V) for the next token after `prefix` (B, t)."""
    if use_cache:
        hidden, state = model.decoder(prefix[:, -1:], z, state)
    else:
        hidden, state = model.decoder(prefix, z, None)
    return model.decoder.project(hidden[:, -1]).float(), state


@torch.no_grad()
def generate(
    model,
    z: torch.Tensor | None = None,
    num_sequences: int | None = None,
    max_length: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Decode from `z` (B, Z) (or from nothing, for a language model) -> (B, L) ids, BOS excluded.

    Each row holds its tokens up to and including EOS, then padding; `L <= max_length`. Greedy unless
    `do_sample`; sampling divides logits by `temperature` and keeps the top-k / top-p tokens. Before
    that, `repetition_penalty` (1.0: off) penalises every token already in the row and
    `no_repeat_ngram_size` (0: off) bans any token that would repeat an n-gram of the row.
    """
    DecodingConfig(  # ValueError naming an option out of range
        max_length=max_length, temperature=temperature, top_k=top_k, top_p=top_p,
        no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty,
    )  # fmt: skip
    max_length = cap_max_length(model, max_length)
    z, prefix, device = _start(model, z, num_sequences)
    config = model.config
    finished = torch.zeros(prefix.size(0), dtype=torch.bool, device=device)
    state, banned = None, None
    for _ in range(max_length):
        logits, state = _step(model, prefix, z, state, use_cache)  # (B, V)
        if banned is None:
            banned = _banned_token_mask(model, logits.size(-1), device)
        logits = logits.masked_fill(banned, float("-inf"))
        logits = apply_repetition_controls_(
            logits, prefix, no_repeat_ngram_size, repetition_penalty, config.eos_token_id
        )
        if do_sample:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            next_ids = logits.argmax(dim=-1)
        next_ids = next_ids.masked_fill(finished, config.pad_token_id)
        prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
        finished |= next_ids == config.eos_token_id
        if finished.all():
            break
    return prefix[:, 1:]


@torch.no_grad()
def beam_search(
    model,
    z: torch.Tensor | None = None,
    num_sequences: int | None = None,
    beam_size: int = 5,
    max_length: int = 64,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Beam search from `z` (B, Z) -> (B, L) ids of each row's best hypothesis, BOS excluded.

    Hypotheses are ranked by `log p / length ** length_penalty` once finished; a finished beam is kept
    with its score while the others continue. The repetition controls act per beam on the next-token
    log-probabilities before the top-k over beams, as in transformers: the penalty multiplies a
    log-probability (all are negative) by `repetition_penalty`, and the penalised value is what the
    hypothesis' score accumulates.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    DecodingConfig(  # ValueError naming an option out of range
        max_length=max_length,
        no_repeat_ngram_size=no_repeat_ngram_size,
        repetition_penalty=repetition_penalty,
    )
    max_length = cap_max_length(model, max_length)
    z, bos, device = _start(model, z, num_sequences)
    config = model.config
    batch_size = bos.size(0)
    z_beams = z.repeat_interleave(beam_size, dim=0) if z is not None else None  # (B * K, Z)
    prefix = bos.repeat_interleave(beam_size, dim=0)  # (B * K, 1)
    scores = torch.zeros(batch_size, beam_size, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep one
    finished = torch.zeros(batch_size * beam_size, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch_size * beam_size, device=device)
    state, banned = None, None
    for _ in range(max_length):
        logits, state = _step(model, prefix, z_beams, state, True)
        if banned is None:
            banned = _banned_token_mask(model, logits.size(-1), device)
        log_probs = F.log_softmax(logits.masked_fill(banned, float("-inf")), dim=-1)  # (B * K, V)
        log_probs = apply_repetition_controls_(
            log_probs, prefix, no_repeat_ngram_size, repetition_penalty, config.eos_token_id
        )
        # A finished beam may only continue with padding, at no cost.
        log_probs[finished] = float("-inf")
        log_probs[finished, config.pad_token_id] = 0.0
        vocab_size = log_probs.size(-1)
        candidates = (scores.view(-1, 1) + log_probs).view(batch_size, beam_size * vocab_size)
        scores, flat = candidates.topk(beam_size, dim=-1)  # (B, K)
        origin = (flat // vocab_size + torch.arange(batch_size, device=device)[:, None] * beam_size).view(-1)
        next_ids = (flat % vocab_size).view(-1)
        prefix = torch.cat([prefix[origin], next_ids[:, None]], dim=1)
        state = model.decoder.reorder_state(state, origin)
        was_finished = finished[origin]
        lengths = lengths[origin] + (~was_finished).float()
        finished = was_finished | (next_ids == config.eos_token_id)
        if finished.all():
            break
    normalised = scores.view(-1) / lengths.clamp(min=1) ** length_penalty
    best = normalised.view(batch_size, beam_size).argmax(dim=-1)  # (B,)
    rows = torch.arange(batch_size, device=device) * beam_size + best
    return prefix[rows, 1:]


def interpolate_latents(
    z_start: torch.Tensor, z_end: torch.Tensor, steps: int, method: str = "lerp"
) -> torch.Tensor:
    """(Z,) endpoints -> (steps, Z) points from `z_start` to `z_end`, both included.

    slerp (Shoemake 1985; White 2016 for latent spaces) follows the great circle, keeping the norm a
    Gaussian sample typically has; lerp cuts through the low-density middle of the prior.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}")
    if method not in INTERPOLATION_METHODS:
        raise ValueError(f"method must be one of {INTERPOLATION_METHODS}, got {method!r}")
    t = torch.linspace(0.0, 1.0, steps, device=z_start.device, dtype=z_start.dtype)[:, None]  # (S, 1)
    if method == "lerp":
        return (1 - t) * z_start + t * z_end
    cos_omega = F.cosine_similarity(z_start, z_end, dim=0).clamp(-1.0, 1.0)
    omega = torch.acos(cos_omega)
    if omega.abs() < 1e-6 or math.isclose(float(omega), math.pi, abs_tol=1e-6):
        return (1 - t) * z_start + t * z_end  # (anti)parallel: the great circle is not defined
    sin_omega = torch.sin(omega)
    return (torch.sin((1 - t) * omega) * z_start + torch.sin(t * omega) * z_end) / sin_omega
