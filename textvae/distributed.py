"""Data-parallel training and evaluation with `torch.distributed`: process group, device, reductions, seeds.

`torchrun --nproc_per_node N -m textvae.cli train ...` starts N processes; torchrun gives each one
`RANK`, `LOCAL_RANK`, `WORLD_SIZE` and a rendezvous address in its environment (so do `accelerate launch`
and SLURM's `srun` running torchrun). `setup_process_group` reads them and joins the processes: gloo on the
CPU, NCCL on CUDA with one GPU per local rank. Without them everything here is a no-op for one process.

The semantics the training loop builds on these helpers (see `trainer.Trainer`):

- `--batch-size` is the global batch. Every process builds the same seeded length-bucketed batches and
  takes its contiguous share of each (`shard_bounds`), so N processes see per step exactly the sentences
  one process sees, and the learning rate means what it did;
- the random draws of a step (z's noise, word dropout) come from a generator seeded by (seed, step)
  (`derived_seed`), drawn for the whole global batch on every process, each keeping its own rows;
- only the main process (rank 0) writes files; `shared_errors` makes an error of one process stop all.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

# Collectives wait this long for the slowest process: the main process may spend minutes alone (training
# the tokenizer, fitting the aggregate prior) while the others wait for it.
TIMEOUT = datetime.timedelta(minutes=30)
_SEED_MASK = (1 << 63) - 1


def launched() -> bool:
    """True in a process started by torchrun (or a launcher that sets the same environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """True once this process has joined a process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; 0 outside a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group; 1 outside a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True for the process that writes files and shows progress (rank 0, or the only process)."""
    return rank() == 0


def process_device(name: str = "auto") -> torch.device:
    """The device this process computes on.

    name: `auto` (CUDA when available, else the CPU), `cpu`, `cuda` or `cuda:N`. Under torchrun `auto` and
    `cuda` mean the GPU of this process's local rank, `cuda:LOCAL_RANK`; naming one GPU there is refused,
    since every process would take the same one.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if not launched() or not name.startswith("cuda"):
        return torch.device(name)
    if name != "cuda":
        raise ValueError(
            f"device {name!r} names one GPU, but under torchrun each process takes the GPU of its local rank: "
            f"pass --device cuda (or auto), and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; start at most "
            f"that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def setup_process_group(device: str = "auto") -> torch.device:
    """Join the torchrun processes (once per process) and return this process's device.

    The backend follows the device: NCCL for CUDA, gloo for the CPU. The group then stays up for the rest of
    the process, for the next `train` or `evaluate_run` call (torch cannot join the same torchrun job twice:
    a second group would read the first one's stale addresses), and `teardown` runs at exit. Outside
    torchrun, or when a process group already exists (the caller set one up), nothing is set up.
    """
    target = process_device(device)
    if not launched() or is_distributed():
        return target
    if target.type == "cuda":
        torch.cuda.set_device(target)
    backend = "nccl" if target.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    atexit.register(teardown)
    if dist.get_rank() == 0:
        logger.info(
            "%d processes (%s); the main process computes on %s", dist.get_world_size(), backend, target
        )
    return target


def teardown() -> None:
    """Leave the process group, if this process is in one (registered to run at exit)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (no-op for one process)."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the processes, in place, and return it (no gradient; unchanged for one process)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """The sum over processes with its gradient, as `torch.distributed.nn.functional.all_reduce` (which
    recent torch deprecates): the gradient of a sum over processes is the sum of their gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def differentiable_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the processes, as a new tensor that gradients flow through.

    Under `DistributedDataParallel`, which averages gradients over N processes, a term computed from this
    sum on every process gets exactly the gradient it would get from one process holding the whole batch.
    """
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor


def gather_objects(value) -> list:
    """`value` of every process, in rank order (picklable values; tensors should be on the CPU)."""
    if not is_distributed():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value):
    """The main process's `value` on every process (picklable)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def shared_errors() -> Iterator[None]:
    """Run the block on every process; when it raises on any of them, raise on all of them.

    The process that failed re-raises its own exception; the others raise `ValueError` naming it, so no
    process is left waiting for a collective that will never come, and the main process (the one the
    command prints from) always reports the error. Use it around set-up steps that can fail on one process
    only: reading files, or writing them on the main process.
    """
    if not is_distributed():
        yield
        return
    error = None
    try:
        yield
    except Exception as caught:  # any failure must reach the other processes before they block
        error = caught
    reports = gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(number, report) for number, report in enumerate(reports) if report is not None]
    if failed:
        number, report = failed[0]
        raise ValueError(f"process {number} of {len(reports)} failed: {report}")


def shard_bounds(count: int, shard: int, shards: int) -> tuple[int, int]:
    """[start, stop) of shard `shard` when `count` rows are cut into `shards` contiguous, near-equal parts.

    The first `count % shards` shards hold one row more; when `count < shards` the last shards are empty.
    """
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard must be in [0, {shards}), got {shard}")
    base, extra = divmod(count, shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def derived_seed(*keys: int) -> int:
    """A seed hashed from integer keys: (seed, step, stream) -> the seed of that step's stream.

    Random draws keyed by what they are for (a step, a batch) rather than by how many draws a process made
    before are the same on every process and after every resume. Different tuples of keys hash different
    texts (their decimal form), so they give unrelated seeds; 63 bits, as torch seeds take.
    """
    text = ",".join(str(int(key)) for key in keys).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _SEED_MASK


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under `DistributedDataParallel` in a process group (gradients averaged over the processes,
    weights broadcast from rank 0 at the start); `model` itself for one process.

    Pretrained backbones can hold weights the VAE never uses (a BERT pooler): DDP is told to look for them.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    config = getattr(model, "config", None)
    backbones = (getattr(config, "encoder_type", None), getattr(config, "decoder_type", None))
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" and device.index is not None else None,
        find_unused_parameters="hf" in backbones,
    )
