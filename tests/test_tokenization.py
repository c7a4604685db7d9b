"""Tokenizers: word-level vocabulary (PTB's exactly), unk handling, decoding, BPE, saving."""

from __future__ import annotations

from collections import Counter

import pytest

from textvae.data.tokenization import (
    SPECIAL_TOKENS,
    count_words,
    decode_ids,
    load_tokenizer,
    train_bpe_tokenizer,
    train_word_tokenizer,
)

from .helpers import PTB_DIR


def test_word_vocabulary_orders_specials_then_frequency():
    tokenizer = train_word_tokenizer(["b a a", "c a b", "<unk> d"])
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert vocab["a"] == 4 and vocab["b"] == 5  # a (3) before b (2), ties by spelling: c before d
    assert vocab["c"] == 6 and vocab["d"] == 7 and len(tokenizer) == 8


def test_corpus_unk_is_the_unk_token_and_unknown_words_map_to_it():
    tokenizer = train_word_tokenizer(["the <unk> sat", "the cat"])
    ids = tokenizer("the zebra <unk>", add_special_tokens=False)["input_ids"]
    assert ids[1] == ids[2] == tokenizer.unk_token_id == 3
    assert tokenizer("the cat")["input_ids"][0] == tokenizer.bos_token_id
    assert tokenizer("the cat")["input_ids"][-1] == tokenizer.eos_token_id


def test_min_frequency_and_max_size():
    texts = ["a a a b b c"]
    assert len(train_word_tokenizer(texts, min_frequency=2)) == 4 + 2
    assert len(train_word_tokenizer(texts, max_vocab_size=5)) == 5
    with pytest.raises(ValueError, match="min_frequency"):
        train_word_tokenizer(texts, min_frequency=0)


def test_decode_stops_at_eos_and_keeps_unk():
    tokenizer = train_word_tokenizer(["the <unk> sat"])
    ids = tokenizer("the <unk> sat")["input_ids"] + [tokenizer.convert_tokens_to_ids("the")]
    assert decode_ids(tokenizer, ids) == "the <unk> sat"


def test_save_and_load(tmp_path):
    tokenizer = train_word_tokenizer(["the cat sat"])
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")


def test_bpe_round_trips_raw_text():
    texts = ["Hello, world! Ça va?", "the quick brown fox jumps over the lazy dog"] * 20
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    ids = tokenizer("Ça va, fox?", add_special_tokens=False)["input_ids"]
    assert decode_ids(tokenizer, ids) == "Ça va, fox?"


@pytest.mark.skipif(not (PTB_DIR / "ptb" / "train.txt").is_file(), reason="PTB not in ../shared/data")
def test_ptb_vocabulary_is_the_standard_one():
    lines = (PTB_DIR / "ptb" / "train.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = train_word_tokenizer(lines)
    # 9,999 word types (<unk> among them) plus EOS is the standard 10,000; plus pad and bos.
    assert len(tokenizer) == 10_002
    words = {word for line in lines for word in line.split()}
    assert len(words) == 9_999 and "<unk>" in words
    assert set(tokenizer.get_vocab()) == words | {"<pad>", "<bos>", "<eos>"}


def test_word_counts_are_those_of_str_split_whatever_the_whitespace():
    texts = [" the cat  sat \t on\nthe mat ", "", "   ", "d\u00a0e f\u3000g", "naïve café", "a" * 3, "x"] * 3
    expected = Counter(word for text in texts for word in text.split())
    assert count_words(texts) == expected
    assert count_words(iter(texts)) == expected  # any iterable
    assert count_words([]) == Counter()
