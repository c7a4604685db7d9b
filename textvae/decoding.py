"""How sentences are decoded from z (`DecodingConfig`) and the defaults of each use; importable without torch.

One `DecodingConfig` holds every decoding option (transformers' `GenerationConfig` plays the same part):
the strategy (greedy, beam search, sampling), the beam size, the longest output, the sampling options
(temperature, top-k, top-p) and the repetition controls (`no_repeat_ngram_size`, `repetition_penalty`, as
transformers' `generate` means them). Every pipeline method that decodes takes one (or field overrides of
its use's defaults), and the command line and the explorer build one from their options.

The defaults of each use (`DECODING_DEFAULTS`, `decoding_defaults(use)`):

- decode: greedy, the plain decoding of given codes;
- sample: sampling at temperature 1, no repetition control: samples from the prior show what the model
  generates;
- reconstruct, interpolate, transfer, analogy: beam search with 5 beams that never repeats a 3-gram,
  what measured best for reconstruction and interpolation on a model that carries its sentences (greedy
  decoding looped in about a fifth of its outputs; scripts/README.md, "Decoding").
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

STRATEGIES = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class DecodingConfig:
    """Every decoding option; `max_length` None means the pipeline's own (100 tokens)."""

    strategy: str = "greedy"
    beam_size: int = 5
    max_length: int | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        """`ValueError` naming the first option whose value is out of range."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("beam_size", "top_k", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be positive, got {self.beam_size}")
        if self.max_length is not None and (
            isinstance(self.max_length, bool) or not isinstance(self.max_length, numbers.Integral)
            or self.max_length < 1
        ):  # fmt: skip
            raise ValueError(f"max_length must be a positive integer, got {self.max_length!r}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(
                f"no_repeat_ngram_size must be >= 0 (0 disables it), got {self.no_repeat_ngram_size}"
            )
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"repetition_penalty must be positive and finite (1.0 disables it), got {self.repetition_penalty}"
            )

    def replace(self, **changes) -> DecodingConfig:
        """A copy with `changes`; `ValueError` naming an option that does not exist."""
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown decoding option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CARRYING = DecodingConfig(strategy="beam", beam_size=5, no_repeat_ngram_size=3)
DECODING_DEFAULTS = {
    "decode": DecodingConfig(),
    "sample": DecodingConfig(strategy="sample"),
    "reconstruct": _CARRYING,
    "interpolate": _CARRYING,
    "transfer": _CARRYING,
    "analogy": _CARRYING,
}


def decoding_defaults(use: str) -> DecodingConfig:
    """The documented defaults of one use (see the module's docstring)."""
    if use not in DECODING_DEFAULTS:
        raise ValueError(f"no decoding defaults for {use!r}; uses: {', '.join(DECODING_DEFAULTS)}")
    return DECODING_DEFAULTS[use]


def resolve_decoding(use: str, decoding: DecodingConfig | dict | None = None, **overrides) -> DecodingConfig:
    """The `DecodingConfig` of a call: `decoding` (a config, or a mapping of changes to the use's
    defaults; None: the defaults), with `overrides` (field values) applied on top."""
    if decoding is None:
        decoding = decoding_defaults(use)
    elif isinstance(decoding, dict):
        decoding = decoding_defaults(use).replace(**decoding)
    elif not isinstance(decoding, DecodingConfig):
        raise ValueError(f"decoding must be a DecodingConfig or a mapping of its options, got {decoding!r}")
    return decoding.replace(**overrides) if overrides else decoding
