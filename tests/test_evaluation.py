"""Tests of textvae.evaluation: IW NLL, PPL, KL, MI, AU and the whole evaluation on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from textvae import TextVAEConfig, TextVAEModel
from textvae.data.corpora import load_corpus
from textvae.data.storage import TokenizedSplit, collate
from textvae.data.token_ids import tokenize_corpus
from textvae.data.tokenization import train_word_tokenizer
from textvae.evaluation.latent import active_units, mutual_information
from textvae.evaluation.run import format_results
from textvae.evaluation.scoring import importance_weighted_nll, importance_weighted_scores
from textvae.evaluation.split import evaluate
from textvae.priors.distributions import AggregatePrior, StandardPrior

TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "the dog sat",
    "a cat ran on the mat today",
    "the mat",
    "dog",
    "a cat sat on a dog",
    "the cat ran",
]
QUICK = dict(iw_samples=8, batch_size=4, num_diversity_samples=4, max_length=12, show_progress=False)


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(TEXTS)


def make_split(tokenizer, texts=TEXTS) -> TokenizedSplit:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return TokenizedSplit(input_ids=[[bos, *sentence, eos] for sentence in ids])


def make_model(tokenizer, seed: int = 0, **overrides) -> TextVAEModel:
    torch.manual_seed(seed)
    options = dict(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, latent_dim=4)
    options.update(overrides)
    return TextVAEModel(TextVAEConfig(**options)).eval()


def make_batch(model, split: TokenizedSplit) -> dict:
    return collate(split, range(len(split)), model.config.pad_token_id)


def prior_encoder(model: TextVAEModel) -> TextVAEModel:
    """Zero the posterior head: q(z | x) = N(0, I) for every sentence."""
    with torch.no_grad():
        model.posterior.weight.zero_()
        model.posterior.bias.zero_()
    return model


def expected_neg_elbo(model, batch, samples: int = 400) -> torch.Tensor:
    """(B,) `E_q[-log p(x | z)] + KL` with many samples of z: the -ELBO without its sampling noise."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        mu, logvar = model.encode(batch["input_ids"], batch["attention_mask"])
        rec = torch.stack(
            [
                model.reconstruction_loss(
                    batch["input_ids"], batch["attention_mask"], model.reparameterize(mu, logvar, generator)
                )[0]
                for _ in range(samples)
            ]
        ).mean(dim=0)
        return (rec + 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)).double()


def shifted_posterior_model(tokenizer) -> TextVAEModel:
    """A VAE whose posterior is far from its true posterior (mu pushed to 1): a large ELBO gap."""
    model = make_model(tokenizer, seed=1)
    with torch.no_grad():
        model.posterior.bias[: model.latent_dim] += 1.0
    return model


def mean_iw_nll(model, batch, iw_samples: int, seeds: int) -> float:
    values = [
        importance_weighted_nll(model, batch, iw_samples, 16, torch.Generator().manual_seed(seed)).mean()
        for seed in range(seeds)
    ]
    return float(torch.stack(values).mean())


def test_nll_is_below_neg_elbo_and_decreases_with_k(tokenizer):
    model = shifted_posterior_model(tokenizer)
    batch = make_batch(model, make_split(tokenizer))
    neg_elbo = float(expected_neg_elbo(model, batch).mean())
    nlls = [mean_iw_nll(model, batch, k, seeds=12) for k in (1, 4, 16, 64)]
    # Burda et al. (2016): E[NLL_K] is non-increasing in K and bounded by -ELBO (= E[NLL_1]).
    assert nlls[-1] < neg_elbo - 0.1
    for fewer, more in zip(nlls, nlls[1:], strict=False):
        assert more <= fewer + 0.02


