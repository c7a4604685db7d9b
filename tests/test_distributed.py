"""Distributed data parallel: sharding, seeds, the global-batch loss, and torchrun runs equal to one process.

The end-to-end tests start 2 gloo processes on the CPU with `python -m torch.distributed.run`: the CLI
for an uninterrupted run, and `tests/distributed_worker.py` for the resumes and the evaluation (one launch:
starting torch is most of the cost). Each is compared with the same work in this one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from textvae.checkpointing import checkpoint_folders
from textvae.cli import main as cli_main
from textvae.distributed import (
    barrier,
    derived_seed,
    differentiable_all_reduce_sum,
    gather_objects,
    process_device,
    setup_process_group,
    shard_bounds,
    shared_errors,
)
from textvae.evaluation.run import evaluate_run
from textvae.models.modeling import FixedScaleBatchNorm, free_bits_kl
from textvae.training.config import TrainConfig
from textvae.training.run import train
from textvae.training.setup import build_model, prepare_run_data
from textvae.training.trainer import Trainer

from .helpers import NO_DROPOUT, QUIET_TRAIN, make_sentences, random_batch, tiny_model

ROOT = Path(__file__).resolve().parents[1]
# BN-VAE (batch statistics), free bits (a clamp of the batch-mean KL), word dropout and the KL controller
# (fed the batch KL) all see the global batch; 96 training sentences in global batches of 10: shards of
# 5 / 5, and 3 / 3 in the ragged last batch; 24 validation sentences in 3 batches, shared unevenly.
CONFIG = dict(
    epochs=3,
    batch_size=10,
    validation_fraction=0.2,
    log_steps=1,
    save_minutes=0,
    word_dropout=0.3,
    free_bits=0.3,
    target_kl=3.0,
    kl_controller_kp=0.5,
    kl_controller_ki=0.05,
    seed=3,
    # No dropout: dropout masks cannot match across different padded shapes.
    model=dict(embedding_size=16, hidden_size=16, latent_dim=4, posterior_mean_batchnorm=0.6, **NO_DROPOUT),
    **QUIET_TRAIN,
)
MAX_STEPS, STOP_STEPS = 14, 5  # past the first epoch's 10 steps: its validation, best model and checkpoint
# 95 + 1 sentences a epoch: the second global batch leaves one process without a sentence.
CONFIG2 = {**CONFIG, "batch_size": 95, "epochs": 2, "target_kl": None, "model": dict(CONFIG["model"])}
CONFIG2["model"]["posterior_mean_batchnorm"] = 0.0
# The adaptive softmax (Grave et al. 2017) trains alike in one process and in two, whose shards score
# different rows of each cluster (tests/test_adaptive_softmax.py checks the zero gradient that DDP needs of
# a cluster a shard does not meet).
CONFIG2["model"]["output_layer"] = "adaptive"
# Fewer encoder updates than a block of 15: no loss comparison that rounding could tip either way.
AGGRESSIVE = dict(aggressive_encoder=True, aggressive_max_steps=4)
EVALUATE = dict(iw_samples=10, batch_size=8, num_diversity_samples=4, interpolation_pairs=2, max_length=12)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def largest_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max(float((first[key] - second[key]).abs().max()) for key in first)


def figures(run: Path) -> list[dict]:
    """The validation history without wall-clock seconds."""
    return [
        {k: v for k, v in r.items() if k != "seconds"} for r in json.loads((run / "history.json").read_text())
    ]


def assert_records_close(first: list[dict], second: list[dict], tolerance: float = 1e-5) -> None:
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert one.keys() == other.keys()
        for key, value in one.items():
            if isinstance(value, (float, list)):
                assert other[key] == pytest.approx(value, rel=tolerance, abs=tolerance), key
            else:
                assert other[key] == value, key


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def torchrun(*arguments: str, processes: int = 2) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    command += ["--master_port", str(free_port()), *arguments]
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-20000:]
    return done


# ---------------------------------------------------------------- pieces, in one process


@pytest.mark.parametrize("count, shards", [(10, 2), (9, 2), (7, 3), (1, 2), (2, 4), (15, 4)])
def test_shards_are_contiguous_near_equal_and_cover_the_batch(count, shards):
    bounds = [shard_bounds(count, shard, shards) for shard in range(shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(stop == next_start for (_, stop), (next_start, _) in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_a_bad_shard_is_named():
    with pytest.raises(ValueError, match="shard must be in"):
        shard_bounds(4, 2, 2)


def test_derived_seeds_are_fixed_distinct_and_in_range():
    seeds = {derived_seed(3, step) for step in range(1000)}
    assert len(seeds) == 1000 and all(0 <= seed < 2**63 for seed in seeds)
    assert derived_seed(3, 7) == derived_seed(3, 7) != derived_seed(7, 3)
    assert derived_seed(-1, 0) != derived_seed(1, 0)


def test_one_process_needs_no_process_group():
    assert setup_process_group("cpu") == torch.device("cpu")
    tensor = torch.ones(3, requires_grad=True)
    assert differentiable_all_reduce_sum(tensor) is tensor
    assert gather_objects("x") == ["x"]
    barrier()
    with pytest.raises(ValueError, match="mine"), shared_errors():
        raise ValueError("mine")


def test_under_torchrun_a_named_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="each process takes the GPU of its local rank"):
            process_device("cuda:0")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            process_device("cuda")


def test_free_bits_floor_each_dimension_of_the_batch_mean():
    mean = torch.tensor([0.1, 0.5, 2.0], requires_grad=True)
    term = free_bits_kl(mean, 0.25)
    term.backward()
    assert float(term.detach()) == pytest.approx(0.25 + 0.5 + 2.0)
    assert mean.grad.tolist() == [0.0, 1.0, 1.0]  # below the floor: no gradient
    assert float(free_bits_kl(mean.detach(), 0.0)) == pytest.approx(2.6)


def test_given_draws_decide_z_and_word_dropout():
    model = tiny_model(seed=1).train()
    input_ids, attention_mask = random_batch(3, length=7)
    eps = torch.randn(3, 4)
    output = model(input_ids, attention_mask, eps=eps)
    torch.testing.assert_close(output.z, output.mu + torch.exp(0.5 * output.logvar) * eps)
    keep = model(input_ids, attention_mask, z=output.z, word_dropout=0.5, word_dropout_draws=torch.ones(3, 9))
    plain = model(input_ids, attention_mask, z=output.z)
    torch.testing.assert_close(keep.rec_loss, plain.rec_loss)  # draws of 1 drop nothing
    dropped = model(
        input_ids, attention_mask, z=output.z, word_dropout=0.5, word_dropout_draws=torch.zeros(3, 9)
    )
    assert not torch.allclose(dropped.rec_loss, plain.rec_loss)  # draws of 0 drop every word


def test_global_batch_norm_equals_batch_norm_for_one_process():
    """The synchronised statistics (sums over the processes) give BatchNorm1d's output, gradient and
    running statistics when the global batch is one process's."""
    torch.manual_seed(0)
    plain, synchronised = FixedScaleBatchNorm(4, 0.6), FixedScaleBatchNorm(4, 0.6)
    synchronised.synchronize = True
    for step in range(3):
        mu = (torch.randn(5, 4) * 3 + step).requires_grad_()
        twin = mu.detach().clone().requires_grad_()
        weights = torch.randn(5, 4)
        (plain(mu) * weights).sum().backward()
        (synchronised(twin) * weights).sum().backward()
        torch.testing.assert_close(synchronised(twin), plain(mu))
        torch.testing.assert_close(twin.grad, mu.grad)
    for name, buffer in plain.norm.named_buffers():
        torch.testing.assert_close(getattr(synchronised.norm, name), buffer)


