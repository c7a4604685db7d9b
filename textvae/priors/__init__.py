"""Priors over the latent `z`: the standard normal and a Gaussian mixture fitted to the aggregate posterior.

A VAE that keeps many nats in `z` leaves holes in `N(0, I)`: the aggregate posterior `q(z) = E_x q(z | x)`
covers only part of it, and decoding a `z` drawn from the holes gives broken sentences. Ex-post density
estimation (Ghosh et al. 2020, "From variational to deterministic autoencoders") fixes this after
training: fit a Gaussian mixture to the posterior means of the training sentences and sample from it
instead; the two-stage VAE of Dai & Wipf (2019) makes the same argument with a second VAE. The mixture is
saved beside the model as `prior.safetensors` (tensors, no pickle) and `prior.json` (metadata, and how its
number of components was chosen). `distributions.py` holds the priors and `load_prior`, `fitting.py` the
fitting."""

from ..lazy import lazy_face

_NAMES = {
    "COVARIANCE_TYPES": ".distributions",
    "PRIOR_CONFIG_NAME": ".distributions",
    "PRIOR_TYPES": ".distributions",
    "PRIOR_WEIGHTS_NAME": ".distributions",
    "AggregatePrior": ".distributions",
    "StandardPrior": ".distributions",
    "load_prior": ".distributions",
    "encode_posterior_means": ".fitting",
    "encode_posteriors": ".fitting",
    "fit_aggregate_prior": ".fitting",
    "fit_prior_for_run": ".fitting",
    "fit_prior": ".fitting",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(globals(), _NAMES)
