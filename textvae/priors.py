"""Priors over the latent `z`: the standard normal and a Gaussian mixture fitted to the aggregate posterior.

A VAE that keeps many nats in `z` leaves holes in `N(0, I)`: the aggregate posterior `q(z) = E_x q(z | x)`
covers only part of it, and decoding a `z` drawn from the holes gives broken sentences. Ex-post density
estimation (Ghosh et al. 2020, "From variational to deterministic autoencoders") fixes this after
training: fit a Gaussian mixture to the posterior means of the training sentences and sample from it
instead; the two-stage VAE of Dai & Wipf (2019) makes the same argument with a second VAE. The mixture is
saved beside the model as `prior.safetensors` (tensors, no pickle) and `prior.json` (metadata, and how its
number of components was chosen).

`load_prior` reads a run's prior; the distributions live in `prior_distributions.py` and the fitting in
`prior_fitting.py`, and their public names stay importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from .prior_distributions import (
    COVARIANCE_TYPES,
    PRIOR_CONFIG_NAME,
    PRIOR_TYPES,
    PRIOR_WEIGHTS_NAME,
    AggregatePrior,
    StandardPrior,
)
from .prior_fitting import (
    encode_posterior_means,
    encode_posteriors,
    fit_aggregate_prior,
    fit_prior_for_run,
    fit_run_prior,
)

__all__ = [
    "COVARIANCE_TYPES",
    "PRIOR_CONFIG_NAME",
    "PRIOR_TYPES",
    "PRIOR_WEIGHTS_NAME",
    "AggregatePrior",
    "StandardPrior",
    "encode_posterior_means",
    "encode_posteriors",
    "fit_aggregate_prior",
    "fit_prior_for_run",
    "fit_run_prior",
    "load_prior",
]


def load_prior(folder: str | os.PathLike, kind: str, latent_dim: int) -> StandardPrior | AggregatePrior:
    """The prior of a run folder: "standard" is `N(0, I)`; "aggregate" is the one `fit-prior` saved."""
    if kind not in PRIOR_TYPES:
        raise ValueError(f"prior must be one of {PRIOR_TYPES}, got {kind!r}")
    if kind == "standard":
        return StandardPrior(latent_dim)
    folder = Path(folder)
    if not (folder / PRIOR_CONFIG_NAME).exists() and not (folder / PRIOR_WEIGHTS_NAME).exists():
        raise ValueError(f"{folder} has no aggregate prior: run `textvae fit-prior {folder}`")
    prior = AggregatePrior.load(folder)
    if prior.latent_dim != latent_dim:
        raise ValueError(
            f"the aggregate prior in {folder} has latent_dim {prior.latent_dim}, the model {latent_dim}: "
            f"run `textvae fit-prior {folder}` again"
        )
    return prior
