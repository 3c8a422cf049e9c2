"""The training loop, written out: one stage of SemHiTok on one process or under torchrun DDP.

Flow of one optimizer step: set the lr (warm-up + cosine) -> ``grad_accum`` micro-batches of
forward + loss + backward (DDP syncs on the last) -> clip -> AdamW step -> (stages 2/3, after
``disc_start``) one discriminator step on the last micro-batch -> optional EMA of the weights ->
log -> checkpoint. The semantic EMA codebook updates itself inside the forward (train mode).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import distributed
from ..precision import ResolvedPrecision, resolve_and_warn, resolve_precision
from ..data import SampleBatch, TransformConfig, build_dataset
from ..losses import PixelReconstructionLoss, SemanticDistillationLoss
from ..modeling import SemHiTok
from .batches import DataPosition, iterate_batches
from .checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_problem,
)
from .config import TrainConfig
from .errors import TrainingError, TrainingInterrupted
from .interrupt import StopSignals
from .run_folder import record_run_start, resume_config_changes, trim_metrics
from .run_parts import RunLogger as _Logger
from .run_parts import agreed_stop as _agreed_stop
from .run_parts import check_run_folder as _check_run_folder
from .run_parts import ddp as _ddp
from .run_parts import gather_rng as _gather_rng
from .run_parts import last_good as _last_good
from .run_parts import lock_run_folder as _lock_run_folder
from .run_parts import mean_over_ranks as _mean_over_ranks
from .run_parts import run_info as _run_info
from .schedule import warmup_cosine
from .stages import Stage, get_stage

__all__ = ["TrainResult", "TrainingError", "TrainingInterrupted", "codebook_rank_divergence", "export_model", "train"]


@dataclass
class TrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    model_dir: Path
    images_per_second: float
    last_metrics: dict[str, float]


class StageModule(nn.Module):
    """The stage's forward as ``forward`` (DDP only hooks ``forward``)."""

    def __init__(self, model: SemHiTok, stage: Stage) -> None:
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, images: Tensor) -> Any:
        return self.stage.forward(self.model, images)


