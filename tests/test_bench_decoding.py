"""scripts/bench_decoding.py: the decoding table of a trained run, and one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import make_sentences

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_decoding.py"


def bench(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_prints_and_saves_the_figures_of_each_setting(trained_run, tmp_path):
    held_out = tmp_path / "valid.txt"
    held_out.write_text("\n".join(make_sentences(12, seed=7)) + "\n", encoding="utf-8")
    out = tmp_path / "figures.json"
    done = bench(trained_run, "--file", held_out, "--sentences", 6, "--pairs", 2, "--steps", 3,
                 "--settings", "greedy,beam-5 no-repeat-3", "--json", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("6 sentences of " + str(held_out) + ", 2 paths of 3 steps")
    figures = json.loads(out.read_text())["figures"]
    assert list(figures) == ["greedy", "beam-5 no-repeat-3"]
    for name, row in figures.items():
        assert 0 <= row["recon_bleu"] <= 100 and 0 <= row["interp_monotonicity"] <= 1
        assert 1 / 3 <= row["interp_distinct"] <= 1 and row["seconds_per_sentence"] > 0
        assert any(line.startswith(name) for line in lines)
    assert figures["beam-5 no-repeat-3"]["repeated_trigram_share"] == 0.0  # no 3-gram can repeat


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}", "--file", "{file}"], "is not a textvae model folder"),
        (["{run}", "--file", "{tmp}/missing.txt"], "file not found"),
        (["{run}", "--file", "{file}", "--settings", "greedy,bogus"], "unknown setting 'bogus'"),
        (["{run}", "--file", "{file}", "--steps", "2"], "--steps must be at least 3"),
        (
            ["{run}", "--file", "{file}", "--sentences", "0"],
            "--sentences: expected a positive integer, got 0",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained_run, tmp_path, args, message):
    held_out = tmp_path / "valid.txt"
    held_out.write_text("a cat sat\n", encoding="utf-8")
    names = {"tmp": tmp_path, "file": held_out, "run": trained_run}
    done = bench(*(arg.format(**names) for arg in args))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("bench_decoding.py: error:")
