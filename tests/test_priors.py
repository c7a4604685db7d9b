"""Tests of textvae.priors: the standard prior, fitting, sampling, scoring, saving and loading mixtures."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from textvae.data.storage import TokenizedSplit
from textvae.priors.distributions import (
    PRIOR_CONFIG_NAME,
    PRIOR_WEIGHTS_NAME,
    AggregatePrior,
    StandardPrior,
    load_prior,
)
from textvae.priors.fitting import (
    encode_posterior_means,
    encode_posteriors,
    fit_aggregate_prior,
    fit_prior,
)

from .helpers import TINY_TRANSFORMER, random_batch, tiny_model

TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
TRUE_COVARIANCES = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.5]], [[1.0, -0.3], [-0.3, 0.5]]])


def draw_mixture(count: int, seed: int) -> np.ndarray:
    """(count, 2) points of the known 3-component mixture."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=count, p=TRUE_WEIGHTS)
    return np.stack([rng.multivariate_normal(TRUE_MEANS[k], TRUE_COVARIANCES[k]) for k in labels])


@pytest.fixture(scope="module")
def fitted() -> AggregatePrior:
    return fit_aggregate_prior(
        draw_mixture(1500, seed=0), draw_mixture(500, seed=1), components=(1, 2, 3, 4, 6)
    )


def true_prior() -> AggregatePrior:
    return AggregatePrior(
        torch.tensor(TRUE_WEIGHTS), torch.tensor(TRUE_MEANS), torch.tensor(TRUE_COVARIANCES)
    )


def test_fit_recovers_a_known_mixture(fitted):
    chosen = fitted.selection["chosen_n_components"]
    assert 3 <= chosen <= 4 and fitted.n_components == chosen
    scores = {c["n_components"]: c["valid_log_likelihood"] for c in fitted.selection["candidates"]}
    assert set(scores) == {1, 2, 3, 4, 6}
    assert scores[chosen] == max(scores.values()) and scores[3] > scores[2] + 0.2 > scores[1] + 0.4
    # Every true mean has a heavy fitted component near it.
    for mean in TRUE_MEANS:
        distance = (fitted.means - torch.tensor(mean)).norm(dim=1)
        assert float(distance.min()) < 0.2
        assert float(fitted.weights[distance < 0.5].sum()) > 0.15
    assert fitted.selection["num_train"] == 1500 and fitted.selection["num_valid"] == 500


def test_subsample_and_skipped_candidates():
    prior = fit_aggregate_prior(draw_mixture(40, 0), draw_mixture(20, 1), components=(1, 2, 64), max_train=30)
    assert prior.selection["num_train"] == 30 and prior.selection["num_train_available"] == 40
    assert [c["n_components"] for c in prior.selection["candidates"]] == [1, 2]


def test_mixtures_are_fitted_on_one_blas_thread_whatever_the_callers_setting(monkeypatch):
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    original = GaussianMixture.fit

    def fit(self, points):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return original(self, points)

    monkeypatch.setattr(GaussianMixture, "fit", fit)
    with threadpool_limits(limits=4, user_api="blas"):
        first = fit_aggregate_prior(draw_mixture(300, 0), draw_mixture(100, 1), components=(1, 3))
    second = fit_aggregate_prior(draw_mixture(300, 0), draw_mixture(100, 1), components=(1, 3))
    assert len(seen) == 4 and all(threads <= {1} for threads in seen)
    assert torch.equal(first.means, second.means) and torch.equal(first.covariances, second.covariances)


def test_near_degenerate_dimensions_fit():
    # Two collapsed (nearly constant) dimensions, as inactive units give, beside two active ones.
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(400, 2)), 1e-9 * rng.normal(size=(400, 2))], axis=1)
    prior = fit_aggregate_prior(points[:300], points[300:], components=(1, 2, 4, 8))
    assert torch.isfinite(prior.log_prob(torch.from_numpy(points).float())).all()


def test_log_prob_matches_scikit_learn():
    from sklearn.mixture import GaussianMixture

    for covariance_type in ("full", "diag"):
        train, test = draw_mixture(600, 2), draw_mixture(50, 3)
        mixture = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(train)
        prior = AggregatePrior(
            torch.from_numpy(mixture.weights_),
            torch.from_numpy(mixture.means_),
            torch.from_numpy(mixture.covariances_),
            covariance_type=covariance_type,
        )
        expected = torch.from_numpy(mixture.score_samples(test))
        got = prior.log_prob(torch.from_numpy(test))
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_samples_follow_the_mixture():
    prior = true_prior()
    samples = prior.sample(40_000, torch.Generator().manual_seed(0)).double()
    assert samples.shape == (40_000, 2) and prior.sample(3).dtype == torch.float32
    weights = torch.tensor(TRUE_WEIGHTS)[:, None]
    mean = (weights * torch.tensor(TRUE_MEANS)).sum(0)  # (Z,)
    centred = torch.tensor(TRUE_MEANS) - mean  # (C, Z)
    covariance = (
        weights[:, :, None] * (torch.tensor(TRUE_COVARIANCES) + centred[:, :, None] * centred[:, None])
    ).sum(0)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.06, rtol=0)
    torch.testing.assert_close(samples.T.cov(), covariance, atol=0.2, rtol=0.03)


