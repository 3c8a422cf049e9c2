"""Typed, validated configuration of a SemHiTok tokenizer, with presets and YAML overrides.

A config fully describes the architecture: it is what ``config.json`` of a saved model holds, so a
model folder can be rebuilt without any other file (the teacher's Hugging Face config included).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .yaml_io import load_yaml

TeacherKind = Literal["siglip", "clip"]

SIGLIP_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@dataclass
class TeacherConfig:
    """The frozen text-aligned encoder ``E_s`` (a Hugging Face SigLIP or CLIP vision tower).

    Attributes:
        kind: ``siglip`` or ``clip``.
        hf_config: the vision tower's Hugging Face config as a dict (``SiglipVisionConfig`` /
            ``CLIPVisionConfig`` fields). Enough to rebuild the architecture offline.
        pretrained_path: a local Hugging Face folder to load the teacher weights from when the
            tokenizer is first built (not needed once a SemHiTok folder has been saved: the
            teacher's weights are saved with it). Never fetched from a hub.
        image_mean, image_std: the teacher's own normalisation, applied inside the model
            (default: SigLIP's 0.5/0.5 or OpenAI CLIP's, by ``kind``).
        feature_layer: which hidden state is the semantic feature; -1 is the last (after SigLIP's
            post-layernorm), -2 the penultimate, as LLaVA uses.
    """

    kind: TeacherKind = "siglip"
    hf_config: dict[str, Any] = field(default_factory=dict)
    pretrained_path: str | None = None
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    feature_layer: int = -1

    def __post_init__(self) -> None:
        if self.kind not in ("siglip", "clip"):
            raise ValueError(f"teacher.kind must be 'siglip' or 'clip', got {self.kind!r}")
        if not isinstance(self.hf_config, dict):
            raise ValueError(f"teacher.hf_config must be a mapping, got {type(self.hf_config).__name__}")
        for key in ("image_size", "patch_size", "hidden_size"):
            if key not in self.hf_config:
                raise ValueError(f"teacher.hf_config must define {key!r}")
        if not 1 <= self.patch_size <= self.image_size:
            raise ValueError(f"teacher patch_size {self.patch_size} and image_size {self.image_size} give no token grid")
        default_mean, default_std = SIGLIP_MEAN_STD if self.kind == "siglip" else CLIP_MEAN_STD
        self.image_mean = tuple(float(v) for v in (self.image_mean or default_mean))  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in (self.image_std or default_std))  # type: ignore[assignment]
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("teacher.image_mean and image_std need 3 values")
        if any(s <= 0 for s in self.image_std):
            raise ValueError("teacher.image_std must be positive")
        layers = int(self.hf_config.get("num_hidden_layers", 12))
        if not (-layers - 1 <= self.feature_layer <= layers) or self.feature_layer == 0:
            raise ValueError(f"teacher.feature_layer must be a hidden-state index in [-{layers + 1}, {layers}] other than 0, got {self.feature_layer}")

    @property
    def image_size(self) -> int:
        return int(self.hf_config["image_size"])

    @property
    def patch_size(self) -> int:
        return int(self.hf_config["patch_size"])

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config["hidden_size"])

    @property
    def grid_size(self) -> int:
        """Side of the teacher's patch grid (a stride-p convolution without padding)."""
        return (self.image_size - self.patch_size) // self.patch_size + 1


@dataclass
class ViTConfig:
    """A plain ViT trunk: ``depth`` pre-norm blocks of width ``width``."""

    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.num_heads) < 1:
            raise ValueError(f"ViT width, depth and num_heads must be >= 1, got {self}")
        if self.width % self.num_heads:
            raise ValueError(f"ViT width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")


