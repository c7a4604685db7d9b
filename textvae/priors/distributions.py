"""The two priors over `z` as distributions: `StandardPrior`, N(0, I), and `AggregatePrior`, a Gaussian mixture.

Both sample with an explicit generator and give log densities; the mixture also saves itself beside the
model as `prior.safetensors` (tensors, no pickle) and `prior.json` (metadata with the tensors' SHA-256,
and how its number of components was chosen), and loads them back checked. `fitting.py` fits it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from ..checkpointing import write_atomically

PRIOR_TYPES = ("standard", "aggregate")
PRIOR_WEIGHTS_NAME = "prior.safetensors"
PRIOR_CONFIG_NAME = "prior.json"
COVARIANCE_TYPES = ("full", "diag")
_TENSOR_NAMES = ("weights", "means", "covariances")
_OPTIONAL_TENSOR_NAMES = ("posterior_variance",)
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
    posterior_variance: (Z,) the mean posterior variance `E_x sigma^2(x)` of the sentences the mixture's
    means came from, or None; `spread_by_posteriors` uses it for the aggregate posterior's density.
    """

    kind = "aggregate"

    def __init__(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        covariances: torch.Tensor,
        covariance_type: str = "full",
        selection: dict | None = None,
        posterior_variance: torch.Tensor | None = None,
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
        if posterior_variance is not None:
            posterior_variance = torch.as_tensor(posterior_variance).detach().to("cpu", torch.float64)
            if posterior_variance.shape != (latent_dim,):
                raise ValueError(
                    f"posterior_variance must have shape ({latent_dim},), got {tuple(posterior_variance.shape)}"
                )
            if not torch.isfinite(posterior_variance).all() or (posterior_variance <= 0).any():
                raise ValueError("posterior_variance must be positive and finite")
        self.weights, self.means, self.covariances = weights, means, covariances
        self.posterior_variance = posterior_variance
        self.covariance_type = covariance_type
        self.selection = dict(selection or {})
        self._scale = scale

    @property
    def latent_dim(self) -> int:
        return self.means.size(1)

    @property
    def n_components(self) -> int:
        return self.means.size(0)

    def spread_by_posteriors(self) -> AggregatePrior:
        """The aggregate posterior's density: every component's covariance plus `diag(posterior_variance)`.

        The mixture is fitted to posterior means, but the aggregate posterior `q(z) = E_x N(mu(x),
        sigma^2(x))` spreads each mean by its posterior's variance; with the mean variance in place of each
        sentence's, the mixture of means convolved with it is the matching density (the prior of
        `nll_aggregate`). In a dimension the model does not use (an inactive unit) the means hardly move
        and the posteriors are N(0, 1): the mixture alone is a point there, the spread one is N(0, 1) as it
        should be. Without a posterior_variance (a prior fitted before it was saved) the mixture itself.
        """
        if self.posterior_variance is None:
            return self
        variance = self.posterior_variance
        covariances = self.covariances + (
            torch.diag(variance) if self.covariance_type == "full" else variance
        )
        return AggregatePrior(self.weights, self.means, covariances, self.covariance_type, self.selection)

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
        tensors = {
            name: getattr(self, name).contiguous()
            for name in _TENSOR_NAMES + _OPTIONAL_TENSOR_NAMES
            if getattr(self, name) is not None
        }
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
                posterior_variance=tensors.get("posterior_variance"),
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
