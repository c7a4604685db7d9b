"""`textvae plot` and `textvae serve` end to end, and one clear line for every bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from textvae.cli import main

from .helpers import run_cli, run_cli_error

matplotlib_image = pytest.importorskip("matplotlib.image")
REPOSITORY = Path(__file__).resolve().parents[1]


def test_plot_writes_decodable_pngs_and_prints_their_paths(trained_run, tmp_path, capsys):
    code, out, err = run_cli(capsys, "plot", trained_run, "-o", tmp_path / "figures")
    assert code == 0, err
    paths = [Path(line) for line in out.splitlines()]
    assert [path.name for path in paths] == ["curves.png", "kl_per_dim.png", "active_units.png"]
    for path in paths:
        pixels = matplotlib_image.imread(path)  # (H, W, 4)
        assert path.parent == tmp_path / "figures" and pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05


def test_plot_draws_the_latent_map_of_a_corpus_by_label_or_length(trained_run, tmp_path, capsys):
    corpus = tmp_path / "labelled.jsonl"
    sentences = (trained_run.parent / "corpus.txt").read_text(encoding="utf-8").splitlines()[:40]
    corpus.write_text("".join(json.dumps({"text": s, "topic": len(s) % 3}) + "\n" for s in sentences))
    out_dir = tmp_path / "by-label"
    code, out, err = run_cli(
        capsys,
        "plot",
        trained_run,
        "-o",
        out_dir,
        "--corpus",
        corpus,
        "--label-column",
        "topic",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert out.splitlines()[-1] == str(out_dir / "latent_map.png")
    assert matplotlib_image.imread(out_dir / "latent_map.png").shape[0] > 100
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "plot", trained_run, "-o", tmp_path / "by-length", "--corpus", text)
    assert code == 0 and (tmp_path / "by-length" / "latent_map.png").is_file(), err


def test_plot_of_a_run_without_validation_history_is_one_clear_line(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "config.json", run / "config.json")
    code, out, err = run_cli(capsys, "plot", run)
    assert code == 2 and out == ""
    assert err == f"textvae plot: error: {run} has no validation history yet: train at least one epoch\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "RUN", "--port", "0"], "argument --port: expected a port number in 1..65535, got 0"),
        (["serve", "RUN", "--port", "http"], "argument --port: expected a port number, got 'http'"),
        (
            ["serve", "RUN", "--max-map-points", "0"],
            "argument --max-map-points: expected a positive integer, got 0",
        ),
        (["serve", "RUN", "--label-column", "label"], "--text-column and --label-column describe --corpus"),
        (["plot", "RUN", "--text-column", "text"], "--text-column and --label-column describe --corpus"),
        (["plot", "RUN", "--corpus", "missing.txt"], "file not found: missing.txt"),
    ],
)
def test_bad_arguments_are_one_line(trained_run, capsys, args, message):
    args = [trained_run if arg == "RUN" else arg for arg in args]
    assert run_cli_error(capsys, args, re.escape(message)) == 2


def test_arguments_are_checked_before_torch_is_imported(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(
        "import sys\n"
        "from textvae.cli import main\n"
        "for args in (['serve', 'RUN', '--port', '99999'], ['plot', 'RUN', '--max-sentences', '0']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 2\n"
        "print([name for name in ('torch', 'transformers', 'gradio') if name in sys.modules])\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=environment
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert "port number in 1..65535" in result.stderr and "positive integer" in result.stderr


def test_help_documents_serve_and_plot(capsys):
    for command, option in (("serve", "--host"), ("plot", "--output-dir")):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert exit_info.value.code == 0 and f"usage: textvae {command}" in out and option in out


def test_serve_without_gradio_names_the_extra(trained_run, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a)
    )
    code, out, err = run_cli(capsys, "serve", trained_run)
    assert code == 2 and out == ""
    assert err == "textvae serve: error: textvae serve needs gradio: pip install 'textvae[app]'\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_listens_on_localhost_until_ctrl_c(trained_run, capsys, monkeypatch):
    pytest.importorskip("gradio")
    from textvae.cli import explore

    port, pages = free_port(), []

    def open_the_page_then_press_ctrl_c():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            pages.append((response.status, response.read()))
        raise KeyboardInterrupt

    monkeypatch.setattr(explore, "wait_for_interrupt", open_the_page_then_press_ctrl_c)
    code, out, err = run_cli(capsys, "serve", trained_run, "--port", port, "--device", "cpu")
    assert (
        out
        == f"textvae serve: the explorer of {trained_run} is at http://127.0.0.1:{port}/ (Ctrl-C stops it)\n"
    )
    assert pages[0][0] == 200 and b"textvae explorer" in pages[0][1]
    assert code == 130 and err.splitlines()[-1] == "textvae serve: interrupted"
    with pytest.raises(OSError):  # the server stopped with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
