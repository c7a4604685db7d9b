"""Time to quality: textvae's default output layer against the adaptive softmax, same seed, same wall time.

Tokens per second alone do not say what a user gets; what matters is how soon a model reaches a given
quality. For each corpus (yelp_short trained on train + extra, PTB) this trains two models that differ only
in the output layer (`output_layer` "full", today's default, and "adaptive", Grave et al. 2017), with the
same seed and the same batches in the same order, each for the same wall time of training steps
(`--minutes`), through textvae's own trainer (`Trainer._step`: the `TrainStep`, the KL weight), and
measures, in one run:

- real tokens per second (words + EOS of the batches, padding never counted) over the timed steps;
- MFU: model FLOPs per second (`textvae.models.flops.training_flops`: the matrix products the model does,
  so the adaptive layer is credited only with the clusters each token visits) over this machine's fp32 peak measured in the same run
  (1024 x 1024 matrix products, timed between the two trainings);
- valid -ELBO every `--eval-steps` steps (on the first `--eval-sentences` valid sentences; not timed), and
  so the wall time each needs to reach a stated valid -ELBO (by default the -ELBO the full layer reaches at
  the end of its budget), and the -ELBO each reaches in the same wall time;
- the valid NLL (importance weighted, `--iw-samples`) of both after the same number of steps (those the
  full layer took in its budget; the adaptive one is scored when it passes them, outside the timing, or
  trained on untimed until it does).

    python scripts/bench_time_to_quality.py --corpora ptb,yelp --minutes 20 --threads 2 --json runs/ttq.json
    python scripts/bench_time_to_quality.py --quick      # every part, tiny budgets (the CPU test)

Measure alone on a quiet machine: the two trainings run one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from textvae.evaluation.scoring import importance_weighted_nll
from textvae.models.flops import training_flops
from textvae.training.config import TrainConfig
from textvae.training.setup import build_model, prepare_run_data
from textvae.training.trainer import Trainer
from textvae.training.validation import validate

CORPORA = {
    "yelp": {"source": "yelp_short", "train_splits": "train,extra"},
    "ptb": {"source": "ptb"},
}
SQUARE_SIZE = 1024


def matrix_peak(seconds: float = 2.0) -> float:
    """This machine's fp32 matrix-product throughput (FLOP/s) on square 1024 x 1024 products."""
    a, b = torch.randn(SQUARE_SIZE, SQUARE_SIZE), torch.randn(SQUARE_SIZE, SQUARE_SIZE)
    for _ in range(3):  # warm-up
        torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2.0 * SQUARE_SIZE**3 * count / (time.perf_counter() - start)


def _target_labels(split, indices) -> torch.Tensor:
    """(N,) the target tokens (words + EOS) of the sentences at `indices`."""
    return torch.cat([torch.tensor(split.input_ids[i][1:], dtype=torch.long) for i in indices])


def _subset(split, count: int):
    from textvae.data.storage import TokenizedSplit

    count = min(count, len(split))
    return TokenizedSplit(input_ids=[list(split.input_ids[i]) for i in range(count)])


