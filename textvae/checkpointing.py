"""Run folders: saving and loading trained models and resumable checkpoints, always atomically.

A run folder is a model folder (`config.json`, `model.safetensors`, tokenizer files, `train_config.json`,
`history.json`, `metrics.jsonl`) with resumable state in `checkpoint-<step>/` folders beside it. Every
write goes to a temporary name first and is renamed into place, so killing training at any moment
never leaves a half-written model or checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from .data.tokenization import load_tokenizer
from .models.configuration import TextVAEConfig
from .models.modeling import TextVAEModel
from .run_files import (
    CHECKPOINT_PREFIX,
    CONFIG_NAME,
    ENCODER_TOKENIZER_DIR,
    OPTIMIZER_NAME,
    TEMPORARY_PREFIX,
    TOKENIZER_NAME,
    TRAINER_STATE_NAME,
    WEIGHTS_NAME,
    read_json,
    remove_stale_temporaries,
)

logger = logging.getLogger(__name__)

CHECKPOINT_TEMPORARY_PREFIX = f"{TEMPORARY_PREFIX}{CHECKPOINT_PREFIX}"
# Seconds to pause inside every checkpoint write: a hook for the crash tests, never set in normal use.
CHECKPOINT_PAUSE_ENV = "TEXTVAE_CHECKPOINT_PAUSE"


def write_atomically(folder: Path, writer: Callable[[Path], None]) -> None:
    """Let `writer` fill a temporary folder, then move each file it wrote into `folder` by rename."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}model-", dir=folder))
    try:
        writer(staging)
        for path in sorted(staging.rglob("*")):
            target = folder / path.relative_to(staging)
            if path.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(path, target)  # atomic on one file system
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_model(folder: Path, model: TextVAEModel, tokenizer=None, encoder_tokenizer=None) -> None:
    """Save weights, config and tokenizer(s) into `folder`, each file replaced atomically."""

    def writer(staging: Path) -> None:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if encoder_tokenizer is not None:
            encoder_tokenizer.save_pretrained(staging / ENCODER_TOKENIZER_DIR)

    with _quiet_transformers():
        write_atomically(folder, writer)


class _quiet_transformers:
    """Silence transformers' progress bars and info lines while saving / loading."""

    def __enter__(self):
        self.level = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()

    def __exit__(self, *exc):
        transformers_logging.set_verbosity(self.level)
        transformers_logging.enable_progress_bar()


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> TextVAEModel:
    """Load a saved model, refusing folders that are not textvae models and weights that do not fit."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder not found: {folder}")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"{folder} is not a textvae model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{config_path} is not valid JSON") from None
    if raw.get("model_type") != TextVAEConfig.model_type:
        raise ValueError(f"{folder} is not a textvae model (model_type {raw.get('model_type')!r})")
    config = _load_config(folder)
    _check_weight_shapes(folder, config)
    try:
        with _quiet_transformers():
            model, info = TextVAEModel.from_pretrained(folder, output_loading_info=True)
    except ValueError as error:
        raise ValueError(f"cannot load {folder}: {str(error).splitlines()[0]}") from None
    except Exception as error:  # corrupt safetensors and the like: many exception types
        raise ValueError(
            f"cannot load the weights in {folder} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None
    problems = {key: value for key, value in info.items() if value and key != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise ValueError(f"the weights in {folder} do not match its config: {problems or info['error_msgs']}")
    _own_memory(model)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(
                f"the weights in {folder} are not finite ({name} holds NaN or inf): the model was saved from a "
                f"run that diverged; train it again (a lower --learning-rate helps)"
            )
    return model.to(device).eval()


def _load_config(folder: Path) -> TextVAEConfig:
    try:
        with _quiet_transformers():
            return TextVAEConfig.from_pretrained(folder)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{folder / CONFIG_NAME} is not a valid textvae config: {str(error).splitlines()[0]}"
        ) from None


def _check_weight_shapes(folder: Path, config: TextVAEConfig) -> None:
    """`ValueError` naming the first tensor of model.safetensors whose shape differs from what config.json
    builds (say, after an edited vocab_size), before transformers tries to load it."""
    from safetensors import safe_open

    path = folder / WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="pt") as weights:
            saved = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except Exception as error:  # a truncated or garbled file: safetensors raises its own error types
        raise ValueError(f"{path} is corrupt or cut short ({str(error).splitlines()[0]})") from None
    with torch.device("meta"), _quiet_transformers():
        expected = {name: tuple(tensor.shape) for name, tensor in TextVAEModel(config).state_dict().items()}
    for name, shape in saved.items():
        if name in expected and expected[name] != shape:
            raise ValueError(
                f"the weights in {folder} do not match its {CONFIG_NAME}: {name} has shape {shape} in "
                f"{WEIGHTS_NAME} but the config builds {expected[name]}"
            )


def _own_memory(model: torch.nn.Module) -> None:
    """Give every parameter and buffer freshly allocated memory.

    Loaded tensors can live inside a memory-mapped safetensors file at offsets with no particular
    alignment, while fresh ones are 64-byte aligned; CPU kernels take different vectorised paths for the
    two (with different rounding), which made a resumed run drift about 1e-5 from an uninterrupted one.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