@dataclass
class SemHiTokConfig:
    """Architecture of a SemHiTok tokenizer (DESIGN.md §1).

    Attributes:
        teacher: the frozen semantic encoder.
        pixel_patch_size: patch side of the pixel encoder/decoder. The pixel grid must equal the
            teacher's grid, so the tokenizer's ``image_size`` is ``grid * pixel_patch_size``.
        codebook_size: K, semantic codes.
        semantic_dim: d_s, semantic code dimension.
        subcodebook_size: m, pixel sub-codes per semantic code.
        pixel_dim: d_p, pixel code dimension.
        semantic_head_hidden: hidden width of the MLP projecting teacher features to d_s.
        semantic_decoder: the 3-layer transformer ``D_s`` (maps z_q back to teacher space).
        pixel_encoder, pixel_decoder: the ViT ``E_p`` and ``D_p``.
        decoder_uses_semantic: feed ``[z_q ; p_q]`` to the pixel decoder (paper); False feeds p_q
            only (the "w/o semantic token" ablation of Tab. 9).
        ema_decay, commitment_weight, kmeans_init, dead_code_threshold: semantic EMA VQ settings.
        pixel_commitment_weight, pixel_dead_code_threshold: SGHC settings.
    """

    teacher: TeacherConfig
    pixel_patch_size: int = 16
    codebook_size: int = 16384
    semantic_dim: int = 48
    subcodebook_size: int = 12
    pixel_dim: int = 32
    semantic_head_hidden: int = 1024
    semantic_decoder: ViTConfig = field(default_factory=lambda: ViTConfig(width=1024, depth=3, num_heads=16))
    pixel_encoder: ViTConfig = field(default_factory=ViTConfig)
    pixel_decoder: ViTConfig = field(default_factory=ViTConfig)
    decoder_uses_semantic: bool = True
    ema_decay: float = 0.99
    commitment_weight: float = 0.25
    kmeans_init: bool = True
    dead_code_threshold: float = 0.0
    pixel_commitment_weight: float = 0.25
    pixel_dead_code_threshold: float = 0.0

    def __post_init__(self) -> None:
        self.teacher = config_section("teacher", self.teacher, TeacherConfig)
        for name in ("semantic_decoder", "pixel_encoder", "pixel_decoder"):
            setattr(self, name, config_section(name, getattr(self, name), ViTConfig))
        for name in ("pixel_patch_size", "codebook_size", "semantic_dim", "subcodebook_size", "pixel_dim", "semantic_head_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.commitment_weight < 0 or self.pixel_commitment_weight < 0:
            raise ValueError("commitment weights must be >= 0")
        if self.dead_code_threshold < 0 or self.pixel_dead_code_threshold < 0:
            raise ValueError("dead-code thresholds must be >= 0")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Side h = w of the token grid (the teacher's patch grid)."""
        return self.teacher.grid_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size**2

    @property
    def image_size(self) -> int:
        """Side of the images the tokenizer encodes and decodes."""
        return self.grid_size * self.pixel_patch_size

    @property
    def vocab_size(self) -> int:
        return self.codebook_size * self.subcodebook_size

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["teacher"]["image_mean"] = list(self.teacher.image_mean)
        d["teacher"]["image_std"] = list(self.teacher.image_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SemHiTokConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SemHiTok config keys: {', '.join(unknown)}")
        if "teacher" not in d:
            raise ValueError("a SemHiTok config needs a 'teacher' section")
        return cls(**d)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> SemHiTokConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SemHiTokConfig:
        """Build a named preset (``tiny``, ``paper-256``, ``paper-384``) with keyword overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        return cls.from_dict(merge_dicts(PRESETS[name](), overrides))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SemHiTokConfig:
        """Load a YAML file: an optional ``preset:`` key names the defaults, the rest overrides them.

        ``model:`` may hold the overrides when the file also carries other sections (training).
        """
        raw = load_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        section = raw.get("model", raw)
        section = dict(section)
        preset = section.pop("preset", None)
        if preset is None:
            return cls.from_dict(section)
        return cls.from_preset(preset, **section)


def config_section(name: str, value: Any, cls: type) -> Any:
    """A nested config section given as a dataclass or a dict of its fields (unknown keys refused)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"config section {name!r} must be a mapping, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown keys in config section {name!r}: {', '.join(unknown)}")
    return cls(**value)


def merge_dicts(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; overrides win."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def siglip_large_patch16_256() -> dict[str, Any]:
    """The vision tower of ``google/siglip-large-patch16-256`` (16x16 grid, width 1024)."""
    return {
        "image_size": 256, "patch_size": 16, "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6, "num_channels": 3,
    }


def siglip_so400m_patch14_384() -> dict[str, Any]:
    """The vision tower of ``google/siglip-so400m-patch14-384`` (27x27 grid, width 1152)."""
    return {
        "image_size": 384, "patch_size": 14, "hidden_size": 1152, "intermediate_size": 4304,
        "num_hidden_layers": 27, "num_attention_heads": 16, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6, "num_channels": 3,
    }


def _tiny() -> dict[str, Any]:
    # A 64 px, 4x4-grid model with every module present, for tests and CPU demos.
    return {
        "teacher": {"kind": "siglip", "hf_config": {
            "image_size": 64, "patch_size": 16, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 2, "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6, "num_channels": 3}},
        "pixel_patch_size": 16, "codebook_size": 256, "semantic_dim": 16, "subcodebook_size": 4,
        "pixel_dim": 8, "semantic_head_hidden": 64,
        "semantic_decoder": {"width": 64, "depth": 3, "num_heads": 2},
        "pixel_encoder": {"width": 64, "depth": 2, "num_heads": 2},
        "pixel_decoder": {"width": 64, "depth": 2, "num_heads": 2},
    }


def _paper_256() -> dict[str, Any]:
    # Tab. 3 / §4.1: SigLIP-L/16-256, K=16384, d_s=48, EMA, 3-layer semantic decoder, ViT-B pixel
    # encoder/decoder, m=12 (the tables' vocabulary 196,608 = 16384 x 12).
    return {
        "teacher": {"kind": "siglip", "hf_config": siglip_large_patch16_256()},
        "pixel_patch_size": 16, "codebook_size": 16384, "semantic_dim": 48, "subcodebook_size": 12,
        "pixel_dim": 32, "semantic_head_hidden": 1024,
        "semantic_decoder": {"width": 1024, "depth": 3, "num_heads": 16},
        "pixel_encoder": {"width": 768, "depth": 12, "num_heads": 12},
        "pixel_decoder": {"width": 768, "depth": 12, "num_heads": 12},
    }


def _paper_384() -> dict[str, Any]:
    # SigLIP-so400m/14-384 gives a 27x27 grid; a 14 px pixel patch keeps the grids equal, so this
    # preset works on 378 px images (27 x 14) and the teacher resizes them to its 384 px inside.
    return {
        **_paper_256(),
        "teacher": {"kind": "siglip", "hf_config": siglip_so400m_patch14_384()},
        "pixel_patch_size": 14,
        "semantic_head_hidden": 1152,
        "semantic_decoder": {"width": 1152, "depth": 3, "num_heads": 16},
    }


PRESETS = {"tiny": _tiny, "paper-256": _paper_256, "paper-384": _paper_384}