@dataclass
class _Parts:
    """Everything one optimizer step touches."""

    model: SemHiTok
    stage_module: nn.Module
    loss_fn: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    discriminator: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    ema: dict[str, Tensor] | None
    precision: ResolvedPrecision  # run.precision as resolved on this device (auto -> fp32 or bf16)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    data_path: str | None = None,
    init: str | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    allow_config_change: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Train one stage; returns where the exported model is. See ``docs/training.md``.

    Args:
        max_steps: stop after this step (default ``run.max_steps``); the learning-rate schedule
            still runs to ``run.max_steps``, so stopping early and resuming changes nothing.
        resume: continue from the run folder's last checkpoint; its ``config.yaml`` must match
            ``config`` unless ``allow_config_change`` (the change is then recorded in run.jsonl).

    Raises:
        TrainingError: no data path, a run folder in use or not matching ``resume``, a config change
            on resume, a non-finite loss or diverged weights. TrainingInterrupted (a TrainingError):
            SIGINT/SIGTERM; a checkpoint of the last finished step was saved. TrainingAborted (a
            KeyboardInterrupt): a second signal. BadDataError, FileNotFoundError, ValueError: the data.
    """
    ctx = distributed.setup()
    stage = get_stage(config.stage)
    run_dir = Path(run_dir)
    stop_at = max_steps or config.run.max_steps
    data_path = data_path or config.data.path
    if data_path is None:
        raise TrainingError("no training data: give --data PATH or data.path in the config")
    resolved = _resolved_config(config, data_path)
    existing = _check_run_folder(run_dir, resume)
    changes = resume_config_changes(run_dir, resolved, resume, allow_config_change)

    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    parts = _build_parts(config, stage, init or config.init, ctx)
    step, position = 0, DataPosition()
    if resume:
        step, position = _restore(parts, existing[-1].path, ctx)

    # Read the first batch before anything is written: bad data leaves no run folder behind.
    batches = _open_data(config, data_path, parts.model, ctx, position, bad_files_log(run_dir))
    lock = _lock_run_folder(run_dir, ctx)
    set_up = False
    try:
        if ctx.is_main:
            remove_partial(run_dir)
            if resume:
                trim_metrics(run_dir, step)
            parts.model.config.to_json(run_dir / "model_config.json")
            info = {**_run_info(ctx.world_size, resume, step), "precision": parts.precision.name}
            record_run_start(run_dir, resolved, info, changes, step)
        set_up = True
        with StopSignals() as signals:
            metrics = _run_steps(config, stage, parts, batches, run_dir, ctx, step, stop_at, signals, quiet)
        model_dir = run_dir / "model"
        if ctx.is_main:
            export_model(run_dir, model_dir)
        distributed.barrier()
    finally:
        if lock is not None:
            lock.release(discard=not set_up)  # a new folder whose setup failed is removed
    return TrainResult(run_dir, int(metrics.get("step", step)), model_dir, float(metrics.get("images_per_second", 0.0)), metrics)


def _run_steps(
    config: TrainConfig, stage: Stage, parts: _Parts, batches: Iterator[tuple[DataPosition, SampleBatch]], run_dir: Path,
    ctx: distributed.DistContext, step: int, stop_at: int, signals: StopSignals, quiet: bool,
) -> dict[str, float]:
    """Optimizer steps from ``step`` to ``stop_at``, logging and checkpointing; the last metrics."""
    log = _Logger(run_dir, enabled=ctx.is_main, quiet=quiet, total=stop_at, initial=step, stage=stage.name)
    images_seen, started, metrics = 0, time.perf_counter(), {"step": step}
    position = DataPosition()
    parts.stage_module.train()
    try:
        while step < stop_at:
            lr = warmup_cosine(step, base_lr=config.optim.lr, warmup_steps=config.optim.warmup_steps, total_steps=config.run.max_steps, min_lr=config.optim.min_lr)
            sums, position, seen = _optimizer_step(config, stage, parts, batches, step, lr, run_dir, ctx)
            images_seen += seen
            step += 1
            stop = _agreed_stop(signals.requested, ctx)
            checkpoint_due = step % config.run.checkpoint_every == 0 or step == stop_at or stop is not None
            due = checkpoint_due or step % config.run.log_every == 0
            if due and ctx.world_size > 1:  # log the global batch's means, not rank 0's share
                sums = _mean_over_ranks(sums, ctx.device)
            elapsed = time.perf_counter() - started
            metrics = {"step": step, "lr": lr, "epoch": position.epoch, "images_per_second": images_seen / max(elapsed, 1e-9), **sums}
            log.step(step, metrics, force=due)
            saved = _checkpoint(run_dir, step, parts, position, config.run.keep_last, ctx, metrics) if checkpoint_due else None
            if stop is not None:
                raise TrainingInterrupted(stop, step, saved)
    finally:
        log.close()
    return metrics


def _optimizer_step(
    config: TrainConfig, stage: Stage, parts: _Parts, batches: Iterator[tuple[DataPosition, SampleBatch]],
    step: int, lr: float, run_dir: Path, ctx: distributed.DistContext,
) -> tuple[dict[str, float], DataPosition, int]:
    """``grad_accum`` micro-batches, clip, AdamW, then the discriminator and the EMA of the weights."""
    for group in parts.optimizer.param_groups:
        group["lr"] = lr
    parts.optimizer.zero_grad(set_to_none=True)
    autocast = parts.precision.autocast(ctx.device)
    accum, loss_fn, seen = config.optim.grad_accum, parts.loss_fn, 0
    sums: dict[str, float] = {}
    for micro in range(accum):
        position, batch = next(batches)
        images = batch.images.to(ctx.device, non_blocking=True)
        last = micro == accum - 1 or ctx.world_size == 1
        with contextlib.nullcontext() if last else parts.stage_module.no_sync():
            with autocast:
                out = parts.stage_module(images)
                if stage.pixel:
                    terms = loss_fn.generator_loss(images, out, step, last_layer=parts.model.last_decoder_layer)
                else:
                    terms = loss_fn(out)
            if not bool(torch.isfinite(terms["loss"])):
                raise TrainingError(_non_finite_message(step, terms, run_dir))
            (terms["loss"] / accum).backward()
        for key, value in {**terms, **_usage(out, stage.pixel)}.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) / accum
        seen += images.shape[0] * ctx.world_size
    if config.optim.grad_clip is not None:
        sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parts.params, config.optim.grad_clip))
    parts.optimizer.step()
    if parts.disc_optimizer is not None and step >= loss_fn.config.disc_start:
        parts.disc_optimizer.zero_grad(set_to_none=True)  # the generator step left gradients here too
        with autocast:
            d_terms = loss_fn.discriminator_loss(images, out.reconstruction.detach(), step)
        d_terms["loss"].backward()
        parts.disc_optimizer.step()
        sums.update({f"disc_{k}": float(v.detach()) for k, v in d_terms.items()})
    if parts.ema is not None:
        with torch.no_grad():
            for name, p in parts.model.named_parameters():
                if name in parts.ema:
                    parts.ema[name].lerp_(p.detach(), 1 - config.run.ema_decay)
    return sums, position, seen


def export_model(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the last checkpoint of a run (EMA weights when the run kept them) as a SemHiTok folder."""
    from ..config import SemHiTokConfig

    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise TrainingError(f"{run_dir} has no checkpoint to export")
    config_file = run_dir / "model_config.json"
    if not config_file.is_file():
        raise TrainingError(f"{run_dir} is not a semhitok run folder (no model_config.json)")
    model = SemHiTok(SemHiTokConfig.from_json(config_file), load_teacher_weights=False, init_teacher_weights=False)
    state = load_checkpoint(checkpoints[-1].path, model)
    if state.get("ema"):
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in state["ema"].items():
                params[name].copy_(value)
    model.save_pretrained(out_dir)
    return Path(out_dir)


