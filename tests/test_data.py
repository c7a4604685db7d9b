"""Corpora: files, folders, named corpora, the Hub; bad input; tokenization; bucketing; collation."""

from __future__ import annotations

import logging

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch

from textvae.data.bucketing import LengthBucketSampler
from textvae.data.corpora import load_corpus
from textvae.data.storage import PackedSequences, TokenizedSplit, collate
from textvae.data.token_ids import tokenize_corpus
from textvae.data.tokenization import WordLookup, encode_texts, train_tokenizer, train_word_tokenizer
from textvae.training.config import TrainConfig

from .helpers import PTB_DIR, make_sentences


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


@pytest.mark.skipif(
    not (PTB_DIR / "yelp_short" / "train.txt").is_file(), reason="yelp_short not in ../shared/data"
)
def test_yelp_short_is_a_named_corpus_with_its_own_splits():
    corpus = load_corpus("yelp_short", data_dir=PTB_DIR)
    # Its own valid.txt, not a cut of train: the sizes of ../shared/data/README.md.
    assert (len(corpus["train"]), len(corpus["validation"])) == (57_483, 6_000)


def test_missing_yelp_short_says_where_it_comes_from(tmp_path):
    with pytest.raises(ValueError, match=r"put train.txt and valid.txt in .*yelp_short .*Shen et al. 2017"):
        load_corpus("yelp_short", data_dir=tmp_path)


# Token storage: flat int32 ids with int64 offsets must give exactly what lists of ids gave.


def reference_batches(lengths, batch_size, shuffle, seed, epoch, pool_batches):
    """LengthBucketSampler.batches as it was with Python lists and sorted(), for comparison."""
    count = len(lengths)
    if not shuffle:
        order = sorted(range(count), key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, count, batch_size)]
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(count, generator=generator).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, count, pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    "count, batch_size, pool_batches", [(1000, 10, 20), (37, 4, 3), (5, 8, 100), (0, 3, 2)]
)
def test_bucketing_gives_the_same_batches_for_list_and_array_lengths(
    shuffle, count, batch_size, pool_batches
):
    lengths = [(i * 7919) % 13 + 3 for i in range(count)]  # many ties: their order must be kept too
    for seed, epoch in ((0, 0), (3, 1)):
        expected = reference_batches(lengths, batch_size, shuffle, seed, epoch, pool_batches)
        for given in (lengths, np.array(lengths), np.array(lengths, dtype=np.int32)):
            sampler = LengthBucketSampler(
                given, batch_size, shuffle=shuffle, seed=seed, pool_batches=pool_batches
            )
            sampler.set_epoch(epoch)
            assert sampler.batches() == expected
            assert list(sampler) == expected and sampler.num_batches == len(expected)


def test_packed_sequences_index_slice_and_pad_like_lists():
    sequences = [[1, 5, 2], [1, 2], [1, 7, 8, 9, 6, 2], [1, 4, 2]]
    packed = PackedSequences.from_lists(sequences)
    assert packed.values.dtype == np.int32 and packed.offsets.dtype == np.int64
    assert [ids.tolist() for ids in packed] == sequences and packed[-1].tolist() == sequences[-1]
    assert [ids.tolist() for ids in packed[1:3]] == sequences[1:3] and len(packed[3:1]) == 0
    assert packed.lengths.tolist() == [3, 2, 6, 3]
    assert packed.lengths_at([2, 0, 2]).tolist() == [6, 3, 6] and packed.lengths_at([]).tolist() == []
    assert TokenizedSplit(packed).lengths_at(np.array([3, 1])).tolist() == [3, 2]
    with pytest.raises(IndexError):
        packed[4]
    ids, mask = packed.pad([2, 0, 1], pad_token_id=0)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[1, 7, 8, 9, 6, 2], [1, 5, 2, 0, 0, 0], [1, 2, 0, 0, 0, 0]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="offsets"):
        PackedSequences(np.zeros(3, dtype=np.int32), np.array([0, 2]))


@pytest.mark.parametrize("list_type", ["list", "large_list"])
def test_packed_sequences_from_sliced_and_chunked_arrow(list_type):
    import pyarrow as pa

    sequences = [[1, 5, 2], [1, 2], [1, 7, 8, 2], [1, 4, 2], [1, 9, 9, 9, 2]]
    kind = pa.list_(pa.int64()) if list_type == "list" else pa.large_list(pa.int64())  # int64: copied
    column = pa.chunked_array([pa.array(sequences[:2], kind), pa.array(sequences[2:], kind)]).slice(1, 3)
    packed = PackedSequences.from_arrow(column)
    assert [ids.tolist() for ids in packed] == sequences[1:4] and packed.values.dtype == np.int32
    single = PackedSequences.from_arrow(pa.array(sequences, pa.list_(pa.int32())).slice(2))
    assert [ids.tolist() for ids in single] == sequences[2:]


