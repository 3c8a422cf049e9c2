"""The MLLM's training loop (``stage: mllm``), written out: one process, or torchrun DDP / FSDP2.

Flow of one optimizer step: set the lr (warm-up + cosine) -> read ``grad_accum`` micro-batches
(images without ids are tokenized here by the frozen SemHiTok; the collator builds the sequences and
does the unconditional swap) -> count the labelled positions of the whole step over all ranks ->
per micro-batch forward (chunked cross-entropy at labelled positions only) and backward of
``nll_sum x world / labelled positions`` (so the step's loss is the mean over every labelled token of
the global batch, whatever the split over ranks and micro-batches) -> clip -> AdamW -> log ->
checkpoint.

Checkpoints hold only what trains (adapter, image head, specials, LoRA or all LLM weights), the
optimizer, every rank's RNG state and the data position; the frozen LLM and tokenizer are loaded
from the config's sources again on resume. The finished run exports ``RUN_DIR/model`` with
:meth:`SemHiTokMLLM.save_pretrained`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import distributed
from ..data import BadDataTracker
from ..mllm import IGNORE_INDEX, MLLMBatch, MLLMCollator, MLLMExample, SemHiTokMLLM
from ..modeling import SemHiTok
from ..precision import ResolvedPrecision, resolve_and_warn, resolve_precision
from .checkpoint import read_checkpoint_state, read_checkpoint_weights, remove_partial, rng_state, save_checkpoint, set_rng_state, weights_problem
from .errors import CheckpointError, TrainingError, TrainingInterrupted
from .interrupt import StopSignals
from .loop import bad_files_log
from .mllm_config import MLLMTrainConfig
from .caption_probe import CaptionProbe
from .mllm_data import MixPlan, MixPosition, RawSample, mixed_batches, open_image_pool, open_text_pool
from .run_folder import record_run_start, resume_config_changes, trim_metrics
from .run_parts import RunLogger, agreed_stop, all_ranks_ok, check_run_folder, ddp, gather_rng, last_good, lock_run_folder, run_info
from .schedule import warmup_cosine

__all__ = ["MLLMTrainResult", "build_mllm", "train_mllm"]

SHOWN = ("loss", "text_nll", "image_nll", "caption_info", "gen_cls_colour", "gen_cls_class", "lr", "tokens_per_second")
SHORT = {"text_nll": "txt", "image_nll": "img", "caption_info": "info", "gen_cls_colour": "gc-col", "gen_cls_class": "gc-cls", "tokens_per_second": "tok/s"}
# Sums over the global batch that the logged metrics are formed from (all-reduced across ranks).
_SUMS = ("nll", "labels", "text_nll", "text", "image_nll", "image", "tokens", "samples")


@dataclass
class MLLMTrainResult:
    """What a finished run reports."""

    run_dir: Path
    steps: int
    model_dir: Path
    tokens_per_second: float
    last_metrics: dict[str, float]


@dataclass
class _Parts:
    """Everything one optimizer step touches."""

    mm: SemHiTokMLLM  # the model itself (under FSDP2 its parameters are sharded in place)
    module: nn.Module  # what the forward is called on: ``mm`` or its DDP wrapper
    names: list[str]  # the trained parameters' names, in the optimizer's order
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    precision: ResolvedPrecision
    collator: MLLMCollator
    fsdp: bool


def train_mllm(
    config: MLLMTrainConfig,
    run_dir: str | Path,
    *,
    data_paths: list[str] | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    allow_config_change: bool = False,
    quiet: bool = False,
) -> MLLMTrainResult:
    """Train an MLLM; returns where the exported MLLM folder is (``RUN_DIR/model``).

    Args:
        data_paths: replace ``data.images`` (``--data``).
        max_steps: stop after this step (default ``run.max_steps``); the schedule still runs to
            ``run.max_steps``, so stopping early and resuming changes nothing.
        resume: continue from the run folder's last checkpoint; its ``config.yaml`` must match
            unless ``allow_config_change`` (the change is recorded in run.jsonl).

    Raises:
        TrainingError: a run folder in use or not matching ``resume``, a config change on resume,
            no data for a kind the mix asks for, a non-finite loss or diverged weights.
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint of the last finished step was saved.
        BadDataError, FileNotFoundError, ValueError: the data, the LLM or the tokenizer.
    """
    ctx = distributed.setup()
    run_dir = Path(run_dir)
    if data_paths:
        config = replace(config, data=replace(config.data, images=tuple(data_paths)))
    stop_at = max_steps or config.run.max_steps
    resolved = _resolved_config(config)
    existing = check_run_folder(run_dir, resume)
    changes = resume_config_changes(run_dir, resolved, resume, allow_config_change)

    torch.manual_seed(config.run.seed)  # identical initial weights on every rank
    mm = build_mllm(config)
    step, position, state = 0, MixPosition(), None
    if resume:
        # Trained tensors go in before any wrapping (FSDP2 shards them in place).
        _load_trained(mm, read_checkpoint_weights(existing[-1].path), existing[-1].path)
        state = read_checkpoint_state(existing[-1].path)
        step, position = int(state["step"]), MixPosition.from_dict(state["data"])
    parts = _build_parts(config, mm, ctx)
    # Read the first batch before anything is written: bad data leaves no run folder behind.
    batches = _open_data(config, mm, ctx, position, bad_files_log(run_dir))
    if state is not None:
        _restore(parts, state, ctx)
    probe = CaptionProbe.open(config.eval, mm, ctx.device) if config.eval.every else None
    lock = lock_run_folder(run_dir, ctx)
    set_up = False
    try:
        if ctx.is_main:
            remove_partial(run_dir)
            if resume:
                trim_metrics(run_dir, step)
            info = {**run_info(ctx.world_size, resume, step), "precision": parts.precision.name, "parallel": config.run.parallel}
            record_run_start(run_dir, resolved, info, changes, step)
        set_up = True
        with StopSignals() as signals:
            metrics = _run_steps(config, parts, batches, run_dir, ctx, step, stop_at, signals, quiet, probe)
        model_dir = run_dir / "model"
        _export(config, parts, model_dir, ctx)
        distributed.barrier()
    finally:
        if lock is not None:
            lock.release(discard=not set_up)  # a new folder whose setup failed is removed
    return MLLMTrainResult(run_dir, int(metrics.get("step", step)), model_dir, float(metrics.get("tokens_per_second", 0.0)), metrics)


def build_mllm(config: MLLMTrainConfig) -> SemHiTokMLLM:
    """The MLLM of ``config`` before training: the LLM and the tokenizer from their sources, a
    fresh adapter and image head (drawn from torch's global generator), in train mode."""
    mm = SemHiTokMLLM.from_llm(config.llm, config.tokenizer, config=config.mllm)
    return mm.train()


def _resolved_config(config: MLLMTrainConfig) -> dict[str, Any]:
    """The config as ``config.yaml`` records it: local paths made absolute (a resume from another
    working directory names the same files); names (``smollm2-135m``, ``mini-semhitok``) kept."""
    from ..llm.local import SMOLLM2_135M
    from ..pretrained import PRETRAINED

    resolved = config.to_dict()
    resolved["data"]["images"] = [os.path.abspath(p) for p in config.data.images]
    resolved["data"]["text"] = [os.path.abspath(p) for p in config.data.text]
    if config.eval.data:
        resolved["eval"]["data"] = os.path.abspath(config.eval.data)
    if config.llm.lower() != SMOLLM2_135M:
        resolved["llm"] = os.path.abspath(config.llm)
    if config.tokenizer not in PRETRAINED:
        resolved["tokenizer"] = os.path.abspath(config.tokenizer)
    return resolved


def _build_parts(config: MLLMTrainConfig, mm: SemHiTokMLLM, ctx: distributed.DistContext) -> _Parts:
    """Device, gradient checkpointing, DDP or FSDP2 wrapping, AdamW."""
    if config.run.gradient_checkpointing:
        # transformers 5.x names it activation_checkpointing_enable, 4.x gradient_checkpointing_enable.
        enable = getattr(mm.llm, "activation_checkpointing_enable", None) or mm.llm.gradient_checkpointing_enable
        enable()
    mm.to(ctx.device)
    fsdp = ctx.world_size > 1 and config.run.parallel == "fsdp"
    module: nn.Module = mm
    if fsdp:
        _fully_shard(mm)
    elif ctx.world_size > 1:
        # The frozen buffers (codebooks) are identical on every rank: no per-forward broadcast.
        module = ddp(mm, [ctx.device.index] if ctx.device.type == "cuda" else None)
    if config.run.compile:  # after sharding, so the compiled layers include FSDP2's hooks
        for layer in _decoder_layers(mm):
            layer.compile()  # in place: parameter names and checkpoints are unchanged
    named = mm.trainable_parameters()  # after sharding: FSDP2 replaces the parameters by DTensors
    groups, names = [], []
    for new in (False, True):  # the LLM's weights (or LoRA), then the parts that start from scratch
        for decays in (True, False):  # no weight decay on biases and norms
            picked = [(n, p) for n, p in named if _is_new(n) == new and (p.ndim >= 2) == decays]
            if picked:
                groups.append({"params": [p for _, p in picked], "weight_decay": config.optim.weight_decay if decays else 0.0, "new": new})
                names += [n for n, _ in picked]
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr, betas=config.optim.betas)
    device = ctx.device
    precision = resolve_and_warn(config.run.precision, device, "run.precision") if ctx.is_main else resolve_precision(config.run.precision, device)
    collator = MLLMCollator(
        mm.format, uncond_prob=config.data.uncond_prob, seed=config.run.seed, image_noise=config.data.image_noise,
        pad_to_multiple_of=8 if config.run.compile else None,
    )
    params = [p for group in groups for p in group["params"]]
    return _Parts(mm, module, names, params, optimizer, precision, collator, fsdp)


