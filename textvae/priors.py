"""Priors over the latent `z`: the standard normal and a Gaussian mixture fitted to the aggregate posterior.

A VAE that keeps many nats in `z` leaves holes in `N(0, I)`: the aggregate posterior `q(z) = E_x q(z | x)`
covers only part of it, and decoding a `z` drawn from the holes gives broken sentences. Ex-post density
estimation (Ghosh et al. 2020, "From variational to deterministic autoencoders") fixes this after
training: fit a Gaussian mixture to the posterior means of the training sentences and sample from it
instead; the two-stage VAE of Dai & Wipf (2019) makes the same argument with a second VAE. The mixture is
saved beside the model as `prior.safetensors` (tensors, no pickle) and `prior.json` (metadata, and how its
number of components was chosen).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpointing import write_atomically
from .data import LengthBucketSampler, TokenizedSplit, collate

logger = logging.getLogger(__name__)

PRIOR_TYPES = ("standard", "aggregate")
PRIOR_WEIGHTS_NAME = "prior.safetensors"
PRIOR_CONFIG_NAME = "prior.json"
COVARIANCE_TYPES = ("full", "diag")
_TENSOR_NAMES = ("weights", "means", "covariances")
_LOG_2PI = math.log(2 * math.pi)


def _check_points(z: torch.Tensor, latent_dim: int) -> None:
    if z.dim() != 2 or z.size(1) != latent_dim:
        raise ValueError(f"z must have shape (N, {latent_dim}), got {tuple(z.shape)}")


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of samples must be a positive integer, got {n!r}")


class StandardPrior:
    """The VAE's own prior `p(z) = N(0, I)` of `latent_dim` dimensions."""

    kind = "standard"

    def __init__(self, latent_dim: int):
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = latent_dim

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, Z) float32 draws; the same generator state gives the same draws."""
        _check_count(n)
        return torch.randn((n, self.latent_dim), generator=generator)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(N, Z) points -> (N,) log density `-(|z|^2 + Z log 2 pi) / 2`."""
        _check_points(z, self.latent_dim)
        return -0.5 * (z.pow(2).sum(dim=-1) + self.latent_dim * _LOG_2PI)


