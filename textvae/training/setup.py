"""What a run is built from besides its data (`data.prepare`): a fresh model, the optimiser, the scheduler.

`run.train` builds these on every process before the `Trainer` takes over.
"""

from __future__ import annotations

import torch

from .. import distributed
from ..data.prepare import prepare_data
from ..data.storage import PreparedData
from ..models.configuration import TextVAEConfig
from ..models.modeling import TextVAEModel
from .config import TrainConfig


def prepare_run_data(config: TrainConfig, tokenizer=None, encoder_tokenizer=None) -> PreparedData:
    """`data.prepare.prepare_data` for a training config: its data recipe, its backbones' tokenizers, its
    global batch and seed (a stream's shuffle)."""
    return prepare_data(
        config.data,
        tokenizer,
        encoder_tokenizer,
        model_options=config.model,
        batch_size=config.batch_size,
        shuffle_seed=config.seed,
    )


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; a requested cuda device must exist; under torchrun, the GPU
    of the process's local rank (`distributed.process_device`)."""
    return distributed.process_device(name)


def check_model_options(config: TrainConfig) -> None:
    """`ValueError` for architecture options that cannot build a model, named before the corpus is read (the
    vocabulary size and special token ids, which come from the tokenizer, keep their defaults here)."""
    unknown = sorted(set(config.model) - set(TextVAEConfig().to_dict()))
    if unknown:
        raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
    TextVAEConfig(**config.model)


def build_model(config: TrainConfig, tokenizer) -> TextVAEModel:
    """A fresh model: `config.model` options, vocabulary and special ids from the tokenizer."""
    check_model_options(config)
    options = dict(config.model)
    if config.word_dropout > 0 and tokenizer.unk_token_id in (None, tokenizer.eos_token_id):
        raise ValueError("word_dropout needs an unk token distinct from EOS, and this tokenizer has none")
    options.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        unk_token_id=tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id,
    )
    if "hf" in (options.get("encoder_type"), options.get("decoder_type")):
        from ..models.backbones import backbone_config_overrides, load_pretrained_backbones

        options.update(backbone_config_overrides(options))
        model = TextVAEModel(TextVAEConfig(**options))
        load_pretrained_backbones(model)
        return model
    return TextVAEModel(TextVAEConfig(**options))


def make_optimizer(config: TrainConfig, model: TextVAEModel) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam / AdamW, over all of the model's parameters, as `config.optimizer` says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel updates every parameter in one pass: on a CPU the Adam step takes a third of the time.
    return optimizer_class(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )


def make_scheduler(config: TrainConfig, optimizer, total_steps: int):
    """plateau steps once per epoch on valid -ELBO; cosine steps once per optimiser step."""
    if config.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_decay, patience=config.lr_patience
        )
    if config.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return None
