"""Fitting the aggregate-posterior prior: encode a run's sentences, fit Gaussian mixtures, keep the best.

Ex-post density estimation (Ghosh et al. 2020): after training, a Gaussian mixture is fitted to the
posterior means of the training sentences, its number of components chosen by the held-out likelihood of
the validation sentences' means. `distributions.py` holds the prior itself (sampling, density, saving, loading).
scikit-learn is imported where needed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.bucketing import LengthBucketSampler
from ..data.storage import TokenizedSplit, collate
from .distributions import COVARIANCE_TYPES, AggregatePrior

logger = logging.getLogger(__name__)


def _check_latents(name: str, points, minimum: int):
    import numpy as np

    array = np.asarray(
        points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64
    )
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, Z), got {array.shape}")
    if array.shape[0] < minimum:
        raise ValueError(f"{name} needs at least {minimum} points, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values")
    return array


def _check_fit_options(components, covariance_type: str, max_train: int) -> list[int]:
    """The sorted distinct candidate numbers of components; `ValueError` for a bad option."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
    if isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 2:
        raise ValueError(f"max_train must be an integer of at least 2, got {max_train!r}")
    candidates = sorted(set(components))
    if not candidates or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in candidates):
        raise ValueError(f"components must be positive integers, got {components!r}")
    return candidates


def fit_aggregate_prior(
    train_mu,
    valid_mu,
    components: Sequence[int] = (1, 2, 4, 8, 16, 32),
    covariance_type: str = "full",
    seed: int = 0,
    max_train: int = 20_000,
    reg_covar: float | None = None,
    max_iter: int = 200,
    posterior_variance=None,
) -> AggregatePrior:
    """A Gaussian mixture fitted to posterior means: train_mu (N, Z) to fit, valid_mu (M, Z) to choose.

    Each candidate number of components is fitted with EM (scikit-learn) on at most `max_train` train
    points (a seeded subsample); the one with the best mean log-likelihood of the held-out `valid_mu`
    wins, ties going to fewer components. Held-out likelihood rather than BIC: what matters is how well
    the prior covers sentences it was not fitted on. Candidates with more components than train points
    are skipped.
    reg_covar: added to every covariance diagonal; None takes 1e-4 times the mean per-dimension variance
    of the train points, so collapsed (inactive) dimensions, whose means are nearly constant, cannot make
    a covariance singular, whatever the scale of `z`.
    posterior_variance: (Z,) the train sentences' mean posterior variance, kept with the prior for
    `AggregatePrior.spread_by_posteriors` (the density `nll_aggregate` scores under); None leaves it out.
    """
    import numpy as np

    candidates = _check_fit_options(components, covariance_type, max_train)
    train = _check_latents("train_mu", train_mu, minimum=2)
    valid = _check_latents("valid_mu", valid_mu, minimum=1)
    if train.shape[1] != valid.shape[1]:
        raise ValueError(f"train_mu has {train.shape[1]} dimensions but valid_mu has {valid.shape[1]}")
    if reg_covar is not None and not (math.isfinite(reg_covar) and reg_covar > 0):
        raise ValueError(f"reg_covar must be positive, got {reg_covar}")
    num_available = train.shape[0]
    if num_available > max_train:
        rows = np.random.default_rng(seed).choice(num_available, size=max_train, replace=False)
        train = train[np.sort(rows)]
    if reg_covar is None:
        reg_covar = max(1e-4 * float(train.var(axis=0).mean()), 1e-10)
    options = dict(covariance_type=covariance_type, reg_covar=reg_covar, max_iter=max_iter, random_state=seed)
    # BLAS on one thread: EM's matrices are small (latent_dim squared), and OpenBLAS's threads only wait on
    # each other (scripts/README.md, "Measurements behind the code"); one thread also makes the fit the
    # same whatever the machine's thread settings.
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    with threadpool_limits(limits=1, user_api="blas"):
        results, best = _fit_candidates(train, valid, candidates, options)
    if best is None:
        raise ValueError(f"no mixture could be fitted for components {candidates} on {train.shape[0]} points")
    selection = {
        "criterion": "mean valid log-likelihood",
        "candidates": results,
        "chosen_n_components": int(best.n_components),
        "num_train": int(train.shape[0]),
        "num_train_available": int(num_available),
        "num_valid": int(valid.shape[0]),
        "seed": seed,
        "reg_covar": reg_covar,
        "max_iter": max_iter,
    }
    return AggregatePrior(
        torch.from_numpy(best.weights_ / best.weights_.sum()),
        torch.from_numpy(best.means_),
        torch.from_numpy(best.covariances_),
        covariance_type=covariance_type,
        selection=selection,
        posterior_variance=posterior_variance,
    )