def train_and_measure(corpus: str, layer: str, args, work: Path, nll_step: int | None = None) -> dict:
    """One training of `args.minutes` minutes of steps with the given output layer; its figures. The valid
    NLL is taken after `nll_step` steps (default: at the end), outside the timed steps."""
    model_options = {**json.loads(args.model), "output_layer": layer}
    config = TrainConfig(
        data={**CORPORA[corpus], "data_dir": args.data_dir}, seed=args.seed, model=model_options,
        progress=False, plot_each_epoch=False, fit_prior=False, device="cpu", save_minutes=0,
    )  # fmt: skip
    data = prepare_run_data(config)
    torch.manual_seed(config.seed)  # as `textvae train` initialises the model
    model = build_model(config, data.tokenizer)
    trainer = Trainer(config, work / f"{corpus}-{layer}", model, data)
    valid = _subset(data.validation, args.eval_sentences)
    nll_batch = _nll_batch(model, valid, args.iw_sentences)
    evaluations, seconds, tokens, flops, step, nll = [], 0.0, 0, 0.0, 0, None
    budget = 60.0 * args.minutes

    def evaluate_now() -> None:
        figures = validate(model, valid, config.batch_size, seed=args.seed)
        evaluations.append({"step": step, "seconds": round(seconds, 3), "neg_elbo": figures["neg_elbo"]})
        model.train()

    def nll_now() -> float:
        model.eval()
        generator = torch.Generator().manual_seed(0)
        value = float(importance_weighted_nll(model, nll_batch, args.iw_samples, generator=generator).mean())
        model.train()
        return value

    model.train()
    epoch = 0
    while seconds < budget:
        trainer.sampler.set_epoch(epoch)
        for indices in trainer.sampler:
            start = time.perf_counter()
            trainer._step(data.train, indices)
            seconds += time.perf_counter() - start
            trainer.state["step"] = step = step + 1
            labels = _target_labels(data.train, indices)
            tokens += labels.numel()
            flops += training_flops(model, labels, len(indices))
            if step % args.eval_steps == 0 or seconds >= budget:
                evaluate_now()
            if step == nll_step:
                nll = nll_now()
            if seconds >= budget:
                break
        epoch += 1
    timed_steps = step
    while nll_step is not None and step < nll_step:  # fewer steps than the full layer: catch up, untimed
        trainer.sampler.set_epoch(epoch)
        for indices in trainer.sampler:
            trainer._step(data.train, indices)
            trainer.state["step"] = step = step + 1
            if step >= nll_step:
                break
        epoch += 1
    if nll is None:
        nll = nll_now()
    return {
        "corpus": corpus,
        "output_layer": layer,
        "steps": timed_steps,
        "train_seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "model_flops_per_token": flops / tokens,
        "model_flops_per_second": flops / seconds,
        "evaluations": evaluations,
        "valid_nll": nll,
        "nll_step": nll_step or timed_steps,
        "iw_samples": args.iw_samples,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "cutoffs": getattr(model.config, "adaptive_cutoffs", None),
    }


def _nll_batch(model, split, count: int) -> dict:
    from textvae.data.storage import collate

    return collate(split, list(range(min(count, len(split)))), model.config.pad_token_id)


def time_to(evaluations: list[dict], target: float) -> float | None:
    """Seconds of training until valid -ELBO first reaches `target` (linear between evaluations)."""
    previous = {"seconds": 0.0, "neg_elbo": float("inf")}
    for point in evaluations:
        if point["neg_elbo"] <= target:
            if previous["neg_elbo"] == float("inf"):
                return point["seconds"]
            share = (previous["neg_elbo"] - target) / (previous["neg_elbo"] - point["neg_elbo"])
            return previous["seconds"] + share * (point["seconds"] - previous["seconds"])
        previous = point
    return None


def elbo_at(evaluations: list[dict], seconds: float) -> float:
    """Valid -ELBO at `seconds` of training (linear between evaluations; the last one past them)."""
    previous = None
    for point in evaluations:
        if point["seconds"] >= seconds:
            if previous is None:
                return point["neg_elbo"]
            share = (seconds - previous["seconds"]) / max(point["seconds"] - previous["seconds"], 1e-9)
            return previous["neg_elbo"] + share * (point["neg_elbo"] - previous["neg_elbo"])
        previous = point
    return evaluations[-1]["neg_elbo"]


