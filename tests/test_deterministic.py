"""The deterministic autoencoder (`--deterministic`): z is a point, no KL; evaluation reads N/A for what
does not apply; and the generalisation-gap figures of `evaluate` (training sample, KL - MI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textvae.evaluation.run import evaluate_run, format_results, training_sample
from textvae.pipeline import TextVAEPipeline
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN, make_sentences, run_cli, run_cli_error, tiny_model

DETERMINISTIC = {**TINY_TRAIN, "model": {**TINY_TRAIN["model"], "deterministic": True}, "fit_prior": True}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A folder corpus whose training and validation sentences are told apart by their first word."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text("".join(f"train {s}\n" for s in make_sentences(150, seed=1)))
    (folder / "valid.txt").write_text("".join(f"valid {s}\n" for s in make_sentences(30, seed=2)))
    return folder


@pytest.fixture(scope="module")
def autoencoder(corpus, tmp_path_factory) -> Path:
    config = TrainConfig(data=str(corpus), **DETERMINISTIC)
    return train(config, output_dir=tmp_path_factory.mktemp("ae") / "run")


def test_the_code_is_a_point_with_no_kl_and_z_equals_it():
    model = tiny_model(deterministic=True)
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    mu, logvar = model.encode(ids)
    assert logvar is None and mu.shape == (1, 4)
    output = model(ids, sample_latent=True, eps=torch.randn(1, 4))
    assert torch.equal(output.z, mu) and torch.equal(output.kl, torch.zeros(1))
    assert output.logvar is None


def test_a_deterministic_model_trains_with_no_kl_weight_and_lowers_rec(autoencoder):
    history = json.loads((autoencoder / "history.json").read_text())
    assert [record["kl"] for record in history] == [0.0, 0.0]
    assert history[-1]["rec"] < history[0]["rec"]
    records = [json.loads(line) for line in (autoencoder / "metrics.jsonl").read_text().splitlines()]
    assert {r["kl_weight"] for r in records if r["split"] == "train"} == {0.0}
    assert (autoencoder / "prior.safetensors").is_file()  # the aggregate prior its samples come from


def test_evaluation_reports_kl_and_nll_as_not_applicable(autoencoder, corpus):
    results = evaluate_run(
        autoencoder, data=str(corpus), iw_samples=4, num_diversity_samples=5, interpolation_pairs=3,
        train_sample=20, save=False, show_progress=False,
    )  # fmt: skip
    for key in ("kl", "neg_elbo", "nll", "ppl", "mi", "kl_marginal", "nll_aggregate", "iw_samples"):
        assert results[key] is None, key
    assert results["rec"] > 0 and results["au"] is not None
    assert 0 <= results["recon_bleu"] <= 100 and 0 <= results["recon_exact"] <= 1
    assert results["distinct_1"] is not None  # samples from the aggregate prior
    lines = {line.split("  ")[0]: line.split()[-1] for line in format_results(results).splitlines()}
    assert lines["NLL (importance weighted)"] == lines["KL"] == "N/A"


def test_a_deterministic_model_is_refused_what_needs_a_likelihood(autoencoder, capsys):
    code = run_cli_error(
        capsys, ["score", autoencoder, "a cat"], "deterministic autoencoder has no likelihood"
    )
    assert code == 2
    with pytest.raises(ValueError, match="deterministic autoencoder has no KL"):
        TrainConfig(target_kl=30, model={"deterministic": True})


def test_it_reconstructs_interpolates_and_samples_from_its_aggregate_prior(autoencoder):
    pipeline = TextVAEPipeline.from_pretrained(autoencoder, device="cpu")
    assert len(pipeline.reconstruct(["train the cat sat"])) == 1
    assert len(pipeline.interpolate("train a dog", "train the cat sat", steps=3)) == 3
    assert len(pipeline.sample(2, seed=0, prior="aggregate")) == 2
    mu, logvar = pipeline.encode(["train a dog"])
    assert logvar is None and mu.shape == (1, 4)


def test_encode_writes_null_logvar_for_a_deterministic_model(autoencoder, tmp_path, capsys):
    output = tmp_path / "z.jsonl"
    code, _, err = run_cli(capsys, "encode", autoencoder, "train a dog", "--output", output)
    assert code == 0, err
    row = json.loads(output.read_text())
    assert row["logvar"] is None and len(row["mu"]) == 4


def test_training_sample_comes_from_the_training_split(autoencoder, corpus):
    texts = training_sample(autoencoder, 40, seed=0)
    train_lines = set((corpus / "train.txt").read_text().splitlines())
    assert len(texts) == 40 and all(text in train_lines for text in texts)
    assert all(text.startswith("train ") for text in texts)
    assert texts == training_sample(autoencoder, 40, seed=0) != training_sample(autoencoder, 40, seed=1)
    assert len(training_sample(autoencoder, 10_000)) == 150  # at most the whole split
    with pytest.raises(ValueError, match="train_sample must be a positive integer"):
        training_sample(autoencoder, 0)


def test_evaluate_shows_the_training_sample_beside_the_split(trained_run, capsys):
    results = evaluate_run(
        trained_run, data=str(trained_run.parent / "corpus.txt"), iw_samples=4, num_diversity_samples=5,
        interpolation_pairs=2, train_sample=30, save=False, show_progress=False,
    )  # fmt: skip
    assert results["train_sample"] == 30
    for key in ("recon_bleu", "recon_bleu1", "recon_exact"):
        assert results[f"train_{key}"] is not None
    assert results["kl_marginal"] == pytest.approx(results["kl"] - results["mi"])
    code = run_cli_error(capsys, ["evaluate", trained_run, "--train-sample", "0"], "positive integer")
    assert code == 2
