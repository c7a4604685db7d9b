"""The `textvae` command: every subcommand end to end, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textvae.cli import main

from .helpers import make_sentences, run_cli, run_cli_error


def test_train_sample_reconstruct_interpolate_encode(tmp_path, capsys, caplog, corpus_file):
    run = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\nbatch_size: 16\nmodel:\n  hidden_size: 12\n", encoding="utf-8")
    code, out, err = run_cli(
        capsys,
        "train",
        "--config",
        config,
        "--data",
        corpus_file,
        "-o",
        run,
        "--embedding-size",
        8,
        "--latent-dim",
        3,
        "--no-progress",
        "--word-dropout",
        0.1,
        "--kl-schedule",
        "cyclical",
    )
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["hidden_size"], saved["embedding_size"], saved["latent_dim"]) == (12, 8, 3)
    assert json.loads((run / "train_config.json").read_text())["kl_schedule"] == "cyclical"

    code, out, _ = run_cli(capsys, "sample", run, "-n", 3, "--seed", 1, "--top-p", 0.9)
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run_cli(capsys, "reconstruct", run, "the cat sat", "a dog", "--strategy", "beam")
    assert code == 0 and len(out.splitlines()) == 2
    code, after, _ = run_cli(capsys, "reconstruct", run, "--strategy", "beam", "the cat sat", "a dog")
    assert code == 0 and after == out  # sentences may follow the options
    code, out, _ = run_cli(
        capsys, "interpolate", run, "the cat sat", "a dog ran", "--steps", 4, "--method", "slerp"
    )
    lines = out.splitlines()
    assert code == 0 and lines[:2] == ["start: the cat sat", "end:   a dog ran"] and len(lines) == 6
    assert lines[2].startswith("  step 1/4 (t=0.00, start):") and lines[5].startswith(
        "  step 4/4 (t=1.00, end):"
    )
    code, out, _ = run_cli(capsys, "interpolate", run, "the cat sat", "a dog ran", "--steps", 3, "--json")
    path = json.loads(out)
    assert code == 0 and (path["start"], path["end"]) == ("the cat sat", "a dog ran")
    assert [point["t"] for point in path["path"]] == [0.0, 0.5, 1.0]
    assert all(0 <= point["similarity_to_start"] <= 1 for point in path["path"])

    sentences = tmp_path / "s.txt"
    sentences.write_text("the cat\n\na dog ran\n", encoding="utf-8")
    code, _, _ = run_cli(capsys, "encode", run, "--file", sentences, "--output", tmp_path / "z.npy")
    assert code == 0 and np.load(tmp_path / "z.npy").shape == (2, 3)
    assert "skipped 1 blank" in caplog.text
    code, _, _ = run_cli(capsys, "encode", run, "the cat", "--output", tmp_path / "z.jsonl")
    row = json.loads((tmp_path / "z.jsonl").read_text().splitlines()[0])
    assert code == 0 and row["sentence"] == "the cat" and len(row["mu"]) == len(row["logvar"]) == 3


def test_resume_from_the_command_line(tmp_path, capsys, corpus_file):
    run = tmp_path / "run"
    assert (
        run_cli(
            capsys,
            "train",
            "--data",
            corpus_file,
            "-o",
            run,
            "--epochs",
            2,
            "--max-steps",
            3,
            "--hidden-size",
            8,
            "--embedding-size",
            8,
            "--latent-dim",
            2,
            "--no-progress",
        )[0]
        == 0
    )
    code, _, err = run_cli(capsys, "train", "--resume", run, "--no-progress")
    assert code == 0, err
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_reconstruct_reads_standard_input(trained_run):
    # `python -m textvae` is the command, as `torchrun -m textvae train` needs.
    result = subprocess.run(
        [sys.executable, "-m", "textvae", "reconstruct", str(trained_run)],
        input="the cat sat\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1


def test_help_documents_every_command(capsys):
    commands = ("train", "sample", "reconstruct", "interpolate", "encode", "evaluate")
    for command in (*commands, "neighbours", "transfer", "analogy", "score", "probe"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: textvae " + command in out
        # Each option states its default once, the fields that describe theirs ("no limit") included.
        options = re.split(r"\n  (?=-)", out)
        assert all(option.count("(default:") <= 1 for option in options), command
        if command == "train":
            assert any("--max-length" in option and "(default: 128)" in option for option in options)


def bad_inputs(tmp_path, run, corpus_file):
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage")
    mismatched = tmp_path / "mismatched"
    shutil.copytree(run, mismatched)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(make_sentences(50, seed=9) + ["entirely new words here"]) + "\n")
    from textvae.data.tokenization import train_word_tokenizer

    train_word_tokenizer(other.read_text().splitlines()).save_pretrained(mismatched)
    non_finite = tmp_path / "non-finite"
    shutil.copytree(run, non_finite)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(non_finite / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * float("nan")
    save_file(tensors, str(non_finite / "model.safetensors"), metadata={"format": "pt"})
    resized = tmp_path / "resized"
    shutil.copytree(run, resized)
    config = json.loads((resized / "config.json").read_text())
    config["vocab_size"] += 1
    (resized / "config.json").write_text(json.dumps(config))
    typo_config = tmp_path / "typo.yaml"
    typo_config.write_text('epochs: "three"\n')
    one_line = tmp_path / "one.txt"
    one_line.write_text("just one sentence\n")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    return {
        "config value of the wrong type": (
            ["train", "--data", corpus_file, "--config", typo_config],
            "epochs must be an integer, got 'three'",
        ),
        "infinite learning rate": (
            ["train", "--data", corpus_file, "--learning-rate", "inf"],
            "learning_rate must be a finite number",
        ),
        "nan beta": (["train", "--data", corpus_file, "--beta", "nan"], "beta must be a finite number"),
        "an architecture option its decoder cannot take": (  # named before the vocabulary line
            ["train", "--data", corpus_file, "--decoder-type", "transformer", "--z-to-output"],
            "z_to_output applies to lstm / gru decoders",
        ),
        "a negative bag-of-words weight": (
            ["train", "--data", corpus_file, "--bag-of-words-loss", "-2"],
            "bag_of_words_loss must be a finite number >= 0",
        ),
        "nan free bits": (
            ["train", "--data", corpus_file, "--free-bits", "nan"],
            "free_bits must be a finite number",
        ),
        "output folder is a file": (
            ["train", "--data", corpus_file, "-o", a_file],
            "is an existing file, not a folder",
        ),
        "output folder under a file": (
            ["train", "--data", corpus_file, "-o", a_file / "run"],
            "cannot create the output folder",
        ),
        "resume a file": (["train", "--resume", a_file], "nothing to resume"),
        "one-line corpus": (["train", "--data", one_line, "-o", tmp_path / "r6"], "needs at least 2"),
        "non-finite weights": (["sample", non_finite], "not finite"),
        "changed vocabulary size": (
            ["sample", resized],
            r"has shape \([\d, ]+\) in model.safetensors but the config builds",
        ),
        "nan top-p": (["sample", run, "--top-p", "nan"], "--top-p: expected a finite number"),
        "negative repetition penalty": (
            ["sample", run, "--repetition-penalty", "-1"],
            "expected a positive number",
        ),
        "missing aggregate prior": (
            ["sample", mismatched, "--prior", "aggregate"],  # (checked before the tokenizer)
            "does not belong to this model|has no aggregate prior",
        ),
        "missing corpus": (
            ["train", "--data", tmp_path / "nope.txt", "-o", tmp_path / "r1"],
            "corpus not found",
        ),
        "empty corpus": (["train", "--data", empty, "-o", tmp_path / "r2"], "empty"),
        "non-UTF-8 corpus": (
            ["train", "--data", not_utf8, "-o", tmp_path / "r3"],
            "not UTF-8.*--encoding-errors",
        ),
        "bad option value": (
            ["train", "--data", corpus_file, "--kl-schedule", "sometimes"],
            "kl_schedule must be one of",
        ),
        "missing decoder source": (
            [
                "train",
                "--data",
                corpus_file,
                "-o",
                tmp_path / "r4",
                "--init-decoder-from",
                tmp_path / "nowhere",
            ],
            "model folder not found",
        ),
        "decoder source of another size": (
            [
                "train",
                "--data",
                corpus_file,
                "-o",
                tmp_path / "r5",
                "--init-decoder-from",
                run,
                "--hidden-size",
                40,
            ],
            "decoders do not match",
        ),
        "bad number": (["train", "--data", corpus_file, "--epochs", "many"], "invalid int value"),
        "empty sentence": (["reconstruct", run, ""], "empty"),
        "blank interpolation end": (["interpolate", run, "the cat", "  "], "empty"),
        "not a model": (["sample", not_a_model], "not a textvae model folder"),
        "missing model": (["sample", tmp_path / "nowhere"], "not found"),
        "corrupt weights": (["sample", corrupt], "model.safetensors is corrupt or cut short"),
        "tokenizer of another model": (["sample", mismatched], "does not belong to this model"),
        "zero samples": (["sample", run, "-n", "0"], "positive integer"),
        "negative samples": (["sample", run, "-n", "-2"], "positive integer"),
        "unknown strategy": (["reconstruct", run, "a", "--strategy", "telepathy"], "invalid choice"),
        "bad output suffix": (["encode", run, "a", "--output", tmp_path / "z.csv"], r"\.npy or \.jsonl"),
        "bad temperature": (
            ["sample", run, "--temperature", "0"],
            "--temperature: expected a positive number",
        ),
        "bad steps": (["interpolate", run, "a", "b", "--steps", "1"], "steps must be at least 2"),
        "unknown flag": (["sample", run, "--colour", "red"], "unrecognized arguments"),
    }


def test_bad_inputs_give_one_line_and_a_nonzero_exit(tmp_path, capsys, trained_run, corpus_file):
    for name, (args, message) in bad_inputs(tmp_path, trained_run, corpus_file).items():
        assert run_cli_error(capsys, args, message, name) != 0, name


def test_encode_never_overwrites_without_force(tmp_path, capsys, trained_run):
    output = tmp_path / "z.npy"
    output.write_bytes(b"precious")
    code, _, err = run_cli(capsys, "encode", trained_run, "the cat", "--output", output)
    assert code == 2 and "exists" in err and output.read_bytes() == b"precious"


def test_evaluate_command_prints_a_table_and_saves_json(tmp_path, capsys, trained_run):
    corpus = tmp_path / "eval.txt"
    corpus.write_text("\n".join(make_sentences(30, seed=11)) + "\n", encoding="utf-8")
    args = [
        "evaluate",
        trained_run,
        "--data",
        corpus,
        "--split",
        "train",
        "--iw-samples",
        8,
        "--diversity-samples",
        5,
    ]
    code, out, err = run_cli(capsys, *args, "--limit", 10)
    assert code == 0, err
    assert "NLL (importance weighted)" in out and "PPL (from NLL)" in out
    saved = json.loads((trained_run / "eval-file-eval-first10-k8.json").read_text())
    assert saved["num_sentences"] == 10 and saved["iw_samples"] == 8
    code, out, _ = run_cli(capsys, *args, "--json", "--limit", 4)
    results = json.loads(out)
    assert code == 0 and results["nll"] <= results["neg_elbo"] + 1.0 and results["num_sentences"] == 4
    # A file given to evaluate is evaluated whole: all 30 sentences, not a held-out 5% of them.
    code, out, _ = run_cli(capsys, *args, "--json")
    results = json.loads(out)
    assert code == 0 and results["num_sentences"] == 30 and results["split"] == "file"
    assert re.search(r"^sentences\s+30$", run_cli(capsys, *args)[1], re.MULTILINE)


def test_evaluate_refuses_a_missing_split(tmp_path, capsys, trained_run):
    corpus = tmp_path / "eval"
    corpus.mkdir()
    (corpus / "train.txt").write_text("a b\nc d\n", encoding="utf-8")  # a folder without test.txt
    code, _, err = run_cli(capsys, "evaluate", trained_run, "--data", corpus, "--split", "test")
    assert code == 2 and "has no test split" in err


@pytest.mark.parametrize("encoder", ["lstm", "gru", "transformer"])
@pytest.mark.parametrize("decoder", ["lstm", "gru", "transformer"])
def test_every_architecture_pair_from_the_command_line(tmp_path, capsys, corpus_file, encoder, decoder):
    run = tmp_path / "run"
    tiny = ["--embedding-size", 8, "--hidden-size", 8, "--latent-dim", 3, "--num-attention-heads", 2]
    architecture = ["--encoder-type", encoder, "--decoder-type", decoder, "--intermediate-size", 16]
    code, _, err = run_cli(
        capsys,
        "train",
        "--data",
        corpus_file,
        "-o",
        run,
        "--epochs",
        1,
        "--no-progress",
        *tiny,
        *architecture,
    )
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert (saved["encoder_type"], saved["decoder_type"]) == (encoder, decoder)
    code, out, _ = run_cli(capsys, "sample", run, "-n", 2, "--seed", 0, "--max-length", 12)
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = run_cli(
        capsys, "interpolate", run, "the cat sat", "a dog ran", "--steps", 3, "--max-length", 12
    )
    assert code == 0 and len(out.splitlines()) == 2 + 3  # the two inputs, then the three steps
    code, out, _ = run_cli(
        capsys, "evaluate", run, "--data", corpus_file, "--iw-samples", 4, "--diversity-samples", 2, "--json"
    )
    results = json.loads(out)
    assert code == 0 and results["au"] is not None and results["nll"] <= results["neg_elbo"] + 1.0


def test_arguments_are_checked_before_torch_is_imported(tmp_path):
    # `textvae --help` and argument errors answer at once: nothing heavy is imported to reject them.
    code = (
        "import sys\n"
        "from textvae.cli import main\n"
        "try:\n"
        "    main(['sample', 'RUN', '-n', '0'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 2\n"
    )
    script = tmp_path / "check.py"
    script.write_text(
        code + "heavy = [name for name in ('torch', 'transformers', 'datasets') if name in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert "positive integer" in result.stderr


def _importing_torch(process) -> bool:
    """True once the process has begun loading torch's libraries: Python runs, and start-up is under way."""
    try:
        return "libtorch" in open(f"/proc/{process.pid}/maps").read()
    except OSError:
        return False