class AggregatePrior:
    """A Gaussian mixture over `z`: weights (C,), means (C, Z), covariances (C, Z, Z) or (C, Z) for "diag".

    Parameters are kept in float64 on the CPU; samples come back as float32. `selection` records how the
    number of components was chosen (see `fit_aggregate_prior`) and is saved with the prior.
    """

    kind = "aggregate"

    def __init__(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        covariances: torch.Tensor,
        covariance_type: str = "full",
        selection: dict | None = None,
    ):
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
        weights, means, covariances = (
            torch.as_tensor(t).detach().to("cpu", torch.float64) for t in (weights, means, covariances)
        )
        if means.dim() != 2 or means.size(0) < 1 or means.size(1) < 1:
            raise ValueError(f"means must have shape (C, Z), got {tuple(means.shape)}")
        count, latent_dim = means.shape
        if weights.shape != (count,):
            raise ValueError(f"weights must have shape ({count},), got {tuple(weights.shape)}")
        expected = (count, latent_dim, latent_dim) if covariance_type == "full" else (count, latent_dim)
        if covariances.shape != expected:
            raise ValueError(
                f"{covariance_type} covariances must have shape {expected}, got {tuple(covariances.shape)}"
            )
        for name, tensor in zip(_TENSOR_NAMES, (weights, means, covariances), strict=True):
            if not torch.isfinite(tensor).all():
                raise ValueError(f"the mixture's {name} hold non-finite values")
        if (weights <= 0).any() or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise ValueError(f"mixture weights must be positive and sum to 1, got sum {float(weights.sum())}")
        if covariance_type == "full":
            if not torch.allclose(covariances, covariances.transpose(1, 2), rtol=1e-6, atol=1e-10):
                raise ValueError("full covariances must be symmetric")
            scale, info = torch.linalg.cholesky_ex(covariances)  # (C, Z, Z) lower triangular
            if (info != 0).any():
                bad = int(torch.nonzero(info)[0, 0])
                raise ValueError(f"the covariance of component {bad} is not positive-definite")
        else:
            if (covariances <= 0).any():
                raise ValueError("diagonal covariances must be positive")
            scale = covariances.sqrt()  # (C, Z) standard deviations
        self.weights, self.means, self.covariances = weights, means, covariances
        self.covariance_type = covariance_type
        self.selection = dict(selection or {})
        self._scale = scale

    @property
    def latent_dim(self) -> int:
        return self.means.size(1)

    @property
    def n_components(self) -> int:
        return self.means.size(0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, Z) float32 draws: a component by its weight, then `mean + L eps` with `L L^T = covariance`.

        Both draws use `generator` (a CPU one), so the same seed repeats the same samples exactly.
        """
        _check_count(n)
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn((n, self.latent_dim), generator=generator, dtype=torch.float64)  # (n, Z)
        if self.covariance_type == "full":
            offset = (self._scale[component] @ eps.unsqueeze(-1)).squeeze(-1)  # (n, Z)
        else:
            offset = self._scale[component] * eps  # (n, Z)
        return (self.means[component] + offset).float()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(N, Z) points -> (N,) mixture log density, computed in float64, returned in z's dtype."""
        _check_points(z, self.latent_dim)
        points = z.detach().to("cpu", torch.float64)
        per_component = []
        for index in range(self.n_components):  # one (N, Z) block at a time: memory stays O(N Z)
            centred = points - self.means[index]  # (N, Z)
            if self.covariance_type == "full":
                scale = self._scale[index]  # (Z, Z)
                white = torch.linalg.solve_triangular(scale, centred.T, upper=False).T  # (N, Z)
                log_det = 2.0 * scale.diagonal().log().sum()
            else:
                white = centred / self._scale[index]
                log_det = self.covariances[index].log().sum()
            log_density = -0.5 * (white.pow(2).sum(dim=-1) + log_det + self.latent_dim * _LOG_2PI)  # (N,)
            per_component.append(log_density + self.weights[index].log())
        log_prob = torch.logsumexp(torch.stack(per_component, dim=-1), dim=-1)  # (N,)
        return log_prob.to(device=z.device, dtype=z.dtype if z.is_floating_point() else torch.float32)

    def save(self, folder: str | os.PathLike) -> None:
        """Write `prior.safetensors` then `prior.json` into `folder`, each through a temporary file.

        The JSON holds the SHA-256 of the tensor file, so a crash between the two renames, or a tensor
        file from another fit, is caught at load time instead of silently mixing two priors.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        tensors = {name: getattr(self, name).contiguous() for name in _TENSOR_NAMES}
        write_atomically(folder, lambda staging: save_file(tensors, str(staging / PRIOR_WEIGHTS_NAME)))
        metadata = {
            "type": self.kind,
            "latent_dim": self.latent_dim,
            "n_components": self.n_components,
            "covariance_type": self.covariance_type,
            "weights_sha256": _sha256(folder / PRIOR_WEIGHTS_NAME),
            "selection": self.selection,
        }
        text = json.dumps(metadata, indent=2) + "\n"
        write_atomically(folder, lambda staging: (staging / PRIOR_CONFIG_NAME).write_text(text))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> AggregatePrior:
        """The prior saved in `folder`; `ValueError` naming the file when one is missing or inconsistent."""
        folder = Path(folder)
        config_path, weights_path = folder / PRIOR_CONFIG_NAME, folder / PRIOR_WEIGHTS_NAME
        metadata = _read_metadata(config_path)
        if not weights_path.is_file():
            raise ValueError(f"prior tensors not found: {weights_path}")
        if metadata.get("weights_sha256") != _sha256(weights_path):
            raise ValueError(
                f"{weights_path} does not match {config_path} (checksum differs): fit the prior again"
            )
        tensors = _read_tensors(weights_path)
        try:
            prior = cls(
                tensors["weights"],
                tensors["means"],
                tensors["covariances"],
                covariance_type=metadata["covariance_type"],
                selection=metadata.get("selection"),
            )
        except ValueError as error:
            raise ValueError(f"invalid prior in {weights_path}: {error}") from None
        if (prior.latent_dim, prior.n_components) != (metadata["latent_dim"], metadata["n_components"]):
            raise ValueError(
                f"{weights_path} holds {prior.n_components} components of {prior.latent_dim} dimensions but "
                f"{config_path} says {metadata['n_components']} of {metadata['latent_dim']}"
            )
        return prior


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_metadata(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"prior metadata not found: {path}")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not valid JSON") from None
    if not isinstance(metadata, dict) or metadata.get("type") != AggregatePrior.kind:
        raise ValueError(f"{path} does not describe an aggregate prior")
    for key, kind in (("latent_dim", int), ("n_components", int), ("covariance_type", str)):
        if not isinstance(metadata.get(key), kind) or isinstance(metadata.get(key), bool):
            raise ValueError(f"{path} lacks a valid {key!r}")
    if metadata["covariance_type"] not in COVARIANCE_TYPES:
        raise ValueError(f"{path} has an unknown covariance_type {metadata['covariance_type']!r}")
    if not isinstance(metadata.get("selection", {}), dict):
        raise ValueError(f"{path} has a 'selection' that is not an object")
    return metadata


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__})") from None
    missing = [name for name in _TENSOR_NAMES if name not in tensors]
    if missing:
        raise ValueError(f"{path} lacks the tensors {missing}")
    return tensors


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


def fit_aggregate_prior(
    train_mu,
    valid_mu,
    components: Sequence[int] = (1, 2, 4, 8, 16, 32),
    covariance_type: str = "full",
    seed: int = 0,
    max_train: int = 20_000,
    reg_covar: float | None = None,
    max_iter: int = 200,
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
    """
    import numpy as np
    from sklearn.mixture import GaussianMixture

    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")
    if isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 2:
        raise ValueError(f"max_train must be an integer of at least 2, got {max_train!r}")
    candidates = sorted(set(components))
    if not candidates or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in candidates):
        raise ValueError(f"components must be positive integers, got {components!r}")
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
    results, best, best_score = [], None, -math.inf
    for count in candidates:
        if count > train.shape[0]:
            logger.info("skipping %d components: only %d train points", count, train.shape[0])
            continue
        mixture = GaussianMixture(
            count, covariance_type=covariance_type, reg_covar=reg_covar, max_iter=max_iter, random_state=seed
        )
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
    )


