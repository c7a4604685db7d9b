"""Plotting and reporting: the PNGs of a run, the curves' data, training's figures, TensorBoard events."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time

import numpy as np
import pytest

from textvae import plotting
from textvae.checkpointing import checkpoint_folders
from textvae.plotting import (
    curves_figure,
    kl_per_dimension_figure,
    latent_map_figure,
    plot_run,
    read_run_records,
    write_training_plots,
)
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN

matplotlib_image = pytest.importorskip("matplotlib.image")


def lines_by_label(figure) -> dict:
    return {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def copy_records(run, folder):
    folder.mkdir()
    for name in ("history.json", "metrics.jsonl", "train_config.json"):
        shutil.copy(run / name, folder / name)
    return folder


def test_plot_run_writes_decodable_non_blank_pngs(trained_run, tmp_path):
    mu = np.random.default_rng(0).normal(size=(30, 4))
    lengths = np.arange(30) % 7 + 2
    paths = plot_run(trained_run, output_dir=tmp_path / "figures", latent_map=(mu, lengths, "length", False))
    assert [path.name for path in paths] == [
        "curves.png",
        "kl_per_dim.png",
        "active_units.png",
        "latent_map.png",
    ]
    for path in paths:
        pixels = matplotlib_image.imread(path)  # (H, W, 4) floats in [0, 1]
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        drawn = (pixels[..., :3] < 0.9).any(axis=-1).mean()
        assert 0.01 < drawn < 0.9, f"{path.name} looks blank or filled ({drawn:.3f} of pixels drawn)"
    assert not any(path.name.endswith(".tmp") for path in (tmp_path / "figures").iterdir())


def test_curves_hold_the_values_of_history_and_metrics(trained_run):
    history = json.loads((trained_run / "history.json").read_text())
    train_records = [r for r in jsonl(trained_run / "metrics.jsonl") if r["split"] == "train"]
    assert train_records and len(history) == 2
    lines = lines_by_label(curves_figure(*read_run_records(trained_run)))
    train_steps = [r["step"] for r in train_records]
    expected = {
        "train rec": [r["rec"] for r in train_records],
        "train KL": [r["kl"] for r in train_records],
        "train loss": [r["loss"] for r in train_records],
        "train -ELBO (rec + KL)": [r["rec"] + r["kl"] for r in train_records],
        "KL weight": [r["kl_weight"] for r in train_records],
        "learning rate": [r["lr"] for r in train_records],
    }
    for label, values in expected.items():
        assert list(lines[label].get_xdata()) == train_steps, label
        assert list(lines[label].get_ydata()) == pytest.approx(values), label
    for label, key in [("validation rec", "rec"), ("validation KL", "kl"), ("validation -ELBO", "neg_elbo")]:
        assert list(lines[label].get_xdata()) == [r["step"] for r in history], label
        assert list(lines[label].get_ydata()) == [r[key] for r in history], label


def test_training_writes_the_figures_and_kl_per_dimension(trained_run):
    for name in ("curves.png", "kl_per_dim.png", "active_units.png"):
        assert matplotlib_image.imread(trained_run / name).size > 0
    for record in json.loads((trained_run / "history.json").read_text()):
        assert len(record["kl_per_dim"]) == TINY_TRAIN["model"]["latent_dim"]
        assert min(record["kl_per_dim"]) >= 0
        assert sum(record["kl_per_dim"]) == pytest.approx(record["kl"], rel=1e-5)  # the KL, split up


def test_kl_per_dimension_bars_are_sorted_and_labelled_by_dimension():
    values = [0.5, 0.001, 2.0, 0.0]
    ax = kl_per_dimension_figure(values, free_bits=0.125).axes[0]
    assert [bar.get_height() for bar in ax.patches] == [2.0, 0.5, 0.001, 0.0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["2", "0", "1", "3"]
    ax = kl_per_dimension_figure(values, sort=False).axes[0]
    assert [bar.get_height() for bar in ax.patches] == values
    with pytest.raises(ValueError, match="kl_per_dim is empty"):
        kl_per_dimension_figure([])


def test_run_without_validation_history_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 5, "split": "train"}) + "\n")
    with pytest.raises(ValueError, match="has no validation history yet: train at least one epoch"):
        plot_run(tmp_path)
    (tmp_path / "history.json").write_text("[]\n")
    with pytest.raises(ValueError, match="has no validation history yet"):
        plot_run(tmp_path)
    with pytest.raises(ValueError, match="run folder not found"):
        plot_run(tmp_path / "missing")


def test_a_torn_last_line_is_skipped_and_a_torn_middle_line_refused(trained_run, tmp_path):
    run = copy_records(trained_run, tmp_path / "run")
    intact = jsonl(run / "metrics.jsonl")
    with open(run / "metrics.jsonl", "a") as stream:
        stream.write('{"step": 999, "epoch": 3, "split": "tr')  # training killed mid-write
    history, train_records = read_run_records(run)
    assert train_records == [r for r in intact if r["split"] == "train"]
    assert (tmp_path / "run" / "curves.png") in plot_run(run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{torn", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        plot_run(run)


def test_a_language_model_run_gets_only_curves(tmp_path):
    record = {"step": 10, "epoch": 1, "split": "validation", "lr": 1e-3, "rec": 30.0, "kl": 0.0}
    (tmp_path / "history.json").write_text(json.dumps([{**record, "neg_elbo": 30.0}]))
    train_record = {"step": 5, "epoch": 1, "split": "train", "lr": 1e-3, "loss": 31.0, "rec": 31.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps({**train_record, "kl": 0.0, "kl_weight": 0.0}) + "\n")
    assert [path.name for path in plot_run(tmp_path)] == ["curves.png"]


@pytest.mark.parametrize("latent_dim, categorical", [(4, False), (4, True), (1, False)])
def test_latent_map_projects_every_sentence(latent_dim, categorical):
    mu = np.random.default_rng(0).normal(size=(12, latent_dim))
    values = ["pos", "neg"] * 6 if categorical else list(range(12))
    ax = latent_map_figure(mu, values, "label", categorical).axes[0]
    assert sum(len(collection.get_offsets()) for collection in ax.collections) == 12
    with pytest.raises(ValueError, match="11 colour values for 12"):
        latent_map_figure(mu, values[:11], "label", categorical)


def test_missing_matplotlib_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'textvae\[plot\]'"):
        curves_figure([], [])


def test_training_plots_never_raise(trained_run, monkeypatch, caplog):
    def broken(run_dir):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(plotting, "plot_run", broken)
    with caplog.at_level(logging.WARNING, logger="textvae.plotting"):
        assert write_training_plots(trained_run) is True
    assert "disk on fire" in caplog.text
    monkeypatch.setattr(plotting.importlib.util, "find_spec", lambda name: None)
    assert write_training_plots(trained_run) is False  # the trainer then stops asking


def test_report_to_tensorboard_writes_the_scalars_and_plots_can_be_off(tmp_path, corpus_file):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    options = {**TINY_TRAIN, "epochs": 1, "plot_each_epoch": False}
    config = TrainConfig(data=str(corpus_file), report_to="tensorboard", **options)
    run = train(config, output_dir=tmp_path / "run")
    assert not list(run.glob("*.png"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    records = jsonl(run / "metrics.jsonl")
    train_records = [r for r in records if r["split"] == "train"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train_records]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train_records], rel=1e-6)
    (validation,) = [r for r in records if r["split"] == "validation"]
    assert events.Scalars("validation/neg_elbo")[0].value == pytest.approx(validation["neg_elbo"], rel=1e-6)
    assert events.Scalars("validation/au")[0].value == validation["au"]


def test_bad_report_to_is_refused():
    with pytest.raises(ValueError, match="report_to must be one of none, tensorboard, got 'wandb'"):
        TrainConfig(report_to="wandb")


def test_tensorboard_after_a_resume_holds_each_step_once(tmp_path, corpus_file):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    options = {**TINY_TRAIN, "epochs": 1, "log_steps": 1, "save_steps": 3, "keep_checkpoints": 2}
    config = TrainConfig(data=str(corpus_file), report_to="tensorboard", **options)
    run = train(config, output_dir=tmp_path / "run")
    last = checkpoint_folders(run)[-1]
    shutil.rmtree(last)  # as if killed before it: the steps logged after checkpoint-<step> come again
    time.sleep(1.1)  # event files are named by the second
    train(None, resume=run)
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    train_records = [r for r in jsonl(run / "metrics.jsonl") if r["split"] == "train"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [e.step for e in events.Scalars("train/loss")] == [r["step"] for r in train_records]
