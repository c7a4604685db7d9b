"""Metrics of the latent code over a whole split: the mutual information `I_q(x; z)` and the active units.

Both follow He et al. (2019, github.com/jxhe/vae-lagging-encoder: `calc_mi`, `calc_au`) and take the
posteriors of every sentence of the split, as `evaluation.evaluate` gathers them.
"""

from __future__ import annotations

import math

import torch

from ..models.modeling import gaussian_log_density

# Most float64 elements of one (rows, N, Z) block of the aggregate posterior in `mutual_information`.
_MI_BLOCK_ELEMENTS = 1 << 22


def mutual_information(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> float:
    """`I_q(x; z)` over a whole split by Monte Carlo (He et al. 2019, Eq. 5; their `calc_mi`).

    mu, logvar: (N, Z) posteriors of all N sentences. `I = E_x E_q(z|x)[log q(z | x)] - E_q(z)[log q(z)]`:
    the first term in closed form (minus the Gaussian entropy), the second with one `z_n ~ q(z | x_n)`
    per sentence and the aggregate posterior `log q(z_n) = logsumexp_m log q(z_n | x_m) - log N` over all N
    sentences, computed in blocks of rows. Equals `E_x[KL(q(z|x) || p(z))] - KL(q(z) || p(z))`; it can
    come out slightly negative near 0.
    """
    if mu.dim() != 2 or mu.shape != logvar.shape or mu.size(0) < 1:
        raise ValueError(
            f"mu and logvar must both be (N, Z) with N >= 1, got {tuple(mu.shape)}, {tuple(logvar.shape)}"
        )
    mu, logvar = mu.double(), logvar.double()
    count, latent_dim = mu.shape
    neg_entropy = (-0.5 * latent_dim * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(dim=1)).mean()
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # (N, Z)
    rows = max(1, _MI_BLOCK_ELEMENTS // (count * latent_dim))
    log_qz = torch.cat(
        [
            gaussian_log_density(z[start : start + rows, None], mu[None], logvar[None]).logsumexp(dim=1)
            for start in range(0, count, rows)
        ]
    ) - math.log(count)  # (N,)
    return float(neg_entropy - log_qz.mean())


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Active units (Burda et al. 2016; He et al. 2019): dimensions where `Var_x(E_q[z | x]) >= threshold`.

    mu: (N, Z) posterior means of the whole split, N >= 2. Returns the count and the (Z,) float64
    variances, with the N - 1 denominator of He et al.'s `calc_au`.
    """
    if mu.dim() != 2 or mu.size(0) < 2:
        raise ValueError(f"mu must be (N, Z) with N >= 2 sentences, got shape {tuple(mu.shape)}")
    variances = mu.double().var(dim=0, correction=1)  # (Z,)
    return int((variances >= threshold).sum()), variances


def latent_results(totals: dict, au_threshold: float, generator: torch.Generator) -> dict:
    """MI, AU and their details from the posteriors of the whole split; None for a language model (and MI
    None for a deterministic autoencoder)."""
    results = {"mi": None, "au": None, "au_threshold": au_threshold, "au_variances": None}
    if not totals["mu"]:
        return results
    mu = torch.cat(totals["mu"])  # (N, Z)
    if totals["logvar"]:  # a deterministic autoencoder has no posterior: MI does not apply
        results["mi"] = mutual_information(mu, torch.cat(totals["logvar"]), generator)
    if mu.size(0) >= 2:
        results["au"], variances = active_units(mu, au_threshold)
        results["au_variances"] = variances.tolist()
    return results
