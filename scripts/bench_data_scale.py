"""Data preparation at scale: sentences a second and peak memory from 50 thousand to millions of sentences.

For each size, PTB's training text repeated to that many lines is written to a temporary folder and
prepared in a fresh process (so that its peak RSS is that size's own), as `textvae train` prepares a
corpus: `load_corpus` (datasets' text loader, blank lines dropped, 5% cut off as validation), the
word-level vocabulary (`train_tokenizer`), then `tokenize_corpus` at the default --max-length and
`TokenizedSplit.from_dataset` for both splits. Printed per size: the wall and CPU seconds of each stage,
sentences a second of the whole preparation and of tokenizing alone, the peak RSS of the process
(`ru_maxrss`, which counts the ~0.5 GiB of imports and the memory-mapped Arrow pages it touched), and
the bytes per training token of the token storage (`TokenizedSplit.nbytes` / tokens, BOS and EOS
included). The machine's load average is printed too: other users of the CPUs slow the wall clock,
not the CPU seconds. With --train-steps, each size is also trained for that many steps by `train()` in
another fresh process (preparation included), to show that training starts and what it holds at its peak.
With --streaming that training reads the corpus as a stream (`train --streaming`) and the in-memory
preparation is not measured: compare its peak RSS with a run without --streaming.

    python scripts/bench_data_scale.py --sizes 50000,500000,5000000 --json runs/bench_data_scale.json
    python scripts/bench_data_scale.py --sizes 10000000 --train-steps 20
    python scripts/bench_data_scale.py --sizes 5000000 --train-steps 300 --streaming
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if platform.system() == "Darwin" else peak / 2**20


def resident_gib() -> dict:
    """Resident memory now, anonymous (the heap) and file-backed (mapped files, such as Arrow caches)."""
    fields = {"RssAnon:": "anonymous_rss_gib", "RssFile:": "file_rss_gib"}
    values = {}
    if Path("/proc/self/status").is_file():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.split()[0] in fields:
                values[fields[line.split()[0]]] = int(line.split()[1]) / 2**20
    return values


def write_corpus(source: Path, size: int, path: Path) -> None:
    """`size` lines: the lines of `source` over and over."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    block = "".join(lines)
    with open(path, "w", encoding="utf-8") as stream:
        for _ in range(size // len(lines)):
            stream.write(block)
        stream.writelines(lines[: size % len(lines)])


def prepare(path: str) -> dict:
    """Prepare the corpus at `path` stage by stage; returns the measurements."""
    import datasets

    from textvae.data.config import DataConfig
    from textvae.data.corpora import load_corpus
    from textvae.data.prepare import train_corpus_tokenizer
    from textvae.data.storage import TokenizedSplit
    from textvae.data.token_ids import tokenize_corpus

    datasets.disable_progress_bars()
    config = DataConfig(source=path)
    report = {"rss_after_imports_gib": peak_rss_gib(), "stages": {}}

    def timed(name, function):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        report["stages"][name] = {
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "peak_rss_gib": peak_rss_gib(),
            **resident_gib(),
        }
        return result

    corpus = timed("load", lambda: load_corpus(path, **config.corpus_options()))
    tokenizer = timed("vocabulary", lambda: train_corpus_tokenizer(corpus["train"], config))

    def tokenize():
        tokenized = tokenize_corpus(corpus, tokenizer, max_length=config.max_length)
        return [TokenizedSplit.from_dataset(tokenized[name]) for name in ("train", "validation")]

    train, validation = timed("tokenize", tokenize)
    tokens = len(train.input_ids.values)
    report.update(
        sentences=len(train) + len(validation),
        train_sentences=len(train),
        train_tokens=tokens,
        storage_bytes=train.nbytes,
        bytes_per_token=train.nbytes / tokens,
        peak_rss_gib=peak_rss_gib(),
    )
    return report


def train_steps(path: str, steps: int, output_dir: str, streaming: bool = False) -> dict:
    """`train()` the default model for `steps` steps on the corpus (preparation included)."""
    import datasets

    from textvae.training.config import TrainConfig
    from textvae.training.run import train

    datasets.disable_progress_bars()
    start = time.perf_counter()
    config = TrainConfig(
        data={"source": path, "streaming": streaming}, max_steps=steps, progress=False, log_steps=1
    )
    run = train(config, output_dir=output_dir)
    records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {
        "steps": records[-1]["step"],
        "last_loss": records[-1]["loss"],
        "seconds": time.perf_counter() - start,
        "peak_rss_gib": peak_rss_gib(),
    }


def run_worker(args: list[str], cache: Path) -> dict:
    """Run this script as a worker in a fresh process with its own datasets cache; its JSON report."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def print_preparation(report: dict) -> None:
    """One size's preparation figures, as a row of the table."""
    stages, size = report["stages"], report["size"]
    wall = sum(stage["wall_s"] for stage in stages.values())
    cpu = sum(stage["cpu_s"] for stage in stages.values())
    report.update(prepare_sentences_per_second=size / wall)
    report.update(tokenize_sentences_per_second=size / stages["tokenize"]["wall_s"])
    print(
        f"{size:>10} {stages['load']['wall_s']:>7.1f} {stages['vocabulary']['wall_s']:>7.1f} "
        f"{stages['tokenize']['wall_s']:>10.1f} {cpu:>6.1f} {report['prepare_sentences_per_second']:>11.0f} "
        f"{report['tokenize_sentences_per_second']:>15.0f} {report['peak_rss_gib']:>12.2f} "
        f"{report['bytes_per_token']:>11.2f} {report['load_average']:>8.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TEXTVAE_DATA", "../shared/data"))
    parser.add_argument("--sizes", default="50000,500000,5000000", help="comma-separated line counts")
    parser.add_argument("--train-steps", type=int, default=0, help="also train this many steps per size")
    parser.add_argument("--streaming", action="store_true", help="train with --streaming (no preparation)")
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)  # prepare PATH | train PATH STEPS DIR
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "prepare":
            report = prepare(*rest)
        else:
            report = train_steps(rest[0], int(rest[1]), rest[2], streaming=rest[3:] == ["streaming"])
        print(json.dumps(report))
        return
    source = Path(args.data_dir) / "ptb" / "train.txt"
    results = []
    print(f"{os.cpu_count()} CPUs; PTB train repeated; each size prepared in a fresh process")
    print(
        f"{'sentences':>10} {'load s':>7} {'vocab s':>7} {'tokenize s':>10} {'cpu s':>6} {'prep sent/s':>11} "
        f"{'tokenize sent/s':>15} {'peak RSS GiB':>12} {'bytes/token':>11} {'load avg':>8}"
    )
    for size in (int(text) for text in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench_data_scale_") as folder:
            path = Path(folder) / "corpus.txt"
            write_corpus(source, size, path)
            report = {"size": size, "streaming": args.streaming}
            if not args.streaming:
                report.update(run_worker(["--worker", "prepare", str(path)], Path(folder) / "cache"))
            report.update(load_average=os.getloadavg()[0])
            if args.train_steps:
                run_dir = str(Path(folder) / "run")
                command = ["--worker", "train", str(path), str(args.train_steps), run_dir]
                command += ["streaming"] if args.streaming else []
                report["train"] = run_worker(command, Path(folder) / "cache-train")
        results.append(report)
        if not args.streaming:
            print_preparation(report)
        if "train" in report:
            trained = report["train"]
            print(
                f"{size if args.streaming else '':>10} train({'streaming' if args.streaming else ''}): "
                f"{trained['steps']} steps, loss {trained['last_loss']:.1f}, {trained['seconds']:.0f} s in all "
                f"(preparation included), peak RSS {trained['peak_rss_gib']:.2f} GiB",
                flush=True,
            )
        if args.json:  # after every size, so that a long run interrupted keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
