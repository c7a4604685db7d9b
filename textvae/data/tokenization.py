"""Training and loading `tokenizers` tokenizers: word-level for pre-tokenized corpora, BPE for raw text.

Every tokenizer has the special tokens pad, bos, eos and unk, adds `<bos> ... <eos>` around a sentence,
and is saved beside the model as a `PreTrainedTokenizerFast` (`tokenizer.json`). `encode_texts` encodes
large batches of text straight into flat id arrays, for corpora of millions of sentences.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2, 3
TOKENIZER_TYPES = ("word", "bpe")
# Whitespace to Python's str.split but not to Rust's char::is_whitespace (the tokenizers' WhitespaceSplit).
_PYTHON_ONLY_WHITESPACE = "[\x1c-\x1f]"


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
    return Counter(itertools.chain.from_iterable(map(str.split, texts)))


def count_arrow_words(texts) -> dict[str, int]:
    """Word counts of one batch of texts (a pyarrow string array), as `count_words` counts them.

    Done by Arrow's string kernels, which release the GIL, so batches can be counted on several threads
    (`data.count_corpus_words`); Arrow splits on exactly the characters `str.split` does.
    """
    import pyarrow.compute as pc

    words = pc.list_flatten(pc.utf8_split_whitespace(pc.utf8_trim_whitespace(texts)))
    words = words.filter(pc.not_equal(words, ""))  # an empty or blank text splits into one ""
    tally = pc.value_counts(words)
    return dict(zip(tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True))


def train_word_tokenizer(
    texts: Iterable[str] | Mapping[str, int], min_frequency: int = 1, max_vocab_size: int | None = None
) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose vocabulary is the corpus's words.

    texts: the training texts, or their word counts already made (`data.count_corpus_words`).
    Words are ordered by frequency (ties by spelling), after the four special tokens. A corpus's own
    `<unk>` is the unk token, so on PTB the vocabulary is exactly its 9,999 types (`<unk>` included)
    plus pad, bos and eos. `max_vocab_size` counts the special tokens.
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    if max_vocab_size is not None and max_vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_vocab_size must exceed {len(SPECIAL_TOKENS)}, got {max_vocab_size}")
    counts = texts if isinstance(texts, Mapping) else count_words(texts)
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
    texts: Iterable[str] | Mapping[str, int],
    tokenizer_type: str = "word",
    min_frequency: int = 1,
    max_vocab_size: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train the tokenizer named by `tokenizer_type` ("word" or "bpe") on the training texts (read once);
    a word-level tokenizer may be given the texts' word counts instead (`train_word_tokenizer`)."""
    if isinstance(texts, Mapping) and tokenizer_type == "bpe":
        raise ValueError(f"a {tokenizer_type} tokenizer trains on texts, not on word counts")
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


def encode_sentences(tokenizer: PreTrainedTokenizerFast, sentences: Sequence[str]) -> list[list[int]]:
    """`[BOS] + ids + [EOS]` of each sentence (a string is one sentence); `ValueError` for no sentence or an
    empty one. Words the vocabulary lacks are read as its unk token, with a warning that counts them."""
    if isinstance(sentences, str):
        sentences = [sentences]
    if not sentences:
        raise ValueError("no sentences given")
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str) or not sentence.strip():
            raise ValueError(f"sentence {index + 1} is empty")
    ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and tokenizer.unk_token not in ("", None):
        unknown = sum(token == unk for row in ids for token in row) - sum(
            s.split().count(tokenizer.unk_token) for s in sentences
        )
        if unknown > 0:
            logger.warning(
                "%d word(s) are not in the vocabulary and were read as %s", unknown, tokenizer.unk_token
            )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [[bos, *row, eos] for row in ids]


def _can_overlap(tokens: Sequence[str]) -> bool:
    """Whether two occurrences of these tokens (of one token twice, too) can share characters."""
    for first in tokens:
        for second in tokens:
            if first != second and second in first:
                return True
            if any(first[-size:] == second[:size] for size in range(1, min(len(first), len(second)))):
                return True
    return False


