"""Strings in, strings out: `sample`, `reconstruct`, `interpolate`, `encode`, `decode` with a trained model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpointing import load_run
from .data import pad_batch
from .generation import beam_search, generate, interpolate_latents, validate_repetition
from .modeling import TextVAEModel
from .tokenization import decode_ids

logger = logging.getLogger(__name__)

STRATEGIES = ("greedy", "beam", "sample")


def _generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with `seed`, or from fresh entropy; torch's global RNG is never touched."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class TextVAEPipeline:
    """A trained text VAE with its tokenizer(s), working on sentences.

    >>> pipeline = TextVAEPipeline.from_pretrained("runs/ptb")
    >>> pipeline.sample(3, seed=0)
    >>> pipeline.interpolate("the market fell", "he said he would resign", steps=5)
    """

    def __init__(
        self,
        model: TextVAEModel,
        tokenizer,
        encoder_tokenizer=None,
        batch_size: int = 64,
        max_length: int = 100,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder_tokenizer = encoder_tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kwargs) -> TextVAEPipeline:
        """Load a run / model folder; `device` defaults to cuda when available."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer, encoder_tokenizer = load_run(path, device)
        return cls(model, tokenizer, encoder_tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _require_latent(self) -> None:
        if not self.model.config.has_latent:
            raise ValueError(
                "this model is a language model with no latent (latent_dim=0): it can only sample"
            )

    def _token_ids(self, sentences: Sequence[str]) -> list[list[int]]:
        if isinstance(sentences, str):
            sentences = [sentences]
        if not sentences:
            raise ValueError("no sentences given")
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f"sentence {index + 1} is empty")
        ids = self.tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if unk is not None and self.tokenizer.unk_token not in ("", None):
            unknown = sum(token == unk for row in ids for token in row) - sum(
                s.split().count(self.tokenizer.unk_token) for s in sentences
            )
            if unknown > 0:
                logger.warning(
                    "%d word(s) are not in the vocabulary and were read as %s",
                    unknown,
                    self.tokenizer.unk_token,
                )
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        return [[bos, *row, eos] for row in ids]

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentences -> posterior `mu`, `logvar`, each (N, Z), on the CPU."""
        self._require_latent()
        rows = self._token_ids(sentences)
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        mus, logvars = [], []
        for start in range(0, len(rows), self.batch_size):
            if self.encoder_tokenizer is not None:
                encoded = self.encoder_tokenizer(
                    texts[start : start + self.batch_size], padding=True, truncation=True, return_tensors="pt"
                )
                input_ids, mask = encoded["input_ids"], encoded["attention_mask"]
            else:
                input_ids, mask = pad_batch(
                    rows[start : start + self.batch_size], self.model.config.pad_token_id
                )
            mu, logvar = self.model.encode(input_ids.to(self.device), mask.to(self.device))
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
        return torch.cat(mus), torch.cat(logvars)

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor | None,
        strategy: str = "greedy",
        num_sequences: int | None = None,
        beam_size: int = 5,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        max_length: int | None = None,
        *,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """(N, Z) latents (or None and `num_sequences` for a language model) -> N sentences.

        `no_repeat_ngram_size` (0: off) and `repetition_penalty` (1.0: off) mean what they mean in
        transformers' `generate`, for every strategy.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        validate_repetition(no_repeat_ngram_size, repetition_penalty)
        repetition = dict(no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty)
        max_length = max_length or self.max_length
        generator = None
        if strategy == "sample":
            generator = _generator(seed, self.device)
        count = z.size(0) if z is not None else num_sequences
        sentences = []
        for start in range(0, count, self.batch_size):
            z_batch = z[start : start + self.batch_size].to(self.device) if z is not None else None
            size = min(self.batch_size, count - start)
            if strategy == "beam":
                ids = beam_search(
                    self.model, z_batch, size, beam_size=beam_size, max_length=max_length, **repetition
                )
            else:
                ids = generate(
                    self.model,
                    z_batch,
                    size,
                    max_length,
                    strategy == "sample",
                    temperature,
                    top_k,
                    top_p,
                    generator,
                    **repetition,
                )
            sentences.extend(decode_ids(self.tokenizer, row.tolist()) for row in ids)
        return sentences

    def sample(
        self,
        n: int = 10,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        strategy: str = "sample",
        max_length: int | None = None,
        *,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """n sentences decoded from `z ~ N(0, I)` (the prior); `seed` makes them repeatable."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
        generator = _generator(seed)
        z = None
        if self.model.config.has_latent:
            z = torch.randn(n, self.model.config.latent_dim, generator=generator)
        return self.decode(
            z,
            strategy,
            n,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=None if seed is None else seed + 1,
            max_length=max_length,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
        )

    def reconstruct(
        self,
        sentences: Sequence[str],
        strategy: str = "greedy",
        beam_size: int = 5,
        seed: int | None = None,
        max_length: int | None = None,
        *,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """Each sentence decoded from its posterior mean."""
        mu, _ = self.encode(sentences)
        return self.decode(
            mu,
            strategy,
            beam_size=beam_size,
            seed=seed,
            max_length=max_length,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
        )

    def interpolate(
        self,
        start: str,
        end: str,
        steps: int = 5,
        method: str = "lerp",
        strategy: str = "greedy",
        beam_size: int = 5,
        max_length: int | None = None,
        *,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """The sentences decoded at `steps` points between the two posterior means, endpoints included."""
        mu, _ = self.encode([start, end])
        path = interpolate_latents(mu[0], mu[1], steps, method)  # (steps, Z)
        return self.decode(
            path,
            strategy,
            beam_size=beam_size,
            max_length=max_length,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
        )
