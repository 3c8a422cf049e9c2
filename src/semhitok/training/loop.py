"""The training loop, written out: one stage of SemHiTok on one process or under torchrun DDP.

Flow of one optimizer step: set the lr (warm-up + cosine) -> ``grad_accum`` micro-batches of
forward + loss + backward (DDP syncs on the last) -> clip -> AdamW step -> (stages 2/3, after
``disc_start``) one discriminator step on the last micro-batch -> optional EMA of the weights ->
log -> checkpoint. The semantic EMA codebook updates itself inside the forward (train mode).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from .. import __version__
from ..data import TransformConfig, build_dataset
from ..losses import LossConfig, PixelReconstructionLoss, SemanticDistillationLoss
from ..modeling import SemHiTok
from .batches import DataPosition, iterate_batches
from .checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .schedule import warmup_cosine
from .stages import TRAINED_MODULES, prepare_stage


class TrainingError(RuntimeError):
    """A run cannot go on (bad config for this run folder, non-finite loss, ...): one clear line."""


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

    def __init__(self, model: SemHiTok, stage: str) -> None:
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, images: Tensor) -> Any:
        return self.model.semantic_forward(images) if self.stage == "semantic" else self.model(images)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    data_path: str | None = None,
    init: str | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Train one stage; returns where the exported model is. See ``docs/training.md``."""
    rank, world, device = _setup_distributed()
    run_dir = Path(run_dir)
    max_steps = max_steps or config.run.max_steps
    data_path = data_path or config.data.path
    if data_path is None:
        raise TrainingError("no training data: give --data PATH or data.path in the config")
    existing = list_checkpoints(run_dir)
    if existing and not resume:
        raise TrainingError(f"{run_dir} already has checkpoints (last: step {existing[-1].step}); pass --resume or choose another --out")
    if resume and not existing:
        raise TrainingError(f"--resume: {run_dir} has no checkpoint to resume from")

    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    model = _build_model(config, init or config.init)
    params = prepare_stage(model, config.stage)
    if config.run.gradient_checkpointing:
        for name in TRAINED_MODULES[config.stage]:
            for module in getattr(model, name).modules():
                if hasattr(module, "gradient_checkpointing"):
                    module.gradient_checkpointing = True
    model.to(device)
    pixel_stage = config.stage != "semantic"
    loss_fn: nn.Module = PixelReconstructionLoss(LossConfig(**config.loss)) if pixel_stage else SemanticDistillationLoss(**config.loss)
    loss_fn.to(device)
    discriminator = getattr(loss_fn, "discriminator", None)

    stage_module: nn.Module = StageModule(model, config.stage)
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

    step, position = 0, DataPosition()
    if resume:
        state = load_checkpoint(existing[-1].path, model, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        if disc_optimizer is not None:
            discriminator.load_state_dict(state["discriminator"])
            disc_optimizer.load_state_dict(state["disc_optimizer"])
        if ema is not None and "ema" in state:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
        set_rng_state(state["rng"])
        step, position = int(state["step"]), DataPosition(**state["data"])

    transform = TransformConfig(image_size=model.image_size, crop=config.data.crop, flip=config.data.flip)
    dataset = build_dataset(data_path, transform, seed=config.run.seed, max_bad_fraction=config.data.max_bad_fraction, min_seen=config.data.min_seen)
    batches = iterate_batches(
        dataset, config.data.batch_size, rank=rank, world=world, seed=config.run.seed,
        num_workers=config.data.num_workers, start=position,
    )
    if rank == 0:
        _write_run_files(run_dir, config, model, world, data_path, resume)
    log = _Logger(run_dir, enabled=rank == 0, quiet=quiet, total=max_steps, initial=step, stage=config.stage)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.run.precision == "bf16")
    accum = config.optim.grad_accum
    last_layer = model.pixel_decoder.proj_out.weight
    images_seen, started, metrics = 0, time.perf_counter(), {}
    stage_module.train()
    try:
        while step < max_steps:
            lr = warmup_cosine(step, base_lr=config.optim.lr, warmup_steps=config.optim.warmup_steps, total_steps=max_steps, min_lr=config.optim.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for micro in range(accum):
                position, batch = next(batches)
                images = batch.images.to(device, non_blocking=True)
                sync = contextlib.nullcontext() if micro == accum - 1 or world == 1 else stage_module.no_sync()
                with sync:
                    with autocast:
                        out = stage_module(images)
                        terms = loss_fn.generator_loss(images, out, step, last_layer=last_layer) if pixel_stage else loss_fn(out)
                    if not bool(torch.isfinite(terms["loss"])):
                        raise TrainingError(_non_finite_message(step, terms, run_dir))
                    (terms["loss"] / accum).backward()
                for key, value in {**terms, **_usage(out, pixel_stage)}.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) / accum
                images_seen += images.shape[0] * world
            if config.optim.grad_clip is not None:
                sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip))
            optimizer.step()
            if disc_optimizer is not None and step >= loss_fn.config.disc_start:
                disc_optimizer.zero_grad(set_to_none=True)  # the generator step left gradients here too
                with autocast:
                    d_terms = loss_fn.discriminator_loss(images, out.reconstruction.detach(), step)
                d_terms["loss"].backward()
                disc_optimizer.step()
                sums.update({f"disc_{k}": float(v.detach()) for k, v in d_terms.items()})
            if ema is not None:
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if name in ema:
                            ema[name].lerp_(p.detach(), 1 - config.run.ema_decay)
            step += 1
            elapsed = time.perf_counter() - started
            due = step == max_steps or step % config.run.log_every == 0
            if due and world > 1:  # log the global batch's means, not rank 0's share
                sums = _mean_over_ranks(sums, device)
            metrics = {"step": step, "lr": lr, "epoch": position.epoch, "images_per_second": images_seen / max(elapsed, 1e-9), **sums}
            log.step(step, metrics, force=due)
            if step % config.run.checkpoint_every == 0 or step == max_steps:
                _checkpoint(run_dir, step, model, optimizer, discriminator, disc_optimizer, ema, position, config.run.keep_last, rank)
    finally:
        log.close()

    model_dir = run_dir / "model"
    if rank == 0:
        export_model(run_dir, model_dir)
    if world > 1:
        dist.barrier()
    return TrainResult(run_dir, step, model_dir, float(metrics.get("images_per_second", 0.0)), metrics)


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
def _setup_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _ddp(module: nn.Module, device_ids: list[int] | None) -> DDP:
    """DDP without the per-forward buffer broadcast (newer torch names it forward_sync_buffers)."""
    import inspect

    flag = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    return DDP(module, device_ids=device_ids, **{flag: False})


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
    no_decay = lambda p: p.ndim < 2 or names[id(p)].endswith(("pos_embed", "pixel_quantizer.weight"))  # noqa: E731
    return [
        {"params": [p for p in params if not no_decay(p)], "weight_decay": weight_decay},
        {"params": [p for p in params if no_decay(p)], "weight_decay": 0.0},
    ]


