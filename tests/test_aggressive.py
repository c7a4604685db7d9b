"""Aggressive inference network training (He et al. 2019): which parameters each update moves, the stop
rules, no change when off, exact resume, and the command line."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.training.aggressive import parameter_groups
from textvae.training.config import TrainConfig
from textvae.training.run import train
from textvae.training.setup import build_model, prepare_run_data
from textvae.training.trainer import Trainer

from .helpers import TINY_TRAIN, TINY_TRANSFORMER, run_cli, run_cli_error

ENCODERS = {
    "lstm": {},
    "gru": {"encoder_type": "gru", "posterior_mean_batchnorm": 0.6},
    "transformer": {"encoder_type": "transformer", **TINY_TRANSFORMER},
}


def make_trainer(tmp_path, corpus_file, model=None, **options) -> Trainer:
    values = {**TINY_TRAIN, "aggressive_encoder": True, **options}
    values["model"] = {**TINY_TRAIN["model"], **(model or {})}
    config = TrainConfig(data=str(corpus_file), **values)
    data = prepare_run_data(config)
    torch.manual_seed(0)
    trainer = Trainer(config, tmp_path, build_model(config, data.tokenizer), data)
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    return trainer


def snapshot(parameters) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parameters]


def changed(before, parameters) -> list[bool]:
    return [not torch.equal(old, p.detach()) for old, p in zip(before, parameters, strict=True)]


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_encoder_updates_move_only_the_encoder_and_the_decoder_update_only_the_decoder(
    tmp_path, corpus_file, encoder
):
    trainer = make_trainer(
        tmp_path, corpus_file, model={**ENCODERS[encoder], "bag_of_words_loss": 0.5}, aggressive_max_steps=4
    )
    encoder_side, decoder_side = parameter_groups(trainer.model)
    named = dict(trainer.model.named_parameters())
    assert {n for n, p in named.items() if any(p is q for q in encoder_side)} == {
        n for n in named if n.split(".")[0] in ("encoder", "posterior", "mean_norm")
    }
    assert len(encoder_side) + len(decoder_side) == len(named)
    everything = list(trainer.model.parameters())
    moves = []  # per update: (encoder parameters that moved, decoder parameters that moved)
    original_update = trainer.step.update

    def spy(*args, **kwargs):
        encoder_before, decoder_before = snapshot(encoder_side), snapshot(decoder_side)
        metrics = original_update(*args, **kwargs)
        moves.append((changed(encoder_before, encoder_side), changed(decoder_before, decoder_side)))
        return metrics

    trainer.step.update = spy
    indices = trainer.sampler.batches()[0]
    metrics = trainer._step(trainer.data.train, indices)
    assert metrics["aggressive"] and metrics["aggressive_steps"] == 4 and len(moves) == 5
    for encoder_moved, decoder_moved in moves[:4]:  # the encoder-only updates
        assert not any(decoder_moved) and sum(encoder_moved) >= len(encoder_side) - 1  # BN-VAE's mu bias
    encoder_moved, decoder_moved = moves[4]  # the decoder-only update
    assert not any(encoder_moved) and all(decoder_moved)
    # Adam's state: each parameter counts its own updates, as with He et al.'s two optimisers.
    steps = {
        id(p): int(trainer.optimizer.state[p]["step"]) for p in everything if p in trainer.optimizer.state
    }
    assert {steps[id(p)] for p in decoder_side} == {1}
    assert {steps[id(p)] for p in encoder_side if id(p) in steps} == {4}


@pytest.mark.parametrize(
    ("losses", "cap", "expected"),
    [
        ([1.0] * 15 + [2.0] * 15 + [0.5] * 100, 100, 30),  # the second block's loss rose: stop after it
        ([2.0] * 15 + [1.0] * 15 + [3.0] * 100, 100, 45),
        ([1.0] * 200, 100, 100),  # equal blocks go on (He et al. stop only when the loss rose)
        ([5.0] * 10 + [1.0] * 200, 7, 7),  # the cap
    ],
)
def test_encoder_updates_stop_when_the_loss_of_a_block_of_15_rises(
    tmp_path, corpus_file, losses, cap, expected
):
    trainer = make_trainer(tmp_path, corpus_file, aggressive_max_steps=cap)
    indices = trainer.sampler.batches()[0]
    calls = []

    def fake_update(batch, *, step, kl_weight, free_bits, frozen, draws):
        calls.append(draws)
        return {"loss": losses[len(calls) - 1]}

    trainer.step.update = fake_update
    trainer.step.random_batch = lambda step, number: (trainer.data.train, indices)  # equal token counts
    updates = trainer.step.encoder_updates(trainer.data.train, indices, step=0, kl_weight=1.0, free_bits=0.0)
    assert updates == expected
    assert len(calls) == expected and len(set(calls)) == expected  # every update has draws of its own


def test_random_batches_are_seeded_by_step_and_number(tmp_path, corpus_file):
    trainer = make_trainer(tmp_path, corpus_file)
    draws = [trainer.step.random_batch(0, number)[1] for number in range(1, 6)]
    assert draws == [trainer.step.random_batch(0, number)[1] for number in range(1, 6)]
    assert len({tuple(d) for d in draws}) > 1
    assert draws != [trainer.step.random_batch(1, number)[1] for number in range(1, 6)]


def fake_mutual_information(values: list[float], seen: dict):
    """I(x; z) as a function of the posteriors: the next value of `values` for each new model state, so that
    a resumed run gets what the uninterrupted one got at the same epoch (when its weights are the same)."""

    def mutual_information(mu, logvar, generator=None):
        key = hashlib.sha1(mu.numpy().tobytes()).hexdigest()
        if key not in seen:
            seen[key] = values[len(seen)]
        return seen[key]

    return mutual_information


def records(run, split="train"):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def aggressive_config(corpus_file, **options) -> TrainConfig:
    values = {
        **TINY_TRAIN,
        "epochs": 4,
        "log_steps": 1,
        "aggressive_encoder": True,
        "aggressive_max_steps": 16,
    }
    return TrainConfig(data=str(corpus_file), **{**values, **options})


@pytest.mark.parametrize(("values", "aggressive_epochs"), [([0.5, 0.4], 2), ([0.5, 0.5, 0.6, 0.7], 4)])
def test_aggressive_training_ends_after_the_first_epoch_whose_mi_falls(
    tmp_path, corpus_file, monkeypatch, caplog, values, aggressive_epochs
):
    monkeypatch.setattr("textvae.training.validation.mutual_information", fake_mutual_information(values, {}))
    with caplog.at_level("INFO", logger="textvae.training.aggressive"):
        run = train(aggressive_config(corpus_file), output_dir=tmp_path / "run")
    train_records, validation = records(run), records(run, "validation")
    assert all(r["aggressive"] == (r["epoch"] <= aggressive_epochs) for r in train_records)
    assert all(r["aggressive_steps"] >= 1 for r in train_records if r["aggressive"])
    assert all(r["aggressive_steps"] == 0 for r in train_records if not r["aggressive"])
    assert [r.get("mi") for r in validation] == (values + [None] * 4)[:4]
    ended = [m for m in caplog.messages if "aggressive training ends" in m]
    assert len(ended) == (aggressive_epochs < 4)


def test_off_trains_exactly_as_without_the_option(tmp_path, corpus_file):
    plain = train(TrainConfig(data=str(corpus_file), **TINY_TRAIN), output_dir=tmp_path / "plain")
    off = TrainConfig(data=str(corpus_file), aggressive_encoder=False, aggressive_max_steps=3, **TINY_TRAIN)
    run = train(off, output_dir=tmp_path / "off")
    first, second = load_file(str(plain / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not any("aggressive" in r for r in records(run))
    state = json.loads((checkpoint_folders(run)[-1] / "trainer_state.json").read_text())
    assert not any(key.startswith("aggressive") for key in state)


def test_a_resumed_aggressive_run_equals_the_uninterrupted_one(tmp_path, corpus_file, monkeypatch):
    # MI 0.5 then 0.4: the phase ends after epoch 2, which the stop at step 12 cuts in two; the resumed
    # run must know epoch 1's MI to end it there too.
    seen = {}
    monkeypatch.setattr(
        "textvae.training.validation.mutual_information", fake_mutual_information([0.5, 0.4], seen)
    )
    config = aggressive_config(corpus_file, word_dropout=0.2)
    whole = train(config, output_dir=tmp_path / "whole")
    stopped = train(TrainConfig(**{**config.to_dict(), "max_steps": 12}), output_dir=tmp_path / "split")
    state = json.loads((checkpoint_folders(stopped)[-1] / "trainer_state.json").read_text())
    assert (state["step"], state["aggressive"], state["aggressive_previous_mi"]) == (12, True, 0.5)
    resumed = train(None, resume=stopped, overrides={"max_steps": None})
    expected, got = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert records(whole) == records(resumed) and len(seen) == 2
    assert {r["epoch"] for r in records(whole) if r["aggressive"]} == {1, 2}


def test_train_command_takes_the_options(tmp_path, capsys, corpus_file):
    run = tmp_path / "run"
    args = ["train", "--data", corpus_file, "-o", run, "--epochs", 1, "--batch-size", 16, "--no-progress"]
    args += [
        "--hidden-size",
        8,
        "--latent-dim",
        3,
        "--no-plot-each-epoch",
        "--no-fit-prior",
        "--log-steps",
        1,
    ]
    code, _, err = run_cli(capsys, *args, "--aggressive-encoder", "--aggressive-max-steps", 3)
    assert code == 0, err
    assert json.loads((run / "train_config.json").read_text())["aggressive_max_steps"] == 3
    assert [r["aggressive_steps"] for r in records(run)][:1] == [3]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--aggressive-max-steps", "0"], "aggressive_max_steps must be positive, got 0"),
        (["--aggressive-max-steps", "many"], "invalid int value"),
        (
            ["--aggressive-encoder", "--streaming"],
            "aggressive_encoder .* drop streaming or aggressive_encoder",
        ),
        (["--aggressive-encoder", "--latent-dim", "0"], "a language model .* has none"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(tmp_path, capsys, corpus_file, flags, message):
    args = ["train", "--data", corpus_file, "-o", tmp_path / "run", "--no-progress", *flags]
    assert run_cli_error(capsys, args, message) == 2
