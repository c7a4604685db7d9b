"""How sentences are decoded from z unless the caller says otherwise; importable without torch.

`reconstruct`, `interpolate`, `transfer` and `analogy` (pipeline, command line and explorer alike) use
what measured best on a model that carries its sentences (scripts/bench_decoding.py on `make demo`'s model,
300 yelp_short valid sentences): beam search with 5 beams that never repeats a 3-gram gave recon BLEU 19.90
and endpoint BLEU 21.31 against greedy decoding's 17.88 and 17.28, with none of the loops ("the taste taste
taste ...") that 19% of greedy outputs had, at 17 ms a sentence on a CPU. Sampling from the prior keeps
plain sampling (no repetition control) by default.
"""

STRATEGIES = ("greedy", "beam", "sample")
DEFAULT_STRATEGY = "beam"
DEFAULT_NO_REPEAT_NGRAM_SIZE = 3
