"""Typed, validated configuration of ``stage: mllm`` runs (``semhitok train CONFIG.yaml``).

A run trains a :class:`semhitok.mllm.SemHiTokMLLM` (an LLM plus a frozen SemHiTok) on a mix of
understanding (image + question -> caption), generation (caption -> image) and text-only samples.
See ``configs/mini/mllm.yaml`` and ``docs/mllm.md`` ("Training").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config_types import ConfigError, check_at_least, check_fields, describe
from ..mllm.config import MLLMConfig
from .config_file import ConfigFile

__all__ = ["CaptionEvalConfig", "MLLMDataConfig", "MLLMOptimConfig", "MLLMRunConfig", "MLLMTrainConfig", "MixConfig"]

KINDS = ("understanding", "generation", "text")
DEFAULT_QUESTIONS = (
    "What is in the image?",
    "Describe the image.",
    "What does this picture show?",
    "Give a short caption for this image.",
)


@dataclass
class MixConfig:
    """Share of each sample kind in every batch (normalised to sum 1; 0 switches a kind off)."""

    understanding: float = 0.45
    generation: float = 0.45
    text: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 0, KINDS)
        if self.understanding + self.generation + self.text <= 0:
            raise ConfigError("", "at least one of understanding, generation, text must be > 0")

    def ratios(self) -> dict[str, float]:
        """``{kind: share}`` summing to 1, in the order of :data:`KINDS`."""
        total = self.understanding + self.generation + self.text
        return {k: getattr(self, k) / total for k in KINDS}


@dataclass
class MLLMDataConfig:
    """What the MLLM reads and how it is batched.

    Attributes:
        images: image-caption sources, each an image folder (captions in ``<stem>.txt``), a
            webdataset ``.tar`` shard or brace pattern (``.txt`` / ``.json`` captions), or a token
            folder written by ``semhitok tokenize`` (it has ``manifest.json``; its fingerprint must
            be the tokenizer's). Images without a caption are not used. ``--data`` replaces the list.
        text: text-only sources: JSON-lines files, one object per line with ``text`` (a document,
            loss on every token) or ``prompt`` and ``response`` (loss on the response).
        mix: the share of each sample kind (see :class:`MixConfig`).
        questions: understanding prompts; each understanding sample asks one (chosen by seed and
            sample index) and is trained to answer with the image's caption.
        uncond_prob: probability that a generation sample's caption becomes ``<uncond>`` (paper: 0.1).
        image_noise: probability that an image id a generation sample reads is replaced by a random
            one, its label kept (see :class:`semhitok.mllm.MLLMCollator`; not in the paper: 0).
        batch_size: samples per process per micro-batch; one optimizer step sees
            ``batch_size x world size x optim.grad_accum`` samples.
        num_workers: DataLoader processes that read and decode the samples.
        max_bad_fraction, min_seen: the bad-data policy (``semhitok.data.BadDataTracker``).
    """

    images: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    mix: MixConfig = field(default_factory=MixConfig)
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    uncond_prob: float = 0.1
    image_noise: float = 0.0
    batch_size: int = 8
    num_workers: int = 0
    max_bad_fraction: float = 0.01
    min_seen: int = 100

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, ("batch_size", "min_seen"))
        check_at_least(self, 0, ("num_workers",))
        for name in ("images", "text"):
            if any(not p for p in getattr(self, name)):
                raise ConfigError(name, "holds an empty path")
        if not self.questions or any(not q.strip() for q in self.questions):
            raise ConfigError("questions", "must hold at least one non-empty question")
        for name in ("uncond_prob", "image_noise", "max_bad_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(name, f"must be in [0, 1], got {getattr(self, name)}")


@dataclass
class MLLMOptimConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr`` (``schedule.warmup_cosine``).

    Attributes:
        adapter_lr: peak lr of the parts that start from scratch (the adapter, the image head, the
            special embeddings); None: ``lr``. The LLM's own weights (or its LoRA) keep ``lr``.
        adapter_schedule: ``cosine`` (warm-up, then decay to ``min_lr x adapter_lr / lr``) or
            ``constant`` (warm-up, then ``adapter_lr`` to the end): a head that starts at zero can
            keep learning while the LLM's updates shrink.
    """

    lr: float = 2e-4
    adapter_lr: float | None = None
    adapter_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError("min_lr", f"must be in [0, lr = {self.lr}], got {self.min_lr}")
        if self.adapter_lr is not None and self.adapter_lr <= 0:
            raise ConfigError("adapter_lr", f"must be > 0 or null, got {self.adapter_lr}")
        check_at_least(self, 0, ("weight_decay", "warmup_steps"))
        check_at_least(self, 1, ("grad_accum",))
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("betas", f"must be two values in [0, 1), got {list(self.betas)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError("grad_clip", f"must be > 0 or null, got {self.grad_clip}")


@dataclass
class MLLMRunConfig:
    """Length, precision, parallelism, logging and checkpointing.

    Attributes:
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 where the device has it natively).
        gradient_checkpointing: recompute the LLM's decoder layers in backward (less memory).
        parallel: under torchrun, ``ddp`` (every rank holds the whole model) or ``fsdp`` (FSDP2,
            ``fully_shard``: every decoder layer and the image head are their own units).
        compile: ``torch.compile`` each decoder layer (its elementwise work fused: 1.2x per sample on
            a 2-core CPU, benchmarks/mllm_train.py); sequences are then padded to a multiple of 8, so
            few shapes need compiling. The first steps of each shape are slow while it compiles.
    """

    max_steps: int = 1000
    seed: int = 0
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    gradient_checkpointing: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, ("max_steps", "log_every", "checkpoint_every", "keep_last"))
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"must be in [0, 2**63), got {self.seed}")


