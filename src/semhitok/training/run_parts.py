"""Pieces every training loop of this package shares (the tokenizer stages' ``loop.py`` and the
MLLM's ``mllm_loop.py``): the run folder's checks and lock, agreement between ranks, the run record,
DDP wrapping, rank means, per-rank RNG states, and the logger (metrics.jsonl, TensorBoard, progress bar)."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from .. import __version__, distributed
from .checkpoint import Checkpoint, last_good_checkpoint, list_checkpoints
from .errors import TrainingError
from .run_folder import RunLock

__all__ = [
    "RunLogger",
    "agreed_stop",
    "all_ranks_ok",
    "check_run_folder",
    "ddp",
    "gather_rng",
    "git_revision",
    "last_good",
    "lock_run_folder",
    "mean_over_ranks",
    "run_info",
]


def check_run_folder(run_dir: Path, resume: bool) -> list[Checkpoint]:
    """The run folder's checkpoints, checked against ``resume`` (nothing is written)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--out {run_dir}: exists and is not a folder")
    RunLock.check_free(run_dir)  # "in use" explains more than what a live run's folder holds now
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise TrainingError(f"{run_dir} already has checkpoints (last: step {existing[-1].step}); pass --resume or choose another --out")
    if resume and not existing:
        raise TrainingError(f"--resume: {run_dir} has no checkpoint to resume from")
    return existing


def lock_run_folder(run_dir: Path, ctx: distributed.DistContext) -> RunLock | None:
    """Rank 0 locks the run folder; every rank learns whether it could (none trains otherwise)."""
    lock, error = None, None
    if ctx.is_main:
        try:
            lock = RunLock(run_dir)
        except TrainingError as exc:
            error = exc
    if not all_ranks_ok(error is None, ctx):
        if error is not None:
            raise error
        raise TrainingError(f"rank 0 could not lock the run folder {run_dir}; see its error")
    return lock


def all_ranks_ok(ok: bool, ctx: distributed.DistContext) -> bool:
    """``ok`` on every rank (a collective: every rank must call it)."""
    if ctx.world_size == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def agreed_stop(requested: int | None, ctx: distributed.DistContext) -> int | None:
    """The stop signal, agreed by all ranks: a signal can reach the ranks in different steps, and
    all must save and stop after the same one."""
    if ctx.world_size == 1:
        return requested
    flag = torch.tensor([requested or 0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def run_info(world: int, resume: bool, step: int) -> dict[str, Any]:
    """What ``run.jsonl`` records about a start (versions, world size, where it resumed)."""
    return {
        "git_revision": git_revision(), "semhitok_version": __version__, "torch_version": torch.__version__,
        "world_size": world, "resumed": resume, "from_step": step,
    }


def ddp(module: nn.Module, device_ids: list[int] | None) -> DDP:
    """DDP without the per-forward buffer broadcast (newer torch names it forward_sync_buffers)."""
    flag = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    return DDP(module, device_ids=device_ids, **{flag: False})


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Each value's mean over the ranks (a collective)."""
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= distributed.world_size()
    return dict(zip(keys, packed.tolist()))


def gather_rng(ctx: distributed.DistContext) -> list[dict[str, Tensor]]:
    """Every rank's RNG state (CPU, and this rank's GPU): ranks draw different numbers (only rank
    0 picks restarted codes), so each must get its own back on resume."""
    cpu = distributed.all_gather_tensors(torch.get_rng_state(), ctx.device)
    if ctx.device.type != "cuda":
        return [{"torch": c} for c in cpu]
    gpu = distributed.all_gather_tensors(torch.cuda.get_rng_state(ctx.device), ctx.device)
    return [{"torch": c, "cuda_device": g} for c, g in zip(cpu, gpu)]


def last_good(run_dir: Path) -> str:
    good = last_good_checkpoint(run_dir)
    return f"the last good checkpoint is {good.path}" if good is not None else "no checkpoint was written yet"


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The tokenizer stages' progress-bar fields and their short names.
TOKENIZER_SHOWN = ("loss", "lr", "semantic_usage", "pixel_usage", "images_per_second")
TOKENIZER_SHORT = {"semantic_usage": "use", "pixel_usage": "sub", "images_per_second": "img/s"}


class RunLogger:
    """metrics.jsonl + TensorBoard + a progress bar (or plain lines in quiet mode), rank 0 only.

    Args:
        shown: the metrics on the progress bar (and in quiet mode's lines), ``short`` their labels.
    """

    def __init__(
        self, run_dir: Path, enabled: bool, quiet: bool, total: int, initial: int, stage: str,
        shown: Sequence[str] = TOKENIZER_SHOWN, short: Mapping[str, str] | None = None,
    ) -> None:
        self.enabled, self.quiet = enabled, quiet
        self.shown = tuple(shown)
        self.short = dict(TOKENIZER_SHORT if short is None else short)
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        # A resumed run re-logs the steps after its checkpoint: purge TensorBoard's copies of them.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=initial + 1 if initial else None)
        self.bar = tqdm(total=total, initial=initial, desc=f"train {stage}", disable=quiet, dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float], force: bool) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        short = {self.short.get(k, k): _fmt(metrics[k]) for k in self.shown if k in metrics}
        self.bar.set_postfix(short, refresh=False)
        if not force:
            return
        # NaN marks a mean over nothing (the text NLL of a generation-only batch): null in the
        # file, no point in TensorBoard, "-" on the console.
        self.file.write(json.dumps({k: (v if math.isfinite(v) else None) for k, v in metrics.items()}) + "\n")
        self.file.flush()
        for key, value in metrics.items():
            if key != "step" and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        if self.quiet:
            print(f"step {step} " + " ".join(f"{k}={v}" for k, v in short.items()), flush=True)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
            self.writer.close()


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
