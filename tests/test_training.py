"""Training: KL schedules, options, the loop, best model, resume equal to an uninterrupted run, safety."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.run_files import run_lock
from textvae.training.config import TrainConfig
from textvae.training.kl_weight import make_kl_weight
from textvae.training.run import train

from .helpers import PTB_DIR, TINY_TRAIN


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def kl_weight(config: TrainConfig, step: int, total_steps: int) -> float:
    """The weight the config's KL weight gives at `step` of `total_steps` (chosen once, as training does)."""
    return make_kl_weight(config, total_steps).weight(step)


def test_linear_schedule():
    config = TrainConfig(kl_schedule="linear", kl_start=0.2, kl_warmup_steps=10, beta=0.8)
    assert [round(kl_weight(config, s, 100), 3) for s in (0, 5, 10, 50)] == [0.2, 0.5, 0.8, 0.8]


def test_logistic_schedule_is_half_beta_at_the_midpoint_and_rises():
    config = TrainConfig(kl_schedule="logistic", kl_warmup_steps=1000, kl_logistic_slope=0.01)
    values = [kl_weight(config, s, 0) for s in (0, 500, 1000, 5000)]
    assert values[1] == pytest.approx(0.5) and values == sorted(values) and values[-1] == pytest.approx(1.0)


def test_cyclical_schedule_follows_fu_et_al():
    # 2 cycles over 100 steps, rising over the first half of each cycle (Fu et al. 2019).
    config = TrainConfig(kl_schedule="cyclical", kl_cycles=2, kl_cycle_ratio=0.5)
    assert [kl_weight(config, s, 100) for s in (0, 10, 25, 40, 50, 60, 99)] == [
        0.0,
        0.4,
        1.0,
        1.0,
        0.0,
        0.4,
        1.0,
    ]


def test_constant_schedule():
    assert kl_weight(TrainConfig(kl_schedule="constant", beta=0.3), 7, 10) == 0.3


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(kl_schedule="cosine"), "kl_schedule"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-2), "batch_size"),
        (dict(word_dropout=1.0), "word_dropout"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(free_bits=-1.0), "free_bits"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(device="tpu"), "device"),
        (dict(init_decoder_from="runs/lm", pretrain_epochs=1), "init_decoder_from and pretrain_epochs"),
    ],
)
def test_bad_option_values_are_named(bad, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**bad)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(learning_rate=float("inf")), "learning_rate must be a finite number"),
        (dict(beta=float("nan")), "beta must be a finite number"),
        (dict(free_bits=float("nan")), "free_bits must be a finite number"),
        (dict(save_minutes=float("inf")), "save_minutes must be a finite number"),
        (dict(epochs="three"), "epochs must be an integer, got 'three'"),
        (dict(epochs=2.5), "epochs must be an integer"),
        (dict(progress="yes"), "progress must be true or false"),
        (dict(data=3), "data must be a corpus name or a mapping of data options"),
        (dict(model={"hidden_size": "big"}), "hidden_size must be an integer"),
        (
            dict(model={"decoder_input_dropout": float("nan")}),
            "decoder_input_dropout must be a finite number",
        ),
    ],
)
def test_values_of_the_wrong_type_or_not_finite_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_a_loss_that_stops_being_finite_stops_training_and_saves_nothing_non_finite(
    tmp_path, corpus_file, monkeypatch
):
    from textvae.models.modeling import TextVAEModel

    original = TextVAEModel.forward
    calls = [0]

    def forward_that_diverges(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls[0] += 1
        if self.training and calls[0] > 12:  # epoch 2 (8 steps an epoch) goes wrong
            output.rec_loss = output.rec_loss * float("nan")
        return output

    monkeypatch.setattr(TextVAEModel, "forward", forward_that_diverges)
    with pytest.raises(ValueError, match=r"step 13 \(epoch 2\): the training loss became nan"):
        train(TrainConfig(data=str(corpus_file), **TINY_TRAIN), output_dir=tmp_path / "run")
    run = tmp_path / "run"
    for folder in [run, *checkpoint_folders(run)]:
        assert all(torch.isfinite(tensor).all() for tensor in weights(folder).values())
    history = json.loads((run / "history.json").read_text())  # strict JSON: no NaN in it
    assert len(history) == 1


def test_config_files(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nmodel:\n  hidden_size: 64\n", encoding="utf-8")
    config = TrainConfig.from_file(tmp_path / "c.yaml")
    assert config.epochs == 3 and config.model == {"hidden_size": 64}
    config.save(tmp_path / "c.json")
    assert TrainConfig.from_file(tmp_path / "c.json") == config
    (tmp_path / "bad.yaml").write_text("epochz: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown training option.*epochz"):
        TrainConfig.from_file(tmp_path / "bad.yaml")


def test_training_lowers_the_loss_and_writes_a_model_folder(trained_run):
    files = {path.name for path in trained_run.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_config.json",
        "history.json",
        "metrics.jsonl",
    } <= files
    assert not any(name.startswith(".tmp") for name in files)
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history) == 2 and history[1]["neg_elbo"] < history[0]["neg_elbo"]
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "validation"} == {record["split"] for record in records}
    assert all(set(record) >= {"loss", "kl", "kl_weight"} for record in records if record["split"] == "train")


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), seed=5, word_dropout=0.2, **TINY_TRAIN)
    whole = train(config, output_dir=tmp_path / "whole")
    steps = json.loads((checkpoint_folders(whole)[-1] / "trainer_state.json").read_text())["step"]
    stopped = train(
        TrainConfig(**{**config.to_dict(), "max_steps": steps // 2 + 1}), output_dir=tmp_path / "split"
    )
    assert (
        json.loads((checkpoint_folders(stopped)[-1] / "trainer_state.json").read_text())["step"]
        == steps // 2 + 1
    )
    resumed = train(None, resume=stopped)
    final_whole, final_resumed = (
        weights(checkpoint_folders(whole)[-1]),
        weights(checkpoint_folders(resumed)[-1]),
    )
    assert final_whole.keys() == final_resumed.keys()
    assert all(torch.equal(final_whole[key], final_resumed[key]) for key in final_whole)

    def history(run):  # wall-clock seconds aside, every figure must match
        return [
            {k: v for k, v in record.items() if k != "seconds"}
            for record in json.loads((run / "history.json").read_text())
        ]

    assert history(whole) == history(resumed)


def test_language_model_trains(tmp_path, corpus_file):
    options = {**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "latent_dim": 0}, "epochs": 1, "log_steps": 1}
    run = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / "lm")
    record = json.loads((run / "history.json").read_text())[0]
    assert record["kl"] == 0.0 and "au" not in record
    # No KL term, so no KL weight: the log does not show a schedule that has no effect.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["kl_weight"] for r in records if r["split"] == "train"} == {0.0}