def _interrupt(command: list[str], when) -> subprocess.CompletedProcess:
    import signal
    import time

    # pytest's own process may ignore SIGINT, and a child inherits that: give it the default handling back
    # (Python then installs its KeyboardInterrupt handler at start-up, within milliseconds).
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not when(process) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc to time the interrupt")
def test_ctrl_c_is_one_line_exit_130_and_says_how_to_continue(tmp_path, corpus_file):
    run = tmp_path / "run"
    train_command = [sys.executable, "-m", "textvae.cli", "train", "--data", str(corpus_file), "-o", str(run)]
    train_command += [
        "--epochs",
        "50",
        "--save-steps",
        "2",
        "--no-progress",
        "--hidden-size",
        "8",
        "--latent-dim",
        "2",
    ]
    # During start-up: the imports are under way, nothing is saved yet.
    started = _interrupt(train_command, _importing_torch)
    lines = [line for line in started.stderr.splitlines() if line.strip()]
    assert started.returncode == 130 and "Traceback" not in started.stderr
    assert lines[-1].startswith("textvae train: interrupted") and len(lines) <= 2, started.stderr
    # During training, once a checkpoint exists: the message says how to resume.
    shutil.rmtree(run, ignore_errors=True)
    stopped = _interrupt(train_command, lambda _: any(run.glob("checkpoint-*/trainer_state.json")))
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr
    assert (
        stopped.stderr.strip().splitlines()[-1]
        == f"textvae train: interrupted; continue with: textvae train --resume {run}"
    )


