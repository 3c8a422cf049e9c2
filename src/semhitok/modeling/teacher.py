"""The frozen text-aligned teacher ``E_s``: a Hugging Face SigLIP or CLIP vision tower."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TeacherConfig
from ..pretrained import PRETRAINED, pretrained_path


def _arch(kind: str) -> tuple[Any, Any]:
    """(config class, model class) of a teacher kind. transformers is imported here, not at module
    import, because it costs seconds and the command line should start fast."""
    if kind == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionConfig, CLIPVisionModel
    from transformers import SiglipVisionConfig, SiglipVisionModel

    class HeadlessSiglipVisionModel(SiglipVisionModel):
        # The teacher reads patch features, never the pooled output, so the pooling head is not
        # built; its weights in a checkpoint (every SigLIP has them) are expected, not an error
        # worth a load report on every run.
        _keys_to_ignore_on_load_unexpected = [r"(^|\.)head\."]

    return SiglipVisionConfig, HeadlessSiglipVisionModel


def teacher_config_from_folder(path: str | Path, feature_layer: int = -1) -> TeacherConfig:
    """Read a local Hugging Face SigLIP/CLIP folder (full model or vision tower) into a TeacherConfig.

    The architecture comes from ``config.json`` (its ``vision_config`` for a full two-tower model),
    the normalisation from ``preprocessor_config.json`` when present.
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
    raw = json.loads(config_file.read_text())
    model_type = str(raw.get("model_type", ""))
    kind = "clip" if model_type.startswith("clip") else "siglip" if model_type.startswith("siglip") else None
    if kind is None:
        raise ValueError(f"{config_file}: model_type {model_type!r} is neither SigLIP nor CLIP")
    vision = raw.get("vision_config", raw)
    config_cls = _arch(kind)[0]
    # Round-trip through the transformers config class so defaults the file leaves out are filled.
    hf_config = _plain_dict(config_cls(**{k: v for k, v in vision.items() if k not in ("model_type", "architectures")}))
    mean = std = None
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        pre_raw = json.loads(pre.read_text())
        mean, std = pre_raw.get("image_mean"), pre_raw.get("image_std")
    return TeacherConfig(kind=kind, hf_config=hf_config, pretrained_path=str(folder), image_mean=mean, image_std=std, feature_layer=feature_layer)


def _plain_dict(hf_config: Any) -> dict[str, Any]:
    keep = (
        "image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "hidden_act", "layer_norm_eps", "num_channels", "projection_dim",
        "attention_dropout", "vision_use_head",
    )
    d = hf_config.to_dict()
    return {k: d[k] for k in keep if k in d}


def _no_init_weights() -> contextlib.AbstractContextManager:
    try:  # transformers >= 5
        from transformers.initialization import no_init_weights
    except ImportError:  # older releases keep it here
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


class SemanticTeacher(nn.Module):
    """Frozen vision tower: images in [0, 1] (B, 3, H, W) -> semantic features (B, L, D).

    The teacher's own preprocessing (resize to its input size, mean/std) happens inside. It is
    always in eval mode, has ``requires_grad=False`` everywhere and runs under ``no_grad``: it can
    never be trained, whatever the caller does.

    Args:
        cfg: the teacher's config.
        load_weights: load ``cfg.pretrained_path`` when set (else random weights from the config).
        init_weights: run the random initialisation; False leaves the weights uninitialised, for
            callers that load a state dict right after (saves ~30 s for a SigLIP-L on CPU).
    """

    def __init__(self, cfg: TeacherConfig, load_weights: bool = True, init_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        config_cls, model_cls = _arch(cfg.kind)
        hf_config = config_cls(**cfg.hf_config)
        if cfg.kind == "siglip":
            hf_config.vision_use_head = False  # the pooling head is not used: do not build it
        if load_weights and cfg.pretrained_path:
            folder = Path(cfg.pretrained_path)
            if not folder.exists() and cfg.pretrained_path in PRETRAINED:  # a shipped teacher's name
                folder = pretrained_path(cfg.pretrained_path)
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"teacher folder {folder} has no config.json")
            self.model = model_cls.from_pretrained(folder, config=hf_config, local_files_only=True)
        else:
            with contextlib.nullcontext() if init_weights else _no_init_weights():
                self.model = model_cls(hf_config)
        self.model.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> SemanticTeacher:
        # Frozen means frozen: dropout and any train-time behaviour stay off.
        return super().train(False)

    @property
    def grid_size(self) -> int:
        return self.cfg.grid_size

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        size = self.cfg.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            images = images.clamp(0.0, 1.0)
        pixel_values = (images - self.mean) / self.std
        want_hidden = self.cfg.feature_layer != -1
        out = self.model(pixel_values=pixel_values, output_hidden_states=want_hidden)
        features = out.last_hidden_state if not want_hidden else out.hidden_states[self.cfg.feature_layer]
        if self.cfg.kind == "clip":
            features = features[:, 1:]  # drop the class token: one feature per patch
        return features