def test_existing_folder_is_never_overwritten_silently(tmp_path, corpus_file):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not lose me")
    config = TrainConfig(data=str(corpus_file), **TINY_TRAIN)
    with pytest.raises(ValueError, match="not empty"):
        train(config, output_dir=precious)
    with pytest.raises(ValueError, match="thesis.tex was not written by textvae"):
        train(config, output_dir=precious, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "do not lose me"


def test_overwrite_removes_only_what_textvae_wrote(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "epochs": 1})
    run = train(config, output_dir=tmp_path / "run")
    # A user's file beside a textvae file of the same kind, and a note added to the earlier run.
    (run / "thesis.tex").write_text("chapter 1")
    with pytest.raises(ValueError, match="thesis.tex was not written by textvae"):
        train(config, output_dir=run, overwrite=True)
    assert (run / "thesis.tex").read_text() == "chapter 1" and (run / "model.safetensors").is_file()
    (run / "thesis.tex").unlink()
    (run / ".tmp-checkpoint-killed").mkdir()  # left by a kill: textvae's own
    (run / "eval-validation-k5.json").write_text("{}")
    train(config, output_dir=run, overwrite=True)
    assert not (run / ".tmp-checkpoint-killed").exists() and not (run / "eval-validation-k5.json").exists()
    assert (run / "model.safetensors").is_file()


def test_overwrite_refuses_a_model_folder_that_training_did_not_start(tmp_path, corpus_file):
    other = tmp_path / "hf_model"
    other.mkdir()
    (other / "config.json").write_text("{}")  # another library's model folder
    with pytest.raises(ValueError, match="not a textvae run folder"):
        train(TrainConfig(data=str(corpus_file), **TINY_TRAIN), output_dir=other, overwrite=True)
    assert (other / "config.json").read_text() == "{}"


def test_output_dir_that_is_a_file_is_one_clear_error(tmp_path, corpus_file):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    config = TrainConfig(data=str(corpus_file), **TINY_TRAIN)
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        train(config, output_dir=existing)
    with pytest.raises(ValueError, match="cannot create the output folder"):
        train(config, output_dir=existing / "run")
    with pytest.raises(ValueError, match="nothing to resume.*not a run folder"):
        train(None, resume=existing)
    assert existing.read_text() == "mine"


