"""Denoising input for the encoder: word drop, blank, substitute and local shuffle (Shen et al. 2020).

"Educating Text Autoencoders: Latent Representation Guidance via Denoising" (github.com/shentianxiao/
text-autoencoders, `noise.py`) trains the encoder on a corrupted copy of each sentence while the decoder
still reconstructs the clean one. Sentences that differ by a few words then land on nearby codes, which is
what makes reconstruction of new sentences and interpolation between them work. The four corruptions
follow their `noisy()`, in their order:

- shuffle (k): words move at most k places (`|sigma(i) - i| <= k`): each word's position plus `(k + 1) u`,
  `u ~ U[0, 1)`, sorted;
- drop (p): each word removed with probability p (the sentence gets shorter);
- blank (p): each word replaced by the blank token (textvae's unk) with probability p;
- substitute (p): each word replaced by a word drawn uniformly from the vocabulary with probability p.

BOS, EOS and padding are never touched. The noise is applied to the encoder's input only, in training
only; the draws come from the training step's seeded generator (`TrainStep`), for the whole global batch, so
a resumed or distributed run corrupts exactly what an uninterrupted single-process run does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the options are read before torch is imported (the command line's fast start)
    import torch


@dataclass(frozen=True)
class EncoderNoise:
    """The probabilities of Shen et al.'s four corruptions, and the shuffle distance k (0: off)."""

    drop: float = 0.0
    blank: float = 0.0
    substitute: float = 0.0
    shuffle: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "blank", "substitute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"encoder_noise {name} must be a finite number in [0, 1], got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"encoder_noise {name} must be in [0, 1], got {value}")
        if isinstance(self.shuffle, bool) or not isinstance(self.shuffle, int) or self.shuffle < 0:
            raise ValueError(
                f"encoder_noise shuffle distance k must be an integer >= 0, got {self.shuffle!r}"
            )

    @classmethod
    def parse(cls, text: str) -> EncoderNoise:
        """From Shen et al.'s `--noise P,P,P,K` form: "drop,blank,substitute,shuffle" ("0.3,0,0,0")."""
        parts = [part.strip() for part in str(text).split(",")]
        if len(parts) != 4:
            raise ValueError(
                f"encoder_noise must be four comma-separated values drop,blank,substitute,shuffle "
                f"(e.g. 0.3,0,0,0), got {text!r}"
            )
        try:
            drop, blank, substitute = (float(part) for part in parts[:3])
        except ValueError:
            raise ValueError(f"encoder_noise probabilities must be numbers, got {text!r}") from None
        try:
            shuffle = int(parts[3])
        except ValueError:
            raise ValueError(
                f"encoder_noise shuffle distance k must be an integer, got {parts[3]!r}"
            ) from None
        return cls(drop, blank, substitute, shuffle)

    def __str__(self) -> str:
        return f"{self.drop:g},{self.blank:g},{self.substitute:g},{self.shuffle:d}"

    @property
    def active(self) -> bool:
        return bool(self.drop or self.blank or self.substitute or self.shuffle)


def draw_noise(
    noise: EncoderNoise, count: int, length: int, vocab_size: int, generator: torch.Generator, device
) -> dict:
    """The random draws of `noise` for a global batch of `count` sentences of at most `length` tokens.

    Returns (count, length) tensors: uniform [0, 1) draws per corruption that is on, and the substitute
    words' ids. Each process keeps its rows; the order of the draws is fixed, so a run repeats them.
    """
    import torch

    draws = {}
    shape = (count, length)
    for name in ("shuffle", "drop", "blank", "substitute"):
        if getattr(noise, name):
            draws[name] = torch.rand(shape, generator=generator, device=device)
    if noise.substitute:
        draws["substitute_ids"] = torch.randint(vocab_size, shape, generator=generator, device=device)
    return draws


def _words(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) True at the words: real tokens but the first (BOS) and the last (EOS) of each sentence."""
    import torch

    lengths = attention_mask.sum(dim=1, keepdim=True)  # (B, 1)
    positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
    return (positions > 0) & (positions < lengths - 1)


def apply_noise(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    noise: EncoderNoise,
    draws: dict,
    blank_id: int,
    pad_id: int,
    special_ids: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) `[BOS] + words + [EOS]` ids and mask, corrupted as `noise` says with `draws` (B, >= T) ->
    new (B, T) ids and mask (dropped words shorten a sentence: the rest moves left, padding fills).

    special_ids: ids a substitute may not be (pad, bos, eos, ...): such a draw keeps the word.
    """
    import torch

    ids, mask = input_ids.clone(), attention_mask.clone()
    length = ids.size(1)
    words = _words(ids, mask)  # (B, T)
    if noise.shuffle:
        positions = torch.arange(length, device=ids.device, dtype=torch.float).expand_as(ids)
        # Shen et al.'s key: position + (k + 1) u for words; BOS keeps key 0; EOS and padding get
        # position + k + 1, above every word's key, so they stay after the words, in order.
        keys = positions + (noise.shuffle + 1) * draws["shuffle"][:, :length]
        keys = torch.where(words, keys, positions + (noise.shuffle + 1) * (positions > 0))
        order = keys.argsort(dim=1, stable=True)  # (B, T)
        ids = ids.gather(1, order)
    if noise.drop:
        keep = mask.bool() & ~(words & (draws["drop"][:, :length] < noise.drop))  # (B, T)
        order = (~keep).to(torch.int8).argsort(dim=1, stable=True)  # kept tokens first, in order
        ids = ids.gather(1, order)
        mask = (torch.arange(length, device=ids.device) < keep.sum(dim=1, keepdim=True)).to(mask.dtype)
        ids = ids.masked_fill(~mask.bool(), pad_id)
        words = _words(ids, mask)
    if noise.blank:
        ids = ids.masked_fill(words & (draws["blank"][:, :length] < noise.blank), blank_id)
    if noise.substitute:
        new = draws["substitute_ids"][:, :length].to(ids.dtype)
        allowed = torch.ones_like(words)
        for special in special_ids:
            allowed &= new != special
        ids = torch.where(words & allowed & (draws["substitute"][:, :length] < noise.substitute), new, ids)
    return ids, mask
