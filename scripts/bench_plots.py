"""Cost of the per-epoch training figures: `plot_run` on a synthetic run folder of realistic size.

Writes a history.json of `--epochs` validation records (latent 32, with kl_per_dim and AU) and a
metrics.jsonl of `--train-records` train records, then times `write_training_plots` (what training calls
after each epoch) `--repeats` times and prints the median and the slowest call in ms, wall and CPU time.

    python scripts/bench_plots.py --epochs 30 --train-records 4000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from textvae.plotting import write_training_plots


def write_fake_run(folder: Path, epochs: int, train_records: int, latent_dim: int) -> None:
    steps_per_epoch = max(1, train_records * 50 // epochs)
    with open(folder / "metrics.jsonl", "w", encoding="utf-8") as stream:
        for index in range(1, train_records + 1):
            step = index * 50
            kl = 5 * (1 - math.exp(-step / 20000))
            record = {"step": step, "epoch": step // steps_per_epoch + 1, "split": "train", "lr": 1e-3}
            record.update(loss=100 - 10 * math.log1p(index / 100) + kl, rec=90 - 10 * math.log1p(index / 100))
            record.update(kl=kl, kl_weight=min(1.0, step / 10000))
            stream.write(json.dumps(record) + "\n")
    history = [
        {
            "step": epoch * steps_per_epoch,
            "epoch": epoch,
            "split": "validation",
            "seconds": 400.0,
            "lr": 1e-3,
            "rec": 95 - epoch / 3,
            "kl": 4 + epoch / 10,
            "neg_elbo": 99 - epoch / 4,
            "ppl_bound": 110.0,
            "au": min(latent_dim, 5 + epoch // 3),
            "kl_per_dim": [0.4 * math.exp(-d / 6) for d in range(latent_dim)],
        }
        for epoch in range(1, epochs + 1)
    ]
    (folder / "history.json").write_text(json.dumps(history, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-records", type=int, default=4000)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_fake_run(folder, args.epochs, args.train_records, args.latent_dim)
        started = time.perf_counter()
        write_training_plots(folder)  # the first call also imports matplotlib
        first = time.perf_counter() - started
        times, cpu_times = [], []
        for _ in range(args.repeats):
            started, cpu_started = time.perf_counter(), time.process_time()
            write_training_plots(folder)
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
        sizes = {path.name: path.stat().st_size for path in sorted(folder.glob("*.png"))}
    print(f"first call (imports matplotlib): {1000 * first:.0f} ms")
    print(f"per epoch: median {1000 * statistics.median(times):.0f} ms, slowest {1000 * max(times):.0f} ms")
    print(
        f"CPU time per epoch (this process, less sensitive to a busy machine): median {1000 * statistics.median(cpu_times):.0f} ms"
    )
    print("files:", ", ".join(f"{name} {size // 1024} KiB" for name, size in sizes.items()))


if __name__ == "__main__":
    main()