def test_the_aggregate_prior_is_fitted_by_training_and_by_fit_prior(tmp_path, capsys, trained_run):
    # Training fitted it at its end: sampling from it repeats with a seed.
    assert (trained_run / "prior.json").is_file() and (trained_run / "prior.safetensors").is_file()
    first = run_cli(capsys, "sample", trained_run, "-n", 4, "--seed", 3, "--prior", "aggregate")
    again = run_cli(capsys, "sample", trained_run, "-n", 4, "--seed", 3, "--prior", "aggregate")
    assert first[0] == 0 and first[1] == again[1] and len(first[1].splitlines()) == 4
    # fit-prior fits it again for a run without one (an older run).
    older = tmp_path / "older"
    shutil.copytree(trained_run, older)
    (older / "prior.json").unlink()
    (older / "prior.safetensors").unlink()
    code, _, err = run_cli(capsys, "sample", older, "--prior", "aggregate")
    assert code == 2 and "has no aggregate prior: run `textvae fit-prior" in err
    code, out, err = run_cli(capsys, "fit-prior", older, "--components", "1,2", "--max-train", 100)
    assert code == 0 and "aggregate prior with" in out, err
    assert json.loads((older / "prior.json").read_text())["n_components"] in (1, 2)
    assert run_cli(capsys, "sample", older, "-n", 2, "--prior", "aggregate", "--seed", 1)[0] == 0
    code, _, err = run_cli(capsys, "fit-prior", older, "--components", "0,x")
    assert code == 2 and "--components must be positive integers" in err


