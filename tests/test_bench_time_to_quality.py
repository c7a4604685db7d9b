"""scripts/bench_time_to_quality.py end to end with tiny budgets, and its time-to-target arithmetic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from .helpers import make_sentences, write_tiny_ptb

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_time_to_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_time_to_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_a_target_is_interpolated_between_evaluations(bench):
    points = [{"seconds": 10.0, "neg_elbo": 100.0}, {"seconds": 20.0, "neg_elbo": 80.0}]
    assert bench.time_to(points, 90.0) == pytest.approx(15.0)
    assert bench.time_to(points, 100.0) == 10.0
    assert bench.time_to(points, 70.0) is None
    assert bench.elbo_at(points, 15.0) == pytest.approx(90.0) and bench.elbo_at(points, 99.0) == 80.0


def test_quick_run_measures_both_layers_on_both_corpora(bench, tmp_path, monkeypatch, capsys):
    data = write_tiny_ptb(tmp_path, train=40, valid=10)
    yelp = data / "yelp_short"
    yelp.mkdir()
    for name, seed in (("train", 3), ("extra", 4), ("valid", 5)):
        (yelp / f"{name}.txt").write_text("\n".join(make_sentences(30, seed=seed)) + "\n")
    output = tmp_path / "ttq.json"
    argv = ["bench", "--quick", "--threads", "1", "--data-dir", str(data), "--json", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    report = json.loads(output.read_text())
    assert set(report["corpora"]) == {"ptb", "yelp"} and report["peak_flops_per_second"] > 0
    for result in report["corpora"].values():
        full, adaptive = result["runs"]
        assert (full["output_layer"], adaptive["output_layer"]) == ("full", "adaptive")
        assert full["steps"] >= 1 and adaptive["nll_step"] == full["steps"] and full["evaluations"]
        assert adaptive["model_flops_per_token"] > 0 and adaptive["cutoffs"] and full["cutoffs"] is None
        assert 0 < full["mfu"] < 1.5 and adaptive["valid_nll"] is not None  # scored at the full layer's step
        assert result["comparison"]["target_neg_elbo"] == full["evaluations"][-1]["neg_elbo"]
    out = capsys.readouterr().out
    assert "| ptb | adaptive |" in out and "less time to -ELBO" in out
