"""Aggressive inference network training (He et al. 2019, "Lagging Inference Networks and Posterior Collapse
in Variational Autoencoders"): the encoder is optimised to near its best for the current decoder before
each decoder update, so that it stops lagging behind the decoder's posterior and the decoder learns to read z.

`AggressiveTrainingMixin` is the aggressive step of `trainer.Trainer`. The rules follow He et al.'s code,
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

The validation MI is `latent_metrics.mutual_information` over the whole split (He et al.'s `calc_mi`
averages the same estimate taken batch by batch). With autoencoder pretraining (`pretrain_epochs`), the
pretraining epochs train normally and aggressive training starts with the VAE.
"""

from __future__ import annotations

import logging

import torch

from ..distributed import derived_seed
from .step import AGGRESSIVE_ENCODER

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


class AggressiveTrainingMixin:
    """The aggressive step and its end rule, for `trainer.Trainer` (which also mixes in the step)."""

    def _setup_aggressive(self) -> None:
        """Check the model and start the state's aggressive phase (kept in checkpoints for resuming)."""
        self._aggressive_groups = None
        self._epoch_batch_list = (None, None)  # (epoch, its batches): the pool of the random draws
        if not self.config.aggressive_encoder:
            return
        if not self.model.config.has_posterior:
            raise ValueError(
                "aggressive_encoder trains a VAE's encoder: a language model (latent_dim 0) has none, and a "
                "deterministic autoencoder has no posterior to catch up with its decoder"
            )
        self._aggressive_groups = parameter_groups(self.model)
        self.state.setdefault("aggressive", True)
        self.state.setdefault("aggressive_previous_mi", 0.0)  # He et al.'s pre_mi = 0

    def _aggressive_now(self) -> bool:
        """Whether this step is aggressive: the option is on, the phase has not ended, and the VAE trains."""
        return (
            self._aggressive_groups is not None
            and self.state["aggressive"]
            and self.state["step"] >= self.pretrain_steps
        )

    def _step(self, indices, split) -> dict:
        """The training step on a global batch: aggressive while the phase lasts, else the normal one."""
        if not self._aggressive_now():
            metrics = self._train_step(self._shard_batch(indices, split))
            if self._aggressive_groups is not None:
                metrics.update(aggressive=False, aggressive_steps=0)
            return metrics
        encoder, decoder = self._aggressive_groups
        updates = self._encoder_updates(indices, split, frozen=decoder)
        metrics = self._train_step(self._shard_batch(indices, split), frozen=encoder)
        metrics.update(aggressive=True, aggressive_steps=updates)
        return metrics

    def _encoder_updates(self, indices, split, frozen: tuple) -> int:
        """Update only the encoder until its loss stops falling (He et al.'s rule); the number of updates."""
        weight, pretraining = self._kl_weight(), False
        previous, loss_sum, tokens = 1e4, 0.0, 0  # He et al.'s burn_pre_loss, burn_cur_loss, burn_num_words
        updates = 0
        while updates < self.config.aggressive_max_steps:
            draws = (AGGRESSIVE_ENCODER, updates)
            batch = self._shard_batch(indices, split, draws)
            metrics = self._update(batch, weight, pretraining, frozen, draws)
            # metrics["loss"] is the global batch's mean loss: the sum over its sentences, as theirs.
            loss_sum += metrics["loss"] * len(indices)
            tokens += int((split.lengths_at(indices) - 1).sum())  # words + EOS
            updates += 1
            if updates % BLOCK_UPDATES == 0:
                current = loss_sum / tokens
                if previous - current < 0:
                    break
                previous, loss_sum, tokens = current, 0.0, 0
            split, indices = self._random_training_batch(updates)
        return updates

    def _random_training_batch(self, number: int) -> tuple:
        """(split, indices) of a batch of the current epoch drawn uniformly at random, seeded by (seed, step,
        number): the same on every process and after a resume."""
        epoch = self.state["epoch"]
        if self._epoch_batch_list[0] != epoch:
            assert self.sampler.epoch == epoch, "the sampler is set to the current epoch before its steps"
            self._epoch_batch_list = (epoch, self.sampler.batch_arrays())
        batches = self._epoch_batch_list[1]
        seed = derived_seed(self.config.seed, self.state["step"], AGGRESSIVE_ENCODER, number)
        choice = int(torch.randint(len(batches), (1,), generator=torch.Generator().manual_seed(seed)))
        return self.data.train, batches[choice].tolist()

    def _end_aggressive_epoch(self, metrics: dict) -> None:
        """After a VAE epoch's validation: end the aggressive phase when I(x; z) fell (He et al.'s rule)."""
        state = self.state
        if not self._aggressive_now() or state["epoch"] < self.config.pretrain_epochs:
            return
        mutual_info, previous = metrics["mi"], state["aggressive_previous_mi"]
        if mutual_info - previous < 0:
            state["aggressive"] = False
            logger.info(
                "aggressive training ends after epoch %d: valid MI %.3f fell from %.3f; normal steps follow",
                state["epoch"] + 1,
                mutual_info,
                previous,
            )
        state["aggressive_previous_mi"] = mutual_info