def _mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= dist.get_world_size()
    return dict(zip(keys, packed.tolist()))


def _usage(out: Any, pixel_stage: bool) -> dict[str, Tensor]:
    q = out.semantic if pixel_stage else out.quantizer
    stats = {"semantic_usage": q.usage, "semantic_perplexity": q.perplexity}
    if pixel_stage:
        stats.update({"pixel_usage": out.pixel.usage, "pixel_perplexity": out.pixel.perplexity})
    return stats


def _non_finite_message(step: int, terms: dict[str, Tensor], run_dir: Path) -> str:
    parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    last = list_checkpoints(run_dir)
    kept = f"the last good checkpoint is {last[-1].path}" if last else "no checkpoint was written yet"
    return f"non-finite loss at step {step} ({parts}); stopped, {kept}"


def codebook_rank_divergence(model: SemHiTok) -> float:
    """Largest |difference| between this rank's and rank 0's codebook state (0.0 when in sync).

    The EMA codebook is a buffer that DDP does not synchronise; the quantizer all-reduces its
    statistics so every rank should hold bit-identical codes. This checks it.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return 0.0
    q = model.semantic_quantizer
    worst = torch.zeros((), device=q.embed.device)
    for t in (q.embed, q.cluster_size, q.embed_sum, model.pixel_quantizer.weight.detach()):
        reference = t.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (t.detach() - reference).abs().max())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)


def _checkpoint(run_dir, step, model, optimizer, discriminator, disc_optimizer, ema, position, keep_last, rank) -> None:
    divergence = codebook_rank_divergence(model)
    if divergence > 0:
        raise TrainingError(f"step {step}: the codebooks differ across ranks (max |diff| {divergence:.3g}); the run is not DDP-consistent")
    if rank == 0:
        state: dict[str, Any] = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(), "data": position.to_dict(), "codebook_rank_divergence": divergence}
        if disc_optimizer is not None:
            state["discriminator"] = discriminator.state_dict()
            state["disc_optimizer"] = disc_optimizer.state_dict()
        if ema is not None:
            state["ema"] = ema
        save_checkpoint(run_dir, step, model, state, keep_last=keep_last)
    if dist.is_initialized():
        dist.barrier()


def _git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write_run_files(run_dir: Path, config: TrainConfig, model: SemHiTok, world: int, data_path: str, resume: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.to_dict()
    resolved["data"]["path"] = str(data_path)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    model.config.to_json(run_dir / "model_config.json")
    info = {"git_revision": _git_revision(), "semhitok_version": __version__, "torch_version": torch.__version__, "world_size": world, "resumed": resume, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(run_dir / "run.jsonl", "a") as f:
        f.write(json.dumps(info) + "\n")


class _Logger:
    """metrics.jsonl + TensorBoard + a progress bar (or plain lines in quiet mode), rank 0 only."""

    SHOWN = ("loss", "lr", "semantic_usage", "pixel_usage", "images_per_second")

    def __init__(self, run_dir: Path, enabled: bool, quiet: bool, total: int, initial: int, stage: str) -> None:
        self.enabled, self.quiet = enabled, quiet
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.file = open(run_dir / "metrics.jsonl", "a")
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.bar = tqdm(total=total, initial=initial, desc=f"train {stage}", disable=quiet, dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float], force: bool) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        short = {k.replace("semantic_usage", "use").replace("pixel_usage", "sub").replace("images_per_second", "img/s"): _fmt(metrics[k]) for k in self.SHOWN if k in metrics}
        self.bar.set_postfix(short, refresh=False)
        if not force:
            return
        self.file.write(json.dumps({k: (v if math.isfinite(v) else None) for k, v in metrics.items()}) + "\n")
        self.file.flush()
        for key, value in metrics.items():
            if key != "step":
                self.writer.add_scalar(key, value, step)
        if self.quiet:
            print(f"step {step} " + " ".join(f"{k}={v}" for k, v in short.items()), flush=True)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()
            self.writer.close()


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
