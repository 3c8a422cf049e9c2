"""Typed, validated configuration of a training run (one stage), loadable from YAML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import SemHiTokConfig, merge_dicts
from ..config_types import ConfigError, build_section, check_fields, check_partial, describe
from ..losses.config import LossConfig, SemanticLossConfig
from .config_file import ConfigFile
from .stages import TRAINED_MODULES


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay (``schedule.warmup_cosine``)."""

    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    disc_lr: float | None = None  # discriminator learning rate (default: lr)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lr <= 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError("min_lr", f"must be in [0, lr = {self.lr}], got {self.min_lr}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError("betas", f"must be two values in [0, 1), got {list(self.betas)}")
        if self.warmup_steps < 0:
            raise ConfigError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.grad_accum < 1:
            raise ConfigError("grad_accum", f"must be >= 1, got {self.grad_accum}")
        for name in ("grad_clip", "disc_lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(name, f"must be > 0 or null, got {value}")


@dataclass
class DataConfig:
    """Where the images come from and how they are batched (``--data`` overrides ``path``).

    ``batch_size`` is per process (rank): each optimizer step sees
    ``batch_size x world size x optim.grad_accum`` images in all (``training/batches.py`` gives
    every rank its own ``batch_size`` images per micro-batch).
    """

    path: str | None = None
    batch_size: int = 8
    num_workers: int = 0
    crop: Literal["center", "random"] = "random"
    flip: bool = True
    max_bad_fraction: float = 0.01
    min_seen: int = 100  # the bad-fraction threshold applies once this many files were read

    def __post_init__(self) -> None:
        check_fields(self)
        if self.path == "":
            raise ConfigError("path", "is empty; give a folder or shard pattern, or null")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("min_seen", 1)):
            if getattr(self, name) < low:
                raise ConfigError(name, f"must be >= {low}, got {getattr(self, name)}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError("max_bad_fraction", f"must be in [0, 1], got {self.max_bad_fraction}")


@dataclass
class RunConfig:
    """Length, precision, logging and checkpointing of the run."""

    max_steps: int = 1000
    seed: int = 0
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # auto: bf16 where the device has it natively
    ema_decay: float | None = None  # EMA of the trained weights; None disables it
    gradient_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("max_steps", "log_every", "checkpoint_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range
            raise ConfigError("seed", f"must be in [0, 2**63), got {self.seed}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError("ema_decay", f"must be in (0, 1) or null, got {self.ema_decay}")


StageName = Literal["semantic", "pixel", "decoder"]


@dataclass
class TrainConfig(ConfigFile):
    """One training stage.

    Attributes:
        stage: ``semantic`` (stage 1), ``pixel`` (stage 2) or ``decoder`` (stage 3).
        model: the architecture: ``preset:`` plus overrides, or overrides on the ``init`` model's
            config (see :meth:`model_config`). Its keys and value types are checked at load; with
            ``init`` the ranges are checked once merged onto the init folder's config.
        init: a SemHiTok folder (``semhitok export`` of the previous stage) to start from.
        loss: the stage's loss settings: a ``SemanticLossConfig`` for ``semantic``, a
            ``LossConfig`` for ``pixel`` and ``decoder`` (given as a mapping of its fields).
    """

    stage: StageName
    model: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: LossConfig | SemanticLossConfig | dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in TRAINED_MODULES:
            raise ConfigError("stage", f"must be one of {', '.join(TRAINED_MODULES)}, got {describe(self.stage)}")
        # `loss` is typed by the stage; everything else by its annotation.
        check_fields(self, skip=("loss",))
        if self.init == "":
            raise ConfigError("init", "is empty; give a model folder or null")
        if self.stage != "semantic" and self.init is None:
            raise ConfigError("init", f"stage {self.stage!r} starts from the previous stage's model: set 'init' (or --init)")
        loss_cls = SemanticLossConfig if self.stage == "semantic" else LossConfig
        if self.loss is not None and not isinstance(self.loss, (Mapping, loss_cls)):
            raise ConfigError("loss", f"stage {self.stage!r} takes a {loss_cls.__name__} mapping, got {describe(self.loss)}")
        self.loss = build_section("loss", {} if self.loss is None else self.loss, loss_cls)
        if self.init is None:
            if not self.model:
                raise ConfigError("model", "a training config needs a 'model' section (e.g. preset: tiny) or an 'init' model folder")
            model_config = self.model_config()  # validate now, not after the data has been opened
            # Stage 1 distils the teacher: on random teacher weights its "semantic" codes mean
            # nothing. Only the tiny preset (tests, the quick demo) may do that, knowingly.
            if self.model.get("preset") != "tiny" and model_config.teacher.pretrained_path is None:
                raise ConfigError(
                    "model.teacher.pretrained_path",
                    "is not set: stage 1 needs the teacher's weights (a local SigLIP/CLIP folder, or the mini-world teacher's model/ folder)",
                )
        else:
            if "preset" in self.model:
                raise ConfigError("model.preset", "cannot be combined with 'init': the init model fixes the architecture")
            # The values are merged onto the init folder's config later; their keys and types can
            # be checked now, before any folder or data is opened.
            self.model = check_partial("model", self.model, SemHiTokConfig)

    def model_config(self, init_config: SemHiTokConfig | None = None) -> SemHiTokConfig:
        """The architecture to train: the ``model`` section alone (``preset:`` + overrides), or,
        when starting from a model folder, that folder's config with ``model`` as overrides (stage
        3 enlarges the pixel decoder this way)."""
        try:
            if init_config is not None:
                if "preset" in self.model:
                    raise ConfigError("preset", "cannot be combined with 'init': the init model fixes the architecture")
                return SemHiTokConfig.from_dict(merge_dicts(init_config.to_dict(), self.model))
            return SemHiTokConfig.from_section(self.model)
        except ConfigError as exc:
            raise exc.within("model") from None

    @classmethod
    def check_top_level(cls, raw: dict[str, Any]) -> None:
        if "stage" not in raw:
            raise ConfigError("stage", f"missing: a training config needs 'stage' ({', '.join(TRAINED_MODULES)})")
