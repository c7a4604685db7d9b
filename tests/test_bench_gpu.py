"""scripts/bench_gpu.py, the one script of the GPU figures: its FLOP count, and every part run with --quick on
a tiny stand-in corpus named ptb (on the CPU here; on CUDA in the `gpu`-marked test)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .helpers import TINY_TRANSFORMER, tiny_model, write_tiny_ptb

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FIGURES = {
    (figure, precision)
    for precision in ("fp32", "bf16")
    for figure in (
        "epoch_seconds",
        "evaluation_seconds",
        "sampling_sentences_per_second",
        "greedy_sentences_per_second",
    )
} | {("abs_nll_difference", "bf16")}


@pytest.fixture(scope="module")
def scripts():
    """The bench_gpu and bench_train_speed modules (scripts/ is no package: bench_gpu imports its neighbour)."""
    modules = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPTS))
        for name in ("bench_train_speed", "bench_gpu"):
            spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
    return modules


@pytest.fixture
def tiny_ptb(tmp_path):
    return write_tiny_ptb(tmp_path, train=40, valid=10)


def test_model_flops_equal_bench_train_speed_on_its_sentence_vae(scripts):
    speed = scripts["bench_train_speed"]
    model, _ = speed.build_step("textvae", 50, 0, torch.device("cpu"))
    assert scripts["bench_gpu"].model_flops(model, 100, 7) == speed.model_flops(100, 7, 50)


def test_model_flops_count_a_tied_output_and_z_at_every_input(scripts):
    model = tiny_model(  # row 6's kind of model: one-way encoder, no bag-of-words MLP, no z -> output
        embedding_size=4, hidden_size=8, encoder_hidden_size=5, latent_dim=3, tie_embeddings=True,
        bidirectional_encoder=False, bag_of_words_loss=0.0, z_to_output=False,
    )  # fmt: skip
    tokens, sentences = 30, 4
    encoder = 4 * 5 * (4 + 5)  # LSTM gates over [embedding, hidden], once a position read: tokens + sentences
    decoder = 4 * 8 * (4 + 3 + 8)  # input [embedding, z], once an input position: tokens
    output = 8 * 4 + 20 * 4  # hidden -> embedding, then the tied embedding: once a target token
    once = 5 * 2 * 3 + 3 * 8  # the posterior and z -> initial state, once a sentence
    forward = encoder * (tokens + sentences) + (decoder + output) * tokens + once * sentences
    assert scripts["bench_gpu"].model_flops(model, tokens, sentences) == 3 * 2 * forward
    transformer = tiny_model(decoder_type="transformer", **TINY_TRANSFORMER)
    with pytest.raises(ValueError, match="decoder 'transformer'"):
        scripts["bench_gpu"].model_flops(transformer, tokens, sentences)


def check_measurements(measurements: dict, precisions_ran_as: str) -> None:
    """Every figure is there, finite and positive, and the derived ones follow from the measured ones."""
    assert not any("FAILED" in note for note in measurements["notes"]), measurements["notes"]
    for precision in ("fp32", "bf16"):
        training = measurements["training"][precision]
        evaluation = measurements["evaluation"][precision]
        for key in ("tokens_per_second", "epoch_seconds", "epoch_seconds_from_tokens_per_second", "mfu"):
            assert math.isfinite(training[key]) and training[key] > 0, (precision, key)
        assert training["model_flops_per_token"] > 1e6  # row 6: ~3 MFLOP a token even at a tiny vocabulary
        full = measurements["ptb_train"]["target_tokens_full_split"]
        assert training["epoch_seconds"] == pytest.approx(
            training["epoch_measured_seconds"] * full / training["epoch_tokens"]
        )
        valid = measurements["ptb_valid"]["target_tokens"]
        assert evaluation["full_split_seconds"] == pytest.approx(
            evaluation["seconds"] * valid / evaluation["tokens"]
        )
        assert math.isfinite(evaluation["nll"]) and evaluation["nll"] > 0
        assert evaluation["results"]["iw_samples"] == 4
        for strategy in ("sample", "greedy"):
            sampling = measurements["sampling"][precision][strategy]
            assert sampling["sentences_per_second"] > 0 and sampling["sentences"] == 8
        expected = "fp32" if precision == "fp32" else precisions_ran_as
        assert training["ran_as"] == evaluation["ran_as"] == sampling["ran_as"] == expected
    difference = measurements["nll_difference"]
    evaluation = measurements["evaluation"]
    assert difference == pytest.approx(evaluation["bf16"]["nll"] - evaluation["fp32"]["nll"])
    assert {(target["figure"], target["precision"]) for target in measurements["targets"]} == FIGURES
    for target in measurements["targets"]:
        assert math.isfinite(target["value"]) and isinstance(target["met"], bool)


def test_quick_run_on_the_cpu_writes_every_figure(scripts, tiny_ptb, tmp_path, capsys):
    output = tmp_path / "bench.json"
    args = ["--device", "cpu", "--quick", "--data-dir", tiny_ptb, "--json", output, "--train-limit", "16"]
    scripts["bench_gpu"].main([str(arg) for arg in [*args, "--limit", "4"]])
    measurements = json.loads(output.read_text())
    check_measurements(measurements, precisions_ran_as="fp32")
    # The CPU runs bf16 as fp32 (CPU autocast cannot run nn.LSTM): the same computation, the same NLL.
    assert measurements["nll_difference"] == 0.0
    training = measurements["training"]["fp32"]
    assert (
        training["epoch_steps"] == 1
        and training["epoch_tokens"] < measurements["ptb_train"]["target_tokens_full_split"]
    )  # the timed epoch read the 16 sentences of --train-limit
    assert measurements["evaluation"]["fp32"]["sentences"] == 4
    printed = capsys.readouterr().out
    assert "met (fp32 / bf16)" in printed and "note: bf16 ran as fp32" in printed


def test_a_trained_run_is_evaluated_with_its_own_weights(scripts, tiny_ptb, tmp_path, trained_run):
    from textvae.evaluation.run import evaluate_run

    output = tmp_path / "bench.json"
    args = ["--device", "cpu", "--quick", "--data-dir", tiny_ptb, "--json", output, "--model", trained_run]
    scripts["bench_gpu"].main([str(arg) for arg in args])
    measurements = json.loads(output.read_text())
    assert measurements["model"] == str(trained_run)
    # Training timed copies of the run's weights; the evaluation read the weights as saved.
    options = dict(iw_samples=4, max_length=8, num_diversity_samples=2, interpolation_pairs=1)
    expected = evaluate_run(trained_run, "ptb", str(tiny_ptb), limit=8, device="cpu", save=False, **options)
    assert measurements["evaluation"]["fp32"]["nll"] == pytest.approx(expected["nll"])


def test_a_failing_part_is_reported_and_the_others_still_run(
    scripts, tiny_ptb, tmp_path, monkeypatch, capsys
):
    bench = scripts["bench_gpu"]
    evaluate_one = bench.time_evaluation

    def bf16_kernel_missing(model, tokenizer, split, full_split, precision, *rest):
        if precision == "bf16":
            raise RuntimeError("\"_thnn_fused_lstm_cell_cuda\" not implemented for 'BFloat16'\nmore lines")
        return evaluate_one(model, tokenizer, split, full_split, precision, *rest)

    monkeypatch.setattr(bench, "time_evaluation", bf16_kernel_missing)
    output = tmp_path / "bench.json"
    bench.main(["--device", "cpu", "--quick", "--data-dir", str(tiny_ptb), "--json", str(output)])
    measurements = json.loads(output.read_text())
    error = "RuntimeError: \"_thnn_fused_lstm_cell_cuda\" not implemented for 'BFloat16'"
    assert measurements["evaluation"]["bf16"] == {"error": error}
    assert measurements["evaluation"]["fp32"]["nll"] > 0 and measurements["nll_difference"] is None
    assert measurements["sampling"]["bf16"]["sample"]["sentences_per_second"] > 0  # the parts after it ran
    targets = {(target["figure"], target["precision"]): target for target in measurements["targets"]}
    for figure in ("evaluation_seconds", "abs_nll_difference"):
        assert targets[(figure, "bf16")]["value"] is None and targets[(figure, "bf16")]["met"] is False
    assert targets[("evaluation_seconds", "fp32")]["value"] > 0
    printed = capsys.readouterr().out
    assert f"note: bf16 evaluation FAILED: {error}" in printed and "failed" in printed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_quick_run_on_cuda_runs_bf16_where_asked(tiny_ptb, tmp_path):
    output = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPTS / "bench_gpu.py"), "--device", "cuda", "--quick"]
    subprocess.run([*command, "--data-dir", str(tiny_ptb), "--json", str(output)], check=True)
    measurements = json.loads(output.read_text())
    check_measurements(measurements, precisions_ran_as="bf16")
    assert abs(measurements["nll_difference"]) <= 0.1  # the target, on a tiny model
