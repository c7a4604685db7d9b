"""The peers' own training code side by side with textvae, in one run (issue 32, item 3).

Three public text-VAE repositories train on PTB with their own entry points, unchanged, and textvae with
its command line, at one common setting as far as their options allow: embedding 256, hidden 256, latent
32, batch 32, one layer, PTB train (42,068 sentences), valid for the valid figure:

sentence-vae       timbmg/Sentence-VAE (the most used sentence VAE; Bowman et al. 2016): `train.py`, GRU
                   encoder and decoder (its LSTM option is commented out in model.py), one-way encoder (its
                   --bidirectional would make the decoder bidirectional too), z into the decoder's initial
                   state only, Adam 1e-3, logistic KL annealing (its defaults). Its own tokenizer (nltk's
                   TweetTokenizer) splits PTB's words further ("nov." -> "nov ."; 919,299 train tokens for
                   887,521 words): its vocabulary and token counts are its own. --min_occ 0 keeps every word
                   (its default 1 turns words seen once into <unk>); --max_sequence_length 102 keeps every
                   sentence whole (its longest PTB sentence is 101 tokens; default 60 truncates 123);
                   --print_every 1. Its DataLoader uses cpu_count() worker processes (unchanged).
lagging            jxhe/vae-lagging-encoder (He et al. 2019): `text.py --dataset ptb --aggressive 0
                   --kl_start 0.1 --warm_up 10` (their VAE baseline; `--extra lagging="--aggressive 1"` gives
                   their aggressive training), one-way LSTM encoder, LSTM decoder with z at every input and
                   in its initial state, SGD lr 1.0, gradient clipping 5, dropout 0.5 in and out. A dataset
                   is a config file: the script adds config/config_ptb.py (ni 256, enc_nh = dec_nh 256,
                   nz 32, batch 32; their test_data is PTB valid, the test split staying held out). It logs
                   every tenth of an epoch (131 steps on PTB), and in epoch 1 each log also computes the
                   mutual information and active units on valid (encoder passes, counted in its time).
text-autoencoders  shentianxiao/text-autoencoders (Shen et al. 2020): `train.py --model_type vae --lambda_kl
                   0.1` (their README's VAE), --dim_emb 256 --dim_h 256 --dim_z 32 --batch-size 32
                   --nlayers 1 --vocab-size 10000 (every PTB word) --log-interval 1; bidirectional LSTM
                   encoder, LSTM decoder with z added to every input, Adam 5e-4 (betas 0.5, 0.999), no
                   clipping, dropout 0.5.
textvae            `python -m textvae train --data ptb --embedding-size 256 --hidden-size 256 --latent-dim 32
                   --batch-size 32` (one layer each, its defaults otherwise: bidirectional LSTM encoder, LSTM
                   decoder with z in its initial state, inputs and outputs, the bag-of-words loss, the
                   target-rate KL controller, Adam 1e-3) --log-steps 1 --no-progress --no-plot-each-epoch
                   --no-fit-prior.

Patches: none. All three peers run unchanged on Python 3.11 and torch 2.13 on the CPU (tried December 2026:
only deprecation warnings). On the CPU (--device cpu, the default) every program runs with
CUDA_VISIBLE_DEVICES="" instead of a patch of their `.cuda()` calls. Their code is extracted with `git
archive` (HEAD of a mirror folder or a clone of a git URL, --source PEER=PATH_OR_URL) into --work-dir, never
into the project; the PTB files are copied there into each peer's layout (Sentence-VAE: data/ptb.train.txt
and ptb.valid.txt; vae-lagging-encoder: datasets/ptb_data/ptb.{train,valid}.txt, one sentence a line, read
by data/text_data.py's MonoTextData; text-autoencoders: data/ptb/train.txt and valid.txt). Sentence-VAE
needs nltk and tensorboardX (imported even without logging), which the project does not depend on: install
them outside it and pass the folder, e.g.

    pip install --target /work/scratch/peerlib nltk tensorboardX --no-deps  # nltk's own needs are textvae's
    python scripts/bench_peers.py --extra-pythonpath /work/scratch/peerlib --seconds 1200 --threads 2 \\
        --work-dir runs/bench_peers --json runs/bench_peers.json

(20 minutes each, about 80 in all: the same wall time for every program). `--epochs 1 --seconds 3600` instead
stops each after its first epoch's valid figure: the same data seen by all. textvae runs from this working
tree (its row's commit says -dirty when it has changes), or with --source textvae=. from HEAD.

How each is measured. Every program runs alone, in turn, in its own process (group) with OMP_NUM_THREADS =
MKL_NUM_THREADS = --threads (torch takes its thread count from it; none of them sets its own), its output
read line by line and time-stamped on arrival (PYTHONUNBUFFERED=1; textvae's train records are read from its
run folder's metrics.jsonl as they are written). It is stopped --seconds after its launch (its data
preparation and model building included), or once its log shows --max-steps training steps, or its
--epochs-th valid figure, whichever comes first.
- Tokens per second: real (non-padding) predicted tokens, words + EOS, per second of training. The steps
  come from each program's log (Sentence-VAE and text-autoencoders print every step here, textvae writes a
  record every step, vae-lagging-encoder prints every 131 steps); a step's tokens are the mean predicted
  tokens per step of an epoch under the program's own batching, computed from the corpus it reads: Sentence-
  VAE's own preprocessed ptb.train.json (its tokens, truncation and random batches of 32), textvae's
  random length-bucketed batches of 32 (PTB words + EOS), and for the two that batch sentences of one length
  together (vae-lagging-encoder, text-autoencoders) the same tokens over their larger number of batches. Time
  runs from the first logged step to the last; an interval between two logged steps that holds a valid
  evaluation is left out, steps and seconds both.
- Peak memory: the peak resident set size of the program's process, from os.wait4's rusage (ru_maxrss) of
  that child alone (Sentence-VAE's DataLoader workers are its own children).
- Valid figure: -ELBO per sentence on PTB valid (reconstruction + KL at weight 1, whatever weight trained),
  the last one the program printed before it was stopped (all four evaluate valid at the end of each epoch
  only), with its time and epoch, and the PPL bound exp(-ELBO x sentences / predicted tokens). Sentence-VAE's
  comes from its per-batch VALID lines (NLL + KL per sentence, weighted by batch size), on its own tokens.

Prints a Markdown table (with the seconds from launch to the first logged step: data preparation and model
building) and writes --json, which also holds each command, its log (--work-dir/PEER/log.txt) and counts.
Each program is optional (--peers); one that fails is reported with its error line, and the others still
run. Bad input (no PTB in --data-dir, an unknown peer) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import io
import itertools
import json
import math
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
PEERS = ("sentence-vae", "lagging", "text-autoencoders", "textvae")
MIRRORS = {
    "sentence-vae": "/work/.mirror/timbmg+Sentence-VAE/repo",
    "lagging": "/work/.mirror/jxhe+vae-lagging-encoder/repo",
    "text-autoencoders": "/work/.mirror/shentianxiao+text-autoencoders/repo",
}
EMBEDDING, HIDDEN, LATENT, BATCH, LAYERS = 256, 256, 32, 32, 1
SENTENCE_VAE_MAX_LENGTH = 102  # <sos> + the longest PTB sentence under its TweetTokenizer (101 tokens)
TEXTVAE_MAX_LENGTH = 128  # textvae's --max-length default: no PTB sentence is cut
MARKER = ".bench_peers"  # marks a work folder this script made (and may replace)
STOP_GRACE_SECONDS = 10.0

SETTINGS = {
    "sentence-vae": f"GRU, one-way encoder, emb {EMBEDDING}, hidden {HIDDEN}, z {LATENT}, batch {BATCH}, "
    f"{LAYERS} layer; z -> initial state; Adam 1e-3, logistic KL anneal; its TweetTokenizer",
    "lagging": f"LSTM, one-way encoder, emb {EMBEDDING}, hidden {HIDDEN}, z {LATENT}, batch {BATCH}, "
    f"{LAYERS} layer; z -> every input + initial state; SGD 1.0, KL 0.1 -> 1 over 10 epochs",
    "text-autoencoders": f"LSTM, bidirectional encoder, emb {EMBEDDING}, hidden {HIDDEN}, z {LATENT}, batch "
    f"{BATCH}, {LAYERS} layer; z -> every input; Adam 5e-4, KL weight 0.1",
    "textvae": f"LSTM, bidirectional encoder, emb {EMBEDDING}, hidden {HIDDEN}, z {LATENT}, batch {BATCH}, "
    f"{LAYERS} layer; z -> initial state, inputs, outputs; bag-of-words loss; Adam 1e-3, target KL 40",
}
PATCHES: dict[str, list[str]] = {name: [] for name in PEERS}  # none needed: see the docstring
ADDED_FILES = {"lagging": ["config/config_ptb.py (their way of adding a dataset)"]}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


# --- the corpus and each program's tokens per step -----------------------------------------------------


def sentence_lengths(path: Path) -> list[int]:
    """Whitespace words of each line of a one-sentence-a-line file."""
    with open(path, encoding="utf-8") as file:
        return [len(line.split()) for line in file]


def length_grouped_batches(lengths: list[int], batch_size: int) -> int:
    """Batches of sentences of one length each, at most batch_size (vae-lagging-encoder's create_data_batch,
    text-autoencoders' get_batches)."""
    return sum(math.ceil(count / batch_size) for count in collections.Counter(lengths).values())


def processed_lengths(path: Path) -> list[int] | None:
    """The `length` of each sentence of a Sentence-VAE ptb.<split>.json; None when it is missing or cut short
    (the program was stopped while writing it)."""
    try:
        return [row["length"] for row in json.loads(path.read_text()).values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def tokens_per_step(name: str, code: Path, data_dir: Path, batch_size: int = BATCH) -> tuple[float, str]:
    """(mean predicted tokens, words + EOS, per training step over an epoch; how they were counted)."""
    if name == "sentence-vae":
        lengths = processed_lengths(code / "data" / "ptb.train.json")
        if lengths is not None:  # its own tokens: `length` is <sos> + words (cut), = words + <eos> predicted
            how = "its ptb.train.json lengths (its TweetTokenizer, cut at 101), random batches"
        else:
            raw = sentence_lengths(data_dir / "ptb" / "train.txt")
            lengths = [min(length + 1, SENTENCE_VAE_MAX_LENGTH) for length in raw]
            how = "whitespace words + EOS (no ptb.train.json was written), random batches"
        return sum(lengths) / math.ceil(len(lengths) / batch_size), how
    lengths = sentence_lengths(data_dir / "ptb" / "train.txt")
    if name == "textvae":
        tokens = sum(min(length, TEXTVAE_MAX_LENGTH) + 1 for length in lengths)
        return tokens / math.ceil(len(lengths) / batch_size), "words + EOS, length-bucketed random batches"
    if name == "lagging":
        lengths = [length for length in lengths if length]  # MonoTextData drops empty lines
    tokens = sum(length + 1 for length in lengths)
    return tokens / length_grouped_batches(lengths, batch_size), "words + EOS, batches of one length"


def valid_tokens(name: str, code: Path, data_dir: Path) -> tuple[int, int]:
    """(sentences, predicted tokens) of PTB valid as the program reads it."""
    lengths = processed_lengths(code / "data" / "ptb.valid.json") if name == "sentence-vae" else None
    if lengths is not None:
        return len(lengths), sum(lengths)
    lengths = sentence_lengths(data_dir / "ptb" / "valid.txt")
    if name == "lagging":
        lengths = [length for length in lengths if length]
    return len(lengths), sum(length + 1 for length in lengths)


# --- extraction and data layout ------------------------------------------------------------------------


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    if done.returncode:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"git {args[0]} failed: {message[-1] if message else done.returncode}")
    return done


def extract(source: str, dest: Path) -> str:
    """HEAD of the git repository `source` (a local folder, bare or not, or a URL) as files in dest; its commit."""
    with tempfile.TemporaryDirectory() as scratch:
        repository = source
        if not Path(source).exists():
            if "://" not in source and not source.startswith("git@"):
                raise RuntimeError(f"source not found: {source}")
            repository = str(Path(scratch) / "clone")
            git("clone", "--quiet", "--bare", "--depth", "1", source, repository)
        commit = git("-C", repository, "rev-parse", "HEAD").stdout.decode().strip()
        archive = git("-C", repository, "archive", "--format=tar", commit).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


def lagging_config(epochs: int) -> str:
    return (
        "# Written by textvae's scripts/bench_peers.py: PTB at the common setting of the benchmark.\n"
        "params = {\n"
        "    'enc_type': 'lstm',\n"
        "    'dec_type': 'lstm',\n"
        f"    'nz': {LATENT},\n"
        f"    'ni': {EMBEDDING},\n"
        f"    'enc_nh': {HIDDEN},\n"
        f"    'dec_nh': {HIDDEN},\n"
        "    'dec_dropout_in': 0.5,\n"
        "    'dec_dropout_out': 0.5,\n"
        f"    'batch_size': {BATCH},\n"
        f"    'epochs': {epochs},\n"
        "    'test_nepoch': 5,\n"
        "    'train_data': 'datasets/ptb_data/ptb.train.txt',\n"
        "    'val_data': 'datasets/ptb_data/ptb.valid.txt',\n"
        "    'test_data': 'datasets/ptb_data/ptb.valid.txt',  # PTB's test split stays held out\n"
        "}\n"
    )


def convert_data(name: str, data_dir: Path, code: Path, epochs: int | None = None) -> list[Path]:
    """Copy PTB train and valid into the peer's layout under its code folder; the files written."""
    train, valid = data_dir / "ptb" / "train.txt", data_dir / "ptb" / "valid.txt"
    if name == "sentence-vae":
        targets = {train: code / "data" / "ptb.train.txt", valid: code / "data" / "ptb.valid.txt"}
    elif name == "lagging":
        folder = code / "datasets" / "ptb_data"
        targets = {train: folder / "ptb.train.txt", valid: folder / "ptb.valid.txt"}
    elif name == "text-autoencoders":
        targets = {train: code / "data" / "ptb" / "train.txt", valid: code / "data" / "ptb" / "valid.txt"}
    else:
        raise ValueError(f"no data layout for {name}")
    for source, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    written = list(targets.values())
    if name == "lagging":
        config = code / "config" / "config_ptb.py"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(lagging_config(epochs or 100))  # 100: their configs' epochs
        written.append(config)
    return written


def peer_command(name: str, args: argparse.Namespace, python: str, run_dir: Path) -> list[str]:
    """The program's own training command, at the common setting (run in its code folder)."""
    epochs = [] if args.epochs is None else [str(args.epochs)]
    if name == "sentence-vae":
        return [
            python, "train.py", "--data_dir", "data", "-eb", str(EMBEDDING), "-hs", str(HIDDEN),
            "-ls", str(LATENT), "-bs", str(BATCH), "-nl", str(LAYERS), "-rnn", "gru", "--min_occ", "0",
            "--max_sequence_length", str(SENTENCE_VAE_MAX_LENGTH), "--print_every", "1",
            *(["--epochs", *epochs] if epochs else []),
        ]  # fmt: skip
    if name == "lagging":  # epochs are in config/config_ptb.py
        return [
            python,
            "text.py",
            "--dataset",
            "ptb",
            "--aggressive",
            "0",
            "--kl_start",
            "0.1",
            "--warm_up",
            "10",
        ]
    if name == "text-autoencoders":
        return [
            python, "train.py", "--train", "data/ptb/train.txt", "--valid", "data/ptb/valid.txt",
            "--save-dir", "checkpoints/ptb/vae", "--model_type", "vae", "--lambda_kl", "0.1",
            "--vocab-size", "10000", "--dim_emb", str(EMBEDDING), "--dim_h", str(HIDDEN),
            "--dim_z", str(LATENT), "--nlayers", str(LAYERS), "--batch-size", str(BATCH),
            "--log-interval", "1", *(["--epochs", *epochs] if epochs else []),
        ]  # fmt: skip
    command = [
        python, "-m", "textvae", "train", "--data", "ptb", "--data-dir", str(args.data_dir),
        "--output-dir", str(run_dir), "--embedding-size", str(EMBEDDING), "--hidden-size", str(HIDDEN),
        "--latent-dim", str(LATENT), "--batch-size", str(BATCH), "--encoder-num-layers", str(LAYERS),
        "--decoder-num-layers", str(LAYERS), "--log-steps", "1", "--no-progress", "--no-plot-each-epoch",
        "--no-fit-prior", "--device", args.device, "--max-minutes", f"{args.seconds / 60:g}",
    ]  # fmt: skip
    if args.max_steps is not None:
        command += ["--max-steps", str(args.max_steps)]
    return command + (["--epochs", *epochs] if epochs else [])


# --- reading the logs ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """What a program's log said: (seconds, training steps done) and (seconds, valid figures)."""

    steps: list[tuple[float, int]] = field(default_factory=list)
    valid: list[tuple[float, dict]] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return self.steps[-1][1] if self.steps else 0


class SentenceVAELog(Progress):
    """`TRAIN Batch 0012/1314, Loss ...` each step (--print_every 1); `VALID Batch i/n, Loss L, NLL-Loss N,
    KL-Loss K, ...` per valid batch (per sentence means), then `VALID Epoch 00/10, Mean ELBO ...`."""

    BATCH_LINE = re.compile(
        r"^(TRAIN|VALID) Batch (\d+)/(\d+), Loss\s+([^,\s]+), NLL-Loss\s+([^,\s]+), KL-Loss\s+([^,\s]+)"
    )

    def __init__(self, valid_sentences: int, batch_size: int = BATCH):
        super().__init__()
        self.valid_sentences, self.batch_size = valid_sentences, batch_size
        self.done_before_epoch = self.epoch_batches = 0
        self.valid_sums = [0.0, 0.0, 0]  # NLL, KL, sentences

    def feed(self, seconds: float, line: str) -> None:
        match = self.BATCH_LINE.match(line)
        if match and match[1] == "TRAIN":
            index, last = int(match[2]), int(match[3])
            self.epoch_batches = last + 1
            self.steps.append((seconds, self.done_before_epoch + index + 1))
        elif match:
            index, last = int(match[2]), int(match[3])
            size = self.batch_size if index < last else self.valid_sentences - self.batch_size * last
            self.valid_sums[0] += float(match[5]) * size
            self.valid_sums[1] += float(match[6]) * size
            self.valid_sums[2] += size
        elif line.startswith("TRAIN Epoch"):
            self.done_before_epoch += self.epoch_batches
        elif line.startswith("VALID Epoch"):
            nll, kl, count = self.valid_sums
            epoch = int(line.split()[2].split("/")[0]) + 1
            if count:
                figures = {
                    "epoch": epoch,
                    "neg_elbo": (nll + kl) / count,
                    "rec": nll / count,
                    "kl": kl / count,
                }
                self.valid.append((seconds, figures))
            self.valid_sums = [0.0, 0.0, 0]


class LaggingLog(Progress):
    """`epoch: 0, iter: 131, avg_loss: ...` every tenth of an epoch (iter counts from 0 over all epochs);
    `VAL --- avg_loss: L, kl: K, mi: M, recon: R, nll: N, ppl: P` after each epoch."""

    ITER_LINE = re.compile(r"^epoch: (\d+), iter: (\d+),")
    VAL_LINE = re.compile(r"^VAL --- avg_loss: ([^,\s]+), kl: ([^,\s]+), mi: ([^,\s]+), recon: ([^,\s]+),")

    def feed(self, seconds: float, line: str) -> None:
        match = self.ITER_LINE.match(line)
        if match:
            self.steps.append((seconds, int(match[2]) + 1))
            return
        match = self.VAL_LINE.match(line)
        if match:
            loss, kl, _, rec = (float(match[i]) for i in range(1, 5))
            figures = {"epoch": len(self.valid) + 1, "neg_elbo": loss, "rec": rec, "kl": kl}
            self.valid.append((seconds, figures))


class TextAutoencodersLog(Progress):
    """`| epoch   1 |    10/ 1397 batches | rec ..., kl ..., loss ...,` every --log-interval steps;
    `| end of epoch   1 | time   27s | valid rec R, kl K, loss L, | saving model` after each epoch."""

    STEP_LINE = re.compile(r"^\| epoch\s+(\d+) \|\s*(\d+)/\s*(\d+) batches")
    VALID_LINE = re.compile(r"^\| end of epoch\s+(\d+) \|.*\| valid rec ([^,\s]+), kl ([^,\s]+),")

    def feed(self, seconds: float, line: str) -> None:
        match = self.STEP_LINE.match(line)
        if match:
            epoch, index, total = (int(match[i]) for i in range(1, 4))
            self.steps.append((seconds, (epoch - 1) * total + index))
            return
        match = self.VALID_LINE.match(line)
        if match:
            rec, kl = float(match[2]), float(match[3])
            self.valid.append((seconds, {"epoch": int(match[1]), "neg_elbo": rec + kl, "rec": rec, "kl": kl}))


class TextVAELog(Progress):
    """textvae's metrics.jsonl: a train record each --log-steps steps, a validation record each epoch."""

    def feed(self, seconds: float, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if record.get("split") == "train":
            self.steps.append((seconds, int(record["step"])))
        elif record.get("split") == "validation":
            figures = {key: record[key] for key in ("epoch", "neg_elbo", "rec", "kl") if key in record}
            self.valid.append((seconds, figures))


def log_reader(name: str, valid_sentences: int) -> Progress:
    if name == "sentence-vae":
        return SentenceVAELog(valid_sentences)
    return {"lagging": LaggingLog, "text-autoencoders": TextAutoencodersLog, "textvae": TextVAELog}[name]()


def training_rate(progress: Progress, tokens_per_step: float) -> dict:
    """Tokens per second over the intervals between logged steps, less those that hold a valid figure."""
    valid_times = [seconds for seconds, _ in progress.valid]
    steps = seconds = 0.0
    for (start, before), (end, after) in itertools.pairwise(progress.steps):
        if after <= before or any(start < moment <= end for moment in valid_times):
            continue
        steps, seconds = steps + after - before, seconds + end - start
    return {
        "counted_steps": int(steps),
        "counted_seconds": round(seconds, 3),
        "tokens_per_second": steps * tokens_per_step / seconds if seconds > 0 else None,
    }


# --- running one program -------------------------------------------------------------------------------


def _stop(pid: int) -> tuple[int, object]:
    """SIGTERM the process group of `pid`, SIGKILL it if it lingers; (wait status, rusage) of `pid`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)  # what is left of its group (DataLoader workers)
    except ProcessLookupError:
        pass
    return status, usage


def run_program(
    command: list[str],
    cwd: Path,
    env: dict,
    log_path: Path,
    progress: Progress,
    *,
    seconds: float,
    max_steps: int | None = None,
    epochs: int | None = None,
    metrics_file: Path | None = None,
) -> dict:
    """Run `command` until it exits, `seconds` pass, its log shows `max_steps` steps or `epochs` valid figures.

    Its output goes to log_path, each line prefixed by the seconds since launch; `progress` reads the lines
    (or, given metrics_file, that file's lines as they appear). Returns how it ended, its peak RSS and,
    when it failed, its error line.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for raw in process.stdout:
            lines.put((time.monotonic() - started, raw.decode("utf-8", errors="replace").rstrip("\n")))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail: collections.deque = collections.deque(maxlen=40)
    metrics_offset, stop, status, usage = 0, None, None, None

    def take(moment: float, line: str, log) -> None:
        log.write(f"{moment:10.3f} {line}\n")
        tail.append(line)
        if metrics_file is None:
            progress.feed(moment, line)

    def poll_metrics(moment: float) -> None:
        nonlocal metrics_offset
        if metrics_file is None or not metrics_file.is_file():
            return
        with open(metrics_file, "rb") as file:
            file.seek(metrics_offset)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        metrics_offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            progress.feed(moment, line)

    with open(log_path, "w", encoding="utf-8") as log:
        while stop is None:
            try:
                item = lines.get(timeout=0.05)
                while item is not None:
                    take(*item, log)
                    item = lines.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic() - started
            poll_metrics(now)
            done, status, usage = os.wait4(process.pid, os.WNOHANG)
            if done:
                stop = "exited"
            elif now >= seconds:
                stop = "seconds"
            elif max_steps is not None and progress.last_step >= max_steps:
                stop = "max_steps"
            elif epochs is not None and len(progress.valid) >= epochs:
                stop = "epochs"
        stopped_at = time.monotonic() - started
        if stop != "exited":
            status, usage = _stop(process.pid)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        reader.join(timeout=5)
        while True:
            try:
                item = lines.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[0] <= stopped_at:
                take(*item, log)
        poll_metrics(stopped_at)
    result = {
        "stop": stop,
        "stopped_seconds": round(stopped_at, 3),
        "returncode": process.returncode,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "error": None,
        "last_line": error_line(tail),
    }
    if stop == "exited" and process.returncode != 0:
        result["error"] = result["last_line"] or f"exit status {process.returncode}"
    return result


def error_line(tail) -> str | None:
    """The last line of output that names an error, else the last non-empty line."""
    lines = [line.strip() for line in tail if line.strip()]
    for line in reversed(lines):
        if re.search(r"(Error|Exception|error:)", line):
            return line
    return lines[-1] if lines else None


# --- the whole run -------------------------------------------------------------------------------------


def child_env(threads: int, device: str, pythonpath: list[str]) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    paths = [*pythonpath, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    return env


def fresh_folder(folder: Path) -> None:
    """An empty folder at `folder`, replacing an earlier one of this script's (never anything else)."""
    if folder.exists():
        if not (folder / MARKER).is_file():  # main() checked before the first program: never reached
            raise RuntimeError(f"{folder} exists and was not made by bench_peers.py")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by textvae's scripts/bench_peers.py; replaced by its next run\n")


def textvae_commit() -> str:
    try:
        return git("-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12").stdout.decode().strip()
    except (RuntimeError, OSError):
        return "unknown"


def bench_one(name: str, args: argparse.Namespace) -> dict:
    folder = args.work_dir / name
    row = {
        "peer": name,
        "source": args.sources.get(name, f"{ROOT} (working tree)"),
        "commit": None,
        "settings": SETTINGS[name],
        "patches": PATCHES[name],
        "added_files": ADDED_FILES.get(name, []),
        "log": str(folder / "log.txt"),
        "error": None,
    }
    run_dir = folder / "run"
    try:
        fresh_folder(folder)
        if name == "textvae":
            code, metrics_file = ROOT, run_dir / "metrics.jsonl"
            row["commit"] = textvae_commit()
            if "textvae" in args.sources:  # a commit of textvae rather than this working tree
                code = folder / "code"
                row["commit"] = extract(args.sources["textvae"], code)
            pythonpath = [str(code)]
        else:
            code, metrics_file = folder / "code", None
            row["commit"] = extract(args.sources[name], code)
            convert_data(name, args.data_dir, code, args.epochs)
            pythonpath = args.extra_pythonpath
        command = peer_command(name, args, args.python, run_dir)
        if name in args.commands:
            command = shlex.split(args.commands[name])
        command += shlex.split(args.extra.get(name, ""))
    except (OSError, RuntimeError, ValueError) as error:
        row["error"] = f"preparation failed: {error}"
        return row
    row["command"] = shlex.join(command)
    sentences, _ = valid_tokens(name, code, args.data_dir)
    progress = log_reader(name, sentences)
    print(f"{name}: {row['command']} (in {code})", flush=True)
    row.update(
        run_program(
            command,
            code,
            child_env(args.threads, args.device, pythonpath),
            folder / "log.txt",
            progress,
            seconds=args.seconds,
            # textvae stops itself at --max-steps and --epochs (given to it); the peers are stopped there
            max_steps=None if name == "textvae" else args.max_steps,
            epochs=None if name == "textvae" else args.epochs,
            metrics_file=metrics_file,
        )
    )
    per_step, how = tokens_per_step(name, code, args.data_dir)
    sentences, tokens = valid_tokens(name, code, args.data_dir)
    row.update(
        tokens_per_step=round(per_step, 2),
        token_count=how,
        steps=progress.last_step,
        first_step_seconds=round(progress.steps[0][0], 3) if progress.steps else None,
        **training_rate(progress, per_step),
    )
    row["valid"] = None
    if progress.valid:
        moment, figures = progress.valid[-1]
        row["valid"] = {
            **figures,
            "seconds": round(moment, 1),
            "ppl_bound": math.exp(figures["neg_elbo"] * sentences / tokens),
            "sentences": sentences,
            "tokens": tokens,
        }
    if row["error"] is None and row["tokens_per_second"] is None:
        last = f" (its last output: {row['last_line']})" if row["last_line"] else ""
        if row["stop"] == "seconds":
            row["error"] = f"--seconds ended before two training steps were logged{last}"
        else:
            row["error"] = f"fewer than two training steps in its log{last}"
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| peer | commit | settings | tokens/s | peak RSS MiB | first step s | valid -ELBO (PPL bound) after the "
        "budget | patch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        commit = (row["commit"] or "-")[:12]
        rate = f"{row['tokens_per_second']:,.0f}" if row.get("tokens_per_second") else "-"
        rss = f"{row['peak_rss_mib']:,.0f}" if row.get("peak_rss_mib") else "-"
        first = f"{row['first_step_seconds']:.0f}" if row.get("first_step_seconds") is not None else "-"
        valid = row.get("valid")
        figure = (
            f"{valid['neg_elbo']:.2f} ({valid['ppl_bound']:.1f}), epoch {valid['epoch']} at {valid['seconds']:.0f} s"
            if valid
            else "none (no epoch ended)"
        )
        if row["error"]:
            figure = f"failed: {row['error']}"
        patch = "; ".join(row["patches"]) or "none"
        if row["added_files"]:
            patch += "; added " + ", ".join(row["added_files"])
        lines.append(
            f"| {row['peer']} | {commit} | {row['settings']} | {rate} | {rss} | {first} | {figure} | {patch} |"
        )
    return "\n".join(lines)


def key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in PEERS:
        raise argparse.ArgumentTypeError(
            f"expected PEER=VALUE with PEER one of {', '.join(PEERS)}, got {text!r}"
        )
    return name, value


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="bench_peers.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="holds ptb/train.txt, ptb/valid.txt"
    )
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "bench_peers",
                        help="where the peers' code, data, logs and run folders go (outside git)")  # fmt: skip
    parser.add_argument(
        "--seconds", type=positive(float), default=300.0, help="wall-clock budget per program"
    )
    parser.add_argument(
        "--max-steps", type=positive(int), help="also stop each program after this many steps"
    )
    parser.add_argument("--epochs", type=positive(int), help="also stop each program after this many epochs")
    parser.add_argument("--threads", type=positive(int), default=2, help="OMP_NUM_THREADS of every program")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu hides any GPU (CUDA_VISIBLE_DEVICES=''); cuda lets each use one")  # fmt: skip
    parser.add_argument("--source", action="append", default=[], type=key_value,
                        metavar="PEER=PATH_OR_URL",
                        help="git folder or URL whose HEAD is run (default: the mirrors; textvae: this working "
                        "tree as it is, or with textvae=PATH_OR_URL that repository's HEAD)")  # fmt: skip
    parser.add_argument("--extra", action="append", default=[], type=key_value,
                        metavar="PEER=ARGS", help="more arguments for a program's command (they win)")  # fmt: skip
    parser.add_argument("--command", action="append", default=[], type=key_value,
                        metavar="PEER=COMMAND", help="replace a program's command (a test's fake peer)")  # fmt: skip
    parser.add_argument("--extra-pythonpath", action="append", default=[], metavar="DIR",
                        help="put DIR on the peers' PYTHONPATH (packages they need, e.g. nltk, tensorboardX)")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="the Python that runs every program")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in names if name not in PEERS]
    if unknown or not names:
        parser.error(
            f"unknown peer {unknown[0]!r}; peers: {', '.join(PEERS)}" if unknown else "no peer given"
        )
    args.peers = list(dict.fromkeys(names))
    if args.max_steps is not None and args.max_steps < 2:
        parser.error("--max-steps must be at least 2 (a rate needs two logged steps)")
    for split in ("train", "valid"):
        if not (args.data_dir / "ptb" / f"{split}.txt").is_file():
            parser.error(
                f"no PTB in --data-dir {args.data_dir}: {args.data_dir / 'ptb' / (split + '.txt')} not found"
            )
    args.data_dir = args.data_dir.resolve()
    args.work_dir = args.work_dir.resolve()
    args.sources = {**MIRRORS, **dict(args.source)}
    args.extra, args.commands = dict(args.extra), dict(args.command)
    args.extra_pythonpath = [str(Path(path).resolve()) for path in args.extra_pythonpath]
    args.error = parser.error
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name in args.peers:  # before any program runs
        if (args.work_dir / name).exists() and not (args.work_dir / name / MARKER).is_file():
            args.error(
                f"{args.work_dir / name} exists and was not made by bench_peers.py: choose another --work-dir"
            )
    rows = []
    for name in args.peers:
        rows.append(row := bench_one(name, args))
        ended = f"stopped ({row['stop']}) at {row['stopped_seconds']:.0f} s" if "stop" in row else ""
        print(f"{name}: " + (f"failed: {row['error']}" if row["error"] else ended), flush=True)
    print(table(rows))
    if args.json:
        machine = {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": _version("torch"),
            "cpu_count": os.cpu_count(),
        }
        options = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key != "error"
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "options": options,
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "rows": rows,
                },
                indent=2,
            )
        )


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
