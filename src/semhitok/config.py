"""Typed, validated configuration of a SemHiTok tokenizer, with presets and YAML overrides.

A config fully describes the architecture: it is what ``config.json`` of a saved model holds, so a
model folder can be rebuilt without any other file (the teacher's Hugging Face config included).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

from .config_types import ConfigError, build_section, check_fields, check_known_keys, check_value, describe
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
        pretrained_path: a local Hugging Face folder (or the name of a shipped teacher, e.g.
            ``mini-teacher``) to load the teacher weights from when the
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
        check_fields(self)
        _check_hf_config(self.hf_config)
        if not 1 <= self.patch_size <= self.image_size:
            raise ConfigError("hf_config", f"patch_size {self.patch_size} and image_size {self.image_size} give no token grid")
        default_mean, default_std = SIGLIP_MEAN_STD if self.kind == "siglip" else CLIP_MEAN_STD
        self.image_mean = self.image_mean or default_mean
        self.image_std = self.image_std or default_std
        if any(s <= 0 for s in self.image_std):
            raise ConfigError("image_std", f"must be positive, got {list(self.image_std)}")
        layers = self.num_layers
        if not (-layers - 1 <= self.feature_layer <= layers) or self.feature_layer == 0:
            raise ConfigError("feature_layer", f"must be a hidden-state index in [-{layers + 1}, {layers}] other than 0, got {self.feature_layer}")

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
    def num_layers(self) -> int:
        return int(self.hf_config.get("num_hidden_layers", 12))

    @property
    def grid_size(self) -> int:
        """Side of the teacher's patch grid (a stride-p convolution without padding)."""
        return (self.image_size - self.patch_size) // self.patch_size + 1


# Sizes in the teacher's Hugging Face config that this package reads (the first three must be
# given); each must be a positive integer, or the tower would fail to build with a TypeError.
_HF_REQUIRED = ("image_size", "patch_size", "hidden_size")
_HF_OPTIONAL = ("intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels")


def _check_hf_config(hf_config: dict[str, Any]) -> None:
    for key in _HF_REQUIRED:
        if key not in hf_config:
            raise ConfigError("hf_config", f"must define {key!r}")
    for key in _HF_REQUIRED + _HF_OPTIONAL:
        if key in hf_config:
            value = check_value(hf_config[key], int, f"hf_config.{key}")
            if value < 1:
                raise ConfigError(f"hf_config.{key}", f"must be >= 1, got {value}")