def test_reconstruct_can_show_each_input_above_its_reconstruction(trained_run, capsys):
    sentences = ["the cat sat on the mat", "a dog ran"]
    code, plain, _ = run_cli(capsys, "reconstruct", str(trained_run), *sentences)
    assert code == 0 and len(plain.splitlines()) == 2
    code, shown, _ = run_cli(capsys, "reconstruct", str(trained_run), *sentences, "--show-input")
    assert code == 0
    assert shown.splitlines() == [
        line
        for pair in zip(sentences, plain.splitlines(), strict=True)
        for line in (pair[0], f"  -> {pair[1]}")
    ]


def test_library_info_lines_stay_out_of_the_command_output():
    # In a fresh process, as the command runs: logging is set before torch is imported. A Ctrl-C during
    # torch's import left its loggers at the root's INFO, and its exit hook then printed "FakeTensor cache
    # stats" lines after the one line that said what happened.
    check = (
        "import logging, sys; from textvae.cli import _configure_logging; _configure_logging(False); "
        "assert 'torch' not in sys.modules; "
        "print([logging.getLogger(n).isEnabledFor(logging.INFO) for n in "
        "('torch._subclasses.fake_tensor', 'transformers.modeling_utils', 'datasets.builder', 'textvae.training')])"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, False, False, True]"