@torch.no_grad()
def encode_posterior_means(
    model, split: TokenizedSplit, batch_size: int = 256, show_progress: bool = False
) -> torch.Tensor:
    """(N, Z) float32 posterior means `mu` of every sentence of `split`, in the split's order, on the CPU."""
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
    # Batches of similar lengths: little padding. Rows go back to their place, so order is unchanged.
    batches = LengthBucketSampler(split.lengths, batch_size, shuffle=False).batches()
    try:
        with tqdm(total=len(split), desc="encoding", unit="sent", disable=not show_progress) as progress:
            for indices in batches:
                batch = {
                    k: v.to(device) for k, v in collate(split, indices, model.config.pad_token_id).items()
                }
                if "encoder_input_ids" in batch:  # a pretrained encoder reads its own tokenizer's ids
                    mu, _ = model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
                else:
                    mu, _ = model.encode(batch["input_ids"], batch["attention_mask"])
                means[indices] = mu.float().cpu()
                progress.update(len(indices))
    finally:
        model.train(was_training)
    return means


def fit_run_prior(
    model,
    train_split: TokenizedSplit,
    valid_split: TokenizedSplit,
    batch_size: int = 256,
    show_progress: bool = False,
    **fit_options,
) -> AggregatePrior:
    """Encode both splits' posterior means and fit `fit_aggregate_prior(train_mu, valid_mu, **fit_options)`."""
    train_mu = encode_posterior_means(model, train_split, batch_size, show_progress)  # (N, Z)
    valid_mu = encode_posterior_means(model, valid_split, batch_size, show_progress)  # (M, Z)
    return fit_aggregate_prior(train_mu, valid_mu, **fit_options)


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


def fit_prior_for_run(
    run: str | os.PathLike,
    device: str | None = None,
    batch_size: int = 256,
    show_progress: bool = False,
    **fit_options,
) -> AggregatePrior:
    """Fit the aggregate prior of a saved run on the training and validation sentences it was trained on
    (its train_config.json says which), save it in the run folder, and return it."""
    from .checkpointing import TRAIN_CONFIG_NAME, load_run, read_json
    from .training_setup import prepare_data
    from .training_config import TrainConfig

    run = Path(run)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, encoder_tokenizer = load_run(run, device)
    if not model.config.has_latent:
        raise ValueError(f"{run} is a language model (latent_dim=0): it has no posterior to fit a prior to")
    config = TrainConfig.from_dict(read_json(run / TRAIN_CONFIG_NAME))
    data = prepare_data(config, tokenizer, encoder_tokenizer)
    prior = fit_run_prior(model, data.train, data.validation, batch_size, show_progress, **fit_options)
    prior.save(run)
    return prior