def compare(full: dict, adaptive: dict, target: float | None) -> dict:
    target = full["evaluations"][-1]["neg_elbo"] if target is None else target
    times = {run["output_layer"]: time_to(run["evaluations"], target) for run in (full, adaptive)}
    common = min(full["train_seconds"], adaptive["train_seconds"])
    return {
        "target_neg_elbo": target,
        "seconds_to_target": times,
        "time_ratio": times["full"] / times["adaptive"] if times["full"] and times["adaptive"] else None,
        "tokens_per_second_ratio": adaptive["tokens_per_second"] / full["tokens_per_second"],
        "steps": {run["output_layer"]: run["steps"] for run in (full, adaptive)},
        "common_seconds": common,
        "neg_elbo_at_common_seconds": {
            run["output_layer"]: elbo_at(run["evaluations"], common) for run in (full, adaptive)
        },
        "nll_difference": None
        if adaptive["valid_nll"] is None
        else adaptive["valid_nll"] - full["valid_nll"],
    }


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(report: dict) -> str:
    lines = [
        "| corpus | output layer | tokens/s | MFU | s to target -ELBO | -ELBO at common time | valid NLL |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, result in report["corpora"].items():
        comparison = result["comparison"]
        for run in result["runs"]:
            layer = run["output_layer"]
            seconds = comparison["seconds_to_target"][layer]
            lines.append(
                f"| {corpus} | {layer} | {run['tokens_per_second']:,.0f} | {run['mfu']:.0%} | "
                f"{'not reached' if seconds is None else f'{seconds:.0f}'} | "
                f"{comparison['neg_elbo_at_common_seconds'][layer]:.2f} | {_figure(run['valid_nll'])} "
                f"(step {run['nll_step']}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpora", default="ptb,yelp", help="comma-separated: ptb, yelp")
    parser.add_argument("--data-dir", default=os.environ.get("TEXTVAE_DATA", "../shared/data"))
    parser.add_argument("--minutes", type=float, default=20.0, help="minutes of training steps of each run")
    parser.add_argument("--eval-steps", type=int, default=200, help="valid -ELBO every this many steps")
    parser.add_argument("--eval-sentences", type=int, default=2000, help="valid sentences of the -ELBO")
    parser.add_argument("--iw-samples", type=int, default=50, help="K of the final valid NLL")
    parser.add_argument("--iw-sentences", type=int, default=500, help="valid sentences of the final NLL")
    parser.add_argument(
        "--target", type=float, default=None, help="the valid -ELBO to reach (default: full's last)"
    )
    parser.add_argument("--model", default="{}", help="architecture options (JSON) of both models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: every part runs (the CPU test)")
    args = parser.parse_args()
    corpora = args.corpora.split(",")
    unknown = [name for name in corpora if name not in CORPORA]
    if unknown or not args.minutes > 0 or args.eval_steps < 1:
        parser.error(
            f"--corpora must name {', '.join(CORPORA)} (got {args.corpora}); --minutes and --eval-steps > 0"
        )
    if args.quick:
        args.minutes, args.eval_steps, args.eval_sentences, args.iw_samples, args.iw_sentences = (
            0.03,
            3,
            20,
            2,
            8,
        )
    torch.set_num_threads(args.threads)
    report = {"machine": f"{platform.machine()} CPU, {args.threads} threads", "torch": torch.__version__,
              "settings": {k: v for k, v in vars(args).items() if k != "json"}, "corpora": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        peaks = [matrix_peak(1.0 if args.quick else 3.0)]
        for corpus in corpora:
            full = train_and_measure(corpus, "full", args, Path(work))
            peaks.append(matrix_peak(1.0 if args.quick else 3.0))
            adaptive = train_and_measure(corpus, "adaptive", args, Path(work), nll_step=full["steps"])
            peaks.append(matrix_peak(1.0 if args.quick else 3.0))
            report["corpora"][corpus] = {"runs": [full, adaptive]}
        peak = max(peaks)
        report["peak_flops_per_second"] = peak
        for result in report["corpora"].values():
            for run in result["runs"]:
                run["mfu"] = run["model_flops_per_second"] / peak
            result["comparison"] = compare(*result["runs"], args.target)
    print(markdown(report))
    for corpus, result in report["corpora"].items():
        comparison = result["comparison"]
        ratio = comparison["time_ratio"]
        difference = comparison["nll_difference"]
        nll = "no adaptive NLL" if difference is None else f"valid NLL {difference:+.2f} nats"
        print(
            f"{corpus}: adaptive {comparison['tokens_per_second_ratio']:.2f}x the tokens/s; "
            f"{'n/a' if ratio is None else f'{ratio:.2f}x'} less time to -ELBO {comparison['target_neg_elbo']:.2f}; "
            f"{nll} after the full layer's {result['runs'][0]['steps']} steps"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
