"""What a run is built from: its tokenized data and tokenizer(s), a fresh model, the optimiser, the scheduler.

`training.train` builds these on every process before the `Trainer` takes over; `prior_fitting.fit_prior_for_run`
uses `prepare_data` to read the sentences a saved run was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import distributed
from ..data.corpora import load_corpus
from ..data.storage import TokenizedSplit
from ..data.token_ids import count_corpus_words, iter_texts, tokenize_corpus
from ..data.tokenization import train_tokenizer
from ..models.configuration import TextVAEConfig
from ..models.modeling import TextVAEModel
from .config import TrainConfig


@dataclass
class PreparedData:
    """Tokenized splits and the tokenizer(s) a run trains with.

    stream: with `--streaming`, the training split as a `streaming.TrainingStream`, which the trainer
    reads instead of `train` (then only a sample of the training split, for fitting the prior).
    """

    tokenizer: object
    encoder_tokenizer: object | None
    train: TokenizedSplit
    validation: TokenizedSplit
    stream: object | None = None


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; a requested cuda device must exist; under torchrun, the GPU
    of the process's local rank (`distributed.process_device`)."""
    return distributed.process_device(name)


def load_backbone_tokenizers(config: TrainConfig, tokenizer=None, encoder_tokenizer=None) -> tuple:
    """(tokenizer, encoder tokenizer): those given, else a pretrained (hf) decoder's and encoder's own;
    None for a tokenizer still to be trained (the decoder's) or not needed (the encoder's)."""
    model_options = config.model
    if tokenizer is None and model_options.get("decoder_type") == "hf":
        from ..models.backbones import load_backbone_tokenizer

        tokenizer = load_backbone_tokenizer(model_options.get("decoder_name_or_path"))
    if encoder_tokenizer is None and model_options.get("encoder_type") == "hf":
        from ..models.backbones import load_backbone_tokenizer

        encoder_tokenizer = load_backbone_tokenizer(model_options.get("encoder_name_or_path"))
    return tokenizer, encoder_tokenizer


def train_corpus_tokenizer(dataset, config: TrainConfig):
    """The tokenizer of `config.tokenizer_type` trained on a split (a `datasets.Dataset` with "text")."""
    if config.tokenizer_type == "word":  # words counted by Arrow, on several threads
        texts = count_corpus_words(dataset)
    else:  # texts read as Arrow in large batches: iterating dataset["text"] takes ~75 s a million rows
        texts = (text for batch in iter_texts(dataset) for text in batch)
    return train_tokenizer(texts, config.tokenizer_type, config.min_frequency, config.max_vocab_size)


def prepare_data(config: TrainConfig, tokenizer=None, encoder_tokenizer=None) -> PreparedData:
    """Load and tokenize the corpus; train the tokenizer on the training split unless one is given.

    With `config.streaming` the training split is a stream instead (`streaming.prepare_stream_data`).
    """
    if config.streaming:
        from ..data.streaming import prepare_stream_data

        return prepare_stream_data(config, tokenizer, encoder_tokenizer)
    corpus = load_corpus(config.data, data_dir=config.data_dir, **config.corpus_options())
    tokenizer, encoder_tokenizer = load_backbone_tokenizers(config, tokenizer, encoder_tokenizer)
    if tokenizer is None:
        tokenizer = train_corpus_tokenizer(corpus["train"], config)
    tokenized = tokenize_corpus(corpus, tokenizer, encoder_tokenizer, config.max_length, config.overlong)
    return PreparedData(
        tokenizer=tokenizer,
        encoder_tokenizer=encoder_tokenizer,
        train=TokenizedSplit.from_dataset(tokenized["train"]),
        validation=TokenizedSplit.from_dataset(tokenized["validation"]),
    )


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
