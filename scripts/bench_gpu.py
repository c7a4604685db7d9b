"""GPU figures of PTB row 6 in one run: training speed and MFU, the K = 500 evaluation, prior sampling, and
bf16's NLL against fp32's, each against its target.

One model: row 6's architecture (scripts/ptb_table/6_best.yaml: LSTM 256 encoder, LSTM 512 decoder with a
tied 256 embedding, BN-VAE, batch 32), initialised as `textvae train` initialises it (the row's seed), or
a trained run folder (`--model RUN`, with its own training options). Each part runs in fp32 and in bf16:

1. Training, through textvae's own `Trainer` (fused Adam, clipping, the row's KL schedule, the trainer's bf16
   autocast): its step (`Trainer._step`: the `TrainStep` and the KL weight) timed over --steps after --warmup-steps gives target
   tokens/s (words + EOS) and the epoch that implies (PTB train's 929,589 target tokens / tokens/s); then
   one whole epoch of the trainer's own loop (`Trainer._run_epoch`, with its logging and the row's
   checkpoint every 400 steps, all that `textvae train` times as an epoch before validating it) is timed.
   The epoch target is judged on that real epoch. Each precision trains its own copy of the same weights.
2. MFU: `training_flops` (textvae.models.flops: matrix products of the model's own weights, x3 for the backward) per token times
   tokens/s, over the peak of square matrix products of the same precision measured in this run
   (`bench_train_speed.MatmulTimer`). On CUDA fp32 is strict IEEE fp32 throughout unless --tf32: TF32 off in
   cuBLAS and in cuDNN, whose LSTMs use TF32 by default; so fp32's MFU is against the true fp32 peak.
3. Evaluation: `textvae.evaluation.evaluate` of PTB valid with K = 500 and its other defaults (what
   `textvae evaluate` computes without a reference LM), timed; bf16 runs it under bf16 autocast. Both read
   the same weights and the same random draws (bf16 draws are the fp32 ones rounded): --model's weights,
   or else the random model after the fp32 training of part 1 (about one PTB epoch), whose logits are not
   the near-uniform ones of random weights. Reported: bf16 NLL - fp32 NLL, nats per sentence.
4. Sampling: `TextVAEPipeline.sample` (what `textvae sample` calls) from N(0, I) at batch 1,024 with the
   CLI's max length 100, sampling (the CLI's default) and greedy, sentences/s including detokenisation,
   from the weights of part 3. A row stops when all its sentences reached EOS: barely trained weights run
   all 100 steps.

CUDA is synchronised before every clock reading. On the CPU every bf16 part runs as fp32, marked so
("ran_as"): the trainer's bf16 autocast is CUDA-only, and CPU bf16 autocast cannot run `nn.LSTM` at all
(oneDNN refuses the primitive, torch 2.13), so there the bf16 NLL equals the fp32 one.

On one H100 or H200:

    python scripts/bench_gpu.py --json runs/bench_gpu.json

Expected run time on an H100, about 3 minutes (8 at most), estimated from FLOPs: training is 29 MFLOP a
target token (27 TFLOP a PTB epoch), under 2 s an epoch even at 10% of the fp32 peak, so an epoch is bound
by its 1,315 sequential steps of kernel launches instead, ~5-15 ms each: 1,645 steps per precision, under
30 s each. Evaluation: 8.7 MFLOP per decoded token x 500 samples x 73,760 tokens = 320 TFLOP, ~15 s in fp32
at half its peak, a few in bf16, plus greedy decodings for BLEU, diversity and interpolation (~10 s). Sampling:
4 x 8 batches of 100 launch-bound steps, a few seconds. Loading torch and tokenising PTB: ~20 s.
`--quick` runs every part with tiny budgets (CPU: well under a minute), as tests/test_bench_gpu.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_train_speed import MatmulTimer  # scripts/ is no package: this script's folder is on sys.path

from textvae.checkpointing import load_run
from textvae.config_fields import read_config_file
from textvae.data.config import split_flat_options
from textvae.data.storage import TokenizedSplit
from textvae.evaluation.split import evaluate
from textvae.models.flops import training_flops
from textvae.pipeline import TextVAEPipeline
from textvae.run_files import TRAIN_CONFIG_NAME, read_json
from textvae.training.config import TrainConfig
from textvae.training.setup import build_model, prepare_run_data
from textvae.training.trainer import Trainer

ROW = Path(__file__).resolve().parent / "ptb_table" / "6_best.yaml"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("sample", "greedy")
# Budgets: the full run, and --quick's (every part runs, tiny). A flag given explicitly wins over both.
FULL = dict(
    steps=300, warmup_steps=30, train_limit=None, limit=None, iw_samples=500, sample_batch_size=1024,
    sample_batches=8, max_length=100, matmul_size=None, matmul_seconds=1.0,
    num_diversity_samples=100, interpolation_pairs=100,
)  # fmt: skip
QUICK = dict(
    steps=2, warmup_steps=1, train_limit=64, limit=8, iw_samples=4, sample_batch_size=8, sample_batches=1,
    max_length=8, matmul_size=None, matmul_seconds=0.05, num_diversity_samples=2, interpolation_pairs=1,
)  # fmt: skip


def model_flops(model, tokens: int, sentences: int) -> float:
    """Training FLOPs (forward + backward) of a recurrent textvae model with a full output layer on
    `sentences` sentences holding `tokens` target tokens (words + EOS): `textvae.models.flops.training_flops`,
    which counts from the model's own weight matrices (any sizes, layers, directions, tied or not). An
    adaptive output layer's cost depends on which tokens they are: call `training_flops` with the labels.
    On the Sentence-VAE model of scripts/bench_train_speed.py it equals that script's `model_flops`.
    """
    if getattr(model.decoder, "adaptive_output", None) is not None:
        raise ValueError(
            "an adaptive output layer's FLOPs depend on the tokens: use training_flops(model, labels, n)"
        )
    return training_flops(model, torch.zeros(tokens, dtype=torch.long), sentences)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_context(device: torch.device, precision: str):
    """bf16 autocast for "bf16" on CUDA, the trainer's own; else nothing: CPU bf16 autocast cannot run
    `nn.LSTM` (oneDNN refuses the primitive), so on the CPU bf16 runs as fp32."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def ran_as(context) -> str:
    """The precision a context of `precision_context` or of the trainer's step's `autocast` computes in."""
    return "fp32" if isinstance(context, contextlib.nullcontext) else "bf16"