def _fit_candidates(train, valid, candidates: list[int], options: dict) -> tuple[list[dict], object]:
    """Fit a `GaussianMixture(count, **options)` per candidate count on `train`, score it on `valid`:
    (one record per candidate, the best mixture or None), the first of equal scores winning."""
    from sklearn.mixture import GaussianMixture

    results, best, best_score = [], None, -math.inf
    for count in candidates:
        if count > train.shape[0]:
            logger.info("skipping %d components: only %d train points", count, train.shape[0])
            continue
        mixture = GaussianMixture(count, **options)
        try:
            mixture.fit(train)
        except ValueError as error:  # ill-defined covariances despite reg_covar
            logger.warning("fitting %d components failed: %s", count, str(error).splitlines()[0])
            results.append({"n_components": count, "valid_log_likelihood": None, "error": str(error)})
            continue
        score = float(mixture.score(valid))
        results.append(
            {
                "n_components": count,
                "valid_log_likelihood": score,
                "train_log_likelihood": float(mixture.score(train)),
                "converged": bool(mixture.converged_),
                "n_iter": int(mixture.n_iter_),
            }
        )
        logger.info("%d components: mean valid log-likelihood %.4f", count, score)
        if score > best_score:
            best, best_score = mixture, score
    return results, best


def encode_posterior_means(
    model, split: TokenizedSplit, batch_size: int = 256, show_progress: bool = False
) -> torch.Tensor:
    """(N, Z) float32 posterior means `mu` of every sentence of `split`, in the split's order, on the CPU."""
    return encode_posteriors(model, split, batch_size, show_progress)[0]


@torch.no_grad()
def encode_posteriors(
    model, split: TokenizedSplit, batch_size: int = 256, show_progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, Z) float32 posterior means and variances of every sentence of `split`, in its order, on the CPU
    (variances 0 for a deterministic autoencoder, whose codes are points)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not model.config.has_latent:
        raise ValueError("this model has no latent (latent_dim=0): it has no posterior to fit a prior to")
    if len(split) == 0:
        raise ValueError("cannot encode an empty split")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout, and batch-norm of the means from its running statistics
    means = torch.empty(len(split), model.config.latent_dim)
    variances = torch.empty(len(split), model.config.latent_dim)
    # Batches of similar lengths: little padding. Rows go back to their place, so order is unchanged.
    batches = LengthBucketSampler(split.lengths, batch_size, shuffle=False).batches()
    try:
        with tqdm(total=len(split), desc="encoding", unit="sent", disable=not show_progress) as progress:
            for indices in batches:
                batch = {
                    k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()
                }
                mu, logvar = model.encode_batch(batch)  # (B, Z)
                means[indices] = mu.float().cpu()
                # A deterministic autoencoder's code is a point: no posterior variance.
                variances[indices] = 0.0 if logvar is None else logvar.float().exp().cpu()
                progress.update(len(indices))
    finally:
        model.train(was_training)
    return means, variances


def fit_prior(
    model,
    train_split: TokenizedSplit,
    valid_split: TokenizedSplit,
    batch_size: int = 256,
    show_progress: bool = False,
    **fit_options,
) -> AggregatePrior:
    """Encode both splits' posteriors and fit `fit_aggregate_prior(train_mu, valid_mu, **fit_options)` to
    the means, keeping the train sentences' mean posterior variance with it (`spread_by_posteriors`)."""
    train_mu, train_variance = encode_posteriors(model, train_split, batch_size, show_progress)  # (N, Z)
    valid_mu = encode_posterior_means(model, valid_split, batch_size, show_progress)  # (M, Z)
    # A deterministic autoencoder's codes are points: the mixture alone is their density.
    variance = train_variance.double().mean(dim=0) if model.config.has_posterior else None  # (Z,)
    return fit_aggregate_prior(train_mu, valid_mu, posterior_variance=variance, **fit_options)


def fit_prior_for_run(
    run: str | os.PathLike,
    device: str | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
    **fit_options,
) -> AggregatePrior:
    """Fit the aggregate prior of a saved run on the training and validation sentences it was trained on
    (its train_config.json says which), save it in the run folder, and return it."""
    from ..checkpointing import load_run
    from ..data.config import DataConfig
    from ..data.prepare import prepare_data

    run = Path(run)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, encoder_tokenizer = load_run(run, device)
    if not model.config.has_latent:
        raise ValueError(f"{run} is a language model (latent_dim=0): it has no posterior to fit a prior to")
    data = prepare_data(DataConfig.from_run(run), tokenizer, encoder_tokenizer)
    prior = fit_prior(model, data.train, data.validation, batch_size, show_progress, **fit_options)
    prior.save(run)
    return prior
