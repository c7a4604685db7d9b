"""Target rate: the KL controller's arithmetic, its effect on a tiny model, and exact resume with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.cli import main
from textvae.training.config import TrainConfig
from textvae.training.kl_weight import KLController
from textvae.training.run import train

from .helpers import make_sentences


def test_one_update_matches_controlvae_by_hand():
    controller = KLController(target=10.0, kp=0.01, ki=1e-3, integral=0.5)
    beta = controller.update(kl=12.0)  # error -2: KL above target, the weight rises
    expected_integral = 0.5 + 1e-3 * 2.0
    assert controller.integral == pytest.approx(expected_integral)
    assert beta == pytest.approx(0.01 / (1 + math.exp(-2.0)) + expected_integral)
    assert controller.step == 1 and controller.reached


def test_the_integral_does_not_wind_up_at_a_bound():
    controller = KLController(target=50.0, ki=1e-2)
    for _ in range(100):  # KL far below target: the weight sits at 0 and the integral stays put
        assert controller.update(kl=1.0) == 0.0
    assert controller.integral == 0.0 and not controller.reached
    assert controller.update(kl=60.0) > 0.0  # so it reacts at once when the KL overshoots


def test_the_target_warms_up_linearly():
    controller = KLController(target=30.0, warmup_steps=10)
    assert controller.current_target() == pytest.approx(3.0)
    for _ in range(9):
        controller.update(kl=0.0)
    assert controller.current_target() == pytest.approx(30.0)


@pytest.mark.parametrize("bad", [dict(target=0.0), dict(target=float("nan")), dict(target=5.0, kp=-1.0)])
def test_bad_controller_settings(bad):
    with pytest.raises(ValueError):
        KLController(**bad)


def test_state_dict_round_trip():
    controller = KLController(target=5.0)
    for kl in (1.0, 7.0, 6.0):
        controller.update(kl)
    copy = KLController(target=5.0)
    copy.load_state_dict(json.loads(json.dumps(controller.state_dict())))
    assert copy == controller


@pytest.mark.parametrize(
    "bad, message",
    [(dict(target_kl=-3.0), "target_kl must be positive"), (dict(target_kl=float("inf")), "finite")],
)
def test_bad_target_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def _options(corpus, **overrides):
    options = dict(
        data=str(corpus), epochs=16, batch_size=16, progress=False, seed=0, log_steps=1, save_minutes=0,
        early_stopping_patience=0, plot_each_epoch=False, target_kl=3.0, kl_controller_ki=1e-3,
        # No bag-of-words loss: at 3 nats it would push more into z than a KL weight of beta = 1 takes out.
        model=dict(embedding_size=32, hidden_size=32, latent_dim=8, bag_of_words_loss=0.0),
    )  # fmt: skip
    return {**options, **overrides}


def test_the_controller_brings_the_kl_to_its_target(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(400, seed=2)) + "\n")
    run = train(TrainConfig(**_options(corpus)), output_dir=tmp_path / "run")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in records if record["split"] == "train"]
    assert {record["kl_target"] for record in steps} == {3.0}
    last = [record["kl"] for record in steps[-40:]]
    assert sum(last) / len(last) == pytest.approx(3.0, rel=0.15)  # batch KL near the target
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["kl"] == pytest.approx(3.0, rel=0.25) and history[-1]["kl_target"] == 3.0
    assert 0.0 < history[-1]["kl_weight"] < 1.0  # the weight the controller settled on


def test_resume_with_the_controller_is_exact(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=2)) + "\n")
    options = _options(corpus, epochs=3, save_steps=7)
    whole = train(TrainConfig(**options), output_dir=tmp_path / "whole")
    stopped = train(TrainConfig(**options, max_steps=15), output_dir=tmp_path / "stopped")
    resumed = train(None, resume=stopped)
    expected = load_file(str(checkpoint_folders(whole)[-1] / "model.safetensors"))
    got = load_file(str(checkpoint_folders(resumed)[-1] / "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    weights = [
        [json.loads(line)["kl_weight"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (whole, resumed)
    ]
    assert weights[0] == weights[1]


def test_target_kl_from_the_command_line(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(100, seed=2)) + "\n")
    args = ["train", "--data", str(corpus), "-o", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]
    args += ["--hidden-size", "8", "--embedding-size", "8", "--latent-dim", "2", "--log-steps", "1"]
    assert main([*args, "--target-kl", "2.5", "--target-kl-warmup-steps", "4"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [record["kl_target"] for record in records[:4]] == [0.625, 1.25, 1.875, 2.5]
    assert main([*args, "--target-kl", "-1", "--overwrite"]) == 2
    assert "target_kl must be positive" in capsys.readouterr().err


def test_a_target_below_what_the_model_keeps_at_the_bound_warns_and_a_larger_bound_reaches_lower(
    tmp_path, caplog
):
    # A strong bag-of-words loss makes z worth more than its KL at weight 1: the controller pins the weight
    # at --beta and the KL stays above a low target, which training says once; a larger bound goes lower.
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=2)) + "\n")
    model = dict(embedding_size=32, hidden_size=32, latent_dim=8, bag_of_words_loss=3.0)
    options = _options(corpus, epochs=6, target_kl=0.5, kl_controller_ki=0.1, model=model)
    with caplog.at_level("WARNING", logger="textvae"):
        bounded = train(TrainConfig(**options), output_dir=tmp_path / "bounded")
    warnings = [
        record.getMessage() for record in caplog.records if "stays above --target-kl" in record.getMessage()
    ]
    assert len(warnings) == 1 and "--beta 1" in warnings[0]
    freer = train(TrainConfig(**{**options, "beta": 50.0}), output_dir=tmp_path / "freer")
    last = {run: json.loads((run / "history.json").read_text())[-1] for run in (bounded, freer)}
    assert last[bounded]["kl"] > 0.55 and last[bounded]["kl_weight"] == 1.0
    assert last[freer]["kl"] < last[bounded]["kl"] and last[freer]["kl_weight"] > 1.0