def _is_new(name: str) -> bool:
    """Whether a trained parameter starts from scratch (adapter, image head, specials)."""
    return name.startswith(("adapter.", "image_head."))


def _fully_shard(mm: SemHiTokMLLM) -> None:
    """FSDP2: every decoder layer and the image head are units of their own, the rest (embedding
    table, adapter, LM head, final norm) the root's; the frozen tokenizer is left unsharded (it
    only tokenizes images, outside the forward)."""
    from torch.distributed.fsdp import fully_shard

    for layer in _decoder_layers(mm, "run.parallel: fsdp", "shard; use ddp"):
        fully_shard(layer)
    fully_shard(mm.image_head)
    fully_shard(mm, ignored_params=set(mm.tokenizer.parameters()))


def _decoder_layers(mm: SemHiTokMLLM, option: str = "run.compile", advice: str = "compile; set it to false") -> nn.ModuleList:
    """The LLM's decoder layers (``base_model.layers``), or a one-line error naming ``option``."""
    layers = getattr(mm.llm.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise TrainingError(f"{option}: {type(mm.llm).__name__} has no decoder layers at base_model.layers to {advice}")
    return layers


def _open_data(
    config: MLLMTrainConfig, mm: SemHiTokMLLM, ctx: distributed.DistContext, position: MixPosition, log: Path,
) -> Iterator[tuple[MixPosition, list[RawSample]]]:
    """The micro-batch stream from ``position``, its first batch already read (bad data fails here)."""
    data = config.data
    ratios = data.mix.ratios()
    tracker = BadDataTracker(data.max_bad_fraction, data.min_seen, log)
    images = texts = None
    if ratios["understanding"] + ratios["generation"] > 0:
        if not data.images:
            raise TrainingError("no image data: give --data PATH or data.images in the config (or set data.mix.understanding and data.mix.generation to 0)")
        grid = (mm.tokenizer.grid_size, mm.tokenizer.grid_size)
        images = open_image_pool(data.images, mm.tokenizer.image_size, mm.tokenizer.fingerprint(), grid, tracker)
    if ratios["text"] > 0:
        if not data.text:
            raise TrainingError("no text data: give data.text (JSON-lines files) in the config, or set data.mix.text to 0")
        texts = open_text_pool(data.text, tracker)
    n_images = len(images) if images is not None else 0
    sizes = {"understanding": n_images, "generation": n_images, "text": len(texts) if texts is not None else 0}
    plan = MixPlan(ratios, sizes, len(data.questions), config.run.seed)
    stream = mixed_batches(
        plan, position, batch_size=data.batch_size, rank=ctx.rank, world=ctx.world_size, num_workers=data.num_workers,
        images=images, texts=texts, questions=data.questions,
    )
    first = next(stream)
    return itertools.chain([first], stream)


def _restore(parts: _Parts, state: dict[str, Any], ctx: distributed.DistContext) -> None:
    """The optimizer (its full tensors sharded again under FSDP2) and this rank's RNG state."""
    optimizer_state = state["optimizer"]
    if parts.fsdp:
        from torch.distributed.tensor import distribute_tensor

        for index, values in optimizer_state["state"].items():
            p = parts.params[int(index)]
            for key, value in values.items():
                if key != "step" and isinstance(value, Tensor) and value.shape == p.shape:
                    values[key] = distribute_tensor(value.to(ctx.device), p.device_mesh, p.placements)
    parts.optimizer.load_state_dict(optimizer_state)
    per_rank = state.get("rng_ranks")
    set_rng_state(per_rank[ctx.rank] if per_rank is not None and len(per_rank) == ctx.world_size else state["rng"])


def _run_steps(
    config: MLLMTrainConfig, parts: _Parts, batches: Iterator[tuple[MixPosition, list[RawSample]]], run_dir: Path,
    ctx: distributed.DistContext, step: int, stop_at: int, signals: StopSignals, quiet: bool, probe: CaptionProbe | None,
) -> dict[str, float]:
    """Optimizer steps from ``step`` to ``stop_at``, logging and checkpointing; the last metrics."""
    log = RunLogger(run_dir, enabled=ctx.is_main, quiet=quiet, total=stop_at, initial=step, stage="mllm", shown=SHOWN, short=SHORT)
    tokens_seen, samples_seen, started, metrics = 0.0, 0.0, time.perf_counter(), {"step": step}
    parts.module.train()
    parts.mm.train()
    try:
        while step < stop_at:
            lr, adapter_lr = _learning_rates(config, step)
            sums, grad_norm, position = _optimizer_step(config, parts, batches, step, (lr, adapter_lr), run_dir, ctx)
            step += 1
            stop = agreed_stop(signals.requested, ctx)
            checkpoint_due = step % config.run.checkpoint_every == 0 or step == stop_at or stop is not None
            due = checkpoint_due or step % config.run.log_every == 0
            tokens_seen += sums["tokens"]
            samples_seen += sums["samples"]
            elapsed = max(time.perf_counter() - started, 1e-9)
            metrics = {
                "step": step, "lr": lr, **({"adapter_lr": adapter_lr} if config.optim.adapter_lr is not None else {}), "loss": _ratio(sums["nll"], sums["labels"]),
                "text_nll": _ratio(sums["text_nll"], sums["text"]), "image_nll": _ratio(sums["image_nll"], sums["image"]),
                "labelled_tokens": sums["labels"], "tokens_per_second": tokens_seen / elapsed, "samples_per_second": samples_seen / elapsed,
                "samples_seen": float(position.sample),
            }
            if grad_norm is not None:
                metrics["grad_norm"] = grad_norm
            if probe is not None and (step % config.eval.every == 0 or step == stop_at):
                metrics.update(_measure(probe, parts, ctx))
                due = True
            log.step(step, metrics, force=due)
            saved = _checkpoint(run_dir, step, parts, position, config.run.keep_last, ctx, metrics) if checkpoint_due else None
            if stop is not None:
                raise TrainingInterrupted(stop, step, saved)
    finally:
        log.close()
    return metrics


def _measure(probe: CaptionProbe, parts: _Parts, ctx: distributed.DistContext) -> dict[str, float]:
    """The probe's caption-following metrics, on every rank (under FSDP2 the root's parameters are
    gathered first: the probe calls the model's parts, not its forward)."""
    if parts.fsdp:
        parts.mm.unshard()  # type: ignore[operator]  # FSDPModule's method
    try:
        with parts.precision.autocast(ctx.device):
            return probe.measure(parts.mm)
    finally:
        if parts.fsdp:
            parts.mm.reshard()  # type: ignore[operator]


def _learning_rates(config: MLLMTrainConfig, step: int) -> tuple[float, float]:
    """The LLM's lr and the new parts' lr at ``step``."""
    optim, total = config.optim, config.run.max_steps
    lr = warmup_cosine(step, base_lr=optim.lr, warmup_steps=optim.warmup_steps, total_steps=total, min_lr=optim.min_lr)
    if optim.adapter_lr is None:
        return lr, lr
    if optim.adapter_schedule == "constant":
        return lr, warmup_cosine(step, base_lr=optim.adapter_lr, warmup_steps=optim.warmup_steps, total_steps=total, min_lr=optim.adapter_lr)
    min_lr = optim.min_lr * optim.adapter_lr / optim.lr
    return lr, warmup_cosine(step, base_lr=optim.adapter_lr, warmup_steps=optim.warmup_steps, total_steps=total, min_lr=min_lr)


def _ratio(total: float, count: float) -> float:
    return total / count if count else float("nan")


def _optimizer_step(
    config: MLLMTrainConfig, parts: _Parts, batches: Iterator[tuple[MixPosition, list[RawSample]]],
    step: int, lrs: tuple[float, float], run_dir: Path, ctx: distributed.DistContext,
) -> tuple[dict[str, float], float | None, MixPosition]:
    """``grad_accum`` micro-batches, clip, AdamW; the step's global sums, gradient norm, data position.
    ``lrs``: the LLM's lr and the new parts' lr."""
    for group in parts.optimizer.param_groups:
        group["lr"] = lrs[1] if group["new"] else lrs[0]
    parts.optimizer.zero_grad(set_to_none=True)
    micro: list[MLLMBatch] = []
    position = MixPosition()
    for _ in range(config.optim.grad_accum):
        position, raw = next(batches)
        micro.append(_collate(parts, raw, ctx.device))
    # The loss of the step is the mean over every labelled position of the global batch: count them first.
    local = sum(int((b.labels[:, 1:] != IGNORE_INDEX).sum()) for b in micro)
    total = _sum_over_ranks(torch.tensor([float(local)], dtype=torch.float64), ctx)[0]
    scale = ctx.world_size / max(total, 1.0)  # DDP / FSDP average the gradients over the ranks
    autocast = parts.precision.autocast(ctx.device)
    sums = dict.fromkeys(_SUMS, 0.0)
    for index, batch in enumerate(micro):
        last = index == len(micro) - 1
        with _gradient_sync(parts, last):
            with autocast:
                out = parts.module(**batch.to(ctx.device).model_inputs())
            # Agreed by all ranks: one rank stopping alone would leave the others waiting in a collective.
            if not all_ranks_ok(bool(torch.isfinite(out.nll_sum)), ctx):
                raise TrainingError(f"non-finite loss at step {step} (this rank's nll_sum={float(out.nll_sum.detach()):.4g}); stopped, {last_good(run_dir)}")
            (out.nll_sum * scale).backward()
        for key, value in (("nll", out.nll_sum.detach()), ("labels", out.num_labels), ("text_nll", out.text_nll), ("text", out.num_text),
                           ("image_nll", out.image_nll), ("image", out.num_image), ("tokens", batch.attention_mask.sum()), ("samples", len(batch.kinds))):
            sums[key] += float(value)
    grad_norm = None
    if config.optim.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(parts.params, config.optim.grad_clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    parts.optimizer.step()
    packed = _sum_over_ranks(torch.tensor([sums[k] for k in _SUMS], dtype=torch.float64), ctx)
    return dict(zip(_SUMS, packed)), grad_norm, position


def _gradient_sync(parts: _Parts, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Gradients are reduced across ranks on the last micro-batch only."""
    if parts.fsdp:
        parts.mm.set_requires_gradient_sync(last)  # type: ignore[operator]  # FSDPModule's method
        return contextlib.nullcontext()
    if last or not hasattr(parts.module, "no_sync"):
        return contextlib.nullcontext()
    return parts.module.no_sync()  # type: ignore[operator]


def _collate(parts: _Parts, raw: list[RawSample], device: torch.device) -> MLLMBatch:
    """Raw samples -> a padded batch: images without ids are tokenized by the frozen SemHiTok (in
    fp32: the ids are those ``semhitok tokenize`` writes by default), then the collator."""
    pending = [i for i, s in enumerate(raw) if s.ids is None and s.image is not None]
    ids: dict[int, Tensor] = {i: s.ids for i, s in enumerate(raw) if s.ids is not None}
    if pending:
        images = torch.stack([raw[i].image for i in pending]).to(device)  # type: ignore[misc]
        with torch.no_grad():
            encoded = parts.mm.tokenizer.encode(images).ids.cpu()
        ids.update({i: encoded[n] for n, i in enumerate(pending)})
    examples = [MLLMExample(s.kind, s.text, image_ids=ids.get(i), answer=s.answer, key=s.sample) for i, s in enumerate(raw)]  # type: ignore[arg-type]
    return parts.collator(examples)


def _sum_over_ranks(values: Tensor, ctx: distributed.DistContext) -> list[float]:
    if ctx.world_size > 1:
        values = values.to(ctx.device)
        dist.all_reduce(values)
    return values.cpu().tolist()


# ---- checkpoints and export ----------------------------------------------------------------------
def _trained_tensors(parts: _Parts) -> dict[str, Tensor]:
    """``{name: full tensor}`` of every trained parameter (a collective under FSDP2)."""
    out = {}
    for name, p in zip(parts.names, parts.params):
        t = p.detach()
        out[name] = t.full_tensor() if hasattr(t, "full_tensor") else t
    return out


def _full_optimizer_state(parts: _Parts) -> dict[str, Any]:
    """The optimizer's state dict with whole tensors (FSDP2's shards gathered: a collective)."""
    state = parts.optimizer.state_dict()
    if parts.fsdp:
        state["state"] = {i: {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in values.items()} for i, values in state["state"].items()}
    return state


def _load_trained(mm: SemHiTokMLLM, weights: dict[str, Tensor], where: Path) -> None:
    """Put a checkpoint's trained tensors into an unwrapped model (names and shapes must match)."""
    trained = dict(mm.trainable_parameters())
    if set(weights) != set(trained):
        missing, extra = sorted(set(trained) - set(weights)), sorted(set(weights) - set(trained))
        raise CheckpointError(f"checkpoint {where}: its tensors do not fit this model (missing {missing[:3]}, unexpected {extra[:3]}); was mllm.train or the LLM changed?")
    with torch.no_grad():
        for name, p in trained.items():
            if p.shape != weights[name].shape:
                raise CheckpointError(f"checkpoint {where}: {name} has shape {tuple(weights[name].shape)}, the model's is {tuple(p.shape)}")
            p.copy_(weights[name])


def _checkpoint(
    run_dir: Path, step: int, parts: _Parts, position: MixPosition, keep_last: int, ctx: distributed.DistContext, metrics: dict[str, float],
) -> Path | None:
    """Check the trained weights, then save them with the optimizer, RNG and data position (rank 0)."""
    weights = _trained_tensors(parts)
    problem = weights_problem(weights.items(), set(weights))  # identical on every rank: all stop alike
    if problem is not None:
        raise TrainingError(f"step {step}: the weights diverged ({problem}); not saved; {last_good(run_dir)}")
    optimizer_state = _full_optimizer_state(parts)
    rng_ranks = gather_rng(ctx)
    saved = None
    if ctx.is_main:
        state: dict[str, Any] = {"step": step, "optimizer": optimizer_state, "rng": rng_state(), "data": position.to_dict()}
        if ctx.world_size > 1:
            state["rng_ranks"] = rng_ranks
        largest = max((float(t.abs().max()) for t in weights.values() if t.numel()), default=0.0)
        loss = metrics.get("loss")
        saved = save_checkpoint(run_dir, step, weights, state, keep_last=keep_last, meta={"loss": loss, "max_abs_trained_weight": largest})
    distributed.barrier()
    return saved


def _export(config: MLLMTrainConfig, parts: _Parts, model_dir: Path, ctx: distributed.DistContext) -> None:
    """``save_pretrained`` into ``model_dir`` (rank 0). Under FSDP2 the trained tensors are gathered
    and put into a freshly built, unsharded copy of the model first."""
    if not parts.fsdp:
        if ctx.is_main:
            parts.mm.save_pretrained(model_dir)
        return
    weights = {k: v.cpu() for k, v in _trained_tensors(parts).items()}
    if ctx.is_main:
        fresh = build_mllm(config)
        _load_trained(fresh, weights, model_dir)
        fresh.save_pretrained(model_dir)