def test_single_sample_is_an_unbiased_neg_elbo(tokenizer):
    model = shifted_posterior_model(tokenizer)
    batch = make_batch(model, make_split(tokenizer))
    draws = torch.stack(
        [importance_weighted_nll(model, batch, 1, 1, torch.Generator().manual_seed(s)) for s in range(300)]
    )  # (S, B)
    per_seed = draws.mean(dim=1)
    standard_error = float(per_seed.std() / math.sqrt(len(per_seed)))
    assert (
        abs(float(per_seed.mean()) - float(expected_neg_elbo(model, batch).mean()))
        < 4 * standard_error + 0.02
    )


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
def test_chunking_does_not_change_the_estimate(tokenizer, chunk_size):
    model = make_model(tokenizer)
    batch = make_batch(model, make_split(tokenizer))
    whole = importance_weighted_nll(model, batch, 7, 7, torch.Generator().manual_seed(5))
    chunked = importance_weighted_nll(model, batch, 7, chunk_size, torch.Generator().manual_seed(5))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_prior_encoder_gives_the_exact_likelihood_and_no_latent_use(tokenizer):
    model = prior_encoder(
        make_model(tokenizer, z_to_initial_state=False, z_to_inputs=False, z_to_output=False)
    )
    split = make_split(tokenizer)
    batch = make_batch(model, split)
    with torch.no_grad():
        exact = model.reconstruction_loss(batch["input_ids"], batch["attention_mask"], None)[0]
    results = evaluate(model, tokenizer, split, **{**QUICK, "iw_samples": 20}, compute_bleu=False)
    assert results["kl"] == 0.0
    assert results["au"] == 0
    assert abs(results["mi"]) < 0.75  # Monte Carlo noise of 8 sentences only (the hand check is below)
    assert results["nll"] == pytest.approx(float(exact.mean()), abs=1e-5)
    assert results["rec"] == pytest.approx(float(exact.mean()), abs=1e-5)


