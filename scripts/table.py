"""Train and evaluate the rows of a results table, then write the table as JSON and Markdown.

A table is a folder of scripts/ (ptb_table, fidelity_yelp, fidelity_ptb): one training config per row
(`<row>.yaml`), and `table.yaml` saying which corpus the rows are evaluated on (its valid split: test
splits are held out), which row is the reference language model of forward PPL, the groups of rows, the
columns shown and the published figures beside them. A row whose run already finished is only
re-evaluated; an interrupted one is resumed.

    python scripts/table.py --rows all --output-dir runs/ptb_table            # the PTB table
    python scripts/table.py --rows 2,4 --epochs 3 --iw-samples 50 --limit 500  # a quick, smaller budget
    python scripts/table.py --rows rate --results-dir scripts/ptb_table/results  # rows for the commit
    python scripts/table.py --rows rate --jobs 8 --max-train-minutes 6   # one GPU, a time-boxed lease
    python scripts/table.py --table fidelity_yelp --rows all --jobs 2 --results-dir scripts/fidelity_yelp/results

--jobs N trains N rows at once, each in its own process (one GPU holds several of these small models and
their steps are bound by kernel launches, not by the GPU), then evaluates them the same way; each
process's log is OUTPUT_DIR/<row>.log. --max-train-minutes M stops each row's training after M minutes
(`textvae train --max-minutes`): a row stopped early is evaluated as it stands, at its best epoch so far,
with "finished": false in its JSON, and the next run of this script resumes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from textvae.checkpointing import checkpoint_folders, load_model
from textvae.config_fields import read_config_file
from textvae.evaluation.run import evaluate_run
from textvae.priors.distributions import PRIOR_CONFIG_NAME
from textvae.priors.fitting import fit_prior_for_run
from textvae.run_files import HISTORY_NAME, TRAINER_STATE_NAME
from textvae.training.config import TrainConfig
from textvae.training.run import train

SCRIPTS = Path(__file__).resolve().parent
ALL_COLUMNS = (
    ("rec", "rec", "{:.2f}"),
    ("kl", "KL", "{:.2f}"),
    ("neg_elbo", "-ELBO", "{:.2f}"),
    ("nll", "NLL", "{:.2f}"),
    ("ppl", "PPL", "{:.2f}"),
    ("nll_aggregate", "NLL aggr. prior", "{:.2f}"),
    ("mi", "MI", "{:.2f}"),
    ("au", "AU", "{:d}"),
    ("kl_marginal", "KL - MI", "{:.2f}"),
    ("recon_bleu", "recon BLEU", "{:.2f}"),
    ("recon_bleu1", "recon BLEU-1", "{:.2f}"),
    ("recon_exact", "exact", "{:.3f}"),
    ("train_recon_bleu", "train BLEU", "{:.2f}"),
    ("train_recon_bleu1", "train BLEU-1", "{:.2f}"),
    ("train_recon_exact", "train exact", "{:.3f}"),
    ("self_bleu", "self-BLEU", "{:.2f}"),
    ("forward_ppl", "fwd PPL N(0,I)", "{:.1f}"),
    ("forward_ppl_aggregate", "fwd PPL aggr.", "{:.1f}"),
    ("interp_endpoint_bleu", "interp end BLEU", "{:.2f}"),
    ("interp_monotonicity", "interp monot.", "{:.3f}"),
    ("interp_distinct", "interp distinct", "{:.3f}"),
    ("interp_forward_ppl", "interp fwd PPL", "{:.1f}"),
)


def read_table(name: str) -> dict:
    """The settings of a table folder (`table.yaml`), with its folder as "folder"."""
    folder = SCRIPTS / name
    if not (folder / "table.yaml").is_file():
        tables = sorted(path.parent.name for path in SCRIPTS.glob("*/table.yaml"))
        raise SystemExit(f"unknown table {name!r}; tables: {', '.join(tables)}")
    settings = read_config_file(folder / "table.yaml")
    settings.setdefault("groups", {})
    settings.setdefault("columns", [key for key, _, _ in ALL_COLUMNS])
    settings.setdefault("published", "")
    settings.setdefault("train_sample", None)
    return {**settings, "folder": folder}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--table", default="ptb_table", help="the table's folder in scripts/ (default: ptb_table)"
    )
    parser.add_argument(
        "--rows",
        default="all",
        help="'all', a group of table.yaml (ptb_table's 'rate': the rate-fidelity rows and 6_lm), or "
        "comma-separated row numbers (6: 6_best and 6_lm) or names",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: runs/TABLE")
    parser.add_argument("--data-dir", default=os.environ.get("TEXTVAE_DATA", "../shared/data"))
    parser.add_argument(
        "--epochs", type=int, default=None, help="override every row's epochs (a smaller budget)"
    )
    parser.add_argument("--iw-samples", type=int, default=500, help="K of the importance-weighted NLL")
    parser.add_argument(
        "--limit", type=int, default=None, help="evaluate on the first N valid sentences only"
    )
    parser.add_argument(
        "--reference-lm",
        type=Path,
        default=None,
        help="language model run for forward PPL (default: the table's reference row, trained first)",
    )
    parser.add_argument("--interpolation-pairs", type=int, default=100)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="also write each evaluated row as <row>.json here (scripts/ptb_table/results for the committed "
        "table: what is committed is then exactly what was evaluated)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--jobs", type=int, default=1, help="rows trained (then evaluated) at once, each in its own process"
    )
    parser.add_argument(
        "--max-train-minutes",
        type=float,
        default=None,
        help="stop each row's training after this many minutes and evaluate it as it stands (resumed later)",
    )
    parser.add_argument("--phase", choices=("train", "evaluate"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    if args.max_train_minutes is not None and not 0 < args.max_train_minutes < float("inf"):
        parser.error(f"--max-train-minutes must be positive, got {args.max_train_minutes}")
    args.settings = read_table(args.table)
    args.output_dir = args.output_dir or Path("runs") / args.table
    return args


def select_rows(spec: str, settings: dict) -> list[Path]:
    rows = sorted(path for path in settings["folder"].glob("*.yaml") if path.name != "table.yaml")
    if spec == "all":
        return rows
    if spec in settings["groups"]:
        return [row for row in rows if row.stem in settings["groups"][spec]]
    wanted = spec.split(",")
    # A row's name, or its number (6: 6_best, 6_from_lm and 6_lm) when no row has that name.
    matches = {
        name: [row for row in rows if row.stem == name]
        or [row for row in rows if row.stem.split("_")[0] == name]
        for name in wanted
    }
    unknown = [name for name, found in matches.items() if not found]
    if unknown:
        raise SystemExit(f"unknown row {unknown[0]!r}; rows: {', '.join(row.stem for row in rows)}")
    return [row for row in rows if any(row in found for found in matches.values())]


def scale_budget(values: dict, epochs: int) -> dict:
    """A smaller (or larger) budget keeps the recipe's shape: pretraining and KL warm-up scale with it."""
    factor = epochs / values.get("epochs", epochs)
    scaled = {"epochs": epochs}
    if values.get("pretrain_epochs"):
        scaled["pretrain_epochs"] = min(max(1, round(values["pretrain_epochs"] * factor)), epochs - 1)
    if "kl_warmup_steps" in values:
        scaled["kl_warmup_steps"] = round(values["kl_warmup_steps"] * factor)
    return scaled