# ---- pieces of the loop ------------------------------------------------------------------------
def _resolved_config(config: TrainConfig, data_path: str) -> dict[str, Any]:
    """The config as ``config.yaml`` records it: the data path made absolute (a resume from another
    working directory names the same data)."""
    resolved = config.to_dict()
    resolved["data"]["path"] = data_path if isinstance(data_path, (list, tuple)) else os.path.abspath(str(data_path))
    return resolved


def _build_parts(config: TrainConfig, stage: Stage, init: str | None, ctx: distributed.DistContext) -> _Parts:
    """Model (frozen as the stage says), loss, optimizers, EMA; DDP-wrapped when world > 1."""
    device, world = ctx.device, ctx.world_size
    model = _build_model(config, init)
    params = stage.prepare(model)
    if config.run.gradient_checkpointing:
        for trained in stage.trained_modules(model):
            for module in trained.modules():
                if hasattr(module, "gradient_checkpointing"):
                    module.gradient_checkpointing = True
    model.to(device)
    pixel_stage = stage.pixel
    # TrainConfig built config.loss as the stage's typed loss config (LossConfig / SemanticLossConfig).
    loss_fn: nn.Module = PixelReconstructionLoss(config.loss) if pixel_stage else SemanticDistillationLoss(config.loss)
    loss_fn.to(device)
    discriminator = getattr(loss_fn, "discriminator", None) if stage.has_discriminator else None

    stage_module: nn.Module = StageModule(model, stage)
    if world > 1:
        # The EMA codebook keeps itself identical across ranks; DDP need not broadcast buffers.
        ids = [device.index] if device.type == "cuda" else None
        stage_module = _ddp(stage_module, ids)
        if discriminator is not None:
            loss_fn.discriminator = _ddp(discriminator, ids)
    optimizer = torch.optim.AdamW(_param_groups(model, params, config.optim.weight_decay), lr=config.optim.lr, betas=config.optim.betas)
    disc_optimizer = None
    if discriminator is not None:
        disc_lr = config.optim.disc_lr or config.optim.lr
        disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=disc_lr, betas=config.optim.betas, weight_decay=0.0)
    ema = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad} if config.run.ema_decay else None
    precision = resolve_and_warn(config.run.precision, device, "run.precision") if ctx.is_main else resolve_precision(config.run.precision, device)
    return _Parts(model, stage_module, loss_fn, params, optimizer, discriminator, disc_optimizer, ema, precision)


