"""Streaming training (`--streaming`): the held-out head, pools covering the stream once an epoch, resume
equal to an uninterrupted run, and clear errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.data import streaming
from textvae.distributed import shard_bounds
from textvae.training.config import TrainConfig
from textvae.training.run import train
from textvae.training.setup import prepare_run_data

from .helpers import TINY_TRAIN, make_sentences, run_cli_error

STREAM = dict(TINY_TRAIN, streaming=True, streaming_buffer_size=50)  # flat data keys: the older layout


@pytest.fixture
def small_pools(monkeypatch):
    """Pools of 3 batches, so that 114 training sentences in batches of 16 make pools of 48, 48 and 18."""
    monkeypatch.setattr(streaming, "POOL_BATCHES", 3)


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def figures(run):
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in json.loads((run / "history.json").read_text())
    ]


def decoded(data, split, indices) -> list[str]:
    return [data.tokenizer.decode(split.input_ids[i], skip_special_tokens=True) for i in indices]


def test_the_head_of_the_stream_is_held_out_for_validation_and_never_trained_on(corpus_file, small_pools):
    sentences = corpus_file.read_text().splitlines()
    data = prepare_run_data(TrainConfig.from_dict({"data": str(corpus_file), **STREAM}))
    # 120 sentences, validation_fraction 0.05: the first ceil(6.0) = 6 of them.
    assert decoded(data, data.validation, range(len(data.validation))) == sentences[:6]
    for epoch in (0, 1):
        seen = [
            text for split, indices, _ in data.stream.batches(epoch) for text in decoded(data, split, indices)
        ]
        assert Counter(seen) == Counter(sentences[6:])  # every training sentence once an epoch, no other


def test_epochs_cover_the_stream_in_pools_and_shards_cover_each_batch(corpus_file, small_pools):
    data = prepare_run_data(TrainConfig.from_dict({"data": str(corpus_file), **STREAM}))
    orders = []
    for epoch in (0, 1):
        batches = list(data.stream.batches(epoch))
        # Pools of 48, 48 and 18 sentences: 3 + 3 + 2 batches, the ragged ones at a pool's end.
        assert sorted(len(indices) for _, indices, _ in batches) == [2] + [16] * 7
        assert [after for _, _, after in batches] == [(0, 1), (0, 2), (0, 3), (48, 1), (48, 2), (48, 3)] + [
            (96, 1),
            (96, 2),
        ]
        for split, indices, _ in batches:  # two processes: contiguous shares, every sentence once
            shares = [indices[slice(*shard_bounds(len(indices), rank, 2))] for rank in (0, 1)]
            assert shares[0] + shares[1] == indices and abs(len(shares[0]) - len(shares[1])) <= 1
            lengths = split.lengths[indices]
            assert lengths.max() - lengths.min() <= split.lengths.max() - split.lengths.min()
        orders.append([decoded(data, split, indices) for split, indices, _ in batches])
    assert orders[0] != orders[1]  # set_epoch: another shuffle each epoch


@pytest.mark.parametrize(
    "options, stop",
    [(dict(word_dropout=0.2, seed=5), 13), (dict(pretrain_epochs=1, epochs=3), 11)],
    ids=["mid-pool", "after-pretraining"],
)
def test_a_resumed_streaming_run_reaches_the_weights_of_an_uninterrupted_one(
    tmp_path, corpus_file, small_pools, options, stop
):
    config = TrainConfig.from_dict({"data": str(corpus_file), **STREAM, **options})
    whole = train(config, output_dir=tmp_path / "whole")
    stopped = train(TrainConfig(**{**config.to_dict(), "max_steps": stop}), output_dir=tmp_path / "split")
    state = json.loads((checkpoint_folders(stopped)[-1] / "trainer_state.json").read_text())
    assert state["step"] == stop
    # 8 steps an epoch: step 13 is epoch 2's second pool's second batch (the resume skips 48 sentences of
    # the epoch's stream), step 11 the third batch of its first pool.
    assert state["stream_position"] == ([48, 2] if stop == 13 else [0, 3])
    resumed = train(None, resume=stopped)
    last_whole, last_resumed = checkpoint_folders(whole)[-1], checkpoint_folders(resumed)[-1]
    assert last_whole.name == last_resumed.name
    final_whole, final_resumed = weights(last_whole), weights(last_resumed)
    assert all(torch.equal(final_whole[key], final_resumed[key]) for key in final_whole)
    assert figures(whole) == figures(resumed)


def test_streaming_reads_a_jsonl_column_and_a_folders_validation_split(tmp_path):
    sentences = make_sentences(30, seed=2)
    table = tmp_path / "c.jsonl"
    table.write_text("".join(json.dumps({"sentence": s, "n": i}) + "\n" for i, s in enumerate(sentences)))
    data = prepare_run_data(TrainConfig.from_dict({"data": str(table), "text_column": "sentence", **STREAM}))
    assert decoded(data, data.validation, range(len(data.validation))) == sentences[:2]  # ceil(1.5)
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(sentences[:20]) + "\n\n")  # a blank line is skipped
    (folder / "valid.txt").write_text("\n".join(sentences[20:]) + "\n")
    data = prepare_run_data(TrainConfig.from_dict({"data": str(folder), **STREAM}))
    assert decoded(data, data.validation, range(len(data.validation))) == sentences[20:]
    seen = [t for split, indices, _ in data.stream.batches(0) for t in decoded(data, split, indices)]
    assert Counter(seen) == Counter(sentences[:20])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(kl_schedule="cyclical"), "kl_schedule cyclical needs the total number of steps.*--max-steps"),
        (dict(lr_scheduler="cosine"), "lr_scheduler cosine needs the total number of steps.*--max-steps"),
    ],
)
def test_schedules_over_the_whole_run_need_max_steps(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({"streaming": True, **options})
    TrainConfig.from_dict({"streaming": True, "max_steps": 100, **options})  # with a length they run
    TrainConfig(**options)  # and without streaming the epochs give it


def test_an_empty_stream_and_a_bad_column_are_clear_errors(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(ValueError, match="holds no non-blank sentence"):
        prepare_run_data(TrainConfig.from_dict({"data": str(blank), **STREAM}))
    table = tmp_path / "c.jsonl"
    table.write_text('{"sentence": "a b"}\n')
    with pytest.raises(ValueError, match="no column 'text'.*sentence.*--text-column"):
        prepare_run_data(TrainConfig.from_dict({"data": str(table), **STREAM}))
    args = ["train", "--data", blank, "--streaming", "--output-dir", tmp_path / "run"]
    assert run_cli_error(capsys, args, "holds no non-blank sentence") != 0
    args = ["train", "--data", blank, "--streaming", "--kl-schedule", "cyclical", "-o", tmp_path / "run"]
    assert run_cli_error(capsys, args, "kl_schedule cyclical needs.*--max-steps") != 0
    assert not (tmp_path / "run").exists()


def test_a_bad_byte_deep_in_a_streamed_file_is_named_before_training(tmp_path, capsys):
    lines = make_sentences(3000, seed=3)
    corpus = tmp_path / "deep.txt"
    corpus.write_bytes(
        ("\n".join(lines[:2499]) + "\n").encode() + b"caf\xe9 au lait\n" + "\n".join(lines[2500:]).encode()
    )
    args = ["train", "--data", corpus, "--streaming", "-o", tmp_path / "run", "--max-steps", 2]
    assert run_cli_error(capsys, args, r"deep.txt is not UTF-8 \(bad byte at line 2500\); re-encode it") == 2
    assert not (tmp_path / "run").exists()  # nothing trained, no folder
    table = tmp_path / "deep.jsonl"
    table.write_bytes(b'{"text": "a b"}\n' * 40 + b'{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"deep.jsonl is not UTF-8 \(bad byte at line 41\)"):
        prepare_run_data(TrainConfig.from_dict({"data": str(table), **STREAM}))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 1 << 24])
def test_the_utf8_check_reads_in_chunks_and_names_the_line(tmp_path, chunk_size):
    from textvae.data.corpora import check_utf8_file

    good = tmp_path / "good.txt"
    good.write_text("naïve café\nüber ☃ 𝄞\n" * 3, encoding="utf-8")  # 2-, 3- and 4-byte characters
    check_utf8_file(good, chunk_size=chunk_size)  # split across chunk edges, still valid
    bad = tmp_path / "bad.txt"
    bad.write_bytes("naïve\n☃\n".encode() + b"x\xe2\x98\n" + b"ok\n")  # a cut 3-byte character
    with pytest.raises(ValueError, match=r"bad byte at line 3"):
        check_utf8_file(bad, chunk_size=chunk_size)
    cut = tmp_path / "cut.txt"
    cut.write_bytes(b"a\nb\n" + b"\xf0\x9d")  # ends inside a character
    with pytest.raises(ValueError, match=r"bad byte at line 3"):
        check_utf8_file(cut, chunk_size=chunk_size)


def test_evaluating_a_streaming_run_scores_the_sentences_it_held_out(tmp_path, corpus_file):
    from textvae.evaluation.run import evaluate_run

    folder = tmp_path / "corpus"  # a folder with train.txt alone: its validation split is held out
    folder.mkdir()
    corpus_file.rename(folder / "train.txt")
    run = train(
        TrainConfig.from_dict({"data": str(folder), **STREAM, "max_steps": 2}), output_dir=tmp_path / "run"
    )
    options = dict(iw_samples=2, batch_size=8, num_diversity_samples=2, interpolation_pairs=1, max_length=8)
    results = evaluate_run(run, data=str(folder), save=False, show_progress=False, **options)
    # The stream's first 6 sentences, not a random 5% of the corpus (sentences it trained on).
    head = tmp_path / "head.txt"
    head.write_text("\n".join((folder / "train.txt").read_text().splitlines()[:6]) + "\n")
    expected = evaluate_run(run, data=str(head), save=False, show_progress=False, **options)
    assert results["num_sentences"] == 6 and results["nll"] == pytest.approx(expected["nll"], rel=1e-6)


def test_the_help_names_the_streaming_options(capsys):
    from .helpers import run_cli

    _, out, _ = run_cli(capsys, "train", "--help")
    text = " ".join(out.split())
    assert "--streaming" in text and "--streaming-vocab-sentences" in text
    assert "first --streaming-vocab-sentences training sentences" in text


def test_overlong_sentences_are_truncated_or_dropped_with_a_warning(corpus_file, caplog):
    lengths = Counter()
    for overlong in ("truncate", "drop"):
        data = prepare_run_data(
            TrainConfig.from_dict({"data": str(corpus_file), "max_length": 4, "overlong": overlong, **STREAM})
        )
        with caplog.at_level("WARNING"):
            caplog.clear()
            batches = list(data.stream.batches(0))
        lengths[overlong] = sum(len(indices) for _, indices, _ in batches)
        assert all(split.lengths[indices].max() <= 4 + 2 for split, indices, _ in batches)  # BOS, EOS
        assert any(f"{'truncated' if overlong == 'truncate' else 'dropped'}" in m for m in caplog.messages)
    longer = sum(len(s.split()) > 4 for s in corpus_file.read_text().splitlines()[6:])
    assert lengths["truncate"] == 114 and lengths["drop"] == 114 - longer > 0
