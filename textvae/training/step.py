"""One optimiser step of training: this process's share of the global batch, its loss, backward, update.

`TrainingStepMixin` is the per-step half of `trainer.Trainer` (the epoch loop, checkpoints and validation
are the other half). Under torchrun every process takes its contiguous share of each global batch, and the
loss is that of the whole global batch (`_global_batch_loss`), so the weights after each step equal those
of one process (`distributed.py` says how).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..data.noise import apply_noise, draw_noise
from ..data.storage import collate
from ..distributed import derived_seed, differentiable_all_reduce_sum, shard_bounds
from ..models.modeling import free_bits_kl
from .config import kl_weight

# Streams of a step's seeds, `derived_seed(seed, step, stream)`: z's noise and word dropout, dropout layers
# (one stream per process), the new decoder after autoencoder pretraining, and the encoder-only updates of
# aggressive training (`aggressive.py`: their batches and, as extra keys, their own draws).
STEP_DRAWS, DROPOUT_LAYERS, DECODER_RESET, AGGRESSIVE_ENCODER = 0, 1, 2, 3


class TrainingStepMixin:
    """The step of `trainer.Trainer`, which sets what it reads: `config`, `model`, `forward_model`, `data`,
    `device`, `rank`, `world_size`, `sampler`, `state`, `optimizer`, `scheduler`, `controller`,
    `pretrain_steps`, `total_steps`, `encoder_pad_id`, `run_dir` and the step's `_generator`,
    `_global_batch_size` and `_shard_weight`.
    """

    def _autocast(self):
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _kl_weight(self) -> float:
        """0 while pretraining the autoencoder (and always for a language model or a deterministic
        autoencoder, which have no KL term);
        then the schedule, counted from the VAE's first step."""
        step = self.state["step"] - self.pretrain_steps
        if step < 0 or not self.model.config.has_posterior:
            return 0.0
        if self.controller is not None:
            return self.controller.beta
        return kl_weight(self.config, step, self.total_steps - self.pretrain_steps)

    def _shard_batch(self, indices: list[int], split=None, draws: tuple[int, ...] = ()) -> dict:
        """This process's share of a global batch, moved to the device, with the step's random draws.

        indices: the global batch's sentences in `split` (default: the training split; with streaming,
        the current pool).

        The draws (z's noise eps, the word dropout draws) are made for the whole global batch from a
        generator seeded by (seed, step), and each process keeps the rows of its sentences: N processes
        draw exactly what one process does, and a resumed run what an uninterrupted one does.
        draws: extra keys of the seed, for more than one update in a step (aggressive training's encoder
        updates); none for the step's own update.
        When the global batch has fewer sentences than there are processes (an epoch's ragged last batch),
        a process without one computes the first sentence with weight 0, so that every process still
        takes part in the step (BN-VAE's batch statistics then count that sentence twice).
        """
        count = len(indices)
        start, stop = shard_bounds(count, self.rank, self.world_size)
        self._global_batch_size, self._shard_weight = count, 1.0
        if start == stop:
            start, stop, self._shard_weight = 0, 1, 0.0
        split = self.data.train if split is None else split
        pad_ids = (self.model.config.pad_token_id, self.encoder_pad_id)
        batch = {k: v.to(self.device) for k, v in collate(split, indices[start:stop], *pad_ids).items()}
        generator = self._generator.manual_seed(
            derived_seed(self.config.seed, self.state["step"], STEP_DRAWS, *draws)
        )
        if self.model.config.has_latent:
            eps = torch.randn((count, self.model.config.latent_dim), generator=generator, device=self.device)
            batch["eps"] = eps[start:stop]  # (B, Z)
        if self.config.word_dropout > 0:
            longest = int(split.lengths_at(indices).max())
            draws = torch.rand((count, longest - 1), generator=generator, device=self.device)
            batch["word_dropout_draws"] = draws[start:stop]  # (B, T - 1) of the global batch's T
        if self.encoder_noise.active:  # drawn last: a run without noise draws what it always did
            self._add_encoder_noise(batch, split, indices, (start, stop), generator)
        return batch

    def _add_encoder_noise(self, batch: dict, split, indices, rows: tuple[int, int], generator) -> None:
        """Put the corrupted copy of the shard's sentences that the encoder reads into the batch
        (`encoder_noise.py`, Shen et al. 2020); the draws are made for the whole global batch."""
        noise, tokenizer = self.encoder_noise, self.data.encoder_tokenizer
        if "encoder_input_ids" in batch:  # a pretrained encoder's own ids and special tokens
            ids, mask = batch["encoder_input_ids"], batch["encoder_attention_mask"]
            longest = int(split.encoder_input_ids.lengths_at(indices).max())
            blank = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
            pad, specials, vocab_size = (
                tokenizer.pad_token_id,
                tuple(tokenizer.all_special_ids),
                len(tokenizer),
            )
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            longest = int(split.lengths_at(indices).max())
            config = self.model.config
            blank, pad, vocab_size = config.unk_token_id, config.pad_token_id, config.vocab_size
            specials = (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.unk_token_id)
        draws = draw_noise(noise, len(indices), longest, vocab_size, generator, self.device)
        draws = {name: values[rows[0] : rows[1]] for name, values in draws.items()}  # (B, T) this shard's
        noisy_ids, noisy_mask = apply_noise(ids, mask, noise, draws, blank, pad, specials)
        batch["encoder_input_ids"], batch["encoder_attention_mask"] = noisy_ids, noisy_mask

    def _global_batch_loss(self, output, kl_weight: float, free_bits: float) -> tuple[torch.Tensor, dict]:
        """(the tensor to differentiate, the global batch's figures) from this process's shard's output.

        The figures (rec, KL per dimension, the bag-of-words loss) are sums over the global batch, from one
        all-reduce; free bits floor the global batch-mean KL per dimension. The reduction carries gradients and
        DistributedDataParallel averages the N processes' gradients, so the shard's rec sum is scaled by
        N / B: the averaged gradient is exactly the gradient of the global batch's mean loss, however
        unequal the shards. For one process it is the plain batch-mean loss.
        """
        size, weight = self._global_batch_size, self._shard_weight
        rec_sum = output.rec_loss.float().sum() * weight
        kl_sums = output.kl_per_dim.float().sum(dim=0) * weight  # (Z,)
        latent_dim = kl_sums.numel()
        figures = [rec_sum.detach()[None]]
        if (
            output.bow_loss is not None
        ):  # the bag-of-words loss (Zhao et al. 2017) rides in the same reduction
            bow_sum = output.bow_loss.float().sum() * weight
            figures.append(bow_sum.detach()[None])
        sums = differentiable_all_reduce_sum(torch.cat([kl_sums, *figures]))  # (Z + 1 or Z + 2,)
        kl_term = free_bits_kl(sums[:latent_dim] / size, free_bits)
        objective = rec_sum * (self.world_size / size) + kl_weight * kl_term
        rec_total, kl_total, term = torch.stack(
            [sums[latent_dim], sums[:latent_dim].sum(), kl_term.detach()]
        ).tolist()
        metrics = {
            "loss": rec_total / size + kl_weight * term,
            "rec": rec_total / size,
            "kl": kl_total / size,
        }
        if output.bow_loss is not None:  # a mean over the batch, weighted like rec in the objective
            bow_weight = self.model.config.bag_of_words_loss
            objective = objective + bow_weight * bow_sum * (self.world_size / size)
            metrics["bow"] = sums[latent_dim + 1].item() / size
            metrics["loss"] += bow_weight * metrics["bow"]
        return objective, metrics

    def _train_step(self, batch: dict, frozen: tuple = ()) -> dict:
        """One optimiser step on this process's shard (`_shard_batch`) of the global batch.

        frozen: parameters this step leaves as they are (aggressive training's decoder-only update).
        """
        config = self.config
        weight = self._kl_weight()
        pretraining = self.state["step"] < self.pretrain_steps
        metrics = self._update(batch, weight, pretraining, frozen)
        if config.lr_scheduler == "cosine":
            self.scheduler.step()
        metrics["kl_weight"] = weight
        if self.controller is not None and not pretraining:
            metrics["kl_target"] = self.controller.current_target()
            self.controller.update(metrics["kl"])  # the weight of the next step
        return metrics

    def _update(
        self, batch: dict, weight: float, pretraining: bool, frozen: tuple = (), draws: tuple[int, ...] = ()
    ) -> dict:
        """Loss, backward, clipping and the optimiser's update of every parameter but `frozen`; the figures.

        The frozen parameters' gradients are dropped (set to None) after clipping: Adam, AdamW and SGD skip
        a parameter without a gradient entirely, moments and step count included, so one optimiser updates
        either group exactly as an optimiser of that group alone would (He et al. 2019 keep two).
        draws: the extra seed keys of the update (`_shard_batch`); none for the step's own.
        """
        config = self.config
        # Dropout layers draw from torch's generator: seeded by (seed, step, rank), a resumed run repeats
        # them, and the processes draw independent masks.
        torch.manual_seed(derived_seed(config.seed, self.state["step"], DROPOUT_LAYERS, self.rank, *draws))
        with self._autocast():
            output = self.forward_model(
                **batch,
                kl_weight=weight,
                free_bits=0.0 if pretraining else config.free_bits,
                word_dropout=config.word_dropout,
                return_logits=False,
            )
        objective, metrics = self._global_batch_loss(output, weight, 0.0 if pretraining else config.free_bits)
        if not math.isfinite(metrics["loss"]):  # the global figure: every process stops together
            raise self._diverged("training loss", metrics["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if config.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
            if not math.isfinite(norm):  # checked before the update: the weights stay finite
                raise self._diverged("gradient norm", norm)
        for parameter in frozen:
            parameter.grad = None
        self.optimizer.step()
        return metrics

    def _diverged(self, what: str, value: float) -> ValueError:
        """The error that stops a run whose loss or gradients stopped being finite numbers.

        Nothing is saved from that point on, so the best model and the checkpoints stay finite.
        """
        return ValueError(
            f"training stopped at step {self.state['step'] + 1} (epoch {self.state['epoch'] + 1}): the "
            f"{what} became {value}; the best model and the last checkpoint in {self.run_dir} are from before "
            f"it. Lower --learning-rate, keep --max-grad-norm on, or check the data"
        )
