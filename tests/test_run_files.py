"""Run folders: atomic writes, the append-only log, stale temporaries, and what --overwrite may remove."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from textvae.checkpointing import checkpoint_folders
from textvae.run_files import (
    append_record,
    clear_run_folder,
    is_run_file,
    read_json,
    read_records,
    run_lock,
    write_json,
    write_text_atomically,
)
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN


def test_atomic_writes_leave_no_temporary_and_refuse_non_finite_json(tmp_path):
    write_text_atomically(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"x": 1.5})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.json"]
    with pytest.raises(ValueError):
        write_json(tmp_path / "b.json", {"x": float("nan")})
    assert read_json(tmp_path / "b.json") == {"x": 1.5}  # the old file survives a refused write


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    write_text_atomically(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_a_cut_short_json_file_is_named_in_the_error(tmp_path):
    (tmp_path / "train_config.json").write_text('{"epochs": 3, "bat')
    with pytest.raises(ValueError, match="train_config.json is corrupt or cut short"):
        read_json(tmp_path / "train_config.json")
    with pytest.raises(ValueError, match="missing.json is missing"):
        read_json(tmp_path / "missing.json")


def test_a_torn_last_line_of_the_log_is_dropped_with_a_warning(tmp_path, caplog):
    log = tmp_path / "metrics.jsonl"
    append_record(log, {"step": 1})
    append_record(log, {"step": 2})
    with open(log, "a") as stream:
        stream.write('{"step": 3, "lo')  # killed while writing
    with caplog.at_level(logging.WARNING):
        assert read_records(log) == [{"step": 1}, {"step": 2}]
    assert "torn last line" in caplog.text
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not JSON"):
        read_records(log)


def test_run_file_names():
    for name in ("config.json", "checkpoint-400", ".tmp-checkpoint-x1", "eval-validation-k500.json"):
        assert is_run_file(name)
    for name in ("thesis.tex", "notes.txt", "checkpoint-final", "my.json", "holiday.png"):
        assert not is_run_file(name)


def test_clear_run_folder_names_the_first_foreign_file_and_removes_nothing(tmp_path):
    (tmp_path / "train_config.json").write_text("{}")
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "b_notes.txt").write_text("mine")
    (tmp_path / "a_draft.md").write_text("mine too")
    with pytest.raises(ValueError, match="a_draft.md was not written by textvae"):
        clear_run_folder(tmp_path)
    assert len(list(tmp_path.iterdir())) == 4


def test_a_torn_metrics_log_resumes(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), **{**TINY_TRAIN, "log_steps": 1})
    run = train(TrainConfig(**{**config.to_dict(), "max_steps": 5}), output_dir=tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as stream:
        stream.write('{"step": 6, "epoch": 1, "split": "tra')  # a kill in the middle of a line
    train(None, resume=run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [record["step"] for record in records if record["split"] == "train"]
    assert train_steps == list(range(1, train_steps[-1] + 1))  # every step once, the torn one rewritten


def test_resume_and_new_checkpoints_remove_stale_temporaries(tmp_path, corpus_file):
    config = TrainConfig(data=str(corpus_file), save_steps=2, **TINY_TRAIN)
    run = train(TrainConfig(**{**config.to_dict(), "max_steps": 3}), output_dir=tmp_path / "run")
    (run / ".tmp-checkpoint-abc").mkdir()  # what a kill inside a checkpoint write leaves
    (run / ".tmp-checkpoint-abc" / "model.safetensors").write_bytes(b"\0" * 1000)
    (run / ".tmp-model-def").mkdir()
    (run / ".tmp-history.json-xyz").write_text("{")
    train(None, resume=run)
    assert not list(run.glob(".tmp-*"))
    # A checkpoint written during training also clears an earlier one's leftovers.
    from textvae.checkpointing import save_checkpoint
    from textvae.training.setup import build_model, prepare_run_data
    from textvae.training.trainer import Trainer

    data = prepare_run_data(config)
    model = build_model(config, data.tokenizer)
    trainer = Trainer(config, run, model, data)
    (run / ".tmp-checkpoint-old").mkdir()
    save_checkpoint(run, model, trainer.optimizer, trainer.scheduler, {**trainer.state, "step": 999}, 10)
    assert not (run / ".tmp-checkpoint-old").exists() and (run / "checkpoint-999").is_dir()
    assert torch.load(run / "checkpoint-999" / "optimizer.pt", weights_only=True)["extra"] is None
    assert checkpoint_folders(run)[-1].name == "checkpoint-999"


def test_run_lock_refuses_a_second_trainer_and_is_freed_when_its_process_dies(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):
        with pytest.raises(ValueError, match=rf"being trained by another process \(pid {os.getpid()}\)"):
            with run_lock(run):
                pass
    with run_lock(run):  # released on exit
        pass
    # A process killed while it holds the lock leaves the file behind but not the lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from textvae.run_files import run_lock\n"
         "with run_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match=f"pid {holder.pid}"):
        with run_lock(run):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(run):
        assert (run / ".lock").exists() and is_run_file(".lock")
