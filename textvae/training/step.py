"""One optimiser step of training: this process's share of the global batch, its loss, backward, update.

`TrainStep` is a complete step with explicit inputs (the model, the optimiser, the options it reads, the
process's place in the group); the `Trainer` calls it once per step with the batch, the step number and
the KL weight, and variations wrap or subclass it (`aggressive.AggressiveTrainStep`, as pythae's
`CoupledOptimizerTrainer` overrides `train_step`). Under torchrun every process takes its contiguous share
of each global batch, and the loss is that of the whole global batch (`global_batch_loss`), so the
weights after each step equal those of one process (`distributed.py` says how).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..data.noise import apply_noise, draw_noise
from ..data.storage import collate
from ..distributed import derived_seed, differentiable_all_reduce_sum, shard_bounds
from ..models.modeling import free_bits_kl

# Streams of a step's seeds, `derived_seed(seed, step, stream)`: z's noise and word dropout, dropout layers
# (one stream per process), the new decoder after autoencoder pretraining, and the encoder-only updates of
# aggressive training (`aggressive.py`: their batches and, as extra keys, their own draws).
STEP_DRAWS, DROPOUT_LAYERS, DECODER_RESET, AGGRESSIVE_ENCODER = 0, 1, 2, 3


class NonFiniteError(ValueError):
    """The loss or the gradient norm of a step stopped being a finite number (`what` became `value`)."""

    def __init__(self, what: str, value: float):
        super().__init__(f"the {what} became {value}")
        self.what, self.value = what, value


class TrainStep:
    """One optimiser step on this process's shard of a global batch: draws, loss, backward, update.

    model: the `TextVAEModel`; forward_model: what computes the forward pass (the model, or the model
    under DistributedDataParallel, which the trainer sets when training starts); optimizer: the one that
    updates it (the trainer replaces it after autoencoder pretraining); config: the `TrainConfig` whose
    seed, word_dropout, free_bits, max_grad_norm, bf16 and encoder_noise the step reads; device, rank,
    world_size: where this process runs in its group; encoder_tokenizer: a pretrained encoder's own
    tokenizer (its pad, blank and special tokens), None for textvae's own encoder.
    """

    def __init__(
        self,
        model,
        optimizer,
        config,
        *,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        encoder_tokenizer=None,
    ):
        self.model, self.forward_model, self.optimizer, self.config = model, model, optimizer, config
        self.device, self.rank, self.world_size = device, rank, world_size
        self.encoder_tokenizer = encoder_tokenizer
        self.encoder_pad_id = encoder_tokenizer.pad_token_id if encoder_tokenizer is not None else 0
        self.noise = config.noise()  # Shen et al.'s denoising input
        self._generator = torch.Generator(device=device)  # the step's draws, reseeded every step
        self.global_batch_size, self.shard_weight = config.batch_size, 1.0  # set by each shard_batch

    def __call__(self, split, indices: list[int], *, step: int, kl_weight: float, free_bits: float) -> dict:
        """The step on the global batch `indices` of `split` at optimiser step `step`; the batch's figures.

        kl_weight and free_bits: the KL term's weight and floor for this step (0 for both while an
        autoencoder is pretrained).
        """
        batch = self.shard_batch(split, indices, step)
        return self.update(batch, step=step, kl_weight=kl_weight, free_bits=free_bits)

    def autocast(self):
        """bf16 autocast on CUDA when asked for; nothing on the CPU."""
        if self.device.type == "cuda" and self.config.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def shard_batch(self, split, indices: list[int], step: int, draws: tuple[int, ...] = ()) -> dict:
        """This process's share of a global batch, moved to the device, with the step's random draws.

        indices: the global batch's sentences in `split` (with streaming, the current pool).
        The draws (z's noise eps, the word dropout draws, the encoder's input noise) are made for the whole
        global batch from a generator seeded by (seed, step), and each process keeps the rows of its
        sentences: N processes draw exactly what one process does, and a resumed run what an uninterrupted
        one does. draws: extra keys of the seed, for more than one update in a step (aggressive training's
        encoder updates); none for the step's own update.
        When the global batch has fewer sentences than there are processes (an epoch's ragged last batch),
        a process without one computes the first sentence with weight 0, so that every process still
        takes part in the step (BN-VAE's batch statistics then count that sentence twice).
        """
        count = len(indices)
        start, stop = shard_bounds(count, self.rank, self.world_size)
        self.global_batch_size, self.shard_weight = count, 1.0
        if start == stop:
            start, stop, self.shard_weight = 0, 1, 0.0
        pad_ids = (self.model.config.pad_token_id, self.encoder_pad_id)
        batch = {k: v.to(self.device) for k, v in collate(split, indices[start:stop], *pad_ids).items()}
        generator = self._generator.manual_seed(derived_seed(self.config.seed, step, STEP_DRAWS, *draws))
        if self.model.config.has_latent:
            eps = torch.randn((count, self.model.config.latent_dim), generator=generator, device=self.device)
            batch["eps"] = eps[start:stop]  # (B, Z)
        if self.config.word_dropout > 0:
            longest = int(split.lengths_at(indices).max())
            dropout_draws = torch.rand((count, longest - 1), generator=generator, device=self.device)
            batch["word_dropout_draws"] = dropout_draws[start:stop]  # (B, T - 1) of the global batch's T
        if self.noise.active:  # drawn last: a run without noise draws what it always did
            self._add_encoder_noise(batch, split, indices, (start, stop), generator)
        return batch

    def _add_encoder_noise(self, batch: dict, split, indices, rows: tuple[int, int], generator) -> None:
        """Put the corrupted copy of the shard's sentences that the encoder reads into the batch
        (`data/noise.py`, Shen et al. 2020); the draws are made for the whole global batch."""
        tokenizer = self.encoder_tokenizer
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
        draws = draw_noise(self.noise, len(indices), longest, vocab_size, generator, self.device)
        draws = {name: values[rows[0] : rows[1]] for name, values in draws.items()}  # (B, T) this shard's
        noisy_ids, noisy_mask = apply_noise(ids, mask, self.noise, draws, blank, pad, specials)
        batch["encoder_input_ids"], batch["encoder_attention_mask"] = noisy_ids, noisy_mask

    def global_batch_loss(self, output, kl_weight: float, free_bits: float) -> tuple[torch.Tensor, dict]:
        """(the tensor to differentiate, the global batch's figures) from this process's shard's output.

        The figures (rec, KL per dimension, the bag-of-words loss) are sums over the global batch, from one
        all-reduce; free bits floor the global batch-mean KL per dimension. The reduction carries gradients
        and DistributedDataParallel averages the N processes' gradients, so the shard's rec sum is scaled by
        N / B: the averaged gradient is exactly the gradient of the global batch's mean loss, however
        unequal the shards. For one process it is the plain batch-mean loss.
        """
        size, weight = self.global_batch_size, self.shard_weight
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

    def update(
        self,
        batch: dict,
        *,
        step: int,
        kl_weight: float,
        free_bits: float,
        frozen: tuple = (),
        draws: tuple[int, ...] = (),
    ) -> dict:
        """Loss, backward, clipping and the optimiser's update of every parameter but `frozen`; the figures.

        The frozen parameters' gradients are dropped (set to None) after clipping: Adam, AdamW and SGD skip
        a parameter without a gradient entirely, moments and step count included, so one optimiser updates
        either group exactly as an optimiser of that group alone would (He et al. 2019 keep two).
        draws: the extra seed keys of the update (`shard_batch`); none for the step's own. Raises
        `NonFiniteError` (before any update) when the loss or the gradient norm is not a finite number.
        """
        config = self.config
        # Dropout layers draw from torch's generator: seeded by (seed, step, rank), a resumed run repeats
        # them, and the processes draw independent masks.
        torch.manual_seed(derived_seed(config.seed, step, DROPOUT_LAYERS, self.rank, *draws))
        with self.autocast():
            output = self.forward_model(
                **batch,
                kl_weight=kl_weight,
                free_bits=free_bits,
                word_dropout=config.word_dropout,
                return_logits=False,
            )
        objective, metrics = self.global_batch_loss(output, kl_weight, free_bits)
        if not math.isfinite(metrics["loss"]):  # the global figure: every process stops together
            raise NonFiniteError("training loss", metrics["loss"])
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if config.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
            if not math.isfinite(norm):  # checked before the update: the weights stay finite
                raise NonFiniteError("gradient norm", norm)
        for parameter in frozen:
            parameter.grad = None
        self.optimizer.step()
        metrics["kl_weight"] = kl_weight
        return metrics
