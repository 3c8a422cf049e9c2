"""One place for ``torch.distributed``: process-group setup, rank, world size, this process's device.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), :func:`setup` joins the process
group, NCCL on CUDA machines and gloo otherwise; a plain ``python``/``semhitok`` run is world size 1
and never touches ``torch.distributed``.

**Timeout.** Every collective (all-reduce, broadcast, barrier) waits at most
``SEMHITOK_DIST_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT_S` = 600) for the other ranks,
then fails instead of blocking. torch's own default is 30 minutes for gloo (10 for NCCL), so a
frozen or pre-empted rank would otherwise hold every other GPU of the job idle for half an hour.
Raise it when a rank legitimately works alone for longer between collectives, e.g. rank 0 writing
a very large checkpoint to slow storage; the value must be a positive number of seconds. On NCCL
the timeout is enforced by torch's watchdog (``TORCH_NCCL_ASYNC_ERROR_HANDLING``, on by default),
which ends the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistContext",
    "all_gather_tensors",
    "barrier",
    "is_distributed",
    "mean_over_ranks",
    "rank",
    "setup",
    "timeout_from_env",
    "world_size",
]

TIMEOUT_ENV = "SEMHITOK_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def timeout_from_env() -> timedelta:
    """``SEMHITOK_DIST_TIMEOUT`` (seconds, > 0) or the default; a bad value is a ValueError."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def setup() -> DistContext:
    """Join the torchrun process group (once) and pick this process's device.

    Without torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised: rank 0 of 1, on
    ``cuda:0`` when a GPU is present, else the CPU.
    """
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if env_world > 1 and not dist.is_initialized():
        timeout = timeout_from_env()  # validated before any process blocks in the rendezvous
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)  # before NCCL init, so each rank binds its own GPU
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistContext(rank(), world_size(), local_rank, device)


def is_distributed() -> bool:
    """A process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def mean_over_ranks(t: Tensor) -> Tensor:
    """The mean of ``t`` over all ranks (a new tensor; ``t`` itself in one process)."""
    if not is_distributed():
        return t
    total = t.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size()


def all_gather_tensors(t: Tensor, device: torch.device) -> list[Tensor]:
    """Every rank's copy of ``t`` (same shape and dtype on all ranks), as CPU tensors, rank order.

    ``device`` is where the collective runs (NCCL needs CUDA tensors); one process returns ``[t]``.
    """
    if not is_distributed():
        return [t.detach().cpu()]
    local = t.detach().to(device)
    out = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [o.cpu() for o in out]
