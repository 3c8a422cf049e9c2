"""``SemHiTok``: the whole tokenizer (the paper's SemHiTok), with the public encode/decode/save/load API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import save_file
from torch import Tensor, nn

from ..config import SemHiTokConfig
from ..quantizers import EMAVectorQuantizer, HierarchicalQuantizer, QuantizerOutput, VectorQuantizer, flatten_ids, unflatten_ids
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
        self.semantic_quantizer = _semantic_quantizer(c)
        self.semantic_decoder = SemanticDecoder(c.semantic_decoder, c.semantic_dim, c.teacher.hidden_size, n)
        self.pixel_encoder = PixelEncoder(c.pixel_encoder, c.pixel_patch_size, c.grid_size, c.pixel_dim)
        self.pixel_quantizer = HierarchicalQuantizer(
            c.codebook_size, c.subcodebook_size, c.pixel_dim,
            commitment_weight=c.pixel_commitment_weight, dead_code_threshold=c.pixel_dead_code_threshold,
        )
        length_concat = c.decoder_uses_semantic and c.decoder_concat == "length"
        channel_concat = c.decoder_uses_semantic and not length_concat
        decoder_in = c.pixel_dim + (c.semantic_dim if channel_concat else 0)
        self.pixel_decoder = PixelDecoder(
            c.pixel_decoder, c.pixel_patch_size, c.grid_size, decoder_in, prefix_dim=c.semantic_dim if length_concat else 0
        )
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

    @property
    def last_decoder_layer(self) -> nn.Parameter:
        """The pixel decoder's output projection weight: the GAN's adaptive weight compares the
        reconstruction and adversarial gradients at this layer (taming's ``last_layer``)."""
        return self.pixel_decoder.proj_out.weight

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
        if not self.config.decoder_uses_semantic:
            images = self.pixel_decoder(p_q)
        elif self.config.decoder_concat == "length":
            images = self.pixel_decoder(p_q.to(z_q.dtype), prefix=z_q)
        else:
            images = self.pixel_decoder(torch.cat([z_q, p_q.to(z_q.dtype)], dim=-1))
        return (images + 1.0) / 2.0

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
        """Write ``config.json`` and ``model.safetensors`` (all weights, teacher included) to ``path``.

        The folder is written whole or not at all: both files go to a temporary folder beside
        ``path`` that is then renamed (into an existing folder, the two files are moved in), so a
        full disk or a kill never leaves a half-written or empty model folder. Files and folders
        follow the umask. A failed write raises :class:`semhitok.atomic.OutputError`.
        """
        from ..atomic import AtomicDir

        config = self.config.to_dict()
        config["teacher"]["pretrained_path"] = None  # the weights travel in model.safetensors
        config["semhitok_fingerprint"] = self.fingerprint()
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with AtomicDir(path) as out:
            with out.writing(WEIGHTS_NAME) as weights:
                save_file(state, str(weights), metadata={"format": "pt", "semhitok_fingerprint": config["semhitok_fingerprint"]})
            out.write_text(CONFIG_NAME, json.dumps(config, indent=2) + "\n")
            out.commit()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SemHiTok:
        """Load a folder written by :meth:`save_pretrained` (no network, no pickle).

        Raises:
            ModelFolderError: the folder is missing or incomplete, ``config.json`` is broken, the
                weights are damaged, do not fit the config, or hold NaN/Inf (one line, naming it).
        """
        folder = Path(path)
        config, expected = _read_folder_config(folder)
        try:
            model = cls(config, load_teacher_weights=False, init_teacher_weights=False)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            # e.g. an activation name transformers does not know, in the teacher's hf_config
            raise ModelFolderError(f"model folder {folder} has a broken {CONFIG_NAME}: cannot build the model from it ({_short(exc)})") from exc
        model.load_state_dict(_read_folder_weights(folder, model.state_dict()), strict=True)
        if expected is not None and model.fingerprint() != expected:
            raise ModelFolderError(
                f"{folder}: the codebooks in {WEIGHTS_NAME} (fingerprint {model.fingerprint()}) do not match "
                f"{CONFIG_NAME} (fingerprint {expected}); the folder mixes files of different models"
            )
        return model.to(device).eval()

    def _device(self) -> torch.device:
        return self.semantic_quantizer.codebook.device


def _semantic_quantizer(c: SemHiTokConfig) -> EMAVectorQuantizer | VectorQuantizer:
    """The semantic codebook ``Q_s``: EMA VQ (the paper), or Tab. 9's vanilla / normalized VQ."""
    if c.semantic_quantizer == "ema":
        return EMAVectorQuantizer(
            c.codebook_size, c.semantic_dim, decay=c.ema_decay, commitment_weight=c.commitment_weight,
            kmeans_init=c.kmeans_init, dead_code_threshold=c.dead_code_threshold,
        )
    return VectorQuantizer(
        c.codebook_size, c.semantic_dim, normalize=c.semantic_quantizer == "norm", commitment_weight=c.commitment_weight,
        kmeans_init=c.kmeans_init, dead_code_threshold=c.dead_code_threshold,
    )


class ModelFolderError(ValueError):
    """A SemHiTok model folder that cannot be loaded; ``str()`` is one line naming the folder."""


def _short(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_folder_config(folder: Path) -> tuple[SemHiTokConfig, str | None]:
    """The folder's checked config and the fingerprint it records (None for old folders)."""
    expected = f"a SemHiTok model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}, as written by SemHiTok.save_pretrained"
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} is a file, not a folder ({expected})")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise ModelFolderError(f"model folder {folder} has no {name} ({expected})")
    config_file = folder / CONFIG_NAME
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _short(exc)
        raise ModelFolderError(f"cannot read {config_file}: {reason}") from exc
    except ValueError as exc:
        raise ModelFolderError(f"model folder {folder} has a broken {CONFIG_NAME}: not valid JSON ({_short(exc)})") from exc
    if not isinstance(raw, dict):
        raise ModelFolderError(f"model folder {folder} has a broken {CONFIG_NAME}: expected a JSON object, got a JSON {type(raw).__name__}")
    fingerprint = raw.pop("semhitok_fingerprint", None)
    try:
        config = SemHiTokConfig.from_dict(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelFolderError(f"model folder {folder} has a broken {CONFIG_NAME}: {_short(exc)}") from exc
    return config, fingerprint if isinstance(fingerprint, str) else None


def _read_folder_weights(folder: Path, expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """The folder's tensors, checked against the model's own state dict: names, shapes, finiteness.

    Compared here rather than left to ``load_state_dict``, so that a mismatch is recognised by
    its kind, not by the text of a RuntimeError.
    """
    from ..weights_file import WeightsFileError, read_weights_file

    weights = folder / WEIGHTS_NAME
    try:
        state = read_weights_file(weights, what="", check_finite=False)
    except WeightsFileError as exc:
        raise ModelFolderError(f"cannot load the weights in model folder {folder}: {exc}") from exc
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (config needs {tuple(v.shape)})" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing tensors ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"] if missing else []
        parts += [f"{len(unexpected)} unexpected tensors ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"] if unexpected else []
        parts += [f"{len(wrong)} of another shape ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})"] if wrong else []
        raise ModelFolderError(f"cannot load the weights in {weights}: they do not match {CONFIG_NAME}: {', '.join(parts)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        # Non-finite weights encode to meaningless ids and decode to NaN images: refuse them here.
        raise ModelFolderError(f"cannot load the weights in {weights}: {len(bad)} tensors hold NaN or Inf ({', '.join(sorted(bad)[:3])}{', ...' if len(bad) > 3 else ''}); the model diverged or the file is damaged")
    return state
