"""Vector quantizer whose codebook is trained by gradient: vanilla VQ (VQ-VAE) or normalized VQ.

SemHiTok's semantic codebook is an EMA VQ (:class:`~semhitok.quantizers.ema_vq.EMAVectorQuantizer`);
the paper's Tab. 9 compares it with these two, which this module provides for that ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as D
from .kmeans import kmeans
from .nearest import nearest_code
from .outputs import QuantizerOutput
from .stats import perplexity


class VectorQuantizer(nn.Module):
    """Nearest code, straight-through gradient, codebook and commitment losses (VQ-VAE).

    With ``normalize`` (normalized VQ, as in ViT-VQGAN), inputs and codes are l2-normalized before
    the search and the losses, so the nearest code is the one of largest cosine similarity and the
    quantized output lies on the unit sphere:

        loss = codebook_weight * ||sg(z) - c||^2 + commitment_weight * ||z - sg(c)||^2

    (with ``z``, ``c`` normalized or not). The codebook is a (K, d) parameter.

    Args:
        codebook_size: K, number of codes.
        dim: d, code dimension.
        normalize: l2-normalize inputs and codes (normalized VQ) or not (vanilla VQ).
        commitment_weight, codebook_weight: loss weights.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        dead_code_threshold: in training, a code whose EMA usage count falls below this is
            restarted at a random input of the current batch (0 disables restarts).
        usage_decay: momentum of that usage count.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        normalize: bool = False,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        kmeans_max_samples: int = 65536,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1, got {codebook_size}, {dim}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.normalize = normalize
        self.commitment_weight = commitment_weight
        self.codebook_weight = codebook_weight
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.kmeans_max_samples = kmeans_max_samples
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        self.weight = nn.Parameter(torch.randn(codebook_size, dim))
        # Starts at 1 per code (as the EMA VQ's counts do): no code is "dead" before it had a chance.
        self.register_buffer("usage", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.normalize else x

    @property
    def codebook(self) -> Tensor:
        """(K, d) the codes as the tokens use them (normalized for normalized VQ)."""
        return self._prepare(self.weight.detach())

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, normalize={self.normalize}"

    def lookup(self, ids: Tensor) -> Tensor:
        """(...) ids -> (..., d) codes (normalized for normalized VQ)."""
        return F.embedding(ids, self.codebook)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize (..., d) inputs; in training mode also initialise/restart codes."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected inputs with last dim {self.dim}, got shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        flat = self._prepare(z.reshape(-1, self.dim).float())
        with torch.no_grad(), torch.autocast(flat.device.type, enabled=False):  # search in fp32
            if self.training and not bool(self.initialized):
                self._init_by_kmeans(flat.detach())
            elif self.training and self.dead_code_threshold > 0:
                # Here, before this step's graph uses the codebook: rewriting rows in place after
                # F.normalize(weight) had saved it for backward (Norm VQ) broke autograd.
                self._restart_dead_codes(flat.detach())
            ids = nearest_code(flat.detach(), self._prepare(self.weight.detach().float()))
        codes = F.embedding(ids, self._prepare(self.weight.float()))
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment = F.mse_loss(flat, codes.detach())
        quantized = flat + (codes - flat).detach()

        counts = torch.bincount(ids, minlength=self.codebook_size)
        if self.training:
            with torch.no_grad():
                self.usage.mul_(self.usage_decay).add_(D.all_reduce_sum_(counts.float()), alpha=1 - self.usage_decay)
        return QuantizerOutput(
            quantized=quantized.view(*lead, self.dim).to(z.dtype),
            ids=ids.view(lead),
            loss=self.codebook_weight * codebook_loss + self.commitment_weight * commitment,
            commitment_loss=commitment,
            codebook_loss=codebook_loss,
            perplexity=perplexity(counts),
            usage=(counts > 0).float().mean(),
        )

    @torch.no_grad()
    def _init_by_kmeans(self, flat: Tensor) -> None:
        per_rank = max(1, self.kmeans_max_samples // D.world_size())
        pool = D.gather_rows(flat[torch.randperm(flat.shape[0], device=flat.device)[:per_rank]])
        centroids = D.broadcast_(kmeans(pool, self.codebook_size, self.kmeans_iters))
        self.weight.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        dead = self.usage < self.dead_code_threshold  # identical on all ranks (all-reduced counts)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pool = D.gather_rows(flat[torch.randperm(flat.shape[0], device=flat.device)[:n_dead]])
        new_codes = D.broadcast_(pool[torch.randint(pool.shape[0], (n_dead,), device=flat.device)].contiguous())
        self.weight[dead] = new_codes
        self.usage[dead] = max(1.0, self.dead_code_threshold)