def test_one_correlated_component_has_its_covariance():
    covariance = torch.tensor([[1.0, 0.9, 0.2], [0.9, 2.0, -0.5], [0.2, -0.5, 0.5]], dtype=torch.float64)
    prior = AggregatePrior(torch.ones(1), torch.tensor([[1.0, -2.0, 0.0]]), covariance[None])
    samples = prior.sample(50_000, torch.Generator().manual_seed(2)).double()
    torch.testing.assert_close(samples.mean(0), prior.means[0], atol=0.03, rtol=0)
    torch.testing.assert_close(samples.T.cov(), covariance, atol=0.04, rtol=0)


def test_diagonal_samples_follow_the_mixture():
    variances = torch.tensor([[1.0, 4.0], [0.25, 0.5]])
    prior = AggregatePrior(
        torch.tensor([0.25, 0.75]), torch.tensor([[-4.0, 0.0], [4.0, 1.0]]), variances, "diag"
    )
    samples = prior.sample(20_000, torch.Generator().manual_seed(1)).double()
    first = samples[samples[:, 0] < 0]
    assert abs(len(first) / len(samples) - 0.25) < 0.02
    torch.testing.assert_close(first.var(0), variances[0].double(), rtol=0.06, atol=0)


def test_save_load_round_trip_and_seeded_sampling(fitted, tmp_path):
    fitted.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PRIOR_CONFIG_NAME, PRIOR_WEIGHTS_NAME]
    loaded = AggregatePrior.load(tmp_path)
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(loaded, name), getattr(fitted, name))
    assert loaded.selection == fitted.selection and loaded.covariance_type == "full"
    first = fitted.sample(16, torch.Generator().manual_seed(7))
    assert torch.equal(first, loaded.sample(16, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, loaded.sample(16, torch.Generator().manual_seed(8)))
    metadata = json.loads((tmp_path / PRIOR_CONFIG_NAME).read_text())
    assert metadata["type"] == "aggregate" and metadata["latent_dim"] == 2
    assert metadata["n_components"] == fitted.n_components
    assert all("valid_log_likelihood" in c for c in metadata["selection"]["candidates"])


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_spread_by_posteriors_adds_the_posterior_variance(covariance_type, tmp_path):
    variance = torch.tensor([0.5, 2.0], dtype=torch.float64)
    covariances = torch.eye(2)[None] * 0.01 if covariance_type == "full" else torch.full((1, 2), 0.01)
    prior = AggregatePrior(torch.ones(1), torch.tensor([[1.0, -1.0]]), covariances, covariance_type)
    assert prior.posterior_variance is None and prior.spread_by_posteriors() is prior
    prior = AggregatePrior(
        torch.ones(1), torch.tensor([[1.0, -1.0]]), covariances, covariance_type, posterior_variance=variance
    )
    spread = prior.spread_by_posteriors()
    # One component N(m, 0.01 I + diag(v)): its log density at a point by hand.
    z = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    total = 0.01 + variance
    by_hand = -0.5 * (
        ((z - torch.tensor([1.0, -1.0])) ** 2 / total).sum(1) + total.log().sum() + 2 * math.log(2 * math.pi)
    )
    torch.testing.assert_close(spread.log_prob(z), by_hand)
    assert torch.equal(
        prior.sample(5, torch.Generator().manual_seed(0)), prior.sample(5, torch.Generator().manual_seed(0))
    )
    prior.save(tmp_path)  # saved and read back with the mixture; a prior saved before it had none
    loaded = AggregatePrior.load(tmp_path)
    assert torch.equal(loaded.posterior_variance, variance)
    torch.testing.assert_close(loaded.spread_by_posteriors().log_prob(z), by_hand)


def test_standard_prior():
    prior = StandardPrior(3)
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    expected = torch.tensor([-1.5 * math.log(2 * math.pi), -1.5 * math.log(2 * math.pi) - 0.5 * 5.25])
    torch.testing.assert_close(prior.log_prob(z), expected)
    normal = torch.distributions.Normal(0.0, 1.0)
    torch.testing.assert_close(prior.log_prob(z), normal.log_prob(z).sum(-1))
    samples = prior.sample(5, torch.Generator().manual_seed(3))
    assert samples.shape == (5, 3) and samples.dtype == torch.float32
    assert torch.equal(samples, prior.sample(5, torch.Generator().manual_seed(3)))


def test_load_prior(fitted, tmp_path):
    assert isinstance(load_prior(tmp_path, "standard", 5), StandardPrior)
    with pytest.raises(ValueError, match="has no aggregate prior: run `textvae fit-prior"):
        load_prior(tmp_path, "aggregate", 2)
    fitted.save(tmp_path)
    assert torch.equal(load_prior(tmp_path, "aggregate", 2).means, fitted.means)
    with pytest.raises(ValueError, match="latent_dim 2, the model 5"):
        load_prior(tmp_path, "aggregate", 5)
    with pytest.raises(ValueError, match="prior must be one of"):
        load_prior(tmp_path, "vamp", 2)


def rewrite_tensors(folder: Path, **tensors) -> None:
    """Replace some of the saved tensors, keeping the checksum in the JSON consistent."""
    from safetensors.torch import load_file

    saved = load_file(str(folder / PRIOR_WEIGHTS_NAME))
    saved.update(tensors)
    for name in [name for name, value in tensors.items() if value is None]:
        del saved[name]
    save_file(saved, str(folder / PRIOR_WEIGHTS_NAME))
    rewrite_json(
        folder, weights_sha256=hashlib.sha256((folder / PRIOR_WEIGHTS_NAME).read_bytes()).hexdigest()
    )


def rewrite_json(folder: Path, **changes) -> None:
    metadata = json.loads((folder / PRIOR_CONFIG_NAME).read_text())
    metadata.update(changes)
    (folder / PRIOR_CONFIG_NAME).write_text(json.dumps(metadata))


CORRUPTIONS = {
    "missing json": (lambda f: (f / PRIOR_CONFIG_NAME).unlink(), PRIOR_CONFIG_NAME),
    "missing tensors": (lambda f: (f / PRIOR_WEIGHTS_NAME).unlink(), PRIOR_WEIGHTS_NAME),
    "bad json": (lambda f: (f / PRIOR_CONFIG_NAME).write_text("{not json"), PRIOR_CONFIG_NAME),
    "json not an object": (lambda f: (f / PRIOR_CONFIG_NAME).write_text("[1, 2]"), PRIOR_CONFIG_NAME),
    "wrong type": (lambda f: rewrite_json(f, type="standard"), PRIOR_CONFIG_NAME),
    "no latent_dim": (lambda f: rewrite_json(f, latent_dim=None), PRIOR_CONFIG_NAME),
    "bad covariance type": (lambda f: rewrite_json(f, covariance_type="tied"), PRIOR_CONFIG_NAME),
    "json disagrees": (lambda f: rewrite_json(f, n_components=99), PRIOR_WEIGHTS_NAME),
    "truncated tensors": (
        lambda f: (f / PRIOR_WEIGHTS_NAME).write_bytes((f / PRIOR_WEIGHTS_NAME).read_bytes()[:40]),
        PRIOR_WEIGHTS_NAME,
    ),
    "garbled tensors, checksum updated": (
        lambda f: ((f / PRIOR_WEIGHTS_NAME).write_bytes(b"garbage" * 10), rewrite_tensors_checksum(f)),
        PRIOR_WEIGHTS_NAME,
    ),
    "missing tensor": (lambda f: rewrite_tensors(f, weights=None), PRIOR_WEIGHTS_NAME),
    "wrong shape": (
        lambda f: rewrite_tensors(f, means=torch.zeros(3, 5, dtype=torch.float64)),
        PRIOR_WEIGHTS_NAME,
    ),
    "non-finite": (
        lambda f: rewrite_tensors(f, means=torch.full((3, 2), math.nan, dtype=torch.float64)),
        PRIOR_WEIGHTS_NAME,
    ),
    "weights do not sum to 1": (
        lambda f: rewrite_tensors(f, weights=torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)),
        PRIOR_WEIGHTS_NAME,
    ),
    "not positive-definite": (
        lambda f: rewrite_tensors(
            f, covariances=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]] * 3, dtype=torch.float64)
        ),
        PRIOR_WEIGHTS_NAME,
    ),
}