def load_run(folder: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, encoder tokenizer or None) of a run folder, checked against each other."""
    folder = Path(folder)
    model = load_model(folder, device)
    if not (folder / TOKENIZER_NAME).is_file():
        raise ValueError(f"{folder} has no {TOKENIZER_NAME}: not a complete textvae model folder")
    try:
        tokenizer = load_tokenizer(folder)
    except Exception as error:
        raise ValueError(f"cannot load the tokenizer in {folder}: {str(error).splitlines()[0]}") from None
    check_tokenizer_matches(model.config, tokenizer, folder)
    encoder_tokenizer = None
    if (folder / ENCODER_TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        encoder_tokenizer = AutoTokenizer.from_pretrained(str(folder / ENCODER_TOKENIZER_DIR))
    return model, tokenizer, encoder_tokenizer


def check_tokenizer_matches(config: TextVAEConfig, tokenizer, folder: Path | str = "") -> None:
    """Raise `ValueError` when the tokenizer's vocabulary or special ids differ from the model's."""
    # A pretrained decoder may have more embedding rows than its tokenizer has tokens (padding rows).
    fits = (
        len(tokenizer) <= config.vocab_size
        if config.decoder_type == "hf"
        else len(tokenizer) == config.vocab_size
    )
    if not fits:
        raise ValueError(
            f"tokenizer in {folder} has {len(tokenizer)} tokens but the model expects {config.vocab_size}: "
            "the tokenizer does not belong to this model"
        )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(tokenizer, name) != getattr(config, name):
            raise ValueError(
                f"tokenizer {name} {getattr(tokenizer, name)} differs from the model's {getattr(config, name)}"
            )


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Complete `checkpoint-<step>/` folders of a run, oldest first."""
    folders = [
        path
        for path in run_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if path.is_dir()
        and path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (path / TRAINER_STATE_NAME).is_file()
    ]
    return sorted(folders, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(
    run_dir: Path, model, optimizer, scheduler, state: dict, keep: int, extra_state=None
) -> Path:
    """Write `checkpoint-<step>/` (weights, optimiser, scheduler, RNG, trainer state) under a temporary name.

    The folder is filled under a temporary name and renamed into place, so a kill leaves either the
    complete checkpoint or a temporary that the next checkpoint (or a resume) removes.
    `extra_state`: further tensors and numbers a resume needs (the KL controller's), saved with the
    optimiser state.
    """
    final = run_dir / f"{CHECKPOINT_PREFIX}{state['step']}"
    remove_stale_temporaries(run_dir, CHECKPOINT_TEMPORARY_PREFIX)
    staging = Path(tempfile.mkdtemp(prefix=CHECKPOINT_TEMPORARY_PREFIX, dir=run_dir))
    try:
        with _quiet_transformers():
            model.save_pretrained(staging)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "rng": rng,
                "extra": extra_state,
            },
            staging / OPTIMIZER_NAME,
        )
        _pause_for_crash_tests()
        (staging / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=2, allow_nan=False) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in checkpoint_folders(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _pause_for_crash_tests() -> None:
    """Sleep `$TEXTVAE_CHECKPOINT_PAUSE` seconds in the middle of a checkpoint write (weights and optimiser
    written, not yet renamed), so that a crash test can kill the process exactly there."""
    pause = os.environ.get(CHECKPOINT_PAUSE_ENV)
    if pause:
        import time

        time.sleep(float(pause))


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[dict, object]:
    """Restore weights, optimiser, scheduler and RNG from a checkpoint; return its trainer state and the
    `extra_state` it was saved with."""
    state = read_json(folder / TRAINER_STATE_NAME)
    saved = load_model(folder, device=next(model.parameters()).device)
    try:
        model.load_state_dict(saved.state_dict())
        extra = torch.load(folder / OPTIMIZER_NAME, weights_only=True, map_location="cpu")
        optimizer.load_state_dict(extra["optimizer"])
        if scheduler is not None and extra["scheduler"] is not None:
            scheduler.load_state_dict(extra["scheduler"])
    except (OSError, RuntimeError, KeyError, EOFError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"checkpoint {folder} is corrupt or does not fit this run: {reason}") from None
    # Optimiser state read back from the file gets memory of its own, as the weights do (see _own_memory).
    for parameter_state in optimizer.state.values():
        for key, value in parameter_state.items():
            if torch.is_tensor(value):
                parameter_state[key] = value.clone(memory_format=torch.contiguous_format)
    torch.set_rng_state(extra["rng"]["cpu"])
    if "cuda" in extra["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
    return state, extra.get("extra")
