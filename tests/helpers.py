"""Helpers shared by the tests: tiny sentences, configs, models and batches; running the command line."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from textvae import TextVAEConfig, TextVAEModel
from textvae.cli import main

PTB_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORDS = "the a cat dog sat ran on under mat rug big small red blue".split()


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """Short random sentences over a 14-word vocabulary, reproducible by seed."""
    generator = torch.Generator().manual_seed(seed)
    sentences = []
    for _ in range(count):
        length = int(torch.randint(2, 8, (1,), generator=generator))
        ids = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        sentences.append(" ".join(WORDS[i] for i in ids))
    return sentences


def write_tiny_ptb(root: Path, train: int, valid: int) -> Path:
    """A PTB stand-in of `train` and `valid` tiny sentences in root/data/ptb/; returns root/data, the
    `--data-dir` of `--data ptb`."""
    folder = root / "data" / "ptb"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("\n".join(make_sentences(train, seed=1)) + "\n")
    (folder / "valid.txt").write_text("\n".join(make_sentences(valid, seed=2)) + "\n")
    return root / "data"


NO_DROPOUT = dict(decoder_input_dropout=0.0, decoder_output_dropout=0.0)
# Tiny transformer options and no dropout, for the tests that build transformer or backbone models.
TINY_TRANSFORMER = dict(
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    transformer_dropout=0.0,
    **NO_DROPOUT,
)


def tiny_config(**overrides) -> TextVAEConfig:
    options = dict(vocab_size=20, embedding_size=8, hidden_size=8, latent_dim=4, **NO_DROPOUT)
    options.update(overrides)
    return TextVAEConfig(**options)


def tiny_model(seed: int = 0, **overrides) -> TextVAEModel:
    torch.manual_seed(seed)
    return TextVAEModel(tiny_config(**overrides)).eval()


def random_batch(batch_size: int, length: int = 7, vocab_size: int = 20, seed: int = 0):
    """(B, T) ids `[BOS, words, EOS]` with ragged lengths, and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, length, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    for row in range(batch_size):
        size = length if row == 0 else int(torch.randint(3, length + 1, (1,), generator=generator))
        words = torch.randint(4, vocab_size, (size - 2,), generator=generator)
        input_ids[row, :size] = torch.cat([torch.tensor([1]), words, torch.tensor([2])])
        attention_mask[row, :size] = 1
    return input_ids, attention_mask


QUIET_TRAIN = dict(
    progress=False,
    plot_each_epoch=False,  # the figures cost ~0.5 s of CPU an epoch; `trained_run` draws them
    fit_prior=False,  # importing scikit-learn and fitting take seconds; `trained_run` fits its prior
)
TINY_TRAIN = dict(
    epochs=2,
    batch_size=16,
    log_steps=5,
    kl_warmup_steps=20,
    model=dict(embedding_size=16, hidden_size=16, latent_dim=4),
    **QUIET_TRAIN,
)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`textvae ARGS` in this process: (exit status, standard output, standard error); argparse's own
    exits give their status too."""
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_error(capsys, args, message: str, name: str = "") -> int:
    """`textvae ARGS` for bad `args`: checks that standard error is one line, no traceback, matching the
    regular expression `message`; returns the exit status."""
    code, _, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, f"{name}: {err}"
    assert re.search(message, lines[0]), f"{name}: {lines[0]}"
    return code
