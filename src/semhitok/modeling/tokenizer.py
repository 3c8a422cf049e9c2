"""``SemHiTok``: the whole tokenizer, with the public encode/decode/save/load API of DESIGN.md §3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..config import SemHiTokConfig
from ..quantizers import EMAVectorQuantizer, HierarchicalQuantizer, QuantizerOutput, flatten_ids, unflatten_ids
from .images import ResizePolicy, check_images, fit_to_size
from .outputs import PixelForwardOutput, SemanticForwardOutput, SemHiTokEncoding
from .pixel import PixelDecoder, PixelEncoder
from .semantic import SemanticDecoder, SemanticHead
from .teacher import SemanticTeacher

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class SemHiTok(nn.Module):
    """Semantic-guided hierarchical tokenizer.

    Stage-1 modules: ``teacher`` (frozen) -> ``semantic_head`` -> ``semantic_quantizer`` (EMA VQ, K
    codes) -> ``semantic_decoder``. Stage-2 modules: ``pixel_encoder`` -> ``pixel_quantizer`` (SGHC,
    K x m codes, looked up inside the token's semantic sub-codebook) -> ``pixel_decoder`` on
    ``[z_q ; p_q]``.

    Args:
        config: the architecture.
        load_teacher_weights: load the teacher from ``config.teacher.pretrained_path`` if set.
        init_teacher_weights: randomly initialise the teacher when not loading it (False when a
            state dict is loaded right after, as in :meth:`from_pretrained`).
    """

    def __init__(self, config: SemHiTokConfig, load_teacher_weights: bool = True, init_teacher_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        c = config
        n = c.num_tokens
        self.teacher = SemanticTeacher(c.teacher, load_weights=load_teacher_weights, init_weights=init_teacher_weights)
        self.semantic_head = SemanticHead(c.teacher.hidden_size, c.semantic_head_hidden, c.semantic_dim)
        self.semantic_quantizer = EMAVectorQuantizer(
            c.codebook_size, c.semantic_dim, decay=c.ema_decay, commitment_weight=c.commitment_weight,
            kmeans_init=c.kmeans_init, dead_code_threshold=c.dead_code_threshold,
        )
        self.semantic_decoder = SemanticDecoder(c.semantic_decoder, c.semantic_dim, c.teacher.hidden_size, n)
        self.pixel_encoder = PixelEncoder(c.pixel_encoder, c.pixel_patch_size, c.grid_size, c.pixel_dim)
        self.pixel_quantizer = HierarchicalQuantizer(
            c.codebook_size, c.subcodebook_size, c.pixel_dim,
            commitment_weight=c.pixel_commitment_weight, dead_code_threshold=c.pixel_dead_code_threshold,
        )
        decoder_in = c.pixel_dim + (c.semantic_dim if c.decoder_uses_semantic else 0)
        self.pixel_decoder = PixelDecoder(c.pixel_decoder, c.pixel_patch_size, c.grid_size, decoder_in)
        self._frozen: set[str] = set()

    # ---- freezing ------------------------------------------------------------------------
    def freeze(self, names: set[str] | list[str] | tuple[str, ...]) -> None:
        """Freeze the named top-level modules (e.g. ``semantic_quantizer``): no gradient, and
        eval mode from now on even when ``model.train()`` is called, so an EMA codebook stops
        updating and dropout/norm statistics stay fixed. The teacher is always frozen."""
        children = dict(self.named_children())
        unknown = sorted(set(names) - set(children))
        if unknown:
            raise ValueError(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(children)}")
        for name in names:
            children[name].requires_grad_(False)
            children[name].eval()
        self._frozen |= set(names)

    @property
    def frozen_modules(self) -> frozenset[str]:
        return frozenset(self._frozen | {"teacher"})

    def train(self, mode: bool = True) -> SemHiTok:
        super().train(mode)
        for name in self._frozen:
            getattr(self, name).eval()
        return self

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """K, semantic codes."""
        return self.config.codebook_size

    @property
    def subcodebook_size(self) -> int:
        """m, pixel sub-codes per semantic code."""
        return self.config.subcodebook_size

    @property
    def vocab_size(self) -> int:
        """K * m, the flat image vocabulary."""
        return self.config.vocab_size

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ---- training forwards ---------------------------------------------------------------
    def quantize_semantic(self, images: Tensor) -> tuple[Tensor, Tensor, QuantizerOutput]:
        """Teacher -> head -> EMA VQ on [0, 1] images of the model's size.

        Returns ``(features (B, L, D), z (B, L, d_s), quantizer output)``.
        """
        features = self.teacher(images)
        z = self.semantic_head(features)
        return features, z, self.semantic_quantizer(z)

    def semantic_forward(self, images: Tensor) -> SemanticForwardOutput:
        """Stage 1: quantize the teacher's features and reconstruct them with ``D_s``."""
        features, _, q = self.quantize_semantic(images)
        return SemanticForwardOutput(features=features, quantizer=q, reconstruction=self.semantic_decoder(q.quantized))

    def forward(self, images: Tensor) -> PixelForwardOutput:
        """Stage 2/3: semantic ids guide the pixel quantization; decode ``[z_q ; p_q]`` to pixels.

        ``images`` are [0, 1] (B, 3, H, W) of the model's size.
        """
        sem, pix = self._quantize(images)
        reconstruction = self._decode_features(sem.quantized, pix.quantized)
        return PixelForwardOutput(semantic=sem, pixel=pix, reconstruction=reconstruction)

    def _quantize(self, images: Tensor) -> tuple[QuantizerOutput, QuantizerOutput]:
        """Both quantizations of [0, 1] images: the semantic ids pick each token's sub-codebook."""
        _, _, sem = self.quantize_semantic(images)
        pixel_features = self.pixel_encoder(images * 2.0 - 1.0)
        return sem, self.pixel_quantizer(pixel_features, sem.ids)

    def _decode_features(self, z_q: Tensor, p_q: Tensor) -> Tensor:
        tokens = torch.cat([z_q, p_q.to(z_q.dtype)], dim=-1) if self.config.decoder_uses_semantic else p_q
        return (self.pixel_decoder(tokens) + 1.0) / 2.0

    # ---- public tokenizer API ------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Tensor, resize: ResizePolicy = "crop") -> SemHiTokEncoding:
        """Tokenize float (B, 3, H, W) images in [0, 1].

        Images of another size are brought to ``image_size`` by ``resize`` (see
        :func:`semhitok.modeling.images.fit_to_size`: ``crop`` = shorter side then centre square,
        ``stretch``, or ``error``). Never updates the codebooks, whatever the module's mode.
        """
        check_images(images)
        images = fit_to_size(images.to(self._device(), torch.float32), self.image_size, resize)
        was_training = self.training
        self.eval()
        try:
            sem, pix = self._quantize(images)
        finally:
            self.train(was_training)
        g = self.grid_size
        semantic_ids = rearrange(sem.ids, "b (h w) -> b h w", h=g)
        pixel_ids = rearrange(pix.ids, "b (h w) -> b h w", h=g)
        return SemHiTokEncoding(
            semantic_ids=semantic_ids,
            pixel_ids=pixel_ids,
            ids=flatten_ids(semantic_ids, pixel_ids, self.subcodebook_size),
        )

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """Flat ids, long (B, h, w) or (B, h*w), in [0, K*m) -> images (B, 3, H, W) in [0, 1]."""
        ids = self.check_ids(ids)
        semantic_ids, pixel_ids = unflatten_ids(ids.reshape(ids.shape[0], -1), self.subcodebook_size)
        z_q = self.semantic_quantizer.lookup(semantic_ids)
        p_q = self.pixel_quantizer.lookup(semantic_ids, pixel_ids)
        return self._decode_features(z_q, p_q).clamp(0.0, 1.0)

    def check_ids(self, ids: Tensor) -> Tensor:
        """Validate flat ids (one-line errors) and return them as long on the model's device."""
        if not isinstance(ids, Tensor):
            raise TypeError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
        g = self.grid_size
        if not ((ids.dim() == 3 and ids.shape[1:] == (g, g)) or (ids.dim() == 2 and ids.shape[1] == g * g)):
            raise ValueError(f"ids must have shape (B, {g}, {g}) or (B, {g * g}) for this model, got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")
        return ids.to(self._device(), torch.long)

    def fingerprint(self) -> str:
        """Hex digest of both codebooks and the grid: equal iff token files are interchangeable.

        Models that share codebooks (e.g. a stage-3 model with an enhanced decoder and the stage-2
        model it came from) share a fingerprint, so their token files decode with either.
        """
        h = hashlib.sha256()
        h.update(json.dumps([self.codebook_size, self.subcodebook_size, self.grid_size]).encode())
        for t in (self.semantic_quantizer.codebook, self.pixel_quantizer.weight):
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    # ---- persistence ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (all weights, teacher included) to ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["teacher"]["pretrained_path"] = None  # the weights travel in model.safetensors
        config["semhitok_fingerprint"] = self.fingerprint()
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # Write to temporary names, then rename, so an interrupted save never leaves a half folder.
        tmp_weights = folder / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp_weights), metadata={"format": "pt", "semhitok_fingerprint": config["semhitok_fingerprint"]})
        tmp_config = folder / (CONFIG_NAME + ".tmp")
        tmp_config.write_text(json.dumps(config, indent=2) + "\n")
        tmp_weights.replace(folder / WEIGHTS_NAME)
        tmp_config.replace(folder / CONFIG_NAME)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SemHiTok:
        """Load a folder written by :meth:`save_pretrained` (no network, no pickle)."""
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"model folder {folder} has no {name}")
        raw = json.loads((folder / CONFIG_NAME).read_text())
        expected = raw.pop("semhitok_fingerprint", None)
        config = SemHiTokConfig.from_dict(raw)
        model = cls(config, load_teacher_weights=False, init_teacher_weights=False)
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
        if expected is not None and model.fingerprint() != expected:
            raise ValueError(
                f"{folder}: the codebooks in {WEIGHTS_NAME} (fingerprint {model.fingerprint()}) do not match "
                f"{CONFIG_NAME} (fingerprint {expected}); the folder mixes files of different models"
            )
        return model.to(device).eval()

    def _device(self) -> torch.device:
        return self.semantic_quantizer.embed.device
