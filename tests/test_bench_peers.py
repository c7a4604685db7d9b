"""scripts/bench_peers.py, the peers' own training code beside textvae: its pieces on a tiny stand-in PTB and
fake peers that print the real peers' log lines (no peer's real training), textvae's row on a few steps,
and one line with exit status 2 for bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .helpers import write_tiny_ptb

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_peers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module  # its dataclass looks its module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_peers", None)


@pytest.fixture
def tiny_ptb(tmp_path):
    return write_tiny_ptb(tmp_path, train=40, valid=10)


def run_script(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def git_repository(folder: Path) -> str:
    """A one-commit git repository standing in for a peer's mirror; its commit."""
    folder.mkdir()
    (folder / "train.py").write_text("print('a peer')\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "model.py").write_text("x = 1\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], [*identity, "commit", "-q", "-m", "peer"]):
        subprocess.run(["git", "-C", str(folder), *command], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip()


def test_extract_copies_the_committed_files_and_names_the_commit(bench, tmp_path):
    commit = git_repository(tmp_path / "peer")
    (tmp_path / "peer" / "untracked.py").write_text("")
    assert bench.extract(str(tmp_path / "peer"), tmp_path / "code") == commit
    assert (tmp_path / "code" / "sub" / "model.py").read_text() == "x = 1\n"
    assert not (tmp_path / "code" / "untracked.py").exists() and not (tmp_path / "code" / ".git").exists()
    with pytest.raises(RuntimeError, match="source not found"):
        bench.extract(str(tmp_path / "missing"), tmp_path / "code2")


@pytest.mark.parametrize(
    ("peer", "files"),
    [
        ("sentence-vae", ["data/ptb.train.txt", "data/ptb.valid.txt"]),
        ("lagging", ["datasets/ptb_data/ptb.train.txt", "datasets/ptb_data/ptb.valid.txt"]),
        ("text-autoencoders", ["data/ptb/train.txt", "data/ptb/valid.txt"]),
    ],
)
def test_convert_data_puts_ptb_in_each_peers_layout(bench, tiny_ptb, tmp_path, peer, files):
    code = tmp_path / "code"
    written = bench.convert_data(peer, tiny_ptb, code, epochs=3)
    for name, split in zip(files, ("train", "valid"), strict=True):
        assert (code / name).read_bytes() == (tiny_ptb / "ptb" / f"{split}.txt").read_bytes()
    if peer == "lagging":  # its dataset is a config file, read as config.config_ptb by text.py --dataset ptb
        assert written[-1] == code / "config" / "config_ptb.py"
        scope: dict = {}
        exec(written[-1].read_text(), scope)
        params = scope["params"]
        assert (params["ni"], params["enc_nh"], params["dec_nh"], params["nz"]) == (256, 256, 256, 32)
        assert (params["batch_size"], params["epochs"]) == (32, 3)
        assert params["test_data"] == params["val_data"]  # PTB's test split stays held out
        for key in ("train_data", "val_data"):
            assert (code / params[key]).is_file()


def test_tokens_per_step_follow_each_programs_batching(bench, tmp_path):
    data = tmp_path / "data"
    (data / "ptb").mkdir(parents=True)
    # 3 sentences of 2 words, 1 of 5 words: 3 * 3 + 6 = 15 predicted tokens (words + EOS)
    (data / "ptb" / "train.txt").write_text(" a b\n c d\n e f\n a b c d e\n")
    code = tmp_path / "code"
    assert bench.length_grouped_batches([2, 2, 2, 5], 2) == 3  # [2, 2], [2], [5]
    assert bench.tokens_per_step("lagging", code, data, batch_size=2)[0] == 15 / 3
    assert bench.tokens_per_step("text-autoencoders", code, data, batch_size=2)[0] == 15 / 3
    assert bench.tokens_per_step("textvae", code, data, batch_size=2)[0] == 15 / 2  # random batches: 2
    # Sentence-VAE counts its own preprocessed sentences (`length` = words + <eos>, after its tokenizer)
    assert bench.tokens_per_step("sentence-vae", code, data, batch_size=2)[1].startswith("whitespace")
    (code / "data").mkdir(parents=True)
    (code / "data" / "ptb.train.json").write_text('{"0": {"input": [1, 2')  # stopped while writing it
    assert bench.tokens_per_step("sentence-vae", code, data, batch_size=2)[1].startswith("whitespace")
    rows = {str(i): {"input": [], "target": [], "length": n} for i, n in enumerate([3, 4, 3, 7])}
    (code / "data" / "ptb.train.json").write_text(json.dumps(rows))
    per_step, how = bench.tokens_per_step("sentence-vae", code, data, batch_size=2)
    assert per_step == 17 / 2 and "ptb.train.json" in how


def test_sentence_vae_log_gives_steps_across_epochs_and_valid_elbo(bench):
    log = bench.SentenceVAELog(valid_sentences=5, batch_size=3)
    lines = [
        "TRAIN Batch 0000/1, Loss  100.0, NLL-Loss  99.0, KL-Loss    1.0, KL-Weight  0.002",
        "TRAIN Batch 0001/1, Loss  100.0, NLL-Loss  99.0, KL-Loss    1.0, KL-Weight  0.002",
        "TRAIN Epoch 00/10, Mean ELBO  100.0",
        "Model saved at bin/x/E0.pytorch",
        "VALID Batch 0000/1, Loss   90.0, NLL-Loss  80.0, KL-Loss    2.0, KL-Weight  0.002",
        "VALID Batch 0001/1, Loss   90.0, NLL-Loss  60.0, KL-Loss    4.0, KL-Weight  0.002",  # 2 sentences
        "VALID Epoch 00/10, Mean ELBO  90.0",
        "TRAIN Batch 0000/1, Loss  100.0, NLL-Loss  99.0, KL-Loss    1.0, KL-Weight  0.002",
    ]
    for moment, line in enumerate(lines):
        log.feed(float(moment), line)
    assert log.steps == [(0.0, 1), (1.0, 2), (7.0, 3)]
    (moment, figures) = log.valid[0]
    assert moment == 6.0 and figures["epoch"] == 1
    assert figures["neg_elbo"] == pytest.approx((3 * 82 + 2 * 64) / 5)


def test_lagging_and_text_autoencoders_and_textvae_logs(bench):
    lagging = bench.LaggingLog()
    for moment, line in enumerate(
        [
            "epoch: 0, iter: 0, avg_loss: 300.1, kl: 0.1, mi: 0.2, recon: 300.0,au 0, time elapsed 1.00s",
            "epoch: 0, iter: 131, avg_loss: 200.1, kl: 0.1, mi: 0.2, recon: 200.0,au 0, time elapsed 9.00s",
            "kl weight 0.2239",
            "VAL --- avg_loss: 146.6431, kl: 0.1322, mi: 0.1034, recon: 146.5109, nll: 146.6431, ppl: 648.2720",
            "TEST --- avg_loss: 146.6040, kl: 0.1322, mi: 0.5438, recon: 146.4718, nll: 146.6040, ppl: 647.1544",
        ]
    ):
        lagging.feed(float(moment), line)
    assert lagging.steps == [(0.0, 1), (1.0, 132)]
    assert lagging.valid == [(3.0, {"epoch": 1, "neg_elbo": 146.6431, "rec": 146.5109, "kl": 0.1322})]

    shen = bench.TextAutoencodersLog()
    shen.feed(1.0, "| epoch   2 |    10/  142 batches | rec 169.80, kl 0.06, loss 169.81,")
    shen.feed(
        2.0, "| end of epoch   2 | time    27s | valid rec 143.11, kl 5.84, loss 143.70, | saving model"
    )
    assert shen.steps == [(1.0, 152)]
    assert shen.valid[0][1]["neg_elbo"] == pytest.approx(148.95) and shen.valid[0][1]["epoch"] == 2

    ours = bench.TextVAELog()
    ours.feed(1.0, json.dumps({"step": 4, "epoch": 1, "split": "train", "loss": 3.0}))
    ours.feed(2.0, json.dumps({"step": 4, "epoch": 1, "split": "validation", "neg_elbo": 9.5, "rec": 9.0}))
    ours.feed(3.0, "not json")
    assert ours.steps == [(1.0, 4)] and ours.valid == [(2.0, {"epoch": 1, "neg_elbo": 9.5, "rec": 9.0})]


def test_training_rate_leaves_out_the_intervals_that_hold_a_valid_evaluation(bench):
    progress = bench.Progress(
        steps=[(10.0, 1), (12.0, 11), (14.0, 21), (40.0, 31), (42.0, 41)],
        valid=[(30.0, {"neg_elbo": 1.0, "epoch": 1})],
    )
    rate = bench.training_rate(progress, tokens_per_step=100.0)
    assert rate == {"counted_steps": 30, "counted_seconds": 6.0, "tokens_per_second": 30 * 100 / 6.0}
    assert bench.training_rate(bench.Progress(steps=[(1.0, 5)]), 100.0)["tokens_per_second"] is None


FAKE_TEXT_AUTOENCODERS = """
    import sys, time
    print("# vocab size 18", flush=True)
    for step in range(1, 6):
        time.sleep(0.2)
        print(f"| epoch   1 | {step:5d}/    5 batches | rec 40.00, kl 1.00, loss 40.10,", flush=True)
    print("| end of epoch   1 | time     1s | valid rec 30.25, kl 2.50, loss 30.50, | saving model", flush=True)
    while True:  # a peer that trains on: stopped by --epochs 1
        time.sleep(0.2)
        print("| epoch   2 |     1/    5 batches | rec 40.00, kl 1.00, loss 40.10,", flush=True)
"""
FAKE_FAILING = """
    print("epoch: 0, iter: 0, avg_loss: 300.1, kl: 0.1, mi: 0.2, recon: 300.0,au 0, time elapsed 1.00s")
    raise ValueError("boom")
"""


def test_fake_peers_give_their_rate_valid_figure_and_error_line(bench, tiny_ptb, tmp_path):
    commit = git_repository(tmp_path / "peer")
    for name, source in (("shen.py", FAKE_TEXT_AUTOENCODERS), ("failing.py", FAKE_FAILING)):
        (tmp_path / name).write_text(textwrap.dedent(source))
    out, work = tmp_path / "peers.json", tmp_path / "work"
    done = run_script(
        "--peers", "lagging,text-autoencoders", "--data-dir", tiny_ptb, "--work-dir", work,
        "--seconds", 60, "--epochs", 1, "--json", out,
        "--source", f"lagging={tmp_path / 'peer'}", "--source", f"text-autoencoders={tmp_path / 'peer'}",
        "--command", f"lagging={sys.executable} {tmp_path / 'failing.py'}",
        "--command", f"text-autoencoders={sys.executable} {tmp_path / 'shen.py'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["peer"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["lagging"]["error"] == "ValueError: boom" and rows["lagging"]["stop"] == "exited"
    assert "failed: ValueError: boom" in done.stdout
    row = rows["text-autoencoders"]
    assert row["error"] is None and row["commit"] == commit and row["stop"] == "epochs"
    assert (work / "text-autoencoders" / "code" / "data" / "ptb" / "train.txt").is_file()
    lengths = [len(line.split()) for line in (tiny_ptb / "ptb" / "train.txt").read_text().splitlines()]
    per_step = sum(n + 1 for n in lengths) / bench.length_grouped_batches(lengths, 32)
    assert row["tokens_per_step"] == pytest.approx(per_step, abs=0.01)
    assert row["steps"] == 5 and row["counted_steps"] == 4
    # four steps 0.2 s apart (later under load): the rate is the log's steps x tokens per step / their time
    assert row["tokens_per_second"] == pytest.approx(
        4 * row["tokens_per_step"] / row["counted_seconds"], rel=1e-3
    )
    assert 0.6 <= row["counted_seconds"] <= 4.0
    assert row["valid"]["neg_elbo"] == pytest.approx(32.75) and row["valid"]["epoch"] == 1
    sentences, tokens = (
        10,
        sum(len(s.split()) + 1 for s in (tiny_ptb / "ptb" / "valid.txt").read_text().splitlines()),
    )
    assert row["valid"]["ppl_bound"] == pytest.approx(math.exp(32.75 * sentences / tokens))
    assert row["peak_rss_mib"] > 1
    assert "| text-autoencoders | " in done.stdout and "32.75" in done.stdout
    # a second run replaces the folders the first one made; a peer still preparing when --seconds end
    (tmp_path / "slow.py").write_text("import time\nprint('# vocab size 18', flush=True)\ntime.sleep(60)\n")
    (work / "text-autoencoders" / "left.txt").write_text("from the first run")
    again = run_script("--peers", "text-autoencoders", "--data-dir", tiny_ptb, "--work-dir", work,
                       "--seconds", 1, "--source", f"text-autoencoders={tmp_path / 'peer'}",
                       "--command", f"text-autoencoders={sys.executable} {tmp_path / 'slow.py'}")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (
        "--seconds ended before two training steps were logged (its last output: # vocab size 18)"
        in again.stdout
    )
    assert not (work / "text-autoencoders" / "left.txt").exists()


def test_textvae_row_on_a_few_steps(tiny_ptb, tmp_path):
    out = tmp_path / "textvae.json"
    done = run_script("--peers", "textvae", "--data-dir", tiny_ptb, "--work-dir", tmp_path / "work",
                      "--max-steps", 3, "--threads", 1, "--seconds", 120, "--json", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["error"] is None, row
    assert row["stop"] == "exited" and row["returncode"] == 0  # textvae stops itself at --max-steps
    assert row["steps"] == 3  # 40 sentences: 2 steps an epoch
    assert row["tokens_per_second"] > 0 and row["peak_rss_mib"] > 50
    assert row["valid"]["epoch"] == 1 and math.isfinite(row["valid"]["neg_elbo"])
    assert "--max-steps 3" in row["command"] and "--latent-dim 32" in row["command"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-dir", "{tmp}/nowhere"], "no PTB in --data-dir"),
        (["--peers", "textvae,bogus"], "unknown peer 'bogus'"),
        (["--seconds", "0"], "expected a positive float"),
        (["--max-steps", "1"], "--max-steps must be at least 2"),
        (["--source", "nobody=/tmp"], "expected PEER=VALUE"),
        (["--work-dir", "{tmp}/taken"], "was not made by bench_peers.py"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_ptb, tmp_path, args, message):
    (tmp_path / "taken" / "textvae").mkdir(parents=True)
    arguments = [arg.format(tmp=tmp_path) for arg in args]
    if "--data-dir" not in arguments:
        arguments += ["--data-dir", str(tiny_ptb)]
    done = run_script("--peers", "textvae", *arguments)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stderr.startswith("bench_peers.py: error:") and not done.stdout
