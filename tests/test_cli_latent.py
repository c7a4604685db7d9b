"""`textvae neighbours`, `transfer`, `analogy`, `score`, `probe`, and labelled files on the command line."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys

import pytest

from textvae.data.corpora import load_corpus
from textvae.latent.cache import CACHE_PREFIX

from .helpers import make_sentences, run_cli, run_cli_error


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the trained run: the commands write their corpus caches into it."""
    return shutil.copytree(trained_run, tmp_path / "run")


def labelled(count: int, seed: int) -> list[tuple[str, int]]:
    """Distinct sentences labelled 1 when they mention a cat, 0 otherwise (both classes present)."""
    sentences = sorted(set(make_sentences(count, seed=seed)))
    rows = [(sentence, int("cat" in sentence.split())) for sentence in sentences]
    assert {label for _, label in rows} == {0, 1}
    return rows


def write_table(path, rows, text_column: str = "text", label_column: str = "label"):
    """`rows` of (sentence, label) as a .txt, .csv, .tsv or .jsonl file, with the given column names."""
    if path.suffix == ".txt":
        path.write_text("".join(f"{text}\n" for text, _ in rows), encoding="utf-8")
    elif path.suffix == ".jsonl":
        lines = [json.dumps({text_column: text, label_column: label}) for text, label in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if path.suffix == ".tsv" else ",", lineterminator="\n")
        writer.writerows([(text_column, label_column), *rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


# ---------------------------------------------------------------- labelled corpora


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
@pytest.mark.parametrize("column", ["text", "sentence"])
def test_load_corpus_reads_tables_and_holds_out_validation(tmp_path, monkeypatch, suffix, column):
    rows = [(sentence, 0) for sentence in make_sentences(40, seed=5)]
    path = write_table(tmp_path / f"corpus{suffix}", [*rows[:20], ("  ", 1), *rows[20:]], column)
    corpus = load_corpus(str(path), validation_fraction=0.25, text_column=column)
    texts = sorted([*corpus["train"]["text"], *corpus["validation"]["text"]])
    assert len(corpus["validation"]) == 10 and texts == sorted(text for text, _ in rows)
    if column != "text":
        with pytest.raises(ValueError, match=r"has no text column 'text' \(columns: sentence, label\)"):
            load_corpus(str(path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="corpus not found"):  # a missing table is no Hub id
        load_corpus(f"missing{suffix}")


def test_train_reads_a_jsonl_corpus_with_a_named_column(tmp_path, capsys):
    rows = [(sentence, 0) for sentence in make_sentences(60, seed=6)]
    path = write_table(tmp_path / "corpus.jsonl", rows, text_column="review")
    tiny = ["--hidden-size", 8, "--embedding-size", 8, "--latent-dim", 2, "--max-steps", 2, "--no-progress"]
    code, out, err = run_cli(
        capsys, "train", "--data", path, "--text-column", "review", "-o", tmp_path / "run", *tiny
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--data", path, "-o", tmp_path / "run2", *tiny)
    assert code == 2 and "has no text column 'text'" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- neighbours


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".jsonl"])
def test_neighbours_find_each_corpus_sentence_first_and_cache_the_corpus(run, tmp_path, capsys, suffix):
    rows = labelled(40, seed=7)
    named = suffix != ".txt"
    corpus = write_table(tmp_path / f"corpus{suffix}", rows, text_column="sentence" if named else "text")
    columns = ["--text-column", "sentence"] if named else []
    queries = [rows[0][0], rows[5][0]]
    code, out, err = run_cli(
        capsys, "neighbours", run, *queries, "--corpus", corpus, "-k", 3, "--json", *columns
    )
    assert code == 0, err
    found = json.loads(out)
    assert [row["query"] for row in found] == queries
    assert [row["neighbours"][0]["sentence"] for row in found] == queries  # each is its own nearest
    assert all(len(row["neighbours"]) == 3 for row in found)
    assert found[0]["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(list(run.glob(f"{CACHE_PREFIX}*.safetensors"))) == 1
    code, text, _ = run_cli(
        capsys, "neighbours", run, *queries, "--corpus", corpus, "--metric", "l2", *columns
    )
    lines = text.splitlines()
    assert code == 0 and lines[0] == f"query: {queries[0]}" and lines[6] == "" and len(lines) == 13
    assert re.fullmatch(r"  1\. distance 0\.000  " + re.escape(queries[0]), lines[1])
    assert len(list(run.glob(f"{CACHE_PREFIX}*.safetensors"))) == 1  # reused, not rebuilt


def test_neighbours_read_queries_from_a_labelled_file(run, tmp_path, capsys):
    rows = labelled(30, seed=8)
    corpus = write_table(tmp_path / "corpus.jsonl", rows)
    queries = write_table(tmp_path / "queries.csv", rows[:4])
    code, out, err = run_cli(capsys, "neighbours", run, "--file", queries, "--corpus", corpus, "-k", 1)
    assert code == 0, err
    assert [line for line in out.splitlines() if line.startswith("query:")] == [
        f"query: {text}" for text, _ in rows[:4]
    ]


def test_reading_tables_draws_no_progress_bar(run, tmp_path):
    # In a fresh process (the tests before may have silenced datasets already): stderr holds log lines only.
    rows = labelled(30, seed=13)
    corpus, queries = write_table(tmp_path / "corpus.jsonl", rows), write_table(tmp_path / "q.csv", rows[:2])
    command = [sys.executable, "-m", "textvae.cli", "neighbours", str(run), "--file", str(queries)]
    result = subprocess.run(
        [*command, "--corpus", str(corpus), "-k", "1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert all(line.startswith("textvae: ") for line in result.stderr.splitlines()), result.stderr


# ---------------------------------------------------------------- transfer and analogy


def test_transfer_from_files_and_from_labels(run, tmp_path, capsys):
    rows = labelled(60, seed=9)
    source = write_table(tmp_path / "neg.txt", [row for row in rows if row[1] == 0])
    target = write_table(tmp_path / "pos.tsv", [row for row in rows if row[1] == 1])
    sentences = ["the dog sat on the mat", "a red rug"]
    _, reconstructed, _ = run_cli(capsys, "reconstruct", run, *sentences)
    code, out, err = run_cli(
        capsys, "transfer", run, *sentences, "--source", source, "--target", target, "--strength", 0
    )
    assert code == 0, err
    assert out == reconstructed  # strength 0 is reconstruction
    labels = write_table(tmp_path / "labels.csv", rows, label_column="sentiment")
    code, out, err = run_cli(
        capsys,
        *("transfer", run, *sentences, "--labels", labels, "--label-column", "sentiment"),
        *("--from", 0, "--to", 1, "--strength", 2.5, "--json"),
    )
    assert code == 0, err
    results = json.loads(out)
    assert [row["sentence"] for row in results] == sentences and all(
        row["strength"] == 2.5 for row in results
    )
    assert all(isinstance(row["transferred"], str) for row in results)


def test_analogy_with_a_equal_to_b_reconstructs_c(run, capsys):
    _, reconstructed, _ = run_cli(capsys, "reconstruct", run, "a big dog ran")
    code, out, err = run_cli(capsys, "analogy", run, "the cat", "the cat", "a big dog ran")
    assert code == 0 and out == reconstructed, err
    code, out, _ = run_cli(capsys, "analogy", run, "the cat", "the dog", "a cat ran", "--json")
    answer = json.loads(out)
    assert code == 0 and (answer["a"], answer["b"], answer["c"]) == ("the cat", "the dog", "a cat ran")


# ---------------------------------------------------------------- score


def test_score_jsonl_and_tsv_in_input_order(run, tmp_path, capsys):
    sentences = ["the cat sat on the big red mat", "a dog", "the rug ran under a small blue cat"]
    path = write_table(tmp_path / "s.jsonl", [(text, 0) for text in sentences], text_column="sentence")
    common = ["--file", path, "--text-column", "sentence", "--iw-samples", 4]
    code, out, err = run_cli(capsys, "score", run, *common)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["sentence"] for row in rows] == sentences
    assert [row["tokens"] for row in rows] == [len(text.split()) + 1 for text in sentences]
    for row in rows:
        assert row["nll_per_token"] == pytest.approx(row["nll"] / row["tokens"])
        assert row["neg_elbo"] == pytest.approx(row["rec"] + row["kl"]) and row["kl"] >= 0
    code, out, _ = run_cli(capsys, "score", run, *common, "--format", "tsv")
    table = list(csv.DictReader(io.StringIO(out), delimiter="\t"))
    assert code == 0 and [row["sentence"] for row in table] == sentences
    assert [float(row["nll"]) for row in table] == pytest.approx([row["nll"] for row in rows], abs=1e-4)


def test_score_against_another_file_reports_every_auroc(run, tmp_path, capsys):
    usual = write_table(tmp_path / "in.txt", [(text, 0) for text in make_sentences(12, seed=10)])
    odd = write_table(tmp_path / "out.csv", [("zebra quantum " * 3, 0), ("blue blue blue blue blue blue", 0)])
    code, out, err = run_cli(capsys, "score", run, "--file", usual, "--against", odd, "--iw-samples", 3)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["file"] for row in rows] == [str(usual)] * 12 + [str(odd)] * 2
    values = dict(re.findall(r"^  (\w+)\s+([0-9.]+)$", err, re.MULTILINE))
    assert sorted(values) == sorted(["nll_per_token", "nll", "neg_elbo", "kl"])
    assert all(0.0 <= float(value) <= 1.0 for value in values.values())
    # Each AUROC is the share of (in, out) pairs where the other file's sentence scores higher, ties half.
    for key, value in values.items():
        inside = [row[key] for row in rows[:12]]
        outside = [row[key] for row in rows[12:]]
        pairs = [(o > i) + 0.5 * (o == i) for i in inside for o in outside]
        assert float(value) == pytest.approx(sum(pairs) / len(pairs), abs=5e-5), key


def test_score_works_for_a_language_model(tmp_path, capsys, corpus_file):
    lm = tmp_path / "lm"
    tiny = ["--hidden-size", 8, "--embedding-size", 8, "--latent-dim", 0, "--epochs", 1, "--no-progress"]
    assert run_cli(capsys, "train", "--data", corpus_file, "-o", lm, *tiny)[0] == 0
    code, out, err = run_cli(capsys, "score", lm, "the cat sat", "a dog ran on the mat", "--iw-samples", 3)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(row["kl"] == 0 and row["nll"] == pytest.approx(row["neg_elbo"]) for row in rows)


# ---------------------------------------------------------------- probe


def test_probe_prints_a_table_and_json(run, tmp_path, capsys):
    rows = labelled(150, seed=11)
    train = write_table(tmp_path / "train.jsonl", rows[:100], label_column="y")
    test = write_table(tmp_path / "test.csv", rows[100:], label_column="y")
    options = [
        "--train",
        train,
        "--test",
        test,
        "--label-column",
        "y",
        "--num-labels",
        "10,all",
        "--repeats",
        2,
    ]
    code, out, err = run_cli(capsys, "probe", run, *options)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["labels", "latent"] and len(lines) == 3
    assert lines[1].startswith("10 ") and lines[2].startswith("all (100)")
    assert len(list(run.glob(f"{CACHE_PREFIX}*.safetensors"))) == 2  # train and test encodings, reused below
    code, out, _ = run_cli(capsys, "probe", run, *options, "--json")
    results = json.loads(out)
    assert [row["num_labels"] for row in results["latent"]] == [10, None]
    assert [len(row["accuracies"]) for row in results["tfidf"]] == [2, 1]
    # "cat" decides the label: a bag of words learns it from all the labels.
    assert results["tfidf"][1]["accuracy"] > 0.9


# ---------------------------------------------------------------- bad input


def bad_inputs(tmp_path, run):
    rows = labelled(40, seed=12)
    good = write_table(tmp_path / "good.jsonl", rows)
    text = write_table(tmp_path / "plain.txt", rows)
    one_class = write_table(tmp_path / "one.jsonl", [(sentence, 1) for sentence, _ in rows])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    missing = tmp_path / "missing.jsonl"
    nowhere = ["--train", good, "--test", good]
    return {
        "missing text column": (
            ["neighbours", run, "a", "--corpus", good, "--text-column", "review"],
            "has no text column 'review'",
        ),
        "missing label column": (
            ["probe", run, *nowhere, "--label-column", "stars"],
            "has no label column 'stars'",
        ),
        "labels of a text file": (
            ["probe", run, "--train", text, "--test", good],
            r"\.txt file with no columns",
        ),
        "one class": (["probe", run, "--train", one_class, "--test", good], "at least two classes"),
        "more labels than exist": (
            ["probe", run, *nowhere, "--num-labels", "1000"],
            "asked for 1000 labelled examples but only 40 exist",
        ),
        "bad number of labels": (
            ["probe", run, *nowhere, "--num-labels", "10,many"],
            "--num-labels: expected",
        ),
        "zero labels": (["probe", run, *nowhere, "--num-labels", "0"], "--num-labels: expected"),
        "empty file": (["neighbours", run, "a", "--corpus", empty], "is empty"),
        "missing corpus": (["neighbours", run, "a", "--corpus", missing], "--corpus: file not found"),
        "corpus of another kind": (
            ["neighbours", run, "a", "--corpus", tmp_path],
            "--corpus: expected a .txt",
        ),
        "missing query file": (["neighbours", run, "--file", missing, "--corpus", good], "not found"),
        "missing against": (["score", run, "a", "--against", missing], "--against: file not found"),
        "nan strength": (
            ["transfer", run, "a", "--source", good, "--target", good, "--strength", "nan"],
            "--strength: expected a finite number",
        ),
        "infinite strength": (
            ["transfer", run, "a", "--source", good, "--target", good, "--strength", "inf"],
            "--strength: expected a finite number",
        ),
        "no groups": (["transfer", run, "a"], "give the two groups"),
        "half the groups": (["transfer", run, "a", "--source", good], "go together"),
        "both ways": (
            ["transfer", run, "a", "--source", good, "--target", good, "--labels", good],
            "not both",
        ),
        "labels without --to": (
            ["transfer", run, "a", "--labels", good, "--from", 0],
            "needs --from and --to",
        ),
        "same labels": (["transfer", run, "a", "--labels", good, "--from", 1, "--to", 1], "must differ"),
        "absent label": (
            ["transfer", run, "a", "--labels", good, "--from", 0, "--to", "pos"],
            r"--to 'pos': no sentence .* has that label \(labels: 0, 1\)",
        ),
        "zero neighbours": (["neighbours", run, "a", "--corpus", good, "-k", 0], "positive integer"),
        "zero samples": (["score", run, "a", "--iw-samples", 0], "positive integer"),
        "bad format": (["score", run, "a", "--format", "xml"], "invalid choice"),
        "analogy without c": (["analogy", run, "a", "b"], "required: c"),
    }


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys, run):
    for name, (args, message) in bad_inputs(tmp_path, run).items():
        assert run_cli_error(capsys, args, message, name) == 2, name


def test_a_language_model_is_refused_by_the_latent_commands(tmp_path, capsys, corpus_file):
    lm = tmp_path / "lm"
    tiny = ["--hidden-size", 8, "--embedding-size", 8, "--latent-dim", 0, "--max-steps", 1, "--no-progress"]
    assert run_cli(capsys, "train", "--data", corpus_file, "-o", lm, *tiny)[0] == 0
    code, _, err = run_cli(capsys, "neighbours", lm, "the cat", "--corpus", corpus_file)
    assert code == 2 and "language model with no latent" in err and len(err.splitlines()) == 1


def test_latent_arguments_are_checked_before_torch_is_imported(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a", "label": 0}\n')
    calls = [
        ["probe", "RUN", "--train", str(good), "--test", str(good), "--num-labels", "x"],
        ["transfer", "RUN", "a", "--source", str(good), "--target", str(good), "--strength", "nan"],
        ["transfer", "RUN", "a", "--source", str(good)],
        ["neighbours", "RUN", "a", "--corpus", str(tmp_path / "missing.txt")],
    ]
    code = (
        "import sys\n"
        "from textvae.cli import main\n"
        f"for call in {calls!r}:\n"
        "    try:\n"
        "        assert main(call) == 2\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 2\n"
        "print([name for name in ('torch', 'transformers', 'datasets') if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == len(calls)