def _restore(parts: _Parts, path: Path, ctx: distributed.DistContext) -> tuple[int, DataPosition]:
    """Load a checkpoint into ``parts`` (weights, optimizers, EMA, every RNG); its step and data position."""
    state = load_checkpoint(path, parts.model, map_location=ctx.device)
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.disc_optimizer is not None and parts.discriminator is not None:
        parts.discriminator.load_state_dict(state["discriminator"])
        parts.disc_optimizer.load_state_dict(state["disc_optimizer"])
    if parts.ema is not None and "ema" in state:
        parts.ema = {k: v.to(ctx.device) for k, v in state["ema"].items()}
    per_rank = state.get("rng_ranks")
    if per_rank is not None and len(per_rank) == ctx.world_size:
        set_rng_state(per_rank[ctx.rank])  # ranks drew different numbers (rank 0 decides restarts)
    else:
        set_rng_state(state["rng"])
    return int(state["step"]), DataPosition(**state["data"])


def bad_files_log(run_dir: Path) -> Path:
    """Where a run lists the files it skipped: ``RUN_DIR.bad_files.log`` beside the run folder (as
    eval's ``OUT.bad_files.log``), because the data is read before the run folder is created and the
    list must survive a run that stops on bad data."""
    return run_dir.parent / f"{run_dir.name}.bad_files.log"


def _open_data(
    config: TrainConfig, data_path: str, model: SemHiTok, ctx: distributed.DistContext, position: DataPosition, log: Path,
) -> Iterator[tuple[DataPosition, SampleBatch]]:
    """The batch stream from ``position``, with its first batch already read (so bad data fails here);
    undecodable files are listed in ``log``."""
    transform = TransformConfig(image_size=model.image_size, crop=config.data.crop, flip=config.data.flip)
    dataset = build_dataset(
        data_path, transform, seed=config.run.seed, max_bad_fraction=config.data.max_bad_fraction,
        min_seen=config.data.min_seen, shuffle_shards=True, bad_files_log=log,
    )
    batches = iterate_batches(
        dataset, config.data.batch_size, rank=ctx.rank, world=ctx.world_size, seed=config.run.seed,
        num_workers=config.data.num_workers, start=position,
    )
    first = next(batches)
    return itertools.chain([first], batches)


def _build_model(config: TrainConfig, init: str | None) -> SemHiTok:
    """From scratch, or from the previous stage's folder; weights whose shape changed (stage 3's
    larger decoder) start fresh."""
    if init is None:
        return SemHiTok(config.model_config())
    if not (Path(init) / "config.json").is_file():
        raise TrainingError(f"--init {init}: not a SemHiTok model folder (no config.json); export the previous stage first")
    base = SemHiTok.from_pretrained(init)
    model_config = config.model_config(base.config)
    if model_config == base.config:
        return base
    model = SemHiTok(model_config, load_teacher_weights=False, init_teacher_weights=False)
    own = model.state_dict()
    own.update({k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape})
    model.load_state_dict(own)
    return model