@dataclass
class ViTConfig:
    """A plain ViT trunk: ``depth`` pre-norm blocks of width ``width``."""

    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("width", "depth", "num_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ConfigError("width", f"{self.width} must be divisible by num_heads {self.num_heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError("mlp_ratio", f"must be > 0, got {self.mlp_ratio}")


# Refuse a model whose parameters and buffers alone would take more than this many bytes (float32),
# before anything is allocated. The largest paper model (paper-384 with stage 3's ViT-L decoder)
# needs about 3.2 GiB; 64 GiB leaves room for much larger experiments but refuses a typo such as
# `codebook_size: 2**40`, which would otherwise run the machine out of memory or hang.
MAX_MODEL_BYTES = 64 * 2**30
_BYTES_PER_ELEMENT = 4  # float32 weights


@dataclass
class SemHiTokConfig:
    """Architecture of a SemHiTok tokenizer (paper §3 and Tab. 3).

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
        decoder_concat: how z_q and p_q meet in the pixel decoder: ``channel`` (the paper: one token
            of d_s + d_p channels per patch) or ``length`` (Tab. 9's other option: the semantic and
            the pixel tokens each projected to the decoder width, 2L tokens in one sequence, the
            image read off the pixel half).
        semantic_quantizer: ``ema`` (the paper: EMA VQ), ``vanilla`` (VQ trained by gradient) or
            ``norm`` (l2-normalized VQ trained by gradient): Tab. 9's semantic VQ ablation.
        ema_decay, commitment_weight, kmeans_init, dead_code_threshold: semantic VQ settings
            (``ema_decay`` only for ``ema``; restarts use each quantizer's usage counts).
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
    decoder_concat: str = "channel"
    semantic_quantizer: str = "ema"
    ema_decay: float = 0.99
    commitment_weight: float = 0.25
    kmeans_init: bool = True
    dead_code_threshold: float = 0.0
    pixel_commitment_weight: float = 0.25
    pixel_dead_code_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("pixel_patch_size", "codebook_size", "semantic_dim", "subcodebook_size", "pixel_dim", "semantic_head_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.decoder_concat not in ("channel", "length"):
            raise ConfigError("decoder_concat", f"must be 'channel' or 'length', got {self.decoder_concat!r}")
        if self.semantic_quantizer not in ("ema", "vanilla", "norm"):
            raise ConfigError("semantic_quantizer", f"must be 'ema', 'vanilla' or 'norm', got {self.semantic_quantizer!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        for name in ("commitment_weight", "pixel_commitment_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"commitment weights must be >= 0, got {getattr(self, name)}")
        for name in ("dead_code_threshold", "pixel_dead_code_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"dead-code thresholds must be >= 0, got {getattr(self, name)}")
        self._check_size()

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

    # ---- memory --------------------------------------------------------------------------
    def size_terms(self) -> list[SizeTerm]:
        """The model's parameter and buffer element counts, module by module (see ``SizeTerm``).

        Counted from the shapes the modules build (``modeling/*.py``, the quantizers and the
        Hugging Face vision tower without its pooling head), so no tensor has to be allocated.
        """
        t, n = self.teacher, self.num_tokens
        h, layers = t.hidden_size, t.num_layers
        inner = int(t.hf_config.get("intermediate_size", 4 * h))
        channels = int(t.hf_config.get("num_channels", 3))
        positions = n + (1 if t.kind == "clip" else 0)  # CLIP adds a class token
        hf = "teacher.hf_config."
        K, d_s, m, d_p, p = self.codebook_size, self.semantic_dim, self.subcodebook_size, self.pixel_dim, self.pixel_patch_size
        length_concat = self.decoder_uses_semantic and self.decoder_concat == "length"
        decoder_in = d_p + (d_s if self.decoder_uses_semantic else 0)
        if length_concat:  # two input projections (d_p and d_s to the width), 2L positions
            decoder_in += 1 + n
        codebook_elements = 2 * K * d_s + K + 1 if self.semantic_quantizer == "ema" else K * d_s + K + 1
        return [
            SizeTerm("teacher blocks", layers * (4 * h * h + 2 * h * inner + inner + 9 * h),
                     {hf + "num_hidden_layers": (layers, 1), hf + "hidden_size": (h, 2), hf + "intermediate_size": (inner, 1)}),
            SizeTerm("teacher embeddings", channels * t.patch_size**2 * h + 4 * h,
                     {hf + "patch_size": (t.patch_size, 2), hf + "hidden_size": (h, 1)}),
            # One learned position per grid token in each of the four transformers: the term that
            # grows with the grid, i.e. with the teacher's image_size / patch_size.
            SizeTerm("position embeddings", positions * h + n * (self.semantic_decoder.width + self.pixel_encoder.width + self.pixel_decoder.width),
                     {hf + "image_size": (t.image_size, 2)}),
            SizeTerm("semantic head", h * self.semantic_head_hidden + self.semantic_head_hidden * (d_s + 1) + d_s,
                     {"semantic_head_hidden": (self.semantic_head_hidden, 1), hf + "hidden_size": (h, 1)}),
            # EMA codebook: embed and embed_sum (K x d_s), cluster_size (K), the `initialized` flag;
            # a gradient codebook: weight (K x d_s), usage (K), the flag.
            SizeTerm("semantic codebook and its EMA statistics", codebook_elements,
                     {"codebook_size": (K, 1), "semantic_dim": (d_s, 1)}),
            _vit_term("semantic_decoder", self.semantic_decoder, d_s * self.semantic_decoder.width + (self.semantic_decoder.width + 1) * h),
            _vit_term("pixel_encoder", self.pixel_encoder, 3 * p * p * self.pixel_encoder.width + (self.pixel_encoder.width + 1) * d_p),
            # Sub-codebooks (K x m x d_p) and their usage EMA (K x m).
            SizeTerm("pixel sub-codebooks", K * m * (d_p + 1),
                     {"codebook_size": (K, 1), "subcodebook_size": (m, 1), "pixel_dim": (d_p, 1)}),
            _vit_term("pixel_decoder", self.pixel_decoder, decoder_in * self.pixel_decoder.width + (self.pixel_decoder.width + 1) * 3 * p * p),
        ]

    def estimated_bytes(self) -> int:
        """Bytes of all parameters and buffers in float32 (within about 1% of the built model)."""
        return _BYTES_PER_ELEMENT * sum(term.elements for term in self.size_terms())

    def _check_size(self) -> None:
        terms = self.size_terms()
        total = _BYTES_PER_ELEMENT * sum(term.elements for term in terms)
        if total <= MAX_MODEL_BYTES:
            return
        worst = max(terms, key=lambda term: term.elements)
        key, value = worst.main_field()
        raise ConfigError(key, f"{value} makes the model need about {_human_bytes(total)} for its parameters and buffers "
                          f"({_human_bytes(_BYTES_PER_ELEMENT * worst.elements)} in the {worst.label}), over the {_human_bytes(MAX_MODEL_BYTES)} limit")

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["teacher"]["image_mean"] = list(self.teacher.image_mean)
        d["teacher"]["image_std"] = list(self.teacher.image_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SemHiTokConfig:
        if not isinstance(d, Mapping):
            raise ConfigError("", f"a SemHiTok config must be a mapping, got {describe(d)}")
        check_known_keys("", d, cls)
        if "teacher" not in d:
            raise ConfigError("", "a SemHiTok config needs a 'teacher' section")
        return cls(**d)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> SemHiTokConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SemHiTokConfig:
        """Build a named preset (``tiny``, ``paper-256``, ``paper-384``) with keyword overrides."""
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError("preset", f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        return cls.from_dict(merge_dicts(PRESETS[name](), overrides))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SemHiTokConfig:
        """Load a YAML file: an optional ``preset:`` key names the defaults, the rest overrides them.

        ``model:`` may hold the overrides when the file also carries other sections (training).
        """
        raw = load_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_section(raw.get("model", raw))
        except ConfigError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def from_section(cls, section: Any) -> SemHiTokConfig:
        """A ``model:`` section: ``preset:`` plus overrides, or a complete config."""
        if not isinstance(section, Mapping):
            raise ConfigError("", f"the model section must be a mapping, got {describe(section)}")
        section = dict(section)
        preset = section.pop("preset", None)
        if preset is None:
            return cls.from_dict(section)
        return cls.from_preset(preset, **section)


@dataclass(frozen=True)
class SizeTerm:
    """Elements of one part of the model, and the config fields it grows with.

    ``fields`` maps a dotted key to ``(value, exponent)``: the term grows like value**exponent, so
    the field to blame for a too-large term is the one with the largest value**exponent.
    """

    label: str
    elements: int
    fields: dict[str, tuple[int | float, int]]

    def main_field(self) -> tuple[str, int | float]:
        key = max(self.fields, key=lambda k: float(self.fields[k][0]) ** self.fields[k][1])
        return key, self.fields[key][0]


def _vit_term(name: str, cfg: ViTConfig, projections: int) -> SizeTerm:
    """A ``ViTTrunk`` (blocks, final norm; not its position embedding) plus its module's projections."""
    w, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
    # Per block: two LayerNorms (4w), qkv (3w^2 + 3w), proj (w^2 + w), MLP (2 w hidden + hidden + w).
    block = 4 * w + 4 * w * w + 4 * w + 2 * w * hidden + hidden + w
    elements = cfg.depth * block + 2 * w + projections  # position embeddings: their own term
    return SizeTerm(name, elements, {f"{name}.width": (w, 2), f"{name}.depth": (cfg.depth, 1), f"{name}.mlp_ratio": (cfg.mlp_ratio, 1)})


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def config_section(name: str, value: Any, cls: type) -> Any:
    """A nested config section given as a dataclass or a dict of its fields (unknown keys refused)."""
    return build_section(name, value, cls)


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


def _mini() -> dict[str, Any]:
    # The mini-world (colour Fashion-MNIST at 64 px): the teacher is the small SigLIP vision tower
    # trained by `stage: teacher` (configs/mini/teacher.yaml; 8 px patches, an 8x8 grid), so the
    # pixel branch uses 8 px patches too. K=1024 semantic codes of d_s=32 (the data has 100 class x
    # colour concepts, each spread over many patch appearances), m=8 sub-codes of d_p=16.
    return {
        "teacher": {"kind": "siglip", "hf_config": {
            "image_size": 64, "patch_size": 8, "hidden_size": 128, "intermediate_size": 512,
            "num_hidden_layers": 6, "num_attention_heads": 4, "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6, "num_channels": 3}},
        "pixel_patch_size": 8, "codebook_size": 1024, "semantic_dim": 32, "subcodebook_size": 8,
        "pixel_dim": 16, "semantic_head_hidden": 256,
        "semantic_decoder": {"width": 128, "depth": 3, "num_heads": 4},
        "pixel_encoder": {"width": 128, "depth": 4, "num_heads": 4},
        "pixel_decoder": {"width": 128, "depth": 4, "num_heads": 4},
    }


PRESETS = {"tiny": _tiny, "mini": _mini, "paper-256": _paper_256, "paper-384": _paper_384}