def test_a_bad_architecture_option_is_the_only_line_before_the_corpus_is_read(tmp_path, corpus_file):
    # A separate process, so the command's own logging reaches standard error as a user sees it.
    command = [
        sys.executable,
        "-m",
        "textvae",
        "train",
        "--data",
        str(corpus_file),
        "-o",
        str(tmp_path / "r"),
    ]
    done = subprocess.run(
        [*command, "--decoder-type", "transformer", "--z-to-output"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "textvae train: error: z_to_output applies to lstm / gru decoders, not 'transformer'"
    ]
    assert not (tmp_path / "r").exists()


def test_progress_bars_redraw_once_a_minute_off_a_terminal(capsys, monkeypatch, tmp_path):
    import os

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    run_cli(capsys, "sample", tmp_path / "missing", "-n", 1)  # standard error is captured: no terminal
    assert os.environ["TQDM_MININTERVAL"] == "60"
    monkeypatch.setenv("TQDM_MININTERVAL", "5")  # the user's own choice is kept
    run_cli(capsys, "sample", tmp_path / "missing", "-n", 1)
    assert os.environ["TQDM_MININTERVAL"] == "5"
    # tqdm reads it when it is first imported, which the command does after setting it.
    check = (
        "import sys; from textvae.cli import _pace_progress_bars; _pace_progress_bars(); "
        "assert 'tqdm' not in sys.modules; from tqdm.auto import tqdm; print(tqdm(total=1).mininterval)"
    )
    environment = {key: value for key, value in os.environ.items() if key != "TQDM_MININTERVAL"}
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, env=environment
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == 60


def test_training_progress_off_a_terminal_is_not_a_line_per_step(tmp_path):
    # The bar's figures (loss, kl, beta) are shown at the bar's own pace, not at every step: a log file
    # (make demo > log, CI) used to get one line per step.
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(make_sentences(200, seed=5)) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "textvae", "train", "--data", str(corpus), "-o", str(tmp_path / "run")]
    command += ["--epochs", "3", "--batch-size", "8", "--embedding-size", "8", "--hidden-size", "8"]
    command += ["--latent-dim", "2", "--no-fit-prior", "--no-plot-each-epoch"]
    environment = {key: value for key, value in os.environ.items() if key != "TQDM_MININTERVAL"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(max((tmp_path / "run").glob("checkpoint-*/trainer_state.json")).read_text())["step"]
    assert steps >= 60 and done.stderr.count("loss=") <= 6  # a few per epoch at most
