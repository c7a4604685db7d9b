"""The validation pass of training: rec, KL, -ELBO, the PPL bound and active units, once per epoch.

A quick check with one `z` per sentence, for choosing the best model and early stopping; `evaluation.py`
computes the papers' metrics (the importance-weighted NLL among them) on a saved run.
"""

from __future__ import annotations

import math

import torch

from .. import distributed
from ..data.bucketing import LengthBucketSampler
from ..data.storage import TokenizedSplit, collate
from ..distributed import derived_seed
from ..evaluation.latent import mutual_information
from ..models.modeling import TextVAEModel, gaussian_kl

_MI_DRAWS = -1  # the seed key of the MI's z draws, apart from the batches' (their numbers are >= 0)


@torch.no_grad()
def validate(
    model: TextVAEModel,
    split: TokenizedSplit,
    batch_size: int,
    seed: int = 0,
    shard: bool = False,
    mutual_info: bool = False,
) -> dict:
    """rec, KL, -ELBO (weight 1) per sentence, the PPL bound, active units and the (Z,) KL per dimension.

    z is drawn with a generator of its own for each batch, seeded by (seed, batch number), so validation
    neither depends on nor moves the training RNG. shard: in a process group, every process scores every
    N-th batch and the figures are summed over the processes (every process must call it); they equal
    one process's up to the order of the sums. mutual_info: also "mi", I(x; z) over the whole split
    (`evaluation.latent.mutual_information`, its z drawn from a generator seeded by `seed`), which aggressive
    training's end rule reads (He et al. 2019).
    """
    model.eval()
    device = next(model.parameters()).device
    batches = LengthBucketSampler(split.lengths, batch_size, shuffle=False).batch_arrays()
    rank, processes = (distributed.rank(), distributed.world_size()) if shard else (0, 1)
    sums = torch.zeros(2 + model.config.latent_dim, dtype=torch.float64, device=device)  # rec, kl, (Z,)
    means = []
    for number in range(rank, len(batches), processes):
        batch = {
            k: v.to(device) for k, v in collate(split, batches[number], model.config.pad_token_id).items()
        }
        z = None
        if model.config.has_latent and not model.config.has_posterior:
            z, _ = model.encode_batch(batch)  # a deterministic autoencoder's code: no KL term
            means.append((number, z.float().cpu(), None))
        elif model.config.has_latent:
            mu, logvar = model.encode_batch(batch)  # (B, Z)
            generator = torch.Generator(device=device).manual_seed(derived_seed(seed, number))
            z = model.reparameterize(mu, logvar, generator)
            kl = gaussian_kl(mu, logvar).double()  # (B, Z)
            sums[1] += kl.sum()
            sums[2:] += kl.sum(dim=0)
            means.append((number, mu.float().cpu(), logvar.float().cpu() if mutual_info else None))
        rec, _ = model.reconstruction_loss(batch["input_ids"], batch["attention_mask"], z)
        sums[0] += rec.double().sum()
    if shard:
        distributed.all_reduce_sum(sums)
        means = [item for part in distributed.gather_objects(means) for item in part]
    count, tokens = len(split), split.num_target_tokens()
    rec_total, kl_total = sums[:2].tolist()
    metrics = {"rec": rec_total / count, "kl": kl_total / count}
    metrics["neg_elbo"] = metrics["rec"] + metrics["kl"]
    metrics["ppl_bound"] = math.exp((rec_total + kl_total) / tokens)
    if means:
        means.sort(key=lambda item: item[0])
        if mutual_info and model.config.has_posterior:
            logvars = torch.cat([logvar for _, _, logvar in means])  # (N, Z)
        means = torch.cat([mu for _, mu, _ in means])  # (N, Z)
        if mutual_info and model.config.has_posterior:
            generator = torch.Generator().manual_seed(derived_seed(seed, _MI_DRAWS))
            metrics["mi"] = mutual_information(means, logvars, generator)
        metrics["au"] = int((means.var(dim=0) >= 0.01).sum())
        metrics["kl_per_dim"] = (sums[2:] / count).tolist()  # which dimensions carry the KL
    return metrics