def rewrite_tensors_checksum(folder: Path) -> None:
    rewrite_json(
        folder, weights_sha256=hashlib.sha256((folder / PRIOR_WEIGHTS_NAME).read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_files_raise_naming_the_file(case, tmp_path):
    true_prior().save(tmp_path)
    AggregatePrior.load(tmp_path)  # intact before the damage
    damage, file_name = CORRUPTIONS[case]
    damage(tmp_path)
    with pytest.raises(ValueError, match=file_name.replace(".", r"\.")) as error:
        AggregatePrior.load(tmp_path)
    assert "\n" not in str(error.value)


BAD_FITS = {
    "1-D train": (dict(train_mu=np.zeros(10)), "train_mu must have shape"),
    "dimensions differ": (dict(valid_mu=np.zeros((5, 3))), "valid_mu has 3"),
    "non-finite": (dict(train_mu=np.full((10, 2), np.inf)), "non-finite"),
    "one train point": (dict(train_mu=np.zeros((1, 2))), "at least 2 points"),
    "no valid point": (dict(valid_mu=np.zeros((0, 2))), "at least 1 points"),
    "bad components": (dict(components=(0, 2)), "components must be positive"),
    "no components": (dict(components=()), "components must be positive"),
    "bad covariance type": (dict(covariance_type="tied"), "covariance_type"),
    "bad max_train": (dict(max_train=1), "max_train"),
}


@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_fit_inputs_raise(case):
    changes, message = BAD_FITS[case]
    options = dict(train_mu=draw_mixture(20, 0), valid_mu=draw_mixture(5, 1), components=(1, 2))
    options.update(changes)
    with pytest.raises(ValueError, match=message):
        fit_aggregate_prior(**options)


@pytest.mark.parametrize(
    "build",
    [
        lambda: AggregatePrior(torch.ones(2) / 2, torch.zeros(2, 3), torch.eye(3).expand(3, 3, 3)),
        lambda: AggregatePrior(torch.ones(1), torch.zeros(1, 2), torch.ones(1, 2), "tied"),
        lambda: AggregatePrior(
            torch.ones(1), torch.zeros(1, 2), torch.ones(1, 2), "diag", None, torch.ones(3)
        ),
        lambda: AggregatePrior(
            torch.ones(1), torch.zeros(1, 2), torch.ones(1, 2), "diag", None, torch.zeros(2)
        ),
        lambda: AggregatePrior(
            torch.ones(1), torch.zeros(1, 2), torch.ones(1, 2), "diag", None, torch.tensor([1.0, math.nan])
        ),
        lambda: AggregatePrior(torch.ones(1), torch.zeros(1, 2), -torch.ones(1, 2), "diag"),
        lambda: AggregatePrior(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])),
        lambda: StandardPrior(0),
        lambda: StandardPrior(2).sample(0),
        lambda: StandardPrior(2).log_prob(torch.zeros(4, 3)),
        lambda: true_prior().log_prob(torch.zeros(4)),
    ],
)
def test_bad_prior_arguments_raise(build):
    with pytest.raises(ValueError):
        build()