def unit_gaussian_prior(mean) -> AggregatePrior:
    """A one-component mixture N(mean, I)."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return AggregatePrior(torch.ones(1), mean[None], torch.eye(len(mean))[None])


def test_a_mixture_equal_to_the_standard_prior_gives_the_same_nll(tokenizer):
    model = shifted_posterior_model(tokenizer)
    batch = make_batch(model, make_split(tokenizer))
    scores = importance_weighted_scores(
        model, batch, unit_gaussian_prior([0.0] * 4), 3000, 500, torch.Generator().manual_seed(3)
    )
    plain = importance_weighted_nll(model, batch, 3000, 500, torch.Generator().manual_seed(3))
    assert torch.equal(scores["nll"], plain)  # the N(0, I) estimate is untouched by scoring a second prior
    torch.testing.assert_close(scores["nll_prior"], plain, rtol=0, atol=1e-9)
    with torch.no_grad():
        mu, logvar = model.encode(batch["input_ids"], batch["attention_mask"])
        closed_form = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)
    # Monte Carlo over 3,000 draws of a KL of about 2 nats: well within 0.15
    torch.testing.assert_close(scores["kl_prior"], closed_form.double(), rtol=0, atol=0.15)


def test_prior_nll_and_kl_of_a_shifted_prior_match_hand_computation(tokenizer):
    # q(z | x) = N(0, I) for every sentence and a decoder that never reads z: p(x) is the decoder's exact
    # likelihood under any prior, and KL(N(0, I) || N(m, I)) = |m|^2 / 2.
    model = prior_encoder(
        make_model(tokenizer, z_to_initial_state=False, z_to_inputs=False, z_to_output=False)
    )
    batch = make_batch(model, make_split(tokenizer))
    with torch.no_grad():
        exact = model.reconstruction_loss(batch["input_ids"], batch["attention_mask"], None)[0].double()
    same = importance_weighted_scores(model, batch, unit_gaussian_prior([0.0] * 4), 50, 50)
    torch.testing.assert_close(same["nll_prior"], exact, rtol=0, atol=1e-5)  # every weight is exactly p(x)
    shift = [0.6, -0.3, 0.0, 0.2]  # |m|^2 / 2 = 0.245
    scores = importance_weighted_scores(
        model, batch, unit_gaussian_prior(shift), 4000, 1000, torch.Generator().manual_seed(0)
    )
    assert float(scores["kl_prior"].mean()) == pytest.approx(0.245, abs=0.03)
    # Each weight p(z) / q(z) has mean 1 and variance exp(|m|^2) - 1 = 0.63: the log of the mean of 4,000
    # of them is 0 within 0.06 (about 5 standard errors).
    torch.testing.assert_close(scores["nll_prior"], exact, rtol=0, atol=0.06)
    torch.testing.assert_close(scores["nll"], exact, rtol=0, atol=1e-5)


def test_evaluate_reports_the_aggregate_prior_nll_beside_the_standard_one(tokenizer):
    model, split = make_model(tokenizer), make_split(tokenizer)
    plain = evaluate(model, tokenizer, split, **QUICK)
    assert plain["nll_aggregate"] is None and plain["ppl_aggregate"] is None and plain["kl_aggregate"] is None
    aggregate = AggregatePrior(
        torch.ones(2) / 2, torch.tensor([[0.5] * 4, [-0.5] * 4]), torch.ones(2, 4), "diag"
    )
    priors = {"standard": StandardPrior(4), "aggregate": aggregate}
    results = evaluate(model, tokenizer, split, **QUICK, priors=priors)
    keys = ("nll_aggregate", "ppl_aggregate", "kl_aggregate")
    assert {key: plain[key] for key in plain if key not in keys} == {
        key: results[key] for key in results if key not in keys
    }  # the other figures, bit for bit
    assert math.isfinite(results["nll_aggregate"]) and results["nll_aggregate"] != results["nll"]
    assert results["ppl_aggregate"] == pytest.approx(
        math.exp(results["nll_aggregate"] * len(split) / split.num_target_tokens())
    )
    assert results["kl_aggregate"] > 0
    assert "NLL, aggregate prior" in format_results(results)
    json.dumps(results)


def test_a_mixture_that_gives_the_posterior_no_density_has_no_perplexity(tokenizer, caplog):
    # A point-like mixture (an inactive unit's means never move): the draws of q(z | x) are ~1e12 variances
    # away, the NLL is huge but finite, and its perplexity, out of float range, is None with a warning.
    model, split = make_model(tokenizer), make_split(tokenizer)
    point = AggregatePrior(torch.ones(1), torch.zeros(1, 4), torch.full((1, 4), 1e-12), "diag")
    with caplog.at_level("WARNING"):
        results = evaluate(model, tokenizer, split, **QUICK, priors={"aggregate": point})
    assert results["nll_aggregate"] > 1e9 and results["ppl_aggregate"] is None
    assert "almost no density" in caplog.text
    json.dumps(results, allow_nan=False)


def test_aggregate_nll_of_a_fitted_prior_covers_inactive_units(tokenizer):
    # Every posterior is N(0, I) (no unit active): the means never move, so the mixture fitted to them is
    # a point at 0, but spread by the posteriors' variance it is N(0, I), and the aggregate-prior NLL equals
    # the standard one instead of blowing up.
    from textvae.priors.fitting import fit_prior

    model, split = prior_encoder(make_model(tokenizer)), make_split(tokenizer)
    prior = fit_prior(model, split, split, batch_size=4, components=(1,))
    assert float(prior.covariances.diagonal(dim1=1, dim2=2).max()) < 1e-6  # the bare mixture: a point
    results = evaluate(model, tokenizer, split, **QUICK, priors={"aggregate": prior})
    assert results["nll_aggregate"] == pytest.approx(results["nll"], abs=1e-4)
    assert results["kl_aggregate"] == pytest.approx(0.0, abs=1e-4) and results["kl"] == 0.0


def test_mutual_information_of_identical_posteriors_matches_hand_computation():
    mu, logvar = torch.zeros(50, 3), torch.zeros(50, 3)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    # q(z) = q(z | x) = N(0, I): MI = mean_n [log N(z_n; 0, I)] - (- entropy) = 0.5 * mean(|z_n|^2 - Z)
    expected = 0.5 * float((z.pow(2).sum(dim=1) - 3).mean())
    assert mutual_information(mu, logvar, torch.Generator().manual_seed(9)) == pytest.approx(
        expected, abs=1e-9
    )


def test_mutual_information_of_separated_posteriors_is_log_n():
    mu = torch.arange(8.0)[:, None].repeat(1, 2) * 10  # (8, 2): far apart, so q(z_n) = q(z_n | x_n) / N
    logvar = torch.full_like(mu, -8.0)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # log N, plus the noise of the closed-form entropy against the sampled log q(z_n | x_n) (He et al.)
    expected = math.log(8) + 0.5 * float((eps.pow(2).sum(dim=1) - 2).mean())
    assert mutual_information(mu, logvar, torch.Generator().manual_seed(0)) == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize("active", [[], [0], [1, 3], [0, 1, 2, 3]])
def test_active_units_count_the_dimensions_that_vary(tokenizer, active):
    model = make_model(tokenizer)
    latent_dim = model.latent_dim
    with torch.no_grad():
        keep = torch.zeros(2 * latent_dim, 1)
        keep[active] = 20.0  # only these rows of mu read the sentence; logvar rows stay as they are
        keep[latent_dim:] = 1.0
        model.posterior.weight.mul_(keep)
    results = evaluate(model, tokenizer, make_split(tokenizer), **QUICK, compute_bleu=False)
    assert results["au"] == len(active)
    variances = results["au_variances"]
    assert all(variances[d] == 0.0 for d in range(latent_dim) if d not in active)


def test_active_units_hand_computed():
    mu = torch.tensor([[0.0, 1.0, 0.0], [0.2, 1.0, 0.1], [0.1, 1.0, 0.05]])
    count, variances = active_units(mu, threshold=0.01)
    # N - 1 denominator: dim 0 has deviations (-0.1, 0.1, 0) -> 0.02 / 2 = 0.01 (active, >=); dim 2 0.0025.
    assert count == 1
    torch.testing.assert_close(variances, torch.tensor([0.01, 0.0, 0.0025], dtype=torch.float64))


def test_ppl_counts_words_plus_one_eos_per_sentence(tmp_path):
    (tmp_path / "train.txt").write_text("a b c\nd e\nf\n")
    (tmp_path / "valid.txt").write_text("a b c\nd e\nz z z z\n")
    corpus = load_corpus(str(tmp_path))
    tok = train_word_tokenizer(corpus["train"]["text"])
    split = TokenizedSplit.from_dataset(tokenize_corpus(corpus, tok)["validation"])
    results = evaluate(make_model(tok), tok, split, **QUICK)
    assert results["num_tokens"] == (3 + 1) + (2 + 1) + (4 + 1)
    assert results["ppl"] == pytest.approx(math.exp(results["nll"] * 3 / 12))
    assert results["ppl_bound"] == pytest.approx(math.exp(results["neg_elbo"] * 3 / 12))


def test_language_model_has_exact_nll_and_no_latent_metrics(tokenizer):
    model = make_model(tokenizer, latent_dim=0)
    results = evaluate(model, tokenizer, make_split(tokenizer), **QUICK)
    assert results["nll"] == pytest.approx(results["rec"], abs=1e-9)
    assert results["kl"] == 0.0
    assert results["ppl"] == pytest.approx(results["ppl_bound"])
    for key in ("mi", "au", "au_variances", "recon_bleu", "iw_samples"):
        assert results[key] is None
    assert 0.0 < results["distinct_1"] <= 1.0
    assert results["self_bleu"] is not None
    assert "N/A" in format_results(results)


def test_evaluate_is_reproducible_serialisable_and_restores_training_mode(tokenizer):
    model = make_model(tokenizer).train()
    first = evaluate(model, tokenizer, make_split(tokenizer), **QUICK)
    assert model.training
    second = evaluate(model, tokenizer, make_split(tokenizer), **QUICK)
    assert first == second
    json.dumps(first, allow_nan=False)
    assert first["nll"] <= first["neg_elbo"] + 1.0
    assert "tok:none" in first["bleu_signature"]
    assert 0.0 <= first["recon_bleu"] <= 100.0


def test_encoder_input_ids_feed_the_encoder(tokenizer):
    model = make_model(tokenizer)
    split = make_split(tokenizer)
    plain = evaluate(model, tokenizer, split, **QUICK)
    same = TokenizedSplit(split.input_ids, encoder_input_ids=[list(ids) for ids in split.input_ids])
    assert evaluate(model, tokenizer, same, **QUICK) == plain
    reversed_ids = TokenizedSplit(split.input_ids, encoder_input_ids=[ids[::-1] for ids in split.input_ids])
    assert evaluate(model, tokenizer, reversed_ids, **QUICK)["kl"] != plain["kl"]


@pytest.mark.parametrize(
    "options", [dict(iw_samples=0), dict(batch_size=0), dict(iw_chunk_size=0), dict(num_diversity_samples=-1)]
)
def test_bad_options_raise(tokenizer, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        evaluate(make_model(tokenizer), tokenizer, make_split(tokenizer), **{**QUICK, **options})


def test_empty_split_raises(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        evaluate(make_model(tokenizer), tokenizer, TokenizedSplit(input_ids=[]), **QUICK)