def machine(device: str) -> str:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"CPU ({platform.machine()}, {threads} thread{'s' if threads > 1 else ''})"


def train_row(path: Path, run_dir: Path, args: argparse.Namespace) -> None:
    """Train the row into run_dir, resuming an interrupted run and skipping a finished one."""
    overrides = {"data_dir": args.data_dir, "device": args.device, "progress": not args.no_progress}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.max_train_minutes is not None:
        overrides["max_minutes"] = args.max_train_minutes
    if is_finished(run_dir, overrides.get("epochs")):
        return
    if run_dir.is_dir() and checkpoint_folders(run_dir):
        train(None, resume=run_dir, overrides=overrides)
        return
    values = read_config_file(path)
    source = values.get("init_decoder_from")
    folder = args.settings["folder"]
    if source is not None and (folder / f"{source}.yaml").is_file():
        # A row named as the source means that row's run in this table, trained first when it is not yet.
        train_row(folder / f"{source}.yaml", args.output_dir / source, args)
        values["init_decoder_from"] = str(args.output_dir / source)
    if args.epochs is not None:
        values.update(scale_budget(values, args.epochs))
    config = TrainConfig.from_dict({**values, **overrides})
    train(config, output_dir=run_dir, overwrite=True)


def is_finished(run_dir: Path, epochs: int | None = None) -> bool:
    """Whether the run's last checkpoint finished training (to `epochs`, when given)."""
    checkpoints = checkpoint_folders(run_dir) if run_dir.is_dir() else []
    if not checkpoints:
        return False
    state = json.loads((checkpoints[-1] / TRAINER_STATE_NAME).read_text())
    return state["finished"] and state["epoch"] >= (epochs or state["epoch"])


