"""Denoising input for the encoder (Shen et al. 2020): each corruption, its draws, and training with it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.data.noise import EncoderNoise, apply_noise, draw_noise
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN, random_batch, run_cli_error

BLANK, PAD, SPECIALS = 3, 0, (0, 1, 2, 3)


def noisy(noise: EncoderNoise, seed: int = 0, batch_size: int = 6, length: int = 12):
    input_ids, mask = random_batch(batch_size, length, vocab_size=50, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    draws = draw_noise(noise, batch_size, length, 50, generator, "cpu")
    return input_ids, mask, *apply_noise(input_ids, mask, noise, draws, BLANK, PAD, SPECIALS)


def words_of(ids, mask):
    """Each row's words: the real tokens between BOS and EOS."""
    return [row[1 : int(m.sum()) - 1].tolist() for row, m in zip(ids, mask, strict=True)]


def test_every_kind_at_probability_zero_leaves_the_input_unchanged():
    ids, mask, new_ids, new_mask = noisy(EncoderNoise(0.0, 0.0, 0.0, 0))
    assert torch.equal(ids, new_ids) and torch.equal(mask, new_mask)
    assert not EncoderNoise().active


def test_drop_at_one_leaves_bos_and_eos_only():
    ids, mask, new_ids, new_mask = noisy(EncoderNoise(drop=1.0))
    assert new_mask.sum(dim=1).tolist() == [2] * ids.size(0)
    assert new_ids[:, :2].tolist() == [[1, 2]] * ids.size(0)
    assert (new_ids[:, 2:] == PAD).all()


def test_drop_keeps_the_order_of_the_words_it_keeps():
    ids, mask, new_ids, new_mask = noisy(EncoderNoise(drop=0.5), seed=3)
    for kept, whole in zip(words_of(new_ids, new_mask), words_of(ids, mask), strict=True):
        position = 0
        for word in kept:  # a subsequence of the original words
            position = whole.index(word, position) + 1
    assert (new_mask.sum(dim=1) <= mask.sum(dim=1)).all() and (new_mask.sum() < mask.sum())
    assert (new_ids[new_mask == 0] == PAD).all()


def test_blank_at_one_blanks_every_word_and_nothing_else():
    ids, mask, new_ids, new_mask = noisy(EncoderNoise(blank=1.0))
    assert torch.equal(mask, new_mask)
    assert all(set(words) == {BLANK} for words in words_of(new_ids, new_mask) if words)
    assert new_ids[:, 0].tolist() == ids[:, 0].tolist()  # BOS
    ends = mask.sum(dim=1) - 1
    assert torch.equal(new_ids.gather(1, ends[:, None]), ids.gather(1, ends[:, None]))  # EOS


def test_substitute_at_one_replaces_words_by_words_never_by_special_tokens():
    ids, mask, new_ids, new_mask = noisy(EncoderNoise(substitute=1.0), seed=1)
    changed = (new_ids != ids) & mask.bool()
    assert changed.sum() > 0.8 * sum(len(w) for w in words_of(ids, mask))  # a draw may equal the word
    assert all(word not in SPECIALS for words in words_of(new_ids, new_mask) for word in words)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_shuffle_moves_no_word_more_than_k_places(k):
    lengths = [14, 9, 3, 2]  # tokens, BOS and EOS included: the last two have one word and none
    ids = torch.zeros(len(lengths), 14, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):  # distinct words 10, 11, ...: each one's place can be followed
        ids[row, :length] = torch.tensor([1, *range(10, 10 + length - 2), 2])
        mask[row, :length] = 1
    moved = False
    for seed in range(20):
        draws = draw_noise(
            EncoderNoise(shuffle=k), len(lengths), 14, 50, torch.Generator().manual_seed(seed), "cpu"
        )
        new_ids, new_mask = apply_noise(ids, mask, EncoderNoise(shuffle=k), draws, BLANK, PAD, SPECIALS)
        assert torch.equal(mask, new_mask)
        for before, after in zip(words_of(ids, mask), words_of(new_ids, new_mask), strict=True):
            assert sorted(before) == sorted(after)
            assert all(abs(after.index(word) - place) <= k for place, word in enumerate(before))
            moved = moved or before != after
        assert torch.equal(new_ids[:, 0], ids[:, 0]) and (new_ids[mask == 0] == PAD).all()
        ends = mask.sum(dim=1) - 1
        assert (new_ids.gather(1, ends[:, None]) == 2).all()  # EOS stays last
    assert moved


def test_the_same_draws_give_the_same_noise():
    noise = EncoderNoise(0.2, 0.1, 0.1, 2)
    first, second = noisy(noise, seed=7), noisy(noise, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[2], noisy(noise, seed=8)[2])


@pytest.mark.parametrize(
    "value, message",
    [
        ("1.5,0,0,0", r"drop must be in \[0, 1\]"),
        ("0,-0.1,0,0", r"blank must be in \[0, 1\]"),
        ("nan,0,0,0", "drop must be a finite number"),
        ("0,0,inf,0", "substitute must be a finite number"),
        ("0,0,0,-1", "k must be an integer >= 0"),
        ("0,0,0,1.5", "k must be an integer"),
        ("0.3,0,0", "four comma-separated values"),
    ],
)
def test_bad_values_are_refused_with_the_value_named(value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(encoder_noise=value)


def test_bad_values_are_one_line_and_exit_2_on_the_command_line(capsys, corpus_file, tmp_path):
    args = ["train", "--data", corpus_file, "-o", tmp_path / "r", "--encoder-noise", "2,0,0,0"]
    assert run_cli_error(capsys, args, r"encoder_noise drop must be in \[0, 1\]") == 2
    assert not (tmp_path / "r").exists()


def test_a_language_model_has_no_encoder_to_corrupt():
    with pytest.raises(ValueError, match="language model"):
        TrainConfig(encoder_noise="0.3,0,0,0", model={"latent_dim": 0})


NOISY = {**TINY_TRAIN, "encoder_noise": "0.3,0.1,0.1,2"}


@pytest.mark.parametrize("encoder_type", ["lstm", "gru", "transformer"])
def test_training_with_noise_differs_from_training_without_and_repeats_under_a_seed(
    tmp_path, corpus_file, encoder_type
):
    model = {**TINY_TRAIN["model"], "encoder_type": encoder_type}
    if encoder_type == "transformer":
        model.update(num_attention_heads=2, intermediate_size=16, max_position_embeddings=32)
    options = {**NOISY, "epochs": 1, "model": model}
    first = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / "a")
    again = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / "b")
    clean = train(
        TrainConfig(data=str(corpus_file), **{**options, "encoder_noise": "0,0,0,0"}),
        output_dir=tmp_path / "c",
    )
    a, b, c = (load_file(str(run / "model.safetensors")) for run in (first, again, clean))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_resume_with_noise_reaches_the_weights_of_the_uninterrupted_run(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), seed=3, **NOISY)
    whole = train(config, output_dir=tmp_path / "whole")
    steps = json.loads((checkpoint_folders(whole)[-1] / "trainer_state.json").read_text())["step"]
    stopped = train(
        TrainConfig(**{**config.to_dict(), "max_steps": steps // 2 + 1}), output_dir=tmp_path / "s"
    )
    resumed = train(None, resume=stopped)
    final_whole = load_file(str(checkpoint_folders(whole)[-1] / "model.safetensors"))
    final_resumed = load_file(str(checkpoint_folders(resumed)[-1] / "model.safetensors"))
    assert all(torch.equal(final_whole[key], final_resumed[key]) for key in final_whole)
