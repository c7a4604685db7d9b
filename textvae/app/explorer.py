"""The explorer's tabs as plain Python (`Explorer`, bounded by `AppLimits`); the page is in page.py.

Each tab calls the pipeline (or the plotting module), so the page, the CLI and Python always agree. Each
request is bounded by `AppLimits`, and every bad input is a `ValueError` naming it, which the page shows
as a message. Requests may run at once: sampling draws from seeded generators, the corpus encodings and
the priors are loaded before the first request and only read after, and a lock runs one model call at a
time, so concurrent requests give exactly the sequential results.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from ..decoding import decoding_defaults
from ..run_files import CONFIG_NAME, TRAIN_CONFIG_NAME, read_json

logger = logging.getLogger(__name__)

RECONSTRUCTION = decoding_defaults("reconstruct")  # the page decodes as `reconstruct` does by default
SAMPLE_HEADERS = ["#", "sentence"]
RECONSTRUCT_HEADERS = ["input", "reconstruction"]
PATH_HEADERS = ["step", "t", "sentence", "similarity to start", "similarity to end"]
TRANSFER_HEADERS = ["input", "transferred"]
NEIGHBOUR_HEADERS = ["rank", "sentence", "cosine similarity", "label"]
POINT_HEADERS = ["point", "sentence", "length", "label", "x", "y"]


@dataclasses.dataclass(frozen=True)
class AppLimits:
    """The most one request may ask for; past a limit the page says which and why."""

    max_samples: int = 50  # sentences sampled at once
    max_sentences: int = 20  # sentences per reconstruct / transfer request
    max_examples: int = 500  # example sentences on each side of an attribute vector
    max_words: int = 60  # words in one sentence typed into the page
    max_steps: int = 20  # points on an interpolation path
    max_neighbours: int = 20
    max_beam_size: int = 10
    max_strength: float = 5.0  # |strength| of an attribute transfer
    max_map_points: int = 2000  # corpus sentences drawn on the latent map (the first ones)
    max_corpus: int = 20000  # corpus sentences read, encoded once at start-up

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0:
                raise ValueError(f"{field.name} must be positive, got {value!r}")


def _whole(value, name: str, low: int, high: int) -> int:
    """An integer in [low, high] from a form value (gradio sends numbers as floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {int(value)}")
    return int(value)


def _rounded(value: float) -> float:
    return round(float(value), 3)


class Explorer:
    """A run, and optionally a corpus, behind the explorer's tabs: each method is one tab's action.

    corpus: sentences (the first `limits.max_corpus`) for the neighbours, the labels' attribute vectors and
    the latent map; labels: one per sentence, or None. Methods return rows for the page's tables and
    raise `ValueError` naming the bad input or the limit passed.
    """

    def __init__(
        self,
        pipeline,
        corpus: Sequence[str] | None = None,
        labels: Sequence | None = None,
        corpus_path: str | Path | None = None,
        text_column: str | None = None,
        label_column: str | None = None,
        limits: AppLimits | None = None,
    ):
        self.pipeline = pipeline
        self.limits = limits or AppLimits()
        self.has_latent = pipeline.model.config.has_latent
        self._lock = threading.Lock()
        self.priors = ["standard"]
        if self.has_latent and pipeline.run_dir is not None:
            try:  # loaded now, not lazily inside concurrent requests
                pipeline.prior("aggregate")
                self.priors.append("aggregate")
            except ValueError as error:
                logger.info("no aggregate prior to offer: %s", error)
        self.corpus = list(corpus or [])[: self.limits.max_corpus]
        if corpus is not None and len(corpus) > len(self.corpus):
            logger.warning("using the first %d of the corpus's %d sentences", len(self.corpus), len(corpus))
        self.labels = [str(label) for label in labels[: len(self.corpus)]] if labels is not None else None
        self.corpus_mu, self.points = None, []
        if self.corpus and self.has_latent:
            self._encode_corpus(corpus_path, dict(text_column=text_column, label_column=label_column))

    @classmethod
    def from_run(cls, run_dir, corpus=None, label_column=None, text_column=None, limits=None, device=None):
        """Load the run folder's pipeline and read the corpus file (text, CSV, TSV, JSONL)."""
        from ..data.corpora import read_sentence_file
        from ..pipeline import TextVAEPipeline

        sentences = labels = None
        if corpus is not None:
            sentences, labels = read_sentence_file(corpus, text_column=text_column, label_column=label_column)
        pipeline = TextVAEPipeline.from_pretrained(run_dir, device=device)
        return cls(pipeline, sentences, labels, corpus, text_column, label_column, limits)

    def _encode_corpus(self, corpus_path, columns) -> None:
        from ..latent.cache import encode_corpus_cached
        from ..plotting import project_latents, sentence_lengths

        if corpus_path is not None and self.pipeline.run_dir is not None:
            try:  # cached in the run folder, as pipeline.neighbours(corpus_path=...) caches them
                self.corpus_mu = encode_corpus_cached(self.pipeline, self.corpus, corpus_path, **columns)
            except OSError as error:  # a read-only run folder (a Space): encode without a cache
                logger.warning("cannot cache the corpus encodings: %s", error)
        if self.corpus_mu is None:
            self.corpus_mu = self.pipeline.encode(self.corpus)[0]
        shown = self.corpus[: self.limits.max_map_points]
        if len(shown) >= 2:
            xy, self.map_variance = project_latents(self.corpus_mu[: len(shown)])
            labels = self.labels or [""] * len(shown)
            rows = zip(shown, sentence_lengths(shown), labels, xy.tolist(), strict=False)
            self.points = [
                {"point": i, "sentence": s, "length": n, "label": label, "x": x, "y": y}
                for i, (s, n, label, (x, y)) in enumerate(rows)
            ]

    # ---------------------------------------------------------------------- input checks

    def _sentence(self, text, name: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} is empty: type a sentence")
        words = len(text.split())
        if words > self.limits.max_words:
            raise ValueError(f"{name} has {words} words: at most {self.limits.max_words} per sentence")
        return text.strip()

    def _lines(self, text, name: str, most: int) -> list[str]:
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{name}: type at least one sentence (one per line)")
        if len(lines) > most:
            raise ValueError(f"{name}: {len(lines)} sentences, at most {most} per request")
        return [self._sentence(line, f"{name}, line {n}") for n, line in enumerate(lines, 1)]

    def _require_corpus(self, action: str) -> None:
        if not self.corpus:
            raise ValueError(f"{action} needs a corpus: start the explorer with --corpus FILE")
        if self.corpus_mu is None:
            raise ValueError("this model has no latent (latent_dim=0): it can only sample")

    def _beam(self, strategy, beam_size) -> int:
        return _whole(beam_size, "beam size", 1, self.limits.max_beam_size) if strategy == "beam" else 5

    # ---------------------------------------------------------------------- tabs

    def sample(self, n, temperature=1.0, top_k=0, top_p=1.0, prior="standard", seed=None) -> list[list]:
        """Sample tab: `[[1, sentence], ...]`, `pipeline.sample` from the chosen prior."""
        n = _whole(n, "number of samples", 1, self.limits.max_samples)
        top_k = _whole(top_k, "top-k", 0, self.pipeline.model.config.vocab_size)
        if prior not in self.priors:
            raise ValueError(f"prior must be one of {', '.join(self.priors)}, got {prior!r}")
        seed = None if seed is None else _whole(seed, "seed", 0, 2**63 - 1)
        with self._lock:
            decoding = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
            sentences = self.pipeline.sample(n, decoding, seed=seed, prior=prior)
        return [[index, sentence] for index, sentence in enumerate(sentences, 1)]

    def reconstruct(self, text, strategy=RECONSTRUCTION.strategy, beam_size=5, seed=None) -> list[list]:
        """Reconstruct tab: each line of `text` beside the sentence decoded from its posterior mean."""
        sentences = self._lines(text, "sentences", self.limits.max_sentences)
        beam_size = self._beam(strategy, beam_size)
        seed = None if seed is None else _whole(seed, "seed", 0, 2**63 - 1)
        with self._lock:
            outputs = self.pipeline.reconstruct(sentences, strategy=strategy, beam_size=beam_size, seed=seed)
        return [[sentence, output] for sentence, output in zip(sentences, outputs, strict=True)]

    def interpolate(self, start, end, steps=5, method="lerp") -> list[list]:
        """Interpolate tab: `pipeline.interpolation_path` as rows of `PATH_HEADERS`."""
        start, end = self._sentence(start, "first sentence"), self._sentence(end, "last sentence")
        steps = _whole(steps, "steps", 2, self.limits.max_steps)
        with self._lock:
            path = self.pipeline.interpolation_path(start, end, steps, method)["path"]
        return [
            [
                p["step"],
                _rounded(p["t"]),
                p["sentence"],
                _rounded(p["similarity_to_start"]),
                _rounded(p["similarity_to_end"]),
            ]
            for p in path
        ]

    def transfer(self, text, source=None, target=None, source_text="", target_text="", strength=1.0):
        """Transfer tab: each sentence moved by `strength` times the attribute vector from `source` to
        `target`: two corpus labels, or (when both are typed) two lists of example sentences."""
        from ..latent.arithmetic import attribute_vector

        sentences = self._lines(text, "sentences", self.limits.max_sentences)
        if not isinstance(strength, int | float) or not abs(strength) <= self.limits.max_strength:
            most = self.limits.max_strength
            raise ValueError(f"strength must be a number between {-most:g} and {most:g}, got {strength!r}")
        if (source_text or "").strip() or (target_text or "").strip():
            most = self.limits.max_examples
            examples = (
                self._lines(source_text, "from examples", most),
                self._lines(target_text, "to examples", most),
            )
            with self._lock:
                outputs = self.pipeline.transfer(sentences, *examples, strength=strength)
        else:
            self._require_corpus("a transfer between labels")
            if self.labels is None:
                raise ValueError("the corpus has no labels (--label-column): type examples of both sides")
            chosen = {}
            for side, label in (("from", source), ("to", target)):
                rows = [i for i, value in enumerate(self.labels) if value == label]
                if not rows:
                    raise ValueError(f"choose the {side} label among {', '.join(sorted(set(self.labels)))}")
                chosen[side] = self.corpus_mu[rows]
            vector = attribute_vector(chosen["from"], chosen["to"])
            with self._lock:
                outputs = self.pipeline.transfer(sentences, vector=vector, strength=strength)
        return [[sentence, output] for sentence, output in zip(sentences, outputs, strict=True)]

    def analogy(self, a, b, c) -> str:
        """Analogy tab: "a is to b as c is to ?", `pipeline.analogy`."""
        a, b, c = (self._sentence(text, name) for text, name in ((a, "a"), (b, "b"), (c, "c")))
        with self._lock:
            return self.pipeline.analogy(a, b, c)

    def neighbours(self, query, k=5) -> list[list]:
        """Neighbours tab: the k corpus sentences nearest the query (cosine of posterior means)."""
        self._require_corpus("finding neighbours")
        query = self._sentence(query, "query")
        k = _whole(k, "k", 1, min(self.limits.max_neighbours, len(self.corpus)))
        with self._lock:
            found = self.pipeline.neighbours([query], self.corpus, k, corpus_mu=self.corpus_mu)[0]
        labels = self.labels or [""] * len(self.corpus)
        return [[n, f["sentence"], _rounded(f["score"]), labels[f["index"]]] for n, f in enumerate(found, 1)]

    def map_points(self, x_range: Sequence[float] | None = None) -> list[dict]:
        """Latent map tab: one dict per point (`point`, `sentence`, `length`, `label`, `x`, `y`: its first
        two principal components), those with `x_min <= x <= x_max` when `x_range` is given."""
        self._require_corpus("the latent map")
        if x_range is None:
            return self.points
        low, high = sorted(float(value) for value in x_range)
        return sorted((p for p in self.points if low <= p["x"] <= high), key=lambda p: p["x"])

    def map_point(self, point) -> tuple[str, str]:
        """A selected point of the map: its sentence and the greedy reconstruction from its mean."""
        self._require_corpus("the latent map")
        point = _whole(point, "point", 0, len(self.points) - 1)
        sentence = self.points[point]["sentence"]
        with self._lock:
            # As `reconstruct` decodes by default (from the cached posterior mean).
            decoded = self.pipeline.decode(self.corpus_mu[point : point + 1], RECONSTRUCTION)
            return sentence, decoded[0]

    def training(self) -> tuple[dict, dict]:
        """Training tab: `({file name: Figure}, {"model": config, "training": train config})`; the figures
        are {} (with the reason logged) for a run with no validation history."""
        from ..plotting import run_figures

        run_dir = self.pipeline.run_dir
        if run_dir is None:
            return {}, {}
        try:
            figures = run_figures(run_dir)
        except ValueError as error:
            logger.info("no training figures: %s", error)
            figures = {}
        configs = {"model": read_json(Path(run_dir) / CONFIG_NAME)}
        if (Path(run_dir) / TRAIN_CONFIG_NAME).is_file():
            configs["training"] = read_json(Path(run_dir) / TRAIN_CONFIG_NAME)
        return figures, configs
