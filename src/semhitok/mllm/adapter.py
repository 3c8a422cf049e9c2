"""Input side of the MLLM: image ids -> LLM input embeddings through the tokenizer's own codebooks.

Paper §3.3: an image token is not looked up in a new embedding table. Its semantic code vector
``z_q = C_s[k]`` and its pixel sub-code vector ``p_q = C_p[k, j]`` (the frozen SGHC codebooks, the
very vectors the pixel decoder reconstructs from) each go through their own MLP, and the two
outputs are concatenated along the channels to the LLM's hidden size (Dual-MLP). Tab. 7's
ablations are a config switch: one MLP on ``[z_q ; p_q]`` (``single``), or a plain learned table
of K*m rows (``table``); ``semantic`` reads the semantic code alone (one MLP on ``z_q``, the pixel
sub-code ignored), the understanding-from-semantic-codes comparison of Tab. 4. The embeddings of ``<boi>``, ``<eoi>`` and ``<uncond>`` are learned here
too, so the LLM's own embedding table is never resized.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import AdapterKind
from .ids import NUM_SPECIALS


class MLP(nn.Sequential):
    """``Linear(in, out) -> GELU -> Linear(out, out)`` (the two-layer projector of LLaVA-1.5)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__(nn.Linear(dim_in, dim_out), nn.GELU(), nn.Linear(dim_out, dim_out))


class ImageAdapter(nn.Module):
    """Embeddings of image ids (through the frozen codebooks) and of the 3 special tokens.

    Args:
        kind: ``dual``, ``single``, ``table`` or ``semantic`` (see the module doc).
        semantic_codebook: (K, d_s) the tokenizer's semantic codes, as its decoder uses them.
        pixel_codebook: (K, m, d_p) the tokenizer's l2-normalized pixel sub-codes.
        hidden_size: the LLM's hidden size.
        semantic_width: output channels of the semantic MLP in ``dual`` (None: hidden_size // 2);
            the pixel MLP gives the remaining ``hidden_size - semantic_width``.
        init_std: std of the special-token embeddings (and of a ``table``) at initialisation;
            the LLM's own embedding std keeps them on the scale the LLM expects.
    """

    def __init__(
        self,
        kind: AdapterKind,
        semantic_codebook: Tensor,
        pixel_codebook: Tensor,
        hidden_size: int,
        semantic_width: int | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if semantic_codebook.dim() != 2 or pixel_codebook.dim() != 3 or pixel_codebook.shape[0] != semantic_codebook.shape[0]:
            raise ValueError(
                f"codebooks must be (K, d_s) and (K, m, d_p) with the same K, got {tuple(semantic_codebook.shape)} and {tuple(pixel_codebook.shape)}"
            )
        self.kind = kind
        k, m, d_p = pixel_codebook.shape
        d_s = semantic_codebook.shape[1]
        self.codebook_size, self.subcodebook_size, self.hidden_size = k, m, hidden_size
        # Frozen copies of the tokenizer's codebooks; not in the state dict (the tokenizer holds
        # them, and a saved MLLM records their fingerprint instead).
        self.register_buffer("semantic_codebook", semantic_codebook.detach().clone().float(), persistent=False)
        self.register_buffer("pixel_codebook", pixel_codebook.detach().clone().float(), persistent=False)
        if kind == "dual":
            width = hidden_size // 2 if semantic_width is None else semantic_width
            if not 1 <= width < hidden_size:
                raise ValueError(f"semantic_width must lie in [1, {hidden_size}) for hidden size {hidden_size}, got {width}")
            self.semantic_mlp = MLP(d_s, width)
            self.pixel_mlp = MLP(d_p, hidden_size - width)
        elif kind == "single":
            self.mlp = MLP(d_s + d_p, hidden_size)
        elif kind == "semantic":
            self.mlp = MLP(d_s, hidden_size)
        elif kind == "table":
            self.table = nn.Embedding(k * m, hidden_size)
            nn.init.normal_(self.table.weight, std=init_std)
        else:
            raise ValueError(f"adapter must be dual, single, table or semantic, got {kind!r}")
        self.special = nn.Parameter(torch.randn(NUM_SPECIALS, hidden_size) * init_std)

    def code_vectors(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(...) flat tokenizer ids -> ``z_q`` (..., d_s) and ``p_q`` (..., d_p)."""
        k = torch.div(ids, self.subcodebook_size, rounding_mode="floor")
        return self.semantic_codebook[k], self.pixel_codebook[k, ids % self.subcodebook_size]

    def image_embeddings(self, ids: Tensor) -> Tensor:
        """(...) flat tokenizer ids in [0, K*m) -> (..., hidden) LLM input embeddings."""
        if self.kind == "table":
            return self.table(ids)
        z_q, p_q = self.code_vectors(ids)
        dtype = self._dtype()
        z_q, p_q = z_q.to(dtype), p_q.to(dtype)
        if self.kind == "dual":
            return torch.cat([self.semantic_mlp(z_q), self.pixel_mlp(p_q)], dim=-1)
        if self.kind == "semantic":
            return self.mlp(z_q)
        return self.mlp(torch.cat([z_q, p_q], dim=-1))

    def special_embeddings(self, index: Tensor) -> Tensor:
        """(...) indices in [0, 3) (``<boi>``, ``<eoi>``, ``<uncond>``) -> (..., hidden)."""
        return self.special[index]

    def _dtype(self) -> torch.dtype:
        return self.special.dtype
