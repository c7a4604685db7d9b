"""The defaults serve reconstruction and interpolation: a target rate and a model built to read z."""

from __future__ import annotations

import json

import pytest

from textvae import TextVAEConfig
from textvae.training.config import DEFAULT_TARGET_KL, TrainConfig
from textvae.training.run import train

from .helpers import QUIET_TRAIN, make_sentences, run_cli, run_cli_error


@pytest.mark.parametrize(
    "given, schedule, target",
    [
        ({}, "linear", DEFAULT_TARGET_KL),  # the default: the controller holds the KL
        ({"target_kl": 25}, "linear", 25.0),
        ({"kl_schedule": "cyclical"}, "cyclical", None),  # a paper's schedule, alone
        ({"kl_schedule": "linear", "target_kl": 25}, "linear", 25.0),  # both given: the target sets it
        ({"target_kl": 0}, "linear", None),  # 0: off, the linear schedule
        ({"model": {"latent_dim": 0}}, "linear", None),  # a language model has no KL
    ],
)
def test_the_rate_defaults_are_resolved_when_the_config_is_made(given, schedule, target):
    config = TrainConfig(data="x", **given)
    assert (config.kl_schedule, config.target_kl) == (schedule, target)
    # Saved and read back (a resumed run), the values stay what they were, whatever the defaults become.
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert (again.kl_schedule, again.target_kl) == (schedule, target)


def test_a_run_saved_before_the_target_default_keeps_its_schedule():
    old = {"data": "ptb", "kl_schedule": "linear", "target_kl": None}  # as train_config.json held it
    assert TrainConfig.from_dict(old).target_kl is None


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_negative_or_non_finite_target_is_refused(bad):
    with pytest.raises(ValueError, match="target_kl"):
        TrainConfig(data="x", target_kl=bad)


@pytest.mark.parametrize(
    "options, bidirectional, z_to_output, bag_of_words",
    [
        ({}, True, True, 1.0),
        ({"encoder_type": "gru", "decoder_type": "gru"}, True, True, 1.0),
        ({"encoder_type": "transformer", "decoder_type": "transformer"}, False, False, 1.0),
        ({"latent_dim": 0}, False, False, 0.0),
        ({"bidirectional_encoder": False, "z_to_output": False, "bag_of_words_loss": 0.0}, False, False, 0.0),
        ({"bag_of_words_loss": 0.5}, True, True, 0.5),
    ],
)
def test_the_model_defaults_read_z_and_config_json_holds_them(
    tmp_path, options, bidirectional, z_to_output, bag_of_words
):
    config = TextVAEConfig(**options)
    assert (config.bidirectional_encoder, config.z_to_output, config.bag_of_words_loss) == (
        bidirectional,
        z_to_output,
        bag_of_words,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["bidirectional_encoder"], saved["z_to_output"], saved["bag_of_words_loss"]) == (
        bidirectional,
        z_to_output,
        bag_of_words,
    )
    assert TextVAEConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_textvae_train_with_no_options_trains_at_the_target_with_the_reading_model(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(60, seed=4)) + "\n")
    tiny = ["--embedding-size", 8, "--hidden-size", 8, "--latent-dim", 4, "--epochs", 1, "--log-steps", 1]
    tiny.append("--no-progress")
    code, _, err = run_cli(capsys, "train", "--data", corpus, "-o", tmp_path / "run", *tiny, "--no-fit-prior")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (saved["target_kl"], saved["kl_schedule"]) == (DEFAULT_TARGET_KL, "linear")
    model = json.loads((tmp_path / "run" / "config.json").read_text())
    assert model["bidirectional_encoder"] and model["z_to_output"] and model["bag_of_words_loss"] == 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {record["kl_target"] for record in records if record["split"] == "train"} == {DEFAULT_TARGET_KL}
    assert all("bow" in record for record in records if record["split"] == "train")


def test_the_papers_recipe_is_one_set_of_flags_away(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(60, seed=4)) + "\n")
    tiny = ["--embedding-size", 8, "--hidden-size", 8, "--latent-dim", 4, "--epochs", 1, "--log-steps", 1]
    tiny.append("--no-progress")
    paper = [
        "--kl-schedule",
        "linear",
        "--no-bidirectional-encoder",
        "--bag-of-words-loss",
        0,
        "--no-z-to-output",
    ]
    code, _, err = run_cli(
        capsys, "train", "--data", corpus, "-o", tmp_path / "run", *tiny, *paper, "--no-fit-prior"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["target_kl"] is None
    model = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        not model["bidirectional_encoder"] and not model["z_to_output"] and model["bag_of_words_loss"] == 0.0
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(
        "kl_target" in record or "bow" in record for record in records if record["split"] == "train"
    )


def test_target_kl_zero_trains_without_the_controller_and_negative_is_one_line(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(60, seed=4)) + "\n")
    config = TrainConfig(
        data=str(corpus), target_kl=0, epochs=1, model={"embedding_size": 8, "hidden_size": 8}, **QUIET_TRAIN
    )
    run = train(config, output_dir=tmp_path / "run")
    assert json.loads((run / "history.json").read_text())[-1].get("kl_target") is None
    bad = ["train", "--data", corpus, "-o", tmp_path / "bad", "--target-kl", "-3"]
    assert run_cli_error(capsys, bad, "target_kl must be positive") == 2
    assert not (tmp_path / "bad").exists()
