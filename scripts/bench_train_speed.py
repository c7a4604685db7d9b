"""Training speed on PTB: textvae's training step against the straightforward padded Sentence-VAE loop.

Both train the Sentence-VAE-sized model (Bowman et al. 2016 as sized by timbmg/Sentence-VAE: GRU encoder
and decoder, embedding 300, hidden 256, latent 16, batch 32, the 10,002-word PTB vocabulary) and
condition the decoder on `z` only through its initial state, as Sentence-VAE does (textvae is run with
`z_to_inputs=False`). Dropout follows Sentence-VAE's defaults: 0.5 on the decoder's input embeddings,
none on its outputs, no word dropout. The KL weight is fixed at 1, so both losses are
`(sum of token NLLs + sum of KLs) / batch size`.

(a) textvae: `TextVAEModel`, length-bucketed batches (`LengthBucketSampler` + `collate`),
    `model(**batch, return_logits=False).loss`, the trainer's optimiser (fused Adam), gradient clipping at norm 5.
(b) baseline: Sentence-VAE's `model.py` and `train.py` minus packing: every sentence truncated and padded
    to 60 tokens, random batches, both GRUs run over all 60 positions, the vocabulary projection,
    `log_softmax` and `NLLLoss(ignore_index=pad, reduction="sum")` over every position, Adam without
    clipping. One embedding serves encoder and decoder, as there (textvae has one each: 3M more
    parameters for Adam). Sentences are padded once beforehand, as its dataset class does, while
    textvae's `collate` runs inside the timed steps.

Both read the same sentences: `[BOS] + words[:59]` in, `words[:59] + [EOS]` predicted. Throughput counts
the predicted tokens (words plus EOS, never padding) identically for both. Each variant trains in its own
process so that its peak RSS is its own; the two take turns in chunks of steps, so that load from other
users of the machine falls on both alike.

Computing the same things per position, textvae can only be faster by the padding it skips: the
baseline computes 60 positions per sentence, PTB train has 22.1 predicted tokens per sentence on average,
so the ratio's natural ceiling is about 2.7x; textvae's fused projection and loss
(`RecurrentDecoder.token_loss`) is what brings it to about that ceiling despite its larger fixed costs.

Against the hardware: the same run also times fp32 matrix products on the same device with the same
thread count, in turns between the training chunks: square 1024 x 1024 products (the peak) and the
model's vocabulary projection, (real tokens of a batch) x 256 times 256 x 10,002. Model FLOPs per second
= real tokens per second x model FLOPs per real token (`model_flops`, matrix products only), and model
FLOPs utilisation (MFU) = that / the square-product peak. Both variants are credited with the model
FLOPs of the real tokens only, so the baseline's padding shows as a lower utilisation.

    python scripts/bench_train_speed.py --steps 300 --threads 2 --json runs/bench_train_speed.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import torch
from torch import nn

MAX_SEQUENCE_LENGTH = 60  # Sentence-VAE's --max_sequence_length: BOS + 59 words in, 59 words + EOS out
EMBEDDING_SIZE, HIDDEN_SIZE, LATENT_SIZE = 300, 256, 16  # Sentence-VAE's defaults
EMBEDDING_DROPOUT = 0.5  # Sentence-VAE's --embedding_dropout
LEARNING_RATE = 1e-3
MAX_GRAD_NORM = 5.0
VARIANTS = ("textvae", "baseline")
SQUARE_SIZE = 1024  # the square matrix products that measure the peak


def model_flops(tokens: int, sentences: int, vocab_size: int) -> float:
    """Model FLOPs of training on `sentences` sentences holding `tokens` predicted (real) tokens.

    Matrix products only, 2 FLOPs a multiply-add, real tokens only (padding is waste, not work); forward:
    - GRU encoder, 2 * 3H * (E + H) a position it reads: BOS, words, EOS = tokens + sentences positions;
    - GRU decoder, the same per input position: BOS, words = tokens positions;
    - vocabulary projection, 2 * H * V a predicted token (words, EOS);
    - per sentence, the posterior (H -> 2Z) and z -> initial state (Z -> H): 2 * 3 * H * Z.
    A training step costs ~3x its forward: the backward computes the gradients of both the inputs and
    the weights of every product, twice the forward's products (Kaplan et al. 2020, Sec. 2.1).
    Embedding lookups, gates, softmax and Adam are not counted.
    """
    recurrent = 2 * 3 * HIDDEN_SIZE * (EMBEDDING_SIZE + HIDDEN_SIZE)
    forward = (
        recurrent * (tokens + sentences)
        + recurrent * tokens
        + 2 * HIDDEN_SIZE * vocab_size * tokens
        + 2 * 3 * HIDDEN_SIZE * LATENT_SIZE * sentences
    )
    return 3.0 * forward


class SentenceVAEBaseline(nn.Module):
    """timbmg/Sentence-VAE's `SentenceVAE` (GRU, one layer, unidirectional) without packing.

    As there, one embedding is shared by encoder and decoder, the encoder's final hidden state gives
    `mean` and `logv`, and `z` sets the decoder's initial hidden state. Without packing the encoder's
    final state is the one after the padding, and every padded position is decoded and projected.
    """

    def __init__(self, vocab_size: int, pad_token_id: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, EMBEDDING_SIZE)
        self.embedding_dropout = nn.Dropout(EMBEDDING_DROPOUT)
        self.encoder_rnn = nn.GRU(EMBEDDING_SIZE, HIDDEN_SIZE, batch_first=True)
        self.decoder_rnn = nn.GRU(EMBEDDING_SIZE, HIDDEN_SIZE, batch_first=True)
        self.hidden2mean = nn.Linear(HIDDEN_SIZE, LATENT_SIZE)
        self.hidden2logv = nn.Linear(HIDDEN_SIZE, LATENT_SIZE)
        self.latent2hidden = nn.Linear(LATENT_SIZE, HIDDEN_SIZE)
        self.outputs2vocab = nn.Linear(HIDDEN_SIZE, vocab_size)
        self.nll = nn.NLLLoss(ignore_index=pad_token_id, reduction="sum")

    def forward(self, input_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """(B, 60) inputs and targets -> scalar `(NLL + KL) / B`."""
        batch_size = input_ids.size(0)
        input_embedding = self.embedding(input_ids)  # (B, 60, E)
        _, hidden = self.encoder_rnn(input_embedding)  # (1, B, H)
        hidden = hidden.squeeze(0)
        mean, logv = self.hidden2mean(hidden), self.hidden2logv(hidden)  # (B, Z)
        z = torch.randn_like(mean) * torch.exp(0.5 * logv) + mean
        hidden = self.latent2hidden(z).unsqueeze(0)  # (1, B, H)
        outputs, _ = self.decoder_rnn(self.embedding_dropout(input_embedding), hidden)  # (B, 60, H)
        logp = nn.functional.log_softmax(self.outputs2vocab(outputs.reshape(-1, outputs.size(2))), dim=-1)
        nll = self.nll(logp, target_ids.reshape(-1))
        kl = -0.5 * torch.sum(1 + logv - mean.pow(2) - logv.exp())
        return (nll + kl) / batch_size


def load_ptb(data_dir: str):
    """PTB train as `[BOS] + words[:59] + [EOS]` ids (`PackedSequences`), the vocabulary size, the pad id."""
    from textvae.data.corpora import load_corpus
    from textvae.data.storage import TokenizedSplit
    from textvae.data.token_ids import tokenize_corpus
    from textvae.data.tokenization import train_word_tokenizer

    datasets.disable_progress_bars()
    corpus = load_corpus("ptb", data_dir=data_dir)
    tokenizer = train_word_tokenizer(corpus["train"]["text"])
    tokenized = tokenize_corpus(corpus, tokenizer, max_length=MAX_SEQUENCE_LENGTH - 1)
    split = TokenizedSplit.from_dataset(tokenized["train"])
    return split.input_ids, len(tokenizer), tokenizer.pad_token_id


def textvae_batches(sentences, pad_token_id: int, batch_size: int, seed: int) -> Iterator:
    """Endless length-bucketed batches, as textvae trains: yields (batch dict, predicted tokens, size)."""
    from textvae.data.bucketing import LengthBucketSampler
    from textvae.data.storage import TokenizedSplit, collate

    split = TokenizedSplit(input_ids=sentences)
    sampler = LengthBucketSampler(split.lengths, batch_size, seed=seed)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for indices in sampler:
            batch = collate(split, indices, pad_token_id)
            yield batch, int(batch["attention_mask"][:, 1:].sum()), len(indices)
        epoch += 1


def baseline_batches(sentences, pad_token_id: int, batch_size: int, seed: int) -> Iterator:
    """Endless random batches padded to 60, as Sentence-VAE trains: yields ((input, target), tokens, size)."""
    inputs = torch.full((len(sentences), MAX_SEQUENCE_LENGTH), pad_token_id, dtype=torch.long)
    targets = torch.full((len(sentences), MAX_SEQUENCE_LENGTH), pad_token_id, dtype=torch.long)
    for row, ids in enumerate(sentences):
        inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])  # BOS, words
        targets[row, : len(ids) - 1] = torch.tensor(ids[1:])  # words, EOS
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(sentences), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            target = targets[index]
            yield (inputs[index], target), int((target != pad_token_id).sum()), len(index)


def build_step(
    variant: str, vocab_size: int, pad_token_id: int, device: torch.device, fused_adam: bool = False
):
    """The model and a `step(batch) -> None` closure doing one training step of `variant`."""
    if variant == "textvae":
        from textvae import TextVAEConfig, TextVAEModel
        from textvae.training.config import TrainConfig
        from textvae.training.setup import make_optimizer

        config = TextVAEConfig(
            vocab_size=vocab_size,
            embedding_size=EMBEDDING_SIZE,
            hidden_size=HIDDEN_SIZE,
            latent_dim=LATENT_SIZE,
            encoder_type="gru",
            decoder_type="gru",
            decoder_input_dropout=EMBEDDING_DROPOUT,
            decoder_output_dropout=0.0,
            z_to_initial_state=True,
            z_to_inputs=False,
            # Sentence-VAE's model: no bidirectional encoder, bag-of-words loss or z-to-output.
            bidirectional_encoder=False,
            bag_of_words_loss=0.0,
            z_to_output=False,
            pad_token_id=pad_token_id,
        )
        model = TextVAEModel(config).to(device).train()
        # textvae's trainer builds its optimiser (fused Adam) the same way.
        optimizer = make_optimizer(TrainConfig(learning_rate=LEARNING_RATE), model)
    else:
        model = SentenceVAEBaseline(vocab_size, pad_token_id).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=fused_adam or None)

    def step(batch) -> None:
        if variant == "textvae":
            batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
            loss = model(**batch, kl_weight=1.0, return_logits=False).loss
        else:
            loss = model(*(tensor.to(device, non_blocking=True) for tensor in batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if variant == "textvae":
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()

    return model, step


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10


def worker(
    variant: str, args: argparse.Namespace, sentences, vocab_size: int, pad_token_id: int, conn
) -> None:
    """Train `variant` in this process, running as many steps as the parent asks each time."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model, step = build_step(variant, vocab_size, pad_token_id, device, args.fused_adam)
    make_batches = textvae_batches if variant == "textvae" else baseline_batches
    batches = make_batches(sentences, pad_token_id, args.batch_size, args.seed)
    setup_rss = peak_rss_mib()
    for _ in range(args.warmup_steps):
        step(next(batches)[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    conn.send("ready")
    while (steps := conn.recv()) is not None:
        tokens = sentences = 0
        start = time.perf_counter()
        for _ in range(steps):
            batch, count, size = next(batches)
            step(batch)
            tokens += count
            sentences += size
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        conn.send((time.perf_counter() - start, tokens, sentences))
    report = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "setup_rss_mib": setup_rss,
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        report["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    conn.send(report)


class MatmulTimer:
    """Matrix products on `device` with this process's threads: FLOPs and seconds, in turns.

    dtype: the products' precision (fp32 here; scripts/bench_gpu.py also times bf16); square_size: the
    side of the square products that measure the peak (1024 saturates a CPU, a GPU needs ~8192).
    """

    def __init__(
        self,
        device: torch.device,
        projection_rows: int,
        vocab_size: int,
        dtype: torch.dtype = torch.float32,
        square_size: int = SQUARE_SIZE,
        warmup_seconds: float = 0.2,
    ):
        generator = torch.Generator().manual_seed(0)

        def matrix(rows: int, columns: int) -> torch.Tensor:
            return torch.randn(rows, columns, generator=generator).to(device, dtype)

        square = [matrix(square_size, square_size) for _ in range(2)]
        features = matrix(projection_rows, HIDDEN_SIZE)
        weight = matrix(vocab_size, HIDDEN_SIZE)
        bias = torch.zeros(vocab_size, device=device, dtype=dtype)
        self.device = device
        self.shapes = {
            "square": (lambda: torch.mm(*square), 2.0 * square_size**3),
            # The projection as textvae's loss computes it: addmm of (N, H) by (H, V), plus the bias.
            "projection": (
                lambda: torch.addmm(bias, features, weight.t()),
                2.0 * projection_rows * HIDDEN_SIZE * vocab_size,
            ),
        }
        self.totals = {name: [0.0, 0.0] for name in self.shapes}  # seconds, FLOPs
        for name in self.shapes:
            self.time(name, warmup_seconds)  # warm-up: thread pool, caches, lazy initialisation (cuBLAS)
        self.totals = {name: [0.0, 0.0] for name in self.shapes}  # the warm-up is not part of the figures

    def time(self, name: str, seconds: float) -> None:
        """Run `name` products for about `seconds` and add them to its totals."""
        product, flops = self.shapes[name]
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(4):
                product()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            count += 4
        elapsed = time.perf_counter() - start
        self.totals[name][0] += elapsed
        self.totals[name][1] += count * flops

    def flops_per_second(self, name: str) -> float:
        seconds, flops = self.totals[name]
        return flops / seconds


def run(args: argparse.Namespace) -> dict:
    """Start one process per variant and let them take turns; returns the measurements."""
    sentences, vocab_size, pad_token_id = load_ptb(args.data_dir)
    context = multiprocessing.get_context("spawn")  # a fresh process: its own threads and peak RSS
    conns, processes = {}, {}
    for variant in VARIANTS:
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=worker, args=(variant, args, sentences, vocab_size, pad_token_id, child_end)
        )
        process.start()
        conns[variant], processes[variant] = parent_end, process
    for variant in VARIANTS:
        assert conns[variant].recv() == "ready"
    # The matrix products run here, between the turns, with the workers' thread count and device.
    torch.set_num_threads(args.threads)
    mean_tokens = float((sentences.lengths - 1).mean()) * args.batch_size
    matmul = MatmulTimer(torch.device(args.device), round(mean_tokens), vocab_size)
    totals = {variant: [0.0, 0, 0] for variant in VARIANTS}
    done = 0
    while done < args.steps:
        steps = min(args.chunk_steps, args.steps - done)
        # Turns alternate (and so does who goes first) so that slow spells hit both variants alike.
        order = VARIANTS if (done // args.chunk_steps) % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            conns[variant].send(steps)
            seconds, tokens, count = conns[variant].recv()
            totals[variant][0] += seconds
            totals[variant][1] += tokens
            totals[variant][2] += count
        for name in matmul.shapes:
            matmul.time(name, args.matmul_seconds)
        done += steps
    results = {}
    for variant in VARIANTS:
        conns[variant].send(None)
        report = conns[variant].recv()
        processes[variant].join()
        seconds, tokens, count = totals[variant]
        flops_per_second = model_flops(tokens, count, vocab_size) / seconds
        results[variant] = {
            "tokens_per_second": tokens / seconds,
            "seconds": seconds,
            "tokens": tokens,
            "sentences": count,
            "steps": args.steps,
            "model_flops_per_token": model_flops(tokens, count, vocab_size) / tokens,
            "model_flops_per_second": flops_per_second,
            "mfu": flops_per_second / matmul.flops_per_second("square"),
            **report,
        }
    return {
        "vocab_size": vocab_size,
        "results": results,
        "speedup": results["textvae"]["tokens_per_second"] / results["baseline"]["tokens_per_second"],
        "matmul_flops_per_second": {name: matmul.flops_per_second(name) for name in matmul.shapes},
        "projection_rows": round(mean_tokens),
        "settings": {**vars(args), "torch": torch.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("TEXTVAE_DATA", "../shared/data"))
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--chunk-steps", type=int, default=20, help="steps per turn when alternating")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fused-adam",
        action="store_true",
        help="fused Adam for the baseline too (textvae's trainer always fuses)",
    )
    parser.add_argument(
        "--matmul-seconds", type=float, default=0.5, help="seconds of each matrix product per turn"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements to this JSON file")
    args = parser.parse_args()
    measurements = run(args)
    print(
        f"PTB, vocabulary {measurements['vocab_size']}, batch {args.batch_size}, device {args.device}, "
        f"{args.threads} threads, {args.steps} timed steps each"
    )
    peaks = measurements["matmul_flops_per_second"]
    print(
        f"fp32 matrix products: {SQUARE_SIZE} x {SQUARE_SIZE} squares {peaks['square'] / 1e9:.1f} GFLOP/s (the "
        f"peak); projection {measurements['projection_rows']} x {HIDDEN_SIZE} x {measurements['vocab_size']} "
        f"{peaks['projection'] / 1e9:.1f} GFLOP/s"
    )
    for variant, result in measurements["results"].items():
        line = (
            f"{variant:>8}: {result['tokens_per_second']:8.0f} real tokens/s, "
            f"{result['model_flops_per_token'] / 1e6:.1f} MFLOP/token, "
            f"{result['model_flops_per_second'] / 1e9:.1f} model GFLOP/s, MFU {result['mfu']:.0%}, "
            f"{result['parameters'] / 1e6:.1f}M parameters, "
            f"peak RSS {result['peak_rss_mib']:6.0f} MiB (after setup {result['setup_rss_mib']:.0f} MiB)"
        )
        if "cuda_max_allocated_mib" in result:
            line += f", CUDA max allocated {result['cuda_max_allocated_mib']:.0f} MiB"
        print(line)
    print(f"textvae / baseline: {measurements['speedup']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(measurements, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