@dataclass
class CaptionEvalConfig:
    """Caption-following measured during training (:mod:`semhitok.evaluation.caption_following`).

    Every ``every`` steps (and at the last step) the caption information and the generative-
    classifier accuracies of a fixed set of labelled images go to metrics.jsonl and TensorBoard
    (``caption_info``, ``gen_cls_colour``, ``gen_cls_class``). Teacher-forced, no sampling: the run's
    random streams are untouched, so a resumed run stays bit-exact.

    Attributes:
        every: steps between measurements; 0 switches them off.
        data: a colour Fashion-MNIST build (``semhitok data colour-fashion-mnist``; its
            ``labels/SPLIT.jsonl`` names each image's class and colour).
        split: which split of it (keep the test split for the final scores).
        images: how many of its first images (each costs 20 teacher-forced sequences).
        batch_size: sequences per forward.
    """

    every: int = 0
    data: str = ""
    split: Literal["train", "val", "test"] = "val"
    images: int = 32
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 0, ("every",))
        check_at_least(self, 1, ("images", "batch_size"))
        if self.every and not self.data:
            raise ConfigError("data", "is empty; name a colour Fashion-MNIST build (or set eval.every: 0)")


@dataclass
class MLLMTrainConfig(ConfigFile):
    """One ``stage: mllm`` run.

    Attributes:
        llm: the causal LM: ``smollm2-135m`` or a local Hugging Face folder.
        tokenizer: the SemHiTok: a folder or a shipped name (``mini-semhitok``).
        mllm: how the MLLM is built and what trains (:class:`semhitok.mllm.MLLMConfig`).
        eval: caption-following measured during training (:class:`CaptionEvalConfig`).
    """

    stage: str = "mllm"
    llm: str = "smollm2-135m"
    tokenizer: str = "mini-semhitok"
    mllm: MLLMConfig = field(default_factory=MLLMConfig)
    data: MLLMDataConfig = field(default_factory=MLLMDataConfig)
    optim: MLLMOptimConfig = field(default_factory=MLLMOptimConfig)
    run: MLLMRunConfig = field(default_factory=MLLMRunConfig)
    eval: CaptionEvalConfig = field(default_factory=CaptionEvalConfig)

    def __post_init__(self) -> None:
        if self.stage != "mllm":
            raise ConfigError("stage", f"an MLLM config has stage: mllm, got {describe(self.stage)}")
        check_fields(self)
        for name in ("llm", "tokenizer"):
            if not getattr(self, name).strip():
                raise ConfigError(name, "is empty; give a name or a folder")
