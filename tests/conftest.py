"""Shared fixtures: a tiny corpus written by the test and one tiny trained run."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub, which reads this once: tests never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN, make_sentences

torch.set_num_threads(1)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(make_sentences(120)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny model trained for two epochs on a tiny corpus (shared by the pipeline and CLI tests)."""
    folder = tmp_path_factory.mktemp("run")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=1)) + "\n", encoding="utf-8")
    config = TrainConfig(data=str(corpus), **{**TINY_TRAIN, "plot_each_epoch": True, "fit_prior": True})
    return train(config, output_dir=folder / "run")
