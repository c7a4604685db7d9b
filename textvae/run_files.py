"""Files of a run folder: names, atomic writes, the append-only metrics log, and what textvae may remove.

Importable without torch or transformers (the command line reads options and run files before it loads
any model). Every file textvae writes goes to a temporary name in the same folder first and is renamed
into place, so a kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
ENCODER_TOKENIZER_DIR = "encoder_tokenizer"
TRAIN_CONFIG_NAME = "train_config.json"
HISTORY_NAME = "history.json"
METRICS_NAME = "metrics.jsonl"
TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.pt"
LOCK_NAME = ".lock"
CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-"

# What textvae writes into a run folder, as glob patterns of names at its top level. `--overwrite` removes
# these and nothing else: any other entry is the user's, and makes it refuse.
RUN_FILE_PATTERNS = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    TOKENIZER_NAME,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    ENCODER_TOKENIZER_DIR,
    TRAIN_CONFIG_NAME,
    HISTORY_NAME,
    METRICS_NAME,
    f"{CHECKPOINT_PREFIX}[0-9]*",
    f"{TEMPORARY_PREFIX}*",
    "eval-*.json",
    "prior.json",
    "prior.safetensors",
    "latent-cache-*.safetensors",
    "curves.png",
    "kl_per_dim.png",
    "active_units.png",
    "latent_map.png",
    "tensorboard",
    "table_row.json",
    LOCK_NAME,
)


def is_run_file(name: str) -> bool:
    """True for a top-level name that textvae writes into a run folder."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILE_PATTERNS)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | os.PathLike, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` through a temporary file in the same folder, flushed, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}{path.name}-", dir=path.parent)
    try:
        # mkstemp makes the file private (0600): give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(text.encode("utf-8") if isinstance(text, str) else text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as JSON to `path`, atomically; non-finite floats are refused (JSON has none)."""
    write_text_atomically(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path`; `ValueError` naming the file when it is missing, unreadable or cut short."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is corrupt or cut short ({str(error).splitlines()[0]})") from None


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to an append-only log, flushed to disk.

    A kill during the write can leave a torn last line at worst; `read_records` drops it.
    """
    line = json.dumps(record, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(line)
        stream.flush()
        os.fsync(stream.fileno())


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of an append-only JSON-lines log; a torn last line is dropped with a warning.

    A bad line anywhere else means the file was damaged by something other than a stop: `ValueError`
    naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: the log is damaged") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                logger.warning("%s: dropped a torn last line (training was stopped while writing it)", path)
                continue
            raise ValueError(f"{path} line {number} is not JSON: the log is damaged") from None
    return records


def rewrite_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace a JSON-lines log with `records`, atomically."""
    write_text_atomically(path, "".join(json.dumps(record, allow_nan=False) + "\n" for record in records))


def remove_stale_temporaries(folder: Path, prefix: str = TEMPORARY_PREFIX) -> int:
    """Delete temporaries (names starting with `prefix`) left in `folder` by a killed write; their count."""
    removed = 0
    for path in folder.glob(f"{prefix}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d unfinished temporary file(s) left in %s by a stopped write", removed, folder)
    return removed


def clear_run_folder(folder: Path) -> None:
    """Remove what textvae wrote into `folder` (for `--overwrite`), refusing if anything else is there.

    Raises `ValueError` naming the first entry that textvae did not write, before removing anything.
    """
    entries = sorted(folder.iterdir())
    foreign = [entry for entry in entries if not is_run_file(entry.name)]
    if foreign:
        raise ValueError(
            f"refusing to overwrite {folder}: {foreign[0].name} was not written by textvae "
            f"(--overwrite only replaces a textvae run folder); move it away or choose another --output-dir"
        )
    # A model folder of another library can hold config.json and model.safetensors too: only a folder
    # that training started (its options, a checkpoint, or nothing but temporaries) is replaced.
    started = (folder / TRAIN_CONFIG_NAME).is_file() or any(
        entry.name.startswith((CHECKPOINT_PREFIX, TEMPORARY_PREFIX)) or entry.name == LOCK_NAME
        for entry in entries
    )
    if not started:
        raise ValueError(f"refusing to overwrite {folder}: it is not a textvae run folder")
    for entry in entries:
        if entry.name == LOCK_NAME:  # the lock of the trainer that overwrites: removing it would free it
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_finite(name: str, value: float) -> None:
    """`ValueError` naming `name` when `value` is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder while training writes it (`run_dir/.lock`, `flock`).

    A second `textvae train` (or `--resume`) on the same folder fails at once with a clear error, instead
    of two processes interleaving checkpoints and logs. The operating system releases the lock when its
    process ends in any way (a kill included), so a stale lock file never blocks a resume. A no-op where
    `fcntl` is missing (Windows).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise ValueError(
            f"{run_dir} is being trained by another process (pid {holder}): wait for it to end or stop it "
            "first, or train into another --output-dir"
        ) from None
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
