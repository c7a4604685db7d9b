"""Sentences to token ids: corpora, tokenizers, token storage, batching, streaming, input noise.

`corpora.py` reads corpora and sentence files; `tokenization.py` trains and loads tokenizers; `token_ids.py`
tokenizes a corpus; `storage.py` keeps the ids and collates batches; `bucketing.py` batches by length;
`streaming.py` reads a corpus larger than memory; `noise.py` corrupts the encoder's input."""

from ..lazy import lazy_face

_NAMES = {
    "DATA_DIR_ENV": ".corpora",
    "NAMED_CORPORA": ".corpora",
    "SPLIT_FILE_NAMES": ".corpora",
    "check_text_file": ".corpora",
    "load_corpus": ".corpora",
    "read_sentence_file": ".corpora",
    "resolve_data_dir": ".corpora",
    "train_tokenizer": ".tokenization",
    "train_word_tokenizer": ".tokenization",
    "train_bpe_tokenizer": ".tokenization",
    "load_tokenizer": ".tokenization",
    "decode_ids": ".tokenization",
    "OVERLONG_POLICIES": ".token_ids",
    "TEXT_BATCH_SIZE": ".token_ids",
    "count_corpus_words": ".token_ids",
    "encode_text_batch": ".token_ids",
    "encode_sentences": ".tokenization",
    "iter_texts": ".token_ids",
    "map_text_batches": ".token_ids",
    "tokenize_corpus": ".token_ids",
    "warn_overlong": ".token_ids",
    "PackedSequences": ".storage",
    "TokenizedSplit": ".storage",
    "collate": ".storage",
    "pad_batch": ".storage",
    "LengthBucketSampler": ".bucketing",
    "EncoderNoise": ".noise",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