def reference_lm(args: argparse.Namespace) -> Path:
    """The reference language model of forward PPL: --reference-lm, or the table's own, trained first."""
    if args.reference_lm is not None:
        return args.reference_lm
    reference = args.settings["reference"]
    run_dir = args.output_dir / reference
    train_row(args.settings["folder"] / f"{reference}.yaml", run_dir, args)
    return run_dir


def run_row(path: Path, args: argparse.Namespace, training: bool = True) -> dict | None:
    """Train the row (unless `training` is False) and evaluate it; None when it has no epoch to evaluate."""
    run_dir = args.output_dir / path.stem
    if training:
        train_row(path, run_dir, args)
    history = json.loads((run_dir / HISTORY_NAME).read_text()) if (run_dir / HISTORY_NAME).is_file() else []
    if not history:
        logging.warning("%s: no finished epoch to evaluate yet", path.stem)
        return None
    device = None if args.device == "auto" else args.device
    finished = is_finished(run_dir, args.epochs)
    model = load_model(run_dir)
    if not finished and model.config.has_latent and not (run_dir / PRIOR_CONFIG_NAME).is_file():
        # Training fits the aggregate prior when it finishes; a row stopped early gets it here.
        fit_prior_for_run(run_dir, device=device)
    results = evaluate_run(
        run_dir, args.settings["data"], args.data_dir, "validation", limit=args.limit, device=device,
        iw_samples=args.iw_samples, show_progress=not args.no_progress,
        reference_lm=reference_lm(args), interpolation_pairs=args.interpolation_pairs,
        train_sample=args.settings["train_sample"],
    )  # fmt: skip
    results.pop("au_variances", None)
    row = {
        "row": path.stem,
        "config": str(path.relative_to(SCRIPTS.parent)),
        "epochs": len(history),
        "finished": finished,
        "best_epoch": min(history, key=lambda record: record["neg_elbo"])["epoch"],
        "train_minutes": round(sum(record["seconds"] for record in history) / 60, 1),
        "machine": machine(args.device),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        **results,
    }
    (run_dir / "table_row.json").write_text(json.dumps(row, indent=2) + "\n")
    if args.results_dir is not None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        (args.results_dir / f"{path.stem}.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def markdown(rows: list[dict], settings: dict) -> str:
    columns = [column for column in ALL_COLUMNS if column[0] in settings["columns"]]
    header = ["row", *(label for _, label, _ in columns), "epochs (best)", "train min", "machine", "params"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["row"]]
        for key, _, fmt in columns:
            cells.append("n/a" if row.get(key) is None else fmt.format(row[key]))
        cells += [
            f"{row['epochs']} ({row['best_epoch']})",
            str(row["train_minutes"]),
            row["machine"],
            f"{row['parameters'] / 1e6:.2f}M",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    first = next((row for row in rows if row.get("iw_samples")), rows[0])  # a VAE row says K and BLEU
    note = (
        f"\n{settings['data']} valid ({first['num_sentences']} sentences, {first['num_tokens']} tokens); NLL "
        f"with K = {first['iw_samples'] or 'exact'}; BLEU {first.get('bleu_signature')}.\n"
    )
    return "\n".join(lines) + "\n" + note + "\n" + settings["published"]


def child_command(args: argparse.Namespace, row: str, phase: str) -> list[str]:
    """This script, for one row and one phase, with the options of this run."""
    command = [sys.executable, str(Path(__file__).resolve()), "--table", args.table, "--rows", row]
    command += ["--phase", phase]
    command += ["--no-progress", "--output-dir", str(args.output_dir), "--data-dir", str(args.data_dir)]
    command += ["--device", args.device]
    command += ["--iw-samples", str(args.iw_samples), "--interpolation-pairs", str(args.interpolation_pairs)]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--limit", args.limit),
        ("--reference-lm", args.reference_lm),
        ("--results-dir", args.results_dir),
        ("--max-train-minutes", args.max_train_minutes),
    ):
        if value is not None:
            command += [flag, str(value)]
    return command


def run_jobs(commands: dict[str, list[str]], jobs: int, log_dir: Path, after: dict[str, str]) -> list[str]:
    """Run the commands `jobs` at a time (a row waits for the row named in `after`); the rows that failed."""
    waiting, running, failed = dict(commands), {}, []
    while waiting or running:
        for row, process in list(running.items()):
            if process.poll() is not None:
                del running[row]
                logging.info("%s: %s", row, "done" if process.returncode == 0 else f"failed, see {row}.log")
                if process.returncode != 0:
                    failed.append(row)
        ready = [row for row in waiting if after.get(row) not in waiting and after.get(row) not in running]
        for row in ready[: jobs - len(running)]:
            with open(log_dir / f"{row}.log", "a", encoding="utf-8") as log:
                running[row] = subprocess.Popen(waiting.pop(row), stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1)
    return failed


def run_parallel(paths: list[Path], args: argparse.Namespace) -> None:
    """Train every row (and the reference LM), `args.jobs` at a time, then evaluate them all the same way."""
    names = [path.stem for path in paths]
    trained, folder, reference = list(names), args.settings["folder"], args.settings["reference"]
    if args.reference_lm is None and reference not in trained:
        trained.insert(0, reference)
    after = {}
    for name in list(trained):  # a row whose decoder starts from another row's run trains after it
        source = read_config_file(folder / f"{name}.yaml").get("init_decoder_from")
        if source is not None and (folder / f"{source}.yaml").is_file():
            after[name] = source
            if source not in trained:
                trained.insert(0, source)
    logging.info("training %s, %d at a time", ", ".join(trained), args.jobs)
    commands = {row: child_command(args, row, "train") for row in trained}
    failed = run_jobs(commands, args.jobs, args.output_dir, after)
    logging.info("evaluating %s, %d at a time", ", ".join(names), args.jobs)
    commands = {row: child_command(args, row, "evaluate") for row in names}
    failed += run_jobs(commands, args.jobs, args.output_dir, {})
    if failed:
        logging.warning("failed (see their logs): %s", ", ".join(failed))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    paths = select_rows(args.rows, args.settings)
    if args.phase == "train":
        for path in paths:
            train_row(path, args.output_dir / path.stem, args)
        return
    if args.phase == "evaluate":
        for path in paths:
            run_row(path, args, training=False)
        return
    if args.jobs > 1:
        run_parallel(paths, args)
    else:
        for path in paths:
            logging.info("=== %s", path.stem)
            run_row(path, args)
    rows = [json.loads(path.read_text()) for path in sorted(args.output_dir.glob("*/table_row.json"))]
    if not rows:
        raise SystemExit(f"no row of {args.output_dir} has a finished epoch to evaluate yet")
    (args.output_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.output_dir / "results.md").write_text(markdown(rows, args.settings))
    print(markdown(rows, args.settings))


if __name__ == "__main__":
    main()
