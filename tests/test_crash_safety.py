"""Crash safety: a real training process killed with SIGKILL, in and out of checkpoint writes, always
leaves a run that loads and resumes, and the resumed run ends on the weights of one never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import CHECKPOINT_PAUSE_ENV, checkpoint_folders, load_run
from textvae.training.config import TrainConfig
from textvae.training.run import train

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

OPTIONS = dict(
    epochs=2, batch_size=16, save_steps=2, seed=3, kl_warmup_steps=20, progress=False,
    model=dict(embedding_size=16, hidden_size=16, latent_dim=4),
)  # fmt: skip


def _command(corpus: Path, run: Path, *extra: str) -> list[str]:
    flags = [
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--save-steps",
        "2",
        "--seed",
        "3",
        "--kl-warmup-steps",
        "20",
    ]
    flags += ["--embedding-size", "16", "--hidden-size", "16", "--latent-dim", "4", "--no-progress"]
    return [
        sys.executable,
        "-m",
        "textvae.cli",
        "train",
        "--data",
        str(corpus),
        "-o",
        str(run),
        *flags,
        *extra,
    ]


def _start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, CHECKPOINT_PAUSE_ENV: "0.4", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(process: subprocess.Popen, condition, timeout: float = 120.0) -> bool:
    """SIGKILL the process as soon as `condition()` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the training process neither reached the kill point nor ended")


def _in_checkpoint_write(run: Path, after_step: int = -1):
    def condition() -> bool:
        done = [int(folder.name.split("-")[1]) for folder in checkpoint_folders(run)] if run.is_dir() else []
        return run.is_dir() and any(run.glob(".tmp-checkpoint-*")) and max(done, default=-1) >= after_step

    return condition


def test_sigkill_at_several_points_always_leaves_a_run_that_loads_and_resumes_exactly(tmp_path, corpus_file):
    torch.set_num_threads(1)
    reference = train(TrainConfig(data=str(corpus_file), **OPTIONS), output_dir=tmp_path / "reference")
    run = tmp_path / "run"

    # 1. Inside the very first checkpoint write: nothing to resume yet, so the run starts again.
    assert _kill_when(_start(_command(corpus_file, run)), _in_checkpoint_write(run))
    assert not checkpoint_folders(run)
    resume = subprocess.run(
        _command(corpus_file, run)[:4] + ["--resume", str(run)], capture_output=True, text=True
    )
    assert resume.returncode == 2 and "start it again with --overwrite" in resume.stderr
    # 2. Inside a later checkpoint write (weights and optimiser written, not yet renamed into place).
    assert _kill_when(
        _start(_command(corpus_file, run, "--overwrite")), _in_checkpoint_write(run, after_step=4)
    )
    # 3. and 4. Between checkpoint writes, and inside the write of an end-of-epoch checkpoint.
    kill_points = [
        lambda: any(run.glob("checkpoint-8")) and not any(run.glob(".tmp-*")),
        _in_checkpoint_write(run, after_step=10),
    ]
    resumes = 0
    for condition in kill_points:
        model, tokenizer, _ = load_run(run)  # the run loads after every kill
        assert len(tokenizer) == model.config.vocab_size
        resumes += 1
        assert _kill_when(_start(_command(corpus_file, run)[:4] + ["--resume", str(run)]), condition)
    finish = _start(_command(corpus_file, run)[:4] + ["--resume", str(run)])
    assert finish.wait(timeout=300) == 0, finish.stderr.read().decode()
    assert resumes == 2 and not list(run.glob(".tmp-*"))
    expected = load_file(str(checkpoint_folders(reference)[-1] / "model.safetensors"))
    got = load_file(str(checkpoint_folders(run)[-1] / "model.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)
