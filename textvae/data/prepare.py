"""A run's data: its corpus read, its tokenizer trained (or given), its splits tokenized (`prepare_data`).

Training calls it on every process before the `Trainer` takes over; prior fitting and evaluation call it to
read the sentences a saved run was trained on, from the run's `DataConfig` alone.
"""

from __future__ import annotations

from .config import DataConfig
from .corpora import load_corpus
from .storage import PreparedData, TokenizedSplit
from .token_ids import count_corpus_words, iter_texts, tokenize_corpus
from .tokenization import load_backbone_tokenizers, train_tokenizer


def train_corpus_tokenizer(dataset, data: DataConfig):
    """The tokenizer of `data.tokenizer_type` trained on a split (a `datasets.Dataset` with "text")."""
    if data.tokenizer_type == "word":  # words counted by Arrow, on several threads
        texts = count_corpus_words(dataset)
    else:  # texts read as Arrow in large batches: iterating dataset["text"] is far slower (scripts/README.md)
        texts = (text for batch in iter_texts(dataset) for text in batch)
    return train_tokenizer(texts, data.tokenizer_type, data.min_frequency, data.max_vocab_size)


def prepare_data(
    data: DataConfig,
    tokenizer=None,
    encoder_tokenizer=None,
    *,
    model_options: dict | None = None,
    batch_size: int = 32,
    shuffle_seed: int = 0,
) -> PreparedData:
    """Load and tokenize the corpus; train the tokenizer on the training split unless one is given.

    model_options: the run's architecture options, whose pretrained (hf) backbones bring their own
    tokenizers. With `data.streaming` the training split is a stream instead
    (`streaming.prepare_stream_data`), read in global batches of `batch_size` shuffled with `shuffle_seed`.
    """
    if data.streaming:
        from .streaming import prepare_stream_data

        return prepare_stream_data(
            data, tokenizer, encoder_tokenizer, model_options, batch_size, shuffle_seed
        )
    corpus = load_corpus(data.source, data_dir=data.data_dir, **data.corpus_options())
    tokenizer, encoder_tokenizer = load_backbone_tokenizers(model_options or {}, tokenizer, encoder_tokenizer)
    if tokenizer is None:
        tokenizer = train_corpus_tokenizer(corpus["train"], data)
    tokenized = tokenize_corpus(corpus, tokenizer, encoder_tokenizer, data.max_length, data.overlong)
    return PreparedData(
        tokenizer=tokenizer,
        encoder_tokenizer=encoder_tokenizer,
        train=TokenizedSplit.from_dataset(tokenized["train"]),
        validation=TokenizedSplit.from_dataset(tokenized["validation"]),
    )