def use_strict_fp32() -> None:
    """TF32 off for fp32 matrix products in cuBLAS and cuDNN (cuDNN's LSTMs use TF32 by default)."""
    if hasattr(torch.backends.cudnn, "rnn"):  # torch >= 2.9; mixing in the legacy flags is refused there
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def load_model_and_data(args: argparse.Namespace, device: torch.device):
    """(training config, PTB data, the model on the CPU): row 6's, or --model's run with its options."""
    options, tokenizers, model = read_config_file(ROW), (None, None), None
    if args.model:
        model, *tokenizers = load_run(args.model)
        if (Path(args.model) / TRAIN_CONFIG_NAME).is_file():
            options = read_json(Path(args.model) / TRAIN_CONFIG_NAME)
    data_options, options = split_flat_options(options)
    data_options.update(source="ptb", data_dir=str(args.data_dir), streaming=False)
    options.update(
        max_steps=None, init_decoder_from=None, device=device.type, progress=False, plot_each_epoch=False,
        fit_prior=False, report_to="none",
    )  # fmt: skip
    config = TrainConfig.from_dict({**options, "data": data_options})
    data = prepare_run_data(config, *tokenizers)
    if model is None:
        torch.manual_seed(config.seed)  # as `textvae train` initialises it
        model = build_model(config, data.tokenizer)
    return config, data, model


