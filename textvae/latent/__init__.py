"""What users do with the latent space: neighbours, attribute vectors and analogies, cached codes, probes.

`arithmetic.py` searches and moves codes; `cache.py` keeps a corpus's codes on disk; `probes.py` measures how
much a label the codes carry with few labelled sentences (Kingma et al. 2014's M1)."""

from ..lazy import lazy_face

_NAMES = {
    "METRICS": ".arithmetic",
    "analogy_latent": ".arithmetic",
    "attribute_vector": ".arithmetic",
    "nearest_neighbours": ".arithmetic",
    "neighbour_rows": ".arithmetic",
    "transfer_vector": ".arithmetic",
    "CACHE_PREFIX": ".cache",
    "corpus_latents": ".cache",
    "encode_corpus_cached": ".cache",
    "model_fingerprint": ".cache",
    "draw_label_subsets": ".probes",
    "format_probe_table": ".probes",
    "probe_accuracy": ".probes",
    "tfidf_probe_accuracy": ".probes",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
