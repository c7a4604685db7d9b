"""Training and loading `tokenizers` tokenizers: word-level for pre-tokenized corpora, BPE for raw text.

Every tokenizer has the special tokens pad, bos, eos and unk, adds `<bos> ... <eos>` around a sentence,
and is saved beside the model as a `PreTrainedTokenizerFast` (`tokenizer.json`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2, 3
TOKENIZER_TYPES = ("word", "bpe")


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=1_000_000,
    )


def count_words(texts: Iterable[str]) -> Counter:
    """Whitespace-separated word counts of a corpus."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(text.split())
    return counts


def train_word_tokenizer(
    texts: Iterable[str], min_frequency: int = 1, max_vocab_size: int | None = None
) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose vocabulary is the corpus's words.

    Words are ordered by frequency (ties by spelling), after the four special tokens. A corpus's own
    `<unk>` is the unk token, so on PTB the vocabulary is exactly its 9,999 types (`<unk>` included)
    plus pad, bos and eos. `max_vocab_size` counts the special tokens.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    if max_vocab_size is not None and max_vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_vocab_size must exceed {len(SPECIAL_TOKENS)}, got {max_vocab_size}")
    counts = count_words(texts)
    words = sorted(
        (word for word, count in counts.items() if count >= min_frequency and word not in SPECIAL_TOKENS),
        key=lambda word: (-counts[word], word),
    )
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        if max_vocab_size is not None and len(vocab) >= max_vocab_size:
            break
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    logger.info("word-level vocabulary: %d tokens (%d distinct words in the corpus)", len(vocab), len(counts))
    return _wrap(tokenizer)


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on raw text (any Unicode, no unknown characters)."""
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"BPE vocab_size must exceed {len(SPECIAL_TOKENS) + 256}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer)


def train_tokenizer(
    texts: Sequence[str],
    tokenizer_type: str = "word",
    min_frequency: int = 1,
    max_vocab_size: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train the tokenizer named by `tokenizer_type` ("word" or "bpe") on the training texts."""
    if tokenizer_type == "word":
        return train_word_tokenizer(texts, min_frequency=min_frequency, max_vocab_size=max_vocab_size)
    if tokenizer_type == "bpe":
        return train_bpe_tokenizer(
            texts, vocab_size=max_vocab_size or 8000, min_frequency=max(min_frequency, 2)
        )
    raise ValueError(f"tokenizer_type must be one of {TOKENIZER_TYPES}, got {tokenizer_type!r}")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with `save_pretrained` (a folder holding `tokenizer.json`)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise ValueError(f"no tokenizer.json in {path}")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def decode_ids(tokenizer: PreTrainedTokenizerFast, ids: Sequence[int]) -> str:
    """Token ids -> one line of text: stops at the first EOS, drops BOS and padding, keeps unk.

    (`skip_special_tokens` would also drop `<unk>`, which PTB writes in its text.)
    """
    tokens = []
    for token_id in ids:
        token_id = int(token_id)
        if token_id == tokenizer.eos_token_id:
            break
        if token_id in (tokenizer.bos_token_id, tokenizer.pad_token_id):
            continue
        tokens.append(tokenizer.convert_ids_to_tokens(token_id))
    # Byte-level BPE can produce newlines and other control characters: one sentence stays one line.
    return " ".join(tokenizer.convert_tokens_to_string(tokens).split())
