"""Evaluation that matches the papers: every metric of a saved run, and the metrics themselves.

`run.py` evaluates a run folder (`evaluate_run`); `split.py` every metric over a tokenized split
(`evaluate`); `scoring.py` the per-sentence likelihoods (IW NLL); `latent.py` MI and active units; `text.py`
BLEU, BLEU-1, exact match, diversity and interpolation measures; `samples.py` forward PPL of samples and
interpolation paths; `progress.py` the scores kept while a long evaluation runs."""

from ..lazy import lazy_face

_NAMES = {
    "TRAIN_SAMPLE": ".run",
    "evaluate_run": ".run",
    "format_results": ".run",
    "training_sample": ".run",
    "evaluate": ".split",
    "IW_SAMPLES": ".scoring",
    "auroc": ".scoring",
    "batch_generators": ".scoring",
    "importance_weighted_nll": ".scoring",
    "importance_weighted_scores": ".scoring",
    "score_sentences": ".scoring",
    "active_units": ".latent",
    "mutual_information": ".latent",
    "corpus_bleu": ".text",
    "distinct_n": ".text",
    "interpolation_metrics": ".text",
    "reconstruction_scores": ".text",
    "self_bleu": ".text",
    "sentence_bleu1": ".text",
    "token_similarity": ".text",
    "forward_ppl": ".samples",
    "load_reference_lm": ".samples",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