def test_batch_norm_leaves_the_bias_of_mu_without_gradient():
    """BN removes any shift of mu: its bias would only get rounding noise, which Adam scales up."""
    model = tiny_model(seed=2, posterior_mean_batchnorm=0.6).train()
    input_ids, attention_mask = random_batch(4)
    model(input_ids, attention_mask).loss.backward()
    assert float(model.posterior.bias.grad[:4].abs().max()) == 0.0
    assert float(model.posterior.bias.grad[4:].abs().max()) > 0.0  # logvar's bias learns


@pytest.mark.parametrize("batch_norm", [0.0, 0.6])
def test_one_process_global_batch_loss_is_the_models_loss(tmp_path, corpus_file, batch_norm):
    """The trainer's loss and gradient for one process are those of the model's own batch-mean loss."""
    model_options = {**CONFIG["model"], "posterior_mean_batchnorm": batch_norm}
    config = TrainConfig.from_dict({"data": str(corpus_file), **CONFIG, "model": model_options})
    data = prepare_run_data(config)
    torch.manual_seed(0)
    trainer = Trainer(config, tmp_path, build_model(config, data.tokenizer), data)
    batch = trainer.step.shard_batch(trainer.data.train, list(range(7)), step=0)
    trainer.model.train()
    torch.manual_seed(1)
    output = trainer.model(**batch, kl_weight=0.7, free_bits=0.3, word_dropout=0.3, return_logits=False)
    objective, metrics = trainer.step.global_batch_loss(output, 0.7, 0.3)
    assert metrics["loss"] == pytest.approx(float(output.loss.detach()), rel=1e-6)
    assert metrics["kl"] == pytest.approx(float(output.kl.detach().mean()), rel=1e-6)
    ours = torch.autograd.grad(objective, list(trainer.model.parameters()), retain_graph=True)
    theirs = torch.autograd.grad(output.loss, list(trainer.model.parameters()))
    for one, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-7)


