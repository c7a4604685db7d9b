"""Strings in, strings out: `sample`, `reconstruct`, `interpolate`, `encode`, `decode`, and the latent tools
(`neighbours`, `transfer`, `analogy`, `score`, `probe`) with a trained model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpointing import load_run
from .data.storage import TokenizedSplit, pad_batch
from .data.tokenization import decode_ids, encode_sentences
from .decoding import DecodingConfig, resolve_decoding
from .evaluation.scoring import score_sentences
from .evaluation.text import token_similarity
from .generation import beam_search, generate, interpolate_latents
from .latent.arithmetic import analogy_latent, nearest_neighbours, neighbour_rows, transfer_vector
from .latent.cache import corpus_latents
from .latent.probes import draw_label_subsets, probe_accuracy, tfidf_probe_accuracy
from .models.modeling import TextVAEModel
from .priors.distributions import load_prior


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
        # The run folder it was loaded from: the model fingerprint and default folder of the latent cache.
        self.run_dir: Path | None = None
        self._priors: dict = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kwargs) -> TextVAEPipeline:
        """Load a run / model folder; `device` defaults to cuda when available."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer, encoder_tokenizer = load_run(path, device)
        pipeline = cls(model, tokenizer, encoder_tokenizer, **kwargs)
        pipeline.run_dir = Path(path)
        return pipeline

    def prior(self, kind: str = "standard"):
        """The "standard" N(0, I) prior, or the "aggregate" one saved in the run folder (loaded once)."""
        if kind not in self._priors:
            if kind == "aggregate" and self.run_dir is None:
                raise ValueError(
                    "the aggregate prior lives in a run folder: load the pipeline with from_pretrained"
                )
            self._priors[kind] = load_prior(self.run_dir or ".", kind, self.model.config.latent_dim)
        return self._priors[kind]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _require_latent(self) -> None:
        if not self.model.config.has_latent:
            raise ValueError(
                "this model is a language model with no latent (latent_dim=0): it can only sample"
            )

    def _token_ids(self, sentences: Sequence[str]) -> list[list[int]]:
        return encode_sentences(self.tokenizer, sentences)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentences -> posterior `mu`, `logvar`, each (N, Z), on the CPU; a deterministic autoencoder's
        `logvar` is None (its codes are points)."""
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
            if logvar is not None:
                logvars.append(logvar.float().cpu())
        return torch.cat(mus), torch.cat(logvars) if logvars else None

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor | None,
        decoding: DecodingConfig | dict | None = None,
        *,
        num_sequences: int | None = None,
        seed: int | None = None,
        **options,
    ) -> list[str]:
        """(N, Z) latents (or None and `num_sequences` for a language model) -> N sentences.

        decoding: a `DecodingConfig`, or a mapping of changes to the defaults of plain decoding (greedy);
        options: `DecodingConfig` fields that change it further (`strategy="beam"`). seed: the draws of
        sampling (fresh ones when None).
        """
        config = resolve_decoding("decode", decoding, **options)
        repetition = dict(
            no_repeat_ngram_size=config.no_repeat_ngram_size, repetition_penalty=config.repetition_penalty
        )
        max_length = config.max_length or self.max_length
        generator = _generator(seed, self.device) if config.strategy == "sample" else None
        count = z.size(0) if z is not None else num_sequences
        sentences = []
        for start in range(0, count, self.batch_size):
            z_batch = z[start : start + self.batch_size].to(self.device) if z is not None else None
            size = min(self.batch_size, count - start)
            if config.strategy == "beam":
                ids = beam_search(
                    self.model, z_batch, size, beam_size=config.beam_size, max_length=max_length, **repetition
                )
            else:
                ids = generate(
                    self.model,
                    z_batch,
                    size,
                    max_length,
                    config.strategy == "sample",
                    config.temperature,
                    config.top_k,
                    config.top_p,
                    generator,
                    **repetition,
                )
            sentences.extend(decode_ids(self.tokenizer, row.tolist()) for row in ids)
        return sentences

    def sample(
        self,
        n: int = 10,
        decoding: DecodingConfig | dict | None = None,
        *,
        seed: int | None = None,
        prior: str = "standard",
        **options,
    ) -> list[str]:
        """n sentences decoded from `z` drawn from the prior; `seed` makes them repeatable.

        prior: "standard", `N(0, I)`; or "aggregate", the Gaussian mixture fitted to the training set's
        posterior means after training (`textvae fit-prior`; Ghosh et al. 2020), whose samples stay in
        the region the decoder was trained on when the model keeps many nats in z. decoding / options:
        as `decode`, from sampling's defaults (`decoding.decoding_defaults("sample")`).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
        config = resolve_decoding("sample", decoding, **options)
        generator = _generator(seed)
        z = None
        if self.model.config.has_latent:
            z = self.prior(prior).sample(n, generator)  # (n, Z)
        elif prior != "standard":
            raise ValueError("a language model (latent_dim=0) has no latent prior to choose")
        return self.decode(z, config, num_sequences=n, seed=None if seed is None else seed + 1)

    def reconstruct(
        self,
        sentences: Sequence[str],
        decoding: DecodingConfig | dict | None = None,
        *,
        seed: int | None = None,
        **options,
    ) -> list[str]:
        """Each sentence decoded from its posterior mean; by default with beam search (5 beams) that never
        repeats a 3-gram, which measured best (`decoding.decoding_defaults("reconstruct")`)."""
        config = resolve_decoding("reconstruct", decoding, **options)
        mu, _ = self.encode(sentences)
        return self.decode(mu, config, seed=seed)

    def interpolate(
        self,
        start: str,
        end: str,
        steps: int = 5,
        method: str = "lerp",
        decoding: DecodingConfig | dict | None = None,
        **options,
    ) -> list[str]:
        """The sentences decoded at `steps` points between the two posterior means, endpoints included,
        decoded as `reconstruct` decodes by default."""
        config = resolve_decoding("interpolate", decoding, **options)
        mu, _ = self.encode([start, end])
        path = interpolate_latents(mu[0], mu[1], steps, method)  # (steps, Z)
        return self.decode(path, config)

    def interpolation_path(
        self,
        start: str,
        end: str,
        steps: int = 5,
        method: str = "lerp",
        decoding: DecodingConfig | dict | None = None,
        **options,
    ) -> dict:
        """`interpolate`, labelled: the two input sentences, the method, and for each step its position
        `t` in [0, 1], the decoded sentence and its token similarity (1 - edit distance / length) to each
        input sentence. Plain JSON-serialisable values."""
        config = resolve_decoding("interpolate", decoding, **options)
        sentences = self.interpolate(start, end, steps, method, config)
        count = len(sentences)
        return {
            "start": start,
            "end": end,
            "method": method,
            "strategy": config.strategy,
            "path": [
                {
                    "step": index + 1,
                    "t": index / (count - 1),
                    "sentence": sentence,
                    "similarity_to_start": token_similarity(sentence, start),
                    "similarity_to_end": token_similarity(sentence, end),
                }
                for index, sentence in enumerate(sentences)
            ],
        }

    # ------------------------------------------------------------ the latent space at work (latent/)

    def neighbours(
        self,
        queries: Sequence[str],
        corpus_sentences: Sequence[str],
        k: int = 5,
        metric: str = "cosine",
        corpus_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        text_column: str | None = None,
        label_column: str | None = None,
        corpus_mu: torch.Tensor | None = None,
    ) -> list[list[dict]]:
        """The k corpus sentences whose posterior means are nearest each query's, nearest first.

        Each query gets a list of `{"sentence", "score", "index"}` (cosine similarity, or L2 distance for
        metric `l2`; index into `corpus_sentences`). With `corpus_path` (the file the sentences were read
        from, with its column choice) the corpus encodings are cached in `cache_dir` (the run folder);
        `corpus_mu`, the (N, Z) posterior means of `corpus_sentences` already encoded, skips encoding them.
        """
        self._require_latent()
        queries = [queries] if isinstance(queries, str) else list(queries)
        cache = (corpus_path, cache_dir, text_column, label_column)
        corpus_mu = corpus_latents(self, corpus_sentences, corpus_mu, *cache)  # (N, Z)
        scores, indices = nearest_neighbours(self.encode(queries)[0], corpus_mu, k, metric)
        return neighbour_rows(scores, indices, corpus_sentences)

    def transfer(
        self,
        sentences: Sequence[str],
        source_sentences: Sequence[str] | None = None,
        target_sentences: Sequence[str] | None = None,
        strength: float = 1.0,
        vector: torch.Tensor | None = None,
        decoding: DecodingConfig | dict | None = None,
        *,
        seed: int | None = None,
        **options,
    ) -> list[str]:
        """Each sentence decoded from `mu + strength * vector` (latent arithmetic, Bowman et al. 2016).

        vector: a (Z,) attribute vector, or None to build `mean(mu(target)) - mean(mu(source))` from
        `source_sentences` and `target_sentences` (`attribute_vector`). Strength 0 is `reconstruct`, and
        it decodes as `reconstruct` does by default.
        """
        self._require_latent()
        config = resolve_decoding("transfer", decoding, **options)
        vector = transfer_vector(self, source_sentences, target_sentences, vector)  # (Z,)
        mu, _ = self.encode(sentences)
        return self.decode(mu + strength * vector, config, seed=seed)

    def analogy(
        self,
        a: str,
        b: str,
        c: str,
        decoding: DecodingConfig | dict | None = None,
        *,
        seed: int | None = None,
        **options,
    ) -> str:
        """ "a is to b as c is to ?": the sentence decoded from `mu(c) + mu(b) - mu(a)`, decoded as
        `reconstruct` decodes by default."""
        self._require_latent()
        config = resolve_decoding("analogy", decoding, **options)
        mu, _ = self.encode([a, b, c])
        z = analogy_latent(mu[0], mu[1], mu[2])[None]  # (1, Z)
        return self.decode(z, config, seed=seed)[0]

    def score(self, sentences: Sequence[str], iw_samples: int = 500, seed: int = 0) -> list[dict]:
        """Per-sentence `nll`, `neg_elbo`, `rec`, `kl`, `tokens`, `nll_per_token` (nats), in input order,
        each with its `sentence` (`scoring.score_sentences`); higher nll_per_token = more unusual."""
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        split = TokenizedSplit(input_ids=self._token_ids(texts))
        if self.encoder_tokenizer is not None:
            split.encoder_input_ids = self.encoder_tokenizer(texts, truncation=True)["input_ids"]
        scores = score_sentences(self.model, split, iw_samples, self.batch_size, seed)
        return [{"sentence": text, **score} for text, score in zip(texts, scores, strict=True)]

    def probe(
        self,
        train_sentences: Sequence[str],
        train_labels: Sequence,
        test_sentences: Sequence[str],
        test_labels: Sequence,
        num_labels: Sequence[int | None] = (100, 1000, None),
        repeats: int = 5,
        seed: int = 0,
        *,
        train_path: str | Path | None = None,
        test_path: str | Path | None = None,
        text_column: str | None = None,
    ) -> dict[str, list[dict]]:
        """Few-label accuracy of a linear probe on the posterior means, beside a TF-IDF baseline on the same
        drawn examples: `{"latent": [...], "tfidf": [...]}`, one dict per N (see `probe_accuracy`).

        With `train_path` / `test_path` (the files the sentences were read from, with `text_column`) their
        encodings are cached in the run folder, as `neighbours` does.
        """
        self._require_latent()
        draw_label_subsets(train_labels, num_labels, repeats, seed)  # bad options fail before encoding
        train_mu, test_mu = (
            corpus_latents(self, sentences, corpus_path=path, text_column=text_column)
            for sentences, path in ((train_sentences, train_path), (test_sentences, test_path))
        )
        options = dict(num_labels=num_labels, repeats=repeats, seed=seed)
        return {
            "latent": probe_accuracy(train_mu.numpy(), train_labels, test_mu.numpy(), test_labels, **options),
            "tfidf": tfidf_probe_accuracy(
                train_sentences, train_labels, test_sentences, test_labels, **options
            ),
        }
