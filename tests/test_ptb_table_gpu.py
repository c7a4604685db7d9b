"""scripts/ptb_table_gpu.sh pack: what a lease brings back within the device tool's limits."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ptb_table_gpu.sh"
MIB = 1024 * 1024


def make_work(root: Path, weights_mib: dict[str, float], done: bool = True) -> Path:
    """A lease's WORK folder: results, a log, and one run folder per row with weights and a checkpoint."""
    work = root / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "rate_100.json").write_text('{"kl": 96.8}')
    (work / "table.log").write_text("exit 0\n")
    for row, mib in weights_mib.items():
        run = work / "runs" / row
        (run / "checkpoint-400").mkdir(parents=True)
        (run / "checkpoint-400" / "optimizer.safetensors").write_bytes(b"\0" * MIB)
        (run / "history.json").write_text("[]")
        (run / "eval-validation-k500.partial.json").write_text("{}")
        (run / "model.safetensors").write_bytes(b"\1" * int(mib * MIB))
    if done:
        (work / "DONE").touch()
    return work


def pack(work: Path, dest: Path, models: str, budget_mib: int) -> str:
    env = {"PATH": "/usr/bin:/bin", "MODELS": models, "PACK_BUDGET_MB": str(budget_mib)}
    result = subprocess.run(
        ["bash", str(SCRIPT), "pack", str(work), str(dest)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def rebuilt(dest: Path, row: str, root: Path) -> Path:
    """The row's parts joined and unpacked, as the README says: cat them into one tar."""
    joined = root / f"{row}.tar"
    joined.write_bytes(b"".join(part.read_bytes() for part in sorted(dest.glob(f"{row}.tar.part-*"))))
    with tarfile.open(joined) as archive:
        archive.extractall(root / "unpacked", filter="data")
    return root / "unpacked" / row


@pytest.fixture
def have_tools():
    for tool in ("tar", "split", "stat"):
        if subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True).returncode:
            pytest.skip(f"{tool} not found")


def test_pack_brings_whole_models_in_order_within_the_budget(tmp_path, have_tools):
    work = make_work(tmp_path, {"rate_100": 16, "6_lm": 3, "rate_8": 1})
    dest = tmp_path / "out"
    out = pack(work, dest, "rate_100 6_lm rate_8", budget_mib=18)
    # The small files: results and logs, no weights, checkpoints or partial evaluations.
    with tarfile.open(dest / "table.tgz") as archive:
        names = archive.getnames()
    assert "./results/rate_100.json" in names and "./runs/rate_100/history.json" in names
    assert not [name for name in names if "safetensors" in name or "checkpoint-" in name or "partial" in name]
    # rate_100 (16 MiB) fits, 6_lm (3 MiB) then does not and is named, rate_8 (1 MiB) still fits.
    assert "pack: 6_lm (3 MiB) left out" in out
    assert not list(dest.glob("6_lm.tar*"))
    assert len(list(dest.glob("rate_100.tar.part-*"))) == 2  # 15 MB parts
    run = rebuilt(dest, "rate_100", tmp_path)
    assert (run / "model.safetensors").stat().st_size == 16 * MIB
    assert not (run / "checkpoint-400").exists() and not list(run.glob("*.partial.json"))
    assert (rebuilt(dest, "rate_8", tmp_path) / "model.safetensors").stat().st_size == 1 * MIB
    assert sum(path.stat().st_size for path in dest.iterdir()) <= 18 * MIB


def test_pack_brings_no_weights_before_the_run_is_done(tmp_path, have_tools):
    work = make_work(tmp_path, {"rate_100": 1}, done=False)
    dest = tmp_path / "out"
    pack(work, dest, "rate_100", budget_mib=63)
    assert sorted(path.name for path in dest.iterdir()) == ["table.tgz"]