class WordLookup:
    """A whitespace word-level tokenizer's encoding, done by Arrow's string kernels: split, then look up.

    Gives the ids of the Rust `WordLevel` model behind a `WhitespaceSplit` pre-tokenizer at about six
    times its speed (a PTB sentence: ~4 us against ~25 us of CPU, with no Python string made), since the
    Rust side builds offsets and alignments for every word that are never used here. Added tokens
    (`<unk>`, ...) are split out of words first, as Rust's added vocabulary does ("a<unk>b" -> a <unk> b).
    """

    def __init__(self, vocab: dict[str, int], unk_id: int, added: dict[str, int]):
        vocab = {**vocab, **added}
        self.words, self.ids = pa.array(list(vocab)), np.array(list(vocab.values()), dtype=np.int32)
        self.unk_id, self.added = unk_id, list(added)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> WordLookup | None:
        """The lookup for a tokenizer that is exactly WordLevel + WhitespaceSplit, else None."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        spec = json.loads(backend.to_str())
        model, added = spec["model"], spec["added_tokens"]
        # Added tokens that strip, match whole words only, hold a space or can overlap, or a mix of
        # normalized and raw ones (matched in two passes), are left to Rust.
        simple = all(not (t["lstrip"] or t["rstrip"] or t["single_word"]) for t in added)
        simple = simple and len({t["normalized"] for t in added}) <= 1
        contents = [t["content"] for t in added]
        simple = simple and not any(any(c.isspace() for c in token) for token in contents)
        if (
            model["type"] != "WordLevel"
            or spec["normalizer"] is not None
            or spec["pre_tokenizer"] != {"type": "WhitespaceSplit"}
            or model["unk_token"] not in model["vocab"]
            or not simple
            or _can_overlap(contents)
            or spec["truncation"] is not None
            or spec["padding"] is not None
        ):
            return None
        return cls(model["vocab"], model["vocab"][model["unk_token"]], {t["content"]: t["id"] for t in added})

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray] | None:
        """(W,) int32 ids and (N,) int64 lengths of an Arrow (or list) of texts; None when a text holds a
        character that Rust does not take for whitespace but Arrow (and Python) do."""
        import pyarrow.compute as pc

        texts = pa.chunked_array([texts]) if isinstance(texts, list) else texts
        if pc.any(pc.match_substring_regex(texts, _PYTHON_ONLY_WHITESPACE)).as_py():
            return None
        for token in self.added:  # no two can overlap, so one after the other = all at once
            texts = pc.replace_substring(texts, token, f" {token} ")
        texts = pc.utf8_trim_whitespace(texts)
        # Arrow splits a run of whitespace once, like str.split, but an empty text gives one empty word.
        words = pc.utf8_split_whitespace(texts).combine_chunks()
        lengths = np.diff(words.offsets.to_numpy()).astype(np.int64)
        flat = words.flatten()
        empty = pc.equal(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False)
        if empty.any():
            flat, lengths[empty] = flat.filter(pc.not_equal(flat, "")), 0
        index = pc.index_in(flat, value_set=self.words).fill_null(-1).to_numpy(zero_copy_only=False)
        ids = np.where(index >= 0, self.ids[index], self.unk_id).astype(np.int32)
        return ids, lengths


def flatten_ids(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids -> one flat int32 array of them all and the (N,) int64 lengths."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(lengths.sum()))
    return ids, lengths


def encode_texts(tokenizer, texts, lookup: WordLookup | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of many texts without special tokens: (W,) int32 ids of all texts, (N,) int64 lengths.

    texts: a list of strings or a pyarrow string (chunked) array. The same ids as
    `tokenizer(texts, add_special_tokens=False)`, faster: a whitespace word-level tokenizer runs in Arrow
    (`lookup`, from `WordLookup.from_tokenizer`); any other fast tokenizer runs its Rust
    `encode_batch_fast` on the whole batch (on every core); a slow tokenizer is called.
    """
    if lookup is not None and (encoded := lookup.encode(texts)) is not None:
        return encoded
    texts = texts if isinstance(texts, list) else texts.to_pylist()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return flatten_ids([encoding.ids for encoding in encode_batch(texts, add_special_tokens=False)])
    return flatten_ids(tokenizer(texts, add_special_tokens=False)["input_ids"])


def load_backbone_tokenizers(model_options: dict, tokenizer=None, encoder_tokenizer=None) -> tuple:
    """(tokenizer, encoder tokenizer): those given, else a pretrained (hf) decoder's and encoder's own, as
    the architecture options `model_options` name them; None for a tokenizer still to be trained (the
    decoder's) or not needed (the encoder's)."""
    if tokenizer is None and model_options.get("decoder_type") == "hf":
        from ..models.backbones import load_backbone_tokenizer

        tokenizer = load_backbone_tokenizer(model_options.get("decoder_name_or_path"))
    if encoder_tokenizer is None and model_options.get("encoder_type") == "hf":
        from ..models.backbones import load_backbone_tokenizer

        encoder_tokenizer = load_backbone_tokenizer(model_options.get("encoder_name_or_path"))
    return tokenizer, encoder_tokenizer
