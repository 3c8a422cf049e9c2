"""Semantic-Guided Hierarchical Codebook (SGHC): one small pixel sub-codebook per semantic code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as D
from .outputs import QuantizerOutput
from .stats import perplexity

# Elements of gathered sub-codebooks per search chunk (2**21 fp32 = 8 MiB): bounded memory for any N.
SEARCH_CHUNK_ELEMENTS = 2**21


def nearest_code_by_cosine(flat: Tensor, unit_codes: Tensor) -> Tensor:
    """argmax_j <flat_i, unit_codes_j> for (N, d) rows and (m, d) unit codes, in bounded chunks."""
    rows = max(1, SEARCH_CHUNK_ELEMENTS // unit_codes.shape[0])
    ids = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[0], rows):
        ids[start : start + rows] = (flat[start : start + rows] @ unit_codes.T).argmax(dim=-1)
    return ids


class HierarchicalQuantizer(nn.Module):
    """Normalized VQ restricted to the sub-codebook of each input's parent (semantic) code.

    The codebook is a (K, m, d) parameter trained by gradient. Inputs and codes are l2-normalized,
    and input i with parent k_i picks

        j_i = argmin_j || l2(p_i) - l2(C[k_i, j]) ||  =  argmax_j <l2(p_i), l2(C[k_i, j])>

    among the m codes of that one sub-codebook: a gather of (N, m, d) codes and a batched dot
    product, O(N m d), never a search over all K m codes.

    Loss: ``codebook_weight * ||sg(l2 p) - l2 c||^2 + commitment_weight * ||l2 p - sg(l2 c)||^2``.
    The quantized output is l2-normalized and carries the straight-through gradient to ``p``.

    Args:
        num_parents: K, number of semantic codes.
        subcodebook_size: m, pixel codes per semantic code.
        dim: d, pixel code dimension.
        commitment_weight, codebook_weight: loss weights.
        dead_code_threshold: in training, sub-codes whose EMA usage count falls below this are
            restarted at a random input of the same parent (0 disables restarts).
        usage_decay: momentum of that EMA usage count.
    """

    def __init__(
        self,
        num_parents: int,
        subcodebook_size: int,
        dim: int,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        if num_parents < 1 or subcodebook_size < 1 or dim < 1:
            raise ValueError(f"num_parents, subcodebook_size and dim must be >= 1, got {num_parents}, {subcodebook_size}, {dim}")
        self.num_parents = num_parents
        self.subcodebook_size = subcodebook_size
        self.dim = dim
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        self.weight = nn.Parameter(torch.randn(num_parents, subcodebook_size, dim))
        # EMA of each sub-code's per-step count. It starts (and restarts) at max(1, threshold) so a
        # fresh code gets some steps to be chosen before it can be declared dead.
        self.register_buffer("usage_ema", torch.full((num_parents, subcodebook_size), max(1.0, dead_code_threshold)))

    @property
    def codebook(self) -> Tensor:
        """(K, m, d) the l2-normalized codes."""
        return F.normalize(self.weight, dim=-1)

    def extra_repr(self) -> str:
        return f"num_parents={self.num_parents}, subcodebook_size={self.subcodebook_size}, dim={self.dim}"

    def lookup(self, parent_ids: Tensor, ids: Tensor) -> Tensor:
        """(...) parent ids and (...) sub-code ids -> (..., d) normalized codes."""
        return F.normalize(self.weight[parent_ids, ids], dim=-1)

    def forward(self, p: Tensor, parent_ids: Tensor) -> QuantizerOutput:
        """Quantize (..., d) inputs ``p`` inside the sub-codebooks named by (...) ``parent_ids``."""
        if p.shape[-1] != self.dim:
            raise ValueError(f"expected inputs with last dim {self.dim}, got shape {tuple(p.shape)}")
        if parent_ids.shape != p.shape[:-1]:
            raise ValueError(f"parent_ids shape {tuple(parent_ids.shape)} must equal the input's leading shape {tuple(p.shape[:-1])}")
        lead = p.shape[:-1]
        flat = F.normalize(p.reshape(-1, self.dim).float(), dim=-1)
        parents = parent_ids.reshape(-1).long()
        if parents.numel() and (int(parents.min()) < 0 or int(parents.max()) >= self.num_parents):
            raise ValueError(f"parent_ids must lie in [0, {self.num_parents})")

        # fp32 search even under autocast, so ids do not depend on the mixed-precision setting.
        with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):
            ids = self._search(flat, parents)
        codes = self.lookup(parents, ids)  # (N, d), gradient reaches only the chosen codes
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment = F.mse_loss(flat, codes.detach())
        quantized = flat + (codes - flat).detach()

        pair_counts = torch.bincount(parents * self.subcodebook_size + ids, minlength=self.num_parents * self.subcodebook_size)
        pair_counts = pair_counts.view(self.num_parents, self.subcodebook_size)
        present = pair_counts.sum(dim=1) > 0
        usage = (pair_counts[present] > 0).float().mean() if bool(present.any()) else flat.new_zeros(())
        if self.training and self.dead_code_threshold > 0:
            self._restart_dead_codes(flat.detach(), parents, pair_counts)

        return QuantizerOutput(
            quantized=quantized.view(*lead, self.dim).to(p.dtype),
            ids=ids.view(lead),
            loss=self.codebook_weight * codebook_loss + self.commitment_weight * commitment,
            commitment_loss=commitment,
            codebook_loss=codebook_loss,
            perplexity=perplexity(pair_counts.flatten()),
            usage=usage,
        )

    def _search(self, flat: Tensor, parents: Tensor) -> Tensor:
        """argmax_j cos(p_i, C[k_i, j]) for unit (N, d) inputs: (N,) ids in [0, m).

        Rows are processed in chunks so the gathered (rows, m, d) sub-codebooks stay under
        ``SEARCH_CHUNK_ELEMENTS``; cosine = raw dot / code norm, so codes are gathered once, raw.
        """
        weight = self.weight.detach()
        inv_norm = weight.norm(dim=-1).clamp_min(1e-12).reciprocal()  # (K, m)
        if self.num_parents == 1:
            # One parent (a flat codebook: the pixel-only baseline): every row searches the same m
            # codes, so one (rows, m) matmul per chunk replaces the per-row gather of (m, d) codes.
            codes = weight[0] * inv_norm[0].unsqueeze(1)
            return nearest_code_by_cosine(flat, codes)
        m, d = self.subcodebook_size, self.dim
        rows = max(1, SEARCH_CHUNK_ELEMENTS // (m * d))
        ids = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for start in range(0, flat.shape[0], rows):
            par = parents[start : start + rows]
            dots = torch.bmm(weight[par], flat[start : start + rows].unsqueeze(-1)).squeeze(-1)  # (rows, m)
            ids[start : start + rows] = (dots * inv_norm[par]).argmax(dim=-1)
        return ids

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor, parents: Tensor, pair_counts: Tensor) -> None:
        counts = D.all_reduce_sum_(pair_counts.float())
        self.usage_ema.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        # Only sub-codes of parents seen in this (global) batch can be restarted: a replacement must
        # be an input that belongs to the same parent.
        dead = (self.usage_ema < self.dead_code_threshold) & (counts.sum(dim=1, keepdim=True) > 0)
        # Rank 0 picks replacements from its own batch and broadcasts them, so all ranks agree.
        mask = torch.zeros(self.num_parents * self.subcodebook_size, dtype=torch.uint8, device=flat.device)
        values = flat.new_zeros(0, self.dim)
        if D.rank() == 0:
            dead_parents, dead_slots = dead.nonzero(as_tuple=True)
            local_present = torch.zeros(self.num_parents, dtype=torch.bool, device=flat.device)
            local_present[parents] = True
            keep = local_present[dead_parents]
            dead_parents, dead_slots = dead_parents[keep], dead_slots[keep]
            if dead_parents.numel():
                # A random input of each dead code's parent: random keys, then the first row per parent.
                order = torch.argsort(parents * 2.0 + torch.rand(parents.shape[0], device=flat.device))
                first = torch.searchsorted(parents[order], dead_parents)
                span = torch.bincount(parents, minlength=self.num_parents)[dead_parents]
                offset = (torch.rand(dead_parents.shape[0], device=flat.device) * span).long()
                values = flat[order[first + offset]]
                mask[dead_parents * self.subcodebook_size + dead_slots] = 1
        D.broadcast_(mask)
        n = int(mask.sum())
        if n == 0:
            return
        if values.shape[0] != n:
            values = flat.new_zeros(n, self.dim)
        D.broadcast_(values)
        flat_mask = mask.bool().view(self.num_parents, self.subcodebook_size)
        self.weight.data[flat_mask] = values.to(self.weight.dtype)
        self.usage_ema[flat_mask] = max(1.0, self.dead_code_threshold)
