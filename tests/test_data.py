"""Corpora: files, folders, named corpora, the Hub; bad input; tokenization; bucketing; collation."""

from __future__ import annotations

import logging

import datasets
import huggingface_hub
import pytest

from textvae.data import LengthBucketSampler, TokenizedSplit, collate, load_corpus, tokenize_corpus
from textvae.tokenization import train_word_tokenizer

from .helpers import PTB_DIR


def test_text_file_gets_a_seeded_validation_split(corpus_file):
    corpus = load_corpus(str(corpus_file), validation_fraction=0.1, seed=3)
    assert len(corpus["train"]) + len(corpus["validation"]) == 120
    assert len(corpus["validation"]) == 12
    again = load_corpus(str(corpus_file), validation_fraction=0.1, seed=3)
    assert list(corpus["validation"]["text"]) == list(again["validation"]["text"])


def test_folder_with_train_and_valid(tmp_path):
    (tmp_path / "train.txt").write_text("a b\nc d\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("a c\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    assert list(corpus["train"]["text"]) == ["a b", "c d"] and list(corpus["validation"]["text"]) == ["a c"]


def test_named_corpus_is_looked_up_in_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "train.txt").write_text(" a b \n c \n", encoding="utf-8")
    (tmp_path / "ptb" / "valid.txt").write_text(" a \n", encoding="utf-8")
    monkeypatch.setenv("TEXTVAE_DATA", str(tmp_path))
    assert len(load_corpus("ptb")["train"]) == 2


def test_missing_named_corpus_says_where_to_put_it(tmp_path):
    with pytest.raises(ValueError, match=r"put train.txt and valid.txt in .*ptb"):
        load_corpus("ptb", data_dir=tmp_path)


def test_blank_lines_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "c.txt"
    path.write_text("a b\n\n   \nc d\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(str(path), validation_fraction=0.5)
    assert len(corpus["train"]) + len(corpus["validation"]) == 2
    assert "skipped 2 blank lines" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\n \n", "empty"),
        (b"ok line\nbad \xff byte\n", r"not UTF-8 \(bad byte at line 2\).*--encoding-errors"),
    ],
)
def test_bad_corpus_files(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_corpus(str(path))


def test_bad_bytes_can_be_replaced(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"good line\nbad \xff byte\nmore\nlines\n")
    corpus = load_corpus(str(path), encoding_errors="replace", validation_fraction=0.25)
    texts = list(corpus["train"]["text"]) + list(corpus["validation"]["text"])
    assert "bad \ufffd byte" in texts


def test_hub_dataset_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"could not load the Hub dataset 'someone/some-corpus'.*network"):
        load_corpus("someone/some-corpus")


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(ValueError, match="corpus not found"):
        load_corpus(str(tmp_path / "nothing.txt"))


@pytest.mark.parametrize("policy, expected_lengths", [("truncate", [5, 4]), ("drop", [4])])
def test_overlong_sentences(tmp_path, policy, expected_lengths):
    (tmp_path / "train.txt").write_text("a b c d e f\na b\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("a\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    tokenized = tokenize_corpus(corpus, tokenizer, max_length=3, overlong=policy)
    assert list(tokenized["train"]["length"]) == expected_lengths
    assert all(
        ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        for ids in tokenized["train"]["input_ids"]
    )


def test_collate_pads_and_masks():
    split = TokenizedSplit(input_ids=[[1, 5, 2], [1, 5, 6, 7, 2]])
    batch = collate(split, [0, 1], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 2, 0, 0], [1, 5, 6, 7, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert split.num_target_tokens() == 2 + 4


def test_bucketing_covers_every_sentence_once_and_keeps_padding_small():
    lengths = [(i * 7919) % 50 + 3 for i in range(1000)]
    sampler = LengthBucketSampler(lengths, batch_size=10, seed=1, pool_batches=20)
    batches = sampler.batches()
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    assert sum(lengths) / padded > 0.9
    sampler.set_epoch(1)
    assert sampler.batches() != batches  # a new order every epoch
    sampler.set_epoch(0, start_batch=5)
    assert list(sampler) == batches[5:] and len(sampler) == len(batches) - 5


@pytest.mark.skipif(not (PTB_DIR / "ptb" / "train.txt").is_file(), reason="PTB not in ../shared/data")
def test_ptb_splits_and_token_counts():
    corpus = load_corpus("ptb", data_dir=PTB_DIR)
    assert (len(corpus["train"]), len(corpus["validation"])) == (42_068, 3_370)
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    validation = TokenizedSplit.from_dataset(tokenize_corpus(corpus, tokenizer)["validation"])
    assert validation.num_target_tokens() == 73_760  # BENCHMARKS.md: words + one EOS per sentence
