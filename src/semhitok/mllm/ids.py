"""The joint id space of a SemHiTok MLLM: the LLM's text ids, then K*m image ids, then 3 specials.

Paper §3.3: the image ids are appended after the text vocabulary, with the flat image id
``k*m + j`` of SGHC (semantic code k, pixel sub-code j). Here the text part is the row count of the
LLM's *output head*, which is not ``len(text_tokenizer)`` for every model (Qwen2 pads its head and
embedding table to 151,936 rows for a 151,665-token tokenizer): placing image ids after the head's
rows keeps every text logit where the LLM put it.

Layout (``V = text_vocab``, ``N = K*m``)::

    [0, V)            text ids (the LLM's own)
    [V, V + N)        image id of (k, j) = V + k*m + j
    V + N             <boi>     begin of image
    V + N + 1         <eoi>     end of image
    V + N + 2         <uncond>  the unconditional prompt (stands for a dropped caption)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SPECIAL_NAMES = ("<boi>", "<eoi>", "<uncond>")
NUM_SPECIALS = len(SPECIAL_NAMES)


@dataclass(frozen=True)
class ImageIdSpace:
    """Where image and special ids live in the joint vocabulary (see the module doc).

    Args:
        text_vocab: V, rows of the LLM's output head.
        codebook_size: K, semantic codes of the tokenizer.
        subcodebook_size: m, pixel sub-codes per semantic code.
    """

    text_vocab: int
    codebook_size: int
    subcodebook_size: int

    def __post_init__(self) -> None:
        for name in ("text_vocab", "codebook_size", "subcodebook_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    # ---- sizes and fixed ids ---------------------------------------------------------------
    @property
    def num_image(self) -> int:
        """N = K*m, the flat image vocabulary."""
        return self.codebook_size * self.subcodebook_size

    @property
    def image_start(self) -> int:
        """The joint id of tokenizer id 0."""
        return self.text_vocab

    @property
    def image_end(self) -> int:
        """One past the last image id."""
        return self.text_vocab + self.num_image

    @property
    def boi(self) -> int:
        return self.image_end

    @property
    def eoi(self) -> int:
        return self.image_end + 1

    @property
    def uncond(self) -> int:
        return self.image_end + 2

    @property
    def head_size(self) -> int:
        """Rows of the image head: N image ids and the 3 specials."""
        return self.num_image + NUM_SPECIALS

    @property
    def total(self) -> int:
        """Size of the joint vocabulary, V + N + 3."""
        return self.text_vocab + self.head_size

    def special_id(self, name: str) -> int:
        """``"<boi>"``, ``"<eoi>"`` or ``"<uncond>"`` -> its joint id."""
        if name not in SPECIAL_NAMES:
            raise ValueError(f"unknown special token {name!r}; choose from {', '.join(SPECIAL_NAMES)}")
        return self.image_end + SPECIAL_NAMES.index(name)

    # ---- conversions -----------------------------------------------------------------------
    def from_tokenizer(self, ids: Tensor) -> Tensor:
        """SemHiTok flat ids (any shape) in [0, N) -> joint image ids (long, same shape)."""
        _check_range("tokenizer ids", ids, 0, self.num_image)
        return ids.long() + self.text_vocab

    def to_tokenizer(self, ids: Tensor) -> Tensor:
        """Joint image ids (any shape) in [V, V + N) -> SemHiTok flat ids (long, same shape)."""
        _check_range("image ids", ids, self.image_start, self.image_end)
        return ids.long() - self.text_vocab

    def from_codes(self, semantic_ids: Tensor, pixel_ids: Tensor) -> Tensor:
        """(k, j) pairs of equal shape -> joint ids ``V + k*m + j``."""
        if semantic_ids.shape != pixel_ids.shape:
            raise ValueError(f"semantic_ids {tuple(semantic_ids.shape)} and pixel_ids {tuple(pixel_ids.shape)} differ in shape")
        _check_range("semantic ids", semantic_ids, 0, self.codebook_size)
        _check_range("pixel ids", pixel_ids, 0, self.subcodebook_size)
        return self.text_vocab + semantic_ids.long() * self.subcodebook_size + pixel_ids.long()

    def to_codes(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Joint image ids -> ``(k, j)``, the inverse of :meth:`from_codes`."""
        flat = self.to_tokenizer(ids)
        return torch.div(flat, self.subcodebook_size, rounding_mode="floor"), flat % self.subcodebook_size

    # ---- masks -----------------------------------------------------------------------------
    def is_text(self, ids: Tensor) -> Tensor:
        return (ids >= 0) & (ids < self.text_vocab)

    def is_image(self, ids: Tensor) -> Tensor:
        return (ids >= self.image_start) & (ids < self.image_end)

    def is_special(self, ids: Tensor) -> Tensor:
        return (ids >= self.image_end) & (ids < self.total)

    def check(self, ids: Tensor, what: str = "input_ids") -> None:
        """Refuse ids outside the joint vocabulary (one line naming ``what``)."""
        _check_range(what, ids, 0, self.total)

    def to_dict(self) -> dict[str, int]:
        return {"text_vocab": self.text_vocab, "codebook_size": self.codebook_size, "subcodebook_size": self.subcodebook_size}


def _check_range(what: str, ids: Tensor, low: int, high: int) -> None:
    if not isinstance(ids, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < low or int(ids.max()) >= high):
        raise ValueError(f"{what} must lie in [{low}, {high}), got [{int(ids.min())}, {int(ids.max())}]")