def tokenize_reference(tokenizer, texts):
    """The ids tokenize_corpus gave with Python lists: [BOS] + tokenizer(text) + [EOS]."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id, *sentence, tokenizer.eos_token_id] for sentence in ids]


@pytest.mark.parametrize("tokenizer_type", ["word", "bpe"])
def test_flat_storage_has_the_ids_lengths_and_batches_of_lists(corpus_file, tokenizer_type):
    corpus = load_corpus(str(corpus_file), validation_fraction=0.2, seed=1)  # splits with an indices mapping
    tokenizer = train_tokenizer(corpus["train"]["text"], tokenizer_type, max_vocab_size=300)
    tokenized = tokenize_corpus(corpus, tokenizer)
    for name in ("train", "validation"):
        split = TokenizedSplit.from_dataset(tokenized[name])
        expected = tokenize_reference(tokenizer, list(corpus[name]["text"]))
        assert [ids.tolist() for ids in split.input_ids] == expected
        assert split.lengths.tolist() == [len(ids) for ids in expected] == list(tokenized[name]["length"])
        assert split.num_target_tokens() == sum(len(ids) - 1 for ids in expected)
        as_lists = TokenizedSplit(input_ids=expected)
        for indices in LengthBucketSampler(split.lengths, 7, seed=2):
            batch, reference = collate(split, indices, 0), collate(as_lists, indices, 0)
            assert all(torch.equal(batch[key], reference[key]) for key in reference)
        # Token storage: 4 bytes a token plus 8 an offset per sentence, at most 8 bytes a token.
        assert split.nbytes == split.input_ids.values.nbytes + split.input_ids.offsets.nbytes
        assert split.nbytes / len(split.input_ids.values) <= 8


@pytest.mark.parametrize(
    "text",
    [
        "the cat sat",
        "  the\tcat \u3000sat\u00a0on\u2028the mat  ",
        "a<unk>b <unk><unk> x<eos>",
        "<unk> dog\u0085cat\u1680<pad>",
        "file\x1cseparator",  # whitespace to Python and Arrow, not to Rust
        "",
        "unknown words only",
    ],
)
def test_word_lookup_gives_the_rust_tokenizer_ids(text):
    tokenizer = train_word_tokenizer(["the cat sat on the mat", "a dog <unk> b"])
    lookup = WordLookup.from_tokenizer(tokenizer)
    assert lookup is not None
    ids, lengths = encode_texts(tokenizer, [text, "the dog", text], lookup)
    rust = [
        e.ids
        for e in tokenizer.backend_tokenizer.encode_batch([text, "the dog", text], add_special_tokens=False)
    ]
    assert lengths.tolist() == [len(row) for row in rust]
    assert ids.tolist() == [token for row in rust for token in row]


def test_word_lookup_splits_on_exactly_rust_whitespace():
    tokenizer = train_word_tokenizer(["a b"])
    texts = [f"a{chr(code)}b" for code in range(0x3100) if not 0xD800 <= code < 0xE000]
    lookup = WordLookup.from_tokenizer(tokenizer)
    ids, lengths = encode_texts(tokenizer, [t for t in texts if "\x1c" > t[1] or t[1] > "\x1f"], lookup)
    assert lookup.encode(texts) is None  # \x1c-\x1f: the batch goes to Rust
    expected = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert encode_texts(tokenizer, texts, lookup)[0].tolist() == [t for row in expected for t in row]
    kept = [row for t, row in zip(texts, expected, strict=True) if "\x1c" > t[1] or t[1] > "\x1f"]
    assert ids.tolist() == [t for row in kept for t in row] and lengths.tolist() == [len(r) for r in kept]


def test_word_lookup_is_only_for_word_level_tokenizers():
    assert WordLookup.from_tokenizer(train_tokenizer(make_sentences(50), "bpe", max_vocab_size=300)) is None


@pytest.mark.parametrize("policy, kept", [("truncate", 3), ("drop", 1)])
def test_overlong_sentences_are_counted_in_a_warning(tmp_path, caplog, policy, kept):
    (tmp_path / "train.txt").write_text("a b c d e f\na b\nb c d e\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("a\na b c d e f g\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    with caplog.at_level(logging.WARNING, logger="textvae.data.token_ids"):
        tokenized = tokenize_corpus(corpus, tokenizer, max_length=3, overlong=policy)
    verb = "truncated" if policy == "truncate" else "dropped"
    assert f"{verb} 2 of 3 training sentences longer than 3 tokens; --max-length / --overlong" in caplog.text
    assert f"{verb} 1 of 2 validation sentences longer than 3 tokens" in caplog.text
    assert len(tokenized["train"]) == kept and max(tokenized["train"]["length"]) <= 5


def test_default_max_length_keeps_a_100_word_sentence_and_truncates_a_200_word_one(tmp_path, caplog):
    limit = TrainConfig().data.max_length
    assert limit == 128
    words = [f"w{i}" for i in range(200)]
    (tmp_path / "train.txt").write_text(
        " ".join(words[:100]) + "\n" + " ".join(words) + "\n", encoding="utf-8"
    )
    (tmp_path / "valid.txt").write_text("w1 w2\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    with caplog.at_level(logging.WARNING, logger="textvae.data.token_ids"):
        tokenized = tokenize_corpus(corpus, tokenizer, max_length=limit)
    assert list(tokenized["train"]["length"]) == [102, 130]
    assert "truncated 1 of 2 training sentences longer than 128 tokens" in caplog.text
    assert "validation" not in caplog.text


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_encoder_ids_follow_their_sentences(tmp_path, policy):
    (tmp_path / "train.txt").write_text("the cat sat on the mat\na dog\nthe dog ran\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("a cat\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    encoder_tokenizer = train_word_tokenizer(["dog cat the a"])  # another vocabulary
    tokenized = tokenize_corpus(corpus, tokenizer, encoder_tokenizer, max_length=3, overlong=policy)
    split = TokenizedSplit.from_dataset(tokenized["train"])
    texts = list(corpus["train"]["text"])[1:] if policy == "drop" else list(corpus["train"]["text"])
    expected = encoder_tokenizer(texts, truncation=True)["input_ids"]
    assert [ids.tolist() for ids in split.encoder_input_ids] == expected and len(split) == len(texts)
    batch = collate(split, [1, 0], pad_token_id=0, encoder_pad_token_id=encoder_tokenizer.pad_token_id)
    assert batch["encoder_input_ids"][0, : len(expected[1])].tolist() == expected[1]
    assert batch["encoder_attention_mask"].sum(dim=1).tolist() == [len(expected[1]), len(expected[0])]


def test_words_are_counted_by_arrow_on_threads_as_str_split_counts_them(tmp_path, monkeypatch):
    from collections import Counter

    from textvae.data import token_ids as data

    whitespace = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
    texts = [
        " the cat  sat \t on\nthe mat ",
        "d\u00a0e f\u3000g",
        "naïve café",
        "a\x1cb",
        whitespace.join("xyz"),
    ]
    texts = [f"{text} {index}" for index in range(9) for text in texts]  # none blank; some split in lines
    (tmp_path / "train.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "valid.txt").write_text("x\n", encoding="utf-8")
    train = load_corpus(str(tmp_path))["train"].shuffle(seed=0)  # an indices mapping, as a split cut off has
    expected = Counter(word for text in train["text"] for word in text.split())
    assert data.count_arrow_words(datasets.Dataset.from_dict({"text": ["", "  "]}).data.table["text"]) == {}
    monkeypatch.setattr(data, "TEXT_BATCH_SIZE", 4)
    for threads, string_limit in ((1, 2**31 - 1), (3, 2**31 - 1), (3, 10)):  # 10: as if past 2 GiB
        monkeypatch.setattr(data, "worker_threads", lambda threads=threads: threads)
        monkeypatch.setattr(data, "_STRING_LIMIT", string_limit)
        assert data.count_corpus_words(train) == expected
        batches = list(data.map_text_batches(train, lambda texts: texts.to_pylist()))
        assert len(train) > 40 and [len(batch) for batch in batches[:-1]] == [4] * (len(batches) - 1)
        assert [text for batch in batches for text in batch] == list(train["text"])  # in row order
    assert train_word_tokenizer(expected).get_vocab() == train_word_tokenizer(list(train["text"])).get_vocab()
    with pytest.raises(ValueError, match="trains on texts"):
        train_tokenizer(expected, "bpe")


@pytest.mark.parametrize("tokenizer_type", ["word", "bpe"])
def test_tokenizing_on_threads_keeps_every_sentence_in_its_place(tmp_path, monkeypatch, tokenizer_type):
    from textvae.data import token_ids as data

    lines = make_sentences(90, seed=4)
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "corpus.txt"), validation_fraction=0.2, seed=1)
    texts = list(corpus["train"]["text"])
    tokenizer = train_tokenizer(texts, tokenizer_type)
    reference = tokenizer(texts)["input_ids"]  # <bos> words <eos>, as the tokenizer gives them
    monkeypatch.setattr(data, "TEXT_BATCH_SIZE", 8)
    for threads in (1, 4):
        monkeypatch.setattr(data, "worker_threads", lambda threads=threads: threads)
        tokenized = TokenizedSplit.from_dataset(tokenize_corpus(corpus, tokenizer)["train"])
        assert [list(ids) for ids in tokenized.input_ids] == reference