def test_a_global_batch_smaller_than_the_processes_is_refused(tmp_path, corpus_file, monkeypatch):
    config = TrainConfig.from_dict({"data": str(corpus_file), **CONFIG, "batch_size": 1})
    data = prepare_run_data(config)
    monkeypatch.setattr("textvae.distributed.world_size", lambda: 2)
    with pytest.raises(ValueError, match="batch_size 1 is the global batch, shared by 2 processes"):
        Trainer(config, tmp_path, build_model(config, data.tokenizer), data)


def test_only_the_main_process_prints_errors(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert cli_main(["train", "--epochs", "0"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["train", "--no-such-option"])
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert cli_main(["train", "--epochs", "0"]) == 2
    assert "epochs must be positive" in capsys.readouterr().err


# ---------------------------------------------------------------- 2 gloo processes against 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The distributed runs (2 processes, one launch) and the same work in this process."""
    folder = tmp_path_factory.mktemp("distributed")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(120, seed=4)) + "\n", encoding="utf-8")
    config = TrainConfig.from_dict({"data": str(corpus), **CONFIG})
    config2 = TrainConfig.from_dict({"data": str(corpus), **CONFIG2})
    one = train(TrainConfig(**{**config.to_dict(), "max_steps": MAX_STEPS}), output_dir=folder / "one")
    one2 = train(config2, output_dir=folder / "one2")
    single = train(TrainConfig(**{**config2.to_dict(), "max_steps": 1}), output_dir=folder / "single")
    streamed = {**config.to_dict(), "max_steps": MAX_STEPS}
    streamed["data"] = {**streamed["data"], "streaming": True}
    one_streaming = train(TrainConfig(**streamed), output_dir=folder / "one_streaming")
    aggressive = {**config.to_dict(), "max_steps": MAX_STEPS, **AGGRESSIVE}
    one_aggressive = train(TrainConfig(**aggressive), output_dir=folder / "one_aggressive")
    spec = {
        "config": config.to_dict(),
        "whole": str(folder / "two"),
        "stopped": str(folder / "two_stopped"),
        "stopped_copy": str(folder / "two_stopped_copy"),
        "stop_steps": STOP_STEPS,
        "max_steps": MAX_STEPS,
        "resume_single": str(single),
        "corpus": str(corpus),
        "evaluate": EVALUATE,
        "streaming": str(folder / "two_streaming"),
        "aggressive": str(folder / "two_aggressive"),
        "aggressive_options": AGGRESSIVE,
        "timeboxed": str(folder / "two_timeboxed"),
        "max_minutes": 0.0002,  # 12 ms: out of time after the first step
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    torchrun("tests/distributed_worker.py", str(folder / "spec.json"))
    return {
        "folder": folder,
        "corpus": corpus,
        "one": one,
        "one2": one2,
        "one_streaming": one_streaming,
        "one_aggressive": one_aggressive,
        **spec,
    }


def test_two_processes_train_the_weights_of_one(runs):
    one, two = runs["one"], Path(runs["whole"])
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(one / step), weights(two / step)) < 1e-5
    assert largest_difference(weights(one), weights(two)) < 1e-5  # the best model, from epoch 1
    assert_records_close(figures(one), figures(two))  # validation figures, sharded then reduced
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, MAX_STEPS + 1))  # written once, by rank 0
    expected = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert_records_close(  # the logged loss, KL and controller weights are the global batch's
        [{k: v for k, v in r.items() if k != "seconds"} for r in expected],
        [{k: v for k, v in r.items() if k != "seconds"} for r in records],
    )


