"""Forward PPL under a reference language model, and interpolation metrics over a split, through evaluate."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from textvae import TextVAEConfig, TextVAEModel
from textvae.cli import main
from textvae.data.tokenization import train_word_tokenizer
from textvae.evaluation.samples import forward_ppl, load_reference_lm
from textvae.evaluation.split import evaluate
from textvae.priors.distributions import AggregatePrior, StandardPrior

from .test_evaluation import QUICK, TEXTS, make_model, make_split


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(TEXTS)


def test_forward_ppl_of_real_sentences_equals_the_reference_models_own_ppl(tokenizer):
    language_model = make_model(tokenizer, seed=3, latent_dim=0)
    own = evaluate(language_model, tokenizer, make_split(tokenizer), **QUICK)["ppl"]
    assert forward_ppl(language_model, tokenizer, TEXTS, batch_size=3) == pytest.approx(
        own, rel=1e-6
    )  # float32 sums


def test_an_empty_generated_sentence_counts_as_its_eos(tokenizer):
    language_model = make_model(tokenizer, seed=3, latent_dim=0)
    with_empty = forward_ppl(language_model, tokenizer, ["", "the cat"])
    words = tokenizer("the cat", add_special_tokens=False)["input_ids"]
    cat = torch.tensor([[tokenizer.bos_token_id, *words, tokenizer.eos_token_id]])
    rec_cat, _ = language_model.reconstruction_loss(cat, torch.ones_like(cat), None)
    empty_ids = torch.tensor([[tokenizer.bos_token_id, tokenizer.eos_token_id]])
    rec_empty, _ = language_model.reconstruction_loss(empty_ids, torch.ones_like(empty_ids), None)
    expected = torch.exp((rec_cat.sum() + rec_empty.sum()) / (3 + 1)).item()
    assert with_empty == pytest.approx(expected, rel=1e-6)


def test_evaluate_reports_forward_ppl_for_each_prior_and_interpolation_metrics(tokenizer):
    model = make_model(tokenizer, seed=1)
    reference = (make_model(tokenizer, seed=3, latent_dim=0), tokenizer)
    aggregate = AggregatePrior(torch.tensor([1.0]), torch.full((1, 4), 3.0), torch.eye(4)[None] * 0.01)
    options = dict(QUICK, num_forward_samples=20, interpolation_pairs=6, interpolation_steps=4)
    results = evaluate(
        model, tokenizer, make_split(tokenizer), reference_lm=reference,
        priors={"standard": StandardPrior(4), "aggregate": aggregate}, **options,
    )  # fmt: skip
    assert results["forward_ppl"] > 1 and results["forward_ppl_aggregate"] > 1
    assert results["forward_ppl"] != results["forward_ppl_aggregate"]  # two priors, two sets of samples
    assert 0 <= results["interp_monotonicity"] <= 1 and 0 <= results["interp_endpoint_bleu"] <= 100
    assert 1 / 4 <= results["interp_distinct"] <= 1 and results["interp_forward_ppl"] > 1
    assert (results["interpolation_pairs"], results["interpolation_steps"]) == (6, 4)
    again = evaluate(
        model, tokenizer, make_split(tokenizer), reference_lm=reference,
        priors={"standard": StandardPrior(4), "aggregate": aggregate}, **options,
    )  # fmt: skip
    assert again == results
    json.dumps(results, allow_nan=False)


def test_without_a_reference_the_forward_ppl_is_not_applicable(tokenizer):
    results = evaluate(
        make_model(tokenizer), tokenizer, make_split(tokenizer), interpolation_pairs=3, **QUICK
    )
    assert results["forward_ppl"] is None and results["interp_forward_ppl"] is None
    assert results["interp_monotonicity"] is not None
    with pytest.raises(ValueError, match="interpolation steps must be at least 3"):
        evaluate(make_model(tokenizer), tokenizer, make_split(tokenizer), interpolation_steps=2, **QUICK)


def test_a_reference_must_be_a_language_model_with_the_same_tokenizer(tmp_path, tokenizer, trained_run):
    with pytest.raises(ValueError, match="is not a language model"):
        load_reference_lm(trained_run, tokenizer)
    other = tmp_path / "lm"
    model = TextVAEModel(
        TextVAEConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, latent_dim=0)
    )
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(ValueError, match="tokenizer of the reference language model .* differs"):
        load_reference_lm(other, train_word_tokenizer(["entirely other words"] * 3))
    assert load_reference_lm(other, tokenizer)[0].config.latent_dim == 0


def test_evaluate_command_with_a_reference_language_model(tmp_path, capsys, trained_run):
    lm = tmp_path / "lm"
    shutil.copytree(trained_run, lm)
    from textvae.checkpointing import load_model

    vae = load_model(trained_run)
    config = vae.config.to_dict()
    config.update(latent_dim=0)
    for key in ("architectures", "transformers_version", "model_type"):
        config.pop(key, None)
    language_model = TextVAEModel(TextVAEConfig(**config))
    (lm / "model.safetensors").unlink()
    language_model.save_pretrained(lm)
    corpus = tmp_path / "eval.txt"
    corpus.write_text("the cat sat\na dog ran on the mat\nthe mat\nred dog\n")
    args = [
        "evaluate",
        str(trained_run),
        "--data",
        str(corpus),
        "--iw-samples",
        "4",
        "--diversity-samples",
        "4",
    ]
    code = main(
        [*args, "--reference-lm", str(lm), "--forward-samples", "8", "--interpolation-pairs", "3", "--json"]
    )
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert code == 0, err
    assert (
        results["forward_ppl"] > 1 and results["forward_ppl_aggregate"] > 1 and results["interp_distinct"] > 0
    )
    assert main([*args, "--reference-lm", str(trained_run)]) == 2
    assert "is not a language model" in capsys.readouterr().err
    assert main([*args, "--steps", "2"]) == 2
    assert "--steps must be at least 3" in capsys.readouterr().err
