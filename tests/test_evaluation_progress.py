"""Tests of textvae.evaluation_progress: a stopped evaluation resumes its scoring and ends with the same figures."""

from __future__ import annotations

import json

import pytest
import torch

from textvae.evaluation import split as split_evaluation
from textvae.evaluation.progress import ScoreProgress, model_digest, split_digest
from textvae.evaluation.run import evaluate_run
from textvae.evaluation.split import evaluate

from .helpers import make_sentences
from .test_evaluation import QUICK, TEXTS, make_model, make_split

OPTIONS = {**QUICK, "batch_size": 2}  # TEXTS in 4 batches of 2
SCORE_BATCH = split_evaluation.score_batch


class Stop(Exception):
    """Stands for a kill in the middle of the scoring."""


def count_scored_batches(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Wrap score_batch: record each call, and raise Stop once `stop_after` batches were scored."""
    calls = []

    def scored(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise Stop
        calls.append(1)
        return SCORE_BATCH(*args, **kwargs)

    monkeypatch.setattr(split_evaluation, "score_batch", scored)
    return calls


@pytest.fixture(scope="module")
def tokenizer():
    from textvae.data.tokenization import train_word_tokenizer

    return train_word_tokenizer(TEXTS)


def test_a_stopped_evaluation_scores_only_the_rest_and_equals_an_uninterrupted_one(
    tokenizer, tmp_path, monkeypatch
):
    model, split = make_model(tokenizer), make_split(tokenizer)
    expected = evaluate(model, tokenizer, split, **OPTIONS)
    path = tmp_path / "eval.partial.json"
    calls = count_scored_batches(monkeypatch, stop_after=3)
    with pytest.raises(Stop):  # saved on the way out, though an hour is not up
        evaluate(model, tokenizer, split, **OPTIONS, progress_path=path, progress_every_seconds=3600)
    assert len(json.loads(path.read_text())["batches"]) == 3
    assert model.training is False  # make_model's eval mode, given back after the stop too

    calls = count_scored_batches(monkeypatch)
    resumed = evaluate(model, tokenizer, split, **OPTIONS, progress_path=path, progress_every_seconds=0)
    assert len(calls) == 1  # 4 batches, 3 read back
    assert resumed == expected  # every figure, bit for bit: MI, AU, BLEU and the NLL sums included


def test_saved_scores_of_other_options_or_weights_are_not_used(tokenizer, tmp_path, monkeypatch):
    model, split = make_model(tokenizer), make_split(tokenizer)
    path = tmp_path / "eval.partial.json"
    evaluate(model, tokenizer, split, **OPTIONS, progress_path=path, progress_every_seconds=0)
    assert len(json.loads(path.read_text())["batches"]) == 4  # kept until the caller removes it

    calls = count_scored_batches(monkeypatch)
    other_k = evaluate(model, tokenizer, split, **{**OPTIONS, "iw_samples": 4}, progress_path=path)
    assert len(calls) == 4
    assert other_k == evaluate(model, tokenizer, split, **{**OPTIONS, "iw_samples": 4})

    calls.clear()
    evaluate(model, tokenizer, split, **{**OPTIONS, "iw_samples": 4}, progress_path=path)
    assert len(calls) == 0  # the file now holds the K = 4 scores

    changed = make_model(tokenizer)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    calls.clear()
    evaluate(changed, tokenizer, split, **{**OPTIONS, "iw_samples": 4}, progress_path=path)
    assert len(calls) == 4


def test_saved_scores_of_another_aggregate_prior_are_not_used(tokenizer, tmp_path, monkeypatch):
    from textvae.priors.distributions import AggregatePrior, StandardPrior

    def priors(shift: float) -> dict:
        mixture = AggregatePrior(torch.ones(1), torch.full((1, 4), shift), torch.eye(4)[None])
        return {"standard": StandardPrior(4), "aggregate": mixture}

    model, split = make_model(tokenizer), make_split(tokenizer)
    path = tmp_path / "eval.partial.json"
    evaluate(
        model, tokenizer, split, **OPTIONS, priors=priors(0.5), progress_path=path, progress_every_seconds=0
    )
    calls = count_scored_batches(monkeypatch)
    again = evaluate(model, tokenizer, split, **OPTIONS, priors=priors(0.5), progress_path=path)
    assert len(calls) == 0 and again["nll_aggregate"] is not None
    other = evaluate(model, tokenizer, split, **OPTIONS, priors=priors(0.25), progress_path=path)
    assert len(calls) == 4  # another mixture: its NLL is scored anew
    assert other == evaluate(model, tokenizer, split, **OPTIONS, priors=priors(0.25))
    assert other["nll_aggregate"] != again["nll_aggregate"] and other["nll"] == again["nll"]


def test_a_corrupt_progress_file_is_scored_anew(tokenizer, tmp_path, monkeypatch, caplog):
    model, split = make_model(tokenizer), make_split(tokenizer)
    path = tmp_path / "eval.partial.json"
    path.write_text('{"key": {"model": "x"}, "batc')
    calls = count_scored_batches(monkeypatch)
    with caplog.at_level("WARNING"):
        results = evaluate(model, tokenizer, split, **OPTIONS, progress_path=path)
    assert len(calls) == 4 and "cut short" in caplog.text
    assert results == evaluate(model, tokenizer, split, **OPTIONS)


def test_digests_tell_models_and_splits_apart(tokenizer):
    model = make_model(tokenizer)
    assert model_digest(model) == model_digest(make_model(tokenizer))
    assert model_digest(model) != model_digest(make_model(tokenizer, seed=1))
    split = make_split(tokenizer)
    assert split_digest(split) == split_digest(make_split(tokenizer))
    assert split_digest(split) != split_digest(make_split(tokenizer, TEXTS[::-1]))
    assert split_digest(split) != split_digest(make_split(tokenizer, TEXTS[:-1]))


def test_progress_is_written_only_when_its_interval_has_passed(tmp_path):
    path = tmp_path / "progress.json"
    progress = ScoreProgress(path, {"k": 1}, every_seconds=3600)
    sums = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    progress.add(0, sums, None, None, ["a"], ["b"])
    assert not path.exists()
    progress.save()
    again = ScoreProgress(path, {"k": 1})
    restored = again.get(0, torch.device("cpu"))
    assert torch.equal(restored[0], sums) and restored[1] is None and restored[3:] == (["a"], ["b"])
    assert again.get(1, torch.device("cpu")) is None


def test_evaluate_run_resumes_a_stopped_evaluation_and_removes_its_progress(
    trained_run, tmp_path, monkeypatch
):
    corpus = tmp_path / "eval.txt"
    corpus.write_text("\n".join(make_sentences(24, seed=5)) + "\n", encoding="utf-8")
    options = dict(iw_samples=4, batch_size=4, num_diversity_samples=3, show_progress=False)
    expected = evaluate_run(trained_run, str(corpus), save=False, **options)
    partial = trained_run / "eval-file-eval-k4.partial.json"
    count_scored_batches(monkeypatch, stop_after=2)
    with pytest.raises(Stop):
        evaluate_run(trained_run, str(corpus), **options)
    assert partial.is_file()
    calls = count_scored_batches(monkeypatch)
    results = evaluate_run(trained_run, str(corpus), **options)
    assert len(calls) == 6 - 2 and not partial.exists()
    assert {k: v for k, v in results.items() if k not in ("run", "data", "split", "limit")} == {
        k: v for k, v in expected.items() if k not in ("run", "data", "split", "limit")
    }
    assert json.loads((trained_run / "eval-file-eval-k4.json").read_text())["nll"] == expected["nll"]