def test_the_main_process_clock_stops_every_process_of_a_time_boxed_run_at_the_same_step(runs):
    # The second process's clock never moved: had it decided for itself, it would have waited for the
    # first in the next step's gradient all-reduce, and the launch would not have ended.
    run = Path(runs["timeboxed"])
    state = json.loads((checkpoint_folders(run)[-1] / "trainer_state.json").read_text())
    assert 1 <= state["step"] < 10 and not state["finished"]


def test_two_processes_train_the_weights_of_one_with_aggressive_encoder_updates(runs):
    """Each encoder-only update shares its random global batch out as the step does (He et al. 2019)."""
    one, two = runs["one_aggressive"], Path(runs["aggressive"])
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(one / step), weights(two / step)) < 1e-5
    assert_records_close(figures(one), figures(two))  # the validation MI among them
    assert "mi" in figures(two)[0]
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert {r["aggressive_steps"] for r in records if r["split"] == "train" and r["epoch"] == 1} == {4}


def test_two_processes_reading_one_stream_train_the_weights_of_one(runs):
    """With --streaming every process reads the same stream and takes its share of each global batch."""
    one, two = runs["one_streaming"], Path(runs["streaming"])
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(one / step), weights(two / step)) < 1e-5
    assert_records_close(figures(one), figures(two))
    state = json.loads((two / step / "trainer_state.json").read_text())
    assert state["epoch"] == 1 and state["stream_position"] == [0, MAX_STEPS - 10]  # one pool of 10 batches


@pytest.mark.slow  # a second launch of 2 processes: ~30 s here
def test_textvae_train_under_torchrun_trains_the_weights_of_one_process(runs):
    model_flags = ["--embedding-size", "16", "--hidden-size", "16", "--latent-dim", "4"]
    model_flags += ["--posterior-mean-batchnorm", "0.6", "--decoder-input-dropout", "0"]
    model_flags += ["--decoder-output-dropout", "0"]
    skip = ("model", "progress", "plot_each_epoch", "fit_prior")
    options = [f"--{key.replace('_', '-')}={value}" for key, value in CONFIG.items() if key not in skip]
    output = runs["folder"] / "cli"
    done = torchrun(
        "-m", "textvae.cli", "train", "--data", str(runs["corpus"]), "--output-dir", str(output),
        "--max-steps", str(MAX_STEPS), *options, "--no-progress", "--no-plot-each-epoch", "--no-fit-prior",
        *model_flags,
    )  # fmt: skip
    assert done.stdout.count("model saved in") == 1  # printed by the main process only
    assert done.stderr.count("epoch 1: valid") == 1  # logged by the main process only
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(runs["one"] / step), weights(output / step)) < 1e-5