def test_bad_data_leaves_the_output_folder_alone(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        train(TrainConfig(data=str(tmp_path / "missing.txt"), **TINY_TRAIN), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_checkpoint_and_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="nothing to resume.*start it again with --overwrite"):
        train(None, resume=tmp_path)


def test_resuming_a_complete_run_says_so_and_how_to_train_longer(tmp_path, corpus_file):
    run = train(TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "epochs": 1}), output_dir=tmp_path / "r")
    before = weights(run)
    with pytest.raises(ValueError, match=r"is complete \(it trained 1 epochs\).*--epochs N for an N above 1"):
        train(None, resume=run)
    assert all(torch.equal(before[key], weights(run)[key]) for key in before)
    train(None, resume=run, overrides={"epochs": 2})
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_unknown_model_option_is_named(tmp_path, corpus_file):
    with pytest.raises(ValueError, match="hiden_size"):
        train(TrainConfig(data=str(corpus_file), model={"hiden_size": 3}), output_dir=tmp_path / "r")


def test_autoencoder_pretraining_then_decoder_reset(tmp_path, corpus_file):
    """Li et al. (2019): KL weight 0 for the first epochs, then a fresh decoder and the VAE objective."""
    options = {**TINY_TRAIN, "epochs": 3, "pretrain_epochs": 1, "kl_schedule": "constant", "log_steps": 1}
    run = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert {r["kl_weight"] for r in train_records if r["epoch"] == 1} == {0.0}
    assert {r["kl_weight"] for r in train_records if r["epoch"] > 1} == {1.0}
    # The autoencoder's KL is free to grow; once the VAE starts, the fresh decoder makes rec jump back up.
    epoch_one_last = [r for r in train_records if r["epoch"] == 1][-1]["rec"]
    epoch_two_first = [r for r in train_records if r["epoch"] == 2][0]["rec"]
    assert epoch_two_first > epoch_one_last


def test_pretraining_run_resumes_exactly(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "epochs": 3, "pretrain_epochs": 1})
    whole = train(config, output_dir=tmp_path / "whole")
    steps_per_epoch = json.loads((whole / "history.json").read_text())[0]["step"]
    stopped = train(
        TrainConfig(**{**config.to_dict(), "max_steps": steps_per_epoch + 2}), output_dir=tmp_path / "s"
    )
    resumed = train(None, resume=stopped)
    final_whole, final_resumed = (
        weights(checkpoint_folders(whole)[-1]),
        weights(checkpoint_folders(resumed)[-1]),
    )
    assert all(torch.equal(final_whole[key], final_resumed[key]) for key in final_whole)


def test_pretrain_epochs_must_leave_room_for_the_vae():
    with pytest.raises(ValueError, match="pretrain_epochs"):
        TrainConfig(epochs=2, pretrain_epochs=2)


def test_vae_starts_from_a_trained_language_model(tmp_path, corpus_file):
    lm_options = {**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "latent_dim": 0}, "epochs": 1}
    lm = train(TrainConfig(data=str(corpus_file), **lm_options), output_dir=tmp_path / "lm")
    # A learning rate of 1e-9 leaves the starting weights in place (Adam moves each by about lr a step).
    options = {**TINY_TRAIN, "epochs": 1, "learning_rate": 1e-9}
    vae = train(
        TrainConfig(data=str(corpus_file), init_decoder_from=str(lm), **options), output_dir=tmp_path / "vae"
    )
    assert (vae / "tokenizer.json").read_text() == (lm / "tokenizer.json").read_text()
    assert json.loads((vae / "train_config.json").read_text())["init_decoder_from"] == str(lm)
    lm_weights, vae_weights = weights(lm), weights(vae)
    embedding_size = TINY_TRAIN["model"]["embedding_size"]
    for name, value in vae_weights.items():
        if name.startswith("decoder.latent_to_"):
            assert float(value.abs().max()) < 1e-6
        elif name == "decoder.rnn.weight_ih_l0":  # word columns from the LM, then z columns from zero
            torch.testing.assert_close(value[:, :embedding_size], lm_weights[name], atol=1e-6, rtol=0)
            assert float(value[:, embedding_size:].abs().max()) < 1e-6
        elif name.startswith("decoder."):
            torch.testing.assert_close(value, lm_weights[name], atol=1e-6, rtol=0)
    assert any(name.startswith("encoder.") for name in vae_weights)