def _param_groups(model: SemHiTok, params: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on biases, norms, position embeddings or codebooks."""
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = lambda p: p.ndim < 2 or names[id(p)].endswith(("pos_embed", "pixel_quantizer.weight", "semantic_quantizer.weight"))  # noqa: E731
    return [
        {"params": [p for p in params if not no_decay(p)], "weight_decay": weight_decay},
        {"params": [p for p in params if no_decay(p)], "weight_decay": 0.0},
    ]


def _usage(out: Any, pixel_stage: bool) -> dict[str, Tensor]:
    q = out.semantic if pixel_stage else out.quantizer
    stats = {"semantic_usage": q.usage, "semantic_perplexity": q.perplexity}
    if pixel_stage:
        stats.update({"pixel_usage": out.pixel.usage, "pixel_perplexity": out.pixel.perplexity})
    return stats


def _non_finite_message(step: int, terms: dict[str, Tensor], run_dir: Path) -> str:
    parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    return f"non-finite loss at step {step} ({parts}); stopped, {_last_good(run_dir)}"


def codebook_rank_divergence(model: SemHiTok) -> float:
    """Largest |difference| between this rank's and rank 0's codebook state (0.0 when in sync).

    The EMA codebook is a buffer that DDP does not synchronise; the quantizer all-reduces its
    statistics so every rank should hold bit-identical codes (a gradient codebook is kept in sync
    by DDP, its usage counts by the quantizer). This checks it.
    """
    if not distributed.is_distributed():
        return 0.0
    states = [*model.semantic_quantizer.state_dict().values(), model.pixel_quantizer.weight.detach()]
    worst = torch.zeros((), device=states[-1].device)
    for t in (t for t in states if t.is_floating_point()):
        reference = t.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (t.detach() - reference).abs().max())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)


def _checkpoint(
    run_dir: Path, step: int, parts: _Parts, position: DataPosition, keep_last: int, ctx: distributed.DistContext, metrics: dict[str, float],
) -> Path | None:
    """Check the weights, then save (rank 0); every rank returns after the save. Returns the folder on rank 0."""
    divergence = codebook_rank_divergence(parts.model)
    if divergence > 0:
        raise TrainingError(f"step {step}: the codebooks differ across ranks (max |diff| {divergence:.3g}); the run is not DDP-consistent")
    problem = _weights_problem(parts)  # identical weights on every rank: every rank stops alike
    if problem is not None:
        raise TrainingError(f"step {step}: the weights diverged ({problem}); not saved; {_last_good(run_dir)}")
    rng_ranks = _gather_rng(ctx)
    saved = None
    if ctx.is_main:
        state: dict[str, Any] = {
            "step": step, "optimizer": parts.optimizer.state_dict(), "rng": rng_state(), "data": position.to_dict(),
            "codebook_rank_divergence": divergence,
        }
        if ctx.world_size > 1:
            state["rng_ranks"] = rng_ranks
        if parts.disc_optimizer is not None and parts.discriminator is not None:
            state["discriminator"] = parts.discriminator.state_dict()
            state["disc_optimizer"] = parts.disc_optimizer.state_dict()
        if parts.ema is not None:
            state["ema"] = parts.ema
        largest = max((float(p.detach().abs().max()) for p in parts.params if p.numel()), default=0.0)
        meta = {"loss": metrics.get("loss"), "max_abs_trained_weight": largest}
        saved = save_checkpoint(run_dir, step, parts.model, state, keep_last=keep_last, meta=meta)
    distributed.barrier()
    return saved


def _weights_problem(parts: _Parts) -> str | None:
    """Non-finite weights anywhere, or trained weights (and their EMA) beyond MAX_ABS_WEIGHT."""
    trained = {name for name, p in parts.model.named_parameters() if p.requires_grad}
    tensors = list(parts.model.state_dict().items())
    if parts.ema is not None:
        trained |= {f"ema.{name}" for name in parts.ema}
        tensors += [(f"ema.{name}", t) for name, t in parts.ema.items()]
    return weights_problem(tensors, trained)
