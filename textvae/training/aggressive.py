"""Aggressive inference network training (He et al. 2019, "Lagging Inference Networks and Posterior Collapse
in Variational Autoencoders"): the encoder is optimised to near its best for the current decoder before
each decoder update, so that it stops lagging behind the decoder's posterior and the decoder learns to read z.

`AggressiveTrainStep` wraps the normal step (`step.TrainStep`) as pythae's `CoupledOptimizerTrainer`
overrides its `train_step`; the trainer keeps the phase in its state (checkpointed) and calls `end_epoch`
after each validation. The rules follow He et al.'s code,
github.com/jxhe/vae-lagging-encoder, `text.py` (`main`: the `while aggressive_flag and sub_iter < 100` loop
and the `iter_ % len(train_data_batch) == 0` check):

- each step, the encoder alone is updated, first on the step's own batch, then each time on a training
  batch drawn uniformly at random (their `np.random.random_integers` over the batches), with the loss of the
  normal step at the step's KL weight; every 15 updates the mean loss per target token of those 15 batches
  is compared with the previous 15's, and the updates stop when it is larger (`burn_pre_loss -
  burn_cur_loss < 0`; the first block compares with 1e4, so it never stops there); at most
  `aggressive_max_steps` updates (their loop allows 99);
- then the decoder alone is updated once on the step's batch, with the same loss;
- gradients are clipped over all the parameters before either update, as theirs are;
- at the end of each epoch, I(x; z) on the validation split is compared with the previous epoch's (0 before
  the first); aggressive training ends for good when it is smaller (`cur_mi - pre_mi < 0`).

The validation MI is `evaluation.latent.mutual_information` over the whole split (He et al.'s `calc_mi`
averages the same estimate taken batch by batch). With autoencoder pretraining (`pretrain_epochs`), the
pretraining epochs train normally and aggressive training starts with the VAE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..distributed import derived_seed
from .step import AGGRESSIVE_ENCODER, TrainStep

logger = logging.getLogger(__name__)

# He et al. compare the encoder's loss over blocks of this many updates (`sub_iter % 15 == 0`).
BLOCK_UPDATES = 15


def parameter_groups(model) -> tuple[tuple, tuple]:
    """(encoder side, decoder side) of a VAE's parameters: q(z | x) is the encoder, the posterior layer and
    BN-VAE's mean norm (He et al.'s `vae.encoder`); the rest (decoder, bag-of-words head) models p(x | z)."""
    encoder_modules = [model.encoder, model.posterior, model.mean_norm]
    encoder_ids = {id(p) for module in encoder_modules if module is not None for p in module.parameters()}
    encoder = tuple(p for p in model.parameters() if id(p) in encoder_ids)
    decoder = tuple(p for p in model.parameters() if id(p) not in encoder_ids)
    return encoder, decoder


class AggressiveTrainStep(TrainStep):
    """He et al.'s aggressive step while the phase lasts, the normal step after it.

    random_batch: `(step, number) -> (split, indices)`, the `number`-th training batch of the current epoch
    drawn at random for step `step` (the same on every process and after a resume); max_updates: most
    encoder-only updates before each decoder update. The other arguments are `TrainStep`'s.
    """

    def __init__(
        self,
        model,
        optimizer,
        config,
        *,
        random_batch: Callable[[int, int], tuple],
        max_updates: int,
        **options,
    ):
        if not model.config.has_posterior:
            raise ValueError(
                "aggressive_encoder trains a VAE's encoder: a language model (latent_dim 0) has none, and a "
                "deterministic autoencoder has no posterior to catch up with its decoder"
            )
        super().__init__(model, optimizer, config, **options)
        self.random_batch, self.max_updates = random_batch, max_updates
        self.encoder_side, self.decoder_side = parameter_groups(model)

    def __call__(
        self,
        split,
        indices: list[int],
        *,
        step: int,
        kl_weight: float,
        free_bits: float,
        aggressive: bool = True,
    ) -> dict:
        """The aggressive step (encoder-only updates, then the decoder's update) when `aggressive`, else the
        normal one; the figures of the decoder's update, with `aggressive` and `aggressive_steps`."""
        if not aggressive:
            metrics = super().__call__(split, indices, step=step, kl_weight=kl_weight, free_bits=free_bits)
            return {**metrics, "aggressive": False, "aggressive_steps": 0}
        updates = self.encoder_updates(split, indices, step=step, kl_weight=kl_weight, free_bits=free_bits)
        batch = self.shard_batch(split, indices, step)
        metrics = self.update(
            batch, step=step, kl_weight=kl_weight, free_bits=free_bits, frozen=self.encoder_side
        )
        return {**metrics, "aggressive": True, "aggressive_steps": updates}

    def encoder_updates(self, split, indices, *, step: int, kl_weight: float, free_bits: float) -> int:
        """Update only the encoder until its loss stops falling (He et al.'s rule); the number of updates."""
        previous, loss_sum, tokens = 1e4, 0.0, 0  # He et al.'s burn_pre_loss, burn_cur_loss, burn_num_words
        updates = 0
        while updates < self.max_updates:
            draws = (AGGRESSIVE_ENCODER, updates)
            batch = self.shard_batch(split, indices, step, draws)
            metrics = self.update(
                batch,
                step=step,
                kl_weight=kl_weight,
                free_bits=free_bits,
                frozen=self.decoder_side,
                draws=draws,
            )
            # metrics["loss"] is the global batch's mean loss: the sum over its sentences, as theirs.
            loss_sum += metrics["loss"] * len(indices)
            tokens += int((split.lengths_at(indices) - 1).sum())  # words + EOS
            updates += 1
            if updates % BLOCK_UPDATES == 0:
                current = loss_sum / tokens
                if previous - current < 0:
                    break
                previous, loss_sum, tokens = current, 0.0, 0
            split, indices = self.random_batch(step, updates)
        return updates

    @staticmethod
    def end_epoch(state: dict, mutual_info: float) -> None:
        """After a VAE epoch's validation: end the phase for good (`state["aggressive"]`) when I(x; z) fell
        below the previous epoch's (He et al.'s rule; 0 before the first)."""
        previous = state["aggressive_previous_mi"]
        if mutual_info - previous < 0:
            state["aggressive"] = False
            logger.info(
                "aggressive training ends after epoch %d: valid MI %.3f fell from %.3f; normal steps follow",
                state["epoch"] + 1,
                mutual_info,
                previous,
            )
        state["aggressive_previous_mi"] = mutual_info


def random_batch_drawer(sampler, split, seed: int) -> Callable[[int, int], tuple]:
    """`(step, number) -> (split, indices)`: a batch of the sampler's current epoch drawn uniformly at random
    (He et al.'s `np.random.random_integers` over the batches), seeded by (seed, step, number)."""
    cache = {"epoch": None, "batches": None}

    def draw(step: int, number: int) -> tuple:
        if cache["epoch"] != sampler.epoch:
            cache["epoch"], cache["batches"] = sampler.epoch, sampler.batch_arrays()
        batches = cache["batches"]
        key = derived_seed(seed, step, AGGRESSIVE_ENCODER, number)
        choice = int(torch.randint(len(batches), (1,), generator=torch.Generator().manual_seed(key)))
        return split, batches[choice].tolist()

    return draw