def tiny_split(count: int, seed: int) -> TokenizedSplit:
    input_ids, attention_mask = random_batch(count, length=7, seed=seed)
    return TokenizedSplit(
        [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
    )


@pytest.mark.parametrize("encoder_type", ["lstm", "transformer"])
def test_fit_run_prior_encodes_each_sentence_and_restores_training_mode(encoder_type):
    extra = TINY_TRANSFORMER if encoder_type == "transformer" else {}
    model = tiny_model(encoder_type=encoder_type, **extra).train()
    train, valid = tiny_split(30, seed=0), tiny_split(10, seed=1)
    means = encode_posterior_means(model, train, batch_size=4)
    assert model.training and means.shape == (30, 4)
    model.eval()
    with torch.no_grad():
        for row in (0, 7, 29):  # batched, length-sorted encoding puts every row back in its place
            expected, _ = model.encode(torch.tensor([train.input_ids[row]]))
            torch.testing.assert_close(means[row], expected[0], atol=1e-5, rtol=1e-5)
    prior = fit_prior(model, train, valid, batch_size=8, components=(1, 2), seed=3)
    assert prior.latent_dim == 4 and prior.selection["num_train"] == 30 and prior.selection["seed"] == 3
    assert not model.training
    # The train sentences' mean posterior variance is kept with the mixture (the aggregate posterior).
    with torch.no_grad():
        _, logvar = model.encode(torch.tensor([train.input_ids[7]]))
    variances = encode_posteriors(model, train, batch_size=4)[1]
    torch.testing.assert_close(variances[7], logvar[0].exp(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prior.posterior_variance, variances.double().mean(dim=0))


def test_fit_run_prior_refuses_a_language_model():
    with pytest.raises(ValueError, match="no latent"):
        fit_prior(tiny_model(latent_dim=0), tiny_split(4, 0), tiny_split(2, 1))
