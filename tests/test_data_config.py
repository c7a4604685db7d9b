"""`DataConfig`: the data recipe apart from training; old config files still load; train_splits."""

from __future__ import annotations

import json

import pytest

from textvae.data.config import DataConfig, split_flat_options
from textvae.data.corpora import load_corpus
from textvae.training.config import TrainConfig
from textvae.training.run import train

from .helpers import TINY_TRAIN, make_sentences, run_cli, run_cli_error


def test_an_old_flat_config_and_a_new_nested_one_give_the_same_config():
    flat = {"data": "ptb", "max_length": 40, "tokenizer_type": "bpe", "seed": 7, "epochs": 3}
    nested = {"data": {"source": "ptb", "max_length": 40, "tokenizer_type": "bpe"}, "seed": 7, "epochs": 3}
    assert TrainConfig.from_dict(flat) == TrainConfig.from_dict(nested)
    config = TrainConfig.from_dict(flat)
    assert config.data.max_length == 40 and config.data.split_seed == 7  # the cut follows the seed
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_top_level_data_options_win_over_the_mapping_as_flags_over_a_file():
    data, rest = split_flat_options({"data": {"source": "a", "max_length": 5}, "max_length": 9, "epochs": 1})
    assert data == {"source": "a", "max_length": 9} and rest == {"epochs": 1}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"data": {"source": "ptb", "max_lenght": 3}}, "unknown data option.*max_lenght"),
        ({"data": {"source": "ptb", "overlong": "cut"}}, "overlong must be one of truncate, drop"),
        ({"data": {"source": "ptb", "validation_fraction": 1.5}}, r"validation_fraction must be in \(0, 1\)"),
        ({"data": {"source": "ptb", "train_splits": "train,../x"}}, "train_splits must be file names"),
        ({"data": ["ptb"]}, "data must be a corpus name or a mapping"),
        ({"data": {"source": ""}}, "must be set"),
    ],
)
def test_bad_data_options_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_evaluation_reads_the_data_recipe_of_a_run_in_either_layout(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"data": "x.txt", "text_column": "t", "seed": 2}))
    assert DataConfig.from_run(tmp_path) == DataConfig(source="x.txt", text_column="t", split_seed=2)
    nested = TrainConfig.from_dict({"data": {"source": "y", "min_frequency": 2}})
    nested.save(tmp_path / "train_config.json")
    assert DataConfig.from_run(tmp_path).min_frequency == 2
    with pytest.raises(ValueError, match="has no train_config.json"):
        DataConfig.from_run(tmp_path / "nothing")


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{s}\n" for s in make_sentences(40, seed=1)))
    (folder / "extra.txt").write_text("".join(f"extra {s}\n" for s in make_sentences(30, seed=2)))
    (folder / "valid.txt").write_text("".join(f"{s}\n" for s in make_sentences(10, seed=3)))
    return folder


def test_train_splits_join_the_folders_files_in_order(folder):
    plain = load_corpus(str(folder))
    joined = load_corpus(str(folder), train_splits=("train", "extra"))
    assert len(plain["train"]) == 40 and len(joined["train"]) == 70
    assert joined["train"]["text"][:40] == plain["train"]["text"]
    assert all(text.startswith("extra ") for text in joined["train"]["text"][40:])
    assert joined["validation"]["text"] == plain["validation"]["text"]
    with pytest.raises(ValueError, match="has no more.txt"):
        load_corpus(str(folder), train_splits=("train", "more"))
    with pytest.raises(ValueError, match="names files of a corpus folder"):
        load_corpus(str(folder / "train.txt"), train_splits=("train", "extra"))


def test_train_trains_on_the_joined_splits_and_the_command_line_takes_them(folder, tmp_path, capsys):
    run = train(
        TrainConfig(
            data={"source": str(folder), "train_splits": "train,extra"}, **{**TINY_TRAIN, "epochs": 1}
        ),
        output_dir=tmp_path / "run",
    )
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["data"]["train_splits"] == "train,extra" and saved["data"]["source"] == str(folder)
    code, _, err = run_cli(
        capsys, "train", "--data", folder, "--train-splits", "train,extra", "-o", tmp_path / "cli", "--epochs", "1",
        "--hidden-size", "8", "--embedding-size", "8", "--latent-dim", "2", "--no-progress", "--no-fit-prior",
        "--no-plot-each-epoch",
    )  # fmt: skip
    assert code == 0, err
    assert (
        json.loads((tmp_path / "cli" / "train_config.json").read_text())["data"]["train_splits"]
        == "train,extra"
    )
    args = ["train", "--data", folder, "--train-splits", "train,nope", "-o", tmp_path / "bad"]
    assert run_cli_error(capsys, args, "has no nope.txt") == 2
    assert not (tmp_path / "bad").exists()