def test_missing_or_mismatched_source_model_leaves_the_output_folder_alone(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), init_decoder_from=str(tmp_path / "nowhere"), **TINY_TRAIN)
    with pytest.raises(ValueError, match="model folder not found"):
        train(config, output_dir=tmp_path / "run")
    wide = train(
        TrainConfig(
            data=str(corpus_file),
            **{**TINY_TRAIN, "epochs": 1, "model": {"hidden_size": 32, "latent_dim": 0}},
        ),
        output_dir=tmp_path / "wide",
    )
    with pytest.raises(ValueError, match="decoders do not match"):
        train(
            TrainConfig(**{**config.to_dict(), "init_decoder_from": str(wide)}), output_dir=tmp_path / "run"
        )
    assert not (tmp_path / "run").exists()


def test_a_resumed_epoch_counts_the_time_before_the_stop(tmp_path, corpus_file, monkeypatch):
    from textvae.training import trainer

    ticks = iter(range(0, 10_000, 10))  # a clock that moves 10 s each time it is read
    monkeypatch.setattr(trainer, "_clock", lambda: float(next(ticks)))
    config = TrainConfig(data=str(corpus_file), save_minutes=0, **{**TINY_TRAIN, "epochs": 1})
    whole = train(config, output_dir=tmp_path / "whole")
    assert json.loads((whole / "history.json").read_text())[0]["seconds"] == 10.0  # read at start and end
    stopped = train(TrainConfig(**{**config.to_dict(), "max_steps": 2}), output_dir=tmp_path / "split")
    state = json.loads((checkpoint_folders(stopped)[-1] / "trainer_state.json").read_text())
    assert state["batch_in_epoch"] == 2 and state["epoch_seconds"] == 10.0
    resumed = train(None, resume=stopped)
    # 10 s before the stop and 10 s after it: the epoch took 20 s in all, not the 10 s after the resume.
    assert json.loads((resumed / "history.json").read_text())[0]["seconds"] == 20.0
    assert (
        json.loads((checkpoint_folders(resumed)[-1] / "trainer_state.json").read_text())["epoch_seconds"] == 0
    )


def test_save_minutes_writes_checkpoints_inside_an_epoch(tmp_path, corpus_file, monkeypatch):
    from textvae.training import trainer

    now = [0.0]
    monkeypatch.setattr(trainer, "_clock", lambda: now[0])
    original_step = trainer.Trainer._step

    def step_taking_one_minute(self, split, indices):
        now[0] += 60.0
        return original_step(self, split, indices)

    monkeypatch.setattr(trainer.Trainer, "_step", step_taking_one_minute)
    config = TrainConfig(
        data=str(corpus_file), save_minutes=3, keep_checkpoints=10, **{**TINY_TRAIN, "epochs": 1}
    )
    run = train(config, output_dir=tmp_path / "run")  # 114 sentences in batches of 16: 8 steps
    steps = [int(folder.name.split("-")[1]) for folder in checkpoint_folders(run)]
    assert steps == [3, 6, 8]  # every 3 minutes of training, and at the end of the epoch


def test_loaded_weights_get_aligned_memory_of_their_own(trained_run):
    # Parameters read from safetensors sit at unaligned offsets of the file's mapping; CPU kernels take
    # other code paths for them, which made resumed runs drift (see the PTB test below).
    from textvae.checkpointing import load_model

    model = load_model(trained_run)
    assert all(tensor.data_ptr() % 64 == 0 for tensor in [*model.parameters(), *model.buffers()])