def test_a_distributed_resume_equals_the_uninterrupted_distributed_run(runs):
    resumed, whole = Path(runs["stopped"]), Path(runs["whole"])
    assert [folder.name for folder in checkpoint_folders(Path(runs["stopped_copy"]))] == [
        f"checkpoint-{STOP_STEPS}"
    ]
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(whole / step), weights(resumed / step)) == 0.0
    assert figures(resumed) == figures(whole)


def test_a_checkpoint_of_two_processes_resumes_in_one(runs):
    resumed = train(None, resume=runs["stopped_copy"], overrides={"max_steps": MAX_STEPS})
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(runs["one"] / step), weights(resumed / step)) < 1e-5
    assert_records_close(figures(runs["one"]), figures(resumed))


def test_a_checkpoint_of_one_process_resumes_in_two_even_with_an_empty_shard(runs):
    """The second global batch of each epoch holds one sentence: the second process computes a row of
    weight 0, and the weights still follow one process's."""
    resumed, whole = Path(runs["resume_single"]), runs["one2"]
    last = checkpoint_folders(whole)[-1].name
    assert checkpoint_folders(resumed)[-1].name == last == "checkpoint-4"
    assert largest_difference(weights(whole / last), weights(resumed / last)) < 1e-5
    assert_records_close(figures(whole), figures(resumed))


def test_two_processes_evaluate_the_figures_of_one(runs):
    saved = Path(runs["stopped"]) / "eval-file-corpus-k10.json"
    two = json.loads(saved.read_text())
    one = evaluate_run(runs["stopped"], data=str(runs["corpus"]), save=False, device="cpu", **EVALUATE)
    assert two.keys() == one.keys()
    for key, value in one.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        elif isinstance(value, list):
            assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert two[key] == value, key
    assert one["au"] is not None and one["mi"] is not None and one["recon_bleu"] is not None


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a CUDA device")
def test_nccl_processes_train_the_weights_of_one_gpu(tmp_path):
    """NCCL, one GPU per local rank, bf16 off so that the figures compare: as many processes as GPUs
    (one GPU still runs the NCCL group, DDP and the reductions) against one process without a group."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(make_sentences(120, seed=4)) + "\n", encoding="utf-8")
    options = {**CONFIG, "device": "cuda", "bf16": False}
    one = train(
        TrainConfig.from_dict({"data": str(corpus), "max_steps": MAX_STEPS, **options}),
        output_dir=tmp_path / "one",
    )
    spec = {
        "config": TrainConfig.from_dict({"data": str(corpus), **options}).to_dict(),
        "whole": str(tmp_path / "two_whole"),
        "stopped": str(tmp_path / "two"),
        "stopped_copy": str(tmp_path / "two_copy"),
        "stop_steps": STOP_STEPS,
        "max_steps": MAX_STEPS,
        "resume_single": str(
            train(
                TrainConfig.from_dict({"data": str(corpus), "max_steps": 1, **options}),
                output_dir=tmp_path / "s",
            )
        ),
        "corpus": str(corpus),
        "evaluate": {**EVALUATE, "device": "cuda"},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    torchrun("tests/distributed_worker.py", str(tmp_path / "spec.json"), processes=torch.cuda.device_count())
    step = f"checkpoint-{MAX_STEPS}"
    assert largest_difference(weights(one / step), weights(tmp_path / "two" / step)) < 1e-4
    two = json.loads((tmp_path / "two" / "eval-file-corpus-k10.json").read_text())
    evaluated = evaluate_run(tmp_path / "two", data=str(corpus), save=False, **{**EVALUATE, "device": "cuda"})
    assert two["nll"] == pytest.approx(evaluated["nll"], rel=1e-6)
