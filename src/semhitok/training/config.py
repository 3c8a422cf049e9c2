"""Typed, validated configuration of a training run (one stage), loadable from YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import SemHiTokConfig, config_section, merge_dicts
from ..yaml_io import load_yaml
from .overrides import apply_overrides
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
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= optim.min_lr <= optim.lr and optim.lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.weight_decay < 0 or len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("optim.weight_decay must be >= 0 and optim.betas two values in [0, 1)")
        if self.warmup_steps < 0 or self.grad_accum < 1:
            raise ValueError("optim.warmup_steps must be >= 0 and optim.grad_accum >= 1")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError("optim.grad_clip must be > 0 or null")


@dataclass
class DataConfig:
    """Where the images come from and how they are batched (``--data`` overrides ``path``)."""

    path: str | None = None
    batch_size: int = 8
    num_workers: int = 0
    crop: Literal["center", "random"] = "random"
    flip: bool = True
    max_bad_fraction: float = 0.01
    min_seen: int = 100  # the bad-fraction threshold applies once this many files were read

    def __post_init__(self) -> None:
        if self.min_seen < 1:
            raise ValueError("data.min_seen must be >= 1")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("data.batch_size must be >= 1 and data.num_workers >= 0")
        if self.crop not in ("center", "random"):
            raise ValueError(f"data.crop must be 'center' or 'random', got {self.crop!r}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ValueError("data.max_bad_fraction must be in [0, 1]")


@dataclass
class RunConfig:
    """Length, precision, logging and checkpointing of the run."""

    max_steps: int = 1000
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    ema_decay: float | None = None  # EMA of the trained weights; None disables it
    gradient_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.log_every < 1 or self.checkpoint_every < 1 or self.keep_last < 1:
            raise ValueError("run.max_steps, log_every, checkpoint_every and keep_last must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"run.precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError("run.ema_decay must be in (0, 1) or null")


@dataclass
class TrainConfig:
    """One training stage.

    Attributes:
        stage: ``semantic`` (stage 1), ``pixel`` (stage 2) or ``decoder`` (stage 3).
        model: the architecture: ``preset:`` plus overrides, or overrides on the ``init`` model's
            config (see :meth:`model_config`).
        init: a SemHiTok folder (``semhitok export`` of the previous stage) to start from.
        loss: loss weights, validated by the stage's loss (see ``semhitok.losses``).
    """

    stage: str
    model: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    loss: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in TRAINED_MODULES:
            raise ValueError(f"stage must be one of {', '.join(TRAINED_MODULES)}, got {self.stage!r}")
        for name, cls in (("optim", OptimConfig), ("data", DataConfig), ("run", RunConfig)):
            setattr(self, name, config_section(name, getattr(self, name), cls))
        if not isinstance(self.model, dict) or not isinstance(self.loss, dict):
            raise ValueError("the 'model' and 'loss' sections must be mappings")
        if self.stage != "semantic" and self.init is None:
            raise ValueError(f"stage {self.stage!r} starts from the previous stage's model: set 'init' (or --init)")
        if self.init is None:
            if not self.model:
                raise ValueError("a training config needs a 'model' section (e.g. preset: tiny) or an 'init' model folder")
            self.model_config()  # validate now, not after the data has been opened

    def model_config(self, init_config: SemHiTokConfig | None = None) -> SemHiTokConfig:
        """The architecture to train: the ``model`` section alone (``preset:`` + overrides), or,
        when starting from a model folder, that folder's config with ``model`` as overrides (stage
        3 enlarges the pixel decoder this way)."""
        section = dict(self.model)
        preset = section.pop("preset", None)
        if init_config is not None:
            if preset is not None:
                raise ValueError("'model.preset' cannot be combined with 'init': the init model fixes the architecture")
            return SemHiTokConfig.from_dict(merge_dicts(init_config.to_dict(), section))
        return SemHiTokConfig.from_preset(preset, **section) if preset else SemHiTokConfig.from_dict(section)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read a YAML file, apply ``key=value`` overrides, validate."""
        raw = load_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        raw = apply_overrides(raw, overrides or [])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {', '.join(unknown)}")
        if "stage" not in raw:
            raise ValueError(f"{path}: a training config needs 'stage' ({', '.join(TRAINED_MODULES)})")
        return cls(**raw)