@pytest.mark.skipif(not (PTB_DIR / "ptb" / "train.txt").is_file(), reason="needs ../shared/data/ptb")
def test_resume_is_bit_exact_on_real_text_where_it_used_to_drift(tmp_path):
    # 400 PTB sentences, 64/64, latent 16, checkpoints every 10 steps, stopped at step 10 of 40: before
    # resumed models got memory of their own, the weights ended 1.2e-6 away from an uninterrupted run.
    corpus = tmp_path / "ptb400.txt"
    lines = (PTB_DIR / "ptb" / "train.txt").read_text(encoding="utf-8").splitlines()[:400]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = dict(
        data=str(corpus), epochs=50, batch_size=32, progress=False, seed=7, save_steps=10,
        model=dict(embedding_size=64, hidden_size=64, latent_dim=16),
    )  # fmt: skip
    whole = train(TrainConfig(**options, max_steps=40), output_dir=tmp_path / "whole")
    stopped = train(TrainConfig(**options, max_steps=10), output_dir=tmp_path / "stopped")
    resumed = train(None, resume=stopped, overrides={"max_steps": 40})
    expected, got = weights(whole / "checkpoint-40"), weights(resumed / "checkpoint-40")
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_a_second_trainer_on_the_same_run_is_refused_before_it_touches_anything(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "epochs": 1})
    run = train(config, output_dir=tmp_path / "run")

    def files():  # the lock file aside: the stand-in for the other trainer below writes its pid there
        return {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.name != ".lock"}

    before = files()
    with run_lock(run):  # another process training this run
        for attempt in (dict(resume=run, overrides={"epochs": 2}), dict(output_dir=run, overwrite=True)):
            with pytest.raises(ValueError, match="being trained by another process"):
                train(config if "output_dir" in attempt else None, **attempt)
    assert files() == before
    # A folder that is refused as a run leaves no lock file behind.
    other = tmp_path / "hf_model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a textvae run folder"):
        train(config, output_dir=other, overwrite=True)
    assert [path.name for path in other.iterdir()] == ["config.json"]


def test_logged_train_figures_are_means_over_the_log_interval(tmp_path, corpus_file):
    def train_records(log_steps: int, name: str) -> dict:
        # 114 training sentences (120 less the 5% validation) in 6 batches of 19: every batch is full.
        options = {**TINY_TRAIN, "epochs": 1, "log_steps": log_steps, "batch_size": 19}
        run = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / name)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in records if r["split"] == "train"}

    every_step, every_third = train_records(1, "each"), train_records(3, "third")
    assert sorted(every_third) == [3, 6]
    for step in (3, 6):  # equal batches: the mean over sentences is the mean over steps
        for key in ("rec", "kl", "loss"):
            mean = sum(every_step[s][key] for s in range(step - 2, step + 1)) / 3
            assert every_third[step][key] == pytest.approx(mean, rel=1e-6)
        assert every_third[step]["kl_weight"] == every_step[step]["kl_weight"]  # the step's own


def test_a_run_stopped_before_its_first_validation_holds_its_latest_weights(tmp_path, corpus_file):
    options = {**TINY_TRAIN, "max_steps": 3}
    run = train(TrainConfig(data=str(corpus_file), **options), output_dir=tmp_path / "run")
    saved = load_file(str(run / "model.safetensors"))
    latest = load_file(str(checkpoint_folders(run)[-1] / "model.safetensors"))
    assert saved.keys() == latest.keys() and all(torch.equal(saved[k], latest[k]) for k in saved)


def test_max_minutes_stops_at_a_checkpoint_and_resume_runs_on_to_the_uninterrupted_weights(
    tmp_path, corpus_file, monkeypatch
):
    import textvae.training.trainer as trainer_module

    config = TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "epochs": 2, "save_minutes": 0})
    whole = train(config, output_dir=tmp_path / "whole")
    seconds = iter(range(0, 10**6, 20))  # every reading of the trainer's clock: 20 s later
    monkeypatch.setattr(trainer_module, "_clock", lambda: next(seconds))
    timed = TrainConfig(**{**config.to_dict(), "max_minutes": 1.0})
    stopped = train(timed, output_dir=tmp_path / "stopped")
    state = json.loads((checkpoint_folders(stopped)[-1] / "trainer_state.json").read_text())
    assert not state["finished"] and 0 < state["step"] < 10  # a few steps in: 1 minute of 20 s readings
    # The limit belongs to that invocation, not to the run: a plain resume trains on to the end.
    assert json.loads((stopped / "train_config.json").read_text())["max_minutes"] is None
    monkeypatch.undo()
    resumed = train(None, resume=stopped)
    last = checkpoint_folders(resumed)[-1]
    assert json.loads((last / "trainer_state.json").read_text())["finished"]
    expected, got = weights(checkpoint_folders(whole)[-1]), weights(last)
    assert last.name == checkpoint_folders(whole)[-1].name
    assert all(torch.equal(expected[key], got[key]) for key in expected)


@pytest.mark.parametrize("value", [0, -1.0])
def test_max_minutes_must_be_positive(value):
    with pytest.raises(ValueError, match="max_minutes must be positive"):
        TrainConfig(data="x.txt", max_minutes=value)
