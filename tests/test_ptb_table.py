"""The table script (scripts/table.py) end to end on the PTB table and a tiny stand-in corpus named ptb."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from .helpers import write_tiny_ptb

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "table.py"


@pytest.fixture(scope="module")
def ptb_table():
    spec = importlib.util.spec_from_file_location("ptb_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ptb_rows(module, spec: str) -> list[str]:
    return [row.stem for row in module.select_rows(spec, module.read_table("ptb_table"))]


@pytest.fixture
def tiny_ptb(tmp_path):
    return write_tiny_ptb(tmp_path, train=24, valid=6)


def run_script(module, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["table.py", *args])
    module.main()


def test_rows_select_by_number_or_name(ptb_table):
    assert ptb_rows(ptb_table, "6") == ["6_best", "6_from_lm", "6_lm"]
    assert ptb_rows(ptb_table, "1,2_anneal") == ["1_lm", "2_anneal"]
    with pytest.raises(SystemExit, match="unknown row '9'"):
        ptb_rows(ptb_table, "1,9")


def test_every_row_config_is_a_valid_training_config(ptb_table):
    from textvae import TextVAEConfig
    from textvae.config_fields import read_config_file
    from textvae.training.config import TrainConfig

    for row in ptb_table.select_rows("all", ptb_table.read_table("ptb_table")):
        config = TrainConfig.from_dict(read_config_file(row))
        assert config.data.source == "ptb"
        TextVAEConfig(**config.model)  # raises on a bad architecture option


def test_smaller_budget_scales_pretraining_and_warm_up(ptb_table):
    scaled = ptb_table.scale_budget({"epochs": 30, "pretrain_epochs": 5, "kl_warmup_steps": 13150}, 3)
    assert scaled == {"epochs": 3, "pretrain_epochs": 1, "kl_warmup_steps": 1315}


def test_script_trains_evaluates_and_writes_the_table(ptb_table, tiny_ptb, tmp_path, monkeypatch):
    output = tmp_path / "table"
    args = ["--rows", "1,2", "--epochs", "2", "--iw-samples", "3", "--output-dir", str(output)]
    run_script(ptb_table, monkeypatch, *args, "--data-dir", str(tiny_ptb), "--no-progress")
    rows = json.loads((output / "results.json").read_text())
    assert [row["row"] for row in rows] == ["1_lm", "2_anneal"]
    lm, vae = rows
    assert lm["iw_samples"] is None and lm["kl"] == 0.0 and lm["mi"] is None  # exact NLL, no latent
    assert vae["iw_samples"] == 3 and vae["nll"] <= vae["neg_elbo"] + 1.0
    # Forward PPL under the table's own reference language model (6_lm, trained first), for each prior.
    assert vae["forward_ppl"] > 1 and vae["forward_ppl_aggregate"] > 1 and lm["forward_ppl"] is None
    assert 0 <= vae["interp_monotonicity"] <= 1 and (output / "6_lm" / "model.safetensors").is_file()
    for row in rows:
        assert row["epochs"] == 2 and row["num_sentences"] == 6 and row["parameters"] > 0
    table = (output / "results.md").read_text()
    assert table.startswith("| row | rec | KL | -ELBO | NLL | PPL | NLL aggr. prior | MI | AU |")
    assert "| 1_lm |" in table and "| 2_anneal |" in table and "Texar VAE" in table
    # A finished row is not trained again: re-running only re-evaluates, with the same numbers; with
    # --results-dir each row is also written where the table's committed rows live.
    weights = (output / "2_anneal" / "model.safetensors").stat().st_mtime_ns
    committed = tmp_path / "results"
    more = ["--data-dir", str(tiny_ptb), "--no-progress", "--results-dir", str(committed)]
    run_script(ptb_table, monkeypatch, *args, *more)
    assert (output / "2_anneal" / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((output / "results.json").read_text()) == rows
    assert [json.loads((committed / f"{row['row']}.json").read_text()) for row in rows] == rows


def test_a_row_that_starts_from_another_row_trains_that_row_first(ptb_table, tiny_ptb, tmp_path, monkeypatch):
    output = tmp_path / "table"
    args = ["--rows", "6_from_lm", "--epochs", "1", "--iw-samples", "2", "--output-dir", str(output)]
    run_script(ptb_table, monkeypatch, *args, "--data-dir", str(tiny_ptb), "--no-progress")
    lm, vae = output / "6_lm", output / "6_from_lm"
    assert (lm / "model.safetensors").is_file() and not (lm / "table_row.json").exists()  # trained, not a row
    assert json.loads((vae / "train_config.json").read_text())["init_decoder_from"] == str(lm)
    assert (vae / "tokenizer.json").read_text() == (lm / "tokenizer.json").read_text()
    assert [row["row"] for row in json.loads((output / "results.json").read_text())] == ["6_from_lm"]


def test_rows_train_in_parallel_and_a_time_boxed_row_is_evaluated_as_it_stands(
    ptb_table, tiny_ptb, tmp_path, monkeypatch
):
    from textvae.checkpointing import checkpoint_folders

    output = tmp_path / "table"
    common = ["--rows", "2", "--iw-samples", "3", "--interpolation-pairs", "2", "--jobs", "2"]
    common += ["--output-dir", str(output), "--data-dir", str(tiny_ptb)]
    run_script(ptb_table, monkeypatch, *common, "--epochs", "1")
    # The row and the reference LM each trained in a process of its own, which logged to its own file.
    assert "epoch 1" in (output / "2_anneal.log").read_text() and (output / "6_lm.log").is_file()
    row = json.loads((output / "2_anneal" / "table_row.json").read_text())
    assert row["finished"] and row["epochs"] == 1 and row["forward_ppl"] > 1
    run = output / "2_anneal"
    steps = json.loads((checkpoint_folders(run)[-1] / "trainer_state.json").read_text())["step"]
    for name in ("prior.json", "prior.safetensors"):  # as if training had never fitted it
        (run / name).unlink()
    # Two epochs asked for, but the time box stops training one step into the second: the row is
    # evaluated at its first epoch, with an aggregate prior fitted for it, and marked unfinished.
    run_script(ptb_table, monkeypatch, *common, "--epochs", "2", "--max-train-minutes", "0.0001")
    state = json.loads((checkpoint_folders(run)[-1] / "trainer_state.json").read_text())
    assert state["step"] == steps + 1 and not state["finished"]
    row = json.loads((run / "table_row.json").read_text())
    assert not row["finished"] and row["epochs"] == 1 and row["forward_ppl_aggregate"] > 1
    assert (run / "prior.json").is_file()


def test_jobs_and_time_box_must_be_positive(ptb_table, monkeypatch, capsys):
    for flags in (["--jobs", "0"], ["--max-train-minutes", "0"], ["--max-train-minutes", "nan"]):
        with pytest.raises(SystemExit):
            run_script(ptb_table, monkeypatch, *flags)
        assert "must be positive" in capsys.readouterr().err