def _endless(sampler):
    """The sampler's batches, epoch after epoch."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def time_training(config, data, model, precision: str, args, device, peaks: dict, full_tokens: int):
    """Part 1 and 2 for one precision: (figures, the trained model). Trains a copy of `model`."""
    config = dataclasses.replace(config, bf16=precision == "bf16")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Path(run_dir), copy.deepcopy(model), data)
        batches, lengths = _endless(trainer.sampler), data.train.lengths

        def step() -> tuple[int, int, float]:
            indices = next(batches)
            trainer._step(data.train, indices)
            trainer.state["step"] += 1
            labels = torch.cat([torch.tensor(data.train.input_ids[i][1:], dtype=torch.long) for i in indices])
            return (
                int((lengths[indices] - 1).sum()),
                len(indices),
                training_flops(model, labels, len(indices)),
            )

        for _ in range(args.warmup_steps):
            step()
        synchronize(device)
        start = time.perf_counter()
        counts = [step() for _ in range(args.steps)]
        synchronize(device)
        seconds = time.perf_counter() - start
        # One epoch of the trainer's own loop, from the start of an epoch.
        trainer.state.update(epoch=0, batch_in_epoch=0)
        trainer._epoch_started = trainer._last_save = time.monotonic()
        start = time.perf_counter()
        trainer._run_epoch()
        synchronize(device)
        epoch_measured = time.perf_counter() - start
        computed_in = ran_as(trainer.step.autocast())
    tokens = sum(c[0] for c in counts)
    tokens_per_second = tokens / seconds
    flops_per_token = sum(c[2] for c in counts) / tokens
    epoch_tokens = data.train.num_target_tokens()
    figures = {
        "ran_as": computed_in,
        "steps": args.steps,
        "tokens": tokens,
        "seconds": seconds,
        "step_ms": 1000 * seconds / args.steps,
        "tokens_per_second": tokens_per_second,
        "epoch_seconds_from_tokens_per_second": full_tokens / tokens_per_second,
        "epoch_steps": trainer.sampler.num_batches,
        "epoch_tokens": epoch_tokens,
        "epoch_measured_seconds": epoch_measured,
        # The real epoch, extrapolated by target tokens when --train-limit cut the split.
        "epoch_seconds": epoch_measured * full_tokens / epoch_tokens,
        "model_flops_per_token": flops_per_token,
        "model_flops_per_second": flops_per_token * tokens_per_second,
        "mfu": flops_per_token * tokens_per_second / peaks[computed_in]["square"],
    }
    return figures, trainer.model


def time_evaluation(model, tokenizer, split, full_split, precision: str, args, device) -> dict:
    """Part 3 for one precision: `evaluate` timed, its results, and the time for the whole split."""
    options = dict(
        num_diversity_samples=args.num_diversity_samples, interpolation_pairs=args.interpolation_pairs
    )
    with (context := precision_context(device, precision)):
        synchronize(device)
        start = time.perf_counter()
        results = evaluate(
            model, tokenizer, split, iw_samples=args.iw_samples, max_length=args.max_length, seed=args.seed,
            show_progress=False, **options,
        )  # fmt: skip
        synchronize(device)
        seconds = time.perf_counter() - start
    return {
        "ran_as": ran_as(context),
        "seconds": seconds,
        "sentences": len(split),
        "tokens": split.num_target_tokens(),
        # IW decoding dominates and scales with target tokens x K (as scripts/bench_evaluate.py).
        "full_split_seconds": seconds * full_split.num_target_tokens() / split.num_target_tokens(),
        "nll": results["nll"],
        "nll_per_token": results["nll"] * results["num_sentences"] / results["num_tokens"],
        "results": results,
    }


def time_sampling(model, tokenizer, precision: str, strategy: str, args, device) -> dict:
    """Part 4 for one precision and strategy: sentences/s of `TextVAEPipeline.sample` after one warm-up batch."""
    pipeline = TextVAEPipeline(
        model, tokenizer, batch_size=args.sample_batch_size, max_length=args.max_length
    )
    count = args.sample_batch_size * args.sample_batches
    with (context := precision_context(device, precision)):
        pipeline.sample(args.sample_batch_size, seed=args.seed, strategy=strategy)
        synchronize(device)
        start = time.perf_counter()
        sentences = pipeline.sample(count, seed=args.seed + 1, strategy=strategy)
        synchronize(device)
        seconds = time.perf_counter() - start
    return {
        "ran_as": ran_as(context),
        "sentences": count,
        "seconds": seconds,
        "sentences_per_second": count / seconds,
        "mean_words": sum(len(s.split()) for s in sentences) / count,
    }


def measure_peaks(device, rows: int, vocab_size: int, args) -> dict:
    """FLOP/s of square products (the peak) and of the vocabulary projection, in fp32 and bf16."""
    # A GPU needs large squares to reach its peak; --quick's CPU run keeps them tiny (bf16 is slow there).
    size = args.matmul_size or (8192 if device.type == "cuda" else 128 if args.quick else 1024)
    peaks = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        timer = MatmulTimer(device, rows, vocab_size, dtype, size, warmup_seconds=args.matmul_seconds / 4)
        for name in timer.shapes:
            timer.time(name, args.matmul_seconds)
        peaks[precision] = {name: timer.flops_per_second(name) for name in timer.shapes}
        peaks[precision]["square_size"] = size
    return peaks


def attempt(function, *args):
    """`function(*args)`, or {"error": what went wrong}: in a one-shot run on a lent GPU, one part failing (a
    bf16 kernel missing from some CUDA stack, say) must not cost the figures of the others."""
    try:
        return function(*args)
    except (RuntimeError, ValueError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"}


def run(args: argparse.Namespace) -> dict:
    """Every part, in fp32 and bf16: the measurements, with notes and the targets judged."""
    started, device = time.perf_counter(), torch.device(args.device)
    if device.type == "cuda":
        if not args.tf32:
            use_strict_fp32()
        torch.cuda.reset_peak_memory_stats(device)
    config, data, model = load_model_and_data(args, device)
    full_train_tokens = data.train.num_target_tokens()
    if args.train_limit:
        data = dataclasses.replace(data, train=TokenizedSplit(data.train.input_ids[: args.train_limit]))
    rows = round(float((data.train.lengths - 1).mean()) * config.batch_size)  # target tokens of a batch
    peaks = measure_peaks(device, rows, model.config.vocab_size, args)
    training, trained = {}, model
    for precision in PRECISIONS:
        result = attempt(
            time_training, config, data, model, precision, args, device, peaks, full_train_tokens
        )
        training[precision], weights = result if isinstance(result, tuple) else (result, model)
        trained = weights if precision == "fp32" else trained
    weights = (model if args.model else trained).to(device)  # the weights of the evaluation and sampling
    valid = data.validation
    split = TokenizedSplit(valid.input_ids[: args.limit]) if args.limit else valid
    evaluation = {
        p: attempt(time_evaluation, weights, data.tokenizer, split, valid, p, args, device)
        for p in PRECISIONS
    }
    sampling = {
        p: {s: attempt(time_sampling, weights, data.tokenizer, p, s, args, device) for s in STRATEGIES}
        for p in PRECISIONS
    }
    nlls = [evaluation[p].get("nll") for p in ("bf16", "fp32")]
    measurements = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model or f"{ROW.name}, random initialisation (seed {config.seed})",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "batch_size": config.batch_size,
        "ptb_train": {"sentences": len(data.train), "target_tokens_full_split": full_train_tokens},
        "ptb_valid": {"sentences": len(valid), "target_tokens": valid.num_target_tokens()},
        "matmul_flops_per_second": peaks,
        "training": training,
        "evaluation": evaluation,
        "nll_difference": nlls[0] - nlls[1] if None not in nlls else None,
        "sampling": sampling,
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
    }
    if device.type == "cuda":
        measurements["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    measurements["notes"] = notes(measurements, args, device)
    measurements["targets"] = judge(measurements)
    measurements["total_seconds"] = time.perf_counter() - started
    return measurements


def notes(measurements: dict, args: argparse.Namespace, device: torch.device) -> list[str]:
    """What the figures are, in words, for the summary and the JSON."""
    said = []
    if device.type == "cuda":
        said.append(
            "fp32 is " + ("TF32 where PyTorch allows it (--tf32)" if args.tf32 else "strict: TF32 off")
        )
    else:
        said.append("bf16 ran as fp32 (ran_as): the trainer's bf16 autocast is CUDA-only, and CPU bf16 autocast "
                    "cannot run nn.LSTM")  # fmt: skip
    if args.train_limit:
        said.append(
            f"train split cut to {args.train_limit} sentences: its epoch extrapolated by target tokens"
        )
    if args.limit:
        said.append(f"valid cut to {args.limit} sentences: the evaluation extrapolated by target tokens")
    if args.quick:
        said.append("--quick: tiny budgets, not the figures of the issue")
    for part in ("training", "evaluation", "sampling"):
        for precision, figures in measurements[part].items():
            for strategy, result in figures.items() if part == "sampling" else [("", figures)]:
                if "error" in result:
                    said.append(f"{precision} {part} {strategy}".rstrip() + f" FAILED: {result['error']}")
    return said


# The targets: figure -> (where its value is in the measurements of a precision, sign, bound).
TARGETS = {
    "epoch_seconds": (("training", "{p}", "epoch_seconds"), "<=", 15.0),
    "evaluation_seconds": (("evaluation", "{p}", "full_split_seconds"), "<=", 60.0),
    "sampling_sentences_per_second": (("sampling", "{p}", "sample", "sentences_per_second"), ">=", 1e4),
    "greedy_sentences_per_second": (("sampling", "{p}", "greedy", "sentences_per_second"), ">=", 1e4),
    "abs_nll_difference": (("nll_difference",), "<=", 0.1),
}


def lookup(measurements: dict, path: tuple, precision: str) -> float | None:
    """The figure at `path` ("{p}" standing for the precision), or None where its part failed."""
    value = measurements
    for key in path:
        value = value.get(key.format(p=precision)) if isinstance(value, dict) else None
    return value


def judge(measurements: dict) -> list[dict]:
    """Each figure with a target, in each precision: its value, the target and whether it is met (a failed
    part's figure is None and not met)."""
    checks = []
    for figure, (path, sign, bound) in TARGETS.items():
        for precision in ("bf16",) if figure == "abs_nll_difference" else PRECISIONS:
            value = lookup(measurements, path, precision)
            if figure == "abs_nll_difference" and value is not None:
                value = abs(value)
            met = value is not None and (value <= bound if sign == "<=" else value >= bound)
            checks.append(
                {
                    "figure": figure,
                    "precision": precision,
                    "value": value,
                    "target": f"{sign} {bound:g}",
                    "met": met,
                }
            )
    return checks


def summary_table(measurements: dict, args: argparse.Namespace) -> str:
    """The figures of both precisions side by side, with their targets."""
    train, evaluation, sampling = (measurements[k] for k in ("training", "evaluation", "sampling"))
    peaks = measurements["matmul_flops_per_second"]
    met = {(c["figure"], c["precision"]): "met" if c["met"] else "NOT MET" for c in measurements["targets"]}

    def both(section, key, fmt, strategy=None):
        values = [(section[p].get(strategy, {}) if strategy else section[p]).get(key) for p in PRECISIONS]
        return ["failed" if value is None else fmt.format(value) for value in values]

    batch, difference = f"batch {args.sample_batch_size:,}", measurements["nll_difference"]
    rows = [  # label, (fp32, bf16), target, the target's figure
        ("training tokens/s", both(train, "tokens_per_second", "{:,.0f}"), "", None),
        ("training step, ms", both(train, "step_ms", "{:.2f}"), "", None),
        ("PTB epoch from tokens/s, s", both(train, "epoch_seconds_from_tokens_per_second", "{:.1f}"), "", None),
        ("PTB epoch, trainer's loop, s", both(train, "epoch_seconds", "{:.1f}"), "<= 15", "epoch_seconds"),
        ("model FLOPs per target token", both(train, "model_flops_per_token", "{:.3g}"), "", None),
        ("peak (square matmuls), TFLOP/s", [f"{peaks[p]['square'] / 1e12:.3g}" for p in PRECISIONS], "", None),
        ("MFU (against that precision's peak)", both(train, "mfu", "{:.2%}"), "", None),
        (f"K = {args.iw_samples} evaluation of PTB valid, s", both(evaluation, "full_split_seconds", "{:.1f}"),
         "<= 60", "evaluation_seconds"),
        ("NLL, nats per sentence", both(evaluation, "nll", "{:.3f}"), "", None),
        (f"prior sampling, {batch}, sentences/s", both(sampling, "sentences_per_second", "{:,.0f}", "sample"),
         ">= 10,000", "sampling_sentences_per_second"),
        (f"greedy from the prior, {batch}, sentences/s",
         both(sampling, "sentences_per_second", "{:,.0f}", "greedy"), ">= 10,000", "greedy_sentences_per_second"),
        ("bf16 NLL - fp32 NLL, nats per sentence", ["", "failed" if difference is None else f"{difference:+.4f}"], "|.| <= 0.1",
         "abs_nll_difference"),
    ]  # fmt: skip
    lines = [f"{'figure':<46} {'fp32':>12} {'bf16':>12}  {'target':<10} met (fp32 / bf16)"]
    for label, values, target, figure in rows:
        verdict = " / ".join(met[(figure, p)] for p in PRECISIONS if (figure, p) in met)
        lines.append(f"{label:<46} {values[0]:>12} {values[1]:>12}  {target:<10} {verdict}".rstrip())
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("TEXTVAE_DATA") or DEFAULT_DATA_DIR)
    parser.add_argument("--model", help="a trained run folder (default: row 6, randomly initialised)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets for every part (the CPU test)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--tf32", action="store_true", help="let fp32 use TF32 on CUDA (default: strict fp32)"
    )
    parser.add_argument("--seed", type=int, default=0)
    budget = parser.add_argument_group("budgets (default: the full run, or --quick's)")
    budget.add_argument("--steps", type=int, help="timed training steps per precision (300)")
    budget.add_argument("--warmup-steps", type=int, help="untimed training steps before them (30)")
    budget.add_argument("--train-limit", type=int, help="the timed epoch reads the first N sentences (all)")
    budget.add_argument("--limit", type=int, help="evaluate the first N valid sentences (all)")
    budget.add_argument("--iw-samples", type=int, help="K of the importance-weighted NLL (500)")
    budget.add_argument("--sample-batch-size", type=int, help="sentences per sampling batch (1024)")
    budget.add_argument("--sample-batches", type=int, help="timed sampling batches (8)")
    budget.add_argument("--max-length", type=int, help="longest sample, as `textvae sample` (100)")
    budget.add_argument(
        "--matmul-size", type=int, help="side of the peak's squares (8192 on CUDA, else 1024; --quick 128)"
    )
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    for name in ("steps", "warmup_steps", "iw_samples", "sample_batch_size", "sample_batches", "max_length"):
        if getattr(args, name) < (0 if name == "warmup_steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    measurements = run(args)
    print(
        f"PTB row 6 on {measurements['device']} (torch {measurements['torch']}, {measurements['threads']} "
        f"threads): {measurements['model']}, {measurements['parameters'] / 1e6:.2f}M parameters, "
        f"batch {measurements['batch_size']}, {measurements['total_seconds']:.0f} s in all"
    )
    print(summary_table(measurements, args))
    for note in measurements["notes"]:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(measurements, indent=2, default=str) + "\n")
    return measurements


if __name__ == "__main__":
    main()
